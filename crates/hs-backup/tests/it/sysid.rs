//! A deployment is one cluster: `run_backup` and `wal_stream` of a server with another
//! system identifier are refused (`conflict.system_identifier_mismatch`) before they
//! write anything, whether the deployment holds backups or only streamed WAL, unless
//! `allow_system_id_change`.

use std::sync::Arc;
use std::time::Duration;

use hs_backup::{run_backup, wal_stream, BackupOptions, NoObserver, NoProgress};
use hs_testkit::{PgCluster, PgOptions};

use crate::support::{
    blocking, cfg, current_lsn, opts, repo_env, spawn_stream, stop_stream, wait_committed, Counter,
    R,
};

fn system_identifier(pg: &PgCluster) -> Result<String, Box<dyn std::error::Error>> {
    Ok(blocking(|| {
        pg.psql("SELECT system_identifier FROM pg_control_system()")
    })?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_stream_of_another_cluster_into_a_wal_only_deployment_are_refused() -> R {
    let a = PgCluster::start(PgOptions::default())?;
    let b = PgCluster::start(PgOptions::default())?;
    let (sys_a, sys_b) = (system_identifier(&a)?, system_identifier(&b)?);
    assert_ne!(sys_a, sys_b);
    let env = repo_env().await?;
    let dep = "one";
    let (conn_a, conn_b) = (
        cfg(&a.replication_conninfo()),
        cfg(&b.replication_conninfo()),
    );

    // Only WAL of cluster A so far (no backup).
    let (tx, h) = spawn_stream(
        conn_a.clone(),
        env.repo.clone(),
        opts(dep),
        Arc::new(Counter::default()),
    );
    let end = current_lsn(&a)?;
    wait_committed(&a, &env.repo, dep, end).await?;
    stop_stream(tx, h).await?;
    assert!(env.repo.list_backups(dep).await?.is_empty());
    let wal_before = env.repo.list_wal(dep).await?;

    // A backup of cluster B: refused, nothing listed, no lease left.
    let e = run_backup(&conn_b, &env.repo, &BackupOptions::new(dep), &NoProgress)
        .await
        .expect_err("backup of another cluster accepted");
    assert_eq!(e.code(), "conflict.system_identifier_mismatch", "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&sys_a) && msg.contains(&sys_b) && msg.contains(dep),
        "{msg}"
    );
    assert!(env.repo.list_backups(dep).await?.is_empty());
    assert!(env.repo.list_leases().await?.is_empty());

    // A stream of cluster B: refused too, before it stores any WAL.
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let mut o = opts(dep);
    o.slot = hs_backup::SlotMode::None;
    let e = tokio::time::timeout(
        Duration::from_secs(60),
        wal_stream(&conn_b, &env.repo, &o, rx, &NoObserver),
    )
    .await?
    .expect_err("stream of another cluster accepted");
    assert_eq!(e.code(), "conflict.system_identifier_mismatch", "{e}");
    let wal_after = env.repo.list_wal(dep).await?;
    assert_eq!(wal_after.segments, wal_before.segments);

    // Cluster A's own first backup is accepted.
    let done = run_backup(&conn_a, &env.repo, &BackupOptions::new(dep), &NoProgress).await?;
    assert_eq!(done.manifest.system_identifier, sys_a);
    // Now the backup decides: B is still refused, and accepted when allowed.
    let e = run_backup(&conn_b, &env.repo, &BackupOptions::new(dep), &NoProgress)
        .await
        .expect_err("backup of another cluster accepted");
    assert_eq!(e.code(), "conflict.system_identifier_mismatch");
    let mut allow = BackupOptions::new(dep);
    allow.allow_system_id_change = true;
    let done = run_backup(&conn_b, &env.repo, &allow, &NoProgress).await?;
    assert_eq!(done.manifest.system_identifier, sys_b);
    let listed = env.repo.list_backups(dep).await?;
    assert_eq!(listed.len(), 2);
    assert_eq!(
        listed.last().map(|m| m.system_identifier.as_str()),
        Some(sys_b.as_str())
    );
    assert!(env.repo.list_leases().await?.is_empty());
    Ok(())
}
