//! Repository init/open, write/read round trips, dedup, confidentiality, tamper and crash tests.

use bytes::Bytes;
use hs_repo::{ChunkRef, ReadCursor, Repository};

use crate::support::{files_under, noise, page, Env};

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn init_twice_is_conflict_and_open_needs_marker() {
    let env = Env::new();
    assert_eq!(
        Repository::open(&env.url, &env.keyring)
            .await
            .unwrap_err()
            .code(),
        "notfound.repo"
    );
    let repo = Repository::init(&env.url, &env.keyring).await.unwrap();
    let err = Repository::init(&env.url, &env.keyring).await.unwrap_err();
    assert_eq!(err.code(), "conflict.repo_exists");
    assert!(err.suggestion().is_some());
    let again = Repository::open(&env.url, &env.keyring).await.unwrap();
    assert_eq!(again.id(), repo.id());
    assert_eq!(again.chunk_id(b"x"), repo.chunk_id(b"x"));
    assert_eq!(again.chunker_config(), &hs_repo::ChunkerConfig::default());

    // The marker is plaintext JSON with the documented fields.
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.repo_path().join("config")).unwrap()).unwrap();
    assert_eq!(marker["format"], "pg_hardstorage");
    assert_eq!(marker["version"], 3);
    assert_eq!(marker["repo_id"], repo.id());
    assert_eq!(marker["chunker"]["page_size"], 8192);
    assert_eq!(marker["pack_target_size"], 16 * MIB);

    // Another keyring cannot open it.
    let other = hs_crypt::Keyring::create(&env.dir.path().join("kr2").join("keyring")).unwrap();
    let err = Repository::open(&env.url, &other).await.unwrap_err();
    assert_eq!(err.code(), "auth.keyring_no_matching_identity");

    assert_eq!(
        Repository::open("ftp://host/x", &env.keyring)
            .await
            .unwrap_err()
            .code(),
        "usage.unsupported_scheme"
    );
}

