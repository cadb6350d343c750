//! Garbage collection of packs no backup references, safe while `backup` and
//! `wal stream` run (see docs/repository-format.md, "Locks and garbage
//! collection").
//!
//! Two phases, each run of [`Repository::gc`] doing both:
//!
//! 1. **Condemn.** Packs that no manifest references (and that are older than
//!    the grace period) are listed in a sealed record `gc/condemned/<id>`.
//!    Only after that record is durable, gc lists the live leases that may
//!    reference existing chunks and stores their ids in `gc/holders/<id>`.
//!    Writers that start later load the condemned list after taking their
//!    lease and treat condemned packs as absent (they store such chunks
//!    again instead of deduplicating against them).
//! 2. **Delete.** A record is due when its grace period has passed and none
//!    of its holder leases is live any more. gc then reloads every manifest
//!    and what it needs of the index, keeps any condemned pack that a
//!    reference names or that holds the only copy of a chunk some manifest now
//!    references by id, deletes the rest, writes new index objects without
//!    them, deletes the index objects they replace and finally the records.
//!
//! Memory grows with the number of packs, not of chunks: see [`view`] for what
//! is loaded; index objects are read and rewritten one at a time.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use hs_base::code;
use hs_crypt::Domain;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::index::{self, IndexedPack};
use crate::lock::{now_unix, open_record, seal_record, LeaseKind, LeaseOptions};
use crate::manifest::PackId;
use crate::repo::{index_name, pack_name, Repository};

mod moved;
mod repack;
mod view;

pub(crate) use moved::{leads_to, MAX_MOVES};
pub use repack::{GcKept, DEFAULT_MAX_UNUSED_PERCENT};
use view::View;

const CONDEMNED_PREFIX: &str = "gc/condemned/";
const HOLDERS_PREFIX: &str = "gc/holders/";
const CONDEMNED_MAGIC: &[u8; 8] = b"HSGCCON1";
const HOLDERS_MAGIC: &[u8; 8] = b"HSGCHLD1";
/// Default grace period of `repo gc` (one hour).
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(3600);
/// Temporary files younger than this are never removed (a live write may own one).
const TEMPORARY_MIN_AGE: Duration = Duration::from_secs(3600);
/// The chunk entries at which gc closes an index object it rewrites (about 15 MiB of
/// decoded entries): the rewrite holds at most this, one pack and one decoded object.
const REWRITE_ENTRIES: usize = 1 << 18;

/// What [`Repository::gc`] should do.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Packs younger than this are not condemned, and condemned packs are
    /// deleted only this long after their condemnation.
    pub grace: Duration,
    /// Write and delete; `false` only reports what would happen.
    pub apply: bool,
    /// Repack partly dead packs while their unused bytes are more than this percentage
    /// of the repository's bytes (`None`: never repack; see repack.rs).
    pub max_unused: Option<f64>,
}

impl Default for GcOptions {
    fn default() -> GcOptions {
        GcOptions {
            grace: DEFAULT_GC_GRACE,
            apply: false,
            max_unused: Some(DEFAULT_MAX_UNUSED_PERCENT),
        }
    }
}

/// A condemnation record that is not due yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GcWaiting {
    /// The record id (`gc/condemned/<id>`).
    pub record: String,
    /// How many packs it condemns.
    pub packs: usize,
    /// Why it is not due: the grace period, or leases still live.
    pub reason: String,
}

