//! PostgreSQL's client programs: finding them, and `pg_verifybackup` on the restored
//! directory.

use std::path::{Path, PathBuf};

use hs_base::code;
use hs_repo::BackupManifest;

use super::RestoreOptions;
use crate::error::{Error, ErrorKind, Result};

/// Finds one of PostgreSQL's client programs for server major `major`.
pub fn find_pg_program(bin_dir: Option<&Path>, major: u32, name: &str) -> Option<PathBuf> {
    if let Some(d) = bin_dir {
        let p = d.join(name);
        return p.is_file().then_some(p);
    }
    let p = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin/{name}"));
    if p.is_file() {
        return Some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Runs `pg_verifybackup` without blocking the runtime; dropping the future (a restore
/// stopped by a signal) kills it. Without `read_back` it skips its checksum pass
/// (`--skip-checksums`): the checksums were checked as the files were written.
pub(super) async fn run_pg_verifybackup(
    opts: &RestoreOptions,
    manifest: &BackupManifest,
    read_back: bool,
) -> Result<()> {
    let major = manifest.pg_version / 10000;
    let prog =
        find_pg_program(opts.pg_bin_dir.as_deref(), major, "pg_verifybackup").ok_or_else(|| {
            Error::of_kind(
                ErrorKind::Preflight,
                code::PREFLIGHT_PG_VERIFYBACKUP_MISSING,
                format!("pg_verifybackup for PostgreSQL {major} was not found"),
            )
            .with_suggestion(format!(
            "install PostgreSQL {major}'s client programs, pass --pg-bin-dir, or use --verify=skip"
        ))
        })?;
    let mut cmd = tokio::process::Command::new(&prog);
    if !read_back {
        cmd.arg("--skip-checksums");
    }
    let out = cmd
        .arg(&opts.target)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| crate::error::io(format!("run {}", prog.display()), e))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().take(5).collect::<Vec<_>>().join("; ");
    Err(Error::of_kind(
        ErrorKind::Verify,
        code::VERIFY_PG_VERIFYBACKUP_FAILED,
        format!(
            "pg_verifybackup rejected the restored directory {}: {first}",
            opts.target.display()
        ),
    )
    .with_suggestion(
        "do not start this directory; run `pg_hardstorage verify` on the backup and restore another one",
    ))
}
