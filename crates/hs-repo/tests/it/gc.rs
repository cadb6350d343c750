//! Leases, rotate + gc on real `file://` repositories, and gc running
//! concurrently with writers that deduplicate against packs gc condemns.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hs_repo::{
    BackupManifest, ChunkRef, FileEntry, GcOptions, LeaseKind, LeaseOptions, Repository,
    RetentionPolicy,
};

use crate::manifest::sample_manifest;
use crate::support::{noise, page, Env};

const MIB: u64 = 1 << 20;

fn gc_now() -> GcOptions {
    GcOptions {
        grace: Duration::ZERO,
        apply: true,
        max_unused: None,
    }
}

/// A manifest `id` of deployment `dep` whose file lists `refs` in its
/// manifest and `listed` through list chunks, at position `n` (LSN, time).
pub(crate) fn manifest_at(dep: &str, id: &str, n: u64, entry: FileEntry) -> BackupManifest {
    let mut m = sample_manifest(dep, id, &[]);
    m.archives[0].files[1] = entry;
    m.start_lsn = hs_repo::Lsn(n * 0x100_0000 + 0x28);
    m.stop_lsn = hs_repo::Lsn(n * 0x100_0000 + 0x100);
    m.start_time = format!("2026-11-{:02}T01:00:00Z", n + 1);
    m.stop_time = format!("2026-11-{:02}T01:01:00Z", n + 1);
    m
}

pub(crate) fn file(refs: Vec<ChunkRef>) -> FileEntry {
    FileEntry {
        mtime: 1,
        ..crate::support::file("base/1/16384", refs)
    }
}

/// Reads every chunk of every file of `m` with a fresh reader.
pub(crate) async fn read_all(repo: &Repository, m: &BackupManifest) -> hs_repo::Result<usize> {
    let reader = repo.reader().await?;
    let mut n = 0;
    for a in &m.archives {
        for f in &a.files {
            for c in reader.file_chunks(f).await? {
                let data = reader.read(&c).await?;
                assert_eq!(data.len(), c.len as usize);
                n += 1;
            }
        }
    }
    Ok(n)
}

#[tokio::test]
async fn rotate_then_gc_frees_space_and_kept_backups_read_back() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    let shared: Vec<Bytes> = (0..100).map(|i| Bytes::from(page(i))).collect();
    let mut manifests = Vec::new();
    for b in 0..3u64 {
        let lease = repo
            .acquire_lease(LeaseKind::Shared, "test backup", &LeaseOptions::backup())
            .await
            .unwrap();
        // Unique data in a session of its own, so whole packs belong to one backup.
        let mut w = repo.writer().await.unwrap();
        let mut refs = Vec::new();
        for i in 0..300 {
            refs.push(
                w.add(Bytes::from(noise(b * 10_000 + i, 8192)))
                    .await
                    .unwrap(),
            );
        }
        w.finish().await.unwrap();
        let mut w = repo.writer().await.unwrap();
        for s in &shared {
            refs.push(w.add(s.clone()).await.unwrap());
        }
        let mut entry = file(refs);
        // Long lists go through list chunks: gc must follow them.
        w.store_chunk_list(&mut entry).await.unwrap();
        assert!(!entry.chunk_lists.is_empty());
        w.finish().await.unwrap();
        let m = manifest_at("db1", &format!("b{b}"), b + 1, entry);
        lease.check().unwrap();
        repo.put_manifest(&m).await.unwrap();
        lease.release().await.unwrap();
        manifests.push(m);
    }
    assert!(repo.list_leases().await.unwrap().is_empty());
    let before = repo.stored_bytes().await.unwrap();

    // Nothing is garbage yet.
    let r = repo.gc(&gc_now()).await.unwrap();
    assert!(r.condemned.is_empty() && r.deleted.is_empty(), "{r:?}");

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let plan = repo
        .plan_retention("db1", &RetentionPolicy::Count(1), now)
        .await
        .unwrap();
    assert_eq!(
        plan.kept()
            .map(|b| b.backup_id.as_str())
            .collect::<Vec<_>>(),
        ["b2"]
    );
    let done = repo.apply_retention("db1", &plan).await.unwrap();
    assert_eq!(done.backups, 2);
    assert_eq!(repo.list_backups("db1").await.unwrap().len(), 1);

    // A dry run reports without touching anything.
    let rotated = repo.stored_bytes().await.unwrap();
    let dry = repo
        .gc(&GcOptions {
            grace: Duration::ZERO,
            apply: false,
            max_unused: None,
        })
        .await
        .unwrap();
    assert!(!dry.condemned.is_empty());
    assert_eq!(dry.deleted, dry.condemned);
    assert_eq!(repo.stored_bytes().await.unwrap(), rotated);

    let r = repo.gc(&gc_now()).await.unwrap();
    assert_eq!(r.deleted, dry.deleted, "{r:?}");
    assert!(r.deleted_bytes > 2 * 300 * 4096, "{r:?}");
    assert!(r.index_objects_replaced > 0);
    let after = repo.stored_bytes().await.unwrap();
    assert!(after < before - r.deleted_bytes / 2, "{before} -> {after}");

    // The kept backup reads back completely; a second run finds nothing.
    let kept = repo.load_manifest("db1", "b2").await.unwrap();
    assert_eq!(read_all(&repo, &kept).await.unwrap(), 400);
    let reopened = Repository::open(&env.url, &env.keyring).await.unwrap();
    assert_eq!(read_all(&reopened, &kept).await.unwrap(), 400);
    let r = repo.gc(&gc_now()).await.unwrap();
    assert!(
        r.condemned.is_empty() && r.deleted.is_empty() && r.waiting.is_empty(),
        "{r:?}"
    );
    assert!(std::fs::read_dir(env.repo_path().join("gc/condemned"))
        .map(|d| d.count() == 0)
        .unwrap_or(true));
}

