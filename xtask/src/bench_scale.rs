//! `cargo xtask bench scale [--scale N] [--bin PATH] [--baseline PATH] [--keep]`: peak memory (RSS) and wall
//! time of every pg_hardstorage command on one pgbench cluster of scale N (default 100, about
//! 1.5 GB), with pg_basebackup and pgBackRest measured in the same run for reference
//! (issue 15: memory flat in database size).
//!
//! Every measured command runs under `/usr/bin/time -f %M` (GNU time), which reports the peak
//! resident set size in KiB of the largest single process among the command and the children
//! it waited for; its stdout and stderr go to `<scratch>/logs/<step>.log`. In order:
//!
//! 1. `pg_basebackup -Ft -X none --checkpoint=fast` to local disk (reference; the copy is
//!    deleted right after, only its wall time and RSS are kept);
//! 2. a pgBackRest full backup (zst, `--process-max=2`, start-fast; as the `postgres` OS user);
//! 3. `pg_hardstorage backup` into a fresh file:// repository, then again with the cluster
//!    unchanged;
//! 4. `wal stream` while `pgbench -c 4 -j 2 -T 30` runs, then SIGTERM to it: its wall time is
//!    how long it ran, its RSS the peak over the stream (it also leaves WAL in the repository
//!    and a slot on the server for the commands below to see);
//! 5. `pgbackrest restore --type=none --process-max=2` and
//!    `pg_hardstorage restore bench latest --no-recovery --verify=skip` into fresh directories
//!    (deleted after each), both without WAL replay or a separate verification pass; both
//!    restore a backup taken before the pgbench load;
//! 6. `verify bench latest`, `repo verify`, `repo gc` (dry run), `repo gc --apply --grace 0s`,
//!    `rotate --policy count --keep 1` (plan only), `list`, `status`, `doctor`.
//!
//! The table gives wall seconds, peak RSS in MiB, and the wall ratio to pg_basebackup (backup
//! rows) and to pgBackRest's backup or restore (backup and restore rows). A command that fails
//! is shown as FAILED with its log's tail; the harness exits non-zero after the table. The
//! page cache is not dropped (restores read a warm repository); `sync` runs before each
//! command so that one command's writeback does not land in the next one's time.
//!
//! Before it starts, the harness checks that the scratch file system has room for the cluster
//! plus one full copy and about 2 GiB more (scale 1000: about 33 GiB), and stops if not; after
//! `pgbench -i` it has the server drop its recycled WAL segments (up to 4 GB).
//!
//! Needs GNU time (`apt-get install -y time`) and pgBackRest (`apt-get install -y pgbackrest`);
//! the harness says so and stops when either is missing. `--bin` uses a prebuilt
//! pg_hardstorage instead of building the release one; `--baseline` also measures another
//! pg_hardstorage binary (an older build, say) on the same cluster: its fresh backup right
//! after ours, into its own repository (deleted after its restore), and its restore right
//! after ours, so that a change's before/after wall times come from one run; `--keep` keeps
//! the scratch directory
//! (both repositories and every command's log; not the cluster, the pg_basebackup copy or the
//! restored directories).

use crate::bench::{
    database_bytes, human, pgbackrest_cluster, pgbackrest_cmd, pgbench_init, with_scratch, Hs,
};
use crate::util::{self, sh, show};
use anyhow::{bail, Context, Result};
use hs_testkit::PgCluster;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long pgbench writes while `wal stream` is measured.
const STREAM_LOAD_SECS: u32 = 30;
/// The `application_name` of the measured `wal stream`, to find it in `pg_stat_replication`.
const STREAM_APP: &str = "hs_bench_scale";
/// The memory bound for every pg_hardstorage command.
const RSS_TARGET_MIB: f64 = 256.0;

