//! The server compresses its archives with lz4 (`COMPRESSION 'lz4'`); one that refuses
//! gets asked again for the plain stream, and both give the same files.
//!
//! A real server is made to refuse by a proxy on 127.0.0.1 that rewrites the algorithm
//! in the client's `BASE_BACKUP` command to one no server knows (`lz5`, same length, so
//! the message framing is untouched). PostgreSQL then answers as a build without lz4
//! does: an error naming the compression, before its checkpoint.

use std::sync::atomic::Ordering;

use hs_backup::{run_backup, BackupOptions, NoProgress};
use hs_testkit::{PgCluster, PgOptions};

use crate::proxy::{Proxy, Rewrite};
use crate::support::{blocking, cfg, repo_env, R};

/// The compression asked for, rewritten to one no server knows.
const REFUSED: Rewrite = Rewrite {
    from: b"COMPRESSION 'lz4'",
    to: b"COMPRESSION 'lz5'",
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_lz4_sends_the_plain_stream_with_the_same_files() -> R {
    let pg = PgCluster::start(PgOptions::default())?;
    blocking(|| pg.pgbench(&["-i", "-s", "3", "-q"]))?;
    blocking(|| pg.psql("CHECKPOINT"))?;
    let env = repo_env().await?;
    let dep = "lz4";
    let proxy = Proxy::start(pg.port(), Some(REFUSED), None)?;
    let direct = pg.replication_conninfo();
    let via_proxy = proxy.conninfo(&direct, pg.port());

    // Refused, asked again without compression: one rewrite, two commands, a backup.
    let mut opts = BackupOptions::new(dep);
    opts.full = true;
    let plain_backup = run_backup(&cfg(&via_proxy), &env.repo, &opts, &NoProgress).await?;
    assert_eq!(proxy.counts.to_server.load(Ordering::SeqCst), 1);
    assert_eq!(proxy.counts.base_backups.load(Ordering::SeqCst), 2);
    let plain = plain_backup.manifest.stats;
    assert!(plain.logical_bytes > 40 << 20, "{plain:?}");

    // Straight to the server: lz4. The same cluster, unchanged but for the checkpoint and
    // the WAL: every relation file decodes to the chunks the plain stream stored, found
    // through the parent backup's file of the same archive and path.
    let lz4_backup = run_backup(&cfg(&direct), &env.repo, &opts, &NoProgress).await?;
    let lz4 = lz4_backup.manifest.stats;
    assert_eq!(lz4.files, plain.files);
    let archives = |m: &hs_repo::BackupManifest| -> Vec<String> {
        m.archives.iter().map(|a| a.name.clone()).collect()
    };
    assert_eq!(archives(&lz4_backup.manifest), ["base.tar"]);
    assert_eq!(
        archives(&lz4_backup.manifest),
        archives(&plain_backup.manifest)
    );
    assert!(
        lz4.new_chunks * 10 < lz4.chunks,
        "the lz4 backup stored {} of {} chunks again: {lz4:?}",
        lz4.new_chunks,
        lz4.chunks
    );
    Ok(())
}
