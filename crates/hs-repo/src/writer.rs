//! ChunkWriter: dedup, compress + seal on worker threads, packs, index.
//!
//! Data flow: [`ChunkWriter::add`] hashes the chunk on the caller's task and
//! drops it if it is already stored (see "Deduplication" below); new chunks
//! are grouped into frames (consecutive new chunks, up to [`FRAME_BYTES`] of
//! plaintext), copied into the frame's buffer as they come, so `add` keeps no
//! reference to the caller's bytes (frame buffers go back and forth between the
//! caller and the workers, at most [`SPARE_FRAMES`] kept idle). Each worker
//! thread has a lane: a bounded queue (backpressure) and the pack it fills. Frames go to the lanes in turn; the caller decides
//! which pack each frame goes into (a random pack id, chosen when the lane
//! starts a pack), so every reference `add` returns names its pack at once.
//! A lane starts a new pack once the frames its worker sealed into the
//! current pack, plus the plaintext still queued for it (counted as if it
//! did not compress), reach `pack_target_size`: packs stay at or just
//! under the target whatever the data's compressibility. A worker
//! compresses a frame's chunks together as one zstd frame (reusing one zstd
//! context and its output buffer), seals it as one blob, and appends it to the pack;
//! a full pack is sealed and handed to an
//! uploader task. Sealed packs not yet stored (handed over or uploading) are at
//! most [`UPLOAD_BYTES_IN_FLIGHT`] bytes' worth of target-size packs, and at
//! least one: a worker with a full pack waits for a free slot before it hands
//! the pack over and starts the next, so pack memory is bounded by the workers
//! plus those slots whatever the backend's speed. Index objects only
//! ever name packs whose upload has completed: one every
//! [`DEFAULT_INDEX_INTERVAL`] packs while the session runs, and one for the
//! rest in [`ChunkWriter::finish`], after the last pack is durable.
//!
//! Deduplication, in memory that does not grow with the repository:
//! 1. a **hint**: the reference at the same position of the same file in the
//!    parent backup ([`ChunkWriter::add_hinted`]); an unchanged page has the same
//!    id and keeps the parent's pack (unless gc condemned or someone quarantined
//!    that pack);
//! 2. the chunks this session has seen, newest [`SESSION_MEMORY`] (two generations);
//! 3. the chunks of recent index objects, at most [`RECENT_INDEX_CHUNKS`]: those
//!    written since the parent backup ended (an interrupted backup's uploads), or
//!    the newest ones when there is no parent (see `Repository::writer_for`).
//!
//! A chunk found nowhere is stored again: a copy costs space, never correctness.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use hs_base::code;
use hs_chunk::{ChunkId, Compressor, PackBuilder, PackEntry};
use hs_crypt::Domain;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::index::{self, IndexedPack};
use crate::manifest::{ChunkRef, PackId};
use crate::repo::{index_name, pack_name, Repository};

/// Largest chunk accepted by [`ChunkWriter::add`] (64 MiB).
pub const MAX_CHUNK_LEN: usize = 64 << 20;
/// Plaintext bytes after which a frame is closed: consecutive new chunks are
/// compressed together as one zstd frame (so zstd sees the redundancy
/// between neighbouring 8 KiB pages) and sealed as one blob. A frame is
/// also the unit handed to a worker thread. Chosen by measurement; see
/// docs/repository-format.md.
pub const FRAME_BYTES: usize = 1 << 20;
/// At most this many chunks per frame (bounds the per-frame header size
/// when chunks are tiny).
const FRAME_JOBS: usize = 1024;
/// Frames queued per lane before `add` waits (backpressure).
const QUEUE_DEPTH: usize = 2;
/// Chunk ids of this session remembered per generation (two generations):
/// 7/8 of 2^17, the most a hash table of 2^17 slots holds (about 5 MiB).
pub const SESSION_MEMORY: usize = (1 << 17) / 8 * 7;
/// At most this many chunk ids are loaded from recent index objects: 7/8 of 2^19,
/// the most a hash table of 2^19 slots holds (about 19 MiB).
pub const RECENT_INDEX_CHUNKS: usize = (1 << 19) / 8 * 7;