/// What a garbage collection run did (or, without `apply`, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Whether anything was written or deleted.
    pub applied: bool,
    /// Packs in the repository before the run.
    pub packs_total: usize,
    /// Their total size.
    pub bytes_total: u64,
    /// Packs holding at least one chunk a manifest references.
    pub packs_referenced: usize,
    /// Packs condemned by this run.
    pub condemned: Vec<String>,
    /// Their total size.
    pub condemned_bytes: u64,
    /// Condemned packs deleted by this run.
    pub deleted: Vec<String>,
    /// Their total size.
    pub deleted_bytes: u64,
    /// Condemned packs that a manifest written since references: kept.
    pub reprieved: Vec<String>,
    /// Condemnation records that are not due yet.
    pub waiting: Vec<GcWaiting>,
    /// Index objects replaced by a rewritten one.
    pub index_objects_replaced: usize,
    /// Expired lease objects removed.
    pub expired_leases_removed: usize,
    /// Quarantine records removed because their pack is gone.
    pub quarantine_records_removed: usize,
    /// Temporary files of writes whose writer died, removed (older than an hour and
    /// than the grace period).
    pub temporaries_removed: u64,
    /// Bytes stored by the packs that may be repacked, no backup references (an
    /// estimate, before this run's repacking).
    pub unused_bytes: u64,
    /// Bytes of live chunks in referenced packs (an estimate; packs not measured count
    /// whole).
    pub used_bytes: u64,
    /// Packs repacked by this run (their live chunks copied into new packs, then
    /// condemned); without `apply`, the packs that would be.
    pub repacked: Vec<String>,
    /// Their total size.
    pub repacked_bytes: u64,
    /// The new packs the live chunks were copied into.
    pub repack_new_packs: Vec<String>,
    /// Their total size (the live bytes copied).
    pub repack_copied_bytes: u64,
    /// Referenced packs kept as they are, grouped by why.
    pub kept: Vec<GcKept>,
    /// Moved records removed: of packs no backup names any more, or left by a crashed
    /// repack of a pack that was not condemned.
    pub moved_records_removed: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct CondemnedRecord {
    id: String,
    created: i64,
    packs: Vec<String>,
    /// The packs of `packs` that were repacked (each has a moved record): deleted only
    /// if the pack their moved record names holds every chunk a backup then reaches
    /// through them, although references name them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    repacked: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct HoldersRecord {
    id: String,
    recorded: i64,
    leases: Vec<String>,
}

struct Record {
    condemned: CondemnedRecord,
    holders: Option<HoldersRecord>,
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| {
        Error::new(code::IO_ENCODE_FAILED, "could not encode a gc record").with_source(e)
    })
}

fn decode<T: for<'a> Deserialize<'a>>(json: &[u8], name: &str) -> Result<T> {
    serde_json::from_slice(json).map_err(|e| {
        Error::new(
            code::VERIFY_GC_RECORD_INVALID,
            format!("gc record {name} is not valid JSON"),
        )
        .with_source(e)
    })
}

impl Repository {
    /// Names of every pack listed in a condemnation record.
    pub(crate) async fn condemned_packs(&self) -> Result<HashSet<String>> {
        Ok(self
            .load_gc_records()
            .await?
            .into_iter()
            .flat_map(|r| r.condemned.packs)
            .collect())
    }

    /// Packs condemned by gc or quarantined as damaged: a writer does not
    /// deduplicate against them and readers merge them last, so a chunk that also
    /// lives in another pack is read from there (gc may delete the condemned copy;
    /// the quarantined one may be damaged).
    pub(crate) async fn condemned_or_quarantined(&self) -> Result<HashSet<String>> {
        let mut packs = self.condemned_packs().await?;
        packs.extend(self.quarantined_set().await?);
        Ok(packs)
    }

    async fn load_gc_records(&self) -> Result<Vec<Record>> {
        let mut holders = HashMap::new();
        for h in self
            .read_gc_records::<HoldersRecord>(HOLDERS_PREFIX, HOLDERS_MAGIC)
            .await?
        {
            holders.insert(h.id.clone(), h);
        }
        let mut out = Vec::new();
        for c in self
            .read_gc_records::<CondemnedRecord>(CONDEMNED_PREFIX, CONDEMNED_MAGIC)
            .await?
        {
            let h = holders.remove(&c.id);
            out.push(Record {
                condemned: c,
                holders: h,
            });
        }
        Ok(out)
    }

