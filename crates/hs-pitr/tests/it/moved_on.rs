//! Issue 13 item 4: a read of a WAL object that was listed must not fail the
//! command because a writer moved on between the listing and the read.
//!
//! The race is made deterministic with a backend wrapper that performs the
//! writer's step at the moment the listed object is first read: `wal
//! stream` completing the in-progress segment (store `<segment>`, delete
//! `<segment>.partial`), or retention deleting an old segment.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use hs_crypt::Keyring;
use hs_pg::{decode_segment, Lsn, SegmentName, TimelineId};
use hs_pitr::{plan_restore, BackupSelector, PitrTarget};
use hs_repo::{Backend, BackupManifest, FsBackend, ObjectInfo, Repository};
use tempfile::TempDir;

use crate::support::{segment, D};

const SEG: u64 = 16 << 20;

/// The first 40 KiB of a real PostgreSQL 15 WAL segment (timeline 1,
/// segment 5, 16 MiB segments), as `pg_wal` held it.
const REAL_WAL: &[u8] = include_bytes!("data/000000010000000000000005-first-40k");

fn name(segno: u64) -> String {
    hs_repo::wal_segment_name(1, segno, SEG)
}

fn object(segment: &str) -> String {
    format!("deployments/{D}/wal/{}/{segment}", &segment[..8])
}

/// What a writer does when the trigger object is first read.
enum Step {
    Put(String, Bytes),
    Delete(String),
}

/// Forwards to `inner`; the first `get` of `trigger` first performs `steps`
/// (as another process would have between our listing and our read).
struct MovesOn {
    inner: Arc<dyn Backend>,
    trigger: String,
    steps: std::sync::Mutex<Vec<Step>>,
    moved: AtomicBool,
}

