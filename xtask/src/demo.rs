//! `cargo xtask demo`: the README's first command, end to end on this machine.
//!
//! Builds the release `pg_hardstorage`, starts a throwaway PostgreSQL cluster from the local
//! binaries (hs-testkit), writes a demo row, then runs `repo init`, `backup`, `list` and
//! `restore`, starts the restored data directory and shows the row. Everything lives in one
//! demo directory (default `<workspace>/.demo`, or `/tmp/pg_hardstorage-demo` when the
//! `postgres` OS user cannot reach the workspace), including the keyring, so the demo never
//! touches `~/.config`.

use crate::util::{self, run_capture, sh};
use anyhow::{bail, Context, Result};
use hs_testkit::{PgCluster, PgOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

const DEPLOYMENT: &str = "demo";

pub fn run(args: &[String]) -> Result<()> {
    let mut dir: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => dir = Some(PathBuf::from(it.next().context("--dir needs a path")?)),
            other => bail!("cargo xtask demo: unknown argument {other:?}"),
        }
    }
    util::ensure_postgres()?;
    let bin = util::build_release_binary()?;
    let dir = match dir {
        Some(d) => d,
        None => default_dir()?,
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let dir = std::fs::canonicalize(&dir)?;
    set_mode(&dir, 0o755)?;
    eprintln!("xtask demo: working in {}", dir.display());

    let keyring = dir.join("keyring");
    let repo_url = format!("file://{}", dir.join("repo").display());
    let restored = dir.join("restored");
    let hs = |args: &[&str]| {
        let mut cmd = Command::new(&bin);
        cmd.args(args).arg("--keyring").arg(&keyring);
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

    // ------------------------------------------------------------------------------------
    // WAL STREAMING GOES HERE. `pg_hardstorage wal stream demo --pg-connection .. --repo ..`
    // does not exist yet. When it does, start it here as a child process, wait until it
    // reports its slot is streaming, and stop it (SIGTERM) after the backup below. Until
    // then the backup must carry the WAL it needs itself.
    // ------------------------------------------------------------------------------------

    eprintln!("\n==> backup");
    let conninfo = pg.replication_conninfo();
    sh(&mut hs(&[
        "backup",
        DEPLOYMENT,
        "--pg-connection",
        &conninfo,
        "--repo",
        &repo_url,
    ]))?;

    eprintln!("\n==> list");
    sh(&mut hs(&["list", DEPLOYMENT, "--repo", &repo_url]))?;

    eprintln!("\n==> restore");
    let restored_s = restored.display().to_string();
    sh(&mut hs(&[
        "restore",
        DEPLOYMENT,
        "latest",
        "--target",
        &restored_s,
        "--repo",
        &repo_url,
    ]))?;

    drop(pg); // the source cluster goes away: what follows uses only the restored copy

    eprintln!("\n==> start the restored data directory");
    let restored_pg = PgCluster::start_existing(&restored)
        .map_err(|e| anyhow::anyhow!("starting the restored cluster failed: {e}"))?;
    let mut q = restored_pg.client_command("psql");
    q.args(["-X", "-c", "SELECT id, note, at FROM demo"]);
    let out = run_capture(&mut q)?;
    print!("{out}");
    if !out.contains(&note) {
        bail!(
            "the restored cluster does not have the demo row\n--- server log ---\n{}",
            restored_pg.log_tail(40)
        );
    }
    drop(restored_pg);
    eprintln!(
        "\nxtask demo: done. Repository {repo_url}, restored data in {}, keyring {}",
        restored.display(),
        keyring.display()
    );
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
