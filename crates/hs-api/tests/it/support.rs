//! Test support: a server on an ephemeral loopback port and a minimal HTTP/1.1 client
//! (one request per connection, `Connection: close`), so the tests see the bytes on the wire.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hs_api::{ApiConfig, ApiServer, ApiToken, Deployment, VersionInfo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

pub type R = Result<(), Box<dyn std::error::Error>>;

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A keyring and an initialised file:// repository in a temporary directory.
pub struct RepoEnv {
    pub dir: tempfile::TempDir,
    pub keyring: PathBuf,
    pub url: String,
}

pub async fn repo_env() -> Result<RepoEnv, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let keyring = dir.path().join("keyring");
    let kr = hs_crypt::Keyring::create(&keyring)?;
    let url = format!("file://{}/repo", dir.path().display());
    hs_repo::Repository::init(&url, &kr).await?;
    Ok(RepoEnv { dir, keyring, url })
}

/// A running server; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub fn config(env: &RepoEnv, deployments: Vec<Deployment>, token: bool) -> ApiConfig {
    ApiConfig {
        deployments,
        keyring: env.keyring.clone(),
        token: token.then(|| ApiToken::new(TOKEN.to_owned()).expect("token")),
        version: VersionInfo::new("9.9.9-test"),
    }
}

pub async fn start(config: ApiConfig) -> Result<Server, Box<dyn std::error::Error>> {
    let server = ApiServer::bind("127.0.0.1:0".parse()?, config).await?;
    let addr = server.local_addr();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Ok(Server {
        addr,
        stop: Some(tx),
    })
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The id of the job a `202 Accepted` answer started (the status is asserted).
    pub fn job_id(&self) -> Result<String, Box<dyn std::error::Error>> {
        assert_eq!(self.status, 202, "{}", self.text());
        Ok(self.json()["result"]["id"]
            .as_str()
            .ok_or("job id")?
            .to_owned())
    }
}

/// Sends one request and reads the whole response.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<Resp, Box<dyn std::error::Error>> {
    let mut s = TcpStream::connect(addr).await?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut raw)).await??;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<Resp, Box<dyn std::error::Error>> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of the response head")?;
    let head = std::str::from_utf8(&raw[..end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("empty response")?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .ok_or("no status code")?
        .parse()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Resp {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..nl])?.trim(), 16)?;
        b = &b[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(b.get(..size).ok_or("short chunk")?);
        b = b.get(size + 2..).ok_or("short chunk")?;
    }
}

/// `POST path` (with the token) starts a job; waits up to `limit` for its end.
pub async fn run_job(
    addr: SocketAddr,
    path: &str,
    body: Option<&str>,
    limit: Duration,
) -> Result<Value, Box<dyn std::error::Error>> {
    let id = request(addr, "POST", path, Some(TOKEN), body)
        .await?
        .job_id()?;
    wait_job(addr, &id, limit).await
}

/// Polls `GET /v1/jobs/{id}` until the job is no longer running.
pub async fn wait_job(
    addr: SocketAddr,
    id: &str,
    limit: Duration,
) -> Result<Value, Box<dyn std::error::Error>> {
    let started = Instant::now();
    loop {
        let r = request(addr, "GET", &format!("/v1/jobs/{id}"), Some(TOKEN), None).await?;
        assert_eq!(r.status, 200, "{}", r.text());
        let job = r.json()["result"].clone();
        if job["status"] != "running" {
            return Ok(job);
        }
        if started.elapsed() > limit {
            return Err(format!("job {id} still running after {limit:?}: {job}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
