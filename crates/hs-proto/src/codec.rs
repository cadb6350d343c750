//! Sans-IO message codec: frontend messages are written into a `BytesMut`, backend messages
//! are parsed out of one. Nothing here touches a socket.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hs_base::code;

use crate::error::{Error, Result};
use crate::lsn::{Lsn, TimelineId};

/// Largest backend message we accept (CopyData chunks are ~32 KiB; this is generous).
pub const MAX_MESSAGE_LEN: usize = 256 * 1024 * 1024;

/// At most this much buffer is reserved ahead for a message still arriving: the length in
/// a message header comes from the server and must not size an allocation before the
/// bytes are there (the buffer grows as they are read).
const MAX_RESERVE_AHEAD: usize = 1024 * 1024;

/// Protocol version 3.0 as sent in the startup packet.
const PROTOCOL_3_0: i32 = 196_608;
const SSL_REQUEST_CODE: i32 = 80_877_103;

fn put_cstr(buf: &mut BytesMut, s: &[u8]) -> Result<()> {
    if s.contains(&0) {
        return Err(crate::error::usage(
            code::USAGE_NUL_IN_STRING,
            "string sent to the server contains a NUL byte",
        ));
    }
    buf.put_slice(s);
    buf.put_u8(0);
    Ok(())
}

/// Writes a message with a type byte: fills in the length after `body` wrote the payload.
fn with_len(
    tag: Option<u8>,
    buf: &mut BytesMut,
    body: impl FnOnce(&mut BytesMut) -> Result<()>,
) -> Result<()> {
    let start = buf.len();
    if let Some(t) = tag {
        buf.put_u8(t);
    }
    let len_at = buf.len();
    buf.put_i32(0);
    if let Err(e) = body(buf) {
        buf.truncate(start);
        return Err(e);
    }
    let len = buf.len() - len_at;
    let len = i32::try_from(len).map_err(|_| {
        buf.truncate(start);
        crate::error::usage(
            code::USAGE_MESSAGE_TOO_LARGE,
            "message to the server is too large",
        )
    })?;
    buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Frontend (client to server) message writers.
pub mod frontend {
    use super::*;

    /// StartupMessage (protocol 3.0) with the given parameters.
    pub fn startup_message(params: &[(&str, &str)], buf: &mut BytesMut) -> Result<()> {
        with_len(None, buf, |b| {
            b.put_i32(PROTOCOL_3_0);
            for (k, v) in params {
                put_cstr(b, k.as_bytes())?;
                put_cstr(b, v.as_bytes())?;
            }
            b.put_u8(0);
            Ok(())
        })
    }

    /// SSLRequest: asks the server whether it will speak TLS; it answers one byte `S` or `N`.
    pub fn ssl_request(buf: &mut BytesMut) {
        buf.put_i32(8);
        buf.put_i32(SSL_REQUEST_CODE);
    }

    /// Simple Query.
    pub fn query(sql: &str, buf: &mut BytesMut) -> Result<()> {
        with_len(Some(b'Q'), buf, |b| put_cstr(b, sql.as_bytes()))
    }

    /// PasswordMessage (cleartext or md5 hash, NUL-terminated).
    pub fn password_message(password: &[u8], buf: &mut BytesMut) -> Result<()> {
        with_len(Some(b'p'), buf, |b| put_cstr(b, password))
    }

    /// SASLInitialResponse.
    pub fn sasl_initial_response(mechanism: &str, data: &[u8], buf: &mut BytesMut) -> Result<()> {
        with_len(Some(b'p'), buf, |b| {
            put_cstr(b, mechanism.as_bytes())?;
            let n = i32::try_from(data.len()).map_err(|_| {
                crate::error::usage(code::USAGE_MESSAGE_TOO_LARGE, "SASL message is too large")
            })?;
            b.put_i32(n);
            b.put_slice(data);
            Ok(())
        })
    }

    /// SASLResponse.
    pub fn sasl_response(data: &[u8], buf: &mut BytesMut) -> Result<()> {
        with_len(Some(b'p'), buf, |b| {
            b.put_slice(data);
            Ok(())
        })
    }

    /// CopyData.
    pub fn copy_data(data: &[u8], buf: &mut BytesMut) -> Result<()> {
        with_len(Some(b'd'), buf, |b| {
            b.put_slice(data);
            Ok(())
        })
    }

    /// CopyDone.
    pub fn copy_done(buf: &mut BytesMut) {
        buf.put_u8(b'c');
        buf.put_i32(4);
    }

    /// Terminate.
    pub fn terminate(buf: &mut BytesMut) {
        buf.put_u8(b'X');
        buf.put_i32(4);
    }

    /// CopyData carrying a standby status update (`r`), see [`StandbyStatusUpdate`].
    pub fn standby_status_update(s: &StandbyStatusUpdate, buf: &mut BytesMut) {
        buf.put_u8(b'd');
        buf.put_i32(4 + STANDBY_STATUS_LEN as i32);
        s.encode(buf);
    }
}

pub use hs_pg::PG_EPOCH_OFFSET_MICROS;

/// The current time in PostgreSQL epoch microseconds, the clock of replication messages.
pub fn pg_now_micros() -> i64 {
    let unix = match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    };
    unix.saturating_sub(PG_EPOCH_OFFSET_MICROS)
}

