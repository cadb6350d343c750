//! Connection settings: libpq URLs and `key=value` strings, environment fallbacks, `.pgpass`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hs_base::code;

use crate::error::{Error, Result};

/// How hard to insist on TLS, with libpq's names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Plain first; TLS only if the server rejects the plain connection.
    Allow,
    /// TLS if the server supports it, plain otherwise (libpq's default).
    #[default]
    Prefer,
    /// TLS, no certificate verification (verify-ca if `sslrootcert` is given).
    Require,
    /// TLS, server certificate chain verified against `sslrootcert`; host name not checked.
    VerifyCa,
    /// TLS, chain verified and the host name must match the certificate.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling, e.g. `"verify-full"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(s: &str) -> Result<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(
                    invalid(format!("invalid sslmode {other:?}")).with_suggestion(
                        "use one of disable, allow, prefer, require, verify-ca, verify-full",
                    ),
                )
            }
        })
    }
}

/// Whether SCRAM channel binding (SCRAM-SHA-256-PLUS) is used, like libpq's `channel_binding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ChannelBindingMode {
    /// Never use channel binding.
    Disable,
    /// Use it when the connection is TLS and the server offers it.
    #[default]
    Prefer,
    /// Fail unless channel binding is used.
    Require,
}

/// Settings for one connection to PostgreSQL.
///
/// Build it with [`ConnConfig::parse`]; unset values fall back to the libpq environment
/// variables (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`,
/// `PGSSLROOTCERT`, `PGAPPNAME`, `PGCONNECT_TIMEOUT`, `PGPASSFILE`) and then to defaults.
/// `Debug` and [`ConnConfig::redacted`] never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnConfig {
    host: String,
    hostaddr: Option<String>,
    port: u16,
    user: String,
    password: Option<String>,
    dbname: Option<String>,
    sslmode: SslMode,
    sslrootcert: Option<PathBuf>,
    application_name: String,
    connect_timeout: Option<Duration>,
    channel_binding: ChannelBindingMode,
    passfile: Option<PathBuf>,
    /// The hosts after the first of a multi-host string (`host=a,b`): (host, hostaddr,
    /// port), tried in order after the first.
    more_hosts: Vec<(String, Option<String>, u16)>,
    target_session_attrs: TargetSessionAttrs,
}

/// libpq's `target_session_attrs`: which of the listed servers a connection accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetSessionAttrs {
    /// The first that answers.
    Any,
    /// Not a hot standby and not `default_transaction_read_only`.
    ReadWrite,
    /// Hot standby, or `default_transaction_read_only`.
    ReadOnly,
    /// Not a hot standby.
    Primary,
    /// A hot standby.
    Standby,
    /// A hot standby if one answers, else any.
    PreferStandby,
}

impl TargetSessionAttrs {
    fn parse(s: &str) -> Result<TargetSessionAttrs> {
        Ok(match s {
            "any" => TargetSessionAttrs::Any,
            "read-write" => TargetSessionAttrs::ReadWrite,
            "read-only" => TargetSessionAttrs::ReadOnly,
            "primary" => TargetSessionAttrs::Primary,
            "standby" => TargetSessionAttrs::Standby,
            "prefer-standby" => TargetSessionAttrs::PreferStandby,
            other => {
                return Err(invalid(format!("invalid target_session_attrs {other:?}"))
                    .with_suggestion(
                        "use one of any, read-write, read-only, primary, standby, prefer-standby",
                    ))
            }
        })
    }

    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::ReadOnly => "read-only",
            TargetSessionAttrs::Primary => "primary",
            TargetSessionAttrs::Standby => "standby",
            TargetSessionAttrs::PreferStandby => "prefer-standby",
        }
    }

    /// Whether a server that reported `in_hot_standby` and `default_transaction_read_only`
    /// (`None`: not reported) is acceptable; `strict` is the first pass of prefer-standby.
    pub fn accepts(self, hot_standby: Option<bool>, read_only: Option<bool>, strict: bool) -> bool {
        let standby = hot_standby.unwrap_or(false);
        let ro = standby || read_only.unwrap_or(false);
        match self {
            TargetSessionAttrs::Any => true,
            TargetSessionAttrs::ReadWrite => !ro,
            TargetSessionAttrs::ReadOnly => ro,
            TargetSessionAttrs::Primary => !standby,
            TargetSessionAttrs::Standby => standby,
            TargetSessionAttrs::PreferStandby => !strict || standby,
        }
    }
}