    /// Every gc record under `prefix`, opened and decoded, in listing order; one that
    /// is gone between the listing and its read is skipped.
    async fn read_gc_records<T: for<'a> Deserialize<'a>>(
        &self,
        prefix: &str,
        magic: &[u8; 8],
    ) -> Result<Vec<T>> {
        let b = &self.inner.backend;
        let mut out = Vec::new();
        for o in b.list(prefix).await? {
            let Some(sealed) = self.get_listed(&o.name).await? else {
                continue;
            };
            let json = open_record(self, magic, &o.name, &sealed, "verify.gc_record_invalid")?;
            out.push(decode(&json, &o.name)?);
        }
        Ok(out)
    }

    /// Packs no manifest references, after the grace period, and removes
    /// them safely; see the module documentation. With `apply` it holds an
    /// exclusive lease for the run (`conflict.repo_locked` if another
    /// maintenance run holds one).
    pub async fn gc(&self, opts: &GcOptions) -> Result<GcReport> {
        let lease = if opts.apply {
            Some(
                self.acquire_lease(LeaseKind::Exclusive, "repo gc", &LeaseOptions::announce())
                    .await?,
            )
        } else {
            None
        };
        let res = self.gc_inner(opts).await;
        if let Some(l) = lease {
            l.release().await?;
        }
        res
    }

    async fn gc_inner(&self, opts: &GcOptions) -> Result<GcReport> {
        let grace = i64::try_from(opts.grace.as_secs()).unwrap_or(i64::MAX / 4);
        let mut report = GcReport {
            applied: opts.apply,
            ..GcReport::default()
        };
        let now = now_unix();
        if opts.apply {
            report.expired_leases_removed = self.remove_expired_leases(now).await?;
            // Temporary files of writers that died (file://, sftp://, scp://): never
            // younger than an hour, whatever the grace, since a live write may own one.
            report.temporaries_removed = self
                .inner
                .backend
                .remove_stale_temporaries(opts.grace.max(TEMPORARY_MIN_AGE))
                .await?;
        }

        // Phase 1: condemn what no manifest references.
        let mut records = self.load_gc_records().await?;
        let mut view = View::load(self).await?;
        if opts.apply {
            report.quarantine_records_removed = self
                .drop_stale_quarantine(&|p| view.packs.contains_key(p))
                .await?;
        }
        report.moved_records_removed = self.drop_stale_moves(opts, &mut view, &records).await?;
        report.packs_total = view.packs.len();
        report.bytes_total = view.packs.values().map(|p| p.size).sum();
        report.packs_referenced = view.packs.keys().filter(|p| view.is_referenced(p)).count();
        if let Some(r) = self
            .condemn(opts, grace, now, &view, &records, &mut report)
            .await?
        {
            records.push(r);
        }
        if let Some(max_unused) = opts.max_unused {
            if let Some(r) = self
                .repack_phase(opts, max_unused, now - grace, &view, &records, &mut report)
                .await?
            {
                records.push(r);
            }
        }

        // Phase 2: delete what is due. Leases first, then (re)load manifests
        // and index: a holder that finished before the check has its manifest
        // visible to the load that follows it.
        let leases = self.list_leases().await?;
        let now = now_unix();
        let live_pack_leases: HashSet<String> = leases
            .iter()
            .filter(|l| l.is_live(now) && l.packs && l.kind == LeaseKind::Shared)
            .map(|l| l.id.clone())
            .collect();
        let due = self
            .due_records(opts, grace, records, &live_pack_leases, now, &mut report)
            .await?;
        if due.is_empty() {
            return Ok(report);
        }
        let view = if opts.apply {
            // The new view replaces the old one (never two in memory).
            drop(view);
            View::load(self).await?
        } else {
            view
        };
        let repacked_due: HashSet<PackId> = due
            .iter()
            .flat_map(|r| r.repacked.iter())
            .filter(|p| view.packs.contains_key(*p))
            .filter_map(|p| PackId::from_object_name(p))
            .collect();
        let uncovered = if repacked_due.is_empty() {
            HashSet::new()
        } else {
            self.uncovered(&view, &repacked_due).await?
        };
        let doomed = doom(&view, &due, &uncovered, &mut report);
        if !opts.apply {
            return Ok(report);
        }
        let b = &self.inner.backend;
        for p in &report.deleted {
            b.delete(p).await?;
        }
        report.index_objects_replaced = self.replace_index_objects(&doomed).await?;
        // A repacked pack that stays keeps no moved record (readers use it directly).
        for p in report
            .reprieved
            .iter()
            .filter_map(|p| PackId::from_object_name(p))
        {
            if let Some(to) = view.moved.get(&p) {
                b.delete(&moved::moved_name(&p, to)).await?;
                report.moved_records_removed += 1;
            }
        }
        for r in &due {
            b.delete(&format!("{CONDEMNED_PREFIX}{}", r.id)).await?;
            b.delete(&format!("{HOLDERS_PREFIX}{}", r.id)).await?;
        }
        // The quarantine of a pack ends with the pack.
        for p in &report.deleted {
            if view.quarantined.contains(p) {
                if let Some(name) = crate::quarantine::record_name(p) {
                    b.delete(&name).await?;
                    report.quarantine_records_removed += 1;
                }
            }
        }
        Ok(report)
    }

