//! One backup end to end: its manifest, every chunk it references and the WAL it needs.

use std::collections::{HashMap, HashSet};

use hs_base::code;
use hs_chunk::ChunkId;
use tokio::task::JoinSet;

use super::{chunk_code, manifest_name, VerifyReport, CHUNK_BATCH, PARALLEL};
use crate::error::{Error, Result};
use crate::manifest::{BackupManifest, ChunkRef, FileKind};
use crate::reader::{ChunkReader, ReadCursor};
use crate::repo::Repository;

/// Chunk ids [`ChunkRun`] remembers per generation (two generations): a chunk
/// seen among the last this many is not read again.
pub(super) const VERIFY_MEMORY: usize = (1 << 17) / 8 * 7;

/// Chunks being read in parallel batches, with a bounded memory of the ids seen.
#[derive(Default)]
struct ChunkRun {
    seen: [HashSet<ChunkId>; 2],
    set: JoinSet<BatchResult>,
    count: u64,
    bytes: u64,
    failed: Vec<(ChunkRef, FileAt, Error)>,
}

/// Archive and file index of the file a chunk belongs to.
type FileAt = (usize, usize);
type BatchResult = (u64, u64, Vec<(ChunkRef, FileAt, Error)>);

impl ChunkRun {
    fn first_time(&mut self, id: ChunkId) -> bool {
        if self.seen[0].contains(&id) || self.seen[1].contains(&id) {
            return false;
        }
        if self.seen[0].len() >= VERIFY_MEMORY {
            self.seen[1] = std::mem::take(&mut self.seen[0]);
        }
        self.seen[0].insert(id);
        true
    }

    /// Queues the chunks of `refs` not seen recently, at most [`PARALLEL`] batches
    /// in flight (waits for one to finish first).
    async fn submit(
        &mut self,
        reader: &ChunkReader,
        at: FileAt,
        refs: &[ChunkRef],
        report: &mut VerifyReport,
    ) -> Result<()> {
        let fresh: Vec<ChunkRef> = refs
            .iter()
            .copied()
            .filter(|r| self.first_time(r.id))
            .collect();
        for batch in fresh.chunks(CHUNK_BATCH) {
            while self.set.len() >= PARALLEL {
                self.join_one(report).await?;
            }
            let (reader, batch) = (reader.clone(), batch.to_vec());
            self.set.spawn(async move {
                let (bytes, errs) = read_batch(&reader, &batch).await;
                let errs = errs.into_iter().map(|(r, e)| (r, at, e)).collect();
                (batch.len() as u64, bytes, errs)
            });
        }
        Ok(())
    }

    async fn join_one(&mut self, report: &mut VerifyReport) -> Result<bool> {
        let Some(res) = self.set.join_next().await else {
            return Ok(false);
        };
        let (n, bytes, errs) = res.map_err(|e| {
            Error::new(
                code::ABORTED_TASK_FAILED,
                "a chunk verification task failed",
            )
            .with_source(e)
        })?;
        self.count += n;
        self.bytes += bytes;
        report.bytes_read += bytes;
        self.failed.extend(errs);
        Ok(true)
    }

    async fn drain(&mut self, report: &mut VerifyReport) -> Result<()> {
        while self.join_one(report).await? {}
        Ok(())
    }
}

/// Reads the chunks of `batch` in order, with one cursor (consecutive pages are found
/// without a lookup); returns the bytes read and the chunks that failed, with the error.
async fn read_batch(reader: &ChunkReader, batch: &[ChunkRef]) -> (u64, Vec<(ChunkRef, Error)>) {
    let (mut bytes, mut errs) = (0u64, Vec::new());
    let mut cursor = ReadCursor::default();
    for r in batch {
        match reader.read_next(&mut cursor, r).await {
            Ok((_, range)) => bytes += range.len() as u64,
            Err(e) => errs.push((*r, e)),
        }
    }
    (bytes, errs)
}