#[tokio::test]
async fn gc_waits_for_a_backup_that_deduplicated_against_a_condemned_pack() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    // Backup b0 stores X; it is then deleted, so X's pack is garbage.
    let x = Bytes::from(noise(1, 64 * 1024));
    let mut w = repo.writer().await.unwrap();
    let rx = w.add(x.clone()).await.unwrap();
    w.finish().await.unwrap();
    let m0 = manifest_at("db1", "b0", 1, file(vec![rx]));
    repo.put_manifest(&m0).await.unwrap();
    std::fs::remove_file(env.repo_path().join("deployments/db1/backups/b0")).unwrap();

    // A backup starts before gc and deduplicates against X.
    let lease = repo
        .acquire_lease(LeaseKind::Shared, "backup db1", &LeaseOptions::backup())
        .await
        .unwrap();
    let mut w = repo.writer().await.unwrap();
    assert_eq!(w.add(x.clone()).await.unwrap(), rx);
    assert_eq!(w.stats().new_chunks, 0, "X was deduplicated");

    // gc condemns X's pack but must not delete it while that lease is live.
    let r = repo.gc(&gc_now()).await.unwrap();
    assert_eq!(r.condemned.len(), 1, "{r:?}");
    assert!(r.deleted.is_empty(), "{r:?}");
    assert_eq!(r.waiting.len(), 1);
    assert!(r.waiting[0].reason.contains("lease"), "{r:?}");

    // A writer that starts now treats the condemned pack as absent.
    let mut w2 = repo.writer().await.unwrap();
    w2.add(x.clone()).await.unwrap();
    assert_eq!(
        w2.stats().new_chunks,
        1,
        "condemned chunks are stored again"
    );
    drop(w2);

    w.finish().await.unwrap();
    let m1 = manifest_at("db1", "b1", 2, file(vec![rx]));
    lease.check().unwrap();
    repo.put_manifest(&m1).await.unwrap();
    lease.release().await.unwrap();

    // Now due, but b1 references X: the pack is reprieved, not deleted.
    let x_pack = {
        let r = repo.list_packs().await.unwrap();
        assert!(!r.is_empty());
        r
    };
    let r = repo.gc(&gc_now()).await.unwrap();
    assert_eq!(r.reprieved.len(), 1, "{r:?}");
    assert!(!r.deleted.contains(&r.reprieved[0]), "{r:?}");
    assert!(x_pack.iter().any(|p| p.name == r.reprieved[0]));
    assert_eq!(read_all(&repo, &m1).await.unwrap(), 1);
    let r = repo.gc(&gc_now()).await.unwrap();
    assert!(r.condemned.is_empty() && r.deleted.is_empty(), "{r:?}");
    assert_eq!(read_all(&repo, &m1).await.unwrap(), 1);
}

