//! ChunkReader: fetch, open, decompress and verify chunks by id, with a
//! small shared cache of recently decoded frames.
//!
//! Chunks are stored in frames (several chunks compressed together, see
//! docs/repository-format.md). Reading a chunk reads and decodes its whole
//! frame, so the reader keeps recently decoded frames in a cache shared by
//! all clones, bounded by bytes ([`DEFAULT_FRAME_CACHE_BYTES`]), keyed by
//! (pack, frame offset), evicting the least recently used frame. Concurrent
//! reads of chunks of one frame wait for a single decode. Every chunk is
//! still verified against its id on every read, cached or not.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use hs_base::code;
use hs_chunk::ChunkId;
use hs_crypt::Domain;
use tokio::sync::OnceCell;

use crate::error::{Error, Result};
use crate::index::{Index, Location};
use crate::manifest::ChunkRef;
use crate::repo::Repository;

/// Default bound of the decoded-frame cache of a [`ChunkReader`] (64 MiB).
pub const DEFAULT_FRAME_CACHE_BYTES: usize = 64 << 20;

/// Reads chunks. Cheap to clone (an `Arc`), `Send + Sync`, usable from many
/// tasks at once. Holds the index as it was when created.
#[derive(Clone)]
pub struct ChunkReader {
    inner: Arc<ReaderInner>,
}

struct ReaderInner {
    repo: Repository,
    index: Index,
    cache: Mutex<FrameCache>,
    frames_decoded: AtomicU64,
}

type FrameKey = (u32, u32);
type FrameCell = Arc<OnceCell<Bytes>>;

struct Slot {
    cell: FrameCell,
    size: usize,
    tick: u64,
}

/// Least-recently-used frames, bounded by the sum of their plaintext sizes
/// (counted when a slot is reserved, before the decode finishes).
struct FrameCache {
    limit: usize,
    used: usize,
    tick: u64,
    slots: HashMap<FrameKey, Slot>,
    by_age: BTreeMap<u64, FrameKey>,
}

impl FrameCache {
    fn new(limit: usize) -> FrameCache {
        FrameCache {
            limit,
            used: 0,
            tick: 0,
            slots: HashMap::new(),
            by_age: BTreeMap::new(),
        }
    }

    /// The slot for `key`, created if absent; `None` if a frame of `size`
    /// bytes can never fit (then the caller decodes without caching).
    fn slot(&mut self, key: FrameKey, size: usize) -> Option<FrameCell> {
        if size > self.limit {
            return None;
        }
        self.tick += 1;
        let tick = self.tick;
        if let Some(s) = self.slots.get_mut(&key) {
            self.by_age.remove(&s.tick);
            s.tick = tick;
            self.by_age.insert(tick, key);
            return Some(s.cell.clone());
        }
        while self.used + size > self.limit {
            let Some((_, old)) = self.by_age.pop_first() else {
                break;
            };
            if let Some(s) = self.slots.remove(&old) {
                self.used -= s.size;
            }
        }
        let cell: FrameCell = Arc::new(OnceCell::new());
        self.used += size;
        self.by_age.insert(tick, key);
        self.slots.insert(
            key,
            Slot {
                cell: cell.clone(),
                size,
                tick,
            },
        );
        Some(cell)
    }

