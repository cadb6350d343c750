//! The whole repository: marker, keys, packs, quarantine records, index objects,
//! manifests and WAL, with each damaged pack reported once, naming the backups it breaks.
//!
//! Memory grows with the number of packs and backups, never with the number of
//! chunks: index objects, packs and chunk lists are read one at a time, and the
//! check that every referenced chunk is stored is a sorted merge of two record
//! streams through temporary files ([`crate::extsort`]): the chunks the index and
//! the pack headers hold, and the chunks the backups reference.

use std::collections::{HashMap, HashSet};

use hs_base::code;
use hs_chunk::{ChunkId, PackEntry};
use hs_crypt::Domain;
use tokio::task::JoinSet;

use super::backup::manifest_refs;
use super::packs::{check_pack, PackCheck};
use super::{base_name, manifest_name, VerifyReport, MESSAGE_BACKUPS, PARALLEL};
use crate::error::{Error, Result};
use crate::extsort::{be_u32, ExternalSort};
use crate::index::{self, IndexedPack};
use crate::manifest::ChunkRef;
use crate::quarantine::QUARANTINE_PREFIX;
use crate::reader::ChunkReader;
use crate::repo::{pack_name, Repository};

/// A chunk some pack holds: `id | pack ordinal (u32 BE) | source` where source 0 is
/// an index object's entry and 1 a pack header's (written only for packs whose header
/// no index object repeats exactly).
type Held = [u8; HELD];
const ID: usize = ChunkId::LEN;
const HELD: usize = ID + 5;
const WANTED: usize = ID + 8;
/// A chunk a backup references: `id | pack ordinal (u32 BE, NO_PACK for a format 1
/// reference) | backup ordinal (u32 BE)`.
type Wanted = [u8; WANTED];
const NO_PACK: u32 = u32::MAX;
/// Frame cache of the reader of list chunks (read once each, in file order).
const LIST_FRAME_CACHE: usize = 4 << 20;
const FROM_INDEX: u8 = 0;
const FROM_HEADER: u8 = 1;

/// What is known about one pack (listed, or named by an index object or a reference).
#[derive(Default)]
struct PackInfo {
    name: String,
    listed: bool,
    /// Per index object naming it: the object's ordinal and the digest of its entries.
    indexed: Vec<(u32, [u8; 32])>,
    /// Condemned by gc or quarantined: readers try every other copy first.
    late: bool,
    /// Missing, or its header does not open: every chunk the index lists for it
    /// counts as damaged.
    whole_damaged: bool,
}

/// The packs by ordinal (the ordinal is what the sorted records carry).
#[derive(Default)]
struct Packs {
    by_name: HashMap<String, u32>,
    info: Vec<PackInfo>,
}

impl Packs {
    fn ordinal(&mut self, name: &str) -> u32 {
        if let Some(&o) = self.by_name.get(name) {
            return o;
        }
        let o = self.info.len() as u32;
        self.by_name.insert(name.to_string(), o);
        self.info.push(PackInfo {
            name: name.to_string(),
            ..PackInfo::default()
        });
        o
    }
}

/// The damaged chunks and, for each, the packs it is damaged in and the pack a
/// reader falls back to (the first index entry, condemned and quarantined packs last).
#[derive(Default)]
struct Damage {
    bad_in: HashMap<ChunkId, Vec<u32>>,
    preferred: HashMap<ChunkId, u32>,
}

