//! Restore of a base backup into a data directory, checked against PostgreSQL's
//! `backup_manifest` as it is written, then `pg_verifybackup`.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use hs_base::code;
use hs_repo::{ArchiveEntry, BackupManifest, ChunkReader, FileKind, Repository};

use crate::error::{Error, ErrorKind, Result};
use crate::recovery::{
    remove_standby_config, write_recovery_config, RecoveryConfig, StandbyConfigRemoved,
};

mod checksums;
mod files;
mod layout;
mod pg_programs;

use files::{
    check_chunk_total, compare_existing, create_file, make_parent, safe_join, set_mode, sync_dirs,
    sync_path, sync_paths, write_new_file, Existing, NewFile, UnitRun,
};
pub use layout::TablespaceMapping;
use layout::{
    archive_roots, check_delta_dir, check_empty_dir, create_root, expected_entries, link_target,
    remove_extraneous, DirRole,
};
pub use pg_programs::find_pg_program;
use pg_programs::run_pg_verifybackup;

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

/// How the restored directory is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyMode {
    /// The default: each file's CRC-32C is computed from the bytes as they are written
    /// and compared with the server's `backup_manifest`
    /// (`verify.restored_checksum_mismatch`), then `pg_verifybackup --skip-checksums`
    /// makes its other checks (every file present with its size, nothing extra, the
    /// WAL the backup needs parses). When the manifest has no CRC-32C checksums, or
    /// for a `delta` restore (whose kept files are not rewritten), `pg_verifybackup`
    /// runs in full and reads every file back. Rejections are
    /// `verify.pg_verifybackup_failed`.
    Run,
    /// [`VerifyMode::Run`], and `pg_verifybackup` in full also when the checksums
    /// were checked as written: a second read of every file from disk.
    Full,
    /// No checks beyond those of every chunk read (its keyed id).
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
    /// Files whose CRC-32C was checked against `backup_manifest` from the bytes as
    /// they were written (0 when that check was not made: `--verify=skip`, a `delta`
    /// restore, a manifest without CRC-32C checksums).
    pub checksums_checked: u64,
    /// Whether `pg_verifybackup` read every file back to check its checksum.
    pub checksums_read_back: bool,
    /// Whether `recovery.signal` and the managed recovery block were written.
    pub recovery_configured: bool,
    /// The standby configuration of a backup taken from a standby, removed so
    /// that the restored cluster is independent.
    pub standby_config_removed: StandbyConfigRemoved,
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
            Err(e) if e.code() == code::NOTFOUND_BACKUP => Err(Error::of_kind(
                ErrorKind::NotFound,
                code::NOTFOUND_BACKUP,
                format!("deployment {deployment:?} has no backups in this repository"),
            )
            .with_suggestion(format!(
                "take one with `pg_hardstorage backup {deployment}`, or check --repo"
            ))),
            other => Ok(other?),
        },
        BackupSelector::Id(id) => match repo.load_manifest(deployment, id).await {
            Err(e) if e.code().starts_with("notfound.") => Err(Error::of_kind(
                ErrorKind::NotFound,
                code::NOTFOUND_BACKUP,
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
        .is_err_and(|e| e.code() == code::ABORTED_SIGNAL)
    {
        // Written before `pg_verifybackup` runs: removed (once the work in flight was
        // dropped), so the unverified, unconfigured directory cannot be started.
        remove_control_file(&opts.target);
    }
    summary
}

/// What a restore does once every file but the control file is written and synced:
/// the control file, PostgreSQL's `backup_manifest`, the directories synced, the checks
/// and `pg_verifybackup`, then the recovery configuration. The caller removes the
/// control file when this fails, so that a directory whose control file, or any file,
/// did not read or verify, or whose recovery could not be configured, cannot be started
/// (a damaged chunk of pg_control itself once left it behind, zero-filled). Returns the
/// control file's bytes, the checks' result and what standby settings were removed.
async fn last_steps(
    r: &Restoring<'_>,
    control: Option<hs_repo::FileEntry>,
    checks: Option<checksums::Checks>,
    roots: &[PathBuf],
    started: std::time::Instant,
) -> Result<(u64, (u64, Option<bool>), StandbyConfigRemoved)> {
    let (manifest, opts, progress) = (r.manifest, r.opts, r.progress);
    let (control_written, checks) = write_control(r, control, checks).await?;
    let manifest_path = opts.target.join(PG_MANIFEST_FILE);
    write_new_file(&manifest_path, manifest.pg_backup_manifest.as_bytes())?;
    for root in roots {
        sync_dirs(root)?;
    }
    progress.finish();
    phase(started, "control file and directories synced");
    let checked = verify_restored(opts, manifest, checks.as_ref()).await?;
    phase(started, "checked");
    // pg_verifybackup ignores recovery.signal, standby.signal and
    // postgresql.auto.conf, but writing them last means a directory that
    // failed verification is never set up to recover.
    let standby_config_removed = remove_standby_config(&opts.target)?;
    if let Some(rc) = &opts.recovery {
        write_recovery_config(&opts.target, rc)?;
    }
    Ok((control_written, checked, standby_config_removed))
}

/// Removes the control file a failed restore wrote (or began to write), so that the
/// directory cannot be started; a removal that fails is logged, next to the error the
/// restore reports.
fn remove_control_file(target: &Path) {
    let path = target.join(CONTROL_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                let _ = sync_path(dir);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            "could not remove {} after the restore failed ({e}): remove it before anyone \
             starts this directory",
            path.display()
        ),
    }
}

/// A restore stopped by `what`.
fn aborted(opts: &RestoreOptions, what: &str) -> Error {
    Error::of_kind(
        ErrorKind::Aborted,
        code::ABORTED_SIGNAL,
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
    let started = std::time::Instant::now();
    let manifest = select_backup(repo, &opts.deployment, &opts.backup).await?;
    phase(started, "backup manifest loaded");
    let roots = archive_roots(&manifest, opts)?;

    let removed = prepare_roots(&manifest, opts, &roots)?;

    let reader = repo.reader().await?;
    let total: u64 = manifest
        .archives
        .iter()
        .flat_map(|a| a.files.iter())
        .map(|f| f.size)
        .sum();
    progress.start(total);

    let Layout {
        new_files,
        files,
        existing,
        control,
    } = lay_out(&manifest, opts, &roots)?;
    phase(started, "directories laid out");
    let (files_kept, delta_units) =
        compare_existing(repo, &reader, &manifest, existing, progress).await?;
    let files_written = (files.len() as u64 - files_kept) + 1;

    let checks = inline_checks(&manifest, opts);
    // File by file: only the references of the files being written are in memory.
    let mut units = UnitRun::new(&reader, opts.parallelism.max(1), progress, checks);
    for nf in &new_files {
        let a = &manifest.archives[nf.archive];
        let f = &a.files[nf.file];
        let chunks = reader
            .file_chunks(f)
            .await
            .map_err(|e| reading(e, &manifest, &f.path))?;
        check_chunk_total(&f.path, f.size, &chunks)?;
        // Created here rather than when laying out, so that the first file's data is
        // on its way while the others are created (see [`lay_out`]).
        create_file(&nf.path, f.mode, f.size)?;
        units
            .file(&nf.path, &a.pg_path(&f.path), &chunks)
            .await
            .map_err(|e| of_backup(e, &manifest))?;
    }
    for u in delta_units {
        units.unit(u).await.map_err(|e| of_backup(e, &manifest))?;
    }
    let (written, checks) = units.finish().await.map_err(|e| of_backup(e, &manifest))?;

    phase(started, "file contents written");
    // Every file synced at the end, then the control file, then the directories.
    sync_paths(&files).await?;
    phase(started, "files synced");
    // From here on the directory has a control file: a failure removes it.
    let restoring = Restoring {
        reader: &reader,
        manifest: &manifest,
        opts,
        progress,
    };
    let last = last_steps(&restoring, control, checks, &roots, started);
    let (control_written, (checksums_checked, read_back), standby_config_removed) = match last.await
    {
        Ok(done) => done,
        Err(e) => {
            remove_control_file(&opts.target);
            return Err(e);
        }
    };
    let written = written + control_written;
    let verified = read_back.is_some();
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
        checksums_checked,
        checksums_read_back: read_back == Some(true),
        recovery_configured: opts.recovery.is_some(),
        standby_config_removed,
        files_kept,
        files_written,
        removed,
        tablespaces,
    })
}

