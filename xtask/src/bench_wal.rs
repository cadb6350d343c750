//! `cargo xtask bench wal [--seconds N] [--scale N] [--partial-interval S] [--keep]`: WAL
//! archiving under write load, pg_hardstorage against pg_receivewal in the same run on the
//! same cluster.
//!
//! 1. A throwaway cluster, `pgbench -i -s N` (default 20).
//! 2. Both consumers stream at once, each with its own physical slot and `application_name`:
//!    `pg_hardstorage wal stream` into a fresh file:// repository (its own keyring, partial
//!    interval 1 s unless `--partial-interval`, `--metrics-listen` on a free port) and
//!    `pg_receivewal` in its default mode (no `--synchronous`; it fsyncs and reports flush
//!    at segment ends, like ours).
//! 3. `pgbench -c 4 -j 2 -T <seconds>` writes; every 500 ms we sample the server's
//!    `pg_current_wal_lsn()` and each consumer's `pg_stat_replication.flush_lsn`:
//!    lag bytes = server - flush; lag seconds = now - the moment the server's WAL end
//!    passed the consumer's flush position (interpolated between samples; a lower bound when
//!    it happened before sampling began). CPU time (utime + stime of /proc/<pid>/stat) of each
//!    consumer process over the load window. Because both consumers send status only every
//!    10 s, the same lags are also computed from each consumer's own durable position,
//!    sampled locally: ours from its `/metrics` (`flushed_lsn`, `durable_lsn` counting the
//!    `.partial`), pg_receivewal's from the newest completed segment file in its directory.
//!    Raw samples go to `samples.csv` in the scratch directory (`--keep` to look at them).
//! 4. `wal fetch` latency as PostgreSQL's restore_command runs it (a new process per segment)
//!    for 20 archived segments: once into a plain directory (straight from the repository, no
//!    spool), once as `pg_wal/RECOVERYXLOG` in a data directory (spool + prefetch).

use crate::bench::{human, load_settings, pgbench_init, with_scratch, Hs};
use crate::util::{self, run_capture, sh, show};
use anyhow::{bail, Context, Result};
use hs_testkit::{PgCluster, PgOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const OURS: &str = "hs_bench_stream";
const THEIRS: &str = "pg_receivewal_bench";
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
const FETCH_SEGMENTS: usize = 20;

pub fn run(args: &[String]) -> Result<()> {
    let mut seconds: u32 = 60;
    let mut partial_interval = String::from("1");
    let mut scale: u32 = 20;
    let mut keep = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => seconds = util::flag_number(&mut it, "--seconds")?,
            "--scale" => scale = util::flag_number(&mut it, "--scale")?,
            "--keep" => keep = true,
            "--partial-interval" => {
                partial_interval = it
                    .next()
                    .context("--partial-interval needs seconds")?
                    .clone()
            }
            other => bail!("cargo xtask bench wal: unknown argument {other:?}"),
        }
    }
    if seconds == 0 || scale == 0 {
        bail!("--seconds and --scale must be at least 1");
    }
    util::ensure_postgres()?;
    let bin = util::build_release_binary()?;
    with_scratch("xtask bench wal", keep, |work| {
        run_in(work, &bin, seconds, scale, &partial_interval)
    })
}

