//! `wal_fetch`, `wal_prefetch` and the partial-segment fallback on a real repository.

use hs_pitr::{wal_fetch, wal_prefetch, FetchOptions, FetchSource};

use crate::support::{segment, Env, D};

const MIB: usize = 1 << 20;

fn name(segno: u64) -> String {
    hs_repo::wal_segment_name(1, segno, MIB as u64)
}

#[tokio::test]
async fn fetch_segment_history_and_absent() {
    let env = Env::new().await;
    let s1 = segment(1, MIB);
    env.repo.put_wal_segment(D, &name(1), &s1).await.unwrap();
    let hist = b"1\t0/300000\tno recovery target specified\n";
    env.repo.put_timeline_history(D, 2, hist).await.unwrap();
    let dest = env.dest();
    let mut opts = FetchOptions::for_dest(&dest);
    opts.spool_dir = None;

    let out = wal_fetch(&env.repo, D, &name(1), &dest, &opts)
        .await
        .unwrap();
    assert_eq!(out.source, FetchSource::Repository);
    assert_eq!(out.segment_size, Some(MIB as u64));
    assert!(out.wants_prefetch());
    assert_eq!(std::fs::read(&dest).unwrap(), s1);

    let out = wal_fetch(&env.repo, D, "00000002.history", &dest, &opts)
        .await
        .unwrap();
    assert_eq!(out.segment_size, None);
    assert_eq!(std::fs::read(&dest).unwrap(), hist);

    std::fs::remove_file(&dest).unwrap();
    for absent in [name(2), "00000003.history".to_string()] {
        let e = wal_fetch(&env.repo, D, &absent, &dest, &opts)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "notfound.wal_segment", "{absent}");
    }
    assert!(!dest.exists());
    // Nothing but nothing left behind in pg_wal.
    assert_eq!(
        std::fs::read_dir(dest.parent().unwrap()).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn tampered_segment_is_not_written() {
    let env = Env::new().await;
    env.repo
        .put_wal_segment(D, &name(1), &segment(1, MIB))
        .await
        .unwrap();
    let obj = env
        .dir
        .path()
        .join("repo/deployments/main/wal/00000001")
        .join(name(1));
    let mut b = std::fs::read(&obj).unwrap();
    let n = b.len() - 20;
    b[n] ^= 1;
    std::fs::write(&obj, b).unwrap();
    let dest = env.dest();
    let e = wal_fetch(
        &env.repo,
        D,
        &name(1),
        &dest,
        &FetchOptions::for_dest(&dest),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "verify.auth_tag_mismatch");
    // Damage is never absence: PostgreSQL must stop recovery, not end it.
    assert!(!e.is_absent());
    assert!(!dest.exists());
}

#[tokio::test]
async fn partial_is_served_padded_only_at_the_end() {
    let env = Env::new().await;
    let dest = env.dest();
    let opts = FetchOptions::for_dest(&dest);
    // Timeline 1: segments 1, 2 complete; 3 in progress (written prefix only).
    for i in 1..=2 {
        env.repo
            .put_wal_segment(D, &name(i), &segment(i, MIB))
            .await
            .unwrap();
    }
    let prefix = segment(3, MIB)[..300_000].to_vec();
    env.repo
        .put_wal_partial(D, &name(3), &prefix)
        .await
        .unwrap();
    let out = wal_fetch(&env.repo, D, &name(3), &dest, &opts)
        .await
        .unwrap();
    assert_eq!(out.source, FetchSource::Partial);
    assert!(!out.wants_prefetch());
    let got = std::fs::read(&dest).unwrap();
    assert_eq!(
        got.len(),
        MIB,
        "padded to the segment size of the stored segments"
    );
    assert_eq!(&got[..prefix.len()], &prefix[..]);
    assert!(got[prefix.len()..].iter().all(|&b| b == 0));

    // A full-size partial (pre-padded, as pg_receivewal writes them) is served as is.
    let mut full_size = segment(33, MIB);
    full_size[500_000..].fill(0);
    env.repo
        .put_wal_partial(D, &name(3), &full_size)
        .await
        .unwrap();
    wal_fetch(&env.repo, D, &name(3), &dest, &opts)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), full_size);

    // A stale partial with a later complete segment stored is not served.
    env.repo
        .put_wal_segment(D, &name(5), &segment(5, MIB))
        .await
        .unwrap();
    let e = wal_fetch(&env.repo, D, &name(3), &dest, &opts)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "notfound.wal_segment");
    // Once the full segment is there it wins over the partial.
    let s3 = segment(3, MIB);
    env.repo.put_wal_segment(D, &name(3), &s3).await.unwrap();
    let out = wal_fetch(&env.repo, D, &name(3), &dest, &opts)
        .await
        .unwrap();
    assert_eq!(out.source, FetchSource::Repository);
    assert_eq!(std::fs::read(&dest).unwrap(), s3);
}

