//! `cargo xtask bench replay [--wal-mb N] [--scale S] [--runs R] [--bin PATH] [--keep]`: the whole
//! recovery time (restore, then replay of N MiB of archived WAL, default 1024, until the server is
//! promoted) of pg_hardstorage against pgBackRest, with replay from a local directory as the floor
//! (issue 16: ours <= 0.7x pgBackRest).
//!
//! One run: a pgbench database (scale S, default 100) whose WAL is archived twice, by
//! `pg_hardstorage wal stream` and by pgBackRest's `archive_command` (`archive-push`, zst);
//! a `pg_hardstorage backup` and a pgBackRest full backup taken back to back; then pgbench writes
//! (TPC-B rounds alternating with a script that updates the next 200,000 accounts) until N MiB of WAL lie
//! past the backups, and the source's own copies of the segments (kept by `wal_keep_size`) are
//! copied into a local directory. Three rows, each from a fresh directory with the page cache
//! dropped before its restore, in R rounds (default 3) whose order rotates:
//! (a) ours: `pg_hardstorage restore` (default verification) writes recovery settings whose
//!     `restore_command` is `wal fetch` (with its prefetch spool); start; replay;
//! (b) pgBackRest: `pgbackrest restore --process-max=2` (its `restore_command` is `archive-get`),
//!     with `archive-async=y`, its spool path and `archive-get-queue-max` = [`PGBR_QUEUE_MAX`]
//!     (its own default, 8 segments: twice our spool's 4), process-max 2 for the queue; start;
//! (c) floor: `pg_hardstorage restore --no-recovery` (default verification), `recovery.signal`
//!     and `restore_command = 'cp <local dir>/%f %p'`; start; replay.
//!
//! Each row reports the restore (the tool's wall time, GNU time's peak RSS), the replay (from
//! `pg_ctl start` until `pg_is_in_recovery()` is false, polled every 200 ms) and their sum, as
//! medians over the rounds. Replay RSS is the largest of: every `restore_command` run under
//! `/usr/bin/time -a -f %M` (the harness wraps the line the restore wrote), and the peak RSS
//! (`VmHWM`) of background helpers (our prefetcher, pgBackRest's async `archive-get`) sampled from
//! /proc every 100 ms. The restored clusters get `archive_mode = 'off'` (the source's
//! `archive_command` would push their new timeline into the pgBackRest repository) and the
//! recovered `sum(abalance)` is checked against the source's.
//! `--bin PATH` uses an existing `pg_hardstorage` binary instead of a release build.

use crate::bench::{human, pgbackrest_cluster, pgbackrest_cmd, pgbench_init, with_scratch, Hs};
use crate::bench_restore::measure;
use crate::util::{self, median, sh};
use anyhow::{bail, Context, Result};
use hs_testkit::PgCluster;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// pgBackRest's `archive-get-queue-max` for row (b): its default, 128 MiB (8 segments of 16 MiB).
const PGBR_QUEUE_MAX: u64 = 128 << 20;

pub fn run(args: &[String]) -> Result<()> {
    let mut wal_mb: u64 = 1024;
    let mut scale: u32 = 100;
    let mut runs: u32 = 3;
    let mut keep = false;
    let mut bin: Option<std::path::PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--wal-mb" => wal_mb = util::flag_number(&mut it, "--wal-mb")?,
            "--scale" => scale = u32::try_from(util::flag_number::<u64>(&mut it, "--scale")?)?,
            "--runs" => runs = u32::try_from(util::flag_number::<u64>(&mut it, "--runs")?)?,
            "--keep" => keep = true,
            "--bin" => bin = Some(it.next().context("--bin needs a path")?.into()),
            other => bail!("cargo xtask bench replay: unknown argument {other:?}"),
        }
    }
    if wal_mb < 32 || scale == 0 || runs == 0 {
        bail!("--wal-mb must be at least 32; --scale and --runs at least 1");
    }
    util::ensure_postgres()?;
    util::ensure_gnu_time()?;
    if !util::succeeds("pgbackrest", &["version"]) {
        util::apt_install(&["pgbackrest"])?;
    }
    let built = match bin {
        Some(b) => b,
        None => util::build_release_binary()?,
    };
    with_scratch("xtask bench", keep, |work| {
        run_in(work, &built, wal_mb, scale, runs)
    })
}