impl Damage {
    /// The damaged packs a restore of reference `r` reads a damaged copy from
    /// (empty when an intact copy is read).
    fn read_by(&self, r: &ChunkRef, named: Option<u32>) -> Vec<u32> {
        let Some(bad) = self.bad_in.get(&r.id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(n) = named {
            if !bad.contains(&n) {
                return out; // the pack it names holds an intact copy
            }
            out.push(n);
        }
        // The reader falls back to the index's copy.
        match self.preferred.get(&r.id) {
            Some(p) if bad.contains(p) && !out.contains(p) => out.push(*p),
            Some(p) if !bad.contains(p) => out.clear(),
            _ => {}
        }
        out
    }
}

/// The objects below `deployments/`.
struct DeploymentObjects {
    /// (deployment, backup id) of every manifest, sorted.
    manifests: Vec<(String, String)>,
    /// Per deployment, the names of its WAL objects.
    wal: HashMap<String, Vec<String>>,
    /// (deployment, object name) of every backup catalog object, sorted.
    catalogs: Vec<(String, String)>,
}

fn entries_digest(entries: &[PackEntry]) -> [u8; 32] {
    let ids = hs_chunk::IdWidth::Short;
    let mut b = Vec::with_capacity(hs_chunk::encoded_entries_len(entries, ids));
    hs_chunk::encode_entries(entries, ids, &mut b);
    *blake3::hash(&b).as_bytes()
}

fn held(id: &ChunkId, pack: u32, source: u8) -> Held {
    let mut r = [0u8; HELD];
    r[..ID].copy_from_slice(id.as_bytes());
    r[ID..ID + 4].copy_from_slice(&pack.to_be_bytes());
    r[ID + 4] = source;
    r
}

fn task_failed(e: tokio::task::JoinError) -> Error {
    Error::new(code::ABORTED_TASK_FAILED, "a pack verification task failed").with_source(e)
}

impl Repository {
    /// Verifies the whole repository: the marker, every key object, every
    /// pack (read whole: hash, header, every frame and chunk), every index
    /// object against the packs, every manifest (seal, signature, every
    /// referenced chunk stored, chunk lists readable) and every WAL object
    /// (seal, name binding, length and hash; completed segments are whole
    /// segments of one size per deployment). Packs that no index names are
    /// warnings (garbage collection removes them).
    pub async fn verify_repo(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        self.verify_marker(&mut report).await?;
        self.verify_keys(&mut report).await?;

        let packs_since = report.events;
        let quarantined = self.quarantined_set().await?;
        let late = self.condemned_or_quarantined().await?;
        let mut packs = Packs::default();
        let mut listing: Vec<crate::ObjectInfo> = self.list_packs().await?;
        listing.sort_by(|a, b| a.name.cmp(&b.name));
        for o in &listing {
            let i = packs.ordinal(&o.name) as usize;
            packs.info[i].listed = true;
        }
        let mut held_sort: ExternalSort<HELD> = ExternalSort::default();

        // Index objects first (their problems are reported after the packs').
        let mut index_report = VerifyReport::default();
        let index_objects = self
            .scan_index_objects(&mut packs, &mut held_sort, &mut index_report)
            .await?;
        let damaged = self
            .read_packs(
                listing,
                &mut packs,
                &mut held_sort,
                &index_objects,
                &mut report,
                &mut index_report,
            )
            .await?;
        report_unindexed(&packs, index_objects.len(), &mut index_report);
        let (records, record_problems) = self.read_quarantine_records(&mut report).await?;
        for i in &mut packs.info {
            i.late = late.contains(&i.name);
        }
        let damage = self.damage(&damaged, &packs, &index_objects).await?;

        let objects = self.list_deployment_objects().await?;
        let mut manifest_report = VerifyReport::default();
        let affected = self
            .check_manifests(
                &objects.manifests,
                &damage,
                &mut packs,
                held_sort,
                &mut manifest_report,
            )
            .await?;
        let backups_of = |pack: &str| -> Vec<String> {
            let mut v: Vec<String> = packs
                .by_name
                .get(pack)
                .and_then(|o| affected.get(o))
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            v.sort();
            v
        };

        // Now the packs, one problem (or warning) per damaged pack.
        let count = packs.info.iter().filter(|i| i.listed).count() as u64;
        for (name, c) in damaged {
            report_damaged_pack(&mut report, name, c, &quarantined, &backups_of);
        }
        for (name, msg) in record_problems {
            report.problem("verify.quarantine_record_invalid", &name, msg);
        }
        report.check(
            "packs",
            count + records,
            packs_since,
            "every pack read whole: hash, header, every frame and chunk; quarantine records open",
        );
        // A missing pack touches the backups that read it, too.
        for p in &mut index_report.problems {
            if p.code == code::VERIFY_PACK_MISSING {
                p.backups = backups_of(&p.object);
            }
        }
        report.absorb(index_report);
        report.absorb(manifest_report);
        self.check_catalogs(&objects.catalogs, &mut report).await?;

        self.verify_all_wal(objects.wal, &mut report).await?;
        Ok(report)
    }

    /// Reads one index object: its sealed bytes (`None` if it vanished since the
    /// listing) and what it decodes to.
    async fn read_index_object(
        &self,
        name: &str,
    ) -> Result<Option<(usize, bool, Result<Vec<IndexedPack>>)>> {
        let Some(sealed) = self.get_listed(name).await? else {
            return Ok(None);
        };
        let hash_ok = blake3::hash(&sealed).to_hex().as_str() == base_name(name);
        let decoded = self
            .inner
            .master
            .open(Domain::Index, &sealed)
            .and_then(|p| index::decode(&p));
        Ok(Some((sealed.len(), hash_ok, decoded)))
    }

