//! Integration tests for hs-backup against real PostgreSQL clusters (hs-testkit) and a
//! file:// repository: WAL streaming under load, shutdown and resume, gaps, preflight.

mod lease;
mod metrics;
mod name_props;
mod sysid;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hs_backup::{
    preflight, wal_stream, Error, NoObserver, Severity, SlotMode, StreamExit, StreamObserver,
    StreamOptions,
};
use hs_proto::{ConnConfig, Lsn, SegmentName, TimelineId};
use hs_repo::{Repository, WalGap};
use hs_testkit::{PgCluster, PgOptions};
use tokio::sync::watch;

type R = Result<(), Box<dyn std::error::Error>>;

const SEG: u64 = 16 * 1024 * 1024;

fn cfg(s: &str) -> ConnConfig {
    ConnConfig::parse_with_env(s, &|_| None).expect("valid conninfo")
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

struct Env {
    _dir: tempfile::TempDir,
    repo: Repository,
}

async fn repo_env() -> Result<Env, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let keyring = hs_crypt::Keyring::create(&dir.path().join("kr").join("keyring"))?;
    let url = format!("file://{}/repo", dir.path().display());
    let repo = Repository::init(&url, &keyring).await?;
    Ok(Env { _dir: dir, repo })
}

#[derive(Default)]
struct Counter {
    segments: AtomicU64,
    gaps: AtomicU64,
}

impl StreamObserver for Counter {
    fn segment_archived(&self, _segment: &str, _bytes: u64) {
        self.segments.fetch_add(1, Ordering::Relaxed);
    }
    fn gap(&self, _gap: &WalGap) {
        self.gaps.fetch_add(1, Ordering::Relaxed);
    }
}

fn opts(deployment: &str) -> StreamOptions {
    let mut o = StreamOptions::new(deployment);
    o.partial_interval = Duration::from_millis(500);
    o.status_interval = Duration::from_secs(1);
    o.reconnect = false;
    o
}

type Running = tokio::task::JoinHandle<Result<StreamExit, Error>>;

fn spawn_stream(
    conn: ConnConfig,
    repo: Repository,
    o: StreamOptions,
    obs: Arc<Counter>,
) -> (watch::Sender<bool>, Running) {
    let (tx, rx) = watch::channel(false);
    let h = tokio::spawn(async move { wal_stream(&conn, &repo, &o, rx, &*obs).await });
    (tx, h)
}

fn current_lsn(pg: &PgCluster) -> Result<Lsn, Box<dyn std::error::Error>> {
    Ok(blocking(|| pg.psql("SELECT pg_current_wal_lsn()"))?.parse::<Lsn>()?)
}

/// Switches WAL and waits until the segment holding `lsn` is committed in the repo.
async fn wait_committed(pg: &PgCluster, repo: &Repository, dep: &str, lsn: Lsn) -> R {
    wait_committed_tli(pg, repo, dep, lsn, TimelineId(1)).await
}

