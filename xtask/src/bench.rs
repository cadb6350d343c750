//! `cargo xtask bench`: benchmark harnesses that compare pg_hardstorage with other tools on
//! the same cluster in the same run. Not timed unit tests: numbers come from real tools.
//!
//! `bench backup [--scale N] [--runs R] [--warm] [--bin PATH] [--keep] [--others-only]`: a
//! pgbench database of scale N (default 100, about 1.5 GB) on a cluster that archives its WAL
//! with pgBackRest's `archive-push`, then R rounds (default 3) of these rows:
//! (a) `pg_basebackup -Ft -X none --checkpoint=fast` to local disk (removed after the run),
//! (b) a pgBackRest full backup (zst, process-max=2, start-fast),
//! (c) a first `pg_hardstorage backup` into a fresh file:// repository over TCP,
//! (d) the same over the unix socket (`host=<socket dir> user=hs_repl`, trust), into another
//!     fresh repository,
//! (e) a second `pg_hardstorage backup` of the unchanged cluster into (c)'s repository.
//! Each round runs every row once; the order rotates from round to round ((e) always right
//! after (c)). Before every run the archiver and autovacuum are idle, and the page cache is
//! synced and dropped, so every tool reads the cluster from disk like a backup of a database
//! larger than RAM; with `--warm` the data directory is read once instead, so every tool reads
//! it from the cache. Every run is under GNU time. The table gives per row the median, min and max wall
//! time, the median CPU (user + system) of the tool's processes and of the server processes
//! that served it, the largest peak RSS and the median bytes written (output, or what the
//! repository grew by); then the ratios of the medians of (c) and (d) to (a) and (b).
//! pg_basebackup and pg_hardstorage run as the calling user as `hs_repl`; pgBackRest
//! must read the data directory, so it runs as the `postgres` OS user over the unix socket.
//! `--bin PATH` uses an existing `pg_hardstorage` binary instead of a release build;
//! `--others-only` skips pg_hardstorage (to check the harness while it does not build);
//! `--keep` keeps the scratch directory with every tool's output.
//!
//! `bench wal`: see [`crate::bench_wal`]; `bench restore`: see [`crate::bench_restore`];
//! `bench replay`: see [`crate::bench_replay`].

