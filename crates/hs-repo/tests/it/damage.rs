//! Damage reports name the object and the backups it touches (issue 13, item 6), on
//! real file:// repositories with real damage:
//!
//! - a damaged manifest is listed as damaged (object, code) by `list_backups_checked`,
//!   the others listed; `latest_backup` / `backups_for_latest` refuse a damaged newest
//!   manifest (`verify.latest_backup_damaged`, naming it and the newest intact backup)
//!   and ignore a damaged older one;
//! - a chunk read error names the pack and the chunk;
//! - `verify_repo` reports a damaged pack once, with the backups that read damaged
//!   chunks from it; once quarantined and healed by a new backup it is a warning
//!   (`verify.pack_quarantined`); if the new backup did not store the data again it
//!   stays a problem naming the backups that cannot heal.

use bytes::Bytes;
use hs_repo::{BackupManifest, Repository};

use crate::support::{file, manifest_of, noise, page, Env};

const DEP: &str = "dep";
const WAL_FILE: &str = "pg_wal/000000010000000000000001";

fn id(n: u32) -> String {
    format!("202611{n:02}T010000Z")
}

/// Backup `n` (id [`id`]`(n)`): `base/1/16384` holding pages `pages` and its own WAL
/// segment (1 MiB, unique to the backup) in `pg_wal/`, so it verifies without archived
/// WAL. Returns the manifest.
async fn backup(repo: &Repository, n: u32, pages: std::ops::Range<u64>) -> BackupManifest {
    let mut w = repo.writer().await.unwrap();
    let mut refs = Vec::new();
    for i in pages {
        refs.push(w.add(Bytes::from(page(i))).await.unwrap());
    }
    let mut wal = Vec::new();
    for i in 0..128u64 {
        let d = noise(u64::from(n) * 1000 + i, 8192);
        wal.push(w.add(Bytes::from(d)).await.unwrap());
    }
    w.finish().await.unwrap();
    let m = manifest_of(
        DEP,
        &id(n),
        ("0/100028", "0/100100"),
        (
            format!("2026-11-{n:02}T01:00:00Z"),
            format!("2026-11-{n:02}T01:00:01Z"),
        ),
        vec![file("base/1/16384", refs), file(WAL_FILE, wal)],
    );
    repo.put_manifest(&m).await.unwrap();
    m
}

fn flip(env: &Env, object: &str, at: usize) {
    let path = env.repo_path().join(object);
    let mut b = std::fs::read(&path).unwrap();
    b[at] ^= 0x5a;
    std::fs::write(&path, b).unwrap();
}

fn manifest_object(n: u32) -> String {
    format!("deployments/{DEP}/backups/{}", id(n))
}

/// The pack holding the first chunk of `m`'s table file (the first frame of it).
async fn pack_of_first_page(repo: &Repository, m: &BackupManifest) -> (String, u32) {
    let first = m.archives[0].files[0].chunks[0].id;
    for p in repo.list_packs().await.unwrap() {
        let h = repo.read_pack_header(&p.name).await.unwrap();
        if let Some(e) = h.iter().find(|e| e.id == first) {
            return (p.name, e.frame_offset + e.frame_length / 2);
        }
    }
    panic!("no pack holds the first page");
}

