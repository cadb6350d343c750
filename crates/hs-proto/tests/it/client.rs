//! Connections against real PostgreSQL 15 clusters: SCRAM, cleartext and md5
//! authentication, TLS modes and channel binding, IDENTIFY_SYSTEM and BASE_BACKUP,
//! SQL sessions for preflight, and the errors of each.

use std::collections::BTreeMap;

use hs_proto::{
    BackupEvent, BaseBackupOptions, ConnConfig, EntryKind, Lsn, ReplicationClient,
    ServerCompression, SqlState, SslMode,
};
use hs_testkit::{PgCluster, PgOptions};

use crate::support::{cfg, R};

/// Takes a base backup and checks its events; returns the files and their sizes.
async fn base_backup_checks(
    client: &mut ReplicationClient,
    tablespace: &str,
    compression: ServerCompression,
) -> Result<BTreeMap<String, u64>, Box<dyn std::error::Error>> {
    let opts = BaseBackupOptions {
        label: "hs-proto it".into(),
        fast_checkpoint: true,
        wal: true,
        manifest: true,
        max_rate_kbps: None,
        progress: true,
        incremental: false,
        wait_for_archive: false,
        compression,
    };
    let mut stream = client.base_backup(&opts).await?;
    let mut files: BTreeMap<String, u64> = BTreeMap::new();
    let mut archives = Vec::new();
    let mut current: Option<(String, u64, u64)> = None; // path, declared size, received
    let mut manifest = None;
    let mut start = None;
    let mut end = None;
    let mut saw_progress = false;
    let mut pg_version = Vec::new();
    while let Some(ev) = stream.next().await? {
        match ev {
            BackupEvent::Started {
                start_lsn,
                tablespaces,
                ..
            } => {
                // PostgreSQL lists the main data directory last, with NULL oid and location.
                assert_eq!(tablespaces.len(), 2, "{tablespaces:?}");
                let main = tablespaces.iter().find(|t| t.oid.is_none()).expect("main");
                assert!(main.location.is_none() && main.size_bytes.is_some());
                let ts = tablespaces.iter().find(|t| t.oid.is_some()).expect("ts");
                assert_eq!(ts.location.as_deref(), Some(tablespace));
                start = Some(start_lsn);
            }
            BackupEvent::ArchiveStart {
                name,
                tablespace_location,
            } => {
                if name == "base.tar" {
                    assert_eq!(tablespace_location, None);
                } else {
                    assert_eq!(tablespace_location.as_deref(), Some(tablespace));
                }
                archives.push(name)
            }
            BackupEvent::Entry(h) => {
                assert!(current.is_none(), "entry inside entry");
                if h.kind == EntryKind::File {
                    current = Some((h.path.clone(), h.size, 0));
                } else {
                    current = Some((h.path.clone(), 0, 0));
                }
            }
            BackupEvent::Data(d) => {
                let c = current.as_mut().expect("data outside an entry");
                if c.0 == "PG_VERSION" {
                    pg_version.extend_from_slice(&d);
                }
                c.2 += d.len() as u64;
            }
            BackupEvent::EntryEnd => {
                let (path, size, got) = current.take().expect("EntryEnd without Entry");
                assert_eq!(size, got, "size of {path}");
                files.insert(path, size);
            }
            BackupEvent::ArchiveEnd => assert!(current.is_none()),
            BackupEvent::Progress { .. } => saw_progress = true,
            BackupEvent::Manifest(m) => manifest = Some(m),
            BackupEvent::Finished { end_lsn, .. } => end = Some(end_lsn),
        }
    }
    assert_eq!(archives.len(), 2, "{archives:?}");
    assert_eq!(archives.last().map(String::as_str), Some("base.tar"));
    assert!(
        files.keys().any(|k| k.starts_with("PG_15_")),
        "tablespace archive content"
    );
    assert!(saw_progress);
    assert_eq!(files.get("global/pg_control"), Some(&8192));
    assert!(files.contains_key("PG_VERSION"));
    assert_eq!(String::from_utf8(pg_version)?.trim(), "15");
    assert!(
        files.keys().any(|k| k.starts_with("pg_wal/0000000")),
        "WAL included"
    );
    let manifest = manifest.expect("manifest");
    let json: serde_json::Value = serde_json::from_slice(&manifest)?;
    assert_eq!(json["PostgreSQL-Backup-Manifest-Version"], 1);
    let start = start.expect("Started");
    let end = end.expect("Finished");
    assert!(end >= start && start > Lsn(0));
    Ok(files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_identify_backup_and_errors() -> R {
    let ts_dir = tempfile::tempdir()?;
    let pg = PgCluster::start(PgOptions::default())?;
    let conninfo = pg.replication_conninfo();
    hs_testkit::chown_to_postgres(ts_dir.path())?;
    let ts = ts_dir.path().display().to_string();
    pg.psql(&format!("CREATE TABLESPACE ts1 LOCATION '{ts}'"))?;
    pg.psql("CREATE TABLE t1 TABLESPACE ts1 AS SELECT generate_series(1, 1000) AS i")?;

    // SCRAM over plain TCP (server has ssl off; sslmode defaults to prefer).
    let mut client = ReplicationClient::connect(&cfg(&conninfo)).await?;
    assert!(!client.is_tls());
    assert!(client.server_version_num() >= 150_000);
    let id = client.identify_system().await?;
    let sysid = pg.psql("SELECT system_identifier FROM pg_control_system()")?;
    assert_eq!(id.system_id, sysid);
    assert_eq!(id.timeline.0, 1);
    assert_eq!(id.dbname, None);
    assert_eq!(client.show("wal_level").await?, "replica");
    let e = client.show("no_such_setting").await.unwrap_err();
    assert_eq!(e.sqlstate(), Some("42704"));

    let plain = base_backup_checks(&mut client, &ts, ServerCompression::None).await?;
    // The connection is reusable after a finished backup.
    assert_eq!(client.identify_system().await?.system_id, sysid);
    // The archives compressed by the server (lz4) give the same events: the same files
    // (but the WAL each backup includes and its archive status) with the same sizes.
    let lz4 = base_backup_checks(&mut client, &ts, ServerCompression::Lz4).await?;
    let but_wal = |files: &BTreeMap<String, u64>| -> Vec<(String, u64)> {
        let files = files.iter().filter(|(k, _)| !k.starts_with("pg_wal/"));
        files.map(|(k, v)| (k.clone(), *v)).collect()
    };
    assert_eq!(but_wal(&lz4), but_wal(&plain));

    // Wrong password.
    let mut bad = cfg(&conninfo);
    bad.set_password(Some("definitely-wrong".into()));
    let e = ReplicationClient::connect(&bad).await.unwrap_err();
    assert_eq!(e.code(), "auth.password_failed", "{e}");
    assert_eq!(e.sqlstate(), Some("28P01"));
    assert!(!e.to_string().contains("definitely-wrong"));

    // No password at all, and no password file.
    let mut none = cfg(&conninfo);
    none.set_password(None);
    let e = ReplicationClient::connect(&none).await.unwrap_err();
    assert_eq!(e.code(), "auth.password_missing", "{e}");

    // Password from a .pgpass file (dbname field "replication").
    let dir = tempfile::tempdir()?;
    let passfile = dir.path().join("pgpass");
    std::fs::write(
        &passfile,
        format!(
            "127.0.0.1:{}:replication:hs_repl:{}\n",
            pg.port(),
            pg.replication_password()
        ),
    )?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600))?;
    }
    let pf = passfile.display().to_string();
    let c = ConnConfig::parse_with_env(
        &format!("host=127.0.0.1 port={} user=hs_repl", pg.port()),
        &|k| (k == "PGPASSFILE").then(|| pf.clone()),
    )?;
    let mut via_pgpass = ReplicationClient::connect(&c).await?;
    assert_eq!(via_pgpass.identify_system().await?.system_id, sysid);

    // sslmode=require against a server without TLS.
    let e = ReplicationClient::connect(&cfg(&format!("{conninfo}?sslmode=require")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "auth.tls_required", "{e}");

    // Unix socket: the testkit's pg_hba.conf has no `local replication` line, so the
    // server answers, and rejects the replication connection (28000).
    let e = ReplicationClient::connect(&cfg(&pg.socket_conninfo()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "auth.rejected", "{e}");
    assert_eq!(e.sqlstate(), Some("28000"));
    assert!(e.suggestion().is_some_and(|s| s.contains("pg_hba.conf")));

    // Nothing listens: connection refused.
    let port = hs_testkit::free_port()?;
    let e = ReplicationClient::connect(&cfg(&format!(
        "host=127.0.0.1 port={port} user=x password=y"
    )))
    .await
    .unwrap_err();
    assert_eq!(e.code(), "unreachable.connection_refused", "{e}");
    assert!(e.is_temporary());
    let e = ReplicationClient::connect(&cfg("host=no-such-host.invalid user=x password=y"))
        .await
        .unwrap_err();
    assert!(e.code().starts_with("unreachable."), "{e:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_modes_and_channel_binding() -> R {
    let pg = PgCluster::start(PgOptions {
        ssl: true,
        ..PgOptions::default()
    })?;
    let ca = pg.ca_cert_path().expect("CA cert").display().to_string();
    let base = pg.replication_conninfo();

    // verify-full with the right CA, channel binding required: SCRAM-SHA-256-PLUS.
    let c = cfg(&format!(
        "{base}?sslmode=verify-full&sslrootcert={ca}&channel_binding=require"
    ));
    assert_eq!(c.sslmode(), SslMode::VerifyFull);
    let mut client = ReplicationClient::connect(&c).await?;
    assert!(client.is_tls());
    client.identify_system().await?;

    // verify-ca and require.
    for mode in ["verify-ca", "require", "prefer"] {
        let mut client =
            ReplicationClient::connect(&cfg(&format!("{base}?sslmode={mode}&sslrootcert={ca}")))
                .await?;
        assert!(client.is_tls(), "{mode}");
        client.show("ssl").await?;
    }

    // verify-full checks `host` while connecting to `hostaddr`: the certificate covers
    // localhost, not wrong.example.
    let by_name = |host: &str| {
        cfg(&format!(
            "host={host} hostaddr=127.0.0.1 port={} user=hs_repl password={} sslmode=verify-full sslrootcert={ca}",
            pg.port(),
            pg.replication_password()
        ))
    };
    let mut ok = ReplicationClient::connect(&by_name("localhost")).await?;
    assert!(ok.is_tls());
    ok.identify_system().await?;
    let e = ReplicationClient::connect(&by_name("wrong.example"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "auth.tls_certificate_invalid", "{e:?}");
    // ... which verify-ca does not check.
    let c = cfg(&format!(
        "host=wrong.example hostaddr=127.0.0.1 port={} user=hs_repl password={} sslmode=verify-ca sslrootcert={ca}",
        pg.port(),
        pg.replication_password()
    ));
    assert!(ReplicationClient::connect(&c).await?.is_tls());

    // verify-full with a CA that did not sign the server certificate.
    let other = tempfile::tempdir()?;
    let other_ca = other.path().join("ca.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=other CA", "-keyout"])
        .arg(other.path().join("ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .stderr(std::process::Stdio::null())
        .status()?;
    assert!(status.success());
    let e = ReplicationClient::connect(&cfg(&format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        other_ca.display()
    )))
    .await
    .unwrap_err();
    assert_eq!(e.code(), "auth.tls_certificate_invalid", "{e:?}");

    // sslmode=disable never uses TLS (hba allows host connections either way).
    let mut plain = ReplicationClient::connect(&cfg(&format!("{base}?sslmode=disable"))).await?;
    assert!(!plain.is_tls());
    plain.identify_system().await?;
    plain.close().await?;

    // Only hostssl allowed: disable is rejected; allow retries with TLS, as libpq does.
    let hba = pg.data_dir().join("pg_hba.conf");
    std::fs::write(
        &hba,
        "local all all trust\n\
         hostssl all all 127.0.0.1/32 scram-sha-256\n\
         hostssl replication all 127.0.0.1/32 scram-sha-256\n",
    )?;
    pg.psql("SELECT pg_reload_conf()")?;
    let e = ReplicationClient::connect(&cfg(&format!("{base}?sslmode=disable")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "auth.rejected", "{e}");
    let allow = ReplicationClient::connect(&cfg(&format!("{base}?sslmode=allow"))).await?;
    assert!(allow.is_tls());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_and_md5_methods() -> R {
    for method in ["password", "md5"] {
        let pg = PgCluster::start(PgOptions {
            hba_method: method.into(),
            extra_conf: vec![
                "password_encryption = 'md5'".into(),
                "max_wal_senders = 1".into(),
            ],
            ..PgOptions::default()
        })?;
        // The role's password was stored before our conf line took effect; store it again as md5.
        pg.psql(&format!(
            "SET password_encryption = 'md5'; ALTER ROLE hs_repl PASSWORD '{}'",
            pg.replication_password()
        ))?;
        let mut bad = cfg(&pg.replication_conninfo());
        bad.set_password(Some("nope".into()));
        let e = ReplicationClient::connect(&bad).await.unwrap_err();
        assert_eq!(e.code(), "auth.password_failed", "{method}: {e}");
        // The rejected connection's backend may still hold the only walsender slot for a
        // moment after it answered; that error is temporary, so wait it out.
        let mut attempts = 0;
        let mut c = loop {
            match ReplicationClient::connect(&cfg(&pg.replication_conninfo())).await {
                Err(e) if e.code() == "unreachable.too_many_connections" && attempts < 50 => {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                other => break other?,
            }
        };
        c.identify_system().await?;
        // max_wal_senders = 1 and `c` holds the only walsender slot (the server checks
        // this before authentication).
        let e = ReplicationClient::connect(&cfg(&pg.replication_conninfo()))
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            "unreachable.too_many_connections",
            "{method}: {e}"
        );
        assert!(e.is_temporary());
        c.close().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_connection_for_preflight() -> R {
    let pg = PgCluster::start(PgOptions {
        ssl: true,
        ..Default::default()
    })?;
    // Same role and conninfo as the replication connection; a normal session on `postgres`.
    let mut c = ReplicationClient::connect_sql(&cfg(&pg.replication_conninfo())).await?;
    assert!(!c.is_replication());
    assert!(c.is_tls(), "sslmode=prefer uses TLS when offered");
    let rows = c
        .simple_query(
            "SELECT current_database(), current_user, (SELECT count(*) FROM pg_replication_slots)",
        )
        .await?;
    assert_eq!(rows[0][0].as_deref(), Some("postgres"));
    assert_eq!(rows[0][1].as_deref(), Some("hs_repl"));
    assert_eq!(rows[0][2].as_deref(), Some("0"));
    assert_eq!(c.show("wal_level").await?, "replica");
    // Replication commands are not available on it.
    assert!(c.identify_system().await.is_err());
    c.close().await?;

    // Without a dbname it defaults to `postgres`; with one, that database.
    let url = format!(
        "postgresql://hs_repl:{}@127.0.0.1:{}",
        pg.replication_password(),
        pg.port()
    );
    let mut c = ReplicationClient::connect_sql(&cfg(&url)).await?;
    let rows = c.simple_query("SELECT current_database()").await?;
    assert_eq!(rows[0][0].as_deref(), Some("postgres"));
    c.close().await?;
    let e = ReplicationClient::connect_sql(&cfg(&format!("{url}/nosuchdb")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "notfound.database", "{e}");

    // The replication connection is still what `connect` gives.
    let r = ReplicationClient::connect(&cfg(&pg.replication_conninfo())).await?;
    assert!(r.is_replication());
    r.close().await?;
    Ok(())
}