#[tokio::test]
async fn write_finish_reopen_read_every_chunk() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    let mut w = repo.writer().await.unwrap();
    let mut refs = Vec::new();
    let mut datas = Vec::new();
    for i in 0..600u64 {
        let d = if i % 3 == 0 { noise(i, 8192) } else { page(i) };
        refs.push(w.add(Bytes::from(d.clone())).await.unwrap());
        datas.push(d);
    }
    // Odd sizes: empty, tiny, large.
    for d in [Vec::new(), b"x".to_vec(), noise(7777, 3 * MIB as usize + 5)] {
        refs.push(w.add(Bytes::from(d.clone())).await.unwrap());
        datas.push(d);
    }
    let stats = w.finish().await.unwrap();
    assert_eq!(stats.chunks, 603);
    assert_eq!(stats.new_chunks, 603);
    assert!(stats.packs >= 2, "{stats:?}");
    // No pack is much larger than the target unless it holds one big blob.
    for p in crate::support::files_under(&env.repo_path().join("data")) {
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(!(MIB + 64 * 1024..=3 * MIB).contains(&len), "{len}");
    }
    assert!(stats.stored_bytes > 0);
    assert!(repo.stored_bytes().await.unwrap() > stats.stored_bytes);

    let repo = Repository::open(&env.url, &env.keyring).await.unwrap();
    let reader = repo.reader().await.unwrap();
    assert_eq!(reader.indexed_chunks().await.unwrap(), 603);
    // The pack headers alone list every chunk (the index is rebuildable).
    let mut from_headers = std::collections::HashSet::new();
    for p in repo.list_packs().await.unwrap() {
        for e in repo.read_pack_header(&p.name).await.unwrap() {
            assert!(from_headers.insert(e.id));
        }
    }
    let written: std::collections::HashSet<_> = refs.iter().map(|r| r.id).collect();
    assert_eq!(from_headers, written);
    let mut tasks = Vec::new();
    for (r, d) in refs.iter().zip(datas) {
        let reader = reader.clone();
        let r = *r;
        tasks.push(tokio::spawn(async move {
            assert_eq!(&reader.read(&r).await.unwrap()[..], &d[..]);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let missing = ChunkRef::unplaced(repo.chunk_id(b"never written"), 13);
    assert_eq!(
        reader.read(&missing).await.unwrap_err().code(),
        "notfound.chunk"
    );
    let wrong_len = ChunkRef {
        len: refs[0].len + 1,
        ..refs[0]
    };
    assert_eq!(
        reader.read(&wrong_len).await.unwrap_err().code(),
        "verify.chunk_length_mismatch"
    );
}

#[tokio::test]
async fn same_data_twice_is_stored_once() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    let mut w = repo.writer().await.unwrap();
    for round in 0..2 {
        for i in 0..100u64 {
            let r = w.add(Bytes::from(page(i))).await.unwrap();
            assert_eq!(r.len, 8192, "round {round}");
        }
    }
    let s = w.finish().await.unwrap();
    assert_eq!((s.chunks, s.new_chunks), (200, 100));
    assert_eq!(s.logical_bytes, 200 * 8192);
    assert_eq!(s.new_logical_bytes, 100 * 8192);
    let before = files_under(&env.repo_path());

    // A second session dedups against the index and writes nothing.
    let mut w = repo.writer().await.unwrap();
    for i in 0..100u64 {
        w.add(Bytes::from(page(i))).await.unwrap();
    }
    let s2 = w.finish().await.unwrap();
    assert_eq!((s2.new_chunks, s2.packs, s2.stored_bytes), (0, 0, 0));
    assert_eq!(files_under(&env.repo_path()), before);
}

#[tokio::test]
async fn plaintext_never_reaches_the_repository() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    const MARK: &[u8] = b"SECRET-PLAINTEXT-MARKER-7f3a9c";
    let mut w = repo.writer().await.unwrap();
    let mut refs = Vec::new();
    // Compressible chunk full of markers, an incompressible one with a
    // marker inside, and one that is exactly the marker.
    let mut a = Vec::new();
    while a.len() < 8192 {
        a.extend_from_slice(MARK);
    }
    let mut b = noise(1, 8192);
    b[100..100 + MARK.len()].copy_from_slice(MARK);
    for d in [a, b, MARK.to_vec()] {
        refs.push(w.add(Bytes::from(d)).await.unwrap());
    }
    w.finish().await.unwrap();
    let mut m = crate::manifest::sample_manifest("dep1", "b1", &refs);
    m.label = String::from_utf8(MARK.to_vec()).unwrap();
    repo.put_manifest(&m).await.unwrap();

    let files = files_under(&env.repo_path());
    assert!(files.len() >= 5, "{files:?}");
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(MARK.len()).any(|w| w == MARK),
            "plaintext marker found in {}",
            f.display()
        );
    }
    assert_eq!(
        repo.load_manifest("dep1", "b1")
            .await
            .unwrap()
            .label
            .as_bytes(),
        MARK
    );
}

/// Writes `n` distinct pages and returns their references.
async fn write_pages(repo: &Repository, n: u64) -> Vec<ChunkRef> {
    let mut w = repo.writer().await.unwrap();
    let mut refs = Vec::new();
    for i in 0..n {
        refs.push(w.add(Bytes::from(page(i))).await.unwrap());
    }
    w.finish().await.unwrap();
    refs
}