/// A message of a `START_REPLICATION ... PHYSICAL` stream.
///
/// `XLogData` and `Keepalive` come from CopyData payloads ([`StreamMessage::parse_copy_data`]);
/// `EndOfTimeline` is produced by [`crate::PhysicalStream`] from the result set the server
/// sends after it ends the COPY because the requested (historic) timeline is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamMessage {
    /// WAL bytes (`w`): `data` belongs at `wal_start .. wal_start + data.len()`.
    XLogData {
        /// LSN of the first byte of `data`.
        wal_start: Lsn,
        /// The server's current end of WAL.
        wal_end: Lsn,
        /// Server clock at sending, PostgreSQL epoch microseconds.
        server_time: i64,
        /// The WAL bytes.
        data: Bytes,
    },
    /// Primary keepalive (`k`).
    Keepalive {
        /// The server's current end of WAL.
        wal_end: Lsn,
        /// Server clock at sending, PostgreSQL epoch microseconds.
        server_time: i64,
        /// The server wants a status update soon (or it may time us out).
        reply_requested: bool,
    },
    /// The streamed timeline ended (the server switched timelines); continue with
    /// `START_REPLICATION ... next_tli_start TIMELINE next_tli` on a new stream.
    EndOfTimeline {
        /// The timeline that follows.
        next_tli: TimelineId,
        /// Where it begins (the old timeline's switch point).
        next_tli_start: Lsn,
    },
}

fn get_u64(b: &mut Bytes, what: &str) -> Result<u64> {
    if b.remaining() < 8 {
        return Err(short(what));
    }
    Ok(b.get_u64())
}

impl StreamMessage {
    /// Parses the payload of a CopyData message of a physical replication stream.
    /// Errors with `protocol.invalid_message` on truncated or unknown messages.
    pub fn parse_copy_data(mut data: Bytes) -> Result<StreamMessage> {
        if !data.has_remaining() {
            return Err(crate::error::invalid_message(
                "empty CopyData in the replication stream",
            ));
        }
        match data.get_u8() {
            b'w' => {
                let wal_start = Lsn(get_u64(&mut data, "XLogData")?);
                let wal_end = Lsn(get_u64(&mut data, "XLogData")?);
                let server_time = get_u64(&mut data, "XLogData")? as i64;
                if wal_start.0.checked_add(data.len() as u64).is_none() {
                    return Err(crate::error::invalid_message(
                        "XLogData runs past the end of the WAL address space",
                    ));
                }
                Ok(StreamMessage::XLogData {
                    wal_start,
                    wal_end,
                    server_time,
                    data,
                })
            }
            b'k' => {
                let wal_end = Lsn(get_u64(&mut data, "keepalive")?);
                let server_time = get_u64(&mut data, "keepalive")? as i64;
                if !data.has_remaining() {
                    return Err(short("keepalive"));
                }
                let reply_requested = data.get_u8() != 0;
                Ok(StreamMessage::Keepalive {
                    wal_end,
                    server_time,
                    reply_requested,
                })
            }
            other => Err(crate::error::invalid_message(format!(
                "unknown replication stream message type {:?}",
                other as char
            ))),
        }
    }

