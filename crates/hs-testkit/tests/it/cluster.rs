//! Clusters started and queried the way the other crates use them: new ones, restored
//! copies (`start_existing`, `promoted_copy`), TLS, and the clean-up on drop.

use hs_testkit::{pg_bin, PgCluster, PgOptions};
use std::process::Command;

fn psql_url(url: &str, sql: &str) -> std::io::Result<String> {
    let out = Command::new(pg_bin("psql"))
        .arg("-XAtq")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg(url)
        .arg("-c")
        .arg(sql)
        .env_remove("PGPASSWORD")
        .env_remove("PGSSLMODE")
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn cluster_starts_and_roles_connect_over_tcp() {
    let pg = PgCluster::start(PgOptions::default()).expect("start cluster");
    assert_eq!(pg.psql("select 1").unwrap(), "1");
    assert_eq!(pg.psql("show wal_level").unwrap(), "replica");
    assert_eq!(pg.psql("show data_checksums").unwrap(), "on");

    // Superuser over TCP with SCRAM.
    let who = psql_url(&pg.superuser_conninfo(), "select current_user").unwrap();
    assert_eq!(who, "hs_admin");

    // hs_repl speaks the replication protocol, and only that is what it may do.
    let url = format!("{}?replication=true", pg.replication_conninfo());
    let ident = psql_url(&url, "IDENTIFY_SYSTEM").unwrap();
    let sysid = pg
        .psql("select system_identifier from pg_control_system()")
        .unwrap();
    assert!(ident.starts_with(&sysid), "{ident} vs {sysid}");

    // A wrong password is refused (SCRAM is really in force on TCP).
    let bad = pg
        .replication_conninfo()
        .replace(pg.replication_password(), "wrong");
    assert!(psql_url(&format!("{bad}?replication=true"), "IDENTIFY_SYSTEM").is_err());
}

#[test]
fn restored_copy_starts_with_start_existing() {
    let pg = PgCluster::start(PgOptions::default()).expect("start cluster");
    pg.psql("create table t(x int); insert into t select generate_series(1, 1000)")
        .unwrap();
    let dest = tempfile::Builder::new()
        .prefix("hs-testkit-copy-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        dest.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let copy = dest.path().join("data");
    // Like a restore: archive recovery that runs out of WAL, then promotes.
    pg.write_promotable_copy(&copy, "").unwrap();

    let mut restored = PgCluster::start_existing(&copy).expect("start restored copy");
    assert_ne!(restored.port(), pg.port());
    restored
        .wait_for_promotion(std::time::Duration::from_secs(60))
        .unwrap();
    assert_eq!(restored.psql("select count(*) from t").unwrap(), "1000");
    assert_eq!(restored.psql("select pg_is_in_recovery()").unwrap(), "f");
    let who = psql_url(&restored.superuser_conninfo(), "select current_user").unwrap();
    assert_eq!(who, "hs_admin");
    restored.stop().unwrap();
    assert!(!restored.is_running());
    drop(restored);
    assert!(
        copy.join("PG_VERSION").exists(),
        "start_existing must not delete the caller's dir"
    );
}

#[test]
fn ssl_cluster_verifies_against_its_ca() {
    let opts = PgOptions {
        ssl: true,
        ..PgOptions::default()
    };
    let pg = PgCluster::start(opts).expect("start ssl cluster");
    let ca = pg.ca_cert_path().expect("ca path").display().to_string();
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={ca}",
        pg.superuser_conninfo()
    );
    let ssl = psql_url(
        &url,
        "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
    )
    .unwrap();
    assert_eq!(ssl, "t");
}

#[test]
fn drop_removes_the_directory() {
    if std::env::var_os("HS_KEEP_TEST_DIRS").is_some() {
        return;
    }
    let pg = PgCluster::start(PgOptions::default()).expect("start cluster");
    let root = pg.root_dir().to_path_buf();
    assert!(root.exists());
    drop(pg);
    assert!(!root.exists());
}

#[test]
fn promoted_copy_is_on_the_next_timeline_and_removed_on_drop() {
    let pg = PgCluster::start(PgOptions::default()).expect("start cluster");
    pg.psql("create table t(x int); insert into t select generate_series(1, 100)")
        .unwrap();
    let copy = pg
        .promoted_copy("wal_keep_size = '64MB'\n")
        .expect("promoted copy");
    assert_ne!(copy.data_dir(), pg.data_dir());
    assert_eq!(copy.psql("select count(*) from t").unwrap(), "100");
    assert_eq!(copy.psql("select pg_is_in_recovery()").unwrap(), "f");
    assert_eq!(copy.psql("show wal_keep_size").unwrap(), "64MB");
    let wal = copy
        .psql("select pg_walfile_name(pg_current_wal_lsn())")
        .unwrap();
    assert!(wal.starts_with("00000002"), "{wal}");
    let who = psql_url(&copy.superuser_conninfo(), "select current_user").unwrap();
    assert_eq!(who, "hs_admin");
    if std::env::var_os("HS_KEEP_TEST_DIRS").is_none() {
        let data = copy.data_dir().to_path_buf();
        drop(copy);
        assert!(!data.exists(), "the copy outlived its cluster");
    }
}
