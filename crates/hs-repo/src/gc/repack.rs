//! Repacking packs that are partly dead (see docs/repository-format.md, "Repacking").
//!
//! A pack some backup still names is never condemned outright, so after `rotate` the
//! chunks only the deleted backups used stay in packs that also hold live ones. gc
//! measures, per pack, the stored bytes of the chunks a backup still references
//! (**live**) and of the others (**unused**; a frame's stored length is shared by its
//! chunks in proportion to their plaintext; the header is neither). When the unused bytes
//! of the repository pass `max_unused` percent of what it stores, gc repacks the
//! packs with the largest unused share until they no longer do: it copies their live
//! chunks into new packs (a frame whose chunks are all live is copied sealed as it
//! is, the live chunks of a partly dead frame are compressed and sealed again as new
//! frames), writes an index object for the new packs, then a moved record per old
//! pack (`gc/moved/<old>-<new>`), then condemns the old packs in a record that
//! marks them `repacked`. They are deleted under the same grace period and leases as
//! any condemned pack, and only if every chunk a backup then references through them
//! is in the new pack ([`Repository::uncovered`]); otherwise they are kept.
//!
//! Memory: the live references are a sorted merge through temporary files
//! ([`ExternalSort`]) of the references the manifests make and the entries of the
//! index objects, read one at a time; per pack gc keeps its usage (a few dozen bytes).
//! The copy holds one old pack, its re-encoded frames and one new pack at a time.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};

use bytes::Bytes;
use hs_base::code;
use hs_chunk::{ChunkId, Compressor, PackBuilder, PackEntry, PackHeader};
use hs_crypt::Domain;
use serde::Serialize;

use super::moved::{chain_end, MAX_MOVES};
use super::view::{RecentIds, View, Visit, GC_LIST_MEMORY, WALK_FRAME_CACHE};
use super::REWRITE_ENTRIES;
use crate::error::{Error, Result};
use crate::extsort::{be_u32, ExternalSort};
use crate::index::{self, IndexedPack};
use crate::manifest::{ChunkRef, PackId};
use crate::repo::{check_pack_binding, pack_name, Repository};
use crate::writer::FRAME_BYTES;

/// Default of [`GcOptions::max_unused`](super::GcOptions::max_unused): the unused
/// share of the repository's bytes gc tolerates before it repacks (restic's
/// `prune --max-unused` default).
pub const DEFAULT_MAX_UNUSED_PERCENT: f64 = 5.0;

/// A reference's record: pack id | chunk id.
const REF_REC: usize = 32 + ChunkId::LEN;
/// An index entry: pack id | chunk id | frame length | frame raw length | raw length
/// (u32 big-endian each).
const HELD_REC: usize = REF_REC + 12;
type HeldRec = [u8; HELD_REC];

/// Why a pack was kept as it is, with how many and how large (see [`GcReport`]).
///
/// [`GcReport`]: super::GcReport
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GcKept {
    /// A short key: `grace` (younger than the grace period), `grace_unreferenced`
    /// (no backup references it, but younger than the grace period), `below_threshold`
    /// (the repository's unused share is within `max_unused`), `no_unused` (every
    /// chunk live), `indexed_chunks` (holds a chunk a reference names by id only),
    /// `quarantined`, `not_indexed`, `damaged` (its copy failed a check).
    pub reason: String,
    /// Packs kept for this reason.
    pub packs: usize,
    /// Their size.
    pub bytes: u64,
    /// Of that, bytes no backup references (an estimate; 0 where not measured).
    pub unused_bytes: u64,
}

/// One referenced pack's usage.
pub(super) struct Usage {
    pub name: String,
    pub id: PackId,
    pub size: u64,
    /// Estimated stored bytes of its live chunks (a frame's sealed length shared by
    /// its chunks in proportion to their plaintext).
    pub live_bytes: u64,
    /// The same estimate for its dead chunks (the header is neither).
    pub dead_bytes: u64,
    pub live_chunks: u64,
    /// Its live chunk ids in the live file: first record and count.
    live_at: (u64, u64),
}

impl Usage {
    pub fn unused(&self) -> u64 {
        self.dead_bytes
    }
}

/// What the usage pass found: per candidate pack its usage, the live ids on disk,
/// and the packs kept without measuring.
pub(super) struct UsagePlan {
    pub usages: Vec<Usage>,
    live: File,
    /// Bytes referenced packs store that are not candidates (counted as used).
    pub other_used: u64,
    pub kept: Vec<GcKept>,
}

