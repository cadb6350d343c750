//! Opening a connection: socket, TLS negotiation (SSLRequest), the startup message and
//! authentication (cleartext, md5, SCRAM-SHA-256(-PLUS) with channel binding).

use std::collections::HashMap;

use bytes::Bytes;
use hs_base::code;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::net::TcpStream;

use super::{log_notice, parse_server_version, server_error, unexpected, ReplicationClient};
use crate::codec::{frontend, AuthRequest, BackendMessage};
use crate::conn::{Connection, Stream};
use crate::conninfo::{ChannelBindingMode, ConnConfig, SslMode};
use crate::error::{Error, ErrorKind, Result, SqlState};

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

fn connect_error(target: &str, e: std::io::Error) -> Error {
    let suggestion =
        "check host and port, and that PostgreSQL listens there (listen_addresses, firewall)";
    let err = crate::error::io(&format!("cannot connect to {target}"), e);
    if err.kind() == ErrorKind::Unreachable {
        return err.with_suggestion(suggestion);
    }
    // DNS failures and the like: still "cannot reach the server".
    Error::of_kind(
        ErrorKind::Unreachable,
        code::UNREACHABLE_CONNECT_FAILED,
        err.to_string(),
    )
    .with_source(err)
    .temporary(true)
    .with_suggestion(suggestion)
}

/// The socket addresses of `host`, from the system resolver (getaddrinfo). When that fails
/// for `localhost` or a name under `.localhost`, the loopback addresses 127.0.0.1 and ::1
/// (RFC 6761, section 6.3): a statically linked binary in a root without `/etc/hosts` (a
/// minimal container, a chroot) has no other way to know them (docs/packaging.md).
async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<std::net::SocketAddr>> {
    match tokio::net::lookup_host((host, port)).await {
        Ok(found) => Ok(found.collect()),
        Err(_) if is_localhost(host) => {
            tracing::debug!("{host} did not resolve; using the loopback addresses (RFC 6761)");
            Ok(vec![
                (std::net::Ipv4Addr::LOCALHOST, port).into(),
                (std::net::Ipv6Addr::LOCALHOST, port).into(),
            ])
        }
        Err(e) => Err(e),
    }
}

/// `localhost`, `localhost.` or a name under `.localhost`, in any case.
fn is_localhost(host: &str) -> bool {
    let h = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    h == "localhost" || h.ends_with(".localhost")
}