    /// Reads every index object once, in name order: each must match its name and
    /// open. Records, per pack it names, the object and the digest of its entries,
    /// and every entry as a [`Held`] record. Reports the packs named that do not
    /// exist. Returns the names of the objects that opened (by ordinal).
    async fn scan_index_objects(
        &self,
        packs: &mut Packs,
        held_sort: &mut ExternalSort<HELD>,
        index_report: &mut VerifyReport,
    ) -> Result<Vec<String>> {
        let mut names = self.index_object_names().await?;
        names.sort();
        let mut opened = Vec::new();
        for name in names {
            let Some((len, hash_ok, decoded)) = self.read_index_object(&name).await? else {
                continue;
            };
            index_report.bytes_read += len as u64;
            if !hash_ok {
                index_report.problem(
                    "verify.index_corrupt",
                    &name,
                    "its content does not match its name (BLAKE3 of the object)",
                );
            }
            let list = match decoded {
                Ok(list) => list,
                Err(e) => {
                    index_report.problem(
                        "verify.index_corrupt",
                        &name,
                        format!("it does not open: {e} ({})", e.code()),
                    );
                    continue;
                }
            };
            let obj = opened.len() as u32;
            for p in list {
                let pn = pack_name(&p.id);
                let o = packs.ordinal(&pn);
                let info = &mut packs.info[o as usize];
                info.indexed.push((obj, entries_digest(&p.entries)));
                if !info.listed && !info.whole_damaged {
                    info.whole_damaged = true;
                    index_report.problem(
                        "verify.pack_missing",
                        &pn,
                        format!("index object {name} names this pack, which does not exist"),
                    );
                }
                for e in &p.entries {
                    held_sort.push(held(&e.id, o, FROM_INDEX))?;
                }
            }
            opened.push(name);
        }
        Ok(opened)
    }

    /// Reads every pack whole, several at a time, and checks it ([`check_pack`])
    /// and its header against the index objects that name it. Returns the damaged
    /// packs, sorted by name (their `entries` only say whether the header opened).
    async fn read_packs(
        &self,
        listing: Vec<crate::ObjectInfo>,
        packs: &mut Packs,
        held_sort: &mut ExternalSort<HELD>,
        index_objects: &[String],
        report: &mut VerifyReport,
        index_report: &mut VerifyReport,
    ) -> Result<Vec<(String, PackCheck)>> {
        let mut damaged: Vec<(String, PackCheck)> = Vec::new();
        let mut todo = listing.into_iter();
        type Checked = Option<(String, u64, PackCheck, Option<[u8; 32]>)>;
        let mut set: JoinSet<Result<Checked>> = JoinSet::new();
        loop {
            while set.len() < PARALLEL {
                let Some(o) = todo.next() else { break };
                let repo = self.clone();
                set.spawn(async move {
                    let Some(data) = repo.get_listed(&o.name).await? else {
                        return Ok(None);
                    };
                    let len = data.len() as u64;
                    let name = o.name.clone();
                    let r2 = repo.clone();
                    let (checked, digest) = tokio::task::spawn_blocking(move || {
                        let c = check_pack(&r2, &name, &data);
                        let d = c.entries.as_deref().map(entries_digest);
                        (c, d)
                    })
                    .await
                    .map_err(task_failed)?;
                    Ok(Some((o.name, len, checked, digest)))
                });
            }
            let Some(res) = set.join_next().await else {
                break;
            };
            let Some((name, len, checked, digest)) = res.map_err(task_failed)?? else {
                continue;
            };
            report.bytes_read += len;
            let o = packs.ordinal(&name);
            let info = &mut packs.info[o as usize];
            let mut header_held = info.indexed.is_empty();
            if let Some(d) = digest {
                for (obj, idx_digest) in &info.indexed {
                    if *idx_digest != d {
                        header_held = true;
                        index_report.problem(
                            "verify.index_mismatch",
                            &index_objects[*obj as usize],
                            format!("its entry for pack {name} differs from the pack's header"),
                        );
                    }
                }
            }
            let PackCheck {
                entries,
                pack_id,
                problems,
                bad,
            } = checked;
            match &entries {
                Some(entries) if header_held => {
                    for e in entries {
                        held_sort.push(held(&e.id, o, FROM_HEADER))?;
                    }
                }
                None => info.whole_damaged = true,
                _ => {}
            }
            if !problems.is_empty() {
                damaged.push((
                    name,
                    PackCheck {
                        entries: entries.map(|_| Vec::new()),
                        pack_id,
                        problems,
                        bad,
                    },
                ));
            }
        }
        damaged.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(damaged)
    }