/// A child process that is killed (and reaped) when dropped, unless already waited for.
struct Proc {
    name: &'static str,
    child: Option<Child>,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command) -> Result<Proc> {
        eprintln!("$ {} &", show(cmd));
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("could not start {name}"))?;
        Ok(Proc {
            name,
            child: Some(child),
        })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn check_running(&mut self) -> Result<()> {
        if let Some(c) = &mut self.child {
            if let Some(status) = c.try_wait()? {
                self.child = None;
                bail!("{} exited early ({status})", self.name);
            }
        }
        Ok(())
    }

    /// Send `signal` (e.g. "TERM", "INT") and wait up to `timeout` for the exit.
    fn stop(&mut self, signal: &str, timeout: Duration) -> Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(c.id().to_string())
            .status();
        let t = Instant::now();
        loop {
            if let Some(status) = c.try_wait()? {
                eprintln!("{} stopped ({status})", self.name);
                return Ok(());
            }
            if t.elapsed() > timeout {
                let _ = c.kill();
                let _ = c.wait();
                bail!(
                    "{} did not stop within {timeout:?} of SIG{signal}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// utime + stime of a process (all its threads), in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/<pid>/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: u64 = f.get(11).context("no utime")?.parse()?;
    let stime: u64 = f.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) as f64 / clock_ticks() as f64)
}

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// One sample: when, the server's WAL end, each consumer's flush position.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: f64,
    server: u64,
    ours: Option<u64>,
    theirs: Option<u64>,
    /// Ours, from its metrics: flushed (whole segments in the repository).
    ours_flushed: Option<u64>,
    /// Ours, from its metrics: durable counting the `.partial` object.
    ours_durable: Option<u64>,
    /// pg_receivewal, from its directory: end of the newest completed (fsynced) segment.
    theirs_done: Option<u64>,
}

/// Adds the consumers' own view of their positions to `s`: our metrics, pg_receivewal's
/// directory (16 MiB segments assumed).
fn local_positions(s: &mut Sample, metrics_addr: &str, rw_dir: &Path) {
    if let Ok(body) = scrape(metrics_addr) {
        s.ours_flushed = metric(&body, "pg_hardstorage_wal_flushed_lsn").map(|v| v as u64);
        s.ours_durable = metric(&body, "pg_hardstorage_wal_durable_lsn").map(|v| v as u64);
    }
    const SEG: u64 = 16 * 1024 * 1024;
    let segno = |name: &str| -> Option<u64> {
        let log = u64::from_str_radix(name.get(8..16)?, 16).ok()?;
        let seg = u64::from_str_radix(name.get(16..24)?, 16).ok()?;
        Some(log * 256 + seg)
    };
    let Ok(rd) = std::fs::read_dir(rw_dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.len() == 24 {
            if let Some(n) = segno(&name) {
                let end = (n + 1) * SEG;
                s.theirs_done = Some(s.theirs_done.map_or(end, |d| d.max(end)));
            }
        }
    }
}

fn sample(pg: &PgCluster, t0: Instant) -> Result<Sample> {
    let flush = |app: &str| {
        format!(
            "coalesce((SELECT (flush_lsn - '0/0')::bigint FROM pg_stat_replication \
             WHERE application_name = '{app}' AND flush_lsn IS NOT NULL LIMIT 1)::text, '-')"
        )
    };
    let sql = format!(
        "SELECT (pg_current_wal_lsn() - '0/0')::bigint || ' ' || {} || ' ' || {}",
        flush(OURS),
        flush(THEIRS)
    );
    let out = pg.psql(&sql)?;
    let at = t0.elapsed().as_secs_f64();
    let mut parts = out.split_whitespace();
    let server = parts
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("unexpected sample {out:?}"))?;
    let ours = parts.next().and_then(|s| s.parse().ok());
    let theirs = parts.next().and_then(|s| s.parse().ok());
    Ok(Sample {
        at,
        server,
        ours,
        theirs,
        ours_flushed: None,
        ours_durable: None,
        theirs_done: None,
    })
}

/// When the server's WAL end first reached `pos`, interpolated between samples
/// (`samples[..=upto]`); the first sample's time if it was already there.
fn reached_at(samples: &[Sample], upto: usize, pos: u64) -> f64 {
    let mut prev: Option<&Sample> = None;
    for s in &samples[..=upto] {
        if s.server >= pos {
            return match prev {
                Some(p) if s.server > p.server => {
                    let frac = (pos.saturating_sub(p.server)) as f64 / (s.server - p.server) as f64;
                    p.at + frac * (s.at - p.at)
                }
                _ => s.at,
            };
        }
        prev = Some(s);
    }
    samples[upto].at
}

