//! A manual throughput check (ignored by default): 1 GiB of page-like data
//! through ChunkWriter. Run with
//! `cargo test --release -p hs-repo --test it -- --ignored --nocapture throughput`.

use std::time::Instant;

use bytes::Bytes;
use hs_repo::Repository;

use crate::support::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_1gib_of_pages() {
    let total: u64 = std::env::var("HS_THROUGHPUT_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024)
        << 20;
    let env = Env::new();
    let repo = Repository::init(&env.url, &env.keyring).await.unwrap();
    // Pre-build a pool of distinct pages so generation is not measured.
    // HS_THROUGHPUT_KIND=noise uses incompressible pages (worst case).
    let noise = std::env::var("HS_THROUGHPUT_KIND").is_ok_and(|k| k == "noise");
    let pool: Vec<Bytes> = (0..4096u64)
        .map(|i| {
            Bytes::from(if noise {
                crate::support::noise(i, 8192)
            } else {
                crate::support::page(i)
            })
        })
        .collect();
    let mut w = repo.writer().await.unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    let mut i = 0u64;
    let mut refs = Vec::new();
    while n < total {
        // Make every page distinct (worst case for dedup) by stamping a counter.
        let mut p = pool[(i % 4096) as usize].to_vec();
        p[8..16].copy_from_slice(&i.to_le_bytes());
        refs.push(w.add(Bytes::from(p)).await.unwrap());
        n += 8192;
        i += 1;
    }
    let stats = w.finish().await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} MiB of distinct 8 KiB pages in {secs:.2}s = {:.1} MB/s; stored {} MiB in {} packs",
        n >> 20,
        n as f64 / secs / 1e6,
        stats.stored_bytes >> 20,
        stats.packs
    );

    // Read everything back with 16 concurrent tasks.
    let reader = repo.reader().await.unwrap();
    let start = Instant::now();
    let refs = std::sync::Arc::new(refs);
    let mut tasks = Vec::new();
    for t in 0..16usize {
        let (reader, refs) = (reader.clone(), refs.clone());
        tasks.push(tokio::spawn(async move {
            let mut got = 0u64;
            for r in refs.iter().skip(t).step_by(16) {
                got += reader.read(r).await.unwrap().len() as u64;
            }
            got
        }));
    }
    let mut got = 0u64;
    for t in tasks {
        got += t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(got, n);
    eprintln!(
        "read back {} MiB in {secs:.2}s = {:.1} MB/s",
        got >> 20,
        got as f64 / secs / 1e6
    );
}

/// Backs up the directories in `HS_THROUGHPUT_DIRS` (colon-separated, e.g.
/// copies of a PostgreSQL data directory taken some time apart) one after
/// the other into one repository, chunking each file by its class, and
/// prints throughput and deduplication per directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_data_dirs() {
    use hs_repo::{Chunker, FileClass};
    use std::io::Read;
    let Ok(dirs) = std::env::var("HS_THROUGHPUT_DIRS") else {
        eprintln!("set HS_THROUGHPUT_DIRS");
        return;
    };
    let env = Env::new();
    let repo = Repository::init(&env.url, &env.keyring).await.unwrap();
    for dir in dirs.split(':') {
        let root = std::path::Path::new(dir);
        let files = crate::support::files_under(root);
        let mut w = repo.writer().await.unwrap();
        let start = Instant::now();
        let mut buf = vec![0u8; 256 * 1024];
        let (mut rel_bytes, mut other_bytes) = (0u64, 0u64);
        for f in files {
            let rel = f.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let class = FileClass::of(&rel);
            let mut chunker = Chunker::new(class, repo.chunker_config());
            let Ok(mut file) = std::fs::File::open(&f) else {
                continue;
            };
            let mut chunks: Vec<Bytes> = Vec::new();
            loop {
                let n = file.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                match class {
                    FileClass::Relation => rel_bytes += n as u64,
                    FileClass::Other => other_bytes += n as u64,
                }
                chunker.push(&buf[..n], &mut |c| chunks.push(Bytes::copy_from_slice(c)));
                for c in chunks.drain(..) {
                    w.add(c).await.unwrap();
                }
            }
            chunker.finish(&mut |c| chunks.push(Bytes::copy_from_slice(c)));
            for c in chunks.drain(..) {
                w.add(c).await.unwrap();
            }
        }
        let s = w.finish().await.unwrap();
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "{dir}: {} MiB ({} MiB relation, {} MiB other) in {secs:.2}s = {:.1} MB/s; \
             chunks {} new {} ({:.1}% reused); new logical {} MiB stored {} MiB in {} packs",
            s.logical_bytes >> 20,
            rel_bytes >> 20,
            other_bytes >> 20,
            s.logical_bytes as f64 / secs / 1e6,
            s.chunks,
            s.new_chunks,
            100.0 * (s.chunks - s.new_chunks) as f64 / s.chunks.max(1) as f64,
            s.new_logical_bytes >> 20,
            s.stored_bytes >> 20,
            s.packs
        );
    }
}
