//! Restore of a base backup into a data directory, then `pg_verifybackup`.

use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use hs_repo::{BackupManifest, ChunkReader, ChunkRef, FileKind, Repository};
use tokio::task::JoinSet;

use crate::error::{Error, ErrorKind, Result};
use crate::recovery::{write_recovery_config, RecoveryConfig};

/// Which backup to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupSelector {
    /// The newest backup of the deployment.
    Latest,
    /// A backup by id, as shown by `pg_hardstorage list`.
    Id(String),
}

impl FromStr for BackupSelector {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(if s == "latest" {
            BackupSelector::Latest
        } else {
            BackupSelector::Id(s.to_owned())
        })
    }
}

/// Whether to check the restored directory with `pg_verifybackup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyMode {
    /// Run `pg_verifybackup` and fail with `verify.pg_verifybackup_failed` if it objects.
    Run,
    /// Do not run it.
    Skip,
}

/// What to restore, where, and how.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Deployment the backup belongs to.
    pub deployment: String,
    /// The backup to restore.
    pub backup: BackupSelector,
    /// The data directory to create; it must be absent or empty.
    pub target: PathBuf,
    /// Whether to run `pg_verifybackup` on the result.
    pub verify: VerifyMode,
    /// How many chunk reads run at once.
    pub parallelism: usize,
    /// Where PostgreSQL's client programs are; `None` looks in
    /// `/usr/lib/postgresql/<major>/bin` and then on `PATH`.
    pub pg_bin_dir: Option<PathBuf>,
    /// When set, the restored directory is prepared for recovery:
    /// `recovery.signal` and the managed block in `postgresql.auto.conf`
    /// (written after the data is synced and `pg_verifybackup` accepted it).
    pub recovery: Option<RecoveryConfig>,
}

impl RestoreOptions {
    /// Default options: verification on, parallelism from the CPU count.
    pub fn new(deployment: impl Into<String>, backup: BackupSelector, target: PathBuf) -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        RestoreOptions {
            deployment: deployment.into(),
            backup,
            target,
            verify: VerifyMode::Run,
            parallelism: (cpus * 4).clamp(4, 64),
            pg_bin_dir: None,
            recovery: None,
        }
    }
}

/// Receives restore progress. All methods have empty defaults.
pub trait RestoreProgress: Send + Sync {
    /// The restore of `total` bytes started.
    fn start(&self, _total: u64) {}
    /// `bytes` more bytes were written.
    fn advance(&self, _bytes: u64) {}
    /// The restore ended.
    fn finish(&self) {}
}

/// A [`RestoreProgress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRestoreProgress;
impl RestoreProgress for NoRestoreProgress {}

/// What a completed restore reports.
#[derive(Debug, Clone)]
pub struct RestoreSummary {
    /// The backup that was restored.
    pub backup_id: String,
    /// The data directory written.
    pub target: PathBuf,
    /// Regular files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Whether `pg_verifybackup` ran and accepted the result.
    pub verified: bool,
    /// Whether `recovery.signal` and the managed recovery block were written.
    pub recovery_configured: bool,
}

/// Picks the manifest `sel` names for `deployment`.
pub async fn select_backup(
    repo: &Repository,
    deployment: &str,
    sel: &BackupSelector,
) -> Result<BackupManifest> {
    match sel {
        BackupSelector::Latest => {
            let mut all = repo.list_backups(deployment).await?;
            all.pop().ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    "notfound.backup",
                    format!("deployment {deployment:?} has no backups in this repository"),
                )
                .with_suggestion(format!(
                    "take one with `pg_hardstorage backup {deployment}`, or check --repo"
                ))
            })
        }
        BackupSelector::Id(id) => match repo.load_manifest(deployment, id).await {
            Err(e) if e.code().starts_with("notfound.") => Err(Error::new(
                ErrorKind::NotFound,
                "notfound.backup",
                format!("backup {id:?} of deployment {deployment:?} does not exist"),
            )
            .with_suggestion(format!(
                "list the backups with `pg_hardstorage list {deployment}`"
            ))),
            other => Ok(other?),
        },
    }
}