#[derive(Default)]
struct LagStats {
    bytes: Vec<u64>,
    secs: Vec<f64>,
}

impl LagStats {
    fn from_samples(samples: &[Sample], pick: impl Fn(&Sample) -> Option<u64>) -> LagStats {
        let mut st = LagStats::default();
        for (i, s) in samples.iter().enumerate() {
            let Some(f) = pick(s) else { continue };
            st.bytes.push(s.server.saturating_sub(f));
            st.secs.push(if f >= s.server {
                0.0
            } else {
                s.at - reached_at(samples, i, f)
            });
        }
        st
    }
}

fn pct<T: Copy + PartialOrd>(v: &[T], p: f64) -> Option<T> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s.get(i.min(s.len() - 1)).copied()
}

fn mib(b: Option<u64>) -> String {
    b.map_or("-".into(), |b| {
        format!("{:.2}", b as f64 / (1024.0 * 1024.0))
    })
}

fn secs(s: Option<f64>) -> String {
    s.map_or("-".into(), |s| format!("{s:.2}"))
}

/// `GET /metrics` from our streamer.
fn scrape(addr: &str) -> Result<String> {
    let mut s = std::net::TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    match out.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => bail!("unexpected /metrics response: {out:.200}"),
    }
}

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split('{').next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn run_in(work: &Path, bin: &Path, seconds: u32, scale: u32, partial_interval: &str) -> Result<()> {
    let pg = PgCluster::start(PgOptions {
        extra_conf: load_settings(&["max_wal_senders = 10", "max_replication_slots = 10"]),
        ..PgOptions::default()
    })?;
    eprintln!("xtask bench wal: cluster on 127.0.0.1:{}", pg.port());
    pgbench_init(&pg, scale)?;

    // Ours: fresh repository, own keyring.
    let hs = Hs::new(bin, work);
    hs.init_repo()?;
    let metrics_addr = format!("127.0.0.1:{}", hs_testkit::free_port()?);
    let conninfo = pg.replication_conninfo();
    let ours_conn = if conninfo.contains('?') {
        format!("{conninfo}&application_name={OURS}")
    } else {
        format!("{conninfo}?application_name={OURS}")
    };
    let mut ours = spawn_ours(work, &hs, &ours_conn, partial_interval, &metrics_addr)?;

    // pg_receivewal: its own slot and directory, default (non-synchronous) mode.
    let rw_dir = work.join("pg_receivewal");
    let mut theirs = spawn_theirs(work, &pg, &conninfo, &rw_dir)?;

    wait_both_streaming(work, &pg, &mut ours, &mut theirs, &metrics_addr)?;

    eprintln!("\n==> pgbench -c 4 -j 2 -T {seconds} while both stream");
    let cpu0 = (cpu_seconds(ours.pid())?, cpu_seconds(theirs.pid())?);
    let mut bench = pg.client_command("pgbench");
    bench.args(["-c", "4", "-j", "2", "-T", &seconds.to_string(), "-n"]);
    let bench_log = std::fs::File::create(work.join("pgbench.log"))?;
    let mut load = Proc::spawn("pgbench", bench.stdout(bench_log).stderr(Stdio::null()))?;
    let (t0, mut samples, durable_lag, load_end) = sample_under_load(
        &pg,
        &mut load,
        &mut ours,
        &mut theirs,
        &metrics_addr,
        &rw_dir,
    )?;
    let cpu1 = (cpu_seconds(ours.pid())?, cpu_seconds(theirs.pid())?);
    // Catch-up after the load: a few more seconds of samples (lag must drain).
    let tail_from = samples.len();
    let drain_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < drain_until {
        samples.push(sample(&pg, t0)?);
        std::thread::sleep(SAMPLE_EVERY);
    }
    let final_metrics = scrape(&metrics_addr)?;
    let cpu2 = (cpu_seconds(ours.pid())?, cpu_seconds(theirs.pid())?);
    ours.stop("TERM", Duration::from_secs(30))?;
    theirs.stop("INT", Duration::from_secs(30))?;
    let tps = std::fs::read_to_string(work.join("pgbench.log"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("tps"))
        .map(str::to_owned)
        .unwrap_or_default();

    write_samples_csv(work, &samples)?;
    report(Measured {
        scale,
        seconds,
        partial_interval,
        tps,
        samples,
        tail_from,
        load_end,
        durable_lag,
        final_metrics,
        cpu: [cpu0, cpu1, cpu2],
    });

    fetch_latency(work, &hs)
}

/// Creates pg_receivewal's slot and starts it into `rw_dir`, logging to `pg_receivewal.log`.
fn spawn_theirs(work: &Path, pg: &PgCluster, conninfo: &str, rw_dir: &Path) -> Result<Proc> {
    std::fs::create_dir_all(rw_dir)?;
    let rw = |extra: &[&str]| {
        let mut cmd = pg.client_command("pg_receivewal");
        cmd.env("PGAPPNAME", THEIRS)
            .arg("-D")
            .arg(rw_dir)
            .args(["--slot", "bench_receivewal", "-d", conninfo])
            .args(extra);
        cmd
    };
    sh(&mut rw(&["--create-slot"]))?;
    let theirs_log = std::fs::File::create(work.join("pg_receivewal.log"))?;
    Proc::spawn(
        "pg_receivewal",
        rw(&[]).stdout(Stdio::null()).stderr(theirs_log),
    )
}

/// What the load run measured, for [`report`].
struct Measured<'a> {
    scale: u32,
    seconds: u32,
    partial_interval: &'a str,
    tps: String,
    samples: Vec<Sample>,
    /// Samples from here on were taken in the drain after the load.
    tail_from: usize,
    load_end: f64,
    durable_lag: Vec<u64>,
    final_metrics: String,
    /// CPU seconds (ours, theirs) before the load, after it, and after the drain.
    cpu: [(f64, f64); 3],
}

