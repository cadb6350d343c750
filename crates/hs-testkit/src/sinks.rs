//! Notification receivers on 127.0.0.1: [`HttpSink`], a small HTTP/1.1 server that records
//! every request (or never answers, to test timeouts), and [`SmtpServer`], aiosmtpd
//! (`pip install aiosmtpd`) with optional STARTTLS (a throwaway CA made with `openssl`)
//! and AUTH, recording every message it accepts.
//!
//! A missing aiosmtpd is an error of kind `NotFound`; [`smtp_or_skip`] turns it into a
//! printed skip notice, or into a panic when `CI=true` (as [`crate::skip_or_fail`] does
//! for the storage servers).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request an [`HttpSink`] received.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// `POST`, ...
    pub method: String,
    /// The path and query.
    pub path: String,
    /// Headers, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What an [`HttpSink`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpBehaviour {
    /// Record the request and answer with this status.
    Status(u16),
    /// Record the request and never answer (the connection stays open a minute).
    Hang,
}

/// An HTTP server on 127.0.0.1 recording requests; stops when dropped.
#[derive(Debug)]
pub struct HttpSink {
    port: u16,
    requests: Arc<Mutex<Vec<HttpRequest>>>,
    stop: Arc<AtomicBool>,
}

fn read_request(stream: &TcpStream) -> io::Result<HttpRequest> {
    let mut r = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(HttpRequest {
        method,
        path,
        headers,
        body,
    })
}

impl HttpSink {
    /// Starts the server.
    pub fn start(behaviour: HttpBehaviour) -> io::Result<HttpSink> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, stopped) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = conn else { continue };
                let reqs = reqs.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                    let Ok(req) = read_request(&stream) else {
                        return;
                    };
                    reqs.lock().unwrap().push(req);
                    match behaviour {
                        HttpBehaviour::Status(code) => {
                            let mut s = &stream;
                            let _ = write!(
                                s,
                                "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                            );
                        }
                        HttpBehaviour::Hang => std::thread::sleep(Duration::from_secs(60)),
                    }
                });
            }
        });
        Ok(HttpSink {
            port,
            requests,
            stop,
        })
    }

    /// `http://127.0.0.1:<port>` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<HttpRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits up to `timeout` until `n` requests arrived; returns them all.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<HttpRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.requests();
            if r.len() >= n || Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// How an [`SmtpServer`] is set up.
#[derive(Debug, Clone, Default)]
pub struct SmtpOptions {
    /// Offer STARTTLS (and require it before MAIL) with a certificate for 127.0.0.1
    /// signed by a throwaway CA ([`SmtpServer::ca_file`]).
    pub starttls: bool,
    /// Offer AUTH and accept only this user name and password.
    pub auth: Option<(String, String)>,
}

/// One message an [`SmtpServer`] accepted.
#[derive(Debug, Clone)]
pub struct SmtpMessage {
    /// The envelope sender.
    pub mail_from: String,
    /// The envelope recipients.
    pub rcpt_tos: Vec<String>,
    /// The message as received (headers, blank line, body), dot-stuffing undone.
    pub data: String,
    /// Whether the session was encrypted when the message was sent.
    pub tls: bool,
    /// The user name the session authenticated as, if any.
    pub auth_user: Option<String>,
}

/// aiosmtpd on 127.0.0.1; stopped when dropped.
#[derive(Debug)]
pub struct SmtpServer {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
    ca: Option<PathBuf>,
}

const SMTP_SCRIPT: &str = r#"
import json, os, ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

out, port, cert, key, user, password = sys.argv[1:7]

class Handler:
    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(out) if f.endswith(".json")])
        data = envelope.original_content or envelope.content
        rec = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": data.decode("utf-8", "replace"),
            "tls": session.ssl is not None,
            "auth_user": session.auth_data if session.authenticated else None,
        }
        tmp = os.path.join(out, ".msg.tmp")
        with open(tmp, "w") as f:
            json.dump(rec, f)
        os.rename(tmp, os.path.join(out, "%04d.json" % n))
        return "250 OK"

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password
    # handled=False: aiosmtpd then answers 535 itself.
    return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

kw = {"auth_require_tls": bool(cert)}
if cert:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    kw["tls_context"] = ctx
    kw["require_starttls"] = True
if user:
    kw["authenticator"] = authenticator
c = Controller(Handler(), hostname="127.0.0.1", port=int(port), ready_timeout=30, **kw)
c.start()
print("READY", flush=True)
while True:
    time.sleep(3600)
"#;

impl SmtpServer {
    /// Starts aiosmtpd (`python3` with the `aiosmtpd` module; `NotFound` when missing).
    pub fn start(opts: SmtpOptions) -> io::Result<SmtpServer> {
        let python = std::env::var("HS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        let has = Command::new(&python)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !has {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "aiosmtpd is not installed (install with `python3 -m pip install aiosmtpd`)",
            ));
        }
        let dir = tempfile::Builder::new().prefix("hs-smtp-").tempdir()?;
        let out = dir.path().join("messages");
        std::fs::create_dir(&out)?;
        let (ca, cert, key) = if opts.starttls {
            let ca = crate::make_certs(dir.path())?;
            (
                Some(ca),
                dir.path().join("server.crt"),
                dir.path().join("server.key"),
            )
        } else {
            (None, PathBuf::new(), PathBuf::new())
        };
        let (user, password) = opts.auth.clone().unwrap_or_default();
        let port = crate::free_port()?;
        let mut child = Command::new(&python)
            .arg("-c")
            .arg(SMTP_SCRIPT)
            .arg(&out)
            .arg(port.to_string())
            .arg(&cert)
            .arg(&key)
            .arg(&user)
            .arg(&password)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("server.log"))?)
            .spawn()?;
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "READY" {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
            return Err(io::Error::other(format!("aiosmtpd did not start:\n{log}")));
        }
        Ok(SmtpServer {
            port,
            child,
            dir,
            ca,
        })
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA certificate that signed the server's certificate (with `starttls`).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// The messages accepted so far, oldest first.
    pub fn messages(&self) -> Vec<SmtpMessage> {
        let out = self.dir.path().join("messages");
        let mut names: Vec<PathBuf> = std::fs::read_dir(&out)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        names.retain(|p| p.extension().is_some_and(|e| e == "json"));
        names.sort();
        names
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(|v| SmtpMessage {
                mail_from: v["mail_from"].as_str().unwrap_or("").to_owned(),
                rcpt_tos: v["rcpt_tos"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                data: v["data"].as_str().unwrap_or("").to_owned(),
                tls: v["tls"].as_bool().unwrap_or(false),
                auth_user: v["auth_user"].as_str().map(str::to_owned),
            })
            .collect()
    }

    /// Waits up to `timeout` until `n` messages arrived; returns them all.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<SmtpMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.messages();
            if m.len() >= n || Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Unwraps an SMTP server start: `None` with a printed skip notice when aiosmtpd is
/// missing and `CI` is not `true`; panics otherwise (CI must not skip).
pub fn smtp_or_skip(r: io::Result<SmtpServer>, what: &str) -> Option<SmtpServer> {
    match r {
        Ok(s) => Some(s),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                && std::env::var("CI").as_deref() != Ok("true") =>
        {
            eprintln!("SKIP {what}: {e}");
            None
        }
        Err(e) => panic!("{what}: cannot start the SMTP server: {e}"),
    }
}