/// Collects the live references of candidate packs during a manifest walk.
struct LiveWalk<'a> {
    moved: &'a HashMap<PackId, PackId>,
    candidates: &'a HashSet<PackId>,
    sort: ExternalSort<REF_REC>,
    lists: RecentIds,
}

impl Visit for LiveWalk<'_> {
    fn visit(&mut self, r: &ChunkRef) -> Result<()> {
        if let Some(p) = r.pack {
            let at = chain_end(self.moved, p);
            if self.candidates.contains(&at) {
                let mut rec = [0u8; REF_REC];
                rec[..32].copy_from_slice(&at.0);
                rec[32..].copy_from_slice(r.id.as_bytes());
                self.sort.push(rec)?;
            }
        }
        Ok(())
    }

    fn lists(&mut self) -> &mut RecentIds {
        &mut self.lists
    }
}

/// Collects, during a manifest walk, the references that lead (directly or through
/// moved records) to one of `due`, as `due pack | chunk id`.
struct CoverWalk<'a> {
    moved: &'a HashMap<PackId, PackId>,
    due: &'a HashSet<PackId>,
    sort: ExternalSort<REF_REC>,
    lists: RecentIds,
}

impl Visit for CoverWalk<'_> {
    fn visit(&mut self, r: &ChunkRef) -> Result<()> {
        let Some(mut at) = r.pack else {
            return Ok(());
        };
        for _ in 0..=MAX_MOVES {
            if self.due.contains(&at) {
                let mut rec = [0u8; REF_REC];
                rec[..32].copy_from_slice(&at.0);
                rec[32..].copy_from_slice(r.id.as_bytes());
                return self.sort.push(rec);
            }
            match self.moved.get(&at) {
                Some(to) => at = *to,
                None => break,
            }
        }
        Ok(())
    }

    fn lists(&mut self) -> &mut RecentIds {
        &mut self.lists
    }
}

fn temp_error(e: std::io::Error) -> Error {
    Error::new(
        code::IO_WRITE_FAILED,
        "a temporary file of gc's live chunk list failed",
    )
    .with_source(e)
}

pub(super) fn add_kept(kept: &mut Vec<GcKept>, reason: &str, size: u64, unused: u64) {
    match kept.iter_mut().find(|k| k.reason == reason) {
        Some(k) => {
            k.packs += 1;
            k.bytes += size;
            k.unused_bytes += unused;
        }
        None => kept.push(GcKept {
            reason: reason.to_string(),
            packs: 1,
            bytes: size,
            unused_bytes: unused,
        }),
    }
}

impl Repository {
    /// The usage pass: which referenced packs may be repacked (listed, older than
    /// the grace period, not condemned or quarantined, holding no chunk that a
    /// reference names by id only), and how much of each is live.
    pub(super) async fn pack_usage(
        &self,
        view: &View,
        condemned: &HashSet<String>,
        cutoff: i64,
    ) -> Result<UsagePlan> {
        let mut kept = Vec::new();
        let mut other_used = 0;
        let mut candidates = HashSet::new();
        for (name, info) in &view.packs {
            if condemned.contains(name) || !view.is_referenced(name) {
                continue;
            }
            let reason = if view.quarantined.contains(name) {
                Some("quarantined")
            } else if view.holds.contains_key(name) {
                Some("indexed_chunks")
            } else if info.modified.is_some_and(|m| m > cutoff) {
                Some("grace")
            } else {
                None
            };
            match (reason, PackId::from_object_name(name)) {
                (None, Some(id)) => {
                    candidates.insert(id);
                }
                (r, _) => {
                    other_used += info.size;
                    add_kept(&mut kept, r.unwrap_or("indexed_chunks"), info.size, 0);
                }
            }
        }
        let reader = self.reader_with_frame_cache(WALK_FRAME_CACHE).await?;
        let mut walk = LiveWalk {
            moved: &view.moved,
            candidates: &candidates,
            sort: ExternalSort::default(),
            lists: RecentIds::new(GC_LIST_MEMORY),
        };
        self.walk_manifests(&reader, &mut walk).await?;
        let live = walk.sort;
        drop(reader);
        let held = self.held_entries(&candidates).await?;
        let (usages, live) = merge_usage(view, held, live)?;
        let measured: HashSet<PackId> = usages.iter().map(|u| u.id).collect();
        for id in candidates.iter().filter(|p| !measured.contains(p)) {
            // Named but in no index object: leave it to `repo verify`.
            let size = view.packs.get(&id.object_name()).map_or(0, |i| i.size);
            other_used += size;
            add_kept(&mut kept, "not_indexed", size, 0);
        }
        Ok(UsagePlan {
            usages,
            live,
            other_used,
            kept,
        })
    }

