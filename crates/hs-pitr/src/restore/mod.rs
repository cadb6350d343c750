//! Restore of a base backup into a data directory, then `pg_verifybackup`.

use std::collections::HashMap;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use hs_base::code;
use hs_repo::{ArchiveEntry, BackupManifest, ChunkReader, ChunkRef, FileKind, Repository};
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
    /// The data directory to create; it must be absent or empty unless `delta` is set.
    pub target: PathBuf,
    /// Restore over an existing data directory (no server running in it): keep the
    /// files whose content already matches the backup, rewrite the chunks that differ,
    /// remove what the backup does not have.
    pub delta: bool,
    /// Where tablespaces go instead of their original locations.
    pub tablespace_mapping: Vec<TablespaceMapping>,
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
            delta: false,
            tablespace_mapping: Vec::new(),
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
    /// Regular files in the backup (all present in the target now).
    pub files: u64,
    /// Bytes read from the repository and written into the target.
    pub bytes: u64,
    /// Regular files that already matched the backup and were kept (`delta`).
    pub files_kept: u64,
    /// Regular files written in whole or in part (`files - files_kept`).
    pub files_written: u64,
    /// Entries of the target that the backup does not have and that were removed
    /// (`delta`); a removed directory counts once.
    pub removed: u64,
    /// Where each tablespace was restored: its OID and directory.
    pub tablespaces: Vec<(u32, PathBuf)>,
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
        // The newest backup, refused (naming it) if its manifest is damaged: never an
        // older one in its place (`verify.latest_backup_damaged`).
        BackupSelector::Latest => match repo.latest_backup(deployment).await {
            Err(e) if e.code() == code::NOTFOUND_BACKUP => Err(Error::new(
                ErrorKind::NotFound,
                "notfound.backup",
                format!("deployment {deployment:?} has no backups in this repository"),
            )
            .with_suggestion(format!(
                "take one with `pg_hardstorage backup {deployment}`, or check --repo"
            ))),
            other => Ok(other?),
        },
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

/// PostgreSQL's own manifest, put back after the files (it is not an archive entry).
const PG_MANIFEST_FILE: &str = "backup_manifest";

/// One `--tablespace-mapping OLDDIR=NEWDIR` (pg_basebackup `-T` semantics): the
/// tablespace that was at `old_dir` on the server is restored into `new_dir`, and its
/// `pg_tblspc` symlink points there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablespaceMapping {
    /// The tablespace's location on the backed-up server.
    pub old_dir: PathBuf,
    /// Where to restore it instead.
    pub new_dir: PathBuf,
}

impl FromStr for TablespaceMapping {
    type Err = Error;
    /// Parses `OLDDIR=NEWDIR`; `\=` stands for a literal `=`; both must be absolute.
    fn from_str(s: &str) -> Result<Self> {
        let mut parts = [String::new(), String::new()];
        let mut i = 0;
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&'=') => {
                    chars.next();
                    parts[i].push('=');
                }
                '=' if i == 0 => i = 1,
                '=' => return Err(mapping_error(s, "it has more than one unescaped '='")),
                c => parts[i].push(c),
            }
        }
        if i == 0 {
            return Err(mapping_error(s, "it has no '='"));
        }
        let [old, new] = parts;
        let old_dir = normalize_abs(&old).ok_or_else(|| {
            mapping_error(s, "the old directory is not an absolute path without '..'")
        })?;
        let new_dir = normalize_abs(&new).ok_or_else(|| {
            mapping_error(s, "the new directory is not an absolute path without '..'")
        })?;
        Ok(TablespaceMapping { old_dir, new_dir })
    }
}

fn mapping_error(arg: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::Usage,
        "usage.tablespace_mapping_invalid",
        format!("tablespace mapping {arg:?} is not usable: {why}"),
    )
    .with_suggestion(
        "write --tablespace-mapping OLDDIR=NEWDIR with absolute paths (as pg_basebackup -T)",
    )
}

/// An absolute path without `..`, with `.`, repeated and trailing slashes removed.
fn normalize_abs(p: &str) -> Option<PathBuf> {
    let path = Path::new(p);
    if !path.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::RootDir | std::path::Component::CurDir => {}
            std::path::Component::Normal(n) => out.push(n),
            _ => return None,
        }
    }
    Some(out)
}

struct Unit {
    path: PathBuf,
    offset: u64,
    chunks: Vec<ChunkRef>,
}