const EXAMPLE: &str = "use a URL like postgresql://user@host:5432/postgres?sslmode=require \
                       or key=value pairs like \"host=db1 port=5432 user=backup sslmode=require\"";

fn invalid(msg: impl Into<String>) -> Error {
    crate::error::usage(code::USAGE_CONNINFO_INVALID, msg).with_suggestion(EXAMPLE)
}

/// Keys libpq knows that we accept and ignore.
const IGNORED_KEYS: &[&str] = &[
    "options",
    "client_encoding",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "sslcompression",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "requirepeer",
    "krbsrvname",
    "gsslib",
    "load_balance_hosts",
];

const KNOWN_KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "dbname",
    "sslmode",
    "sslrootcert",
    "application_name",
    "connect_timeout",
    "channel_binding",
    "passfile",
    "target_session_attrs",
];

impl ConnConfig {
    /// Parses a libpq connection string: a `postgres://` / `postgresql://` URL or a
    /// `key=value` list. Missing values come from the environment, then defaults
    /// (host `localhost`, port 5432, user = `$PGUSER` or the OS user, sslmode `prefer`,
    /// application_name `pg_hardstorage`).
    ///
    /// Errors have code `usage.conninfo_invalid`.
    pub fn parse(s: &str) -> Result<ConnConfig> {
        ConnConfig::parse_with_env(s, &|k| std::env::var(k).ok())
    }

    /// Like [`ConnConfig::parse`] but reads "environment variables" through `env`
    /// (useful for tests and for callers that keep their own environment).
    pub fn parse_with_env(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ConnConfig> {
        let s = s.trim();
        let pairs = if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            parse_url(s)?
        } else if looks_like_url(s) {
            return Err(invalid("unsupported URL scheme in connection string"));
        } else {
            parse_kv(s)?
        };
        let mut map: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in pairs {
            if !KNOWN_KEYS.contains(&k.as_str()) && !IGNORED_KEYS.contains(&k.as_str()) {
                return Err(invalid(format!(
                    "invalid connection option {k:?} in connection string"
                )));
            }
            if IGNORED_KEYS.contains(&k.as_str()) {
                tracing::debug!(key = %k, "ignoring libpq connection option");
                continue;
            }
            map.insert(k, v);
        }
        let get = |key: &str, var: &str| -> Option<String> {
            map.get(key)
                .cloned()
                .or_else(|| env(var))
                .filter(|v| !v.is_empty())
        };
        let hostaddr = get("hostaddr", "PGHOSTADDR");
        let hosts = host_list(get("host", "PGHOST"), hostaddr, get("port", "PGPORT"))?;
        let (host, hostaddr, port) = hosts[0].clone();
        let more_hosts = hosts[1..].to_vec();
        let target_session_attrs = match get("target_session_attrs", "PGTARGETSESSIONATTRS") {
            None => TargetSessionAttrs::Any,
            Some(a) => TargetSessionAttrs::parse(&a)?,
        };
        let user = get("user", "PGUSER")
            .or_else(|| env("USER"))
            .or_else(|| env("LOGNAME"))
            .unwrap_or_else(|| "postgres".to_string());
        let password = map
            .get("password")
            .cloned()
            .or_else(|| env("PGPASSWORD"))
            .filter(|p| !p.is_empty());
        let dbname = get("dbname", "PGDATABASE");
        let sslmode = match get("sslmode", "PGSSLMODE") {
            None => SslMode::Prefer,
            Some(m) => SslMode::parse(&m)?,
        };
        let sslrootcert = get("sslrootcert", "PGSSLROOTCERT").map(PathBuf::from);
        let application_name =
            get("application_name", "PGAPPNAME").unwrap_or_else(|| "pg_hardstorage".to_string());
        let connect_timeout = match get("connect_timeout", "PGCONNECT_TIMEOUT") {
            None => None,
            Some(t) => match t.trim().parse::<i64>() {
                // libpq: zero, negative or unset means wait indefinitely; minimum is 2 seconds.
                Ok(n) if n <= 0 => None,
                Ok(n) => Some(Duration::from_secs(n.max(2) as u64)),
                Err(_) => return Err(invalid(format!("invalid connect_timeout {t:?}"))),
            },
        };
        let channel_binding = match get("channel_binding", "PGCHANNELBINDING").as_deref() {
            None | Some("prefer") => ChannelBindingMode::Prefer,
            Some("disable") => ChannelBindingMode::Disable,
            Some("require") => ChannelBindingMode::Require,
            Some(other) => {
                return Err(invalid(format!("invalid channel_binding {other:?}"))
                    .with_suggestion("use one of disable, prefer, require"))
            }
        };
        let passfile = get("passfile", "PGPASSFILE")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")));
        Ok(ConnConfig {
            host,
            hostaddr,
            port,
            user,
            password,
            dbname,
            sslmode,
            sslrootcert,
            application_name,
            connect_timeout,
            channel_binding,
            passfile,
            more_hosts,
            target_session_attrs,
        })
    }

