//! Storage-fault suite driver: backups and WAL through the fault-injecting backend, then
//! proof that nothing committed was lost and that `verify` finds the repository clean.
//!
//! [`run_fault_suite`] is shared by the CI test (`crates/hs-repo/tests/it/faults.rs`, a
//! few dozen rounds) and `cargo xtask soak` (hundreds). Each round opens the same
//! `file://` repository through [`FaultBackend`] wrapped in [`RetryBackend`], then stores
//! one 1 MiB WAL segment and, if that committed, one backup (pages unique to the round
//! and a manifest whose start and stop LSN lie in that segment). Rounds alternate between
//! two kinds of weather, drawn from a seeded generator:
//!
//! - *rough*: temporary errors, torn writes, lost acknowledgements and latency spikes, with
//!   generous retries. Every operation must succeed: these faults are what retries are for.
//! - *failing*: permanent errors and full disks besides temporary errors and lost
//!   acknowledgements, with few retries. An operation may fail, but only with a code in
//!   `io.`, `aborted.` or `unreachable.`; it must never report success for data it did
//!   not store. (No torn writes here: every supported store publishes an object
//!   atomically, so a torn object can only exist while a retry is still coming.)
//!
//! Then, with faults off: every manifest in the repository reads back chunk by chunk
//! (a failed backup never leaves a manifest naming missing data); every backup and WAL
//! segment that reported success is there with the bytes written; and
//! [`Repository::verify_repo`] reports no problem (warnings, such as a pack left by a
//! failed backup that no index names, are counted, not failures).
//!
//! Needs the `repo` feature of hs-testkit.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hs_crypt::Keyring;
use hs_repo::{
    ArchiveEntry, Backend, BackupManifest, BackupStats, ChunkRef, FaultBackend, FaultConfig,
    FaultCounts, FileEntry, FileKind, FsBackend, Repository, RetryBackend, RetryPolicy,
    MANIFEST_FORMAT,
};

use crate::SeededRng;

const DEPLOYMENT: &str = "faults";
const SEGMENT: usize = 1 << 20;
const PAGE: usize = 8192;

/// What to run.
#[derive(Clone, Debug)]
pub struct FaultSuiteOptions {
    /// Rounds (one WAL segment and one backup each).
    pub rounds: u32,
    /// Seed of the weather and of every round's faults (`None`: random, in the report).
    pub seed: Option<u64>,
    /// 8 KiB pages per backup.
    pub pages: u32,
    /// Print a line per round on stderr.
    pub verbose: bool,
}

impl FaultSuiteOptions {
    /// 24 rounds of 200 pages, random seed, quiet.
    pub fn new() -> FaultSuiteOptions {
        FaultSuiteOptions {
            rounds: 24,
            seed: None,
            pages: 200,
            verbose: false,
        }
    }
}

impl Default for FaultSuiteOptions {
    fn default() -> FaultSuiteOptions {
        FaultSuiteOptions::new()
    }
}

/// What a fault suite run did; every check passed when this is returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultSuiteReport {
    /// Seed of the run.
    pub seed: u64,
    /// Rounds in rough weather (every operation had to succeed).
    pub rough_rounds: u32,
    /// Rounds in failing weather.
    pub failing_rounds: u32,
    /// Backups that reported success, all found intact afterwards.
    pub backups_committed: u32,
    /// WAL segments that reported success, all found intact afterwards.
    pub wal_committed: u32,
    /// Operations that failed, by error code (all in `io.`, `aborted.`, `unreachable.`).
    pub failures: BTreeMap<String, u32>,
    /// Everything the fault backends injected, summed over the rounds.
    pub faults: FaultCounts,
    /// Manifests in the repository at the end, each read back chunk by chunk.
    pub manifests_checked: u32,
    /// Warnings from the final `verify_repo` (its problems must be zero).
    pub verify_warnings: u32,
}