    /// Every index entry of a candidate pack, sorted by pack and chunk id.
    async fn held_entries(&self, candidates: &HashSet<PackId>) -> Result<ExternalSort<HELD_REC>> {
        let mut held: ExternalSort<HELD_REC> = ExternalSort::default();
        for o in self.inner.backend.list("index/").await? {
            // Only gc deletes index objects, and this run holds the exclusive lease.
            let Some(sealed) = self.get_listed(&o.name).await? else {
                continue;
            };
            let packs = index::decode(&self.inner.master.open(Domain::Index, &sealed)?)?;
            drop(sealed);
            for p in packs.iter().filter(|p| candidates.contains(&PackId(p.id))) {
                for e in &p.entries {
                    let mut rec = [0u8; HELD_REC];
                    rec[..32].copy_from_slice(&p.id);
                    rec[32..REF_REC].copy_from_slice(e.id.as_bytes());
                    rec[REF_REC..REF_REC + 4].copy_from_slice(&e.frame_length.to_be_bytes());
                    rec[REF_REC + 4..REF_REC + 8]
                        .copy_from_slice(&e.frame_raw_length.to_be_bytes());
                    rec[REF_REC + 8..].copy_from_slice(&e.raw_length.to_be_bytes());
                    held.push(rec)?;
                }
            }
        }
        Ok(held)
    }

    /// Copies the live chunks of `chosen` into new packs, indexes them, and writes a
    /// moved record per old pack; returns the old packs repacked (those whose copy
    /// succeeded) and fills the report's repack numbers.
    pub(super) async fn repack(
        &self,
        plan: &mut UsagePlan,
        chosen: &[usize],
        report: &mut super::GcReport,
    ) -> Result<Vec<String>> {
        let mut out = Output::new(self)?;
        let mut done = Vec::new();
        for &i in chosen {
            let u = &plan.usages[i];
            let ids = read_live(&mut plan.live, u.live_at)?;
            match self.copy_live(u, &ids, &mut out.frames).await {
                Ok(()) => {}
                Err(e) if e.code().starts_with("verify.") => {
                    // A damaged pack stays as it is (and `repo verify` reports it).
                    tracing::warn!(pack = %u.name, code = e.code(), "not repacked: {e}");
                    out.frames.clear();
                    add_kept(&mut report.kept, "damaged", u.size, u.unused());
                    continue;
                }
                Err(e) => return Err(e),
            }
            out.place(self, u.id).await?;
            report.repacked_bytes += u.size;
            done.push(u.name.clone());
        }
        out.close(self).await?;
        out.flush(self).await?;
        report.repack_new_packs = out.new_packs;
        report.repack_copied_bytes = out.new_bytes;
        Ok(done)
    }

