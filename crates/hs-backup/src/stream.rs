//! Continuous WAL streaming into the repository (`wal stream`): a physical replication
//! slot, `START_REPLICATION`, segments assembled in memory and committed whole, partial
//! segments flushed on a timer, timeline switches, clean shutdown and reconnects.
//!
//! Durability rule: the flush (and apply) position reported to PostgreSQL in standby
//! status updates is only ever WAL that is durable in the repository. The slot's
//! `restart_lsn` follows that position, so the server never recycles WAL we do not hold.
//! Without `synchronous`, that is the end of the last committed full segment, or of the
//! partial written when the server asks for a reply (it does so at shutdown, and waits
//! for the reply before it exits); with it, the end of the last partial segment written
//! after each batch of WAL.
//!
//! Resume rule: where to start is decided from the repository alone (newest committed
//! segment, partial or recorded gap), checked against the slot's `restart_lsn`. WAL that
//! the server no longer has is recorded as an explicit gap object and reported loudly;
//! it is never skipped silently.

use std::time::{Duration, Instant};

use hs_base::{code, Code};
use hs_proto::{
    parse_timeline_history, parse_wal_segment_size, ConnConfig, Lsn, ReplicationClient,
    SegmentName, StreamMessage, TimelineId,
};
use hs_repo::{Repository, WalGap, WalListing, WalSegmentEncoder};
use tokio::sync::watch;

use crate::error::{Error, ErrorKind, Result};
use crate::names::{rfc3339, validate_deployment};
use crate::preflight::preflight_for_slot;

/// Whether to stream through a replication slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotMode {
    /// Use (and create if absent, `PHYSICAL RESERVE_WAL`) the slot of this name.
    Create(String),
    /// Stream without a slot: the server may recycle WAL before we stored it.
    None,
}

impl SlotMode {
    /// The default slot of a deployment: `pg_hardstorage_<deployment>`.
    pub fn for_deployment(deployment: &str) -> SlotMode {
        SlotMode::Create(slot_name_for(deployment))
    }

    fn name(&self) -> Option<&str> {
        match self {
            SlotMode::Create(n) => Some(n),
            SlotMode::None => None,
        }
    }
}

/// `pg_hardstorage_<deployment>`: the replication slot a deployment's stream uses.
pub fn slot_name_for(deployment: &str) -> String {
    format!("pg_hardstorage_{deployment}")
}

/// How `wal_stream` runs.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Deployment name (repository namespace).
    pub deployment: String,
    /// Replication slot to use.
    pub slot: SlotMode,
    /// How often the in-progress segment is written to the repository as `.partial`
    /// when it changed (1 s suits file://, 10 s object stores; the caller decides).
    pub partial_interval: Duration,
    /// After each batch of WAL, write the partial segment and report it flushed, so
    /// the server can use this stream as a synchronous standby (RPO 0).
    pub synchronous: bool,
    /// Do not run [`crate::preflight`] first.
    pub skip_preflight: bool,
    /// Interval between standby status updates (the server also asks when it wants one).
    pub status_interval: Duration,
    /// Accept a server whose system identifier differs from the deployment's backups.
    pub allow_system_id_change: bool,
    /// Reconnect on connection loss (exponential backoff 1 s .. 30 s). When false, the
    /// first connection error is returned.
    pub reconnect: bool,
}

impl StreamOptions {
    /// Defaults: the deployment's slot, partial every 10 s, status every 10 s,
    /// preflight on, not synchronous, reconnect on.
    pub fn new(deployment: impl Into<String>) -> StreamOptions {
        let deployment = deployment.into();
        StreamOptions {
            slot: SlotMode::for_deployment(&deployment),
            deployment,
            partial_interval: Duration::from_secs(10),
            synchronous: false,
            skip_preflight: false,
            status_interval: Duration::from_secs(10),
            allow_system_id_change: false,
            reconnect: true,
        }
    }
}

/// Why [`wal_stream`] returned successfully.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamExit {
    /// The shutdown signal was received; everything received was committed (the last
    /// segment as a partial) and the stream was ended cleanly.
    Shutdown {
        /// Timeline being streamed at the end.
        timeline: TimelineId,
        /// Last position reported flushed to the server (whole segments, or with
        /// `synchronous` the partial too): the slot keeps the WAL after it.
        flushed: Lsn,
        /// Everything before it is in the repository, counting the stored `.partial`
        /// of the segment in progress (at least `flushed`).
        durable: Lsn,
        /// Last position received.
        received: Lsn,
        /// Full segments committed by this call.
        segments: u64,
    },
}

/// Receives what the streamer does, for logs and metrics. All methods default to nothing.
pub trait StreamObserver: Send + Sync {
    /// Connected and about to stream `timeline` from `start`.
    fn streaming(&self, _timeline: TimelineId, _start: Lsn) {}
    /// A full segment is durable in the repository (`bytes` = segment size).
    fn segment_archived(&self, _segment: &str, _bytes: u64) {}
    /// The in-progress segment was written as a partial (`bytes` received so far).
    fn partial_written(&self, _segment: &str, _bytes: u64) {}
    /// Positions: received, durable in the repository, the server's end of WAL.
    fn positions(&self, _received: Lsn, _flushed: Lsn, _server_end: Lsn) {}
    /// WAL is missing and was recorded as a gap.
    fn gap(&self, _gap: &WalGap) {}
    /// The server switched to a new timeline.
    fn timeline_switch(&self, _from: TimelineId, _to: TimelineId, _at: Lsn) {}
    /// The connection was lost; retrying after `delay`.
    fn reconnecting(&self, _error: &Error, _delay: Duration) {}
}

