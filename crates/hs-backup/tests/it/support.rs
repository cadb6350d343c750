//! Shared setup of the hs-backup integration tests: a file:// repository, a streamer
//! run as a task, and waits on the repository's and the server's WAL positions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hs_backup::{wal_stream, Error, StreamExit, StreamObserver, StreamOptions};
use hs_proto::{ConnConfig, Lsn, SegmentName, TimelineId};
use hs_repo::{Repository, WalGap};
use hs_testkit::PgCluster;
use tokio::sync::watch;

pub type R = Result<(), Box<dyn std::error::Error>>;

pub const SEG: u64 = 16 * 1024 * 1024;

pub fn cfg(s: &str) -> ConnConfig {
    ConnConfig::parse_with_env(s, &|_| None).expect("valid conninfo")
}

pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

pub struct Env {
    _dir: tempfile::TempDir,
    pub repo: Repository,
}

pub async fn repo_env() -> Result<Env, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let keyring = hs_crypt::Keyring::create(&dir.path().join("kr").join("keyring"))?;
    let url = format!("file://{}/repo", dir.path().display());
    let repo = Repository::init(&url, &keyring).await?;
    Ok(Env { _dir: dir, repo })
}

#[derive(Default)]
pub struct Counter {
    pub segments: AtomicU64,
    pub gaps: AtomicU64,
    pub partials: AtomicU64,
}

impl StreamObserver for Counter {
    fn segment_archived(&self, _segment: &str, _bytes: u64) {
        self.segments.fetch_add(1, Ordering::Relaxed);
    }
    fn gap(&self, _gap: &WalGap) {
        self.gaps.fetch_add(1, Ordering::Relaxed);
    }
    fn partial_written(&self, _segment: &str, _bytes: u64) {
        self.partials.fetch_add(1, Ordering::Relaxed);
    }
}

pub fn opts(deployment: &str) -> StreamOptions {
    let mut o = StreamOptions::new(deployment);
    o.partial_interval = Duration::from_millis(500);
    o.status_interval = Duration::from_secs(1);
    o.reconnect = false;
    o
}

pub type Running = tokio::task::JoinHandle<Result<StreamExit, Error>>;

pub fn spawn_stream(
    conn: ConnConfig,
    repo: Repository,
    o: StreamOptions,
    obs: Arc<Counter>,
) -> (watch::Sender<bool>, Running) {
    let (tx, rx) = watch::channel(false);
    let h = tokio::spawn(async move { wal_stream(&conn, &repo, &o, rx, &*obs).await });
    (tx, h)
}

/// Asks the streamer of [`spawn_stream`] to shut down and waits (30 s) for its exit.
pub async fn stop_stream(
    tx: watch::Sender<bool>,
    h: Running,
) -> Result<StreamExit, Box<dyn std::error::Error>> {
    tx.send(true)?;
    Ok(tokio::time::timeout(Duration::from_secs(30), h).await???)
}

pub fn current_lsn(pg: &PgCluster) -> Result<Lsn, Box<dyn std::error::Error>> {
    Ok(blocking(|| pg.psql("SELECT pg_current_wal_lsn()"))?.parse::<Lsn>()?)
}

/// Switches WAL and waits until the segment holding `lsn` is committed in the repo.
pub async fn wait_committed(pg: &PgCluster, repo: &Repository, dep: &str, lsn: Lsn) -> R {
    wait_committed_tli(pg, repo, dep, lsn, TimelineId(1)).await
}

pub async fn wait_committed_tli(
    pg: &PgCluster,
    repo: &Repository,
    dep: &str,
    lsn: Lsn,
    tli: TimelineId,
) -> R {
    blocking(|| pg.psql("SELECT pg_switch_wal()"))?;
    let want = SegmentName::from_lsn(tli, lsn, SEG)?.to_string();
    let t0 = Instant::now();
    loop {
        let l = repo.list_wal(dep).await?;
        if l.segments.iter().any(|s| s.name >= want) {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(90) {
            return Err(format!("segment {want} not committed in time: {l:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn slot_restart_lsn(pg: &PgCluster, slot: &str) -> Result<Lsn, Box<dyn std::error::Error>> {
    let v = blocking(|| {
        pg.psql(&format!(
            "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ))
    })?;
    Ok(v.parse::<Lsn>()?)
}

/// Segments of timeline 1 are contiguous and equal to the server's files where present.
pub async fn check_contiguous(
    pg: &PgCluster,
    repo: &Repository,
    dep: &str,
) -> Result<(u64, u64), Box<dyn std::error::Error>> {
    let l = repo.list_wal(dep).await?;
    assert!(l.gaps.is_empty(), "unexpected gaps: {:?}", l.gaps);
    let segnos: Vec<u64> = l.segments.iter().map(|s| s.segno(SEG)).collect();
    assert!(!segnos.is_empty());
    for w in segnos.windows(2) {
        assert_eq!(w[1], w[0] + 1, "gap between segments: {segnos:?}");
    }
    let mut compared = 0;
    for s in &l.segments {
        let path = pg.data_dir().join("pg_wal").join(&s.name);
        if let Ok(server) = std::fs::read(&path) {
            let ours = repo.get_wal(dep, &s.name).await?;
            assert_eq!(ours.len() as u64, SEG);
            assert!(
                ours[..] == server[..],
                "segment {} differs from the server's",
                s.name
            );
            compared += 1;
        }
    }
    assert!(compared > 0, "no segment left on the server to compare");
    Ok((segnos[0], *segnos.last().unwrap_or(&0)))
}