    /// The live chunks of one old pack as sealed frames, ready for a new pack: whole
    /// frames whose chunks are all live, the live chunks of the others re-framed. Every
    /// chunk is checked against its id.
    async fn copy_live(&self, u: &Usage, live: &[ChunkId], frames: &mut Vec<Frame>) -> Result<()> {
        let bytes = self.inner.backend.get(&u.name).await?;
        let (blobs, sealed_header) = hs_chunk::split_pack(&bytes)?;
        let plain = self.inner.master.open(Domain::PackHeader, sealed_header)?;
        let header = PackHeader::decode(&plain, blobs.len() as u64)?;
        header.check_magic(&bytes[bytes.len() - 8..])?;
        check_pack_binding(&u.name, &header)?;
        let mut comp = Compressor::new(self.compression_level())?;
        let mut pending = Reframe::default();
        let mut buf = Vec::new();
        for frame in frame_groups(&header.entries) {
            let is_live: Vec<bool> = frame
                .iter()
                .map(|e| live.binary_search(&e.id).is_ok())
                .collect();
            if !is_live.contains(&true) {
                continue;
            }
            let f = &frame[0];
            let start = f.frame_offset as usize;
            let sealed = blobs
                .get(start..start + f.frame_length as usize)
                .ok_or_else(|| {
                    Error::new(
                        code::VERIFY_PACK_CORRUPT,
                        format!("a frame of {} lies outside it", u.name),
                    )
                })?;
            let opened = self.inner.master.open(Domain::Chunk, sealed)?;
            let data: &[u8] = if f.compressed {
                hs_chunk::decompress_into(&opened, f.frame_raw_length as usize, &mut buf)?;
                &buf
            } else {
                &opened
            };
            for e in frame {
                let chunk = data
                    .get(e.chunk_offset as usize..(e.chunk_offset + e.raw_length) as usize)
                    .filter(|c| self.chunk_id(c) == e.id);
                if chunk.is_none() {
                    return Err(Error::new(
                        code::VERIFY_CHUNK_ID_MISMATCH,
                        format!("chunk {} in {} does not match its id", e.id, u.name),
                    ));
                }
            }
            if !is_live.contains(&false) {
                frames.push(Frame {
                    sealed: sealed.to_vec(),
                    compressed: f.compressed,
                    chunks: frame.iter().map(|e| (e.id, e.raw_length)).collect(),
                });
                continue;
            }
            for (e, _) in frame.iter().zip(&is_live).filter(|(_, l)| **l) {
                let c = &data[e.chunk_offset as usize..(e.chunk_offset + e.raw_length) as usize];
                pending.raw.extend_from_slice(c);
                pending.chunks.push((e.id, e.raw_length));
                if pending.raw.len() >= FRAME_BYTES {
                    frames.push(pending.seal(self, &mut comp));
                }
            }
        }
        if !pending.chunks.is_empty() {
            frames.push(pending.seal(self, &mut comp));
        }
        Ok(())
    }

    /// The due repacked packs that some reference leads to (directly or through moved
    /// records) for a chunk their moved record's pack does not hold: those must stay.
    pub(super) async fn uncovered(
        &self,
        view: &View,
        due: &HashSet<PackId>,
    ) -> Result<HashSet<String>> {
        let reader = self.reader_with_frame_cache(WALK_FRAME_CACHE).await?;
        let mut walk = CoverWalk {
            moved: &view.moved,
            due,
            sort: ExternalSort::default(),
            lists: RecentIds::new(GC_LIST_MEMORY),
        };
        self.walk_manifests(&reader, &mut walk).await?;
        let mut refs = walk.sort.finish()?;
        drop(reader);
        let mut uncovered = HashSet::new();
        let mut target: Option<(PackId, Option<Vec<ChunkId>>)> = None;
        while let Some(rec) = refs.next_record()? {
            let mut p = [0u8; 32];
            p.copy_from_slice(&rec[..32]);
            let from = PackId(p);
            let name = from.object_name();
            if uncovered.contains(&name) {
                continue;
            }
            let Some(to) = view.moved.get(&from).map(|t| chain_end(&view.moved, *t)) else {
                uncovered.insert(name);
                continue;
            };
            if target.as_ref().is_none_or(|(t, _)| *t != to) {
                let ids = match self.read_pack_header_of(to).await {
                    Ok(entries) => {
                        let mut ids: Vec<ChunkId> = entries.iter().map(|e| e.id).collect();
                        ids.sort_unstable();
                        Some(ids)
                    }
                    Err(e) if e.code() == code::NOTFOUND_OBJECT => None,
                    Err(e) => return Err(e),
                };
                target = Some((to, ids));
            }
            let mut id = [0u8; ChunkId::LEN];
            id.copy_from_slice(&rec[32..]);
            let held = target
                .as_ref()
                .and_then(|(_, ids)| ids.as_ref())
                .is_some_and(|ids| ids.binary_search(&ChunkId::from_bytes(id)).is_ok());
            if !held {
                uncovered.insert(name);
            }
        }
        Ok(uncovered)
    }
}