/// An LSN psql printed (`X/Y`), as a number.
fn lsn(s: &str) -> Result<u64> {
    Ok(s.trim().parse::<hs_pg::Lsn>()?.0)
}

/// Stop a child we started: SIGTERM, then wait (SIGKILL after 60 s).
fn stop_child(mut c: Child, name: &str) -> Result<()> {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(c.id().to_string())
        .status();
    let t = Instant::now();
    while c.try_wait()?.is_none() {
        if t.elapsed() > Duration::from_secs(60) {
            let _ = c.kill();
            let _ = c.wait();
            bail!("{name} did not stop within 60 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The three ways to recover that the benchmark compares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    Ours,
    PgBackRest,
    Floor,
}

impl Way {
    const ALL: [Way; 3] = [Way::Ours, Way::PgBackRest, Way::Floor];

    fn label(self) -> &'static str {
        match self {
            Way::Ours => "(a) ours: restore + wal fetch",
            Way::PgBackRest => "(b) pgBackRest restore + archive-get",
            Way::Floor => "(c) floor: ours + cp from local dir",
        }
    }
}

/// One row's measurements, one entry per round.
struct Row {
    way: Way,
    restore: Vec<Duration>,
    replay: Vec<Duration>,
    total: Vec<Duration>,
    /// Per round: restore_command calls, the wall time the server spent waiting on them, and
    /// their CPU time (user + system; detached helpers not included).
    calls: Vec<usize>,
    wait: Vec<Duration>,
    cpu: Vec<Duration>,
    /// Peak RSS in KiB over the rounds: the restore command, and the replay's helpers.
    restore_rss: u64,
    replay_rss: u64,
}

/// One replay: its wall time, and what its restore_command calls cost.
struct Replay {
    wall: Duration,
    calls: usize,
    wait: Duration,
    cpu: Duration,
    /// KiB: the largest restore_command or helper process.
    rss: u64,
}

/// What every round needs.
struct Setup<'a> {
    work: &'a Path,
    hs: &'a Hs,
    pgbr_conf: &'a Path,
    local_wal: &'a Path,
    /// The source's `sum(abalance)` at the end of the WAL.
    sum: &'a str,
}

impl Setup<'_> {
    fn dir(&self) -> PathBuf {
        self.work.join("restored")
    }
}

fn run_in(work: &Path, built: &Path, wal_mb: u64, scale: u32, runs: u32) -> Result<()> {
    // The restore_command runs as the postgres OS user: give it a binary, keyring and
    // repository it can reach.
    let bin = work.join("pg_hardstorage");
    std::fs::copy(built, &bin)?;
    let hs = Hs::new(&bin, work);

    let (pg, pgbr_conf) = pgbackrest_cluster(work)?;
    // Keep every segment for the floor's local copy (the source is thrown away after).
    pg.psql("ALTER SYSTEM SET wal_keep_size = '1TB'")?;
    pg.psql("SELECT pg_reload_conf()")?;
    pgbench_init(&pg, scale)?;

    eprintln!("\n==> backups: pg_hardstorage, then a pgBackRest full, back to back");
    hs.init_repo()?;
    let conninfo = pg.replication_conninfo();
    sh(&mut hs.backup(&conninfo))?;
    sh(&mut pgbackrest_cmd(&pgbr_conf, &["--type=full", "backup"]))?;
    let start = lsn(&pg.psql("SELECT pg_current_wal_lsn()")?)?;

    let streamer = spawn_streamer(work, &hs, &conninfo)?;
    let generated = generate_wal(work, &pg, scale, start, wal_mb)?;
    let switched = pg.psql("SELECT pg_switch_wal()")?;
    let end = lsn(&switched)?;
    let last_seg = pg.psql(&format!("SELECT pg_walfile_name('{switched}')"))?;
    let sum = pg.psql("SELECT sum(abalance) FROM pgbench_accounts")?;
    eprintln!(
        "\n==> waiting for wal stream and archive-push to archive up to {end:X} ({last_seg})"
    );
    wait_archived(&pg, end, &last_seg)?;
    stop_child(streamer, "wal stream")?;

    let (local_wal, segs) = copy_local_wal(work, pg)?;
    // From here on pgBackRest reads WAL for recovery: asynchronously, through its spool.
    {
        use std::io::Write;
        let mut conf = std::fs::OpenOptions::new().append(true).open(&pgbr_conf)?;
        writeln!(
            conf,
            "archive-async=y\narchive-get-queue-max={PGBR_QUEUE_MAX}"
        )?;
    }
    let setup = Setup {
        work,
        hs: &hs,
        pgbr_conf: &pgbr_conf,
        local_wal: &local_wal,
        sum: &sum,
    };
    let (rows, caches) = rounds(&setup, runs)?;
    let facts = format!(
        "{} of WAL ({segs} segments) past the backups, generated by pgbench (scale {scale}) in \
         {:.0}s; {} cores; {runs} round(s), medians shown; page cache {}",
        human(end - start),
        generated.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if caches {
            "dropped before each restore"
        } else {
            "NOT dropped (drop_caches failed)"
        }
    );
    report(&facts, &rows);
    Ok(())
}

