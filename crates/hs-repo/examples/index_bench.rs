//! One phase of the synthetic index benchmark (`cargo xtask bench index`, issue 15):
//! drives chunk ids through the real dedup and index path of a file:// repository,
//! the way `pg_hardstorage backup` does, without PostgreSQL. The harness runs each
//! phase as its own process under GNU time to get its peak RSS.
//!
//! ```sh
//! cargo run --release -p hs-repo --example index_bench -- init   DIR --chunks N
//! cargo run --release -p hs-repo --example index_bench -- full   DIR --chunks N
//! cargo run --release -p hs-repo --example index_bench -- orphan DIR --chunks N
//! cargo run --release -p hs-repo --example index_bench -- again  DIR --chunks N
//! cargo run --release -p hs-repo --example index_bench -- gc     DIR --chunks N
//! cargo run --release -p hs-repo --example index_bench -- gc-apply DIR --chunks N
//! ```
//!
//! The "database" is `--chunks` pages of `--chunk-bytes` bytes (default 32), cut into
//! files of 131072 pages (one 1 GiB relation segment of 8 KiB pages). A page's content
//! is derived from its number and version (mostly incompressible), so every page is
//! unique. Pages are tiny so that disk use stays small; the pack target is 1 MiB
//! (the smallest a repository accepts) so that a pack holds about 30,000 chunks, as
//! a 16 MiB pack of well-compressed 8 KiB pages does.
//!
//! - `init`: a keyring (`DIR/keyring`) and a repository (`DIR/repo`).
//! - `full`: the first backup: every page through `ChunkWriter::add_hinted` without a
//!   parent, each file's chunk list stored (`store_chunk_list_hinted`), `finish`, then
//!   the manifest.
//! - `orphan`: an interrupted retry of the next backup: the changed pages (about
//!   `--change` percent, whole groups of 1024 pages) written with the first backup as
//!   parent, `finish`, no manifest. Its packs are unreferenced; its index objects are
//!   newer than the parent, so the next backup deduplicates against them (at most
//!   `RECENT_INDEX_CHUNKS` ids).
//! - `again`: the second backup: the parent's references as hints
//!   (`ParentFiles`/`ParentCursor`, as `backup` does), every unchanged page deduplicated
//!   by its hint, the changed pages found in the orphan's index objects or stored.
//! - `gc` / `gc-apply`: `Repository::gc` with grace 0, dry run / applied (deletes the
//!   orphan packs no backup references and rewrites the index objects naming them).
//!
//! Each phase prints one line `RESULT key=value ...` (the harness parses it): `adds` is
//! the number of `add_hinted` calls (dedup lookups), `loop_secs` the time spent in the
//! add loop (chunk ids, dedup, chunk lists; not opening, `finish` or the manifest),
//! `peak_heap` the most bytes the heap held at once (a counting global allocator).
//!
//! `pg_hardstorage` fixes glibc's mmap threshold at 1 MiB when it starts (hs-cli's
//! alloc.rs); the harness gives each phase the same setting as
//! `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576` (with glibc's adjusting default,
//! RSS grows with the run length: 162 instead of 72 MiB for `full` at 10M ids, same build;
//! the fixed threshold costs system time instead, 5.0 instead of 1.5 s there).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hs_repo::{
    ArchiveEntry, BackupManifest, BackupStats, ChunkWriter, FileEntry, FileKind, GcOptions,
    Keyring, LeaseKind, LeaseOptions, Lsn, ParentFiles, Repository, MANIFEST_FORMAT,
};

/// Pages per file: a 1 GiB relation segment of 8 KiB pages.
const PAGES_PER_FILE: u64 = 131_072;
/// Pages per change group (one list chunk).
const GROUP: u64 = 1024;
const DEPLOYMENT: &str = "bench";
const FIRST_ID: &str = "20260101T000000Z";
const SECOND_ID: &str = "20260101T000100Z";
/// Frame cache of the reader of the parent's list chunks (as `backup` has it).
const PARENT_FRAME_CACHE: usize = 4 << 20;

const USAGE: &str = "usage: index_bench init|full|orphan|again|gc|gc-apply DIR --chunks N \
                     [--chunk-bytes B] [--change PCT] [--pack-target BYTES]";

struct Opts {
    phase: String,
    dir: PathBuf,
    chunks: u64,
    chunk_bytes: usize,
    change_pct: f64,
    pack_target: u64,
}

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The system allocator, counting the bytes allocated now and at the peak: the RESULT
/// line's `peak_heap`. RSS also holds what malloc keeps for later (free lists, arena
/// fragmentation), which grows with a run's length; the heap's peak is what the
/// program's own data structures need, so its curve shows what grows with the ids.
struct CountingAlloc;

