//! The OCI image `pg_hardstorage_<version>_linux_amd64.oci.tar`, written without a daemon.
//!
//! Distroless style: one layer with the static binary (`/usr/bin/pg_hardstorage`), the CA
//! certificates of this machine's `ca-certificates` package, `/etc/passwd` and
//! `/etc/group` with `root` and `pg-hardstorage` (UID/GID 65532), an `/etc/nsswitch.conf`
//! (`hosts: files dns`: glibc's built-in modules only), `/tmp` (1777), and
//! `/etc/pg_hardstorage` and `/var/lib/pg_hardstorage`, 0750 and owned by 65532. No shell,
//! no package manager. The image config runs as `65532:65532` with entrypoint
//! `/usr/bin/pg_hardstorage`, declares the two directories as volumes, works in
//! `/etc/pg_hardstorage` (so `./pg_hardstorage.yaml` is there), sets
//! `PG_HARDSTORAGE_KEYRING=/etc/pg_hardstorage/keyring`, and
//! carries the `org.opencontainers.image.*` labels (version, revision, created, ...).
//!
//! The layer is a tar made by GNU tar (sorted, owners set explicitly, time stamps from the
//! commit), the config, manifest and index are JSON written here, each blob named by its
//! SHA-256: the OCI image layout, tarred into an `oci-archive` that `skopeo copy
//! oci-archive:FILE docker-daemon:...` or `podman load -i FILE` take.
//!
//! The check uses `skopeo inspect` (labels, architecture, layers) and `skopeo inspect
//! --config` (user, entrypoint, volumes), recomputes every blob's digest and the layer's
//! diff id, unpacks the layer, checks owners and modes and that there is no shell, and runs
//! `version`, `repo init` (the volumes are writable by 65532) and `doctor -o json` (its
//! `repo_writable` and `keyring` checks must pass) from the unpacked root as 65532 with `unshare --root` and the image's environment: containers
//! cannot be started on the machines this runs on.

use crate::dist::Release;
use crate::util::{run_capture, sh, succeeds};
use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The image's user and group.
const UID: u32 = 65532;
/// Directories the image declares as volumes, owned by [`UID`].
const VOLUMES: [&str; 2] = ["/etc/pg_hardstorage", "/var/lib/pg_hardstorage"];
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
const ENTRYPOINT: &str = "/usr/bin/pg_hardstorage";

/// `pg_hardstorage_<version>_linux_amd64.oci.tar`.
fn archive_name(version: &str) -> String {
    format!("pg_hardstorage_{version}_linux_amd64.oci.tar")
}

/// The working directory, where commands find `./pg_hardstorage.yaml` and `init` writes it.
/// Not `PG_HARDSTORAGE_CONFIG`: a config path that names no file is an error
/// (`notfound.config`) for every command, so a fresh volume would refuse even `repo init`.
const WORKDIR: &str = "/etc/pg_hardstorage";

/// The image's environment.
fn env() -> Vec<String> {
    vec![
        "PATH=/usr/bin".to_owned(),
        "HOME=/var/lib/pg_hardstorage".to_owned(),
        "PG_HARDSTORAGE_KEYRING=/etc/pg_hardstorage/keyring".to_owned(),
        format!("SSL_CERT_FILE={CA_BUNDLE}"),
    ]
}