/// A [`StreamObserver`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;
impl StreamObserver for NoObserver {}

/// Lag in bytes between the server's end of WAL and what is durable.
pub fn lag_bytes(server_end: Lsn, flushed: Lsn) -> u64 {
    server_end.0.saturating_sub(flushed.0)
}

// ---------------------------------------------------------------------------------
// Segment assembly

/// Collects streamed WAL into one segment buffer; hands out each segment once full.
#[derive(Debug)]
pub(crate) struct SegmentAssembler {
    seg: SegmentName,
    seg_size: u64,
    buf: Vec<u8>,
    /// `buf` as it will be stored, compressed as it arrives (None if it could not be
    /// set up: the segment is then compressed whole when stored).
    enc: Option<WalSegmentEncoder>,
    /// Bytes added since the last partial write.
    dirty: bool,
}

/// A segment completed by [`SegmentAssembler::push`], with its encoder.
pub(crate) struct Completed {
    pub(crate) seg: SegmentName,
    pub(crate) data: Vec<u8>,
    pub(crate) enc: Option<WalSegmentEncoder>,
}

impl std::fmt::Debug for Completed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completed")
            .field("seg", &self.seg)
            .field("len", &self.data.len())
            .finish_non_exhaustive()
    }
}

impl SegmentAssembler {
    /// Starts at `start`, which must be a segment start.
    pub(crate) fn new(tli: TimelineId, start: Lsn, seg_size: u64) -> Result<SegmentAssembler> {
        if start.segment_offset(seg_size) != 0 {
            return Err(internal(format!(
                "stream start {start} is not at a segment boundary"
            )));
        }
        Ok(SegmentAssembler {
            seg: SegmentName::from_lsn(tli, start, seg_size)?,
            seg_size,
            buf: Vec::new(),
            enc: None,
            dirty: false,
        })
    }

    /// The segment being filled.
    pub(crate) fn segment(&self) -> SegmentName {
        self.seg
    }

    /// The first position not yet received.
    pub(crate) fn received(&self) -> Lsn {
        Lsn(self.seg.start_lsn(self.seg_size).0 + self.buf.len() as u64)
    }

    /// Adds WAL that starts at `wal_start`; returns the segments this completed.
    pub(crate) fn push(&mut self, wal_start: Lsn, mut data: &[u8]) -> Result<Vec<Completed>> {
        let expected = self.received();
        if wal_start != expected {
            return Err(Error::of_kind(
                ErrorKind::Protocol,
                code::PROTOCOL_WAL_DISCONTINUITY,
                format!("the server sent WAL from {wal_start}, but {expected} was expected next"),
            )
            .temporary(true)
            .with_suggestion(
                "this is retried automatically; if it persists, report it with the server version",
            ));
        }
        let mut done = Vec::new();
        while !data.is_empty() {
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(self.seg_size as usize);
            }
            if self.buf.is_empty() {
                self.enc = WalSegmentEncoder::new()
                    .inspect_err(|e| tracing::warn!("WAL segments are compressed whole: {e}"))
                    .ok();
            }
            let room = self.seg_size as usize - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            if let Some(enc) = &mut self.enc {
                if let Err(e) = enc.push(&data[..take]) {
                    tracing::warn!("segment {} is compressed whole when stored: {e}", self.seg);
                    self.enc = None;
                }
            }
            data = &data[take..];
            self.dirty = true;
            if self.buf.len() as u64 == self.seg_size {
                done.push(Completed {
                    seg: self.seg,
                    data: std::mem::take(&mut self.buf),
                    enc: self.enc.take(),
                });
                self.seg = self.seg.next();
                self.dirty = false;
            }
        }
        Ok(done)
    }
}

// ---------------------------------------------------------------------------------
// Resume point

/// Where to (re)start streaming, and WAL that must be recorded as missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResumePlan {
    pub(crate) start: Lsn,
    /// Missing segments (inclusive range), to record before streaming.
    pub(crate) gap: Option<(SegmentName, SegmentName)>,
}

/// The first position the repository still needs: after the newest committed segment,
/// at the newest partial's segment start, or after the newest recorded gap, whichever
/// is latest (by timeline, then position). `None` for an empty repository.
pub(crate) fn repo_next_needed(
    listing: &WalListing,
    seg_size: u64,
) -> Result<Option<(TimelineId, Lsn)>> {
    let mut best: Option<(TimelineId, Lsn)> = None;
    let mut consider = |c: (TimelineId, Lsn)| {
        if best.is_none_or(|b| c > b) {
            best = Some(c);
        }
    };
    for s in &listing.segments {
        let n = SegmentName::parse(&s.name, seg_size)?;
        consider((n.timeline(), n.end_lsn()));
    }
    for s in &listing.partials {
        let n = SegmentName::parse(&s.name, seg_size)?;
        consider((n.timeline(), n.start_lsn(seg_size)));
    }
    for g in &listing.gaps {
        let n = SegmentName::parse(&g.to_segment, seg_size)?;
        consider((n.timeline(), n.end_lsn()));
    }
    Ok(best)
}

