//! `cargo xtask dist`: one static binary, packaged four ways, with signed checksums.
//!
//! ```text
//! cargo xtask dist [--profile release|dev] [--no-build] [--check] [--sign-key FILE]
//! ```
//!
//! 1. builds `pg_hardstorage` once (release by default), statically linked against glibc
//!    (`--target x86_64-unknown-linux-gnu` with `-C target-feature=+crt-static`; see
//!    [`static_binary`]), checks with `file` that it is static, and strips its debug info
//!    into `<target>/dist/bin/`; `--no-build` takes the one already built;
//! 2. runs the internal `pg_hardstorage __generate-docs DIR` for man pages and bash, zsh and
//!    fish completions generated from the clap definition (never committed);
//! 3. stages `/usr/bin/pg_hardstorage`, the systemd units of `packaging/systemd/`, the
//!    gzipped man pages, the completions and `/usr/share/doc/pg-hardstorage/` under
//!    `<target>/dist/root/`, writes `DEBIAN/` (control, md5sums and the maintainer scripts
//!    of `packaging/debian/`), and builds `<target>/dist/pg-hardstorage_<ver>_<arch>.deb`;
//! 4. the tarball `pg_hardstorage_<ver>_linux_amd64.tar.gz` (dist_tarball.rs), the .rpm
//!    from the same staged tree (dist_rpm.rs), the OCI image as an oci-archive
//!    (dist_oci.rs), and `SHA256SUMS` over the four, signed with minisign (dist_sign.rs).
//!
//! Why `dpkg-deb` and not cargo-deb: `dpkg-deb` is part of dpkg, so it is on every Debian
//! machine already, while cargo-deb would be one more tool for CI to compile (minutes on a
//! small machine) or to fetch as a third-party binary. The staged tree is plain files that
//! this module lists in one place, and `--check` tests what it produces. The same goes for
//! `rpmbuild` (Debian's `rpm`) and for the OCI layout, which is a few JSON files and a tar.
//!
//! `--check` (root only; CI runs it) checks each artifact the way an operator uses it; the
//! tarball, .rpm, image and signature checks are described in their modules. For the
//! .deb: installs the package with `dpkg -i`, checks that `/usr/bin/pg_hardstorage
//! version` prints the built binary's version line, that the `pg-hardstorage` system user
//! exists, that `/etc/pg_hardstorage`, `/var/lib/pg_hardstorage` and
//! `/var/log/pg_hardstorage` are 0750 and owned by it, that the units are in
//! `/lib/systemd/system` and pass `systemd-analyze verify` (or, without it, carry their
//! required keys), reinstalls once (the maintainer scripts must be idempotent), then purges
//! and checks that the binary, the units and the log directory are gone. Units are never
//! started: CI has no systemd.

use crate::util::{self, cargo, run_capture, sh, succeeds};
use crate::{dist_oci, dist_rpm, dist_sign, dist_tarball};
use anyhow::{bail, ensure, Context, Result};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The Debian package name (Debian names allow no `_`).
pub(crate) const PACKAGE: &str = "pg-hardstorage";
/// The system user the maintainer scripts create and the units run as.
pub(crate) const USER: &str = "pg-hardstorage";
/// Directories the postinst creates, 0750 and owned by [`USER`].
pub(crate) const SERVICE_DIRS: [&str; 3] = [
    "/etc/pg_hardstorage",
    "/var/lib/pg_hardstorage",
    "/var/log/pg_hardstorage",
];
/// Where Debian's systemd looks for package units.
const UNIT_DIR: &str = "lib/systemd/system";
/// Maintainer scripts shipped from `packaging/debian/`.
const SCRIPTS: [&str; 3] = ["postinst", "prerm", "postrm"];
/// The one target every artifact is built for: glibc, linked statically.
const TARGET: &str = "x86_64-unknown-linux-gnu";
/// `+crt-static` links glibc statically. getrandom 0.4 (rand's) finds `getrandom()` with
/// `dlsym`, which finds nothing in a static binary, and then reads `/dev/urandom`: in a
/// root without `/dev` the first SCRAM nonce panicked ("could not initialize ThreadRng",
/// found by the tarball check). Its `linux_getrandom` backend calls glibc's `getrandom()`
/// directly (Linux 3.17 and later).
const STATIC_RUSTFLAGS: &str =
    "-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\"";