#[tokio::test]
async fn leases_exclusive_conflict_expiry_and_grace() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    let ex = repo
        .acquire_lease(
            LeaseKind::Exclusive,
            "rotate db1",
            &LeaseOptions::announce(),
        )
        .await
        .unwrap();
    let err = repo.gc(&gc_now()).await.unwrap_err();
    assert_eq!(err.code(), "conflict.repo_locked");
    assert!(err.to_string().contains("rotate db1"), "{err}");
    assert_eq!(
        repo.list_leases().await.unwrap().len(),
        1,
        "the loser removed its lease"
    );
    // Shared leases coexist with it.
    let sh = repo
        .acquire_lease(
            LeaseKind::Shared,
            "wal stream db1",
            &LeaseOptions::announce(),
        )
        .await
        .unwrap();
    ex.release().await.unwrap();
    sh.release().await.unwrap();
    assert!(repo.list_leases().await.unwrap().is_empty());

    // Garbage: a finished session whose backup never wrote its manifest.
    let mut w = repo.writer().await.unwrap();
    w.add(Bytes::from(noise(5, 2 * MIB as usize)))
        .await
        .unwrap();
    w.finish().await.unwrap();
    assert_eq!(repo.list_packs().await.unwrap().len(), 1);

    // A backup lease, live (held and refreshed) while gc condemns the garbage.
    let holder = repo
        .acquire_lease(
            LeaseKind::Shared,
            "backup db1",
            &LeaseOptions {
                ttl: Duration::from_secs(4),
                packs: true,
            },
        )
        .await
        .unwrap();
    let holder_id = holder.info().id.clone();

    // A long grace period: the fresh packs are not even condemned.
    let r0 = repo
        .gc(&GcOptions {
            grace: Duration::from_secs(3600),
            apply: true,
            max_unused: None,
        })
        .await
        .unwrap();
    assert!(r0.condemned.is_empty(), "{r0:?}");
    assert_eq!(r0.expired_leases_removed, 0, "{r0:?}");

    // No grace: condemned, but not deleted while the lease that was live at the
    // condemnation is still live; the lease stays.
    let r = repo.gc(&gc_now()).await.unwrap();
    assert_eq!(r.condemned.len(), 1, "{r:?}");
    assert!(r.deleted.is_empty(), "deleted under a live lease: {r:?}");
    assert_eq!(r.waiting.len(), 1, "{r:?}");
    assert!(
        r.waiting[0].reason.contains("still live"),
        "{:?}",
        r.waiting[0]
    );
    assert_eq!(r.expired_leases_removed, 0, "{r:?}");
    holder.check().unwrap();
    assert_eq!(repo.list_packs().await.unwrap().len(), 1);

    // The holder dies (stops refreshing, its lease object stays). Once the lease has
    // lapsed, gc ignores and removes it, and deletes the condemned pack.
    holder.leak();
    let start = std::time::Instant::now();
    loop {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let ls = repo.list_leases().await.unwrap();
        assert!(ls.iter().any(|l| l.id == holder_id), "lease object gone");
        if ls.iter().all(|l| !l.is_live(now)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "lease never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r2 = repo.gc(&gc_now()).await.unwrap();
    assert_eq!(r2.expired_leases_removed, 1, "{r2:?}");
    assert_eq!(r2.deleted, r.condemned, "{r2:?}");
    assert!(r2.waiting.is_empty(), "{r2:?}");
    assert!(!repo
        .list_leases()
        .await
        .unwrap()
        .iter()
        .any(|l| l.id == holder_id));
    assert!(repo.list_packs().await.unwrap().is_empty());
}

#[tokio::test]
async fn lease_is_refreshed_while_held() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    let lease = repo
        .acquire_lease(
            LeaseKind::Shared,
            "backup db1",
            &LeaseOptions {
                ttl: Duration::from_secs(2),
                packs: true,
            },
        )
        .await
        .unwrap();
    let first = lease.info().expires;
    let start = std::time::Instant::now();
    loop {
        let l = repo.list_leases().await.unwrap();
        if l[0].expires > first {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never refreshed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lease.check().unwrap();
    lease.release().await.unwrap();
    assert!(repo.list_leases().await.unwrap().is_empty());
}

/// The hazard gc must close: a writer deduplicates against a chunk in a pack
/// gc considers unreferenced, then writes a manifest referencing it. Backup
/// `i` references data(i) (new) and data(i - 2), which at that moment only
/// deleted backups reference; gc runs in a loop with no grace period. Every
/// manifest must read back completely while it exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_in_a_loop_never_deletes_what_a_concurrent_writer_references() {
    gc_loop_with_writer(None).await;
}

/// The same with repacking at every run (`--max-unused 0`): packs whose chunks a
/// deleted backup used are repacked and deleted while backups deduplicate against them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_repacking_in_a_loop_never_deletes_what_a_concurrent_writer_references() {
    gc_loop_with_writer(Some(0.0)).await;
}