const UPLOADS_IN_FLIGHT: usize = 4;
/// Sealed packs that are handed to the uploader or uploading: this many bytes of
/// target-size packs (two default packs), at least one and at most
/// [`UPLOADS_IN_FLIGHT`]. With one pack per worker being filled, this bounds the
/// pack bytes in memory whatever the backend's speed: four default packs with
/// two workers.
const UPLOAD_BYTES_IN_FLIGHT: u64 = 32 << 20;
/// Default for [`ChunkWriter::set_index_interval`]: 32 packs, about 512 MiB stored.
/// The entries of packs not yet written to an index object are held in memory
/// (40 bytes per chunk), so this also bounds that.
pub const DEFAULT_INDEX_INTERVAL: usize = 32;
/// An index object is also written once the durable packs not yet in one hold this
/// many chunks (about 5 MiB of entries): well-compressed packs hold 30,000 to
/// 50,000, so this is what closes index objects of 8 KiB pages. Measured at pgbench
/// scale 1000: 2^18 let the entries waiting for an index object reach 28 MB.
pub const INDEX_INTERVAL_CHUNKS: usize = 1 << 17;

/// Counters of one writer session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Chunks passed to `add`.
    pub chunks: u64,
    /// Of those, chunks not already in the repository (or earlier in this session).
    pub new_chunks: u64,
    /// Bytes passed to `add`.
    pub logical_bytes: u64,
    /// Bytes of the new chunks (before compression).
    pub new_logical_bytes: u64,
    /// Bytes written to the backend (packs and the index object).
    pub stored_bytes: u64,
    /// Packs written.
    pub packs: u64,
}

/// The new chunks of one frame: their bytes back to back (copied in by `add`, so a
/// chunk's own buffer is free as soon as `add` returns) and their ids and lengths.
struct Frame {
    raw: Vec<u8>,
    chunks: Vec<(ChunkId, u32)>,
}

/// Frame buffers kept for reuse (each about [`FRAME_BYTES`]): a worker hands back the
/// buffer of the frame it sealed, the caller fills it with the next frame.
const SPARE_FRAMES: usize = 4;

/// What a writer deduplicates against besides the hints (see the module docs).
#[derive(Default)]
pub(crate) struct Dedup {
    /// Packs a writer must not reference: condemned by gc or quarantined.
    pub excluded: HashSet<PackId>,
    /// Chunks of recent index objects: id to a slot of `packs`.
    pub known: HashMap<ChunkId, u32>,
    /// Chunks seen in this session (newer generation first).
    session: [HashMap<ChunkId, u32>; 2],
    /// The pack table of `known` and `session`: `known`'s packs first (the
    /// first `fixed` slots), then those of the session generations, rebuilt
    /// when a generation is dropped so that it does not grow with the session.
    packs: Vec<PackId>,
    slots: HashMap<PackId, u32>,
    fixed: usize,
}

impl Dedup {
    pub(crate) fn slot(&mut self, p: PackId) -> u32 {
        if let Some(s) = self.slots.get(&p) {
            return *s;
        }
        let s = self.packs.len() as u32;
        self.packs.push(p);
        self.slots.insert(p, s);
        s
    }

    fn lookup(&self, id: &ChunkId) -> Option<PackId> {
        let s = self.session[0]
            .get(id)
            .or_else(|| self.session[1].get(id))
            .or_else(|| self.known.get(id))?;
        self.packs.get(*s as usize).copied()
    }

