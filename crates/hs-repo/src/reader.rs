//! ChunkReader: fetch, open, decompress and verify chunks by id, with a
//! small shared cache of recently decoded frames.
//!
//! Chunks are stored in frames (several chunks compressed together, see
//! docs/repository-format.md). Reading a chunk reads and decodes its whole
//! frame, so the reader keeps recently decoded frames in a cache shared by
//! all clones, bounded by bytes ([`DEFAULT_FRAME_CACHE_BYTES`]), keyed by
//! (pack, frame offset), evicting the least recently used frame. Concurrent
//! reads of chunks of one frame wait for a single decode. Every chunk is
//! still verified against its id on every read, cached or not. A frame's
//! buffer goes back to a small pool when the last holder drops it, and the
//! next frame is decoded into it: a restore decodes every frame of the
//! backup, and a fresh 1 MiB allocation for each either fragmented the heap
//! (RSS grew with the run) or, mapped on its own, cost a page fault per
//! 4 KiB.
//!
//! Finding a chunk: a reference that names its pack (manifest format 2 or 3) is
//! looked up in that pack's header, read once and kept in a small cache of
//! recently used headers ([`HEADER_CACHE_PACKS`]). So a reader's memory does
//! not grow with the repository. The repository index is loaded only when a
//! reference names no pack (format 1), or when the named pack is gone or does
//! not hold the chunk (gc deleted a pack whose chunks live on elsewhere, or the
//! pack is damaged and quarantined): then the chunk is read from wherever the
//! index finds it, as readers of format 1 always did.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use hs_base::code;
use hs_chunk::ChunkId;
use hs_crypt::Domain;
use tokio::sync::OnceCell;

use crate::error::{Error, Result};
use crate::index::Index;
use crate::manifest::{ChunkRef, PackId};
use crate::repo::Repository;
use hs_chunk::PackEntry;

/// Default bound of the decoded-frame cache of a [`ChunkReader`] (64 MiB).
pub const DEFAULT_FRAME_CACHE_BYTES: usize = 64 << 20;

/// Pack headers a [`ChunkReader`] keeps, as tables of their entries (40 bytes per chunk,
/// and at most 12 more to look ids up: about 1.8 MiB for a 16 MiB pack of pgbench
/// pages, which compress 17 to 1).
pub const HEADER_CACHE_PACKS: usize = 8;

/// Missing packs whose moved record a [`ChunkReader`] remembers (then it forgets all).
const MOVED_CACHE: usize = 4096;

/// Sealed bytes of read windows a [`ChunkReader`] keeps until their frames are decoded,
/// at most (or a quarter of the frame cache, if that is less); only for stores with a
/// [`Backend::read_window`](crate::Backend::read_window).
const READ_WINDOWS_BYTES: usize = 4 << 20;

/// A window longer than this many times the store's read window (frames larger than
/// the window) is not read whole.
const READ_WINDOW_MAX_FACTOR: u32 = 4;

/// A read window of a pack: its number and the byte range its frames cover.
struct Window {
    index: u32,
    start: u32,
    end: u32,
}

/// Free decoded-frame buffers kept for reuse, at most this many bytes (or a quarter
/// of the frame cache, if that is less).
const FRAME_POOL_BYTES: usize = 16 << 20;
/// Buffers larger than this (a frame of one huge chunk) are not kept.
const FRAME_POOL_MAX_BUFFER: usize = 4 << 20;

/// Free buffers for decoded frames (see the module docs).
struct FramePool {
    free: Vec<Vec<u8>>,
    bytes: usize,
    limit: usize,
}

impl FramePool {
    fn take(&mut self) -> Vec<u8> {
        let buf = self.free.pop().unwrap_or_default();
        self.bytes -= buf.capacity();
        buf
    }

    fn put(&mut self, buf: Vec<u8>) {
        let cap = buf.capacity();
        if cap > 0 && cap <= FRAME_POOL_MAX_BUFFER && self.bytes + cap <= self.limit {
            self.bytes += cap;
            self.free.push(buf);
        }
    }
}

/// A decoded frame whose buffer returns to its reader's pool when dropped (the
/// owner of the frame's `Bytes`, which the cache and the chunks read share). The
/// frame is `buf[start..]`, which starts on a [`FRAME_ALIGN`] boundary.
struct PooledFrame {
    buf: Vec<u8>,
    start: usize,
    pool: Weak<Mutex<FramePool>>,
}

impl AsRef<[u8]> for PooledFrame {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// Decoded frames start at addresses that are multiples of this (4 KiB), so pages
/// read with [`ChunkReader::read_in_frame`] can be written with `O_DIRECT` as they are.
pub const FRAME_ALIGN: usize = 4096;

impl Drop for PooledFrame {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            lock(&pool).put(std::mem::take(&mut self.buf));
        }
    }
}

/// Where a chunk is: its pack and its entry in that pack's header.
#[derive(Clone, Copy, Debug)]
struct Located {
    pack: PackId,
    entry: PackEntry,
}

/// A chunk found in a pack header: the pack that holds it (the one its reference names,
/// or another when gc repacked that one), that pack's table and the chunk's position in
/// it.
struct InPack {
    pack: PackId,
    map: PackMap,
    pos: usize,
}