    /// Writes the CopyData payload of an `XLogData` or `Keepalive` message (what a server
    /// sends; for tests and fake servers). `EndOfTimeline` is not a CopyData message and is
    /// refused with `usage.not_copy_data`.
    pub fn encode_copy_data(&self, out: &mut BytesMut) -> Result<()> {
        match self {
            StreamMessage::XLogData {
                wal_start,
                wal_end,
                server_time,
                data,
            } => {
                out.put_u8(b'w');
                out.put_u64(wal_start.0);
                out.put_u64(wal_end.0);
                out.put_i64(*server_time);
                out.put_slice(data);
            }
            StreamMessage::Keepalive {
                wal_end,
                server_time,
                reply_requested,
            } => {
                out.put_u8(b'k');
                out.put_u64(wal_end.0);
                out.put_i64(*server_time);
                out.put_u8(u8::from(*reply_requested));
            }
            StreamMessage::EndOfTimeline { .. } => {
                return Err(crate::error::usage(
                    code::USAGE_NOT_COPY_DATA,
                    "EndOfTimeline is not sent as CopyData",
                ))
            }
        }
        Ok(())
    }
}

/// Length of a standby status update payload: tag, three LSNs, clock, reply flag.
const STANDBY_STATUS_LEN: usize = 1 + 8 + 8 + 8 + 8 + 1;

/// A standby status update (`r`), the client's report of how far it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyStatusUpdate {
    /// Last WAL byte + 1 received and written.
    pub write: Lsn,
    /// Last WAL byte + 1 durably stored; a slot's `restart_lsn` follows this.
    pub flush: Lsn,
    /// Last WAL byte + 1 applied (for a backup tool, the same as `flush`).
    pub apply: Lsn,
    /// Client clock, PostgreSQL epoch microseconds ([`pg_now_micros`]).
    pub clock: i64,
    /// Ask the server to answer with a keepalive right away.
    pub reply_requested: bool,
}

impl StandbyStatusUpdate {
    /// Writes the CopyData payload (34 bytes).
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(STANDBY_STATUS_LEN);
        out.put_u8(b'r');
        out.put_u64(self.write.0);
        out.put_u64(self.flush.0);
        out.put_u64(self.apply.0);
        out.put_i64(self.clock);
        out.put_u8(u8::from(self.reply_requested));
    }

    /// Parses a CopyData payload written by [`StandbyStatusUpdate::encode`] (for tests and
    /// fake servers).
    pub fn parse(payload: &[u8]) -> Result<StandbyStatusUpdate> {
        if payload.len() != STANDBY_STATUS_LEN || payload[0] != b'r' {
            return Err(crate::error::invalid_message("not a standby status update"));
        }
        let mut b = &payload[1..];
        Ok(StandbyStatusUpdate {
            write: Lsn(b.get_u64()),
            flush: Lsn(b.get_u64()),
            apply: Lsn(b.get_u64()),
            clock: b.get_i64(),
            reply_requested: b.get_u8() != 0,
        })
    }
}