fn tls_handshake_error(cfg: &ConnConfig, e: std::io::Error) -> Error {
    let cert_problem = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
    if cert_problem {
        Error::of_kind(
            ErrorKind::Auth,
            code::AUTH_TLS_CERTIFICATE_INVALID,
            format!(
                "the server's TLS certificate was rejected (sslmode={}): {e}",
                cfg.sslmode().as_str()
            ),
        )
        .with_suggestion(
            "check sslrootcert and that the certificate matches the host name (verify-full)",
        )
    } else {
        crate::error::io("TLS handshake failed", e)
    }
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

    /// libpq's multi-host rule: each listed host in order, keeping the first whose
    /// server has the `target_session_attrs` asked for (read from the `in_hot_standby`
    /// and `default_transaction_read_only` parameters the server reports at connect,
    /// PostgreSQL 14+); `prefer-standby` first looks for a standby, then takes any.
    async fn connect_mode(cfg: &ConnConfig, mode: Mode) -> Result<ReplicationClient> {
        if !cfg.is_multi() {
            return ReplicationClient::connect_one(cfg, mode).await;
        }
        let attrs = cfg.target_session_attrs();
        let passes: &[bool] = if attrs == crate::TargetSessionAttrs::PreferStandby {
            &[true, false]
        } else {
            &[true]
        };
        let mut last_err = None;
        let mut refused = Vec::new();
        for &strict in passes {
            for c in cfg.candidates() {
                let client = match ReplicationClient::connect_one(&c, mode).await {
                    Ok(client) => client,
                    Err(e) => {
                        tracing::debug!(host = c.host(), port = c.port(), "connect failed: {e}");
                        last_err = Some(e);
                        continue;
                    }
                };
                let flag = |name: &str| client.parameter(name).map(|v| v == "on");
                let (standby, ro) = (
                    flag("in_hot_standby"),
                    flag("default_transaction_read_only"),
                );
                if attrs.accepts(standby, ro, strict) {
                    return Ok(client);
                }
                refused.push(format!(
                    "{}:{} ({})",
                    c.host(),
                    c.port(),
                    if standby == Some(true) {
                        "standby"
                    } else if ro == Some(true) {
                        "read-only"
                    } else {
                        "primary"
                    }
                ));
                let _ = client.close().await;
            }
        }
        if refused.is_empty() {
            if let Some(e) = last_err {
                return Err(e);
            }
        }
        Err(Error::of_kind(
            ErrorKind::Unreachable,
            code::UNREACHABLE_NO_MATCHING_SERVER,
            format!(
                "no server in the connection string is {} (answered: {})",
                attrs.as_str(),
                refused.join(", ")
            ),
        )
        .temporary(true)
        .with_suggestion(
            "wait for the failover to finish, or change target_session_attrs or the host list",
        ))
    }

    async fn connect_one(cfg: &ConnConfig, mode: Mode) -> Result<ReplicationClient> {
        let fut = ReplicationClient::connect_inner(cfg, mode);
        match cfg.connect_timeout() {
            None => fut.await,
            Some(t) => tokio::time::timeout(t, fut).await.unwrap_or_else(|_| {
                Err(Error::of_kind(
                    ErrorKind::Unreachable,
                    code::UNREACHABLE_TIMEOUT,
                    format!(
                        "connecting to {}:{} timed out after {}s",
                        cfg.host(),
                        cfg.port(),
                        t.as_secs()
                    ),
                )
                .temporary(true)
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
                    return Err(Error::of_kind(
                        ErrorKind::Auth,
                        code::AUTH_TLS_REQUIRED,
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
            return Err(crate::error::usage(
                code::USAGE_CONNINFO_INVALID,
                "Unix-domain sockets are not supported on this platform",
            ));
        }
        let addr = cfg.hostaddr().unwrap_or(host);
        let target = format!("{addr}:{port}");
        let addrs = resolve(addr, port)
            .await
            .map_err(|e| connect_error(&target, e))?;
        let s = TcpStream::connect(addrs.as_slice())
            .await
            .map_err(|e| connect_error(&target, e))?;
        let _ = s.set_nodelay(true);
        Ok(Stream::Tcp(s))
    }

    async fn attempt(cfg: &ConnConfig, tls: Tls, mode: Mode) -> Result<ReplicationClient> {
        let stream = ReplicationClient::open_socket(cfg).await?;
        let conn = Connection::new(stream);
        let (mut conn, tls_on) = match tls {
            Tls::Yes => ReplicationClient::negotiate_tls(cfg, conn).await?,
            Tls::No => (conn, false),
        };
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
            server: (cfg.host().to_owned(), cfg.port()),
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

    /// Sends SSLRequest and, when the server agrees, runs the TLS handshake; returns the
    /// connection to go on with and whether it is encrypted. A refusal is accepted only
    /// for `sslmode=prefer` / `allow`.
    async fn negotiate_tls(cfg: &ConnConfig, mut conn: Connection) -> Result<(Connection, bool)> {
        frontend::ssl_request(&mut conn.wbuf);
        conn.flush().await?;
        match conn.read_byte().await? {
            b'S' => {
                let config = crate::tls::client_config(cfg.sslmode(), cfg.sslrootcert())?;
                let name = crate::tls::server_name(cfg.host())?;
                let tcp = match conn.into_stream() {
                    Stream::Tcp(t) => t,
                    _ => return Err(crate::error::protocol("TLS requested on a non-TCP stream")),
                };
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| tls_handshake_error(cfg, e))?;
                Ok((Connection::new(Stream::Tls(Box::new(tls))), true))
            }
            b'N' => {
                if cfg.sslmode() != SslMode::Prefer && cfg.sslmode() != SslMode::Allow {
                    return Err(Error::of_kind(
                        ErrorKind::Auth,
                        code::AUTH_TLS_REQUIRED,
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
                Ok((conn, false))
            }
            b'E' => {
                // Pre-3.0 servers answer SSLRequest with an error message.
                Err(crate::error::protocol(
                    "the server answered the TLS request with an error; is it PostgreSQL 15 or newer?",
                ))
            }
            other => Err(crate::error::invalid_message(format!(
                "invalid answer {other:#04x} to the TLS request"
            ))),
        }
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
                Error::of_kind(
                    ErrorKind::Auth,
                    code::AUTH_PASSWORD_MISSING,
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
                        return Err(Error::of_kind(
                            ErrorKind::Auth,
                            code::AUTH_CHANNEL_BINDING_REQUIRED,
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
                    return Err(crate::error::protocol(
                        "SASL message outside a SASL exchange",
                    ));
                }
                AuthRequest::Other(code) => {
                    return Err(Error::of_kind(
                        ErrorKind::Auth,
                        code::AUTH_UNSUPPORTED_METHOD,
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
                return Err(Error::of_kind(
                    ErrorKind::Auth,
                    code::AUTH_UNSUPPORTED_METHOD,
                    format!("no supported SASL mechanism among {mechanisms:?}"),
                ))
            }
            _ if cb_mode == ChannelBindingMode::Require => {
                return Err(Error::of_kind(
                    ErrorKind::Auth,
                    code::AUTH_CHANNEL_BINDING_REQUIRED,
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
            Error::of_kind(
                ErrorKind::Auth,
                code::AUTH_SCRAM_FAILED,
                format!("SCRAM exchange failed: {e}"),
            )
        })?;
        frontend::sasl_response(scram.message(), &mut self.conn.wbuf)?;
        self.conn.flush().await?;
        let data = self.expect_sasl(cfg, false).await?;
        scram.finish(&data).map_err(|e| {
            Error::of_kind(
                ErrorKind::Auth,
                code::AUTH_SERVER_SIGNATURE_INVALID,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_names_are_recognized() {
        for h in [
            "localhost",
            "LocalHost",
            "localhost.",
            "db.localhost",
            "a.b.LOCALHOST.",
        ] {
            assert!(is_localhost(h), "{h}");
        }
        for h in [
            "localhost.example.com",
            "mylocalhost",
            "127.0.0.1",
            "",
            "localhostx",
        ] {
            assert!(!is_localhost(h), "{h}");
        }
    }

    #[tokio::test]
    async fn an_ip_address_resolves_to_itself() {
        let found = resolve("127.0.0.1", 5432).await.expect("resolve");
        assert_eq!(
            found,
            vec![std::net::SocketAddr::from(([127, 0, 0, 1], 5432))]
        );
    }
}
