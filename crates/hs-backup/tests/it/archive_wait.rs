//! A backup carries the WAL it needs in its own stream, so it must not wait for the
//! server's archiver: with `archive_mode = on` and an archive command that always fails,
//! `BASE_BACKUP`'s default would wait (and warn) until the segment is archived, forever.

use std::time::Duration;

use hs_backup::{run_backup, BackupOptions, NoProgress};
use hs_testkit::{PgCluster, PgOptions};

use crate::support::{cfg, repo_env, R};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_finishes_while_the_archiver_fails() -> R {
    let pg = PgCluster::start(PgOptions {
        extra_conf: vec![
            "archive_mode = on".into(),
            "archive_command = '/bin/false'".into(),
        ],
        ..PgOptions::default()
    })?;
    let env = repo_env().await?;
    let conn = cfg(&pg.replication_conninfo());
    let done = tokio::time::timeout(
        Duration::from_secs(120),
        run_backup(&conn, &env.repo, &BackupOptions::new("main"), &NoProgress),
    )
    .await
    .map_err(|_| "the backup waited for the failing archiver")??;
    // The archiver really is failing: nothing has been archived.
    let failed = pg.psql("SELECT archived_count = 0 AND failed_count > 0 FROM pg_stat_archiver")?;
    assert_eq!(failed.trim(), "t", "the archiver did not fail: {failed}");
    // And the backup is whole: its WAL (from the stream) is in it.
    let listed = env.repo.list_backups("main").await?;
    assert_eq!(listed.len(), 1);
    let wal = done.manifest.archives[0]
        .files
        .iter()
        .filter(|f| f.path.starts_with("pg_wal/") && f.size == 16 * 1024 * 1024)
        .count();
    assert!(wal >= 1, "no WAL segment in the backup");
    assert!(done.manifest.stop_lsn >= done.manifest.start_lsn);
    Ok(())
}
