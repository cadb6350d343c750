//! Shared setup of the hs-repo integration tests: a keyring and repository in a temp
//! dir, file listings, and page-like test data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use hs_crypt::Keyring;
use hs_repo::{
    open_backend, ArchiveEntry, Backend, BackupManifest, BackupStats, ChunkRef, FileEntry, FileKind,
};
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

    /// `Repository::init` at [`Env::url`] with 1 MiB packs (so that tests make several).
    pub async fn small_pack_repo(&self) -> hs_repo::Repository {
        hs_repo::Repository::builder(&self.url)
            .pack_target_size(1 << 20)
            .init(&self.keyring)
            .await
            .unwrap()
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

/// A `file://` backend on `<temp dir>/repo`; the temp dir lives as long as the guard.
pub fn fs_backend() -> (TempDir, Arc<dyn Backend>) {
    let dir = tempfile::tempdir().unwrap();
    let b = open_backend(&format!("file://{}/repo", dir.path().display())).unwrap();
    (dir, b)
}

/// Runs `check` on a fresh `file://` backend, then requires that it left no temporary
/// file behind.
pub async fn on_fs_backend<F: std::future::Future<Output = ()>>(
    check: impl FnOnce(Arc<dyn Backend>) -> F,
) {
    let (dir, b) = fs_backend();
    check(b).await;
    assert_no_temporaries(dir.path());
}

/// No temporary file of an interrupted or finished write (`.tmp-…`) is left under `dir`.
pub fn assert_no_temporaries(dir: &Path) {
    let leftovers: Vec<_> = files_under(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `racers` tasks at once `put_if_absent` `name`, task `i` with 1000 bytes of value `i`;
/// returns the values of the tasks that report they created it.
pub async fn race_put_if_absent(b: &Arc<dyn Backend>, name: &str, racers: u8) -> Vec<u8> {
    let mut tasks = Vec::new();
    for i in 0..racers {
        let b = b.clone();
        let name = name.to_owned();
        tasks.push(tokio::spawn(async move {
            let won = b
                .put_if_absent(&name, Bytes::from(vec![i; 1000]))
                .await
                .unwrap();
            (i, won)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, won) = t.await.unwrap();
        if won {
            winners.push(i);
        }
    }
    winners
}

/// A regular file (mode 0600, mtime 0) made of `chunks`.
pub fn file(path: &str, chunks: Vec<ChunkRef>) -> FileEntry {
    FileEntry {
        path: path.to_string(),
        kind: FileKind::File,
        mode: 0o600,
        mtime: 0,
        size: chunks.iter().map(|c| u64::from(c.len)).sum(),
        chunks,
        chunk_lists: Vec::new(),
    }
}

/// The manifest of backup `id` of `dep` on timeline 1 from `start` to `stop` (LSNs and
/// times), with one `base` archive of `files` (system identifier 7311111111111111111,
/// label "test").
pub fn manifest_of(
    dep: &str,
    id: &str,
    (start_lsn, stop_lsn): (&str, &str),
    (start_time, stop_time): (String, String),
    files: Vec<FileEntry>,
) -> BackupManifest {
    BackupManifest {
        format: hs_repo::MANIFEST_FORMAT,
        backup_id: id.to_string(),
        deployment: dep.to_string(),
        system_identifier: "7311111111111111111".to_string(),
        timeline: 1,
        start_lsn: start_lsn.parse().unwrap(),
        stop_lsn: stop_lsn.parse().unwrap(),
        start_time,
        stop_time,
        pg_version: 150004,
        label: "test".to_string(),
        archives: vec![ArchiveEntry {
            name: "base".to_string(),
            tablespace_oid: None,
            tablespace_location: None,
            files,
        }],
        pg_backup_manifest: "{}".to_string(),
        incremental: None,
        stats: BackupStats::default(),
    }
}

/// `name` is created by `put_if_absent` with `first`; a second `put_if_absent` (with
/// `second`) reports it exists and changes nothing; `put` then replaces it by `replaced`.
pub async fn create_once_then_replace(
    b: &Arc<dyn Backend>,
    name: &str,
    first: &'static [u8],
    second: &'static [u8],
    replaced: &'static [u8],
) {
    assert!(b
        .put_if_absent(name, Bytes::from_static(first))
        .await
        .unwrap());
    assert!(!b
        .put_if_absent(name, Bytes::from_static(second))
        .await
        .unwrap());
    assert_eq!(&b.get(name).await.unwrap()[..], first);
    b.put(name, Bytes::from_static(replaced)).await.unwrap();
}

/// `c/y` (1 byte) inside the `c/` prefix and `cz` (2 bytes) beside it, for listing checks.
pub async fn put_around_the_c_prefix(b: &Arc<dyn Backend>) {
    b.put_if_absent("c/y", Bytes::from_static(b"1"))
        .await
        .unwrap();
    b.put_if_absent("cz", Bytes::from_static(b"22"))
        .await
        .unwrap();
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
