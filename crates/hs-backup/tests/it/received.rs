//! Every file of a backup is checked as it arrives against the server's
//! `backup_manifest`: a byte changed on the way fails the backup, and nothing is recorded.
//!
//! A proxy on 127.0.0.1 changes one letter of a marker string stored in a table, in what
//! a real server sends. The backup asks for the plain stream (`--max-rate`), so the
//! marker passes the proxy as the table's page carries it; the tar framing and the
//! lengths stay as they were, and only the file's CRC-32C can tell.

use std::sync::atomic::Ordering;

use hs_backup::{run_backup, BackupOptions, NoProgress};
use hs_repo::FileKind;
use hs_testkit::{PgCluster, PgOptions};

use crate::proxy::{Proxy, Rewrite};
use crate::support::{blocking, cfg, repo_env, R};

const CHANGED: Rewrite = Rewrite {
    from: b"HSMARKER",
    to: b"HSMARKES",
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_changed_on_the_way_fails_the_backup_and_records_nothing() -> R {
    let pg = PgCluster::start(PgOptions::default())?;
    blocking(|| {
        pg.psql(
            "CREATE TABLE marked (t text); \
             INSERT INTO marked SELECT repeat('HSMARKER', 20) FROM generate_series(1, 10); \
             CHECKPOINT",
        )
    })?;
    let env = repo_env().await?;
    let dep = "received";
    let proxy = Proxy::start(pg.port(), None, Some(CHANGED))?;
    let direct = pg.replication_conninfo();
    let via_proxy = proxy.conninfo(&direct, pg.port());

    let mut opts = BackupOptions::new(dep);
    // The plain stream: the marker is in it as stored in the table's page.
    opts.max_rate_kbps = Some(1_000_000);
    let err = run_backup(&cfg(&via_proxy), &env.repo, &opts, &NoProgress)
        .await
        .expect_err("a backup of changed bytes must fail");
    assert!(
        proxy.counts.to_client.load(Ordering::SeqCst) >= 1,
        "the proxy changed nothing"
    );
    assert_eq!(err.code(), "verify.received_checksum_mismatch", "{err}");
    let table_file = blocking(|| pg.psql("SELECT pg_relation_filepath('marked')"))?;
    assert!(
        err.to_string()
            .contains(&format!("{table_file}: the manifest lists")),
        "the error names {table_file}: {err}"
    );
    assert!(
        err.suggestion().is_some_and(|s| s.contains("--max-rate")),
        "{err:?}"
    );
    assert!(
        env.repo.list_backups(dep).await?.is_empty(),
        "a failed backup was recorded"
    );

    // Straight to the server, the same cluster backs up, every listed file checked.
    let done = run_backup(&cfg(&direct), &env.repo, &opts, &NoProgress).await?;
    let listed = hs_pg::backup_manifest_files(&done.manifest.pg_backup_manifest)?;
    let received: Vec<&str> = done
        .manifest
        .archives
        .iter()
        .flat_map(|a| &a.files)
        .filter(|f| f.kind == FileKind::File)
        .map(|f| f.path.as_str())
        .collect();
    // The WAL segments the backup carries are not listed (their archive_status files
    // are); every other file is, and was checked.
    let segments = received
        .iter()
        .filter(|p| p.strip_prefix("pg_wal/").is_some_and(|n| n.len() == 24))
        .count();
    assert!(segments >= 1, "{received:?}");
    assert!(listed.len() > 500, "{} files listed", listed.len());
    assert_eq!(done.files_checked, listed.len() as u64);
    assert_eq!(received.len(), listed.len() + segments);
    assert_eq!(env.repo.list_backups(dep).await?.len(), 1);
    Ok(())
}
