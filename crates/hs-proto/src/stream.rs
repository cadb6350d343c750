//! Physical WAL streaming: replication slot commands, `TIMELINE_HISTORY`, and
//! `START_REPLICATION ... PHYSICAL` as a cancel-safe pull stream ([`PhysicalStream`]).
//!
//! Protocol (PostgreSQL's walsender): after `START_REPLICATION` the server answers
//! CopyBothResponse and sends CopyData messages (`w` XLogData, `k` keepalive); the client
//! sends CopyData `r` standby status updates. The COPY ends either when the client sends
//! CopyDone (the server answers CopyDone), or when the server reaches the end of a historic
//! timeline: it sends CopyDone, the client answers CopyDone, and the server follows with a
//! one-row result set (`next_tli`, `next_tli_startpos`), CommandComplete `START_STREAMING`
//! and ReadyForQuery. When the requested start is exactly the end of a historic timeline the
//! server skips the COPY and sends that result set directly. A server shutting down ends
//! the COPY with CommandComplete and closes the connection.

use bytes::{Bytes, BytesMut};
use hs_base::code;

use crate::client::{log_notice, server_error, unexpected, ReplicationClient};
use crate::codec::{frontend, pg_now_micros, BackendMessage, StandbyStatusUpdate, StreamMessage};
use crate::error::{Error, ErrorKind, Result, SqlState};
use crate::lsn::{Lsn, TimelineId};

/// Result of [`ReplicationClient::create_physical_slot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// The slot's name.
    pub name: String,
    /// `consistent_point` as the server reports it (for physical slots PostgreSQL reports
    /// `0/0` or nothing useful; use `restart_lsn`).
    pub consistent_point: Option<Lsn>,
    /// Where WAL is reserved from (read back with `READ_REPLICATION_SLOT` when the slot
    /// was created with `reserve_wal`; `None` otherwise).
    pub restart_lsn: Option<Lsn>,
}

/// Result of [`ReplicationClient::read_replication_slot`] for an existing slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSlot {
    /// `physical` or `logical`.
    pub slot_type: String,
    /// Oldest WAL location the slot holds, if it reserves any.
    pub restart_lsn: Option<Lsn>,
    /// Timeline of `restart_lsn`.
    pub restart_tli: Option<TimelineId>,
}

/// The server ended the streamed timeline: continue on `next_tli` from `next_tli_start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineSwitch {
    /// The timeline that follows.
    pub next_tli: TimelineId,
    /// Where it begins.
    pub next_tli_start: Lsn,
}

/// Replication slot names: 1 to 63 of `a-z`, `0-9`, `_` (what PostgreSQL accepts).
fn check_slot_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(crate::error::usage(
            code::USAGE_SLOT_NAME_INVALID,
            format!("{name:?} is not a valid replication slot name"),
        )
        .with_suggestion("use 1 to 63 lower-case letters, digits and underscores"));
    }
    Ok(())
}

/// Slot-specific meanings of server errors.
fn slot_error(e: Error) -> Error {
    match e.sqlstate() {
        Some("42710") => e
            .recode(ErrorKind::Conflict, code::CONFLICT_SLOT_EXISTS)
            .with_suggestion("use the existing slot, or drop it first"),
        Some("42704") => e
            .recode(ErrorKind::NotFound, code::NOTFOUND_SLOT)
            .with_suggestion("create the replication slot first"),
        Some("55006") => e
            .recode(ErrorKind::Conflict, code::CONFLICT_SLOT_ACTIVE)
            .temporary(true)
            .with_suggestion("another client is using the slot; stop it or wait"),
        _ => e,
    }
}

/// Errors of a running `START_REPLICATION`: slot errors, and WAL the server no longer has.
fn stream_error(e: Error) -> Error {
    match e.sqlstate() {
        // walsender: "requested WAL segment ... has already been removed".
        Some("58P01") => e
            .recode(ErrorKind::NotFound, code::NOTFOUND_WAL_REMOVED)
            .with_suggestion(
                "the server no longer has this WAL; use a replication slot so it keeps WAL until it is archived",
            ),
        _ => slot_error(e),
    }
}

fn parse_lsn_field(v: Option<&Option<String>>, what: &str) -> Result<Option<Lsn>> {
    match v.cloned().flatten() {
        None => Ok(None),
        Some(s) => s.parse::<Lsn>().map(Some).map_err(|_| {
            crate::error::invalid_message(format!("invalid {what} {s:?} from the server"))
        }),
    }
}

