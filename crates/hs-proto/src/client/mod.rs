//! Physical replication connection: connect + authenticate, simple commands
//! (IDENTIFY_SYSTEM, SHOW) and the BASE_BACKUP stream.

use std::collections::{HashMap, VecDeque};

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::net::TcpStream;

use crate::codec::{frontend, AuthRequest, BackendMessage, ServerMessage};
use crate::conn::{Connection, Stream};
use crate::conninfo::{ChannelBindingMode, ConnConfig, SslMode};
use crate::error::{Error, ErrorKind, Result};
use crate::lsn::{Lsn, TimelineId};
use crate::tar::{TarEntryHeader, TarEvent, TarParser};

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
        if let Some(r) = self.max_rate_kbps {
            if !(32..=1_048_576).contains(&r) {
                return Err(Error::usage(
                    "usage.max_rate_invalid",
                    format!("MAX_RATE {r} kB/s is outside the range PostgreSQL accepts"),
                )
                .with_suggestion("give a rate between 32 and 1048576 kB/s"));
            }
            opts.push(format!("MAX_RATE {r}"));
        }
        if self.label.contains('\0') {
            return Err(Error::usage(
                "usage.nul_in_string",
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
    let (kind, code, temp, suggestion): (ErrorKind, &'static str, bool, Option<String>) =
        match m.code.as_str() {
            "28P01" => (
                ErrorKind::Auth,
                "auth.password_failed",
                false,
                Some("check the password (connection string, PGPASSWORD or ~/.pgpass)".into()),
            ),
            "28000" => (
                ErrorKind::Auth,
                "auth.rejected",
                false,
                Some(format!(
                    "allow this client in pg_hba.conf, e.g. `host replication {user} <client-ip>/32 scram-sha-256`, then reload PostgreSQL"
                )),
            ),
            "42501" => (
                ErrorKind::Auth,
                "auth.replication_not_permitted",
                false,
                Some(format!("grant the role replication rights: ALTER ROLE {user} REPLICATION")),
            ),
            "53300" => (
                ErrorKind::Unreachable,
                "unreachable.too_many_connections",
                true,
                Some("retry later, or raise max_wal_senders / max_connections on the server".into()),
            ),
            "57P03" => (
                ErrorKind::Unreachable,
                "unreachable.server_starting",
                true,
                Some("the server is starting up or shutting down; retry in a moment".into()),
            ),
            "57P01" | "57P02" => (
                ErrorKind::Unreachable,
                "unreachable.server_shutdown",
                true,
                None,
            ),
            "3D000" => (ErrorKind::NotFound, "notfound.database", false, None),
            "42704" => (ErrorKind::NotFound, "notfound.object", false, None),
            "55000" => (ErrorKind::Server, "preflight.server_state", false, m.hint.clone()),
            "08P01" => (ErrorKind::Protocol, "protocol.server_rejected", false, None),
            _ => (ErrorKind::Server, "server.error", false, m.hint.clone()),
        };
    let mut e = Error::new(kind, code, text).with_sqlstate(m.code.clone());
    if temp {
        e = e.temporary();
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
    Error::protocol(format!("unexpected {name} from the server {what}"))
}

enum Tls {
    No,
    Yes,
}

/// Which kind of session the startup message asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `replication=true`: the walsender's physical replication commands.
    Replication,
    /// A normal backend session on a database (default `postgres`).
    Sql,
}

impl ReplicationClient {
    /// Opens a physical replication connection and authenticates.
    ///
    /// Honors `sslmode` (SSLRequest first unless `disable`/`allow`), `connect_timeout`,
    /// and authenticates with trust, cleartext, md5 or SCRAM-SHA-256(-PLUS). When no
    /// password was given, the password file is consulted with dbname `replication`.
    pub async fn connect(cfg: &ConnConfig) -> Result<ReplicationClient> {
        ReplicationClient::connect_mode(cfg, Mode::Replication).await
    }

    /// Opens a normal (non-replication) SQL session with the same TLS and authentication
    /// as [`ReplicationClient::connect`], on database `dbname` from `cfg` (default
    /// `postgres`). Use [`ReplicationClient::simple_query`] and
    /// [`ReplicationClient::show`] on it; replication commands fail on the server. The
    /// password file is matched with the database name, not `replication`.
    ///
    /// A server whose pg_hba.conf only admits replication connections for this role
    /// refuses it with `auth.rejected`.
    pub async fn connect_sql(cfg: &ConnConfig) -> Result<ReplicationClient> {
        ReplicationClient::connect_mode(cfg, Mode::Sql).await
    }

    /// Whether this is a replication connection (`false` for [`ReplicationClient::connect_sql`]).
    pub fn is_replication(&self) -> bool {
        self.replication
    }

    async fn connect_mode(cfg: &ConnConfig, mode: Mode) -> Result<ReplicationClient> {
        let fut = ReplicationClient::connect_inner(cfg, mode);
        match cfg.connect_timeout() {
            None => fut.await,
            Some(t) => tokio::time::timeout(t, fut).await.unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Unreachable,
                    "unreachable.timeout",
                    format!(
                        "connecting to {}:{} timed out after {}s",
                        cfg.host(),
                        cfg.port(),
                        t.as_secs()
                    ),
                )
                .temporary()
                .with_suggestion(
                    "check that the server is up and reachable, or raise connect_timeout",
                ))
            }),
        }
    }

    async fn connect_inner(cfg: &ConnConfig, mode: Mode) -> Result<ReplicationClient> {
        let unix = cfg.host().starts_with('/');
        let first = match cfg.sslmode() {
            SslMode::Disable | SslMode::Allow => Tls::No,
            _ if unix => {
                if matches!(cfg.sslmode(), SslMode::Prefer) {
                    Tls::No
                } else {
                    return Err(Error::new(
                        ErrorKind::Auth,
                        "auth.tls_required",
                        "TLS was required, but Unix-domain socket connections cannot use TLS",
                    )
                    .with_suggestion(
                        "connect over TCP (host=<name or IP>) or use sslmode=prefer",
                    ));
                }
            }
            _ => Tls::Yes,
        };
        match ReplicationClient::attempt(cfg, first, mode).await {
            Err(e) if cfg.sslmode() == SslMode::Allow && !unix && e.sqlstate() == Some("28000") => {
                tracing::debug!("plain connection rejected, retrying with TLS (sslmode=allow)");
                ReplicationClient::attempt(cfg, Tls::Yes, mode).await
            }
            other => other,
        }
    }

    async fn open_socket(cfg: &ConnConfig) -> Result<Stream> {
        let host = cfg.host();
        let port = cfg.port();
        if host.starts_with('/') {
            #[cfg(unix)]
            {
                let path = format!("{host}/.s.PGSQL.{port}");
                let s = tokio::net::UnixStream::connect(&path)
                    .await
                    .map_err(|e| connect_error(&path, e))?;
                return Ok(Stream::Unix(s));
            }
            #[cfg(not(unix))]
            return Err(Error::usage(
                "usage.conninfo_invalid",
                "Unix-domain sockets are not supported on this platform",
            ));
        }
        let addr = cfg.hostaddr().unwrap_or(host);
        let target = format!("{addr}:{port}");
        let s = TcpStream::connect((addr, port))
            .await
            .map_err(|e| connect_error(&target, e))?;
        let _ = s.set_nodelay(true);
        Ok(Stream::Tcp(s))
    }

    async fn attempt(cfg: &ConnConfig, tls: Tls, mode: Mode) -> Result<ReplicationClient> {
        let stream = ReplicationClient::open_socket(cfg).await?;
        let mut conn = Connection::new(stream);
        let mut tls_on = false;
        if let Tls::Yes = tls {
            frontend::ssl_request(&mut conn.wbuf);
            conn.flush().await?;
            match conn.read_byte().await? {
                b'S' => {
                    let config = crate::tls::client_config(cfg.sslmode(), cfg.sslrootcert())?;
                    let name = crate::tls::server_name(cfg.host())?;
                    let tcp = match conn.into_stream() {
                        Stream::Tcp(t) => t,
                        _ => return Err(Error::protocol("TLS requested on a non-TCP stream")),
                    };
                    let tls = tokio_rustls::TlsConnector::from(config)
                        .connect(name, tcp)
                        .await
                        .map_err(|e| tls_handshake_error(cfg, e))?;
                    conn = Connection::new(Stream::Tls(Box::new(tls)));
                    tls_on = true;
                }
                b'N' => {
                    if cfg.sslmode() != SslMode::Prefer && cfg.sslmode() != SslMode::Allow {
                        return Err(Error::new(
                            ErrorKind::Auth,
                            "auth.tls_required",
                            format!(
                                "sslmode={} requires TLS, but the server at {}:{} does not support it",
                                cfg.sslmode().as_str(),
                                cfg.host(),
                                cfg.port()
                            ),
                        )
                        .with_suggestion(
                            "enable ssl on the server (ssl=on with a certificate), or use sslmode=prefer",
                        ));
                    }
                    tracing::debug!("server does not support TLS; continuing unencrypted");
                }
                b'E' => {
                    // Pre-3.0 servers answer SSLRequest with an error message.
                    return Err(Error::protocol(
                        "the server answered the TLS request with an error; is it PostgreSQL 15 or newer?",
                    ));
                }
                other => {
                    return Err(Error::invalid_message(format!(
                        "invalid answer {other:#04x} to the TLS request"
                    )))
                }
            }
        }
        let mut params: Vec<(&str, &str)> = vec![
            ("user", cfg.user()),
            ("application_name", cfg.application_name()),
        ];
        match mode {
            Mode::Replication => {
                params.push(("replication", "true"));
                if let Some(db) = cfg.dbname() {
                    params.push(("database", db));
                }
            }
            Mode::Sql => params.push(("database", cfg.dbname().unwrap_or("postgres"))),
        }
        frontend::startup_message(&params, &mut conn.wbuf)?;
        conn.flush().await?;

        let mut client = ReplicationClient {
            conn,
            params: HashMap::new(),
            server_version_num: 0,
            tls: tls_on,
            replication: mode == Mode::Replication,
            busy: false,
        };
        client.authenticate(cfg).await?;
        // Collect ParameterStatus / BackendKeyData until ReadyForQuery.
        loop {
            match client.conn.recv().await? {
                BackendMessage::ParameterStatus { name, value } => {
                    client.params.insert(name, value);
                }
                BackendMessage::BackendKeyData { .. } => {}
                BackendMessage::NoticeResponse(n) => log_notice(&n),
                BackendMessage::NegotiateProtocolVersion { .. } => {}
                BackendMessage::ReadyForQuery { .. } => break,
                BackendMessage::ErrorResponse(e) => return Err(server_error(&e, cfg.user())),
                other => return Err(unexpected("during startup", &other)),
            }
        }
        client.server_version_num = client
            .params
            .get("server_version")
            .map(|v| parse_server_version(v))
            .unwrap_or(0);
        tracing::debug!(
            server_version_num = client.server_version_num,
            tls = client.tls,
            replication = client.replication,
            "connection established"
        );
        Ok(client)
    }

    async fn authenticate(&mut self, cfg: &ConnConfig) -> Result<()> {
        let mut used_channel_binding = false;
        let mut password: Option<String> = None;
        let replication = self.replication;
        let get_password = |password: &mut Option<String>| -> Result<String> {
            if password.is_none() {
                *password = if replication {
                    cfg.resolve_password()
                } else {
                    cfg.resolve_password_for(cfg.dbname().unwrap_or("postgres"))
                };
            }
            password.clone().ok_or_else(|| {
                Error::new(
                    ErrorKind::Auth,
                    "auth.password_missing",
                    format!("the server requested a password for user {:?}, but none was supplied", cfg.user()),
                )
                .with_suggestion("put the password in the connection string, PGPASSWORD, or ~/.pgpass (host:port:replication:user:password)")
            })
        };
        loop {
            let msg = self.conn.recv().await?;
            let req = match msg {
                BackendMessage::Authentication(r) => r,
                BackendMessage::ErrorResponse(e) => return Err(server_error(&e, cfg.user())),
                BackendMessage::NoticeResponse(n) => {
                    log_notice(&n);
                    continue;
                }
                BackendMessage::NegotiateProtocolVersion { .. } => continue,
                other => return Err(unexpected("during authentication", &other)),
            };
            match req {
                AuthRequest::Ok => {
                    if cfg.channel_binding() == ChannelBindingMode::Require && !used_channel_binding
                    {
                        return Err(Error::new(
                            ErrorKind::Auth,
                            "auth.channel_binding_required",
                            "channel_binding=require, but the server authenticated without channel binding",
                        )
                        .with_suggestion("use SCRAM-SHA-256 over TLS on the server, or set channel_binding=prefer"));
                    }
                    return Ok(());
                }
                AuthRequest::CleartextPassword => {
                    let pw = get_password(&mut password)?;
                    frontend::password_message(pw.as_bytes(), &mut self.conn.wbuf)?;
                    self.conn.flush().await?;
                }
                AuthRequest::Md5Password { salt } => {
                    let pw = get_password(&mut password)?;
                    let hash = postgres_protocol::authentication::md5_hash(
                        cfg.user().as_bytes(),
                        pw.as_bytes(),
                        salt,
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.conn.wbuf)?;
                    self.conn.flush().await?;
                }
                AuthRequest::Sasl { mechanisms } => {
                    let pw = get_password(&mut password)?;
                    used_channel_binding = self.scram(cfg, &mechanisms, &pw).await?;
                }
                AuthRequest::SaslContinue(_) | AuthRequest::SaslFinal(_) => {
                    return Err(Error::protocol("SASL message outside a SASL exchange"));
                }
                AuthRequest::Other(code) => {
                    return Err(Error::new(
                        ErrorKind::Auth,
                        "auth.unsupported_method",
                        format!("the server asked for authentication method {code}, which is not supported"),
                    )
                    .with_suggestion("use scram-sha-256 (or md5/password) for this user in pg_hba.conf"));
                }
            }
        }
    }

    /// Runs SCRAM-SHA-256(-PLUS); returns whether channel binding was used.
    async fn scram(&mut self, cfg: &ConnConfig, mechanisms: &[String], pw: &str) -> Result<bool> {
        let offers_plus = mechanisms.iter().any(|m| m == "SCRAM-SHA-256-PLUS");
        let offers_plain = mechanisms.iter().any(|m| m == "SCRAM-SHA-256");
        let cb_mode = cfg.channel_binding();
        let cert_hash = match (&self.conn.stream, cb_mode) {
            (Stream::Tls(s), m) if m != ChannelBindingMode::Disable => s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| crate::tls::server_end_point_hash(c.as_ref())),
            _ => None,
        };
        let can_bind = cert_hash.is_some();
        let (mechanism, binding, plus) = match (offers_plus, cert_hash) {
            (true, Some(h)) => ("SCRAM-SHA-256-PLUS", ChannelBinding::tls_server_end_point(h), true),
            _ if !offers_plain => {
                return Err(Error::new(
                    ErrorKind::Auth,
                    "auth.unsupported_method",
                    format!("no supported SASL mechanism among {mechanisms:?}"),
                ))
            }
            _ if cb_mode == ChannelBindingMode::Require => {
                return Err(Error::new(
                    ErrorKind::Auth,
                    "auth.channel_binding_required",
                    "channel_binding=require, but channel binding is not possible on this connection",
                )
                .with_suggestion("connect with TLS (sslmode=require or stricter) to a server that offers SCRAM-SHA-256-PLUS"))
            }
            // We could bind, but the server did not offer PLUS: say so ('y'), so that a
            // server that does support it detects a downgrade.
            _ if can_bind && !offers_plus => {
                ("SCRAM-SHA-256", ChannelBinding::unrequested(), false)
            }
            _ => ("SCRAM-SHA-256", ChannelBinding::unsupported(), false),
        };
        let mut scram = ScramSha256::new(pw.as_bytes(), binding);
        frontend::sasl_initial_response(mechanism, scram.message(), &mut self.conn.wbuf)?;
        self.conn.flush().await?;
        let data = self.expect_sasl(cfg, true).await?;
        scram.update(&data).map_err(|e| {
            Error::new(
                ErrorKind::Auth,
                "auth.scram_failed",
                format!("SCRAM exchange failed: {e}"),
            )
        })?;
        frontend::sasl_response(scram.message(), &mut self.conn.wbuf)?;
        self.conn.flush().await?;
        let data = self.expect_sasl(cfg, false).await?;
        scram.finish(&data).map_err(|e| {
            Error::new(
                ErrorKind::Auth,
                "auth.server_signature_invalid",
                format!("the server's SCRAM signature is invalid: {e}"),
            )
            .with_suggestion("the server may not know the password it claims to; check you are connecting to the right server")
        })?;
        Ok(plus)
    }

    async fn expect_sasl(&mut self, cfg: &ConnConfig, cont: bool) -> Result<Bytes> {
        loop {
            match self.conn.recv().await? {
                BackendMessage::Authentication(AuthRequest::SaslContinue(d)) if cont => {
                    return Ok(d)
                }
                BackendMessage::Authentication(AuthRequest::SaslFinal(d)) if !cont => return Ok(d),
                BackendMessage::ErrorResponse(e) => return Err(server_error(&e, cfg.user())),
                BackendMessage::NoticeResponse(n) => log_notice(&n),
                other => return Err(unexpected("during SCRAM authentication", &other)),
            }
        }
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
            return Err(Error::new(
                ErrorKind::Protocol,
                "protocol.connection_busy",
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
                                Error::invalid_message("non-UTF-8 value in a query result")
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
            match self.conn.recv().await? {
                BackendMessage::DataRow(vals) => rows.push(vals),
                BackendMessage::RowDescription(_)
                | BackendMessage::CommandComplete { .. }
                | BackendMessage::EmptyQueryResponse => {}
                BackendMessage::ParameterStatus { name, value } => {
                    self.params.insert(name, value);
                }
                BackendMessage::NoticeResponse(n) => log_notice(&n),
                BackendMessage::ErrorResponse(e) => {
                    err.get_or_insert_with(|| server_error(&e, ""));
                }
                BackendMessage::ReadyForQuery { .. } => break,
                BackendMessage::CopyOutResponse
                | BackendMessage::CopyInResponse
                | BackendMessage::CopyBothResponse => {
                    return Err(Error::protocol(
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

    /// `IDENTIFY_SYSTEM`.
    pub async fn identify_system(&mut self) -> Result<SystemIdentity> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = rows
            .into_iter()
            .next()
            .filter(|r| r.len() >= 3)
            .ok_or_else(|| Error::invalid_message("IDENTIFY_SYSTEM returned no usable row"))?;
        let field = |i: usize| -> Result<String> {
            row.get(i)
                .cloned()
                .flatten()
                .ok_or_else(|| Error::invalid_message("IDENTIFY_SYSTEM returned NULL"))
        };
        let timeline = field(1)?
            .parse::<TimelineId>()
            .map_err(|_| Error::invalid_message("IDENTIFY_SYSTEM returned an invalid timeline"))?;
        let xlogpos = field(2)?
            .parse::<Lsn>()
            .map_err(|_| Error::invalid_message("IDENTIFY_SYSTEM returned an invalid LSN"))?;
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
            return Err(Error::usage(
                "usage.setting_invalid",
                format!("{setting:?} is not a valid setting name"),
            ));
        }
        let rows = self.simple_query(&format!("SHOW {setting}")).await?;
        rows.into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
            .ok_or_else(|| Error::invalid_message(format!("SHOW {setting} returned no value")))
    }

    /// Starts `BASE_BACKUP` and returns the event stream. Pull events with
    /// [`BaseBackupStream::next`]; the server is only read as fast as you pull.
    pub async fn base_backup(&mut self, opts: &BaseBackupOptions) -> Result<BaseBackupStream<'_>> {
        self.check_idle()?;
        if self.server_version_num != 0 && self.server_version_num < 150_000 {
            return Err(Error::new(
                ErrorKind::Server,
                "preflight.server_too_old",
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
            machine: BackupMachine::new(),
        })
    }
}

pub(crate) fn log_notice(n: &ServerMessage) {
    tracing::info!(severity = %n.severity, code = %n.code, "server notice: {}", n.message);
}

fn connect_error(target: &str, e: std::io::Error) -> Error {
    let suggestion =
        "check host and port, and that PostgreSQL listens there (listen_addresses, firewall)";
    let err = Error::io(&format!("cannot connect to {target}"), e);
    if err.kind() == ErrorKind::Unreachable {
        return err.with_suggestion(suggestion);
    }
    // DNS failures and the like: still "cannot reach the server".
    Error::new(
        ErrorKind::Unreachable,
        "unreachable.connect_failed",
        err.to_string(),
    )
    .with_source(err)
    .temporary()
    .with_suggestion(suggestion)
}

fn tls_handshake_error(cfg: &ConnConfig, e: std::io::Error) -> Error {
    let cert_problem = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
    if cert_problem {
        Error::new(
            ErrorKind::Auth,
            "auth.tls_certificate_invalid",
            format!(
                "the server's TLS certificate was rejected (sslmode={}): {e}",
                cfg.sslmode().as_str()
            ),
        )
        .with_suggestion(
            "check sslrootcert and that the certificate matches the host name (verify-full)",
        )
    } else {
        Error::io("TLS handshake failed", e)
    }
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
    pending: Bytes,
    manifest: BytesMut,
    queue: VecDeque<BackupEvent>,
    error: Option<Error>,
}

impl BackupMachine {
    pub(crate) fn new() -> BackupMachine {
        BackupMachine {
            phase: Phase::Header,
            result_sets: Vec::new(),
            current_set: None,
            target: Target::None,
            tar: TarParser::new(),
            tar_done: false,
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
        if self.target == Target::Archive && !self.tar_done {
            if !self.tar.at_member_boundary() {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    "protocol.tar_invalid",
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
        if self.target == Target::Archive && !self.tar_done {
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
            Phase::Header | Phase::Trailer => match msg {
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
                        .ok_or_else(|| Error::protocol("DataRow without RowDescription"))?
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
                        Error::protocol("BASE_BACKUP ended without an end-position result")
                    })?;
                    let (end_lsn, timeline) = lsn_tli(set, "end")?;
                    self.queue
                        .push_back(BackupEvent::Finished { end_lsn, timeline });
                    self.phase = Phase::Done;
                }
                other => return Err(unexpected("in the BASE_BACKUP response", &other)),
            },
            Phase::Copy => {
                match msg {
                    BackendMessage::CopyData(mut d) => {
                        if d.is_empty() {
                            return Err(Error::invalid_message(
                                "empty CopyData in base backup stream",
                            ));
                        }
                        let kind = d.get_u8();
                        match kind {
                            b'n' => {
                                self.end_archive()?;
                                let name = take_cstr(&mut d)?;
                                let loc = take_cstr(&mut d)?;
                                self.queue.push_back(BackupEvent::ArchiveStart {
                                    name,
                                    tablespace_location: (!loc.is_empty()).then_some(loc),
                                });
                                self.target = Target::Archive;
                                self.tar = TarParser::new();
                                self.tar_done = false;
                            }
                            b'd' => match self.target {
                                Target::Archive if self.tar_done => {}
                                Target::Archive => {
                                    if !self.pending.is_empty() {
                                        return Err(Error::protocol("archive data fed before the previous chunk was consumed"));
                                    }
                                    self.pending = d;
                                }
                                Target::Manifest => self.manifest.extend_from_slice(&d),
                                Target::None => {
                                    return Err(Error::protocol(
                                        "archive data before any archive started",
                                    ))
                                }
                            },
                            b'p' => {
                                if d.remaining() < 8 {
                                    return Err(Error::invalid_message("short progress message"));
                                }
                                let bytes_done = d.get_i64().max(0) as u64;
                                self.queue.push_back(BackupEvent::Progress { bytes_done });
                            }
                            b'm' => {
                                self.end_archive()?;
                                self.target = Target::Manifest;
                            }
                            other => {
                                return Err(Error::invalid_message(format!(
                                    "unknown base backup message type {:?}",
                                    other as char
                                )))
                            }
                        }
                    }
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
            }
            Phase::Done => return Err(unexpected("after the base backup finished", &msg)),
        }
        Ok(())
    }

    fn started(&self) -> Result<BackupEvent> {
        let start = self
            .result_sets
            .first()
            .ok_or_else(|| Error::protocol("BASE_BACKUP sent no start-position result"))?;
        let (start_lsn, timeline) = lsn_tli(start, "start")?;
        let mut tablespaces = Vec::new();
        if let Some(set) = self.result_sets.get(1) {
            for row in set {
                let col = |i: usize| row.get(i).cloned().flatten();
                let oid = match col(0) {
                    None => None,
                    Some(s) => Some(s.parse::<u32>().map_err(|_| {
                        Error::invalid_message("invalid tablespace OID in BASE_BACKUP result")
                    })?),
                };
                let size_bytes = match col(2) {
                    None => None,
                    Some(s) => Some(
                        s.parse::<u64>()
                            .map_err(|_| {
                                Error::invalid_message(
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
    let end = d
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| Error::invalid_message("unterminated string in base backup stream"))?;
    let s = d.split_to(end);
    d.advance(1);
    String::from_utf8(s.to_vec())
        .map_err(|_| Error::invalid_message("non-UTF-8 name in base backup stream"))
}

fn lsn_tli(set: &[Vec<Option<String>>], what: &str) -> Result<(Lsn, TimelineId)> {
    let bad = || Error::invalid_message(format!("invalid BASE_BACKUP {what}-position result"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::testing::backend;
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
        let mut s = BytesMut::new();
        row_desc(&["recptr", "tli"], &mut s);
        data_row(&[Some("0/2000028"), Some("1")], &mut s);
        backend(b'C', b"SELECT\0", &mut s);
        row_desc(&["spcoid", "spclocation", "size"], &mut s);
        data_row(&[None, None, Some("30000")], &mut s);
        data_row(&[Some("16400"), Some("/srv/ts1"), Some("8")], &mut s);
        backend(b'C', b"SELECT\0", &mut s);
        backend(b'H', &[0, 0, 0], &mut s);
        copy_data(b'n', b"base.tar\0\0", &mut s);
        for c in tar.chunks(chunk) {
            copy_data(b'd', c, &mut s);
        }
        copy_data(b'p', &123i64.to_be_bytes(), &mut s);
        copy_data(b'n', b"16400.tar\0/srv/ts1\0", &mut s);
        copy_data(b'd', &[0u8; 1024], &mut s);
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

    fn run(mut s: BytesMut) -> Result<Vec<BackupEvent>> {
        let mut m = BackupMachine::new();
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
                .ok_or_else(|| Error::protocol("stream ended early"))?;
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
    fn options_to_command() {
        let o = BaseBackupOptions {
            label: "it's".into(),
            fast_checkpoint: true,
            wal: true,
            manifest: true,
            max_rate_kbps: Some(1024),
            progress: true,
        };
        assert_eq!(
            o.to_command().unwrap(),
            "BASE_BACKUP ( LABEL 'it''s', PROGRESS, CHECKPOINT 'fast', WAL, MANIFEST 'yes', MAX_RATE 1024 )"
        );
        let o = BaseBackupOptions {
            max_rate_kbps: Some(1),
            ..Default::default()
        };
        assert_eq!(o.to_command().unwrap_err().code(), "usage.max_rate_invalid");
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

    proptest! {
        #[test]
        fn chunking_of_copy_data_does_not_matter(chunk in 1usize..5000) {
            let tar = sample_tar();
            let a = normalize(run(server_stream(&tar, 512)).unwrap());
            let b = normalize(run(server_stream(&tar, chunk)).unwrap());
            prop_assert_eq!(a, b);
        }
    }
}