    /// Quarantine records open and name a pack (the name alone keeps the pack
    /// quarantined, so a damaged record is reported, not fatal). Returns how many were
    /// read and, per record that does not open, its name and the message.
    async fn read_quarantine_records(
        &self,
        report: &mut VerifyReport,
    ) -> Result<(u64, Vec<(String, String)>)> {
        let mut records = 0;
        let mut record_problems = Vec::new();
        for o in self.inner.backend.list(QUARANTINE_PREFIX).await? {
            let Some(sealed) = self.get_listed(&o.name).await? else {
                continue;
            };
            records += 1;
            report.bytes_read += sealed.len() as u64;
            if let Err(e) = self.open_quarantine_record(&o.name, &sealed) {
                record_problems.push((o.name, format!("{e} ({})", e.code())));
            }
        }
        Ok((records, record_problems))
    }

    /// The damaged chunks: the chunks of frames that do not open, and every chunk
    /// the index lists for a pack that is gone or whose header does not open; and for
    /// each, the copy a reader falls back to. Index objects are read again only
    /// when something is damaged (once more when whole packs are).
    async fn damage(
        &self,
        damaged: &[(String, PackCheck)],
        packs: &Packs,
        index_objects: &[String],
    ) -> Result<Damage> {
        let mut d = Damage::default();
        for (name, c) in damaged {
            let o = packs.by_name[name];
            for id in &c.bad {
                d.bad_in.entry(*id).or_default().push(o);
            }
        }
        if packs.info.iter().any(|i| i.whole_damaged) {
            for name in index_objects {
                for p in self.index_object_packs(name).await? {
                    let o = packs.by_name[&pack_name(&p.id)];
                    if packs.info[o as usize].whole_damaged {
                        for e in &p.entries {
                            let v = d.bad_in.entry(e.id).or_default();
                            if !v.contains(&o) {
                                v.push(o);
                            }
                        }
                    }
                }
            }
        }
        if d.bad_in.is_empty() {
            return Ok(d);
        }
        let mut late: HashMap<ChunkId, u32> = HashMap::new();
        for name in index_objects {
            for p in self.index_object_packs(name).await? {
                let o = packs.by_name[&pack_name(&p.id)];
                let first = if packs.info[o as usize].late {
                    &mut late
                } else {
                    &mut d.preferred
                };
                for e in &p.entries {
                    if d.bad_in.contains_key(&e.id) {
                        first.entry(e.id).or_insert(o);
                    }
                }
            }
        }
        for (id, o) in late {
            d.preferred.entry(id).or_insert(o);
        }
        Ok(d)
    }

    /// The packs of an index object that opened before (empty if it is gone now or
    /// no longer opens: that was or will be reported).
    async fn index_object_packs(&self, name: &str) -> Result<Vec<IndexedPack>> {
        Ok(match self.read_index_object(name).await? {
            Some((_, _, Ok(list))) => list,
            _ => Vec::new(),
        })
    }

    /// Lists the manifests and the WAL objects of every deployment.
    async fn list_deployment_objects(&self) -> Result<DeploymentObjects> {
        let mut manifests = Vec::new();
        let mut catalogs = Vec::new();
        let mut wal: HashMap<String, Vec<String>> = HashMap::new();
        for o in self.inner.backend.list("deployments/").await? {
            let parts: Vec<&str> = o.name.split('/').collect();
            match parts.as_slice() {
                ["deployments", d, "backups", id] => {
                    manifests.push((d.to_string(), id.to_string()));
                }
                ["deployments", d, "wal", ..] => {
                    wal.entry(d.to_string()).or_default().push(o.name.clone());
                }
                ["deployments", d, "catalog", _] => catalogs.push((d.to_string(), o.name.clone())),
                _ => {}
            }
        }
        manifests.sort();
        catalogs.sort();
        Ok(DeploymentObjects {
            manifests,
            wal,
            catalogs,
        })
    }