impl ReplicationClient {
    fn require_pg15(&self, what: &str) -> Result<()> {
        if self.server_version_num() != 0 && self.server_version_num() < 150_000 {
            return Err(Error::of_kind(
                ErrorKind::Server,
                code::PREFLIGHT_SERVER_TOO_OLD,
                format!(
                    "{what} needs PostgreSQL 15 or newer; the server is {}",
                    self.server_version_num()
                ),
            ));
        }
        Ok(())
    }

    /// `CREATE_REPLICATION_SLOT name PHYSICAL [RESERVE_WAL]`.
    ///
    /// An existing slot of that name is an error with code `conflict.slot_exists`
    /// (SQLSTATE 42710). With `reserve_wal`, the slot's `restart_lsn` is read back
    /// (`READ_REPLICATION_SLOT`) into [`SlotInfo::restart_lsn`].
    pub async fn create_physical_slot(
        &mut self,
        name: &str,
        reserve_wal: bool,
    ) -> Result<SlotInfo> {
        check_slot_name(name)?;
        let cmd = format!(
            "CREATE_REPLICATION_SLOT {name} PHYSICAL{}",
            if reserve_wal { " RESERVE_WAL" } else { "" }
        );
        let rows = self.simple_query(&cmd).await.map_err(slot_error)?;
        let row = rows.first().ok_or_else(|| {
            crate::error::invalid_message("CREATE_REPLICATION_SLOT returned no row")
        })?;
        let slot_name = row
            .first()
            .cloned()
            .flatten()
            .unwrap_or_else(|| name.to_string());
        let consistent_point = parse_lsn_field(row.get(1), "consistent point")?;
        let restart_lsn = if reserve_wal {
            self.read_replication_slot(name)
                .await?
                .and_then(|s| s.restart_lsn)
        } else {
            None
        };
        Ok(SlotInfo {
            name: slot_name,
            consistent_point,
            restart_lsn,
        })
    }

    /// `READ_REPLICATION_SLOT name` (PostgreSQL 15+): `None` when there is no such slot.
    pub async fn read_replication_slot(&mut self, name: &str) -> Result<Option<ReadSlot>> {
        check_slot_name(name)?;
        self.require_pg15("READ_REPLICATION_SLOT")?;
        let rows = self
            .simple_query(&format!("READ_REPLICATION_SLOT {name}"))
            .await
            .map_err(slot_error)?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        // An absent slot is one row of NULLs.
        let Some(slot_type) = row.first().cloned().flatten() else {
            return Ok(None);
        };
        let restart_lsn = parse_lsn_field(row.get(1), "restart_lsn")?;
        let restart_tli = match row.get(2).cloned().flatten() {
            None => None,
            Some(s) => Some(s.parse::<TimelineId>().map_err(|_| {
                crate::error::invalid_message(format!("invalid restart_tli {s:?} from the server"))
            })?),
        };
        Ok(Some(ReadSlot {
            slot_type,
            restart_lsn,
            restart_tli,
        }))
    }

    /// `DROP_REPLICATION_SLOT name [WAIT]`. Without `wait`, a slot in use by another
    /// connection is an error (`conflict.slot_active`); a missing slot is `notfound.slot`.
    pub async fn drop_slot(&mut self, name: &str, wait: bool) -> Result<()> {
        check_slot_name(name)?;
        let cmd = format!(
            "DROP_REPLICATION_SLOT {name}{}",
            if wait { " WAIT" } else { "" }
        );
        self.simple_query(&cmd).await.map_err(slot_error)?;
        Ok(())
    }