async fn gc_loop_with_writer(max_unused: Option<f64>) {
    let gc_now = move || GcOptions {
        max_unused,
        ..gc_now()
    };
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    let data = |i: u64| -> Vec<Bytes> {
        (0..40)
            .map(|j| Bytes::from(noise(i * 1000 + j, 16 * 1024)))
            .collect()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let deleted = Arc::new(AtomicUsize::new(0));
    let repacked = Arc::new(AtomicUsize::new(0));
    let gc_task = {
        let (repo, stop, deleted) = (repo.clone(), stop.clone(), deleted.clone());
        let repacked = repacked.clone();
        tokio::spawn(async move {
            let mut runs = 0;
            while !stop.load(Ordering::SeqCst) {
                match repo.gc(&gc_now()).await {
                    Ok(r) => {
                        deleted.fetch_add(r.deleted.len(), Ordering::SeqCst);
                        repacked.fetch_add(r.repacked.len(), Ordering::SeqCst);
                        runs += 1;
                    }
                    Err(e) if e.code() == "conflict.repo_locked" => {}
                    Err(e) => panic!("gc failed: {e} ({})", e.code()),
                }
                tokio::task::yield_now().await;
            }
            runs
        })
    };
    const ROUNDS: u64 = 14;
    let mut prev: Option<BackupManifest> = None;
    for i in 0..ROUNDS {
        let lease = repo
            .acquire_lease(LeaseKind::Shared, "backup db1", &LeaseOptions::backup())
            .await
            .unwrap();
        let mut w = repo.writer().await.unwrap();
        let mut refs = Vec::new();
        if i >= 2 {
            for c in data(i - 2) {
                refs.push(w.add(c).await.unwrap());
                tokio::task::yield_now().await;
            }
        }
        for c in data(i) {
            refs.push(w.add(c).await.unwrap());
        }
        if max_unused.is_some() {
            // Chunks only this backup uses, in the same packs as data(i), which the
            // backup after next uses again: its packs are partly dead once it is deleted.
            for j in 0..40 {
                refs.push(
                    w.add(Bytes::from(noise(i * 1000 + 500 + j, 16 * 1024)))
                        .await
                        .unwrap(),
                );
            }
        }
        w.finish().await.unwrap();
        let m = manifest_at("db1", &format!("b{i:02}"), i + 1, file(refs));
        lease.check().unwrap();
        repo.put_manifest(&m).await.unwrap();
        lease.release().await.unwrap();
        if let Some(p) = prev.take() {
            // Still present: it must read back in full, whatever gc did.
            let n = read_all(&repo, &p)
                .await
                .unwrap_or_else(|e| panic!("backup {} lost data: {e} ({})", p.backup_id, e.code()));
            let own = if max_unused.is_some() { 40 } else { 0 };
            assert_eq!(
                n,
                own + if p.backup_id.as_str() >= "b02" {
                    80
                } else {
                    40
                }
            );
            std::fs::remove_file(
                env.repo_path()
                    .join(format!("deployments/db1/backups/{}", p.backup_id)),
            )
            .unwrap();
        }
        prev = Some(m);
    }
    stop.store(true, Ordering::SeqCst);
    let runs = gc_task.await.unwrap();
    assert!(runs > 0);
    let last = prev.unwrap();
    let r = repo.gc(&gc_now()).await.unwrap();
    deleted.fetch_add(r.deleted.len(), Ordering::SeqCst);
    repacked.fetch_add(r.repacked.len(), Ordering::SeqCst);
    let last_chunks = if max_unused.is_some() { 120 } else { 80 };
    assert_eq!(read_all(&repo, &last).await.unwrap(), last_chunks);
    assert!(
        deleted.load(Ordering::SeqCst) > 0,
        "gc never deleted anything"
    );
    if max_unused.is_some() {
        assert!(repacked.load(Ordering::SeqCst) > 0, "gc never repacked");
    }
    // Only what the last backup references is left (plus nothing condemned). With
    // repacking, a pack the previous run reprieved (a backup reached a chunk the new
    // pack lacked) is partly dead and repacked by the next: one more run at most.
    let mut settled = false;
    for _ in 0..3 {
        let r = repo.gc(&gc_now()).await.unwrap();
        assert!(r.waiting.is_empty(), "{r:?}");
        if r.deleted.is_empty() && r.repacked.is_empty() {
            settled = true;
            break;
        }
        assert!(max_unused.is_some(), "{r:?}");
    }
    assert!(settled, "gc did not settle");
    assert_eq!(read_all(&repo, &last).await.unwrap(), last_chunks);
}

/// A damaged pack, quarantined: the next backup stores fresh copies of its chunks
/// instead of referencing it, the older backup reads those copies (healed), verify keeps
/// naming the damaged pack (as a warning once healed) until gc, and gc deletes it and its
/// record.
#[tokio::test]
async fn a_quarantined_pack_is_not_reused_heals_older_backups_and_gc_removes_it() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    let write = |id: &'static str| {
        let repo = repo.clone();
        async move {
            let mut w = repo.writer().await.unwrap();
            let mut refs = Vec::new();
            for i in 0..200u64 {
                refs.push(w.add(Bytes::from(page(i))).await.unwrap());
            }
            w.finish().await.unwrap();
            let m = manifest_at("dep", id, 1, file(refs.clone()));
            repo.put_manifest(&m).await.unwrap();
            (m, refs)
        }
    };
    // The WAL the manifests need (segment 1 of timeline 1, 16 MiB), so that only the
    // pack damage below is a problem.
    repo.put_wal_segment("dep", "000000010000000000000001", &noise(7, 16 << 20))
        .await
        .unwrap();
    let (old, old_refs) = write("a").await;
    let packs_before = repo.list_packs().await.unwrap();
    assert!(!packs_before.is_empty());
    // Damage the first blob of the first pack.
    let pack = packs_before[0].name.clone();
    let path = env.repo_path().join(&pack);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let report = repo.verify_backup("dep", "a").await.unwrap();
    assert!(
        report.problems.iter().any(|p| p.object == pack),
        "{:#?}",
        report.problems
    );
    assert_eq!(
        read_all(&repo, &old).await.unwrap_err().code(),
        "verify.auth_tag_mismatch"
    );

    // Quarantine it (twice: the second time it already is).
    assert_eq!(
        repo.quarantine_damaged(&report).await.unwrap(),
        vec![(pack.clone(), true)]
    );
    assert_eq!(
        repo.quarantine_damaged(&report).await.unwrap(),
        vec![(pack.clone(), false)]
    );
    let q = repo.quarantined_packs().await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].pack, pack);
    assert_eq!(q[0].reason, "verify.chunk_corrupt", "{q:?}");
    assert_eq!(
        repo.quarantine_pack("index/abc", "x")
            .await
            .unwrap_err()
            .code(),
        "usage.invalid_object_name"
    );

    // The same data again: not deduplicated against the quarantined pack.
    let (new, new_refs) = write("b").await;
    let ids = |refs: &[ChunkRef]| refs.iter().map(|r| (r.id, r.len)).collect::<Vec<_>>();
    assert_eq!(
        ids(&new_refs),
        ids(&old_refs),
        "chunk ids are content hashes"
    );
    // ... stored in fresh packs: the references name other packs.
    assert!(new_refs
        .iter()
        .all(|r| r.pack.is_some() && r.pack.map(|p| p.object_name()) != Some(pack.clone())));
    assert!(repo.list_packs().await.unwrap().len() > packs_before.len());
    assert_eq!(read_all(&repo, &new).await.unwrap(), 200);
    // The older backup now reads the fresh copies: healed.
    assert_eq!(read_all(&repo, &old).await.unwrap(), 200);
    let healed = repo.verify_backup("dep", "a").await.unwrap();
    assert!(healed.is_ok(), "{:#?}", healed.problems);
    // The damaged pack is still there, named, but no backup reads a damaged chunk from
    // it any more: a warning (`verify.pack_quarantined`), not a problem.
    let full = repo.verify_repo().await.unwrap();
    assert!(full.is_ok(), "{:#?}", full.problems);
    let w = full
        .warnings
        .iter()
        .find(|w| w.object == pack)
        .expect("the damaged pack is named");
    assert_eq!(w.code, "verify.pack_quarantined", "{w:?}");
    assert!(w.quarantined, "{w:?}");

    // gc: no backup needs the damaged pack any more: condemned and deleted with its
    // record; the repository verifies clean.
    // (With no grace period and no lease, one run condemns and deletes.) A temporary
    // file a dead writer left two hours ago goes too.
    let dead = env.repo_path().join("data/.tmp-dead-writer");
    std::fs::write(&dead, b"partial").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&dead)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    let run = repo.gc(&gc_now()).await.unwrap();
    assert_eq!(run.temporaries_removed, 1, "{run:?}");
    assert!(!dead.exists());
    assert!(run.condemned.contains(&pack), "{run:?}");
    assert!(run.deleted.contains(&pack), "{run:?}");
    assert_eq!(run.deleted.len(), 1, "{run:?}");
    assert_eq!(run.quarantine_records_removed, 1, "{run:?}");
    assert!(repo.quarantined_packs().await.unwrap().is_empty());
    let clean = repo.verify_repo().await.unwrap();
    assert!(clean.is_ok(), "{:#?}", clean.problems);
    assert_eq!(read_all(&repo, &old).await.unwrap(), 200);
}