/// Decides where to start: `next` (what the repository needs next, if anything),
/// the slot's `restart_lsn`, or the server's current position, each rounded down to a
/// segment start. When a slot that already existed no longer holds `next`, the segments
/// in between are a gap. A slot we just created says nothing about older WAL (the
/// server may still have it), so then we ask for `next` and let the server say whether
/// it is gone.
pub(crate) fn plan_resume(
    next: Option<Lsn>,
    slot_restart: Option<Lsn>,
    slot_existed: bool,
    server_pos: Lsn,
    seg_size: u64,
) -> ResumePlan {
    match (next, slot_restart) {
        (Some(n), Some(r)) if slot_existed => {
            let n = n.segment_start(seg_size);
            let r = r.segment_start(seg_size);
            if r > n {
                // Timeline is filled in by the caller; use a placeholder here.
                let tli = TimelineId(1);
                let first = SegmentName::from_lsn(tli, n, seg_size).ok();
                let last = SegmentName::from_lsn(tli, Lsn(r.0 - 1), seg_size).ok();
                ResumePlan {
                    start: r,
                    gap: first.zip(last),
                }
            } else {
                ResumePlan {
                    start: n,
                    gap: None,
                }
            }
        }
        (Some(n), _) => ResumePlan {
            start: n.segment_start(seg_size),
            gap: None,
        },
        (None, Some(r)) => ResumePlan {
            start: r.segment_start(seg_size),
            gap: None,
        },
        (None, None) => ResumePlan {
            start: server_pos.segment_start(seg_size),
            gap: None,
        },
    }
}

/// The timeline that contains `lsn`, given the server's timeline and its history
/// (parents with their switch points, ascending).
pub(crate) fn timeline_of(
    lsn: Lsn,
    history: &[hs_proto::TimelineHistoryEntry],
    server_tli: TimelineId,
) -> TimelineId {
    for e in history {
        if lsn < e.switch_lsn {
            return e.tli;
        }
    }
    server_tli
}

// ---------------------------------------------------------------------------------
// The streamer

fn internal(msg: String) -> Error {
    Error::of_kind(ErrorKind::Protocol, code::PROTOCOL_WAL_STREAM_INVALID, msg)
}

/// Whether an error ends the stream for good (as opposed to reconnecting).
/// Storage that refuses writes (a read-only file system, permissions, denied
/// credentials) is treated like a full disk: an operator can fix it while the slot
/// keeps the WAL on the server, so the streamer retries, loudly, instead of exiting.
fn is_retryable(e: &Error) -> bool {
    e.is_temporary()
        || e.code().starts_with("unreachable.")
        || STORAGE_REFUSALS.iter().any(|&c| e.code() == c)
}

/// Repository errors that a fix outside this process can clear (only hs-repo raises
/// these codes).
const STORAGE_REFUSALS: [Code; 4] = [
    code::IO_PERMISSION_DENIED,
    code::IO_READ_ONLY,
    code::IO_WRITE_FAILED,
    code::AUTH_STORAGE_DENIED,
];

/// Streams WAL from the server at `conn` into `repo` until `shutdown` changes (send
/// `true`) or its sender is dropped.
///
/// Runs [`crate::preflight`] first unless `opts.skip_preflight` (then warns loudly); a fatal
/// finding is returned as an error with that finding's code. Reconnects with exponential
/// backoff (1 s .. 30 s) on connection loss when `opts.reconnect`, resuming from the
/// repository's state. See the module documentation for the durability and resume rules.
pub async fn wal_stream(
    conn: &ConnConfig,
    repo: &Repository,
    opts: &StreamOptions,
    shutdown: watch::Receiver<bool>,
    observer: &dyn StreamObserver,
) -> Result<StreamExit> {
    validate_deployment(&opts.deployment)?;
    if opts.skip_preflight {
        tracing::warn!(
            deployment = %opts.deployment,
            "preflight checks SKIPPED (--skip-preflight): server misconfiguration will surface only as streaming errors"
        );
    } else {
        let report = preflight_for_slot(conn, &opts.deployment, opts.slot.name()).await?;
        for f in &report.findings {
            if f.severity == crate::Severity::Warning {
                tracing::warn!(code = f.code, "preflight: {}", f.message);
            } else {
                tracing::info!(code = f.code, "preflight: {}", f.message);
            }
        }
        if let Some(e) = report.to_error() {
            return Err(e);
        }
    }
    if opts.slot == SlotMode::None {
        tracing::warn!(
            deployment = %opts.deployment,
            "streaming WITHOUT a replication slot (--no-slot): the server may recycle WAL before it is archived, which leaves a recorded gap"
        );
    }

    // An announcing lease (it protects no packs, so `repo gc` never waits for
    // it); failing to take or refresh it is logged, never fatal.
    let lease = match repo
        .acquire_lease(
            hs_repo::LeaseKind::Shared,
            &format!("wal stream {}", opts.deployment),
            &hs_repo::LeaseOptions::announce(),
        )
        .await
    {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(code = e.code(), "could not take a repository lease: {e}");
            None
        }
    };
    let res = stream_until_stopped(conn, repo, opts, shutdown, observer).await;
    if let Some(l) = lease {
        if let Err(e) = l.release().await {
            tracing::warn!(
                code = e.code(),
                "releasing the repository lease failed: {e}"
            );
        }
    }
    res
}