    /// `TIMELINE_HISTORY tli`: the history file's name (e.g. `00000002.history`) and its
    /// raw content (parse with [`crate::parse_timeline_history`]).
    pub async fn timeline_history(&mut self, tli: TimelineId) -> Result<(String, Bytes)> {
        if tli.0 == 0 {
            return Err(crate::error::usage(
                code::USAGE_TIMELINE_INVALID,
                "timeline 0 does not exist",
            ));
        }
        let rows = self
            .simple_query_raw(&format!("TIMELINE_HISTORY {}", tli.0))
            .await?;
        let bad = || crate::error::invalid_message("TIMELINE_HISTORY returned no usable row");
        let row = rows.into_iter().next().ok_or_else(bad)?;
        let mut cols = row.into_iter();
        let name = cols.next().flatten().ok_or_else(bad)?;
        let content = cols.next().flatten().ok_or_else(bad)?;
        let name = String::from_utf8(name.to_vec())
            .map_err(|_| crate::error::invalid_message("non-UTF-8 history file name"))?;
        if name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err(crate::error::invalid_message(format!(
                "suspicious history file name {name:?} from the server"
            )));
        }
        Ok((name, content))
    }

    /// `START_REPLICATION [SLOT name] PHYSICAL start TIMELINE timeline`.
    ///
    /// Returns once the server entered COPY mode (or, when `start` is exactly the end of
    /// a historic `timeline`, once it said so: the stream then yields only
    /// [`StreamMessage::EndOfTimeline`]). Errors the server raises after entering COPY
    /// (e.g. a start point ahead of its WAL) come from the first [`PhysicalStream::next`].
    ///
    /// Not cancel-safe: if this future is dropped, the connection is left busy.
    pub async fn start_physical(
        &mut self,
        slot: Option<&str>,
        start: Lsn,
        timeline: TimelineId,
    ) -> Result<PhysicalStream<'_>> {
        self.check_idle()?;
        if let Some(s) = slot {
            check_slot_name(s)?;
        }
        if timeline.0 == 0 {
            return Err(crate::error::usage(
                code::USAGE_TIMELINE_INVALID,
                "timeline 0 does not exist",
            ));
        }
        let cmd = format!(
            "START_REPLICATION {}PHYSICAL {start} TIMELINE {}",
            slot.map(|s| format!("SLOT {s} ")).unwrap_or_default(),
            timeline.0
        );
        frontend::query(&cmd, &mut self.conn.wbuf)?;
        self.busy = true;
        self.conn.flush().await?;
        let mut machine = WalStreamMachine::new(timeline);
        while machine.phase == Phase::Start {
            let msg = self.conn.recv().await?;
            machine.feed(msg, &mut self.conn.wbuf)?;
        }
        if machine.phase == Phase::Done {
            self.busy = false;
            if let Some(e) = machine.error.take() {
                return Err(e);
            }
        }
        Ok(PhysicalStream {
            client: self,
            machine,
            end_reported: false,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for CopyBothResponse.
    Start,
    /// In COPY both.
    Copy,
    /// COPY over: result set(s), CommandComplete, ReadyForQuery.
    Trailer,
    Done,
}

/// The sans-IO state machine behind [`PhysicalStream`]: feed backend messages, get stream
/// messages; whatever the client must send in reply (CopyDone) is written into `out`.
#[derive(Debug)]
pub(crate) struct WalStreamMachine {
    phase: Phase,
    timeline: TimelineId,
    /// We wrote our CopyDone.
    client_done: bool,
    rows: Vec<Vec<Option<String>>>,
    error: Option<Error>,
    switch: Option<TimelineSwitch>,
}

impl WalStreamMachine {
    pub(crate) fn new(timeline: TimelineId) -> WalStreamMachine {
        WalStreamMachine {
            phase: Phase::Start,
            timeline,
            client_done: false,
            rows: Vec::new(),
            error: None,
            switch: None,
        }
    }

    /// Queues our CopyDone (once), if we are still in COPY mode.
    fn client_copy_done(&mut self, out: &mut BytesMut) {
        if self.phase == Phase::Copy && !self.client_done {
            frontend::copy_done(out);
            self.client_done = true;
        }
    }

    fn end_of_timeline(&self) -> Result<Option<TimelineSwitch>> {
        let Some(row) = self.rows.first() else {
            return Ok(None);
        };
        let bad =
            || crate::error::invalid_message("invalid end-of-timeline result from the server");
        let next_tli = row
            .first()
            .cloned()
            .flatten()
            .and_then(|s| s.parse::<u32>().ok())
            .ok_or_else(bad)?;
        let next_tli_start = parse_lsn_field(row.get(1), "next timeline start")?.ok_or_else(bad)?;
        if next_tli <= self.timeline.0 {
            return Err(crate::error::invalid_message(format!(
                "the server reported next timeline {next_tli} after timeline {}",
                self.timeline
            )));
        }
        Ok(Some(TimelineSwitch {
            next_tli: TimelineId(next_tli),
            next_tli_start,
        }))
    }

    /// Processes one backend message.
    pub(crate) fn feed(
        &mut self,
        msg: BackendMessage,
        out: &mut BytesMut,
    ) -> Result<Option<StreamMessage>> {
        match msg {
            BackendMessage::NoticeResponse(n) => {
                log_notice(&n);
                return Ok(None);
            }
            BackendMessage::ParameterStatus { .. } => return Ok(None),
            BackendMessage::ErrorResponse(e) => {
                self.error
                    .get_or_insert_with(|| stream_error(server_error(&e, "")));
                if matches!(self.phase, Phase::Start | Phase::Copy) {
                    // The command is over; ReadyForQuery follows (or the server closes).
                    self.phase = Phase::Trailer;
                    self.client_done = true;
                }
                return Ok(None);
            }
            _ => {}
        }
        match self.phase {
            Phase::Start => match msg {
                BackendMessage::CopyBothResponse => self.phase = Phase::Copy,
                BackendMessage::RowDescription(_) => {
                    // Nothing to stream: the timeline ended exactly at the start point.
                    self.phase = Phase::Trailer;
                    self.client_done = true;
                }
                other => return Err(unexpected("in reply to START_REPLICATION", &other)),
            },
            Phase::Copy => match msg {
                BackendMessage::CopyData(d) => {
                    return StreamMessage::parse_copy_data(d).map(Some);
                }
                BackendMessage::CopyDone => {
                    self.client_copy_done(out);
                    self.phase = Phase::Trailer;
                }
                BackendMessage::CommandComplete { .. } => {
                    // WalSndDone: the server is shutting down and closes the connection.
                    self.phase = Phase::Done;
                    self.error.get_or_insert_with(|| {
                        Error::of_kind(
                            ErrorKind::Unreachable,
                            code::UNREACHABLE_SERVER_SHUTDOWN,
                            "the server ended WAL streaming because it is shutting down",
                        )
                        .temporary(true)
                        .with_suggestion("reconnect when the server is back")
                    });
                }
                other => return Err(unexpected("in the WAL stream", &other)),
            },
            Phase::Trailer => match msg {
                BackendMessage::RowDescription(_) => self.rows.clear(),
                BackendMessage::DataRow(vals) => self.rows.push(
                    vals.into_iter()
                        .map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned()))
                        .collect(),
                ),
                BackendMessage::CommandComplete { .. } => {}
                BackendMessage::ReadyForQuery { .. } => {
                    self.phase = Phase::Done;
                    if self.error.is_none() {
                        self.switch = self.end_of_timeline()?;
                    }
                }
                other => return Err(unexpected("after the WAL stream ended", &other)),
            },
            Phase::Done => return Err(unexpected("after the WAL stream finished", &msg)),
        }
        Ok(None)
    }
}

