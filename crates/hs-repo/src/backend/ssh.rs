//! `sftp://` and `scp://` backends over the system OpenSSH client (the `openssh` crate).
//!
//! Both schemes share URL parsing, one lazily opened control-master connection per
//! backend (reopened after the connection is lost), and the mapping of ssh failures to
//! error codes. `sftp.rs` (next to this file) speaks SFTP over that connection; `scp.rs`
//! runs POSIX shell commands for hosts whose sshd has no SFTP subsystem.
//!
//! URL: `sftp://[user@]host[:port]/absolute/path[?key=FILE&known_hosts=FILE&connect_timeout=SECS]`
//! (the same for `scp://`). Without `key`/`known_hosts`, ssh's own configuration applies
//! (`~/.ssh/config`, `~/.ssh/known_hosts`, the agent). Host keys are always checked
//! (`StrictHostKeyChecking=yes`, never accept-new) and ssh runs with `BatchMode=yes`, so it
//! never prompts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hs_base::code;
use tokio::sync::Mutex;

use crate::backend::Backend;
use crate::error::{Error, Result};

/// Default `ConnectTimeout` for ssh, in seconds.
const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 15;
/// `ControlPersist` idle time of the master connection, in seconds: an abandoned master
/// (process killed before it could close it) goes away by itself after this long.
const CONTROL_PERSIST_SECS: usize = 600;
/// scp:// reconnects before using a master that has been idle for this long, so it never
/// talks to a master that is about to exit on its own.
pub(super) const IDLE_RECONNECT: Duration = Duration::from_secs(CONTROL_PERSIST_SECS as u64 - 60);