use crate::util::{self, dir_bytes, sh};
use anyhow::{bail, Context, Result};
use hs_testkit::{postgres_user_command, PgCluster, PgOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const LIST: &str = "\
benchmarks (cargo xtask bench <name>):
  backup [--scale N] [--runs R] [--warm] [--bin PATH] [--keep] [--others-only]
                                pg_basebackup vs pgBackRest vs pg_hardstorage (TCP, unix socket,
                                2nd backup) on pgbench -i -s N (default N = 100, about 1.5 GB):
                                wall, CPU, peak RSS and bytes written; median of R rotated
                                rounds (default 3), page cache dropped before each run
                                (--warm: read once before each run instead)
  wal [--seconds N] [--scale N] [--partial-interval S] [--keep]
                                pg_hardstorage wal stream vs pg_receivewal under pgbench -c 4 -j 2
                                for N seconds (default 60, scale 20): lag bytes/seconds, CPU;
                                then wal fetch latency over 20 archived segments
  restore [--scale N] [--runs R] [--keep]
                                restore wall time on pgbench -i -s N (default 100):
                                pg_hardstorage vs pgBackRest (process-max=2) vs tar -xf of a
                                pg_basebackup tar, page cache dropped before each;
                                median of R interleaved rounds (default 3)
  replay [--wal-mb N] [--scale S] [--runs R] [--bin PATH] [--keep]
                                whole recovery time (restore + replay of N MiB of WAL, default
                                1024, until promoted) on pgbench -s S (default 100): ours (wal
                                fetch) vs pgBackRest (archive-get, async) vs ours + cp from local
                                disk (floor); median of R rotated rounds (default 3)
  scale [--scale N] [--bin PATH] [--keep]
                                peak RSS and wall of every pg_hardstorage command (backup x2,
                                restore, verify, repo verify/gc, rotate, list, status, doctor,
                                wal stream under load) on pgbench -i -s N (default 100), with
                                pg_basebackup and pgBackRest (2 procs, zst) for reference
  index [--chunks N[,N...]] [--change PCT] [--reserve-gib G] [--glibc-defaults]
        [--bin PATH] [--keep]
                                synthetic: N chunk ids (default curve 1M,10M,30M,100M) through
                                hs-repo's writer, dedup, index objects and gc (no PostgreSQL);
                                peak RSS, wall and lookups/s per phase, projected to 10 TB
  requests [--backups N] [--at A,B,..] [--per-switch K] [--bin PATH] [--keep]
                                storage requests (moto's log) and bytes read per command
                                (backup, restore --preview, wal fetch, list) on an S3 repository
                                after 10, 100 and N backups (default 400) of a tiny cluster
  gc [--scale N] [--backups B] [--keep-last K] [--transactions T] [--max-unused PCT]
     [--bin PATH] [--keep]
                                repository bytes after B backups (default 30) of pgbench -s N
                                (default 10) with pgbench -t T (default 5000) between,
                                rotate --keep K (default 7) and repo gc --grace 0s, against a
                                fresh repository of the same K backups (issue 16: <= 1.10x)
";

pub fn run(args: &[String]) -> Result<()> {
    match args.split_first() {
        None => {
            print!("{LIST}");
            Ok(())
        }
        Some((name, rest)) if name == "backup" => backup(rest),
        Some((name, rest)) if name == "wal" => crate::bench_wal::run(rest),
        Some((name, rest)) if name == "restore" => crate::bench_restore::run(rest),
        Some((name, rest)) if name == "replay" => crate::bench_replay::run(rest),
        Some((name, rest)) if name == "scale" => crate::bench_scale::run(rest),
        Some((name, rest)) if name == "index" => crate::bench_index::run(rest),
        Some((name, rest)) if name == "requests" => crate::bench_requests::run(rest),
        Some((name, rest)) if name == "gc" => crate::bench_gc::run(rest),
        Some((name, _)) => bail!("unknown benchmark {name:?}\n\n{LIST}"),
    }
}

/// The rows of `bench backup`, in the table's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tool {
    PgBasebackup,
    PgBackRest,
    /// pg_hardstorage's first backup into a fresh repository, over TCP.
    OursTcp,
    /// The same over the unix socket, into another fresh repository.
    OursSocket,
    /// pg_hardstorage's second backup of the unchanged cluster, into [`Tool::OursTcp`]'s
    /// repository.
    OursSecond,
}

impl Tool {
    fn label(self) -> &'static str {
        match self {
            Tool::PgBasebackup => "(a) pg_basebackup -Ft -X none",
            Tool::PgBackRest => "(b) pgBackRest full (zst, 2 procs)",
            Tool::OursTcp => "(c) ours, 1st backup (TCP)",
            Tool::OursSocket => "(d) ours, 1st backup (unix socket)",
            Tool::OursSecond => "(e) ours, 2nd backup (unchanged)",
        }
    }
}

/// What a round runs, slot by slot; the slots' order rotates from round to round. (e) backs
/// up into the repository (c) has just made, so the two share a slot.
const SLOTS: [&[Tool]; 4] = [
    &[Tool::PgBasebackup],
    &[Tool::PgBackRest],
    &[Tool::OursTcp, Tool::OursSecond],
    &[Tool::OursSocket],
];

/// One row's measurements, one entry per round.
struct Row {
    tool: Tool,
    walls: Vec<Duration>,
    /// User + system CPU of the tool's processes (GNU time).
    cpus: Vec<Duration>,
    /// CPU of the server processes that served it (backends and walsenders that exited).
    server_cpus: Vec<Duration>,
    /// Peak RSS in KiB, the largest over the rounds.
    rss_kib: u64,
    /// What the tool wrote: its output, or what its repository grew by.
    bytes: Vec<u64>,
}

