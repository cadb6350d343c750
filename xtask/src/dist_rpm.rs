//! The .rpm: the .deb's staged tree, repackaged with `rpmbuild` (Debian's `rpm` package).
//!
//! The files are the .deb's, at the paths RPM distributions use for two of them: units in
//! `/usr/lib/systemd/system` (RHEL, Fedora and SUSE keep package units there) and the zsh
//! completion in `/usr/share/zsh/site-functions`. `%post` creates the `pg-hardstorage`
//! system user and the three 0750 directories (packaging/rpm/post), `%preun` stops the
//! units on erase, `%postun` removes an empty log directory. The binary is static, so the
//! package requires nothing but `useradd` for `%post`.
//!
//! The check lists the package (`rpm -qlp`: every file the .deb installs, at its RPM path,
//! with its mode), reads its scriptlets, then installs it with `rpm --root M --nodeps -i`
//! where `M` is an overlay of this machine's `/` with a scratch upper directory, in a
//! private mount namespace: the scriptlets run (chrooted by rpm) with a real shell,
//! `useradd` and `install`, and everything they change lands in the upper directory
//! only, where the check reads it: the user, the directories' modes and owners, the files.
//! It installs once more (`--replacepkgs`: `%post` must be idempotent), runs the
//! installed binary, then erases the package and checks what went and what stayed.

use crate::dist::{check_unit_keys, Release, PACKAGE, SERVICE_DIRS, USER};
use crate::util::{run_capture, sh, succeeds};
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the .deb's paths move in the .rpm.
const RELOCATE: [(&str, &str); 2] = [
    ("lib/systemd/system/", "usr/lib/systemd/system/"),
    (
        "usr/share/zsh/vendor-completions/",
        "usr/share/zsh/site-functions/",
    ),
];
const SCRIPTLETS: [&str; 3] = ["post", "preun", "postun"];

/// The .rpm path of a path of the .deb's tree (relative, no leading `/`).
fn rpm_path(deb_path: &str) -> String {
    for (from, to) in RELOCATE {
        if let Some(rest) = deb_path.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    deb_path.to_owned()
}

/// Regular files of the staged tree, relative, sorted, with their modes.
fn tree_files(tree: &Path) -> Result<BTreeMap<String, u32>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir)? {
            let p = e?.path();
            let rel = p.strip_prefix(tree)?.to_string_lossy().into_owned();
            if rel == "DEBIAN" {
                continue;
            }
            let m = fs::symlink_metadata(&p)?;
            if m.is_dir() {
                stack.push(p);
            } else {
                out.insert(rel, m.mode() & 0o7777);
            }
        }
    }
    Ok(out)
}

/// Builds `<dist>/pg-hardstorage-<version>-1.x86_64.rpm` from the staged tree.
pub fn build(rel: &Release, tree: &Path) -> Result<PathBuf> {
    ensure!(
        succeeds("rpmbuild", &["--version"]),
        "rpmbuild is missing: install it with `apt-get install -y rpm`"
    );
    let work = rel.dist.join("rpm");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    let stage = work.join("root");
    let files = tree_files(tree)?;
    for (path, mode) in &files {
        let dest = stage.join(rpm_path(path));
        fs::create_dir_all(dest.parent().context("file without a parent")?)?;
        fs::copy(tree.join(path), &dest)?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(*mode))?;
    }
    let spec = work.join(format!("{PACKAGE}.spec"));
    fs::write(&spec, spec_text(rel, &stage, &files)?)?;
    sh(Command::new("rpmbuild")
        .arg("-bb")
        .arg("--define")
        .arg(format!("_topdir {}", work.join("top").display()))
        .arg("--define")
        .arg(format!("_rpmdir {}", work.display()))
        .arg(&spec)
        .env("SOURCE_DATE_EPOCH", rel.epoch.to_string()))?;
    let built = work
        .join("x86_64")
        .join(format!("{PACKAGE}-{}-1.x86_64.rpm", rpm_version(rel)));
    ensure!(
        built.is_file(),
        "rpmbuild did not write {}",
        built.display()
    );
    let out = rel.dist.join(built.file_name().context("rpm name")?);
    fs::rename(&built, &out)?;
    Ok(out)
}

/// RPM versions allow no `-`; a pre-release `1.0.0-rc.1` becomes `1.0.0~rc.1` (sorts before 1.0.0).
fn rpm_version(rel: &Release) -> String {
    rel.version.replace('-', "~")
}