/// A quarantined pack that still holds the only copy of a referenced chunk is kept by gc.
#[tokio::test]
async fn gc_keeps_a_quarantined_pack_that_holds_the_only_copy() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    let mut w = repo.writer().await.unwrap();
    let mut refs = Vec::new();
    for i in 0..50u64 {
        refs.push(w.add(Bytes::from(noise(i, 9000))).await.unwrap());
    }
    w.finish().await.unwrap();
    repo.put_manifest(&manifest_at("dep", "a", 1, file(refs)))
        .await
        .unwrap();
    let packs = repo.list_packs().await.unwrap();
    for p in &packs {
        assert!(repo
            .quarantine_pack(&p.name, "verify.pack_corrupt")
            .await
            .unwrap());
    }
    let r = repo.gc(&gc_now()).await.unwrap();
    assert!(r.condemned.is_empty(), "{r:?}");
    assert_eq!(r.packs_referenced, packs.len(), "{r:?}");
    assert_eq!(repo.list_packs().await.unwrap().len(), packs.len());

    // A damaged record is reported by name, and its pack stays quarantined: a writer
    // stores the same data again instead of deduplicating against it.
    let id = packs[0].name.rsplit('/').next().unwrap();
    let record = format!("quarantine/{id}");
    let path = env.repo_path().join(&record);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let v = repo.verify_repo().await.unwrap();
    assert!(
        v.problems
            .iter()
            .any(|p| p.object == record && p.code == "verify.quarantine_record_invalid"),
        "{:#?}",
        v.problems
    );
    assert_eq!(
        repo.quarantined_packs().await.unwrap_err().code(),
        "verify.auth_tag_mismatch"
    );
    let before = repo.list_packs().await.unwrap().len();
    let mut w = repo.writer().await.unwrap();
    for i in 0..50u64 {
        w.add(Bytes::from(noise(i, 9000))).await.unwrap();
    }
    w.finish().await.unwrap();
    assert!(repo.list_packs().await.unwrap().len() > before);
}