/// An authentication request from the server (`R` message).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthRequest {
    /// Authentication succeeded.
    Ok,
    /// Send the password in clear text.
    CleartextPassword,
    /// Send `md5(md5(password || user) || salt)`.
    Md5Password {
        /// The 4-byte salt.
        salt: [u8; 4],
    },
    /// Start SASL with one of these mechanisms.
    Sasl {
        /// Mechanism names, e.g. `SCRAM-SHA-256`, `SCRAM-SHA-256-PLUS`.
        mechanisms: Vec<String>,
    },
    /// SASL challenge.
    SaslContinue(Bytes),
    /// SASL outcome (server signature).
    SaslFinal(Bytes),
    /// Some other method (Kerberos, GSS, SSPI, ...), by its code.
    Other(i32),
}

/// Fields of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerMessage {
    /// Severity (non-localized when the server sends `V`), e.g. `ERROR`, `FATAL`.
    pub severity: String,
    /// SQLSTATE code, e.g. `28P01`.
    pub code: String,
    /// Primary message.
    pub message: String,
    /// Optional detail.
    pub detail: Option<String>,
    /// Optional hint.
    pub hint: Option<String>,
}

/// A column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDescription {
    /// Column name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendMessage {
    /// `R`.
    Authentication(AuthRequest),
    /// `S`: a run-time parameter's value.
    ParameterStatus {
        /// Parameter name.
        name: String,
        /// Its value.
        value: String,
    },
    /// `K`: cancellation key.
    BackendKeyData {
        /// Backend process id.
        process_id: i32,
        /// Secret key.
        secret_key: i32,
    },
    /// `Z`: ready for a new query; status `I`, `T` or `E`.
    ReadyForQuery {
        /// Transaction status byte.
        status: u8,
    },
    /// `T`.
    RowDescription(Vec<FieldDescription>),
    /// `D`: column values in text format, `None` for NULL.
    DataRow(Vec<Option<Bytes>>),
    /// `C`.
    CommandComplete {
        /// Command tag, e.g. `SELECT`.
        tag: String,
    },
    /// `I`.
    EmptyQueryResponse,
    /// `E`.
    ErrorResponse(ServerMessage),
    /// `N`.
    NoticeResponse(ServerMessage),
    /// `H`.
    CopyOutResponse,
    /// `G`.
    CopyInResponse,
    /// `W`.
    CopyBothResponse,
    /// `d`.
    CopyData(Bytes),
    /// `c`.
    CopyDone,
    /// `v`: the server does not support the requested minor version or options.
    NegotiateProtocolVersion {
        /// Newest minor version the server supports.
        minor: i32,
        /// Options it did not recognize.
        unrecognized: Vec<String>,
    },
    /// Any other message, kept raw.
    Other {
        /// Type byte.
        tag: u8,
        /// Body after the length.
        body: Bytes,
    },
}

fn short(what: &str) -> Error {
    crate::error::invalid_message(format!("truncated {what} message from the server"))
}

fn get_i32(b: &mut Bytes, what: &str) -> Result<i32> {
    if b.remaining() < 4 {
        return Err(short(what));
    }
    Ok(b.get_i32())
}

fn get_i16(b: &mut Bytes, what: &str) -> Result<i16> {
    if b.remaining() < 2 {
        return Err(short(what));
    }
    Ok(b.get_i16())
}

fn get_cstr(b: &mut Bytes, what: &str) -> Result<String> {
    let end = b.iter().position(|&c| c == 0).ok_or_else(|| short(what))?;
    let s = b.split_to(end);
    b.advance(1);
    String::from_utf8(s.to_vec())
        .map_err(|_| crate::error::invalid_message(format!("non-UTF-8 string in {what} message")))
}

/// The column count at the front of a RowDescription or DataRow.
fn column_count(b: &mut Bytes, what: &str) -> Result<usize> {
    let n = get_i16(b, what)?;
    if n < 0 {
        return Err(crate::error::invalid_message(format!(
            "negative column count in {what}"
        )));
    }
    Ok(n as usize)
}