/// Prints the comparison table and the summary lines.
fn report(m: Measured<'_>) {
    let Measured {
        scale,
        seconds,
        partial_interval,
        tps,
        samples,
        tail_from,
        load_end,
        durable_lag,
        final_metrics,
        cpu: [cpu0, cpu1, cpu2],
    } = m;
    let load_samples = &samples[..tail_from];
    let wal_bytes = load_samples
        .last()
        .zip(load_samples.first())
        .map_or(0, |(l, f)| l.server.saturating_sub(f.server));
    let rate = wal_bytes as f64 / load_end.max(0.001) / (1024.0 * 1024.0);
    let o = LagStats::from_samples(load_samples, |s| s.ours);
    let t = LagStats::from_samples(load_samples, |s| s.theirs);
    let o_flushed = LagStats::from_samples(load_samples, |s| s.ours_flushed);
    let t_done = LagStats::from_samples(load_samples, |s| s.theirs_done);
    let o_durable = LagStats::from_samples(load_samples, |s| s.ours_durable);
    let last = samples.last().copied();

    println!();
    println!(
        "wal benchmark: pgbench -i -s {scale}, then pgbench -c 4 -j 2 -T {seconds} ({tps}); 2 cores; \
         ours with --partial-interval {partial_interval}"
    );
    println!(
        "WAL written: {} in {load_end:.1} s = {rate:.2} MiB/s; {} samples every {} ms",
        human(wal_bytes),
        load_samples.len(),
        SAMPLE_EVERY.as_millis()
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "consumer", "lag MiB", "p50 MiB", "p95 MiB", "max s", "p50 s", "p95 s", "CPU s"
    );
    let row = |name: &str, st: &LagStats, cpu: Option<f64>| {
        println!(
            "{:<28} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}",
            name,
            mib(pct(&st.bytes, 100.0)),
            mib(pct(&st.bytes, 50.0)),
            mib(pct(&st.bytes, 95.0)),
            secs(pct(&st.secs, 100.0)),
            secs(pct(&st.secs, 50.0)),
            secs(pct(&st.secs, 95.0)),
            secs(cpu)
        );
    };
    let cpu_ours = cpu1.0 - cpu0.0;
    let cpu_theirs = cpu1.1 - cpu0.1;
    println!("-- as reported to the server (pg_stat_replication.flush_lsn; both send status every 10 s):");
    row("pg_hardstorage wal stream", &o, Some(cpu_ours));
    row("pg_receivewal", &t, Some(cpu_theirs));
    println!("-- each consumer's own durable position, sampled locally:");
    row("ours: segments in repo", &o_flushed, None);
    row("receivewal: segments fsynced", &t_done, None);
    row("ours: incl. .partial (RPO)", &o_durable, None);
    println!("(pg_receivewal preallocates its .partial file, so its unsynced position is not observable here)");
    println!(
        "(lag columns: max, p50, p95 over the load window; CPU = utime+stime during the load)"
    );
    println!(
        "CPU ours/pg_receivewal: {:.2} ({:.1}% vs {:.1}% of one core); with the 5 s drain: {:.2} s vs {:.2} s",
        if cpu_theirs > 0.0 { cpu_ours / cpu_theirs } else { f64::NAN },
        100.0 * cpu_ours / load_end.max(0.001),
        100.0 * cpu_theirs / load_end.max(0.001),
        cpu2.0 - cpu0.0,
        cpu2.1 - cpu0.1,
    );
    println!(
        "ours incl. .partial (metrics durable_lag_bytes): max {} MiB, p50 {} MiB, p95 {} MiB",
        mib(pct(&durable_lag, 100.0)),
        mib(pct(&durable_lag, 50.0)),
        mib(pct(&durable_lag, 95.0)),
    );
    if let Some(l) = last {
        println!(
            "after a 5 s drain: lag ours {} B, pg_receivewal {} B",
            l.ours
                .map_or("-".into(), |f| l.server.saturating_sub(f).to_string()),
            l.theirs
                .map_or("-".into(), |f| l.server.saturating_sub(f).to_string()),
        );
    }
    println!(
        "metrics at the end: segments_archived_total {}, bytes_archived_total {}, partial_writes_total {}, reconnects_total {}",
        metric(&final_metrics, "pg_hardstorage_wal_segments_archived_total").unwrap_or(f64::NAN),
        metric(&final_metrics, "pg_hardstorage_wal_bytes_archived_total").unwrap_or(f64::NAN),
        metric(&final_metrics, "pg_hardstorage_wal_partial_writes_total").unwrap_or(f64::NAN),
        metric(&final_metrics, "pg_hardstorage_wal_reconnects_total").unwrap_or(f64::NAN),
    );
}

