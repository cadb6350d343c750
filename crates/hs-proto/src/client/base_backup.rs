//! `BASE_BACKUP`: its options, the events it yields, and the sans-IO [`BackupMachine`] that
//! turns backend messages into those events ([`BaseBackupStream`] drives it over a connection).

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};
use hs_base::code;

use super::{log_notice, server_error, unexpected, ReplicationClient};
use crate::codec::{frontend, BackendMessage};
use crate::error::{Error, ErrorKind, Result};
use crate::lsn::{Lsn, TimelineId};
use crate::lz4::Lz4FrameDecoder;
use crate::tar::{TarEntryHeader, TarEvent, TarParser};

/// Options of `BASE_BACKUP` (PostgreSQL 15+ syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackupOptions {
    /// Backup label (stored in `backup_label`).
    pub label: String,
    /// `CHECKPOINT 'fast'` instead of a spread checkpoint.
    pub fast_checkpoint: bool,
    /// Include the WAL needed to make the backup consistent (`WAL`).
    pub wal: bool,
    /// Ask for a backup_manifest (`MANIFEST 'yes'`).
    pub manifest: bool,
    /// Server-side rate limit in kB/s (`MAX_RATE`; PostgreSQL accepts 32..=1048576).
    pub max_rate_kbps: Option<u32>,
    /// Ask for size estimates and progress messages (`PROGRESS`).
    pub progress: bool,
    /// Send only the blocks changed since the backup whose manifest was uploaded on
    /// this connection first (`INCREMENTAL`, PostgreSQL 17+ with `summarize_wal = on`;
    /// see [`ReplicationClient::upload_manifest`]). Changed relation files then arrive
    /// as `INCREMENTAL.<name>` members.
    pub incremental: bool,
    /// Let the server wait, at the end, until its archiver has archived the last WAL
    /// segment the backup needs (`WAIT`, the server's default). Only worth it when the
    /// backup relies on the server's WAL archive; with `wal` the stream already carries
    /// that WAL, so [`Default`] turns the wait off, as `pg_basebackup` does.
    pub wait_for_archive: bool,
    /// How the server compresses the archives it sends (`COMPRESSION`). The stream's
    /// events carry the archives' plain content either way; the manifest is never
    /// compressed.
    pub compression: ServerCompression,
}

/// Compression the server applies to the archives of a base backup before it sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ServerCompression {
    /// Plain tar: every byte of the data directory crosses the connection.
    #[default]
    None,
    /// `COMPRESSION 'lz4'` at its default (fastest) level. On a pgbench database the
    /// stream is about a ninth of the data directory, and the server's sender spends less
    /// time compressing than it saves in sending; the client decodes it (about 7 GB/s of
    /// output per core). Needs a server built with lz4 (PGDG's packages are); one without
    /// refuses the command before the backup starts.
    Lz4,
}

impl Default for BaseBackupOptions {
    fn default() -> Self {
        BaseBackupOptions {
            label: "pg_hardstorage".to_string(),
            fast_checkpoint: false,
            wal: true,
            manifest: true,
            max_rate_kbps: None,
            progress: false,
            incremental: false,
            wait_for_archive: false,
            compression: ServerCompression::None,
        }
    }
}

impl BaseBackupOptions {
    /// The `BASE_BACKUP ( ... )` command text.
    pub fn to_command(&self) -> Result<String> {
        let mut opts = vec![format!("LABEL '{}'", self.label.replace('\'', "''"))];
        if self.progress {
            opts.push("PROGRESS".to_string());
        }
        if self.fast_checkpoint {
            opts.push("CHECKPOINT 'fast'".to_string());
        }
        if self.wal {
            opts.push("WAL".to_string());
        }
        if self.manifest {
            opts.push("MANIFEST 'yes'".to_string());
        }
        if self.incremental {
            opts.push("INCREMENTAL".to_string());
        }
        if !self.wait_for_archive {
            opts.push("WAIT false".to_string());
        }
        match self.compression {
            ServerCompression::None => {}
            ServerCompression::Lz4 => opts.push("COMPRESSION 'lz4'".to_string()),
        }
        if let Some(r) = self.max_rate_kbps {
            if !(32..=1_048_576).contains(&r) {
                return Err(crate::error::usage(
                    code::USAGE_MAX_RATE_INVALID,
                    format!("MAX_RATE {r} kB/s is outside the range PostgreSQL accepts"),
                )
                .with_suggestion("give a rate between 32 and 1048576 kB/s"));
            }
            opts.push(format!("MAX_RATE {r}"));
        }
        if self.label.contains('\0') {
            return Err(crate::error::usage(
                code::USAGE_NUL_IN_STRING,
                "backup label contains a NUL byte",
            ));
        }
        Ok(format!("BASE_BACKUP ( {} )", opts.join(", ")))
    }
}

