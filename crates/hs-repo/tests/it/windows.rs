//! Stores with a read window (object stores, SSH): frames read a window at a time.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use std::collections::HashSet;

use bytes::Bytes;
use hs_repo::{Backend, ChunkRef, FsBackend, ObjectInfo, ReadCursor, Repository};

use crate::support::{page, Env};

const WINDOW: u32 = 512 << 10;

/// `file://` with a read window of 512 KiB, counting the range reads of packs; a read
/// that touches `unreadable` (an object and a byte range: a bad sector) fails.
struct Windowed {
    inner: FsBackend,
    pack_reads: AtomicU64,
    unreadable: Mutex<Option<(String, Range<u64>)>>,
}

#[async_trait]
impl Backend for Windowed {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn read_window(&self) -> u32 {
        WINDOW
    }
    async fn put_if_absent(&self, name: &str, data: Bytes) -> hs_repo::Result<bool> {
        self.inner.put_if_absent(name, data).await
    }
    async fn put(&self, name: &str, data: Bytes) -> hs_repo::Result<()> {
        self.inner.put(name, data).await
    }
    async fn get(&self, name: &str) -> hs_repo::Result<Bytes> {
        self.inner.get(name).await
    }
    async fn get_range(&self, name: &str, offset: u64, len: u64) -> hs_repo::Result<Bytes> {
        if name.starts_with("data/") {
            self.pack_reads.fetch_add(1, Ordering::Relaxed);
        }
        if let Some((bad, range)) = &*self.unreadable.lock().unwrap() {
            if bad == name && offset < range.end && range.start < offset + len {
                let e = std::io::Error::other("bad sector");
                return Err(hs_repo::Error::io(e, false, name));
            }
        }
        self.inner.get_range(name, offset, len).await
    }
    async fn list(&self, prefix: &str) -> hs_repo::Result<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, name: &str) -> hs_repo::Result<()> {
        self.inner.delete(name).await
    }
    async fn stat(&self, name: &str) -> hs_repo::Result<Option<ObjectInfo>> {
        self.inner.stat(name).await
    }
}

/// A repository of 2000 distinct pages (16 frames) on a [`Windowed`] store.
async fn windowed_repo(env: &Env) -> (Repository, Arc<Windowed>, Vec<ChunkRef>) {
    let store = Arc::new(Windowed {
        inner: FsBackend::new(&env.url, &env.repo_path()),
        pack_reads: AtomicU64::new(0),
        unreadable: Mutex::new(None),
    });
    let repo = Repository::builder(&env.url)
        .backend(store.clone())
        .init(&env.keyring)
        .await
        .unwrap();
    let mut w = repo.writer().await.unwrap();
    let mut refs = Vec::new();
    for i in 0..2000u64 {
        refs.push(w.add(Bytes::from(page(i))).await.unwrap());
    }
    w.finish().await.unwrap();
    (repo, store, refs)
}

/// Every frame of every pack, as (pack, frame offset, frame length).
async fn frames(repo: &Repository) -> Vec<(String, u32, u32)> {
    let mut out = Vec::new();
    for p in repo.list_packs().await.unwrap() {
        for e in repo.read_pack_header(&p.name).await.unwrap() {
            out.push((p.name.clone(), e.frame_offset, e.frame_length));
        }
    }
    out.sort();
    out.dedup();
    out
}

