//! What gc knows about the repository at one moment ([`View`]), in memory that
//! grows with the number of packs, not of chunks (see docs/repository-format.md,
//! "Garbage collection").
//!
//! - The packs format 2 references name (directly, as list chunks, inside list
//!   chunks), collected manifest by manifest, file by file, one list chunk at a
//!   time; a list chunk whose id was expanded recently is not read again (its
//!   content, pack table included, is the same).
//! - The listing of `data/` and the quarantined packs.
//! - Id-level state only for the references that need it (*indexed* ids): format 1
//!   references (no pack), and references whose named pack is quarantined or not in
//!   the listing (gc deleted it as a quarantined pack whose chunks live on
//!   elsewhere; readers then find the other copy through the index). Only when there
//!   are such ids are the index objects read, one at a time, keeping the packs that
//!   hold those ids.

use std::collections::{HashMap, HashSet};

use hs_base::code;
use hs_chunk::ChunkId;
use hs_crypt::Domain;

use crate::chunklist::decode_chunk_list;
use crate::error::Result;
use crate::index;
use crate::manifest::{ChunkRef, PackId};
use crate::reader::ChunkReader;
use crate::repo::{pack_name, Repository};

/// List chunks whose ids the manifest walk remembers, per generation (two
/// generations: the newest 131072 to 262144 expanded list chunks, about 6 MiB).
/// Consecutive backups share most list chunks; one seen again is not read again.
pub(crate) const GC_LIST_MEMORY: usize = 1 << 17;

/// Frame cache of the reader that reads list chunks during the walk.
pub(super) const WALK_FRAME_CACHE: usize = 8 << 20;

/// A listed pack: size and modification time.
#[derive(Clone, Copy, Debug)]
pub(super) struct PackInfo {
    pub size: u64,
    pub modified: Option<i64>,
}

/// Packs, references and (for indexed ids only) chunk locations, as loaded at one
/// moment.
pub(super) struct View {
    /// Listed pack name -> size and modification time.
    pub packs: HashMap<String, PackInfo>,
    /// Packs that format 2 references name: never deleted while named (unless
    /// quarantined and every chunk they hold for a manifest lives on elsewhere;
    /// readers then find the other copy through the index).
    pub named: HashSet<PackId>,
    /// Quarantined packs (see quarantine.rs).
    pub quarantined: HashSet<String>,
    /// Indexed id (see the module docs) -> the packs that hold it, per the index.
    pub locations: HashMap<ChunkId, Vec<String>>,
    /// Pack -> the indexed ids it holds (the inverse of `locations`).
    pub holds: HashMap<String, Vec<ChunkId>>,
    /// Moved records: repacked pack -> the pack its live chunks were copied to.
    pub moved: HashMap<PackId, PackId>,
}

impl View {
    /// Loads the view: the manifests, then quarantine records and the listing of
    /// `data/`, then (only if some named pack is quarantined or not listed) the
    /// manifests again for the ids of the references that name such packs, then
    /// (only if there are indexed ids) the index objects.
    pub async fn load(repo: &Repository) -> Result<View> {
        let reader = repo.reader_with_frame_cache(WALK_FRAME_CACHE).await?;
        // Manifests before the index: everything a manifest references was
        // indexed before the manifest was written.
        let mut walk = RefWalk::new(HashSet::new());
        repo.walk_manifests(&reader, &mut walk).await?;
        let quarantined = repo.quarantined_set().await?;
        let packs: HashMap<String, PackInfo> = repo
            .list_packs()
            .await?
            .into_iter()
            .map(|o| {
                let info = PackInfo {
                    size: o.size,
                    modified: o.modified,
                };
                (o.name, info)
            })
            .collect();
        // A named pack that gc repacked names, through its moved record, the pack that
        // holds its live chunks now: that one is named too (and so on down the chain).
        let moved = repo.moved_map().await?;
        close_over_moves(&mut walk.named, &moved);
        let suspect: HashSet<PackId> = walk
            .named
            .iter()
            .filter(|p| {
                let name = p.object_name();
                quarantined.contains(&name)
                    || (!packs.contains_key(&name)
                        && !packs.contains_key(&super::moved::chain_end(&moved, **p).object_name()))
            })
            .copied()
            .collect();
        if !suspect.is_empty() {
            // Again, now also collecting the ids of references to those packs. A
            // manifest written since the first walk only adds names and ids.
            let mut again = RefWalk::new(suspect);
            again.named = std::mem::take(&mut walk.named);
            again.ids = std::mem::take(&mut walk.ids);
            repo.walk_manifests(&reader, &mut again).await?;
            walk = again;
            close_over_moves(&mut walk.named, &moved);
        }
        let RefWalk { named, ids, .. } = walk;
        tracing::debug!(
            packs = packs.len(),
            named = named.len(),
            indexed_ids = ids.len(),
            "gc: manifests walked"
        );
        let mut locations: HashMap<ChunkId, Vec<String>> = HashMap::new();
        if !ids.is_empty() {
            repo.locate_in_index(&ids, &mut locations).await?;
        }
        drop(ids);
        let mut holds: HashMap<String, Vec<ChunkId>> = HashMap::new();
        for (id, ps) in &locations {
            for p in ps {
                holds.entry(p.clone()).or_default().push(*id);
            }
        }
        Ok(View {
            packs,
            named,
            quarantined,
            locations,
            holds,
            moved,
        })
    }