#[tokio::test]
async fn prefetch_fills_spool_and_fetch_uses_it() {
    let env = Env::new().await;
    let dest = env.dest();
    let mut opts = FetchOptions::for_dest(&dest);
    opts.prefetch = 3;
    let spool = env.pgdata().join("pg_hardstorage_spool");
    assert_eq!(opts.spool_dir.as_deref(), Some(spool.as_path()));
    let segs: Vec<Vec<u8>> = (0..=5).map(|i| segment(i, MIB)).collect();
    for i in 1..=5u64 {
        env.repo
            .put_wal_segment(D, &name(i), &segs[i as usize])
            .await
            .unwrap();
    }
    // Another timeline's segment must not be prefetched.
    env.repo
        .put_wal_segment(D, &hs_repo::wal_segment_name(2, 2, MIB as u64), &segs[0])
        .await
        .unwrap();

    let out = wal_fetch(&env.repo, D, &name(1), &dest, &opts)
        .await
        .unwrap();
    assert_eq!(out.source, FetchSource::Repository);
    let p = wal_prefetch(&env.repo, D, &name(1), MIB as u64, &opts)
        .await
        .unwrap();
    assert_eq!(p.fetched, [name(2), name(3), name(4)]);
    assert!(!p.locked);
    let p = wal_prefetch(&env.repo, D, &name(1), MIB as u64, &opts)
        .await
        .unwrap();
    assert_eq!(p.already_spooled, 3);
    assert!(p.fetched.is_empty());

    // Served from the spool: moved, not copied.
    let out = wal_fetch(&env.repo, D, &name(2), &dest, &opts)
        .await
        .unwrap();
    assert_eq!(out.source, FetchSource::Spool);
    assert_eq!(std::fs::read(&dest).unwrap(), segs[2]);
    assert!(!spool.join(name(2)).exists());

    // Prefetch past the end: only what exists.
    let p = wal_prefetch(&env.repo, D, &name(3), MIB as u64, &opts)
        .await
        .unwrap();
    assert_eq!(p.fetched, [name(5)]);
    assert_eq!(p.already_spooled, 1);

    // Jumping ahead prunes older spool entries.
    let out = wal_fetch(&env.repo, D, &name(5), &dest, &opts)
        .await
        .unwrap();
    assert_eq!(out.source, FetchSource::Spool);
    assert_eq!(std::fs::read(&dest).unwrap(), segs[5]);
    let left: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A held lock makes a second prefetcher a no-op.
    let lock = std::fs::File::open(spool.join(".lock")).unwrap();
    lock.lock().unwrap();
    let p = wal_prefetch(&env.repo, D, &name(1), MIB as u64, &opts)
        .await
        .unwrap();
    assert!(p.locked);
    drop(lock);

    hs_pitr::clean_spool(&spool).unwrap();
    assert!(!spool.exists());
}

/// restore_command latency for a 16 MiB segment: repository path (no spool)
/// and spool path. A measurement, not a test:
/// `cargo test --release -p hs-pitr --test it -- --ignored --nocapture fetch_latency`.
/// HS_WAL_SAMPLE=<a real WAL segment> measures real WAL.
#[tokio::test(flavor = "current_thread")]
#[ignore]
async fn fetch_latency() {
    let env = Env::new().await;
    let data = match std::env::var_os("HS_WAL_SAMPLE") {
        Some(p) => std::fs::read(p).unwrap(),
        None => segment(7, 16 * MIB),
    };
    let size = data.len() as u64;
    let n = 30u64;
    for i in 1..=n + 4 {
        let name = hs_repo::wal_segment_name(1, i, size);
        env.repo.put_wal_segment(D, &name, &data).await.unwrap();
    }
    let dest = env.dest();
    for sync in [true, false] {
        let mut opts = FetchOptions::for_dest(&dest);
        opts.sync = sync;
        let mut repo_t = Vec::new();
        let mut spool_t = Vec::new();
        let mut pre_t = Vec::new();
        for i in 1..=n {
            let name = hs_repo::wal_segment_name(1, i, size);
            let no_spool = FetchOptions {
                spool_dir: None,
                ..opts.clone()
            };
            let t = std::time::Instant::now();
            wal_fetch(&env.repo, D, &name, &dest, &no_spool)
                .await
                .unwrap();
            repo_t.push(t.elapsed());
            std::fs::remove_file(&dest).unwrap();
            // Spool path: prefetch (background in real use), then fetch.
            let t = std::time::Instant::now();
            let prev = hs_repo::wal_segment_name(1, i - 1, size);
            wal_prefetch(
                &env.repo,
                D,
                &prev,
                size,
                &FetchOptions {
                    prefetch: 1,
                    ..opts.clone()
                },
            )
            .await
            .unwrap();
            pre_t.push(t.elapsed());
            let t = std::time::Instant::now();
            let out = wal_fetch(&env.repo, D, &name, &dest, &opts).await.unwrap();
            spool_t.push(t.elapsed());
            assert_eq!(out.source, FetchSource::Spool);
            std::fs::remove_file(&dest).unwrap();
        }
        for v in [&mut repo_t, &mut spool_t, &mut pre_t] {
            v.sort();
        }
        let open_t = {
            let t = std::time::Instant::now();
            let kr = hs_crypt::Keyring::load(&env.dir.path().join("kr/keyring")).unwrap();
            hs_repo::Repository::open(env.repo.url(), &kr)
                .await
                .unwrap();
            t.elapsed()
        };
        println!(
            "sync={sync} size={size}: from repo median {:?} p90 {:?}; from spool median {:?} p90 {:?}; prefetch of one {:?}; Repository::open {:?}",
            repo_t[repo_t.len() / 2],
            repo_t[repo_t.len() * 9 / 10],
            spool_t[spool_t.len() / 2],
            spool_t[spool_t.len() * 9 / 10],
            pre_t[pre_t.len() / 2],
            open_t
        );
    }
}