/// Chooses the packs to repack: largest unused share first, until the unused bytes
/// left are within `max_unused` percent of the repository's bytes. Returns their
/// positions in `plan.usages` and records the others as kept.
pub(super) fn choose(plan: &mut UsagePlan, max_unused: f64) -> Vec<usize> {
    let used: u64 = plan.other_used + plan.usages.iter().map(|u| u.live_bytes).sum::<u64>();
    let mut unused: u64 = plan.usages.iter().map(Usage::unused).sum();
    let m = max_unused.clamp(0.0, 100.0);
    let limit = if m >= 100.0 {
        u64::MAX
    } else {
        (used as f64 * m / (100.0 - m)) as u64
    };
    let mut order: Vec<usize> = (0..plan.usages.len()).collect();
    let share = |u: &Usage| u.unused() as f64 / u.size.max(1) as f64;
    order.sort_by(|a, b| {
        let (ua, ub) = (&plan.usages[*a], &plan.usages[*b]);
        share(ub)
            .total_cmp(&share(ua))
            .then_with(|| ua.name.cmp(&ub.name))
    });
    let mut chosen = Vec::new();
    for i in order {
        let u = &plan.usages[i];
        if u.unused() == 0 || u.live_chunks == 0 {
            add_kept(&mut plan.kept, "no_unused", u.size, u.unused());
        } else if unused > limit {
            unused -= u.unused();
            chosen.push(i);
        } else {
            add_kept(&mut plan.kept, "below_threshold", u.size, u.unused());
        }
    }
    chosen.sort_by(|a, b| plan.usages[*a].name.cmp(&plan.usages[*b].name));
    chosen
}

/// Joins the sorted index entries of the candidate packs with their sorted live
/// references: per pack, its usage; the live ids go to a temporary file.
fn merge_usage(
    view: &View,
    held: ExternalSort<HELD_REC>,
    live: ExternalSort<REF_REC>,
) -> Result<(Vec<Usage>, File)> {
    let mut held = held.finish()?;
    let mut live = live.finish()?;
    let mut file = tempfile::tempfile().map_err(temp_error)?;
    let mut w = BufWriter::new(&mut file);
    let mut written = 0u64;
    let mut usages: Vec<Usage> = Vec::new();
    let mut next_live = live.next_record()?;
    let mut last: Option<HeldRec> = None;
    while let Some(h) = held.next_record()? {
        if last.as_ref().is_some_and(|l| l[..REF_REC] == h[..REF_REC]) {
            continue; // the same pack in two index objects
        }
        last = Some(h);
        if usages.last().is_none_or(|u| u.id.0[..] != h[..32]) {
            let mut p = [0u8; 32];
            p.copy_from_slice(&h[..32]);
            let id = PackId(p);
            let name = id.object_name();
            let size = view.packs.get(&name).map_or(0, |i| i.size);
            usages.push(Usage {
                name,
                id,
                size,
                live_bytes: 0,
                dead_bytes: 0,
                live_chunks: 0,
                live_at: (written, 0),
            });
        }
        while next_live.as_ref().is_some_and(|l| l[..] < h[..REF_REC]) {
            next_live = live.next_record()?;
        }
        let u = usages.last_mut().expect("pushed above");
        // In u64: the product below overflows a u32 for frames over 64 KiB.
        let field = |at: usize| u64::from(be_u32(&h[at..]));
        let (flen, fraw, raw) = (field(REF_REC), field(REF_REC + 4), field(REF_REC + 8));
        let share = flen * raw / fraw.max(1);
        if next_live.as_ref().is_none_or(|l| l[..] != h[..REF_REC]) {
            u.dead_bytes += share;
        } else {
            u.live_bytes += share;
            u.live_chunks += 1;
            u.live_at.1 += 1;
            w.write_all(&h[32..REF_REC]).map_err(temp_error)?;
            written += 1;
        }
    }
    w.flush().map_err(temp_error)?;
    drop(w);
    Ok((usages, file))
}

/// The live chunk ids of one pack (sorted), read back from the live file.
fn read_live(f: &mut File, (first, count): (u64, u64)) -> Result<Vec<ChunkId>> {
    const ID: u64 = ChunkId::LEN as u64;
    f.seek(SeekFrom::Start(first * ID)).map_err(temp_error)?;
    let mut buf = vec![0u8; (count * ID) as usize];
    f.read_exact(&mut buf).map_err(temp_error)?;
    Ok(buf
        .chunks_exact(ChunkId::LEN)
        .map(|c| {
            let mut id = [0u8; ChunkId::LEN];
            id.copy_from_slice(c);
            ChunkId::from_bytes(id)
        })
        .collect())
}

/// A pack header's entries grouped by frame (they are stored frame by frame).
fn frame_groups(entries: &[PackEntry]) -> Vec<&[PackEntry]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=entries.len() {
        if i == entries.len() || entries[i].frame_offset != entries[start].frame_offset {
            if i > start {
                out.push(&entries[start..i]);
            }
            start = i;
        }
    }
    out
}