/// A file of the backup that already exists in a `--delta` target and is compared
/// chunk by chunk.
struct Existing {
    path: PathBuf,
    mode: u32,
    size: u64,
    chunks: Vec<ChunkRef>,
}

/// Restores a base backup into `opts.target` and checks it with `pg_verifybackup`.
///
/// With [`RestoreOptions::delta`] the target may already hold a data directory (of
/// this cluster or an older restore of it): files whose content already hashes to the
/// backup's chunk ids are kept, differing chunks are rewritten in place, and entries
/// that are not in the backup are removed (symlinks are removed, never followed).
pub async fn restore(
    repo: &Repository,
    opts: &RestoreOptions,
    progress: &dyn RestoreProgress,
) -> Result<RestoreSummary> {
    restore_until(repo, opts, progress, std::future::pending()).await
}

/// [`restore`] that stops as soon as `stop` resolves (to what stopped it, e.g.
/// `SIGTERM`): the work in flight (and a running `pg_verifybackup`) is dropped, the
/// lease is released, and the result is `aborted.signal`. The target then holds no
/// `global/pg_control`, so it cannot be started by mistake; `restore --delta` into it
/// continues the work.
pub async fn restore_until(
    repo: &Repository,
    opts: &RestoreOptions,
    progress: &dyn RestoreProgress,
    stop: impl std::future::Future<Output = String>,
) -> Result<RestoreSummary> {
    // A lease like a backup's, taken before the manifest is read and held to the end:
    // if `rotate --apply` drops this backup meanwhile, `repo gc` waits for the restore
    // before deleting its packs. A store that refuses the write (read-only credentials)
    // does not stop a restore; it is logged and only gc's grace period protects it.
    let lease = match repo
        .acquire_lease(
            hs_repo::LeaseKind::Shared,
            &format!("restore {}", opts.deployment),
            &hs_repo::LeaseOptions::backup(),
        )
        .await
    {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(
                code = e.code(),
                "restoring without a repository lease ({e}); a concurrent `repo gc --apply` \
                 could delete packs of a backup that `rotate` dropped meanwhile"
            );
            None
        }
    };
    let summary = tokio::select! {
        biased;
        what = stop => Err(aborted(opts, &what)),
        s = restore_leased(repo, opts, progress) => s,
    };
    if let Some(l) = lease {
        if let Err(e) = l.release().await {
            tracing::warn!(error = %e, "releasing the restore's lease failed; it lapses on its own");
        }
    }
    if summary
        .as_ref()
        .is_err_and(|e| e.kind() == ErrorKind::Aborted)
    {
        // Written before `pg_verifybackup` runs: removed (once the work in flight was
        // dropped), so the unverified, unconfigured directory cannot be started.
        let _ = std::fs::remove_file(opts.target.join(CONTROL_FILE));
    }
    summary
}

/// A restore stopped by `what`.
fn aborted(opts: &RestoreOptions, what: &str) -> Error {
    Error::new(
        ErrorKind::Aborted,
        "aborted.signal",
        format!(
            "the restore into {} was stopped by {what} before it completed; the directory \
                 is incomplete and has no global/pg_control, so it cannot be started",
            opts.target.display()
        ),
    )
    .with_suggestion(
        "run the same restore again with --delta to complete it (files already written \
             are kept), or remove the directory",
    )
}

