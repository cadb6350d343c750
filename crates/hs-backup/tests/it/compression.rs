//! The server compresses its archives with lz4 (`COMPRESSION 'lz4'`); one that refuses
//! gets asked again for the plain stream, and both give the same files.
//!
//! A real server is made to refuse by a proxy on 127.0.0.1 that rewrites the algorithm
//! in the client's `BASE_BACKUP` command to one no server knows (`lz5`, same length, so
//! the message framing is untouched). PostgreSQL then answers as a build without lz4
//! does: an error naming the compression, before its checkpoint.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hs_backup::{run_backup, BackupOptions, NoProgress};
use hs_testkit::{PgCluster, PgOptions};

use crate::support::{blocking, cfg, repo_env, R};

const ASKED: &[u8] = b"COMPRESSION 'lz4'";
const REWRITTEN: &[u8] = b"COMPRESSION 'lz5'";

/// Forwards connections to `127.0.0.1:upstream`, rewriting [`ASKED`] in what the client
/// sends; counts the rewrites and the `BASE_BACKUP` commands it saw.
struct RefusingProxy {
    port: u16,
    rewrites: Arc<AtomicUsize>,
    base_backups: Arc<AtomicUsize>,
}

impl RefusingProxy {
    fn start(upstream: u16) -> std::io::Result<RefusingProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let rewrites = Arc::new(AtomicUsize::new(0));
        let base_backups = Arc::new(AtomicUsize::new(0));
        let (rw, bb) = (rewrites.clone(), base_backups.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (rw, bb) = (rw.clone(), bb.clone());
                std::thread::spawn(move || pump(client, server, Some((rw, bb))));
                std::thread::spawn(move || pump(s2, c2, None));
            }
        });
        Ok(RefusingProxy {
            port,
            rewrites,
            base_backups,
        })
    }
}

/// Copies `from` to `to`; with counters, rewrites the compression asked for.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    rewrite: Option<(Arc<AtomicUsize>, Arc<AtomicUsize>)>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = &mut buf[..n];
        if let Some((rewrites, base_backups)) = &rewrite {
            if find(data, b"BASE_BACKUP").is_some() {
                base_backups.fetch_add(1, Ordering::SeqCst);
            }
            if let Some(at) = find(data, ASKED) {
                data[at..at + REWRITTEN.len()].copy_from_slice(REWRITTEN);
                rewrites.fetch_add(1, Ordering::SeqCst);
            }
        }
        if to.write_all(data).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_lz4_sends_the_plain_stream_with_the_same_files() -> R {
    let pg = PgCluster::start(PgOptions::default())?;
    blocking(|| pg.pgbench(&["-i", "-s", "3", "-q"]))?;
    blocking(|| pg.psql("CHECKPOINT"))?;
    let env = repo_env().await?;
    let dep = "lz4";
    let proxy = RefusingProxy::start(pg.port())?;
    let direct = pg.replication_conninfo();
    let via_proxy = direct.replace(&format!(":{}/", pg.port()), &format!(":{}/", proxy.port));
    assert_ne!(direct, via_proxy);

    // Refused, asked again without compression: one rewrite, two commands, a backup.
    let mut opts = BackupOptions::new(dep);
    opts.full = true;
    let plain_backup = run_backup(&cfg(&via_proxy), &env.repo, &opts, &NoProgress).await?;
    assert_eq!(proxy.rewrites.load(Ordering::SeqCst), 1);
    assert_eq!(proxy.base_backups.load(Ordering::SeqCst), 2);
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