/// The file PostgreSQL needs before it will start; written last, so that a restore that
/// fails part way leaves a directory PostgreSQL refuses to start.
const CONTROL_FILE: &str = "global/pg_control";

struct Unit {
    path: PathBuf,
    offset: u64,
    chunks: Vec<ChunkRef>,
}

/// Restores a base backup into `opts.target` and checks it with `pg_verifybackup`.
pub async fn restore(
    repo: &Repository,
    opts: &RestoreOptions,
    progress: &dyn RestoreProgress,
) -> Result<RestoreSummary> {
    let manifest = select_backup(repo, &opts.deployment, &opts.backup).await?;
    prepare_empty_dir(&opts.target, "target")?;
    let mut roots = Vec::new();
    for a in &manifest.archives {
        match &a.tablespace_location {
            Some(loc) if a.tablespace_oid.is_some() => {
                let p = PathBuf::from(loc);
                prepare_empty_dir(&p, "tablespace location")?;
                roots.push(p);
            }
            _ => roots.push(opts.target.clone()),
        }
    }

    let reader = repo.reader().await?;
    let total: u64 = manifest
        .archives
        .iter()
        .flat_map(|a| a.files.iter())
        .map(|f| f.size)
        .sum();
    progress.start(total);

    // Directories and symlinks first, then file contents in parallel units.
    let mut units = Vec::new();
    let mut files = Vec::new();
    let mut control = None;
    for (a, root) in manifest.archives.iter().zip(&roots) {
        for f in &a.files {
            let path = safe_join(root, &f.path)?;
            match &f.kind {
                FileKind::Dir => {
                    std::fs::create_dir_all(&path)
                        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
                    set_mode(&path, f.mode & 0o7777)?;
                }
                FileKind::Symlink { target } => {
                    make_parent(&path)?;
                    std::os::unix::fs::symlink(target, &path)
                        .map_err(|e| Error::io(format!("symlink {}", path.display()), e))?;
                }
                FileKind::File => {
                    make_parent(&path)?;
                    if a.tablespace_oid.is_none() && f.path == CONTROL_FILE {
                        control = Some(f.clone());
                        continue;
                    }
                    create_file(&path, f.mode, f.size)?;
                    files.push(path.clone());
                    let mut offset = 0;
                    for group in reader.file_chunks(f).await?.chunks(64) {
                        let len: u64 = group.iter().map(|c| u64::from(c.len)).sum();
                        units.push(Unit {
                            path: path.clone(),
                            offset,
                            chunks: group.to_vec(),
                        });
                        offset += len;
                    }
                }
            }
        }
    }

    let written = run_units(&reader, units, opts.parallelism.max(1), progress).await?;

    // One sync per file at the end, then the control file, then the directories.
    for p in &files {
        sync_path(p)?;
    }
    let control = control.ok_or_else(|| {
        Error::new(
            ErrorKind::Repository,
            "verify.backup_incomplete",
            format!("backup {} has no {CONTROL_FILE}", manifest.backup_id),
        )
        .with_suggestion("restore another backup; run `pg_hardstorage verify` on this one")
    })?;
    let control_path = opts.target.join(CONTROL_FILE);
    create_file(&control_path, control.mode, control.size)?;
    let control_units = vec![Unit {
        path: control_path.clone(),
        offset: 0,
        chunks: reader.file_chunks(&control).await?,
    }];
    let written = written + run_units(&reader, control_units, 1, progress).await?;
    sync_path(&control_path)?;

    let manifest_path = opts.target.join("backup_manifest");
    write_new_file(&manifest_path, manifest.pg_backup_manifest.as_bytes())?;
    for root in &roots {
        sync_dirs(root)?;
    }
    progress.finish();

    let verified = match opts.verify {
        VerifyMode::Skip => false,
        VerifyMode::Run => {
            run_pg_verifybackup(opts, &manifest)?;
            true
        }
    };
    // pg_verifybackup ignores recovery.signal and postgresql.auto.conf, but
    // writing them last means a directory that failed verification is never
    // set up to recover.
    if let Some(rc) = &opts.recovery {
        write_recovery_config(&opts.target, rc)?;
    }
    Ok(RestoreSummary {
        backup_id: manifest.backup_id.clone(),
        target: opts.target.clone(),
        files: files.len() as u64 + 1,
        bytes: written,
        verified,
        recovery_configured: opts.recovery.is_some(),
    })
}