/// A sealed frame for a new pack.
struct Frame {
    sealed: Vec<u8>,
    compressed: bool,
    chunks: Vec<(ChunkId, u32)>,
}

/// Live chunks of partly dead frames, waiting to be compressed together.
#[derive(Default)]
struct Reframe {
    raw: Vec<u8>,
    chunks: Vec<(ChunkId, u32)>,
}

impl Reframe {
    fn seal(&mut self, repo: &Repository, comp: &mut Compressor) -> Frame {
        let mut cbuf = Vec::new();
        let compressed = comp.compress_if_smaller(&self.raw, &mut cbuf);
        let payload: &[u8] = if compressed { &cbuf } else { &self.raw };
        let sealed = repo.inner.master.seal(Domain::Chunk, payload);
        self.raw.clear();
        Frame {
            sealed,
            compressed,
            chunks: std::mem::take(&mut self.chunks),
        }
    }
}

/// The new pack being filled, and the new packs stored but not yet indexed.
struct Output {
    target: usize,
    /// Frames of the old pack being copied (added to `pack` together).
    frames: Vec<Frame>,
    pack: Option<PackBuilder>,
    /// Old packs whose frames are in `pack`.
    sources: Vec<PackId>,
    /// Stored new packs and the old packs each received, not yet indexed.
    stored: Vec<(IndexedPack, Vec<PackId>)>,
    stored_entries: usize,
    new_packs: Vec<String>,
    new_bytes: u64,
}

impl Output {
    fn new(repo: &Repository) -> Result<Output> {
        Ok(Output {
            target: usize::try_from(repo.pack_target_size()).unwrap_or(16 << 20),
            frames: Vec::new(),
            pack: None,
            sources: Vec::new(),
            stored: Vec::new(),
            stored_entries: 0,
            new_packs: Vec::new(),
            new_bytes: 0,
        })
    }

    /// Adds the frames of old pack `from` to the new pack (one old pack's live
    /// chunks always go into one new pack, so its moved record names one pack).
    async fn place(&mut self, repo: &Repository, from: PackId) -> Result<()> {
        let size: usize = self.frames.iter().map(|f| f.sealed.len()).sum();
        if self
            .pack
            .as_ref()
            .is_some_and(|p| p.len() + size > self.target)
        {
            self.close(repo).await?;
        }
        let target = self.target;
        let pack = self
            .pack
            .get_or_insert_with(|| PackBuilder::with_id(target + (2 << 20), rand::random()));
        for f in self.frames.drain(..) {
            pack.add_frame(&f.sealed, f.compressed, &f.chunks)?;
        }
        self.sources.push(from);
        Ok(())
    }

    /// Stores the new pack being filled; indexes what is stored when enough is.
    async fn close(&mut self, repo: &Repository) -> Result<()> {
        let Some(pack) = self.pack.take() else {
            return Ok(());
        };
        let (bytes, header) = pack.finish(|h| repo.inner.master.seal(Domain::PackHeader, h))?;
        let id = header
            .pack_id
            .unwrap_or_else(|| *blake3::hash(&bytes).as_bytes());
        let name = pack_name(&id);
        self.new_bytes += bytes.len() as u64;
        repo.inner
            .backend
            .put_if_absent(&name, Bytes::from(bytes))
            .await?;
        self.new_packs.push(name);
        self.stored_entries += header.entries.len();
        let sources = std::mem::take(&mut self.sources);
        self.stored.push((
            IndexedPack {
                id,
                entries: header.entries,
            },
            sources,
        ));
        if self.stored_entries >= REWRITE_ENTRIES {
            self.flush(repo).await?;
        }
        Ok(())
    }

    /// Writes one index object for the stored new packs, then the moved records of
    /// the old packs they received.
    async fn flush(&mut self, repo: &Repository) -> Result<()> {
        if self.stored.is_empty() {
            return Ok(());
        }
        let stored = std::mem::take(&mut self.stored);
        self.stored_entries = 0;
        let mut moves = Vec::new();
        let mut packs = Vec::new();
        for (p, sources) in stored {
            moves.extend(sources.into_iter().map(|s| (s, PackId(p.id))));
            packs.push(p);
        }
        repo.put_index_object(&mut packs).await?;
        for (from, to) in moves {
            repo.put_moved(&from, &to).await?;
        }
        Ok(())
    }
}
