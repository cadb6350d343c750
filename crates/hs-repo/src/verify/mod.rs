//! Verification: read a backup, or the whole repository, back from storage and
//! report every problem found (see docs/repository-format.md, "Verification").
//!
//! [`Repository::verify_backup`] checks one backup end to end: the manifest's
//! seal and signature, every chunk (and chunk-list chunk) of every file read
//! back, decrypted and checked against its keyed id, and that the WAL from the
//! backup's start to its stop LSN exists (in the backup's own `pg_wal/` or in
//! the deployment's WAL archive). [`Repository::verify_repo`] checks every
//! object: key objects, packs (whole: hash, header, every frame and chunk),
//! index objects against the pack headers, manifests (signature, chunks
//! indexed) and WAL objects.
//!
//! Both keep going after a problem and return a [`VerifyReport`]; the caller
//! turns a report with problems into an error with
//! [`VerifyReport::to_error`] (the first problem's code, exit 9).

use std::collections::{HashMap, HashSet};

use hs_chunk::{ChunkId, PackEntry, PackHeader};
use hs_crypt::Domain;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::index::{self, Index};
use crate::keys::{KeyCheck, KEYS_PREFIX, KEY_INFO_PREFIX};
use crate::manifest::{ArchiveEntry, BackupManifest, ChunkRef, FileKind};
use crate::quarantine::QUARANTINE_PREFIX;
use crate::reader::ChunkReader;
use crate::repo::{pack_name, Repository, MARKER_NAME};
use crate::wal::{
    is_valid_wal_segment_size, parse_wal_segment_name, wal_segment_name, Kind, WalGap,
};

/// At most this many distinct problems (and as many warnings) are kept in a
/// report; further ones are only counted.
pub const MAX_PROBLEMS: usize = 1000;
/// Chunks read per task while verifying a backup.
const CHUNK_BATCH: usize = 256;
/// Tasks reading chunks, packs or WAL objects at the same time.
const PARALLEL: usize = 4;
/// A problem's message names at most this many of the backups it touches (its
/// `backups` field has them all).
const MESSAGE_BACKUPS: usize = 10;
/// A backup spanning more WAL segments than this is not checked segment by segment.
const MAX_WAL_SEGMENTS: u64 = 1 << 20;

/// One problem (or warning) found by verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyProblem {
    /// Dotted code, e.g. `verify.pack_corrupt`.
    pub code: &'static str,
    /// The repository object (or WAL segment) concerned.
    pub object: String,
    /// What is wrong, for humans (the first occurrence's message).
    pub message: String,
    /// How many times this code was reported for this object (for example
    /// the number of unreadable chunks in one pack).
    pub count: u64,
    /// The backups it touches, as `<deployment>/<backup id>`, sorted: for a damaged or
    /// missing pack, the backups that read a damaged chunk from it (`repo verify`); for
    /// a manifest or a chunk of one backup, that backup. Empty when none is known.
    pub backups: Vec<String>,
    /// Whether the object is a quarantined pack (`repo verify --quarantine`).
    pub quarantined: bool,
}

/// One line of the report: what was checked and how many problems it found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyCheck {
    /// Short name of the check, e.g. `packs`.
    pub name: String,
    /// How many objects (chunks, segments, ...) it checked.
    pub checked: u64,
    /// How many problems it reported.
    pub failed: u64,
    /// A short description of what was checked.
    pub detail: String,
}

/// The result of [`Repository::verify_backup`] or [`Repository::verify_repo`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The checks that ran, in order.
    pub checks: Vec<VerifyCheck>,
    /// Problems: the data is damaged, missing or forged.
    pub problems: Vec<VerifyProblem>,
    /// Findings that are not damage (e.g. a pack no index names).
    pub warnings: Vec<VerifyProblem>,
    /// Problems beyond [`MAX_PROBLEMS`] that were counted but not kept.
    pub problems_omitted: u64,
    /// Bytes read from the repository.
    pub bytes_read: u64,
    #[serde(skip)]
    events: u64,
}

impl VerifyReport {
    /// Whether no problem was found (warnings do not count).
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.problems_omitted == 0
    }

    /// The error to report for a report with problems: the first problem's
    /// code, a message naming its object, and the total count. `None` if
    /// the report is clean.
    pub fn to_error(&self) -> Option<Error> {
        let first = self.problems.first()?;
        let total = self.problems.len() as u64 + self.problems_omitted;
        let more = if total > 1 {
            format!(" (and {} more problem(s))", total - 1)
        } else {
            String::new()
        };
        Some(
            Error::new(
                first.code,
                format!("{}: {}{more}", first.object, first.message),
            )
            .with_suggestion(
                "do not rely on the damaged objects: restore another backup, keep a second copy \
                 of the repository, and investigate the storage",
            ),
        )
    }

    fn push(list: &mut Vec<VerifyProblem>, p: VerifyProblem) -> bool {
        if let Some(q) = list
            .iter_mut()
            .find(|q| q.code == p.code && q.object == p.object)
        {
            q.count += p.count;
            for b in p.backups {
                if let Err(i) = q.backups.binary_search(&b) {
                    q.backups.insert(i, b);
                }
            }
            q.quarantined |= p.quarantined;
            return true;
        }
        if list.len() >= MAX_PROBLEMS {
            return false;
        }
        list.push(p);
        true
    }

    fn entry(code: &'static str, object: &str, message: String) -> VerifyProblem {
        VerifyProblem {
            code,
            object: object.to_string(),
            message,
            count: 1,
            backups: Vec::new(),
            quarantined: false,
        }
    }

    pub(crate) fn problem(&mut self, code: &'static str, object: &str, message: impl Into<String>) {
        self.add_problem(Self::entry(code, object, message.into()));
    }

    fn add_problem(&mut self, mut p: VerifyProblem) {
        self.events += 1;
        p.backups.sort();
        p.backups.dedup();
        if !Self::push(&mut self.problems, p) {
            self.problems_omitted += 1;
        }
    }

    pub(crate) fn warn(&mut self, code: &'static str, object: &str, message: impl Into<String>) {
        let _ = Self::push(
            &mut self.warnings,
            Self::entry(code, object, message.into()),
        );
    }

    /// Appends `other` (checks, problems, warnings, counts) after what is here.
    fn absorb(&mut self, other: VerifyReport) {
        self.checks.extend(other.checks);
        for p in other.problems {
            if !Self::push(&mut self.problems, p) {
                self.problems_omitted += 1;
            }
        }
        for w in other.warnings {
            let _ = Self::push(&mut self.warnings, w);
        }
        self.problems_omitted += other.problems_omitted;
        self.bytes_read += other.bytes_read;
        self.events += other.events;
    }

    /// Records a check: `since` is the event count when it started.
    fn check(&mut self, name: &str, checked: u64, since: u64, detail: impl Into<String>) {
        self.checks.push(VerifyCheck {
            name: name.to_string(),
            checked,
            failed: self.events - since,
            detail: detail.into(),
        });
    }
}