pub fn run(args: &[String]) -> Result<()> {
    let mut scale: u32 = 100;
    let mut bin: Option<PathBuf> = None;
    let mut baseline: Option<PathBuf> = None;
    let mut keep = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--scale" => scale = util::flag_number(&mut it, "--scale")?,
            "--bin" => bin = Some(PathBuf::from(it.next().context("--bin needs a path")?)),
            "--baseline" => {
                let b = PathBuf::from(it.next().context("--baseline needs a path")?);
                if !b.is_file() {
                    bail!("--baseline {}: no such file", b.display());
                }
                baseline = Some(b);
            }
            "--keep" => keep = true,
            other => bail!("cargo xtask bench scale: unknown argument {other:?}"),
        }
    }
    if scale == 0 {
        bail!("--scale must be at least 1");
    }
    util::ensure_postgres()?;
    check_tools()?;
    let bin = match bin {
        Some(b) if b.is_file() => b,
        Some(b) => bail!("--bin {}: no such file", b.display()),
        None => util::build_release_binary()?,
    };
    with_scratch("xtask bench scale", keep, |work| {
        // The baseline's repository: pgbench data compresses about 16:1 (887 MB at
        // scale 1000); an eighth of the database leaves room to spare.
        let baseline_repo = baseline.as_ref().map_or(0, |_| disk_needed(scale) / 16);
        let (need, free) = (disk_needed(scale) + baseline_repo, util::disk_free(work)?);
        if free < need {
            bail!(
                "scale {scale} needs about {} of free disk at its peak (the cluster plus one full \
                 copy, WAL and repositories) and {} has {}: free some space or pass a smaller \
                 --scale",
                human(need),
                work.display(),
                human(free)
            );
        }
        run_in(work, &bin, baseline.as_deref(), scale)
    })
}

/// GNU time and pgBackRest must be installed; say how to install whichever is missing.
fn check_tools() -> Result<()> {
    if !Path::new(util::GNU_TIME).is_file() {
        bail!(
            "{} (GNU time) is missing: install it with `sudo apt-get install -y time`",
            util::GNU_TIME
        );
    }
    if !util::succeeds("pgbackrest", &["version"]) {
        bail!(
            "pgBackRest is missing (the reference this benchmark compares with): install it with \
             `sudo apt-get install -y pgbackrest`"
        );
    }
    Ok(())
}

/// Which reference a row's wall time is compared with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// pg_basebackup itself.
    BaseBackup,
    /// pgBackRest's full backup: compared with pg_basebackup.
    PgbrBackup,
    /// pgBackRest's restore.
    PgbrRestore,
    /// A pg_hardstorage backup: compared with pg_basebackup and pgBackRest's backup.
    Backup,
    /// A pg_hardstorage restore: compared with pgBackRest's restore.
    Restore,
    /// `--baseline`'s backup: compared with the references and with ours.
    BaselineBackup,
    /// `--baseline`'s restore: compared with pgBackRest's and with ours.
    BaselineRestore,
    /// Everything else: no reference.
    Other,
}

/// One measured command.
struct Row {
    what: String,
    kind: Kind,
    wall: Duration,
    /// Peak RSS in KiB, when GNU time reported one.
    rss_kib: Option<u64>,
    /// Why the command counts as failed, if it does.
    failed: Option<String>,
}

impl Row {
    fn rss_mib(&self) -> Option<f64> {
        self.rss_kib.map(|k| k as f64 / 1024.0)
    }
}

/// The peak RSS (KiB) in what GNU time wrote with `-f %M`: its last line that is a number
/// (a line like "Command exited with non-zero status 9" may come first).
fn parse_rss_kib(text: &str) -> Option<u64> {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .and_then(|l| l.parse().ok())
}

/// The last `n` lines of the file at `path` (empty if unreadable).
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The measuring state: where logs go and the rows so far.
struct Bench {
    logs: PathBuf,
    rows: Vec<Row>,
}

impl Bench {
    fn new(work: &Path) -> Result<Bench> {
        let logs = work.join("logs");
        std::fs::create_dir_all(&logs)?;
        Ok(Bench {
            logs,
            rows: Vec::new(),
        })
    }

    /// `<logs>/<NN>-<slug>.log` and `.rss` for the next row.
    fn files(&self, what: &str) -> (PathBuf, PathBuf) {
        let slug: String = what
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let stem = format!("{:02}-{}", self.rows.len() + 1, slug.trim_matches('-'));
        (
            self.logs.join(format!("{stem}.log")),
            self.logs.join(format!("{stem}.rss")),
        )
    }

    /// Runs `cmd` under GNU time (output to its log) and records a row; true if it succeeded.
    fn measure(&mut self, what: &str, kind: Kind, cmd: &Command) -> Result<bool> {
        eprintln!("\n==> {what}");
        let (log, rss_file) = self.files(what);
        let mut timed = util::under_time(cmd, "%M", &rss_file);
        let out = std::fs::File::create(&log)?;
        timed
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let _ = Command::new("sync").status();
        eprintln!("$ {}", show(cmd));
        let t = Instant::now();
        let status = timed
            .status()
            .with_context(|| format!("could not start {}", show(cmd)))?;
        let wall = t.elapsed();
        let failed = (!status.success()).then(|| format!("exit {status}"));
        Ok(self.record(what, kind, wall, &rss_file, &log, failed))
    }