    /// One single-host configuration per listed host, in order (libpq's multi-host
    /// `host=a,b port=1,2`); just this one when a single host was given.
    pub fn candidates(&self) -> Vec<ConnConfig> {
        let first = ConnConfig {
            more_hosts: Vec::new(),
            ..self.clone()
        };
        let mut out = vec![first.clone()];
        for (host, hostaddr, port) in &self.more_hosts {
            out.push(ConnConfig {
                host: host.clone(),
                hostaddr: hostaddr.clone(),
                port: *port,
                ..first.clone()
            });
        }
        out
    }

    /// `target_session_attrs` (default `any`).
    pub fn target_session_attrs(&self) -> TargetSessionAttrs {
        self.target_session_attrs
    }

    /// Whether connecting may try several servers or must check the server's role.
    pub fn is_multi(&self) -> bool {
        !self.more_hosts.is_empty() || self.target_session_attrs != TargetSessionAttrs::Any
    }

    /// Host name, IP address, or (starting with `/`) a Unix socket directory.
    pub fn host(&self) -> &str {
        &self.host
    }
    /// Numeric address to connect to instead of resolving `host` (`host` is still used
    /// for TLS verification and `.pgpass`), like libpq's `hostaddr`.
    pub fn hostaddr(&self) -> Option<&str> {
        self.hostaddr.as_deref()
    }
    /// TCP port (or socket file suffix), default 5432.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Role name to log in as.
    pub fn user(&self) -> &str {
        &self.user
    }
    /// The password given in the string or `PGPASSWORD` (not the `.pgpass` one).
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
    /// Database name, if given.
    pub fn dbname(&self) -> Option<&str> {
        self.dbname.as_deref()
    }
    /// TLS policy.
    pub fn sslmode(&self) -> SslMode {
        self.sslmode
    }
    /// CA certificate file (PEM) used to verify the server.
    pub fn sslrootcert(&self) -> Option<&Path> {
        self.sslrootcert.as_deref()
    }
    /// `application_name` sent at startup.
    pub fn application_name(&self) -> &str {
        &self.application_name
    }
    /// Limit for establishing the connection (TCP, TLS and authentication).
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }
    /// SCRAM channel binding policy.
    pub fn channel_binding(&self) -> ChannelBindingMode {
        self.channel_binding
    }
    /// Password file consulted when no password is given.
    pub fn passfile(&self) -> Option<&Path> {
        self.passfile.as_deref()
    }

    /// Replaces the password.
    pub fn set_password(&mut self, password: Option<String>) {
        self.password = password;
    }
    /// Replaces the application name.
    pub fn set_application_name(&mut self, name: impl Into<String>) {
        self.application_name = name.into();
    }

    /// A `key=value` rendering safe to log: everything but the password.
    pub fn redacted(&self) -> String {
        let hosts: Vec<&str> = std::iter::once(self.host.as_str())
            .chain(self.more_hosts.iter().map(|h| h.0.as_str()))
            .collect();
        let ports: Vec<String> = std::iter::once(self.port)
            .chain(self.more_hosts.iter().map(|h| h.2))
            .map(|p| p.to_string())
            .collect();
        let mut s = format!(
            "host={} port={} user={}",
            quote(&hosts.join(",")),
            ports.join(","),
            quote(&self.user)
        );
        if let Some(a) = &self.hostaddr {
            s.push_str(&format!(" hostaddr={}", quote(a)));
        }
        if self.target_session_attrs != TargetSessionAttrs::Any {
            s.push_str(&format!(
                " target_session_attrs={}",
                self.target_session_attrs.as_str()
            ));
        }
        if let Some(db) = &self.dbname {
            s.push_str(&format!(" dbname={}", quote(db)));
        }
        s.push_str(&format!(" sslmode={}", self.sslmode.as_str()));
        if let Some(c) = &self.sslrootcert {
            s.push_str(&format!(" sslrootcert={}", quote(&c.display().to_string())));
        }
        s.push_str(&format!(
            " application_name={}",
            quote(&self.application_name)
        ));
        if let Some(t) = self.connect_timeout {
            s.push_str(&format!(" connect_timeout={}", t.as_secs()));
        }
        s
    }

    /// The password to use for a replication connection: the explicit one, else the
    /// first matching line of the password file (matched with dbname `replication`).
    pub(crate) fn resolve_password(&self) -> Option<String> {
        self.resolve_password_for("replication")
    }

    /// The password for a connection to database `db`: the explicit one, else the first
    /// matching line of the password file (matched with `db`).
    pub(crate) fn resolve_password_for(&self, db: &str) -> Option<String> {
        if let Some(p) = &self.password {
            return Some(p.clone());
        }
        let path = self.passfile.as_ref()?;
        let contents = read_passfile(path)?;
        let host = if self.host.starts_with('/') {
            "localhost"
        } else {
            &self.host
        };
        pgpass_lookup(&contents, host, &self.port.to_string(), db, &self.user)
    }
}