struct Options {
    profile: String,
    build: bool,
    check: bool,
    sign_key: Option<PathBuf>,
}

/// What every artifact is made from: one static binary and the workspace's facts.
pub(crate) struct Release {
    /// The workspace root.
    pub root: PathBuf,
    /// `<target>/dist`, where the artifacts land.
    pub dist: PathBuf,
    /// `[workspace.package] version`.
    pub version: String,
    /// The stripped static binary every artifact ships.
    pub bin: PathBuf,
    /// What `pg_hardstorage version` prints; every artifact's binary must print it too.
    pub version_line: String,
    /// Time stamp for archive entries: `SOURCE_DATE_EPOCH`, else the commit's time.
    pub epoch: u64,
}

pub fn run(args: &[String]) -> Result<()> {
    let opts = parse_args(args)?;
    if opts.check && !hs_testkit::is_root() {
        bail!(
            "cargo xtask dist --check installs the packages and runs the binary in an empty \
             root, so it must run as root (CI does); build the artifacts alone with \
             `cargo xtask dist`"
        );
    }
    ensure!(
        cfg!(all(target_os = "linux", target_arch = "x86_64")),
        "cargo xtask dist builds linux/amd64 artifacts and runs only on x86_64 Linux"
    );
    let t = Instant::now();
    let rel = release(&opts)?;
    eprintln!(
        "xtask dist: static binary ready in {:.1}s: {}",
        t.elapsed().as_secs_f64(),
        rel.version_line
    );
    let t = Instant::now();
    let generated = generate_docs(&rel)?;
    let tree = stage_tree(&rel, &generated)?;
    let deb = build_deb(&rel, &tree)?;
    let tarball = dist_tarball::build(&rel)?;
    let rpm = dist_rpm::build(&rel, &tree)?;
    let oci = dist_oci::build(&rel)?;
    let artifacts = [tarball, deb, rpm, oci];
    let sums = dist_sign::write_sums(&rel, &artifacts)?;
    let signed = dist_sign::sign(&rel, &sums, opts.sign_key.as_deref(), opts.check)?;
    eprintln!("xtask dist: packaged in {:.1}s:", t.elapsed().as_secs_f64());
    for a in artifacts
        .iter()
        .chain([&sums])
        .chain(signed.iter().map(|s| &s.sig))
    {
        let size = fs::metadata(a)?.len();
        eprintln!("  {:>8.1} MiB  {}", size as f64 / 1048576.0, a.display());
        println!("{}", a.display());
    }
    if opts.check {
        let [tarball, deb, rpm, oci] = &artifacts;
        timed("tarball", || dist_tarball::check(&rel, tarball))?;
        timed(".deb", || check_deb(&rel, deb))?;
        timed(".rpm", || dist_rpm::check(&rel, rpm, &tree))?;
        timed("OCI image", || dist_oci::check(&rel, oci))?;
        timed("SHA256SUMS", || {
            dist_sign::check(&rel, &sums, signed.as_ref())
        })?;
        eprintln!("xtask dist: every artifact checked");
    }
    Ok(())
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut opts = Options {
        profile: "release".to_owned(),
        build: true,
        check: false,
        sign_key: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--profile" => opts.profile = it.next().context("--profile needs a name")?.clone(),
            "--no-build" => opts.build = false,
            "--check" => opts.check = true,
            "--sign-key" => {
                opts.sign_key = Some(PathBuf::from(
                    it.next()
                        .context("--sign-key needs a minisign secret key file")?,
                ));
            }
            other => bail!("cargo xtask dist: unknown argument {other:?}"),
        }
    }
    Ok(opts)
}