/// A tablespace as listed by the server at the start of a base backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablespaceInfo {
    /// Tablespace OID; `None` for the main data directory.
    pub oid: Option<u32>,
    /// Tablespace directory on the server; `None` for the main data directory.
    pub location: Option<String>,
    /// Estimated size in bytes (only with `progress`).
    pub size_bytes: Option<u64>,
}

/// One step of a base backup, in stream order.
///
/// Order: `Started`, then per archive `ArchiveStart`, members (`Entry`, `Data`*,
/// `EntryEnd`), `ArchiveEnd`; `Progress` anywhere after `Started`; then `Manifest` (if
/// asked for) and `Finished` last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupEvent {
    /// The backup started (checkpoint done).
    Started {
        /// WAL location the backup starts at.
        start_lsn: Lsn,
        /// Timeline at the start.
        timeline: TimelineId,
        /// Tablespaces in server order (PostgreSQL lists the main data directory, with
        /// `oid: None`, last; its archive `base.tar` also comes last).
        tablespaces: Vec<TablespaceInfo>,
    },
    /// A new archive (`base.tar` or `<oid>.tar`) begins.
    ArchiveStart {
        /// Archive name as the server gives it.
        name: String,
        /// Tablespace directory, `None` for the main data directory.
        tablespace_location: Option<String>,
    },
    /// A member of the current archive begins.
    Entry(TarEntryHeader),
    /// Next piece of the current file's content.
    Data(Bytes),
    /// The current member is complete.
    EntryEnd,
    /// The current archive is complete.
    ArchiveEnd,
    /// Bytes sent so far (only with `progress`).
    Progress {
        /// Total archive bytes the server has sent.
        bytes_done: u64,
    },
    /// The complete `backup_manifest` file.
    Manifest(Bytes),
    /// The backup finished; WAL up to `end_lsn` is needed for consistency.
    Finished {
        /// End WAL location.
        end_lsn: Lsn,
        /// Timeline at the end.
        timeline: TimelineId,
    },
}

#[derive(Debug)]
enum Phase {
    /// Reading the start-position and tablespace result sets.
    Header,
    /// Inside the COPY stream.
    Copy,
    /// After CopyDone: end-position result set, CommandComplete, ReadyForQuery.
    Trailer,
    Done,
}

#[derive(Debug, PartialEq, Eq)]
enum Target {
    None,
    Archive,
    Manifest,
}

/// The sans-IO state machine behind [`BaseBackupStream`]: feed backend messages, pull events.
#[derive(Debug)]
pub(crate) struct BackupMachine {
    phase: Phase,
    result_sets: Vec<Vec<Vec<Option<String>>>>,
    current_set: Option<Vec<Vec<Option<String>>>>,
    target: Target,
    tar: TarParser,
    tar_done: bool,
    /// Set for every archive when the server compresses them with lz4.
    lz4: bool,
    /// The current archive's lz4 frame; its blocks become `pending` one at a time.
    decoder: Option<Lz4FrameDecoder>,
    pending: Bytes,
    manifest: BytesMut,
    queue: VecDeque<BackupEvent>,
    error: Option<Error>,
}

impl BackupMachine {
    pub(crate) fn new(compression: ServerCompression) -> BackupMachine {
        BackupMachine {
            phase: Phase::Header,
            result_sets: Vec::new(),
            current_set: None,
            target: Target::None,
            tar: TarParser::new(),
            tar_done: false,
            lz4: compression == ServerCompression::Lz4,
            decoder: None,
            pending: Bytes::new(),
            manifest: BytesMut::new(),
            queue: VecDeque::new(),
            error: None,
        }
    }

    fn finish_set(&mut self) {
        if let Some(s) = self.current_set.take() {
            self.result_sets.push(s);
        }
    }

    fn end_archive(&mut self) -> Result<()> {
        if let Some(d) = self.decoder.take() {
            if !d.is_done() {
                return Err(Error::of_kind(
                    ErrorKind::Protocol,
                    code::PROTOCOL_TAR_INVALID,
                    "an lz4-compressed archive in the base backup stream ended before its \
                     LZ4 frame did",
                )
                .with_suggestion(crate::lz4::UNCOMPRESSED_HINT));
            }
        }
        if self.target == Target::Archive && !self.tar_done {
            if !self.tar.at_member_boundary() {
                return Err(Error::of_kind(
                    ErrorKind::Protocol,
                    code::PROTOCOL_TAR_INVALID,
                    "an archive in the base backup stream ended in the middle of a member",
                ));
            }
            self.queue.push_back(BackupEvent::ArchiveEnd);
        }
        self.target = Target::None;
        Ok(())
    }

