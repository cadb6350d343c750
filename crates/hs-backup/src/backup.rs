//! One base backup: `BASE_BACKUP` over a replication connection, every file chunked,
//! deduplicated and sealed into the repository, the manifest written last.

use bytes::Bytes;
use hs_chunk::{Chunker, FileClass};
use hs_proto::{BackupEvent, BaseBackupOptions, ConnConfig, EntryKind, ReplicationClient};
use hs_repo::{
    ArchiveEntry, BackupManifest, BackupStats, FileEntry, FileKind, LeaseKind, LeaseOptions,
    Repository,
};

use crate::error::{Error, ErrorKind, Result};
use crate::names::{backup_id_for, rfc3339, validate_deployment};

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Deployment name: the repository namespace the backup belongs to.
    pub deployment: String,
    /// Ask the server for an immediate checkpoint (`CHECKPOINT 'fast'`) instead of
    /// waiting for the next scheduled one.
    pub fast_checkpoint: bool,
    /// Throttle the server's send rate, in kB/s (`MAX_RATE`).
    pub max_rate_kbps: Option<u32>,
}

impl BackupOptions {
    /// Options with a fast checkpoint and no rate limit.
    pub fn new(deployment: impl Into<String>) -> Self {
        BackupOptions {
            deployment: deployment.into(),
            fast_checkpoint: true,
            max_rate_kbps: None,
        }
    }
}