    /// Adds the chunks of one index object's packs to `known` (packs in
    /// `excluded` skipped), stopping at exactly `cap` chunks: one index object
    /// holds up to [`INDEX_INTERVAL_CHUNKS`] ids, enough to double the table.
    /// Called before the session remembers anything.
    pub(crate) fn learn(&mut self, packs: &[IndexedPack], cap: usize) {
        'packs: for p in packs {
            let pack = PackId(p.id);
            if self.excluded.contains(&pack) {
                continue;
            }
            if self.known.len() >= cap {
                break;
            }
            let slot = self.slot(pack);
            for e in &p.entries {
                if self.known.len() >= cap {
                    break 'packs;
                }
                self.known.entry(e.id).or_insert(slot);
            }
        }
        // Every slot so far is `known`'s: compaction must keep them all.
        self.seal_known();
    }

    /// Ends the loading of `known`: its packs keep their slots for the whole session.
    pub(crate) fn seal_known(&mut self) {
        self.fixed = self.packs.len();
    }

    fn remember(&mut self, id: ChunkId, p: PackId) {
        if self.session[0].len() >= SESSION_MEMORY {
            self.session[1] = std::mem::take(&mut self.session[0]);
            self.compact_packs();
        }
        let s = self.slot(p);
        self.session[0].insert(id, s);
    }

    /// Drops the packs only the dropped generation named from the pack table
    /// (every pack a session hints or writes gets a slot: without this, the
    /// table would grow with the number of packs a backup touches).
    fn compact_packs(&mut self) {
        let old = std::mem::take(&mut self.packs);
        let fixed = self.fixed.min(old.len());
        self.slots.clear();
        for p in &old[..fixed] {
            self.slot(*p);
        }
        let mut remap: HashMap<u32, u32> = HashMap::new();
        let mut session = std::mem::take(&mut self.session[1]);
        for s in session.values_mut() {
            let i = *s as usize;
            if i < fixed {
                continue;
            }
            *s = match remap.get(s) {
                Some(n) => *n,
                None => {
                    let n = self.slot(old[i]);
                    remap.insert(*s, n);
                    n
                }
            };
        }
        self.session[1] = session;
        self.slots.shrink_to_fit();
        self.packs.shrink_to_fit();
    }
}

enum LaneMsg {
    Frame { pack: PackId, frame: Frame },
}

/// One worker's queue and the pack the caller is filling through it.
struct Lane {
    tx: Option<mpsc::Sender<LaneMsg>>,
    pack: PackId,
    /// Plaintext bytes sent into `pack` so far.
    plain: u64,
    /// What the worker has done with `pack`, shared with it.
    done: Arc<Mutex<LaneDone>>,
}

/// The frames a worker has sealed into its current pack.
#[derive(Default)]
struct LaneDone {
    pack: Option<PackId>,
    /// Plaintext bytes of those frames.
    plain: u64,
    /// Their sealed bytes (the pack's size so far).
    sealed: u64,
}

impl Lane {
    /// Stored bytes `pack` will take at most once the queued frames are sealed:
    /// what is sealed, plus the plaintext not yet sealed (a frame never grows by
    /// more than its seal's 49 bytes and a zstd frame is kept only when smaller).
    fn stored_estimate(&self) -> u64 {
        let d = lock(&self.done);
        let (plain, sealed) = if d.pack == Some(self.pack) {
            (d.plain, d.sealed)
        } else {
            (0, 0)
        };
        sealed + self.plain.saturating_sub(plain) + 64 * 1024
    }
}

fn random_pack_id() -> PackId {
    PackId(rand::random())
}

struct FinishedPack {
    id: [u8; 32],
    bytes: Bytes,
    entries: Vec<PackEntry>,
    /// Released when the upload ends (or the pack is dropped unstored).
    _slot: UploadSlot,
}

/// One of the writer's upload slots, held by a sealed pack until it is stored.
struct UploadSlot(Arc<Shared>);

