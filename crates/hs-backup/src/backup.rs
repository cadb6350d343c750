//! One base backup: `BASE_BACKUP` over a replication connection, every file chunked,
//! deduplicated and sealed into the repository, the manifest written last.

use std::collections::HashMap;
use std::future::Future;

use bytes::Bytes;
use hs_base::code;
use hs_chunk::{Chunker, FileClass};
use hs_proto::{
    BackupEvent, BaseBackupOptions, ConnConfig, EntryKind, ReplicationClient, ServerCompression,
    SqlState,
};
use hs_repo::{
    ArchiveEntry, BackupManifest, BackupStats, ChunkReader, ChunkWriter, FileEntry, FileKind,
    IncrementalFrom, Lease, LeaseKind, LeaseOptions, ParentCursor, ParentFiles, Repository,
};

use crate::error::{Error, ErrorKind, Result};
use crate::incremental::{self, FullEntry, IncrementalFile, ParentFile};
use crate::names::{backup_id_for, rfc3339, validate_deployment};
use crate::sent::{self, Sent};

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Deployment name: the repository namespace the backup belongs to.
    pub deployment: String,
    /// Ask the server for an immediate checkpoint (`CHECKPOINT 'fast'`) instead of
    /// waiting for the next scheduled one.
    pub fast_checkpoint: bool,
    /// Throttle the server's send rate, in kB/s (`MAX_RATE`). The server then sends its
    /// archives uncompressed, so the rate bounds what it reads from its disks.
    pub max_rate_kbps: Option<u32>,
    /// Accept a server whose system identifier differs from the deployment's (the
    /// cluster was re-created, e.g. by pg_upgrade). Without it such a backup fails with
    /// `conflict.system_identifier_mismatch` before anything is written.
    pub allow_system_id_change: bool,
    /// Take a full backup even where an incremental one is possible (PostgreSQL 17+
    /// with `summarize_wal = on` and a usable parent backup).
    pub full: bool,
}

