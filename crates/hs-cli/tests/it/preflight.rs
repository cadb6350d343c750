//! `wal preflight` prints every check it made with the value it saw, one ✓/✗ line each,
//! and a suggested fix under each ✗ (real servers: a clean one, and one with no free
//! slot and a `max_slot_wal_keep_size`).

use hs_testkit::{PgCluster, PgOptions};

use crate::support::{bin, hs, Scratch};

/// `wal preflight demo` with human output: (exit status, stdout).
fn preflight_human(s: &Scratch, conn: &str) -> (i32, String) {
    let out = bin()
        .args([
            "wal",
            "preflight",
            "demo",
            "--pg-connection",
            conn,
            "--keyring",
        ])
        .arg(s.keyring())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn preflight_prints_each_check_with_its_value() {
    let pg = PgCluster::start(PgOptions::default()).expect("start PostgreSQL");
    let s = Scratch::new();
    let conn = pg.replication_conninfo();
    let (status, text) = preflight_human(&s, &conn);
    assert_eq!(status, 0, "{text}");
    for line in [
        "✓ server version: ",
        "✓ wal_level: replica",
        "✓ WAL senders: ",
        "✓ replication slots: ",
        "✓ role: hs_repl (LOGIN, REPLICATION)",
        "✓ max_slot_wal_keep_size: -1 (unlimited)",
    ] {
        assert!(text.contains(line), "no {line:?}:\n{text}");
    }
    assert!(text.contains(" free (max_wal_senders = "), "{text}");
    assert!(
        text.contains("slot pg_hardstorage_demo will be created"),
        "{text}"
    );
    let version: u32 = pg.psql("SHOW server_version_num").unwrap().parse().unwrap();
    assert_eq!(
        text.contains("summarize_wal: "),
        version >= 170_000,
        "{text}"
    );
    assert!(!text.contains('✗'), "{text}");
    let json = hs(&s, &["wal", "preflight", "demo", "--pg-connection", &conn]).ok();
    let checks = json["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["state"] == "pass"), "{json}");
    assert!(checks
        .iter()
        .any(|c| c["name"] == "wal_level" && c["value"] == "replica"));
}

#[test]
fn preflight_puts_a_fix_under_each_failed_check() {
    let pg = PgCluster::start(PgOptions {
        extra_conf: vec![
            "max_replication_slots = 1".into(),
            "max_slot_wal_keep_size = '1GB'".into(),
        ],
        ..Default::default()
    })
    .expect("start PostgreSQL");
    pg.psql("SELECT pg_create_physical_replication_slot('other')")
        .unwrap();
    let s = Scratch::new();
    let (status, text) = preflight_human(&s, &pg.replication_conninfo());
    assert_eq!(status, 4, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    let at = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?}:\n{text}"))
    };
    let slots = at("✗ replication slots: 1 of 1 in use, 0 free");
    assert!(lines[slots].ends_with("(fatal)"), "{text}");
    let keep = at("✗ max_slot_wal_keep_size: 1GB (warning)");
    for (i, code) in [
        (slots, "preflight.max_replication_slots.full"),
        (keep, "preflight.max_slot_wal_keep_size.set"),
    ] {
        assert!(lines[i + 1].contains(code), "{text}");
        assert!(
            lines[i + 2].starts_with("    Suggested fix: ALTER SYSTEM SET"),
            "{text}"
        );
    }
    assert!(text.contains("✓ wal_level: replica"), "{text}");
}