    /// Next event from already-received data; `Ok(None)` means "feed another message".
    pub(crate) fn poll_event(&mut self) -> Result<Option<BackupEvent>> {
        if let Some(e) = self.queue.pop_front() {
            return Ok(Some(e));
        }
        while self.target == Target::Archive && !self.tar_done {
            if let Some(ev) = self.tar.next_event(&mut self.pending)? {
                return Ok(Some(match ev {
                    TarEvent::Entry(h) => BackupEvent::Entry(h),
                    TarEvent::Data(d) => BackupEvent::Data(d),
                    TarEvent::EntryEnd => BackupEvent::EntryEnd,
                    TarEvent::End => {
                        // Anything after the end-of-archive marker is padding.
                        self.tar_done = true;
                        self.pending = Bytes::new();
                        BackupEvent::ArchiveEnd
                    }
                }));
            }
            // The parser took all of `pending`: with lz4, go on with the frame's next
            // whole block, if it holds one.
            match self.decoder.as_mut() {
                Some(d) if self.pending.is_empty() => match d.next_block()? {
                    Some(block) => self.pending = block,
                    None => break,
                },
                _ => break,
            }
        }
        // After the tar end marker, the rest of the frame (padding) is decoded only to
        // check it; `end_archive` then requires the frame's end.
        if self.tar_done {
            if let Some(d) = self.decoder.as_mut() {
                while d.next_block()?.is_some() {}
            }
        }
        Ok(None)
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done) && self.queue.is_empty()
    }

    /// Takes the error reported by the server, once ReadyForQuery followed it.
    fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    /// Processes one backend message.
    pub(crate) fn feed(&mut self, msg: BackendMessage) -> Result<()> {
        match msg {
            BackendMessage::NoticeResponse(n) => {
                log_notice(&n);
                return Ok(());
            }
            BackendMessage::ParameterStatus { .. } => return Ok(()),
            BackendMessage::ErrorResponse(e) => {
                self.error.get_or_insert_with(|| server_error(&e, ""));
                if matches!(self.phase, Phase::Copy) {
                    // The COPY is over; the server follows with ReadyForQuery.
                    self.phase = Phase::Trailer;
                }
                return Ok(());
            }
            BackendMessage::ReadyForQuery { .. } if self.error.is_some() => {
                self.phase = Phase::Done;
                return Ok(());
            }
            _ => {}
        }
        match self.phase {
            Phase::Header | Phase::Trailer => self.feed_result(msg),
            Phase::Copy => self.feed_copy(msg),
            Phase::Done => Err(unexpected("after the base backup finished", &msg)),
        }
    }

    /// A message of the result sets before (`Header`) or after (`Trailer`) the COPY stream.
    fn feed_result(&mut self, msg: BackendMessage) -> Result<()> {
        match msg {
            BackendMessage::RowDescription(_) => {
                self.finish_set();
                self.current_set = Some(Vec::new());
            }
            BackendMessage::DataRow(vals) => {
                let row = vals
                    .into_iter()
                    .map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned()))
                    .collect();
                self.current_set
                    .as_mut()
                    .ok_or_else(|| crate::error::protocol("DataRow without RowDescription"))?
                    .push(row);
            }
            BackendMessage::CommandComplete { .. } => self.finish_set(),
            BackendMessage::CopyOutResponse if matches!(self.phase, Phase::Header) => {
                self.finish_set();
                let started = self.started()?;
                self.queue.push_back(started);
                self.result_sets.clear();
                self.phase = Phase::Copy;
            }
            BackendMessage::ReadyForQuery { .. } if matches!(self.phase, Phase::Trailer) => {
                self.finish_set();
                let set = self.result_sets.first().ok_or_else(|| {
                    crate::error::protocol("BASE_BACKUP ended without an end-position result")
                })?;
                let (end_lsn, timeline) = lsn_tli(set, "end")?;
                self.queue
                    .push_back(BackupEvent::Finished { end_lsn, timeline });
                self.phase = Phase::Done;
            }
            other => return Err(unexpected("in the BASE_BACKUP response", &other)),
        }
        Ok(())
    }

    /// A message of the COPY stream that carries the archives and the manifest.
    fn feed_copy(&mut self, msg: BackendMessage) -> Result<()> {
        match msg {
            BackendMessage::CopyData(d) => self.copy_data(d)?,
            BackendMessage::CopyDone => {
                let was_manifest = self.target == Target::Manifest;
                self.end_archive()?;
                if was_manifest {
                    let m = std::mem::take(&mut self.manifest).freeze();
                    self.queue.push_back(BackupEvent::Manifest(m));
                }
                self.phase = Phase::Trailer;
            }
            other => return Err(unexpected("in the base backup COPY stream", &other)),
        }
        Ok(())
    }

    /// One CopyData message: `n` new archive, `d` archive or manifest data, `p` progress,
    /// `m` the manifest follows.
    fn copy_data(&mut self, mut d: Bytes) -> Result<()> {
        if d.is_empty() {
            return Err(crate::error::invalid_message(
                "empty CopyData in base backup stream",
            ));
        }
        let kind = d.get_u8();
        match kind {
            b'n' => {
                self.end_archive()?;
                let mut name = take_cstr(&mut d)?;
                let loc = take_cstr(&mut d)?;
                // The server names a compressed archive `base.tar.lz4`; the events carry
                // the plain archive, under its plain name.
                if self.lz4 {
                    let plain = name.strip_suffix(".lz4").ok_or_else(|| {
                        crate::error::protocol(format!(
                            "the server named an archive {name:?}, not *.lz4, when asked for lz4"
                        ))
                        .with_suggestion(crate::lz4::UNCOMPRESSED_HINT)
                    })?;
                    name = plain.to_string();
                }
                self.queue.push_back(BackupEvent::ArchiveStart {
                    name,
                    tablespace_location: (!loc.is_empty()).then_some(loc),
                });
                self.target = Target::Archive;
                self.tar = TarParser::new();
                self.tar_done = false;
                self.decoder = self.lz4.then(Lz4FrameDecoder::new);
            }
            b'd' => match self.target {
                Target::Archive if self.decoder.is_some() => {
                    if let Some(dec) = self.decoder.as_mut() {
                        dec.push(&d);
                    }
                }
                Target::Archive if self.tar_done => {}
                Target::Archive => {
                    if !self.pending.is_empty() {
                        return Err(crate::error::protocol(
                            "archive data fed before the previous chunk was consumed",
                        ));
                    }
                    self.pending = d;
                }
                Target::Manifest => self.manifest.extend_from_slice(&d),
                Target::None => {
                    return Err(crate::error::protocol(
                        "archive data before any archive started",
                    ))
                }
            },
            b'p' => {
                if d.remaining() < 8 {
                    return Err(crate::error::invalid_message("short progress message"));
                }
                let bytes_done = d.get_i64().max(0) as u64;
                self.queue.push_back(BackupEvent::Progress { bytes_done });
            }
            b'm' => {
                self.end_archive()?;
                self.target = Target::Manifest;
            }
            other => {
                return Err(crate::error::invalid_message(format!(
                    "unknown base backup message type {:?}",
                    other as char
                )))
            }
        }
        Ok(())
    }

    fn started(&self) -> Result<BackupEvent> {
        let start = self
            .result_sets
            .first()
            .ok_or_else(|| crate::error::protocol("BASE_BACKUP sent no start-position result"))?;
        let (start_lsn, timeline) = lsn_tli(start, "start")?;
        let mut tablespaces = Vec::new();
        if let Some(set) = self.result_sets.get(1) {
            for row in set {
                let col = |i: usize| row.get(i).cloned().flatten();
                let oid = match col(0) {
                    None => None,
                    Some(s) => Some(s.parse::<u32>().map_err(|_| {
                        crate::error::invalid_message(
                            "invalid tablespace OID in BASE_BACKUP result",
                        )
                    })?),
                };
                let size_bytes = match col(2) {
                    None => None,
                    Some(s) => Some(
                        s.parse::<u64>()
                            .map_err(|_| {
                                crate::error::invalid_message(
                                    "invalid tablespace size in BASE_BACKUP result",
                                )
                            })?
                            .saturating_mul(1024),
                    ),
                };
                tablespaces.push(TablespaceInfo {
                    oid,
                    location: col(1),
                    size_bytes,
                });
            }
        }
        Ok(BackupEvent::Started {
            start_lsn,
            timeline,
            tablespaces,
        })
    }
}