/// Builds the image's oci-archive in `<dist>`.
pub fn build(rel: &Release) -> Result<PathBuf> {
    ensure!(
        Path::new(CA_BUNDLE).is_file(),
        "{CA_BUNDLE} is missing: apt-get install -y ca-certificates"
    );
    let work = rel.dist.join("oci");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    let rootfs = work.join("rootfs");
    stage_rootfs(rel, &rootfs)?;
    let layout = work.join("layout");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;

    let layer_tar = work.join("layer.tar");
    layer(rel, &rootfs, &layer_tar)?;
    let diff_id = sha256(&layer_tar)?;
    let layer_gz = work.join("layer.tar.gz");
    let gz = fs::File::create(&layer_gz)?;
    let status = Command::new("gzip")
        .args(["-9n", "-c"])
        .arg(&layer_tar)
        .stdout(gz)
        .status()?;
    ensure!(status.success(), "gzip failed: {status}");
    let layer_desc = put_blob(
        &blobs,
        &layer_gz,
        "application/vnd.oci.image.layer.v1.tar+gzip",
    )?;

    let created = rfc3339(rel.epoch)?;
    let config = config_json(rel, &created, &diff_id);
    let config_file = work.join("config.json");
    fs::write(&config_file, serde_json::to_vec(&config)?)?;
    let config_desc = put_blob(
        &blobs,
        &config_file,
        "application/vnd.oci.image.config.v1+json",
    )?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
        "annotations": labels(rel, &created),
    });
    let manifest_file = work.join("manifest.json");
    fs::write(&manifest_file, serde_json::to_vec(&manifest)?)?;
    let mut manifest_desc = put_blob(
        &blobs,
        &manifest_file,
        "application/vnd.oci.image.manifest.v1+json",
    )?;
    manifest_desc["annotations"] = json!({ "org.opencontainers.image.ref.name": rel.version });
    manifest_desc["platform"] = json!({ "architecture": "amd64", "os": "linux" });
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_desc],
    });
    fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;

    let out = rel.dist.join(archive_name(&rel.version));
    sh(tar_cmd(rel.epoch)
        .arg("--owner=0")
        .arg("--group=0")
        .arg("--file")
        .arg(&out)
        .arg("-C")
        .arg(&layout)
        .args(["oci-layout", "index.json", "blobs"]))?;
    Ok(out)
}

/// The image config: user, entrypoint, volumes, environment, labels, the layer's diff id.
fn config_json(rel: &Release, created: &str, diff_id: &str) -> Value {
    let volumes: serde_json::Map<String, Value> = VOLUMES
        .iter()
        .map(|v| ((*v).to_owned(), json!({})))
        .collect();
    json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": format!("{UID}:{UID}"),
            "Entrypoint": [ENTRYPOINT],
            "Cmd": ["--help"],
            "Env": env(),
            "WorkingDir": WORKDIR,
            "Volumes": volumes,
            "Labels": labels(rel, created),
        },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
        "history": [{ "created": created, "created_by": "cargo xtask dist (xtask/src/dist_oci.rs)" }],
    })
}

fn labels(rel: &Release, created: &str) -> Value {
    json!({
        "org.opencontainers.image.title": "pg_hardstorage",
        "org.opencontainers.image.description":
            "PostgreSQL backups built on continuous WAL streaming",
        "org.opencontainers.image.version": rel.version,
        "org.opencontainers.image.revision": commit(&rel.version_line),
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.licenses": "Apache-2.0",
    })
}

/// The commit in `pg_hardstorage vX.Y.Z (<commit>, built <time>)`.
fn commit(version_line: &str) -> String {
    version_line
        .split_once('(')
        .and_then(|(_, r)| r.split_once(','))
        .map(|(c, _)| c.trim().to_owned())
        .unwrap_or_default()
}

