//! Notification sinks against real servers on 127.0.0.1: an HTTP server (hs-testkit's
//! `HttpSink`) for the webhook and Slack bodies, the HMAC signature (checked with the
//! `openssl` CLI, an implementation of its own), failures and timeouts; aiosmtpd for
//! e-mail with STARTTLS, AUTH PLAIN and dot-stuffing, and a STARTTLS-required sink
//! against a server without STARTTLS.

use std::path::Path;
use std::time::{Duration, Instant};

use hs_ops::notify::{Event, Notifier, SinkConfig, SinkKind, StartTls};
use hs_testkit::{smtp_or_skip, HttpBehaviour, HttpSink, SmtpOptions, SmtpServer};

const SECRET: &str = "HmacKey-ZQX-4711";
const PASSWORD: &str = "SmtpPass-ZQX-0815";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn failed_event() -> Event {
    Event::new(
        "backup.failed",
        Some("main"),
        "cannot connect to 127.0.0.1:1: connection refused",
    )
    .with_error(
        "unreachable.connect_failed",
        "cannot connect to 127.0.0.1:1: connection refused",
        Some("check that PostgreSQL is running"),
    )
    .figure("seconds", 0.25)
}

fn webhook(url: String) -> SinkConfig {
    SinkConfig {
        kind: Some(SinkKind::Webhook),
        name: Some("ops".into()),
        url: Some(url),
        ..Default::default()
    }
}