    /// Whether a format 2 reference names `pack`.
    pub fn is_named(&self, pack: &str) -> bool {
        PackId::from_object_name(pack).is_some_and(|p| self.named.contains(&p))
    }

    /// Whether a manifest needs `pack`: a reference names it, or it holds an indexed
    /// id; for a quarantined pack, only an indexed id that no other existing,
    /// unquarantined pack holds counts.
    pub fn is_referenced(&self, pack: &str) -> bool {
        let quarantined = self.quarantined.contains(pack);
        if !quarantined && self.is_named(pack) {
            return true;
        }
        let Some(ids) = self.holds.get(pack) else {
            return false;
        };
        ids.iter().any(|id| {
            !quarantined
                || !self.locations.get(id).is_some_and(|l| {
                    l.iter().any(|q| {
                        q != pack && !self.quarantined.contains(q) && self.packs.contains_key(q)
                    })
                })
        })
    }
}

/// Adds to `named` every pack a moved record leads to from a named pack.
fn close_over_moves(named: &mut HashSet<PackId>, moved: &HashMap<PackId, PackId>) {
    let mut through = Vec::new();
    for p in named.iter().filter(|p| moved.contains_key(p)) {
        let mut at = *p;
        for _ in 0..super::moved::MAX_MOVES {
            match moved.get(&at) {
                Some(to) => {
                    through.push(*to);
                    at = *to;
                }
                None => break,
            }
        }
    }
    named.extend(through);
}

/// Ids seen recently, in two generations of at most `cap` each.
pub(super) struct RecentIds {
    cap: usize,
    current: HashSet<ChunkId>,
    older: HashSet<ChunkId>,
}

impl RecentIds {
    pub fn new(cap: usize) -> RecentIds {
        RecentIds {
            cap: cap.max(1),
            current: HashSet::new(),
            older: HashSet::new(),
        }
    }

    /// Remembers `id`; returns whether it was not remembered yet.
    pub fn first_time(&mut self, id: ChunkId) -> bool {
        if self.current.contains(&id) {
            return false;
        }
        let seen = self.older.remove(&id);
        if self.current.len() >= self.cap {
            self.older = std::mem::take(&mut self.current);
        }
        self.current.insert(id);
        !seen
    }
}

/// What a walk over every manifest collects.
struct RefWalk {
    /// Packs references name.
    named: HashSet<PackId>,
    /// Indexed ids: of references without a pack, or naming a pack in `suspect`.
    ids: HashSet<ChunkId>,
    /// Named packs that are quarantined or not listed.
    suspect: HashSet<PackId>,
    /// List chunks expanded recently.
    lists: RecentIds,
}

/// What a walk over every manifest does with each reference (see
/// `Repository::walk_manifests`).
pub(super) trait Visit {
    /// One reference (inline, a list chunk, or inside a list chunk).
    fn visit(&mut self, r: &ChunkRef) -> Result<()>;
    /// The list chunks expanded recently (one seen again is not read again).
    fn lists(&mut self) -> &mut RecentIds;
}

impl RefWalk {
    fn new(suspect: HashSet<PackId>) -> RefWalk {
        RefWalk {
            named: HashSet::new(),
            ids: HashSet::new(),
            suspect,
            lists: RecentIds::new(GC_LIST_MEMORY),
        }
    }
}

impl Visit for RefWalk {
    fn lists(&mut self) -> &mut RecentIds {
        &mut self.lists
    }

    fn visit(&mut self, r: &ChunkRef) -> Result<()> {
        match r.pack {
            None => {
                self.ids.insert(r.id);
            }
            Some(p) => {
                self.named.insert(p);
                if self.suspect.contains(&p) {
                    self.ids.insert(r.id);
                }
            }
        }
        Ok(())
    }
}

