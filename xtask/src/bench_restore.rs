//! `cargo xtask bench restore [--scale N] [--runs R] [--keep]`: restore wall time of one pgbench
//! database (scale N, default 100, about 1.5 GB), by pg_hardstorage, pgBackRest and a plain
//! `tar -xf` of a `pg_basebackup -Ft -X fetch` tar, all taken from the same cluster in the
//! same run.
//!
//! Each restore goes into a fresh, empty directory; before each one the page cache is dropped
//! (`sync; echo 3 > /proc/sys/vm/drop_caches`, root only; the table says when that failed) so
//! that every tool reads its backup from disk. Each row reports the tool's own wall time and
//! the wall time including a `sync` right after it (tar does not fsync what it writes; the
//! other tools do, so "+ sync" is the fairer column for tar). The four restores are repeated
//! in R interleaved rounds (default 3), each round starting one row further on
//! ([`util::rotation`]); the table shows the median, min and max.
//!
//! Measured:
//! (a) `pg_hardstorage restore <dep> latest --target DIR --repo URL --verify=skip --no-recovery`,
//! (b) the same with the default verification (each file's CRC-32C checked against
//!     `backup_manifest` as it is written, then `pg_verifybackup --skip-checksums`),
//! (c) `pgbackrest restore --pg1-path=DIR --type=none --process-max=2` as the `postgres` user
//!     (`--type=none`: no recovery settings written, like `--no-recovery`),
//! (d) `tar -xf base.tar -C DIR` (a copy baseline).

use crate::bench::{database_bytes, human, pgbackrest_cmd, pgbench_init, with_scratch, Hs};
use crate::util::{self, dir_bytes, median, sh};
use anyhow::{bail, Result};
use hs_testkit::PgCluster;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One measured restore.
struct Row {
    what: &'static str,
    walls: Vec<Duration>,
    syncs: Vec<Duration>,
    /// Peak RSS of each run in KiB (GNU time's `%M`; of the largest process).
    rss: Vec<u64>,
    bytes: u64,
}

pub fn run(args: &[String]) -> Result<()> {
    let mut scale: u32 = 100;
    let mut runs: u32 = 3;
    let mut keep = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--scale" => scale = util::flag_number(&mut it, "--scale")?,
            "--runs" => runs = util::flag_number(&mut it, "--runs")?,
            "--keep" => keep = true,
            other => bail!("cargo xtask bench restore: unknown argument {other:?}"),
        }
    }
    if scale == 0 || runs == 0 {
        bail!("--scale and --runs must be at least 1");
    }
    util::ensure_postgres()?;
    util::ensure_gnu_time()?;
    if !util::succeeds("pgbackrest", &["version"]) {
        util::apt_install(&["pgbackrest"])?;
    }
    let bin = util::build_release_binary()?;

    with_scratch("xtask bench", keep, |work| run_in(work, &bin, scale, runs))
}

/// Run `cmd` under GNU time after dropping the page cache, then `sync`;
/// returns (tool wall, wall incl. sync, peak RSS in KiB).
pub(crate) fn measure(
    cmd: &Command,
    caches_dropped: &mut bool,
    rss_file: &Path,
) -> Result<(Duration, Duration, u64)> {
    *caches_dropped &= util::drop_caches();
    let t = Instant::now();
    let timing = util::timed(cmd, rss_file)?;
    let wall = timing.wall;
    let _ = Command::new("sync").status();
    let with_sync = t.elapsed();
    eprintln!(
        "    wall {:.2}s, {:.2}s including a final sync, peak RSS {} MiB",
        wall.as_secs_f64(),
        with_sync.as_secs_f64(),
        timing.rss_kib / 1024
    );
    Ok((wall, with_sync, timing.rss_kib))
}