#[tokio::test]
async fn a_damaged_manifest_is_listed_as_damaged_and_latest_refuses_only_a_damaged_newest() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    for n in 1..=3 {
        backup(&repo, n, 0..20).await;
    }
    // The middle one damaged: listed as damaged, the others listed; latest is intact.
    let len = std::fs::metadata(env.repo_path().join(manifest_object(2)))
        .unwrap()
        .len() as usize;
    flip(&env, &manifest_object(2), len / 2);
    let l = repo.list_backups_checked(DEP).await.unwrap();
    let ids: Vec<&str> = l.backups.iter().map(|m| m.backup_id.as_str()).collect();
    assert_eq!(ids, [id(1), id(3)]);
    assert_eq!(l.damaged.len(), 1, "{:?}", l.damaged);
    let d = &l.damaged[0];
    assert_eq!(d.backup_id, id(2));
    assert_eq!(d.object, manifest_object(2));
    assert_eq!(d.code, "verify.auth_tag_mismatch");
    assert!(d.message.contains(&manifest_object(2)), "{d:?}");
    assert_eq!(repo.latest_backup(DEP).await.unwrap().backup_id, id(3));
    let for_latest = repo.backups_for_latest(DEP).await.unwrap();
    assert_eq!(for_latest.len(), 2);
    // Newest first, one manifest at a time: the damaged older one is passed over.
    let mut it = repo.backups_newest_first(DEP).await.unwrap();
    assert_eq!(it.peek_id(), Some(id(3).as_str()));
    let m = it.next(&repo).await.unwrap().unwrap();
    assert_eq!(m.backup_id, id(3));
    assert!(m.archives.is_empty(), "a summary");
    assert_eq!(it.next(&repo).await.unwrap().unwrap().backup_id, id(1));
    assert!(it.next(&repo).await.unwrap().is_none());
    assert_eq!(it.oldest(&repo).await.unwrap().unwrap().backup_id, id(1));
    // A skip passes over a backup unread.
    let mut it = repo.backups_newest_first(DEP).await.unwrap();
    it.skip();
    assert_eq!(it.next(&repo).await.unwrap().unwrap().backup_id, id(1));
    // Strict readers fail, naming the object.
    let e = repo.list_backups(DEP).await.unwrap_err();
    assert_eq!(e.code(), "verify.auth_tag_mismatch");
    assert!(e.to_string().contains(&manifest_object(2)), "{e}");
    let e = repo.load_manifest(DEP, &id(2)).await.unwrap_err();
    assert_eq!(e.code(), "verify.auth_tag_mismatch");
    assert!(e.to_string().contains(&manifest_object(2)), "{e}");

    // The newest one damaged: `latest` refuses, naming it and the newest intact backup.
    flip(&env, &manifest_object(3), 10);
    let e = repo.latest_backup(DEP).await.unwrap_err();
    assert_eq!(e.code(), "verify.latest_backup_damaged");
    assert!(e.to_string().contains(&manifest_object(3)), "{e}");
    assert!(e.to_string().contains("verify.auth_tag_mismatch"), "{e}");
    assert!(e.suggestion().unwrap().contains(&id(1)), "{e:?}");
    let e = repo.backups_for_latest(DEP).await.unwrap_err();
    assert_eq!(e.code(), "verify.latest_backup_damaged");
    let mut it = repo.backups_newest_first(DEP).await.unwrap();
    let e = it.next(&repo).await.unwrap_err();
    assert_eq!(e.code(), "verify.latest_backup_damaged");
    assert!(e.suggestion().unwrap().contains(&id(1)), "{e:?}");
    let l = repo.list_backups_checked(DEP).await.unwrap();
    assert_eq!(l.backups.len(), 1);
    assert_eq!(l.damaged.len(), 2);

    // Nothing intact at all: still refused, and said so.
    flip(&env, &manifest_object(1), 10);
    let e = repo.latest_backup(DEP).await.unwrap_err();
    assert_eq!(e.code(), "verify.latest_backup_damaged");
    assert!(
        e.suggestion().unwrap().contains("no intact backup"),
        "{e:?}"
    );
    // No backups at all: notfound.
    assert_eq!(
        repo.latest_backup("other").await.unwrap_err().code(),
        "notfound.backup"
    );
    assert!(repo.backups_for_latest("other").await.unwrap().is_empty());
    assert!(repo.backups_newest_first("other").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_chunk_read_error_names_the_pack_and_the_chunk() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    let m = backup(&repo, 1, 0..200).await;
    let (pack, at) = pack_of_first_page(&repo, &m).await;
    flip(&env, &pack, at as usize);
    let reader = repo.reader().await.unwrap();
    let first = m.archives[0].files[0].chunks[0];
    let e = reader.read(&first).await.unwrap_err();
    assert_eq!(e.code(), "verify.auth_tag_mismatch");
    let msg = e.to_string();
    assert!(msg.contains(&pack), "{msg}");
    assert!(msg.contains(&first.id.to_string()), "{msg}");
}

/// Backups 1 and 2 of the same pages 0..200, then a flipped byte in the pack holding
/// the first page: the repository, backup 1's manifest and the damaged pack.
async fn two_backups_one_damaged_pack(env: &Env) -> (Repository, BackupManifest, String) {
    let repo = env.small_pack_repo().await;
    let a = backup(&repo, 1, 0..200).await;
    backup(&repo, 2, 0..200).await;
    let (pack, at) = pack_of_first_page(&repo, &a).await;
    flip(env, &pack, at as usize);
    (repo, a, pack)
}