impl fmt::Debug for ConnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnConfig")
            .field("host", &self.host)
            .field("hostaddr", &self.hostaddr)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("channel_binding", &self.channel_binding)
            .finish()
    }
}

fn quote(v: &str) -> String {
    if !v.is_empty()
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\')
    {
        return v.to_string();
    }
    let mut s = String::from("'");
    for c in v.chars() {
        if c == '\'' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('\'');
    s
}

fn read_passfile(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "password file has group or world access; permissions should be u=rw (0600) or less; ignoring it"
            );
            return None;
        }
    }
    std::fs::read_to_string(path).ok()
}

/// Finds the password for (host, port, db, user) in `.pgpass` contents: lines of
/// `host:port:db:user:password`, `*` matches anything, `\:` and `\\` are escapes,
/// `#` starts a comment line. First match wins.
pub(crate) fn pgpass_lookup(
    contents: &str,
    host: &str,
    port: &str,
    db: &str,
    user: &str,
) -> Option<String> {
    for line in contents.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields: Vec<String> = Vec::with_capacity(5);
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            continue;
        }
        let m = |pat: &str, val: &str| pat == "*" || pat == val;
        if m(&fields[0], host) && m(&fields[1], port) && m(&fields[2], db) && m(&fields[3], user) {
            return Some(fields.swap_remove(4));
        }
    }
    None
}