    /// Adds the row for a finished command; prints its figures (or its log's tail on failure).
    fn record(
        &mut self,
        what: &str,
        kind: Kind,
        wall: Duration,
        rss_file: &Path,
        log: &Path,
        failed: Option<String>,
    ) -> bool {
        let rss_kib = std::fs::read_to_string(rss_file)
            .ok()
            .and_then(|t| parse_rss_kib(&t));
        let row = Row {
            what: what.to_string(),
            kind,
            wall,
            rss_kib,
            failed,
        };
        match &row.failed {
            None => eprintln!(
                "    wall {:.2}s, peak RSS {}",
                wall.as_secs_f64(),
                row.rss_mib()
                    .map_or("?".to_string(), |m| format!("{m:.1} MiB"))
            ),
            Some(why) => eprintln!(
                "    FAILED ({why}) after {:.2}s; {}:\n{}",
                wall.as_secs_f64(),
                log.display(),
                tail(log, 20)
            ),
        }
        let ok = row.failed.is_none();
        self.rows.push(row);
        ok
    }
}

fn run_in(work: &Path, bin: &Path, baseline: Option<&Path>, scale: u32) -> Result<()> {
    let (pg, pgbr_conf) = pgbackrest_cluster(work)?;
    let pgbackrest = |args: &[&str]| pgbackrest_cmd(&pgbr_conf, args);
    pgbench_init(&pg, scale)?;
    let db_bytes = database_bytes(&pg)?;
    shrink_pg_wal(&pg)?;
    let mut b = Bench::new(work)?;

    // References: pg_basebackup (deleted right after; only its time matters) and pgBackRest.
    let conninfo = pg.replication_conninfo();
    let pgbb_dir = work.join("pg_basebackup");
    let mut pgbb = pg.client_command("pg_basebackup");
    pgbb.arg("-d")
        .arg(&conninfo)
        .arg("-D")
        .arg(&pgbb_dir)
        .args(["-Ft", "-X", "none", "--checkpoint=fast"]);
    b.measure("pg_basebackup -Ft -X none", Kind::BaseBackup, &pgbb)?;
    remove_dir(&pgbb_dir)?;
    b.measure(
        "pgBackRest full backup (zst, 2 procs)",
        Kind::PgbrBackup,
        &pgbackrest(&["--type=full", "--process-max=2", "backup"]),
    )?;

    let hs = Hs::new(bin, work);
    // `repo init` prints the new keyring's warning on stdout, which holds only the table.
    let init_log = std::fs::File::create(b.logs.join("repo-init.log"))?;
    sh(hs
        .cmd(&["repo", "init", &hs.url])
        .stdout(init_log.try_clone()?)
        .stderr(init_log))?;
    b.measure("backup (fresh repo)", Kind::Backup, &hs.backup(&conninfo))?;
    let base = match baseline {
        Some(bin) => Some(baseline_backup(&mut b, bin, work, &conninfo)?),
        None => None,
    };
    b.measure("backup (unchanged)", Kind::Backup, &hs.backup(&conninfo))?;
    // The stream next, so that the repository holds WAL (and the server a slot) for what
    // follows: verify, gc, rotate, list, status and doctor all read the WAL too.
    let wal_bytes = measure_wal_stream(&mut b, &pg, &hs, &conninfo, work)?;

    // Restores into a fresh directory each, deleted after.
    let target = work.join("restore-target");
    let pgbr_target = prepare_pgbackrest_target(&target)?;
    b.measure(
        "pgBackRest restore (2 procs)",
        Kind::PgbrRestore,
        &pgbackrest(&[&pgbr_target, "--type=none", "--process-max=2", "restore"]),
    )?;
    remove_dir(&target)?;
    let target_s = target.display().to_string();
    b.measure(
        "restore latest (--no-recovery --verify=skip)",
        Kind::Restore,
        &hs.restore(&target_s, &["--no-recovery", "--verify=skip"]),
    )?;
    remove_dir(&target)?;
    if let Some(base) = &base {
        b.measure(
            "baseline: restore latest (same options)",
            Kind::BaselineRestore,
            &base.restore(&target_s, &["--no-recovery", "--verify=skip"]),
        )?;
        remove_dir(&target)?;
        remove_dir(&base.dir)?;
    }

    let repo = hs.url.as_str();
    let with_repo = |args: &[&str]| {
        let mut v = args.to_vec();
        v.extend(["--repo", repo]);
        hs.cmd(&v)
    };
    let with_pg = |args: &[&str]| {
        let mut v = args.to_vec();
        v.extend(["--pg-connection", &conninfo, "--repo", repo]);
        hs.cmd(&v)
    };
    let steps: [(&str, Command); 8] = [
        ("verify latest", with_repo(&["verify", "bench", "latest"])),
        ("repo verify", with_repo(&["repo", "verify"])),
        ("repo gc (dry run)", with_repo(&["repo", "gc"])),
        (
            "repo gc --apply --grace 0s",
            with_repo(&["repo", "gc", "--apply", "--grace", "0s"]),
        ),
        (
            "rotate --policy count --keep 1 (plan)",
            with_repo(&["rotate", "bench", "--policy", "count", "--keep", "1"]),
        ),
        ("list", with_repo(&["list", "bench"])),
        ("status", with_pg(&["status", "bench"])),
        ("doctor", with_pg(&["doctor", "bench"])),
    ];
    for (what, cmd) in &steps {
        b.measure(what, Kind::Other, cmd)?;
    }

    report(scale, db_bytes, wal_bytes, &b.rows)
}