fn take_cstr(d: &mut Bytes) -> Result<String> {
    let end = d.iter().position(|&b| b == 0).ok_or_else(|| {
        crate::error::invalid_message("unterminated string in base backup stream")
    })?;
    let s = d.split_to(end);
    d.advance(1);
    String::from_utf8(s.to_vec())
        .map_err(|_| crate::error::invalid_message("non-UTF-8 name in base backup stream"))
}

fn lsn_tli(set: &[Vec<Option<String>>], what: &str) -> Result<(Lsn, TimelineId)> {
    let bad =
        || crate::error::invalid_message(format!("invalid BASE_BACKUP {what}-position result"));
    let row = set.first().ok_or_else(bad)?;
    let lsn = row
        .first()
        .cloned()
        .flatten()
        .ok_or_else(bad)?
        .parse::<Lsn>()
        .map_err(|_| bad())?;
    let tli = row
        .get(1)
        .cloned()
        .flatten()
        .ok_or_else(bad)?
        .parse::<TimelineId>()
        .map_err(|_| bad())?;
    Ok((lsn, tli))
}

/// The events of a running `BASE_BACKUP`; borrows the connection until finished.
///
/// Dropping it before `next()` returned `Ok(None)` leaves the connection unusable
/// (further commands fail with `protocol.connection_busy`).
pub struct BaseBackupStream<'a> {
    client: &'a mut ReplicationClient,
    machine: BackupMachine,
}

