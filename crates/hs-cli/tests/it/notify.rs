//! Issue 19, notifications, end to end with a real PostgreSQL cluster: `backup` success
//! and failure (an unreachable server), `verify`, `repo verify`, and `wal stream` (a stall while the
//! server is down, the clean stop, and a failure) each deliver to a signed webhook, a
//! Slack-compatible webhook and e-mail over STARTTLS (aiosmtpd) configured in
//! pg_hardstorage.yaml; a dead sink is one WARN line with `notify.delivery_failed` and
//! leaves the exit code alone; no URL token, HMAC secret or SMTP password is printed.

use std::path::Path;
use std::time::{Duration, Instant};

use hs_testkit::{
    smtp_or_skip, HttpBehaviour, HttpRequest, HttpSink, PgCluster, PgOptions, SmtpOptions,
    SmtpServer,
};
use serde_json::Value;

use crate::support::{bin, init_repo, Run, Scratch, Streamer};

const URL_TOKEN: &str = "UrlTok-ZQX-1234";
const HMAC_SECRET: &str = "HmacSecret-ZQX-5678";
const SLACK_TOKEN: &str = "SlackTok-ZQX-9012";
const SMTP_PASSWORD: &str = "SmtpPass-ZQX-3456";

/// The config: a signed webhook (every event), a Slack webhook from an environment
/// variable (failures), a webhook nobody listens on, and e-mail when aiosmtpd is there.
fn write_config(
    s: &Scratch,
    hooks: &HttpSink,
    smtp: Option<&SmtpServer>,
    deployment_extra: &str,
) -> std::path::PathBuf {
    std::fs::write(s.path("hook.secret"), format!("{HMAC_SECRET}\n")).unwrap();
    std::fs::write(s.path("smtp.password"), SMTP_PASSWORD).unwrap();
    // Port 1 (tcpmux): nothing listens there, and no other test can take it.
    let closed = 1;
    let mut yaml = format!(
        "repo: {repo}\nnotifications:\n\
         \x20 - type: webhook\n    name: ops\n    url: {hook}\n    secret_file: hook.secret\n    on: [all]\n\
         \x20 - type: slack\n    url_env: HS_TEST_SLACK_URL\n\
         \x20 - type: webhook\n    name: nobody\n    url: http://127.0.0.1:{closed}/x?token={URL_TOKEN}\n    timeout: 2s\n    on: [all]\n",
        repo = s.repo_url(),
        hook = hooks.url(&format!("/hook?token={URL_TOKEN}")),
    );
    if let Some(m) = smtp {
        yaml.push_str(&format!(
            "  - type: email\n    name: dba\n    host: 127.0.0.1\n    port: {}\n    ca_file: {}\n    from: hs@example.com\n    to: [dba@example.com]\n    username: alerts\n    password_file: smtp.password\n    on: [failure, backup.succeeded]\n    timeout: 20s\n",
            m.port(),
            m.ca_file().unwrap().display()
        ));
    }
    yaml.push_str(&format!("deployments:\n  demo:\n{deployment_extra}"));
    let path = s.path("pg_hardstorage.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Runs the binary with the config and `-o json` (and `-vvv` when `verbose`).
fn run(s: &Scratch, hooks: &HttpSink, config: &Path, args: &[&str], verbose: bool) -> Run {
    let mut cmd = bin();
    if verbose {
        cmd.arg("-vvv");
    }
    cmd.args(args)
        .args(["-o", "json", "--keyring"])
        .arg(s.keyring())
        .arg("--config")
        .arg(config)
        .env_remove("PG_HARDSTORAGE_LOG")
        .env(
            "HS_TEST_SLACK_URL",
            hooks.url(&format!("/services/T0/B0/{SLACK_TOKEN}")),
        );
    Run::of(&mut cmd)
}

fn no_secrets(r: &Run, what: &str) {
    for secret in [URL_TOKEN, HMAC_SECRET, SLACK_TOKEN, SMTP_PASSWORD] {
        for (stream, text) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
            assert!(
                !text.contains(secret),
                "{what}: a secret in {stream}:\n{text}"
            );
        }
    }
}

/// The one WARN line of the sink nobody listens on.
fn one_delivery_warning(r: &Run, what: &str) {
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("notify.delivery_failed"))
        .collect();
    assert_eq!(lines.len(), 1, "{what}: {}", r.stderr);
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
    assert!(lines[0].contains("webhook sink nobody"), "{}", lines[0]);
}