/// Logs (at debug level, `-vv`) that a step of the restore ended, with the time since
/// `started`: where a restore's time goes.
fn phase(started: std::time::Instant, step: &str) {
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "restore: {step}"
    );
}

/// Checks every restore root before creating any, so a refusal leaves nothing behind;
/// then creates them and, with `--delta`, removes what the backup does not restore there.
/// Returns how many entries were removed.
fn prepare_roots(
    manifest: &BackupManifest,
    opts: &RestoreOptions,
    roots: &[PathBuf],
) -> Result<u64> {
    let mut removed = 0u64;
    for (a, root) in manifest.archives.iter().zip(roots) {
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
    for (a, root) in manifest.archives.iter().zip(roots) {
        create_root(root)?;
        if opts.delta {
            let expected = expected_entries(a, !is_tablespace(a));
            removed += remove_extraneous(root, &expected, roots)?;
        }
    }
    Ok(removed)
}

/// What [`lay_out`] leaves to write.
struct Layout {
    /// Files to create (at their size) and write whole.
    new_files: Vec<NewFile>,
    /// Every regular file but the control file (synced at the end).
    files: Vec<PathBuf>,
    /// Files a `--delta` target already holds, to compare chunk by chunk.
    existing: Vec<Existing>,
    /// The control file's entry, written last.
    control: Option<hs_repo::FileEntry>,
}

/// Creates directories (with the parents of every file) and symlinks, and lists the
/// regular files: those to create and write whole, and with `--delta` those that exist.
///
/// The files themselves are created just before their content is written: at scale 100
/// creating ~980 files (a metadata transaction each) took 50-90 ms on one core, before
/// the first chunk was read; interleaved with the writes, it runs while the other
/// worker decodes. Consecutive files of one directory ensure their parent once.
fn lay_out(manifest: &BackupManifest, opts: &RestoreOptions, roots: &[PathBuf]) -> Result<Layout> {
    let mut new_files = Vec::new();
    let mut files = Vec::new();
    let mut existing = Vec::new();
    let mut control = None;
    // The parent directory last ensured for a file (files come grouped by directory).
    let mut parent_made: Option<PathBuf> = None;
    for (ai, (a, root)) in manifest.archives.iter().zip(roots).enumerate() {
        for (fi, f) in a.files.iter().enumerate() {
            let path = safe_join(root, &f.path)?;
            match &f.kind {
                FileKind::Dir => {
                    std::fs::create_dir_all(&path)
                        .map_err(|e| crate::error::io(format!("create {}", path.display()), e))?;
                    set_mode(&path, f.mode & 0o7777)?;
                }
                FileKind::Symlink { target } => {
                    let target = link_target(a, &f.path, target, manifest, roots);
                    let same = std::fs::read_link(&path).is_ok_and(|t| t == Path::new(&target));
                    if !same {
                        make_parent(&path)?;
                        std::os::unix::fs::symlink(&target, &path).map_err(|e| {
                            crate::error::io(format!("symlink {}", path.display()), e)
                        })?;
                    }
                }
                FileKind::File => {
                    let parent = path.parent();
                    if parent != parent_made.as_deref() {
                        make_parent(&path)?;
                        parent_made = parent.map(Path::to_path_buf);
                    }
                    if !is_tablespace(a) && f.path == CONTROL_FILE {
                        control = Some(f.clone());
                        continue;
                    }
                    files.push(path.clone());
                    let is_file = opts.delta
                        && std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
                    if is_file {
                        existing.push(Existing {
                            path,
                            mode: f.mode,
                            size: f.size,
                            archive: ai,
                            file: fi,
                        });
                        continue;
                    }
                    new_files.push(NewFile {
                        path,
                        archive: ai,
                        file: fi,
                    });
                }
            }
        }
    }
    Ok(Layout {
        new_files,
        files,
        existing,
        control,
    })
}

/// What the last steps of a restore read and report to.
struct Restoring<'a> {
    reader: &'a ChunkReader,
    manifest: &'a BackupManifest,
    opts: &'a RestoreOptions,
    progress: &'a dyn RestoreProgress,
}