/// `bench backup`'s flags.
struct BackupOpts {
    scale: u32,
    runs: u32,
    warm: bool,
    bin: Option<PathBuf>,
    keep: bool,
    others_only: bool,
}

fn backup(args: &[String]) -> Result<()> {
    let mut o = BackupOpts {
        scale: 100,
        runs: 3,
        warm: false,
        bin: None,
        keep: false,
        others_only: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--scale" => o.scale = util::flag_number(&mut it, "--scale")?,
            "--runs" => o.runs = util::flag_number(&mut it, "--runs")?,
            "--warm" => o.warm = true,
            "--bin" => o.bin = Some(it.next().context("--bin needs a path")?.into()),
            "--keep" => o.keep = true,
            "--others-only" => o.others_only = true,
            other => bail!("cargo xtask bench backup: unknown argument {other:?}"),
        }
    }
    if o.scale == 0 || o.runs == 0 {
        bail!("--scale and --runs must be at least 1");
    }
    util::ensure_postgres()?;
    util::ensure_gnu_time()?;
    if !util::succeeds("pgbackrest", &["version"]) {
        util::apt_install(&["pgbackrest"])?;
    }
    let bin = match (&o.bin, o.others_only) {
        (_, true) => None,
        (Some(b), false) => Some(b.clone()),
        (None, false) => Some(util::build_release_binary()?),
    };

    // One scratch directory for every tool's output, reachable by the postgres user
    // (pgBackRest writes its repository as postgres).
    with_scratch("xtask bench", o.keep, |work| {
        backup_in(work, bin.as_deref(), &o)
    })
}

fn backup_in(work: &Path, bin: Option<&Path>, o: &BackupOpts) -> Result<()> {
    let (pg, pgbr_conf) = pgbackrest_cluster(work)?;
    allow_socket_replication(&pg)?;
    let t = Instant::now();
    pgbench_init(&pg, o.scale)?;
    let db_bytes = database_bytes(&pg)?;
    eprintln!(
        "pgbench -i took {:.1}s; databases hold {}",
        t.elapsed().as_secs_f64(),
        human(db_bytes)
    );
    let b = BackupBench {
        work,
        pg: &pg,
        pgbr_conf: &pgbr_conf,
        ours: bin.map(|bin| {
            (
                Hs::named(bin, work, "hs-repo"),
                Hs::named(bin, work, "hs-repo-socket"),
            )
        }),
        warm: o.warm,
        ticks: clock_ticks()?,
    };
    let slots: &[&[Tool]] = if b.ours.is_some() {
        &SLOTS
    } else {
        &SLOTS[..2]
    };
    let mut rows: Vec<Row> = slots
        .iter()
        .flat_map(|s| s.iter())
        .map(|&tool| Row {
            tool,
            walls: Vec::new(),
            cpus: Vec::new(),
            server_cpus: Vec::new(),
            rss_kib: 0,
            bytes: Vec::new(),
        })
        .collect();
    rows.sort_by_key(|r| r.tool);
    let mut cold = true;
    for round in 0..o.runs as usize {
        for slot in util::rotation(round, slots.len()) {
            for &tool in slots[slot] {
                eprintln!("\n==> round {}/{}: {}", round + 1, o.runs, tool.label());
                let (t, server_cpu, bytes) = b.run_once(tool, &mut cold)?;
                let row = rows
                    .iter_mut()
                    .find(|r| r.tool == tool)
                    .context("a row for every tool")?;
                row.walls.push(t.wall);
                row.cpus.push(t.cpu);
                row.server_cpus.push(server_cpu);
                row.rss_kib = row.rss_kib.max(t.rss_kib);
                row.bytes.push(bytes);
            }
        }
    }
    sh(&mut pgbackrest_cmd(&pgbr_conf, &["info"]))?;
    if let Some((hs, _)) = &b.ours {
        sh(&mut hs.cmd(&["list", "bench", "--repo", &hs.url]))?;
    }
    let cache = if o.warm {
        "warm: the data directory read once (to /dev/null) before every run".to_string()
    } else if cold {
        "cold: synced and dropped before every run".to_string()
    } else {
        "NOT dropped (drop_caches failed; later runs may read a warm cache)".to_string()
    };
    let facts = format!(
        "pgbench scale {}, databases {} ({db_bytes} bytes), {} cores, {} round(s) in rotated \
         order (medians shown); page cache {cache}",
        o.scale,
        human(db_bytes),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        o.runs
    );
    backup_report(&facts, &rows);
    Ok(())
}

