//! `cargo xtask dist`: the Debian package, built with `dpkg-deb` from a staged tree.
//!
//! ```text
//! cargo xtask dist [--profile release|dev] [--no-build] [--check]
//! ```
//!
//! 1. builds `pg_hardstorage` (release by default; `--no-build` takes the one already in
//!    the target directory);
//! 2. runs the internal `pg_hardstorage __generate-docs DIR` for man pages and bash, zsh and
//!    fish completions generated from the clap definition (never committed);
//! 3. stages `/usr/bin/pg_hardstorage`, the systemd units of `packaging/systemd/`, the
//!    gzipped man pages, the completions and `/usr/share/doc/pg-hardstorage/` under
//!    `<target>/dist/root/`, writes `DEBIAN/` (control, md5sums and the maintainer scripts
//!    of `packaging/debian/`), and builds `<target>/dist/pg-hardstorage_<ver>_<arch>.deb`.
//!
//! Why `dpkg-deb` and not cargo-deb: `dpkg-deb` is part of dpkg, so it is on every Debian
//! machine already, while cargo-deb would be one more tool for CI to compile (minutes on a
//! small machine) or to fetch as a third-party binary. The staged tree is plain files that
//! this module lists in one place, and `--check` tests what it produces.
//!
//! `--check` (root only; CI runs it): installs the package with `dpkg -i`, checks that
//! `/usr/bin/pg_hardstorage version` runs, that the `pg-hardstorage` system user exists,
//! that `/etc/pg_hardstorage`, `/var/lib/pg_hardstorage` and `/var/log/pg_hardstorage` are
//! 0750 and owned by it, that the units are in `/lib/systemd/system` and pass
//! `systemd-analyze verify` (or, without it, carry their required keys), reinstalls once
//! (the maintainer scripts must be idempotent), then purges and checks that the binary,
//! the units and the log directory are gone. Units are never started: CI has no systemd.

use crate::util::{self, cargo, run_capture, sh, succeeds};
use anyhow::{bail, ensure, Context, Result};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian package name (Debian names allow no `_`).
const PACKAGE: &str = "pg-hardstorage";
/// The system user the maintainer scripts create and the units run as.
const USER: &str = "pg-hardstorage";
/// Directories the postinst creates, 0750 and owned by [`USER`].
const SERVICE_DIRS: [&str; 3] = [
    "/etc/pg_hardstorage",
    "/var/lib/pg_hardstorage",
    "/var/log/pg_hardstorage",
];
/// Where Debian's systemd looks for package units.
const UNIT_DIR: &str = "lib/systemd/system";
/// Maintainer scripts shipped from `packaging/debian/`.
const SCRIPTS: [&str; 3] = ["postinst", "prerm", "postrm"];

struct Options {
    profile: String,
    build: bool,
    check: bool,
}

pub fn run(args: &[String]) -> Result<()> {
    let mut opts = Options {
        profile: "release".to_owned(),
        build: true,
        check: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--profile" => opts.profile = it.next().context("--profile needs a name")?.clone(),
            "--no-build" => opts.build = false,
            "--check" => opts.check = true,
            other => bail!("cargo xtask dist: unknown argument {other:?}"),
        }
    }
    if opts.check && !hs_testkit::is_root() {
        bail!(
            "cargo xtask dist --check installs the package with dpkg and must run as root \
             (CI does); build the package alone with `cargo xtask dist`"
        );
    }
    let deb = build_deb(&opts)?;
    println!("{}", deb.display());
    if opts.check {
        check_deb(&deb)?;
        eprintln!("xtask dist: the package installs, runs and purges cleanly");
    }
    Ok(())
}