/// A running `START_REPLICATION ... PHYSICAL`; borrows the connection until finished.
///
/// Pull messages with [`PhysicalStream::next`], report progress with
/// [`PhysicalStream::send_status`], stop with [`PhysicalStream::finish`].
///
/// # Cancel safety
///
/// [`PhysicalStream::next`] is cancel-safe: it may be used as a branch of `tokio::select!`
/// (e.g. next to a timer for periodic status updates). The read buffer lives in the
/// connection, a message is taken out of it only once complete, and it is returned without
/// any further await; protocol state changes (and any CopyDone we owe the server) are made
/// synchronously with the message that caused them. Dropping a pending `next()` therefore
/// loses no WAL: the next call continues where it stopped.
///
/// [`PhysicalStream::send_status`] is cancel-safe in the sense that bytes are never
/// duplicated or torn: if it is dropped before the update was fully written, the rest of it
/// is sent by the next `next()`, `send_status()` or `finish()`. [`PhysicalStream::finish`]
/// and [`ReplicationClient::start_physical`] are not cancel-safe (the connection is left
/// busy). Dropping the stream itself before it ended leaves the connection unusable
/// (`protocol.connection_busy`); drop the client too.
///
/// ```no_run
/// use std::time::Duration;
/// use hs_proto::{ConnConfig, Lsn, ReplicationClient, StreamMessage, TimelineId};
///
/// # async fn demo(cfg: ConnConfig, start: Lsn, tli: TimelineId) -> hs_proto::Result<()> {
/// let mut client = ReplicationClient::connect(&cfg).await?;
/// let mut stream = client.start_physical(Some("pg_hardstorage_main"), start, tli).await?;
/// let mut tick = tokio::time::interval(Duration::from_secs(10));
/// let (mut received, durable) = (start, start);
/// loop {
///     tokio::select! {
///         m = stream.next() => match m? {
///             Some(StreamMessage::XLogData { wal_start, data, .. }) => {
///                 /* append to the current segment */
///                 received = Lsn(wal_start.0 + data.len() as u64);
///             }
///             Some(StreamMessage::Keepalive { reply_requested: true, .. }) => {
///                 stream.send_status(received, durable, durable, false).await?;
///             }
///             Some(StreamMessage::EndOfTimeline { next_tli, next_tli_start }) => {
///                 /* fetch TIMELINE_HISTORY, restart on next_tli */
///                 let _ = (next_tli, next_tli_start);
///             }
///             Some(_) => {}
///             None => break,
///         },
///         _ = tick.tick() => stream.send_status(received, durable, durable, false).await?,
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub struct PhysicalStream<'a> {
    client: &'a mut ReplicationClient,
    machine: WalStreamMachine,
    end_reported: bool,
}