/// The image's file system, staged with its final modes (owners are set in the tar).
fn stage_rootfs(rel: &Release, rootfs: &Path) -> Result<()> {
    for dir in [
        "usr/bin",
        "etc/ssl/certs",
        "usr/share/doc/pg-hardstorage",
        "tmp",
    ] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    for v in VOLUMES {
        fs::create_dir_all(rootfs.join(v.trim_start_matches('/')))?;
    }
    let put = |path: &str, data: &[u8], mode: u32| -> Result<()> {
        let p = rootfs.join(path);
        fs::write(&p, data)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    put(
        ENTRYPOINT.trim_start_matches('/'),
        &fs::read(&rel.bin)?,
        0o755,
    )?;
    put(
        CA_BUNDLE.trim_start_matches('/'),
        &fs::read(CA_BUNDLE)?,
        0o644,
    )?;
    put(
        "etc/passwd",
        format!(
            "root:x:0:0:root:/root:/sbin/nologin\n\
             pg-hardstorage:x:{UID}:{UID}:pg_hardstorage:/var/lib/pg_hardstorage:/sbin/nologin\n"
        )
        .as_bytes(),
        0o644,
    )?;
    put(
        "etc/group",
        format!("root:x:0:\npg-hardstorage:x:{UID}:\n").as_bytes(),
        0o644,
    )?;
    put(
        "etc/nsswitch.conf",
        b"passwd: files\ngroup: files\nhosts: files dns\n",
        0o644,
    )?;
    put(
        "usr/share/doc/pg-hardstorage/LICENSE",
        &fs::read(rel.root.join("LICENSE"))?,
        0o644,
    )?;
    let mut stack = vec![rootfs.to_path_buf()];
    while let Some(d) = stack.pop() {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755))?;
        for e in fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    for v in VOLUMES {
        fs::set_permissions(
            rootfs.join(v.trim_start_matches('/')),
            fs::Permissions::from_mode(0o750),
        )?;
    }
    Ok(())
}

/// GNU tar, reproducible: sorted entries, numeric owners, the commit's time.
fn tar_cmd(epoch: u64) -> Command {
    let mut cmd = Command::new("tar");
    cmd.args(["--create", "--sort=name", "--numeric-owner", "--format=gnu"])
        .arg(format!("--mtime=@{epoch}"));
    cmd
}

/// The layer tar: everything root-owned, then the volume directories appended as 65532.
fn layer(rel: &Release, rootfs: &Path, out: &Path) -> Result<()> {
    let mut first = tar_cmd(rel.epoch);
    first.args(["--owner=0", "--group=0"]);
    for v in VOLUMES {
        first.arg(format!("--exclude=.{v}"));
    }
    sh(first.arg("--file").arg(out).arg("-C").arg(rootfs).arg("."))?;
    let mut append = Command::new("tar");
    append
        .args([
            "--append",
            "--numeric-owner",
            "--format=gnu",
            "--no-recursion",
        ])
        .arg(format!("--owner={UID}"))
        .arg(format!("--group={UID}"))
        .arg(format!("--mtime=@{}", rel.epoch))
        .arg("--file")
        .arg(out)
        .arg("-C")
        .arg(rootfs);
    for v in VOLUMES {
        append.arg(format!(".{v}"));
    }
    sh(&mut append)
}

fn sha256(path: &Path) -> Result<String> {
    let out = run_capture(Command::new("sha256sum").arg(path))?;
    let hex = out.split_whitespace().next().context("sha256sum output")?;
    ensure!(hex.len() == 64, "odd sha256sum output {out:?}");
    Ok(hex.to_owned())
}

/// Moves `file` into the blob directory under its digest; returns its descriptor.
fn put_blob(blobs: &Path, file: &Path, media_type: &str) -> Result<Value> {
    let digest = sha256(file)?;
    let size = fs::metadata(file)?.len();
    fs::rename(file, blobs.join(&digest))?;
    Ok(json!({ "mediaType": media_type, "digest": format!("sha256:{digest}"), "size": size }))
}

fn rfc3339(epoch: u64) -> Result<String> {
    Ok(run_capture(
        Command::new("date")
            .arg("-u")
            .arg("-d")
            .arg(format!("@{epoch}"))
            .arg("+%Y-%m-%dT%H:%M:%SZ"),
    )?
    .trim()
    .to_owned())
}

