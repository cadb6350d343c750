//! Manifest round trip, ordering, tamper detection and create-if-absent.

use bytes::Bytes;
use hs_repo::{
    ArchiveEntry, BackupManifest, BackupStats, ChunkRef, FileEntry, FileKind, Repository,
    MANIFEST_FORMAT,
};

use crate::support::{files_under, Env};

pub fn sample_manifest(dep: &str, id: &str, refs: &[ChunkRef]) -> BackupManifest {
    BackupManifest {
        format: MANIFEST_FORMAT,
        backup_id: id.to_string(),
        deployment: dep.to_string(),
        system_identifier: "7312345678901234567".into(),
        timeline: 1,
        start_lsn: "0/2000028".parse().unwrap(),
        stop_lsn: "0/2000100".parse().unwrap(),
        start_time: format!("2026-11-26T02:{:02}:00Z", id.len()),
        stop_time: "2026-11-26T03:00:00Z".into(),
        pg_version: 150004,
        label: "pg_hardstorage test".into(),
        archives: vec![ArchiveEntry {
            name: "base".into(),
            tablespace_oid: None,
            tablespace_location: None,
            files: vec![
                FileEntry {
                    path: "base".into(),
                    kind: FileKind::Dir,
                    mode: 0o700,
                    mtime: 1,
                    size: 0,
                    chunks: vec![],
                    chunk_lists: vec![],
                },
                FileEntry {
                    path: "base/1/1259".into(),
                    kind: FileKind::File,
                    mode: 0o600,
                    mtime: 2,
                    size: refs.iter().map(|r| u64::from(r.len)).sum(),
                    chunks: refs.to_vec(),
                    chunk_lists: vec![],
                },
                FileEntry {
                    path: "pg_tblspc/16400".into(),
                    kind: FileKind::Symlink {
                        target: "/srv/ts".into(),
                    },
                    mode: 0o777,
                    mtime: 3,
                    size: 0,
                    chunks: vec![],
                    chunk_lists: vec![],
                },
            ],
        }],
        pg_backup_manifest: "{ \"PostgreSQL-Backup-Manifest-Version\": 1 }".into(),
        incremental: None,
        stats: BackupStats {
            logical_bytes: 10,
            stored_bytes: 5,
            chunks: 1,
            new_chunks: 1,
            files: 1,
            sent_bytes: 0,
        },
    }
}

#[tokio::test]
async fn manifests_round_trip_sort_and_refuse_rewrites() {
    let env = Env::new();
    let repo = Repository::init(&env.url, &env.keyring).await.unwrap();
    let mut w = repo.writer().await.unwrap();
    let r = w.add(Bytes::from_static(b"chunk")).await.unwrap();
    w.finish().await.unwrap();
    // "bbb" has the later start time (by id length), "a" the earlier one.
    let late = sample_manifest("dep1", "bbb", &[r]);
    let early = sample_manifest("dep1", "a", &[r]);
    repo.put_manifest(&late).await.unwrap();
    repo.put_manifest(&early).await.unwrap();
    assert_eq!(repo.load_manifest("dep1", "bbb").await.unwrap(), late);
    let listed = repo.list_backups("dep1").await.unwrap();
    assert_eq!(listed, vec![early.clone(), late.clone()]);
    assert!(repo.list_backups("other").await.unwrap().is_empty());
    // Summaries: the same backups in the same order, without the per-file parts.
    let summary = |m: &BackupManifest| BackupManifest {
        archives: Vec::new(),
        pg_backup_manifest: String::new(),
        ..m.clone()
    };
    assert!(!late.archives.is_empty() && !late.pg_backup_manifest.is_empty());
    let want = vec![summary(&early), summary(&late)];
    assert_eq!(repo.list_backup_summaries("dep1").await.unwrap(), want);
    let checked = repo.list_backup_summaries_checked("dep1").await.unwrap();
    assert_eq!(checked.backups, want);
    assert!(checked.damaged.is_empty());
    // The newest is found with one listing and one read; `latest` is the same one.
    assert_eq!(
        repo.newest_intact_backup("dep1").await.unwrap(),
        Some(late.clone())
    );
    assert_eq!(repo.latest_backup("dep1").await.unwrap(), late);
    assert_eq!(repo.newest_intact_backup("other").await.unwrap(), None);
    assert_eq!(
        repo.put_manifest(&late).await.unwrap_err().code(),
        "conflict.backup_exists"
    );
    assert_eq!(
        repo.load_manifest("dep1", "zzz").await.unwrap_err().code(),
        "notfound.backup"
    );
    assert_eq!(
        repo.load_manifest("../x", "a").await.unwrap_err().code(),
        "usage.invalid_deployment_name"
    );
    // The JSON shape of FileKind is tagged.
    let json = serde_json::to_value(&late.archives[0].files[2]).unwrap();
    assert_eq!(json["kind"]["type"], "symlink");
    assert_eq!(json["kind"]["target"], "/srv/ts");
}

#[tokio::test]
async fn tampered_or_moved_manifest_is_rejected() {
    let env = Env::new();
    let repo = Repository::init(&env.url, &env.keyring).await.unwrap();
    repo.put_manifest(&sample_manifest("dep1", "b1", &[]))
        .await
        .unwrap();
    repo.put_manifest(&sample_manifest("dep1", "b2", &[]))
        .await
        .unwrap();
    let dir = env.repo_path().join("deployments/dep1/backups");
    assert_eq!(files_under(&dir).len(), 2);

    // Copy b1's object over to a new name b3: the signature binds the name.
    std::fs::copy(dir.join("b1"), dir.join("b3")).unwrap();
    let err = repo.load_manifest("dep1", "b3").await.unwrap_err();
    assert_eq!(err.code(), "verify.signature_invalid");
    // list_backups refuses to silently skip a bad manifest.
    assert_eq!(
        repo.list_backups("dep1").await.unwrap_err().code(),
        "verify.signature_invalid"
    );
    std::fs::remove_file(dir.join("b3")).unwrap();

    // Flip a byte in b2.
    let mut bytes = std::fs::read(dir.join("b2")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x80;
    std::fs::write(dir.join("b2"), &bytes).unwrap();
    let err = repo.load_manifest("dep1", "b2").await.unwrap_err();
    assert_eq!(err.code(), "verify.auth_tag_mismatch");
    repo.load_manifest("dep1", "b1").await.unwrap();
}