/// Opens an `sftp://` or `scp://` repository URL. No connection is made until the first
/// operation; connection errors are reported by that operation.
pub(crate) fn open(url: &str) -> Result<Arc<dyn Backend>> {
    let target = Target::parse(url)?;
    Ok(match target.scheme {
        Scheme::Sftp => Arc::new(super::sftp::SftpBackend::new(target)),
        Scheme::Scp => Arc::new(super::scp::ScpBackend::new(target)),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Sftp,
    Scp,
}

/// A parsed `sftp://` / `scp://` URL.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) scheme: Scheme,
    user: Option<String>,
    host: String,
    port: Option<u16>,
    /// Absolute remote path of the repository root, without a trailing `/`.
    pub(crate) root: String,
    key: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    connect_timeout: Duration,
    /// The URL without its query, for messages.
    pub(crate) location: String,
}

fn bad_url(url: &str, why: &str) -> Error {
    Error::new(
        code::USAGE_INVALID_URL,
        format!(
            "repository URL {:?} is not valid: {why}",
            crate::redact_url(url)
        ),
    )
    .with_suggestion(
        "write it as sftp://user@host[:port]/absolute/path?key=/path/to/id&known_hosts=/path/to/file \
         (or scp://...)",
    )
}

fn valid_user(u: &str) -> bool {
    !u.is_empty()
        && !u.starts_with('-')
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn valid_host(h: &str) -> bool {
    if let Some(inner) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
    }
    !h.is_empty()
        && !h.starts_with('-')
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad_url(url, "no scheme"))?;
        let scheme = match scheme {
            "sftp" => Scheme::Sftp,
            "scp" => Scheme::Scp,
            _ => return Err(bad_url(url, "the scheme must be sftp or scp")),
        };
        if rest.contains(['#', '%']) {
            return Err(bad_url(
                url,
                "fragments and percent-escapes are not supported",
            ));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let slash = rest
            .find('/')
            .ok_or_else(|| bad_url(url, "it has no path"))?;
        let (authority, path) = rest.split_at(slash);
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if let Some(u) = user {
            if !valid_user(u) {
                return Err(bad_url(
                    url,
                    "the user name may hold only letters, digits, '.', '_' and '-' (no password)",
                ));
            }
        }
        let (host, port) = if hostport.starts_with('[') {
            match hostport.find(']') {
                Some(i) => {
                    let (h, p) = hostport.split_at(i + 1);
                    (h, p.strip_prefix(':'))
                }
                None => return Err(bad_url(url, "unclosed '[' in the host")),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if !valid_host(host) {
            return Err(bad_url(url, "the host name is missing or not valid"));
        }
        let port = match port {
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad_url(url, "the port is not a number from 1 to 65535"))?,
            ),
            None => None,
        };
        let root = path.trim_end_matches('/');
        let root = if root.is_empty() { "/" } else { root };
        if root.bytes().any(|b| b.is_ascii_control()) || root.split('/').any(|seg| seg == "..") {
            return Err(bad_url(url, "the path has control characters or '..'"));
        }
        let mut key = None;
        let mut known_hosts = None;
        let mut connect_timeout = Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS);
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "key" if !v.is_empty() => key = Some(PathBuf::from(v)),
                "known_hosts" if !v.is_empty() => known_hosts = Some(PathBuf::from(v)),
                "connect_timeout" => {
                    connect_timeout = Duration::from_secs(
                        v.parse::<u64>()
                            .ok()
                            .filter(|s| (1..=3600).contains(s))
                            .ok_or_else(|| {
                                bad_url(url, "connect_timeout must be 1 to 3600 seconds")
                            })?,
                    )
                }
                _ => {
                    return Err(bad_url(
                        url,
                        &format!(
                            "unknown or empty query parameter {k:?} (known: key, known_hosts, \
                             connect_timeout)"
                        ),
                    ))
                }
            }
        }
        let scheme_name = match scheme {
            Scheme::Sftp => "sftp",
            Scheme::Scp => "scp",
        };
        let location = format!(
            "{scheme_name}://{}{hostport}{root}",
            user.map(|u| format!("{u}@")).unwrap_or_default(),
        );
        Ok(Target {
            scheme,
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
            root: root.to_string(),
            key,
            known_hosts,
            connect_timeout,
            location,
        })
    }

    /// Absolute remote path of an object (the name is already checked by `check_name`).
    pub(crate) fn path_of(&self, name: &str) -> String {
        if self.root == "/" {
            format!("/{name}")
        } else {
            format!("{}/{name}", self.root)
        }
    }

    /// Opens the ssh control master.
    pub(crate) async fn connect(&self) -> Result<openssh::Session> {
        if let Some(k) = &self.key {
            if let Err(e) = std::fs::File::open(k) {
                return Err(Error::new(
                    code::AUTH_SSH_KEY_MISSING,
                    // As in redact_url: only an absolute path is surely a file name.
                    format!(
                        "the ssh key {} cannot be read: {e}",
                        if k.is_absolute() {
                            k.display().to_string()
                        } else {
                            crate::REDACTED.to_owned()
                        }
                    ),
                )
                .with_suggestion("check the key= path in the repository URL and its permissions"));
            }
        }
        if let Some(kh) = &self.known_hosts {
            if !kh.is_file() {
                return Err(Error::new(
                    code::AUTH_SSH_HOST_KEY,
                    format!("the known_hosts file {} does not exist", kh.display()),
                )
                .with_suggestion(
                    "create it with the server's host key (ssh-keyscan, checked out of band)",
                ));
            }
        }
        let mut b = openssh::SessionBuilder::default();
        b.known_hosts_check(openssh::KnownHosts::Strict)
            .connect_timeout(self.connect_timeout)
            .server_alive_interval(Duration::from_secs(15))
            .control_directory(std::env::temp_dir())
            .control_persist(openssh::ControlPersist::IdleFor(
                std::num::NonZeroUsize::new(CONTROL_PERSIST_SECS)
                    .unwrap_or(std::num::NonZeroUsize::MIN),
            ));
        if let Some(u) = &self.user {
            b.user(u.clone());
        }
        if let Some(p) = self.port {
            b.port(p);
        }
        if let Some(k) = &self.key {
            b.keyfile(k);
        }
        if let Some(kh) = &self.known_hosts {
            b.user_known_hosts_file(kh);
        }
        let host = self
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        // ConnectTimeout covers the TCP connect; this bounds the whole handshake.
        let limit = self.connect_timeout * 2 + Duration::from_secs(5);
        match tokio::time::timeout(limit, b.connect(&host)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(connect_error(&self.location, e)),
            Err(_) => Err(Error::new(
                code::UNREACHABLE_SSH,
                format!("connecting to {} timed out after {limit:?}", self.location),
            )
            .temporary(true)
            .with_suggestion("check that the host is up and sshd answers on that port")),
        }
    }
}

