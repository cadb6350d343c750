//! Integration tests of hs-repo against real `file://` repositories in temp dirs.

mod backend;
mod conformance;
mod damage;
mod faults;
mod gc;
mod manifest;
mod props;
mod repo;
mod retention;
mod ssh;
mod throughput;
mod url_props;
mod verify;
mod wal;

use std::path::{Path, PathBuf};

use hs_crypt::Keyring;
use tempfile::TempDir;

/// A temp dir holding a keyring and (after init) a repository.
pub struct Env {
    pub dir: TempDir,
    pub url: String,
    pub keyring: Keyring,
}

impl Default for Env {
    fn default() -> Env {
        Env::new()
    }
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Keyring::create(&dir.path().join("kr").join("keyring")).unwrap();
        let url = format!("file://{}/repo", dir.path().display());
        Env { dir, url, keyring }
    }

    pub fn repo_path(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
}

/// Every regular file under `p`, recursively.
pub fn files_under(p: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                v.extend(files_under(&e.path()));
            } else {
                v.push(e.path());
            }
        }
    }
    v.sort();
    v
}

/// Deterministic pseudo-random bytes.
pub use hs_testkit::noise;

/// An 8 KiB page that looks a bit like a heap page: a header, compressible
/// tuples, some noise.
pub fn page(seed: u64) -> Vec<u8> {
    let mut p = vec![0u8; 8192];
    p[..24].copy_from_slice(&noise(seed, 24));
    let row = format!("row {seed:>12} | some text that repeats | {} |", seed % 97);
    let mut off = 8192;
    while off > 4096 + row.len() {
        off -= row.len();
        p[off..off + row.len()].copy_from_slice(row.as_bytes());
    }
    let n = noise(seed ^ 0xabcdef, 512);
    p[1024..1536].copy_from_slice(&n);
    p
}