#[async_trait]
impl Backend for MovesOn {
    fn location(&self) -> &str {
        self.inner.location()
    }
    async fn put_if_absent(&self, name: &str, data: Bytes) -> hs_repo::Result<bool> {
        self.inner.put_if_absent(name, data).await
    }
    async fn put(&self, name: &str, data: Bytes) -> hs_repo::Result<()> {
        self.inner.put(name, data).await
    }
    async fn get(&self, name: &str) -> hs_repo::Result<Bytes> {
        if name == self.trigger && !self.moved.swap(true, Ordering::SeqCst) {
            let steps = std::mem::take(&mut *self.steps.lock().unwrap());
            for step in steps {
                match step {
                    Step::Put(n, data) => assert!(self.inner.put_if_absent(&n, data).await?),
                    Step::Delete(n) => self.inner.delete(&n).await?,
                }
            }
        }
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

struct Fixture {
    _dir: TempDir,
    url: String,
    keyring: Keyring,
    fs: Arc<dyn Backend>,
    /// The repository without the wrapper.
    repo: Repository,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Keyring::create(&dir.path().join("kr").join("keyring")).unwrap();
        let url = format!("file://{}/repo", dir.path().display());
        let repo = Repository::init(&url, &keyring).await.unwrap();
        let fs: Arc<dyn Backend> = Arc::new(FsBackend::new(&url, &dir.path().join("repo")));
        Fixture {
            _dir: dir,
            url,
            keyring,
            fs,
            repo,
        }
    }

    /// The repository seen through a wrapper that runs `steps` when
    /// `trigger` is first read.
    async fn moving_on(&self, trigger: &str, steps: Vec<Step>) -> (Repository, Arc<MovesOn>) {
        let b = Arc::new(MovesOn {
            inner: self.fs.clone(),
            trigger: trigger.to_owned(),
            steps: std::sync::Mutex::new(steps),
            moved: AtomicBool::new(false),
        });
        let repo = Repository::builder(&self.url)
            .backend(b.clone())
            .open(&self.keyring)
            .await
            .unwrap();
        (repo, b)
    }
}

fn manifest(id: &str, stop_lsn: &str, stop_time: &str) -> BackupManifest {
    crate::support::manifest(id, stop_lsn, stop_time, "moved-on test")
}

/// Backup A, ending in segment 4, and segment 4 archived.
async fn backup_a_and_segment_4(f: &Fixture) {
    f.repo
        .put_manifest(&manifest("A", "0/4000100", "2020-01-01T00:00:00Z"))
        .await
        .unwrap();
    f.repo
        .put_wal_segment(D, &name(4), &segment(4, SEG as usize))
        .await
        .unwrap();
}

/// A backup ending in segment 4, segment 4 archived, segment 5 in progress
/// (`.partial`, real WAL), as a streamer leaves it just before it completes
/// segment 5. Returns the sealed object of the completed segment 5, which
/// the streamer is about to store, and what real WAL segment 5 holds.
async fn streamer_about_to_complete_5(f: &Fixture) -> (Bytes, hs_pg::SegmentSummary) {
    backup_a_and_segment_4(f).await;
    let mut full = REAL_WAL.to_vec();
    full.resize(SEG as usize, 0);
    // The sealed completed segment, taken away again: not stored yet.
    f.repo.put_wal_segment(D, &name(5), &full).await.unwrap();
    let sealed = f.fs.get(&object(&name(5))).await.unwrap();
    f.fs.delete(&object(&name(5))).await.unwrap();
    f.repo.put_wal_partial(D, &name(5), REAL_WAL).await.unwrap();
    let seg5 = SegmentName::from_segno(TimelineId(1), 5, SEG).unwrap();
    (sealed, decode_segment(seg5, REAL_WAL).unwrap())
}

fn streamer_completes_5(sealed: Bytes) -> Vec<Step> {
    vec![
        Step::Put(object(&name(5)), sealed),
        Step::Delete(object(&format!("{}.partial", name(5)))),
    ]
}

#[tokio::test]
async fn lsn_plan_survives_the_streamer_completing_the_listed_partial() {
    let f = Fixture::new().await;
    let (sealed, real) = streamer_about_to_complete_5(&f).await;
    let end = real.end_of_valid_wal;
    assert!(end.0 > 5 * SEG + 0x100, "real WAL ends at {end}");
    let target = PitrTarget::Lsn(Lsn((5 * SEG + end.0) / 2));

    let partial = object(&format!("{}.partial", name(5)));
    let (racing, b) = f.moving_on(&partial, streamer_completes_5(sealed)).await;
    let p = plan_restore(&racing, D, &BackupSelector::Latest, &target)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", e.code()));
    assert!(
        b.moved.load(Ordering::SeqCst),
        "the planner never read the listed partial: the race was not exercised"
    );
    assert_eq!(p.backup.backup_id, "A");
    assert_eq!(p.wal_segment_size, SEG);
    assert_eq!(p.wal_from.as_deref(), Some(name(4).as_str()));
    assert_eq!(p.wal_to.as_deref(), Some(name(5).as_str()));
    // The plan describes the repository as it is now: segment 5 is complete.
    assert!(!p.wal_to_partial);
    assert_eq!(p.wal_segments, 2);

    // The same plan as one made after the streamer moved on.
    assert_same_as_settled(&f.repo, &p, &target).await;
}

#[tokio::test]
async fn time_plan_survives_the_streamer_completing_the_listed_partial() {
    let f = Fixture::new().await;
    let (sealed, real) = streamer_about_to_complete_5(&f).await;
    // No commit in these pages: the scan reads every segment up to the
    // newest (the listed partial) and finds the target past the archive.
    assert_eq!(real.max_commit_time, None);
    let target = PitrTarget::Time(time::macros::datetime!(2021-01-01 00:00 UTC));

    let partial = object(&format!("{}.partial", name(5)));
    let (racing, b) = f.moving_on(&partial, streamer_completes_5(sealed)).await;
    let e = plan_restore(&racing, D, &BackupSelector::Latest, &target)
        .await
        .unwrap_err();
    assert!(b.moved.load(Ordering::SeqCst), "the race was not exercised");
    assert_eq!(e.code(), "conflict.target_unreachable", "{e}");
    // It describes the repository as it is now: segment 5 complete.
    let msg = e.to_string();
    assert!(
        msg.contains(&format!(
            "segment {}, valid up to LSN {}",
            name(5),
            real.end_of_valid_wal
        )),
        "{msg}"
    );
    assert!(!msg.contains("in progress"), "{msg}");
    let settled = plan_restore(&f.repo, D, &BackupSelector::Latest, &target)
        .await
        .unwrap_err();
    assert_eq!(msg, settled.to_string());
}

#[tokio::test]
async fn plan_survives_retention_removing_the_listed_segment_it_probes() {
    let f = Fixture::new().await;
    f.repo
        .put_manifest(&manifest("A", "0/4000100", "2020-01-01T00:00:00Z"))
        .await
        .unwrap();
    // Segment 3 is older than every backup: retention may remove it any time.
    for s in [3u64, 4, 5] {
        f.repo
            .put_wal_segment(D, &name(s), &segment(s, SEG as usize))
            .await
            .unwrap();
    }
    // The planner reads the first listed segment for the segment size.
    let (racing, b) = f
        .moving_on(&object(&name(3)), vec![Step::Delete(object(&name(3)))])
        .await;
    let p = plan_restore(&racing, D, &BackupSelector::Latest, &PitrTarget::Latest)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", e.code()));
    assert!(b.moved.load(Ordering::SeqCst), "the race was not exercised");
    assert_eq!(p.wal_segment_size, SEG);
    assert_eq!(p.wal_from.as_deref(), Some(name(4).as_str()));
    assert_eq!(p.wal_to.as_deref(), Some(name(5).as_str()));
    assert_same_as_settled(&f.repo, &p, &PitrTarget::Latest).await;

    // The same mechanism, for callers holding a listing (`wal list`).
    let (racing, b) = f
        .moving_on(&object(&name(4)), vec![Step::Delete(object(&name(4)))])
        .await;
    let mut listing = racing.list_wal(D).await.unwrap();
    assert_eq!(listing.segments.len(), 2);
    let size = hs_pitr::wal_segment_size(&racing, D, &mut listing, Some(1))
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", e.code()));
    assert!(b.moved.load(Ordering::SeqCst), "the race was not exercised");
    assert_eq!(size, Some(SEG));
    let names: Vec<_> = listing.segments.iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, vec![name(5)], "the listing was refreshed");
}