impl FaultSuiteReport {
    /// Faults injected in total (latency spikes included).
    pub fn faults_injected(&self) -> u64 {
        let f = &self.faults;
        f.temporary_errors
            + f.permanent_errors
            + f.latency_spikes
            + f.torn_writes
            + f.errors_after_write
            + f.disk_full
    }
}

fn fail(seed: u64, msg: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("fault suite (seed {seed}): {msg}"))
}

/// Deterministic bytes: a compressible 8 KiB page unique to `(round, i)`.
fn page(round: u32, i: u32) -> Vec<u8> {
    let mut p = vec![0u8; PAGE];
    let row = format!("round {round:>6} page {i:>6} | repeated text in a row |");
    for (k, b) in p.iter_mut().enumerate().skip(PAGE / 2) {
        *b = row.as_bytes()[k % row.len()];
    }
    let mut x = (u64::from(round) << 32 | u64::from(i)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in p.iter_mut().take(1024) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
    p
}

fn segment(round: u32) -> Vec<u8> {
    crate::noise(u64::from(round) ^ 0xD1B5_4A32_D192_ED03, SEGMENT)
}

/// Segment `round + 1` of timeline 1 with 1 MiB segments.
fn segment_name(round: u32) -> String {
    hs_repo::wal_segment_name(1, u64::from(round) + 1, SEGMENT as u64)
}

fn manifest(round: u32, id: &str, refs: &[ChunkRef]) -> BackupManifest {
    let start = (u64::from(round) + 1) * SEGMENT as u64 + 0x28;
    BackupManifest {
        format: MANIFEST_FORMAT,
        backup_id: id.to_owned(),
        deployment: DEPLOYMENT.to_owned(),
        system_identifier: "7300000000000000001".to_owned(),
        timeline: 1,
        start_lsn: hs_repo::Lsn(start),
        stop_lsn: hs_repo::Lsn(start + 0x100),
        start_time: format!("2026-11-26T00:00:{:02}Z", round % 60),
        stop_time: format!("2026-11-26T00:00:{:02}Z", round % 60),
        pg_version: 150_000,
        label: format!("fault suite round {round}"),
        archives: vec![ArchiveEntry {
            name: "base".to_owned(),
            tablespace_oid: None,
            tablespace_location: None,
            files: vec![FileEntry {
                path: "base/1/16384".to_owned(),
                kind: FileKind::File,
                mode: 0o600,
                mtime: 0,
                size: refs.iter().map(|r| u64::from(r.len)).sum(),
                chunks: refs.to_vec(),
                chunk_lists: Vec::new(),
            }],
        }],
        pg_backup_manifest: "{}".to_owned(),
        incremental: None,
        stats: BackupStats::default(),
    }
}

fn add_counts(sum: &mut FaultCounts, c: &FaultCounts) {
    sum.operations += c.operations;
    sum.temporary_errors += c.temporary_errors;
    sum.permanent_errors += c.permanent_errors;
    sum.latency_spikes += c.latency_spikes;
    sum.torn_writes += c.torn_writes;
    sum.errors_after_write += c.errors_after_write;
    sum.disk_full += c.disk_full;
}

/// Runs the suite in a repository under `work` (see the module docs); `Ok` only if every
/// check passed. Builds its own tokio runtime: call it from synchronous code.
pub fn run_fault_suite(work: &Path, opts: &FaultSuiteOptions) -> io::Result<FaultSuiteReport> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(work, opts))
}