/// Writes the control file (after every other file is synced) and syncs it; returns
/// the bytes written.
async fn write_control(
    r: &Restoring<'_>,
    control: Option<hs_repo::FileEntry>,
    checks: Option<checksums::Checks>,
) -> Result<(u64, Option<checksums::Checks>)> {
    let (reader, manifest, opts, progress) = (r.reader, r.manifest, r.opts, r.progress);
    let control = control.ok_or_else(|| {
        Error::of_kind(
            ErrorKind::Repository,
            code::VERIFY_BACKUP_INCOMPLETE,
            format!("backup {} has no {CONTROL_FILE}", manifest.backup_id),
        )
        .with_suggestion("restore another backup; run `pg_hardstorage verify` on this one")
    })?;
    let control_path = opts.target.join(CONTROL_FILE);
    create_file(&control_path, control.mode, control.size)?;
    let chunks = reader
        .file_chunks(&control)
        .await
        .map_err(|e| reading(e, manifest, CONTROL_FILE))?;
    let mut units = UnitRun::new(reader, 1, progress, checks);
    units
        .file(&control_path, CONTROL_FILE, &chunks)
        .await
        .map_err(|e| of_backup(e, manifest))?;
    let done = units.finish().await.map_err(|e| of_backup(e, manifest))?;
    sync_path(&control_path)?;
    Ok(done)
}