/// The plan `p`, made while a writer moved on, equals one made on `repo` now.
async fn assert_same_as_settled(repo: &Repository, p: &hs_pitr::RestorePlan, target: &PitrTarget) {
    let settled = plan_restore(repo, D, &BackupSelector::Latest, target)
        .await
        .unwrap();
    assert_eq!(p.to_json(), settled.to_json());
}

/// `wal_fetch` of segment 5 through `repo` into a fresh RECOVERYXLOG; the outcome and
/// the bytes written.
async fn fetch_5(repo: &Repository) -> (hs_pitr::FetchOutcome, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("RECOVERYXLOG");
    let out = hs_pitr::wal_fetch(
        repo,
        D,
        &name(5),
        &dest,
        &hs_pitr::FetchOptions::for_dest(&dest),
    )
    .await
    .unwrap_or_else(|e| panic!("{} (absent: {}): {e}", e.code(), e.is_absent()));
    (out, std::fs::read(&dest).unwrap())
}

/// `wal fetch` of segment 5 while the streamer completes it: the complete segment
/// was absent at the first read, and the partial is gone by the second. Answering
/// "absent" there ends PostgreSQL's recovery short; the complete segment is served.
#[tokio::test]
async fn wal_fetch_serves_the_segment_the_streamer_completed_instead_of_absent() {
    let f = Fixture::new().await;
    let (sealed, _) = streamer_about_to_complete_5(&f).await;
    let partial = object(&format!("{}.partial", name(5)));
    let (racing, b) = f.moving_on(&partial, streamer_completes_5(sealed)).await;
    let (out, fetched) = fetch_5(&racing).await;
    assert!(b.moved.load(Ordering::SeqCst), "the race was not exercised");
    assert_eq!(out.source, hs_pitr::FetchSource::Repository);
    let mut full = REAL_WAL.to_vec();
    full.resize(SEG as usize, 0);
    assert!(fetched == full, "not the complete segment");
}

/// The streamer stored the complete segment 5 but has not yet deleted its partial
/// when `wal fetch` reads the partial: the stale partial (padded with zeros, which
/// end recovery) must not be served in place of the complete segment.
#[tokio::test]
async fn wal_fetch_prefers_a_segment_completed_after_its_partial_was_read() {
    let f = Fixture::new().await;
    let (sealed, _) = streamer_about_to_complete_5(&f).await;
    // A longer complete segment than the partial: what the streamer received since.
    let partial = object(&format!("{}.partial", name(5)));
    let (racing, b) = f
        .moving_on(&partial, vec![Step::Put(object(&name(5)), sealed)])
        .await;
    let (out, _) = fetch_5(&racing).await;
    assert!(b.moved.load(Ordering::SeqCst), "the race was not exercised");
    assert_eq!(
        out.source,
        hs_pitr::FetchSource::Repository,
        "served the stale partial"
    );
}

/// Absence is reported only for a file the repository does not hold.
#[tokio::test]
async fn wal_fetch_reports_absence_only_for_a_missing_file() {
    let f = Fixture::new().await;
    let _ = streamer_about_to_complete_5(&f).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("x");
    let opts = hs_pitr::FetchOptions::for_dest(&dest);
    for missing in [name(9), "00000002.history".to_owned()] {
        let e = hs_pitr::wal_fetch(&f.repo, D, &missing, &dest, &opts)
            .await
            .unwrap_err();
        assert!(e.is_absent(), "{missing}: {} {e}", e.code());
        assert_eq!(e.code(), "notfound.wal_segment");
    }
    // Damaged: not absent.
    let obj = object(&name(4));
    let mut sealed = f.fs.get(&obj).await.unwrap().to_vec();
    let mid = sealed.len() / 2;
    sealed[mid] ^= 1;
    f.fs.delete(&obj).await.unwrap();
    f.fs.put(&obj, Bytes::from(sealed)).await.unwrap();
    let e = hs_pitr::wal_fetch(&f.repo, D, &name(4), &dest, &opts)
        .await
        .unwrap_err();
    assert!(!e.is_absent(), "a damaged segment reported as absent");
    assert_eq!(e.code(), "verify.auth_tag_mismatch");
    assert!(e.to_string().contains(&obj), "the object is not named: {e}");
}