/// Parses an `X/Y` LSN (hex halves).
fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
        return None;
    }
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// The code a failed read of a chunk is reported with.
fn chunk_code(e: &Error) -> &'static str {
    if e.code().starts_with("notfound.") {
        "verify.chunk_missing"
    } else if e.code().starts_with("verify.") {
        "verify.chunk_corrupt"
    } else {
        e.code()
    }
}

fn manifest_name(deployment: &str, backup_id: &str) -> String {
    format!("deployments/{deployment}/backups/{backup_id}")
}

/// A file of a backup as restored: its path in the base archive, or under
/// `pg_tblspc/<oid>/` for a tablespace's archive.
fn file_label(a: &ArchiveEntry, path: &str) -> String {
    match a.tablespace_oid {
        Some(oid) => format!("pg_tblspc/{oid}/{path}"),
        None => path.to_string(),
    }
}

/// The last `/`-separated part of an object name.
fn base_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// Every chunk reference of a manifest: content chunks inline, and list
/// chunks (whose content references are read separately).
fn manifest_refs(m: &BackupManifest) -> (Vec<ChunkRef>, Vec<ChunkRef>) {
    let mut content = Vec::new();
    let mut lists = Vec::new();
    for a in &m.archives {
        for f in &a.files {
            if f.kind == FileKind::File {
                content.extend_from_slice(&f.chunks);
                lists.extend_from_slice(&f.chunk_lists);
            }
        }
    }
    (content, lists)
}

/// Checks a whole pack in memory: its name is the BLAKE3 hash of its bytes,
/// its header opens and parses, and every frame opens, decompresses to its
/// recorded length and holds chunks that match their ids. Returns the header
/// entries (if the header is readable), the problems found and the chunks
/// found damaged.
fn check_pack(repo: &Repository, name: &str, data: &[u8]) -> PackCheck {
    let mut c = check_pack_content(repo, data);
    // Last: a damaged frame or header says more than the hash does.
    if blake3::hash(data).to_hex().as_str() != base_name(name) {
        c.problems.push((
            "verify.pack_corrupt",
            "its content does not match its name (BLAKE3 of the pack)".to_string(),
        ));
    }
    c
}

/// [`check_pack`] but for the name.
fn check_pack_content(repo: &Repository, data: &[u8]) -> PackCheck {
    let mut problems = Vec::new();
    let mut bad = HashSet::new();
    let (blobs, sealed) = match hs_chunk::split_pack(data) {
        Ok(x) => x,
        Err(e) => {
            problems.push(("verify.pack_corrupt", format!("{e} ({})", e.code())));
            return PackCheck {
                entries: None,
                problems,
                bad,
            };
        }
    };
    let entries = match repo
        .inner
        .master
        .open(Domain::PackHeader, sealed)
        .map_err(Error::from)
        .and_then(|plain| Ok(PackHeader::decode(&plain, blobs.len() as u64)?.entries))
    {
        Ok(e) => e,
        Err(e) => {
            problems.push((
                "verify.pack_corrupt",
                format!("its header does not open: {e} ({})", e.code()),
            ));
            return PackCheck {
                entries: None,
                problems,
                bad,
            };
        }
    };
    let mut i = 0;
    while i < entries.len() {
        let f = entries[i];
        let mut j = i;
        while j < entries.len() && entries[j].frame_offset == f.frame_offset {
            j += 1;
        }
        let frame = &entries[i..j];
        i = j;
        let start = f.frame_offset as usize;
        let Some(blob) = blobs.get(start..start + f.frame_length as usize) else {
            problems.push((
                "verify.pack_corrupt",
                format!("the frame at offset {start} lies outside the pack"),
            ));
            bad.extend(frame.iter().map(|c| c.id));
            continue;
        };
        let plain = match repo.inner.master.open(Domain::Chunk, blob) {
            Ok(p) => p,
            Err(e) => {
                problems.push((
                    "verify.pack_corrupt",
                    format!(
                        "the frame at offset {start} does not open: {e} ({})",
                        e.code()
                    ),
                ));
                bad.extend(frame.iter().map(|c| c.id));
                continue;
            }
        };
        let plain = if f.compressed {
            match hs_chunk::decompress(&plain, f.frame_raw_length as usize) {
                Ok(p) => p,
                Err(e) => {
                    problems.push((
                        "verify.pack_corrupt",
                        format!("the frame at offset {start} does not decompress: {e}"),
                    ));
                    bad.extend(frame.iter().map(|c| c.id));
                    continue;
                }
            }
        } else {
            plain
        };
        if plain.len() != f.frame_raw_length as usize {
            problems.push((
                "verify.pack_corrupt",
                format!(
                    "the frame at offset {start} holds {} bytes, not {}",
                    plain.len(),
                    f.frame_raw_length
                ),
            ));
            bad.extend(frame.iter().map(|c| c.id));
            continue;
        }
        for c in frame {
            let s = c.chunk_offset as usize;
            let ok = plain
                .get(s..s + c.raw_length as usize)
                .is_some_and(|d| repo.chunk_id(d) == c.id);
            if !ok {
                bad.insert(c.id);
                problems.push((
                    "verify.pack_corrupt",
                    format!(
                        "chunk {} in the frame at offset {start} does not match its id",
                        c.id
                    ),
                ));
            }
        }
    }
    PackCheck {
        entries: Some(entries),
        problems,
        bad,
    }
}

