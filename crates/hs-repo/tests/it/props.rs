//! Property: chunk a file with random split points, store, read back, reassemble.

use bytes::Bytes;
use hs_repo::{Chunker, ChunkerConfig, FileClass, Repository};
use proptest::prelude::*;

use crate::Env;

fn round_trip(data: Vec<u8>, cuts: Vec<usize>, relation: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let env = Env::new();
        let cfg = ChunkerConfig {
            page_size: 1024,
            cdc_min: 256,
            cdc_avg: 1024,
            cdc_max: 4096,
        };
        let repo = Repository::init_with(&env.url, &env.keyring, cfg.clone(), 1 << 20)
            .await
            .unwrap();
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
    });
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((any::<u8>(), 1usize..3000, any::<bool>()), 0..12).prop_map(|runs| {
        let mut v = Vec::new();
        for (i, (b, n, random)) in runs.into_iter().enumerate() {
            if random {
                v.extend(crate::noise(i as u64 + u64::from(b), n));
            } else {
                v.extend(std::iter::repeat_n(b, n));
            }
        }
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn chunk_store_read_reassemble(
        data in data(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        relation in any::<bool>(),
    ) {
        round_trip(data, cuts, relation);
    }
}