impl std::fmt::Debug for BaseBackupStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaseBackupStream").finish_non_exhaustive()
    }
}

impl BaseBackupStream<'_> {
    /// The next event, or `Ok(None)` after [`BackupEvent::Finished`]. Nothing is read
    /// from the server until you ask, so a slow consumer slows the server down.
    pub async fn next(&mut self) -> Result<Option<BackupEvent>> {
        loop {
            if let Some(ev) = self.machine.poll_event()? {
                return Ok(Some(ev));
            }
            if self.machine.is_done() {
                self.client.busy = false;
                if let Some(e) = self.machine.take_error() {
                    return Err(e);
                }
                return Ok(None);
            }
            let msg = self.client.conn.recv().await?;
            self.machine.feed(msg)?;
        }
    }
}

impl ReplicationClient {
    /// Starts `BASE_BACKUP` and returns the event stream. Pull events with
    /// [`BaseBackupStream::next`]; the server is only read as fast as you pull.
    pub async fn base_backup(&mut self, opts: &BaseBackupOptions) -> Result<BaseBackupStream<'_>> {
        self.check_idle()?;
        if self.server_version_num != 0 && self.server_version_num < 150_000 {
            return Err(Error::of_kind(
                ErrorKind::Server,
                code::PREFLIGHT_SERVER_TOO_OLD,
                format!(
                    "server version {} is older than PostgreSQL 15, which this tool requires",
                    self.server_version_num
                ),
            ));
        }
        let cmd = opts.to_command()?;
        frontend::query(&cmd, &mut self.conn.wbuf)?;
        self.busy = true;
        self.conn.flush().await?;
        Ok(BaseBackupStream {
            client: self,
            machine: BackupMachine::new(opts.compression),
        })
    }

    /// `UPLOAD_MANIFEST` (PostgreSQL 17+): hands the server the `backup_manifest` of an
    /// earlier backup of this cluster, so that the next `BASE_BACKUP` with
    /// [`BaseBackupOptions::incremental`] on this connection sends only what changed
    /// since then. The server checks the manifest's checksum and WAL ranges now or at
    /// `BASE_BACKUP`; its errors come back as `server.*`/`preflight.*` errors and leave
    /// the connection usable.
    pub async fn upload_manifest(&mut self, manifest: &[u8]) -> Result<()> {
        self.check_idle()?;
        if self.server_version_num != 0 && self.server_version_num < 170_000 {
            return Err(Error::of_kind(
                ErrorKind::Server,
                code::PREFLIGHT_SERVER_TOO_OLD,
                format!(
                    "server version {} has no incremental backups (PostgreSQL 17 or newer has)",
                    self.server_version_num
                ),
            ));
        }
        frontend::query("UPLOAD_MANIFEST", &mut self.conn.wbuf)?;
        self.busy = true;
        self.conn.flush().await?;
        let mut err: Option<Error> = None;
        let mut sent = false;
        loop {
            let msg = self.conn.recv().await?;
            let Some(msg) = self.absorb(msg, &mut err) else {
                continue;
            };
            match msg {
                BackendMessage::CopyInResponse if !sent => {
                    for piece in manifest.chunks(UPLOAD_PIECE) {
                        frontend::copy_data(piece, &mut self.conn.wbuf)?;
                        self.conn.flush().await?;
                    }
                    frontend::copy_done(&mut self.conn.wbuf);
                    self.conn.flush().await?;
                    sent = true;
                }
                BackendMessage::CommandComplete { .. }
                | BackendMessage::RowDescription(_)
                | BackendMessage::DataRow(_) => {}
                BackendMessage::ReadyForQuery { .. } => break,
                other => return Err(unexpected("in the UPLOAD_MANIFEST response", &other)),
            }
        }
        self.busy = false;
        match err {
            Some(e) => Err(e),
            None if !sent => Err(crate::error::protocol(
                "UPLOAD_MANIFEST finished without asking for the manifest",
            )),
            None => Ok(()),
        }
    }
}

