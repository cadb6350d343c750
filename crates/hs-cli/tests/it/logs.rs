//! What `wal stream` writes to stderr, as a DBA reads it under systemd or in a
//! terminal: each event once, routine events at INFO, values in PostgreSQL's form,
//! colour only on a terminal and never with `NO_COLOR`; and the stop summary's
//! durable position counts the stored `.partial`.

use std::time::Duration;

use hs_testkit::{PgCluster, PgOptions};

use crate::support::{archive_current_wal, init_repo, lsn, wait_streaming, Scratch, Streamer};

/// Lines of `log` holding `needle`.
fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn stream_logs_each_event_once_at_info_in_display_form_without_colour() {
    let pg = PgCluster::start(PgOptions::default()).expect("start PostgreSQL");
    let s = Scratch::new();
    let (url, conn) = init_repo(&s, &pg);
    let guard = Streamer::start(&s, "demo", &conn, &url, &[]);
    wait_streaming(&pg, "demo", Duration::from_secs(60));
    pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
        .unwrap();
    archive_current_wal(&pg, "demo");
    // WAL after the switch stays in the segment in progress, stored as a .partial
    // (every second on file://).
    pg.psql("INSERT INTO t SELECT g FROM generate_series(1, 1000) g")
        .unwrap();
    let wanted = lsn(&pg.psql("SELECT pg_current_wal_lsn()").unwrap());
    std::thread::sleep(Duration::from_secs(3));
    let (status, stdout) = guard.stop();
    assert!(status.success(), "wal stream exit {status:?}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("wal stream JSON");
    let r = &summary["result"];
    let (flushed, durable, received) = (
        lsn(r["flushed_lsn"].as_str().unwrap()),
        lsn(r["durable_lsn"].as_str().unwrap()),
        lsn(r["received_lsn"].as_str().unwrap()),
    );
    assert!(received >= wanted, "{summary}");
    assert_eq!(
        durable, received,
        "the stored .partial is durable: {summary}"
    );
    assert!(
        flushed < durable,
        "flush counts whole segments only: {summary}"
    );

    let log = std::fs::read_to_string(s.path("stream-demo.log")).unwrap();
    assert!(
        !log.contains('\u{1b}'),
        "colour codes without a terminal:\n{log}"
    );
    for debug_form in ["Some(", "Lsn(", "TimelineId(", "Severity"] {
        assert!(!log.contains(debug_form), "{debug_form} in the log:\n{log}");
    }
    let streaming = lines_with(&log, "streaming timeline 1 from ");
    assert_eq!(streaming.len(), 1, "logged once:\n{log}");
    assert!(streaming[0].contains(" INFO "), "routine, so INFO:\n{log}");
    assert_eq!(lines_with(&log, "stop requested").len(), 1, "{log}");
    let archived = lines_with(&log, " archived");
    assert!(!archived.is_empty(), "{log}");
    for line in &archived {
        let segment = line
            .split_whitespace()
            .find(|w| w.len() == 24 && w.chars().all(|c| c.is_ascii_hexdigit()))
            .unwrap_or_else(|| panic!("no segment name in {line:?}"));
        assert_eq!(lines_with(&log, segment).len(), 1, "{segment}:\n{log}");
    }
    assert!(lines_with(&log, " WARN ").is_empty(), "{log}");
}

/// Runs `wal stream` for a few seconds on a pseudo-terminal (util-linux `script`)
/// and returns what the terminal showed.
fn stream_on_a_terminal(s: &Scratch, conn: &str, url: &str, no_color: Option<&str>) -> String {
    let mut cmd = std::process::Command::new("script");
    cmd.args([
        "-qec",
        "exec timeout -s TERM 4 \"$HS_BIN\" wal stream demo --pg-connection \"$HS_CONN\" \
         --repo \"$HS_URL\" --keyring \"$HS_KEYRING\"",
        "/dev/null",
    ])
    .env("HS_BIN", env!("CARGO_BIN_EXE_pg_hardstorage"))
    .env("HS_CONN", conn)
    .env("HS_URL", url)
    .env("HS_KEYRING", s.keyring())
    .env_remove("NO_COLOR")
    .env_remove("PG_HARDSTORAGE_LOG");
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let out = cmd.output().expect("run script(1)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn log_colour_only_on_a_terminal_and_never_with_no_color() {
    let pg = PgCluster::start(PgOptions::default()).expect("start PostgreSQL");
    let s = Scratch::new();
    let (url, conn) = init_repo(&s, &pg);
    let tty = stream_on_a_terminal(&s, &conn, &url, None);
    assert!(tty.contains("streaming timeline 1"), "{tty}");
    assert!(tty.contains("\u{1b}["), "a terminal gets colour:\n{tty}");
    // The human stop summary (stdout, on the same terminal).
    let stop = tty
        .lines()
        .find(|l| l.starts_with("Stopped cleanly: timeline 1, received up to "))
        .unwrap_or_else(|| panic!("no stop summary:\n{tty}"));
    assert!(stop.contains(", durable up to "), "{stop}");
    let plain = stream_on_a_terminal(&s, &conn, &url, Some("1"));
    assert!(plain.contains("streaming timeline 1"), "{plain}");
    assert!(
        !plain.contains('\u{1b}'),
        "NO_COLOR=1 still coloured:\n{plain}"
    );
    // An empty NO_COLOR does not count (no-color.org).
    let empty = stream_on_a_terminal(&s, &conn, &url, Some(""));
    assert!(empty.contains("\u{1b}["), "{empty}");
}
