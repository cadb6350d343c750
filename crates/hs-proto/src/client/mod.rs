//! Physical replication connection: the client type, its error mapping and simple
//! commands (IDENTIFY_SYSTEM, SHOW). Opening and authenticating a connection is in
//! `connect`, the BASE_BACKUP stream in `base_backup`; the streaming replication
//! commands are in `crate::stream`.

use std::collections::HashMap;

use bytes::Bytes;
use hs_base::{code, Code};

use crate::codec::{frontend, BackendMessage, ServerMessage};
use crate::conn::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::lsn::{Lsn, TimelineId};

mod base_backup;
mod connect;

#[cfg(any(test, feature = "fuzz"))]
pub(crate) use base_backup::BackupMachine;
pub use base_backup::{
    BackupEvent, BaseBackupOptions, BaseBackupStream, ServerCompression, TablespaceInfo,
};

/// Result of `IDENTIFY_SYSTEM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemIdentity {
    /// The cluster's system identifier (decimal text, as PostgreSQL prints it).
    pub system_id: String,
    /// Current timeline.
    pub timeline: TimelineId,
    /// Current WAL flush location.
    pub xlogpos: Lsn,
    /// Database name (None on a physical replication connection).
    pub dbname: Option<String>,
}

/// A physical replication connection (`replication=true`), or, when opened with
/// [`ReplicationClient::connect_sql`], a normal SQL connection on which only
/// [`ReplicationClient::simple_query`] (and `SHOW`) make sense.
pub struct ReplicationClient {
    pub(crate) conn: Connection,
    params: HashMap<String, String>,
    server_version_num: u32,
    tls: bool,
    replication: bool,
    pub(crate) busy: bool,
    /// The host and port connected to (of a multi-host string: the one chosen).
    server: (String, u16),
}

impl std::fmt::Debug for ReplicationClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationClient")
            .field("server_version_num", &self.server_version_num)
            .field("tls", &self.tls)
            .field("replication", &self.replication)
            .finish_non_exhaustive()
    }
}

/// Maps a server ErrorResponse to our error, keeping the SQLSTATE.
pub(crate) fn server_error(m: &ServerMessage, user: &str) -> Error {
    let mut text = m.message.clone();
    if let Some(d) = &m.detail {
        text.push_str(": ");
        text.push_str(d);
    }
    let (kind, code, temp, suggestion): (ErrorKind, Code, bool, Option<String>) =
        match m.code.as_str() {
            "28P01" => (
                ErrorKind::Auth,
                code::AUTH_PASSWORD_FAILED,
                false,
                Some("check the password (connection string, PGPASSWORD or ~/.pgpass)".into()),
            ),
            "28000" => (
                ErrorKind::Auth,
                code::AUTH_REJECTED,
                false,
                Some(format!(
                    "allow this client in pg_hba.conf, e.g. `host replication {user} <client-ip>/32 scram-sha-256`, then reload PostgreSQL \
                     (a managed service that offers no physical replication connections cannot; see \
                     \"Managed PostgreSQL services\" in docs/operator-guide.md)"
                )),
            ),
            "42501" => (
                ErrorKind::Auth,
                code::AUTH_REPLICATION_NOT_PERMITTED,
                false,
                Some(format!(
                    "grant the role replication rights: ALTER ROLE {user} REPLICATION \
                     (managed services such as Amazon RDS and Aurora do not grant it; see \
                     \"Managed PostgreSQL services\" in docs/operator-guide.md)"
                )),
            ),
            "53300" => (
                ErrorKind::Unreachable,
                code::UNREACHABLE_TOO_MANY_CONNECTIONS,
                true,
                Some("retry later, or raise max_wal_senders / max_connections on the server".into()),
            ),
            "57P03" => (
                ErrorKind::Unreachable,
                code::UNREACHABLE_SERVER_STARTING,
                true,
                Some("the server is starting up or shutting down; retry in a moment".into()),
            ),
            "57P01" | "57P02" => (
                ErrorKind::Unreachable,
                code::UNREACHABLE_SERVER_SHUTDOWN,
                true,
                None,
            ),
            "3D000" => (ErrorKind::NotFound, code::NOTFOUND_DATABASE, false, None),
            "42704" => (ErrorKind::NotFound, code::NOTFOUND_OBJECT, false, None),
            "55000" => (ErrorKind::Server, code::PREFLIGHT_SERVER_STATE, false, m.hint.clone()),
            "08P01" => (ErrorKind::Protocol, code::PROTOCOL_SERVER_REJECTED, false, None),
            _ => (ErrorKind::Server, code::SERVER_ERROR, false, m.hint.clone()),
        };
    let mut e = crate::error::with_sqlstate(Error::of_kind(kind, code, text), m.code.clone());
    if temp {
        e = e.temporary(true);
    }
    if let Some(s) = suggestion {
        e = e.with_suggestion(s);
    }
    e
}