/// CopyData size when uploading a manifest.
const UPLOAD_PIECE: usize = 64 << 10;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::testing::backend;
    use crate::error::SqlState;
    use crate::tar::testing::{build, Member};
    use crate::tar::EntryKind;
    use bytes::BufMut;
    use proptest::prelude::*;

    fn row_desc(names: &[&str], out: &mut BytesMut) {
        let mut b = BytesMut::new();
        b.put_i16(names.len() as i16);
        for n in names {
            b.put_slice(n.as_bytes());
            b.put_u8(0);
            b.put_u32(0);
            b.put_i16(0);
            b.put_u32(25);
            b.put_i16(-1);
            b.put_i32(-1);
            b.put_i16(0);
        }
        backend(b'T', &b, out);
    }

    fn data_row(vals: &[Option<&str>], out: &mut BytesMut) {
        let mut b = BytesMut::new();
        b.put_i16(vals.len() as i16);
        for v in vals {
            match v {
                None => b.put_i32(-1),
                Some(s) => {
                    b.put_i32(s.len() as i32);
                    b.put_slice(s.as_bytes());
                }
            }
        }
        backend(b'D', &b, out);
    }

    fn copy_data(kind: u8, body: &[u8], out: &mut BytesMut) {
        let mut b = vec![kind];
        b.extend_from_slice(body);
        backend(b'd', &b, out);
    }

    /// A whole BASE_BACKUP response as PostgreSQL 15 sends it.
    fn server_stream(tar: &[u8], chunk: usize) -> BytesMut {
        server_stream_with(tar, &[0u8; 1024], chunk, "")
    }

    /// [`server_stream`] with the tablespace archive's bytes given too, and a suffix of
    /// the archive names (`.lz4` when the server compresses them).
    fn server_stream_with(tar: &[u8], ts_tar: &[u8], chunk: usize, suffix: &str) -> BytesMut {
        let mut s = BytesMut::new();
        row_desc(&["recptr", "tli"], &mut s);
        data_row(&[Some("0/2000028"), Some("1")], &mut s);
        backend(b'C', b"SELECT\0", &mut s);
        row_desc(&["spcoid", "spclocation", "size"], &mut s);
        data_row(&[None, None, Some("30000")], &mut s);
        data_row(&[Some("16400"), Some("/srv/ts1"), Some("8")], &mut s);
        backend(b'C', b"SELECT\0", &mut s);
        backend(b'H', &[0, 0, 0], &mut s);
        copy_data(b'n', format!("base.tar{suffix}\0\0").as_bytes(), &mut s);
        for c in tar.chunks(chunk) {
            copy_data(b'd', c, &mut s);
        }
        copy_data(b'p', &123i64.to_be_bytes(), &mut s);
        copy_data(
            b'n',
            format!("16400.tar{suffix}\0/srv/ts1\0").as_bytes(),
            &mut s,
        );
        for c in ts_tar.chunks(chunk) {
            copy_data(b'd', c, &mut s);
        }
        copy_data(b'm', b"", &mut s);
        copy_data(b'd', b"{\"PostgreSQL-Backup-Manifest-Version\": 1,", &mut s);
        copy_data(b'd', b" \"Files\": []}\n", &mut s);
        backend(b'c', b"", &mut s);
        row_desc(&["recptr", "tli"], &mut s);
        data_row(&[Some("0/2000100"), Some("1")], &mut s);
        backend(b'C', b"SELECT\0", &mut s);
        backend(b'C', b"BASE_BACKUP\0", &mut s);
        backend(b'Z', b"I", &mut s);
        s
    }

    fn run(s: BytesMut) -> Result<Vec<BackupEvent>> {
        run_with(ServerCompression::None, s)
    }

    fn run_with(compression: ServerCompression, mut s: BytesMut) -> Result<Vec<BackupEvent>> {
        let mut m = BackupMachine::new(compression);
        let mut out = Vec::new();
        loop {
            while let Some(ev) = m.poll_event()? {
                out.push(ev);
            }
            if m.is_done() {
                if let Some(e) = m.take_error() {
                    return Err(e);
                }
                return Ok(out);
            }
            let msg = BackendMessage::parse(&mut s)?
                .ok_or_else(|| crate::error::protocol("stream ended early"))?;
            m.feed(msg)?;
        }
    }

    fn sample_tar() -> Vec<u8> {
        build(
            &[
                Member {
                    path: "PG_VERSION",
                    kind: EntryKind::File,
                    data: b"15\n",
                },
                Member {
                    path: "global",
                    kind: EntryKind::Dir,
                    data: b"",
                },
                Member {
                    path: "global/pg_control",
                    kind: EntryKind::File,
                    data: &[9u8; 8192],
                },
            ],
            false,
            false,
        )
    }

    /// Squash consecutive Data events so chunking does not matter in comparisons.
    fn normalize(evs: Vec<BackupEvent>) -> Vec<BackupEvent> {
        let mut out: Vec<BackupEvent> = Vec::new();
        for e in evs {
            match (out.last_mut(), e) {
                (Some(BackupEvent::Data(prev)), BackupEvent::Data(d)) => {
                    let mut v = prev.to_vec();
                    v.extend_from_slice(&d);
                    *prev = Bytes::from(v);
                }
                (_, e) => out.push(e),
            }
        }
        out
    }

    #[test]
    fn base_backup_event_sequence() {
        let evs = normalize(run(server_stream(&sample_tar(), 700)).unwrap());
        let mut it = evs.iter();
        match it.next() {
            Some(BackupEvent::Started {
                start_lsn,
                timeline,
                tablespaces,
            }) => {
                assert_eq!(*start_lsn, Lsn(0x2000028));
                assert_eq!(*timeline, TimelineId(1));
                assert_eq!(tablespaces.len(), 2);
                assert_eq!(tablespaces[0].oid, None);
                assert_eq!(tablespaces[0].size_bytes, Some(30000 * 1024));
                assert_eq!(tablespaces[1].oid, Some(16400));
                assert_eq!(tablespaces[1].location.as_deref(), Some("/srv/ts1"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            it.next(),
            Some(&BackupEvent::ArchiveStart {
                name: "base.tar".into(),
                tablespace_location: None
            })
        );
        assert!(matches!(it.next(), Some(BackupEvent::Entry(h)) if h.path == "PG_VERSION"));
        assert_eq!(
            it.next(),
            Some(&BackupEvent::Data(Bytes::from_static(b"15\n")))
        );
        assert_eq!(it.next(), Some(&BackupEvent::EntryEnd));
        assert!(matches!(it.next(), Some(BackupEvent::Entry(h)) if h.kind == EntryKind::Dir));
        assert_eq!(it.next(), Some(&BackupEvent::EntryEnd));
        assert!(matches!(it.next(), Some(BackupEvent::Entry(h)) if h.path == "global/pg_control"));
        assert!(matches!(it.next(), Some(BackupEvent::Data(d)) if d.len() == 8192));
        assert_eq!(it.next(), Some(&BackupEvent::EntryEnd));
        assert_eq!(it.next(), Some(&BackupEvent::ArchiveEnd));
        assert_eq!(it.next(), Some(&BackupEvent::Progress { bytes_done: 123 }));
        assert_eq!(
            it.next(),
            Some(&BackupEvent::ArchiveStart {
                name: "16400.tar".into(),
                tablespace_location: Some("/srv/ts1".into())
            })
        );
        assert_eq!(it.next(), Some(&BackupEvent::ArchiveEnd));
        match it.next() {
            Some(BackupEvent::Manifest(m)) => {
                assert!(m.starts_with(b"{\"PostgreSQL-Backup-Manifest-Version\": 1, \"Files\""))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            it.next(),
            Some(&BackupEvent::Finished {
                end_lsn: Lsn(0x2000100),
                timeline: TimelineId(1)
            })
        );
        assert_eq!(it.next(), None);
    }

    #[test]
    fn server_error_mid_copy_surfaces_with_sqlstate() {
        let mut s = BytesMut::new();
        row_desc(&["recptr", "tli"], &mut s);
        data_row(&[Some("0/2000028"), Some("1")], &mut s);
        backend(b'C', b"SELECT\0", &mut s);
        backend(b'H', &[0, 0, 0], &mut s);
        copy_data(b'n', b"base.tar\0\0", &mut s);
        backend(b'E', b"SERROR\0C58P01\0Mcould not open file\0\0", &mut s);
        backend(b'Z', b"I", &mut s);
        let e = run(s).unwrap_err();
        assert_eq!(e.sqlstate(), Some("58P01"));
        assert_eq!(e.code(), "server.error");
    }

    #[test]
    fn options_to_command() {
        let o = BaseBackupOptions {
            label: "it's".into(),
            fast_checkpoint: true,
            wal: true,
            manifest: true,
            max_rate_kbps: Some(1024),
            progress: true,
            incremental: true,
            wait_for_archive: true,
            compression: ServerCompression::Lz4,
        };
        assert_eq!(
            o.to_command().unwrap(),
            "BASE_BACKUP ( LABEL 'it''s', PROGRESS, CHECKPOINT 'fast', WAL, MANIFEST 'yes', INCREMENTAL, COMPRESSION 'lz4', MAX_RATE 1024 )"
        );
        let o = BaseBackupOptions {
            label: "plain".into(),
            ..Default::default()
        };
        assert_eq!(
            o.to_command().unwrap(),
            "BASE_BACKUP ( LABEL 'plain', WAL, MANIFEST 'yes', WAIT false )"
        );
        let o = BaseBackupOptions {
            max_rate_kbps: Some(1),
            ..Default::default()
        };
        assert_eq!(o.to_command().unwrap_err().code(), "usage.max_rate_invalid");
    }

    /// `data` as one LZ4 frame with linked blocks of at most 64 KiB, as PostgreSQL's
    /// server-side lz4 sends an archive (it uses 256 KiB blocks).
    fn lz4_frame(data: &[u8]) -> Vec<u8> {
        use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
        use std::io::Write;
        let info = FrameInfo::new()
            .block_mode(BlockMode::Linked)
            .block_size(BlockSize::Max64KB);
        let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// A tar whose file spans several 64 KiB blocks, with repeats a linked block refers to.
    fn big_tar() -> Vec<u8> {
        let mut data = Vec::new();
        for i in 0..40u32 {
            data.extend_from_slice(&[(i % 7) as u8; 8192]);
            data.extend(i.to_le_bytes().iter().cycle().take(1000));
        }
        build(
            &[Member {
                path: "base/5/16384",
                kind: EntryKind::File,
                data: &data,
            }],
            false,
            false,
        )
    }

    #[test]
    fn lz4_archives_yield_the_plain_events() {
        for tar in [sample_tar(), big_tar()] {
            let ts = [0u8; 1024];
            let plain = normalize(run(server_stream_with(&tar, &ts, 700, "")).unwrap());
            let lz4 = server_stream_with(&lz4_frame(&tar), &lz4_frame(&ts), 700, ".lz4");
            let decoded = normalize(run_with(ServerCompression::Lz4, lz4).unwrap());
            assert_eq!(decoded, plain);
        }
    }

    #[test]
    fn lz4_archive_cut_short_is_an_error() {
        let tar = sample_tar();
        let frame = lz4_frame(&tar);
        // Everything but the frame's end mark: the tar is complete, the frame is not.
        let cut = server_stream_with(
            &frame[..frame.len() - 4],
            &lz4_frame(&[0u8; 1024]),
            700,
            ".lz4",
        );
        let e = run_with(ServerCompression::Lz4, cut).unwrap_err();
        assert_eq!(e.code(), "protocol.tar_invalid");
        assert!(e.to_string().contains("LZ4 frame"), "{e}");
        assert!(
            e.suggestion().is_some_and(|s| s.contains("--max-rate")),
            "{e:?}"
        );
        // A plain archive where lz4 was asked for.
        let plain = server_stream_with(&tar, &[0u8; 1024], 700, ".lz4");
        let e = run_with(ServerCompression::Lz4, plain).unwrap_err();
        assert!(e.to_string().contains("LZ4 frame magic"), "{e}");
        assert_eq!(e.code(), "protocol.unexpected_message");
        assert!(
            e.suggestion().is_some_and(|s| s.contains("--max-rate")),
            "{e:?}"
        );
        // An archive not named *.lz4.
        let unnamed = server_stream_with(&frame, &lz4_frame(&[0u8; 1024]), 700, "");
        let e = run_with(ServerCompression::Lz4, unnamed).unwrap_err();
        assert!(e.to_string().contains("not *.lz4"), "{e}");
    }

    proptest! {
        #[test]
        fn chunking_of_lz4_copy_data_does_not_matter(chunk in 1usize..70000) {
            let tar = big_tar();
            let ts = [0u8; 1024];
            let plain = normalize(run(server_stream_with(&tar, &ts, 512, "")).unwrap());
            let lz4 = server_stream_with(&lz4_frame(&tar), &lz4_frame(&ts), chunk, ".lz4");
            prop_assert_eq!(normalize(run_with(ServerCompression::Lz4, lz4).unwrap()), plain);
        }

        #[test]
        fn chunking_of_copy_data_does_not_matter(chunk in 1usize..5000) {
            let tar = sample_tar();
            let a = normalize(run(server_stream(&tar, 512)).unwrap());
            let b = normalize(run(server_stream(&tar, chunk)).unwrap());
            prop_assert_eq!(a, b);
        }
    }
}