/// Maps a failure to open the ssh master connection to an error code.
pub(crate) fn connect_error(location: &str, e: openssh::Error) -> Error {
    let text = match &e {
        openssh::Error::Connect(io) | openssh::Error::Master(io) => {
            if io.kind() == std::io::ErrorKind::NotFound && !io.to_string().contains(':') {
                return Error::new(
                    code::PREFLIGHT_SSH_MISSING,
                    format!("the OpenSSH client program `ssh` could not be run: {io}"),
                )
                .with_suggestion("install the OpenSSH client (apt-get install openssh-client)");
            }
            io.to_string()
        }
        other => other.to_string(),
    };
    classify_ssh_text(location, &text)
}

/// Classifies ssh's own diagnostics (the master's log) into an error.
pub(crate) fn classify_ssh_text(location: &str, text: &str) -> Error {
    let line = last_meaningful_line(text);
    let has = |s: &str| text.contains(s);
    if has("Host key verification failed")
        || has("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || has("host key is known")
        || has("Host key for")
    {
        Error::new(
            code::AUTH_SSH_HOST_KEY,
            format!("the host key of {location} is not the one in known_hosts: {line}"),
        )
        .with_suggestion(
            "add the server's real host key to the known_hosts file given by known_hosts= \
             (verify its fingerprint out of band); the key is never accepted automatically",
        )
    } else if has("Permission denied") || has("Too many authentication failures") {
        Error::new(
            code::AUTH_SSH_DENIED,
            format!("the ssh server at {location} refused our key: {line}"),
        )
        .with_suggestion("check key= in the URL and the user's authorized_keys on the server")
    } else {
        Error::new(
            code::UNREACHABLE_SSH,
            format!("cannot reach the ssh server for {location}: {line}"),
        )
        .temporary(true)
        .with_suggestion("check host, port and network; sshd must be running")
    }
}

fn last_meaningful_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("@@@") && !l.starts_with("Warning: Permanently")
        })
        .collect();
    // Prefer the line that names the failure, else the last one.
    let pick = lines
        .iter()
        .rev()
        .find(|l| {
            l.contains("failed")
                || l.contains("denied")
                || l.contains("refused")
                || l.contains("timed out")
                || l.contains("No ")
        })
        .or(lines.last())
        .copied()
        .unwrap_or("ssh failed without a message");
    let mut s = pick.trim_start_matches("ssh: ").to_string();
    s.truncate(400);
    s
}

/// The error for a lost connection during an operation.
pub(crate) fn disconnected(location: &str, what: &str, detail: impl std::fmt::Display) -> Error {
    Error::new(
        code::UNREACHABLE_SSH,
        format!("the ssh connection to {location} failed during {what}: {detail}"),
    )
    .temporary(true)
    .with_suggestion("check the network and the server; the operation can be retried")
}

/// The error for an operation that did not finish in time.
pub(crate) fn timed_out(location: &str, what: &str, limit: Duration) -> Error {
    Error::new(
        code::UNREACHABLE_SSH,
        format!("{what} on {location} did not finish within {limit:?}"),
    )
    .temporary(true)
    .with_suggestion("check the network and the server's load; the operation can be retried")
}

/// How long one operation moving `bytes` may take: two minutes plus 1 MiB/s.
pub(crate) fn op_timeout(bytes: u64) -> Duration {
    Duration::from_secs(120 + bytes / (1 << 20))
}

/// Single-quotes `s` for a POSIX shell.
pub(crate) fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A temporary name next to `final_name` (a hidden file, never listed).
pub(crate) fn temp_path(dir: &str, final_name: &str) -> String {
    let base = final_name.rsplit('/').next().unwrap_or(final_name);
    let r: u64 = rand::random();
    format!("{dir}/.tmp-{base}-{r:016x}")
}

/// The parent directory of a remote absolute path.
pub(crate) fn parent_of(path: &str) -> String {
    match path.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => path[..i].to_string(),
    }
}

/// A lazily opened, replaceable connection handle.
pub(crate) struct Slot<T> {
    inner: Mutex<Option<(Arc<T>, std::time::Instant)>>,
}

impl<T> Slot<T> {
    pub(crate) fn new() -> Slot<T> {
        Slot {
            inner: Mutex::new(None),
        }
    }

