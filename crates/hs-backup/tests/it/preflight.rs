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