/// The checks after the files are written and synced: that every file begun was
/// checked as written, then `pg_verifybackup` (without its checksum pass when the
/// checksums were checked). Returns the files checked as written and whether
/// `pg_verifybackup` ran with (`Some(true)`) or without its checksum pass.
async fn verify_restored(
    opts: &RestoreOptions,
    manifest: &BackupManifest,
    checks: Option<&checksums::Checks>,
) -> Result<(u64, Option<bool>)> {
    let checked = match checks {
        Some(c) if !c.all_complete() => {
            return Err(checksums::internal(
                "a restored file was not completely checked".to_string(),
            ))
        }
        Some(c) => {
            tracing::debug!(
                checked = c.checked(),
                listed = c.listed(),
                "restored files checked against backup_manifest as written"
            );
            c.checked()
        }
        None => 0,
    };
    let read_back = match opts.verify {
        VerifyMode::Skip => None,
        VerifyMode::Full => Some(true),
        VerifyMode::Run => Some(checks.is_none()),
    };
    if let Some(read_back) = read_back {
        run_pg_verifybackup(opts, manifest, read_back).await?;
    }
    Ok((checked, read_back))
}

/// The checks made as the files are written, unless verification is skipped, the
/// restore is a `delta` one (kept files are not rewritten, so `pg_verifybackup` reads
/// them all), or the manifest cannot serve (no CRC-32C checksums): then `None`, and
/// `pg_verifybackup` reads every file back.
fn inline_checks(manifest: &BackupManifest, opts: &RestoreOptions) -> Option<checksums::Checks> {
    if opts.verify == VerifyMode::Skip || opts.delta {
        return None;
    }
    match checksums::Checks::new(&manifest.pg_backup_manifest) {
        Ok(c) => Some(c),
        Err(why) => {
            tracing::info!(
                "pg_verifybackup will read the restored files back to check them: {why}"
            );
            None
        }
    }
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
    let out = Error::of_kind(e.kind(), code, format!("{context}: {e}"));
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

#[cfg(test)]
mod tests {
    use super::*;

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