/// `scheme://...` with an RFC 3986 scheme at the very start (a `key=value` string never
/// matches, because its first token contains `=`).
fn looks_like_url(s: &str) -> bool {
    match s.find("://") {
        Some(i) if i > 0 => {
            let scheme = &s[..i];
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        _ => false,
    }
}

fn hexval(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn percent_decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = b.get(i + 1).copied().and_then(hexval);
            let lo = b.get(i + 2).copied().and_then(hexval);
            match (hi, lo) {
                (Some(h), Some(l)) => out.push(h * 16 + l),
                // Not the token: it may be (part of) the password.
                _ => return Err(invalid("invalid percent-escape in the connection URL")),
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid("percent-decoded value is not valid UTF-8"))
}

/// The (host, hostaddr, port) list of `host`, `hostaddr` and `port` values, each
/// comma-separated as libpq has them: one port applies to every host, otherwise there
/// is one per host (an empty one is 5432); `hostaddr` is absent or one per host.
fn host_list(
    host: Option<String>,
    hostaddr: Option<String>,
    port: Option<String>,
) -> Result<Vec<(String, Option<String>, u16)>> {
    let addrs: Vec<Option<String>> = match &hostaddr {
        None => Vec::new(),
        Some(a) => a
            .split(',')
            .map(|x| Some(x.trim().to_owned()).filter(|x| !x.is_empty()))
            .collect(),
    };
    let hosts: Vec<String> = match host {
        Some(h) => h.split(',').map(|x| x.trim().to_owned()).collect(),
        None => addrs
            .iter()
            .map(|a| a.clone().unwrap_or_else(|| "localhost".to_owned()))
            .collect(),
    };
    let hosts: Vec<String> = if hosts.is_empty() {
        vec!["localhost".to_owned()]
    } else {
        hosts
            .into_iter()
            .map(|h| {
                if h.is_empty() {
                    "localhost".to_owned()
                } else {
                    h
                }
            })
            .collect()
    };
    let parse_port = |p: &str| -> Result<u16> {
        if p.trim().is_empty() {
            return Ok(5432);
        }
        match p.trim().parse::<u16>() {
            Ok(p) if p != 0 => Ok(p),
            _ => Err(invalid(format!("invalid port {p:?}"))),
        }
    };
    let ports: Vec<u16> = match &port {
        None => vec![5432; hosts.len()],
        Some(p) => {
            let list = p.split(',').map(parse_port).collect::<Result<Vec<u16>>>()?;
            match list.len() {
                1 => vec![list[0]; hosts.len()],
                n if n == hosts.len() => list,
                n => {
                    return Err(invalid(format!(
                        "{n} ports for {} hosts in the connection string",
                        hosts.len()
                    ))
                    .with_suggestion("give one port for all hosts, or one per host"))
                }
            }
        }
    };
    if !addrs.is_empty() && addrs.len() != hosts.len() {
        return Err(invalid(format!(
            "{} hostaddr values for {} hosts in the connection string",
            addrs.len(),
            hosts.len()
        )));
    }
    Ok(hosts
        .into_iter()
        .zip(ports)
        .enumerate()
        .map(|(i, (h, p))| (h, addrs.get(i).cloned().flatten(), p))
        .collect())
}

fn parse_url(s: &str) -> Result<Vec<(String, String)>> {
    let rest = s
        .strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
        .ok_or_else(|| invalid("not a postgres:// URL"))?;
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match main.find('/') {
        Some(i) => (&main[..i], Some(&main[i + 1..])),
        None => (main, None),
    };
    let mut out = Vec::new();
    let hostport = match authority.rfind('@') {
        Some(i) => {
            let userinfo = &authority[..i];
            match userinfo.split_once(':') {
                Some((u, p)) => {
                    if !u.is_empty() {
                        out.push(("user".to_string(), percent_decode(u)?));
                    }
                    out.push(("password".to_string(), percent_decode(p)?));
                }
                None => {
                    if !userinfo.is_empty() {
                        out.push(("user".to_string(), percent_decode(userinfo)?));
                    }
                }
            }
            &authority[i + 1..]
        }
        None => authority,
    };
    // libpq's multi-host URLs: `host1:5432,host2:5433`; joined as `host=h1,h2 port=p1,p2`.
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for one in hostport.split(',') {
        let (h, p) = url_host_port(one)?;
        hosts.push(percent_decode(h)?);
        ports.push(p.map(percent_decode).transpose()?.unwrap_or_default());
    }
    if hosts.iter().any(|h| !h.is_empty()) {
        out.push(("host".to_string(), hosts.join(",")));
    }
    if ports.iter().any(|p| !p.is_empty()) {
        out.push(("port".to_string(), ports.join(",")));
    }
    if let Some(db) = path {
        if !db.is_empty() {
            out.push(("dbname".to_string(), percent_decode(db)?));
        }
    }
    parse_url_query(query, &mut out)?;
    Ok(out)
}

/// One `host[:port]` or `[v6][:port]` of a URL's authority.
fn url_host_port(hostport: &str) -> Result<(&str, Option<&str>)> {
    Ok(if let Some(r) = hostport.strip_prefix('[') {
        let end = r
            .find(']')
            .ok_or_else(|| invalid("missing ']' after IPv6 host address in URL"))?;
        let after = &r[end + 1..];
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| invalid("unexpected text after IPv6 host address in URL"))?,
            ),
        };
        (&r[..end], port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    })
}

