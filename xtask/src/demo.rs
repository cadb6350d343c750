//! `cargo xtask demo`: the README's first command, end to end on this machine.
//!
//! Builds the release `pg_hardstorage`, starts a throwaway PostgreSQL cluster from the local
//! binaries (hs-testkit), writes a demo row, then runs `repo init`, `wal preflight`,
//! `wal stream` (in the background), `backup`, writes a second row after the backup,
//! `list`, `wal list` and `restore`, starts the restored data directory, lets it replay the
//! archived WAL through `wal fetch`, and shows both rows. Everything lives in one
//! demo directory (default `<workspace>/.demo`, or `/tmp/pg_hardstorage-demo` when the
//! `postgres` OS user cannot reach the workspace), including the keyring, so the demo never
//! touches `~/.config`.

use crate::util::{self, run_capture, sh};
use anyhow::{bail, Context, Result};
use hs_testkit::{PgCluster, PgOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

const DEPLOYMENT: &str = "demo";

/// `--dir PATH`, the only argument.
fn parse_args(args: &[String]) -> Result<Option<PathBuf>> {
    let mut dir: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => dir = Some(PathBuf::from(it.next().context("--dir needs a path")?)),
            other => bail!("cargo xtask demo: unknown argument {other:?}"),
        }
    }
    Ok(dir)
}

pub fn run(args: &[String]) -> Result<()> {
    let dir = parse_args(args)?;
    util::ensure_postgres()?;
    eprintln!(
        "==> building pg_hardstorage (cargo build --release); cargo shows what it compiles.\n    \
         The first build compiles about 300 crates: about 6 minutes on 2 cores (README);\n    \
         later runs rebuild only what changed."
    );
    let bin = util::build_release_binary()?;
    let dir = match dir {
        Some(d) => d,
        None => default_dir()?,
    };
    let dir = fresh_dir(&dir)?;

    let keyring = dir.join("keyring");
    let repo_url = format!("file://{}", dir.join("repo").display());
    let restored = dir.join("restored");
    let hs = |args: &[&str]| {
        let mut cmd = Command::new(&bin);
        // In the demo directory, where `init` writes ./pg_hardstorage.yaml and later
        // commands find it.
        cmd.current_dir(&dir)
            .args(args)
            .arg("--keyring")
            .arg(&keyring);
        cmd
    };

    eprintln!("\n==> a throwaway PostgreSQL cluster (hs-testkit)");
    let pg = PgCluster::start(PgOptions::default())?;
    eprintln!(
        "cluster on 127.0.0.1:{}, data in {}",
        pg.port(),
        pg.data_dir().display()
    );
    let note = format!(
        "hello from the pg_hardstorage demo, pid {}",
        std::process::id()
    );
    pg.psql(&format!(
        "CREATE TABLE demo(id int PRIMARY KEY, note text, at timestamptz DEFAULT now()); \
         INSERT INTO demo(id, note) VALUES (1, '{note}');"
    ))?;

    eprintln!("\n==> repository");
    sh(&mut hs(&["repo", "init", &repo_url]))?;

    let conninfo = pg.replication_conninfo();
    let mut streamer = start_streaming(&hs, &pg, &conninfo, &repo_url)?;

    eprintln!(
        "\n==> init: checks the server, writes ./pg_hardstorage.yaml, takes the first backup"
    );
    sh(&mut hs(&[
        "init",
        "--pg-connection",
        &conninfo,
        "--repo",
        &repo_url,
        "--deployment",
        DEPLOYMENT,
        "--yes",
    ]))?;

    eprintln!("\n==> backup (repository and connection now come from pg_hardstorage.yaml)");
    sh(&mut hs(&["backup", DEPLOYMENT]))?;
    sh(&mut hs(&["doctor", DEPLOYMENT]))?;

    eprintln!("\n==> a second row, written after the backup: only the WAL stream has it");
    let note2 = format!("{note}, committed after the backup");
    pg.psql(&format!("INSERT INTO demo(id, note) VALUES (2, '{note2}')"))?;
    let lsn = pg.psql("SELECT pg_current_wal_lsn()")?;
    pg.psql("SELECT pg_switch_wal()")?;
    wait_durable(&pg, &lsn)?;
    eprintln!("$ kill -TERM <wal stream>   # stops cleanly after committing what it has");
    streamer.stop()?;

    eprintln!("\n==> list");
    sh(&mut hs(&["list", DEPLOYMENT]))?;
    sh(&mut hs(&["wal", "list", DEPLOYMENT]))?;
    sh(&mut hs(&["status", DEPLOYMENT]))?;

    eprintln!("\n==> restore");
    let restored_s = restored.display().to_string();
    let mut restore = vec![
        "restore",
        DEPLOYMENT,
        "latest",
        "--target",
        &restored_s,
        "--repo",
        &repo_url,
    ];
    if hs_testkit::is_root() {
        // The restored server runs `restore_command` as the postgres OS user: it must read
        // the repository and the keyring, and restore hands it the directory and checks
        // the command as that user (as README step 5 does as root).
        for p in [dir.join("repo"), keyring.clone()] {
            hs_testkit::chown_to_postgres(&p)?;
        }
        restore.extend(["--restore-user", "postgres"]);
    }
    sh(&mut hs(&restore))?;

    drop(pg); // the source cluster goes away: what follows uses only the restored copy

    check_restored(&restored, &note, &note2)?;
    eprintln!(
        "\nxtask demo: done. Repository {repo_url}, restored data in {}, keyring {}",
        restored.display(),
        keyring.display()
    );
    Ok(())
}