fn parse_row_description(mut b: Bytes) -> Result<Vec<FieldDescription>> {
    let n = column_count(&mut b, "RowDescription")?;
    let mut fields = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let name = get_cstr(&mut b, "RowDescription")?;
        if b.remaining() < 18 {
            return Err(short("RowDescription"));
        }
        b.advance(6); // table oid, column number
        let type_oid = b.get_u32();
        b.advance(8); // type size, modifier, format
        fields.push(FieldDescription { name, type_oid });
    }
    Ok(fields)
}

fn parse_data_row(mut b: Bytes) -> Result<Vec<Option<Bytes>>> {
    let n = column_count(&mut b, "DataRow")?;
    let mut values = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let len = get_i32(&mut b, "DataRow")?;
        if len < 0 {
            values.push(None);
        } else {
            if b.remaining() < len as usize {
                return Err(short("DataRow"));
            }
            values.push(Some(b.split_to(len as usize)));
        }
    }
    Ok(values)
}

fn parse_fields(mut b: Bytes, what: &str) -> Result<ServerMessage> {
    let mut m = ServerMessage::default();
    let mut localized_severity = String::new();
    loop {
        if !b.has_remaining() {
            return Err(short(what));
        }
        let t = b.get_u8();
        if t == 0 {
            break;
        }
        let v = get_cstr(&mut b, what)?;
        match t {
            b'V' => m.severity = v,
            b'S' => localized_severity = v,
            b'C' => m.code = v,
            b'M' => m.message = v,
            b'D' => m.detail = Some(v),
            b'H' => m.hint = Some(v),
            _ => {}
        }
    }
    if m.severity.is_empty() {
        m.severity = localized_severity;
    }
    Ok(m)
}

impl BackendMessage {
    /// Parses one message from the front of `buf`.
    ///
    /// Returns `Ok(None)` (consuming nothing) when `buf` does not yet hold a whole message,
    /// and an error (code `protocol.invalid_message`) for malformed input. Never panics.
    pub fn parse(buf: &mut BytesMut) -> Result<Option<BackendMessage>> {
        if buf.len() < 5 {
            return Ok(None);
        }
        let tag = buf[0];
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        if len < 4 || len as usize > MAX_MESSAGE_LEN {
            return Err(crate::error::invalid_message(format!(
                "invalid length {len} for message type {:?} from the server",
                tag as char
            )));
        }
        let total = 1 + len as usize;
        if buf.len() < total {
            buf.reserve((total - buf.len()).min(MAX_RESERVE_AHEAD));
            return Ok(None);
        }
        let mut frame = buf.split_to(total).freeze();
        frame.advance(5);
        BackendMessage::parse_body(tag, frame).map(Some)
    }

