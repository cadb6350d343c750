//! `cargo xtask bench`: benchmark harnesses that compare pg_hardstorage with other tools on
//! the same cluster in the same run. Not timed unit tests: numbers come from real tools.
//!
//! `bench backup [--scale N] [--keep] [--others-only]`: a pgbench database of scale N
//! (default 100, about 1.5 GB), then wall time and output bytes of
//! (a) `pg_basebackup -Ft -X none --checkpoint=fast` to local disk,
//! (b) a pgBackRest full backup (zst, process-max=2, start-fast),
//! (c) a first `pg_hardstorage backup` into a fresh file:// repository,
//! (d) a second `pg_hardstorage backup` of the unchanged cluster (bytes added).
//! pg_basebackup and pg_hardstorage run as the calling user over TCP as `hs_repl`; pgBackRest
//! must read the data directory, so it runs as the `postgres` OS user over the unix socket.
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
  backup [--scale N] [--keep] [--others-only]
                                pg_basebackup vs pgBackRest vs pg_hardstorage on pgbench -i -s N
                                (default N = 100, about 1.5 GB); wall time and bytes written
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

struct Row {
    what: &'static str,
    wall: Duration,
    bytes: u64,
}

fn backup(args: &[String]) -> Result<()> {
    let mut scale: u32 = 100;
    let mut keep = false;
    let mut others_only = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--scale" => scale = util::flag_number(&mut it, "--scale")?,
            "--keep" => keep = true,
            "--others-only" => others_only = true,
            other => bail!("cargo xtask bench backup: unknown argument {other:?}"),
        }
    }
    if scale == 0 {
        bail!("--scale must be at least 1");
    }
    util::ensure_postgres()?;
    if !util::succeeds("pgbackrest", &["version"]) {
        util::apt_install(&["pgbackrest"])?;
    }
    let bin = if others_only {
        None
    } else {
        Some(util::build_release_binary()?)
    };

    // One scratch directory for every tool's output, reachable by the postgres user
    // (pgBackRest writes its repository as postgres).
    with_scratch("xtask bench", keep, |work| {
        backup_in(work, bin.as_deref(), scale)
    })
}

fn backup_in(work: &Path, bin: Option<&Path>, scale: u32) -> Result<()> {
    let (pg, pgbr_conf) = pgbackrest_cluster(work)?;
    let pgbr_dir = work.join("pgbackrest");
    let pgbackrest = |args: &[&str]| pgbackrest_cmd(&pgbr_conf, args);

    let t = Instant::now();
    pgbench_init(&pg, scale)?;
    let db_bytes = database_bytes(&pg)?;
    eprintln!(
        "pgbench -i took {:.1}s; databases hold {}",
        t.elapsed().as_secs_f64(),
        human(db_bytes)
    );

    let mut rows = Vec::new();

    eprintln!("\n==> (a) pg_basebackup -Ft -X none --checkpoint=fast");
    let pgbb_dir = work.join("pg_basebackup");
    let mut cmd = pg.client_command("pg_basebackup");
    cmd.arg("-d")
        .arg(pg.replication_conninfo())
        .arg("-D")
        .arg(&pgbb_dir)
        .args(["-Ft", "-X", "none", "--checkpoint=fast"]);
    let wall = timed(&mut cmd)?;
    rows.push(Row {
        what: "pg_basebackup -Ft -X none",
        wall,
        bytes: dir_bytes(&pgbb_dir)?,
    });

    eprintln!("\n==> (b) pgBackRest full backup (zst, process-max=2)");
    let wall = timed(&mut pgbackrest(&["--type=full", "backup"]))?;
    rows.push(Row {
        what: "pgBackRest full (zst, 2 procs)",
        wall,
        bytes: dir_bytes(&pgbr_dir.join("repo").join("backup"))?,
    });
    sh(&mut pgbackrest(&["info"]))?;

    if let Some(bin) = bin {
        let hs = Hs::new(bin, work);
        let conninfo = pg.replication_conninfo();
        for (i, (heading, what)) in [
            (
                "(c) pg_hardstorage backup (first, into a fresh repository)",
                "pg_hardstorage backup (1st)",
            ),
            (
                "(d) pg_hardstorage backup (2nd, cluster unchanged)",
                "pg_hardstorage backup (2nd)",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            eprintln!("\n==> {heading}");
            if i == 0 {
                hs.init_repo()?;
            }
            let before = dir_bytes(&hs.dir)?;
            let wall = timed(&mut hs.backup(&conninfo))?;
            let after = dir_bytes(&hs.dir)?;
            rows.push(Row {
                what,
                wall,
                bytes: after - before.min(after),
            });
        }
        sh(&mut hs.cmd(&["list", "bench", "--repo", &hs.url]))?;
    }
    backup_report(scale, db_bytes, &rows);
    Ok(())
}

/// Prints the backup table and the ratios between the tools.
fn backup_report(scale: u32, db_bytes: u64, rows: &[Row]) {
    println!();
    println!(
        "backup benchmark: pgbench scale {scale}, databases {} ({} bytes), 2 cores",
        human(db_bytes),
        db_bytes
    );
    println!(
        "{:<34} {:>10} {:>16} {:>12}",
        "tool", "wall s", "bytes written", "size"
    );
    for r in rows {
        println!(
            "{:<34} {:>10.2} {:>16} {:>12}",
            r.what,
            r.wall.as_secs_f64(),
            r.bytes,
            human(r.bytes)
        );
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!();
    println!(
        "pgBackRest/pg_basebackup: wall {:.2}, bytes {:.2}",
        ratio(rows[1].wall.as_secs_f64(), rows[0].wall.as_secs_f64()),
        ratio(rows[1].bytes as f64, rows[0].bytes as f64)
    );
    let Some(ours) = rows.get(2) else {
        println!("(pg_hardstorage not measured: --others-only)");
        return;
    };
    println!(
        "ours/pg_basebackup wall:  {:.2}",
        ratio(ours.wall.as_secs_f64(), rows[0].wall.as_secs_f64())
    );
    println!(
        "ours/pgBackRest wall:     {:.2}",
        ratio(ours.wall.as_secs_f64(), rows[1].wall.as_secs_f64())
    );
    println!(
        "ours/pgBackRest bytes:    {:.2}",
        ratio(ours.bytes as f64, rows[1].bytes as f64)
    );
    println!(
        "2nd backup added:         {} ({:.2}% of the 1st)",
        human(rows[3].bytes),
        100.0 * ratio(rows[3].bytes as f64, ours.bytes as f64)
    );
    println!(
        "notes: pg_basebackup output is uncompressed tar without WAL; pgBackRest bytes are its \
         backup/ directory (WAL goes to archive/ separately; no encryption); pg_hardstorage bytes are what the \
         repository grew by, including any WAL the backup stores itself."
    );
}

/// Run `cmd` (printed), returning its wall time.
fn timed(cmd: &mut Command) -> Result<Duration> {
    let t = Instant::now();
    sh(cmd)?;
    let d = t.elapsed();
    eprintln!("    wall {:.2}s", d.as_secs_f64());
    Ok(d)
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
/// file:// repository `<work>/hs-repo`.
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
        let dir = work.join("hs-repo");
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