/// Every chunk reference of a manifest: content chunks inline, and list
/// chunks (whose content references are read separately).
pub(super) fn manifest_refs(m: &BackupManifest) -> (Vec<ChunkRef>, Vec<ChunkRef>) {
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

impl Repository {
    /// Reads every chunk in `refs` (each distinct chunk once, in parallel).
    /// Returns the number of distinct chunks, their bytes, and the chunks that
    /// could not be read or did not match, with the error.
    pub(super) async fn read_all_chunks(
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
                    let (n, errs) = read_batch(&reader, &batch).await;
                    (n, errs.into_iter().map(|(r, e)| (r.id, e)).collect())
                });
            }
            let Some(res) = set.join_next().await else {
                break;
            };
            let (n, errs) = res.map_err(|e| {
                Error::new(
                    code::ABORTED_TASK_FAILED,
                    "a chunk verification task failed",
                )
                .with_source(e)
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
    pub(super) async fn expand_lists(
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
                    let object = l
                        .pack
                        .map(|p| p.object_name())
                        .or_else(|| reader.pack_of(&l.id).map(str::to_string))
                        .unwrap_or_else(|| what.to_string());
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
    pub(super) async fn load_manifest_checked(
        &self,
        deployment: &str,
        backup_id: &str,
        report: &mut VerifyReport,
    ) -> Result<Option<BackupManifest>> {
        let name = manifest_name(deployment, backup_id);
        let (code, message) = match self.load_manifest(deployment, backup_id).await {
            Ok(m) => return Ok(Some(m)),
            Err(e) if e.code() == code::VERIFY_SIGNATURE_INVALID => (
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

        if m.format >= 2 {
            // References name their packs: read file by file, in bounded memory.
            self.verify_backup_files(&m, &mut report).await?;
        } else {
            self.verify_backup_files_v1(&m, &mut report).await?;
        }

        let since = report.events;
        let (listed, label) = pg_manifest_matches_files(&m, &mut report);
        report.check("backup_manifest", listed, since, label);

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

    /// The chunks of a format 2 backup, one file and one list chunk at a time: each
    /// chunk is read from the pack its reference names (the index is loaded only if
    /// one is not there), a chunk seen among the last [`VERIFY_MEMORY`] is not read
    /// again.
    async fn verify_backup_files(
        &self,
        m: &BackupManifest,
        report: &mut VerifyReport,
    ) -> Result<()> {
        let since = report.events;
        let backup = format!("{}/{}", m.deployment, m.backup_id);
        let quarantined = self.quarantined_set().await?;
        let reader = ChunkReader::lazy(self.clone(), crate::reader::DEFAULT_FRAME_CACHE_BYTES);
        let mut run = ChunkRun::default();
        let mut list_count = 0u64;
        for (ai, a) in m.archives.iter().enumerate() {
            for (fi, f) in a.files.iter().enumerate() {
                if f.kind != FileKind::File {
                    continue;
                }
                run.submit(&reader, (ai, fi), &f.chunks, report).await?;
                for l in &f.chunk_lists {
                    list_count += 1;
                    let what = format!("file {} of backup {backup}", a.pg_path(&f.path));
                    let refs = self
                        .expand_lists(&reader, &what, &backup, std::slice::from_ref(l), report)
                        .await;
                    run.submit(&reader, (ai, fi), &refs, report).await?;
                }
            }
        }
        report.check(
            "chunk lists",
            list_count,
            since,
            "list chunks read and decoded",
        );
        let since = report.events;
        run.drain(report).await?;
        for (r, (ai, fi), e) in std::mem::take(&mut run.failed) {
            let a = &m.archives[ai];
            let file = a.pg_path(&a.files[fi].path);
            let pack = r
                .pack
                .map(|p| p.object_name())
                .or_else(|| reader.pack_of(&r.id).map(str::to_string));
            let object = pack.clone().unwrap_or_else(|| format!("chunk {}", r.id));
            let mut p = VerifyReport::entry(
                chunk_code(&e),
                &object,
                format!(
                    "chunk {} of file {file} of backup {backup}: {e} ({})",
                    r.id,
                    e.code()
                ),
            );
            p.backups.push(backup.clone());
            p.quarantined = pack.is_some_and(|p| quarantined.contains(&p));
            report.add_problem(p);
        }
        let (n, bytes) = (run.count, run.bytes);
        report.check(
            "chunks",
            n,
            since,
            format!("{n} chunks ({bytes} bytes) read, decrypted and checked against their ids"),
        );
        Ok(())
    }

    /// The chunks of a format 1 backup (references without packs): through the
    /// whole index, as format 1 readers do.
    async fn verify_backup_files_v1(
        &self,
        m: &BackupManifest,
        report: &mut VerifyReport,
    ) -> Result<()> {
        let (deployment, backup_id) = (m.deployment.as_str(), m.backup_id.as_str());
        // A damaged index object that this backup does not need is not this
        // backup's problem; a chunk it needs and cannot find is.
        let since = report.events;
        let loaded = self.load_index_checked(report, true).await?;
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
                let path = a.pg_path(&f.path);
                let start = content.len();
                content.extend_from_slice(&f.chunks);
                if !f.chunk_lists.is_empty() {
                    list_count += f.chunk_lists.len() as u64;
                    let what = format!("file {path} of backup {backup}");
                    let refs = self
                        .expand_lists(&reader, &what, &backup, &f.chunk_lists, report)
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
        let (n, bytes, failed) = self.read_all_chunks(&reader, &content, report).await?;
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
        Ok(())
    }
}

/// PostgreSQL's `backup_manifest` as stored (for an incremental backup, the one of the
/// full files) against the stored file list: every file it lists is stored with that
/// size, and no `INCREMENTAL.*` member is stored as such. This is what
/// `pg_verifybackup` will check first after a restore; the checksums it checks then
/// need the restored bytes. Returns the files checked and the check's description.
fn pg_manifest_matches_files(m: &BackupManifest, report: &mut VerifyReport) -> (u64, String) {
    let object = manifest_name(&m.deployment, &m.backup_id);
    if m.pg_backup_manifest.trim().is_empty() {
        return (0, "no PostgreSQL backup_manifest to compare".to_string());
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&m.pg_backup_manifest) else {
        report.problem(
            code::VERIFY_MANIFEST_INVALID.as_str(),
            &object,
            format!(
                "backup {}: its backup_manifest is not valid JSON",
                m.backup_id
            ),
        );
        return (0, "backup_manifest parses".to_string());
    };
    let Some(files) = v["Files"].as_array() else {
        return (
            0,
            "no PostgreSQL backup_manifest file list to compare".to_string(),
        );
    };
    let mut stored = HashMap::new();
    for a in &m.archives {
        for f in a.files.iter().filter(|f| f.kind == FileKind::File) {
            let path = a.pg_path(&f.path);
            if path
                .rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("INCREMENTAL."))
            {
                report.problem(
                    code::VERIFY_MANIFEST_INVALID.as_str(),
                    &object,
                    format!(
                        "backup {}: stores the incremental member {path} instead of the full file",
                        m.backup_id
                    ),
                );
            }
            stored.insert(path, f.size);
        }
    }
    let mut checked = 0u64;
    for f in files {
        let Some(path) = f["Path"].as_str() else {
            continue;
        };
        checked += 1;
        let size = f["Size"].as_u64();
        match stored.get(path) {
            Some(s) if Some(*s) == size => {}
            found => report.problem(
                code::VERIFY_MANIFEST_INVALID.as_str(),
                &object,
                format!(
                    "backup {}: backup_manifest lists {path} with {} bytes, the backup stores {}",
                    m.backup_id,
                    size.map_or("no size".to_string(), |s| s.to_string()),
                    found.map_or("no such file".to_string(), |s| format!("{s} bytes"))
                ),
            ),
        }
    }
    (
        checked,
        format!("{checked} files of PostgreSQL's backup_manifest stored with their sizes"),
    )
}