/// `--baseline`: the other binary's fresh backup of the cluster into its own repository.
fn baseline_backup(b: &mut Bench, bin: &Path, work: &Path, conninfo: &str) -> Result<Hs> {
    let dir = work.join("baseline");
    std::fs::create_dir_all(&dir)?;
    let base = Hs::new(bin, &dir);
    let init_log = std::fs::File::create(b.logs.join("baseline-repo-init.log"))?;
    sh(base
        .cmd(&["repo", "init", &base.url])
        .stdout(init_log.try_clone()?)
        .stderr(init_log))?;
    b.measure(
        "baseline: backup (fresh repo)",
        Kind::BaselineBackup,
        &base.backup(conninfo),
    )?;
    Ok(base)
}

/// Bytes of disk the run needs at its peak for a pgbench database of `scale`: the cluster,
/// plus one full copy (pg_basebackup's or a restore), plus 2 GiB for `pg_wal` (see
/// [`shrink_pg_wal`]), the repositories and pgBackRest's archive.
fn disk_needed(scale: u32) -> u64 {
    const PGBENCH_BYTES_PER_SCALE: u64 = 16 << 20;
    2 * u64::from(scale) * PGBENCH_BYTES_PER_SCALE + (2 << 30)
}

/// pgbench -i leaves `pg_wal` full of segments recycled for future use, up to max_wal_size
/// (4 GB); a checkpoint removes only segments behind it. With max_wal_size lowered, switch
/// past each of them and checkpoint, then set max_wal_size back: from then on `pg_wal` grows
/// only by what the measured commands write.
fn shrink_pg_wal(pg: &PgCluster) -> Result<()> {
    let wal_dir = pg.data_dir().join("pg_wal");
    let segments = || -> Result<usize> {
        Ok(std::fs::read_dir(&wal_dir)?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .count())
    };
    let before = util::dir_bytes(&wal_dir)?;
    pg.psql("ALTER SYSTEM SET max_wal_size = '128MB'")?;
    pg.psql("SELECT pg_reload_conf()")?;
    // The checkpoint's own record makes the segment non-empty, so each switch moves on.
    for _ in 0..segments()? + 2 {
        pg.psql("CHECKPOINT")?;
        pg.psql("SELECT pg_switch_wal()")?;
    }
    pg.psql("CHECKPOINT")?;
    pg.psql("ALTER SYSTEM RESET max_wal_size")?;
    pg.psql("SELECT pg_reload_conf()")?;
    eprintln!(
        "pg_wal: {} after pgbench -i, {} after dropping recycled segments",
        human(before),
        human(util::dir_bytes(&wal_dir)?)
    );
    Ok(())
}

/// A fresh, empty `target` that pgBackRest (as the postgres user) may restore into; returns
/// its `--pg1-path=` option.
fn prepare_pgbackrest_target(target: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    remove_dir(target)?;
    std::fs::create_dir_all(target)?;
    std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o700))?;
    hs_testkit::chown_to_postgres(target)?;
    Ok(format!("--pg1-path={}", target.display()))
}

fn remove_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

