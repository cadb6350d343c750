//! The metrics endpoint over real TCP: bind 127.0.0.1:0, feed observer events, scrape
//! `/metrics` with a hand-written HTTP/1.1 request, check status, headers and samples; then
//! 404 for other paths and a clean stop on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hs_backup::{NoObserver, StreamMetrics, StreamObserver, Tee};
use hs_ops::bind_metrics;
use hs_proto::{Lsn, TimelineId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SEG: u64 = 16 * 1024 * 1024;

async fn get(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("response in time")
        .expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_over_tcp() {
    let metrics = Arc::new(StreamMetrics::new("main"));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let (addr, serve) = bind_metrics("127.0.0.1:0".parse().unwrap(), metrics.clone(), rx)
        .await
        .expect("bind");
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    let server = tokio::spawn(serve);

    // Events go through a Tee, as in the CLI.
    let tee = Tee(&NoObserver, &*metrics);
    tee.streaming(TimelineId(1), Lsn(2 * SEG));
    tee.positions(Lsn(3 * SEG), Lsn(2 * SEG), Lsn(3 * SEG + 500));
    tee.segment_archived("000000010000000000000002", SEG);
    tee.positions(Lsn(3 * SEG + 100), Lsn(3 * SEG), Lsn(3 * SEG + 500));
    tee.partial_written("000000010000000000000003", 100);

    let resp = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, body) = resp.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    let lines: Vec<&str> = body.lines().collect();
    for want in [
        "# HELP pg_hardstorage_wal_segments_archived_total ",
        "# TYPE pg_hardstorage_wal_segments_archived_total counter",
        "pg_hardstorage_wal_segments_archived_total{deployment=\"main\"} 1",
        "# TYPE pg_hardstorage_wal_lag_bytes gauge",
        "pg_hardstorage_wal_lag_bytes{deployment=\"main\"} 500",
        "pg_hardstorage_wal_durable_lag_bytes{deployment=\"main\"} 400",
        "pg_hardstorage_wal_timeline{deployment=\"main\"} 1",
        "pg_hardstorage_wal_partial_writes_total{deployment=\"main\"} 1",
        "pg_hardstorage_wal_streaming{deployment=\"main\"} 1",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in\n{body}"
        );
    }
    assert!(lines
        .iter()
        .any(|l| l.starts_with("pg_hardstorage_wal_lag_seconds{deployment=\"main\"} ")));
    assert!(body.ends_with('\n'));

    let resp = get(addr, "GET / HTTP/1.1\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 404 Not Found\r\n"), "{resp}");
    let resp = get(addr, "HEAD /metrics HTTP/1.0\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(resp.ends_with("\r\n\r\n"), "HEAD has no body: {resp}");
    let resp = get(addr, "nonsense\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");

    // Shutdown stops the server; the port is no longer served.
    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops")
        .expect("task")
        .expect("serve result");
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn bind_failure_is_a_usage_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let e = match bind_metrics(addr, Arc::new(StreamMetrics::new("main")), rx).await {
        Ok(_) => panic!("bound a taken port"),
        Err(e) => e,
    };
    assert_eq!(e.code(), "usage.metrics_listen_failed");
    assert!(e.suggestion().is_some());
}