    /// Phase 1: a condemnation record for the packs no manifest references (older
    /// than the grace period, not condemned yet); stored with its holders when applying.
    async fn condemn(
        &self,
        opts: &GcOptions,
        grace: i64,
        now: i64,
        view: &View,
        records: &[Record],
        report: &mut GcReport,
    ) -> Result<Option<Record>> {
        let already: HashSet<&String> = records
            .iter()
            .flat_map(|r| r.condemned.packs.iter())
            .collect();
        let candidates: Vec<String> = view
            .packs
            .keys()
            .filter(|p| !already.contains(p) && !view.is_referenced(p))
            .filter(|p| {
                view.packs
                    .get(*p)
                    .and_then(|i| i.modified)
                    .is_none_or(|m| m <= now - grace)
            })
            .cloned()
            .collect();
        for (p, i) in &view.packs {
            if !already.contains(p)
                && !view.is_referenced(p)
                && i.modified.is_some_and(|m| m > now - grace)
            {
                repack::add_kept(&mut report.kept, "grace_unreferenced", i.size, i.size);
            }
        }
        drop(already);
        let mut candidates = candidates;
        candidates.sort();
        if !candidates.is_empty() {
            report.condemned_bytes = candidates.iter().map(|p| view.packs[p].size).sum();
            report.condemned = candidates.clone();
            let mut rid = [0u8; 16];
            rand::Rng::fill(&mut rand::thread_rng(), &mut rid);
            let condemned = CondemnedRecord {
                id: hex::encode(rid),
                created: now,
                packs: candidates,
                repacked: Vec::new(),
            };
            let holders = if opts.apply {
                let name = format!("{CONDEMNED_PREFIX}{}", condemned.id);
                let sealed = seal_record(self, CONDEMNED_MAGIC, &name, &encode(&condemned)?)?;
                self.inner
                    .backend
                    .put_if_absent(&name, Bytes::from(sealed))
                    .await?;
                // Listed only now that the record is durable: a writer whose
                // lease is not in this list started after it and sees it.
                Some(self.write_holders(&condemned.id).await?)
            } else {
                None
            };
            return Ok(Some(Record { condemned, holders }));
        }
        Ok(None)
    }

    /// Removes moved records that nothing needs: of a pack that is gone and that no
    /// backup names (directly or through another moved record), or of a pack that is
    /// still there and not condemned (a repack that crashed before its condemnation
    /// record, or a repacked pack that was kept). Dropped from `view` too; deleted
    /// only when applying.
    async fn drop_stale_moves(
        &self,
        opts: &GcOptions,
        view: &mut View,
        records: &[Record],
    ) -> Result<usize> {
        let condemned: HashSet<&String> = records
            .iter()
            .flat_map(|r| r.condemned.packs.iter())
            .collect();
        let stale: Vec<(PackId, PackId)> = view
            .moved
            .iter()
            .filter(|(from, _)| {
                let name = from.object_name();
                if view.packs.contains_key(&name) {
                    !condemned.contains(&name)
                } else {
                    !view.named.contains(*from)
                }
            })
            .map(|(f, t)| (*f, *t))
            .collect();
        for (from, to) in &stale {
            view.moved.remove(from);
            if opts.apply {
                self.inner
                    .backend
                    .delete(&moved::moved_name(from, to))
                    .await?;
            }
        }
        Ok(stale.len())
    }