/// Measures `wal stream` while pgbench writes for [`STREAM_LOAD_SECS`]: starts it under GNU
/// time, waits until it streams, runs the load, lets it catch up, then sends SIGTERM to the
/// stream itself (GNU time would die of it without reporting). Returns the WAL bytes the
/// server wrote meanwhile.
fn measure_wal_stream(
    b: &mut Bench,
    pg: &PgCluster,
    hs: &Hs,
    conninfo: &str,
    work: &Path,
) -> Result<u64> {
    let what = format!("wal stream ({STREAM_LOAD_SECS} s of pgbench -c 4 -j 2)");
    eprintln!("\n==> {what}");
    let sep = if conninfo.contains('?') { '&' } else { '?' };
    let conn = format!("{conninfo}{sep}application_name={STREAM_APP}");
    let cmd = hs.cmd(&[
        "wal",
        "stream",
        "bench",
        "--pg-connection",
        &conn,
        "--repo",
        &hs.url,
    ]);
    let (log, rss_file) = b.files(&what);
    let out = std::fs::File::create(&log)?;
    let mut timed = util::under_time(&cmd, "%M", &rss_file);
    timed
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    eprintln!("$ {} &", show(&cmd));
    let t = Instant::now();
    let mut child = KillOnDrop(
        timed
            .spawn()
            .with_context(|| format!("could not start {}", show(&cmd)))?,
    );
    let stream_pid = match wait_streaming(pg, &mut child.0) {
        Ok(pid) => pid,
        Err(e) => {
            let status = stop(&mut child.0, None)?;
            let why = format!("{e:#} ({status})");
            b.record(&what, Kind::Other, t.elapsed(), &rss_file, &log, Some(why));
            return Ok(0);
        }
    };

    let lsn0 = current_lsn(pg)?;
    let mut bench = pg.client_command("pgbench");
    bench.args([
        "-c",
        "4",
        "-j",
        "2",
        "-n",
        "-T",
        &STREAM_LOAD_SECS.to_string(),
    ]);
    let bench_log = std::fs::File::create(work.join("logs").join("pgbench-load.log"))?;
    bench.stdout(bench_log.try_clone()?).stderr(bench_log);
    sh(&mut bench)?;
    let wal_bytes = pg
        .psql(&format!("SELECT pg_current_wal_lsn() - '{lsn0}'::pg_lsn"))?
        .parse::<f64>()
        .map_or(0, |b| b as u64);
    // Let the stream catch up (its partial-segment uploads run every second on file://).
    std::thread::sleep(Duration::from_secs(3));
    let status = stop(&mut child.0, Some(stream_pid))?;
    let wall = t.elapsed();
    // After SIGTERM, a clean exit is 0; GNU time reports a signal death otherwise.
    let failed = (!status.success()).then(|| format!("exit after SIGTERM: {status}"));
    b.record(&what, Kind::Other, wall, &rss_file, &log, failed);
    Ok(wal_bytes)
}