    fn parse_body(tag: u8, mut b: Bytes) -> Result<BackendMessage> {
        let msg = match tag {
            b'R' => {
                let code = get_i32(&mut b, "authentication")?;
                BackendMessage::Authentication(match code {
                    0 => AuthRequest::Ok,
                    3 => AuthRequest::CleartextPassword,
                    5 => {
                        if b.remaining() < 4 {
                            return Err(short("md5 authentication"));
                        }
                        let mut salt = [0u8; 4];
                        b.copy_to_slice(&mut salt);
                        AuthRequest::Md5Password { salt }
                    }
                    10 => {
                        let mut mechanisms = Vec::new();
                        loop {
                            let m = get_cstr(&mut b, "SASL authentication")?;
                            if m.is_empty() {
                                break;
                            }
                            mechanisms.push(m);
                        }
                        AuthRequest::Sasl { mechanisms }
                    }
                    11 => AuthRequest::SaslContinue(b.split_off(0)),
                    12 => AuthRequest::SaslFinal(b.split_off(0)),
                    other => AuthRequest::Other(other),
                })
            }
            b'S' => {
                let name = get_cstr(&mut b, "ParameterStatus")?;
                let value = get_cstr(&mut b, "ParameterStatus")?;
                BackendMessage::ParameterStatus { name, value }
            }
            b'K' => BackendMessage::BackendKeyData {
                process_id: get_i32(&mut b, "BackendKeyData")?,
                secret_key: get_i32(&mut b, "BackendKeyData")?,
            },
            b'Z' => {
                if !b.has_remaining() {
                    return Err(short("ReadyForQuery"));
                }
                BackendMessage::ReadyForQuery { status: b.get_u8() }
            }
            b'T' => BackendMessage::RowDescription(parse_row_description(b)?),
            b'D' => BackendMessage::DataRow(parse_data_row(b)?),
            b'C' => BackendMessage::CommandComplete {
                tag: get_cstr(&mut b, "CommandComplete")?,
            },
            b'I' => BackendMessage::EmptyQueryResponse,
            b'E' => BackendMessage::ErrorResponse(parse_fields(b, "ErrorResponse")?),
            b'N' => BackendMessage::NoticeResponse(parse_fields(b, "NoticeResponse")?),
            b'H' => BackendMessage::CopyOutResponse,
            b'G' => BackendMessage::CopyInResponse,
            b'W' => BackendMessage::CopyBothResponse,
            b'd' => BackendMessage::CopyData(b),
            b'c' => BackendMessage::CopyDone,
            b'v' => {
                let minor = get_i32(&mut b, "NegotiateProtocolVersion")?;
                let n = get_i32(&mut b, "NegotiateProtocolVersion")?;
                let mut unrecognized = Vec::new();
                for _ in 0..n.max(0) {
                    unrecognized.push(get_cstr(&mut b, "NegotiateProtocolVersion")?);
                }
                BackendMessage::NegotiateProtocolVersion {
                    minor,
                    unrecognized,
                }
            }
            tag => BackendMessage::Other { tag, body: b },
        };
        Ok(msg)
    }
}