/// Starts `pg_hardstorage wal stream` against the bench repository, logging to `wal-stream.log`.
fn spawn_ours(
    work: &Path,
    hs: &Hs,
    ours_conn: &str,
    partial_interval: &str,
    metrics_addr: &str,
) -> Result<Proc> {
    let ours_log = std::fs::File::create(work.join("wal-stream.log"))?;
    Proc::spawn(
        "pg_hardstorage wal stream",
        hs.cmd(&[
            "wal",
            "stream",
            "bench",
            "--pg-connection",
            ours_conn,
            "--repo",
            &hs.url,
            "--partial-interval",
            partial_interval,
            "--metrics-listen",
            metrics_addr,
        ])
        .stdout(Stdio::null())
        .stderr(ours_log),
    )
}

/// Waits until both consumers show up in `pg_stat_replication` and our metrics endpoint answers.
fn wait_both_streaming(
    work: &Path,
    pg: &PgCluster,
    ours: &mut Proc,
    theirs: &mut Proc,
    metrics_addr: &str,
) -> Result<()> {
    // Both connected and reporting?
    let t0 = Instant::now();
    loop {
        ours.check_running()
            .with_context(|| format!("see {}", work.join("wal-stream.log").display()))?;
        theirs
            .check_running()
            .with_context(|| format!("see {}", work.join("pg_receivewal.log").display()))?;
        let s = sample(pg, t0)?;
        if s.ours.is_some() && s.theirs.is_some() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("the consumers did not both appear in pg_stat_replication within 60 s: {s:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    scrape(metrics_addr).context("metrics endpoint")?;
    Ok(())
}

/// Samples both consumers' positions every `SAMPLE_EVERY` until pgbench exits.
/// Returns the sampling start, the samples, our metrics' durable lag and the load's duration.
fn sample_under_load(
    pg: &PgCluster,
    load: &mut Proc,
    ours: &mut Proc,
    theirs: &mut Proc,
    metrics_addr: &str,
    rw_dir: &Path,
) -> Result<(Instant, Vec<Sample>, Vec<u64>, f64)> {
    let t0 = Instant::now();
    let mut samples = Vec::new();
    let mut durable_lag = Vec::new();
    let load_end;
    loop {
        let tick = Instant::now();
        let mut s = sample(pg, t0)?;
        local_positions(&mut s, metrics_addr, rw_dir);
        samples.push(s);
        if let Ok(body) = scrape(metrics_addr) {
            if let Some(v) = metric(&body, "pg_hardstorage_wal_durable_lag_bytes") {
                durable_lag.push(v as u64);
            }
        }
        let done = match &mut load.child {
            Some(c) => c.try_wait()?,
            None => None,
        };
        if let Some(status) = done {
            load.child = None;
            if !status.success() {
                bail!("pgbench failed ({status})");
            }
            load_end = t0.elapsed().as_secs_f64();
            break;
        }
        ours.check_running()?;
        theirs.check_running()?;
        std::thread::sleep(SAMPLE_EVERY.saturating_sub(tick.elapsed()));
    }
    Ok((t0, samples, durable_lag, load_end))
}

/// Writes every sample to `samples.csv` in the work directory.
fn write_samples_csv(work: &Path, samples: &[Sample]) -> Result<()> {
    let mut csv = String::from(
        "t_s,server,ours_reported,theirs_reported,ours_flushed,ours_durable,theirs_done\n",
    );
    let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
    for s in samples {
        csv.push_str(&format!(
            "{:.3},{},{},{},{},{},{}\n",
            s.at,
            s.server,
            opt(s.ours),
            opt(s.theirs),
            opt(s.ours_flushed),
            opt(s.ours_durable),
            opt(s.theirs_done)
        ));
    }
    std::fs::write(work.join("samples.csv"), csv)?;
    Ok(())
}

/// `wal fetch` as restore_command: a new process per segment.
fn fetch_latency(work: &Path, hs: &Hs) -> Result<()> {
    let mut names: Vec<String> = Vec::new();
    collect_segments(&hs.dir.join("deployments"), &mut names)?;
    names.sort();
    names.dedup();
    if names.len() < 2 {
        bail!("only {} archived segments; nothing to fetch", names.len());
    }
    // The newest segments, in order (as recovery asks for them).
    let take = names.len().min(FETCH_SEGMENTS);
    let names = &names[names.len() - take..];
    eprintln!(
        "\n==> wal fetch of {take} segments ({} .. {})",
        names[0],
        names[take - 1]
    );

    let mut report = Vec::new();
    // (a) Straight from the repository: the destination is not in a pg_wal directory, so
    // no spool and no prefetch.
    let plain = work.join("fetch-plain");
    std::fs::create_dir_all(&plain)?;
    let mut ms = Vec::new();
    for n in names {
        let dest = plain.join("RECOVERYXLOG");
        let mut cmd = hs.cmd(&["wal", "fetch", "bench", n]);
        cmd.arg(&dest).args(["--repo", &hs.url]);
        ms.push(time_fetch(&mut cmd, &dest)?);
    }
    report.push(("repository (no spool)", ms, 0usize));

    // (b) As PostgreSQL runs it: cwd = data directory, %p = pg_wal/RECOVERYXLOG; the first
    // call starts the prefetcher, later calls may be served from the spool. A 200 ms pause
    // between calls stands in for replaying a segment.
    let pgdata = work.join("fetch-pgdata");
    std::fs::create_dir_all(pgdata.join("pg_wal"))?;
    let mut ms = Vec::new();
    let mut spooled = 0;
    for n in names {
        let mut cmd = hs.cmd(&["-o", "json", "wal", "fetch", "bench", n]);
        cmd.arg("pg_wal/RECOVERYXLOG")
            .args(["--repo", &hs.url])
            .current_dir(&pgdata);
        let t = Instant::now();
        let out = run_capture(&mut cmd)?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let dest = pgdata.join("pg_wal").join("RECOVERYXLOG");
        let len = std::fs::metadata(&dest)?.len();
        if len != 16 * 1024 * 1024 {
            bail!("fetched {n} has {len} bytes");
        }
        std::fs::remove_file(&dest)?;
        if out.contains("\"source\":\"spool\"") || out.contains("\"source\": \"spool\"") {
            spooled += 1;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    report.push(("restore_command (spool+prefetch)", ms, spooled));

    println!();
    println!("wal fetch latency, {take} segments of 16 MiB, one process per call (file:// repo)");
    println!(
        "{:<34} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "mode", "p50 ms", "p90 ms", "max ms", "min ms", "from spool"
    );
    for (what, ms, spooled) in &report {
        println!(
            "{:<34} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>10}",
            what,
            pct(ms, 50.0).unwrap_or(f64::NAN),
            pct(ms, 90.0).unwrap_or(f64::NAN),
            pct(ms, 100.0).unwrap_or(f64::NAN),
            pct(ms, 0.0).unwrap_or(f64::NAN),
            spooled
        );
    }
    Ok(())
}

fn time_fetch(cmd: &mut Command, dest: &Path) -> Result<f64> {
    let t = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("could not start {}", show(cmd)))?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !status.success() {
        bail!("command failed ({status}): {}", show(cmd));
    }
    let len = std::fs::metadata(dest)?.len();
    if len != 16 * 1024 * 1024 {
        bail!("{} wrote {len} bytes", show(cmd));
    }
    std::fs::remove_file(dest)?;
    Ok(ms)
}

/// Names of complete segments (24 hex digits, no suffix) anywhere under `dir`.
fn collect_segments(dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in rd {
        let entry = entry?;
        let path: PathBuf = entry.path();
        if entry.file_type()?.is_dir() {
            collect_segments(&path, out)?;
        } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            if name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push(name.to_owned());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at: f64, server: u64) -> Sample {
        Sample {
            at,
            server,
            ours: None,
            theirs: None,
            ours_flushed: None,
            ours_durable: None,
            theirs_done: None,
        }
    }

    #[test]
    fn lag_seconds_interpolates() {
        let v = [s(0.0, 100), s(1.0, 200), s(2.0, 300)];
        assert_eq!(reached_at(&v, 2, 150), 0.5);
        assert_eq!(reached_at(&v, 2, 50), 0.0);
        assert_eq!(reached_at(&v, 2, 300), 2.0);
        let mut w = v.to_vec();
        w[2].ours = Some(150);
        let st = LagStats::from_samples(&w, |s| s.ours);
        assert_eq!(st.bytes, vec![150]);
        assert_eq!(st.secs, vec![1.5]);
        assert_eq!(pct(&[3u64, 1, 2], 50.0), Some(2));
        assert_eq!(pct(&[3u64, 1, 2], 100.0), Some(3));
    }
}
