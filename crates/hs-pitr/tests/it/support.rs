//! Shared setup of the hs-pitr integration tests: a repository with a fake data
//! directory, and WAL-like segments.

use hs_crypt::Keyring;
use hs_repo::{BackupManifest, BackupStats, Repository, MANIFEST_FORMAT};
use tempfile::TempDir;

/// The deployment the tests use.
pub const D: &str = "main";

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

/// The manifest of a backup of [`D`] on timeline 1 that starts and stops at `stop_lsn`
/// and `stop_time`, with no files.
pub fn manifest(id: &str, stop_lsn: &str, stop_time: &str, label: &str) -> BackupManifest {
    BackupManifest {
        format: MANIFEST_FORMAT,
        backup_id: id.into(),
        deployment: D.into(),
        system_identifier: "7312345678901234567".into(),
        timeline: 1,
        start_lsn: stop_lsn.parse().unwrap(),
        stop_lsn: stop_lsn.parse().unwrap(),
        start_time: stop_time.into(),
        stop_time: stop_time.into(),
        pg_version: 150004,
        label: label.into(),
        archives: vec![],
        pg_backup_manifest: String::new(),
        incremental: None,
        stats: BackupStats::default(),
    }
}