    /// Drops `key`'s slot if it is still `cell` (its decode failed).
    fn forget(&mut self, key: FrameKey, cell: &FrameCell) {
        if self
            .slots
            .get(&key)
            .is_some_and(|s| Arc::ptr_eq(&s.cell, cell))
        {
            if let Some(s) = self.slots.remove(&key) {
                self.used -= s.size;
                self.by_age.remove(&s.tick);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ChunkReader {
    pub(crate) fn new(repo: Repository, index: Index, cache_bytes: usize) -> ChunkReader {
        ChunkReader {
            inner: Arc::new(ReaderInner {
                repo,
                index,
                cache: Mutex::new(FrameCache::new(cache_bytes)),
                frames_decoded: AtomicU64::new(0),
            }),
        }
    }

    /// Whether the index knows the chunk.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.inner.index.map.contains_key(id)
    }

    /// Number of distinct chunks in the index.
    pub fn len(&self) -> usize {
        self.inner.index.map.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.inner.index.map.is_empty()
    }

    /// Bytes of decoded frames the cache holds now (including frames being
    /// decoded); never more than [`frame_cache_limit`](Self::frame_cache_limit).
    pub fn frame_cache_bytes(&self) -> usize {
        lock(&self.inner.cache).used
    }

    /// The bound of the decoded-frame cache in bytes.
    pub fn frame_cache_limit(&self) -> usize {
        lock(&self.inner.cache).limit
    }

    /// The pack that holds a chunk, according to this reader's index.
    pub(crate) fn pack_of(&self, id: &ChunkId) -> Option<&str> {
        let loc = self.inner.index.map.get(id)?;
        self.inner
            .index
            .pack_names
            .get(loc.pack as usize)
            .map(String::as_str)
    }

    /// How many frames this reader (and its clones) fetched and decoded so far.
    pub fn frames_decoded(&self) -> u64 {
        self.inner.frames_decoded.load(Ordering::Relaxed)
    }

    /// Reads one chunk: find its frame (in the cache, or range-read from its
    /// pack, open and decompress), slice the chunk out, and check that its
    /// keyed id matches (`verify.chunk_id_mismatch`). Unknown ids are
    /// `notfound.chunk`.
    pub async fn read(&self, r: &ChunkRef) -> Result<Bytes> {
        let inner = &self.inner;
        let Some(loc) = inner.index.map.get(&r.id).copied() else {
            return Err(Error::new(
                code::NOTFOUND_CHUNK,
                format!("chunk {} is not in the repository index", r.id),
            )
            .with_suggestion(
                "run a repository check; a backup references a chunk that is missing",
            ));
        };
        if loc.raw_length != r.len {
            return Err(Error::new(
                code::VERIFY_CHUNK_LENGTH_MISMATCH,
                format!(
                    "chunk {} is {} bytes in the index but {} in the reference",
                    r.id, loc.raw_length, r.len
                ),
            ));
        }
        let key = (loc.pack, loc.frame_offset);
        let slot = lock(&inner.cache).slot(key, loc.frame_raw_length as usize);
        let pack = &inner.index.pack_names[loc.pack as usize];
        let frame = match slot {
            Some(cell) => match cell.get_or_try_init(|| self.load_frame(&loc)).await {
                Ok(f) => f.clone(),
                Err(e) => {
                    lock(&inner.cache).forget(key, &cell);
                    return Err(name_frame_error(e, r, pack, &loc));
                }
            },
            None => self
                .load_frame(&loc)
                .await
                .map_err(|e| name_frame_error(e, r, pack, &loc))?,
        };
        let start = loc.chunk_offset as usize;
        let end = start + loc.raw_length as usize;
        let data = match frame.get(start..end) {
            Some(d) => d,
            None => {
                return Err(Error::new(
                    code::VERIFY_CHUNK_LENGTH_MISMATCH,
                    format!("chunk {} lies outside its frame in {pack}", r.id),
                ))
            }
        };
        if inner.repo.chunk_id(data) != r.id {
            return Err(Error::new(
                code::VERIFY_CHUNK_ID_MISMATCH,
                format!("chunk {} read from {pack} does not match its id", r.id),
            )
            .with_suggestion("run a repository check; the pack or index was damaged"));
        }
        Ok(Bytes::copy_from_slice(data))
    }

    /// Range-reads, opens and decompresses one frame (errors are named by the caller).
    async fn load_frame(&self, loc: &Location) -> Result<Bytes> {
        let inner = &self.inner;
        let pack = &inner.index.pack_names[loc.pack as usize];
        let sealed = inner
            .repo
            .inner
            .backend
            .get_range(
                pack,
                u64::from(loc.frame_offset),
                u64::from(loc.frame_length),
            )
            .await?;
        let plain = inner.repo.inner.master.open(Domain::Chunk, &sealed)?;
        let data = if loc.compressed {
            hs_chunk::decompress(&plain, loc.frame_raw_length as usize)?
        } else {
            plain
        };
        if data.len() != loc.frame_raw_length as usize {
            return Err(Error::new(
                code::VERIFY_CHUNK_LENGTH_MISMATCH,
                format!(
                    "a frame in {pack} at offset {} holds {} bytes, not the {} recorded",
                    loc.frame_offset,
                    data.len(),
                    loc.frame_raw_length
                ),
            )
            .with_suggestion("run a repository check; the pack or index was damaged"));
        }
        inner.frames_decoded.fetch_add(1, Ordering::Relaxed);
        Ok(Bytes::from(data))
    }
}

/// A frame that does not open or decompress (`verify.*`) is named: the chunk asked for,
/// the pack and the frame's offset (the underlying message names only the kind of
/// object). Storage errors (`io.*`, `unreachable.*`) keep their code, message and
/// whether a retry could help.
fn name_frame_error(e: Error, r: &ChunkRef, pack: &str, loc: &Location) -> Error {
    if !e.code().starts_with("verify.") {
        return e;
    }
    Error::new(
        e.code(),
        format!(
            "chunk {} in pack {pack} (frame at offset {}): {e}",
            r.id, loc.frame_offset
        ),
    )
    .with_suggestion(
        "the pack is damaged: `pg_hardstorage repo verify` lists the backups that read it; \
         see runbook 4 in docs/runbooks.md",
    )
    .with_source(e)
}