    /// Phase 1, second part: measures the referenced packs, chooses those to repack
    /// (see repack.rs) and, when applying, repacks them and condemns them in a record
    /// of its own (with its holders), which is returned.
    async fn repack_phase(
        &self,
        opts: &GcOptions,
        max_unused: f64,
        cutoff: i64,
        view: &View,
        records: &[Record],
        report: &mut GcReport,
    ) -> Result<Option<Record>> {
        let condemned: HashSet<String> = records
            .iter()
            .flat_map(|r| r.condemned.packs.iter().cloned())
            .collect();
        let mut plan = self.pack_usage(view, &condemned, cutoff).await?;
        report.unused_bytes = plan.usages.iter().map(|u| u.unused()).sum();
        report.used_bytes = plan.other_used + plan.usages.iter().map(|u| u.live_bytes).sum::<u64>();
        let chosen = repack::choose(&mut plan, max_unused);
        report.kept.append(&mut plan.kept);
        if !opts.apply {
            report.repacked = chosen
                .iter()
                .map(|i| plan.usages[*i].name.clone())
                .collect();
            report.repacked_bytes = chosen.iter().map(|i| plan.usages[*i].size).sum();
            return Ok(None);
        }
        if chosen.is_empty() {
            return Ok(None);
        }
        let done = self.repack(&mut plan, &chosen, report).await?;
        report.repacked = done.clone();
        if done.is_empty() {
            return Ok(None);
        }
        let mut rid = [0u8; 16];
        rand::Rng::fill(&mut rand::thread_rng(), &mut rid);
        let condemned = CondemnedRecord {
            id: hex::encode(rid),
            created: now_unix(),
            packs: done.clone(),
            repacked: done,
        };
        let name = format!("{CONDEMNED_PREFIX}{}", condemned.id);
        let sealed = seal_record(self, CONDEMNED_MAGIC, &name, &encode(&condemned)?)?;
        self.inner
            .backend
            .put_if_absent(&name, Bytes::from(sealed))
            .await?;
        let holders = Some(self.write_holders(&condemned.id).await?);
        Ok(Some(Record { condemned, holders }))
    }

    /// Phase 2: the condemnation records that are due (past the grace period, no
    /// holder lease live); the others are reported as waiting. Records without holders
    /// get them now when applying.
    async fn due_records(
        &self,
        opts: &GcOptions,
        grace: i64,
        records: Vec<Record>,
        live_pack_leases: &HashSet<String>,
        now: i64,
        report: &mut GcReport,
    ) -> Result<Vec<CondemnedRecord>> {
        let mut due = Vec::new();
        for mut r in records {
            if r.holders.is_none() && opts.apply {
                r.holders = Some(self.write_holders(&r.condemned.id).await?);
            }
            let holders: Vec<&String> = match &r.holders {
                Some(h) => h.leases.iter().collect(),
                None => live_pack_leases.iter().collect(),
            };
            let live = holders
                .iter()
                .filter(|h| live_pack_leases.contains(**h))
                .count();
            let age = now - r.condemned.created;
            if age < grace {
                report.waiting.push(GcWaiting {
                    record: r.condemned.id.clone(),
                    packs: r.condemned.packs.len(),
                    reason: format!("grace period: {}s left", grace - age),
                });
            } else if live > 0 {
                report.waiting.push(GcWaiting {
                    record: r.condemned.id.clone(),
                    packs: r.condemned.packs.len(),
                    reason: format!(
                        "{live} backup lease(s) older than the condemnation still live"
                    ),
                });
            } else {
                due.push(r.condemned);
            }
        }
        Ok(due)
    }