impl UploadSlot {
    /// Waits (on a worker thread) for a free slot; `None` once the session failed
    /// or was cancelled, so a waiting worker never outlives its writer.
    fn take(shared: &Arc<Shared>) -> Option<UploadSlot> {
        let mut used = lock(&shared.slots_used);
        loop {
            if shared.failed.load(Ordering::SeqCst) || shared.cancelled.load(Ordering::SeqCst) {
                return None;
            }
            if *used < shared.slots_max.load(Ordering::Relaxed).max(1) {
                *used += 1;
                return Some(UploadSlot(shared.clone()));
            }
            used = match shared
                .slot_freed
                .wait_timeout(used, Duration::from_millis(100))
            {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut used = lock(&self.0.slots_used);
        *used = used.saturating_sub(1);
        drop(used);
        self.0.slot_freed.notify_one();
    }
}

#[derive(Default)]
struct Shared {
    index_interval: AtomicUsize,
    failed: AtomicBool,
    cancelled: AtomicBool,
    error: Mutex<Option<Error>>,
    done: Mutex<Vec<IndexedPack>>,
    stored_bytes: AtomicU64,
    packs: AtomicU64,
    /// Upload slots in use and their number; see [`UploadSlot`].
    slots_used: Mutex<usize>,
    slot_freed: Condvar,
    slots_max: AtomicUsize,
    /// Emptied frame buffers, at most [`SPARE_FRAMES`].
    spare_frames: Mutex<Vec<Vec<u8>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn fail(&self, e: Error) {
        let mut g = lock(&self.error);
        if g.is_none() {
            *g = Some(e);
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    /// An empty frame, its buffer reused when one is spare.
    fn frame(&self) -> Frame {
        let raw = lock(&self.spare_frames)
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(FRAME_BYTES));
        Frame {
            raw,
            chunks: Vec::with_capacity(FRAME_JOBS),
        }
    }

    /// Keeps `raw` for a later frame, unless enough are kept or one huge chunk grew it.
    fn spare(&self, mut raw: Vec<u8>) {
        if raw.capacity() <= 2 * FRAME_BYTES {
            let mut spare = lock(&self.spare_frames);
            if spare.len() < SPARE_FRAMES {
                raw.clear();
                spare.push(raw);
            }
        }
    }

    fn error(&self) -> Error {
        lock(&self.error).clone().unwrap_or_else(|| {
            Error::new(
                code::ABORTED_WRITER_FAILED,
                "the chunk writer's workers stopped unexpectedly",
            )
        })
    }
}

/// Writes chunks into packs; see the module docs. Dropping it without
/// [`finish`](ChunkWriter::finish) abandons the session: packs already
/// uploaded stay as unreferenced objects (no index entry points at them)
/// and are removed by garbage collection.
pub struct ChunkWriter {
    repo: Repository,
    dedup: Dedup,
    lanes: Vec<Lane>,
    next_lane: usize,
    batch: Frame,
    /// The lane the current batch goes to.
    batch_lane: usize,
    workers: Vec<std::thread::JoinHandle<()>>,
    uploader: Option<tokio::task::JoinHandle<()>>,
    shared: Arc<Shared>,
    stats: WriteStats,
    finished: bool,
}

impl ChunkWriter {
    pub(crate) fn new(repo: Repository, dedup: Dedup) -> ChunkWriter {
        let shared = Arc::new(Shared::default());
        shared
            .index_interval
            .store(DEFAULT_INDEX_INTERVAL, Ordering::Relaxed);
        let (pack_tx, pack_rx) = mpsc::channel::<FinishedPack>(1);
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 4);
        let target = usize::try_from(repo.pack_target_size()).unwrap_or(16 << 20);
        let slots = (UPLOAD_BYTES_IN_FLIGHT / repo.pack_target_size().max(1))
            .clamp(1, UPLOADS_IN_FLIGHT as u64) as usize;
        shared.slots_max.store(slots, Ordering::Relaxed);
        let mut workers = Vec::with_capacity(n);
        let mut lanes = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = mpsc::channel::<LaneMsg>(QUEUE_DEPTH);
            let done = Arc::new(Mutex::new(LaneDone::default()));
            let (r, out, sh, d) = (repo.clone(), pack_tx.clone(), shared.clone(), done.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("hs-pack-{i}"))
                .spawn(move || worker(r, rx, out, sh, d, target));
            match spawned {
                Ok(h) => {
                    workers.push(h);
                    lanes.push(Lane {
                        tx: Some(tx),
                        pack: random_pack_id(),
                        plain: 0,
                        done,
                    });
                }
                Err(e) => shared_fail_spawn(&shared, e),
            }
        }
        drop(pack_tx);
        let uploader = tokio::spawn(uploader(repo.clone(), pack_rx, shared.clone()));
        ChunkWriter {
            repo,
            dedup,
            lanes,
            next_lane: 0,
            batch: shared.frame(),
            batch_lane: 0,
            workers,
            uploader: Some(uploader),
            shared,
            stats: WriteStats::default(),
            finished: false,
        }
    }

    /// Adds one chunk and returns its reference (which names the pack that holds
    /// it). New chunks are queued for the workers; when the queue is full this
    /// waits (backpressure). Errors of earlier background work (an upload that
    /// failed) surface here or in `finish`.
    pub async fn add(&mut self, data: Bytes) -> Result<ChunkRef> {
        self.add_hinted(data, None).await
    }

    /// [`add`](Self::add) with a hint: the reference a previous backup had at this
    /// place (same file, same position). If the chunk is the same and its pack may
    /// still be referenced, the hint is reused without storing anything.
    pub async fn add_hinted(&mut self, data: Bytes, hint: Option<&ChunkRef>) -> Result<ChunkRef> {
        if self.shared.failed.load(Ordering::Relaxed) {
            return Err(self.shared.error());
        }
        if data.len() > MAX_CHUNK_LEN {
            return Err(Error::new(
                code::USAGE_CHUNK_TOO_LARGE,
                format!(
                    "a chunk of {} bytes is larger than the 64 MiB limit",
                    data.len()
                ),
            ));
        }
        let len = data.len() as u32;
        let id = self.repo.chunk_id(&data);
        self.stats.chunks += 1;
        self.stats.logical_bytes += u64::from(len);
        let hinted = hint
            .filter(|h| h.id == id && h.len == len)
            .and_then(|h| h.pack)
            .filter(|p| !self.dedup.excluded.contains(p));
        if let Some(pack) = hinted.or_else(|| self.dedup.lookup(&id)) {
            if hinted.is_some() {
                self.dedup.remember(id, pack);
            }
            return Ok(ChunkRef {
                id,
                len,
                pack: Some(pack),
            });
        }
        self.stats.new_chunks += 1;
        self.stats.new_logical_bytes += u64::from(len);
        if !self.batch.chunks.is_empty() && self.batch.raw.len() + data.len() > FRAME_BYTES {
            // Frames stay at most FRAME_BYTES unless one chunk is larger.
            self.flush_batch().await?;
        }
        if self.batch.chunks.is_empty() {
            self.batch_lane = self.next_lane;
            self.next_lane = (self.next_lane + 1) % self.lanes.len().max(1);
        }
        let Some(lane) = self.lanes.get(self.batch_lane) else {
            return Err(self.shared.error());
        };
        let pack = lane.pack;
        self.batch.raw.extend_from_slice(&data);
        self.batch.chunks.push((id, len));
        self.dedup.remember(id, pack);
        if self.batch.chunks.len() >= FRAME_JOBS || self.batch.raw.len() >= FRAME_BYTES {
            self.flush_batch().await?;
        }
        Ok(ChunkRef {
            id,
            len,
            pack: Some(pack),
        })
    }

    /// Takes a chunk this backup did not receive but knows by reference: an unchanged
    /// block of an incremental backup, which is the parent backup's chunk at the same
    /// place. Returns the reference to record (counted like a deduplicated chunk), or
    /// `None` when no usable pack holds the chunk any more (its pack was condemned by
    /// `repo gc` or quarantined): the caller then reads the chunk and [`add`]s it.
    ///
    /// [`add`]: Self::add
    pub fn reuse(&mut self, r: &ChunkRef) -> Option<ChunkRef> {
        let pack = r
            .pack
            .filter(|p| !self.dedup.excluded.contains(p))
            .or_else(|| self.dedup.lookup(&r.id))?;
        self.dedup.remember(r.id, pack);
        self.stats.chunks += 1;
        self.stats.logical_bytes += u64::from(r.len);
        Some(ChunkRef {
            id: r.id,
            len: r.len,
            pack: Some(pack),
        })
    }

    async fn flush_batch(&mut self) -> Result<()> {
        if self.batch.chunks.is_empty() {
            return Ok(());
        }
        let frame = std::mem::replace(&mut self.batch, self.shared.frame());
        let bytes = frame.raw.len() as u64;
        let target = self.repo.pack_target_size().max(1);
        let Some(lane) = self.lanes.get_mut(self.batch_lane) else {
            return Err(self.shared.error());
        };
        let pack = lane.pack;
        lane.plain += bytes;
        if lane.stored_estimate() >= target {
            // The next frame of this lane starts a new pack.
            lane.pack = random_pack_id();
            lane.plain = 0;
        }
        let Some(tx) = &lane.tx else {
            return Err(self.shared.error());
        };
        if tx.send(LaneMsg::Frame { pack, frame }).await.is_err() {
            return Err(self.shared.error());
        }
        Ok(())
    }

    /// Writes an index object every `packs` durable packs (minimum 1)
    /// instead of only at `finish`, so that after a crash a new session
    /// deduplicates against most of what this one uploaded. Each such index
    /// object references only packs that are already durable.
    pub fn set_index_interval(&mut self, packs: usize) {
        self.shared
            .index_interval
            .store(packs.max(1), Ordering::Relaxed);
    }

    /// Counters so far (`stored_bytes` and `packs` are final only after `finish`).
    pub fn stats(&self) -> WriteStats {
        self.stats
    }

    /// Flushes the last packs, waits until every pack is durable, then
    /// writes one index object for the new chunks of this session.
    pub async fn finish(mut self) -> Result<WriteStats> {
        self.flush_batch().await?;
        for lane in &mut self.lanes {
            drop(lane.tx.take());
        }
        let workers = std::mem::take(&mut self.workers);
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            for w in workers {
                if w.join().is_err() {
                    shared.fail(Error::new(
                        code::ABORTED_WORKER_PANICKED,
                        "a pack worker panicked",
                    ));
                }
            }
        })
        .await
        .map_err(|e| {
            Error::new(code::ABORTED_TASK_FAILED, "joining pack workers failed").with_source(e)
        })?;
        if let Some(u) = self.uploader.take() {
            u.await.map_err(|e| {
                Error::new(code::ABORTED_TASK_FAILED, "the pack uploader failed").with_source(e)
            })?;
        }
        if self.shared.failed.load(Ordering::SeqCst) {
            return Err(self.shared.error());
        }
        let packs = std::mem::take(&mut *lock(&self.shared.done));
        let index_bytes = write_index(&self.repo, packs).await?;
        let mut stats = self.stats;
        stats.packs = self.shared.packs.load(Ordering::SeqCst);
        stats.stored_bytes = self.shared.stored_bytes.load(Ordering::SeqCst) + index_bytes;
        self.finished = true;
        Ok(stats)
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.cancelled.store(true, Ordering::SeqCst);
            for lane in &mut self.lanes {
                lane.tx.take();
            }
            if let Some(u) = self.uploader.take() {
                u.abort();
            }
        }
    }
}