#[tokio::test]
async fn chunks_are_stored_in_shared_frames() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    // 300 pages = 2.3 MiB: frames of FRAME_BYTES (128 pages) each.
    let refs = write_pages(&repo, 300).await;
    let mut entries = Vec::new();
    for p in repo.list_packs().await.unwrap() {
        for e in repo.read_pack_header(&p.name).await.unwrap() {
            entries.push((p.name.clone(), e));
        }
    }
    assert_eq!(entries.len(), 300);
    let frames: std::collections::HashSet<_> = entries
        .iter()
        .map(|(p, e)| (p.clone(), e.frame_offset))
        .collect();
    let per_frame = hs_repo::FRAME_BYTES / 8192;
    assert_eq!(frames.len(), 300usize.div_ceil(per_frame), "{frames:?}");
    for (_, e) in &entries {
        assert!(e.compressed);
        assert!(e.chunk_offset + e.raw_length <= e.frame_raw_length);
        assert!(e.frame_length < e.frame_raw_length / 4, "{e:?}");
    }
    // Reading every chunk of a frame decodes the frame once.
    let reader = repo.reader().await.unwrap();
    for (i, r) in refs.iter().enumerate() {
        assert_eq!(&reader.read(r).await.unwrap()[..], &page(i as u64)[..]);
    }
    assert_eq!(reader.frames_decoded(), frames.len() as u64);
    // Shared reads: the same bytes, in place in their frame, each page (at a multiple of
    // 8 KiB of a compressed frame) on a 4 KiB boundary, so it can be written O_DIRECT.
    for (i, r) in refs.iter().enumerate() {
        let (frame, range) = reader.read_in_frame(r).await.unwrap();
        let shared = frame.slice(range);
        assert_eq!(&shared[..], &page(i as u64)[..]);
        assert_eq!(
            shared.as_ptr().align_offset(hs_repo::FRAME_ALIGN),
            0,
            "page {i}"
        );
    }
    assert_eq!(reader.frames_decoded(), frames.len() as u64);
    // Without a cache, every read decodes its frame.
    let uncached = repo.reader_with_frame_cache(0).await.unwrap();
    for r in &refs[..10] {
        uncached.read(r).await.unwrap();
    }
    assert_eq!(uncached.frames_decoded(), 10);
    assert_eq!(uncached.frame_cache_bytes(), 0);
}