    /// Checks every manifest (opens, signature, chunk lists readable) one at a time,
    /// then that every chunk they reference is stored ([`check_references`]).
    /// Returns, per damaged pack, the backups that read a damaged chunk from it (a
    /// chunk with another copy that the readers prefer does not count).
    async fn check_manifests(
        &self,
        manifests: &[(String, String)],
        damage: &Damage,
        packs: &mut Packs,
        held_sort: ExternalSort<HELD>,
        manifest_report: &mut VerifyReport,
    ) -> Result<HashMap<u32, HashSet<String>>> {
        let manifests_since = manifest_report.events;
        // Only list chunks are read here, each once, file by file: a few frames of cache.
        let reader = ChunkReader::lazy(self.clone(), LIST_FRAME_CACHE);
        let mut affected: HashMap<u32, HashSet<String>> = HashMap::new();
        let mut wanted: ExternalSort<WANTED> = ExternalSort::default();
        for (b, (d, id)) in manifests.iter().enumerate() {
            let backup = format!("{d}/{id}");
            let Some(m) = self.load_manifest_checked(d, id, manifest_report).await? else {
                continue;
            };
            let mut want = |r: &ChunkRef, packs: &mut Packs| -> Result<()> {
                let named = r.pack.map(|p| packs.ordinal(&p.object_name()));
                for o in damage.read_by(r, named) {
                    affected.entry(o).or_default().insert(backup.clone());
                }
                let mut w = [0u8; WANTED];
                w[..ID].copy_from_slice(r.id.as_bytes());
                w[ID..ID + 4].copy_from_slice(&named.unwrap_or(NO_PACK).to_be_bytes());
                w[ID + 4..].copy_from_slice(&(b as u32).to_be_bytes());
                wanted.push(w)
            };
            let (content, lists) = manifest_refs(&m);
            for r in content.iter().chain(&lists) {
                want(r, packs)?;
            }
            drop(content);
            let what = format!("backup {backup}");
            for l in &lists {
                let refs = self
                    .expand_lists(
                        &reader,
                        &what,
                        &backup,
                        std::slice::from_ref(l),
                        manifest_report,
                    )
                    .await;
                for r in &refs {
                    want(r, packs)?;
                }
            }
        }
        check_references(held_sort, wanted, manifests, packs, manifest_report)?;
        manifest_report.check(
            "manifests",
            manifests.len() as u64,
            manifests_since,
            "every manifest opens, its signature verifies, every chunk it references is stored",
        );
        Ok(affected)
    }

    /// Backup catalog objects open (a damaged one is a warning: readers ignore it and
    /// read the manifests, and the next backup replaces it).
    async fn check_catalogs(
        &self,
        catalogs: &[(String, String)],
        report: &mut VerifyReport,
    ) -> Result<()> {
        let since = report.events;
        for (d, name) in catalogs {
            let Some(sealed) = self.get_listed(name).await? else {
                continue;
            };
            report.bytes_read += sealed.len() as u64;
            if let Err(e) = self.check_catalog(d, name, &sealed) {
                report.warn(
                    "verify.catalog_invalid",
                    name,
                    format!(
                        "{e} ({}); `list` reads the manifests instead, and the next backup \
                         replaces it",
                        e.code()
                    ),
                );
            }
        }
        report.check(
            "catalogs",
            catalogs.len() as u64,
            since,
            "every backup catalog opens (a damaged one is a warning)",
        );
        Ok(())
    }