fn shared_fail_spawn(shared: &Shared, e: std::io::Error) {
    shared.fail(
        Error::new(
            code::ABORTED_WORKER_SPAWN_FAILED,
            "could not start a pack worker",
        )
        .with_source(e),
    );
}

fn worker(
    repo: Repository,
    mut rx: mpsc::Receiver<LaneMsg>,
    out: mpsc::Sender<FinishedPack>,
    shared: Arc<Shared>,
    done: Arc<Mutex<LaneDone>>,
    target: usize,
) {
    let mut comp = match Compressor::new(repo.compression_level()) {
        Ok(c) => c,
        Err(e) => return shared.fail(e),
    };
    let cap = target + target / 16 + (2 << 20);
    let mut cbuf = Vec::new();
    let mut pack: Option<PackBuilder> = None;
    let master = &repo.inner.master;
    while let Some(LaneMsg::Frame { pack: id, frame }) = rx.blocking_recv() {
        if shared.cancelled.load(Ordering::Relaxed) || shared.failed.load(Ordering::Relaxed) {
            continue; // keep receiving (and dropping) so senders are released
        }
        if pack.as_ref().is_some_and(|p| p.id() != Some(id.0)) {
            // The caller started a new pack on this lane: the current one is full.
            if let Some(full) = pack.take() {
                send_pack(&repo, full, &out, &shared);
            }
        }
        let builder = pack.get_or_insert_with(|| PackBuilder::with_id(cap, id.0));
        // One frame: the batch's chunks, back to back, compressed together.
        let Frame { raw, chunks } = frame;
        let compressed = comp.compress_if_smaller(&raw, &mut cbuf);
        let payload: &[u8] = if compressed { &cbuf } else { &raw };
        let sealed = master.seal(Domain::Chunk, payload);
        {
            let mut d = lock(&done);
            if d.pack != Some(id) {
                *d = LaneDone {
                    pack: Some(id),
                    plain: 0,
                    sealed: 0,
                };
            }
            d.plain += raw.len() as u64;
            d.sealed += sealed.len() as u64;
        }
        let added = builder.add_frame(&sealed, compressed, &chunks);
        if cbuf.capacity() > 4 * FRAME_BYTES {
            // One huge chunk passed through; do not keep its buffer.
            cbuf = Vec::new();
        }
        shared.spare(raw);
        if let Err(e) = added {
            shared.fail(e);
        }
    }
    if let Some(p) = pack {
        if !p.is_empty() && !shared.cancelled.load(Ordering::SeqCst) {
            send_pack(&repo, p, &out, &shared);
        }
    }
}