#[tokio::test]
async fn frame_cache_is_bounded() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    let refs = write_pages(&repo, 1000).await; // 8 frames of 1 MiB
    let limit = 3 * hs_repo::FRAME_BYTES + 100;
    let reader = repo.reader_with_frame_cache(limit).await.unwrap();
    assert_eq!(reader.frame_cache_limit(), limit);
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let (reader, refs) = (reader.clone(), refs.clone());
        tasks.push(tokio::spawn(async move {
            for r in refs.iter().skip(t).step_by(8) {
                reader.read(r).await.unwrap();
                assert!(reader.frame_cache_bytes() <= reader.frame_cache_limit());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(reader.frame_cache_bytes() <= limit);
    assert!(reader.frame_cache_bytes() >= hs_repo::FRAME_BYTES);
    // Reading the file again from the start evicts and re-decodes.
    let before = reader.frames_decoded();
    for r in &refs {
        reader.read(r).await.unwrap();
    }
    assert!(reader.frames_decoded() > before);
    assert!(reader.frame_cache_bytes() <= limit);
}

#[tokio::test]
async fn flipped_byte_in_a_frame_fails_exactly_its_chunks() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    let refs = write_pages(&repo, 300).await;
    let packs = repo.list_packs().await.unwrap();
    assert!(!packs.is_empty() && packs.len() <= 4, "{packs:?}");
    let entries = repo.read_pack_header(&packs[0].name).await.unwrap();
    // Damage the second frame of the first pack if it has one, else the first.
    let mut offsets: Vec<u32> = entries.iter().map(|e| e.frame_offset).collect();
    offsets.dedup();
    let victim = *offsets.last().unwrap();
    let damaged: std::collections::HashSet<_> = entries
        .iter()
        .filter(|e| e.frame_offset == victim)
        .map(|e| e.id)
        .collect();
    assert!(damaged.len() > 1);
    let path = env.repo_path().join(&packs[0].name);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[victim as usize + 60] ^= 0x01; // inside the sealed frame
    std::fs::write(&path, &bytes).unwrap();

    let reader = repo.reader().await.unwrap();
    let mut failed = std::collections::HashSet::new();
    // Twice: a failed decode is not cached, and good frames stay readable.
    for _ in 0..2 {
        for r in &refs {
            match reader.read(r).await {
                Ok(d) => assert_eq!(repo.chunk_id(&d), r.id),
                Err(e) => {
                    assert_eq!(e.code(), "verify.auth_tag_mismatch");
                    failed.insert(r.id);
                }
            }
        }
    }
    assert_eq!(failed, damaged);
    // A cursor fails exactly the same chunks, with the same code, and reads on past them.
    let mut failed = std::collections::HashSet::new();
    let mut cursor = ReadCursor::default();
    for r in &refs {
        match reader.read_next(&mut cursor, r).await {
            Ok((frame, range)) => assert_eq!(repo.chunk_id(&frame[range]), r.id),
            Err(e) => {
                assert_eq!(e.code(), "verify.auth_tag_mismatch");
                failed.insert(r.id);
            }
        }
    }
    assert_eq!(failed, damaged);
}

#[tokio::test]
async fn a_cursor_reads_what_single_reads_do_in_any_order() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    let refs = write_pages(&repo, 300).await;
    let packs: std::collections::HashSet<_> = refs.iter().map(|r| r.pack).collect();
    assert!(packs.len() > 1, "{packs:?}");
    let frames = (300usize).div_ceil(hs_repo::FRAME_BYTES / 8192) as u64;

    // In order, without a frame cache: each frame is decoded once, as the cursor keeps
    // the frame of the last chunk.
    let reader = repo.reader_with_frame_cache(0).await.unwrap();
    let mut cursor = ReadCursor::default();
    for (i, r) in refs.iter().enumerate() {
        let (frame, range) = reader.read_next(&mut cursor, r).await.unwrap();
        assert_eq!(&frame[range], &page(i as u64)[..], "page {i}");
    }
    assert_eq!(reader.frames_decoded(), frames);

    // Out of order: repeats, jumps back, backwards, across packs, and a reference that
    // names a pack without its chunk (found through the index).
    let wrong_pack = refs.iter().find(|r| r.pack != refs[7].pack).unwrap().pack;
    let mut misplaced = refs[7];
    misplaced.pack = wrong_pack;
    let mut order: Vec<(u64, ChunkRef)> = Vec::new();
    for i in [5u64, 5, 6, 0, 299, 298, 150, 151, 152, 10, 9, 8, 160, 299] {
        order.push((i, refs[i as usize]));
    }
    order.insert(8, (7, misplaced));
    order.push((7, misplaced));
    order.push((8, refs[8]));
    let reader = repo.reader().await.unwrap();
    let mut cursor = ReadCursor::default();
    for (i, r) in &order {
        let (frame, range) = reader.read_next(&mut cursor, r).await.unwrap();
        assert_eq!(&frame[range], &page(*i)[..], "page {i}");
    }
    assert!(reader.loaded_index());

    // A reference whose length is not the chunk's fails as a single read does, and the
    // cursor reads on.
    let mut bad = refs[11];
    bad.len += 1;
    let mut cursor = ReadCursor::default();
    reader.read_next(&mut cursor, &refs[10]).await.unwrap();
    let e = reader.read_next(&mut cursor, &bad).await.unwrap_err();
    assert_eq!(e.code(), reader.read(&bad).await.unwrap_err().code());
    let (frame, range) = reader.read_next(&mut cursor, &refs[12]).await.unwrap();
    assert_eq!(&frame[range], &page(12)[..]);
}

#[tokio::test]
async fn dropped_writer_leaves_no_dangling_index_entry() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    // A finished session first, so the index is not empty.
    let mut w = repo.writer().await.unwrap();
    let kept = w.add(Bytes::from(page(1))).await.unwrap();
    w.finish().await.unwrap();
    let index_before = files_under(&env.repo_path().join("index"));

    // Enough data for several packs, then drop without finish.
    let mut w = repo.writer().await.unwrap();
    let mut lost = Vec::new();
    for i in 0..1000u64 {
        lost.push(w.add(Bytes::from(noise(i + 10, 8192))).await.unwrap());
    }
    drop(w);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    assert_eq!(files_under(&env.repo_path().join("index")), index_before);
    let reader = Repository::open(&env.url, &env.keyring)
        .await
        .unwrap()
        .reader()
        .await
        .unwrap();
    for r in &lost {
        assert!(!reader.contains(&r.id).await.unwrap());
    }
    // Orphan packs are complete and self-describing: their headers open.
    let mut in_packs = std::collections::HashSet::new();
    for p in repo.list_packs().await.unwrap() {
        for e in repo.read_pack_header(&p.name).await.unwrap() {
            in_packs.insert(e.id);
        }
    }
    assert!(in_packs.contains(&kept.id));
    assert_eq!(reader.indexed_chunks().await.unwrap(), 1);
    reader.read(&kept).await.unwrap();
    // No temp files are visible as objects.
    for o in repo.backend().list("").await.unwrap() {
        assert!(!o.name.contains(".tmp-"), "{}", o.name);
    }
}

