//! `repo gc` repacking partly dead packs on real `file://` repositories: live chunks
//! move to new packs, every kept backup reads back (through moved records, without
//! the whole index) and verifies, an interrupted repack leaves a repository that
//! verifies, and a backup that names a pack being repacked keeps what it needs.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use hs_repo::{
    open_backend, Backend, BackupManifest, ChunkRef, GcOptions, LeaseKind, LeaseOptions,
    ObjectInfo, Repository, RetentionPolicy,
};

use crate::gc::{file, manifest_at, read_all};
use crate::support::{noise, Env};

fn repack_now() -> GcOptions {
    GcOptions {
        grace: Duration::ZERO,
        apply: true,
        max_unused: Some(5.0),
    }
}

/// Chunks 0..150 are kept by both backups; of the rest, the even ones are kept and
/// the odd ones only the old backup uses. Incompressible 8 KiB chunks: about five
/// 1 MiB packs, each frame of the later ones half dead.
struct Setup {
    old: BackupManifest,
    new: BackupManifest,
    /// References only the old backup makes.
    dead: Vec<ChunkRef>,
    /// References both make.
    live: Vec<ChunkRef>,
}

async fn two_backups(repo: &Repository) -> Setup {
    let mut w = repo.writer().await.unwrap();
    let (mut live, mut dead) = (Vec::new(), Vec::new());
    for i in 0..600u64 {
        let r = w.add(Bytes::from(noise(7_000 + i, 8192))).await.unwrap();
        if i < 150 || i % 2 == 0 {
            live.push(r);
        } else {
            dead.push(r);
        }
    }
    let mut all = live.clone();
    all.extend(dead.iter().cloned());
    let mut old = file(all);
    w.store_chunk_list(&mut old).await.unwrap();
    let mut new = file(live.clone());
    w.store_chunk_list(&mut new).await.unwrap();
    w.finish().await.unwrap();
    let old = manifest_at("db1", "b0", 1, old);
    let new = manifest_at("db1", "b1", 2, new);
    repo.put_manifest(&old).await.unwrap();
    repo.put_manifest(&new).await.unwrap();
    Setup {
        old,
        new,
        dead,
        live,
    }
}

async fn rotate_to_newest(repo: &Repository) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let plan = repo
        .plan_retention("db1", &RetentionPolicy::Count(1), now)
        .await
        .unwrap();
    assert_eq!(repo.apply_retention("db1", &plan).await.unwrap().backups, 1);
}

async fn pack_names(repo: &Repository) -> BTreeSet<String> {
    repo.list_packs()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect()
}

async fn assert_verifies(repo: &Repository) {
    let r = repo.verify_repo().await.unwrap();
    assert!(r.is_ok(), "repo verify: {:?}", r.problems);
    for m in repo.list_backups("db1").await.unwrap() {
        // Every chunk read back and checked; the synthetic manifests have no WAL.
        let r = repo.verify_backup("db1", &m.backup_id).await.unwrap();
        let problems: Vec<_> = r
            .problems
            .iter()
            .filter(|p| p.code != "verify.wal_missing")
            .collect();
        assert!(problems.is_empty(), "verify {}: {problems:?}", m.backup_id);
    }
}