impl InPack {
    fn located(&self) -> Located {
        Located {
            pack: self.pack,
            entry: self.map.entries[self.pos],
        }
    }
}

/// Entries of a pack a [`ReadCursor`] copies from the header at most, from the chunk it
/// looked up on: the chunks that follow it in the pack (256 pages: two frames). 40 bytes
/// each. It copies [`CURSOR_RUN_FIRST`] at first, and twice as many as were followed in
/// the last run after that, so that references that do not follow each other (pages
/// deduplicated from many backups) cost a short copy per lookup, not 10 KiB.
const CURSOR_RUN: usize = 256;
/// The entries a [`ReadCursor`] copies at a lookup that follows no run of followed ones.
const CURSOR_RUN_FIRST: usize = 16;

/// What [`ChunkReader::read_next`] remembers of the chunks it read last: the pack
/// entries that follow the last chunk looked up, and the decoded frame of the last
/// chunk read. The next reference, when it names the same pack and its chunk is the
/// next of those entries, is found without a lookup, and read from the same frame
/// without going through the shared cache. One per sequence of references (a file, or
/// part of one). It holds one decoded frame and at most [`CURSOR_RUN`] entries (10 KiB),
/// never a whole pack header, so the header cache's bound holds whatever the number of
/// cursors.
#[derive(Default)]
pub struct ReadCursor {
    last: Option<CursorAt>,
}

struct CursorAt {
    /// The pack the references name, and the pack that holds their chunks (another
    /// one when gc repacked the named pack).
    named: PackId,
    pack: PackId,
    /// Entries of `pack` in pack order; `run[at]` is the last chunk's.
    run: Vec<PackEntry>,
    at: usize,
    /// The decoded frame of the last chunk, and where it is (pack and offset).
    frame: Option<(FrameKey, Bytes)>,
}

impl CursorAt {
    fn located(&self) -> Located {
        Located {
            pack: self.pack,
            entry: self.run[self.at],
        }
    }
}

impl ReadCursor {
    /// Moves to `r`'s chunk if it is the one after the last in the pack `r` names.
    fn follow(&mut self, r: &ChunkRef) -> bool {
        let Some(last) = &mut self.last else {
            return false;
        };
        if r.pack != Some(last.named) || last.run.get(last.at + 1).is_none_or(|e| e.id != r.id) {
            return false;
        }
        last.at += 1;
        true
    }
}

/// A pack's header entries, in pack order, with their positions ordered by chunk id and
/// a directory of where each range of id prefixes starts in that order. Ids are keyed
/// hashes, spread evenly, so the bucket of an id's top bits holds about one entry: a
/// lookup reads the directory, one or two positions and their entries, where a binary
/// search over a pack of tens of thousands of entries missed the cache some fifteen
/// times (9% of a restore's CPU). Kept in pack order, the entry after a chunk is the
/// next one in memory: a reader of consecutive chunks ([`ReadCursor`]) finds each
/// there without a lookup. Positions and directory cost at most 12 bytes per entry,
/// against 40 for the entry; less than half a hash map's memory.
struct PackTable {
    entries: Vec<PackEntry>,
    /// Positions in `entries`, ordered by chunk id.
    by_id: Vec<u32>,
    /// `starts[b]..starts[b + 1]` are the positions in `by_id` of the ids whose top
    /// bits are `b`.
    starts: Vec<u32>,
    /// How far an id's 64-bit prefix is shifted to give its bucket (64: one bucket).
    shift: u32,
    /// Whether the frames lie in the pack in the order the header lists them (as
    /// writers store them); only then are they read a window at a time.
    frames_in_order: bool,
}

impl PackTable {
    /// The table of a pack's header entries, given in pack order.
    fn new(mut entries: Vec<PackEntry>) -> PackTable {
        entries.shrink_to_fit();
        let mut by_id: Vec<u32> = (0..entries.len() as u32).collect();
        let id_at = |p: u32| entries[p as usize].id.as_bytes();
        by_id.sort_unstable_by(|&a, &b| id_at(a).cmp(id_at(b)));
        let bits = entries.len().max(1).next_power_of_two().trailing_zeros();
        let shift = 64 - bits;
        let buckets = 1usize << bits;
        let mut starts = Vec::with_capacity(buckets + 1);
        let mut i = 0usize;
        for b in 0..buckets {
            while i < by_id.len() && bucket(id_prefix(id_at(by_id[i])), shift) < b {
                i += 1;
            }
            starts.push(i as u32);
        }
        starts.push(by_id.len() as u32);
        let frames_in_order = entries
            .windows(2)
            .all(|w| w[0].frame_offset <= w[1].frame_offset);
        PackTable {
            entries,
            by_id,
            starts,
            shift,
            frames_in_order,
        }
    }