/// Builds the package and returns its path.
fn build_deb(opts: &Options) -> Result<PathBuf> {
    for tool in ["dpkg-deb", "gzip"] {
        ensure!(
            succeeds(tool, &["--version"]),
            "{tool} is missing: install it with `apt-get install -y dpkg gzip`"
        );
    }
    let bin = binary(opts)?;
    let root = util::workspace_root();
    let dist = util::target_dir().join("dist");
    let stage = dist.join("root");
    let generated = dist.join("generated");
    for d in [&stage, &generated] {
        if d.exists() {
            fs::remove_dir_all(d).with_context(|| format!("clearing {}", d.display()))?;
        }
    }
    sh(Command::new(&bin).arg("__generate-docs").arg(&generated))?;

    let version = workspace_version(&root)?;
    let arch = run_capture(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_owned();

    // /usr/bin
    let usr_bin = stage.join("usr/bin");
    fs::create_dir_all(&usr_bin)?;
    install(&bin, &usr_bin.join("pg_hardstorage"), 0o755)?;
    if succeeds("strip", &["--version"]) {
        sh(Command::new("strip")
            .arg("--strip-debug")
            .arg(usr_bin.join("pg_hardstorage")))?;
    }
    // systemd units
    let units = stage.join(UNIT_DIR);
    fs::create_dir_all(&units)?;
    for unit in unit_files(&root)? {
        let name = unit.file_name().context("unit file name")?;
        install(&unit, &units.join(name), 0o644)?;
    }
    // man pages, gzipped as Debian policy asks (-n: no name or time stamp, reproducible)
    let man1 = stage.join("usr/share/man/man1");
    fs::create_dir_all(&man1)?;
    let mut pages = 0;
    for page in sorted_dir(&generated.join("man"))? {
        let name = page.file_name().context("man page name")?.to_string_lossy();
        let gz = run_capture_bytes(Command::new("gzip").args(["-9n", "-c"]).arg(&page))?;
        let dest = man1.join(format!("{name}.gz"));
        fs::write(&dest, gz)?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o644))?;
        pages += 1;
    }
    ensure!(pages > 1, "__generate-docs wrote only {pages} man page(s)");
    // shell completions, where Debian's bash-completion, zsh and fish look for them
    let comp = generated.join("completions");
    for (file, dir) in [
        (
            "pg_hardstorage.bash",
            "usr/share/bash-completion/completions",
        ),
        ("_pg_hardstorage", "usr/share/zsh/vendor-completions"),
        ("pg_hardstorage.fish", "usr/share/fish/vendor_completions.d"),
    ] {
        let dest_dir = stage.join(dir);
        fs::create_dir_all(&dest_dir)?;
        // bash-completion finds a command's script by the command's name.
        let dest_name = if file.ends_with(".bash") {
            "pg_hardstorage"
        } else {
            file
        };
        install(&comp.join(file), &dest_dir.join(dest_name), 0o644)?;
    }
    // /usr/share/doc
    let doc = stage.join("usr/share/doc").join(PACKAGE);
    fs::create_dir_all(doc.join("examples"))?;
    fs::write(doc.join("copyright"), copyright())?;
    install(
        &root.join("docs/packaging.md"),
        &doc.join("packaging.md"),
        0o644,
    )?;
    for unit in unit_files(&root)? {
        if unit.extension().is_some_and(|e| e == "timer") {
            let name = unit.file_name().context("unit file name")?;
            install(&unit, &doc.join("examples").join(name), 0o644)?;
        }
    }

    // DEBIAN/
    let debian = stage.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    for script in SCRIPTS {
        install(
            &root.join("packaging/debian").join(script),
            &debian.join(script),
            0o755,
        )?;
    }
    let md5sums = md5sums(&stage)?;
    fs::write(debian.join("md5sums"), md5sums)?;
    let libc = min_glibc(&usr_bin.join("pg_hardstorage"))?;
    let installed_kib = util::dir_bytes(&stage)?.div_ceil(1024);
    fs::write(
        debian.join("control"),
        control(&version, &arch, &libc, installed_kib),
    )?;
    // Every directory 0755 (the umask of whoever checked out the tree must not leak in).
    set_dir_modes(&stage)?;

    let deb = dist.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    sh(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    sh(Command::new("dpkg-deb").arg("--info").arg(&deb))?;
    Ok(deb)
}