async fn stream_until_stopped(
    conn: &ConnConfig,
    repo: &Repository,
    opts: &StreamOptions,
    mut shutdown: watch::Receiver<bool>,
    observer: &dyn StreamObserver,
) -> Result<StreamExit> {
    let mut state = Totals::default();
    let mut backoff = Duration::from_secs(1);
    loop {
        if *shutdown.borrow() {
            return Ok(state.exit());
        }
        let started = Instant::now();
        match session(conn, repo, opts, &mut shutdown, observer, &mut state).await {
            Ok(()) => return Ok(state.exit()),
            Err(e) if opts.reconnect && is_retryable(&e) => {
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_secs(1);
                }
                tracing::warn!(
                    code = e.code(),
                    delay_s = backoff.as_secs(),
                    "WAL stream interrupted: {e}; reconnecting"
                );
                observer.reconnecting(&e, backoff);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e),
        }
    }
}

#[derive(Debug, Default)]
struct Totals {
    timeline: TimelineId,
    flushed: Lsn,
    durable: Lsn,
    received: Lsn,
    segments: u64,
}

impl Totals {
    fn exit(&self) -> StreamExit {
        StreamExit::Shutdown {
            timeline: self.timeline,
            flushed: self.flushed,
            durable: self.durable.max(self.flushed),
            received: self.received,
            segments: self.segments,
        }
    }
}

/// The deployment's system identifier is decided as for `backup` (its newest backup,
/// else its newest WAL): crate::backup::check_system_identifier.
async fn check_system_identifier(
    repo: &Repository,
    opts: &StreamOptions,
    system_id: &str,
) -> Result<()> {
    crate::backup::check_system_identifier(
        repo,
        &opts.deployment,
        system_id,
        opts.allow_system_id_change,
    )
    .await
}

/// What the session loop is doing with the repository.
struct Committer<'a> {
    repo: &'a Repository,
    deployment: &'a str,
    observer: &'a dyn StreamObserver,
}

impl Committer<'_> {
    async fn segment(&self, done: Completed) -> Result<()> {
        let Completed { seg, data, enc } = done;
        let name = seg.to_string();
        match enc {
            Some(enc) => {
                self.repo
                    .put_wal_segment_encoded(self.deployment, &name, enc, &data)
                    .await?
            }
            None => {
                self.repo
                    .put_wal_segment(self.deployment, &name, &data)
                    .await?
            }
        };
        self.repo.delete_wal_partial(self.deployment, &name).await?;
        tracing::info!(bytes = data.len(), "segment {name} archived");
        self.observer.segment_archived(&name, data.len() as u64);
        Ok(())
    }

    async fn partial(&self, asm: &mut SegmentAssembler) -> Result<()> {
        if !asm.dirty {
            return Ok(());
        }
        let name = asm.segment().to_string();
        match &mut asm.enc {
            Some(enc) => {
                self.repo
                    .put_wal_partial_encoded(self.deployment, &name, enc, &asm.buf)
                    .await?
            }
            None => {
                self.repo
                    .put_wal_partial(self.deployment, &name, &asm.buf)
                    .await?
            }
        }
        asm.dirty = false;
        self.observer.partial_written(&name, asm.buf.len() as u64);
        Ok(())
    }

    async fn gap(&self, first: SegmentName, last: SegmentName, reason: String) -> Result<()> {
        let gap = WalGap {
            from_segment: first.to_string(),
            to_segment: last.to_string(),
            reason,
            recorded_at: rfc3339(time::OffsetDateTime::now_utc()),
        };
        tracing::error!(
            deployment = %self.deployment,
            "WAL GAP: segments {} .. {} are gone from the server and were recorded as missing: {}",
            gap.from_segment, gap.to_segment, gap.reason
        );
        self.repo.put_wal_gap(self.deployment, &gap).await?;
        self.observer.gap(&gap);
        Ok(())
    }
}