/// HMAC-SHA256 of `body` under `key`, hex, computed by `openssl dgst`.
fn openssl_hmac(key: &str, body: &[u8], dir: &Path) -> String {
    let f = dir.join("body");
    std::fs::write(&f, body).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", key])
        .arg(&f)
        .output()
        .expect("run openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.rsplit("= ").next().unwrap().trim().to_owned()
}

#[test]
fn webhook_posts_json_signed_with_hmac_sha256_and_slack_gets_text() {
    let server = HttpSink::start(HttpBehaviour::Status(200)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The secret from a file relative to the config's directory, as configured.
    std::fs::write(dir.path().join("hook.secret"), format!("{SECRET}\n")).unwrap();
    let mut hook = webhook(server.url("/hook?token=UrlTok-ZQX"));
    hook.secret_file = Some("hook.secret".into());
    let slack = SinkConfig {
        kind: Some(SinkKind::Slack),
        url: Some(server.url("/services/T0/B0/SlackTok")),
        ..Default::default()
    };
    let n = Notifier::new(vec![hook, slack], Some(dir.path().to_path_buf()));
    let d = rt().block_on(n.send(&failed_event()));
    assert_eq!(d.len(), 2);
    assert!(d.iter().all(|d| d.result.is_ok()), "{d:?}");

    let reqs = server.wait_for(2, Duration::from_secs(5));
    let hook = reqs.iter().find(|r| r.path.starts_with("/hook")).unwrap();
    assert_eq!(hook.method, "POST");
    assert_eq!(hook.header("content-type"), Some("application/json"));
    assert_eq!(hook.header("x-hardstorage-event"), Some("backup.failed"));
    let want = format!("sha256={}", openssl_hmac(SECRET, &hook.body, dir.path()));
    assert_eq!(hook.header("x-hardstorage-signature"), Some(want.as_str()));
    let body: serde_json::Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(body["schema"], "pg_hardstorage.notification.v1");
    assert_eq!(body["event"], "backup.failed");
    assert_eq!(body["severity"], "failure");
    assert_eq!(body["deployment"], "main");
    assert_eq!(body["command"], "backup");
    assert_eq!(body["outcome"], "failed");
    assert_eq!(body["error"]["code"], "unreachable.connect_failed");
    assert_eq!(
        body["error"]["suggestion"],
        "check that PostgreSQL is running"
    );
    assert_eq!(body["figures"]["seconds"], 0.25);
    assert_eq!(body["host"], hs_ops::notify::host_name());
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'), "{body}");

    let slack = reqs
        .iter()
        .find(|r| r.path.starts_with("/services"))
        .unwrap();
    assert!(slack.header("x-hardstorage-signature").is_none());
    let body: serde_json::Value = serde_json::from_slice(&slack.body).unwrap();
    let text = body["text"].as_str().unwrap();
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    assert!(
        text.starts_with(":red_circle: *pg_hardstorage: backup of main failed on "),
        "{text}"
    );
    assert!(
        text.contains("Error [unreachable.connect_failed]"),
        "{text}"
    );
}

#[test]
fn on_filters_events_by_severity_and_name() {
    let server = HttpSink::start(HttpBehaviour::Status(204)).unwrap();
    let default = webhook(server.url("/default"));
    let mut successes = webhook(server.url("/named"));
    successes.on = Some(vec!["backup.succeeded".into()]);
    let n = Notifier::new(vec![default, successes], None);
    let rt = rt();
    let ok = Event::new("backup.succeeded", Some("main"), "Backup done");
    let d = rt.block_on(n.send(&ok));
    assert_eq!(d.len(), 1, "only the sink that names the event: {d:?}");
    let d = rt.block_on(n.send(&failed_event()));
    assert_eq!(
        d.len(),
        1,
        "only the default sink (failure, warning): {d:?}"
    );
    let paths: Vec<String> = server
        .wait_for(2, Duration::from_secs(5))
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(paths, ["/named", "/default"]);
}

#[test]
fn a_failing_or_dead_webhook_is_a_logged_failure_within_its_timeout() {
    let rt = rt();
    let status = HttpSink::start(HttpBehaviour::Status(500)).unwrap();
    let dead = HttpSink::start(HttpBehaviour::Hang).unwrap();
    // Port 1 (tcpmux): nothing listens there, and no other test can take it.
    let closed = 1;
    let mut hang = webhook(dead.url("/hang/HangTok-ZQX"));
    hang.timeout = Some("1s".into());
    let sinks = vec![
        webhook(status.url("/s/StatusTok-ZQX")),
        hang,
        webhook(format!("http://127.0.0.1:{closed}/c/ClosedTok-ZQX")),
    ];
    let n = Notifier::new(sinks, None);
    let t = Instant::now();
    let d = rt.block_on(n.send(&failed_event()));
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(d.len(), 3);
    let msgs: Vec<String> = d
        .iter()
        .map(|d| {
            let e = d.result.as_ref().unwrap_err();
            assert_eq!(e.code(), "notify.delivery_failed");
            e.to_string()
        })
        .collect();
    assert!(msgs[0].contains("answered HTTP 500"), "{}", msgs[0]);
    assert!(msgs[1].contains("no answer within 1s"), "{}", msgs[1]);
    assert!(msgs[2].contains("failed"), "{}", msgs[2]);
    for m in &msgs {
        assert!(m.contains("webhook sink ops"), "{m}");
        assert!(!m.contains("ZQX"), "a URL's path is never shown: {m}");
    }
}

#[test]
fn a_missing_secret_file_fails_the_delivery_not_the_caller() {
    let server = HttpSink::start(HttpBehaviour::Status(200)).unwrap();
    let mut hook = webhook(server.url("/x"));
    hook.secret_file = Some("/nonexistent/hook.secret".into());
    let d = rt().block_on(Notifier::new(vec![hook], None).send(&failed_event()));
    let e = d[0].result.as_ref().unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot read secret_file /nonexistent/hook.secret"),
        "{e}"
    );
    assert!(server.requests().is_empty(), "nothing is sent unsigned");
}

fn email(server: &SmtpServer, dir: &Path) -> SinkConfig {
    std::fs::write(dir.join("smtp.password"), PASSWORD).unwrap();
    SinkConfig {
        kind: Some(SinkKind::Email),
        name: Some("dba".into()),
        host: Some("127.0.0.1".into()),
        port: Some(server.port()),
        from: Some("hs@db1.example.com".into()),
        to: vec!["dba@example.com".into(), "oncall@example.com".into()],
        ca_file: server.ca_file().map(Path::to_path_buf),
        username: Some("alerts".into()),
        password_file: Some(dir.join("smtp.password")),
        timeout: Some("20s".into()),
        ..Default::default()
    }
}

#[test]
fn email_over_starttls_with_auth_plain_arrives_whole() {
    let opts = SmtpOptions {
        starttls: true,
        auth: Some(("alerts".into(), PASSWORD.into())),
    };
    let Some(server) = smtp_or_skip(SmtpServer::start(opts), "email_over_starttls") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sink = email(&server, dir.path());
    // A line starting with a dot must survive dot-stuffing.
    let event = failed_event().with_error(
        "unreachable.connect_failed",
        "refused",
        Some("line one\n.dotted line\nend"),
    );
    let d = rt().block_on(Notifier::new(vec![sink], None).send(&event));
    assert!(d[0].result.is_ok(), "{:?}\n{}", d[0].result, server.log());
    let m = server.wait_for(1, Duration::from_secs(5));
    assert_eq!(m.len(), 1, "{}", server.log());
    let m = &m[0];
    assert!(m.tls, "sent after STARTTLS");
    assert_eq!(m.auth_user.as_deref(), Some("alerts"));
    assert_eq!(m.mail_from, "hs@db1.example.com");
    assert_eq!(m.rcpt_tos, ["dba@example.com", "oncall@example.com"]);
    let (head, body) = m
        .data
        .split_once("\r\n\r\n")
        .expect("headers, blank line, body");
    let host = hs_ops::notify::host_name();
    assert!(
        head.contains(&format!(
            "Subject: pg_hardstorage: backup of main failed on {host}"
        )),
        "{head}"
    );
    assert!(head.contains("From: hs@db1.example.com"), "{head}");
    assert!(
        head.contains("To: dba@example.com, oncall@example.com"),
        "{head}"
    );
    assert!(
        head.contains("X-Hardstorage-Event: backup.failed"),
        "{head}"
    );
    assert!(
        head.contains("Content-Type: text/plain; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains("Date: ") && head.contains("Message-ID: <"),
        "{head}"
    );
    assert!(
        body.contains("Error [unreachable.connect_failed]: refused"),
        "{body}"
    );
    assert!(body.contains("\r\n.dotted line\r\n"), "{body}");
    assert!(!body.contains("..dotted"), "{body}");
    assert!(!m.data.contains(PASSWORD));
}

#[test]
fn starttls_required_against_a_server_without_it_sends_nothing() {
    let Some(server) = smtp_or_skip(
        SmtpServer::start(SmtpOptions::default()),
        "starttls_required",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut sink = email(&server, dir.path());
    sink.starttls = Some(StartTls::Required);
    let d = rt().block_on(Notifier::new(vec![sink], None).send(&failed_event()));
    let e = d[0].result.as_ref().unwrap_err();
    assert_eq!(e.code(), "notify.delivery_failed");
    let m = e.to_string();
    assert!(m.contains("email sink dba"), "{m}");
    assert!(m.contains("does not offer STARTTLS"), "{m}");
    assert!(m.contains("starttls: required"), "{m}");
    assert!(!m.contains(PASSWORD), "{m}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(server.messages().is_empty());

    // The same server with starttls: off (and no credentials) gets the message.
    let mut plain = email(&server, dir.path());
    plain.starttls = Some(StartTls::Off);
    plain.username = None;
    plain.password_file = None;
    let d = rt().block_on(Notifier::new(vec![plain], None).send(&failed_event()));
    assert!(d[0].result.is_ok(), "{:?}", d[0].result);
    let m = server.wait_for(1, Duration::from_secs(5));
    assert_eq!(m.len(), 1);
    assert!(!m[0].tls);
}

#[test]
fn an_untrusted_certificate_or_a_wrong_password_fails_clearly() {
    let opts = SmtpOptions {
        starttls: true,
        auth: Some(("alerts".into(), PASSWORD.into())),
    };
    let Some(server) = smtp_or_skip(SmtpServer::start(opts), "untrusted_certificate") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    // No ca_file: the system's CAs do not know the test CA.
    let mut sink = email(&server, dir.path());
    sink.ca_file = None;
    let d = rt.block_on(Notifier::new(vec![sink], None).send(&failed_event()));
    let m = d[0].result.as_ref().unwrap_err().to_string();
    assert!(m.contains("TLS handshake failed"), "{m}");

    let mut sink = email(&server, dir.path());
    sink.password_file = None;
    sink.password = Some("Wrong-ZQX-password".into());
    let d = rt.block_on(Notifier::new(vec![sink], None).send(&failed_event()));
    let m = d[0].result.as_ref().unwrap_err().to_string();
    assert!(m.contains("refused AUTH PLAIN"), "{m}");
    assert!(!m.contains("Wrong-ZQX"), "{m}");
    assert!(server.messages().is_empty());
}

#[test]
fn the_stream_notifier_sends_a_gap_at_once_and_the_end_last() {
    use hs_backup::StreamObserver;
    let server = HttpSink::start(HttpBehaviour::Status(200)).unwrap();
    let n = Notifier::new(vec![webhook(server.url("/w"))], None);
    let rt = rt();
    rt.block_on(async {
        let metrics = std::sync::Arc::new(hs_backup::StreamMetrics::new("main"));
        let t = hs_ops::notify::StreamThresholds {
            stall_after: Duration::from_secs(3600),
            max_lag: Duration::from_secs(3600),
        };
        let sn = hs_ops::notify::StreamNotifier::start(n, "main", t, metrics);
        sn.gap(&hs_repo::WalGap {
            from_segment: "000000010000000000000003".into(),
            to_segment: "000000010000000000000005".into(),
            reason: "requested WAL segment has already been removed".into(),
            recorded_at: "2026-12-06T07:00:00Z".into(),
        });
        let last = Event::new("wal_stream.failed", Some("main"), "slot is gone").with_error(
            "notfound.slot",
            "slot is gone",
            None,
        );
        sn.finish(last).await;
    });
    let reqs = server.wait_for(2, Duration::from_secs(5));
    let events: Vec<serde_json::Value> = reqs
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["event"], "wal_stream.gap");
    assert_eq!(events[0]["severity"], "warning");
    assert_eq!(
        events[0]["figures"]["from_segment"],
        "000000010000000000000003"
    );
    assert!(events[0]["message"]
        .as_str()
        .unwrap()
        .contains("recorded as a gap"));
    assert_eq!(events[1]["event"], "wal_stream.failed");
    assert_eq!(events[1]["error"]["code"], "notfound.slot");
}

#[test]
fn an_smtp_server_that_never_greets_is_a_timeout_not_a_hang() {
    // Accepts the connection and says nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let sink = SinkConfig {
        kind: Some(SinkKind::Email),
        host: Some("127.0.0.1".into()),
        port: Some(port),
        from: Some("a@example.com".into()),
        to: vec!["b@example.com".into()],
        timeout: Some("1s".into()),
        ..Default::default()
    };
    let t = Instant::now();
    let d = rt().block_on(Notifier::new(vec![sink], None).send(&failed_event()));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let m = d[0].result.as_ref().unwrap_err().to_string();
    assert!(
        m.contains("to email sink failed: no answer within 1s"),
        "{m}"
    );
    drop(silent);
}