/// The `pg_hardstorage` binary to package, built first unless `--no-build`.
fn binary(opts: &Options) -> Result<PathBuf> {
    if opts.build {
        sh(cargo().args([
            "build",
            "--profile",
            &opts.profile,
            "-p",
            "hs-cli",
            "--bin",
            "pg_hardstorage",
        ]))?;
    }
    let dir = if opts.profile == "dev" {
        "debug"
    } else {
        &opts.profile
    };
    let bin = util::target_dir().join(dir).join("pg_hardstorage");
    ensure!(
        bin.is_file(),
        "{} is missing (build it, or drop --no-build)",
        bin.display()
    );
    Ok(bin)
}

/// `version` of `[workspace.package]` in the root Cargo.toml.
fn workspace_version(root: &Path) -> Result<String> {
    let text = fs::read_to_string(root.join("Cargo.toml"))?;
    let mut in_package = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[workspace.package]";
        } else if in_package {
            if let Some(v) = line.strip_prefix("version") {
                let v = v
                    .trim_start()
                    .trim_start_matches('=')
                    .trim()
                    .trim_matches('"');
                ensure!(!v.is_empty(), "empty version in [workspace.package]");
                return Ok(v.to_owned());
            }
        }
    }
    bail!("no version in [workspace.package] of the root Cargo.toml")
}

/// The unit files of `packaging/systemd/`, sorted.
fn unit_files(root: &Path) -> Result<Vec<PathBuf>> {
    let units: Vec<PathBuf> = sorted_dir(&root.join("packaging/systemd"))?
        .into_iter()
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "service" || e == "timer")
        })
        .collect();
    ensure!(!units.is_empty(), "no units in packaging/systemd");
    Ok(units)
}

fn sorted_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn set_dir_modes(dir: &Path) -> Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            set_dir_modes(&p)?;
        }
    }
    Ok(())
}

fn run_capture_bytes(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start {}", util::show(cmd)))?;
    ensure!(
        out.status.success(),
        "command failed ({}): {}",
        out.status,
        util::show(cmd)
    );
    Ok(out.stdout)
}