/// One connection's worth of streaming. `Ok(())` means shutdown was requested and done.
async fn session(
    conn: &ConnConfig,
    repo: &Repository,
    opts: &StreamOptions,
    shutdown: &mut watch::Receiver<bool>,
    observer: &dyn StreamObserver,
    totals: &mut Totals,
) -> Result<()> {
    let mut client = ReplicationClient::connect(conn).await?;
    let seg_size = parse_wal_segment_size(&client.show("wal_segment_size").await?)?;
    let ident = client.identify_system().await?;
    check_system_identifier(repo, opts, &ident.system_id).await?;

    let slot = opts.slot.name();
    let (slot_restart, slot_existed) = open_slot(&mut client, slot).await?;
    let history = if ident.timeline.0 > 1 {
        store_history(&mut client, repo, opts, ident.timeline).await?
    } else {
        Vec::new()
    };
    let committer = Committer {
        repo,
        deployment: &opts.deployment,
        observer,
    };
    let resume = Resume {
        slot,
        slot_restart,
        slot_existed,
        server: &ident,
        history: &history,
        seg_size,
    };
    let mut start = resume_start(&committer, &resume).await?;
    let mut tli = timeline_of(start, &history, ident.timeline);
    let mut pos = Positions {
        // Everything before `start` is in the repository (or recorded as missing).
        flushed: start,
        server_end: ident.xlogpos,
        received_any: false,
    };
    // Where to continue if the server says the WAL at `start` is gone: what the slot
    // still holds, else the server's current segment.
    let fallback = slot_restart
        .unwrap_or(ident.xlogpos)
        .segment_start(seg_size);
    'timelines: loop {
        totals.timeline = tli;
        let mut asm = SegmentAssembler::new(tli, start, seg_size)?;
        observer.streaming(tli, start);
        tracing::info!(
            slot = slot.unwrap_or("-"),
            "streaming timeline {tli} from {start}"
        );
        let mut stream = match client.start_physical(slot, start, tli).await {
            Ok(s) => s,
            Err(e) if e.code() == code::NOTFOUND_WAL_REMOVED => {
                start = wal_removed(&committer, start, tli, fallback, seg_size, e).await?;
                pos.flushed = start;
                continue 'timelines;
            }
            Err(e) => return Err(e),
        };
        let mut follow = Follow {
            committer: &committer,
            opts,
            totals: &mut *totals,
            pos: &mut pos,
            asm: &mut asm,
            sync_pending: false,
            sync_batch: 0,
        };
        let switch = match follow.run(&mut stream, shutdown).await? {
            TimelineEnd::Shutdown => {
                match tokio::time::timeout(Duration::from_secs(10), stream.finish()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::debug!("ending the stream: {e}"),
                    Err(_) => tracing::debug!("ending the stream timed out"),
                }
                let _ = client.close().await;
                return Ok(());
            }
            TimelineEnd::WalRemoved(e) => {
                drop(stream);
                start = wal_removed(&committer, start, tli, fallback, seg_size, e).await?;
                pos.flushed = start;
                continue 'timelines;
            }
            TimelineEnd::Switch(switch) => switch,
        };
        // End of the timeline: finish the COPY, keep the old timeline's last segment as
        // a partial, store the new timeline's history, continue on it.
        let finished = stream.finish().await?;
        let Some((next_tli, next_start)) =
            switch.or(finished.map(|s| (s.next_tli, s.next_tli_start)))
        else {
            return Err(internal(
                "the WAL stream ended without a timeline switch".into(),
            ));
        };
        committer.partial(&mut asm).await?;
        let (_, content) = client.timeline_history(next_tli).await?;
        repo.put_timeline_history(&opts.deployment, next_tli.0, &content)
            .await?;
        tracing::info!("timeline switch {tli} -> {next_tli} at {next_start}");
        observer.timeline_switch(tli, next_tli, next_start);
        tli = next_tli;
        start = next_start.segment_start(seg_size);
    }
}

/// Reads the replication slot, creating it when absent; returns its `restart_lsn` and
/// whether it existed before. `(None, false)` without a slot.
async fn open_slot(
    client: &mut ReplicationClient,
    slot: Option<&str>,
) -> Result<(Option<Lsn>, bool)> {
    let Some(name) = slot else {
        return Ok((None, false));
    };
    match client.read_replication_slot(name).await? {
        Some(s) => Ok((s.restart_lsn, true)),
        None => {
            let created = client.create_physical_slot(name, true).await?;
            let restart = created.restart_lsn.map(|l| l.to_string());
            tracing::info!(
                "replication slot {name} created, restart_lsn {}",
                restart.as_deref().unwrap_or("-")
            );
            Ok((created.restart_lsn, false))
        }
    }
}

/// Stores the server's current timeline's history file and returns its entries.
async fn store_history(
    client: &mut ReplicationClient,
    repo: &Repository,
    opts: &StreamOptions,
    timeline: TimelineId,
) -> Result<Vec<hs_proto::TimelineHistoryEntry>> {
    let (_, content) = client.timeline_history(timeline).await?;
    repo.put_timeline_history(&opts.deployment, timeline.0, &content)
        .await?;
    let text = String::from_utf8_lossy(&content);
    parse_timeline_history(&text)
}

/// What [`resume_start`] decides from.
struct Resume<'a> {
    slot: Option<&'a str>,
    slot_restart: Option<Lsn>,
    slot_existed: bool,
    server: &'a hs_proto::SystemIdentity,
    history: &'a [hs_proto::TimelineHistoryEntry],
    seg_size: u64,
}

