//! `SHA256SUMS` over the artifacts, and its minisign signature `SHA256SUMS.minisig`.
//!
//! `SHA256SUMS` is `sha256sum`'s format (`<hex>  <file name>`), so `sha256sum -c` checks
//! it. It is signed with minisign (Debian's `minisign`) using a secret key that is never in
//! the repository: `--sign-key FILE` names it (minisign asks for its password, if it has
//! one). Without `--sign-key`, `cargo xtask dist` leaves `SHA256SUMS` unsigned, and
//! `--check` signs with a throwaway key it makes in `<dist>/throwaway-key/` (no password)
//! so that CI runs the whole sign-and-verify path every time. The trusted comment names the
//! version and the commit, and `minisign -V` prints it.
//!
//! The check runs `sha256sum -c` and `minisign -V` as a user would (docs/packaging.md),
//! then flips one byte of a copy of `SHA256SUMS` and expects `minisign -V` to refuse it.

use crate::dist::Release;
use crate::util::{run_capture, sh, succeeds};
use anyhow::{ensure, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes `<dist>/SHA256SUMS` for `artifacts` (all in `<dist>`).
pub fn write_sums(rel: &Release, artifacts: &[PathBuf]) -> Result<PathBuf> {
    let mut cmd = Command::new("sha256sum");
    cmd.current_dir(&rel.dist);
    for a in artifacts {
        ensure!(
            a.parent() == Some(rel.dist.as_path()),
            "{} is not in {}",
            a.display(),
            rel.dist.display()
        );
        cmd.arg(a.file_name().context("artifact name")?);
    }
    let sums = rel.dist.join("SHA256SUMS");
    fs::write(&sums, run_capture(&mut cmd)?)?;
    Ok(sums)
}

/// A signature and the public key that verifies it.
pub struct Signed {
    /// `<dist>/SHA256SUMS.minisig`.
    pub sig: PathBuf,
    /// The throwaway key's, or `<dist>/minisign.pub` recreated from `--sign-key`.
    pub public: PathBuf,
}

/// Signs `SHA256SUMS` with `key`, or with a throwaway key when `check` and no key;
/// `None` when nothing signed it.
pub fn sign(rel: &Release, sums: &Path, key: Option<&Path>, check: bool) -> Result<Option<Signed>> {
    let sig = rel.dist.join("SHA256SUMS.minisig");
    let _ = fs::remove_file(&sig);
    let (key, public) = match key {
        Some(k) => {
            ensure_minisign()?;
            let public = rel.dist.join("minisign.pub");
            let _ = fs::remove_file(&public);
            sh(Command::new("minisign")
                .arg("-R")
                .arg("-s")
                .arg(k)
                .arg("-p")
                .arg(&public))?;
            (k.to_path_buf(), public)
        }
        None if check => throwaway_key(rel)?,
        None => {
            eprintln!(
                "xtask dist: SHA256SUMS is not signed (pass --sign-key FILE with the release's \
                 minisign secret key)"
            );
            return Ok(None);
        }
    };
    ensure_minisign()?;
    let comment = format!(
        "{} SHA256SUMS of {}",
        rel.version_line,
        crate::dist_tarball::stem(&rel.version)
    );
    sh(Command::new("minisign")
        .arg("-S")
        .arg("-s")
        .arg(&key)
        .arg("-m")
        .arg(sums)
        .arg("-x")
        .arg(&sig)
        .arg("-t")
        .arg(&comment))?;
    Ok(Some(Signed { sig, public }))
}

fn ensure_minisign() -> Result<()> {
    ensure!(
        succeeds("minisign", &["-v"]),
        "minisign is missing: apt-get install -y minisign"
    );
    Ok(())
}

/// `(secret, public)` of a key made once in `<dist>/throwaway-key/`, without a password.
fn throwaway_key(rel: &Release) -> Result<(PathBuf, PathBuf)> {
    ensure_minisign()?;
    let dir = rel.dist.join("throwaway-key");
    let (secret, public) = (dir.join("minisign.key"), dir.join("minisign.pub"));
    if !secret.is_file() || !public.is_file() {
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        sh(Command::new("minisign")
            .args(["-G", "-W", "-p"])
            .arg(&public)
            .arg("-s")
            .arg(&secret))?;
    }
    Ok((secret, public))
}

/// `sha256sum -c` and `minisign -V` as documented, and a tampered copy refused.
pub fn check(rel: &Release, sums: &Path, signed: Option<&Signed>) -> Result<()> {
    sh(Command::new("sha256sum")
        .args(["--strict", "-c"])
        .arg(sums)
        .current_dir(&rel.dist))?;
    let signed = signed.context("--check signs SHA256SUMS, but there is no signature")?;
    let (sig, public) = (&signed.sig, &signed.public);
    let out = run_capture(
        Command::new("minisign")
            .arg("-V")
            .arg("-p")
            .arg(public)
            .arg("-m")
            .arg(sums)
            .arg("-x")
            .arg(sig),
    )?;
    ensure!(
        out.contains(&rel.version_line),
        "minisign -V did not print the trusted comment: {out}"
    );
    eprint!("{out}");
    let tampered = rel.dist.join("SHA256SUMS.tampered");
    let mut bytes = fs::read(sums)?;
    bytes[0] ^= 1;
    fs::write(&tampered, bytes)?;
    let refused = !Command::new("minisign")
        .arg("-V")
        .arg("-p")
        .arg(public)
        .arg("-m")
        .arg(&tampered)
        .arg("-x")
        .arg(sig)
        .output()?
        .status
        .success();
    fs::remove_file(&tampered)?;
    ensure!(refused, "minisign -V accepted a tampered SHA256SUMS");
    Ok(())
}