#[tokio::test]
async fn periodic_index_objects_only_name_durable_packs() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    let index_dir = env.repo_path().join("index");

    // Finished session with an index object every 2 packs.
    let mut w = repo.writer().await.unwrap();
    w.set_index_interval(2);
    let mut refs = Vec::new();
    for i in 0..1200u64 {
        refs.push(w.add(Bytes::from(noise(i, 8192))).await.unwrap());
    }
    let s = w.finish().await.unwrap();
    assert!(s.packs >= 8, "{s:?}");
    assert!(files_under(&index_dir).len() >= 2);
    let reader = repo.reader().await.unwrap();
    assert_eq!(reader.indexed_chunks().await.unwrap(), 1200);
    for r in &refs {
        reader.read(r).await.unwrap();
    }

    // Dropped session: wait until a periodic index object appears, then
    // drop. Every indexed chunk must still be readable.
    let before = files_under(&index_dir).len();
    let mut w = repo.writer().await.unwrap();
    w.set_index_interval(2);
    let mut i = 10_000u64;
    while files_under(&index_dir).len() == before {
        w.add(Bytes::from(noise(i, 8192))).await.unwrap();
        i += 1;
        assert!(i < 100_000, "no periodic index object was written");
    }
    drop(w);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let reader = repo.reader().await.unwrap();
    assert!(reader.indexed_chunks().await.unwrap() > 1200);
    for j in 10_000..i {
        let d = noise(j, 8192);
        let r = ChunkRef::unplaced(repo.chunk_id(&d), 8192);
        if reader.contains(&r.id).await.unwrap() {
            assert_eq!(&reader.read(&r).await.unwrap()[..], &d[..]);
        }
    }
}

/// Replaces the repository's key objects with one wrapping `payload` for the env's keyring
/// (named by the BLAKE3 of its content, as the repository names them).
fn replace_key_object(env: &Env, payload: &serde_json::Value) {
    let wrapped = hs_crypt::wrap_secret(
        &serde_json::to_vec(payload).unwrap(),
        &[env.keyring.recipient()],
    )
    .unwrap();
    let keys = env.repo_path().join("keys");
    for k in files_under(&keys) {
        std::fs::remove_file(k).unwrap();
    }
    let name = blake3::hash(&wrapped).to_hex().to_string();
    std::fs::write(keys.join(name), &wrapped).unwrap();
}