/// Where to start streaming (see the resume rule above); WAL the server no longer has
/// is recorded as a gap first.
async fn resume_start(committer: &Committer<'_>, r: &Resume<'_>) -> Result<Lsn> {
    let (repo, seg_size, server_tli) = (committer.repo, r.seg_size, r.server.timeline);
    let listing = repo.list_wal(committer.deployment).await?;
    let next = repo_next_needed(&listing, seg_size)?;
    if let Some((tli, _)) = next {
        if tli > server_tli {
            return Err(Error::of_kind(
                ErrorKind::Conflict,
                code::CONFLICT_TIMELINE_AHEAD,
                format!(
                    "the repository holds WAL of timeline {tli}, but the server is on timeline {}",
                    server_tli
                ),
            )
            .with_suggestion(
                "the server was restored to an older state; stream it into a new deployment",
            ));
        }
    }
    let plan = plan_resume(
        next.map(|n| n.1),
        r.slot_restart,
        r.slot_existed,
        r.server.xlogpos,
        seg_size,
    );
    if let Some((first, last)) = plan.gap {
        let tli = timeline_of(first.start_lsn(seg_size), r.history, server_tli);
        committer
            .gap(
                first.with_timeline(tli),
                last.with_timeline(timeline_of(last.start_lsn(seg_size), r.history, server_tli)),
                format!(
                    "replication slot {} restart_lsn {} is past the next WAL the repository needs",
                    r.slot.unwrap_or("-"),
                    r.slot_restart.unwrap_or_default()
                ),
            )
            .await?;
    }
    Ok(plan.start)
}

/// Where streaming stands, across the timelines of one session.
struct Positions {
    /// Durable in the repository: the flush position reported to the server.
    flushed: Lsn,
    /// The server's WAL end as last reported.
    server_end: Lsn,
    /// Whether any WAL was received in this session.
    received_any: bool,
}

/// What ended the streaming of one timeline.
enum TimelineEnd {
    /// Shutdown was requested; the stream was ended cleanly.
    Shutdown,
    /// The server no longer has the WAL at the start (before any was received).
    WalRemoved(hs_proto::Error),
    /// The server ended the timeline (next timeline and where it starts).
    Switch(Option<(TimelineId, Lsn)>),
}

/// Streaming one timeline into the repository.
struct Follow<'a, 'c> {
    committer: &'a Committer<'c>,
    opts: &'a StreamOptions,
    totals: &'a mut Totals,
    pos: &'a mut Positions,
    asm: &'a mut SegmentAssembler,
    /// Synchronous mode: WAL received but not yet made durable. The partial is written
    /// once the messages already waiting are consumed, not after every message: one
    /// upload per batch, so catching up does not rewrite the partial once per message.
    sync_pending: bool,
    sync_batch: usize,
}