fn timed(what: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let t = Instant::now();
    eprintln!("\nxtask dist: checking the {what}");
    f().with_context(|| format!("checking the {what}"))?;
    eprintln!(
        "xtask dist: the {what} is fine ({:.1}s)",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Builds (unless `--no-build`) the static binary and copies it, stripped of debug info,
/// to `<dist>/bin/pg_hardstorage`.
fn release(opts: &Options) -> Result<Release> {
    let root = util::workspace_root();
    let dist = util::target_dir().join("dist");
    let built = static_binary(opts)?;
    let bin_dir = dist.join("bin");
    if bin_dir.exists() {
        fs::remove_dir_all(&bin_dir)?;
    }
    fs::create_dir_all(&bin_dir)?;
    let bin = bin_dir.join("pg_hardstorage");
    install(&built, &bin, 0o755)?;
    if succeeds("strip", &["--version"]) {
        sh(Command::new("strip").arg("--strip-debug").arg(&bin))?;
    }
    let version = workspace_version(&root)?;
    let version_line = run_capture(Command::new(&bin).arg("version"))?
        .trim()
        .to_owned();
    check_version_line(&version_line, &version)?;
    Ok(Release {
        epoch: source_epoch(&root)?,
        root,
        dist,
        version,
        bin,
        version_line,
    })
}

/// `pg_hardstorage vX.Y.Z (<commit>, built <time>)` with the workspace's version.
pub(crate) fn check_version_line(line: &str, version: &str) -> Result<()> {
    let rest = line
        .strip_prefix(&format!("pg_hardstorage v{version} ("))
        .and_then(|r| r.strip_suffix(')'));
    let ok = rest.is_some_and(|r| {
        r.split_once(", built ")
            .is_some_and(|(sha, time)| !sha.is_empty() && !time.is_empty())
    });
    ensure!(
        ok,
        "`pg_hardstorage version` printed {line:?}, not \
         `pg_hardstorage v{version} (<commit>, built <time>)`"
    );
    Ok(())
}

/// `SOURCE_DATE_EPOCH` when set, else the time of the commit checked out.
fn source_epoch(root: &Path) -> Result<u64> {
    if let Some(e) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return Ok(e);
    }
    let out = Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(root)
        .output();
    Ok(out
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0))
}

/// Man pages and completions from the binary's own clap definition.
fn generate_docs(rel: &Release) -> Result<PathBuf> {
    let generated = rel.dist.join("generated");
    if generated.exists() {
        fs::remove_dir_all(&generated)?;
    }
    sh(Command::new(&rel.bin)
        .arg("__generate-docs")
        .arg(&generated))?;
    Ok(generated)
}

/// Stages the installed tree the .deb and the .rpm share under `<dist>/root/`.
fn stage_tree(rel: &Release, generated: &Path) -> Result<PathBuf> {
    for tool in ["dpkg-deb", "gzip"] {
        ensure!(
            succeeds(tool, &["--version"]),
            "{tool} is missing: install it with `apt-get install -y dpkg gzip`"
        );
    }
    let root = &rel.root;
    let stage = rel.dist.join("root");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
    }

    // /usr/bin
    let usr_bin = stage.join("usr/bin");
    fs::create_dir_all(&usr_bin)?;
    install(&rel.bin, &usr_bin.join("pg_hardstorage"), 0o755)?;
    // systemd units
    let units = stage.join(UNIT_DIR);
    fs::create_dir_all(&units)?;
    for unit in unit_files(root)? {
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
    for unit in unit_files(root)? {
        if unit.extension().is_some_and(|e| e == "timer") {
            let name = unit.file_name().context("unit file name")?;
            install(&unit, &doc.join("examples").join(name), 0o644)?;
        }
    }

    // Every directory 0755 (the umask of whoever checked out the tree must not leak in).
    set_dir_modes(&stage)?;
    Ok(stage)
}

