//! The default restore checks every file against PostgreSQL's `backup_manifest` from
//! the bytes as they are written (issue 16): a real `file://` repository holding a
//! backup whose manifest and content disagree is refused with
//! `verify.restored_checksum_mismatch`, and the directory is not set up for recovery.
//! Files of many units (written by parallel tasks, out of order) are checked whole.
//! Files are created as they are written, with their sizes, modes and parent directories.

use bytes::Bytes;
use hs_pitr::{
    restore, BackupSelector, NoRestoreProgress, RecoveryConfig, RestoreOptions, VerifyMode,
};
use hs_repo::{ArchiveEntry, ChunkRef, FileEntry, FileKind, Repository};

use crate::support::{manifest, segment, Env};

/// Chunks of `data` in 8 KiB pages, stored in the repository.
async fn store(repo: &Repository, data: &[u8]) -> Vec<ChunkRef> {
    store_in(repo, data, 8192).await
}

/// Chunks of `data` of `size` bytes each (the last one shorter), stored.
async fn store_in(repo: &Repository, data: &[u8], size: usize) -> Vec<ChunkRef> {
    let mut w = repo.writer().await.unwrap();
    let mut refs = Vec::new();
    for page in data.chunks(size) {
        refs.push(w.add(Bytes::copy_from_slice(page)).await.unwrap());
    }
    w.finish().await.unwrap();
    refs
}

fn entry(path: &str, data: &[u8], chunks: Vec<ChunkRef>) -> FileEntry {
    FileEntry {
        path: path.into(),
        kind: FileKind::File,
        mode: 0o600,
        mtime: 0,
        size: data.len() as u64,
        chunks,
        chunk_lists: Vec::new(),
    }
}

/// A `backup_manifest` listing `files` with the CRC-32C of the given bytes.
fn pg_manifest(files: &[(&str, &[u8])]) -> String {
    let list: Vec<String> = files
        .iter()
        .map(|(p, d)| {
            format!(
                "{{ \"Path\": \"{p}\", \"Size\": {}, \"Last-Modified\": \"2026-12-06 07:00:00 GMT\", \
                 \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }}",
                d.len(),
                hs_pg::crc32c_hex(hs_pg::crc32c(d))
            )
        })
        .collect();
    format!(
        "{{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n{} ],\n\
         \"WAL-Ranges\": [],\n\"Manifest-Checksum\": \"00\"}}\n",
        list.join(",\n")
    )
}

/// Stores a backup of `relation` (listed in its manifest as `listed`) and a control
/// file, under id `id`.
async fn backup(env: &Env, id: &str, relation: &[u8], listed: &[u8]) {
    backup_chunked(env, id, relation, listed, 8192).await
}

/// [`backup`] with `relation` in chunks of `chunk` bytes.
async fn backup_chunked(env: &Env, id: &str, relation: &[u8], listed: &[u8], chunk: usize) {
    let control = segment(7, 8192);
    put_backup(
        env,
        id,
        &[
            ("base/5/16384", relation, listed, chunk),
            ("global/pg_control", &control, &control, 8192),
        ],
    )
    .await
}

/// Stores a backup of one archive holding `files`: (path, content, the content its
/// manifest entry describes, chunk size).
async fn put_backup(env: &Env, id: &str, files: &[(&str, &[u8], &[u8], usize)]) {
    let mut entries = Vec::new();
    for (path, data, _, chunk) in files {
        entries.push(entry(path, data, store_in(&env.repo, data, *chunk).await));
    }
    let mut m = manifest(id, "0/3000028", "2026-12-06T07:00:00Z", "checks");
    m.archives = vec![ArchiveEntry {
        name: "base".into(),
        tablespace_oid: None,
        tablespace_location: None,
        files: entries,
    }];
    let listed: Vec<(&str, &[u8])> = files.iter().map(|(p, _, l, _)| (*p, *l)).collect();
    m.pg_backup_manifest = pg_manifest(&listed);
    env.repo.put_manifest(&m).await.unwrap();
}

fn options(env: &Env, id: &str, target: &str, verify: VerifyMode) -> RestoreOptions {
    let mut o = RestoreOptions::new(
        "main",
        BackupSelector::Id(id.into()),
        env.dir.path().join(target),
    );
    o.verify = verify;
    o.parallelism = 16;
    o.recovery = Some(RecoveryConfig::latest("false"));
    o
}

