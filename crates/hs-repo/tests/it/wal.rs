//! WAL objects: round trips, idempotent re-put, conflicts, tampering, listing.

use hs_repo::{Repository, WalGap, WalSegmentEncoder};

use crate::support::{files_under, noise, Env};

const SEG: usize = 16 << 20;
const S1: &str = "000000010000000000000001";
const S2: &str = "000000010000000000000002";

/// A 16 MiB "segment": some noise per 8 KiB page and zeros, like real WAL.
fn segment(seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; SEG];
    for (i, page) in v.chunks_mut(8192).enumerate() {
        page[..2048].copy_from_slice(&noise(seed ^ i as u64, 2048));
    }
    v
}

#[tokio::test]
async fn segment_round_trip_idempotent_conflict() {
    let env = Env::new();
    let repo = Repository::init(&env.url, &env.keyring).await.unwrap();
    let data = segment(1);
    assert!(repo.put_wal_segment("db1", S1, &data).await.unwrap());
    assert_eq!(&repo.get_wal("db1", S1).await.unwrap()[..], &data[..]);
    // Re-put of identical content: false, nothing changed.
    assert!(!repo.put_wal_segment("db1", S1, &data).await.unwrap());
    // Different content under the same name.
    let mut other = data.clone();
    other[12345] ^= 1;
    let e = repo.put_wal_segment("db1", S1, &other).await.unwrap_err();
    assert_eq!(e.code(), "conflict.wal_segment_differs");
    assert!(e.suggestion().is_some());
    assert_eq!(&repo.get_wal("db1", S1).await.unwrap()[..], &data[..]);
    // Stored compressed and encrypted: smaller, and no plaintext page.
    let obj = env
        .repo_path()
        .join("deployments/db1/wal/00000001")
        .join(S1);
    let stored = std::fs::read(&obj).unwrap();
    assert!(stored.len() < SEG / 2, "{}", stored.len());
    assert!(!stored.windows(64).any(|w| w == &data[..64]));
    // Another deployment does not see it; reopened repo does.
    assert_eq!(
        repo.get_wal("db2", S1).await.unwrap_err().code(),
        "notfound.wal_segment"
    );
    let again = Repository::open(&env.url, &env.keyring).await.unwrap();
    assert_eq!(&again.get_wal("db1", S1).await.unwrap()[..], &data[..]);
}

/// The streamer's path: the segment pushed into an encoder as it arrives, the partial
/// stored several times as it grows, then the whole segment. Each stored object reads
/// back as exactly the bytes so far, and the completed segment is the same object
/// content as `put_wal_segment` stores (an identical re-put is idempotent across the
/// two paths; a differing one is a conflict).
#[tokio::test]
async fn encoded_partials_and_segment() {
    let env = Env::new();
    let repo = Repository::init(&env.url, &env.keyring).await.unwrap();
    let data = segment(3);
    let partial = format!("{S1}.partial");
    let mut enc = WalSegmentEncoder::new().unwrap();
    let mut at = 0;
    // Uneven pieces, a store after most of them, some stores with nothing new.
    for (i, step) in [10usize, 100, 5000, 1 << 20, 3 << 20, 77, 8 << 20]
        .into_iter()
        .enumerate()
    {
        enc.push(&data[at..at + step]).unwrap();
        at += step;
        for _ in 0..1 + i % 2 {
            repo.put_wal_partial_encoded("db1", S1, &mut enc, &data[..at])
                .await
                .unwrap();
            let back = repo.get_wal("db1", &partial).await.unwrap();
            assert_eq!(back.len(), at);
            assert!(back[..] == data[..at], "partial of {at} bytes differs");
        }
    }
    let stored = std::fs::read(
        env.repo_path()
            .join("deployments/db1/wal/00000001")
            .join(&partial),
    )
    .unwrap();
    assert!(stored.len() < at / 2, "{} of {at}", stored.len());
    enc.push(&data[at..]).unwrap();
    assert_eq!(enc.len(), SEG as u64);
    assert!(repo
        .put_wal_segment_encoded("db1", S1, enc, &data)
        .await
        .unwrap());
    assert!(repo.get_wal("db1", S1).await.unwrap()[..] == data[..]);
    assert!(!repo.put_wal_segment("db1", S1, &data).await.unwrap());
    let mut other = data.clone();
    other[SEG - 1] ^= 1;
    let mut enc = WalSegmentEncoder::new().unwrap();
    enc.push(&other).unwrap();
    let e = repo
        .put_wal_segment_encoded("db1", S1, enc, &other)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "conflict.wal_segment_differs");
    // An encoder out of step with the bytes given (a caller's bug) still stores the
    // bytes given, never what the encoder holds.
    let mut enc = WalSegmentEncoder::new().unwrap();
    enc.push(&other[..1000]).unwrap();
    repo.put_wal_partial_encoded("db1", S2, &mut enc, &data[..999])
        .await
        .unwrap();
    let back = repo.get_wal("db1", &format!("{S2}.partial")).await.unwrap();
    assert!(back[..] == data[..999]);
    assert!(repo
        .put_wal_segment_encoded("db1", S2, enc, &data)
        .await
        .unwrap());
    assert!(repo.get_wal("db1", S2).await.unwrap()[..] == data[..]);
}