/// The same race on a real PostgreSQL 15 cluster's WAL: the streamer holds
/// segment S as `.partial` with a few commits in it, the planner lists it,
/// then the server switches segments and the streamer stores S complete and
/// removes the partial before the planner reads it. A time target between
/// the commits is resolved from the completed segment.
#[tokio::test]
async fn real_cluster_time_plan_survives_the_segment_switch_race() {
    let pg =
        hs_testkit::PgCluster::start(hs_testkit::PgOptions::default()).expect("start PostgreSQL");
    let q = |sql: &str| pg.psql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    q("CREATE TABLE t (x int)");
    q("SELECT pg_switch_wal()");
    q("INSERT INTO t VALUES (0)");
    let start: Lsn = q("SELECT pg_current_wal_lsn()").parse().unwrap();
    let seg = start.0 / SEG;
    let name_s = name(seg);
    let mut between = 0.0f64;
    for i in 1..=4 {
        if i == 4 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            between = q("SELECT extract(epoch FROM clock_timestamp())")
                .parse()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        q(&format!("INSERT INTO t VALUES ({i})"));
    }
    let wal_file = pg.data_dir().join("pg_wal").join(&name_s);
    // What the streamer had stored: the segment so far (commits are flushed).
    let partial = std::fs::read(&wal_file).unwrap();
    assert_eq!(
        q("SELECT pg_walfile_name(pg_current_wal_lsn())"),
        name_s,
        "the commits left segment {name_s}"
    );
    q("SELECT pg_switch_wal()");
    let complete = std::fs::read(&wal_file).unwrap();
    assert_eq!(complete.len() as u64, SEG);

    let f = Fixture::new().await;
    f.repo
        .put_manifest(&manifest("A", &start.to_string(), "2020-01-01T00:00:00Z"))
        .await
        .unwrap();
    f.repo.put_wal_segment(D, &name_s, &complete).await.unwrap();
    let sealed = f.fs.get(&object(&name_s)).await.unwrap();
    f.fs.delete(&object(&name_s)).await.unwrap();
    f.repo.put_wal_partial(D, &name_s, &partial).await.unwrap();

    let when = hs_pitr::from_unix_micros((between * 1e6) as i64).unwrap();
    let target = PitrTarget::Time(when);
    let partial_object = object(&format!("{name_s}.partial"));
    let steps = vec![
        Step::Put(object(&name_s), sealed),
        Step::Delete(partial_object.clone()),
    ];
    let (racing, b) = f.moving_on(&partial_object, steps).await;
    let p = plan_restore(&racing, D, &BackupSelector::Latest, &target)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", e.code()));
    assert!(b.moved.load(Ordering::SeqCst), "the race was not exercised");
    assert_eq!(p.backup.backup_id, "A");
    assert_eq!(p.wal_from.as_deref(), Some(name_s.as_str()));
    assert_eq!(p.wal_to.as_deref(), Some(name_s.as_str()));
    assert!(!p.wal_to_partial);
    assert_eq!(p.resolved_time, Some(when));
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains(&format!("(in segment {name_s})"))),
        "{:?}",
        p.notes
    );
    assert_same_as_settled(&f.repo, &p, &target).await;
}

/// Retention removes gap records older than every kept backup: one that a
/// WAL listing named and that went before the listing read it is not an
/// error for the planner (nor for anyone listing WAL).
#[tokio::test]
async fn plan_survives_retention_removing_a_listed_gap_record() {
    let f = Fixture::new().await;
    backup_a_and_segment_4(&f).await;
    let gap = hs_repo::WalGap {
        from_segment: name(1),
        to_segment: name(2),
        reason: "test: older than every backup".into(),
        recorded_at: "2019-12-31T00:00:00Z".into(),
    };
    f.repo.put_wal_gap(D, &gap).await.unwrap();
    let gap_object = format!("deployments/{D}/wal/gaps/{}-{}", name(1), name(2));
    assert!(f.fs.stat(&gap_object).await.unwrap().is_some());

    let (racing, b) = f
        .moving_on(&gap_object, vec![Step::Delete(gap_object.clone())])
        .await;
    let p = plan_restore(&racing, D, &BackupSelector::Latest, &PitrTarget::Latest)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", e.code()));
    assert!(b.moved.load(Ordering::SeqCst), "the race was not exercised");
    assert_eq!(p.wal_to.as_deref(), Some(name(4).as_str()));
    assert!(racing.list_wal(D).await.unwrap().gaps.is_empty());
}