/// `DEBIAN/md5sums`: one line per regular file outside `DEBIAN/`.
fn md5sums(stage: &Path) -> Result<String> {
    let mut files = Vec::new();
    collect_files(stage, &mut files)?;
    files.retain(|f| !f.starts_with(stage.join("DEBIAN")));
    files.sort();
    let mut cmd = Command::new("md5sum");
    cmd.current_dir(stage);
    for f in &files {
        cmd.arg(f.strip_prefix(stage)?);
    }
    let out = run_capture_bytes(&mut cmd)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            collect_files(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// The newest `GLIBC_x.y[.z]` symbol version the binary needs, for `Depends: libc6 (>= x.y)`.
fn min_glibc(bin: &Path) -> Result<String> {
    let bytes = fs::read(bin)?;
    let needle = b"GLIBC_";
    let mut best: Option<Vec<u32>> = None;
    let mut i = 0;
    while let Some(pos) = bytes[i..].windows(needle.len()).position(|w| w == needle) {
        let start = i + pos + needle.len();
        let end = bytes[start..]
            .iter()
            .position(|b| !(b.is_ascii_digit() || *b == b'.'))
            .map_or(bytes.len(), |n| start + n);
        let text = String::from_utf8_lossy(&bytes[start..end]);
        let parts: Option<Vec<u32>> = text.split('.').map(|p| p.parse().ok()).collect();
        if let Some(parts) = parts.filter(|p| p.len() >= 2) {
            if best.as_ref().is_none_or(|b| parts > *b) {
                best = Some(parts);
            }
        }
        i = end.max(start);
    }
    let best = best.context("found no GLIBC_ symbol version in the binary")?;
    Ok(best
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join("."))
}

fn control(version: &str, arch: &str, glibc: &str, installed_kib: u64) -> String {
    format!(
        "Package: {PACKAGE}
Version: {version}
Architecture: {arch}
Maintainer: pg_hardstorage developers <pg-hardstorage@example.invalid>
Installed-Size: {installed_kib}
Depends: libc6 (>= {glibc}), passwd
Section: database
Priority: optional
Homepage: https://example.invalid/pg_hardstorage
Description: PostgreSQL backups built on continuous WAL streaming
 pg_hardstorage takes physical backups of PostgreSQL 15+ over the replication
 protocol and streams WAL continuously through a replication slot into a
 deduplicated, compressed and encrypted repository (file, S3, GCS, Azure Blob,
 SFTP), and restores to any point in time.
 .
 This package installs the pg_hardstorage binary, systemd units for the REST
 API (pg_hardstorage.service) and for WAL streaming per deployment
 (pg_hardstorage@.service), an example backup timer, man pages and shell
 completions, and creates the pg-hardstorage system user.
"
    )
}

fn copyright() -> String {
    "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: pg_hardstorage
Source: https://example.invalid/pg_hardstorage

Files: *
Copyright: pg_hardstorage developers
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
"
    .to_owned()
}

/// Installs, inspects, reinstalls and purges the package on this machine.
fn check_deb(deb: &Path) -> Result<()> {
    let status = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", PACKAGE])
        .output()
        .context("could not start dpkg-query")?;
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    if status.ends_with(" installed") {
        bail!(
            "{PACKAGE} is already installed here ({status}); the check installs and purges it, \
             so remove it first: dpkg --purge {PACKAGE}"
        );
    }
    sh(Command::new("dpkg").arg("-i").arg(deb))?;
    let checked = installed_checks().and_then(|()| {
        eprintln!("xtask dist: reinstalling (the maintainer scripts must be idempotent)");
        sh(Command::new("dpkg").arg("-i").arg(deb))?;
        installed_checks()
    });
    let purged = sh(Command::new("dpkg").args(["--purge", PACKAGE]));
    checked?;
    purged?;
    for gone in [
        "/usr/bin/pg_hardstorage",
        "/lib/systemd/system/pg_hardstorage.service",
        "/lib/systemd/system/pg_hardstorage@.service",
        "/usr/share/man/man1/pg_hardstorage.1.gz",
        "/var/log/pg_hardstorage",
    ] {
        ensure!(
            !Path::new(gone).exists(),
            "{gone} is still there after dpkg --purge {PACKAGE}"
        );
    }
    Ok(())
}

fn installed_checks() -> Result<()> {
    let out = run_capture(Command::new("/usr/bin/pg_hardstorage").arg("version"))?;
    ensure!(
        out.starts_with("pg_hardstorage v"),
        "unexpected `pg_hardstorage version` output: {out:?}"
    );
    eprintln!("installed: {}", out.trim());

    let passwd = run_capture(Command::new("getent").args(["passwd", USER]))
        .with_context(|| format!("the postinst did not create the user {USER}"))?;
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    ensure!(fields.len() == 7, "odd passwd entry: {passwd:?}");
    let uid: u32 = fields[2].parse().context("uid in passwd")?;
    let gid: u32 = fields[3].parse().context("gid in passwd")?;
    ensure!(
        uid < 1000,
        "{USER} has uid {uid}: a system user should be below 1000"
    );
    ensure!(
        fields[6].ends_with("nologin"),
        "{USER} has a login shell: {}",
        fields[6]
    );
    for dir in SERVICE_DIRS {
        let m = fs::metadata(dir).with_context(|| format!("{dir} was not created"))?;
        ensure!(m.is_dir(), "{dir} is not a directory");
        let mode = m.mode() & 0o7777;
        ensure!(mode == 0o750, "{dir} has mode {mode:o}, want 750");
        ensure!(
            m.uid() == uid && m.gid() == gid,
            "{dir} is owned by {}:{}, want {USER} ({uid}:{gid})",
            m.uid(),
            m.gid()
        );
    }

    let unit_dir = Path::new("/").join(UNIT_DIR);
    for unit in [
        "pg_hardstorage.service",
        "pg_hardstorage@.service",
        "pg_hardstorage-backup@.service",
        "pg_hardstorage-backup@.timer",
    ] {
        let path = unit_dir.join(unit);
        let text =
            fs::read_to_string(&path).with_context(|| format!("{} missing", path.display()))?;
        check_unit_keys(unit, &text)?;
    }
    verify_units(&unit_dir)?;

    for f in [
        "/usr/share/man/man1/pg_hardstorage.1.gz",
        "/usr/share/man/man1/pg_hardstorage-wal-stream.1.gz",
        "/usr/share/bash-completion/completions/pg_hardstorage",
        "/usr/share/zsh/vendor-completions/_pg_hardstorage",
        "/usr/share/fish/vendor_completions.d/pg_hardstorage.fish",
    ] {
        ensure!(Path::new(f).is_file(), "{f} was not installed");
    }
    sh(Command::new("bash")
        .arg("-n")
        .arg("/usr/share/bash-completion/completions/pg_hardstorage"))?;
    Ok(())
}

/// The keys every unit of ours must have, so a unit that lost one fails here even where
/// `systemd-analyze` is missing.
fn check_unit_keys(name: &str, text: &str) -> Result<()> {
    let has = |key: &str| {
        text.lines()
            .any(|l| l.trim_start().starts_with(&format!("{key}=")))
    };
    let mut required = vec!["Description"];
    if name.ends_with(".service") {
        required.extend(["ExecStart", "User", "NoNewPrivileges", "ProtectSystem"]);
        if !name.starts_with("pg_hardstorage-backup") {
            required.extend(["Restart", "KillSignal"]);
        }
    } else {
        required.push("OnCalendar");
    }
    for key in required {
        ensure!(has(key), "{name} has no {key}=");
    }
    Ok(())
}

/// `systemd-analyze verify` on every unit (templates through an instance `main`).
fn verify_units(unit_dir: &Path) -> Result<()> {
    if !succeeds("systemd-analyze", &["--version"]) {
        eprintln!("xtask dist: systemd-analyze is missing; checked the units' keys only");
        return Ok(());
    }
    let tmp = util::target_dir().join("dist/verify-units");
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    let mut names = Vec::new();
    for unit in sorted_dir(unit_dir)? {
        let name = unit
            .file_name()
            .context("unit name")?
            .to_string_lossy()
            .into_owned();
        if !name.starts_with("pg_hardstorage") {
            continue;
        }
        let instance = name.replace("@.", "@main.");
        fs::copy(&unit, tmp.join(&instance))?;
        names.push(instance);
    }
    let mut cmd = Command::new("systemd-analyze");
    cmd.args(["verify", "--man=no"]).current_dir(&tmp);
    for n in &names {
        cmd.arg(tmp.join(n));
    }
    let out = cmd.output().context("could not start systemd-analyze")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Without a running systemd, verify still parses every unit but may complain about the
    // bus or about units we do not own (the default target): only our own lines count.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("pg_hardstorage"))
        .collect();
    if !ours.is_empty() {
        bail!(
            "systemd-analyze verify found problems:\n{}",
            ours.join("\n")
        );
    }
    eprintln!("systemd-analyze verify: {} units OK", names.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_key_check_notices_a_missing_key() {
        let good = "[Unit]\nDescription=x\n[Service]\nExecStart=/usr/bin/x\nUser=u\n\
                    NoNewPrivileges=yes\nProtectSystem=strict\nRestart=always\nKillSignal=SIGTERM\n";
        assert!(check_unit_keys("pg_hardstorage.service", good).is_ok());
        let bad = good.replace("Restart=always\n", "");
        assert!(check_unit_keys("pg_hardstorage.service", &bad).is_err());
        assert!(check_unit_keys("pg_hardstorage-backup@.timer", "Description=x\n").is_err());
    }

    #[test]
    fn the_committed_units_have_their_keys() {
        for unit in unit_files(&util::workspace_root()).expect("units") {
            let name = unit
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let text = fs::read_to_string(&unit).expect("read unit");
            check_unit_keys(&name, &text).expect("unit keys");
        }
    }

    #[test]
    fn glibc_version_is_the_newest_referenced() {
        let dir = tempfile_dir();
        let f = dir.join("bin");
        fs::write(
            &f,
            b"\0GLIBC_2.2.5\0GLIBC_2.34\0GLIBC_2.17\0GLIBC_PRIVATE\0",
        )
        .expect("write");
        assert_eq!(min_glibc(&f).expect("glibc"), "2.34");
        fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn workspace_version_is_read() {
        let v = workspace_version(&util::workspace_root()).expect("version");
        assert!(v.split('.').count() == 3, "{v}");
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-dist-{}", std::process::id()));
        fs::create_dir_all(&d).expect("mkdir");
        d
    }
}