impl Follow<'_, '_> {
    /// Receives and stores WAL until shutdown, the end of the timeline or an error.
    async fn run(
        &mut self,
        stream: &mut hs_proto::PhysicalStream<'_>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<TimelineEnd> {
        let opts = self.opts;
        let mut status_tick = tokio::time::interval(opts.status_interval);
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut partial_tick = tokio::time::interval(opts.partial_interval);
        partial_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut reply = false;
            if !opts.synchronous && !stream.ready_now() {
                // Caught up with the server: let WAL gather for a moment, so one wakeup
                // reads the messages of many commits instead of waking once per message
                // (under pgbench -c 4 the server sends ~1000 a second).
                tokio::time::sleep(GATHER_PAUSE).await;
            }
            tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    self.end_cleanly(stream).await?;
                    return Ok(TimelineEnd::Shutdown);
                }
                // The timers come before the stream: with `biased`, a stream that has a
                // message ready every time (catching up, or after each gathering pause)
                // would otherwise never let them fire, and the partial would not be written.
                _ = status_tick.tick() => reply = true,
                _ = partial_tick.tick() => {
                    self.committer.partial(self.asm).await?;
                }
                msg = stream.next() => {
                    match msg {
                        Err(e) if e.code() == code::NOTFOUND_WAL_REMOVED && !self.pos.received_any => {
                            return Ok(TimelineEnd::WalRemoved(e));
                        }
                        Err(e) => {
                            // Keep what we received: the next session resumes from the repo.
                            let _ = self.committer.partial(self.asm).await;
                            return Err(e);
                        }
                        Ok(None) => {
                            let _ = self.committer.partial(self.asm).await;
                            return Err(Error::of_kind(
                                ErrorKind::Postgres,
                                code::UNREACHABLE_STREAM_ENDED,
                                "the server ended the WAL stream",
                            )
                            .temporary(true));
                        }
                        Ok(Some(StreamMessage::XLogData { wal_start, wal_end, data, .. })) => {
                            reply = self.wal(wal_start, wal_end, &data).await?;
                        }
                        Ok(Some(StreamMessage::Keepalive { wal_end, reply_requested, .. })) => {
                            self.keepalive(wal_end, reply_requested).await?;
                            reply = reply_requested;
                        }
                        Ok(Some(StreamMessage::EndOfTimeline { next_tli, next_tli_start })) => {
                            return Ok(TimelineEnd::Switch(Some((next_tli, next_tli_start))));
                        }
                    }
                }
                // Reached only when no message is ready (`biased`): the batch is complete.
                _ = std::future::ready(()), if self.sync_pending => {
                    self.committer.partial(self.asm).await?;
                    self.pos.flushed = self.pos.flushed.max(self.asm.received());
                    self.totals.flushed = self.pos.flushed;
                    self.positions();
                    self.sync_pending = false;
                    self.sync_batch = 0;
                    reply = true;
                }
            }
            if reply {
                let flushed = self.pos.flushed;
                stream
                    .send_status(self.asm.received(), flushed, flushed, false)
                    .await?;
            }
        }
    }

    /// Shutdown: commit what we have and report it (the caller ends the stream).
    async fn end_cleanly(&mut self, stream: &mut hs_proto::PhysicalStream<'_>) -> Result<()> {
        self.committer.partial(self.asm).await?;
        if self.opts.synchronous {
            self.pos.flushed = self.asm.received().max(self.pos.flushed);
        }
        let (received, flushed) = (self.asm.received(), self.pos.flushed);
        stream
            .send_status(received, flushed, flushed, false)
            .await?;
        self.totals.flushed = flushed;
        // The partial was written: all that was received is in the repository.
        self.totals.durable = received;
        self.totals.received = received;
        Ok(())
    }

    /// XLogData: assemble, commit completed segments; returns whether to reply now.
    async fn wal(&mut self, wal_start: Lsn, wal_end: Lsn, data: &[u8]) -> Result<bool> {
        let mut reply = false;
        self.pos.received_any = true;
        self.pos.server_end = self.pos.server_end.max(wal_end);
        let done = self.asm.push(wal_start, data)?;
        for completed in done {
            let seg = completed.seg;
            self.committer.segment(completed).await?;
            self.totals.segments += 1;
            self.pos.flushed = self.pos.flushed.max(seg.end_lsn());
            // Tell the server at once, so the slot advances promptly.
            reply = true;
        }
        if self.opts.synchronous {
            self.sync_pending = true;
            self.sync_batch += data.len();
            // A stream that is never idle still gets acknowledged.
            if self.sync_batch >= SYNC_BATCH_MAX {
                self.committer.partial(self.asm).await?;
                self.pos.flushed = self.pos.flushed.max(self.asm.received());
                self.sync_pending = false;
                self.sync_batch = 0;
                reply = true;
            }
        }
        self.totals.flushed = self.pos.flushed;
        self.totals.received = self.asm.received();
        self.positions();
        Ok(reply)
    }

    /// Keepalive: when the server waits for a reply, make what was received durable.
    async fn keepalive(&mut self, wal_end: Lsn, reply_requested: bool) -> Result<()> {
        self.pos.server_end = self.pos.server_end.max(wal_end);
        if reply_requested && self.asm.received() > self.pos.flushed {
            // The server is waiting for this reply: a walsender
            // shutting down exits only once the position it sent is
            // reported flushed. Make what we received durable (the
            // partial) and report that, so a fast shutdown completes
            // at once and the shutdown checkpoint is stored.
            self.committer.partial(self.asm).await?;
            self.pos.flushed = self.asm.received();
            self.totals.flushed = self.pos.flushed;
            self.positions();
        }
        Ok(())
    }

    fn positions(&self) {
        self.committer.observer.positions(
            self.asm.received(),
            self.pos.flushed,
            self.pos.server_end,
        );
    }
}

/// How long a caught-up, non-synchronous streamer waits before reading again (see
/// `Follow::run`). It delays what is stored by at most this much; the `.partial` is
/// written every `partial_interval` (1 s or more) anyway.
const GATHER_PAUSE: Duration = Duration::from_millis(10);

/// Synchronous mode writes the partial at the latest after this much new WAL, even when
/// the server never pauses between messages.
const SYNC_BATCH_MAX: usize = 4 * 1024 * 1024;