    /// Rewrites the index objects that name a doomed pack: reads the index objects
    /// one at a time, writes the other packs of those that name one (each pack once)
    /// into new index objects of about [`REWRITE_ENTRIES`] entries at most, and only
    /// when all are written deletes the replaced objects; returns how many were
    /// replaced.
    async fn replace_index_objects(&self, doomed: &HashSet<String>) -> Result<usize> {
        let b = &self.inner.backend;
        let mut affected = Vec::new();
        let mut seen = HashSet::new();
        let mut pending: Vec<IndexedPack> = Vec::new();
        let mut pending_entries = 0;
        for o in b.list("index/").await? {
            // Only gc deletes index objects, and this run holds the exclusive lease.
            let Some(sealed) = self.get_listed(&o.name).await? else {
                continue;
            };
            let packs = index::decode(&self.inner.master.open(Domain::Index, &sealed)?)?;
            drop(sealed);
            if !packs.iter().any(|p| doomed.contains(&pack_name(&p.id))) {
                continue;
            }
            for p in packs {
                if !doomed.contains(&pack_name(&p.id)) && seen.insert(p.id) {
                    pending_entries += p.entries.len();
                    pending.push(p);
                    if pending_entries >= REWRITE_ENTRIES {
                        self.put_index_object(&mut pending).await?;
                        pending_entries = 0;
                    }
                }
            }
            affected.push(o.name);
        }
        if !pending.is_empty() {
            self.put_index_object(&mut pending).await?;
        }
        for name in &affected {
            b.delete(name).await?;
        }
        Ok(affected.len())
    }

    /// Writes `packs` (sorted by id) as one new index object and empties it.
    async fn put_index_object(&self, packs: &mut Vec<IndexedPack>) -> Result<()> {
        packs.sort_by_key(|p| p.id);
        let sealed = self.inner.master.seal(Domain::Index, &index::encode(packs));
        packs.clear();
        let name = index_name(blake3::hash(&sealed).to_hex().as_str());
        self.inner
            .backend
            .put_if_absent(&name, Bytes::from(sealed))
            .await?;
        Ok(())
    }

    /// Lists the live leases that may reference existing chunks and stores
    /// their ids as the holders of condemnation record `id`.
    async fn write_holders(&self, id: &str) -> Result<HoldersRecord> {
        let now = now_unix();
        let leases = self
            .list_leases()
            .await?
            .into_iter()
            .filter(|l| l.is_live(now) && l.packs && l.kind == LeaseKind::Shared)
            .map(|l| l.id)
            .collect();
        let h = HoldersRecord {
            id: id.to_string(),
            recorded: now,
            leases,
        };
        let name = format!("{HOLDERS_PREFIX}{id}");
        let sealed = seal_record(self, HOLDERS_MAGIC, &name, &encode(&h)?)?;
        self.inner.backend.put(&name, Bytes::from(sealed)).await?;
        Ok(h)
    }
}

/// The packs of the due records that can go (see [`view::reprieve`]). Fills the
/// report's deleted and reprieved lists.
fn doom(
    view: &View,
    due: &[CondemnedRecord],
    uncovered: &HashSet<String>,
    report: &mut GcReport,
) -> HashSet<String> {
    let mut doomed: HashSet<String> = due.iter().flat_map(|r| r.packs.iter().cloned()).collect();
    // A repacked pack is named by the backups that used it; what they reach through
    // it is in the pack its moved record names, unless it is `uncovered`.
    let moved_away: HashSet<String> = due
        .iter()
        .flat_map(|r| r.repacked.iter())
        .filter(|p| !uncovered.contains(*p))
        .cloned()
        .collect();
    report.reprieved = view::reprieve(view, &mut doomed, &moved_away);
    let mut deleted: Vec<String> = doomed
        .iter()
        .filter(|p| view.packs.contains_key(*p))
        .cloned()
        .collect();
    deleted.sort();
    report.deleted_bytes = deleted.iter().map(|p| view.packs[p].size).sum();
    report.deleted = deleted;
    doomed
}