pub(crate) fn unexpected(what: &str, m: &BackendMessage) -> Error {
    let name = match m {
        BackendMessage::Other { tag, .. } => format!("message type {:?}", *tag as char),
        other => {
            let s = format!("{other:?}");
            s.split(['(', ' ', '{']).next().unwrap_or("?").to_string()
        }
    };
    crate::error::protocol(format!("unexpected {name} from the server {what}"))
}

impl ReplicationClient {
    /// Whether this is a replication connection (`false` for [`ReplicationClient::connect_sql`]).
    pub fn is_replication(&self) -> bool {
        self.replication
    }

    /// The host and port this connection went to: with a multi-host connection string,
    /// the one that answered with the `target_session_attrs` asked for.
    pub fn server(&self) -> (&str, u16) {
        (&self.server.0, self.server.1)
    }

    /// The server's version as a number, e.g. `150004` for 15.4.
    pub fn server_version_num(&self) -> u32 {
        self.server_version_num
    }

    /// A ParameterStatus value the server reported (e.g. `server_version`, `integer_datetimes`).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// Sends Terminate and closes the connection.
    pub async fn close(mut self) -> Result<()> {
        frontend::terminate(&mut self.conn.wbuf);
        self.conn.flush().await?;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.conn.stream).await;
        Ok(())
    }

    /// Whether the connection is encrypted with TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    pub(crate) fn check_idle(&self) -> Result<()> {
        if self.busy {
            return Err(Error::of_kind(
                ErrorKind::Protocol,
                code::PROTOCOL_CONNECTION_BUSY,
                "the connection is in the middle of an unfinished command (e.g. an abandoned base backup)",
            )
            .with_suggestion("open a new connection"));
        }
        Ok(())
    }

    /// Runs a simple-protocol command and returns its rows (text values, `None` for NULL).
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        self.simple_query_raw(sql)
            .await?
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|v| {
                        v.map(|b| {
                            String::from_utf8(b.to_vec()).map_err(|_| {
                                crate::error::invalid_message("non-UTF-8 value in a query result")
                            })
                        })
                        .transpose()
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect()
    }

    /// Like [`ReplicationClient::simple_query`], with the raw bytes of each value.
    pub async fn simple_query_raw(&mut self, sql: &str) -> Result<Vec<Vec<Option<Bytes>>>> {
        self.check_idle()?;
        frontend::query(sql, &mut self.conn.wbuf)?;
        self.busy = true;
        self.conn.flush().await?;
        let mut rows = Vec::new();
        let mut err: Option<Error> = None;
        loop {
            let msg = self.conn.recv().await?;
            let Some(msg) = self.absorb(msg, &mut err) else {
                continue;
            };
            match msg {
                BackendMessage::DataRow(vals) => rows.push(vals),
                BackendMessage::RowDescription(_)
                | BackendMessage::CommandComplete { .. }
                | BackendMessage::EmptyQueryResponse => {}
                BackendMessage::ReadyForQuery { .. } => break,
                BackendMessage::CopyOutResponse
                | BackendMessage::CopyInResponse
                | BackendMessage::CopyBothResponse => {
                    return Err(crate::error::protocol(
                        "the command started a COPY, which simple_query does not handle",
                    ))
                }
                other => return Err(unexpected("in a query result", &other)),
            }
        }
        self.busy = false;
        match err {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// Takes the messages any command's response may carry: a ParameterStatus (kept), a
    /// notice (logged), an error (the first one kept in `err`, reported after
    /// ReadyForQuery). Any other message is handed back.
    pub(crate) fn absorb(
        &mut self,
        msg: BackendMessage,
        err: &mut Option<Error>,
    ) -> Option<BackendMessage> {
        match msg {
            BackendMessage::ParameterStatus { name, value } => {
                self.params.insert(name, value);
                None
            }
            BackendMessage::NoticeResponse(n) => {
                log_notice(&n);
                None
            }
            BackendMessage::ErrorResponse(e) => {
                err.get_or_insert_with(|| server_error(&e, ""));
                None
            }
            other => Some(other),
        }
    }

    /// `IDENTIFY_SYSTEM`.
    pub async fn identify_system(&mut self) -> Result<SystemIdentity> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = rows
            .into_iter()
            .next()
            .filter(|r| r.len() >= 3)
            .ok_or_else(|| {
                crate::error::invalid_message("IDENTIFY_SYSTEM returned no usable row")
            })?;
        let field = |i: usize| -> Result<String> {
            row.get(i)
                .cloned()
                .flatten()
                .ok_or_else(|| crate::error::invalid_message("IDENTIFY_SYSTEM returned NULL"))
        };
        let timeline = field(1)?.parse::<TimelineId>().map_err(|_| {
            crate::error::invalid_message("IDENTIFY_SYSTEM returned an invalid timeline")
        })?;
        let xlogpos = field(2)?.parse::<Lsn>().map_err(|_| {
            crate::error::invalid_message("IDENTIFY_SYSTEM returned an invalid LSN")
        })?;
        Ok(SystemIdentity {
            system_id: field(0)?,
            timeline,
            xlogpos,
            dbname: row.get(3).cloned().flatten(),
        })
    }

    /// `SHOW <setting>`; the name may contain letters, digits, `_` and `.`.
    pub async fn show(&mut self, setting: &str) -> Result<String> {
        if setting.is_empty()
            || !setting
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        {
            return Err(crate::error::usage(
                code::USAGE_SETTING_INVALID,
                format!("{setting:?} is not a valid setting name"),
            ));
        }
        let rows = self.simple_query(&format!("SHOW {setting}")).await?;
        rows.into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
            .ok_or_else(|| {
                crate::error::invalid_message(format!("SHOW {setting} returned no value"))
            })
    }
}

