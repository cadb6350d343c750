//! The `/metrics` endpoint of `wal stream --metrics-listen ADDR`: a minimal, read-only
//! HTTP/1.1 server (`GET /metrics`, text exposition format 0.0.4) of an
//! [`hs_backup::StreamMetrics`].
//!
//! The endpoint serves nothing but these numbers (no secrets, no control), so any listen
//! address is accepted; bind it to a loopback or private address unless the scraper is
//! remote. One request per connection (`Connection: close`), at most
//! [`MAX_CONNECTIONS`] connections at a time, and a request head must arrive within
//! [`REQUEST_TIMEOUT`] and fit in [`MAX_REQUEST_HEAD`] bytes. The request is read and
//! answered by hand rather than by hyper, to keep its answers as they are (hyper answers
//! an HTTP/1.0 request in HTTP/1.0 and an oversized head with 431).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hs_backup::StreamMetrics;
use hs_base::code;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::error::{Error, ErrorKind, Result};

/// Most connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 16;
/// Time allowed for a client to send its request head (and to take the response).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest accepted request head (request line and headers).
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Serves `GET /metrics` on `addr` until `shutdown` turns true (or its sender is dropped).
/// See [`bind_metrics`].
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<StreamMetrics>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let (_, serve) = bind_metrics(addr, metrics, shutdown).await?;
    serve.await
}

/// Binds `addr` and returns the bound address (useful with port 0) and the future that
/// serves connections until `shutdown` turns true (or its sender is dropped).
///
/// `GET /metrics` (or `HEAD`) answers `200` with `text/plain; version=0.0.4`; other paths
/// `404`, other methods on `/metrics` `405`, a malformed or oversized request `400`.
/// A bind failure is `usage.metrics_listen_failed`.
pub async fn bind_metrics(
    addr: SocketAddr,
    metrics: Arc<StreamMetrics>,
    shutdown: watch::Receiver<bool>,
) -> Result<(
    SocketAddr,
    impl Future<Output = Result<()>> + Send + 'static,
)> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        Error::of_kind(
            ErrorKind::Usage,
            code::USAGE_METRICS_LISTEN_FAILED,
            format!("cannot listen for metrics on {addr}: {e}"),
        )
        .with_suggestion("pick a free address and port for --metrics-listen, e.g. 127.0.0.1:9187")
    })?;
    let local = listener.local_addr().map_err(|e| {
        Error::of_kind(
            ErrorKind::Usage,
            code::USAGE_METRICS_LISTEN_FAILED,
            format!("cannot read the metrics listen address: {e}"),
        )
    })?;
    tracing::info!(addr = %local, "serving Prometheus metrics on http://{local}/metrics");
    let serve = async move {
        crate::listen::serve_connections(
            listener,
            MAX_CONNECTIONS,
            "metrics listener",
            crate::listen::until_true(shutdown),
            move |sock, peer| {
                let metrics = metrics.clone();
                async move {
                    if let Err(e) = tokio::time::timeout(REQUEST_TIMEOUT, handle(sock, &metrics))
                        .await
                        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
                    {
                        tracing::debug!(%peer, "metrics request: {e}");
                    }
                }
            },
        )
        .await;
        Ok(())
    };
    Ok((local, serve))
}

/// Reads one request head, answers it, closes.
async fn handle(mut sock: TcpStream, metrics: &StreamMetrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let complete = loop {
        if let Some(end) = find_head_end(&head) {
            head.truncate(end);
            break true;
        }
        if head.len() > MAX_REQUEST_HEAD {
            break false;
        }
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            break false;
        }
        head.extend_from_slice(&buf[..n]);
    };
    let (status, body, head_only) = if complete {
        route(&head, metrics)
    } else {
        ("400 Bad Request", "bad request\n".to_owned(), false)
    };
    let content_type = if status.starts_with("200") {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        resp.push_str("Allow: GET, HEAD\r\n");
    }
    resp.push_str("\r\n");
    if !head_only {
        resp.push_str(&body);
    }
    sock.write_all(resp.as_bytes()).await?;
    sock.shutdown().await
}

/// The end of the request head (`\r\n\r\n`, or a bare `\n\n`), exclusive of the blank line.
fn find_head_end(b: &[u8]) -> Option<usize> {
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = b.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Status line, body, and whether to send the head only.
fn route(head: &[u8], metrics: &StreamMetrics) -> (&'static str, String, bool) {
    let line = head.split(|&c| c == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return ("400 Bad Request", "bad request\n".into(), false);
    };
    if !version.starts_with("HTTP/1.") {
        return ("400 Bad Request", "bad request\n".into(), false);
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return (
            "404 Not Found",
            "not found: metrics are at /metrics\n".into(),
            method == "HEAD",
        );
    }
    match method {
        "GET" => ("200 OK", metrics.render(), false),
        "HEAD" => ("200 OK", metrics.render(), true),
        _ => ("405 Method Not Allowed", "use GET\n".into(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing() {
        let m = StreamMetrics::new("main");
        assert_eq!(route(b"GET /metrics HTTP/1.1", &m).0, "200 OK");
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0", &m).0, "200 OK");
        assert!(route(b"HEAD /metrics HTTP/1.1", &m).2);
        assert_eq!(route(b"GET / HTTP/1.1", &m).0, "404 Not Found");
        assert_eq!(
            route(b"POST /metrics HTTP/1.1", &m).0,
            "405 Method Not Allowed"
        );
        assert_eq!(route(b"garbage", &m).0, "400 Bad Request");
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nxx"), Some(20));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
