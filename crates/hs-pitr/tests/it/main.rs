//! Integration tests of hs-pitr's WAL fetch and restore planning against real `file://`
//! repositories.

mod moved_on;
mod plan;
mod target_props;
mod wal;

use hs_crypt::Keyring;
use hs_repo::Repository;
use tempfile::TempDir;

/// A temp dir with a keyring, a repository and a fake data directory.
pub struct Env {
    pub dir: TempDir,
    pub repo: Repository,
}

impl Env {
    pub async fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Keyring::create(&dir.path().join("kr").join("keyring")).unwrap();
        let url = format!("file://{}/repo", dir.path().display());
        let repo = Repository::init(&url, &keyring).await.unwrap();
        std::fs::create_dir_all(dir.path().join("pgdata/pg_wal")).unwrap();
        Env { dir, repo }
    }

    pub fn pgdata(&self) -> std::path::PathBuf {
        self.dir.path().join("pgdata")
    }

    pub fn dest(&self) -> std::path::PathBuf {
        self.pgdata().join("pg_wal/RECOVERYXLOG")
    }
}

/// A WAL-like segment of `size` bytes: a little noise per 8 KiB page, zeros elsewhere.
pub fn segment(seed: u64, size: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = vec![0u8; size];
    for page in v.chunks_mut(8192) {
        for b in &mut page[..1024] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 24) as u8;
        }
    }
    v
}