fn send_pack(
    repo: &Repository,
    pack: PackBuilder,
    out: &mpsc::Sender<FinishedPack>,
    shared: &Arc<Shared>,
) {
    let Some(slot) = UploadSlot::take(shared) else {
        return; // failed or cancelled: the pack is dropped, as are queued frames
    };
    match pack.finish(|h| repo.inner.master.seal(Domain::PackHeader, h)) {
        Ok((bytes, header)) => {
            // Version 2 packs carry the id the writer gave them; it is their name.
            let id = header
                .pack_id
                .unwrap_or_else(|| *blake3::hash(&bytes).as_bytes());
            // The entries wait in memory until an index object names the pack:
            // without their growth slack (up to half).
            let mut entries = header.entries;
            entries.shrink_to_fit();
            let p = FinishedPack {
                id,
                bytes: Bytes::from(bytes),
                entries,
                _slot: slot,
            };
            if out.blocking_send(p).is_err() && !shared.cancelled.load(Ordering::SeqCst) {
                shared.fail(Error::new(
                    code::ABORTED_UPLOADER_GONE,
                    "the pack uploader stopped",
                ));
            }
        }
        Err(e) => shared.fail(e),
    }
}

/// Seals and stores one index object for `packs` (all already durable).
/// Returns the bytes written.
async fn write_index(repo: &Repository, mut packs: Vec<IndexedPack>) -> Result<u64> {
    if packs.is_empty() {
        return Ok(0);
    }
    packs.sort_by_key(|p| p.id);
    let plain = index::encode(&packs);
    drop(packs);
    let sealed = repo.inner.master.seal(Domain::Index, &plain);
    drop(plain);
    let name = index_name(blake3::hash(&sealed).to_hex().as_str());
    let n = sealed.len() as u64;
    let created = repo
        .inner
        .backend
        .put_if_absent(&name, Bytes::from(sealed))
        .await?;
    Ok(if created { n } else { 0 })
}