async fn run(work: &Path, opts: &FaultSuiteOptions) -> io::Result<FaultSuiteReport> {
    let seed = opts.seed.unwrap_or_else(crate::crash::random_seed);
    let mut rng = SeededRng::new(seed);
    let mut report = FaultSuiteReport {
        seed,
        ..FaultSuiteReport::default()
    };
    let root = work.join("repo");
    let url = format!("file://{}", root.display());
    let keyring =
        Keyring::create(&work.join("keyring")).map_err(|e| fail(seed, format!("keyring: {e}")))?;
    let raw: Arc<dyn Backend> = Arc::new(FsBackend::new(&url, &root));
    let err = |what: &str, e: hs_repo::Error| fail(seed, format!("{what}: {} ({e})", e.code()));
    Repository::builder(&url)
        .pack_target_size(1 << 20)
        .init(&keyring)
        .await
        .map_err(|e| err("init", e))?;

    // What reported success: backup id -> (round, refs); segment name -> round.
    let mut backups: Vec<(String, u32, Vec<ChunkRef>)> = Vec::new();
    let mut wal: Vec<(String, u32)> = Vec::new();
    for round in 0..opts.rounds {
        let (rough, config, policy) = weather(&mut rng);
        let faulty = Arc::new(FaultBackend::new(raw.clone(), config));
        let backend: Arc<dyn Backend> = Arc::new(RetryBackend::new(faulty.clone(), policy));
        let id = format!("r{round:05}");
        let outcome = round_trip(&backend, &url, &keyring, round, &id, opts.pages).await;
        add_counts(&mut report.faults, &faulty.counts());
        if rough {
            report.rough_rounds += 1;
        } else {
            report.failing_rounds += 1;
        }
        let line = match outcome {
            Ok(refs) => {
                wal.push((segment_name(round), round));
                match refs {
                    Ok(refs) => {
                        backups.push((id.clone(), round, refs));
                        "committed".to_owned()
                    }
                    Err(e) => {
                        check_failure(seed, rough, round, &e)?;
                        *report.failures.entry(e.code().to_owned()).or_default() += 1;
                        format!("backup failed: {}", e.code())
                    }
                }
            }
            Err(e) => {
                check_failure(seed, rough, round, &e)?;
                *report.failures.entry(e.code().to_owned()).or_default() += 1;
                format!("opening or WAL failed: {}", e.code())
            }
        };
        if opts.verbose {
            eprintln!(
                "[faults] round {round} ({}): {line}",
                if rough { "rough" } else { "failing" }
            );
        }
    }
    report.backups_committed = backups.len() as u32;
    report.wal_committed = wal.len() as u32;

    // Faults off: what was committed is there, and nothing references what is not.
    check_committed(seed, &url, raw, &keyring, &backups, &wal, &mut report).await?;
    Ok(report)
}

/// The weather of one round: rough (temporary faults the retries must absorb) or
/// failing (permanent errors and full disks too), its faults and its retry policy.
fn weather(rng: &mut SeededRng) -> (bool, FaultConfig, RetryPolicy) {
    let rough = rng.next_u64().is_multiple_of(2);
    let config = if rough {
        FaultConfig {
            seed: rng.next_u64(),
            temporary_error: rng.prob(0.02, 0.2),
            torn_write: rng.prob(0.0, 0.15),
            error_after_write: rng.prob(0.0, 0.15),
            latency_spike: rng.prob(0.0, 0.1),
            latency: Duration::from_millis(20),
            ..FaultConfig::default()
        }
    } else {
        FaultConfig {
            seed: rng.next_u64(),
            temporary_error: rng.prob(0.0, 0.2),
            permanent_error: rng.prob(0.0, 0.04),
            error_after_write: rng.prob(0.0, 0.1),
            disk_full: rng.prob(0.0, 0.04),
            latency_spike: rng.prob(0.0, 0.05),
            latency: Duration::from_millis(20),
            ..FaultConfig::default()
        }
    };
    let policy = RetryPolicy {
        max_attempts: if rough { 40 } else { 4 },
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        op_timeout: Duration::from_secs(10),
        ..RetryPolicy::default()
    };
    (rough, config, policy)
}