#[tokio::test]
async fn bad_inputs_and_absent() {
    let env = Env::new();
    let repo = Repository::init(&env.url, &env.keyring).await.unwrap();
    let e = repo.get_wal("db1", S2).await.unwrap_err();
    assert_eq!(e.code(), "notfound.wal_segment");
    assert_eq!(
        repo.get_wal("db1", "00000002.history")
            .await
            .unwrap_err()
            .code(),
        "notfound.wal_segment"
    );
    assert_eq!(
        repo.get_wal("db1", "RECOVERYXLOG")
            .await
            .unwrap_err()
            .code(),
        "usage.invalid_wal_name"
    );
    assert_eq!(
        repo.put_wal_segment("db1", S1, &[0u8; 1000])
            .await
            .unwrap_err()
            .code(),
        "usage.wal_segment_size_invalid"
    );
    assert_eq!(
        repo.put_wal_segment("db1", "00000001000000000000000g", &[0u8; 1 << 20])
            .await
            .unwrap_err()
            .code(),
        "usage.invalid_wal_name"
    );
    assert_eq!(
        repo.put_wal_segment("../x", S1, &[0u8; 1 << 20])
            .await
            .unwrap_err()
            .code(),
        "usage.invalid_deployment_name"
    );
}

#[tokio::test]
async fn tamper_and_misplace_are_detected() {
    let env = Env::new();
    let repo = Repository::init(&env.url, &env.keyring).await.unwrap();
    repo.put_wal_segment("db1", S1, &segment(1)).await.unwrap();
    let dir = env.repo_path().join("deployments/db1/wal/00000001");
    let p1 = dir.join(S1);
    let good = std::fs::read(&p1).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(&p1, &bad).unwrap();
    let e = repo.get_wal("db1", S1).await.unwrap_err();
    assert_eq!(e.code(), "verify.auth_tag_mismatch");
    // A re-put against a damaged stored copy does not silently succeed.
    let e = repo
        .put_wal_segment("db1", S1, &segment(1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "verify.auth_tag_mismatch");
    // A valid object copied under another segment's name is refused.
    std::fs::write(&p1, &good).unwrap();
    std::fs::write(dir.join(S2), &good).unwrap();
    let e = repo.get_wal("db1", S2).await.unwrap_err();
    assert_eq!(e.code(), "verify.wal_object_misplaced");
    // Truncated.
    std::fs::write(dir.join(S2), &good[..20]).unwrap();
    let e = repo.get_wal("db1", S2).await.unwrap_err();
    assert_eq!(e.code(), "verify.auth_tag_mismatch");
}

#[tokio::test]
async fn partial_history_gap_and_listing() {
    let env = Env::new();
    let repo = Repository::init(&env.url, &env.keyring).await.unwrap();
    // Out of order on purpose; listing sorts.
    for name in [
        "000000020000000100000000",
        "0000000100000000000000FF",
        S2,
        S1,
    ] {
        repo.put_wal_segment("db1", name, &vec![7u8; 1 << 20])
            .await
            .unwrap();
    }
    let seg3 = "000000010000000000000003";
    repo.put_wal_partial("db1", seg3, b"first").await.unwrap();
    repo.put_wal_partial("db1", seg3, b"second, longer")
        .await
        .unwrap();
    assert_eq!(
        &repo
            .get_wal("db1", &format!("{seg3}.partial"))
            .await
            .unwrap()[..],
        b"second, longer"
    );
    repo.put_wal_partial("db1", "000000020000000100000001", &[1u8; 100])
        .await
        .unwrap();
    let hist = b"1\t0/5000000\tno recovery target specified\n";
    assert!(repo.put_timeline_history("db1", 2, hist).await.unwrap());
    assert!(!repo.put_timeline_history("db1", 2, hist).await.unwrap());
    assert_eq!(
        repo.put_timeline_history("db1", 2, b"other")
            .await
            .unwrap_err()
            .code(),
        "conflict.timeline_history_differs"
    );
    assert_eq!(
        &repo.get_wal("db1", "00000002.history").await.unwrap()[..],
        hist
    );
    let gap = WalGap {
        from_segment: "000000010000000000000004".into(),
        to_segment: "0000000100000000000000FE".into(),
        reason: "replication slot was dropped".into(),
        recorded_at: "2026-11-26T03:00:00Z".into(),
    };
    repo.put_wal_gap("db1", &gap).await.unwrap();
    repo.put_wal_gap("db1", &gap).await.unwrap();
    let backwards = WalGap {
        from_segment: S2.into(),
        to_segment: S1.into(),
        ..gap.clone()
    };
    assert_eq!(
        repo.put_wal_gap("db1", &backwards)
            .await
            .unwrap_err()
            .code(),
        "usage.invalid_wal_gap"
    );

    let l = repo.list_wal("db1").await.unwrap();
    let names: Vec<&str> = l.segments.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            S1,
            S2,
            "0000000100000000000000FF",
            "000000020000000100000000"
        ]
    );
    assert_eq!(l.segments[2].seg, 0xFF);
    assert_eq!(l.segments[3].timeline, 2);
    assert_eq!(l.segments[3].log, 1);
    assert_eq!(l.segments[3].segno(16 << 20), 256);
    assert!(l.segments.iter().all(|s| s.stored_bytes > 0));
    let partials: Vec<&str> = l.partials.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(partials, [seg3, "000000020000000100000001"]);
    assert_eq!(l.histories, [2]);
    assert_eq!(l.gaps, [gap]);

    repo.delete_wal_partial("db1", seg3).await.unwrap();
    repo.delete_wal_partial("db1", seg3).await.unwrap();
    assert_eq!(repo.list_wal("db1").await.unwrap().partials.len(), 1);
    assert_eq!(
        repo.get_wal("db1", &format!("{seg3}.partial"))
            .await
            .unwrap_err()
            .code(),
        "notfound.wal_segment"
    );
    assert_eq!(repo.list_wal("nobody").await.unwrap(), Default::default());
    assert!(files_under(&env.repo_path())
        .iter()
        .all(|p| !p.to_string_lossy().contains(".tmp-")));
}