async fn uploader(repo: Repository, mut rx: mpsc::Receiver<FinishedPack>, shared: Arc<Shared>) {
    // The packs' upload slots bound how many uploads run at once (see `UploadSlot`):
    // each running task holds one, so here finished tasks are only reaped.
    let mut set: JoinSet<()> = JoinSet::new();
    let reap = |r: std::result::Result<(), tokio::task::JoinError>, shared: &Shared| {
        if let Err(e) = r {
            shared.fail(
                Error::new(code::ABORTED_TASK_FAILED, "a pack upload task failed").with_source(e),
            );
        }
    };
    while let Some(p) = rx.recv().await {
        while let Some(r) = set.try_join_next() {
            reap(r, &shared);
        }
        if shared.failed.load(Ordering::Relaxed) || shared.cancelled.load(Ordering::Relaxed) {
            continue;
        }
        let ready = {
            let mut done = lock(&shared.done);
            let entries: usize = done.iter().map(|p| p.entries.len()).sum();
            if done.len() >= shared.index_interval.load(Ordering::Relaxed)
                || entries >= INDEX_INTERVAL_CHUNKS
            {
                std::mem::take(&mut *done)
            } else {
                Vec::new()
            }
        };
        match write_index(&repo, ready).await {
            Ok(n) => {
                shared.stored_bytes.fetch_add(n, Ordering::SeqCst);
            }
            Err(e) => shared.fail(e),
        }
        let backend = repo.inner.backend.clone();
        let shared = shared.clone();
        set.spawn(async move {
            let FinishedPack {
                id,
                bytes,
                entries,
                _slot,
            } = p;
            let size = bytes.len() as u64;
            let name = pack_name(&id);
            match backend.put_if_absent(&name, bytes).await {
                Ok(created) => {
                    if created {
                        shared.stored_bytes.fetch_add(size, Ordering::SeqCst);
                        shared.packs.fetch_add(1, Ordering::SeqCst);
                    }
                    lock(&shared.done).push(IndexedPack { id, entries });
                }
                Err(e) => shared.fail(e),
            }
            // The pack's bytes are gone; its slot frees here.
        });
    }
    while let Some(r) = set.join_next().await {
        reap(r, &shared);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u64) -> ChunkId {
        ChunkId::compute(&[7; 32], &i.to_le_bytes())
    }

    fn pack(i: u64) -> PackId {
        let mut p = [0u8; 32];
        p[..8].copy_from_slice(&i.to_le_bytes());
        PackId(p)
    }

    #[test]
    fn a_full_pack_waits_for_an_upload_slot_and_a_cancelled_session_releases_it() {
        let shared = Arc::new(Shared::default());
        shared.slots_max.store(2, Ordering::Relaxed);
        let a = UploadSlot::take(&shared).expect("first slot");
        let _b = UploadSlot::take(&shared).expect("second slot");
        // A third waits until a slot is freed.
        let (tx, rx) = std::sync::mpsc::channel();
        let sh = shared.clone();
        let waiter = std::thread::spawn(move || {
            let got = UploadSlot::take(&sh);
            tx.send(got.is_some()).unwrap();
            got
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "a third slot was given while two were held"
        );
        drop(a);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(true));
        let c = waiter.join().unwrap();
        assert_eq!(*lock(&shared.slots_used), 2);
        drop(c);
        assert_eq!(*lock(&shared.slots_used), 1);
        // A worker waiting when the session is cancelled gets no slot and returns.
        let _d = UploadSlot::take(&shared).expect("slot freed by c");
        let sh = shared.clone();
        let waiter = std::thread::spawn(move || UploadSlot::take(&sh).is_none());
        std::thread::sleep(Duration::from_millis(150));
        shared.cancelled.store(true, Ordering::SeqCst);
        assert!(
            waiter.join().unwrap(),
            "a cancelled session still gave a slot"
        );
    }

    #[test]
    fn the_pack_table_keeps_known_packs_and_forgets_dropped_generations() {
        let mut d = Dedup::default();
        for k in 0..3u64 {
            let s = d.slot(pack(1_000_000 + k));
            d.known.insert(id(1_000_000 + k), s);
        }
        d.seal_known();
        // Three generations and a bit, a new pack every 64 chunks.
        let n = 3 * SESSION_MEMORY as u64 + 1000;
        for i in 0..n {
            d.remember(id(i), pack(i / 64));
        }
        // The table holds the known packs plus those of two generations at most.
        let live = 3 + (2 * SESSION_MEMORY).div_ceil(64) + 2;
        assert!(
            d.packs.len() <= live,
            "{} slots, {live} expected at most",
            d.packs.len()
        );
        assert_eq!(d.slots.len(), d.packs.len());
        // What is remembered still names the right pack; what was dropped is gone.
        for i in (n - SESSION_MEMORY as u64..n).step_by(97) {
            assert_eq!(d.lookup(&id(i)), Some(pack(i / 64)), "chunk {i}");
        }
        assert_eq!(d.lookup(&id(5)), None);
        assert!(d.slots.values().all(|s| d.packs[*s as usize] != pack(0)));
        for k in 0..3u64 {
            assert_eq!(d.lookup(&id(1_000_000 + k)), Some(pack(1_000_000 + k)));
        }
    }

    #[test]
    fn known_chunks_stop_at_the_cap_exactly() {
        let entry = |i: u64| PackEntry {
            id: id(i),
            frame_offset: 0,
            frame_length: 1,
            frame_raw_length: 1,
            chunk_offset: 0,
            raw_length: 1,
            compressed: false,
        };
        let packs: Vec<IndexedPack> = (0..4u64)
            .map(|p| IndexedPack {
                id: pack(p).0,
                entries: (0..10).map(|i| entry(p * 10 + i)).collect(),
            })
            .collect();
        let mut d = Dedup::default();
        d.excluded.insert(pack(0));
        d.learn(&packs, 25);
        assert_eq!(d.known.len(), 25);
        assert_eq!(d.lookup(&id(3)), None, "excluded pack");
        assert_eq!(d.lookup(&id(24)), Some(pack(2)));
        assert_eq!(d.lookup(&id(35)), None, "past the cap");
        assert_eq!(d.lookup(&id(34)), Some(pack(3)));
        assert_eq!(d.packs.len(), 3);
        // Once full, nothing more is learnt, and no pack gets a slot.
        d.learn(&packs, 25);
        assert_eq!((d.known.len(), d.packs.len()), (25, 3));
    }
}
