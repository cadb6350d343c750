//! `wal_stream` under load: shutdown and resume, synchronous mode, a timeline switch
//! on a promoted copy, abrupt stops and connection loss.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hs_backup::{SlotMode, StreamExit};
use hs_proto::{Lsn, SegmentName, TimelineId};
use hs_testkit::{PgCluster, PgOptions};

use crate::support::{
    blocking, cfg, check_contiguous, current_lsn, opts, repo_env, slot_restart_lsn, spawn_stream,
    stop_stream, wait_committed, wait_committed_tli, Counter, R, SEG,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_under_load_shutdown_and_resume() -> R {
    let pg = PgCluster::start(PgOptions::default())?;
    let env = repo_env().await?;
    let conn = cfg(&pg.replication_conninfo());
    let dep = "main";
    let obs = Arc::new(Counter::default());

    let (tx, h) = spawn_stream(conn.clone(), env.repo.clone(), opts(dep), obs.clone());
    blocking(|| pg.pgbench(&["-i", "-s", "2", "-q"]))?;
    let partials_before = obs.partials.load(Ordering::Relaxed);
    blocking(|| pg.pgbench(&["-T", "5", "-c", "2"]))?;
    // The in-progress segment is stored every partial interval (500 ms) while WAL keeps
    // arriving, not only when the stream goes quiet.
    let partials = obs.partials.load(Ordering::Relaxed) - partials_before;
    assert!(
        partials >= 5,
        "only {partials} partial writes in 5 s of load"
    );
    let end = current_lsn(&pg)?;
    wait_committed(&pg, &env.repo, dep, end).await?;
    let exit = stop_stream(tx, h).await?;
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
    stop_stream(tx, h).await?;
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
    stop_stream(tx, h).await?;
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
    let StreamExit::Shutdown {
        flushed, received, ..
    } = stop_stream(tx, h).await?
    else {
        return Err("unexpected exit".into());
    };
    assert_eq!(flushed, received);
    assert!(flushed >= target);
    assert_eq!(slot_restart_lsn(&pg, "hs_sync_slot")?, flushed);
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
    stop_stream(tx, h).await?;
    let before = env.repo.list_wal(dep).await?;
    let last1 = before.segments.last().ok_or("no segment")?.segno(SEG);

    // A copy of the primary, promoted onto timeline 2 (keeping its old WAL around).
    let promoted = blocking(|| pg.promoted_copy("wal_keep_size = '1GB'\n"))?;
    let copy = promoted.data_dir().to_path_buf();
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
    stop_stream(tx, h).await?;

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
    stop_stream(tx, h).await?;
    let (first, last) = check_contiguous(&pg, &env.repo, dep).await?;
    assert!(last >= first + 4, "{first}..{last}");
    Ok(())
}
