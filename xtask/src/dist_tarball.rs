//! The static tarball `pg_hardstorage_<version>_linux_amd64.tar.gz`, and its check.
//!
//! The tarball holds one directory of the same name with the static binary, LICENSE and
//! README.md (owner 0:0, entries sorted, time stamps from the commit, gzip without a name
//! or time: the same tree gives the same bytes).
//!
//! The check is the operator's first use of a static binary on a machine that has nothing
//! else: it unpacks the tarball, asks `file` whether the binary is statically linked, and
//! runs it with `unshare --mount --root ROOT` in a root that holds only the binary (no
//! `/etc`, no `/lib`, no `/tmp`), against a throwaway PostgreSQL on 127.0.0.1 (hs-testkit):
//! `version`, `repo init`, a backup and a restore (`--verify=skip --no-recovery`: there
//! is no `pg_verifybackup` and no server user in that root). Outside the root, the host's
//! `pg_verifybackup` then checks the restored directory, PostgreSQL starts it, and the row
//! written before the backup must be there.
//!
//! Name resolution (docs/packaging.md): glibc 2.34 and later build the `files` and `dns`
//! NSS modules into libc, so a static binary reads `/etc/hosts` and `/etc/resolv.conf`
//! itself; other modules in `/etc/nsswitch.conf` (`myhostname`, `mdns`, `sss`, ...) would
//! be loaded from the host's shared libraries and are skipped when absent. The check
//! connects by `localhost` in the empty root (no `/etc/hosts`: hs-proto falls back to the
//! loopback addresses, RFC 6761) and by a name listed only in the root's `/etc/hosts`.

use crate::dist::{ensure_static, Release};
use crate::util::{run_capture, sh};
use anyhow::{ensure, Context, Result};
use hs_testkit::{PgCluster, PgOptions};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What goes into the tarball besides the binary.
const DOCS: [&str; 2] = ["LICENSE", "README.md"];
/// A name only the check root's `/etc/hosts` knows.
const HOSTS_NAME: &str = "pg-hardstorage-check.test";

/// `pg_hardstorage_<version>_linux_amd64`, the tarball's stem and top directory.
pub fn stem(version: &str) -> String {
    format!("pg_hardstorage_{version}_linux_amd64")
}

/// Builds `<dist>/pg_hardstorage_<version>_linux_amd64.tar.gz`.
pub fn build(rel: &Release) -> Result<PathBuf> {
    let stem = stem(&rel.version);
    let stage = rel.dist.join("tarball");
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    let top = stage.join(&stem);
    fs::create_dir_all(&top)?;
    fs::set_permissions(&top, fs::Permissions::from_mode(0o755))?;
    fs::copy(&rel.bin, top.join("pg_hardstorage"))?;
    fs::set_permissions(
        top.join("pg_hardstorage"),
        fs::Permissions::from_mode(0o755),
    )?;
    for doc in DOCS {
        fs::copy(rel.root.join(doc), top.join(doc))?;
        fs::set_permissions(top.join(doc), fs::Permissions::from_mode(0o644))?;
    }
    let tar = stage.join(format!("{stem}.tar"));
    sh(Command::new("tar")
        .args([
            "--create",
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--format=gnu",
        ])
        .arg(format!("--mtime=@{}", rel.epoch))
        .arg("--file")
        .arg(&tar)
        .arg("-C")
        .arg(&stage)
        .arg(&stem))?;
    let out = rel.dist.join(format!("{stem}.tar.gz"));
    let gz = fs::File::create(&out)?;
    let status = Command::new("gzip")
        .args(["-9n", "-c"])
        .arg(&tar)
        .stdout(gz)
        .status()
        .context("could not start gzip")?;
    ensure!(status.success(), "gzip failed: {status}");
    fs::remove_file(&tar)?;
    Ok(out)
}