async fn run_units(
    reader: &ChunkReader,
    units: Vec<Unit>,
    parallelism: usize,
    progress: &dyn RestoreProgress,
) -> Result<u64> {
    let mut set: JoinSet<Result<u64>> = JoinSet::new();
    let mut written = 0u64;
    let mut it = units.into_iter();
    loop {
        while set.len() < parallelism {
            let Some(u) = it.next() else { break };
            let reader = reader.clone();
            set.spawn(async move { write_unit(&reader, u).await });
        }
        let Some(res) = set.join_next().await else {
            break;
        };
        let n = res.map_err(|e| {
            Error::new(
                ErrorKind::Io,
                "io.restore_task_failed",
                format!("restore task failed: {e}"),
            )
        })??;
        written += n;
        progress.advance(n);
    }
    Ok(written)
}

async fn write_unit(reader: &ChunkReader, u: Unit) -> Result<u64> {
    let file = Arc::new(
        std::fs::OpenOptions::new()
            .write(true)
            .open(&u.path)
            .map_err(|e| Error::io(format!("open {}", u.path.display()), e))?,
    );
    // Consecutive chunks are joined into writes of about 1 MiB: one pwrite per
    // 8 KiB page made the restore syscall-bound.
    const WRITE_BATCH: usize = 1 << 20;
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BATCH);
    let mut buf_off = u.offset;
    let mut off = u.offset;
    for c in &u.chunks {
        let data = reader.read(c).await?;
        if data.len() != c.len as usize {
            return Err(Error::new(
                ErrorKind::Repository,
                "verify.chunk_length_mismatch",
                format!(
                    "chunk {} is {} bytes, the manifest says {}",
                    c.id,
                    data.len(),
                    c.len
                ),
            )
            .with_suggestion("run `pg_hardstorage repo verify` and restore another backup"));
        }
        buf.extend_from_slice(&data);
        off += data.len() as u64;
        if buf.len() >= WRITE_BATCH {
            file.write_all_at(&buf, buf_off)
                .map_err(|e| Error::io(format!("write {}", u.path.display()), e))?;
            buf.clear();
            buf_off = off;
        }
    }
    if !buf.is_empty() {
        file.write_all_at(&buf, buf_off)
            .map_err(|e| Error::io(format!("write {}", u.path.display()), e))?;
    }
    Ok(off - u.offset)
}

fn prepare_empty_dir(p: &Path, what: &str) -> Result<()> {
    match std::fs::read_dir(p) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::new(
                    ErrorKind::Target,
                    "conflict.target_not_empty",
                    format!("the restore {what} {} is not empty", p.display()),
                )
                .with_suggestion(
                    "restore into a new or empty directory; nothing was written to this one",
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(p)
                .map_err(|e| Error::io(format!("create {}", p.display()), e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(Error::new(
                ErrorKind::Target,
                "conflict.target_not_empty",
                format!(
                    "the restore {what} {} is a file, not a directory",
                    p.display()
                ),
            )
            .with_suggestion("restore into a new or empty directory"));
        }
        Err(e) => return Err(Error::io(format!("read {}", p.display()), e)),
    }
    set_mode(p, 0o700)
}

/// Joins an archive path onto a root, refusing anything that could escape it.
fn safe_join(root: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    let ok = !rel.is_empty()
        && p.components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        });
    if !ok {
        return Err(Error::new(
            ErrorKind::Repository,
            "verify.manifest_path_invalid",
            format!("the backup manifest names an unsafe path {rel:?}"),
        )
        .with_suggestion("the manifest is damaged or forged; run `pg_hardstorage verify`"));
    }
    Ok(root.join(p))
}