fn spec_text(rel: &Release, stage: &Path, files: &BTreeMap<String, u32>) -> Result<String> {
    let mut scripts = String::new();
    for s in SCRIPTLETS {
        let body = fs::read_to_string(rel.root.join("packaging/rpm").join(s))
            .with_context(|| format!("packaging/rpm/{s}"))?;
        scripts.push_str(&format!("%{s}\n{body}\n"));
    }
    let mut list = String::new();
    list.push_str(&format!("%dir /usr/share/doc/{PACKAGE}\n"));
    list.push_str(&format!("%dir /usr/share/doc/{PACKAGE}/examples\n"));
    for (path, mode) in files {
        list.push_str(&format!(
            "%attr({mode:04o},root,root) /{}\n",
            rpm_path(path)
        ));
    }
    Ok(format!(
        "Name: {PACKAGE}
Version: {version}
Release: 1
Summary: PostgreSQL backups built on continuous WAL streaming
License: Apache-2.0
URL: https://example.invalid/pg_hardstorage
BuildArch: x86_64
AutoReqProv: no
Requires(post): /usr/sbin/useradd
%define debug_package %{{nil}}
%define __os_install_post %{{nil}}
%define _build_id_links none
%define _binary_payload w6.xzdio
%define _source_date_epoch_from_changelog 0
%define clamp_mtime_to_source_date_epoch 1
%define use_source_date_epoch_as_buildtime 1

%description
pg_hardstorage takes physical backups of PostgreSQL 15+ over the replication
protocol and streams WAL continuously through a replication slot into a
deduplicated, compressed and encrypted repository (file, S3, GCS, Azure Blob,
SFTP), and restores to any point in time. A statically linked binary, systemd
units, man pages and shell completions; %post creates the pg-hardstorage user.

%install
mkdir -p %{{buildroot}}
cp -a {stage}/. %{{buildroot}}/

{scripts}
%files
{list}",
        version = rpm_version(rel),
        stage = stage.display(),
    ))
}

/// Lists, inspects, installs into an overlay root, reinstalls and erases the package.
pub fn check(rel: &Release, rpm: &Path, tree: &Path) -> Result<()> {
    let files = tree_files(tree)?;
    check_listing(rpm, &files)?;
    let scripts = run_capture(Command::new("rpm").arg("-qp").arg("--scripts").arg(rpm))?;
    for want in [
        "postinstall scriptlet",
        "useradd --system",
        "install -d -m 0750",
    ] {
        ensure!(
            scripts.contains(want),
            "the .rpm's scriptlets lack {want:?}:\n{scripts}"
        );
    }

    let work = rel.dist.join("rpm-check");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    for d in ["up", "work", "merged"] {
        fs::create_dir_all(work.join(d))?;
    }
    let rpm_arg = rpm.display().to_string();
    let installed = overlay(
        &work,
        &format!(
            "if chroot \"$M\" getent passwd {USER} >/dev/null; then chroot \"$M\" userdel {USER}; fi
rpm --root \"$M\" --dbpath /var/lib/rpm --nodeps -i {rpm_arg}
rpm --root \"$M\" --dbpath /var/lib/rpm --nodeps -i --replacepkgs {rpm_arg}
rpm --root \"$M\" --dbpath /var/lib/rpm --nodeps -V {PACKAGE}
chroot \"$M\" getent passwd {USER}
chroot \"$M\" /usr/bin/pg_hardstorage version"
        ),
    )?;
    let lines: Vec<&str> = installed.lines().collect();
    ensure!(lines.len() >= 2, "unexpected output: {installed:?}");
    let version = lines[lines.len() - 1];
    ensure!(
        version == rel.version_line,
        "the .rpm's binary says {version:?}, the built one {:?}",
        rel.version_line
    );
    check_installed(&work.join("up"), lines[lines.len() - 2], &files)?;

    overlay(
        &work,
        &format!("rpm --root \"$M\" --dbpath /var/lib/rpm --nodeps -e {PACKAGE}"),
    )?;
    let up = work.join("up");
    for gone in ["usr/bin/pg_hardstorage", "var/log/pg_hardstorage"] {
        ensure!(
            !present(&up.join(gone)),
            "/{gone} is still there after rpm -e"
        );
    }
    for kept in ["etc/pg_hardstorage", "var/lib/pg_hardstorage"] {
        ensure!(up.join(kept).is_dir(), "rpm -e removed /{kept}");
    }
    fs::remove_dir_all(&work)?;
    Ok(())
}