    /// The read window of `size` bytes that holds the frame at `frame_offset`: from the
    /// first frame that starts in that window of the pack to the end of the last one.
    /// `None` if the frames are not in order, no frame starts at `frame_offset`'s window,
    /// or the window would pass [`READ_WINDOW_MAX_FACTOR`] times `size`.
    fn window(&self, frame_offset: u32, size: u32) -> Option<Window> {
        if !self.frames_in_order || size == 0 {
            return None;
        }
        let index = frame_offset / size;
        let lo = index * size;
        let hi = lo.saturating_add(size);
        let first = self.entries.partition_point(|e| e.frame_offset < lo);
        let past = self.entries.partition_point(|e| e.frame_offset < hi);
        let last = self.entries.get(past.checked_sub(1)?)?;
        let start = self.entries.get(first)?.frame_offset;
        let end = last.frame_offset.checked_add(last.frame_length)?;
        (start <= frame_offset
            && frame_offset < end
            && end - start <= size.saturating_mul(READ_WINDOW_MAX_FACTOR))
        .then_some(Window { index, start, end })
    }

    /// Where `id`'s entry is in `entries`.
    fn position(&self, id: &ChunkId) -> Option<usize> {
        let b = bucket(id_prefix(id.as_bytes()), self.shift);
        let within = &self.by_id[self.starts[b] as usize..self.starts[b + 1] as usize];
        let i = find_entry(within, &self.entries, id).ok()?;
        Some(within[i] as usize)
    }
}

/// An id's first eight bytes as one big-endian integer: ordered as the ids are.
fn id_prefix(b: &[u8; ChunkId::LEN]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

fn bucket(prefix: u64, shift: u32) -> usize {
    prefix.checked_shr(shift).unwrap_or(0) as usize
}

type PackMap = Arc<PackTable>;
type HeaderCell = Arc<OnceCell<Option<PackMap>>>;

/// Recently used pack headers, at most [`HEADER_CACHE_PACKS`]. A cell holds
/// `None` when the pack was found missing or damaged (the caller then falls back
/// to the index and does not ask storage again).
#[derive(Default)]
struct HeaderCache {
    tick: u64,
    slots: HashMap<PackId, (HeaderCell, u64)>,
}

impl HeaderCache {
    fn slot(&mut self, pack: PackId) -> HeaderCell {
        self.tick += 1;
        let tick = self.tick;
        if let Some((cell, t)) = self.slots.get_mut(&pack) {
            *t = tick;
            return cell.clone();
        }
        if self.slots.len() >= HEADER_CACHE_PACKS {
            if let Some(oldest) = self
                .slots
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| *k)
            {
                self.slots.remove(&oldest);
            }
        }
        let cell: HeaderCell = Arc::new(OnceCell::new());
        self.slots.insert(pack, (cell.clone(), tick));
        cell
    }
}

/// Reads chunks. Cheap to clone (an `Arc`), `Send + Sync`, usable from many
/// tasks at once. Holds the index as it was when created.
#[derive(Clone)]
pub struct ChunkReader {
    inner: Arc<ReaderInner>,
}

struct ReaderInner {
    repo: Repository,
    /// The repository index, loaded on first need (see the module docs).
    index: OnceCell<Index>,
    headers: Mutex<HeaderCache>,
    /// Missing packs looked up in the moved records, and where they went.
    moves: Mutex<HashMap<PackId, Option<PackId>>>,
    cache: Mutex<FrameCache>,
    /// Sealed frames read a window at a time, until decoded (see
    /// [`Backend::read_window`](crate::Backend::read_window)).
    windows: Mutex<FrameCache>,
    pool: Arc<Mutex<FramePool>>,
    frames_decoded: AtomicU64,
    index_loads: AtomicU64,
    range_reads: AtomicU64,
}

type FrameKey = (PackId, u32);
type FrameCell = Arc<OnceCell<Bytes>>;

struct Slot {
    cell: FrameCell,
    size: usize,
    tick: u64,
}

