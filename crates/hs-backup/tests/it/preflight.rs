//! Preflight against real servers: a clean one, `wal_level = minimal`, a full slot
//! table, a role without REPLICATION, and SQL refused by pg_hba.

use hs_backup::{preflight, wal_stream, NoObserver, Severity};
use hs_testkit::{PgCluster, PgOptions};
use tokio::sync::watch;

use crate::support::{blocking, cfg, opts, repo_env, R};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_clean_server_has_no_fatal() -> R {
    let pg = PgCluster::start(PgOptions::default())?;
    let r = preflight(&cfg(&pg.replication_conninfo()), "main").await?;
    assert!(!r.has_fatal(), "{:?}", r.findings);
    assert_eq!(r.setting("wal_level"), Some("replica"));
    assert_eq!(r.slot, "pg_hardstorage_main");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_wal_level_minimal() -> R {
    let pg = PgCluster::start(PgOptions {
        extra_conf: vec!["wal_level = minimal".into(), "max_wal_senders = 0".into()],
        ..Default::default()
    })?;
    let conn = cfg(&pg.replication_conninfo());
    let r = preflight(&conn, "main").await?;
    let codes: Vec<&str> = r
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Fatal)
        .map(|f| f.code)
        .collect();
    assert!(codes.contains(&"preflight.wal_level.too_low"), "{r:?}");
    assert!(
        codes.contains(&"preflight.max_wal_senders.saturated"),
        "{r:?}"
    );
    for f in r.findings.iter().filter(|f| f.severity == Severity::Fatal) {
        assert!(
            f.suggestion
                .as_deref()
                .unwrap_or("")
                .contains("ALTER SYSTEM"),
            "{f:?}"
        );
    }
    // wal stream refuses to start.
    let env = repo_env().await?;
    let (_tx, rx) = watch::channel(false);
    let e = wal_stream(&conn, &env.repo, &opts("main"), rx, &NoObserver)
        .await
        .unwrap_err();
    assert!(e.code().starts_with("preflight."), "{e:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_slots_full_role_and_warnings() -> R {
    let pg = PgCluster::start(PgOptions {
        extra_conf: vec![
            "max_replication_slots = 2".into(),
            "max_slot_wal_keep_size = '1GB'".into(),
        ],
        ..Default::default()
    })?;
    blocking(|| -> std::io::Result<()> {
        pg.psql("SELECT pg_create_physical_replication_slot('other1')")?;
        pg.psql("SELECT pg_create_physical_replication_slot('other2')")?;
        pg.psql("CREATE ROLE norepl LOGIN PASSWORD 'pw1'")
            .map(|_| ())
    })?;
    let conn = cfg(&pg.replication_conninfo());
    let r = preflight(&conn, "main").await?;
    let has = |code: &str, sev: Severity| {
        r.findings
            .iter()
            .any(|f| f.code == code && f.severity == sev)
    };
    assert!(
        has("preflight.max_replication_slots.full", Severity::Fatal),
        "{r:?}"
    );
    assert!(
        has("preflight.max_slot_wal_keep_size.set", Severity::Warning),
        "{r:?}"
    );
    // Our own slot existing means a full slot table is fine.
    blocking(|| -> std::io::Result<()> {
        pg.psql("SELECT pg_drop_replication_slot('other2')")?;
        pg.psql("SELECT pg_create_physical_replication_slot('pg_hardstorage_main')")
            .map(|_| ())
    })?;
    let r = preflight(&conn, "main").await?;
    assert!(!r.has_fatal(), "{r:?}");

    // A role without REPLICATION.
    let norepl = cfg(&format!(
        "postgresql://norepl:pw1@127.0.0.1:{}/postgres",
        pg.port()
    ));
    let r = preflight(&norepl, "main").await?;
    let f = r
        .findings
        .iter()
        .find(|f| f.code == "preflight.role.no_replication")
        .ok_or("no role finding")?;
    assert_eq!(f.severity, Severity::Fatal);
    assert!(f
        .suggestion
        .as_deref()
        .unwrap_or("")
        .contains("ALTER ROLE norepl REPLICATION"));
    // The hint for operators of managed services that cannot grant it.
    assert!(f
        .suggestion
        .as_deref()
        .unwrap_or("")
        .contains("Managed services such as Amazon RDS"));
    assert_eq!(
        r.to_error().map(|e| e.code()),
        Some("preflight.role.no_replication")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_reports_what_it_cannot_see() -> R {
    // Only replication connections are allowed for hs_repl: SQL is refused by pg_hba.
    let pg = PgCluster::start(PgOptions::default())?;
    let hba = pg.data_dir().join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba)?;
    let text = text.replace(
        "host all all 127.0.0.1/32",
        "host all hs_repl 127.0.0.1/32 reject\nhost all all 127.0.0.1/32",
    );
    std::fs::write(&hba, text)?;
    blocking(|| pg.psql("SELECT pg_reload_conf()"))?;
    let r = preflight(&cfg(&pg.replication_conninfo()), "main").await?;
    assert!(!r.has_fatal(), "{r:?}");
    assert!(
        r.findings
            .iter()
            .any(|f| f.code == "preflight.visibility.sql_refused" && f.severity == Severity::Info),
        "{r:?}"
    );
    assert_eq!(r.setting("wal_level"), Some("replica"));
    Ok(())
}

/// `ALTER SYSTEM SET name = 'want'`, a reload, then waits until a new session sees it.
fn set_and_reload(pg: &PgCluster, name: &str, want: &str) -> std::io::Result<()> {
    pg.psql(&format!("ALTER SYSTEM SET {name} = '{want}'"))?;
    pg.psql("SELECT pg_reload_conf()")?;
    for _ in 0..100 {
        if pg.psql(&format!("SHOW {name}"))? == want {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err(std::io::Error::other(format!(
        "{name} never became {want:?}"
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_reports_summarize_wal_on_17_and_later() -> R {
    let pg = PgCluster::start(PgOptions::default())?;
    let major = pg.major()?;
    let conn = cfg(&pg.replication_conninfo());
    let info = |r: &hs_backup::PreflightReport| {
        r.findings
            .iter()
            .find(|f| f.code == "preflight.summarize_wal")
            .cloned()
    };
    let r = preflight(&conn, "main").await?;
    if major < 17 {
        eprintln!("skipped: summarize_wal exists from PostgreSQL 17 on; this server is {major}");
        assert_eq!(info(&r), None, "{r:?}");
        assert_eq!(r.setting("summarize_wal"), None);
        return Ok(());
    }
    let f = info(&r).ok_or("no summarize_wal finding")?;
    assert_eq!(f.severity, Severity::Info);
    assert!(f.message.starts_with("summarize_wal is off"), "{f:?}");
    assert!(!r.has_fatal(), "{r:?}");
    blocking(|| set_and_reload(&pg, "summarize_wal", "on"))?;
    let r = preflight(&conn, "main").await?;
    let f = info(&r).ok_or("no summarize_wal finding")?;
    assert!(f.message.starts_with("summarize_wal is on"), "{f:?}");
    assert_eq!(r.setting("summarize_wal"), Some("on"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_warns_of_idle_replication_slot_timeout_on_18_and_later() -> R {
    let pg = PgCluster::start(PgOptions::default())?;
    let major = pg.major()?;
    let conn = cfg(&pg.replication_conninfo());
    let code = "preflight.idle_replication_slot_timeout.set";
    let r = preflight(&conn, "main").await?;
    assert!(!r.findings.iter().any(|f| f.code == code), "{r:?}");
    if major < 18 {
        eprintln!(
            "skipped: idle_replication_slot_timeout exists from PostgreSQL 18 on; this server is {major}"
        );
        assert_eq!(r.setting("idle_replication_slot_timeout"), None);
        return Ok(());
    }
    // The default (0) is fine; a timeout is a warning, not fatal.
    assert!(
        r.setting("idle_replication_slot_timeout").is_some(),
        "{r:?}"
    );
    blocking(|| set_and_reload(&pg, "idle_replication_slot_timeout", "1h"))?;
    let r = preflight(&conn, "main").await?;
    let f = r
        .findings
        .iter()
        .find(|f| f.code == code)
        .ok_or("no idle_replication_slot_timeout warning")?;
    assert_eq!(f.severity, Severity::Warning);
    assert!(f.message.contains("1h"), "{f:?}");
    assert!(!r.has_fatal(), "{r:?}");
    Ok(())
}