/// One index object's packs: (pack object name, its entries).
type IndexedPacks = Vec<(String, Vec<PackEntry>)>;

/// Index objects as loaded for verification.
struct LoadedIndex {
    index: Index,
    /// Per index object name, its packs.
    objects: Vec<(String, IndexedPacks)>,
}

impl Repository {
    /// Loads every index object that opens; the others are reported (as
    /// problems, or as warnings when `damage_is_warning`).
    async fn load_index_checked(
        &self,
        report: &mut VerifyReport,
        damage_is_warning: bool,
    ) -> Result<LoadedIndex> {
        let mut names: Vec<String> = self
            .inner
            .backend
            .list("index/")
            .await?
            .into_iter()
            .map(|o| o.name)
            .collect();
        names.sort();
        let mut out = LoadedIndex {
            index: Index::default(),
            objects: Vec::new(),
        };
        // As readers do: condemned and quarantined packs last, so a chunk that also
        // lives in another pack is checked where a restore would read it.
        let mut late_packs = self.condemned_packs().await?;
        late_packs.extend(self.quarantined_set().await?);
        let mut late = Vec::new();
        for name in names {
            let sealed = match self.inner.backend.get(&name).await {
                Ok(b) => b,
                Err(e) if e.code() == "notfound.object" => continue,
                Err(e) => return Err(e),
            };
            report.bytes_read += sealed.len() as u64;
            let bad = |report: &mut VerifyReport, msg: String| {
                if damage_is_warning {
                    report.warn("verify.index_corrupt", &name, msg);
                } else {
                    report.problem("verify.index_corrupt", &name, msg);
                }
            };
            if blake3::hash(&sealed).to_hex().as_str() != base_name(&name) {
                bad(
                    report,
                    "its content does not match its name (BLAKE3 of the object)".to_string(),
                );
            }
            let decoded = self
                .inner
                .master
                .open(Domain::Index, &sealed)
                .map_err(Error::from)
                .and_then(|p| index::decode(&p));
            match decoded {
                Ok(packs) => {
                    let mut list = Vec::with_capacity(packs.len());
                    for p in packs {
                        let pn = pack_name(&p.id);
                        if late_packs.contains(&pn) {
                            late.push((pn.clone(), p.entries.clone()));
                        } else {
                            out.index.add(pn.clone(), &p.entries);
                        }
                        list.push((pn, p.entries));
                    }
                    out.objects.push((name, list));
                }
                Err(e) => bad(report, format!("it does not open: {e} ({})", e.code())),
            }
        }
        for (pn, entries) in late {
            out.index.add(pn, &entries);
        }
        Ok(out)
    }

    /// Reads every chunk in `refs` (each distinct chunk once, in parallel).
    /// Returns the number of distinct chunks, their bytes, and the chunks that
    /// could not be read or did not match, with the error.
    async fn read_all_chunks(
        &self,
        reader: &ChunkReader,
        refs: &[ChunkRef],
        report: &mut VerifyReport,
    ) -> Result<(u64, u64, Vec<(ChunkId, Error)>)> {
        let mut seen = HashSet::with_capacity(refs.len());
        let distinct: Vec<ChunkRef> = refs.iter().copied().filter(|r| seen.insert(*r)).collect();
        let count = distinct.len() as u64;
        let mut bytes = 0u64;
        let mut failed = Vec::new();
        let mut batches = distinct.chunks(CHUNK_BATCH).map(<[ChunkRef]>::to_vec);
        let mut set: JoinSet<(u64, Vec<(ChunkId, Error)>)> = JoinSet::new();
        loop {
            while set.len() < PARALLEL {
                let Some(batch) = batches.next() else { break };
                let reader = reader.clone();
                set.spawn(async move {
                    let mut n = 0u64;
                    let mut errs = Vec::new();
                    for r in batch {
                        match reader.read(&r).await {
                            Ok(d) => n += d.len() as u64,
                            Err(e) => errs.push((r.id, e)),
                        }
                    }
                    (n, errs)
                });
            }
            let Some(res) = set.join_next().await else {
                break;
            };
            let (n, errs) = res.map_err(|e| {
                Error::new("aborted.task_failed", "a chunk verification task failed").with_source(e)
            })?;
            bytes += n;
            failed.extend(errs);
        }
        report.bytes_read += bytes;
        Ok((count, bytes, failed))
    }