static HEAP_NOW: AtomicUsize = AtomicUsize::new(0);
static HEAP_PEAK: AtomicUsize = AtomicUsize::new(0);

fn heap_grew(n: usize) {
    let now = HEAP_NOW.fetch_add(n, Ordering::Relaxed) + n;
    HEAP_PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is passed to the system allocator unchanged; only the counters are
// added, and they never influence what is allocated.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            heap_grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            heap_grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        HEAP_NOW.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                heap_grew(new_size - layout.size());
            } else {
                HEAP_NOW.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// The heap's peak so far, for the RESULT line.
fn peak_heap() -> usize {
    HEAP_PEAK.load(Ordering::Relaxed)
}

#[tokio::main]
async fn main() {
    let opts = match parse(std::env::args().skip(1).collect()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("index_bench: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&opts).await {
        eprintln!("index_bench {}: error: {e}", opts.phase);
        std::process::exit(1);
    }
}

fn parse(args: Vec<String>) -> Res<Opts> {
    let mut it = args.into_iter();
    let phase = it.next().ok_or("no phase")?;
    let dir = PathBuf::from(it.next().ok_or("no directory")?);
    let mut o = Opts {
        phase,
        dir,
        chunks: 0,
        chunk_bytes: 32,
        change_pct: 1.0,
        pack_target: 1 << 20,
    };
    while let Some(a) = it.next() {
        let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--chunks" => o.chunks = v.parse()?,
            "--chunk-bytes" => o.chunk_bytes = v.parse()?,
            "--change" => o.change_pct = v.parse()?,
            "--pack-target" => o.pack_target = v.parse()?,
            _ => return Err(format!("unknown argument {a}").into()),
        }
    }
    if o.chunks == 0 || !(16..=4096).contains(&o.chunk_bytes) {
        return Err("--chunks must be positive and --chunk-bytes 16..=4096".into());
    }
    Ok(o)
}

async fn run(o: &Opts) -> Res<()> {
    let keyring_path = o.dir.join("keyring");
    let url = format!("file://{}", o.dir.join("repo").display());
    if o.phase == "init" {
        std::fs::create_dir_all(&o.dir)?;
        let keyring = Keyring::create(&keyring_path)?;
        Repository::builder(&url)
            .pack_target_size(o.pack_target)
            .init(&keyring)
            .await?;
        println!("RESULT phase=init");
        return Ok(());
    }
    let keyring = Keyring::load(&keyring_path)?;
    let repo = Repository::open(&url, &keyring).await?;
    match o.phase.as_str() {
        "full" | "orphan" | "again" => backup(o, &repo).await,
        "gc" | "gc-apply" => gc(&repo, o.phase == "gc-apply").await,
        p => Err(format!("unknown phase {p}").into()),
    }
}

/// Whether group `g` (global group number) changes in the second backup.
fn changed(g: u64, pct: f64) -> bool {
    (splitmix(g ^ 0x5eed) % 1_000_000) as f64 / 10_000.0 < pct
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The content of page `page` (global number) in `version`: its number, its version,
/// then pseudo-random bytes.
fn page(page: u64, version: u8, len: usize) -> Bytes {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&page.to_le_bytes());
    v.push(version);
    let mut s = page ^ (u64::from(version) << 56);
    while v.len() < len {
        s = splitmix(s);
        v.extend_from_slice(&s.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

async fn backup(o: &Opts, repo: &Repository) -> Res<()> {
    let lease = repo
        .acquire_lease(
            LeaseKind::Shared,
            &format!("backup {DEPLOYMENT}"),
            &LeaseOptions::backup(),
        )
        .await?;
    let started = Instant::now();
    let first = o.phase == "full";
    let parent = if first {
        None
    } else {
        Some(
            repo.newest_intact_backup(DEPLOYMENT)
                .await?
                .ok_or("no first backup")?,
        )
    };
    let mut writer = repo.writer_for(parent.as_ref()).await?;
    let parent = match parent {
        Some(m) => Some(ParentFiles::new(
            m,
            repo.reader_with_frame_cache(PARENT_FRAME_CACHE).await?,
        )),
        None => None,
    };
    let open_secs = started.elapsed().as_secs_f64();
    let loop_start = Instant::now();
    let mut files = Vec::new();
    let mut adds = 0u64;
    let nfiles = o.chunks.div_ceil(PAGES_PER_FILE);
    for f in 0..nfiles {
        let pages = PAGES_PER_FILE.min(o.chunks - f * PAGES_PER_FILE);
        let path = format!("base/5/{}", 16384 + f);
        let mut entry = FileEntry {
            path: path.clone(),
            kind: FileKind::File,
            mode: 0o600,
            mtime: 1_767_225_600,
            size: pages * o.chunk_bytes as u64,
            chunks: Vec::new(),
            chunk_lists: Vec::new(),
        };
        let mut cursor = parent.as_ref().and_then(|p| p.cursor("base", &path));
        for p in 0..pages {
            let global = f * PAGES_PER_FILE + p;
            let change = !first && changed(global / GROUP, o.change_pct);
            if o.phase == "orphan" && !change {
                continue;
            }
            let data = page(global, u8::from(change), o.chunk_bytes);
            let hint = match &mut cursor {
                Some(c) => c.at(p as usize).await,
                None => None,
            };
            let r = writer.add_hinted(data, hint.as_ref()).await?;
            adds += 1;
            entry.chunks.push(r);
        }
        if o.phase == "orphan" {
            continue;
        }
        let parent_entry = parent.as_ref().and_then(|p| p.file("base", &path));
        writer
            .store_chunk_list_hinted(&mut entry, parent_entry)
            .await?;
        files.push(entry);
    }
    let loop_secs = loop_start.elapsed().as_secs_f64();
    drop(parent);
    let finish_start = Instant::now();
    let stats = finish(writer).await?;
    let finish_secs = finish_start.elapsed().as_secs_f64();
    let manifest_start = Instant::now();
    if o.phase != "orphan" {
        let m = bench_manifest(first, files, &stats)?;
        lease.check()?;
        repo.put_manifest(&m).await?;
    }
    let manifest_secs = manifest_start.elapsed().as_secs_f64();
    lease.release().await?;
    let indexes = count_files(&o.dir.join("repo").join("index"))?;
    println!(
        "RESULT phase={} adds={adds} new={} packs={} stored={} index_objects={indexes} \
         open_secs={open_secs:.3} loop_secs={loop_secs:.3} finish_secs={finish_secs:.3} \
         manifest_secs={manifest_secs:.3} lookups_per_s={:.0} peak_heap={}",
        o.phase,
        stats.new_chunks,
        stats.packs,
        stats.stored_bytes,
        adds as f64 / loop_secs.max(1e-9),
        peak_heap(),
    );
    Ok(())
}

/// The manifest of the bench's first or second backup, holding `files`.
fn bench_manifest(
    first: bool,
    files: Vec<FileEntry>,
    stats: &hs_repo::WriteStats,
) -> Res<BackupManifest> {
    let now =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?;
    let nfiles = files.len() as u64;
    Ok(BackupManifest {
        format: MANIFEST_FORMAT,
        backup_id: if first { FIRST_ID } else { SECOND_ID }.to_string(),
        deployment: DEPLOYMENT.to_string(),
        system_identifier: "7000000000000000001".to_string(),
        timeline: 1,
        start_lsn: Lsn(0x1_0000_0028),
        stop_lsn: Lsn(0x1_0000_0100),
        start_time: now.clone(),
        stop_time: now,
        pg_version: 170_000,
        label: "index_bench".to_string(),
        archives: vec![ArchiveEntry {
            name: "base".to_string(),
            tablespace_oid: None,
            tablespace_location: None,
            files,
        }],
        pg_backup_manifest: String::new(),
        incremental: None,
        stats: BackupStats {
            logical_bytes: stats.logical_bytes,
            stored_bytes: stats.stored_bytes,
            chunks: stats.chunks,
            new_chunks: stats.new_chunks,
            files: nfiles,
            sent_bytes: 0,
        },
    })
}

async fn finish(w: ChunkWriter) -> Res<hs_repo::WriteStats> {
    Ok(w.finish().await?)
}

async fn gc(repo: &Repository, apply: bool) -> Res<()> {
    let start = Instant::now();
    let r = repo
        .gc(&GcOptions {
            grace: Duration::ZERO,
            apply,
            max_unused: None,
        })
        .await?;
    println!(
        "RESULT phase=gc apply={apply} packs={} referenced={} condemned={} deleted={} \
         reprieved={} index_objects_replaced={} gc_secs={:.3} peak_heap={}",
        r.packs_total,
        r.packs_referenced,
        r.condemned.len(),
        r.deleted.len(),
        r.reprieved.len(),
        r.index_objects_replaced,
        start.elapsed().as_secs_f64(),
        peak_heap(),
    );
    Ok(())
}

fn count_files(dir: &Path) -> Res<u64> {
    let mut n = 0;
    if !dir.exists() {
        return Ok(0);
    }
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        n += if e.file_type()?.is_dir() {
            count_files(&e.path())?
        } else {
            1
        };
    }
    Ok(n)
}