/// Lets replication connections in over the unix socket (`local replication all trust`):
/// hs-testkit's `pg_hba.conf` trusts the socket for databases only.
fn allow_socket_replication(pg: &PgCluster) -> Result<()> {
    use std::io::Write;
    let hba = pg.data_dir().join("pg_hba.conf");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&hba)
        .with_context(|| format!("open {}", hba.display()))?;
    writeln!(f, "local replication all trust")?;
    pg.psql("SELECT pg_reload_conf()")?;
    Ok(())
}

/// `getconf CLK_TCK`: the unit of the CPU times in `/proc/<pid>/stat`.
fn clock_ticks() -> Result<u64> {
    let out = util::run_capture(Command::new("getconf").arg("CLK_TCK"))?;
    out.trim().parse().context("getconf CLK_TCK")
}

/// What every run of `bench backup` needs.
struct BackupBench<'a> {
    work: &'a Path,
    pg: &'a PgCluster,
    pgbr_conf: &'a Path,
    /// pg_hardstorage over TCP (rows c and e) and over the unix socket (row d), each with its
    /// own repository; none with `--others-only`.
    ours: Option<(Hs, Hs)>,
    warm: bool,
    /// Clock ticks per second (`/proc` CPU times).
    ticks: u64,
}

impl BackupBench<'_> {
    fn pgbb_dir(&self) -> PathBuf {
        self.work.join("pg_basebackup")
    }

    fn pgbr_backups(&self) -> PathBuf {
        self.work.join("pgbackrest").join("repo").join("backup")
    }

    fn ours(&self) -> Result<&(Hs, Hs)> {
        self.ours.as_ref().context("pg_hardstorage is not measured")
    }

    /// `host=<socket dir> port=<port> user=hs_repl dbname=postgres`.
    fn socket_conninfo(&self) -> String {
        format!(
            "host={} port={} user={} dbname=postgres",
            self.pg.socket_dir().display(),
            self.pg.port(),
            hs_testkit::REPLICATION_USER
        )
    }

    /// Gets `tool`'s output place ready (a fresh repository for a first backup); returns the
    /// bytes it holds before the run and the command to measure.
    fn prepare(&self, tool: Tool) -> Result<(u64, Command)> {
        let conninfo = self.pg.replication_conninfo();
        Ok(match tool {
            Tool::PgBasebackup => {
                let dir = self.pgbb_dir();
                if dir.exists() {
                    std::fs::remove_dir_all(&dir)?;
                }
                let mut cmd = self.pg.client_command("pg_basebackup");
                cmd.arg("-d").arg(&conninfo).arg("-D").arg(&dir).args([
                    "-Ft",
                    "-X",
                    "none",
                    "--checkpoint=fast",
                ]);
                (0, cmd)
            }
            Tool::PgBackRest => (
                dir_bytes(&self.pgbr_backups())?,
                pgbackrest_cmd(self.pgbr_conf, &["--type=full", "backup"]),
            ),
            Tool::OursTcp | Tool::OursSocket => {
                let (tcp, socket) = self.ours()?;
                let (hs, conninfo) = if tool == Tool::OursTcp {
                    (tcp, conninfo)
                } else {
                    (socket, self.socket_conninfo())
                };
                if hs.dir.exists() {
                    std::fs::remove_dir_all(&hs.dir)?;
                }
                hs.init_repo()?;
                (dir_bytes(&hs.dir)?, hs.backup(&conninfo))
            }
            Tool::OursSecond => {
                let hs = &self.ours()?.0;
                (dir_bytes(&hs.dir)?, hs.backup(&conninfo))
            }
        })
    }

    /// Where `tool`'s output goes.
    fn output(&self, tool: Tool) -> Result<PathBuf> {
        Ok(match tool {
            Tool::PgBasebackup => self.pgbb_dir(),
            Tool::PgBackRest => self.pgbr_backups(),
            Tool::OursTcp | Tool::OursSecond => self.ours()?.0.dir.clone(),
            Tool::OursSocket => self.ours()?.1.dir.clone(),
        })
    }

    /// One measured run of `tool`: GNU time's figures, the server's CPU for it, and the
    /// bytes written. `cold` turns false when the page cache could not be dropped.
    fn run_once(&self, tool: Tool, cold: &mut bool) -> Result<(util::Timing, Duration, u64)> {
        let (before, cmd) = self.prepare(tool)?;
        wait_server_idle(self.pg)?;
        if self.warm {
            let _ = Command::new("sync").status();
            let read = read_tree(self.pg.data_dir())?;
            eprintln!(
                "    read {} of the data directory to warm the cache",
                human(read)
            );
        } else {
            *cold &= util::drop_caches();
        }
        let server_before = self.server_cpu()?;
        let t = util::timed(&cmd, &self.work.join("time"))?;
        let server_cpu = self.server_cpu_settled(server_before)?;
        let out = self.output(tool)?;
        let bytes = dir_bytes(&out)?.saturating_sub(before);
        if tool == Tool::PgBasebackup {
            std::fs::remove_dir_all(&out)?;
        }
        eprintln!(
            "    wall {:.2}s, CPU {:.2}s, server CPU {:.2}s, peak RSS {} MiB, {} written",
            t.wall.as_secs_f64(),
            t.cpu.as_secs_f64(),
            server_cpu.as_secs_f64(),
            t.rss_kib / 1024,
            human(bytes)
        );
        Ok((t, server_cpu, bytes))
    }

    /// User + system CPU of the postmaster's reaped children (`cutime + cstime` in
    /// `/proc/<postmaster>/stat`): every backend and walsender that has exited so far.
    fn server_cpu(&self) -> Result<Duration> {
        let pid_file = self.pg.data_dir().join("postmaster.pid");
        let pids = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("read {}", pid_file.display()))?;
        let pid = pids.lines().next().unwrap_or("").trim();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("read /proc/{pid}/stat (the postmaster)"))?;
        let ticks = children_cpu_ticks(&stat).context("parse the postmaster's /proc stat")?;
        Ok(Duration::from_secs_f64(ticks as f64 / self.ticks as f64))
    }

    /// [`Self::server_cpu`] since `before`, once the tool's server processes have exited and
    /// been reaped (two equal readings 100 ms apart, for at most 5 s).
    fn server_cpu_settled(&self, before: Duration) -> Result<Duration> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = self.server_cpu()?;
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.server_cpu()?;
            if now == last || Instant::now() > deadline {
                return Ok(now.saturating_sub(before));
            }
            last = now;
        }
    }
}