async fn restore_leased(
    repo: &Repository,
    opts: &RestoreOptions,
    progress: &dyn RestoreProgress,
) -> Result<RestoreSummary> {
    let manifest = select_backup(repo, &opts.deployment, &opts.backup).await?;
    let roots = archive_roots(&manifest, opts)?;

    // Check every root before creating any, so a refusal leaves nothing behind.
    let mut removed = 0u64;
    for (a, root) in manifest.archives.iter().zip(&roots) {
        let role = if is_tablespace(a) {
            DirRole::Tablespace
        } else {
            DirRole::Target
        };
        if opts.delta {
            check_delta_dir(root, role)?;
        } else {
            check_empty_dir(root, role)?;
        }
    }
    for (a, root) in manifest.archives.iter().zip(&roots) {
        create_root(root)?;
        if opts.delta {
            let expected = expected_entries(a, !is_tablespace(a));
            removed += remove_extraneous(root, &expected, &roots)?;
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
    let mut existing = Vec::new();
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
                    let target = link_target(a, &f.path, target, &manifest, &roots);
                    let same = std::fs::read_link(&path).is_ok_and(|t| t == Path::new(&target));
                    if !same {
                        make_parent(&path)?;
                        std::os::unix::fs::symlink(&target, &path)
                            .map_err(|e| Error::io(format!("symlink {}", path.display()), e))?;
                    }
                }
                FileKind::File => {
                    make_parent(&path)?;
                    if !is_tablespace(a) && f.path == CONTROL_FILE {
                        control = Some(f.clone());
                        continue;
                    }
                    files.push(path.clone());
                    let chunks = reader
                        .file_chunks(f)
                        .await
                        .map_err(|e| reading(e.into(), &manifest, &f.path))?;
                    check_chunk_total(&f.path, f.size, &chunks)?;
                    let is_file = opts.delta
                        && std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
                    if is_file {
                        existing.push(Existing {
                            path,
                            mode: f.mode,
                            size: f.size,
                            chunks,
                        });
                        continue;
                    }
                    create_file(&path, f.mode, f.size)?;
                    let mut offset = 0;
                    for group in chunks.chunks(64) {
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
    let (files_kept, delta_units) = compare_existing(repo, existing, progress).await?;
    let files_written = (files.len() as u64 - files_kept) + 1;
    units.extend(delta_units);

    let written = run_units(&reader, units, opts.parallelism.max(1), progress)
        .await
        .map_err(|e| of_backup(e, &manifest))?;

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
        chunks: reader
            .file_chunks(&control)
            .await
            .map_err(|e| reading(e.into(), &manifest, CONTROL_FILE))?,
    }];
    let written = written
        + run_units(&reader, control_units, 1, progress)
            .await
            .map_err(|e| of_backup(e, &manifest))?;
    sync_path(&control_path)?;

    let manifest_path = opts.target.join(PG_MANIFEST_FILE);
    write_new_file(&manifest_path, manifest.pg_backup_manifest.as_bytes())?;
    for root in &roots {
        sync_dirs(root)?;
    }
    progress.finish();

    let verified = match opts.verify {
        VerifyMode::Skip => false,
        VerifyMode::Run => {
            run_pg_verifybackup(opts, &manifest).await?;
            true
        }
    };
    // pg_verifybackup ignores recovery.signal and postgresql.auto.conf, but
    // writing them last means a directory that failed verification is never
    // set up to recover.
    if let Some(rc) = &opts.recovery {
        write_recovery_config(&opts.target, rc)?;
    }
    let tablespaces = manifest
        .archives
        .iter()
        .zip(&roots)
        .filter_map(|(a, r)| {
            a.tablespace_oid
                .filter(|_| is_tablespace(a))
                .map(|o| (o, r.clone()))
        })
        .collect();
    Ok(RestoreSummary {
        backup_id: manifest.backup_id.clone(),
        target: opts.target.clone(),
        files: files.len() as u64 + 1,
        bytes: written,
        verified,
        recovery_configured: opts.recovery.is_some(),
        files_kept,
        files_written,
        removed,
        tablespaces,
    })
}

/// A damaged or missing object (`verify.*`, `notfound.*`) met while restoring: the
/// message gains `context` (the file, the backup) and the suggestion is replaced when
/// `suggestion` is not empty. Other errors are returned as they are.
fn named(e: Error, context: String, suggestion: &str) -> Error {
    let code = e.code();
    if !(code.starts_with("verify.") || code.starts_with("notfound.")) {
        return e;
    }
    let s = if suggestion.is_empty() {
        e.suggestion().map(str::to_owned)
    } else {
        Some(suggestion.to_owned())
    };
    let out = Error::new(e.kind(), code, format!("{context}: {e}"));
    match s {
        Some(s) => out.with_suggestion(s),
        None => out,
    }
}

/// [`named`] for reading file `path` of `m` (its chunk lists).
fn reading(e: Error, m: &BackupManifest, path: &str) -> Error {
    named(
        e,
        format!(
            "backup {} of deployment {}: reading file {path}",
            m.backup_id, m.deployment
        ),
        "the pack named is damaged: restore another backup (`pg_hardstorage repo verify` \
         lists the backups that read it; see runbook 4 in docs/runbooks.md)",
    )
}

/// [`named`] with the backup being restored.
fn of_backup(e: Error, m: &BackupManifest) -> Error {
    named(
        e,
        format!("backup {} of deployment {}", m.backup_id, m.deployment),
        "",
    )
}

fn is_tablespace(a: &ArchiveEntry) -> bool {
    a.tablespace_oid.is_some() && a.tablespace_location.is_some()
}

/// The directory each archive is restored into: the target for the base archive, the
/// mapped or original location for a tablespace.
fn archive_roots(manifest: &BackupManifest, opts: &RestoreOptions) -> Result<Vec<PathBuf>> {
    let mut used = vec![false; opts.tablespace_mapping.len()];
    let mut roots = Vec::new();
    for a in &manifest.archives {
        let Some(loc) = a
            .tablespace_location
            .as_deref()
            .filter(|_| is_tablespace(a))
        else {
            roots.push(opts.target.clone());
            continue;
        };
        let loc = normalize_abs(loc).ok_or_else(|| {
            Error::new(
                ErrorKind::Repository,
                "verify.manifest_path_invalid",
                format!("the backup manifest names an unusable tablespace location {loc:?}"),
            )
            .with_suggestion("the manifest is damaged or forged; run `pg_hardstorage verify`")
        })?;
        let dir = match opts
            .tablespace_mapping
            .iter()
            .position(|m| m.old_dir == loc)
        {
            Some(i) => {
                used[i] = true;
                opts.tablespace_mapping[i].new_dir.clone()
            }
            None => loc,
        };
        roots.push(dir);
    }
    if let Some(i) = used.iter().position(|u| !u) {
        let known: Vec<&str> = manifest
            .archives
            .iter()
            .filter_map(|a| a.tablespace_location.as_deref())
            .collect();
        return Err(Error::new(
            ErrorKind::Usage,
            "usage.tablespace_mapping_unmatched",
            format!(
                "--tablespace-mapping names {}, but no tablespace of backup {} was there",
                opts.tablespace_mapping[i].old_dir.display(),
                manifest.backup_id
            ),
        )
        .with_suggestion(if known.is_empty() {
            "this backup has no tablespaces; drop --tablespace-mapping".to_owned()
        } else {
            format!("its tablespaces were at: {}", known.join(", "))
        }));
    }
    // Tablespace directories (the base archive's root is the target, wherever it
    // comes in the archive order) must not nest in the target or in each other.
    let target = normalize_abs(
        &std::path::absolute(&opts.target)
            .unwrap_or_default()
            .to_string_lossy(),
    );
    let ts_roots: Vec<&PathBuf> = manifest
        .archives
        .iter()
        .zip(&roots)
        .filter(|(a, _)| is_tablespace(a))
        .map(|(_, r)| r)
        .collect();
    for (i, r) in ts_roots.iter().enumerate() {
        let overlaps_target = target
            .as_ref()
            .is_some_and(|t| r.starts_with(t) || t.starts_with(r));
        let overlaps_other = ts_roots[..i]
            .iter()
            .any(|o| o.starts_with(r) || r.starts_with(o));
        if overlaps_target || overlaps_other {
            return Err(Error::new(
                ErrorKind::Usage,
                "usage.tablespace_mapping_invalid",
                format!(
                    "tablespace directory {} overlaps the target or another tablespace",
                    r.display()
                ),
            )
            .with_suggestion(
                "map every tablespace to its own directory outside the target with --tablespace-mapping OLDDIR=NEWDIR",
            ));
        }
    }
    Ok(roots)
}

/// The symlink target to write: `pg_tblspc/<oid>` points at where that tablespace is
/// restored; every other link is written as the backup has it.
fn link_target(
    a: &ArchiveEntry,
    rel: &str,
    stored: &str,
    manifest: &BackupManifest,
    roots: &[PathBuf],
) -> String {
    if is_tablespace(a) {
        return stored.to_owned();
    }
    let oid = rel
        .strip_prefix("pg_tblspc/")
        .and_then(|o| o.parse::<u32>().ok());
    oid.and_then(|oid| {
        manifest
            .archives
            .iter()
            .zip(roots)
            .find(|(t, _)| is_tablespace(t) && t.tablespace_oid == Some(oid))
            .map(|(_, r)| r.to_string_lossy().into_owned())
    })
    .unwrap_or_else(|| stored.to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirRole {
    Target,
    Tablespace,
}

fn not_empty(p: &Path, role: DirRole, what: &str) -> Error {
    match role {
        DirRole::Target => Error::new(
            ErrorKind::Target,
            "conflict.target_not_empty",
            format!("the restore target {} {what}", p.display()),
        )
        .with_suggestion(
            "restore into a new or empty directory, or pass --delta to reuse the files of a data directory there; nothing was written",
        ),
        DirRole::Tablespace => Error::new(
            ErrorKind::Target,
            "conflict.tablespace_not_empty",
            format!("the tablespace location {} {what}", p.display()),
        )
        .with_suggestion(
            "restore the tablespace elsewhere with --tablespace-mapping OLDDIR=NEWDIR, or empty that directory; nothing was written",
        ),
    }
}

/// Without `--delta`: the directory must be absent or empty.
fn check_empty_dir(p: &Path, role: DirRole) -> Result<()> {
    match std::fs::read_dir(p) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(not_empty(p, role, "is not empty"));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            Err(not_empty(p, role, "is a file, not a directory"))
        }
        Err(e) => Err(Error::io(format!("read {}", p.display()), e)),
    }
}

/// With `--delta`: the target may hold a data directory that no server runs in; a
/// tablespace location may hold only PostgreSQL's `PG_<version>_<catalog>` directories.
fn check_delta_dir(p: &Path, role: DirRole) -> Result<()> {
    let names: Vec<std::ffi::OsString> = match std::fs::read_dir(p) {
        Ok(rd) => rd
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io(format!("read {}", p.display()), e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(not_empty(p, role, "is a file, not a directory"))
        }
        Err(e) => return Err(Error::io(format!("read {}", p.display()), e)),
    };
    if names.is_empty() {
        return Ok(());
    }
    match role {
        DirRole::Target => {
            if let Some(pid) = running_postmaster(p)? {
                return Err(Error::new(
                    ErrorKind::Target,
                    "conflict.target_running",
                    format!(
                        "a PostgreSQL server (pid {pid}) is running in the restore target {}",
                        p.display()
                    ),
                )
                .with_suggestion(format!(
                    "stop it first (pg_ctl stop -D {}); nothing was changed",
                    p.display()
                )));
            }
            if !p.join("PG_VERSION").is_file() {
                return Err(Error::new(
                    ErrorKind::Target,
                    "conflict.target_not_data_directory",
                    format!(
                        "--delta restores only over a PostgreSQL data directory, and {} is not empty and has no PG_VERSION",
                        p.display()
                    ),
                )
                .with_suggestion(
                    "point --target at a data directory or an empty one; nothing was changed",
                ));
            }
            Ok(())
        }
        DirRole::Tablespace => {
            if names
                .iter()
                .all(|n| n.to_str().is_some_and(|n| n.starts_with("PG_")))
            {
                Ok(())
            } else {
                Err(not_empty(
                    p,
                    role,
                    "holds files that are not a PostgreSQL tablespace",
                ))
            }
        }
    }
}

/// The pid in `dir/postmaster.pid` when that process is alive.
fn running_postmaster(dir: &Path) -> Result<Option<u32>> {
    let pidfile = dir.join("postmaster.pid");
    let text = match std::fs::read_to_string(&pidfile) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("read {}", pidfile.display()), e)),
    };
    // A single-user backend writes its pid negated.
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i64>().ok())
        .and_then(|p| u32::try_from(p.unsigned_abs()).ok())
        .filter(|p| *p != 0)
    else {
        return Ok(None);
    };
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        // No way to tell here: assume the server is alive.
        return Ok(Some(pid));
    }
    Ok(proc.join(pid.to_string()).exists().then_some(pid))
}