/// A child that is killed and reaped when dropped (if still running).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits (up to 60 s) until the stream shows in `pg_stat_replication`; returns the pid of
/// pg_hardstorage (the child of GNU time `timed`).
fn wait_streaming(pg: &PgCluster, timed: &mut Child) -> Result<u32> {
    let t = Instant::now();
    let query = format!(
        "SELECT count(*) FROM pg_stat_replication WHERE application_name = '{STREAM_APP}' \
         AND state = 'streaming'"
    );
    loop {
        if let Some(status) = timed.try_wait()? {
            bail!("wal stream exited before it streamed ({status})");
        }
        if pg.psql(&query)? != "0" {
            return child_pid(timed.id()).context("no child process under GNU time");
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("wal stream did not show in pg_stat_replication within 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// SIGTERM to `pid` (the measured process; GNU time itself when `None`), then wait up to
/// 60 s for GNU time to exit; SIGKILL after that.
fn stop(timed: &mut Child, pid: Option<u32>) -> Result<ExitStatus> {
    let pid = pid.unwrap_or_else(|| timed.id());
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let t = Instant::now();
    loop {
        if let Some(status) = timed.try_wait()? {
            return Ok(status);
        }
        if t.elapsed() > Duration::from_secs(60) {
            let _ = timed.kill();
            let status = timed.wait()?;
            eprintln!("    did not stop within 60 s of SIGTERM; killed");
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pid of a child process of `parent` (scanning `/proc/*/stat`).
fn child_pid(parent: u32) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after "(comm)": state, ppid, ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            return Some(pid);
        }
    }
    None
}

fn current_lsn(pg: &PgCluster) -> Result<String> {
    Ok(pg.psql("SELECT pg_current_wal_lsn()")?)
}

/// `a / b` formatted to two decimals, or "-" when either is missing.
fn ratio(a: Option<&Row>, b: Option<&Row>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a.failed.is_none() && b.failed.is_none() => {
            let b = b.wall.as_secs_f64();
            if b > 0.0 {
                format!("{:.2}", a.wall.as_secs_f64() / b)
            } else {
                "-".into()
            }
        }
        _ => "-".into(),
    }
}

/// With `--baseline`: our backup and restore wall times as ratios to the baseline's.
fn print_baseline(rows: &[Row]) {
    let find = |k: Kind| rows.iter().find(|r| r.kind == k);
    let (Some(bb), Some(br)) = (find(Kind::BaselineBackup), find(Kind::BaselineRestore)) else {
        return;
    };
    println!();
    println!(
        "against the baseline binary (wall, this build / baseline; below 1 is faster): \
         fresh backup {} ({:.2} s vs {:.2} s), restore {} ({:.2} s vs {:.2} s)",
        ratio(find(Kind::Backup), Some(bb)),
        find(Kind::Backup).map_or(0.0, |r| r.wall.as_secs_f64()),
        bb.wall.as_secs_f64(),
        ratio(find(Kind::Restore), Some(br)),
        find(Kind::Restore).map_or(0.0, |r| r.wall.as_secs_f64()),
        br.wall.as_secs_f64(),
    );
}

/// Prints the table; error if any command failed.
fn report(scale: u32, db_bytes: u64, wal_bytes: u64, rows: &[Row]) -> Result<()> {
    let find = |k: Kind| rows.iter().find(|r| r.kind == k);
    let (pgbb, pgbr_b, pgbr_r) = (
        find(Kind::BaseBackup),
        find(Kind::PgbrBackup),
        find(Kind::PgbrRestore),
    );
    println!();
    println!(
        "scale benchmark: pgbench scale {scale}, databases {} ({db_bytes} bytes), {} cores; \
         file:// repository; wal stream saw {} of WAL",
        human(db_bytes),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        human(wal_bytes),
    );
    println!(
        "{:<48} {:>9} {:>13} {:>16} {:>14}",
        "command", "wall s", "peak RSS MiB", "/pg_basebackup", "/pgBackRest"
    );
    for r in rows {
        let (vs_pgbb, vs_pgbr) = match r.kind {
            Kind::Backup | Kind::BaselineBackup => (ratio(Some(r), pgbb), ratio(Some(r), pgbr_b)),
            Kind::PgbrBackup => (ratio(Some(r), pgbb), "-".into()),
            Kind::Restore | Kind::BaselineRestore => ("-".into(), ratio(Some(r), pgbr_r)),
            _ => ("-".into(), "-".into()),
        };
        let rss = r.rss_mib().map_or("?".to_string(), |m| format!("{m:.1}"));
        let mut line = format!(
            "{:<48} {:>9.2} {:>13} {:>16} {:>14}",
            r.what,
            r.wall.as_secs_f64(),
            rss,
            vs_pgbb,
            vs_pgbr
        );
        if let Some(why) = &r.failed {
            line.push_str(&format!("  FAILED ({why})"));
        }
        println!("{line}");
    }
    print_baseline(rows);
    let ours: Vec<&Row> = rows
        .iter()
        .filter(|r| matches!(r.kind, Kind::Backup | Kind::Restore | Kind::Other))
        .collect();
    if let Some(max) = ours
        .iter()
        .filter_map(|r| r.rss_mib().map(|m| (m, r)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
    {
        println!();
        println!(
            "largest pg_hardstorage peak RSS: {:.1} MiB ({}); issue 15's bound (at scale 1000) \
             <= {RSS_TARGET_MIB} MiB: {}",
            max.0,
            max.1.what,
            if max.0 <= RSS_TARGET_MIB {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    println!(
        "notes: peak RSS is GNU time's %M, the largest single process (pgBackRest's worker \
         processes count one by one); pgBackRest runs as the postgres OS user over the unix \
         socket, the others over TCP; restores skip WAL replay and verification; page cache warm."
    );
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.failed.is_some())
        .map(|r| r.what.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} command(s) failed: {}; rerun with --keep to keep their logs",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_rss_kib;

    #[test]
    fn rss_is_the_last_number_line() {
        assert_eq!(parse_rss_kib("96084\n"), Some(96084));
        assert_eq!(
            parse_rss_kib("Command exited with non-zero status 9\n148176\n"),
            Some(148176)
        );
        assert_eq!(parse_rss_kib("Command terminated by signal 9\n"), None);
        assert_eq!(parse_rss_kib(""), None);
    }
}