fn run_in(work: &Path, bin: &Path, scale: u32, runs: u32) -> Result<()> {
    let (mut pg, pgbr_conf) = crate::bench::pgbackrest_cluster(work)?;
    let pgbr_dir = work.join("pgbackrest");
    let pgbackrest = |args: &[&str]| pgbackrest_cmd(&pgbr_conf, args);

    pgbench_init(&pg, scale)?;
    let db_bytes = database_bytes(&pg)?;

    eprintln!("\n==> backups to restore from");
    let hs = Hs::new(bin, work);
    hs.init_repo()?;
    let conninfo = pg.replication_conninfo();
    sh(&mut hs.backup(&conninfo))?;
    sh(&mut pgbackrest(&["--type=full", "backup"]))?;
    let pgbb_dir = work.join("pg_basebackup");
    let base_tar = pg_basebackup_tar(&pg, &conninfo, &pgbb_dir)?;
    let backup_sizes = [
        ("pg_hardstorage repository", dir_bytes(&hs.dir)?),
        (
            "pgBackRest backup/ (zst)",
            dir_bytes(&pgbr_dir.join("repo").join("backup"))?,
        ),
        ("pg_basebackup -Ft -X fetch", dir_bytes(&pgbb_dir)?),
    ];
    // Restores need nothing from the server; stop it so it adds no noise.
    pg.stop()?;

    let mut caches_dropped = true;
    let names = [
        "pg_hardstorage restore (no verify)",
        "pg_hardstorage restore (verify)",
        "pgBackRest restore (2 procs)",
        "tar -xf (pg_basebackup tar)",
    ];
    let mut rows: Vec<Row> = names
        .iter()
        .map(|&what| Row {
            what,
            walls: Vec::new(),
            syncs: Vec::new(),
            rss: Vec::new(),
            bytes: 0,
        })
        .collect();
    let dir = work.join("restore-target");
    let dir_s = dir.display().to_string();
    let pg1 = format!("--pg1-path={}", dir.display());
    // Rounds interleave the tools so that a burst of load elsewhere hits them all alike, and
    // the order rotates each round. With a fixed order, `--verify=skip` always ran first and
    // measured 1.6-2.2 s slower than the default restore at scale 1000, though it does less.
    for round in 0..runs as usize {
        for i in util::rotation(round, rows.len()) {
            let row = &mut rows[i];
            eprintln!("\n==> round {}/{runs}: {}", round + 1, row.what);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            let cmd = match i {
                0 | 1 => {
                    let extra: &[&str] = if i == 0 {
                        &["--no-recovery", "--verify=skip"]
                    } else {
                        &["--no-recovery"]
                    };
                    hs.restore(&dir_s, extra)
                }
                2 => {
                    // pgBackRest wants an existing directory it owns, mode 0700.
                    std::fs::create_dir_all(&dir)?;
                    {
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
                    }
                    hs_testkit::chown_to_postgres(&dir)?;
                    pgbackrest(&[&pg1, "--type=none", "--process-max=2", "restore"])
                }
                _ => {
                    std::fs::create_dir_all(&dir)?;
                    let mut tar = Command::new("tar");
                    tar.arg("-xf").arg(&base_tar).arg("-C").arg(&dir);
                    tar
                }
            };
            let (wall, with_sync, rss) = measure(&cmd, &mut caches_dropped, &work.join("rss"))?;
            row.walls.push(wall);
            row.syncs.push(with_sync);
            row.rss.push(rss);
            row.bytes = dir_bytes(&dir)?;
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }

    report(scale, runs, db_bytes, caches_dropped, backup_sizes, &rows);
    Ok(())
}

/// Takes the `pg_basebackup -Ft -X fetch` backup into `pgbb_dir`; returns its `base.tar`.
fn pg_basebackup_tar(pg: &PgCluster, conninfo: &str, pgbb_dir: &Path) -> Result<PathBuf> {
    let mut cmd = pg.client_command("pg_basebackup");
    cmd.arg("-d").arg(conninfo).arg("-D").arg(pgbb_dir).args([
        "-Ft",
        "-X",
        "fetch",
        "--checkpoint=fast",
    ]);
    sh(&mut cmd)?;
    let base_tar = pgbb_dir.join("base.tar");
    if !base_tar.is_file() {
        bail!("pg_basebackup wrote no {}", base_tar.display());
    }
    Ok(base_tar)
}

/// Prints the backup sizes, the per-tool table and the ratios.
fn report(
    scale: u32,
    runs: u32,
    db_bytes: u64,
    caches_dropped: bool,
    backup_sizes: [(&str, u64); 3],
    rows: &[Row],
) {
    println!();
    println!(
        "restore benchmark: pgbench scale {scale}, databases {} ({db_bytes} bytes), {} cores, \
         {runs} rotated rounds (median shown), page cache {}",
        human(db_bytes),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if caches_dropped {
            "dropped before each restore"
        } else {
            "NOT dropped (drop_caches failed; numbers may favour later runs)"
        }
    );
    for (what, bytes) in backup_sizes {
        println!("  source: {what:<30} {:>12}", human(bytes));
    }
    println!(
        "{:<36} {:>9} {:>10} {:>9} {:>9} {:>13} {:>16}",
        "tool", "wall s", "+ sync s", "min s", "max s", "peak RSS MiB", "bytes restored"
    );
    for r in rows {
        let (lo, hi) = util::min_max_secs(&r.walls);
        println!(
            "{:<36} {:>9.2} {:>10.2} {:>9.2} {:>9.2} {:>13} {:>16}",
            r.what,
            median(&r.walls).as_secs_f64(),
            median(&r.syncs).as_secs_f64(),
            lo,
            hi,
            r.rss.iter().max().copied().unwrap_or(0) / 1024,
            r.bytes,
        );
    }
    let ratio = |a: &[Duration], b: &[Duration]| {
        let b = median(b).as_secs_f64();
        if b > 0.0 {
            median(a).as_secs_f64() / b
        } else {
            f64::NAN
        }
    };
    let (ours, ours_v, pgbr, tar) = (&rows[0], &rows[1], &rows[2], &rows[3]);
    let met = |r: f64, goal: f64| if r <= goal { "met" } else { "NOT met" };
    let (skip, default) = (
        ratio(&ours.syncs, &pgbr.syncs),
        ratio(&ours_v.syncs, &pgbr.syncs),
    );
    println!();
    println!(
        "ours (default)/pgBackRest:  {:.2} (+ sync {default:.2}); goal <= 0.70: {}",
        ratio(&ours_v.walls, &pgbr.walls),
        met(default, 0.7)
    );
    println!(
        "ours (no verify)/pgBackRest: {:.2} (+ sync {skip:.2}); goal <= 0.60: {}",
        ratio(&ours.walls, &pgbr.walls),
        met(skip, 0.6)
    );
    println!(
        "ours/tar:                  {:.2} (+ sync {:.2})",
        ratio(&ours.walls, &tar.walls),
        ratio(&ours.syncs, &tar.syncs)
    );
    println!(
        "notes: restores are without WAL replay (pg_hardstorage --no-recovery, pgBackRest \
         --type=none); the pg_basebackup tar includes the backup's WAL (-X fetch); pgBackRest's \
         backup has none (archive-copy off). \"+ sync\" adds a `sync` after the tool exits."
    );
}