/// The marker's digest sealed in the key objects tells damage from a newer format: the
/// same changed `version` is `verify.marker_invalid` (naming `config`) against the key
/// object init wrote, and `usage.unsupported_repo_version` against a key object that
/// seals the changed marker (as a newer release would write it). A changed `created`
/// leaves the repository usable and `verify_repo` reports it.
#[tokio::test]
async fn marker_changes_are_damage_unless_the_key_objects_seal_them() {
    let env = Env::new();
    Repository::init(&env.url, &env.keyring).await.unwrap();
    let root = env.repo_path();
    let marker_path = root.join("config");
    let original = std::fs::read_to_string(&marker_path).unwrap();

    // A changed `created`: still opens; verify names the marker.
    let changed = original.replacen("\"created\": \"2", "\"created\": \"1", 1);
    assert_ne!(changed, original);
    std::fs::write(&marker_path, &changed).unwrap();
    let repo = Repository::open(&env.url, &env.keyring).await.unwrap();
    let v = repo.verify_repo().await.unwrap();
    assert!(
        v.problems
            .iter()
            .any(|p| p.object == "config" && p.code == "verify.marker_invalid"),
        "{:#?}",
        v.problems
    );

    // A changed version against the key object init wrote: damage.
    let newer = original.replacen("\"version\": 3", "\"version\": 4", 1);
    assert_ne!(newer, original);
    std::fs::write(&marker_path, &newer).unwrap();
    let e = Repository::open(&env.url, &env.keyring).await.unwrap_err();
    assert_eq!(e.code(), "verify.marker_invalid", "{e}");
    assert!(e.to_string().contains("config"), "{e}");
    assert!(e.suggestion().unwrap().contains("copy of the repository"));

    // The same marker sealed by its key object (a newer release's repository): a
    // format this build does not read.
    let keys = files_under(&root.join("keys"));
    assert_eq!(keys.len(), 1);
    let plain = hs_crypt::unwrap_secret(&std::fs::read(&keys[0]).unwrap(), &env.keyring).unwrap();
    let mut payload: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(
        payload["marker_blake3"],
        blake3::hash(original.as_bytes()).to_hex().as_str()
    );
    payload["marker_blake3"] = blake3::hash(newer.as_bytes()).to_hex().as_str().into();
    replace_key_object(&env, &payload);
    let e = Repository::open(&env.url, &env.keyring).await.unwrap_err();
    assert_eq!(e.code(), "usage.unsupported_repo_version", "{e}");

    // And back: the original marker with the newer key object is damage again.
    std::fs::write(&marker_path, &original).unwrap();
    let repo = Repository::open(&env.url, &env.keyring).await.unwrap();
    let v = repo.verify_repo().await.unwrap();
    assert!(
        v.problems.iter().any(|p| p.object == "config"),
        "{:#?}",
        v.problems
    );

    // A key object from before sealed digests (no `marker_blake3`): it opens, and verify
    // warns that marker changes cannot be detected.
    payload.as_object_mut().unwrap().remove("marker_blake3");
    replace_key_object(&env, &payload);
    let repo = Repository::open(&env.url, &env.keyring).await.unwrap();
    let v = repo.verify_repo().await.unwrap();
    assert!(
        v.warnings
            .iter()
            .any(|w| w.object == "config" && w.code == "verify.marker_unsealed"),
        "{:#?}",
        v.warnings
    );
}

/// A parent whose list chunks hold another number of references than this version
/// writes (1024, as version 1 did) still gives the right hint at every position: the
/// cursor takes the group size from the parent's first list chunk.
#[tokio::test]
async fn parent_cursor_follows_the_parents_list_size() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    let mut w = repo.writer().await.unwrap();
    let mut refs: Vec<ChunkRef> = Vec::new();
    for i in 0..2500u64 {
        refs.push(w.add(Bytes::from(page(i))).await.unwrap());
    }
    let mut entry = crate::support::file("base/1/16384", Vec::new());
    for group in refs.chunks(1024) {
        let l = w.add(hs_repo::encode_chunk_list(group)).await.unwrap();
        entry.chunk_lists.push(l);
    }
    entry.size = 2500 * 8192;
    w.finish().await.unwrap();
    assert_ne!(hs_repo::CHUNK_LIST_GROUP, 1024);
    let m = crate::support::manifest_of(
        "demo",
        "20261126T050000Z",
        ("0/2000028", "0/2000100"),
        (
            "2026-11-26T05:00:00Z".to_string(),
            "2026-11-26T05:00:01Z".to_string(),
        ),
        vec![entry],
    );
    let parent = hs_repo::ParentFiles::new(m, repo.reader().await.unwrap());
    assert!(parent.cursor("base", "base/1/99").is_none());
    let mut c = parent.cursor("base", "base/1/16384").unwrap();
    for pos in [0usize, 1, 1023, 1024, 1500, 2047, 2048, 2499, 7, 1030] {
        assert_eq!(c.at(pos).await, Some(refs[pos]), "position {pos}");
    }
    assert_eq!(c.at(2500).await, None);
    assert_eq!(c.at(9000).await, None);
}