    /// Every WAL object of every deployment.
    async fn verify_all_wal(
        &self,
        wal: HashMap<String, Vec<String>>,
        report: &mut VerifyReport,
    ) -> Result<()> {
        let since = report.events;
        let mut deployments: Vec<(String, Vec<String>)> = wal.into_iter().collect();
        deployments.sort();
        let mut wal_count = 0;
        for (d, mut names) in deployments {
            names.sort();
            wal_count += names.len() as u64;
            self.verify_deployment_wal(&d, names, report).await?;
        }
        report.check(
            "wal",
            wal_count,
            since,
            "every WAL segment, partial, history file, gap record and summary opens and matches its hash",
        );
        Ok(())
    }
}

/// Warns about each pack no index object names, and records the index check.
fn report_unindexed(packs: &Packs, index_objects: usize, index_report: &mut VerifyReport) {
    let mut orphans: Vec<&str> = packs
        .info
        .iter()
        .filter(|i| i.listed && i.indexed.is_empty())
        .map(|i| i.name.as_str())
        .collect();
    orphans.sort_unstable();
    for p in orphans {
        index_report.warn(
            "verify.pack_unindexed",
            p,
            "no index object names this pack (left by an interrupted backup); garbage \
             collection will remove it",
        );
    }
    index_report.check(
        "index",
        index_objects as u64,
        0,
        "every index object opens and matches the pack headers",
    );
}

/// The sorted merge: a reference is stored when the index lists its chunk, or (a
/// format 2 reference) the header of the pack it names does. One problem per backup
/// and missing chunk.
fn check_references(
    held_sort: ExternalSort<HELD>,
    wanted: ExternalSort<WANTED>,
    manifests: &[(String, String)],
    packs: &Packs,
    report: &mut VerifyReport,
) -> Result<()> {
    let mut held = held_sort.finish()?;
    let mut wanted = wanted.finish()?;
    let mut next_held = held.next_record()?;
    // The records of the current id: (pack, source).
    let mut group: Vec<(u32, u8)> = Vec::new();
    let mut group_id = [0u8; ID];
    let mut have_group = false;
    let mut last: Option<Wanted> = None;
    while let Some(w) = wanted.next_record()? {
        if last == Some(w) {
            continue;
        }
        last = Some(w);
        let id = &w[..ID];
        if !have_group || group_id != id {
            group.clear();
            group_id.copy_from_slice(id);
            have_group = true;
            while let Some(h) = next_held.filter(|h| h[..ID] <= *id) {
                if h[..ID] == *id {
                    group.push((be_u32(&h[ID..]), h[ID + 4]));
                }
                next_held = held.next_record()?;
            }
        }
        let pack = be_u32(&w[ID..]);
        let stored = group
            .iter()
            .any(|&(p, source)| source == FROM_INDEX || p == pack);
        if stored {
            continue;
        }
        let b = be_u32(&w[ID + 4..]) as usize;
        let (d, backup_id) = &manifests[b];
        let chunk = ChunkId::from_bytes(group_id);
        let message = if pack == NO_PACK {
            format!("chunk {chunk} is not in the index")
        } else {
            format!(
                "chunk {chunk} is neither in its pack {} nor in the index",
                packs.info[pack as usize].name
            )
        };
        let mut p = VerifyReport::entry(
            "verify.chunk_missing",
            &manifest_name(d, backup_id),
            message,
        );
        p.backups.push(format!("{d}/{backup_id}"));
        report.add_problem(p);
    }
    Ok(())
}

/// Reports one damaged pack: a problem naming the backups that read a damaged chunk
/// from it, or a warning when it is quarantined and no backup does any more.
fn report_damaged_pack(
    report: &mut VerifyReport,
    name: String,
    c: PackCheck,
    quarantined: &HashSet<String>,
    backups_of: &dyn Fn(&str) -> Vec<String>,
) {
    let backups = backups_of(&name);
    let is_quarantined = quarantined.contains(&name);
    let (code, first) = &c.problems[0];
    let mut finding = first.clone();
    if c.problems.len() > 1 {
        finding.push_str(&format!(" (and {} more finding(s))", c.problems.len() - 1));
    }
    // The JSON field has them all; the message the first few.
    let mut list = backups
        .iter()
        .take(MESSAGE_BACKUPS)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if backups.len() > MESSAGE_BACKUPS {
        list.push_str(&format!(", and {} more", backups.len() - MESSAGE_BACKUPS));
    }
    if is_quarantined && backups.is_empty() {
        let mut w = VerifyReport::entry(
            "verify.pack_quarantined",
            &name,
            format!(
                "damaged ({code}: {finding}) and quarantined; no backup reads a damaged \
                 chunk from it any more (each has an intact copy in another pack, or no \
                 backup references it); `pg_hardstorage repo gc --apply` deletes it once \
                 no backup needs a chunk only it holds"
            ),
        );
        w.quarantined = true;
        let _ = VerifyReport::push(&mut report.warnings, w);
        return;
    }
    let message = match (is_quarantined, backups.is_empty()) {
        (false, true) => format!(
            "{finding}; no backup reads a damaged chunk from it, but a new backup could \
             reference its damaged chunks until it is quarantined"
        ),
        (false, false) => format!(
            "{finding}; {} backup(s) read damaged chunks from it and cannot be restored \
             until a new backup stores those chunks again: {list}",
            backups.len()
        ),
        _ => format!(
            "{finding} (quarantined: new backups do not use this pack); {} backup(s) \
             still read damaged chunks that only this pack holds and cannot be restored \
             completely: {list} (no newer backup stored those chunks again: the data \
             changed in the cluster or is gone from it)",
            backups.len()
        ),
    };
    let mut p = VerifyReport::entry(code, &name, message);
    p.backups = backups;
    p.quarantined = is_quarantined;
    report.add_problem(p);
}