/// Unpacks the tarball and runs its binary in an empty root against a real PostgreSQL.
pub fn check(rel: &Release, tarball: &Path) -> Result<()> {
    let stem = stem(&rel.version);
    let listing = run_capture(Command::new("tar").arg("-tzf").arg(tarball))?;
    let mut names: Vec<&str> = listing.lines().collect();
    names.sort_unstable();
    let want = [
        format!("{stem}/"),
        format!("{stem}/LICENSE"),
        format!("{stem}/README.md"),
        format!("{stem}/pg_hardstorage"),
    ];
    ensure!(names == want, "the tarball holds {names:?}, want {want:?}");

    // Under /tmp: the postgres OS user must reach the restored directory to start it.
    let work = tempfile::Builder::new()
        .prefix("pg_hardstorage-dist-")
        .tempdir()?;
    fs::set_permissions(work.path(), fs::Permissions::from_mode(0o755))?;
    sh(Command::new("tar")
        .arg("-xzf")
        .arg(tarball)
        .arg("-C")
        .arg(work.path()))?;
    let unpacked = work.path().join(&stem).join("pg_hardstorage");
    let kind = ensure_static(&unpacked)?;
    eprintln!("file: {kind}");

    let root = work.path().join("root");
    fs::create_dir(&root)?;
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755))?;
    fs::copy(&unpacked, root.join("pg_hardstorage"))?;
    let in_root = InRoot(root.clone());
    let version = run_capture(&mut in_root.cmd(&["version"]))?;
    ensure!(
        version.trim() == rel.version_line,
        "the tarball's binary says {:?}, the built one {:?}",
        version.trim(),
        rel.version_line
    );
    backup_and_restore(&in_root)
}

/// `unshare --mount --root ROOT /pg_hardstorage ...` with an empty environment.
struct InRoot(PathBuf);

impl InRoot {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--root"])
            .arg(&self.0)
            .arg("/pg_hardstorage")
            .args(args)
            .env_clear();
        cmd
    }

    /// A command that talks to the repository `/repo` with the keyring `/keyring`.
    fn repo_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.cmd(args);
        cmd.args(["--keyring", "/keyring"]);
        cmd
    }
}

/// `repo init`, `backup` and `restore` in the root, then the restored copy outside it.
fn backup_and_restore(in_root: &InRoot) -> Result<()> {
    let pg = PgCluster::start(PgOptions::default())?;
    let marker = format!("written before the backup by pid {}", std::process::id());
    pg.psql(&format!(
        "CREATE TABLE dist_check(note text); INSERT INTO dist_check VALUES ('{marker}')"
    ))?;
    let conn = pg.replication_conninfo();
    sh(&mut in_root.repo_cmd(&["repo", "init", "file:///repo"]))?;
    sh(&mut in_root.repo_cmd(&[
        "backup",
        "dist",
        "--pg-connection",
        &conn,
        "--repo",
        "file:///repo",
    ]))?;
    host_names(in_root, &pg)?;
    sh(&mut in_root.repo_cmd(&[
        "restore",
        "dist",
        "latest",
        "--target",
        "/restored",
        "--repo",
        "file:///repo",
        "--verify=skip",
        "--no-recovery",
    ]))?;
    drop(pg);

    let restored = in_root.0.join("restored");
    sh(Command::new(hs_testkit::pg_bin("pg_verifybackup")).arg(&restored))?;
    let copy = PgCluster::start_existing(&restored)
        .map_err(|e| anyhow::anyhow!("starting the restored copy failed: {e}"))?;
    let got = copy.psql("SELECT note FROM dist_check")?;
    ensure!(
        got == marker,
        "the restored copy holds {got:?}, want {marker:?}"
    );
    eprintln!("restored copy: {got}");
    Ok(())
}

/// `wal preflight` connects by host name: `localhost` with no `/etc/hosts` in the root,
/// then a name that only the root's `/etc/hosts` lists.
fn host_names(in_root: &InRoot, pg: &PgCluster) -> Result<()> {
    let by_name = |host: &str| {
        pg.replication_conninfo()
            .replace("@127.0.0.1:", &format!("@{host}:"))
    };
    ensure!(
        !in_root.0.join("etc").exists(),
        "the check root should have no /etc yet"
    );
    sh(&mut in_root.cmd(&[
        "wal",
        "preflight",
        "dist",
        "--pg-connection",
        &by_name("localhost"),
    ]))?;
    fs::create_dir(in_root.0.join("etc"))?;
    fs::write(
        in_root.0.join("etc/hosts"),
        format!("127.0.0.1 {HOSTS_NAME}\n"),
    )?;
    sh(&mut in_root.cmd(&[
        "wal",
        "preflight",
        "dist",
        "--pg-connection",
        &by_name(HOSTS_NAME),
    ]))?;
    fs::remove_dir_all(in_root.0.join("etc"))?;
    Ok(())
}