impl BackupOptions {
    /// Options with a fast checkpoint and no rate limit.
    pub fn new(deployment: impl Into<String>) -> Self {
        BackupOptions {
            deployment: deployment.into(),
            fast_checkpoint: true,
            max_rate_kbps: None,
            allow_system_id_change: false,
            full: false,
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
    /// Files whose size and CRC-32C, computed from the bytes as they arrived, matched
    /// the server's `backup_manifest` (every file the manifest lists arrived, or the
    /// backup fails with `verify.received_checksum_mismatch`). The WAL segments the
    /// backup carries are not listed there and not counted here.
    pub files_checked: u64,
}

struct OpenFile {
    entry: FileEntry,
    chunker: Option<Chunker>,
    /// The same file in the parent backup: its references are the writer's hints.
    parent: Option<ParentCursor>,
    /// An `INCREMENTAL.*` member: the changed blocks of `entry.path`.
    incremental: Option<Box<IncrementalFile>>,
    /// `backup_label` of an incremental backup, held until complete (its
    /// `INCREMENTAL FROM` lines are dropped before it is stored).
    label: Option<Vec<u8>>,
    /// Bytes of the member received so far, and the CRC-32C register over them: what
    /// [`sent::check`] compares with the server's `backup_manifest`.
    sent_size: u64,
    sent_crc: u32,
}

/// Decoded-frame cache of the reader of the parent backup's list chunks.
const PARENT_FRAME_CACHE: usize = 4 << 20;

/// Takes one base backup of the server at `conn` into `repo` under `opts.deployment`.
///
/// The backup is self-contained: the server includes the WAL needed to make it
/// consistent (`WAL true`), so it restores without any archived WAL. Packs and index
/// are durable before the manifest is written; a backup that fails part way leaves
/// no manifest and so is never listed.
///
/// A server whose system identifier differs from the deployment's (see
/// [`BackupOptions::allow_system_id_change`]) is refused right after
/// `IDENTIFY_SYSTEM`, before `BASE_BACKUP`.
pub async fn run_backup(
    conn: &ConnConfig,
    repo: &Repository,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupSummary> {
    run_backup_until(conn, repo, opts, progress, std::future::pending()).await
}

/// [`run_backup`] that stops as soon as `stop` resolves (to what stopped it, e.g.
/// `SIGTERM`): the work in flight is dropped, no manifest is written, and the result
/// is `aborted.signal` naming it. Packs uploaded so far stay unreferenced until
/// `repo gc` removes them.
///
/// The repository lease is released on every outcome: success, failure of any step,
/// or `stop`.
pub async fn run_backup_until(
    conn: &ConnConfig,
    repo: &Repository,
    opts: &BackupOptions,
    progress: &dyn Progress,
    stop: impl Future<Output = String>,
) -> Result<BackupSummary> {
    validate_deployment(&opts.deployment)?;
    // Held until the manifest is written: `repo gc` does not delete packs this
    // backup may deduplicate against while the lease is live (hs-repo gc.rs).
    let lease = repo
        .acquire_lease(
            LeaseKind::Shared,
            &format!("backup {}", opts.deployment),
            &LeaseOptions::backup(),
        )
        .await?;
    let res = tokio::select! {
        biased;
        what = stop => Err(stopped(&opts.deployment, &what)),
        res = backup_leased(conn, repo, opts, progress, &lease) => res,
    };
    // Released here, whatever the outcome: a lease left behind holds up `repo gc`
    // until it lapses (LeaseOptions::backup's TTL).
    if let Err(e) = lease.release().await {
        tracing::warn!(
            code = e.code(),
            "releasing the repository lease failed; it lapses on its own: {e}"
        );
    }
    if res.is_ok() {
        progress.finish();
    }
    res
}

fn stopped(deployment: &str, what: &str) -> Error {
    Error::of_kind(
        ErrorKind::Aborted,
        code::ABORTED_SIGNAL,
        format!(
            "the backup of deployment {deployment} was stopped by {what} before it completed; no backup was recorded"
        ),
    )
    .with_suggestion(
        "run the backup again; the packs it had uploaded are unreferenced and harmless, and `repo gc` reclaims them",
    )
}

/// The backup proper, under `lease` (which the caller releases).
async fn backup_leased(
    conn: &ConnConfig,
    repo: &Repository,
    opts: &BackupOptions,
    progress: &dyn Progress,
    lease: &Lease,
) -> Result<BackupSummary> {
    let started = time::OffsetDateTime::now_utc();
    let backup_id = backup_id_for(started);

    let mut client = ReplicationClient::connect(conn).await?;
    let pg_version = client.server_version_num();
    if pg_version < 150000 {
        return Err(Error::of_kind(
            ErrorKind::Postgres,
            code::PREFLIGHT_PG_VERSION_UNSUPPORTED,
            format!("PostgreSQL server version {pg_version} is not supported"),
        )
        .with_suggestion("pg_hardstorage needs PostgreSQL 15 or newer"));
    }
    let ident = client.identify_system().await?;
    // The newest backup is the parent: its file lists are what an unchanged page
    // deduplicates against, one file at a time (memory does not grow with the
    // repository; see hs_repo's writer). It also names the deployment's cluster.
    let parent = repo.newest_intact_backup(&opts.deployment).await?;
    // Before anything is written: another cluster's backup must not become `latest`.
    check_system_identifier_with(
        repo,
        &opts.deployment,
        parent.as_ref(),
        &ident.system_id,
        opts.allow_system_id_change,
    )
    .await?;

    let mut writer = repo.writer_for(parent.as_ref()).await?;
    let base = match &parent {
        Some(m) if !opts.full => {
            incremental_base(&mut client, m, pg_version, &ident.system_id).await?
        }
        _ => None,
    };
    let parent = parent_files(repo, parent).await?;
    let mut bb_opts = base_backup_options(opts, &backup_id, base.is_some());
    // What the server refuses at the start, before its checkpoint, is asked again on the
    // same connection without it, with one log line saying why: a server built without
    // lz4 gets the plain stream; an incremental backup it cannot take (WAL summaries
    // missing or incomplete, the parent's timeline not in its history, ...) becomes a
    // full one.
    let (mut stream, first) = loop {
        let mut stream = client.base_backup(&bb_opts).await?;
        match stream.next().await {
            Ok(Some(ev)) => break (stream, ev),
            Err(e) if bb_opts.compression != ServerCompression::None && refuses_compression(&e) => {
                tracing::info!(
                    "the server sends its archives uncompressed: it refused lz4 compression: {e}"
                );
                bb_opts.compression = ServerCompression::None;
            }
            Err(e) if bb_opts.incremental && e.sqlstate().is_some() => {
                tracing::warn!(
                    "taking a full backup, not an incremental one: the server refused: {e}"
                );
                bb_opts.incremental = false;
            }
            Err(e) => return Err(e),
            Ok(None) => return Err(stream_error("the stream ended before it started")),
        }
    };
    let mut received = Received::new(repo.chunker_config().clone(), parent);
    if bb_opts.incremental {
        let base = base.expect("incremental only with a base");
        received.incremental = Some(Incremental {
            parent_files: base.files,
            parent_id: base.backup_id,
            reader: repo.reader_with_frame_cache(PARENT_FRAME_CACHE).await?,
            changed: HashMap::new(),
            files: 0,
        });
    }
    received.event(first, &mut writer, progress).await?;
    while let Some(ev) = stream.next().await? {
        received.event(ev, &mut writer, progress).await?;
    }
    drop(stream);
    // The parent's manifest is not needed any more: free it before this backup's own
    // manifest is built and stored (both grow with the database).
    drop(received.parent.take());
    let stats = writer.finish().await?;
    progress.dedup(stats.logical_bytes, stats.stored_bytes);
    let (manifest, checked) = received.into_manifest(BackupManifest {
        format: hs_repo::MANIFEST_FORMAT,
        backup_id,
        deployment: opts.deployment.clone(),
        system_identifier: ident.system_id.clone(),
        timeline: 0,
        start_lsn: hs_proto::Lsn(0),
        stop_lsn: hs_proto::Lsn(0),
        start_time: rfc3339(started),
        stop_time: rfc3339(time::OffsetDateTime::now_utc()),
        pg_version,
        label: bb_opts.label.clone(),
        archives: Vec::new(),
        pg_backup_manifest: String::new(),
        stats: BackupStats {
            stored_bytes: stats.stored_bytes,
            chunks: stats.chunks,
            new_chunks: stats.new_chunks,
            ..BackupStats::default()
        },
        incremental: None,
    })?;
    lease.check()?;
    let manifest = put_manifest_numbered(repo, manifest, started).await?;
    Ok(BackupSummary {
        manifest,
        files_checked: checked.crc_checked + checked.size_only,
    })
}

/// `BASE_BACKUP`'s options for a backup with `opts` (`incremental`: against the parent).
fn base_backup_options(
    opts: &BackupOptions,
    backup_id: &str,
    incremental: bool,
) -> BaseBackupOptions {
    BaseBackupOptions {
        label: format!("pg_hardstorage {} {}", opts.deployment, backup_id),
        fast_checkpoint: opts.fast_checkpoint,
        wal: true,
        manifest: true,
        max_rate_kbps: opts.max_rate_kbps,
        progress: true,
        incremental,
        // The stream carries the WAL the backup needs (`wal`), so the end of the
        // backup does not wait for the server's archiver.
        wait_for_archive: false,
        // The server sends its archives lz4-compressed: a ninth of the bytes on the
        // connection at pgbench scale 1000, and less CPU for the server's sender than
        // the plain stream (docs/ARCHITECTURE.md, bird's-eye view). Not with a rate
        // limit: the server applies MAX_RATE to what it sends, so compressed it would
        // read about nine times the rate from its disks.
        compression: if opts.max_rate_kbps.is_some() {
            ServerCompression::None
        } else {
            ServerCompression::Lz4
        },
    }
}

/// Whether the server refused `BASE_BACKUP`'s options, as a build without lz4 refuses
/// `COMPRESSION 'lz4'`: SQLSTATE 42601, "invalid compression specification: this build
/// does not support compression with LZ4" (in the server's `lc_messages`, so the text is
/// not matched). The server parses the options before anything else, and every other
/// option we send is one it accepts, so the retry without compression either starts or
/// reports what else the server refuses.
fn refuses_compression(e: &Error) -> bool {
    e.sqlstate() == Some("42601")
}

/// The parent backup's files, for hints and reuse by position.
async fn parent_files(
    repo: &Repository,
    parent: Option<BackupManifest>,
) -> Result<Option<ParentFiles>> {
    Ok(match parent {
        // A format 1 parent's references name no pack: nothing to reuse by position
        // (the writer loaded the whole index for that backup instead).
        // List chunks are read in file order: a small frame cache is enough.
        Some(m) if m.format >= 2 => Some(ParentFiles::new(
            m,
            repo.reader_with_frame_cache(PARENT_FRAME_CACHE).await?,
        )),
        _ => None,
    })
}

/// The parent an incremental backup is taken against: its id and file list.
struct IncrementalBase {
    backup_id: String,
    files: HashMap<String, hs_pg::ManifestFile>,
}

/// Decides whether this backup can be incremental against `parent` (the deployment's
/// newest backup) and, if so, uploads the parent's `backup_manifest` on `client`.
/// `None` (after one log line saying why, where it is not the plain "needs PostgreSQL
/// 17") means a full backup. Errors only when the connection itself fails.
async fn incremental_base(
    client: &mut ReplicationClient,
    parent: &BackupManifest,
    pg_version: u32,
    system_id: &str,
) -> Result<Option<IncrementalBase>> {
    if pg_version < 170_000 {
        return Ok(None);
    }
    let why_not = if parent.pg_version / 10_000 != pg_version / 10_000 {
        Some(format!(
            "the parent backup {} is of PostgreSQL {}, the server runs {}",
            parent.backup_id,
            parent.pg_version / 10_000,
            pg_version / 10_000
        ))
    } else if parent.system_identifier != system_id {
        Some(format!(
            "the parent backup {} is of another cluster",
            parent.backup_id
        ))
    } else if parent.format < 2 {
        Some(format!(
            "the parent backup {} is in repository format 1",
            parent.backup_id
        ))
    } else {
        match client.show("summarize_wal").await {
            Ok(v) if v == "on" => None,
            Ok(_) => Some("summarize_wal is off on the server".to_string()),
            Err(e) if e.sqlstate().is_some() => Some(format!("SHOW summarize_wal failed: {e}")),
            Err(e) => return Err(e),
        }
    };
    if let Some(why) = why_not {
        tracing::warn!("taking a full backup, not an incremental one: {why}");
        return Ok(None);
    }
    let files = match hs_pg::backup_manifest_files(&parent.pg_backup_manifest) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(
                "taking a full backup, not an incremental one: the parent backup {}'s manifest is not usable: {e}",
                parent.backup_id
            );
            return Ok(None);
        }
    };
    match client
        .upload_manifest(parent.pg_backup_manifest.as_bytes())
        .await
    {
        Ok(()) => Ok(Some(IncrementalBase {
            backup_id: parent.backup_id.clone(),
            files,
        })),
        Err(e) if e.sqlstate().is_some() => {
            tracing::warn!(
                "taking a full backup, not an incremental one: the server refused the manifest of the parent backup {}: {e}",
                parent.backup_id
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Stores the manifest. Ids have one-second resolution: a second backup of the same
/// deployment that started in the same second gets `-2`, `-3`, ... (still sorting
/// after the first).
async fn put_manifest_numbered(
    repo: &Repository,
    mut manifest: BackupManifest,
    started: time::OffsetDateTime,
) -> Result<BackupManifest> {
    let mut n = 1;
    loop {
        match repo.put_manifest(&manifest).await {
            Err(e) if e.code() == code::CONFLICT_BACKUP_EXISTS && n < 100 => {
                n += 1;
                manifest.backup_id = format!("{}-{n}", backup_id_for(started));
            }
            other => break other?,
        }
    }
    Ok(manifest)
}

/// What the `BASE_BACKUP` stream delivered so far, with every file's chunks stored.
struct Received {
    chunker_cfg: hs_repo::ChunkerConfig,
    start_lsn: Option<hs_proto::Lsn>,
    end: Option<(hs_proto::Lsn, hs_proto::TimelineId)>,
    archives: Vec<ArchiveEntry>,
    current: Option<OpenFile>,
    pg_manifest: Option<Bytes>,
    tablespace_locations: Vec<(Option<u32>, Option<String>)>,
    pending: Vec<Bytes>,
    logical: u64,
    /// Every regular file's size and CRC-32C as received, in order.
    sent: Vec<Sent>,
    parent: Option<ParentFiles>,
    /// Set for an incremental backup.
    incremental: Option<Incremental>,
}

/// The state of an incremental backup.
struct Incremental {
    /// The parent's id.
    parent_id: String,
    /// The parent's `backup_manifest` files by path.
    parent_files: HashMap<String, hs_pg::ManifestFile>,
    /// Reads the parent's chunks an incremental file needs.
    reader: ChunkReader,
    /// Manifest entries to rewrite: manifest path -> (full file's path, entry).
    changed: HashMap<String, (String, FullEntry)>,
    /// `INCREMENTAL.*` members received.
    files: u64,
}

impl Received {
    fn new(chunker_cfg: hs_repo::ChunkerConfig, parent: Option<ParentFiles>) -> Received {
        Received {
            chunker_cfg,
            start_lsn: None,
            end: None,
            archives: Vec::new(),
            current: None,
            pg_manifest: None,
            tablespace_locations: Vec::new(),
            pending: Vec::new(),
            logical: 0,
            sent: Vec::new(),
            parent,
            incremental: None,
        }
    }

    /// Takes in one event of the stream.
    async fn event(
        &mut self,
        ev: BackupEvent,
        writer: &mut ChunkWriter,
        progress: &dyn Progress,
    ) -> Result<()> {
        match ev {
            BackupEvent::Started {
                start_lsn: lsn,
                timeline: _,
                tablespaces,
            } => {
                self.start_lsn = Some(lsn);
                let total: u64 = tablespaces.iter().filter_map(|t| t.size_bytes).sum();
                self.tablespace_locations = tablespaces
                    .iter()
                    .map(|t| (t.oid, t.location.clone()))
                    .collect();
                progress.start((total > 0).then_some(total));
            }
            BackupEvent::ArchiveStart {
                name,
                tablespace_location,
            } => {
                let oid = self
                    .tablespace_locations
                    .iter()
                    .find(|(_, loc)| loc.is_some() && *loc == tablespace_location)
                    .and_then(|(oid, _)| *oid);
                self.archives.push(ArchiveEntry {
                    name,
                    tablespace_oid: oid,
                    tablespace_location,
                    files: Vec::new(),
                });
            }
            BackupEvent::Entry(h) => self.current = Some(self.open_file(&h).await?),
            BackupEvent::Data(data) => {
                let f = self
                    .current
                    .as_mut()
                    .ok_or_else(|| stream_error("file data outside a file"))?;
                f.sent_size += data.len() as u64;
                f.sent_crc = hs_pg::crc32c_update(f.sent_crc, &data);
                if f.incremental.is_some() || f.label.is_some() {
                    self.logical += data.len() as u64;
                    progress.advance(data.len() as u64);
                    if let Some(inc) = f.incremental.as_mut() {
                        inc.push(&data, writer).await?;
                    } else if let Some(label) = f.label.as_mut() {
                        label.extend_from_slice(&data);
                    }
                    return Ok(());
                }
                let chunker = f
                    .chunker
                    .as_mut()
                    .ok_or_else(|| stream_error("file data for a directory or symlink"))?;
                self.logical += data.len() as u64;
                progress.advance(data.len() as u64);
                let pending = &mut self.pending;
                chunker.push(&data, &mut |c| pending.push(share_or_copy(&data, c)));
                store_pending(pending, writer, f).await?;
            }
            BackupEvent::EntryEnd => self.end_file(writer).await?,
            BackupEvent::ArchiveEnd => {}
            BackupEvent::Progress { .. } => {}
            BackupEvent::Manifest(m) => self.pg_manifest = Some(m),
            BackupEvent::Finished { end_lsn, timeline } => self.end = Some((end_lsn, timeline)),
        }
        Ok(())
    }

    /// A new member of the archive: a file gets a chunker.
    async fn open_file(&self, h: &hs_proto::TarEntryHeader) -> Result<OpenFile> {
        let kind = match &h.kind {
            EntryKind::File => FileKind::File,
            EntryKind::Dir => FileKind::Dir,
            EntryKind::Symlink { target } => FileKind::Symlink {
                target: target.clone(),
            },
        };
        let chunker = matches!(kind, FileKind::File)
            .then(|| Chunker::new(FileClass::of(&h.path), &self.chunker_cfg));
        let parent = match (&self.parent, self.archives.last()) {
            (Some(p), Some(a)) if chunker.is_some() => p.cursor(&a.name, &h.path),
            _ => None,
        };
        let mut f = OpenFile {
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
            parent,
            incremental: None,
            label: None,
            sent_size: 0,
            sent_crc: !0,
        };
        if f.chunker.is_some() {
            self.open_incremental(&mut f).await?;
        }
        Ok(f)
    }

    /// In an incremental backup: an `INCREMENTAL.*` member becomes its full file, read
    /// against the parent's copy; `backup_label` is held to be rewritten.
    async fn open_incremental(&self, f: &mut OpenFile) -> Result<()> {
        let (Some(inc), Some(archive)) = (&self.incremental, self.archives.last()) else {
            return Ok(());
        };
        if f.entry.path == "backup_label" && archive.tablespace_oid.is_none() {
            f.label = Some(Vec::new());
            return Ok(());
        }
        let Some(full) = incremental::full_path_of(&f.entry.path) else {
            return Ok(());
        };
        let missing = || {
            stream_error(&format!(
                "the server sent only the changed blocks of {full}, but the parent backup has no such file"
            ))
        };
        let pf = self
            .parent
            .as_ref()
            .and_then(|p| p.file(&archive.name, &full))
            .ok_or_else(missing)?;
        let refs = inc.reader.file_chunks(pf).await?;
        let block = incremental::BLCKSZ as u64;
        if refs.len() as u64 * block != pf.size || refs.iter().any(|r| u64::from(r.len) != block) {
            return Err(stream_error(&format!(
                "the parent backup's copy of {full} is not stored as 8 KiB pages"
            )));
        }
        let crc = inc
            .parent_files
            .get(&archive.pg_path(&full))
            .filter(|m| m.size == pf.size)
            .and_then(|m| m.crc32c);
        let member = std::mem::replace(&mut f.entry.path, full.clone());
        f.chunker = None;
        f.parent = None;
        f.incremental = Some(Box::new(IncrementalFile::new(
            member,
            full,
            ParentFile { refs, crc },
            inc.reader.clone(),
        )));
        Ok(())
    }

    /// The end of a member: its last chunk stored, its length checked, its entry added
    /// to the archive.
    async fn end_file(&mut self, writer: &mut ChunkWriter) -> Result<()> {
        let mut f = self
            .current
            .take()
            .ok_or_else(|| stream_error("end of an entry that never started"))?;
        if let Some(mut chunker) = f.chunker.take() {
            let pending = &mut self.pending;
            chunker.finish(&mut |c| pending.push(Bytes::copy_from_slice(c)));
            store_pending(pending, writer, &mut f).await?;
        }
        let incremental_member = f.incremental.is_some();
        self.end_incremental(&mut f, writer).await?;
        let stored: u64 = f.entry.chunks.iter().map(|c| u64::from(c.len)).sum();
        if matches!(f.entry.kind, FileKind::File) && stored != f.entry.size {
            return Err(stream_error(&format!(
                "file {} announced {} bytes but carried {stored}",
                f.entry.path, f.entry.size
            )));
        }
        let archive = self
            .archives
            .last_mut()
            .ok_or_else(|| stream_error("file outside an archive"))?;
        let parent = self
            .parent
            .as_ref()
            .and_then(|p| p.file(&archive.name, &f.entry.path));
        writer.store_chunk_list_hinted(&mut f.entry, parent).await?;
        if f.entry.kind == FileKind::File {
            self.sent.push(Sent {
                size: f.sent_size,
                crc: !f.sent_crc,
                incremental_member,
            });
        }
        archive.files.push(f.entry);
        Ok(())
    }
}

/// `chunk` as `Bytes`: a slice sharing `data`'s buffer when the chunker cut it straight
/// from `data` (most pages), else a copy (pieces it gathered across calls). Saves copying
/// every byte of the backup once more. The writer holds no chunk past `add` (it copies a
/// new chunk into its frame), so a shared slice keeps the stream's buffer alive no longer
/// than `data` itself.
fn share_or_copy(data: &Bytes, chunk: &[u8]) -> Bytes {
    let (start, at) = (data.as_ptr() as usize, chunk.as_ptr() as usize);
    if at >= start && at + chunk.len() <= start + data.len() {
        data.slice_ref(chunk)
    } else {
        Bytes::copy_from_slice(chunk)
    }
}

/// Stores the chunks the chunker cut (deduplicated by the writer, with the parent
/// backup's reference at the same position as the hint) as the file's next chunks.
async fn store_pending(
    pending: &mut Vec<Bytes>,
    writer: &mut ChunkWriter,
    f: &mut OpenFile,
) -> Result<()> {
    for c in pending.drain(..) {
        let hint = match &mut f.parent {
            Some(p) => p.at(f.entry.chunks.len()).await,
            None => None,
        };
        let r = writer.add_hinted(c, hint.as_ref()).await?;
        f.entry.chunks.push(r);
    }
    Ok(())
}

impl Received {
    /// Completes `m` (identity, times and the writer's counts filled in) with what the
    /// stream delivered: positions, archives, PostgreSQL's manifest (for an incremental
    /// backup, rewritten to describe the full files) and the sizes, once every file as
    /// received is checked against the server's manifest ([`sent::check`]).
    fn into_manifest(self, mut m: BackupManifest) -> Result<(BackupManifest, sent::SentCheck)> {
        let start_lsn = self
            .start_lsn
            .ok_or_else(|| stream_error("no start position"))?;
        let (end_lsn, timeline) = self.end.ok_or_else(|| stream_error("no end position"))?;
        let pg_manifest = self
            .pg_manifest
            .ok_or_else(|| stream_error("no backup_manifest"))?;
        let mut pg_backup_manifest = String::from_utf8(pg_manifest.to_vec())
            .map_err(|_| stream_error("backup_manifest is not UTF-8"))?;
        let checked = sent::check(&pg_backup_manifest, &self.archives, &self.sent)?;
        tracing::info!(
            "checked the files as received against the server's backup_manifest: {} by size and CRC-32C, {} by size only; {} WAL files (not listed there)",
            checked.crc_checked,
            checked.size_only,
            checked.wal
        );
        if let Some(inc) = self.incremental {
            pg_backup_manifest =
                incremental::full_files_manifest(&pg_backup_manifest, &inc.changed)?;
            m.incremental = Some(IncrementalFrom {
                parent_backup_id: inc.parent_id,
                incremental_files: inc.files,
            });
        }
        m.stats.files = self.archives.iter().map(|a| a.files.len() as u64).sum();
        m.stats.logical_bytes = self
            .archives
            .iter()
            .flat_map(|a| &a.files)
            .filter(|f| f.kind == FileKind::File)
            .map(|f| f.size)
            .sum();
        m.stats.sent_bytes = self.logical;
        m.start_lsn = start_lsn;
        m.stop_lsn = end_lsn;
        m.timeline = timeline.0;
        m.archives = self.archives;
        m.pg_backup_manifest = pg_backup_manifest;
        Ok((m, checked))
    }

    /// The end of an `INCREMENTAL.*` member or of the held `backup_label`: the full
    /// file's chunks and its entry for the full-files manifest.
    async fn end_incremental(&mut self, f: &mut OpenFile, writer: &mut ChunkWriter) -> Result<()> {
        let (Some(inc), Some(archive)) = (self.incremental.as_mut(), self.archives.last()) else {
            return Ok(());
        };
        if let Some(mut file) = f.incremental.take() {
            let done = file.finish(writer).await?;
            if done.member_size != f.entry.size {
                return Err(stream_error(&format!(
                    "{} announced {} bytes but carried {}",
                    file.full_path, f.entry.size, done.member_size
                )));
            }
            let member = archive.pg_path(&incremental::member_of(&f.entry.path));
            f.entry.chunks = std::mem::take(&mut file.chunks);
            f.entry.size = done.size;
            inc.files += 1;
            let entry = FullEntry {
                size: done.size,
                crc: done.crc,
            };
            inc.changed
                .insert(member, (archive.pg_path(&f.entry.path), entry));
        } else if let Some(label) = f.label.take() {
            let content = incremental::full_backup_label(&label);
            let mut chunker = Chunker::new(FileClass::Other, &self.chunker_cfg);
            let pending = &mut self.pending;
            chunker.push(&content, &mut |c| pending.push(Bytes::copy_from_slice(c)));
            chunker.finish(&mut |c| pending.push(Bytes::copy_from_slice(c)));
            store_pending(pending, writer, f).await?;
            f.entry.size = content.len() as u64;
            let entry = FullEntry {
                size: f.entry.size,
                crc: hs_pg::crc32c(&content),
            };
            inc.changed.insert(
                "backup_label".to_string(),
                ("backup_label".to_string(), entry),
            );
        }
        Ok(())
    }
}

fn stream_error(what: &str) -> Error {
    Error::of_kind(
        ErrorKind::Protocol,
        code::PROTOCOL_BACKUP_STREAM_INVALID,
        format!("the server's BASE_BACKUP stream was not as expected: {what}"),
    )
    .with_suggestion("check the server log; if it persists, report it with the server version")
}

/// The system identifier a deployment belongs to, and where it was read: the newest
/// backup's manifest, or, before the first backup, the newest WAL `wal stream` stored
/// (the long header of a segment's first page). `None` for a deployment with neither.
/// `backup` and `wal stream` both decide with this.
/// `newest` is the deployment's newest intact backup
/// (`Repository::newest_intact_backup`), which the caller has read.
pub(crate) async fn deployment_system_identifier(
    repo: &Repository,
    deployment: &str,
    newest: Option<&BackupManifest>,
) -> Result<Option<(String, String)>> {
    if let Some(m) = newest {
        return Ok(Some((
            m.system_identifier.clone(),
            format!("backup {}", m.backup_id),
        )));
    }
    let listing = repo.list_wal(deployment).await?;
    let mut wal: Vec<_> = listing
        .segments
        .iter()
        .map(|s| (s, false))
        .chain(listing.partials.iter().map(|s| (s, true)))
        .collect();
    wal.sort_by_key(|(s, partial)| std::cmp::Reverse((s.timeline, s.log, s.seg, *partial)));
    for (s, partial) in wal.into_iter().take(WAL_SYSID_CANDIDATES) {
        let name = if partial {
            format!("{}.partial", s.name)
        } else {
            s.name.clone()
        };
        match repo.get_wal(deployment, &name).await {
            Ok(data) => {
                if let Some(id) = hs_proto::segment_system_identifier(&data) {
                    return Ok(Some((id.to_string(), format!("WAL {name}"))));
                }
            }
            // The streamer completed the partial meanwhile, or one object is damaged
            // (`verify` reports that): look at the next newest.
            Err(e) if e.code().starts_with("notfound.") || e.code().starts_with("verify.") => {
                tracing::debug!(
                    code = e.code(),
                    "skipping WAL {name} for the system identifier: {e}"
                );
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// How many of the newest WAL objects [`deployment_system_identifier`] tries.
const WAL_SYSID_CANDIDATES: usize = 4;

/// Fails with `conflict.system_identifier_mismatch` when `system_id` (the server's,
/// from `IDENTIFY_SYSTEM`) is not the deployment's, unless `allow` (then it warns).
pub(crate) async fn check_system_identifier(
    repo: &Repository,
    deployment: &str,
    system_id: &str,
    allow: bool,
) -> Result<()> {
    // One listing and one manifest read, however many backups the deployment has.
    let newest = repo.newest_intact_backup(deployment).await?;
    check_system_identifier_with(repo, deployment, newest.as_ref(), system_id, allow).await
}

/// [`check_system_identifier`] with the deployment's newest intact backup already read.
pub(crate) async fn check_system_identifier_with(
    repo: &Repository,
    deployment: &str,
    newest: Option<&BackupManifest>,
    system_id: &str,
    allow: bool,
) -> Result<()> {
    let Some((theirs, source)) = deployment_system_identifier(repo, deployment, newest).await?
    else {
        return Ok(());
    };
    if theirs == system_id {
        return Ok(());
    }
    if allow {
        tracing::warn!(
            deployment,
            "server system identifier {system_id} differs from the deployment's ({theirs}, {source}); continuing as allowed"
        );
        return Ok(());
    }
    Err(Error::of_kind(
        ErrorKind::Conflict,
        code::CONFLICT_SYSTEM_IDENTIFIER_MISMATCH,
        format!(
            "the server's system identifier {system_id} differs from deployment {deployment}'s ({theirs}, {source}): it is another cluster"
        ),
    )
    .with_suggestion(
        "check the connection points at the right cluster; to keep another cluster use another deployment name; if this cluster was re-created (pg_upgrade, restored from elsewhere), allow the change with --allow-system-id-change (REST API: allow_system_id_change)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_come_lz4_compressed_unless_the_rate_is_limited() {
        let mut opts = BackupOptions::new("main");
        let bb = base_backup_options(&opts, "20261206T120000Z", false);
        assert_eq!(bb.compression, ServerCompression::Lz4);
        assert!(bb.to_command().unwrap().contains("COMPRESSION 'lz4'"));
        opts.max_rate_kbps = Some(1024);
        let bb = base_backup_options(&opts, "20261206T120000Z", true);
        assert_eq!(bb.compression, ServerCompression::None);
        let cmd = bb.to_command().unwrap();
        assert!(
            cmd.contains("MAX_RATE 1024") && !cmd.contains("COMPRESSION"),
            "{cmd}"
        );
        assert!(bb.incremental && bb.label.contains("main 20261206T120000Z"));
    }

    #[test]
    fn a_chunk_cut_from_the_data_shares_it_and_another_is_copied() {
        let data = Bytes::from((0..=255u8).cycle().take(20_000).collect::<Vec<u8>>());
        let inside = share_or_copy(&data, &data[8192..16384]);
        assert_eq!(inside, data.slice(8192..16384));
        assert_eq!(inside.as_ptr(), data[8192..].as_ptr(), "not shared");
        let gathered = data[100..300].to_vec();
        let copied = share_or_copy(&data, &gathered);
        assert_eq!(copied, gathered);
        assert_ne!(copied.as_ptr(), gathered.as_ptr());
        // Starting inside a piece of `data` but running past its end: copied.
        let head = data.slice(..10_000);
        let straddling = share_or_copy(&head, &data[9_000..11_000]);
        assert_eq!(straddling, data.slice(9_000..11_000));
        assert_ne!(straddling.as_ptr(), data[9_000..].as_ptr());
        assert_eq!(share_or_copy(&data, &[]), Bytes::new());
    }
}