/// The packs `refs` name.
fn named(refs: &[ChunkRef]) -> std::collections::BTreeSet<String> {
    refs.iter()
        .map(|r| r.pack.expect("a format 2 reference").object_name())
        .collect()
}

async fn pack_names(repo: &Repository) -> std::collections::BTreeSet<String> {
    repo.list_packs()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect()
}

/// Format 2 only: a pack is referenced because a reference names it, not because it
/// holds a chunk a manifest references. Two sessions store the same data (neither
/// sees the other's packs): the copies nobody names are collected, a named pack is
/// kept even when every chunk it holds lives on elsewhere, and a reference whose
/// named pack is gone keeps the other copy (found through the index).
#[tokio::test]
async fn format_2_gc_collects_unnamed_duplicates_and_keeps_named_packs() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    let data: Vec<Bytes> = (0..100)
        .map(|i| Bytes::from(noise(500 + i, 16 * 1024)))
        .collect();
    let mut w1 = repo.writer().await.unwrap();
    let mut w2 = repo.writer().await.unwrap();
    let mut refs1 = Vec::new();
    for d in &data {
        refs1.push(w1.add(d.clone()).await.unwrap());
    }
    let mut entry1 = file(refs1.clone());
    w1.store_chunk_list(&mut entry1).await.unwrap();
    assert!(!entry1.chunk_lists.is_empty());
    w1.finish().await.unwrap();
    let mut refs2 = Vec::new();
    for d in &data {
        refs2.push(w2.add(d.clone()).await.unwrap());
    }
    let stats = w2.finish().await.unwrap();
    assert_eq!(stats.new_chunks, 100, "the second session stored copies");
    let (p1, p2) = (named(&refs1), named(&refs2));
    let p1_all: std::collections::BTreeSet<String> =
        p1.union(&named(&entry1.chunk_lists)).cloned().collect();
    assert!(p1_all.is_disjoint(&p2), "{p1_all:?} {p2:?}");
    assert!(p2.len() >= 2, "several packs of copies: {p2:?}");

    let a = manifest_at("db1", "a", 1, entry1.clone());
    repo.put_manifest(&a).await.unwrap();
    // b names the first copy's pack(s) of its first 10 chunks, all also held by p1.
    let b_refs: Vec<ChunkRef> = refs2[..10].to_vec();
    let b = manifest_at("db1", "b", 2, file(b_refs.clone()));
    repo.put_manifest(&b).await.unwrap();
    let kept_for_b = named(&b_refs);
    let unnamed: Vec<String> = p2.difference(&kept_for_b).cloned().collect();
    assert!(!unnamed.is_empty());

    // The copies nobody names go; every named pack stays.
    let r = repo.gc(&gc_now()).await.unwrap();
    assert_eq!(r.condemned, unnamed, "{r:?}");
    assert_eq!(r.deleted, unnamed, "{r:?}");
    assert!(r.reprieved.is_empty(), "{r:?}");
    assert_eq!(r.packs_referenced, p1_all.len() + kept_for_b.len(), "{r:?}");
    let left = pack_names(&repo).await;
    assert!(left.is_superset(&p1_all) && left.is_superset(&kept_for_b));
    assert_eq!(read_all(&repo, &a).await.unwrap(), 100);
    assert_eq!(read_all(&repo, &b).await.unwrap(), 10);

    // A manifest that names b's packs, then b goes: b's packs stay (named) ...
    let c = manifest_at("db1", "c", 3, file(b_refs.clone()));
    repo.put_manifest(&c).await.unwrap();
    std::fs::remove_file(env.repo_path().join("deployments/db1/backups/b")).unwrap();
    let r = repo.gc(&gc_now()).await.unwrap();
    assert!(r.condemned.is_empty() && r.deleted.is_empty(), "{r:?}");

    // ... and once c is the only one left with a pack named and a then goes, the packs of
    // a that hold c's chunks are not named, but c needs them if c's named packs are
    // gone. Quarantine c's packs: every chunk lives on in a's packs, so they go, and
    // a's packs that hold c's chunks stay (found by id through the index).
    std::fs::remove_file(env.repo_path().join("deployments/db1/backups/a")).unwrap();
    for p in &kept_for_b {
        assert!(repo
            .quarantine_pack(p, "verify.pack_corrupt")
            .await
            .unwrap());
    }
    let r = repo.gc(&gc_now()).await.unwrap();
    for p in &kept_for_b {
        assert!(r.deleted.contains(p), "{r:?}");
    }
    let holders: std::collections::BTreeSet<String> = named(&refs1[..10]);
    let left = pack_names(&repo).await;
    assert!(left.is_superset(&holders), "{left:?} {holders:?} {r:?}");
    assert!(left.is_disjoint(&kept_for_b));
    assert!(repo.quarantined_packs().await.unwrap().is_empty());
    assert_eq!(
        read_all(&repo, &c).await.unwrap(),
        10,
        "read through the index"
    );
    // Stable: c's references name packs that are gone; the copies stay.
    let r = repo.gc(&gc_now()).await.unwrap();
    assert!(r.condemned.is_empty() && r.deleted.is_empty(), "{r:?}");
    assert_eq!(r.packs_referenced, holders.len(), "{r:?}");
    assert_eq!(read_all(&repo, &c).await.unwrap(), 10);
    assert!(repo.verify_repo().await.unwrap().is_ok());
}