fn make_parent(p: &Path) -> Result<()> {
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
    }
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    let mode = if mode == 0 { 0o700 } else { mode };
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("chmod {}", p.display()), e))
}

fn create_file(p: &Path, mode: u32, size: u64) -> Result<()> {
    let mode = if mode & 0o777 == 0 {
        0o600
    } else {
        mode & 0o777
    };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(p)
        .map_err(|e| Error::io(format!("create {}", p.display()), e))?;
    f.set_len(size)
        .map_err(|e| Error::io(format!("size {}", p.display()), e))
}

fn write_new_file(p: &Path, data: &[u8]) -> Result<()> {
    create_file(p, 0o600, 0)?;
    std::fs::write(p, data).map_err(|e| Error::io(format!("write {}", p.display()), e))?;
    sync_path(p)
}

fn sync_path(p: &Path) -> Result<()> {
    std::fs::File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(format!("sync {}", p.display()), e))
}

fn sync_dirs(root: &Path) -> Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd =
            std::fs::read_dir(&d).map_err(|e| Error::io(format!("read {}", d.display()), e))?;
        for ent in rd {
            let ent = ent.map_err(|e| Error::io(format!("read {}", d.display()), e))?;
            let ft = ent
                .file_type()
                .map_err(|e| Error::io(format!("stat {}", ent.path().display()), e))?;
            if ft.is_dir() {
                stack.push(ent.path());
            }
        }
        sync_path(&d)?;
    }
    Ok(())
}

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

fn run_pg_verifybackup(opts: &RestoreOptions, manifest: &BackupManifest) -> Result<()> {
    let major = manifest.pg_version / 10000;
    let prog =
        find_pg_program(opts.pg_bin_dir.as_deref(), major, "pg_verifybackup").ok_or_else(|| {
            Error::new(
                ErrorKind::Preflight,
                "preflight.pg_verifybackup_missing",
                format!("pg_verifybackup for PostgreSQL {major} was not found"),
            )
            .with_suggestion(format!(
            "install PostgreSQL {major}'s client programs, pass --pg-bin-dir, or use --verify=skip"
        ))
        })?;
    let out = std::process::Command::new(&prog)
        .arg(&opts.target)
        .output()
        .map_err(|e| Error::io(format!("run {}", prog.display()), e))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().take(5).collect::<Vec<_>>().join("; ");
    Err(Error::new(
        ErrorKind::Verify,
        "verify.pg_verifybackup_failed",
        format!(
            "pg_verifybackup rejected the restored directory {}: {first}",
            opts.target.display()
        ),
    )
    .with_suggestion(
        "do not start this directory; run `pg_hardstorage verify` on the backup and restore another one",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_join_refuses_escapes() {
        let root = Path::new("/r");
        assert_eq!(
            safe_join(root, "base/1/2").unwrap(),
            Path::new("/r/base/1/2")
        );
        for bad in ["", "../x", "/etc/passwd", "a/../../b"] {
            assert_eq!(
                safe_join(root, bad).unwrap_err().code(),
                "verify.manifest_path_invalid",
                "{bad}"
            );
        }
    }

    #[test]
    fn non_empty_target_is_refused_and_untouched() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("keep"), b"x").unwrap();
        let e = prepare_empty_dir(d.path(), "target").unwrap_err();
        assert_eq!(e.code(), "conflict.target_not_empty");
        assert_eq!(std::fs::read(d.path().join("keep")).unwrap(), b"x");
    }

    #[test]
    fn selector_parses() {
        assert_eq!(
            "latest".parse::<BackupSelector>().unwrap(),
            BackupSelector::Latest
        );
        assert_eq!(
            "20260101T000000Z".parse::<BackupSelector>().unwrap(),
            BackupSelector::Id("20260101T000000Z".into())
        );
    }
}