/// skopeo's view of the image, then its root file system run as 65532.
pub fn check(rel: &Release, archive: &Path) -> Result<()> {
    ensure!(
        succeeds("skopeo", &["--version"]),
        "skopeo is missing: apt-get install -y skopeo"
    );
    let reference = format!("oci-archive:{}", archive.display());
    let inspect: Value = serde_json::from_str(&run_capture(
        Command::new("skopeo").args(["inspect", &reference]),
    )?)?;
    ensure!(
        inspect["Architecture"] == "amd64" && inspect["Os"] == "linux",
        "skopeo inspect: {inspect}"
    );
    let labels = &inspect["Labels"];
    ensure!(
        labels["org.opencontainers.image.version"] == rel.version.as_str()
            && labels["org.opencontainers.image.revision"] == commit(&rel.version_line).as_str(),
        "labels: {labels}"
    );
    let config: Value = serde_json::from_str(&run_capture(
        Command::new("skopeo").args(["inspect", "--config", &reference]),
    )?)?;
    let c = &config["config"];
    ensure!(c["User"] == format!("{UID}:{UID}"), "User: {}", c["User"]);
    ensure!(
        c["Entrypoint"] == json!([ENTRYPOINT]),
        "Entrypoint: {}",
        c["Entrypoint"]
    );
    for v in VOLUMES {
        ensure!(
            c["Volumes"].get(v).is_some(),
            "no volume {v}: {}",
            c["Volumes"]
        );
    }
    eprintln!(
        "skopeo inspect: user {}, entrypoint {}, volumes {}, version {}",
        c["User"], c["Entrypoint"], c["Volumes"], labels["org.opencontainers.image.version"]
    );
    let env: Vec<String> = c["Env"]
        .as_array()
        .context("Env")?
        .iter()
        .filter_map(|e| e.as_str().map(str::to_owned))
        .collect();
    let work = rel.dist.join("oci-check");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    let rootfs = unpack(archive, &work)?;
    check_rootfs(&rootfs)?;
    run_rootfs(rel, &rootfs, &env)?;
    fs::remove_dir_all(&work)?;
    Ok(())
}

/// Extracts the archive, checks every blob's digest and the layer's diff id, and unpacks
/// the layer as root (owners kept); returns the root file system.
fn unpack(archive: &Path, work: &Path) -> Result<PathBuf> {
    let layout = work.join("layout");
    fs::create_dir_all(&layout)?;
    sh(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&layout))?;
    let blobs = layout.join("blobs/sha256");
    for e in fs::read_dir(&blobs)? {
        let p = e?.path();
        let name = p
            .file_name()
            .context("blob")?
            .to_string_lossy()
            .into_owned();
        ensure!(sha256(&p)? == name, "blob {name} does not match its digest");
    }
    let blob = |digest: &Value| -> Result<PathBuf> {
        let d = digest.as_str().context("digest")?;
        Ok(blobs.join(d.strip_prefix("sha256:").context("sha256 digest")?))
    };
    let index: Value = serde_json::from_slice(&fs::read(layout.join("index.json"))?)?;
    let manifest: Value =
        serde_json::from_slice(&fs::read(blob(&index["manifests"][0]["digest"])?)?)?;
    let config: Value = serde_json::from_slice(&fs::read(blob(&manifest["config"]["digest"])?)?)?;
    let layers = manifest["layers"].as_array().context("layers")?;
    ensure!(layers.len() == 1, "{} layers, want 1", layers.len());
    let layer = blob(&layers[0]["digest"])?;
    let plain = work.join("layer.tar");
    let status = Command::new("gzip")
        .arg("-dc")
        .arg(&layer)
        .stdout(fs::File::create(&plain)?)
        .status()?;
    ensure!(status.success(), "gunzip of the layer failed");
    let diff_id = format!("sha256:{}", sha256(&plain)?);
    ensure!(
        config["rootfs"]["diff_ids"][0] == diff_id.as_str(),
        "the layer's diff id {diff_id} is not the config's {}",
        config["rootfs"]["diff_ids"]
    );
    let rootfs = work.join("rootfs");
    fs::create_dir_all(&rootfs)?;
    sh(Command::new("tar")
        .args(["-xpf"])
        .arg(&plain)
        .arg("--numeric-owner")
        .arg("-C")
        .arg(&rootfs))?;
    Ok(rootfs)
}