/// Test and fuzz helpers: encoders for backend messages and a parser for frontend ones.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub(crate) fn backend(tag: u8, body: &[u8], out: &mut BytesMut) {
        out.put_u8(tag);
        out.put_i32(body.len() as i32 + 4);
        out.put_slice(body);
    }

    /// A parsed frontend message (only what we send).
    #[derive(Debug, PartialEq, Eq)]
    pub(crate) enum Frontend {
        Startup(Vec<(String, String)>),
        SslRequest,
        Query(String),
        Password(Vec<u8>),
        CopyDone,
        Terminate,
        Raw(u8, Vec<u8>),
    }

    pub(crate) fn parse_frontend(buf: &mut BytesMut, startup: bool) -> Option<Frontend> {
        if startup {
            if buf.len() < 8 {
                return None;
            }
            let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            let mut body = buf.split_to(len).freeze();
            body.advance(4);
            let code = body.get_i32();
            if code == SSL_REQUEST_CODE {
                return Some(Frontend::SslRequest);
            }
            assert_eq!(code, PROTOCOL_3_0);
            let mut params = Vec::new();
            loop {
                let k = get_cstr(&mut body, "x").ok()?;
                if k.is_empty() {
                    break;
                }
                let v = get_cstr(&mut body, "x").ok()?;
                params.push((k, v));
            }
            return Some(Frontend::Startup(params));
        }
        let tag = buf[0];
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        let mut body = buf.split_to(len + 1).freeze();
        body.advance(5);
        Some(match tag {
            b'Q' => Frontend::Query(get_cstr(&mut body, "x").ok()?),
            b'p' => {
                let mut v = body.to_vec();
                v.pop();
                Frontend::Password(v)
            }
            b'c' => Frontend::CopyDone,
            b'X' => Frontend::Terminate,
            t => Frontend::Raw(t, body.to_vec()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn partial_input_returns_none() {
        let mut all = BytesMut::new();
        backend(b'C', b"SELECT 1\0", &mut all);
        backend(b'Z', b"I", &mut all);
        let whole = all.clone().freeze();
        for cut in 0..whole.len() {
            let mut b = BytesMut::from(&whole[..cut]);
            let first = BackendMessage::parse(&mut b).unwrap();
            if cut < 14 {
                assert!(first.is_none());
                assert_eq!(b.len(), cut);
            }
        }
        let mut b = BytesMut::from(&whole[..]);
        assert_eq!(
            BackendMessage::parse(&mut b).unwrap(),
            Some(BackendMessage::CommandComplete {
                tag: "SELECT 1".into()
            })
        );
        assert_eq!(
            BackendMessage::parse(&mut b).unwrap(),
            Some(BackendMessage::ReadyForQuery { status: b'I' })
        );
        assert!(b.is_empty());
    }

    #[test]
    fn error_response_fields() {
        let mut b = BytesMut::new();
        backend(
            b'E',
            b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"x\"\0\0",
            &mut b,
        );
        match BackendMessage::parse(&mut b).unwrap() {
            Some(BackendMessage::ErrorResponse(m)) => {
                assert_eq!(m.code, "28P01");
                assert_eq!(m.severity, "FATAL");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stream_message_bytes() {
        // A keepalive as PostgreSQL lays it out: 'k', walEnd, sendTime, replyRequested.
        let mut raw = vec![b'k'];
        raw.extend_from_slice(&0x0000_0001_0300_0000u64.to_be_bytes());
        raw.extend_from_slice(&5i64.to_be_bytes());
        raw.push(1);
        assert_eq!(
            StreamMessage::parse_copy_data(Bytes::from(raw)).unwrap(),
            StreamMessage::Keepalive {
                wal_end: Lsn(0x1_0300_0000),
                server_time: 5,
                reply_requested: true
            }
        );
        assert!(StreamMessage::parse_copy_data(Bytes::from_static(b"z")).is_err());
        assert!(StreamMessage::parse_copy_data(Bytes::new()).is_err());
        let mut b = BytesMut::new();
        let end = StreamMessage::EndOfTimeline {
            next_tli: TimelineId(2),
            next_tli_start: Lsn(1),
        };
        assert!(end.encode_copy_data(&mut b).is_err());
        // The clock is PostgreSQL-epoch based: well after 2020 and before 2100.
        let now = pg_now_micros();
        assert!(now > 20 * 365 * 86_400 * 1_000_000 && now < 100 * 366 * 86_400 * 1_000_000);
    }

    #[test]
    fn bad_length_is_error() {
        let mut b = BytesMut::from(&[b'Z', 0, 0, 0, 2, b'I'][..]);
        assert_eq!(
            BackendMessage::parse(&mut b).unwrap_err().code(),
            "protocol.invalid_message"
        );
    }

    #[test]
    fn announced_length_does_not_size_the_buffer() {
        // Found by the proto_codec fuzz target: a 5-byte header announcing 200 MiB made
        // the parser reserve all of it before any of the bytes came.
        let mut b = BytesMut::from(&[b'd', 0x0c, 0x80, 0, 0][..]);
        assert!(BackendMessage::parse(&mut b).unwrap().is_none());
        assert_eq!(b.len(), 5, "nothing consumed");
        assert!(b.capacity() <= 5 + MAX_RESERVE_AHEAD, "{}", b.capacity());
    }

    proptest! {
        #[test]
        fn frontend_roundtrip(
            params in proptest::collection::vec(("[a-z_]{1,10}", "[ -~]{0,20}"), 0..5),
            sql in "[ -~]{0,100}",
            pw in proptest::collection::vec(1u8.., 0..40),
        ) {
            let mut b = BytesMut::new();
            let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            frontend::startup_message(&p, &mut b).unwrap();
            prop_assert_eq!(parse_frontend(&mut b, true), Some(Frontend::Startup(params.clone())));
            frontend::ssl_request(&mut b);
            prop_assert_eq!(parse_frontend(&mut b, true), Some(Frontend::SslRequest));
            frontend::query(&sql, &mut b).unwrap();
            frontend::password_message(&pw, &mut b).unwrap();
            frontend::copy_done(&mut b);
            frontend::terminate(&mut b);
            prop_assert_eq!(parse_frontend(&mut b, false), Some(Frontend::Query(sql.clone())));
            prop_assert_eq!(parse_frontend(&mut b, false), Some(Frontend::Password(pw.clone())));
            prop_assert_eq!(parse_frontend(&mut b, false), Some(Frontend::CopyDone));
            prop_assert_eq!(parse_frontend(&mut b, false), Some(Frontend::Terminate));
            prop_assert!(b.is_empty());
        }

        #[test]
        fn xlogdata_roundtrip(start in any::<u64>(), end in any::<u64>(), t in any::<i64>(),
                              data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let start = start.saturating_sub(data.len() as u64);
            let m = StreamMessage::XLogData {
                wal_start: Lsn(start), wal_end: Lsn(end), server_time: t, data: Bytes::from(data),
            };
            let mut b = BytesMut::new();
            m.encode_copy_data(&mut b).unwrap();
            let frozen = b.freeze();
            prop_assert_eq!(StreamMessage::parse_copy_data(frozen.clone()).unwrap(), m);
            // Every truncation inside the header is an error, never a panic.
            for cut in 0..25.min(frozen.len()) {
                prop_assert!(StreamMessage::parse_copy_data(frozen.slice(..cut)).is_err());
            }
        }

        #[test]
        fn keepalive_roundtrip(end in any::<u64>(), t in any::<i64>(), r in any::<bool>()) {
            let m = StreamMessage::Keepalive { wal_end: Lsn(end), server_time: t, reply_requested: r };
            let mut b = BytesMut::new();
            m.encode_copy_data(&mut b).unwrap();
            prop_assert_eq!(b.len(), 18);
            let frozen = b.freeze();
            prop_assert_eq!(StreamMessage::parse_copy_data(frozen.clone()).unwrap(), m);
            prop_assert!(StreamMessage::parse_copy_data(frozen.slice(..17)).is_err());
        }

        #[test]
        fn standby_status_roundtrip(w in any::<u64>(), f in any::<u64>(), a in any::<u64>(),
                                    clock in any::<i64>(), r in any::<bool>()) {
            let s = StandbyStatusUpdate { write: Lsn(w), flush: Lsn(f), apply: Lsn(a), clock, reply_requested: r };
            let mut b = BytesMut::new();
            frontend::standby_status_update(&s, &mut b);
            prop_assert_eq!(b.len(), 1 + 4 + 34);
            match parse_frontend(&mut b, false) {
                Some(Frontend::Raw(b'd', payload)) => {
                    prop_assert_eq!(StandbyStatusUpdate::parse(&payload).unwrap(), s);
                }
                other => prop_assert!(false, "{:?}", other),
            }
            prop_assert!(b.is_empty());
        }

        #[test]
        fn backend_datarow_roundtrip(vals in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..50)), 0..8)) {
            let mut body = BytesMut::new();
            body.put_i16(vals.len() as i16);
            for v in &vals {
                match v {
                    None => body.put_i32(-1),
                    Some(v) => { body.put_i32(v.len() as i32); body.put_slice(v); }
                }
            }
            let mut b = BytesMut::new();
            backend(b'D', &body, &mut b);
            let got = BackendMessage::parse(&mut b).unwrap();
            let want: Vec<Option<Bytes>> = vals.into_iter().map(|v| v.map(Bytes::from)).collect();
            prop_assert_eq!(got, Some(BackendMessage::DataRow(want)));
        }
    }
}