#[tokio::test]
async fn gc_repacks_partly_dead_packs_and_kept_backups_read_back_through_moved_records() {
    let env = Env::new();
    repack_and_read_back(env.small_pack_repo().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_gc_repacks_partly_dead_packs_and_kept_backups_read_back() {
    let Some((_server, bucket)) =
        crate::conformance::server_bucket(hs_testkit::StorageKind::S3, "s3_repack", "repack")
    else {
        return;
    };
    let env = Env::new();
    let repo = Repository::builder(&bucket.url)
        .pack_target_size(1 << 20)
        .init(&env.keyring)
        .await
        .unwrap();
    repack_and_read_back(repo).await;
}

/// Two backups, rotate to the newer, gc: its partly dead packs are repacked and
/// deleted, it reads back through the moved records and verifies, and a second gc
/// has nothing to do.
async fn repack_and_read_back(repo: Repository) {
    let s = two_backups(&repo).await;
    let named: BTreeSet<String> = s
        .live
        .iter()
        .map(|r| r.pack.unwrap().object_name())
        .collect();
    // Before rotate nothing is unused: nothing to repack.
    let r = repo.gc(&repack_now()).await.unwrap();
    assert!(r.repacked.is_empty() && r.deleted.is_empty(), "{r:?}");
    assert!(r.kept.iter().any(|k| k.reason == "no_unused"), "{r:?}");
    rotate_to_newest(&repo).await;
    let chunks = read_all(&repo, &s.new).await.unwrap();
    let before = repo.stored_bytes().await.unwrap();

    // A dry run says what it would repack and changes nothing.
    let dry = repo
        .gc(&GcOptions {
            apply: false,
            ..repack_now()
        })
        .await
        .unwrap();
    assert!(!dry.repacked.is_empty(), "{dry:?}");
    assert!(dry.unused_bytes > 225 * 8000, "{dry:?}");
    assert_eq!(repo.stored_bytes().await.unwrap(), before);

    let r = repo.gc(&repack_now()).await.unwrap();
    assert_eq!(r.repacked, dry.repacked, "{r:?}");
    assert!(r.repacked.iter().all(|p| named.contains(p)), "{r:?}");
    assert!(!r.repack_new_packs.is_empty());
    assert!(r.repack_copied_bytes < r.repacked_bytes, "{r:?}");
    // Grace 0 and no lease: the old packs go in the same run.
    for p in &r.repacked {
        assert!(r.deleted.contains(p), "{p} not deleted: {r:?}");
    }
    assert!(r.reprieved.is_empty(), "{r:?}");
    let after = repo.stored_bytes().await.unwrap();
    let live_bytes = s.live.len() as u64 * 8192;
    assert!(
        after < live_bytes + live_bytes / 5,
        "{before} -> {after} bytes for {live_bytes} live"
    );
    let packs = pack_names(&repo).await;
    assert!(
        named.iter().any(|p| !packs.contains(p)),
        "some named pack is gone"
    );

    // The kept backup still names the deleted packs: a fresh reader follows the
    // moved records, never the whole index.
    let reader = repo.reader().await.unwrap();
    let mut n = 0;
    for c in reader
        .file_chunks(&s.new.archives[0].files[1])
        .await
        .unwrap()
    {
        let data = reader.read(&c).await.unwrap();
        assert_eq!(data.len(), 8192);
        n += 1;
    }
    assert_eq!(n, s.live.len());
    assert!(!reader.loaded_index(), "the reader loaded the whole index");
    assert_eq!(read_all(&repo, &s.new).await.unwrap(), chunks);
    assert_verifies(&repo).await;

    // Converged: a second run repacks and deletes nothing, and keeps its moved records.
    let r = repo.gc(&repack_now()).await.unwrap();
    assert!(r.repacked.is_empty() && r.deleted.is_empty(), "{r:?}");
    assert_eq!(r.moved_records_removed, 0, "{r:?}");
    assert_eq!(read_all(&repo, &s.new).await.unwrap(), chunks);
    let _ = s.old;
}

/// A file:// store whose writes under `prefix` fail while `armed` is set (a crash
/// of gc at that point: nothing after it happens).
struct FailWrites {
    inner: Arc<dyn Backend>,
    prefix: &'static str,
    armed: AtomicBool,
}

#[async_trait]
impl Backend for FailWrites {
    fn location(&self) -> &str {
        self.inner.location()
    }
    async fn put_if_absent(&self, name: &str, data: Bytes) -> hs_repo::Result<bool> {
        if self.armed.load(Ordering::SeqCst) && name.starts_with(self.prefix) {
            return Err(hs_repo::Error::new("io.storage_failed", "injected crash"));
        }
        self.inner.put_if_absent(name, data).await
    }
    async fn put(&self, name: &str, data: Bytes) -> hs_repo::Result<()> {
        self.inner.put(name, data).await
    }
    async fn get(&self, name: &str) -> hs_repo::Result<Bytes> {
        self.inner.get(name).await
    }
    async fn get_range(&self, name: &str, offset: u64, len: u64) -> hs_repo::Result<Bytes> {
        self.inner.get_range(name, offset, len).await
    }
    async fn list(&self, prefix: &str) -> hs_repo::Result<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, name: &str) -> hs_repo::Result<()> {
        self.inner.delete(name).await
    }
    async fn stat(&self, name: &str) -> hs_repo::Result<Option<ObjectInfo>> {
        self.inner.stat(name).await
    }
}

/// gc stops (as if killed) when it writes the first object under `prefix`; the
/// repository then verifies and reads back, and the next run finishes the job.
async fn crash_at(prefix: &'static str) {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    let s = two_backups(&repo).await;
    rotate_to_newest(&repo).await;
    let chunks = read_all(&repo, &s.new).await.unwrap();
    let failing = Arc::new(FailWrites {
        inner: open_backend(&env.url).unwrap(),
        prefix,
        armed: AtomicBool::new(true),
    });
    let crashing = Repository::builder(&env.url)
        .backend(failing.clone())
        .open(&env.keyring)
        .await
        .unwrap();
    let e = crashing.gc(&repack_now()).await.unwrap_err();
    assert!(e.to_string().contains("injected"), "{e}");
    // The crashed run's lease is still there: drop it as a restarted gc would after
    // it expired (a killed gc cannot release it).
    for l in repo.list_leases().await.unwrap() {
        std::fs::remove_file(env.repo_path().join("locks").join(&l.id)).unwrap();
    }
    assert_eq!(read_all(&repo, &s.new).await.unwrap(), chunks);
    assert_verifies(&repo).await;

    let r = repo.gc(&repack_now()).await.unwrap();
    assert!(!r.repacked.is_empty(), "{prefix}: {r:?}");
    let r = repo.gc(&repack_now()).await.unwrap();
    assert!(r.repacked.is_empty(), "{prefix}: {r:?}");
    assert_eq!(read_all(&repo, &s.new).await.unwrap(), chunks);
    assert_verifies(&repo).await;
    // Nothing is left of the crashed run: every moved record is of a deleted pack.
    let packs = pack_names(&repo).await;
    let moved = open_backend(&env.url)
        .unwrap()
        .list("gc/moved/")
        .await
        .unwrap();
    assert!(!moved.is_empty());
    for m in &moved {
        let from = &m.name["gc/moved/".len().."gc/moved/".len() + 64];
        assert!(
            !packs.contains(&format!("data/{}/{from}", &from[..2])),
            "{prefix}: stale {}",
            m.name
        );
    }
}

#[tokio::test]
async fn a_repack_interrupted_before_the_index_leaves_a_repository_that_verifies() {
    crash_at("index/").await;
}

#[tokio::test]
async fn a_repack_interrupted_before_its_condemnation_record_is_cleaned_up() {
    crash_at("gc/condemned/").await;
}

#[tokio::test]
async fn a_backup_that_names_a_pack_being_repacked_keeps_what_it_references() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    let s = two_backups(&repo).await;
    rotate_to_newest(&repo).await;
    let chunks = read_all(&repo, &s.new).await.unwrap();
    // A backup starts before gc: it takes a chunk the rotated backup used (dead for
    // gc now) and a live one, by the packs the parent named, as hints do.
    let lease = repo
        .acquire_lease(LeaseKind::Shared, "backup db1", &LeaseOptions::backup())
        .await
        .unwrap();
    let dead = s.dead[10];
    let dead_pack = dead.pack.unwrap().object_name();
    let live = *s
        .live
        .iter()
        .rev()
        .find(|r| r.pack.unwrap().object_name() != dead_pack)
        .unwrap();
    let live_pack = live.pack.unwrap().object_name();

    let r = repo.gc(&repack_now()).await.unwrap();
    assert!(r.repacked.contains(&dead_pack), "{r:?}");
    assert!(r.repacked.contains(&live_pack), "{r:?}");
    assert!(
        r.deleted.is_empty(),
        "the lease holds every condemned pack: {r:?}"
    );
    assert!(
        r.waiting.iter().any(|w| w.reason.contains("lease")),
        "{r:?}"
    );

    let m = manifest_at("db1", "b2", 3, file(vec![dead, live]));
    lease.check().unwrap();
    repo.put_manifest(&m).await.unwrap();
    lease.release().await.unwrap();

    // Due now: the live chunk's old pack goes (its chunk is in the new pack), the
    // dead chunk's old pack stays (the new pack does not hold it).
    let r = repo.gc(&repack_now()).await.unwrap();
    assert!(r.reprieved.contains(&dead_pack), "{r:?}");
    assert!(r.deleted.contains(&live_pack), "{r:?}");
    assert!(r.moved_records_removed >= 1, "{r:?}");
    assert_eq!(read_all(&repo, &m).await.unwrap(), 2);
    assert_eq!(read_all(&repo, &s.new).await.unwrap(), chunks);
    assert_verifies(&repo).await;

    // Later runs converge and keep every backup readable.
    for _ in 0..3 {
        repo.gc(&repack_now()).await.unwrap();
    }
    assert_eq!(read_all(&repo, &m).await.unwrap(), 2);
    assert_eq!(read_all(&repo, &s.new).await.unwrap(), chunks);
    assert_verifies(&repo).await;
}