/// The server no longer has the WAL at `start` (no slot, a new slot, or a slot that
/// was lost): record the missing segments up to `resume` (a segment start) and return
/// `resume`, where streaming continues.
async fn wal_removed(
    committer: &Committer<'_>,
    start: Lsn,
    tli: TimelineId,
    resume: Lsn,
    seg_size: u64,
    e: hs_proto::Error,
) -> Result<Lsn> {
    if resume <= start {
        return Err(e);
    }
    let first = SegmentName::from_lsn(tli, start, seg_size)?;
    let last = SegmentName::from_lsn(tli, Lsn(resume.0 - 1), seg_size)?;
    committer
        .gap(
            first,
            last,
            format!("the server already removed this WAL: {e}"),
        )
        .await?;
    Ok(resume)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hs_repo::WalSegmentInfo;

    const SEG: u64 = 16 * 1024 * 1024;

    fn info(name: &str) -> WalSegmentInfo {
        WalSegmentInfo {
            name: name.into(),
            timeline: u32::from_str_radix(&name[..8], 16).unwrap(),
            log: u32::from_str_radix(&name[8..16], 16).unwrap(),
            seg: u32::from_str_radix(&name[16..], 16).unwrap(),
            stored_bytes: 1,
        }
    }

    #[test]
    fn assembler_splits_and_completes_segments() {
        let seg = 1024 * 1024;
        let mut a = SegmentAssembler::new(TimelineId(1), Lsn(3 * seg), seg).unwrap();
        assert!(SegmentAssembler::new(TimelineId(1), Lsn(3 * seg + 8), seg).is_err());
        let done = a.push(Lsn(3 * seg), &vec![1u8; seg as usize - 10]).unwrap();
        assert!(done.is_empty());
        assert!(a.dirty && !a.buf.is_empty());
        // Crosses into the next segment.
        let done = a.push(a.received(), &[2u8; 30]).unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].seg.to_string(), "000000010000000000000003");
        assert_eq!(done[0].data.len() as u64, seg);
        assert_eq!(&done[0].data[seg as usize - 10..], &[2u8; 10]);
        // The encoder saw exactly the completed segment.
        assert_eq!(done[0].enc.as_ref().map(|e| e.len()), Some(seg));
        assert_eq!(a.segment().to_string(), "000000010000000000000004");
        assert_eq!(a.received(), Lsn(4 * seg + 20));
        // A discontinuity is an error.
        let e = a.push(Lsn(4 * seg + 21), &[0]).unwrap_err();
        assert_eq!(e.code(), "protocol.wal_discontinuity");
        // Several segments at once.
        let done = a.push(a.received(), &vec![3u8; 2 * seg as usize]).unwrap();
        assert_eq!(done.len(), 2);
        assert!(done
            .iter()
            .all(|d| d.enc.as_ref().map(|e| e.len()) == Some(seg)));
        assert_eq!(a.received(), Lsn(6 * seg + 20));
    }

    #[test]
    fn next_needed_from_listing() {
        let mut l = WalListing::default();
        assert_eq!(repo_next_needed(&l, SEG).unwrap(), None);
        l.segments.push(info("000000010000000000000003"));
        l.segments.push(info("000000010000000000000004"));
        assert_eq!(
            repo_next_needed(&l, SEG).unwrap(),
            Some((TimelineId(1), Lsn(5 * SEG)))
        );
        l.partials.push(info("000000010000000000000005"));
        assert_eq!(
            repo_next_needed(&l, SEG).unwrap(),
            Some((TimelineId(1), Lsn(5 * SEG)))
        );
        l.gaps.push(WalGap {
            from_segment: "000000010000000000000005".into(),
            to_segment: "000000010000000000000007".into(),
            reason: "x".into(),
            recorded_at: "2026-01-01T00:00:00Z".into(),
        });
        assert_eq!(
            repo_next_needed(&l, SEG).unwrap(),
            Some((TimelineId(1), Lsn(8 * SEG)))
        );
        // A newer timeline wins even at a lower position.
        l.segments.push(info("000000020000000000000002"));
        assert_eq!(
            repo_next_needed(&l, SEG).unwrap(),
            Some((TimelineId(2), Lsn(3 * SEG)))
        );
    }

    #[test]
    fn resume_decisions() {
        let plan = |next: Option<u64>, slot: Option<u64>, existed: bool, server: u64| {
            plan_resume(next.map(Lsn), slot.map(Lsn), existed, Lsn(server), SEG)
        };
        let at = |start: u64| ResumePlan {
            start: Lsn(start),
            gap: None,
        };
        // Repo has up to segment 5; the slot holds from inside segment 4: no gap.
        let p = plan(Some(5 * SEG), Some(4 * SEG + 100), true, 9 * SEG);
        assert_eq!(p, at(5 * SEG));
        // An existing slot is past what we need: gap 5..=6, start at 7.
        let p = plan(Some(5 * SEG), Some(7 * SEG + 5), true, 9 * SEG);
        assert_eq!(p.start, Lsn(7 * SEG));
        let (a, b) = p.gap.unwrap();
        assert_eq!((a.segno(), b.segno()), (5, 6));
        // A slot we just created: ask for what we need; the server says if it is gone.
        let p = plan(Some(5 * SEG), Some(7 * SEG + 5), false, 9 * SEG);
        assert_eq!(p, at(5 * SEG));
        // Empty repo: the slot's restart segment, else the server's current segment.
        assert_eq!(
            plan(None, Some(7 * SEG + 5), false, 9 * SEG + 3),
            at(7 * SEG)
        );
        assert_eq!(plan(None, None, false, 9 * SEG + 3), at(9 * SEG));
        // No slot: trust the repo.
        assert_eq!(plan(Some(5 * SEG), None, false, 9 * SEG), at(5 * SEG));
    }

    #[test]
    fn timeline_lookup() {
        let h =
            parse_timeline_history("1\t0/5000000\tno recovery target\n2\t0/9000000\tx\n").unwrap();
        assert_eq!(
            timeline_of(Lsn(0x4000000), &h, TimelineId(3)),
            TimelineId(1)
        );
        assert_eq!(
            timeline_of(Lsn(0x5000000), &h, TimelineId(3)),
            TimelineId(2)
        );
        assert_eq!(
            timeline_of(Lsn(0x9000000), &h, TimelineId(3)),
            TimelineId(3)
        );
        assert_eq!(lag_bytes(Lsn(10), Lsn(4)), 6);
        assert_eq!(lag_bytes(Lsn(1), Lsn(4)), 0);
    }
}