#[tokio::test]
async fn frames_are_read_a_window_at_a_time_from_a_store_that_asks() {
    let env = Env::new();
    let (repo, store, refs) = windowed_repo(&env).await;
    let frames = frames(&repo).await;
    assert!(frames.len() >= 10, "{frames:?}");
    // A window holds several of these frames (1 MiB of pages seals to about 80 KiB).
    let sealed: u64 = frames.iter().map(|f| u64::from(f.2)).sum();
    assert!(
        sealed * 4 < frames.len() as u64 * u64::from(WINDOW),
        "{frames:?}"
    );

    let reader = repo.reader().await.unwrap();
    let before = store.pack_reads.load(Ordering::Relaxed);
    let mut cursor = ReadCursor::default();
    for (i, r) in refs.iter().enumerate() {
        let (frame, range) = reader.read_next(&mut cursor, r).await.unwrap();
        assert_eq!(&frame[range], &page(i as u64)[..], "page {i}");
    }
    assert_eq!(reader.frames_decoded(), frames.len() as u64);
    let windows = reader.range_reads();
    assert!(
        windows * 2 <= frames.len() as u64,
        "{windows} reads for {} frames",
        frames.len()
    );
    // The store saw those reads, and the header reads (two per pack) besides.
    let packs = repo.list_packs().await.unwrap().len() as u64;
    assert_eq!(
        store.pack_reads.load(Ordering::Relaxed) - before,
        windows + 2 * packs
    );
}

#[tokio::test]
async fn a_damaged_frame_or_an_unreadable_window_fails_only_its_own_frames() {
    let env = Env::new();
    let (repo, store, refs) = windowed_repo(&env).await;
    let all = frames(&repo).await;
    // The pack with the most frames (each writer lane fills a pack of its own).
    let pack = all
        .iter()
        .map(|f| &f.0)
        .max_by_key(|p| all.iter().filter(|f| &f.0 == *p).count())
        .unwrap()
        .clone();
    let frames: Vec<_> = all.iter().filter(|f| f.0 == pack).cloned().collect();
    assert!(frames.len() >= 6, "{all:?}");
    let entries = repo.read_pack_header(&pack).await.unwrap();
    let chunks_of = |offset: u32| -> HashSet<_> {
        entries
            .iter()
            .filter(|e| e.frame_offset == offset)
            .map(|e| e.id)
            .collect()
    };
    let failed = |reader: hs_repo::ChunkReader, code: &'static str| {
        let refs = refs.clone();
        async move {
            let mut failed = HashSet::new();
            let mut cursor = ReadCursor::default();
            for (i, r) in refs.iter().enumerate() {
                match reader.read_next(&mut cursor, r).await {
                    Ok((frame, range)) => assert_eq!(&frame[range], &page(i as u64)[..]),
                    Err(e) => {
                        assert_eq!(e.code(), code, "{e}");
                        failed.insert(r.id);
                    }
                }
            }
            (failed, reader.range_reads())
        }
    };

    // One flipped byte in the third frame: its chunks fail; the other frames of its
    // window, read in the same request, do not.
    let (_, victim, _) = frames[2];
    let path = env.repo_path().join(&pack);
    let good = std::fs::read(&path).unwrap();
    let mut bytes = good.clone();
    bytes[victim as usize + 60] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let (lost, _) = failed(repo.reader().await.unwrap(), "verify.auth_tag_mismatch").await;
    assert_eq!(lost, chunks_of(victim));
    std::fs::write(&path, &good).unwrap();

    // A bad sector in the fourth frame: the window around it cannot be read, so each of
    // its frames is read on its own, and only the fourth fails.
    let (_, fourth, len) = frames[3];
    let bad = u64::from(fourth) + 100..u64::from(fourth + len) - 100;
    *store.unreadable.lock().unwrap() = Some((pack.clone(), bad));
    let (lost, reads) = failed(repo.reader().await.unwrap(), "io.read_failed").await;
    assert_eq!(lost, chunks_of(fourth));
    assert!(reads > all.len() as u64 / 4, "{reads}");
}

#[test]
fn remote_stores_ask_for_read_windows_and_file_does_not() {
    let env = Env::new();
    assert_eq!(hs_repo::open_backend(&env.url).unwrap().read_window(), 0);
    // Opened through their retrying wrapper, which passes the window on.
    for url in [
        "s3://bucket/prefix?endpoint=http://127.0.0.1:9&region=us-east-1",
        "gcs://bucket/prefix?endpoint=http://127.0.0.1:9&anonymous=true",
    ] {
        let b = hs_repo::open_backend(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(b.read_window(), hs_repo::REMOTE_READ_WINDOW, "{url}");
    }
}
