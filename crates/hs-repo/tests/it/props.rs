//! Property: chunk a file with random split points, store, read back, reassemble.

use bytes::Bytes;
use hs_repo::{Chunker, ChunkerConfig, FileClass, Repository};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

use crate::support::Env;

/// Chunks `data` cut at `cuts`, stores the chunks in `repo` (shared by every case: a
/// case deduplicates against what earlier ones stored), reads them back, reassembles.
async fn round_trip(repo: &Repository, data: Vec<u8>, cuts: Vec<usize>, relation: bool) {
    let class = if relation {
        FileClass::Relation
    } else {
        FileClass::Other
    };
    let mut chunker = Chunker::new(class, repo.chunker_config());
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (data.len() + 1)).collect();
    cuts.sort();
    let mut prev = 0;
    for c in cuts.into_iter().chain([data.len()]) {
        chunker.push(&data[prev..c], &mut |ch| pieces.push(ch.to_vec()));
        prev = c;
    }
    chunker.finish(&mut |ch| pieces.push(ch.to_vec()));
    let mut w = repo.writer().await.unwrap();
    let mut refs = Vec::new();
    for p in pieces {
        refs.push(w.add(Bytes::from(p)).await.unwrap());
    }
    w.finish().await.unwrap();
    let reader = repo.reader().await.unwrap();
    let mut out = Vec::new();
    for r in &refs {
        out.extend_from_slice(&reader.read(r).await.unwrap());
    }
    assert_eq!(out, data);
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((any::<u8>(), 1usize..3000, any::<bool>()), 0..12).prop_map(|runs| {
        let mut v = Vec::new();
        for (i, (b, n, random)) in runs.into_iter().enumerate() {
            if random {
                v.extend(crate::support::noise(i as u64 + u64::from(b), n));
            } else {
                v.extend(std::iter::repeat_n(b, n));
            }
        }
        v
    })
}

/// 256 cases against one repository (opening a fresh one per case cost most of the time).
#[test]
fn chunk_store_read_reassemble() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let env = Env::new();
    let cfg = ChunkerConfig {
        page_size: 1024,
        cdc_min: 256,
        cdc_avg: 1024,
        cdc_max: 4096,
    };
    let repo = rt.block_on(async {
        Repository::builder(&env.url)
            .chunker(cfg)
            .pack_target_size(1 << 20)
            .init(&env.keyring)
            .await
            .unwrap()
    });
    let mut runner = TestRunner::new(ProptestConfig::with_cases(256));
    let strategy = (
        data(),
        prop::collection::vec(any::<usize>(), 0..8),
        any::<bool>(),
    );
    runner
        .run(&strategy, |(data, cuts, relation)| {
            rt.block_on(round_trip(&repo, data, cuts, relation));
            Ok(())
        })
        .unwrap();
}