#[tokio::test]
async fn a_file_that_differs_from_its_manifest_entry_is_refused_before_recovery_is_set_up() {
    let env = Env::new().await;
    // 400 pages: seven units of 64 chunks, written by parallel tasks.
    let relation = segment(1, 400 * 8192);
    let mut other = relation.clone();
    other[300 * 8192 + 17] ^= 0x01;
    backup(&env, "20261206T070000Z", &relation, &other).await;

    let opts = options(&env, "20261206T070000Z", "r1", VerifyMode::Run);
    let e = restore(&env.repo, &opts, &NoRestoreProgress)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "verify.restored_checksum_mismatch", "{e}");
    assert!(e.to_string().contains("base/5/16384"), "{e}");
    assert!(!opts.target.join("recovery.signal").exists());

    // The same backup restores without the check: the chunks themselves are intact,
    // it is the manifest's checksum that the written bytes do not match.
    let skip = options(&env, "20261206T070000Z", "r2", VerifyMode::Skip);
    let done = restore(&env.repo, &skip, &NoRestoreProgress).await.unwrap();
    assert_eq!(done.checksums_checked, 0);
    assert_eq!(
        std::fs::read(skip.target.join("base/5/16384")).unwrap(),
        relation
    );
}

#[tokio::test]
async fn a_control_file_that_does_not_read_is_not_left_behind() {
    // pg_control is created at its size before its chunks are read: a chunk that does
    // not read (here: not in the repository at all) must not leave it there,
    // zero-filled, in a directory someone could start.
    let env = Env::new().await;
    let id = "20261206T070050Z";
    let relation = segment(8, 4 * 8192);
    backup(&env, id, &relation, &relation).await;
    let mut m = env.repo.load_manifest("main", id).await.unwrap();
    let control = m.archives[0]
        .files
        .iter_mut()
        .find(|f| f.path == "global/pg_control")
        .unwrap();
    control.chunks[0].id = hs_repo::ChunkId::from_bytes([0x5A; 16]);
    control.chunks[0].pack = None;
    let lost = "20261206T070051Z";
    m.backup_id = lost.into();
    env.repo.put_manifest(&m).await.unwrap();

    for verify in [VerifyMode::Run, VerifyMode::Skip] {
        let opts = options(&env, lost, &format!("r-{verify:?}"), verify);
        let e = restore(&env.repo, &opts, &NoRestoreProgress)
            .await
            .unwrap_err();
        assert!(
            e.code().starts_with("notfound.") || e.code().starts_with("verify."),
            "{e}"
        );
        assert!(
            opts.target.join("base/5/16384").exists(),
            "it failed at the end"
        );
        assert!(
            !opts.target.join("global/pg_control").exists(),
            "a failed restore left a pg_control ({e})"
        );
        assert!(!opts.target.join("recovery.signal").exists());
    }
}

#[tokio::test]
async fn a_recovery_configuration_that_fails_leaves_no_control_file() {
    // Every file restores and verifies, but postgresql.auto.conf is not UTF-8, so the
    // recovery settings cannot be written into it: the restore fails, and the directory
    // it leaves must not start (it would come up without the recovery asked for).
    let env = Env::new().await;
    let id = "20261206T070060Z";
    let relation = segment(9, 2 * 8192);
    let control = segment(7, 8192);
    let auto_conf = b"primary_conninfo = '\xff\xfe'\n".to_vec();
    put_backup(
        &env,
        id,
        &[
            ("base/5/16384", &relation, &relation, 8192),
            ("postgresql.auto.conf", &auto_conf, &auto_conf, 8192),
            ("global/pg_control", &control, &control, 8192),
        ],
    )
    .await;

    let opts = options(&env, id, "r1", VerifyMode::Skip);
    let e = restore(&env.repo, &opts, &NoRestoreProgress)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "usage.auto_conf_not_utf8", "{e}");
    assert!(opts.target.join("base/5/16384").exists());
    assert!(!opts.target.join("global/pg_control").exists());
    assert!(!opts.target.join("recovery.signal").exists());
}

#[tokio::test]
async fn a_size_that_differs_from_its_manifest_entry_is_refused() {
    let env = Env::new().await;
    let relation = segment(2, 3 * 8192);
    backup(&env, "20261206T070100Z", &relation, &relation[..2 * 8192]).await;
    let opts = options(&env, "20261206T070100Z", "r1", VerifyMode::Run);
    let e = restore(&env.repo, &opts, &NoRestoreProgress)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "verify.restored_checksum_mismatch", "{e}");
    assert!(e.to_string().contains("24576 bytes"), "{e}");
}