/// Starts `wal stream` into the bench repository, logging to `wal-stream.log`.
fn spawn_streamer(work: &Path, hs: &Hs, conninfo: &str) -> Result<Child> {
    let log = std::fs::File::create(work.join("wal-stream.log"))?;
    hs.cmd(&[
        "wal",
        "stream",
        "bench",
        "--pg-connection",
        conninfo,
        "--repo",
        &hs.url,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(log)
    .spawn()
    .context("start wal stream")
}

/// Account rows one bulk update touches: about 80 MiB of WAL (heap, index and full-page
/// images), so the WAL written overshoots the target by little.
const BULK_ROWS: u64 = 200_000;

/// Runs pgbench until `wal_mb` MiB of WAL lie past `start`; returns how long that took.
fn generate_wal(
    work: &Path,
    pg: &PgCluster,
    scale: u32,
    start: u64,
    wal_mb: u64,
) -> Result<Duration> {
    eprintln!("\n==> pgbench until {wal_mb} MiB of WAL past the backup");
    // pgbench's TPC-B transactions write about 1 KiB of WAL each, far too slowly on a
    // small machine; a script that updates the next BULK_ROWS accounts (wrapping around)
    // writes tens of MiB per run, so alternate the two.
    let script = work.join("update-range.sql");
    std::fs::write(
        &script,
        format!(
            "UPDATE pgbench_accounts SET abalance = abalance + 1 \
             WHERE aid > :lo AND aid <= :lo + {BULK_ROWS};\n"
        ),
    )?;
    hs_testkit::chown_to_postgres(&script)?;
    let script_s = script.display().to_string();
    let accounts = u64::from(scale) * 100_000;
    let target = start + (wal_mb << 20);
    let t = Instant::now();
    let mut lo = 0;
    loop {
        let now = lsn(&pg.psql("SELECT pg_current_wal_lsn()")?)?;
        if now >= target {
            break;
        }
        let mut load = pg.client_command("pgbench");
        load.args(["-n", "-c", "4", "-j", "2", "-T", "5"])
            .stdout(Stdio::null());
        sh(&mut load)?;
        let mut bulk = pg.client_command("pgbench");
        bulk.args(["-n", "-c", "1", "-t", "1", "-f", &script_s])
            .arg("-D")
            .arg(format!("lo={lo}"))
            .stdout(Stdio::null());
        sh(&mut bulk)?;
        lo = (lo + BULK_ROWS) % accounts;
    }
    Ok(t.elapsed())
}

/// Waits (up to 10 minutes) until the stream's slot has reached `end` and pgBackRest's
/// `archive-push` has archived `last_seg`.
fn wait_archived(pg: &PgCluster, end: u64, last_seg: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let flushed = pg.psql(
            "SELECT coalesce(restart_lsn::text, '0/0') FROM pg_replication_slots \
             WHERE slot_name = 'pg_hardstorage_bench'",
        )?;
        let pushed =
            pg.psql("SELECT coalesce(left(last_archived_wal, 24), '') FROM pg_stat_archiver")?;
        if !flushed.is_empty() && lsn(&flushed)? >= end && pushed.as_str() >= last_seg {
            break;
        }
        if Instant::now() > deadline {
            bail!("WAL up to {end:X} not archived by both in 10 minutes (stream at {flushed}, archive-push at {pushed})");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// Stops the source and copies its own segments to `local-wal`, for the floor row.
/// Returns that directory and how many segments it holds.
fn copy_local_wal(work: &Path, pg: PgCluster) -> Result<(PathBuf, usize)> {
    let local_wal = work.join("local-wal");
    std::fs::create_dir_all(&local_wal)?;
    let mut pg = pg;
    pg.stop()?;
    let mut segs = 0;
    for e in std::fs::read_dir(pg.data_dir().join("pg_wal"))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.len() == 24 && name.chars().all(|c| c.is_ascii_hexdigit()) {
            std::fs::copy(e.path(), local_wal.join(&name))?;
            segs += 1;
        }
    }
    drop(pg);
    hs_testkit::chown_to_postgres(work)?;
    eprintln!("{segs} segments copied to {}", local_wal.display());
    Ok((local_wal, segs))
}

/// Restores and replays `runs` rounds of every row, rotating the order per round.
/// Returns the rows and whether the page cache was dropped before every restore.
fn rounds(s: &Setup<'_>, runs: u32) -> Result<(Vec<Row>, bool)> {
    let mut rows: Vec<Row> = Way::ALL
        .iter()
        .map(|&way| Row {
            way,
            restore: Vec::new(),
            replay: Vec::new(),
            total: Vec::new(),
            calls: Vec::new(),
            wait: Vec::new(),
            cpu: Vec::new(),
            restore_rss: 0,
            replay_rss: 0,
        })
        .collect();
    let mut caches = true;
    for round in 0..runs as usize {
        for k in util::rotation(round, rows.len()) {
            let row = &mut rows[k];
            eprintln!("\n==> round {}/{runs}: {}", round + 1, row.way.label());
            let (restore, restore_rss) = restore_once(s, row.way, &mut caches)?;
            let r = replay_once(s, row.way)?;
            eprintln!(
                "    restore {:.2}s + replay {:.2}s = {:.2}s; {} restore_command calls: {:.2}s \
                 waited, {:.2}s CPU; replay peak RSS {} MiB",
                restore.as_secs_f64(),
                r.wall.as_secs_f64(),
                (restore + r.wall).as_secs_f64(),
                r.calls,
                r.wait.as_secs_f64(),
                r.cpu.as_secs_f64(),
                r.rss / 1024
            );
            row.restore.push(restore);
            row.replay.push(r.wall);
            row.total.push(restore + r.wall);
            row.calls.push(r.calls);
            row.wait.push(r.wait);
            row.cpu.push(r.cpu);
            row.restore_rss = row.restore_rss.max(restore_rss);
            row.replay_rss = row.replay_rss.max(r.rss);
        }
    }
    let dir = s.dir();
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok((rows, caches))
}

/// Restores the backup for `way` into a fresh directory, page cache dropped first.
/// Returns the restore's wall time and peak RSS (KiB).
fn restore_once(s: &Setup<'_>, way: Way, caches: &mut bool) -> Result<(Duration, u64)> {
    let dir = s.dir();
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let dir_s = dir.display().to_string();
    let cmd = match way {
        Way::Ours => s.hs.restore(&dir_s, &[]),
        Way::Floor => s.hs.restore(&dir_s, &["--no-recovery"]),
        Way::PgBackRest => {
            // pgBackRest wants an existing directory it owns, mode 0700.
            std::fs::create_dir_all(&dir)?;
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
            }
            hs_testkit::chown_to_postgres(&dir)?;
            // A queue left by an earlier round would start this one warm.
            let queue = s.work.join("pgbackrest").join("spool").join("archive");
            if queue.exists() {
                std::fs::remove_dir_all(&queue)?;
            }
            let pg1 = format!("--pg1-path={dir_s}");
            pgbackrest_cmd(s.pgbr_conf, &[&pg1, "--process-max=2", "restore"])
        }
    };
    let (wall, _, rss) = measure(&cmd, caches, &s.work.join("rss"))?;
    Ok((wall, rss))
}

/// Starts the restored cluster and waits until it is out of recovery; checks what it holds.
fn replay_once(s: &Setup<'_>, way: Way) -> Result<Replay> {
    let dir = s.dir();
    let rss_log = s.work.join("rss-restore-command");
    std::fs::write(&rss_log, b"")?;
    hs_testkit::chown_to_postgres(&rss_log)?;
    let auto = dir.join("postgresql.auto.conf");
    let mut conf = std::fs::read_to_string(&auto)?;
    if way == Way::Floor {
        std::fs::write(dir.join("recovery.signal"), b"")?;
        conf.push_str(&format!(
            "restore_command = 'cp {}/%f %p'\n",
            s.local_wal.display()
        ));
    }
    let expect = match way {
        Way::Ours => "wal fetch",
        Way::PgBackRest => "archive-get",
        Way::Floor => "cp ",
    };
    let mut conf = with_rss_wrapper(&conf, &rss_log, expect)?;
    conf.push_str("archive_mode = 'off'\n");
    std::fs::write(&auto, conf)?;

    let poll = RssPoll::start();
    let t = Instant::now();
    let restored = PgCluster::start_existing(&dir)?;
    restored.wait_for_promotion(Duration::from_secs(3600))?;
    let took = t.elapsed();
    let helpers = poll.stop();
    let got = restored.psql("SELECT sum(abalance) FROM pgbench_accounts")?;
    if got != s.sum {
        bail!(
            "{}: the recovered cluster has sum(abalance) {got}, the source {}",
            way.label(),
            s.sum
        );
    }
    drop(restored);
    let mut r = Replay {
        wall: took,
        calls: 0,
        wait: Duration::ZERO,
        cpu: Duration::ZERO,
        rss: helpers,
    };
    for line in std::fs::read_to_string(&rss_log)?.lines() {
        // `%e,%U,%S,%M`; GNU time adds a line of its own when a command exits non-zero.
        let f: Vec<f64> = line
            .split(',')
            .filter_map(|v| v.trim().parse().ok())
            .collect();
        if let [e, u, sys, m] = f[..] {
            r.calls += 1;
            r.wait += Duration::from_secs_f64(e);
            r.cpu += Duration::from_secs_f64(u + sys);
            r.rss = r.rss.max(m as u64);
        }
    }
    Ok(r)
}

/// `conf` (a postgresql.auto.conf) with its last `restore_command` run under
/// `/usr/bin/time -a -o <log> -f %e,%U,%S,%M`, so that each call appends its wall time, CPU
/// times and peak RSS to `log`.
/// Fails unless that command contains `expect`.
fn with_rss_wrapper(conf: &str, log: &Path, expect: &str) -> Result<String> {
    let mut lines: Vec<String> = conf.lines().map(str::to_string).collect();
    let line = lines
        .iter_mut()
        .rev()
        .find(|l| l.trim_start().starts_with("restore_command"))
        .context("the restored postgresql.auto.conf sets no restore_command")?;
    if !line.contains(expect) {
        bail!("unexpected restore_command (wanted {expect:?}): {line}");
    }
    let quote = line
        .find('\'')
        .context("restore_command value is not quoted")?;
    // `%%` is PostgreSQL's escape for a literal `%`.
    line.insert_str(
        quote + 1,
        &format!("/usr/bin/time -a -o {} -f %%e,%%U,%%S,%%M ", log.display()),
    );
    Ok(lines.join("\n") + "\n")
}

/// Samples the peak RSS (`VmHWM`) of running `pg_hardstorage`, `pgbackrest` and `cp` processes
/// every 100 ms on a thread, until stopped.
struct RssPoll {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssPoll {
    fn start() -> RssPoll {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(helpers_peak_rss());
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        RssPoll { stop, thread }
    }

    /// The largest peak RSS seen, in KiB.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// The largest `VmHWM` (KiB) among the processes now running whose name is one of the
/// restore_command programs.
fn helpers_peak_rss() -> u64 {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut peak = 0;
    for e in rd.flatten() {
        let p = e.path();
        let Ok(comm) = std::fs::read_to_string(p.join("comm")) else {
            continue;
        };
        if !matches!(comm.trim(), "pg_hardstorage" | "pgbackrest" | "cp") {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(p.join("status")) else {
            continue;
        };
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        peak = peak.max(hwm);
    }
    peak
}

/// Prints the table and the ratios against the issue-16 goal.
fn report(facts: &str, rows: &[Row]) {
    let secs = |v: &[Duration]| median(v).as_secs_f64();
    println!();
    println!("recovery benchmark (restore + replay until promoted): {facts}");
    println!(
        "pgBackRest: archive-push beside wal stream; restore --process-max=2; archive-get with \
         archive-async=y, archive-get-queue-max={} MiB, process-max=2",
        PGBR_QUEUE_MAX >> 20
    );
    println!(
        "{:<38} {:>9} {:>8} {:>9} {:>8} {:>9} {:>7} {:>7}",
        "row", "restore s", "RSS MiB", "replay s", "RSS MiB", "total s", "min s", "max s"
    );
    for r in rows {
        println!(
            "{:<38} {:>9.2} {:>8} {:>9.2} {:>8} {:>9.2} {:>7.2} {:>7.2}",
            r.way.label(),
            secs(&r.restore),
            r.restore_rss / 1024,
            secs(&r.replay),
            r.replay_rss / 1024,
            secs(&r.total),
            r.total
                .iter()
                .min()
                .copied()
                .unwrap_or_default()
                .as_secs_f64(),
            r.total
                .iter()
                .max()
                .copied()
                .unwrap_or_default()
                .as_secs_f64(),
        );
    }
    println!(
        "{:<38} {:>9} {:>15} {:>13}",
        "restore_command during replay", "calls", "server waited s", "their CPU s"
    );
    for r in rows {
        let mut calls = r.calls.clone();
        calls.sort_unstable();
        println!(
            "{:<38} {:>9} {:>15.2} {:>13.2}",
            r.way.label(),
            calls.get(calls.len() / 2).copied().unwrap_or(0),
            secs(&r.wait),
            secs(&r.cpu)
        );
    }
    let ratio = |a: &[Duration], b: &[Duration]| {
        let b = secs(b);
        if b > 0.0 {
            secs(a) / b
        } else {
            f64::NAN
        }
    };
    let (ours, pgbr, floor) = (&rows[0], &rows[1], &rows[2]);
    let total = ratio(&ours.total, &pgbr.total);
    println!();
    println!(
        "ours/pgBackRest: total {total:.2} (restore {:.2}, replay {:.2}); goal <= 0.70: {}",
        ratio(&ours.restore, &pgbr.restore),
        ratio(&ours.replay, &pgbr.replay),
        if total <= 0.7 { "met" } else { "NOT met" }
    );
    println!(
        "ours/floor:      total {:.2} (restore {:.2}, replay {:.2})",
        ratio(&ours.total, &floor.total),
        ratio(&ours.restore, &floor.restore),
        ratio(&ours.replay, &floor.replay)
    );
    println!(
        "notes: total is the median of each round's restore + replay; \"server waited\" sums \
         the wall time of every restore_command call (the startup process waits for each), CPU \
         excludes detached helpers (our prefetcher, pgBackRest's async archive-get); restore RSS is GNU time's \
         %M of the restore command; replay RSS is the largest restore_command (time -f %M) or \
         helper process (VmHWM sampled every 100 ms). pgBackRest's backup starts a few MB of \
         WAL after ours (taken right after it)."
    );
}

#[cfg(test)]
mod tests {
    use super::{lsn, with_rss_wrapper};
    use std::path::Path;

    #[test]
    fn lsn_parses() {
        assert_eq!(lsn("1/2A").unwrap(), (1 << 32) | 0x2a);
        assert!(lsn("zz").is_err());
    }

    #[test]
    fn rss_wrapper_wraps_the_last_restore_command() {
        let conf = "restore_command = 'old'\nport = 5\nrestore_command = '''/x/pg_hardstorage'' wal fetch b %f %p'\n";
        let got = with_rss_wrapper(conf, Path::new("/t/rss"), "wal fetch").unwrap();
        assert_eq!(
            got,
            "restore_command = 'old'\nport = 5\nrestore_command = '/usr/bin/time -a -o /t/rss -f %%e,%%U,%%S,%%M ''/x/pg_hardstorage'' wal fetch b %f %p'\n"
        );
        assert!(with_rss_wrapper(conf, Path::new("/t/rss"), "archive-get").is_err());
        assert!(with_rss_wrapper("port = 5\n", Path::new("/t/rss"), "cp ").is_err());
    }
}
