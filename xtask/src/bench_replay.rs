//! `cargo xtask bench replay [--wal-mb N] [--scale S] [--runs R] [--bin PATH] [--keep]`: how long recovery takes
//! to replay N MiB of WAL (default 1024) through our `restore_command`
//! (`pg_hardstorage wal fetch` with its prefetch spool) compared with PostgreSQL
//! reading the same segments from a local directory (`restore_command = 'cp ...'`).
//!
//! One run: a pgbench database (scale S, default 10), a base backup, then
//! `wal stream` archives while pgbench writes (TPC-B rounds alternating with a script
//! that updates every account) until N MiB of WAL exist past the backup;
//! the source's own copies of the segments (kept by `wal_keep_size`) are copied into a
//! local directory. The backup is then restored twice and each copy started:
//! (a) `pg_hardstorage restore` (recovery to the end of the archived WAL),
//! (b) `pg_hardstorage restore --no-recovery` plus `recovery.signal` and
//! `restore_command = 'cp <local dir>/%f %p'`.
//! The time measured is from `pg_ctl start` until the server has left recovery; the page
//! cache is dropped before each start (root only). The order alternates per round.
//! `--bin PATH` uses an existing `pg_hardstorage` binary instead of a release build.

use crate::bench::{human, pgbench_init, with_scratch, Hs};
use crate::util::{self, sh};
use anyhow::{bail, Context, Result};
use hs_testkit::{PgCluster, PgOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn run(args: &[String]) -> Result<()> {
    let mut wal_mb: u64 = 1024;
    let mut scale: u32 = 10;
    let mut runs: u32 = 1;
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

/// `sync` then drop the page cache; false when that is not allowed.
fn drop_caches() -> bool {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
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

fn run_in(work: &Path, built: &Path, wal_mb: u64, scale: u32, runs: u32) -> Result<()> {
    // The restore_command runs as the postgres OS user: give it a binary, keyring and
    // repository it can reach.
    let bin = work.join("pg_hardstorage");
    std::fs::copy(built, &bin)?;
    let hs = Hs::new(&bin, work);

    let keep_mb = wal_mb + 512;
    let pg = PgCluster::start(PgOptions {
        extra_conf: vec![
            "shared_buffers = '128MB'".into(),
            "max_wal_size = '1GB'".into(),
            format!("wal_keep_size = '{keep_mb}MB'"),
        ],
        ..PgOptions::default()
    })?;
    pgbench_init(&pg, scale)?;

    hs.init_repo()?;
    let conninfo = pg.replication_conninfo();
    sh(&mut hs.backup(&conninfo))?;
    let start = lsn(&pg.psql("SELECT pg_current_wal_lsn()")?)?;

    let streamer = spawn_streamer(work, &hs, &conninfo)?;

    let generated = generate_wal(work, &pg, start, wal_mb)?;
    let end = lsn(&pg.psql("SELECT pg_switch_wal()")?)?;
    let rows = pg.psql("SELECT sum(abalance) FROM pgbench_accounts")?;
    eprintln!("\n==> waiting for wal stream to archive up to {end:X}");
    wait_archived(&pg, end)?;
    stop_child(streamer, "wal stream")?;

    let (local_wal, segs) = copy_local_wal(work, pg)?;

    let (mut ours, mut local, caches) = replay_rounds(work, &hs, &local_wal, &rows, runs)?;

    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v.get(v.len() / 2)
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
    };
    let (a, b) = (median(&mut ours), median(&mut local));
    let wal = end - start;
    println!();
    println!(
        "replay benchmark: {} of WAL ({segs} segments) generated by pgbench (scale {scale}) in \
         {:.0}s, {} cores, {runs} round(s), page cache {}",
        human(wal),
        generated.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if caches {
            "dropped before each start"
        } else {
            "NOT dropped"
        }
    );
    println!(
        "{:<40} {:>9} {:>12}",
        "restore_command", "replay s", "MiB/s"
    );
    for (what, s) in [
        ("pg_hardstorage wal fetch (+ prefetch)", a),
        ("cp from a local directory", b),
    ] {
        println!(
            "{what:<40} {s:>9.2} {:>12.1}",
            wal as f64 / (1 << 20) as f64 / s.max(1e-9)
        );
    }
    println!();
    println!("ours/local: {:.2}", a / b.max(1e-9));
    println!(
        "notes: time from pg_ctl start to the end of recovery (promotion), same backup, same \
         WAL; both rows include reaching consistency from the backup."
    );
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

/// Runs pgbench until `wal_mb` MiB of WAL lie past `start`; returns how long that took.
fn generate_wal(work: &Path, pg: &PgCluster, start: u64, wal_mb: u64) -> Result<Duration> {
    eprintln!("\n==> pgbench until {wal_mb} MiB of WAL past the backup");
    // pgbench's TPC-B transactions write about 1 KiB of WAL each, far too slowly on a
    // small machine; a pgbench script that updates every account row writes hundreds
    // of MiB per run (heap, index and full-page images), so alternate the two.
    let script = work.join("update-all.sql");
    std::fs::write(
        &script,
        "UPDATE pgbench_accounts SET abalance = abalance + 1;\n",
    )?;
    hs_testkit::chown_to_postgres(&script)?;
    let script_s = script.display().to_string();
    let target = start + (wal_mb << 20);
    let t = Instant::now();
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
            .stdout(Stdio::null());
        sh(&mut bulk)?;
    }
    Ok(t.elapsed())
}

/// Waits (up to 10 minutes) until the stream's slot has reached `end`.
fn wait_archived(pg: &PgCluster, end: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let flushed = pg.psql(
            "SELECT coalesce(restart_lsn::text, '0/0') FROM pg_replication_slots \
             WHERE slot_name = 'pg_hardstorage_bench'",
        )?;
        if !flushed.is_empty() && lsn(&flushed)? >= end {
            break;
        }
        if Instant::now() > deadline {
            bail!("wal stream did not archive up to {end:X} in 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// Stops the source and copies its own segments to `local-wal`, for (b).
/// Returns that directory and how many segments it holds.
fn copy_local_wal(work: &Path, pg: PgCluster) -> Result<(PathBuf, usize)> {
    // The source's own segments, for (b).
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

/// Restores and replays `runs` rounds, alternating which restore_command goes first.
/// Returns the replay times with ours, with `cp`, and whether the page cache was dropped each time.
fn replay_rounds(
    work: &Path,
    hs: &Hs,
    local_wal: &Path,
    rows: &str,
    runs: u32,
) -> Result<(Vec<Duration>, Vec<Duration>, bool)> {
    let mut ours = Vec::new();
    let mut local = Vec::new();
    let mut caches = true;
    let dir = work.join("restored");
    let dir_s = dir.display().to_string();
    for round in 0..runs {
        for which in [round % 2, 1 - round % 2] {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            let extra: &[&str] = if which == 1 {
                &["--verify=skip", "--no-recovery"]
            } else {
                &["--verify=skip"]
            };
            sh(&mut hs.restore(&dir_s, extra))?;
            if which == 1 {
                std::fs::write(dir.join("recovery.signal"), b"")?;
                let mut auto = std::fs::OpenOptions::new()
                    .append(true)
                    .open(dir.join("postgresql.auto.conf"))?;
                use std::io::Write;
                writeln!(auto, "restore_command = 'cp {}/%f %p'", local_wal.display())?;
            }
            caches &= drop_caches();
            let what = if which == 0 {
                "pg_hardstorage wal fetch"
            } else {
                "cp from a local directory"
            };
            eprintln!("\n==> replay with {what}");
            let t = Instant::now();
            let restored = PgCluster::start_existing(&dir)?;
            restored.wait_for_promotion(Duration::from_secs(3600))?;
            let took = t.elapsed();
            let got = restored.psql("SELECT sum(abalance) FROM pgbench_accounts")?;
            if got != *rows {
                bail!("{what}: the recovered cluster has sum(abalance) {got}, the source {rows}");
            }
            drop(restored);
            eprintln!("    {:.2}s", took.as_secs_f64());
            if which == 0 {
                ours.push(took);
            } else {
                local.push(took);
            }
        }
    }
    Ok((ours, local, caches))
}

#[cfg(test)]
mod tests {
    use super::lsn;

    #[test]
    fn lsn_parses() {
        assert_eq!(lsn("1/2A").unwrap(), (1 << 32) | 0x2a);
        assert!(lsn("zz").is_err());
    }
}