async fn wait_committed_tli(
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

fn slot_restart_lsn(pg: &PgCluster, slot: &str) -> Result<Lsn, Box<dyn std::error::Error>> {
    let v = blocking(|| {
        pg.psql(&format!(
            "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ))
    })?;
    Ok(v.parse::<Lsn>()?)
}

/// Segments of timeline 1 are contiguous and equal to the server's files where present.
async fn check_contiguous(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_under_load_shutdown_and_resume() -> R {
    let pg = PgCluster::start(PgOptions::default())?;
    let env = repo_env().await?;
    let conn = cfg(&pg.replication_conninfo());
    let dep = "main";
    let obs = Arc::new(Counter::default());

    let (tx, h) = spawn_stream(conn.clone(), env.repo.clone(), opts(dep), obs.clone());
    blocking(|| -> std::io::Result<()> {
        pg.pgbench(&["-i", "-s", "2", "-q"])?;
        pg.pgbench(&["-T", "5", "-c", "2"])
    })?;
    let end = current_lsn(&pg)?;
    wait_committed(&pg, &env.repo, dep, end).await?;
    tx.send(true)?;
    let exit = tokio::time::timeout(Duration::from_secs(30), h).await???;
    let StreamExit::Shutdown {
        flushed, segments, ..
    } = exit
    else {
        return Err("unexpected exit".into());
    };
    assert!(segments >= 2, "only {segments} segments");
    assert_eq!(obs.segments.load(Ordering::Relaxed), segments);
    let (first, last) = check_contiguous(&pg, &env.repo, dep).await?;
    // Flush is the end of the last committed segment; the slot followed it.
    assert_eq!(flushed, Lsn((last + 1) * SEG));
    assert_eq!(slot_restart_lsn(&pg, "pg_hardstorage_main")?, flushed);

    // Restart: resumes exactly after the last committed segment.
    blocking(|| pg.pgbench(&["-T", "2", "-c", "2"]))?;
    let obs2 = Arc::new(Counter::default());
    let (tx, h) = spawn_stream(conn.clone(), env.repo.clone(), opts(dep), obs2.clone());
    let end = current_lsn(&pg)?;
    wait_committed(&pg, &env.repo, dep, end).await?;
    tx.send(true)?;
    tokio::time::timeout(Duration::from_secs(30), h).await???;
    let (first2, last2) = check_contiguous(&pg, &env.repo, dep).await?;
    assert_eq!(first2, first);
    assert!(last2 > last);
    assert_eq!(obs2.gaps.load(Ordering::Relaxed), 0);

    // The slot is dropped and WAL moves on: the restart records the gap explicitly.
    blocking(|| -> std::io::Result<()> {
        pg.psql("SELECT pg_drop_replication_slot('pg_hardstorage_main')")?;
        for _ in 0..3 {
            pg.psql("CREATE TABLE IF NOT EXISTS g (i int); INSERT INTO g VALUES (1); SELECT pg_switch_wal()")?;
        }
        pg.psql("CHECKPOINT").map(|_| ())
    })?;
    let obs3 = Arc::new(Counter::default());
    let (tx, h) = spawn_stream(conn, env.repo.clone(), opts(dep), obs3.clone());
    let end = current_lsn(&pg)?;
    blocking(|| pg.psql("INSERT INTO g VALUES (2)"))?;
    wait_committed(&pg, &env.repo, dep, end).await?;
    tx.send(true)?;
    tokio::time::timeout(Duration::from_secs(30), h).await???;
    assert_eq!(obs3.gaps.load(Ordering::Relaxed), 1);
    let l = env.repo.list_wal(dep).await?;
    assert_eq!(l.gaps.len(), 1, "{:?}", l.gaps);
    let gap = &l.gaps[0];
    let from = SegmentName::parse(&gap.from_segment, SEG)?;
    let to = SegmentName::parse(&gap.to_segment, SEG)?;
    assert_eq!(from.segno(), last2 + 1);
    // Every segment is either stored or inside the recorded gap.
    let stored: Vec<u64> = l.segments.iter().map(|s| s.segno(SEG)).collect();
    let max = *stored.last().unwrap_or(&0);
    for n in first..=max {
        assert!(
            stored.contains(&n) || (from.segno()..=to.segno()).contains(&n),
            "segment {n} neither stored nor in the gap"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_mode_reports_received_as_flushed() -> R {
    let pg = PgCluster::start(PgOptions::default())?;
    let env = repo_env().await?;
    let conn = cfg(&pg.replication_conninfo());
    let mut o = opts("sync");
    o.synchronous = true;
    o.slot = SlotMode::Create("hs_sync_slot".into());
    let (tx, h) = spawn_stream(conn, env.repo.clone(), o, Arc::new(Counter::default()));
    blocking(|| pg.psql("CREATE TABLE s (i int); INSERT INTO s SELECT generate_series(1, 1000)"))?;
    let target = current_lsn(&pg)?;
    // The partial catches up with the server without any segment switch.
    let seg = SegmentName::from_lsn(TimelineId(1), target, SEG)?.to_string();
    let t0 = Instant::now();
    loop {
        if let Ok(p) = env.repo.get_wal("sync", &format!("{seg}.partial")).await {
            if p.len() as u64 >= target.0 % SEG {
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "partial never caught up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tx.send(true)?;
    let StreamExit::Shutdown {
        flushed, received, ..
    } = tokio::time::timeout(Duration::from_secs(30), h).await???
    else {
        return Err("unexpected exit".into());
    };
    assert_eq!(flushed, received);
    assert!(flushed >= target);
    assert_eq!(slot_restart_lsn(&pg, "hs_sync_slot")?, flushed);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_clean_server_has_no_fatal() -> R {
    let pg = PgCluster::start(PgOptions::default())?;
    let r = preflight(&cfg(&pg.replication_conninfo()), "main").await?;
    assert!(!r.has_fatal(), "{:?}", r.findings);
    assert_eq!(r.setting("wal_level"), Some("replica"));
    assert_eq!(r.slot, "pg_hardstorage_main");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_wal_level_minimal() -> R {
    let pg = PgCluster::start(PgOptions {
        extra_conf: vec!["wal_level = minimal".into(), "max_wal_senders = 0".into()],
        ..Default::default()
    })?;
    let conn = cfg(&pg.replication_conninfo());
    let r = preflight(&conn, "main").await?;
    let codes: Vec<&str> = r
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Fatal)
        .map(|f| f.code)
        .collect();
    assert!(codes.contains(&"preflight.wal_level.too_low"), "{r:?}");
    assert!(
        codes.contains(&"preflight.max_wal_senders.saturated"),
        "{r:?}"
    );
    for f in r.findings.iter().filter(|f| f.severity == Severity::Fatal) {
        assert!(
            f.suggestion
                .as_deref()
                .unwrap_or("")
                .contains("ALTER SYSTEM"),
            "{f:?}"
        );
    }
    // wal stream refuses to start.
    let env = repo_env().await?;
    let (_tx, rx) = watch::channel(false);
    let e = wal_stream(&conn, &env.repo, &opts("main"), rx, &NoObserver)
        .await
        .unwrap_err();
    assert!(e.code().starts_with("preflight."), "{e:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_slots_full_role_and_warnings() -> R {
    let pg = PgCluster::start(PgOptions {
        extra_conf: vec![
            "max_replication_slots = 2".into(),
            "max_slot_wal_keep_size = '1GB'".into(),
        ],
        ..Default::default()
    })?;
    blocking(|| -> std::io::Result<()> {
        pg.psql("SELECT pg_create_physical_replication_slot('other1')")?;
        pg.psql("SELECT pg_create_physical_replication_slot('other2')")?;
        pg.psql("CREATE ROLE norepl LOGIN PASSWORD 'pw1'")
            .map(|_| ())
    })?;
    let conn = cfg(&pg.replication_conninfo());
    let r = preflight(&conn, "main").await?;
    let has = |code: &str, sev: Severity| {
        r.findings
            .iter()
            .any(|f| f.code == code && f.severity == sev)
    };
    assert!(
        has("preflight.max_replication_slots.full", Severity::Fatal),
        "{r:?}"
    );
    assert!(
        has("preflight.max_slot_wal_keep_size.set", Severity::Warning),
        "{r:?}"
    );
    // Our own slot existing means a full slot table is fine.
    blocking(|| -> std::io::Result<()> {
        pg.psql("SELECT pg_drop_replication_slot('other2')")?;
        pg.psql("SELECT pg_create_physical_replication_slot('pg_hardstorage_main')")
            .map(|_| ())
    })?;
    let r = preflight(&conn, "main").await?;
    assert!(!r.has_fatal(), "{r:?}");

    // A role without REPLICATION.
    let norepl = cfg(&format!(
        "postgresql://norepl:pw1@127.0.0.1:{}/postgres",
        pg.port()
    ));
    let r = preflight(&norepl, "main").await?;
    let f = r
        .findings
        .iter()
        .find(|f| f.code == "preflight.role.no_replication")
        .ok_or("no role finding")?;
    assert_eq!(f.severity, Severity::Fatal);
    assert!(f
        .suggestion
        .as_deref()
        .unwrap_or("")
        .contains("ALTER ROLE norepl REPLICATION"));
    assert_eq!(
        r.to_error().map(|e| e.code()),
        Some("preflight.role.no_replication")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_reports_what_it_cannot_see() -> R {
    // Only replication connections are allowed for hs_repl: SQL is refused by pg_hba.
    let pg = PgCluster::start(PgOptions::default())?;
    let hba = pg.data_dir().join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba)?;
    let text = text.replace(
        "host all all 127.0.0.1/32",
        "host all hs_repl 127.0.0.1/32 reject\nhost all all 127.0.0.1/32",
    );
    std::fs::write(&hba, text)?;
    blocking(|| pg.psql("SELECT pg_reload_conf()"))?;
    let r = preflight(&cfg(&pg.replication_conninfo()), "main").await?;
    assert!(!r.has_fatal(), "{r:?}");
    assert!(
        r.findings
            .iter()
            .any(|f| f.code == "preflight.visibility.sql_refused" && f.severity == Severity::Info),
        "{r:?}"
    );
    assert_eq!(r.setting("wal_level"), Some("replica"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeline_switch_continues_on_promoted_server() -> R {
    let pg = PgCluster::start(PgOptions::default())?;
    let env = repo_env().await?;
    let dep = "tl";
    // Stream timeline 1 for a while.
    let (tx, h) = spawn_stream(
        cfg(&pg.replication_conninfo()),
        env.repo.clone(),
        opts(dep),
        Arc::new(Counter::default()),
    );
    blocking(|| pg.psql("CREATE TABLE t AS SELECT generate_series(1, 100000) AS i"))?;
    let end = current_lsn(&pg)?;
    wait_committed(&pg, &env.repo, dep, end).await?;
    tx.send(true)?;
    tokio::time::timeout(Duration::from_secs(30), h).await???;
    let before = env.repo.list_wal(dep).await?;
    let last1 = before.segments.last().ok_or("no segment")?.segno(SEG);

    // A copy of the primary, promoted onto timeline 2 (keeping its old WAL around).
    let dest = tempfile::Builder::new()
        .prefix("hs-backup-tli-")
        .tempdir_in("/tmp")?;
    std::fs::set_permissions(
        dest.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let copy = dest.path().join("data");
    let status = blocking(|| {
        pg.client_command("pg_basebackup")
            .arg("-d")
            .arg(pg.replication_conninfo())
            .arg("-D")
            .arg(&copy)
            .args(["-X", "stream", "--checkpoint=fast"])
            .status()
    })?;
    assert!(status.success());
    std::fs::write(copy.join("recovery.signal"), "")?;
    let mut auto = std::fs::read_to_string(copy.join("postgresql.auto.conf"))?;
    auto.push_str("restore_command = 'false'\nwal_keep_size = '1GB'\n");
    std::fs::write(copy.join("postgresql.auto.conf"), auto)?;
    let promoted = blocking(|| -> std::io::Result<PgCluster> {
        let c = PgCluster::start_existing(&copy)?;
        c.wait_for_promotion(Duration::from_secs(60))?;
        Ok(c)
    })?;
    let history = blocking(|| promoted.psql("SELECT pg_walfile_name(pg_current_wal_lsn())"))?;
    assert!(history.starts_with("00000002"), "{history}");

    // Same deployment, now from the promoted server: finishes timeline 1, then timeline 2.
    let (tx, h) = spawn_stream(
        cfg(&promoted.replication_conninfo()),
        env.repo.clone(),
        opts(dep),
        Arc::new(Counter::default()),
    );
    blocking(|| promoted.psql("INSERT INTO t SELECT generate_series(1, 100000)"))?;
    let end = current_lsn(&promoted)?;
    wait_committed_tli(&promoted, &env.repo, dep, end, TimelineId(2)).await?;
    tx.send(true)?;
    tokio::time::timeout(Duration::from_secs(30), h).await???;

    let l = env.repo.list_wal(dep).await?;
    assert!(l.gaps.is_empty(), "{:?}", l.gaps);
    assert!(l.histories.contains(&2), "{l:?}");
    let h2 = env.repo.get_wal(dep, "00000002.history").await?;
    let entries = hs_proto::parse_timeline_history(std::str::from_utf8(&h2)?)?;
    let switch = entries[0].switch_lsn;
    let switch_seg = switch.0 / SEG;
    // Timeline 1: contiguous up to the switch segment (a partial unless the switch is at
    // a boundary); timeline 2: from the switch segment on, contiguous.
    let t1: Vec<u64> = l
        .segments
        .iter()
        .filter(|s| s.timeline == 1)
        .map(|s| s.segno(SEG))
        .collect();
    let t2: Vec<u64> = l
        .segments
        .iter()
        .filter(|s| s.timeline == 2)
        .map(|s| s.segno(SEG))
        .collect();
    assert!(t1.contains(&last1));
    for w in t1.windows(2).chain(t2.windows(2)) {
        assert_eq!(w[1], w[0] + 1, "{l:?}");
    }
    let t1_end = *t1.last().ok_or("no tli 1")?;
    if switch.0 % SEG != 0 {
        assert_eq!(t1_end + 1, switch_seg, "{l:?}");
        assert!(
            l.partials
                .iter()
                .any(|p| p.timeline == 1 && p.segno(SEG) == switch_seg),
            "old timeline's last segment kept as partial: {l:?}"
        );
    }
    assert_eq!(t2.first().copied(), Some(switch_seg), "{l:?}");
    // The new timeline's first segment equals the promoted server's file.
    let name = SegmentName::from_segno(TimelineId(2), switch_seg, SEG)?.to_string();
    if let Ok(server) = std::fs::read(copy.join("pg_wal").join(&name)) {
        let ours = env.repo.get_wal(dep, &name).await?;
        assert!(ours[..] == server[..], "segment {name} differs");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_stops_and_connection_loss_leave_no_gap() -> R {
    let pg = PgCluster::start(PgOptions::default())?;
    let env = repo_env().await?;
    let conn = cfg(&pg.replication_conninfo());
    let dep = "crash";
    blocking(|| pg.pgbench(&["-i", "-s", "1", "-q"]))?;
    // Abort the streamer mid-flight (no final status, no last partial), like kill -9.
    for _ in 0..3 {
        let (_tx, h) = spawn_stream(
            conn.clone(),
            env.repo.clone(),
            opts(dep),
            Arc::new(Counter::default()),
        );
        blocking(|| -> std::io::Result<()> {
            pg.pgbench(&["-T", "2", "-c", "2"])?;
            pg.psql("SELECT pg_switch_wal()")?;
            pg.pgbench(&["-T", "1", "-c", "2"])
        })?;
        h.abort();
        let _ = h.await;
    }
    // Connection loss: the server kills the walsender; the streamer reconnects.
    let mut o = opts(dep);
    o.reconnect = true;
    let (tx, h) = spawn_stream(conn, env.repo.clone(), o, Arc::new(Counter::default()));
    blocking(|| pg.pgbench(&["-T", "2", "-c", "2"]))?;
    let killed =
        blocking(|| pg.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_replication"))?;
    assert_eq!(killed, "1");
    blocking(|| pg.pgbench(&["-T", "2", "-c", "2"]))?;
    let end = current_lsn(&pg)?;
    wait_committed(&pg, &env.repo, dep, end).await?;
    tx.send(true)?;
    tokio::time::timeout(Duration::from_secs(30), h).await???;
    let (first, last) = check_contiguous(&pg, &env.repo, dep).await?;
    assert!(last >= first + 4, "{first}..{last}");
    Ok(())
}