/// The webhook bodies received at `/hook` with event `name`, their signatures checked
/// with `openssl dgst` (an HMAC implementation of its own).
fn hook_events(s: &Scratch, reqs: &[HttpRequest], name: &str) -> Vec<Value> {
    reqs.iter()
        .filter(|r| r.path.starts_with("/hook"))
        .filter(|r| r.header("x-hardstorage-event") == Some(name))
        .map(|r| {
            let f = s.path("body");
            std::fs::write(&f, &r.body).unwrap();
            let out = std::process::Command::new("openssl")
                .args(["dgst", "-sha256", "-hmac", HMAC_SECRET])
                .arg(&f)
                .output()
                .unwrap();
            let hex = String::from_utf8_lossy(&out.stdout)
                .rsplit("= ")
                .next()
                .unwrap()
                .trim()
                .to_owned();
            assert_eq!(
                r.header("x-hardstorage-signature"),
                Some(format!("sha256={hex}").as_str())
            );
            serde_json::from_slice(&r.body).unwrap()
        })
        .collect()
}

fn slack_texts(reqs: &[HttpRequest]) -> Vec<String> {
    reqs.iter()
        .filter(|r| r.path.starts_with("/services/"))
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            v["text"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn backup_success_and_failure_each_deliver_a_notification() {
    let pg = PgCluster::start(PgOptions::default()).expect("start PostgreSQL");
    let s = Scratch::new();
    let (_url, conn) = init_repo(&s, &pg);
    let hooks = HttpSink::start(HttpBehaviour::Status(200)).unwrap();
    let smtp_opts = SmtpOptions {
        starttls: true,
        auth: Some(("alerts".into(), SMTP_PASSWORD.into())),
    };
    let smtp = smtp_or_skip(SmtpServer::start(smtp_opts), "notify e-mail sink");
    let config = write_config(
        &s,
        &hooks,
        smtp.as_ref(),
        &format!("    pg_connection: \"{conn}\"\n"),
    );

    // Success.
    let ok = run(&s, &hooks, &config, &["backup", "demo"], true);
    let result = ok.ok();
    no_secrets(&ok, "backup");
    one_delivery_warning(&ok, "backup");
    let reqs = hooks.wait_for(1, Duration::from_secs(5));
    let got = hook_events(&s, &reqs, "backup.succeeded");
    assert_eq!(got.len(), 1, "{reqs:?}");
    let e = &got[0];
    assert_eq!(e["severity"], "success");
    assert_eq!(e["deployment"], "demo");
    assert_eq!(e["command"], "backup");
    assert_eq!(e["error"], Value::Null);
    assert_eq!(e["figures"]["backup_id"], result["backup_id"]);
    assert_eq!(e["figures"]["stop_lsn"], result["stop_lsn"]);
    assert_eq!(e["figures"]["files"], result["files"]);
    let id = result["backup_id"].as_str().unwrap();
    assert!(e["message"].as_str().unwrap().contains(id), "{e}");
    assert!(slack_texts(&reqs).is_empty(), "Slack gets failures only");

    // Verify: success too.
    let v = run(&s, &hooks, &config, &["verify", "demo", "latest"], false);
    v.ok();
    let reqs = hooks.wait_for(2, Duration::from_secs(5));
    let got = hook_events(&s, &reqs, "backup_verify.succeeded");
    assert_eq!(got.len(), 1, "{reqs:?}");
    assert_eq!(got[0]["figures"]["backup_id"], id);
    assert!(
        got[0]["message"].as_str().unwrap().contains("OK"),
        "{}",
        got[0]
    );
    // repo verify: the top-level sinks, no deployment.
    run(&s, &hooks, &config, &["repo", "verify"], false).ok();
    let reqs = hooks.wait_for(3, Duration::from_secs(5));
    let got = hook_events(&s, &reqs, "repo_verify.succeeded");
    assert_eq!(got.len(), 1, "{reqs:?}");
    assert_eq!(got[0]["deployment"], Value::Null);
    assert_eq!(got[0]["command"], "repo verify");

    // Failure: a server that is not there. The exit code is the backup's own.
    let bad = "host=127.0.0.1 port=1 user=hs_repl connect_timeout=3";
    let failed = run(
        &s,
        &hooks,
        &config,
        &["backup", "demo", "--pg-connection", bad],
        false,
    );
    assert_eq!(failed.status, 8, "{}\n{}", failed.stdout, failed.stderr);
    let code = failed.err_code();
    assert!(code.starts_with("unreachable."), "{code}");
    no_secrets(&failed, "failed backup");
    one_delivery_warning(&failed, "failed backup");
    let reqs = hooks.wait_for(5, Duration::from_secs(5));
    let got = hook_events(&s, &reqs, "backup.failed");
    assert_eq!(got.len(), 1, "{reqs:?}");
    assert_eq!(got[0]["severity"], "failure");
    assert_eq!(got[0]["error"]["code"], code.as_str());
    assert!(got[0]["error"]["suggestion"].is_string(), "{}", got[0]);
    let slack = slack_texts(&reqs);
    assert_eq!(slack.len(), 1, "{slack:?}");
    assert!(
        slack[0].contains("*pg_hardstorage: backup of demo failed on "),
        "{}",
        slack[0]
    );
    assert!(slack[0].contains(&code), "{}", slack[0]);

    if let Some(m) = &smtp {
        let mails = m.wait_for(2, Duration::from_secs(10));
        assert_eq!(mails.len(), 2, "{}", m.log());
        assert!(mails
            .iter()
            .all(|m| m.tls && m.auth_user.as_deref() == Some("alerts")));
        assert!(mails[0]
            .data
            .contains("Subject: pg_hardstorage: backup of demo succeeded on "));
        assert!(mails[1]
            .data
            .contains("Subject: pg_hardstorage: backup of demo failed on "));
        assert!(mails[1].data.contains(&code), "{}", mails[1].data);
    }
}

#[test]
fn wal_stream_reports_a_stall_its_stop_and_a_failure() {
    let mut pg = PgCluster::start(PgOptions::default()).expect("start PostgreSQL");
    let s = Scratch::new();
    let (url, conn) = init_repo(&s, &pg);
    let hooks = HttpSink::start(HttpBehaviour::Status(200)).unwrap();
    let config = write_config(&s, &hooks, None, "    wal_stall_after: 2s\n");

    let mut streamer = Streamer::start(
        &s,
        "demo",
        &conn,
        &url,
        &["--config", config.to_str().unwrap()],
    );
    // Streaming: the first partial is written within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = s.path("stream-demo.log");
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("streaming timeline")
    {
        assert!(Instant::now() < deadline, "the stream did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert!(streamer.is_running());
    // The server goes away: after wal_stall_after, one stall. (A start slower than
    // wal_stall_after on a loaded machine may have reported one already: not counted.)
    let before = hook_events(&s, &hooks.requests(), "wal_stream.stalled").len();
    pg.stop().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let stalled = loop {
        let reqs = hooks.requests();
        let got = hook_events(&s, &reqs, "wal_stream.stalled");
        if let Some(e) = got.into_iter().nth(before) {
            break e;
        }
        assert!(Instant::now() < deadline, "no stall notification: {reqs:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(stalled["severity"], "warning");
    assert_eq!(stalled["figures"]["streaming"], false);
    assert!(
        stalled["message"]
            .as_str()
            .unwrap()
            .contains("not connected"),
        "{stalled}"
    );
    let (status, _) = streamer.stop();
    assert!(status.success(), "{status:?}");
    let reqs = hooks.requests();
    assert_eq!(
        hook_events(&s, &reqs, "wal_stream.stalled").len(),
        before + 1,
        "{reqs:?}"
    );
    let stopped = hook_events(&s, &reqs, "wal_stream.stopped");
    assert_eq!(stopped.len(), 1, "{reqs:?}");
    assert!(
        stopped[0]["figures"]["durable_lsn"].is_string(),
        "{}",
        stopped[0]
    );

    // A stream that cannot start is a failure, with the error's code.
    let r = run(
        &s,
        &hooks,
        &config,
        &[
            "wal",
            "stream",
            "demo",
            "--pg-connection",
            "host=127.0.0.1 port=1 user=x",
        ],
        false,
    );
    assert_ne!(r.status, 0);
    let code = r.err_code();
    let reqs = hooks.wait_for(reqs.len() + 2, Duration::from_secs(5));
    let failed = hook_events(&s, &reqs, "wal_stream.failed");
    assert_eq!(failed.len(), 1, "{reqs:?}");
    assert_eq!(failed[0]["error"]["code"], code.as_str());
    assert_eq!(failed[0]["command"], "wal stream");
    assert!(slack_texts(&reqs)
        .iter()
        .any(|t| t.contains("wal stream of demo failed")));
    no_secrets(&r, "wal stream");
}

#[test]
fn sink_secrets_in_the_config_never_appear_in_output() {
    let s = Scratch::new();
    let hooks = HttpSink::start(HttpBehaviour::Status(200)).unwrap();
    // Secrets written into the file itself, the riskiest way to give them.
    let config = s.path("pg_hardstorage.yaml");
    std::fs::write(
        &config,
        format!(
            "repo: {repo}\nnotifications:\n\
             \x20 - type: slack\n    url: https://hooks.example.com/services/T0/B0/{SLACK_TOKEN}\n\
             \x20 - type: webhook\n    url: {hook}\n    secret: {HMAC_SECRET}\n\
             \x20 - type: email\n    host: 127.0.0.1\n    port: 1\n    from: a@example.com\n    to: [b@example.com]\n    username: u\n    password: {SMTP_PASSWORD}\n\
             deployments:\n  demo:\n    pg_connection: host=127.0.0.1 port=1 user=x\n",
            repo = s.repo_url(),
            hook = hooks.url(&format!("/hook/{URL_TOKEN}")),
        ),
    )
    .unwrap();
    for args in [
        &["doctor", "demo"][..],
        &["status", "demo"],
        &["list", "demo"],
        &["backup", "demo"],
        &["repo", "verify"],
    ] {
        for verbose in [false, true] {
            let r = run(&s, &hooks, &config, args, verbose);
            no_secrets(&r, &args.join(" "));
        }
    }

    // doctor lists the sinks, and says when a secret cannot be read (nothing is sent).
    let notifications = |r: &Run| -> Value {
        let v = r.json();
        v["result"]["deployments"][0]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "notifications")
            .cloned()
            .unwrap_or_else(|| panic!("no notifications check: {v}"))
    };
    let n0 = hooks.requests().len();
    let c = notifications(&run(&s, &hooks, &config, &["doctor", "demo"], false));
    assert_eq!(c["state"], "ok", "{c}");
    assert_eq!(c["values"]["sinks"], 3, "{c}");
    let detail = c["detail"].as_str().unwrap();
    assert!(
        detail.contains("slack sink (on failure, warning)"),
        "{detail}"
    );
    assert!(detail.contains("email sink"), "{detail}");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("secret: {HMAC_SECRET}"),
        "secret_file: /nonexistent/hook.secret",
    );
    std::fs::write(&config, text).unwrap();
    let c = notifications(&run(&s, &hooks, &config, &["doctor", "demo"], false));
    assert_eq!(c["state"], "issue", "{c}");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("cannot read secret_file /nonexistent/hook.secret"),
        "{c}"
    );
    assert!(c["fix"].as_str().unwrap().contains("*_file"), "{c}");
    assert_eq!(hooks.requests().len(), n0, "doctor sends nothing");

    // A sink the file gets wrong: refused (usage.config_invalid, exit 2) without
    // echoing the value.
    for bad in [
        format!("  - type: webhook\n    url: ftp://hooks.example.com/{URL_TOKEN}\n"),
        format!("  - type: slack\n    url: https://x.example.com/\n    secret: {HMAC_SECRET}\n"),
        format!(
            "  - type: email\n    host: h\n    from: a@b.c\n    to: [d@e.f]\n    starttls: off\n    username: u\n    password: {SMTP_PASSWORD}\n"
        ),
        format!("  - type: webhook\n    url: https://x.example.com/\n    secret: [{HMAC_SECRET}]\n"),
    ] {
        std::fs::write(&config, format!("notifications:\n{bad}")).unwrap();
        let r = run(&s, &hooks, &config, &["list", "demo"], false);
        assert_eq!(r.status, 2, "{bad}: {}", r.stdout);
        assert_eq!(r.err_code(), "usage.config_invalid");
        no_secrets(&r, &bad);
        let d = run(&s, &hooks, &config, &["doctor", "demo"], false);
        no_secrets(&d, &bad);
    }
}