pub(crate) fn log_notice(n: &ServerMessage) {
    tracing::info!(severity = %n.severity, code = %n.code, "server notice: {}", n.message);
}

/// `"15.4 (Debian 15.4-1)"` -> 150004; `"9.6.2"` -> 90602.
pub(crate) fn parse_server_version(v: &str) -> u32 {
    let num: String = v
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = num.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let a = parts.next().unwrap_or(0);
    if major >= 10 {
        major * 10_000 + a
    } else {
        let b = parts.next().unwrap_or(0);
        major * 10_000 + a * 100 + b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_mapping() {
        let m = |code: &str| ServerMessage {
            severity: "FATAL".into(),
            code: code.into(),
            message: "x".into(),
            detail: None,
            hint: None,
        };
        assert_eq!(
            server_error(&m("28P01"), "u").code(),
            "auth.password_failed"
        );
        assert_eq!(server_error(&m("28000"), "u").code(), "auth.rejected");
        let e = server_error(&m("53300"), "u");
        assert_eq!(e.code(), "unreachable.too_many_connections");
        assert!(e.is_temporary());
    }

    #[test]
    fn server_versions() {
        assert_eq!(
            parse_server_version("15.4 (Debian 15.4-1.pgdg120+1)"),
            150004
        );
        assert_eq!(parse_server_version("16beta1"), 160000);
        assert_eq!(parse_server_version("9.6.24"), 90624);
    }
}