#[tokio::test]
async fn large_unaligned_chunks_are_written_in_batches_and_checked() {
    // Chunks of 300001 bytes (as content-defined chunks of a non-relation file can
    // be): neither they nor the writes are 4 KiB aligned, a unit spans several 1 MiB
    // writes, and the file's checksum still matches.
    let env = Env::new().await;
    let data = segment(3, 70 * 300_001 + 12_345);
    backup_chunked(&env, "20261206T070200Z", &data, &data, 300_001).await;
    // The checks as written pass; what stops this restore is pg_verifybackup, run
    // after them on a directory that is no real cluster (or missing).
    let run = options(&env, "20261206T070200Z", "r1", VerifyMode::Run);
    let e = restore(&env.repo, &run, &NoRestoreProgress)
        .await
        .unwrap_err();
    assert!(
        [
            "verify.pg_verifybackup_failed",
            "preflight.pg_verifybackup_missing"
        ]
        .contains(&e.code()),
        "{e}"
    );
    assert_eq!(
        std::fs::read(run.target.join("base/5/16384")).unwrap(),
        data
    );
    // It failed after the control file was written: that is removed again.
    assert!(!run.target.join("global/pg_control").exists());
    let skip = options(&env, "20261206T070200Z", "r2", VerifyMode::Skip);
    restore(&env.repo, &skip, &NoRestoreProgress).await.unwrap();
    assert_eq!(
        std::fs::read(skip.target.join("base/5/16384")).unwrap(),
        data
    );
}

#[tokio::test]
async fn files_are_created_as_written_with_their_sizes_modes_and_parents() {
    // The files are created when their content is written, not when the directories
    // are laid out (a parent is ensured once per run of files in one directory): every
    // file is there afterwards with its content, size and mode, empty files included,
    // in directories the manifest lists and in ones it only implies, and in a
    // directory the file order comes back to.
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new().await;
    let id = "20261206T070300Z";
    let relation = segment(4, 400 * 8192);
    let snap = segment(5, 3 * 8192 + 1500);
    let small = segment(6, 8192);
    let control = segment(7, 8192);
    let dir = |path: &str| FileEntry {
        path: path.into(),
        kind: FileKind::Dir,
        mode: 0o700,
        mtime: 0,
        size: 0,
        chunks: Vec::new(),
        chunk_lists: Vec::new(),
    };
    let with_mode = |mut e: FileEntry, mode: u32| {
        e.mode = mode;
        e
    };
    let files: Vec<(&str, &[u8], u32)> = vec![
        ("base/5/16384", &relation, 0o600),
        ("base/5/16384_fsm", b"", 0o600),
        ("pg_logical/snapshots/0-16B3740.snap", &snap, 0o640),
        ("global/pg_control", &control, 0o600),
        ("base/5/16385", &small, 0o640),
        ("PG_VERSION_EMPTY", b"", 0o640),
    ];
    let mut entries = vec![dir("base"), dir("base/5"), dir("global")];
    for (path, data, mode) in &files {
        let refs = store(&env.repo, data).await;
        entries.push(with_mode(entry(path, data, refs), *mode));
    }
    let mut m = manifest(id, "0/3000028", "2026-12-06T07:03:00Z", "layout");
    m.archives = vec![ArchiveEntry {
        name: "base".into(),
        tablespace_oid: None,
        tablespace_location: None,
        files: entries,
    }];
    let listed: Vec<(&str, &[u8])> = files.iter().map(|(p, d, _)| (*p, *d)).collect();
    m.pg_backup_manifest = pg_manifest(&listed);
    env.repo.put_manifest(&m).await.unwrap();

    let mut opts = options(&env, id, "r1", VerifyMode::Skip);
    opts.recovery = None;
    let done = restore(&env.repo, &opts, &NoRestoreProgress).await.unwrap();
    assert_eq!(done.files, files.len() as u64);
    assert_eq!(done.files_written, files.len() as u64);
    for (path, data, mode) in &files {
        let p = opts.target.join(path);
        let meta = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(meta.len(), data.len() as u64, "{path}");
        assert_eq!(meta.permissions().mode() & 0o777, *mode, "{path}");
        assert_eq!(&std::fs::read(&p).unwrap(), data, "{path}");
    }
}