/// With the faults off: every committed backup and WAL segment reads back as written,
/// every listed backup's chunks read, and verify finds no problem.
async fn check_committed(
    seed: u64,
    url: &str,
    raw: Arc<dyn Backend>,
    keyring: &Keyring,
    backups: &[(String, u32, Vec<ChunkRef>)],
    wal: &[(String, u32)],
    report: &mut FaultSuiteReport,
) -> io::Result<()> {
    let err = |what: &str, e: hs_repo::Error| fail(seed, format!("{what}: {} ({e})", e.code()));
    let repo = Repository::builder(url)
        .backend(raw)
        .open(keyring)
        .await
        .map_err(|e| err("open", e))?;
    let reader = repo.reader().await.map_err(|e| err("reader", e))?;
    let listed = repo
        .list_backups(DEPLOYMENT)
        .await
        .map_err(|e| err("list", e))?;
    for m in &listed {
        for f in m.archives.iter().flat_map(|a| &a.files) {
            for r in &f.chunks {
                if let Err(e) = reader.read(r).await {
                    return Err(fail(
                        seed,
                        format!(
                            "backup {} names a chunk that does not read back: {} ({e})",
                            m.backup_id,
                            e.code()
                        ),
                    ));
                }
            }
        }
    }
    report.manifests_checked = listed.len() as u32;
    for (id, round, refs) in backups {
        if !listed.iter().any(|m| &m.backup_id == id) {
            return Err(fail(
                seed,
                format!("backup {id} reported success but is not listed"),
            ));
        }
        for (i, r) in refs.iter().enumerate() {
            let got = reader.read(r).await.map_err(|e| err("read", e))?;
            if got[..] != page(*round, i as u32)[..] {
                return Err(fail(
                    seed,
                    format!("backup {id}: page {i} reads back different"),
                ));
            }
        }
    }
    for (name, round) in wal {
        let got = repo
            .get_wal(DEPLOYMENT, name)
            .await
            .map_err(|e| err("get_wal", e))?;
        if got[..] != segment(*round)[..] {
            return Err(fail(
                seed,
                format!("WAL segment {name} reads back different"),
            ));
        }
    }
    let v = repo.verify_repo().await.map_err(|e| err("verify", e))?;
    if !v.is_ok() {
        return Err(fail(
            seed,
            format!("verify found problems after the faults: {:#?}", v.problems),
        ));
    }
    report.verify_warnings = v.warnings.len() as u32;
    Ok(())
}

/// A failure is allowed only in failing weather, and only with a storage-side code.
fn check_failure(seed: u64, rough: bool, round: u32, e: &hs_repo::Error) -> io::Result<()> {
    let ns = e.code().split('.').next().unwrap_or("");
    if rough {
        return Err(fail(
            seed,
            format!(
                "round {round}: failed under faults that retries must ride out: {} ({e})",
                e.code()
            ),
        ));
    }
    if !matches!(ns, "io" | "aborted" | "unreachable") {
        return Err(fail(
            seed,
            format!("round {round}: unexpected error code {} ({e})", e.code()),
        ));
    }
    Ok(())
}

/// One round: the WAL segment, then (if it committed) the backup. The outer error is a
/// failure to open the repository or to store the segment; the inner result is the backup's.
async fn round_trip(
    backend: &Arc<dyn Backend>,
    url: &str,
    keyring: &Keyring,
    round: u32,
    id: &str,
    pages: u32,
) -> hs_repo::Result<hs_repo::Result<Vec<ChunkRef>>> {
    let repo = Repository::builder(url)
        .backend(backend.clone())
        .open(keyring)
        .await?;
    repo.put_wal_segment(DEPLOYMENT, &segment_name(round), &segment(round))
        .await?;
    let backup = async {
        let mut w = repo.writer().await?;
        let mut refs = Vec::with_capacity(pages as usize);
        for i in 0..pages {
            refs.push(w.add(Bytes::from(page(round, i))).await?);
        }
        w.finish().await?;
        repo.put_manifest(&manifest(round, id, &refs)).await?;
        Ok(refs)
    }
    .await;
    Ok(backup)
}

#[cfg(test)]
mod tests {
    use super::{page, segment_name};

    #[test]
    fn pages_differ_by_round_and_index() {
        assert_ne!(page(1, 2), page(2, 1));
        assert_eq!(page(3, 4), page(3, 4));
        assert_eq!(segment_name(0), "000000010000000000000001");
    }
}