#[tokio::test]
async fn a_damaged_pack_is_reported_once_with_its_backups_and_a_healed_quarantined_pack_is_a_warning(
) {
    let env = Env::new();
    let (repo, a, pack) = two_backups_one_damaged_pack(&env).await;

    let r = repo.verify_repo().await.unwrap();
    let ps: Vec<_> = r.problems.iter().filter(|p| p.object == pack).collect();
    assert_eq!(ps.len(), 1, "{:#?}", r.problems);
    assert_eq!(ps[0].code, "verify.pack_corrupt");
    assert_eq!(ps[0].count, 1, "{:#?}", ps[0]);
    assert!(!ps[0].quarantined);
    assert_eq!(
        ps[0].backups,
        [format!("{DEP}/{}", id(1)), format!("{DEP}/{}", id(2))]
    );
    assert!(ps[0].message.contains(&id(2)), "{}", ps[0].message);
    let packs = r.checks.iter().find(|c| c.name == "packs").unwrap();
    assert_eq!(packs.failed, 1, "{:#?}", r.checks);
    assert_eq!(r.to_error().unwrap().code(), "verify.pack_corrupt");

    // One backup: the pack, the chunk and the file are named.
    let b = repo.verify_backup(DEP, &id(1)).await.unwrap();
    assert_eq!(b.problems.len(), 1, "{:#?}", b.problems);
    assert_eq!(b.problems[0].code, "verify.chunk_corrupt");
    assert_eq!(b.problems[0].object, pack);
    assert!(
        b.problems[0].message.contains("base/1/16384"),
        "{:#?}",
        b.problems
    );
    assert!(
        b.problems[0]
            .message
            .contains(&a.archives[0].files[0].chunks[0].id.to_string()),
        "{:#?}",
        b.problems
    );
    assert_eq!(b.problems[0].backups, [format!("{DEP}/{}", id(1))]);

    // Quarantine, a new backup of the same table: healed; the pack is a warning only.
    let q = repo.quarantine_damaged(&r).await.unwrap();
    assert_eq!(q, vec![(pack.clone(), true)]);
    backup(&repo, 3, 0..200).await;
    let r = repo.verify_repo().await.unwrap();
    assert!(r.is_ok(), "{:#?}", r.problems);
    let w: Vec<_> = r.warnings.iter().filter(|w| w.object == pack).collect();
    assert_eq!(w.len(), 1, "{:#?}", r.warnings);
    assert_eq!(w[0].code, "verify.pack_quarantined");
    assert!(w[0].quarantined);
    for n in 1..=2 {
        let b = repo.verify_backup(DEP, &id(n)).await.unwrap();
        assert!(b.is_ok(), "backup {n}: {:#?}", b.problems);
    }
}

#[tokio::test]
async fn a_quarantined_pack_stays_a_problem_naming_the_backups_that_cannot_heal() {
    let env = Env::new();
    let (repo, _, pack) = two_backups_one_damaged_pack(&env).await;
    let r = repo.verify_repo().await.unwrap();
    repo.quarantine_damaged(&r).await.unwrap();
    // The table changed: the new backup does not store the damaged pages again.
    backup(&repo, 3, 1000..1200).await;
    let r = repo.verify_repo().await.unwrap();
    assert!(!r.is_ok());
    let ps: Vec<_> = r.problems.iter().filter(|p| p.object == pack).collect();
    assert_eq!(ps.len(), 1, "{:#?}", r.problems);
    assert_eq!(ps[0].code, "verify.pack_corrupt");
    assert!(ps[0].quarantined);
    assert_eq!(
        ps[0].backups,
        [format!("{DEP}/{}", id(1)), format!("{DEP}/{}", id(2))]
    );
    assert!(ps[0].message.contains("cannot"), "{}", ps[0].message);
    assert!(repo.verify_backup(DEP, &id(3)).await.unwrap().is_ok());
    let b = repo.verify_backup(DEP, &id(2)).await.unwrap();
    assert_eq!(b.to_error().unwrap().code(), "verify.chunk_corrupt");
}