    /// Reads a file's list chunks and returns the content references they
    /// hold; unreadable lists are reported against their pack, naming `what`
    /// (the file and its backup) and touching `backup`.
    async fn expand_lists(
        &self,
        reader: &ChunkReader,
        what: &str,
        backup: &str,
        lists: &[ChunkRef],
        report: &mut VerifyReport,
    ) -> Vec<ChunkRef> {
        let mut out = Vec::new();
        for l in lists {
            let got = match reader.read(l).await {
                Ok(d) => {
                    report.bytes_read += d.len() as u64;
                    crate::chunklist::decode_chunk_list(&d)
                }
                Err(e) => Err(e),
            };
            match got {
                Ok(refs) => out.extend(refs),
                Err(e) => {
                    let object = reader
                        .pack_of(&l.id)
                        .map_or_else(|| what.to_string(), str::to_string);
                    let mut p = VerifyReport::entry(
                        chunk_code(&e),
                        &object,
                        format!("chunk list {} of {what}: {e} ({})", l.id, e.code()),
                    );
                    p.backups.push(backup.to_string());
                    report.add_problem(p);
                }
            }
        }
        out
    }

    /// Loads a manifest for verification; problems are reported and give
    /// `Ok(None)`. A backup that does not exist is an error (`notfound.backup`).
    async fn load_manifest_checked(
        &self,
        deployment: &str,
        backup_id: &str,
        report: &mut VerifyReport,
    ) -> Result<Option<BackupManifest>> {
        let name = manifest_name(deployment, backup_id);
        let (code, message) = match self.load_manifest(deployment, backup_id).await {
            Ok(m) => return Ok(Some(m)),
            Err(e) if e.code() == "verify.signature_invalid" => (
                "verify.manifest_signature",
                format!("the signature does not verify: the manifest was modified or forged ({e})"),
            ),
            Err(e) if e.code().starts_with("verify.") => (
                "verify.manifest_corrupt",
                format!("the manifest does not open: {e} ({})", e.code()),
            ),
            Err(e) => return Err(e),
        };
        let mut p = VerifyReport::entry(code, &name, message);
        p.backups.push(format!("{deployment}/{backup_id}"));
        report.add_problem(p);
        Ok(None)
    }

    /// Verifies one backup end to end: the manifest (seal and signature),
    /// every chunk of every file and every chunk-list chunk read back and
    /// checked against its id, and the WAL from the backup's start LSN to its
    /// stop LSN (in the backup's own `pg_wal/` or archived, each archived
    /// segment read and checked). `notfound.backup` if the backup does not
    /// exist; everything else is reported in the [`VerifyReport`].
    pub async fn verify_backup(&self, deployment: &str, backup_id: &str) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let name = manifest_name(deployment, backup_id);
        let since = report.events;
        let manifest = self
            .load_manifest_checked(deployment, backup_id, &mut report)
            .await?;
        report.check("manifest", 1, since, format!("{name}: seal and signature"));
        let Some(m) = manifest else {
            return Ok(report);
        };

        // A damaged index object that this backup does not need is not this
        // backup's problem; a chunk it needs and cannot find is.
        let since = report.events;
        let loaded = self.load_index_checked(&mut report, true).await?;
        let quarantined = self.quarantined_set().await?;
        let reader = ChunkReader::new(
            self.clone(),
            loaded.index,
            crate::reader::DEFAULT_FRAME_CACHE_BYTES,
        );
        let backup = format!("{deployment}/{backup_id}");
        // Every content reference, and which file each run of them belongs to (to name
        // the file of a chunk that fails).
        let mut content: Vec<ChunkRef> = Vec::new();
        let mut spans: Vec<(String, std::ops::Range<usize>)> = Vec::new();
        let mut list_count = 0u64;
        for a in &m.archives {
            for f in &a.files {
                if f.kind != FileKind::File {
                    continue;
                }
                let path = file_label(a, &f.path);
                let start = content.len();
                content.extend_from_slice(&f.chunks);
                if !f.chunk_lists.is_empty() {
                    list_count += f.chunk_lists.len() as u64;
                    let what = format!("file {path} of backup {backup}");
                    let refs = self
                        .expand_lists(&reader, &what, &backup, &f.chunk_lists, &mut report)
                        .await;
                    content.extend(refs);
                }
                spans.push((path, start..content.len()));
            }
        }
        report.check(
            "chunk lists",
            list_count,
            since,
            "list chunks read and decoded",
        );
        let since = report.events;
        let (n, bytes, failed) = self.read_all_chunks(&reader, &content, &mut report).await?;
        if !failed.is_empty() {
            let ids: HashSet<ChunkId> = failed.iter().map(|(id, _)| *id).collect();
            let mut file_of: HashMap<ChunkId, &str> = HashMap::new();
            for (path, range) in &spans {
                for r in &content[range.clone()] {
                    if ids.contains(&r.id) {
                        file_of.entry(r.id).or_insert(path.as_str());
                    }
                }
            }
            for (id, e) in failed {
                let pack = reader.pack_of(&id);
                let object = pack.map_or_else(|| format!("chunk {id}"), str::to_string);
                let file = file_of.get(&id).copied().unwrap_or("?");
                let mut p = VerifyReport::entry(
                    chunk_code(&e),
                    &object,
                    format!(
                        "chunk {id} of file {file} of backup {backup}: {e} ({})",
                        e.code()
                    ),
                );
                p.backups.push(backup.clone());
                p.quarantined = pack.is_some_and(|p| quarantined.contains(p));
                report.add_problem(p);
            }
        }
        report.check(
            "chunks",
            n,
            since,
            format!(
                "{n} distinct chunks ({bytes} bytes) read, decrypted and checked against their ids"
            ),
        );