/// A format 1 manifest (references without packs, through an unplaced list chunk) next
/// to format 2 ones: every pack that holds a chunk the format 1 manifest references is
/// kept, copies included, until that manifest goes.
#[tokio::test]
async fn gc_keeps_what_a_format_1_manifest_references_next_to_format_2_ones() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    let old: Vec<Bytes> = (0..100)
        .map(|i| Bytes::from(noise(900 + i, 16 * 1024)))
        .collect();
    // Two sessions store the old data (two copies), as format 1 writers could.
    let mut w1 = repo.writer().await.unwrap();
    let mut w2 = repo.writer().await.unwrap();
    let mut refs = Vec::new();
    for d in &old {
        refs.push(w1.add(d.clone()).await.unwrap());
        w2.add(d.clone()).await.unwrap();
    }
    let unplaced: Vec<ChunkRef> = refs
        .iter()
        .map(|r| ChunkRef::unplaced(r.id, r.len))
        .collect();
    let mut entry = file(unplaced);
    w1.store_chunk_list(&mut entry).await.unwrap();
    for l in &mut entry.chunk_lists {
        *l = ChunkRef::unplaced(l.id, l.len);
    }
    w1.finish().await.unwrap();
    w2.finish().await.unwrap();
    let old_packs = pack_names(&repo).await;
    let mut m1 = manifest_at("db1", "f1", 1, entry);
    m1.format = 1;
    repo.put_manifest(&m1).await.unwrap();

    // A format 2 backup of other data.
    let mut w = repo.writer().await.unwrap();
    let mut refs2 = Vec::new();
    for i in 0..80 {
        refs2.push(
            w.add(Bytes::from(noise(5000 + i, 16 * 1024)))
                .await
                .unwrap(),
        );
    }
    let mut entry2 = file(refs2.clone());
    w.store_chunk_list(&mut entry2).await.unwrap();
    w.finish().await.unwrap();
    let m2 = manifest_at("db1", "f2", 2, entry2.clone());
    repo.put_manifest(&m2).await.unwrap();
    let new_packs: std::collections::BTreeSet<String> = named(&refs2)
        .union(&named(&entry2.chunk_lists))
        .cloned()
        .collect();
    assert!(new_packs.is_disjoint(&old_packs));
    // Garbage: a session whose backup never wrote its manifest.
    let mut w = repo.writer().await.unwrap();
    let garbage = w
        .add(Bytes::from(noise(77, 600 * 1024)))
        .await
        .unwrap()
        .pack
        .unwrap()
        .object_name();
    w.finish().await.unwrap();

    let r = repo.gc(&gc_now()).await.unwrap();
    assert_eq!(r.deleted, vec![garbage.clone()], "{r:?}");
    let left = pack_names(&repo).await;
    assert!(left.is_superset(&old_packs) && left.is_superset(&new_packs));
    // Every old pack holds a chunk (or the list chunk) f1 references by id: both
    // copies count for format 1.
    assert_eq!(
        r.packs_referenced,
        old_packs.len() + new_packs.len(),
        "{r:?}"
    );
    assert_eq!(read_all(&repo, &m1).await.unwrap(), 100);
    assert_eq!(read_all(&repo, &m2).await.unwrap(), 80);

    // f1 goes: its packs follow; f2 stays whole.
    std::fs::remove_file(env.repo_path().join("deployments/db1/backups/f1")).unwrap();
    let r = repo.gc(&gc_now()).await.unwrap();
    assert_eq!(
        r.deleted,
        old_packs.iter().cloned().collect::<Vec<_>>(),
        "{r:?}"
    );
    assert_eq!(pack_names(&repo).await, new_packs);
    assert_eq!(read_all(&repo, &m2).await.unwrap(), 80);
    assert!(repo.verify_repo().await.unwrap().is_ok());
}