/// `rpm -qlp` with modes: exactly the .deb's files at their RPM paths, plus the doc dirs.
fn check_listing(rpm: &Path, files: &BTreeMap<String, u32>) -> Result<()> {
    let listing = run_capture(
        Command::new("rpm")
            .arg("-qp")
            .arg("--qf")
            .arg("[%{FILEMODES:octal} %{FILENAMES}\n]")
            .arg(rpm),
    )?;
    let mut got = BTreeMap::new();
    for line in listing.lines() {
        let (mode, path) = line.split_once(' ').context("odd rpm -qp line")?;
        let mode = u32::from_str_radix(mode, 8).context("rpm file mode")?;
        if mode & 0o170000 == 0o040000 {
            ensure!(
                path.starts_with(&format!("/usr/share/doc/{PACKAGE}")),
                "the .rpm owns the directory {path}"
            );
            continue;
        }
        got.insert(path.to_owned(), mode & 0o7777);
    }
    let want: BTreeMap<String, u32> = files
        .iter()
        .map(|(p, m)| (format!("/{}", rpm_path(p)), *m))
        .collect();
    ensure!(
        got == want,
        "rpm -qlp does not list the .deb's files:\n.rpm: {got:?}\n.deb: {want:?}"
    );
    let plain = run_capture(Command::new("rpm").arg("-qlp").arg(rpm))?;
    ensure!(
        plain.lines().any(|l| l == "/usr/bin/pg_hardstorage"),
        "rpm -qlp does not list /usr/bin/pg_hardstorage"
    );
    eprintln!("rpm -qlp: {} files, the .deb's", got.len());
    Ok(())
}

/// What `rpm -i` left in the overlay's upper directory.
fn check_installed(up: &Path, passwd: &str, files: &BTreeMap<String, u32>) -> Result<()> {
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    ensure!(
        fields.len() == 7 && fields[0] == USER,
        "odd passwd entry: {passwd:?}"
    );
    let (uid, gid): (u32, u32) = (fields[2].parse()?, fields[3].parse()?);
    ensure!(uid < 1000, "{USER} has uid {uid}: not a system user");
    ensure!(
        fs::read_to_string(up.join("etc/passwd"))?.contains(&format!("{USER}:x:{uid}:")),
        "%post did not add {USER} to /etc/passwd"
    );
    for dir in SERVICE_DIRS {
        let m = fs::metadata(up.join(dir.trim_start_matches('/')))
            .with_context(|| format!("%post did not create {dir}"))?;
        ensure!(
            m.is_dir() && m.mode() & 0o7777 == 0o750,
            "{dir} has mode {:o}, want 750",
            m.mode() & 0o7777
        );
        ensure!(
            (m.uid(), m.gid()) == (uid, gid),
            "{dir} is owned by {}:{}, want {uid}:{gid}",
            m.uid(),
            m.gid()
        );
    }
    for (path, mode) in files {
        let p = up.join(rpm_path(path));
        let m = fs::metadata(&p).with_context(|| format!("/{} not installed", rpm_path(path)))?;
        ensure!(
            m.mode() & 0o7777 == *mode && m.uid() == 0,
            "/{} has mode {:o} owner {}, want {mode:o} root",
            rpm_path(path),
            m.mode() & 0o7777,
            m.uid()
        );
    }
    let units = up.join("usr/lib/systemd/system");
    for unit in ["pg_hardstorage.service", "pg_hardstorage@.service"] {
        check_unit_keys(unit, &fs::read_to_string(units.join(unit))?)?;
    }
    eprintln!(
        "rpm -i: {} files, user {USER} ({uid}:{gid}), directories 0750",
        files.len()
    );
    Ok(())
}

/// A path that exists in the merged view: an overlay whiteout (a 0:0 character device)
/// in the upper directory means deleted.
fn present(p: &Path) -> bool {
    match fs::symlink_metadata(p) {
        Ok(m) => !(m.file_type().is_char_device() && m.rdev() == 0),
        Err(_) => false,
    }
}

/// Runs `script` (sh, `$M` = the merged root) in a private mount namespace where
/// `<work>/merged` is an overlay of `/` with the upper directory `<work>/up`, and `/dev`,
/// `/proc` are mounted in it for the scriptlets. Returns stdout.
fn overlay(work: &Path, script: &str) -> Result<String> {
    let setup = format!(
        "set -eu
M={merged}
mount -t overlay overlay -o lowerdir=/,upperdir={up},workdir={wd} \"$M\"
mount --rbind /dev \"$M/dev\"
mount -t proc proc \"$M/proc\"
{script}
",
        merged = work.join("merged").display(),
        up = work.join("up").display(),
        wd = work.join("work").display(),
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &setup])
        .output()
        .context("could not start unshare")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "in the overlay root ({}):\n{script}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    Ok(stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpm_paths_move_units_and_zsh_only() {
        assert_eq!(
            rpm_path("lib/systemd/system/pg_hardstorage.service"),
            "usr/lib/systemd/system/pg_hardstorage.service"
        );
        assert_eq!(
            rpm_path("usr/share/zsh/vendor-completions/_pg_hardstorage"),
            "usr/share/zsh/site-functions/_pg_hardstorage"
        );
        assert_eq!(rpm_path("usr/bin/pg_hardstorage"), "usr/bin/pg_hardstorage");
    }
}