/// Receives progress while a backup or restore runs. All methods have empty defaults.
pub trait Progress: Send + Sync {
    /// The operation started; `total` is the server's size estimate in bytes, if any.
    fn start(&self, _total: Option<u64>) {}
    /// `bytes` more logical bytes were processed.
    fn advance(&self, _bytes: u64) {}
    /// Current dedup figures: logical bytes seen and bytes that were new to the repository.
    fn dedup(&self, _logical: u64, _new: u64) {}
    /// The operation ended (successfully or not).
    fn finish(&self) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// What a completed backup reports.
#[derive(Debug, Clone)]
pub struct BackupSummary {
    /// The manifest as written to the repository.
    pub manifest: BackupManifest,
}

struct OpenFile {
    entry: FileEntry,
    chunker: Option<Chunker>,
}

/// Takes one base backup of the server at `conn` into `repo` under `opts.deployment`.
///
/// The backup is self-contained: the server includes the WAL needed to make it
/// consistent (`WAL true`), so it restores without any archived WAL. Packs and index
/// are durable before the manifest is written; a backup that fails part way leaves
/// no manifest and so is never listed.
pub async fn run_backup(
    conn: &ConnConfig,
    repo: &Repository,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupSummary> {
    validate_deployment(&opts.deployment)?;
    let started = time::OffsetDateTime::now_utc();
    let backup_id = backup_id_for(started);
    // Held until the manifest is written: `repo gc` does not delete packs this
    // backup may deduplicate against while the lease is live (hs-repo gc.rs).
    let lease = repo
        .acquire_lease(
            LeaseKind::Shared,
            &format!("backup {}", opts.deployment),
            &LeaseOptions::backup(),
        )
        .await?;

    let mut client = ReplicationClient::connect(conn).await?;
    let pg_version = client.server_version_num();
    if pg_version < 150000 {
        return Err(Error::new(
            ErrorKind::Postgres,
            "preflight.pg_version_unsupported",
            format!("PostgreSQL server version {pg_version} is not supported"),
        )
        .with_suggestion("pg_hardstorage needs PostgreSQL 15 or newer"));
    }
    let ident = client.identify_system().await?;

    let mut writer = repo.writer().await?;
    let chunker_cfg = repo.chunker_config().clone();
    let bb_opts = BaseBackupOptions {
        label: format!("pg_hardstorage {} {}", opts.deployment, backup_id),
        fast_checkpoint: opts.fast_checkpoint,
        wal: true,
        manifest: true,
        max_rate_kbps: opts.max_rate_kbps,
        progress: true,
    };
    let mut stream = client.base_backup(&bb_opts).await?;

    let mut start_lsn = None;
    let mut end = None;
    let mut archives: Vec<ArchiveEntry> = Vec::new();
    let mut current: Option<OpenFile> = None;
    let mut pg_manifest: Option<Bytes> = None;
    let mut tablespace_locations: Vec<(Option<u32>, Option<String>)> = Vec::new();
    let mut pending: Vec<Bytes> = Vec::new();
    let mut logical: u64 = 0;

    while let Some(ev) = stream.next().await? {
        match ev {
            BackupEvent::Started {
                start_lsn: lsn,
                timeline: _,
                tablespaces,
            } => {
                start_lsn = Some(lsn);
                let total: u64 = tablespaces.iter().filter_map(|t| t.size_bytes).sum();
                tablespace_locations = tablespaces
                    .iter()
                    .map(|t| (t.oid, t.location.clone()))
                    .collect();
                progress.start((total > 0).then_some(total));
            }
            BackupEvent::ArchiveStart {
                name,
                tablespace_location,
            } => {
                let oid = tablespace_locations
                    .iter()
                    .find(|(_, loc)| loc.is_some() && *loc == tablespace_location)
                    .and_then(|(oid, _)| *oid);
                archives.push(ArchiveEntry {
                    name,
                    tablespace_oid: oid,
                    tablespace_location,
                    files: Vec::new(),
                });
            }
            BackupEvent::Entry(h) => {
                let kind = match &h.kind {
                    EntryKind::File => FileKind::File,
                    EntryKind::Dir => FileKind::Dir,
                    EntryKind::Symlink { target } => FileKind::Symlink {
                        target: target.clone(),
                    },
                };
                let chunker = matches!(kind, FileKind::File)
                    .then(|| Chunker::new(FileClass::of(&h.path), &chunker_cfg));
                current = Some(OpenFile {
                    entry: FileEntry {
                        path: h.path.clone(),
                        kind,
                        mode: h.mode,
                        mtime: h.mtime,
                        size: h.size,
                        chunks: Vec::new(),
                        chunk_lists: Vec::new(),
                    },
                    chunker,
                });
            }
            BackupEvent::Data(data) => {
                let f = current
                    .as_mut()
                    .ok_or_else(|| stream_error("file data outside a file"))?;
                let chunker = f
                    .chunker
                    .as_mut()
                    .ok_or_else(|| stream_error("file data for a directory or symlink"))?;
                logical += data.len() as u64;
                progress.advance(data.len() as u64);
                chunker.push(&data, &mut |c| pending.push(Bytes::copy_from_slice(c)));
                for c in pending.drain(..) {
                    let r = writer.add(c).await?;
                    f.entry.chunks.push(r);
                }
            }
            BackupEvent::EntryEnd => {
                let mut f = current
                    .take()
                    .ok_or_else(|| stream_error("end of an entry that never started"))?;
                if let Some(mut chunker) = f.chunker.take() {
                    chunker.finish(&mut |c| pending.push(Bytes::copy_from_slice(c)));
                    for c in pending.drain(..) {
                        let r = writer.add(c).await?;
                        f.entry.chunks.push(r);
                    }
                }
                let stored: u64 = f.entry.chunks.iter().map(|c| u64::from(c.len)).sum();
                if matches!(f.entry.kind, FileKind::File) && stored != f.entry.size {
                    return Err(stream_error(&format!(
                        "file {} announced {} bytes but carried {stored}",
                        f.entry.path, f.entry.size
                    )));
                }
                writer.store_chunk_list(&mut f.entry).await?;
                archives
                    .last_mut()
                    .ok_or_else(|| stream_error("file outside an archive"))?
                    .files
                    .push(f.entry);
            }
            BackupEvent::ArchiveEnd => {}
            BackupEvent::Progress { .. } => {}
            BackupEvent::Manifest(m) => pg_manifest = Some(m),
            BackupEvent::Finished { end_lsn, timeline } => end = Some((end_lsn, timeline)),
        }
    }
    drop(stream);

    let start_lsn = start_lsn.ok_or_else(|| stream_error("no start position"))?;
    let (end_lsn, timeline) = end.ok_or_else(|| stream_error("no end position"))?;
    let pg_manifest = pg_manifest.ok_or_else(|| stream_error("no backup_manifest"))?;
    let pg_backup_manifest = String::from_utf8(pg_manifest.to_vec())
        .map_err(|_| stream_error("backup_manifest is not UTF-8"))?;

    let stats = writer.finish().await?;
    progress.dedup(stats.logical_bytes, stats.stored_bytes);
    let files = archives.iter().map(|a| a.files.len() as u64).sum();
    let manifest = BackupManifest {
        format: 1,
        backup_id,
        deployment: opts.deployment.clone(),
        system_identifier: ident.system_id.clone(),
        timeline: timeline.0,
        start_lsn: start_lsn.to_string(),
        stop_lsn: end_lsn.to_string(),
        start_time: rfc3339(started),
        stop_time: rfc3339(time::OffsetDateTime::now_utc()),
        pg_version,
        label: bb_opts.label.clone(),
        archives,
        pg_backup_manifest,
        stats: BackupStats {
            logical_bytes: logical,
            stored_bytes: stats.stored_bytes,
            chunks: stats.chunks,
            new_chunks: stats.new_chunks,
            files,
        },
    };
    lease.check()?;
    // Ids have one-second resolution: a second backup of the same deployment that
    // started in the same second gets `-2`, `-3`, ... (still sorting after the first).
    let mut manifest = manifest;
    let mut n = 1;
    loop {
        match repo.put_manifest(&manifest).await {
            Err(e) if e.code() == "conflict.backup_exists" && n < 100 => {
                n += 1;
                manifest.backup_id = format!("{}-{n}", backup_id_for(started));
            }
            other => break other?,
        }
    }
    if let Err(e) = lease.release().await {
        tracing::warn!(error = %e, "releasing the repository lease failed; it lapses on its own");
    }
    progress.finish();
    Ok(BackupSummary { manifest })
}

fn stream_error(what: &str) -> Error {
    Error::new(
        ErrorKind::Protocol,
        "protocol.backup_stream_invalid",
        format!("the server's BASE_BACKUP stream was not as expected: {what}"),
    )
    .with_suggestion("check the server log; if it persists, report it with the server version")
}