/// Owners, modes, the CA bundle, the passwd entry, and no shell.
fn check_rootfs(rootfs: &Path) -> Result<()> {
    for v in VOLUMES {
        let m = fs::metadata(rootfs.join(v.trim_start_matches('/')))?;
        ensure!(
            m.uid() == UID && m.gid() == UID && m.mode() & 0o7777 == 0o750,
            "{v} is {}:{} mode {:o}, want {UID}:{UID} 750",
            m.uid(),
            m.gid(),
            m.mode() & 0o7777
        );
    }
    let bin = fs::metadata(rootfs.join(ENTRYPOINT.trim_start_matches('/')))?;
    ensure!(
        bin.uid() == 0 && bin.mode() & 0o7777 == 0o755,
        "{ENTRYPOINT} is owned by {} mode {:o}",
        bin.uid(),
        bin.mode() & 0o7777
    );
    ensure!(
        fs::metadata(rootfs.join(CA_BUNDLE.trim_start_matches('/')))?.len() > 10_000,
        "the CA bundle is missing or tiny"
    );
    let passwd = fs::read_to_string(rootfs.join("etc/passwd"))?;
    ensure!(
        passwd.contains(&format!(":x:{UID}:{UID}:")),
        "no {UID} in /etc/passwd"
    );
    for shell in [
        "bin/sh",
        "usr/bin/sh",
        "bin/bash",
        "usr/bin/apt",
        "usr/bin/dpkg",
    ] {
        ensure!(
            !rootfs.join(shell).exists(),
            "the image has /{shell}: it should be distroless"
        );
    }
    Ok(())
}

/// `version`, `repo init` into the volume and `doctor -o json`, as 65532 with the image's
/// environment, from the unpacked root.
fn run_rootfs(rel: &Release, rootfs: &Path, env: &[String]) -> Result<()> {
    let run = |args: &[&str]| {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--root"])
            .arg(rootfs)
            .args(["--wd", WORKDIR])
            .arg(format!("--setuid={UID}"))
            .arg(format!("--setgid={UID}"))
            .arg(ENTRYPOINT)
            .args(args)
            .env_clear();
        for e in env {
            if let Some((k, v)) = e.split_once('=') {
                cmd.env(k, v);
            }
        }
        cmd
    };
    let version = run_capture(&mut run(&["version"]))?;
    ensure!(
        version.trim() == rel.version_line,
        "the image's binary says {:?}, the built one {:?}",
        version.trim(),
        rel.version_line
    );
    sh(&mut run(&[
        "repo",
        "init",
        "file:///var/lib/pg_hardstorage/repo",
    ]))?;
    let keyring = fs::metadata(rootfs.join("etc/pg_hardstorage/keyring"))
        .context("repo init wrote no keyring into the /etc/pg_hardstorage volume")?;
    ensure!(
        keyring.uid() == UID && keyring.mode() & 0o777 == 0o600,
        "the keyring is {} mode {:o}",
        keyring.uid(),
        keyring.mode() & 0o777
    );
    // No PostgreSQL here: the config and connection checks report issues, but the
    // repository in the volume must take writes and the keyring must unwrap its key.
    let text = run_capture(&mut run(&[
        "doctor",
        "image",
        "--repo",
        "file:///var/lib/pg_hardstorage/repo",
        "-o",
        "json",
    ]))?;
    let doctor: Value = serde_json::from_str(&text)
        .with_context(|| format!("doctor -o json printed no JSON: {text}"))?;
    let checks = doctor["result"]["deployments"][0]["checks"]
        .as_array()
        .with_context(|| format!("doctor -o json: no checks in {doctor}"))?;
    for name in ["repo_writable", "keyring"] {
        let check = checks
            .iter()
            .find(|c| c["name"] == name)
            .with_context(|| format!("doctor -o json has no {name} check"))?;
        ensure!(check["state"] == "ok", "doctor's {name} check: {check}");
        eprintln!("doctor -o json: {name}: {}", check["detail"]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_revision_label_is_the_version_lines_commit() {
        assert_eq!(
            commit("pg_hardstorage v0.1.0 (5a636c5c3d1e, built 2026-12-06T04:23:13Z)"),
            "5a636c5c3d1e"
        );
        assert_eq!(commit("pg_hardstorage v0.1.0"), "");
    }
}