/// Least-recently-used frames, bounded by the sum of the memory they hold: a frame's
/// plaintext size is counted when its slot is reserved, before the decode finishes,
/// and replaced by its buffer's capacity once it is decoded (a buffer from the pool can
/// be larger than the frame, and a decoded frame starts up to 4 KiB into its buffer).
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
        self.evict(size, None);
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

    /// Counts `held` bytes for `key`'s slot if it is still `cell` (its frame decoded
    /// into a buffer of that capacity), evicting older frames as the bound requires.
    fn hold(&mut self, key: FrameKey, cell: &FrameCell, held: usize) {
        let Some(s) = self.slots.get_mut(&key) else {
            return;
        };
        if !Arc::ptr_eq(&s.cell, cell) || s.size == held {
            return;
        }
        self.used = self.used - s.size + held;
        s.size = held;
        let newest = s.tick;
        self.evict(0, Some(newest));
    }

    /// Evicts the least recently used frames until `room` more bytes fit, stopping at
    /// the frame of tick `keep`.
    fn evict(&mut self, room: usize, keep: Option<u64>) {
        while self.used + room > self.limit {
            let Some((&tick, &old)) = self.by_age.first_key_value() else {
                break;
            };
            if Some(tick) == keep {
                break;
            }
            self.by_age.pop_first();
            if let Some(s) = self.slots.remove(&old) {
                self.used -= s.size;
            }
        }
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
    /// A reader over an index already loaded (verification loads it itself).
    pub(crate) fn new(repo: Repository, index: Index, cache_bytes: usize) -> ChunkReader {
        ChunkReader::build(repo, OnceCell::new_with(Some(index)), cache_bytes)
    }

    /// A reader that loads the index only if a reference needs it.
    pub(crate) fn lazy(repo: Repository, cache_bytes: usize) -> ChunkReader {
        ChunkReader::build(repo, OnceCell::new(), cache_bytes)
    }

    fn build(repo: Repository, index: OnceCell<Index>, cache_bytes: usize) -> ChunkReader {
        // On a store with a read window, the windows' sealed bytes come out of the
        // cache's bound: decoded frames and windows together hold at most `cache_bytes`.
        let windows = if repo.inner.backend.read_window() > 0 {
            READ_WINDOWS_BYTES.min(cache_bytes / 4)
        } else {
            0
        };
        ChunkReader {
            inner: Arc::new(ReaderInner {
                repo,
                index,
                headers: Mutex::new(HeaderCache::default()),
                moves: Mutex::new(HashMap::new()),
                cache: Mutex::new(FrameCache::new(cache_bytes - windows)),
                windows: Mutex::new(FrameCache::new(windows)),
                pool: Arc::new(Mutex::new(FramePool {
                    free: Vec::new(),
                    bytes: 0,
                    limit: FRAME_POOL_BYTES.min(cache_bytes / 4),
                })),
                frames_decoded: AtomicU64::new(0),
                index_loads: AtomicU64::new(0),
                range_reads: AtomicU64::new(0),
            }),
        }
    }

    /// The repository index, loaded now if this reader has not needed it yet.
    async fn index(&self) -> Result<&Index> {
        self.inner
            .index
            .get_or_try_init(|| async {
                self.inner.index_loads.fetch_add(1, Ordering::Relaxed);
                self.inner.repo.load_index().await
            })
            .await
    }

    /// Whether this reader loaded the whole repository index (it does only for
    /// references that name no pack, or whose pack is gone or damaged).
    pub fn loaded_index(&self) -> bool {
        self.inner.index_loads.load(Ordering::Relaxed) > 0
    }

    /// Whether the repository index knows the chunk (loads the index).
    pub async fn contains(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.index().await?.map.contains_key(id))
    }

    /// Number of distinct chunks in the repository index (loads the index).
    pub async fn indexed_chunks(&self) -> Result<usize> {
        Ok(self.index().await?.map.len())
    }

    /// Bytes of decoded frames the cache holds now (including frames being
    /// decoded); never more than [`frame_cache_limit`](Self::frame_cache_limit).
    pub fn frame_cache_bytes(&self) -> usize {
        lock(&self.inner.cache).used
    }

    /// The bound of the decoded-frame cache in bytes (the bound asked for, less the read
    /// windows' share on a store that has them).
    pub fn frame_cache_limit(&self) -> usize {
        lock(&self.inner.cache).limit
    }

    /// The pack that holds a chunk, according to this reader's index if it is
    /// loaded (verification loads it up front).
    pub(crate) fn pack_of(&self, id: &ChunkId) -> Option<&str> {
        let index = self.inner.index.get()?;
        let loc = index.map.get(id)?;
        index.pack_names.get(loc.pack as usize).map(String::as_str)
    }

    /// How many frames this reader (and its clones) fetched and decoded so far.
    pub fn frames_decoded(&self) -> u64 {
        self.inner.frames_decoded.load(Ordering::Relaxed)
    }

    /// How many range reads of frames this reader and its clones made so far (one per
    /// frame, or one per read window on a store that has one).
    pub fn range_reads(&self) -> u64 {
        self.inner.range_reads.load(Ordering::Relaxed)
    }

    /// Reads one chunk: find it (in the pack its reference names, else through
    /// the index), find its frame (in the cache, or range-read from its pack,
    /// open and decompress), slice the chunk out, and check that its keyed id
    /// matches (`verify.chunk_id_mismatch`). Unknown ids are `notfound.chunk`.
    pub async fn read(&self, r: &ChunkRef) -> Result<Bytes> {
        self.read_with(r, Bytes::copy_from_slice).await
    }

    /// [`ChunkReader::read`] that hands the checked bytes to `f` in place, within their
    /// frame, instead of copying them into a buffer of their own (a restore appends
    /// them to its write buffer).
    pub async fn read_with<T>(&self, r: &ChunkRef, f: impl FnOnce(&[u8]) -> T) -> Result<T> {
        let (frame, range) = self.read_in_frame(r).await?;
        Ok(f(&frame[range]))
    }

    /// [`ChunkReader::read`] without a copy: the decoded frame that holds `r`'s chunk
    /// (kept in memory while the `Bytes` lives) and where in it the checked chunk is.
    /// Consecutive chunks of one frame are then one run of memory (a restore writes
    /// such runs as they are). A compressed frame starts on a [`FRAME_ALIGN`] boundary,
    /// so a page at a multiple of 4 KiB in it is aligned too (a frame stored
    /// uncompressed has no such guarantee).
    pub async fn read_in_frame(&self, r: &ChunkRef) -> Result<(Bytes, std::ops::Range<usize>)> {
        let at = self.locate(r).await?;
        let (frame, range) = match self.read_at(r, &at).await {
            // The named pack's copy is damaged: read another copy if the index
            // knows one (as a format 1 reference would have).
            Err(e) if r.pack.is_some() && e.code().starts_with("verify.") => {
                match self.locate_indexed(r).await {
                    Ok(other) if other.pack != at.pack => self.read_at(r, &other).await?,
                    _ => return Err(e),
                }
            }
            other => other?,
        };
        Ok((frame, range))
    }

    /// [`ChunkReader::read_in_frame`] of the next reference of a sequence, read with
    /// the sequence's `cursor`. It checks each chunk as `read_in_frame` does. A chunk that
    /// follows the last one in its pack, the common case for the pages of a file
    /// written by one backup, is found without looking its id up, and when it is in the
    /// same frame, that frame is used again without the shared cache.
    pub async fn read_next(
        &self,
        cursor: &mut ReadCursor,
        r: &ChunkRef,
    ) -> Result<(Bytes, std::ops::Range<usize>)> {
        if !cursor.follow(r) {
            let last = cursor.last.take();
            // Twice the chunks followed in the last run, within the bounds.
            let want = last.as_ref().map_or(0, |l| 2 * (l.at + 1));
            let want = want.clamp(CURSOR_RUN_FIRST, CURSOR_RUN);
            let kept = last.and_then(|l| l.frame);
            cursor.last = match (r.pack, self.locate_named(r).await?) {
                (Some(named), Some(found)) => {
                    let end = found.map.entries.len().min(found.pos + want);
                    Some(CursorAt {
                        named,
                        pack: found.pack,
                        run: found.map.entries[found.pos..end].to_vec(),
                        at: 0,
                        frame: kept,
                    })
                }
                _ => None,
            };
        }
        let Some(last) = &mut cursor.last else {
            // Found through the index, or not at all: the usual path says which.
            return self.read_in_frame(r).await;
        };
        let located = last.located();
        let key = (located.pack, located.entry.frame_offset);
        let kept = last.frame.take().filter(|(k, _)| *k == key).map(|(_, f)| f);
        match self.read_located(r, &located, kept).await {
            Ok((frame, range)) => {
                last.frame = Some((key, frame.clone()));
                Ok((frame, range))
            }
            Err(e) => {
                cursor.last = None;
                if e.code().starts_with("verify.") {
                    // A damaged copy: the usual path looks for another one.
                    self.read_in_frame(r).await
                } else {
                    Err(e)
                }
            }
        }
    }

    /// [`ChunkReader::read_at`], with the decoded frame when the caller has it.
    async fn read_located(
        &self,
        r: &ChunkRef,
        at: &Located,
        frame: Option<Bytes>,
    ) -> Result<(Bytes, std::ops::Range<usize>)> {
        let Some(frame) = frame else {
            return self.read_at(r, at).await;
        };
        check_length(r, at)?;
        let range = self.check_in_frame(r, at, &frame)?;
        Ok((frame, range))
    }

    /// Where `r`'s chunk is: in the pack the reference names when that pack's
    /// header lists it, else wherever the index says.
    async fn locate(&self, r: &ChunkRef) -> Result<Located> {
        match self.locate_named(r).await? {
            Some(found) => Ok(found.located()),
            None => self.locate_indexed(r).await,
        }
    }

    /// `r`'s chunk in the header of the pack its reference names, or (gc repacked that
    /// pack) of the pack its moved record names; `None` when the reference names no
    /// pack or neither header lists the chunk.
    async fn locate_named(&self, r: &ChunkRef) -> Result<Option<InPack>> {
        let Some(named) = r.pack else {
            return Ok(None);
        };
        let mut pack = named;
        for _ in 0..=crate::gc::MAX_MOVES {
            match self.pack_map(pack).await? {
                Some(map) => {
                    if let Some(pos) = map.position(&r.id) {
                        return Ok(Some(InPack { pack, map, pos }));
                    }
                    break;
                }
                None => match self.moved_target(pack).await? {
                    Some(to) => pack = to,
                    None => break,
                },
            }
        }
        tracing::debug!(
            chunk = %r.id,
            pack = %named,
            "the pack a reference names does not hold the chunk; looking it up in the index"
        );
        Ok(None)
    }

    async fn locate_indexed(&self, r: &ChunkRef) -> Result<Located> {
        let index = self.index().await?;
        let found = index.map.get(&r.id).and_then(|loc| {
            let name = index.pack_names.get(loc.pack as usize)?;
            Some(Located {
                pack: PackId::from_object_name(name)?,
                entry: PackEntry {
                    id: r.id,
                    frame_offset: loc.frame_offset,
                    frame_length: loc.frame_length,
                    frame_raw_length: loc.frame_raw_length,
                    chunk_offset: loc.chunk_offset,
                    raw_length: loc.raw_length,
                    compressed: loc.compressed,
                },
            })
        });
        found.ok_or_else(|| {
            Error::new(
                code::NOTFOUND_CHUNK,
                format!("chunk {} is not in the repository index", r.id),
            )
            .with_suggestion("run a repository check; a backup references a chunk that is missing")
        })
    }

    /// Where gc moved the live chunks of the missing pack `from` (its moved record),
    /// remembered for the reader's life (at most [`MOVED_CACHE`] packs).
    async fn moved_target(&self, from: PackId) -> Result<Option<PackId>> {
        if let Some(to) = lock(&self.inner.moves).get(&from) {
            return Ok(*to);
        }
        let to = self.inner.repo.moved_target(from).await?;
        let mut moves = lock(&self.inner.moves);
        if moves.len() >= MOVED_CACHE {
            moves.clear();
        }
        moves.insert(from, to);
        Ok(to)
    }

    /// The header of `pack` as a map by chunk id, from the cache or read now;
    /// `None` when the pack is gone or its header does not open (the caller
    /// falls back to the index). Storage errors other than "not found" are
    /// returned.
    async fn pack_map(&self, pack: PackId) -> Result<Option<PackMap>> {
        let cell = lock(&self.inner.headers).slot(pack);
        let got = cell
            .get_or_try_init(|| async {
                match self.inner.repo.read_pack_header_of(pack).await {
                    Ok(entries) => Ok(Some(Arc::new(PackTable::new(entries)))),
                    Err(e) if e.code() == code::NOTFOUND_OBJECT || e.code().starts_with("verify.") => {
                        tracing::debug!(pack = %pack, code = e.code(), "pack header unavailable: {e}");
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            })
            .await?;
        Ok(got.clone())
    }

    /// The frame that holds `r`'s chunk and where in it the chunk is, after checking
    /// the chunk against its id.
    async fn read_at(&self, r: &ChunkRef, at: &Located) -> Result<(Bytes, std::ops::Range<usize>)> {
        check_length(r, at)?;
        let frame = self.frame_of(r, at).await?;
        let range = self.check_in_frame(r, at, &frame)?;
        Ok((frame, range))
    }

    /// The decoded frame that holds `at`, from the cache or loaded now.
    async fn frame_of(&self, r: &ChunkRef, at: &Located) -> Result<Bytes> {
        let inner = &self.inner;
        let loc = &at.entry;
        // The pack's object name is only needed on a cache miss or an error: not
        // formatted for every chunk.
        let pack = at.pack;
        let key = (at.pack, loc.frame_offset);
        let slot = lock(&inner.cache).slot(key, loc.frame_raw_length as usize);
        let frame = match slot {
            Some(cell) => {
                let mut held = None;
                let loaded = cell
                    .get_or_try_init(|| async {
                        let (frame, capacity) = self.load_frame(pack, loc).await?;
                        held = Some(capacity);
                        Ok::<_, Error>(frame)
                    })
                    .await
                    .cloned();
                match (loaded, held) {
                    (Ok(f), Some(capacity)) => {
                        lock(&inner.cache).hold(key, &cell, capacity);
                        f
                    }
                    (Ok(f), None) => f,
                    (Err(e), _) => {
                        lock(&inner.cache).forget(key, &cell);
                        return Err(name_frame_error(e, r, &pack.object_name(), loc));
                    }
                }
            }
            None => {
                self.load_frame(pack, loc)
                    .await
                    .map_err(|e| name_frame_error(e, r, &pack.object_name(), loc))?
                    .0
            }
        };
        Ok(frame)
    }

    /// Where `at`'s chunk is in its decoded `frame`, after checking it against `r`'s
    /// id (and that it lies within the frame).
    fn check_in_frame(
        &self,
        r: &ChunkRef,
        at: &Located,
        frame: &Bytes,
    ) -> Result<std::ops::Range<usize>> {
        let (loc, pack) = (&at.entry, at.pack);
        let start = loc.chunk_offset as usize;
        let end = start + loc.raw_length as usize;
        let data = match frame.get(start..end) {
            Some(d) => d,
            None => {
                return Err(Error::new(
                    code::VERIFY_CHUNK_LENGTH_MISMATCH,
                    format!(
                        "chunk {} lies outside its frame in {}",
                        r.id,
                        pack.object_name()
                    ),
                ))
            }
        };
        if self.inner.repo.chunk_id(data) != r.id {
            return Err(Error::new(
                code::VERIFY_CHUNK_ID_MISMATCH,
                format!(
                    "chunk {} read from {} does not match its id",
                    r.id,
                    pack.object_name()
                ),
            )
            .with_suggestion("run a repository check; the pack or index was damaged"));
        }
        Ok(start..end)
    }

    /// `loc`'s sealed frame, read with the frames around it in one range read of its
    /// pack's read window, or taken from that window when it was read already. `None`
    /// when the frame is to be read on its own: the store has no read window, the
    /// pack's header is not at hand (a chunk found through the index),
    /// [`PackTable::window`] gives none, or the window could not be read.
    async fn sealed_in_window(&self, pack: PackId, loc: &PackEntry) -> Option<Bytes> {
        let backend = &self.inner.repo.inner.backend;
        let size = backend.read_window();
        if size == 0 {
            return None;
        }
        let map = self.cached_pack_map(pack)?;
        let w = map.window(loc.frame_offset, size)?;
        let (start, len) = (u64::from(w.start), u64::from(w.end - w.start));
        let key = (pack, w.index);
        let read = || async {
            self.inner.range_reads.fetch_add(1, Ordering::Relaxed);
            backend.get_range(&pack.object_name(), start, len).await
        };
        let slot = lock(&self.inner.windows).slot(key, len as usize);
        let read = match slot {
            Some(cell) => {
                let got = cell.get_or_try_init(read).await.cloned();
                if got.is_err() {
                    lock(&self.inner.windows).forget(key, &cell);
                }
                got
            }
            None => read().await,
        };
        // A window that cannot be read (a pack cut short, say) is no reason to fail a
        // frame that may be whole: the frame is then read on its own, and fails alone.
        let bytes = read.ok()?;
        let from = (loc.frame_offset - w.start) as usize;
        let to = from + loc.frame_length as usize;
        (to <= bytes.len()).then(|| bytes.slice(from..to))
    }

    /// The header of `pack` if the header cache holds it (without reading it).
    fn cached_pack_map(&self, pack: PackId) -> Option<PackMap> {
        let headers = lock(&self.inner.headers);
        let (cell, _) = headers.slots.get(&pack)?;
        cell.get().cloned().flatten()
    }

    /// Range-reads, opens and decompresses one frame (errors are named by the caller);
    /// returns it with the capacity of the buffer that holds it.
    async fn load_frame(&self, pack_id: PackId, loc: &PackEntry) -> Result<(Bytes, usize)> {
        let inner = &self.inner;
        let pack = pack_id.object_name();
        let sealed = match self.sealed_in_window(pack_id, loc).await {
            Some(sealed) => sealed,
            None => {
                inner.range_reads.fetch_add(1, Ordering::Relaxed);
                let (offset, len) = (u64::from(loc.frame_offset), u64::from(loc.frame_length));
                inner
                    .repo
                    .inner
                    .backend
                    .get_range(&pack, offset, len)
                    .await?
            }
        };
        let plain = inner.repo.inner.master.open(Domain::Chunk, &sealed)?;
        drop(sealed);
        let (data, start) = if loc.compressed {
            let mut buf = lock(&inner.pool).take();
            let start = hs_chunk::decompress_into_aligned(
                &plain,
                loc.frame_raw_length as usize,
                &mut buf,
                FRAME_ALIGN,
            )?;
            (buf, start)
        } else {
            (plain, 0)
        };
        if data.len() - start != loc.frame_raw_length as usize {
            return Err(Error::new(
                code::VERIFY_CHUNK_LENGTH_MISMATCH,
                format!(
                    "a frame in {pack} at offset {} holds {} bytes, not the {} recorded",
                    loc.frame_offset,
                    data.len() - start,
                    loc.frame_raw_length
                ),
            )
            .with_suggestion("run a repository check; the pack or index was damaged"));
        }
        inner.frames_decoded.fetch_add(1, Ordering::Relaxed);
        let capacity = data.capacity();
        let frame = Bytes::from_owner(PooledFrame {
            buf: data,
            start,
            pool: Arc::downgrade(&inner.pool),
        });
        Ok((frame, capacity))
    }
}

/// `verify.chunk_length_mismatch` unless the pack's entry at `at` has the length `r` says.
fn check_length(r: &ChunkRef, at: &Located) -> Result<()> {
    if at.entry.raw_length == r.len {
        return Ok(());
    }
    Err(Error::new(
        code::VERIFY_CHUNK_LENGTH_MISMATCH,
        format!(
            "chunk {} is {} bytes in {} but {} in the reference",
            r.id,
            at.entry.raw_length,
            at.pack.object_name(),
            r.len
        ),
    ))
}

/// Where `id` is in `by_id`, positions in `entries` ordered by id. Ids are keyed hashes, so
/// their first eight bytes order them almost always: comparing those as one
/// integer first saves a 16-byte `memcmp` per step (6% of a restore's CPU).
fn find_entry(
    by_id: &[u32],
    entries: &[PackEntry],
    id: &ChunkId,
) -> std::result::Result<usize, usize> {
    let key = id.as_bytes();
    let want = id_prefix(key);
    by_id.binary_search_by(|&p| {
        let have = entries[p as usize].id.as_bytes();
        id_prefix(have).cmp(&want).then_with(|| have.cmp(key))
    })
}

/// A frame that does not open or decompress (`verify.*`) is named: the chunk asked for,
/// the pack and the frame's offset (the underlying message names only the kind of
/// object). Storage errors (`io.*`, `unreachable.*`) keep their code, message and
/// whether a retry could help.
fn name_frame_error(e: Error, r: &ChunkRef, pack: &str, loc: &PackEntry) -> Error {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_entry_agrees_with_a_full_comparison() {
        let entry = |b: [u8; ChunkId::LEN]| PackEntry {
            id: ChunkId::from_bytes(b),
            frame_offset: 0,
            frame_length: 0,
            frame_raw_length: 0,
            chunk_offset: 0,
            raw_length: 0,
            compressed: false,
        };
        let mut ids: Vec<[u8; ChunkId::LEN]> = (0..200u64)
            .map(|i| *ChunkId::compute(&[3; 32], &i.to_le_bytes()).as_bytes())
            .collect();
        // Ids that share their first eight bytes and differ after.
        for last in [0u8, 7, 255] {
            let mut b = ids[0];
            b[ChunkId::LEN - 1] = last;
            b[8] ^= last;
            ids.push(b);
        }
        ids.sort_unstable();
        ids.dedup();
        // Entries in another order than their ids', as in a pack.
        let entries: Vec<PackEntry> = ids.iter().rev().map(|b| entry(*b)).collect();
        let by_id: Vec<u32> = (0..entries.len() as u32).rev().collect();
        for (i, b) in ids.iter().enumerate() {
            assert_eq!(
                find_entry(&by_id, &entries, &ChunkId::from_bytes(*b)),
                Ok(i)
            );
        }
        for probe in 0..300u64 {
            let id = ChunkId::compute(&[9; 32], &probe.to_le_bytes());
            let full = ids.binary_search_by(|b| b.as_slice().cmp(id.as_bytes()));
            assert_eq!(find_entry(&by_id, &entries, &id), full);
        }
    }

    #[test]
    fn the_pack_table_finds_every_entry_and_nothing_else() {
        let entry = |b: [u8; ChunkId::LEN], n: u32| PackEntry {
            id: ChunkId::from_bytes(b),
            frame_offset: n,
            frame_length: 0,
            frame_raw_length: 0,
            chunk_offset: 0,
            raw_length: 0,
            compressed: false,
        };
        for n in [0u64, 1, 2, 3, 5, 64, 1000, 4097] {
            let mut ids: Vec<[u8; ChunkId::LEN]> = (0..n)
                .map(|i| *ChunkId::compute(&[4; 32], &i.to_le_bytes()).as_bytes())
                .collect();
            // Uneven ids too: a run that shares the top bits, and the extremes.
            if n > 3 {
                ids[1] = [0; ChunkId::LEN];
                ids[2] = [0xff; ChunkId::LEN];
                for k in 3..(n as usize / 2).max(4).min(ids.len()) {
                    ids[k][..4].copy_from_slice(&[0x80, 0, 0, 0]);
                }
            }
            ids.sort_unstable();
            ids.dedup();
            let entries: Vec<PackEntry> = ids
                .iter()
                .enumerate()
                .map(|(i, b)| entry(*b, i as u32))
                .rev()
                .collect();
            let t = PackTable::new(entries.clone());
            for (i, b) in ids.iter().enumerate() {
                let e = &t.entries[t.position(&ChunkId::from_bytes(*b)).expect("present")];
                assert_eq!((e.id.as_bytes(), e.frame_offset), (b, i as u32));
            }
            for probe in 0..200u64 {
                let id = ChunkId::compute(&[8; 32], &probe.to_le_bytes());
                assert!(t.position(&id).is_none());
            }
            // The entries stay in pack order, and each lookup gives a position in it.
            assert_eq!(
                t.entries.iter().map(|e| e.id).collect::<Vec<_>>(),
                entries.iter().map(|e| e.id).collect::<Vec<_>>()
            );
            for (p, e) in entries.iter().enumerate() {
                assert_eq!(t.position(&e.id), Some(p));
            }
        }
    }

    #[test]
    fn the_frame_cache_counts_what_a_decoded_frame_holds() {
        let pack = |b: u8| PackId([b; 32]);
        let mut cache = FrameCache::new(100);
        let a = cache.slot((pack(1), 0), 40).unwrap();
        let b = cache.slot((pack(2), 0), 40).unwrap();
        assert_eq!(cache.used, 80);
        // `b` decoded into a buffer of 70 bytes: `a`, the older, goes.
        cache.hold((pack(2), 0), &b, 70);
        assert_eq!(cache.used, 70);
        assert!(!cache.slots.contains_key(&(pack(1), 0)));
        // A cell that is no longer the slot's changes nothing.
        cache.hold((pack(1), 0), &a, 10);
        assert_eq!(cache.used, 70);
        // The newest frame is never evicted for its own size, and the next slot makes room.
        cache.hold((pack(2), 0), &b, 120);
        assert_eq!(cache.used, 120);
        assert!(cache.slots.contains_key(&(pack(2), 0)));
        cache.slot((pack(3), 0), 30).unwrap();
        assert_eq!(cache.used, 30);
    }

    #[test]
    fn a_dropped_frame_returns_its_buffer_to_the_pool_within_its_limits() {
        let pool = Arc::new(Mutex::new(FramePool {
            free: Vec::new(),
            bytes: 0,
            limit: 3 << 20,
        }));
        let frame = |cap: usize| {
            Bytes::from_owner(PooledFrame {
                buf: vec![1u8; cap],
                start: 0,
                pool: Arc::downgrade(&pool),
            })
        };
        let a = frame(1 << 20);
        let a2 = a.slice(0..1);
        drop(a);
        assert_eq!(lock(&pool).bytes, 0, "a slice still holds the frame");
        drop(a2);
        assert_eq!(lock(&pool).bytes, 1 << 20);
        // Too large for the pool, then over its limit: freed instead of kept.
        drop(frame(FRAME_POOL_MAX_BUFFER + 1));
        drop(frame(2 << 20));
        drop(frame(2 << 20));
        assert_eq!(lock(&pool).bytes, 3 << 20);
        assert_eq!(lock(&pool).free.len(), 2);
        let taken = lock(&pool).take();
        assert_eq!(taken.capacity(), 2 << 20);
        assert_eq!(lock(&pool).bytes, 1 << 20);
        // A frame that outlives its reader frees its buffer.
        let orphan = frame(1 << 20);
        drop(pool);
        drop(orphan);
    }
}