/// Builds the .deb from the staged tree (adding `DEBIAN/` to it) and returns its path.
fn build_deb(rel: &Release, stage: &Path) -> Result<PathBuf> {
    let root = &rel.root;
    let arch = run_capture(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_owned();
    let debian = stage.join("DEBIAN");
    if debian.exists() {
        fs::remove_dir_all(&debian)?;
    }
    fs::create_dir_all(&debian)?;
    for script in SCRIPTS {
        install(
            &root.join("packaging/debian").join(script),
            &debian.join(script),
            0o755,
        )?;
    }
    let md5sums = md5sums(stage)?;
    fs::write(debian.join("md5sums"), md5sums)?;
    let installed_kib = util::dir_bytes(stage)?.div_ceil(1024);
    fs::write(
        debian.join("control"),
        control(&rel.version, &arch, installed_kib),
    )?;
    fs::set_permissions(&debian, fs::Permissions::from_mode(0o755))?;

    let deb = rel
        .dist
        .join(format!("{PACKAGE}_{}_{arch}.deb", rel.version));
    sh(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(stage)
        .arg(&deb))?;
    sh(Command::new("dpkg-deb").arg("--info").arg(&deb))?;
    // The tree stays as the .rpm's source, without the Debian control files.
    fs::remove_dir_all(&debian)?;
    Ok(deb)
}

/// The static `pg_hardstorage` (built first unless `--no-build`): glibc with
/// `-C target-feature=+crt-static`, for an explicit `--target` so that build scripts and
/// proc macros stay dynamic (they must be loadable by the compiler). The musl target would
/// need `rustup target add`, which cannot download here; glibc linked statically needs
/// nothing beyond the toolchain and libc6-dev's `libc.a`.
fn static_binary(opts: &Options) -> Result<PathBuf> {
    if opts.build {
        let mut cmd = cargo();
        cmd.args([
            "build",
            "--profile",
            &opts.profile,
            "--target",
            TARGET,
            "-p",
            "hs-cli",
            "--bin",
            "pg_hardstorage",
        ])
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            STATIC_RUSTFLAGS,
        );
        ensure!(
            std::env::var_os("RUSTFLAGS").is_none()
                && std::env::var_os("CARGO_ENCODED_RUSTFLAGS").is_none(),
            "RUSTFLAGS is set, and it would replace the target's {STATIC_RUSTFLAGS}: \
             unset it for cargo xtask dist"
        );
        sh(&mut cmd)?;
    }
    let dir = if opts.profile == "dev" {
        "debug"
    } else {
        &opts.profile
    };
    let bin = util::target_dir()
        .join(TARGET)
        .join(dir)
        .join("pg_hardstorage");
    ensure!(
        bin.is_file(),
        "{} is missing (build it, or drop --no-build)",
        bin.display()
    );
    ensure_static(&bin)?;
    Ok(bin)
}

/// `file` must call the binary statically linked (`static-pie linked` is that too).
pub(crate) fn ensure_static(bin: &Path) -> Result<String> {
    let out = run_capture(Command::new("file").arg("-b").arg(bin))
        .context("`file` is needed to check the binary: apt-get install -y file")?;
    ensure!(
        out.contains("statically linked") || out.contains("static-pie linked"),
        "{} is not statically linked: file says {}",
        bin.display(),
        out.trim()
    );
    Ok(out.trim().to_owned())
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

fn control(version: &str, arch: &str, installed_kib: u64) -> String {
    format!(
        "Package: {PACKAGE}
Version: {version}
Architecture: {arch}
Maintainer: pg_hardstorage developers <pg-hardstorage@example.invalid>
Installed-Size: {installed_kib}
Depends: passwd
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
fn check_deb(rel: &Release, deb: &Path) -> Result<()> {
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
    let checked = installed_checks(rel).and_then(|()| {
        eprintln!("xtask dist: reinstalling (the maintainer scripts must be idempotent)");
        sh(Command::new("dpkg").arg("-i").arg(deb))?;
        installed_checks(rel)
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

fn installed_checks(rel: &Release) -> Result<()> {
    let out = run_capture(Command::new("/usr/bin/pg_hardstorage").arg("version"))?;
    ensure!(
        out.trim() == rel.version_line,
        "the installed binary says {:?}, the built one {:?}",
        out.trim(),
        rel.version_line
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
pub(crate) fn check_unit_keys(name: &str, text: &str) -> Result<()> {
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
    fn workspace_version_is_read() {
        let v = workspace_version(&util::workspace_root()).expect("version");
        assert!(v.split('.').count() == 3, "{v}");
    }

    #[test]
    fn version_line_shape_is_checked() {
        let good = "pg_hardstorage v1.2.3 (0123456789ab, built 2026-12-06 03:00:00 UTC)";
        assert!(check_version_line(good, "1.2.3").is_ok());
        assert!(check_version_line(good, "1.2.4").is_err());
        assert!(check_version_line("pg_hardstorage v1.2.3", "1.2.3").is_err());
        assert!(check_version_line("pg_hardstorage v1.2.3 (, built x)", "1.2.3").is_err());
    }
}