    /// The current handle, or a new one from `make` when there is none or the current one
    /// has been idle longer than `max_idle`.
    pub(crate) async fn get<F, Fut>(&self, max_idle: Option<Duration>, make: F) -> Result<Arc<T>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut g = self.inner.lock().await;
        if let Some((h, used)) = g.as_mut() {
            let stale = max_idle.is_some_and(|m| used.elapsed() > m);
            if !stale {
                *used = std::time::Instant::now();
                return Ok(h.clone());
            }
        }
        *g = None;
        let h = Arc::new(make().await?);
        *g = Some((h.clone(), std::time::Instant::now()));
        Ok(h)
    }

    /// Marks the operation on `h` finished (for the idle clock).
    pub(crate) async fn touch(&self, h: &Arc<T>) {
        let mut g = self.inner.lock().await;
        if let Some((cur, used)) = g.as_mut() {
            if Arc::ptr_eq(cur, h) {
                *used = std::time::Instant::now();
            }
        }
    }

    /// Forgets `h` (if it is still the current handle) so the next operation reconnects.
    pub(crate) async fn invalidate(&self, h: &Arc<T>) {
        let mut g = self.inner.lock().await;
        if g.as_ref().is_some_and(|(cur, _)| Arc::ptr_eq(cur, h)) {
            *g = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t =
            Target::parse("sftp://root@127.0.0.1:2222/srv/repo/?key=/k&known_hosts=/kh").unwrap();
        assert_eq!(t.scheme, Scheme::Sftp);
        assert_eq!(t.user.as_deref(), Some("root"));
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.port, Some(2222));
        assert_eq!(t.root, "/srv/repo");
        assert_eq!(t.key, Some(PathBuf::from("/k")));
        assert_eq!(t.known_hosts, Some(PathBuf::from("/kh")));
        assert_eq!(t.location, "sftp://root@127.0.0.1:2222/srv/repo");
        assert_eq!(t.path_of("data/ab/x"), "/srv/repo/data/ab/x");

        let t = Target::parse("scp://backup.example.com/b").unwrap();
        assert_eq!(t.scheme, Scheme::Scp);
        assert_eq!(t.user, None);
        assert_eq!(t.port, None);
        let t = Target::parse("scp://u@[::1]:22/x?connect_timeout=3").unwrap();
        assert_eq!(t.host, "[::1]");
        assert_eq!(t.connect_timeout, Duration::from_secs(3));

        for bad in [
            "sftp://host",
            "sftp://-oProxyCommand=x/p",
            "sftp://user:pw@host/p",
            "sftp://host:0/p",
            "sftp://host:99999/p",
            "sftp://host/p?foo=1",
            "sftp://host/p?key=",
            "sftp://host/a/../b",
            "sftp://host/a%20b",
            "sftp://-u@host/p",
            "sftp:///p",
        ] {
            assert_eq!(
                Target::parse(bad).unwrap_err().code(),
                "usage.invalid_url",
                "{bad}"
            );
        }
    }

    #[test]
    fn classifies_ssh_messages() {
        let loc = "sftp://h/p";
        let mismatch =
            "@@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
                        Host key verification failed.\n";
        assert_eq!(classify_ssh_text(loc, mismatch).code(), "auth.ssh_host_key");
        assert_eq!(
            classify_ssh_text(loc, "No ED25519 host key is known for [127.0.0.1]:5 and you have requested strict checking.\r\nHost key verification failed.").code(),
            "auth.ssh_host_key"
        );
        let denied = classify_ssh_text(loc, "root@127.0.0.1: Permission denied (publickey).");
        assert_eq!(denied.code(), "auth.ssh_denied");
        assert!(!denied.is_temporary());
        let refused = classify_ssh_text(
            loc,
            "ssh: connect to host 127.0.0.1 port 9: Connection refused",
        );
        assert_eq!(refused.code(), "unreachable.ssh");
        assert!(refused.is_temporary());
        assert!(refused.to_string().contains("Connection refused"));
    }

    #[test]
    fn quoting() {
        assert_eq!(sq("/a b/c"), "'/a b/c'");
        assert_eq!(sq("it's"), r"'it'\''s'");
        assert_eq!(parent_of("/a/b"), "/a");
        assert_eq!(parent_of("/a"), "/");
        assert!(temp_path("/r/d", "x/y").starts_with("/r/d/.tmp-y-"));
    }
}