/// `cutime + cstime` (fields 16 and 17) of a `/proc/<pid>/stat` line, in clock ticks.
fn children_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces; count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let cutime: u64 = f.get(13)?.parse().ok()?;
    let cstime: u64 = f.get(14)?.parse().ok()?;
    Some(cutime + cstime)
}

/// Waits (up to 5 minutes) until the server is idle: the archiver has no segment left to push
/// (no `.ready` file in `pg_wal/archive_status`) and no autovacuum worker runs, so that neither
/// the last backup's `archive-push` nor a vacuum after the load runs during the next backup.
/// Says how long it waited, when it did.
fn wait_server_idle(pg: &PgCluster) -> Result<()> {
    let status = pg.data_dir().join("pg_wal").join("archive_status");
    let t = Instant::now();
    loop {
        let ready = std::fs::read_dir(&status)
            .with_context(|| format!("read {}", status.display()))?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
            .count();
        let vacuums: u32 = pg
            .psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")?
            .parse()
            .context("count autovacuum workers")?;
        if ready == 0 && vacuums == 0 {
            if t.elapsed() > Duration::from_millis(500) {
                eprintln!(
                    "    waited {:.1}s for archive-push and autovacuum to finish",
                    t.elapsed().as_secs_f64()
                );
            }
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(300) {
            bail!(
                "the server is not idle after 5 minutes: {ready} WAL segment(s) waiting for \
                 archive-push, {vacuums} autovacuum worker(s)"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads every regular file under `dir` to the end (into nothing), so that the page cache
/// holds them; returns the bytes read. Files that vanish meanwhile are skipped.
fn read_tree(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            total += read_tree(&entry.path())?;
        } else if ft.is_file() {
            match std::fs::File::open(entry.path()) {
                Ok(mut f) => total += std::io::copy(&mut f, &mut std::io::sink())?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("read {}", entry.path().display()))
                }
            }
        }
    }
    Ok(total)
}

/// Prints the backup table and the ratios of the medians.
fn backup_report(facts: &str, rows: &[Row]) {
    let secs = |v: &[Duration]| util::median(v).as_secs_f64();
    println!();
    println!("backup benchmark: {facts}");
    println!(
        "{:<36} {:>7} {:>7} {:>7} {:>7} {:>10} {:>8} {:>14} {:>10}",
        "row", "wall s", "min s", "max s", "CPU s", "server CPU", "RSS MiB", "bytes", "size"
    );
    for r in rows {
        let (lo, hi) = util::min_max_secs(&r.walls);
        let bytes = util::median(&r.bytes);
        println!(
            "{:<36} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>10.2} {:>8} {:>14} {:>10}",
            r.tool.label(),
            secs(&r.walls),
            lo,
            hi,
            secs(&r.cpus),
            secs(&r.server_cpus),
            r.rss_kib / 1024,
            bytes,
            human(bytes)
        );
    }
    let row = |tool| rows.iter().find(|r| r.tool == tool);
    let (Some(pgbb), Some(pgbr)) = (row(Tool::PgBasebackup), row(Tool::PgBackRest)) else {
        return;
    };
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let met = |r: f64, goal: f64| if r <= goal { "met" } else { "NOT met" };
    println!();
    println!(
        "ratios of the medians (issue 16 goals: wall <= 0.75x pgBackRest and <= 0.90x \
         pg_basebackup, bytes <= 0.95x pgBackRest):"
    );
    println!(
        "  pgBackRest      / pg_basebackup: wall {:.2}",
        ratio(secs(&pgbr.walls), secs(&pgbb.walls))
    );
    for ours in [row(Tool::OursTcp), row(Tool::OursSocket)]
        .into_iter()
        .flatten()
    {
        let (w_br, w_bb) = (
            ratio(secs(&ours.walls), secs(&pgbr.walls)),
            ratio(secs(&ours.walls), secs(&pgbb.walls)),
        );
        let b_br = ratio(
            util::median(&ours.bytes) as f64,
            util::median(&pgbr.bytes) as f64,
        );
        let name = if ours.tool == Tool::OursTcp {
            "(c) ours TCP"
        } else {
            "(d) ours socket"
        };
        println!(
            "  {name:<15} / pgBackRest: wall {w_br:.2} ({}), CPU {:.2}, bytes {b_br:.2} ({}); \
             / pg_basebackup: wall {w_bb:.2} ({})",
            met(w_br, 0.75),
            ratio(secs(&ours.cpus), secs(&pgbr.cpus)),
            met(b_br, 0.95),
            met(w_bb, 0.9)
        );
    }
    if let (Some(first), Some(second)) = (row(Tool::OursTcp), row(Tool::OursSecond)) {
        let (a, b) = (util::median(&second.bytes), util::median(&first.bytes));
        println!(
            "  (e) 2nd backup added {} ({:.2}% of the 1st)",
            human(a),
            100.0 * ratio(a as f64, b as f64)
        );
    }
    if row(Tool::OursTcp).is_none() {
        println!("(pg_hardstorage not measured: --others-only)");
    }
    println!(
        "notes: pg_basebackup output is uncompressed tar without WAL (removed after each run); \
         pgBackRest bytes are what its backup/ directory grew by (WAL goes to archive/ \
         separately; no encryption); pg_hardstorage bytes are what the repository grew by, \
         including any WAL the backup stores itself. CPU s is user + system of the tool's \
         processes (GNU time; pgBackRest's includes its 2 local processes); server CPU is that of \
         the backends and walsenders that served the run (the postmaster's reaped children), \
         which for pg_basebackup and ours includes reading and sending every file; RSS is the \
         largest process's peak over the rounds. Before every run the archiver and autovacuum are idle."
    );
}

/// Runs `f` in a fresh scratch directory (announced with `label`), then removes the
/// directory unless `keep`.
pub(crate) fn with_scratch(
    label: &str,
    keep: bool,
    f: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let work = tempfile_dir()?;
    eprintln!("{label}: scratch directory {}", work.display());
    let result = f(&work);
    if keep {
        eprintln!("{label}: keeping {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    result
}

/// `extra` then the settings of a cluster under pgbench load: 256 MB of shared buffers and
/// no checkpoint forced by WAL volume or time during a run.
pub(crate) fn load_settings(extra: &[&str]) -> Vec<String> {
    let load = [
        "shared_buffers = '256MB'",
        "max_wal_size = '4GB'",
        "checkpoint_timeout = '30min'",
    ];
    extra.iter().chain(&load).map(|s| s.to_string()).collect()
}

/// `pgbench -i -q -s <scale>` into `pg`, then a CHECKPOINT.
pub(crate) fn pgbench_init(pg: &PgCluster, scale: u32) -> Result<()> {
    eprintln!("\n==> pgbench -i -s {scale}");
    let mut init = pg.client_command("pgbench");
    init.args(["-i", "-q", "-s", &scale.to_string()]);
    sh(&mut init)?;
    pg.psql("CHECKPOINT")?;
    Ok(())
}

/// What the cluster's databases hold, in bytes.
pub(crate) fn database_bytes(pg: &PgCluster) -> Result<u64> {
    pg.psql("SELECT sum(pg_database_size(oid)) FROM pg_database")?
        .parse()
        .context("pg_database_size")
}

/// A benchmark's pg_hardstorage: the binary with the keyring `<work>/keyring`, and its
/// file:// repository (`<work>/hs-repo` unless [`Hs::named`]).
pub(crate) struct Hs {
    bin: PathBuf,
    keyring: PathBuf,
    /// The repository directory.
    pub dir: PathBuf,
    /// The repository URL.
    pub url: String,
}

impl Hs {
    pub(crate) fn new(bin: &Path, work: &Path) -> Self {
        Self::named(bin, work, "hs-repo")
    }

    /// As [`Hs::new`], with the repository in `<work>/<name>`.
    pub(crate) fn named(bin: &Path, work: &Path, name: &str) -> Self {
        let dir = work.join(name);
        Hs {
            bin: bin.to_path_buf(),
            keyring: work.join("keyring"),
            url: format!("file://{}", dir.display()),
            dir,
        }
    }

    /// `pg_hardstorage <args> --keyring <keyring>`.
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).arg("--keyring").arg(&self.keyring);
        cmd
    }

    /// `backup bench --pg-connection <conninfo> --repo <url>`.
    pub(crate) fn backup(&self, conninfo: &str) -> Command {
        self.cmd(&[
            "backup",
            "bench",
            "--pg-connection",
            conninfo,
            "--repo",
            &self.url,
        ])
    }

    /// `restore bench latest --target <target> --repo <url> <extra>...`.
    pub(crate) fn restore(&self, target: &str, extra: &[&str]) -> Command {
        let mut args = vec![
            "restore", "bench", "latest", "--target", target, "--repo", &self.url,
        ];
        args.extend_from_slice(extra);
        self.cmd(&args)
    }

    /// `repo init` of the repository.
    pub(crate) fn init_repo(&self) -> Result<()> {
        sh(&mut self.cmd(&["repo", "init", &self.url]))
    }
}

pub(crate) fn tempfile_dir() -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let base = std::env::var_os("HS_TEST_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let dir = base.join(format!("hs-bench-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// A cluster with WAL archiving through pgBackRest (stanza `bench`, zst, process-max 2,
/// start-fast) set up under `work`. Returns the cluster and pgBackRest's config file.
pub(crate) fn pgbackrest_cluster(work: &Path) -> Result<(PgCluster, PathBuf)> {
    let pgbr_conf = work.join("pgbackrest.conf");
    let pgbr_dir = work.join("pgbackrest");
    for sub in ["repo", "log", "lock", "spool"] {
        std::fs::create_dir_all(pgbr_dir.join(sub))?;
    }
    hs_testkit::chown_to_postgres(&pgbr_dir)?;

    let pg = PgCluster::start(PgOptions {
        extra_conf: load_settings(&[
            "archive_mode = on",
            // Set for real below, once pgbackrest.conf exists (archive_command is reloadable).
            "archive_command = '/bin/false'",
        ]),
        ..PgOptions::default()
    })?;
    eprintln!("xtask bench: cluster on 127.0.0.1:{}", pg.port());
    std::fs::write(
        &pgbr_conf,
        format!(
            "[global]\n\
             repo1-path={repo}\n\
             log-path={dir}/log\n\
             lock-path={dir}/lock\n\
             spool-path={dir}/spool\n\
             compress-type=zst\n\
             process-max=2\n\
             start-fast=y\n\
             repo1-retention-full=100\n\
             log-level-console=warn\n\
             log-level-file=info\n\
             \n\
             [bench]\n\
             pg1-path={data}\n\
             pg1-port={port}\n\
             pg1-socket-path={sock}\n\
             pg1-user=postgres\n",
            repo = pgbr_dir.join("repo").display(),
            dir = pgbr_dir.display(),
            data = pg.data_dir().display(),
            port = pg.port(),
            sock = pg.socket_dir().display(),
        ),
    )?;
    sh(&mut pgbackrest_cmd(&pgbr_conf, &["stanza-create"]))?;
    pg.psql(&format!(
        "ALTER SYSTEM SET archive_command = 'pgbackrest --config={} --stanza=bench archive-push %p'",
        pgbr_conf.display()
    ))?;
    pg.psql("SELECT pg_reload_conf()")?;
    sh(&mut pgbackrest_cmd(&pgbr_conf, &["check"]))?;
    Ok((pg, pgbr_conf))
}

/// `pgbackrest --config=<conf> --stanza=bench <args>`, run as the postgres OS user.
pub(crate) fn pgbackrest_cmd(conf: &Path, args: &[&str]) -> Command {
    let mut cmd = postgres_user_command("pgbackrest");
    cmd.arg(format!("--config={}", conf.display()))
        .arg("--stanza=bench")
        .args(args);
    cmd
}

#[cfg(test)]
mod tests {
    use super::{children_cpu_ticks, Tool, SLOTS};

    #[test]
    fn children_cpu_is_cutime_plus_cstime() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime ...
        let stat = "4242 (postgres: a) b) S 1 4242 4242 0 -1 4194560 900 8000 0 3 12 7 \
                    1500 260 20 0 1 0 123 1000 200";
        assert_eq!(children_cpu_ticks(stat), Some(1760));
        assert_eq!(children_cpu_ticks("4242 (x) S 1 2"), None);
        assert_eq!(children_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn every_tool_has_one_slot_and_the_2nd_backup_follows_the_1st() {
        let all: Vec<Tool> = SLOTS.iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(all.len(), 5);
        for t in &all {
            assert_eq!(all.iter().filter(|u| *u == t).count(), 1, "{t:?}");
        }
        assert!(SLOTS.contains(&&[Tool::OursTcp, Tool::OursSecond][..]));
        // --others-only keeps the first two slots: the reference tools alone.
        assert_eq!(
            SLOTS[..2],
            [&[Tool::PgBasebackup][..], &[Tool::PgBackRest][..]]
        );
    }
}