fn parse_url_query(query: Option<&str>, out: &mut Vec<(String, String)>) -> Result<()> {
    if let Some(q) = query {
        for kv in q.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| invalid(format!("missing '=' after {kv:?} in URL query")))?;
            let k = percent_decode(k)?;
            // libpq accepts ssl=true as an alias for sslmode=require.
            if k == "ssl" && v == "true" {
                out.push(("sslmode".to_string(), "require".to_string()));
                continue;
            }
            out.push((k, percent_decode(v)?));
        }
    }
    Ok(())
}

fn parse_kv(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = it.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            it.next();
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.next() != Some('=') {
            return Err(invalid(format!(
                "missing \"=\" after {key:?} in connection info string"
            )));
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        let mut val = String::new();
        if it.peek() == Some(&'\'') {
            it.next();
            let mut closed = false;
            while let Some(c) = it.next() {
                match c {
                    '\\' => match it.next() {
                        Some(n) => val.push(n),
                        None => break,
                    },
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => val.push(c),
                }
            }
            if !closed {
                return Err(invalid(
                    "unterminated quoted string in connection info string",
                ));
            }
        } else {
            while let Some(&c) = it.peek() {
                if c.is_whitespace() {
                    break;
                }
                it.next();
                if c == '\\' {
                    if let Some(n) = it.next() {
                        val.push(n);
                    }
                } else {
                    val.push(c);
                }
            }
        }
        if key.is_empty() {
            return Err(invalid("empty key in connection info string"));
        }
        out.push((key, val));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn hosts(c: &ConnConfig) -> Vec<(String, u16)> {
        c.candidates()
            .iter()
            .map(|x| (x.host().to_owned(), x.port()))
            .collect()
    }

    #[test]
    fn multi_host_strings_list_their_servers_in_order() {
        let kv = ConnConfig::parse_with_env(
            "host=db1,db2 port=5433,5434 target_session_attrs=read-write user=u",
            &no_env,
        )
        .unwrap();
        assert_eq!(hosts(&kv), [("db1".into(), 5433), ("db2".into(), 5434)]);
        assert_eq!(kv.target_session_attrs(), TargetSessionAttrs::ReadWrite);
        assert!(kv.is_multi());
        assert!(kv
            .candidates()
            .iter()
            .all(|c| !c.is_multi() || c.target_session_attrs() != TargetSessionAttrs::Any));
        assert!(
            kv.redacted().contains("host=db1,db2 port=5433,5434"),
            "{}",
            kv.redacted()
        );
        let url = ConnConfig::parse_with_env(
            "postgresql://u:pw@db1:5433,db2,[::1]:7/x?target_session_attrs=prefer-standby",
            &no_env,
        )
        .unwrap();
        assert_eq!(
            hosts(&url),
            [
                ("db1".into(), 5433),
                ("db2".into(), 5432),
                ("::1".into(), 7)
            ]
        );
        assert_eq!(
            url.target_session_attrs(),
            TargetSessionAttrs::PreferStandby
        );
        // One port for every host; a single host is not multi.
        let one = ConnConfig::parse_with_env("host=a,b port=6000", &no_env).unwrap();
        assert_eq!(hosts(&one), [("a".into(), 6000), ("b".into(), 6000)]);
        assert!(!ConnConfig::parse_with_env("host=a", &no_env)
            .unwrap()
            .is_multi());
        for bad in [
            "host=a,b port=1,2,3",
            "host=a,b hostaddr=127.0.0.1",
            "host=a target_session_attrs=leader",
        ] {
            let e = ConnConfig::parse_with_env(bad, &no_env).unwrap_err();
            assert_eq!(e.code(), "usage.conninfo_invalid", "{bad}");
        }
    }

    #[test]
    fn session_attrs_accept_what_libpq_does() {
        use TargetSessionAttrs as T;
        let (primary, standby, ro_primary) = (
            (Some(false), Some(false)),
            (Some(true), Some(true)),
            (Some(false), Some(true)),
        );
        let ok = |t: T, (h, r): (Option<bool>, Option<bool>)| t.accepts(h, r, true);
        assert!(
            ok(T::ReadWrite, primary)
                && !ok(T::ReadWrite, standby)
                && !ok(T::ReadWrite, ro_primary)
        );
        assert!(ok(T::Primary, ro_primary) && !ok(T::Primary, standby));
        assert!(ok(T::Standby, standby) && !ok(T::Standby, primary));
        assert!(
            ok(T::ReadOnly, ro_primary) && ok(T::ReadOnly, standby) && !ok(T::ReadOnly, primary)
        );
        assert!(
            !ok(T::PreferStandby, primary) && T::PreferStandby.accepts(Some(false), None, false)
        );
        assert!(ok(T::Any, primary) && ok(T::Any, standby));
    }

    #[test]
    fn url_full() {
        let c = ConnConfig::parse_with_env(
            "postgresql://hs%20repl:p%40ss%3Aw@db.example.com:6543/my%2Fdb?sslmode=verify-full&application_name=x%20y&connect_timeout=10",
            &no_env,
        )
        .unwrap();
        assert_eq!(c.user(), "hs repl");
        assert_eq!(c.password(), Some("p@ss:w"));
        assert_eq!(c.host(), "db.example.com");
        assert_eq!(c.port(), 6543);
        assert_eq!(c.dbname(), Some("my/db"));
        assert_eq!(c.sslmode(), SslMode::VerifyFull);
        assert_eq!(c.application_name(), "x y");
        assert_eq!(c.connect_timeout(), Some(Duration::from_secs(10)));
        assert!(!c.redacted().contains("p@ss"));
        assert!(!format!("{c:?}").contains("p@ss"));
    }

    #[test]
    fn url_minimal_and_ipv6_and_socket() {
        let c = ConnConfig::parse_with_env("postgres://", &no_env).unwrap();
        assert_eq!(c.host(), "localhost");
        assert_eq!(c.port(), 5432);
        assert_eq!(c.sslmode(), SslMode::Prefer);
        assert_eq!(c.application_name(), "pg_hardstorage");
        let c = ConnConfig::parse_with_env("postgres://u@[::1]:5433/d", &no_env).unwrap();
        assert_eq!(c.host(), "::1");
        assert_eq!(c.port(), 5433);
        let c = ConnConfig::parse_with_env("postgresql://%2Fvar%2Frun%2Fpostgresql/db", &no_env)
            .unwrap();
        assert_eq!(c.host(), "/var/run/postgresql");
    }

    #[test]
    fn kv_with_quotes() {
        let c = ConnConfig::parse_with_env(
            r"host=h1 port = 5999 user='bob smith' password='it\'s \\ ok' dbname=x application_name=a\ b",
            &no_env,
        )
        .unwrap();
        assert_eq!(c.host(), "h1");
        assert_eq!(c.port(), 5999);
        assert_eq!(c.user(), "bob smith");
        assert_eq!(c.password(), Some(r"it's \ ok"));
        assert_eq!(c.application_name(), "a b");
        assert!(!c.redacted().contains("it's"));
    }

    #[test]
    fn env_fallbacks() {
        let env = |k: &str| -> Option<String> {
            match k {
                "PGHOST" => Some("envhost".into()),
                "PGPORT" => Some("7000".into()),
                "PGUSER" => Some("envuser".into()),
                "PGPASSWORD" => Some("envpw".into()),
                "PGDATABASE" => Some("envdb".into()),
                "PGSSLMODE" => Some("require".into()),
                "PGSSLROOTCERT" => Some("/ca.pem".into()),
                "PGAPPNAME" => Some("envapp".into()),
                "PGCONNECT_TIMEOUT" => Some("1".into()),
                _ => None,
            }
        };
        let c = ConnConfig::parse_with_env("", &env).unwrap();
        assert_eq!(c.host(), "envhost");
        assert_eq!(c.port(), 7000);
        assert_eq!(c.user(), "envuser");
        assert_eq!(c.password(), Some("envpw"));
        assert_eq!(c.dbname(), Some("envdb"));
        assert_eq!(c.sslmode(), SslMode::Require);
        assert_eq!(c.sslrootcert(), Some(Path::new("/ca.pem")));
        assert_eq!(c.application_name(), "envapp");
        assert_eq!(c.connect_timeout(), Some(Duration::from_secs(2)));
        let c = ConnConfig::parse_with_env("host=x user=y sslmode=disable", &env).unwrap();
        assert_eq!(c.host(), "x");
        assert_eq!(c.user(), "y");
        assert_eq!(c.sslmode(), SslMode::Disable);
    }

    #[test]
    fn hostaddr_is_separate_from_host() {
        let c = ConnConfig::parse_with_env("host=db.example hostaddr=10.0.0.5", &no_env).unwrap();
        assert_eq!(c.host(), "db.example");
        assert_eq!(c.hostaddr(), Some("10.0.0.5"));
        let c = ConnConfig::parse_with_env("hostaddr=10.0.0.5", &no_env).unwrap();
        assert_eq!(c.host(), "10.0.0.5");
    }

    #[test]
    fn kv_value_may_contain_scheme_separator() {
        let c = ConnConfig::parse_with_env("user=a://b host=h", &no_env).unwrap();
        assert_eq!(c.user(), "a://b");
    }

    #[test]
    fn errors_are_usage() {
        for s in [
            "host",
            "host=x port=abc",
            "port=0",
            "sslmode=sometimes",
            "bogus=1",
            "host='unterminated",
            "mysql://x",
            "postgres://h:99999/",
            "postgres://h/?sslmode",
            "postgres://%zz@h/",
        ] {
            let e = ConnConfig::parse_with_env(s, &no_env).unwrap_err();
            assert_eq!(e.code(), "usage.conninfo_invalid", "{s}");
            assert!(e.suggestion().is_some());
        }
    }

    #[test]
    fn pgpass_matching() {
        let f = "# comment\n\
                 other:5432:*:bob:wrong\n\
                 db\\:1:5432:replication:bob:p\\:w\\\\x\n\
                 *:*:*:alice:alicepw\n";
        assert_eq!(
            pgpass_lookup(f, "db:1", "5432", "replication", "bob").as_deref(),
            Some(r"p:w\x")
        );
        assert_eq!(pgpass_lookup(f, "db:1", "5433", "replication", "bob"), None);
        assert_eq!(
            pgpass_lookup(f, "x", "1", "y", "alice").as_deref(),
            Some("alicepw")
        );
    }

    #[test]
    fn pgpass_file_permissions_and_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pgpass");
        std::fs::write(&p, "h:5432:replication:u:secret\n").unwrap();
        let env =
            |k: &str| -> Option<String> { (k == "PGPASSFILE").then(|| p.display().to_string()) };
        let c = ConnConfig::parse_with_env("host=h user=u dbname=postgres", &env).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert_eq!(c.resolve_password(), None);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert_eq!(c.resolve_password().as_deref(), Some("secret"));
    }

    fn enc(v: &str) -> String {
        let mut s = String::new();
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.' {
                s.push(b as char);
            } else {
                s.push_str(&format!("%{b:02X}"));
            }
        }
        s
    }

    proptest! {
        #[test]
        fn generated_conninfo_roundtrips(
            host in "[a-z][a-z0-9.-]{0,20}",
            port in 1u16..,
            user in "[ -~]{1,12}",
            pw in proptest::option::of("[ -~]{1,16}"),
            db in "[ -~]{1,12}",
            app in "[ -~]{1,12}",
            mode in prop::sample::select(vec!["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]),
            as_url in any::<bool>(),
        ) {
            let s = if as_url {
                let auth = match &pw {
                    Some(p) => format!("{}:{}@", enc(&user), enc(p)),
                    None => format!("{}@", enc(&user)),
                };
                format!("postgresql://{auth}{host}:{port}/{}?sslmode={mode}&application_name={}", enc(&db), enc(&app))
            } else {
                let mut s = format!("host={host} port={port} user={} dbname={} sslmode={mode} application_name={}", quote(&user), quote(&db), quote(&app));
                if let Some(p) = &pw {
                    s.push_str(&format!(" password={}", quote(p)));
                }
                s
            };
            let c = ConnConfig::parse_with_env(&s, &no_env).unwrap();
            prop_assert_eq!(c.host(), host.as_str());
            prop_assert_eq!(c.port(), port);
            prop_assert_eq!(c.user(), user.as_str());
            prop_assert_eq!(c.password(), pw.as_deref());
            prop_assert_eq!(c.dbname(), Some(db.as_str()));
            prop_assert_eq!(c.sslmode().as_str(), mode);
            prop_assert_eq!(c.application_name(), app.as_str());
            // redacted() itself parses back to the same config minus the password.
            let mut back = ConnConfig::parse_with_env(&c.redacted(), &no_env).unwrap();
            back.passfile = c.passfile.clone();
            back.set_password(c.password().map(str::to_string));
            prop_assert_eq!(back, c);
        }
    }
}