impl std::fmt::Debug for PhysicalStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhysicalStream")
            .field("timeline", &self.machine.timeline)
            .field("phase", &self.machine.phase)
            .finish_non_exhaustive()
    }
}

impl PhysicalStream<'_> {
    /// The timeline being streamed.
    pub fn timeline(&self) -> TimelineId {
        self.machine.timeline
    }

    /// The next message: [`StreamMessage::XLogData`] and [`StreamMessage::Keepalive`] while
    /// streaming; [`StreamMessage::EndOfTimeline`] once if the server ended the timeline;
    /// then `Ok(None)`. A server error (e.g. a start point ahead of the server's WAL, or a
    /// slot in use) is returned as `Err` once, after which the connection is idle again.
    /// A server shutdown is `unreachable.server_shutdown` (temporary).
    ///
    /// Cancel-safe (see the type's documentation). Answer keepalives with
    /// `reply_requested` promptly, or the server drops the connection after
    /// `wal_sender_timeout`.
    pub async fn next(&mut self) -> Result<Option<StreamMessage>> {
        loop {
            if self.flush_until_done().await? {
                if !self.end_reported {
                    self.end_reported = true;
                    if let Some(sw) = self.machine.switch {
                        return Ok(Some(StreamMessage::EndOfTimeline {
                            next_tli: sw.next_tli,
                            next_tli_start: sw.next_tli_start,
                        }));
                    }
                }
                return Ok(None);
            }
            let msg = self.client.conn.recv().await?;
            let client = &mut *self.client;
            if let Some(m) = self.machine.feed(msg, &mut client.conn.wbuf)? {
                return Ok(Some(m));
            }
        }
    }

    /// Sends a standby status update (`write`, `flush`, `apply`, the current clock in
    /// PostgreSQL epoch microseconds, and whether we want an immediate reply). The slot's
    /// `restart_lsn` follows `flush`, so report only what is durably stored.
    ///
    /// Does nothing once the COPY is over (after the server ended the timeline or
    /// [`PhysicalStream::next`] returned `Ok(None)`/an error).
    pub async fn send_status(
        &mut self,
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
        reply_requested: bool,
    ) -> Result<()> {
        if self.machine.phase != Phase::Copy || self.machine.client_done {
            tracing::debug!("status update after the WAL stream ended; not sent");
            return Ok(());
        }
        let s = StandbyStatusUpdate {
            write,
            flush,
            apply,
            clock: pg_now_micros(),
            reply_requested,
        };
        frontend::standby_status_update(&s, &mut self.client.conn.wbuf);
        self.client.conn.flush().await
    }

    /// Flushes what is queued for the server; `Ok(true)` once the command is over and the
    /// connection idle again (`Err` with the server's error, once, if it reported one).
    /// Whether [`PhysicalStream::next`] has something to do without waiting for the
    /// server: a whole message is buffered, bytes (or the end, or an error) could be read
    /// at once, something is waiting to be sent, or the stream has ended. Never waits;
    /// bytes read are kept for `next`.
    ///
    /// A consumer that is caught up with the server can pause briefly when this is
    /// `false`, so that one wakeup then reads everything that arrived meanwhile instead
    /// of waking once per message.
    pub fn ready_now(&mut self) -> bool {
        !self.client.conn.wbuf.is_empty()
            || self.machine.phase == Phase::Done
            || self.client.conn.ready_now()
    }

    async fn flush_until_done(&mut self) -> Result<bool> {
        if !self.client.conn.wbuf.is_empty() {
            self.client.conn.flush().await?;
        }
        if self.machine.phase != Phase::Done {
            return Ok(false);
        }
        self.client.busy = false;
        match self.machine.error.take() {
            Some(e) => Err(e),
            None => Ok(true),
        }
    }

    /// Ends streaming cleanly: sends CopyDone (if still streaming), discards WAL the server
    /// had already sent, and waits for the end of the command. The connection is then
    /// idle and can run other commands. Returns the timeline switch if the server had
    /// reported the end of the timeline (whether or not `next()` already returned it).
    pub async fn finish(mut self) -> Result<Option<TimelineSwitch>> {
        self.machine.client_copy_done(&mut self.client.conn.wbuf);
        loop {
            if self.flush_until_done().await? {
                return Ok(self.machine.switch);
            }
            let msg = self.client.conn.recv().await?;
            let client = &mut *self.client;
            // WAL still in flight after our CopyDone is dropped: the caller asked to stop.
            let _ = self.machine.feed(msg, &mut client.conn.wbuf)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::testing::{backend, parse_frontend, Frontend};
    use bytes::BufMut;
    use proptest::prelude::*;

    fn copy_data(m: &StreamMessage, out: &mut BytesMut) {
        let mut b = BytesMut::new();
        m.encode_copy_data(&mut b).unwrap();
        backend(b'd', &b, out);
    }

    fn result_set(tli: &str, pos: &str, out: &mut BytesMut) {
        let mut b = BytesMut::new();
        b.put_i16(2);
        for (n, oid) in [("next_tli", 20u32), ("next_tli_startpos", 25)] {
            b.put_slice(n.as_bytes());
            b.put_u8(0);
            b.put_u32(0);
            b.put_i16(0);
            b.put_u32(oid);
            b.put_i16(-1);
            b.put_i32(-1);
            b.put_i16(0);
        }
        backend(b'T', &b, out);
        let mut b = BytesMut::new();
        b.put_i16(2);
        for v in [tli, pos] {
            b.put_i32(v.len() as i32);
            b.put_slice(v.as_bytes());
        }
        backend(b'D', &b, out);
        backend(b'C', b"SELECT 1\0", out);
    }

    fn wal(start: u64, data: &[u8]) -> StreamMessage {
        StreamMessage::XLogData {
            wal_start: Lsn(start),
            wal_end: Lsn(start + data.len() as u64),
            server_time: 7,
            data: Bytes::copy_from_slice(data),
        }
    }

    /// Runs the machine over a server byte stream; returns messages, what the client
    /// sent, and the final error, if any.
    fn run(mut s: BytesMut, tli: u32) -> (Vec<StreamMessage>, BytesMut, Option<Error>) {
        let mut m = WalStreamMachine::new(TimelineId(tli));
        let mut out = BytesMut::new();
        let mut got = Vec::new();
        while m.phase != Phase::Done {
            let msg = match BackendMessage::parse(&mut s) {
                Ok(Some(msg)) => msg,
                Ok(None) => break,
                Err(e) => return (got, out, Some(e)),
            };
            match m.feed(msg, &mut out) {
                Ok(Some(x)) => got.push(x),
                Ok(None) => {}
                Err(e) => return (got, out, Some(e)),
            }
        }
        if let Some(sw) = m.switch {
            got.push(StreamMessage::EndOfTimeline {
                next_tli: sw.next_tli,
                next_tli_start: sw.next_tli_start,
            });
        }
        (got, out, m.error.take())
    }

    #[test]
    fn end_of_timeline_sequence() {
        let mut s = BytesMut::new();
        backend(b'W', &[0, 0, 0], &mut s);
        copy_data(&wal(0x300_0000, b"abc"), &mut s);
        copy_data(
            &StreamMessage::Keepalive {
                wal_end: Lsn(0x300_0003),
                server_time: 9,
                reply_requested: true,
            },
            &mut s,
        );
        backend(b'c', b"", &mut s);
        result_set("2", "0/3000003", &mut s);
        backend(b'C', b"START_STREAMING\0", &mut s);
        backend(b'Z', b"I", &mut s);
        let (got, mut out, err) = run(s, 1);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], wal(0x300_0000, b"abc"));
        assert_eq!(
            got[2],
            StreamMessage::EndOfTimeline {
                next_tli: TimelineId(2),
                next_tli_start: Lsn(0x300_0003)
            }
        );
        // The client answered the server's CopyDone with exactly one CopyDone.
        assert_eq!(parse_frontend(&mut out, false), Some(Frontend::CopyDone));
        assert!(out.is_empty());
    }

    #[test]
    fn nothing_to_stream_and_errors() {
        // Start point == end of a historic timeline: no COPY at all.
        let mut s = BytesMut::new();
        result_set("3", "0/5000000", &mut s);
        backend(b'C', b"START_STREAMING\0", &mut s);
        backend(b'Z', b"I", &mut s);
        let (got, out, err) = run(s, 2);
        assert!(err.is_none() && out.is_empty());
        assert_eq!(
            got,
            vec![StreamMessage::EndOfTimeline {
                next_tli: TimelineId(3),
                next_tli_start: Lsn(0x500_0000)
            }]
        );
        // A next timeline that does not increase is a protocol error.
        let mut s = BytesMut::new();
        result_set("2", "0/5000000", &mut s);
        backend(b'Z', b"I", &mut s);
        assert!(run(s, 2).2.is_some());
        // Slot in use, after CopyBothResponse.
        let mut s = BytesMut::new();
        backend(b'W', &[0, 0, 0], &mut s);
        backend(b'E', b"SERROR\0VERROR\0C55006\0Mslot is active\0\0", &mut s);
        backend(b'Z', b"I", &mut s);
        let (_, _, err) = run(s, 1);
        assert_eq!(err.map(|e| e.code()), Some("conflict.slot_active"));
        // WAL already removed on the server.
        let mut s = BytesMut::new();
        backend(b'W', &[0, 0, 0], &mut s);
        backend(
            b'E',
            b"SERROR\0VERROR\0C58P01\0Mrequested WAL segment 000000010000000000000001 has already been removed\0\0",
            &mut s,
        );
        backend(b'Z', b"I", &mut s);
        let (_, _, err) = run(s, 1);
        assert_eq!(err.map(|e| e.code()), Some("notfound.wal_removed"));
        // Server shutdown: CommandComplete inside COPY.
        let mut s = BytesMut::new();
        backend(b'W', &[0, 0, 0], &mut s);
        backend(b'C', b"COPY 0\0", &mut s);
        let (_, _, err) = run(s, 1);
        let err = err.unwrap();
        assert_eq!(err.code(), "unreachable.server_shutdown");
        assert!(err.is_temporary());
    }

    #[test]
    fn client_finish_sends_one_copy_done() {
        let mut m = WalStreamMachine::new(TimelineId(1));
        let mut out = BytesMut::new();
        m.feed(BackendMessage::CopyBothResponse, &mut out).unwrap();
        m.client_copy_done(&mut out);
        m.client_copy_done(&mut out);
        // In-flight WAL still parses; the server's CopyDone does not trigger another one.
        let mut s = BytesMut::new();
        copy_data(&wal(16, b"x"), &mut s);
        backend(b'c', b"", &mut s);
        backend(b'C', b"START_STREAMING\0", &mut s);
        backend(b'Z', b"I", &mut s);
        while let Some(msg) = BackendMessage::parse(&mut s).unwrap() {
            m.feed(msg, &mut out).unwrap();
        }
        assert_eq!(m.phase, Phase::Done);
        assert!(m.switch.is_none() && m.error.is_none());
        assert_eq!(parse_frontend(&mut out, false), Some(Frontend::CopyDone));
        assert!(out.is_empty());
    }

    #[test]
    fn slot_names() {
        assert!(check_slot_name("pg_hardstorage_main1").is_ok());
        for bad in ["", "Upper", "a-b", "a b", "x;drop", &"a".repeat(64)] {
            assert!(check_slot_name(bad).is_err(), "{bad:?}");
        }
    }

    /// Takes one whole frontend message off `buf`, if there is one.
    fn take_frontend(buf: &mut BytesMut, startup: bool) -> Option<Frontend> {
        let (need, len_at) = if startup { (4, 0) } else { (5, 1) };
        if buf.len() < need {
            return None;
        }
        let len = i32::from_be_bytes([
            buf[len_at],
            buf[len_at + 1],
            buf[len_at + 2],
            buf[len_at + 3],
        ]);
        if buf.len() < len as usize + len_at {
            return None;
        }
        parse_frontend(buf, startup)
    }

    /// A fake walsender dribbles WAL in tiny pieces with pauses while the client drives
    /// `next()` from `tokio::select!` against a 1 ms timer that sends status updates: every
    /// dropped `next()` must lose nothing, and every status update must arrive whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn next_is_cancel_safe_in_select() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const START: u64 = 0x100_0000;
        const MSGS: usize = 60;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let (mut rd, mut wr) = sock.into_split();
            let mut inbuf = BytesMut::new();
            // Startup, trust authentication, ReadyForQuery.
            while take_frontend(&mut inbuf, true).is_none() {
                assert!(rd.read_buf(&mut inbuf).await.unwrap() > 0);
            }
            let mut out = BytesMut::new();
            backend(b'R', &0i32.to_be_bytes(), &mut out);
            backend(b'S', b"server_version\x0015.4\0", &mut out);
            backend(b'Z', b"I", &mut out);
            wr.write_all(&out).await.unwrap();
            let query = loop {
                if let Some(f) = take_frontend(&mut inbuf, false) {
                    break f;
                }
                assert!(rd.read_buf(&mut inbuf).await.unwrap() > 0);
            };
            assert_eq!(
                query,
                Frontend::Query("START_REPLICATION PHYSICAL 0/1000000 TIMELINE 1".into())
            );
            // Reader: collect status updates until the client's CopyDone.
            let reader = tokio::spawn(async move {
                let mut updates = Vec::new();
                loop {
                    while let Some(f) = take_frontend(&mut inbuf, false) {
                        match f {
                            Frontend::Raw(b'd', payload) => {
                                updates.push(StandbyStatusUpdate::parse(&payload).unwrap())
                            }
                            Frontend::CopyDone => return updates,
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    assert!(rd.read_buf(&mut inbuf).await.unwrap() > 0);
                }
            });
            let mut out = BytesMut::new();
            backend(b'W', &[0, 0, 0], &mut out);
            let mut lsn = START;
            for i in 0..MSGS {
                let data: Vec<u8> = (0..(i * 37 % 500 + 1)).map(|j| (i + j) as u8).collect();
                copy_data(&wal(lsn, &data), &mut out);
                lsn += data.len() as u64;
                if i % 7 == 0 {
                    copy_data(
                        &StreamMessage::Keepalive {
                            wal_end: Lsn(lsn),
                            server_time: 1,
                            reply_requested: false,
                        },
                        &mut out,
                    );
                }
            }
            for (n, piece) in out.chunks(11).enumerate() {
                wr.write_all(piece).await.unwrap();
                if n % 3 == 0 {
                    tokio::time::sleep(std::time::Duration::from_micros(300)).await;
                }
            }
            let updates = reader.await.unwrap();
            let mut end = BytesMut::new();
            backend(b'c', b"", &mut end);
            backend(b'C', b"START_STREAMING\0", &mut end);
            backend(b'Z', b"I", &mut end);
            wr.write_all(&end).await.unwrap();
            (lsn, updates)
        });

        let cfg = crate::ConnConfig::parse_with_env(
            &format!("host=127.0.0.1 port={port} user=u sslmode=disable"),
            &|_| None,
        )
        .unwrap();
        let mut client = ReplicationClient::connect(&cfg).await.unwrap();
        let mut stream = client
            .start_physical(None, Lsn(START), TimelineId(1))
            .await
            .unwrap();
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(1));
        let mut pos = START;
        let mut expected_len = (0..MSGS).map(|i| (i * 37 % 500 + 1) as u64);
        let (mut msgs, mut ticks) = (0, 0);
        // `ready_now` between messages (as the streamer uses it) must lose nothing either.
        let (mut ready, mut waited) = (0, 0);
        while msgs < MSGS {
            if msgs % 2 == 1 {
                if stream.ready_now() {
                    ready += 1;
                } else {
                    waited += 1;
                    tokio::time::sleep(std::time::Duration::from_micros(200)).await;
                }
            }
            tokio::select! {
                m = stream.next() => match m.unwrap().unwrap() {
                    StreamMessage::XLogData { wal_start, data, .. } => {
                        assert_eq!(wal_start, Lsn(pos));
                        assert_eq!(Some(data.len() as u64), expected_len.next());
                        assert!(data.iter().enumerate().all(|(j, &b)| b == (msgs + j) as u8));
                        pos += data.len() as u64;
                        msgs += 1;
                    }
                    StreamMessage::Keepalive { .. } => {}
                    other => panic!("{other:?}"),
                },
                _ = tick.tick() => {
                    stream.send_status(Lsn(pos), Lsn(pos), Lsn(pos), false).await.unwrap();
                    ticks += 1;
                }
            }
        }
        assert_eq!(stream.finish().await.unwrap(), None);
        let (server_end, updates) = server.await.unwrap();
        assert_eq!(pos, server_end);
        assert!(ticks > 5, "only {ticks} timer ticks");
        assert!(ready > 0 && waited > 0, "ready {ready}, waited {waited}");
        assert_eq!(updates.len(), ticks);
        assert!(updates.windows(2).all(|w| w[0].write <= w[1].write));
        assert!(updates.iter().all(|u| u.flush == u.write && u.clock > 0));
    }

    proptest! {
        /// However the server's bytes are split into reads, the messages are the same.
        #[test]
        fn split_reads_do_not_matter(cut in 1usize..200, n in 1usize..20) {
            let mut s = BytesMut::new();
            backend(b'W', &[0, 0, 0], &mut s);
            let mut want = Vec::new();
            for i in 0..n {
                let m = wal(i as u64 * 10, &[i as u8; 10]);
                copy_data(&m, &mut s);
                want.push(m);
            }
            let whole = s.freeze();
            let mut m = WalStreamMachine::new(TimelineId(1));
            let mut out = BytesMut::new();
            let mut rbuf = BytesMut::new();
            let mut got = Vec::new();
            for piece in whole.chunks(cut) {
                rbuf.extend_from_slice(piece);
                while let Some(msg) = BackendMessage::parse(&mut rbuf).unwrap() {
                    if let Some(x) = m.feed(msg, &mut out).unwrap() {
                        got.push(x);
                    }
                }
            }
            prop_assert_eq!(got, want);
        }
    }
}