        let since = report.events;
        let checked = self.verify_backup_wal(&m, &mut report).await?;
        report.check(
            "wal",
            checked,
            since,
            format!(
                "WAL from {} to {} on timeline {} present",
                m.start_lsn, m.stop_lsn, m.timeline
            ),
        );
        Ok(report)
    }

    /// Checks that the WAL needed to make backup `m` consistent exists.
    async fn verify_backup_wal(
        &self,
        m: &BackupManifest,
        report: &mut VerifyReport,
    ) -> Result<u64> {
        let mname = manifest_name(&m.deployment, &m.backup_id);
        let (Some(start), Some(stop)) = (parse_lsn(&m.start_lsn), parse_lsn(&m.stop_lsn)) else {
            report.problem(
                "verify.manifest_corrupt",
                &mname,
                format!(
                    "start LSN {:?} or stop LSN {:?} is not an LSN",
                    m.start_lsn, m.stop_lsn
                ),
            );
            return Ok(0);
        };
        // The backup's own WAL (BASE_BACKUP ... WAL): pg_wal/<segment> in the base archive.
        let mut own: HashMap<String, u64> = HashMap::new();
        for a in m.archives.iter().filter(|a| a.tablespace_oid.is_none()) {
            for f in &a.files {
                if let Some(seg) = f.path.strip_prefix("pg_wal/") {
                    if f.kind == FileKind::File && parse_wal_segment_name(seg).is_some() {
                        own.insert(seg.to_string(), f.size);
                    }
                }
            }
        }
        let mut seg_size = own
            .values()
            .copied()
            .find(|s| is_valid_wal_segment_size(*s))
            .unwrap_or(0);
        if seg_size == 0 {
            let listing = self.list_wal(&m.deployment).await?;
            if let Some(s) = listing.segments.iter().find(|s| s.timeline == m.timeline) {
                if let Ok(raw) = self.get_wal(&m.deployment, &s.name).await {
                    seg_size = raw.len() as u64;
                }
            }
        }
        if !is_valid_wal_segment_size(seg_size) {
            seg_size = crate::wal::DEFAULT_WAL_SEGMENT_SIZE;
        }
        let first = start / seg_size;
        let last = if stop > start {
            (stop - 1) / seg_size
        } else {
            first
        };
        if last - first >= MAX_WAL_SEGMENTS {
            report.problem(
                "verify.manifest_corrupt",
                &mname,
                format!("the backup spans more than {MAX_WAL_SEGMENTS} WAL segments"),
            );
            return Ok(0);
        }
        let mut checked = 0;
        for segno in first..=last {
            checked += 1;
            let seg = wal_segment_name(m.timeline, segno, seg_size);
            if own.get(&seg) == Some(&seg_size) {
                continue; // read and checked with the backup's chunks
            }
            let object = format!("deployments/{}/wal/{}/{seg}", m.deployment, &seg[..8]);
            match self.get_wal(&m.deployment, &seg).await {
                Ok(raw) if raw.len() as u64 == seg_size => report.bytes_read += seg_size,
                Ok(raw) => report.problem(
                    "verify.wal_corrupt",
                    &object,
                    format!("segment {seg} is {} bytes, not {seg_size}", raw.len()),
                ),
                Err(e) if e.code() == "notfound.wal_segment" => report.problem(
                    "verify.wal_missing",
                    &object,
                    format!(
                        "segment {seg}, needed to make backup {} consistent, is neither in the \
                         backup nor archived",
                        m.backup_id
                    ),
                ),
                Err(e) if e.code().starts_with("verify.") => report.problem(
                    "verify.wal_corrupt",
                    &object,
                    format!("segment {seg}: {e} ({})", e.code()),
                ),
                Err(e) => return Err(e),
            }
        }
        Ok(checked)
    }

    /// Verifies the whole repository: the marker, every key object, every
    /// pack (read whole: hash, header, every frame and chunk), every index
    /// object against the packs, every manifest (seal, signature, every
    /// referenced chunk in the index, chunk lists readable) and every WAL
    /// object (seal, name binding, length and hash; completed segments are
    /// whole segments of one size per deployment). Packs that no index names
    /// are warnings (garbage collection removes them).
    pub async fn verify_repo(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        self.verify_marker(&mut report).await?;
        self.verify_keys(&mut report).await?;

        // Packs, read whole, several at a time.
        let packs_since = report.events;
        let quarantined = self.quarantined_set().await?;
        let mut packs: Vec<crate::ObjectInfo> = self.list_packs().await?;
        packs.sort_by(|a, b| a.name.cmp(&b.name));
        let pack_count = packs.len() as u64;
        let mut headers: HashMap<String, Option<Vec<PackEntry>>> = HashMap::new();
        let mut damaged: Vec<(String, PackCheck)> = Vec::new();
        let mut todo = packs.into_iter();
        let mut set: JoinSet<Result<Option<(String, u64, PackCheck)>>> = JoinSet::new();
        loop {
            while set.len() < PARALLEL {
                let Some(o) = todo.next() else { break };
                let repo = self.clone();
                set.spawn(async move {
                    let data = match repo.inner.backend.get(&o.name).await {
                        Ok(d) => d,
                        Err(e) if e.code() == "notfound.object" => return Ok(None),
                        Err(e) => return Err(e),
                    };
                    let len = data.len() as u64;
                    let name = o.name.clone();
                    let r2 = repo.clone();
                    let checked =
                        tokio::task::spawn_blocking(move || check_pack(&r2, &name, &data))
                            .await
                            .map_err(|e| {
                                Error::new("aborted.task_failed", "a pack verification task failed")
                                    .with_source(e)
                            })?;
                    Ok(Some((o.name, len, checked)))
                });
            }
            let Some(res) = set.join_next().await else {
                break;
            };
            let res = res.map_err(|e| {
                Error::new("aborted.task_failed", "a pack verification task failed").with_source(e)
            })??;
            if let Some((name, len, checked)) = res {
                report.bytes_read += len;
                let PackCheck {
                    entries,
                    problems,
                    bad,
                } = checked;
                if !problems.is_empty() {
                    let header = entries.as_ref().map(|_| Vec::new());
                    damaged.push((
                        name.clone(),
                        PackCheck {
                            entries: header,
                            problems,
                            bad,
                        },
                    ));
                }
                headers.insert(name, entries);
            }
        }
        damaged.sort_by(|a, b| a.0.cmp(&b.0));
        // Quarantine records open and name a pack (the name alone keeps the pack
        // quarantined, so a damaged record is reported, not fatal).
        let mut records = 0;
        let mut record_problems = Vec::new();
        for o in self.inner.backend.list(QUARANTINE_PREFIX).await? {
            let sealed = match self.inner.backend.get(&o.name).await {
                Ok(b) => b,
                Err(e) if e.code() == "notfound.object" => continue,
                Err(e) => return Err(e),
            };
            records += 1;
            report.bytes_read += sealed.len() as u64;
            if let Err(e) = self.open_quarantine_record(&o.name, &sealed) {
                record_problems.push((o.name, format!("{e} ({})", e.code())));
            }
        }

        // Index objects against the packs (reported after the packs).
        let mut index_report = VerifyReport::default();
        let index_since = index_report.events;
        let loaded = self.load_index_checked(&mut index_report, false).await?;
        let mut indexed: HashSet<String> = HashSet::new();
        let mut missing: Vec<String> = Vec::new();
        for (obj, list) in &loaded.objects {
            for (pn, entries) in list {
                indexed.insert(pn.clone());
                match headers.get(pn) {
                    None => {
                        missing.push(pn.clone());
                        index_report.problem(
                            "verify.pack_missing",
                            pn,
                            format!("index object {obj} names this pack, which does not exist"),
                        );
                    }
                    Some(Some(h)) if h != entries => index_report.problem(
                        "verify.index_mismatch",
                        obj,
                        format!("its entry for pack {pn} differs from the pack's header"),
                    ),
                    _ => {}
                }
            }
        }
        let mut orphans: Vec<&String> = headers.keys().filter(|p| !indexed.contains(*p)).collect();
        orphans.sort();
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
            loaded.objects.len() as u64,
            index_since,
            "every index object opens and matches the pack headers",
        );

        // The damaged chunks of each damaged or missing pack: the chunks of frames that
        // do not open, or every chunk the index lists for it when its header is
        // unreadable or it is gone.
        let mut bad_in: HashMap<ChunkId, Vec<String>> = HashMap::new();
        let mut whole: HashSet<&str> = missing.iter().map(String::as_str).collect();
        for (name, c) in &damaged {
            if c.entries.is_none() {
                whole.insert(name.as_str());
            }
            for id in &c.bad {
                bad_in.entry(*id).or_default().push(name.clone());
            }
        }
        for (_, list) in &loaded.objects {
            for (pn, entries) in list {
                if whole.contains(pn.as_str()) {
                    for e in entries {
                        bad_in.entry(e.id).or_default().push(pn.clone());
                    }
                }
            }
        }
        let reader = ChunkReader::new(
            self.clone(),
            loaded.index,
            crate::reader::DEFAULT_FRAME_CACHE_BYTES,
        );

        // Manifests and WAL, per deployment.
        let mut manifests = Vec::new();
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
                _ => {}
            }
        }
        manifests.sort();
        let mut manifest_report = VerifyReport::default();
        let manifests_since = manifest_report.events;
        // Per damaged pack, the backups that read a damaged chunk from it (a chunk
        // with another copy that the readers prefer does not count).
        let mut affected: HashMap<String, HashSet<String>> = HashMap::new();
        for (d, id) in &manifests {
            let name = manifest_name(d, id);
            let backup = format!("{d}/{id}");
            let Some(m) = self
                .load_manifest_checked(d, id, &mut manifest_report)
                .await?
            else {
                continue;
            };
            let (mut content, lists) = manifest_refs(&m);
            for l in &lists {
                if !reader.contains(&l.id) {
                    let mut p = VerifyReport::entry(
                        "verify.chunk_missing",
                        &name,
                        format!("chunk list {} is not in the index", l.id),
                    );
                    p.backups.push(backup.clone());
                    manifest_report.add_problem(p);
                }
            }
            let what = format!("backup {backup}");
            content.extend(
                self.expand_lists(&reader, &what, &backup, &lists, &mut manifest_report)
                    .await,
            );
            for r in content.iter().chain(&lists) {
                if let Some(packs) = bad_in.get(&r.id) {
                    if let Some(p) = reader.pack_of(&r.id) {
                        if packs.iter().any(|b| b == p) {
                            affected
                                .entry(p.to_string())
                                .or_default()
                                .insert(backup.clone());
                        }
                    }
                }
            }
            for r in content {
                if !reader.contains(&r.id) {
                    let mut p = VerifyReport::entry(
                        "verify.chunk_missing",
                        &name,
                        format!("chunk {} is not in the index", r.id),
                    );
                    p.backups.push(backup.clone());
                    manifest_report.add_problem(p);
                }
            }
        }
        manifest_report.check(
            "manifests",
            manifests.len() as u64,
            manifests_since,
            "every manifest opens, its signature verifies, every chunk it references is indexed",
        );
        let backups_of = |pack: &str| -> Vec<String> {
            let mut v: Vec<String> = affected
                .get(pack)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            v.sort();
            v
        };

        // Now the packs, one problem (or warning) per damaged pack.
        for (name, c) in damaged {
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
                continue;
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
        for (name, msg) in record_problems {
            report.problem("verify.quarantine_record_invalid", &name, msg);
        }
        report.check(
            "packs",
            pack_count + records,
            packs_since,
            "every pack read whole: hash, header, every frame and chunk; quarantine records open",
        );
        // A missing pack touches the backups that read it, too.
        for p in &mut index_report.problems {
            if p.code == "verify.pack_missing" {
                p.backups = backups_of(&p.object);
            }
        }
        report.absorb(index_report);
        report.absorb(manifest_report);

        let since = report.events;
        let mut deployments: Vec<(String, Vec<String>)> = wal.into_iter().collect();
        deployments.sort();
        let mut wal_count = 0;
        for (d, mut names) in deployments {
            names.sort();
            wal_count += names.len() as u64;
            self.verify_deployment_wal(&d, names, &mut report).await?;
        }
        report.check(
            "wal",
            wal_count,
            since,
            "every WAL segment, partial, history file, gap record and summary opens and matches its hash",
        );
        Ok(report)
    }

    async fn verify_marker(&self, report: &mut VerifyReport) -> Result<()> {
        let since = report.events;
        let raw = self.inner.backend.get(MARKER_NAME).await?;
        report.bytes_read += raw.len() as u64;
        let ok = serde_json::from_slice::<serde_json::Value>(&raw).is_ok_and(|v| {
            v["format"] == crate::repo::MARKER_FORMAT
                && v["version"] == crate::repo::REPO_VERSION
                && v["repo_id"] == self.id()
        });
        let digest = blake3::hash(&raw).to_hex().to_string();
        if !ok {
            report.problem(
                "verify.marker_invalid",
                MARKER_NAME,
                "the marker no longer parses or names another format, version or repository id",
            );
        } else {
            match &self.inner.marker_sealed {
                Some(sealed) if *sealed != digest => report.problem(
                    "verify.marker_invalid",
                    MARKER_NAME,
                    "the marker was modified after the repository was created: its BLAKE3 \
                     differs from the one sealed in the key objects (restore it from a copy; \
                     it is plaintext JSON)",
                ),
                Some(_) => {}
                None => report.warn(
                    "verify.marker_unsealed",
                    MARKER_NAME,
                    "the key object that opened the repository predates sealed marker digests, \
                     so a change to the marker cannot be detected; `pg_hardstorage key rotate` \
                     writes key objects that carry it",
                ),
            }
        }
        report.check(
            "marker",
            1,
            since,
            "the plaintext marker parses, matches and has the digest sealed at init",
        );
        Ok(())
    }

    async fn verify_keys(&self, report: &mut VerifyReport) -> Result<()> {
        let since = report.events;
        let keys = self.inner.backend.list(KEYS_PREFIX).await?;
        let mut opens = 0;
        let mut names = HashSet::new();
        for o in &keys {
            let wrapped = match self.inner.backend.get(&o.name).await {
                Ok(b) => b,
                Err(e) if e.code() == "notfound.object" => continue,
                Err(e) => return Err(e),
            };
            names.insert(o.name.clone());
            report.bytes_read += wrapped.len() as u64;
            if blake3::hash(&wrapped).to_hex().as_str() != base_name(&o.name) {
                report.problem(
                    "verify.key_object_invalid",
                    &o.name,
                    "its content does not match its name (BLAKE3 of the object)",
                );
            }
            match self.check_key_object(&o.name, &wrapped, &self.inner.signer) {
                Ok(KeyCheck::Opens) => opens += 1,
                Ok(KeyCheck::Foreign) => {}
                Err(e) => report.problem(
                    "verify.key_object_invalid",
                    &o.name,
                    format!("{e} ({})", e.code()),
                ),
            }
            if let Err(e) = self.key_description(&o.name).await {
                report.problem(
                    "verify.key_object_invalid",
                    &crate::keys::key_info_name(&o.name),
                    format!("{e} ({})", e.code()),
                );
            }
        }
        if opens == 0 {
            report.problem(
                "verify.key_object_invalid",
                KEYS_PREFIX,
                "no key object opens with this keyring any more",
            );
        }
        for o in self.inner.backend.list(KEY_INFO_PREFIX).await? {
            let key = format!("{KEYS_PREFIX}{}", &o.name[KEY_INFO_PREFIX.len()..]);
            if !names.contains(&key) {
                report.warn(
                    "verify.key_description_orphan",
                    &o.name,
                    "a key description without its key object (an interrupted `key add`)",
                );
            }
        }
        report.check(
            "keys",
            keys.len() as u64,
            since,
            "key objects are intact and hold this repository's master key",
        );
        Ok(())
    }

    async fn verify_deployment_wal(
        &self,
        deployment: &str,
        names: Vec<String>,
        report: &mut VerifyReport,
    ) -> Result<()> {
        let prefix = format!("deployments/{deployment}/wal/");
        let mut set: JoinSet<Result<(String, WalCheck)>> = JoinSet::new();
        let mut todo = names.into_iter();
        let mut seg_size: Option<(u64, String)> = None;
        loop {
            while set.len() < PARALLEL {
                let Some(name) = todo.next() else { break };
                let repo = self.clone();
                let d = deployment.to_string();
                let rel = name[prefix.len()..].to_string();
                set.spawn(async move {
                    let r = repo.check_wal_object(&d, &name, &rel).await;
                    Ok((name, r))
                });
            }
            let Some(res) = set.join_next().await else {
                break;
            };
            let (name, r) = res.map_err(|e| {
                Error::new("aborted.task_failed", "a WAL verification task failed").with_source(e)
            })??;
            match r {
                WalCheck::Ignored => {}
                WalCheck::Ok { bytes, segment } => {
                    report.bytes_read += bytes;
                    if segment {
                        match &seg_size {
                            None => seg_size = Some((bytes, name)),
                            Some((s, first)) if *s != bytes => {
                                let msg = format!(
                                    "this segment is {bytes} bytes but {first} is {s}; one deployment has one segment size"
                                );
                                report.problem("verify.wal_corrupt", &name, msg);
                            }
                            _ => {}
                        }
                    }
                }
                WalCheck::Bad(e) if e.code().starts_with("verify.") => {
                    report.problem("verify.wal_corrupt", &name, format!("{e} ({})", e.code()));
                }
                WalCheck::Bad(e) if e.code() == "notfound.object" => {}
                WalCheck::Bad(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Opens and checks one WAL object (`rel` is its name below `wal/`).
    async fn check_wal_object(&self, deployment: &str, name: &str, rel: &str) -> WalCheck {
        let Some((dir, file)) = rel.split_once('/') else {
            return WalCheck::Ignored;
        };
        if file.contains('/') {
            return WalCheck::Ignored;
        }
        let res = match dir {
            "history" => self
                .get_wal(deployment, file)
                .await
                .map(|b| (b.len(), false)),
            "summaries" => match self.get_wal_summary(deployment, file).await {
                Ok(b) => Ok((b.map_or(0, |b| b.len()), false)),
                Err(e) => Err(e),
            },
            "gaps" => self.check_gap(name, file).await.map(|n| (n, false)),
            _ => {
                let seg = file.strip_suffix(".partial").unwrap_or(file);
                if parse_wal_segment_name(seg).is_none() || &seg[..8] != dir {
                    return WalCheck::Ignored;
                }
                self.get_wal(deployment, file)
                    .await
                    .map(|b| (b.len(), seg == file))
            }
        };
        match res {
            Ok((bytes, segment)) => WalCheck::Ok {
                bytes: bytes as u64,
                segment,
            },
            Err(e) if e.code() == "notfound.wal_segment" => {
                WalCheck::Bad(Error::new("notfound.object", "gone"))
            }
            Err(e) if e.code() == "usage.invalid_wal_name" => WalCheck::Ignored,
            Err(e) => WalCheck::Bad(e),
        }
    }

    async fn check_gap(&self, name: &str, file: &str) -> Result<usize> {
        let (_, _, raw) = self.open_wal(Kind::Gap, name, true).await?;
        let raw = raw.unwrap_or_default();
        let gap: WalGap = serde_json::from_slice(&raw).map_err(|_| {
            Error::new(
                "verify.wal_object_invalid",
                format!("WAL object {name} is not a valid gap record"),
            )
        })?;
        if format!("{}-{}", gap.from_segment, gap.to_segment) != file {
            return Err(Error::new(
                "verify.wal_object_invalid",
                format!("gap record {name} describes another range"),
            ));
        }
        Ok(raw.len())
    }
}

/// What [`check_pack`] found in one pack.
struct PackCheck {
    /// The header's entries, `None` if the header (or the trailer) is unreadable:
    /// then every chunk the index lists for the pack counts as damaged.
    entries: Option<Vec<PackEntry>>,
    /// Each finding: its code and message, in pack order.
    problems: Vec<(&'static str, String)>,
    /// The chunks of frames that do not open, and chunks that do not match their id.
    bad: HashSet<ChunkId>,
}

enum WalCheck {
    Ignored,
    Ok { bytes: u64, segment: bool },
    Bad(Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_parsing() {
        assert_eq!(parse_lsn("0/3000028"), Some(0x300_0028));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF"), Some(u64::MAX));
        for bad in ["", "0", "/1", "1/", "x/1", "123456789/0"] {
            assert_eq!(parse_lsn(bad), None, "{bad}");
        }
    }

    #[test]
    fn problems_merge_and_cap() {
        let mut r = VerifyReport::default();
        r.problem("verify.pack_corrupt", "data/aa/x", "first");
        r.problem("verify.pack_corrupt", "data/aa/x", "second");
        r.problem("verify.chunk_missing", "m", "third");
        assert_eq!(r.problems.len(), 2);
        assert_eq!(r.problems[0].count, 2);
        assert_eq!(r.problems[0].message, "first");
        let e = r.to_error().unwrap();
        assert_eq!(e.code(), "verify.pack_corrupt");
        assert!(e.to_string().contains("data/aa/x"));
        for i in 0..MAX_PROBLEMS + 5 {
            r.problem("verify.wal_missing", &format!("s{i}"), "x");
        }
        assert_eq!(r.problems.len(), MAX_PROBLEMS);
        assert!(r.problems_omitted > 0);
        assert!(!r.is_ok());
        assert!(VerifyReport::default().to_error().is_none());
    }
}