/// Commit and read time of one 16 MiB segment. A measurement, not a test:
/// `cargo test --release -p hs-repo --test it -- --ignored --nocapture wal_timing`.
/// Set HS_WAL_SAMPLE to a real WAL segment file to measure on real WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn wal_timing() {
    let env = Env::new();
    let repo = Repository::init(&env.url, &env.keyring).await.unwrap();
    let data = match std::env::var_os("HS_WAL_SAMPLE") {
        Some(p) => std::fs::read(p).unwrap(),
        None => segment(9),
    };
    let mut put = Vec::new();
    let mut get = Vec::new();
    for i in 0..20u64 {
        let name = hs_repo::wal_segment_name(1, i + 1, data.len() as u64);
        let t = std::time::Instant::now();
        assert!(repo.put_wal_segment("db1", &name, &data).await.unwrap());
        put.push(t.elapsed());
        let t = std::time::Instant::now();
        assert_eq!(repo.get_wal("db1", &name).await.unwrap().len(), data.len());
        get.push(t.elapsed());
    }
    put.sort();
    get.sort();
    let stored = repo.list_wal("db1").await.unwrap().segments[0].stored_bytes;
    println!(
        "segment {} bytes -> stored {stored}; put median {:?} max {:?}; get median {:?} max {:?}",
        data.len(),
        put[put.len() / 2],
        put[put.len() - 1],
        get[get.len() / 2],
        get[get.len() - 1]
    );
}