/// Runs `wal preflight`, starts `wal stream` in the background and waits for its slot.
fn start_streaming(
    hs: &impl Fn(&[&str]) -> Command,
    pg: &PgCluster,
    conninfo: &str,
    repo_url: &str,
) -> Result<Streamer> {
    eprintln!("\n==> WAL streaming (a background process; under systemd in production)");
    sh(&mut hs(&[
        "wal",
        "preflight",
        DEPLOYMENT,
        "--pg-connection",
        conninfo,
    ]))?;
    let mut stream_cmd = hs(&[
        "wal",
        "stream",
        DEPLOYMENT,
        "--pg-connection",
        conninfo,
        "--repo",
        repo_url,
    ]);
    eprintln!("$ {} &", util::show(&stream_cmd));
    let streamer = Streamer(Some(
        stream_cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting wal stream")?,
    ));
    wait_for_slot(pg)?;
    Ok(streamer)
}

/// Empties (or creates) the demo directory; returns its canonical path, mode 0755.
fn fresh_dir(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let dir = std::fs::canonicalize(dir)?;
    set_mode(&dir, 0o755)?;
    eprintln!("xtask demo: working in {}", dir.display());
    Ok(dir)
}

/// Starts the restored data directory, waits for promotion and checks that both demo rows are there.
fn check_restored(restored: &Path, note: &str, note2: &str) -> Result<()> {
    eprintln!("\n==> start the restored data directory");
    let restored_pg = PgCluster::start_existing(restored)
        .map_err(|e| anyhow::anyhow!("starting the restored cluster failed: {e}"))?;
    restored_pg
        .wait_for_promotion(std::time::Duration::from_secs(120))
        .map_err(|e| anyhow::anyhow!("recovery of the restored cluster failed: {e}"))?;
    let mut q = restored_pg.client_command("psql");
    q.args(["-X", "-c", "SELECT id, note, at FROM demo ORDER BY id"]);
    let out = run_capture(&mut q)?;
    print!("{out}");
    if !out.contains(note) || !out.contains(note2) {
        bail!(
            "the restored cluster does not have both demo rows\n--- server log ---\n{}",
            restored_pg.log_tail(40)
        );
    }
    drop(restored_pg);
    Ok(())
}

fn default_dir() -> Result<PathBuf> {
    let d = util::workspace_root().join(".demo");
    let parent = util::workspace_root();
    if util::postgres_can_reach(&parent) {
        Ok(d)
    } else {
        Ok(PathBuf::from("/tmp/pg_hardstorage-demo"))
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The background `wal stream`; killed on drop so a failing demo leaves nothing running.
struct Streamer(Option<std::process::Child>);

impl Streamer {
    /// SIGTERM, then wait for a clean exit.
    fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.0.take() else {
            return Ok(());
        };
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("could not signal wal stream");
        }
        let exit = child.wait()?;
        if !exit.success() {
            bail!("wal stream exited with {exit}");
        }
        Ok(())
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const SLOT_LSN: &str = "SELECT coalesce(restart_lsn::text, '') FROM pg_replication_slots \
                        WHERE slot_name = 'pg_hardstorage_demo' AND active";

fn wait_for_slot(pg: &PgCluster) -> Result<()> {
    for _ in 0..150 {
        if !pg.psql(SLOT_LSN)?.is_empty() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    bail!("wal stream did not start streaming within 30 s")
}

fn parse_lsn(s: &str) -> Option<hs_pg::Lsn> {
    s.trim().parse().ok()
}

/// Waits until the slot says WAL up to `lsn` is durable in the repository.
fn wait_durable(pg: &PgCluster, lsn: &str) -> Result<()> {
    let want = parse_lsn(lsn).context("pg_current_wal_lsn")?;
    for _ in 0..300 {
        if parse_lsn(&pg.psql(SLOT_LSN)?).is_some_and(|l| l >= want) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    bail!("wal stream did not archive up to {lsn} within 60 s")
}