/// A hint that names a repacked, deleted pack P leads, through its moved record, to
/// the new pack Q. Once Q is repacked in turn (condemned), a backup that starts after
/// that must not name P either (its lease is not among the record's holders): it finds
/// the chunk in Q's successor through gc's index object instead.
#[tokio::test]
async fn a_hint_through_a_moved_record_to_a_condemned_pack_is_not_taken() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    let s = two_backups(&repo).await;
    rotate_to_newest(&repo).await;
    let r = repo.gc(&repack_now()).await.unwrap();
    let via_p: Vec<ChunkRef> = s
        .live
        .iter()
        .filter(|c| r.deleted.contains(&c.pack.unwrap().object_name()))
        .take(20)
        .copied()
        .collect();
    let x = via_p[0];
    let data = Bytes::from(noise(
        7_000 + s.live.iter().position(|c| *c == x).unwrap() as u64,
        8192,
    ));
    // Taken as it is while Q stands.
    let mut w = repo.writer().await.unwrap();
    assert_eq!(w.add_hinted(data.clone(), Some(&x)).await.unwrap(), x);
    drop(w);

    // A newer backup keeps 20 of Q's chunks (still naming P); rotate drops b1, so Q
    // is mostly dead and gc repacks it. A lease keeps gc from deleting Q.
    let m = manifest_at("db1", "b2", 3, file(via_p.clone()));
    repo.put_manifest(&m).await.unwrap();
    rotate_to_newest(&repo).await;
    let held = repo
        .acquire_lease(LeaseKind::Shared, "backup db1", &LeaseOptions::backup())
        .await
        .unwrap();
    let r2 = repo.gc(&repack_now()).await.unwrap();
    assert!(!r2.repacked.is_empty() && r2.deleted.is_empty(), "{r2:?}");
    assert!(
        r.repack_new_packs.iter().any(|q| r2.repacked.contains(q)),
        "{r2:?}"
    );

    let mut w = repo.writer().await.unwrap();
    let got = w.add_hinted(data, Some(&x)).await.unwrap();
    assert_ne!(
        got.pack, x.pack,
        "named a pack that leads to a condemned one"
    );
    assert!(
        r2.repack_new_packs
            .contains(&got.pack.unwrap().object_name()),
        "{got:?} is not in the newest pack: {r2:?}"
    );
    assert_eq!(w.stats().new_chunks, 0, "found through gc's index object");
    w.finish().await.unwrap();
    held.release().await.unwrap();
    let r3 = repo.gc(&repack_now()).await.unwrap();
    assert!(r3.deleted.iter().any(|p| r2.repacked.contains(p)), "{r3:?}");
    assert!(read_all(&repo, &m).await.unwrap() >= 20);
    assert_verifies(&repo).await;
}