fn create_root(p: &Path) -> Result<()> {
    if !p.exists() {
        std::fs::create_dir_all(p).map_err(|e| Error::io(format!("create {}", p.display()), e))?;
    }
    set_mode(p, 0o700)
}

/// Relative path -> kind, for every entry the archive restores (with implied parent
/// directories). The base archive also owns `backup_manifest` and the control file,
/// which are rewritten, so they are removed here.
fn expected_entries(a: &ArchiveEntry, base: bool) -> HashMap<PathBuf, &FileKind> {
    const DIR: &FileKind = &FileKind::Dir;
    let mut out = HashMap::new();
    for f in &a.files {
        if base && f.path == CONTROL_FILE {
            continue;
        }
        let p = Path::new(&f.path);
        for anc in p.ancestors().skip(1) {
            if !anc.as_os_str().is_empty() {
                out.entry(anc.to_path_buf()).or_insert(DIR);
            }
        }
        out.insert(p.to_path_buf(), &f.kind);
    }
    out
}

/// Removes everything under `root` that the backup does not restore there, or that has
/// the wrong type; returns how many entries were removed (a directory counts once).
/// Symlinks are removed, never followed; the other restore roots are never touched.
fn remove_extraneous(
    root: &Path,
    expected: &HashMap<PathBuf, &FileKind>,
    roots: &[PathBuf],
) -> Result<u64> {
    let mut removed = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let rd =
            std::fs::read_dir(&dir).map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
        for ent in rd {
            let ent = ent.map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
            let child = rel.join(ent.file_name());
            let path = ent.path();
            if roots.iter().any(|r| r == &path && r != root) {
                continue;
            }
            let ft = ent
                .file_type()
                .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
            let keep = match expected.get(&child) {
                Some(FileKind::Dir) if ft.is_dir() => {
                    stack.push(child.clone());
                    true
                }
                Some(FileKind::File) => ft.is_file(),
                Some(FileKind::Symlink { .. }) => ft.is_symlink(),
                _ => false,
            };
            if keep {
                continue;
            }
            let res = if ft.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            res.map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
            let rewritten = rel.as_os_str().is_empty() && ent.file_name() == PG_MANIFEST_FILE
                || child == Path::new(CONTROL_FILE);
            if !rewritten {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

fn check_chunk_total(path: &str, size: u64, chunks: &[ChunkRef]) -> Result<()> {
    let sum: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
    if sum == size {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Repository,
        "verify.chunk_length_mismatch",
        format!("the chunks of {path} add up to {sum} bytes, the manifest says {size}"),
    )
    .with_suggestion("run `pg_hardstorage repo verify` and restore another backup"))
}

/// Hashes the existing files of a `--delta` target chunk by chunk, in parallel; returns
/// how many matched completely and the units that rewrite the chunks that differ.
async fn compare_existing(
    repo: &Repository,
    existing: Vec<Existing>,
    progress: &dyn RestoreProgress,
) -> Result<(u64, Vec<Unit>)> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut set: JoinSet<Result<(u64, Vec<Unit>)>> = JoinSet::new();
    let mut kept = 0;
    let mut units = Vec::new();
    let mut it = existing.into_iter();
    loop {
        while set.len() < workers {
            let Some(e) = it.next() else { break };
            let repo = repo.clone();
            set.spawn_blocking(move || {
                let size = e.size;
                let u = delta_units(&repo, e)?;
                let stale: u64 = u
                    .iter()
                    .flat_map(|u| u.chunks.iter())
                    .map(|c| u64::from(c.len))
                    .sum();
                Ok((size - stale, u))
            });
        }
        let Some(res) = set.join_next().await else {
            break;
        };
        let (same, u) = res.map_err(|e| {
            Error::new(
                ErrorKind::Io,
                "io.restore_task_failed",
                format!("restore task failed: {e}"),
            )
        })??;
        progress.advance(same);
        if u.is_empty() {
            kept += 1;
        }
        units.extend(u);
    }
    Ok((kept, units))
}

/// Compares one existing file with its chunks (after setting its size and mode) and
/// returns the units that rewrite the runs of chunks that differ.
fn delta_units(repo: &Repository, e: Existing) -> Result<Vec<Unit>> {
    let io = |what: &str, err| Error::io(format!("{what} {}", e.path.display()), err);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&e.path)
        .map_err(|err| io("open", err))?;
    let len = file.metadata().map_err(|err| io("stat", err))?.len();
    if len != e.size {
        file.set_len(e.size).map_err(|err| io("size", err))?;
    }
    set_mode(&e.path, file_mode(e.mode))?;
    const READ_BLOCK: u64 = 1 << 20;
    let mut buf = Vec::new();
    let mut buf_off = 0u64;
    let mut off = 0u64;
    let mut units = Vec::new();
    let mut run: Option<Unit> = None;
    for c in &e.chunks {
        let clen = u64::from(c.len);
        if off + clen > buf_off + buf.len() as u64 {
            let want = clen.max(READ_BLOCK).min(e.size - off);
            buf.resize(want as usize, 0);
            file.read_exact_at(&mut buf, off)
                .map_err(|err| io("read", err))?;
            buf_off = off;
        }
        let start = (off - buf_off) as usize;
        let same = repo.chunk_id(&buf[start..start + c.len as usize]) == c.id;
        if same {
            units.extend(run.take());
        } else {
            match &mut run {
                Some(u) if u.chunks.len() < 64 => u.chunks.push(*c),
                _ => {
                    units.extend(run.take());
                    run = Some(Unit {
                        path: e.path.clone(),
                        offset: off,
                        chunks: vec![*c],
                    });
                }
            }
        }
        off += clen;
    }
    units.extend(run);
    Ok(units)
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
        let data = reader.read(c).await.map_err(|e| {
            named(
                e.into(),
                format!("restoring {}", u.path.display()),
                "the pack named is damaged: restore another backup (`pg_hardstorage repo \
                 verify` lists the backups that read it; see runbook 4 in docs/runbooks.md)",
            )
        })?;
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

/// The permission bits a restored regular file gets.
fn file_mode(mode: u32) -> u32 {
    if mode & 0o777 == 0 {
        0o600
    } else {
        mode & 0o777
    }
}

fn create_file(p: &Path, mode: u32, size: u64) -> Result<()> {
    let mode = file_mode(mode);
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

/// Runs `pg_verifybackup` without blocking the runtime; dropping the future (a restore
/// stopped by a signal) kills it.
async fn run_pg_verifybackup(opts: &RestoreOptions, manifest: &BackupManifest) -> Result<()> {
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
    let out = tokio::process::Command::new(&prog)
        .arg(&opts.target)
        .kill_on_drop(true)
        .output()
        .await
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
        let e = check_empty_dir(d.path(), DirRole::Target).unwrap_err();
        assert_eq!(e.code(), "conflict.target_not_empty");
        assert!(e.suggestion().unwrap().contains("--delta"));
        let e = check_empty_dir(d.path(), DirRole::Tablespace).unwrap_err();
        assert_eq!(e.code(), "conflict.tablespace_not_empty");
        assert_eq!(std::fs::read(d.path().join("keep")).unwrap(), b"x");
        // --delta refuses a non-empty directory that is not a data directory.
        let e = check_delta_dir(d.path(), DirRole::Target).unwrap_err();
        assert_eq!(e.code(), "conflict.target_not_data_directory");
        let e = check_delta_dir(d.path(), DirRole::Tablespace).unwrap_err();
        assert_eq!(e.code(), "conflict.tablespace_not_empty");
        assert_eq!(std::fs::read(d.path().join("keep")).unwrap(), b"x");
    }

    #[test]
    fn delta_refuses_a_live_postmaster_but_not_a_stale_pid_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("PG_VERSION"), b"15\n").unwrap();
        let me = std::process::id();
        std::fs::write(d.path().join("postmaster.pid"), format!("{me}\n/data\n")).unwrap();
        let e = check_delta_dir(d.path(), DirRole::Target).unwrap_err();
        assert_eq!(e.code(), "conflict.target_running");
        // A pid no process has (pid_max is at most 2^22).
        std::fs::write(d.path().join("postmaster.pid"), b"4194305\n/data\n").unwrap();
        check_delta_dir(d.path(), DirRole::Target).unwrap();
        std::fs::write(d.path().join("postmaster.pid"), b"garbage").unwrap();
        check_delta_dir(d.path(), DirRole::Target).unwrap();
    }

    fn manifest_with_tablespace(loc: &str) -> BackupManifest {
        let archive = |name: &str, oid: Option<u32>, loc: Option<&str>| ArchiveEntry {
            name: name.into(),
            tablespace_oid: oid,
            tablespace_location: loc.map(str::to_owned),
            files: Vec::new(),
        };
        BackupManifest {
            format: 1,
            backup_id: "20260101T000000Z".into(),
            deployment: "d".into(),
            system_identifier: "1".into(),
            timeline: 1,
            start_lsn: "0/2000028".into(),
            stop_lsn: "0/2000100".into(),
            start_time: String::new(),
            stop_time: String::new(),
            pg_version: 150000,
            label: String::new(),
            // PostgreSQL sends tablespaces first and the base directory last.
            archives: vec![
                archive("16384.tar", Some(16384), Some(loc)),
                archive("base.tar", None, None),
            ],
            pg_backup_manifest: String::new(),
            stats: hs_repo::BackupStats {
                logical_bytes: 0,
                stored_bytes: 0,
                chunks: 0,
                new_chunks: 0,
                files: 0,
            },
        }
    }

    #[test]
    fn tablespace_roots_follow_mappings_and_refuse_overlaps() {
        let m = manifest_with_tablespace("/srv/ts1/");
        let mut opts = RestoreOptions::new("d", BackupSelector::Latest, "/restore/data".into());
        let roots = archive_roots(&m, &opts).unwrap();
        assert_eq!(
            roots,
            [PathBuf::from("/srv/ts1"), PathBuf::from("/restore/data")]
        );

        opts.tablespace_mapping = vec!["/srv/ts1=/restore/ts1".parse().unwrap()];
        let roots = archive_roots(&m, &opts).unwrap();
        assert_eq!(roots[0], Path::new("/restore/ts1"));
        let base = &m.archives[1];
        assert_eq!(
            link_target(base, "pg_tblspc/16384", "/srv/ts1", &m, &roots),
            "/restore/ts1"
        );
        assert_eq!(link_target(base, "pg_tblspc/99", "/x", &m, &roots), "/x");

        opts.tablespace_mapping = vec!["/srv/other=/restore/ts1".parse().unwrap()];
        let e = archive_roots(&m, &opts).unwrap_err();
        assert_eq!(e.code(), "usage.tablespace_mapping_unmatched");
        assert!(e.suggestion().unwrap().contains("/srv/ts1"));

        opts.tablespace_mapping = vec!["/srv/ts1=/restore/data/ts".parse().unwrap()];
        let e = archive_roots(&m, &opts).unwrap_err();
        assert_eq!(e.code(), "usage.tablespace_mapping_invalid");
    }

    #[test]
    fn tablespace_mapping_parses_like_pg_basebackup() {
        let m: TablespaceMapping = "/srv/ts1/=/mnt//new".parse().unwrap();
        assert_eq!(m.old_dir, Path::new("/srv/ts1"));
        assert_eq!(m.new_dir, Path::new("/mnt/new"));
        let m: TablespaceMapping = r"/a\=b=/c".parse().unwrap();
        assert_eq!(m.old_dir, Path::new("/a=b"));
        assert_eq!(m.new_dir, Path::new("/c"));
        for bad in ["/a", "a=/b", "/a=b", "/a=/b=/c", "/a/../b=/c", "=", "/a="] {
            let e = bad.parse::<TablespaceMapping>().unwrap_err();
            assert_eq!(e.code(), "usage.tablespace_mapping_invalid", "{bad}");
        }
    }

    #[test]
    fn removal_keeps_expected_entries_and_never_follows_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("data");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(root.join("base/1")).unwrap();
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("sub/precious"), b"p").unwrap();
        std::fs::write(root.join("base/1/keep"), b"k").unwrap();
        std::fs::write(root.join("base/1/extra"), b"x").unwrap();
        std::fs::write(root.join("backup_manifest"), b"m").unwrap();
        std::fs::create_dir(root.join("junkdir")).unwrap();
        std::fs::write(root.join("junkdir/f"), b"x").unwrap();
        // A link to a directory outside, where the backup has a directory of that name.
        std::os::unix::fs::symlink(&outside, root.join("base/2")).unwrap();
        let entry = |path: &str, kind: FileKind| hs_repo::FileEntry {
            path: path.into(),
            kind,
            mode: 0o700,
            mtime: 0,
            size: 0,
            chunks: Vec::new(),
            chunk_lists: Vec::new(),
        };
        let a = ArchiveEntry {
            name: "base".into(),
            tablespace_oid: None,
            tablespace_location: None,
            files: vec![
                entry("base/1/keep", FileKind::File),
                entry("base/2", FileKind::Dir),
            ],
        };
        let expected = expected_entries(&a, true);
        let removed = remove_extraneous(&root, &expected, std::slice::from_ref(&root)).unwrap();
        assert_eq!(removed, 3, "extra, junkdir and the base/2 link");
        assert!(root.join("base/1/keep").is_file());
        assert!(!root.join("base/1/extra").exists());
        assert!(!root.join("backup_manifest").exists());
        assert!(!root.join("junkdir").exists());
        assert!(std::fs::symlink_metadata(root.join("base/2")).is_err());
        assert_eq!(std::fs::read(outside.join("sub/precious")).unwrap(), b"p");
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