impl Repository {
    /// The deployments that have at least one manifest.
    async fn deployments_with_backups(&self) -> Result<Vec<String>> {
        let mut deployments = std::collections::BTreeSet::new();
        for o in self.inner.backend.list("deployments/").await? {
            let mut parts = o.name.split('/');
            if let (Some(_), Some(d), Some("backups"), Some(_), None) = (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) {
                if !deployments.contains(d) {
                    deployments.insert(d.to_string());
                }
            }
        }
        Ok(deployments.into_iter().collect())
    }

    /// Every reference of every manifest of every deployment (inline, list chunks
    /// and the references inside list chunks), one manifest and one list chunk at a
    /// time, into `walk`.
    pub(super) async fn walk_manifests<V: Visit>(
        &self,
        reader: &ChunkReader,
        walk: &mut V,
    ) -> Result<()> {
        for d in self.deployments_with_backups().await? {
            let prefix = format!("deployments/{d}/backups/");
            for o in self.inner.backend.list(&prefix).await? {
                let id = &o.name[prefix.len()..];
                if id.contains('/') {
                    continue;
                }
                let m = match self.load_manifest(&d, id).await {
                    Ok(m) => m,
                    // Deleted since the listing: it references nothing any more.
                    Err(e) if e.code() == code::NOTFOUND_BACKUP => continue,
                    Err(e) => return Err(e),
                };
                for f in m.archives.iter().flat_map(|a| a.files.iter()) {
                    for r in &f.chunks {
                        walk.visit(r)?;
                    }
                    for l in &f.chunk_lists {
                        walk.visit(l)?;
                        // The same id is the same content, pack table included.
                        if walk.lists().first_time(l.id) {
                            for r in decode_chunk_list(&reader.read(l).await?)? {
                                walk.visit(&r)?;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads the index objects one at a time and records, for each of `ids`, the
    /// packs that hold it. An object that vanishes between list and get (a gc
    /// replaced it) restarts the read.
    async fn locate_in_index(
        &self,
        ids: &HashSet<ChunkId>,
        locations: &mut HashMap<ChunkId, Vec<String>>,
    ) -> Result<()> {
        let b = &self.inner.backend;
        let mut attempt = 0;
        'again: loop {
            attempt += 1;
            locations.clear();
            for o in b.list("index/").await? {
                let sealed = match b.get(&o.name).await {
                    Ok(s) => s,
                    Err(e) if e.code() == code::NOTFOUND_OBJECT && attempt < 5 => continue 'again,
                    Err(e) => return Err(e),
                };
                let plain = self.inner.master.open(Domain::Index, &sealed)?;
                drop(sealed);
                for p in index::decode(&plain)? {
                    let mut name = None;
                    for e in p.entries.iter().filter(|e| ids.contains(&e.id)) {
                        let name = name.get_or_insert_with(|| pack_name(&p.id));
                        let l = locations.entry(e.id).or_default();
                        if !l.contains(name) {
                            l.push(name.clone());
                        }
                    }
                }
            }
            return Ok(());
        }
    }
}

/// The packs of the due records that can go (`doomed`, in: every pack they
/// condemn; out: what to delete): a condemned pack that a reference names (unless
/// quarantined), or that holds the only remaining copy of an indexed id, is
/// reprieved; a copy in a quarantined pack does not count. Returns the reprieved
/// packs, sorted.
pub(super) fn reprieve(
    view: &View,
    doomed: &mut HashSet<String>,
    moved_away: &HashSet<String>,
) -> Vec<String> {
    let mut reprieved = Vec::new();
    loop {
        let keep: Vec<String> = doomed
            .iter()
            .filter(|p| {
                (view.is_named(p) && !view.quarantined.contains(*p) && !moved_away.contains(*p))
                    || view.holds.get(*p).is_some_and(|ids| {
                        ids.iter().any(|id| {
                            view.locations.get(id).is_none_or(|l| {
                                l.iter().all(|q| {
                                    doomed.contains(q)
                                        || !view.packs.contains_key(q)
                                        || view.quarantined.contains(q)
                                })
                            })
                        })
                    })
            })
            .cloned()
            .collect();
        if keep.is_empty() {
            break;
        }
        for p in keep {
            doomed.remove(&p);
            reprieved.push(p);
        }
    }
    reprieved.sort();
    reprieved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_remember_two_generations() {
        let id = |i: u8| ChunkId::from_bytes([i; ChunkId::LEN]);
        let mut r = RecentIds::new(4);
        assert!(r.first_time(id(1)));
        assert!(!r.first_time(id(1)));
        for i in 2..=12 {
            assert!(r.first_time(id(i)));
        }
        // Generations {5..8} then {9..12}: 1 is forgotten.
        assert!(r.first_time(id(1)));
        // {9..12} is now the older generation; a hit there moves the id forward.
        assert!(!r.first_time(id(10)));
        assert!(!r.first_time(id(10)));
        assert!(!r.first_time(id(12)));
    }
}
