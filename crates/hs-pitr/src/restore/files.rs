//! Writing the files of a backup: units of chunks written in parallel, the chunk by
//! chunk comparison of a `--delta` target's existing files, and the file system steps
//! (safe paths, modes, sync).

use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use hs_base::code;
use hs_repo::{BackupManifest, ChunkReader, ChunkRef, ReadCursor, Repository};
use tokio::task::JoinSet;

use super::checksums::{Checks, UnitCrc};
use super::{named, RestoreProgress};
use crate::error::{Error, ErrorKind, Result};

pub(super) struct Unit {
    pub(super) path: PathBuf,
    pub(super) offset: u64,
    pub(super) chunks: Vec<ChunkRef>,
    /// The file's id in [`Checks`] when its bytes are checked as they are written.
    pub(super) check: Option<u64>,
}

/// A file of the backup that already exists in a `--delta` target and is compared
/// chunk by chunk (its references are read when it is compared).
pub(super) struct Existing {
    pub(super) path: PathBuf,
    pub(super) mode: u32,
    pub(super) size: u64,
    /// Archive and file index in the manifest.
    pub(super) archive: usize,
    pub(super) file: usize,
}

/// A file of the backup written whole: created empty at its size by the layout step,
/// filled by [`UnitRun::file`].
pub(super) struct NewFile {
    pub(super) path: PathBuf,
    /// Archive and file index in the manifest.
    pub(super) archive: usize,
    pub(super) file: usize,
}

/// Chunks per unit (one task writes a unit's chunks in order).
const UNIT_CHUNKS: usize = 64;

/// Units written by up to `parallelism` tasks, fed one at a time, so that only the
/// units in flight are in memory. With [`Checks`], every finished unit's CRC-32C is
/// folded into its file's check.
pub(super) struct UnitRun<'a> {
    reader: &'a ChunkReader,
    parallelism: usize,
    progress: &'a dyn RestoreProgress,
    set: JoinSet<Result<(u64, Option<UnitCrc>)>>,
    written: u64,
    checks: Option<Checks>,
}

impl<'a> UnitRun<'a> {
    pub(super) fn new(
        reader: &'a ChunkReader,
        parallelism: usize,
        progress: &'a dyn RestoreProgress,
        checks: Option<Checks>,
    ) -> UnitRun<'a> {
        UnitRun {
            reader,
            parallelism,
            progress,
            set: JoinSet::new(),
            written: 0,
            checks,
        }
    }

    /// Writes the whole file at `path` from its `chunks`, in units; `pg_path` is its
    /// path in PostgreSQL's `backup_manifest`, against which it is checked when this
    /// run has [`Checks`].
    pub(super) async fn file(
        &mut self,
        path: &Path,
        pg_path: &str,
        chunks: &[ChunkRef],
    ) -> Result<()> {
        let size = chunks.iter().map(|c| u64::from(c.len)).sum();
        let check = match &mut self.checks {
            Some(c) => c.begin(pg_path, path, size)?,
            None => None,
        };
        let mut offset = 0;
        for group in chunks.chunks(UNIT_CHUNKS) {
            let len: u64 = group.iter().map(|c| u64::from(c.len)).sum();
            self.unit(Unit {
                path: path.to_path_buf(),
                offset,
                chunks: group.to_vec(),
                check,
            })
            .await?;
            offset += len;
        }
        Ok(())
    }

    /// Starts writing `u`, after one running unit finishes if `parallelism` are.
    pub(super) async fn unit(&mut self, u: Unit) -> Result<()> {
        while self.set.len() >= self.parallelism {
            self.join_one().await?;
        }
        let reader = self.reader.clone();
        self.set.spawn(async move { write_unit(&reader, u).await });
        Ok(())
    }

    async fn join_one(&mut self) -> Result<bool> {
        let Some(res) = self.set.join_next().await else {
            return Ok(false);
        };
        let (n, crc) = res.map_err(|e| crate::error::task_failed("unit", e))??;
        if let (Some(c), Some(u)) = (&mut self.checks, crc) {
            c.unit_done(u)?;
        }
        self.written += n;
        self.progress.advance(n);
        Ok(true)
    }

    /// Waits for every unit; returns the bytes written and the checks (every file
    /// begun is then checked).
    pub(super) async fn finish(mut self) -> Result<(u64, Option<Checks>)> {
        while self.join_one().await? {}
        Ok((self.written, self.checks))
    }
}

pub(super) fn check_chunk_total(path: &str, size: u64, chunks: &[ChunkRef]) -> Result<()> {
    let sum: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
    if sum == size {
        return Ok(());
    }
    Err(Error::of_kind(
        ErrorKind::Repository,
        code::VERIFY_CHUNK_LENGTH_MISMATCH,
        format!("the chunks of {path} add up to {sum} bytes, the manifest says {size}"),
    )
    .with_suggestion("run `pg_hardstorage repo verify` and restore another backup"))
}

/// Hashes the existing files of a `--delta` target chunk by chunk, in parallel; returns
/// how many matched completely and the units that rewrite the chunks that differ.
pub(super) async fn compare_existing(
    repo: &Repository,
    reader: &ChunkReader,
    manifest: &BackupManifest,
    existing: Vec<Existing>,
    progress: &dyn RestoreProgress,
) -> Result<(u64, Vec<Unit>)> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut set: JoinSet<Result<(u64, Vec<Unit>)>> = JoinSet::new();
    let mut kept = 0;
    let mut units = Vec::new();
    let mut it = existing.into_iter();
    loop {
        while set.len() < workers {
            let Some(e) = it.next() else { break };
            let f = &manifest.archives[e.archive].files[e.file];
            let chunks = reader
                .file_chunks(f)
                .await
                .map_err(|err| super::reading(err, manifest, &f.path))?;
            check_chunk_total(&f.path, f.size, &chunks)?;
            let repo = repo.clone();
            set.spawn_blocking(move || {
                let size = e.size;
                let u = delta_units(&repo, e, &chunks)?;
                let stale: u64 = u
                    .iter()
                    .flat_map(|u| u.chunks.iter())
                    .map(|c| u64::from(c.len))
                    .sum();
                Ok((size - stale, u))
            });
        }
        let Some(res) = set.join_next().await else {
            break;
        };
        let (same, u) = res.map_err(|e| crate::error::task_failed("comparison", e))??;
        progress.advance(same);
        if u.is_empty() {
            kept += 1;
        }
        units.extend(u);
    }
    Ok((kept, units))
}

/// Compares one existing file with its chunks (after setting its size and mode) and
/// returns the units that rewrite the runs of chunks that differ.
pub(super) fn delta_units(
    repo: &Repository,
    e: Existing,
    chunks: &[ChunkRef],
) -> Result<Vec<Unit>> {
    let io = |what: &str, err| crate::error::io(format!("{what} {}", e.path.display()), err);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&e.path)
        .map_err(|err| io("open", err))?;
    let len = file.metadata().map_err(|err| io("stat", err))?.len();
    if len != e.size {
        file.set_len(e.size).map_err(|err| io("size", err))?;
    }
    set_mode(&e.path, file_mode(e.mode))?;
    const READ_BLOCK: u64 = 1 << 20;
    let mut buf = Vec::new();
    let mut buf_off = 0u64;
    let mut off = 0u64;
    let mut units = Vec::new();
    let mut run: Option<Unit> = None;
    for c in chunks {
        let clen = u64::from(c.len);
        if off + clen > buf_off + buf.len() as u64 {
            let want = clen.max(READ_BLOCK).min(e.size - off);
            buf.resize(want as usize, 0);
            file.read_exact_at(&mut buf, off)
                .map_err(|err| io("read", err))?;
            buf_off = off;
        }
        let start = (off - buf_off) as usize;
        let same = repo.chunk_id(&buf[start..start + c.len as usize]) == c.id;
        if same {
            units.extend(run.take());
        } else {
            match &mut run {
                Some(u) if u.chunks.len() < 64 => u.chunks.push(*c),
                _ => {
                    units.extend(run.take());
                    run = Some(Unit {
                        path: e.path.clone(),
                        offset: off,
                        chunks: vec![*c],
                        check: None,
                    });
                }
            }
        }
        off += clen;
    }
    units.extend(run);
    Ok(units)
}

/// Writes one unit; returns the bytes written and, when its file is checked, the
/// CRC-32C of those bytes.
///
/// Consecutive chunks are gathered into writes of about 1 MiB (one pwrite per 8 KiB
/// page made the restore syscall-bound; and a write holds at most [`PINNED_FRAMES`]
/// decoded frames or 1 MiB plus one chunk, whatever the unit holds: 64 content-defined
/// chunks can be 64 MiB). A write of at
/// least [`DIRECT_MIN_LEN`] that starts and ends on 4 KiB boundaries (nearly every
/// write of a relation file) bypasses the page cache (`O_DIRECT`): at scale 1000 the
/// copy into the page cache and the writers' contention on the file's lock were most of
/// a restore's CPU, and the cache filled memory with pages no one reads before the
/// server starts. Other writes, and file systems that refuse `O_DIRECT`, go through the
/// page cache with the disk write started at once.
///
/// The chunks are usually not copied: a write takes them where the reader decoded them,
/// as runs of consecutive chunks of one frame ([`ChunkReader::read_next`], one
/// [`ReadCursor`] per unit), several runs in one `pwritev`. Decoded frames start on 4 KiB boundaries, so pages are aligned
/// for `O_DIRECT` as they lie, unless a chunk of another size comes before them in the
/// frame. A write whose runs are not all aligned is gathered into one aligned buffer
/// first, and so is one whose chunks come from more than [`PINNED_FRAMES`] frames (a
/// backup whose pages were stored at different times), so that a write never holds
/// more than that many frames in memory.
pub(super) async fn write_unit(reader: &ChunkReader, u: Unit) -> Result<(u64, Option<UnitCrc>)> {
    const WRITE_BATCH: usize = 1 << 20;
    let mut batch = Runs::default();
    let mut batch_off = u.offset;
    let mut off = u.offset;
    let mut reg = !0u32;
    let mut cursor = ReadCursor::default();
    for c in &u.chunks {
        let (frame, range) = reader.read_next(&mut cursor, c).await.map_err(|e| {
            named(
                e,
                format!("restoring {}", u.path.display()),
                "the pack named is damaged: restore another backup (`pg_hardstorage repo \
                 verify` lists the backups that read it; see runbook 4 in docs/runbooks.md)",
            )
        })?;
        let n = range.len();
        if n != c.len as usize {
            return Err(Error::of_kind(
                ErrorKind::Repository,
                code::VERIFY_CHUNK_LENGTH_MISMATCH,
                format!("chunk {} is {n} bytes, the manifest says {}", c.id, c.len),
            )
            .with_suggestion("run `pg_hardstorage repo verify` and restore another backup"));
        }
        if u.check.is_some() {
            reg = hs_pg::crc32c_update(reg, &frame[range.clone()]);
        }
        off += n as u64;
        batch.push(frame, range);
        if batch.bytes >= WRITE_BATCH {
            write_off_runtime(&u.path, std::mem::take(&mut batch), batch_off).await?;
            batch_off = off;
        }
    }
    if batch.bytes > 0 {
        write_off_runtime(&u.path, batch, batch_off).await?;
    }
    let len = off - u.offset;
    let crc = u.check.map(|id| UnitCrc {
        id,
        offset: u.offset,
        len,
        crc: !reg,
    });
    Ok((len, crc))
}

/// Decoded frames one write may hold (see [`write_unit`]): two, as 64 consecutive pages
/// span at most two frames of `FRAME_BYTES` (1 MiB).
const PINNED_FRAMES: usize = 2;

/// The data of one write, in file order: runs of consecutive chunks, each a range of the
/// decoded frame that holds it; or, once its chunks came from more than
/// [`PINNED_FRAMES`] frames, all of them copied into one aligned buffer.
#[derive(Default)]
struct Runs {
    /// At most [`PINNED_FRAMES`] distinct frames among them.
    runs: Vec<(Bytes, Range<usize>)>,
    /// `(buffer, lead)`: the gathered bytes are `buffer[lead..]`, 4 KiB aligned.
    gathered: Option<(Vec<u8>, usize)>,
    bytes: usize,
}

impl Runs {
    /// Appends a chunk: to the last run when it follows it in the same frame, else as a
    /// new run, or copied when the runs would hold more than [`PINNED_FRAMES`] frames.
    fn push(&mut self, frame: Bytes, range: Range<usize>) {
        self.bytes += range.len();
        if let Some((buf, _)) = &mut self.gathered {
            buf.extend_from_slice(&frame[range]);
            return;
        }
        if let Some((last, r)) = self.runs.last_mut() {
            if same_frame(last, &frame) && r.end == range.start {
                r.end = range.end;
                return;
            }
        }
        if self.runs.iter().any(|(f, _)| same_frame(f, &frame))
            || self.frames_held() < PINNED_FRAMES
        {
            self.runs.push((frame, range));
            return;
        }
        let (mut buf, lead) = aligned_buffer(self.bytes.max(1 << 20));
        for (f, r) in self.runs.drain(..) {
            buf.extend_from_slice(&f[r]);
        }
        buf.extend_from_slice(&frame[range]);
        self.gathered = Some((buf, lead));
    }

    /// The distinct frames the runs hold.
    fn frames_held(&self) -> usize {
        let runs = &self.runs;
        (0..runs.len())
            .filter(|&i| !runs[..i].iter().any(|(f, _)| same_frame(f, &runs[i].0)))
            .count()
    }

    fn slices(&self) -> Vec<&[u8]> {
        match &self.gathered {
            Some((buf, lead)) => vec![&buf[*lead..]],
            None => self.runs.iter().map(|(f, r)| &f[r.clone()]).collect(),
        }
    }
}

/// Whether `a` and `b` are the same decoded frame (clones of one `Bytes`).
fn same_frame(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

/// [`write_slices_at`] of `runs` on a thread of the blocking pool.
///
/// The runtime has a worker thread per core and they do the CPU work of a restore
/// (decompression, the chunk id and CRC-32C checks). A write waits for the disk, an
/// `O_DIRECT` one until the device has the data: made on a worker, it left that core
/// idle meanwhile, so decoding and writing took turns instead of overlapping. The unit
/// still waits for its write, so no more data is in flight than before. At most
/// [`WRITES_AT_ONCE`] writes are in flight: more did not write faster, and each added
/// blocking thread kept an allocator arena of its own (5 MiB more peak RSS at 8).
async fn write_off_runtime(path: &Path, runs: Runs, offset: u64) -> Result<()> {
    let path = path.to_path_buf();
    // The semaphore is never closed, so acquiring cannot fail.
    let _permit = WRITES.acquire().await.ok();
    tokio::task::spawn_blocking(move || write_slices_at(&path, &runs.slices(), offset))
        .await
        .map_err(|e| crate::error::task_failed("write", e))?
}

/// Whether `s`'s memory and length are 4 KiB aligned (as `O_DIRECT` needs of each buffer
/// of a vectored write).
fn is_aligned(s: &[u8]) -> bool {
    s.as_ptr().align_offset(DIRECT_ALIGN) == 0 && s.len().is_multiple_of(DIRECT_ALIGN)
}

/// `pwritev` of all of `bufs` at `offset`, continuing after a short write.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn write_all_vectored_at(file: &std::fs::File, bufs: &[&[u8]], offset: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut iov: Vec<libc::iovec> = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    let mut first = 0;
    let mut offset = offset;
    while first < iov.len() {
        let count = (iov.len() - first).min(1024) as libc::c_int;
        let at = libc::off64_t::try_from(offset)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
        // SAFETY: every iovec points into a slice of `bufs`, which outlive the call, with
        // its length; the kernel only reads them. `first..first + count` is in bounds.
        let n = unsafe { libc::pwritev64(file.as_raw_fd(), iov[first..].as_ptr(), count, at) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut done = n as usize;
        offset += done as u64;
        while done > 0 {
            let v = &mut iov[first];
            if done >= v.iov_len {
                done -= v.iov_len;
                first += 1;
            } else {
                // SAFETY: `done < iov_len`, so the new start stays within the same slice.
                v.iov_base = unsafe { (v.iov_base as *mut u8).add(done) } as *mut libc::c_void;
                v.iov_len -= done;
                done = 0;
            }
        }
        while first < iov.len() && iov[first].iov_len == 0 {
            first += 1;
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn write_all_vectored_at(file: &std::fs::File, bufs: &[&[u8]], offset: u64) -> std::io::Result<()> {
    let mut at = offset;
    for b in bufs {
        file.write_all_at(b, at)?;
        at += b.len() as u64;
    }
    Ok(())
}

/// Writes of restored data in flight at once (see [`write_off_runtime`]).
const WRITES_AT_ONCE: usize = 2;
static WRITES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(WRITES_AT_ONCE);

/// The alignment `O_DIRECT` writes need (of memory, offset and length); 4 KiB covers
/// the logical block sizes of the file systems a data directory lives on.
const DIRECT_ALIGN: usize = 4096;

/// Writes shorter than this go through the page cache even when aligned.
///
/// An `O_DIRECT` write returns once the device has the data; for a small write that
/// wait is nearly all of its cost. A scale-100 cluster has ~750 files of at most 64 KiB
/// (about 12 MB in all; the catalogs, the same at any scale), each one such write, and
/// with [`WRITES_AT_ONCE`] in flight they went to the disk one round trip at a time
/// (0.15 ms each under strace, against 0.5 ms for a 512 KiB write). Through the page
/// cache they cost a copy, the disk write is started at once, and the final fsync of
/// each file makes them durable as before. Relation files are written in units of 64
/// pages (512 KiB), so their writes stay direct.
const DIRECT_MIN_LEN: usize = 256 << 10;

/// Whether `len` bytes are written at `offset` with `O_DIRECT`: long enough, and the
/// offset and length 4 KiB aligned (memory that is not is gathered into a buffer that
/// is, see [`write_slices_at`]).
fn direct_write(len: usize, offset: u64) -> bool {
    len >= DIRECT_MIN_LEN
        && offset.is_multiple_of(DIRECT_ALIGN as u64)
        && len.is_multiple_of(DIRECT_ALIGN)
}

/// Set once a file system refused `O_DIRECT` (tmpfs): later units go through the page
/// cache without trying again.
static DIRECT_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes `slices` one after the other at `offset` of the existing file `path`, in one
/// `pwritev`: through `O_DIRECT` when [`direct_write`] says so and the file system allows
/// it (slices not all aligned in memory are first gathered into one aligned buffer),
/// else through the page cache with the disk write started at once.
fn write_slices_at(path: &Path, slices: &[&[u8]], offset: u64) -> Result<()> {
    use std::sync::atomic::Ordering;
    let io = |what: &str, e| crate::error::io(format!("{what} {}", path.display()), e);
    let len: usize = slices.iter().map(|s| s.len()).sum();
    if direct_write(len, offset) && !DIRECT_REFUSED.load(Ordering::Relaxed) {
        let gathered;
        let direct: Vec<&[u8]> = if slices.iter().all(|s| is_aligned(s)) {
            slices.to_vec()
        } else {
            let (mut buf, lead) = aligned_buffer(len);
            for s in slices {
                buf.extend_from_slice(s);
            }
            gathered = (buf, lead);
            vec![&gathered.0[gathered.1..]]
        };
        // EINVAL at open: the file system has no O_DIRECT (tmpfs); at the write: it
        // needs a larger alignment. Either way the same bytes go through the page
        // cache instead (a write that failed wrote nothing the retry does not cover).
        match open_direct(path).and_then(|f| write_all_vectored_at(&f, &direct, offset)) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!(
                    "O_DIRECT refused for {}: writing through the page cache",
                    path.display()
                );
                DIRECT_REFUSED.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(io("write", e)),
        }
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io("open", e))?;
    write_all_vectored_at(&f, slices, offset).map_err(|e| io("write", e))?;
    start_writeback(&f, offset, len);
    Ok(())
}

/// An empty buffer with room for `len` bytes that start on a [`DIRECT_ALIGN`] boundary:
/// `(buffer, lead)`, the data going at `buffer[lead..]` (the lead bytes are zeros).
fn aligned_buffer(len: usize) -> (Vec<u8>, usize) {
    let mut buf: Vec<u8> = Vec::with_capacity(len + DIRECT_ALIGN);
    let lead = buf.as_ptr().align_offset(DIRECT_ALIGN);
    buf.resize(lead, 0);
    (buf, lead)
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> std::io::Result<std::fs::File> {
    Err(std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// Asks the kernel to start writing `len` bytes at `offset` of `file` to disk now,
/// without waiting for it (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). Left alone, the
/// kernel starts writeback only once a tenth of memory is dirty: the disk idled for
/// the first seconds of a restore and the final fsyncs then waited for all of it. The
/// data is made durable by the fsync of every file at the end, as before; an error
/// here would show there too, so it is not reported twice.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback(file: &std::fs::File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return;
    };
    // SAFETY: a plain system call on a file descriptor `file` keeps open for the call;
    // it reads and writes no memory of ours.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File, _offset: u64, _len: usize) {}

/// Joins an archive path onto a root, refusing anything that could escape it.
pub(super) fn safe_join(root: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    let ok = !rel.is_empty()
        && p.components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        });
    if !ok {
        return Err(Error::of_kind(
            ErrorKind::Repository,
            code::VERIFY_MANIFEST_PATH_INVALID,
            format!("the backup manifest names an unsafe path {rel:?}"),
        )
        .with_suggestion("the manifest is damaged or forged; run `pg_hardstorage verify`"));
    }
    Ok(root.join(p))
}

pub(super) fn make_parent(p: &Path) -> Result<()> {
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| crate::error::io(format!("create {}", parent.display()), e))?;
    }
    Ok(())
}

pub(super) fn set_mode(p: &Path, mode: u32) -> Result<()> {
    let mode = if mode == 0 { 0o700 } else { mode };
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| crate::error::io(format!("chmod {}", p.display()), e))
}

/// The permission bits a restored regular file gets.
pub(super) fn file_mode(mode: u32) -> u32 {
    if mode & 0o777 == 0 {
        0o600
    } else {
        mode & 0o777
    }
}

pub(super) fn create_file(p: &Path, mode: u32, size: u64) -> Result<()> {
    let mode = file_mode(mode);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(p)
        .map_err(|e| crate::error::io(format!("create {}", p.display()), e))?;
    // Sized before it is written, so that no write extends it (ext4 takes a file's lock
    // exclusively for an `O_DIRECT` write past its end). A new file is empty already.
    if size == 0 {
        return Ok(());
    }
    f.set_len(size)
        .map_err(|e| crate::error::io(format!("size {}", p.display()), e))
}

pub(super) fn write_new_file(p: &Path, data: &[u8]) -> Result<()> {
    create_file(p, 0o600, 0)?;
    std::fs::write(p, data).map_err(|e| crate::error::io(format!("write {}", p.display()), e))?;
    sync_path(p)
}

pub(super) fn sync_path(p: &Path) -> Result<()> {
    std::fs::File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(|e| crate::error::io(format!("sync {}", p.display()), e))
}

/// Files synced at once at the end (see [`sync_paths`]).
const SYNC_PARALLEL: usize = 8;

/// Syncs every file of `paths` (each with `fsync`, as [`sync_path`] does), up to
/// [`SYNC_PARALLEL`] at once on the runtime's blocking threads (those the writes used,
/// so no thread, and no allocator arena, is added for this); returns when all are
/// synced, or the first failure once the syncs in flight are done. One after the
/// other, a thousand small files cost a thousand journal commits and disk cache
/// flushes, each waited for in turn; syncs that wait at the same time share them.
pub(super) async fn sync_paths(paths: &[PathBuf]) -> Result<()> {
    let mut set: JoinSet<Result<()>> = JoinSet::new();
    let mut first_error = None;
    let mut next = paths.iter();
    loop {
        while first_error.is_none() && set.len() < SYNC_PARALLEL {
            let Some(p) = next.next() else { break };
            let p = p.clone();
            set.spawn_blocking(move || sync_path(&p));
        }
        let Some(res) = set.join_next().await else {
            break;
        };
        let res = res.map_err(|e| crate::error::task_failed("sync", e));
        if let Err(e) = res.and_then(|r| r) {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

pub(super) fn sync_dirs(root: &Path) -> Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d)
            .map_err(|e| crate::error::io(format!("read {}", d.display()), e))?;
        for ent in rd {
            let ent = ent.map_err(|e| crate::error::io(format!("read {}", d.display()), e))?;
            let ft = ent
                .file_type()
                .map_err(|e| crate::error::io(format!("stat {}", ent.path().display()), e))?;
            if ft.is_dir() {
                stack.push(ent.path());
            }
        }
        sync_path(&d)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An aligned buffer of `len` bytes of a pattern.
    fn aligned(len: usize, seed: u8) -> (Vec<u8>, usize) {
        let mut v: Vec<u8> = Vec::with_capacity(len + DIRECT_ALIGN);
        let lead = v.as_ptr().align_offset(DIRECT_ALIGN);
        v.resize(lead, 0);
        v.extend((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
        (v, lead)
    }

    #[test]
    fn direct_and_buffered_writes_land_where_asked() {
        // A directory on the disk (O_DIRECT where the file system has it) and one on
        // tmpfs when there is one (O_DIRECT refused: the page cache path).
        let disk = tempfile::tempdir().unwrap();
        let mut dirs = vec![disk.path().to_path_buf()];
        let shm = Path::new("/dev/shm");
        let tmpfs = shm.is_dir().then(|| tempfile::tempdir_in(shm).unwrap());
        dirs.extend(tmpfs.as_ref().map(|d| d.path().to_path_buf()));
        let l = DIRECT_MIN_LEN;
        for dir in dirs {
            let p = dir.join("f");
            create_file(&p, 0o600, 3 * l as u64 + 100).unwrap();
            // Aligned and long: direct. Aligned and short, and unaligned: buffered.
            let (a, lead_a) = aligned(l, 1);
            assert!(direct_write(l, l as u64));
            write_slices_at(&p, &[&a[lead_a..]], l as u64).unwrap();
            let (c, lead_c) = aligned(8192, 3);
            assert!(!direct_write(8192, 2 * l as u64));
            write_slices_at(&p, &[&c[lead_c..]], 2 * l as u64).unwrap();
            let (b, lead_b) = aligned(100, 2);
            assert!(!direct_write(100, 3 * l as u64));
            write_slices_at(&p, &[&b[lead_b..]], 3 * l as u64).unwrap();
            let got = std::fs::read(&p).unwrap();
            assert_eq!(got.len(), 3 * l + 100);
            assert!(got[..l].iter().all(|&x| x == 0), "{}", dir.display());
            assert_eq!(&got[l..2 * l], &a[lead_a..], "{}", dir.display());
            assert_eq!(&got[2 * l..2 * l + 8192], &c[lead_c..]);
            assert!(got[2 * l + 8192..3 * l].iter().all(|&x| x == 0));
            assert_eq!(&got[3 * l..], &b[lead_b..]);
        }
    }

    #[test]
    fn runs_of_decoded_frames_are_written_in_place_or_gathered() {
        let l = DIRECT_MIN_LEN;
        // Two frames, aligned as the reader decodes them.
        let (a, lead_a) = aligned(2 * l, 5);
        let frame_a = Bytes::from(a).slice(lead_a..);
        let (b, lead_b) = aligned(l, 9);
        let frame_b = Bytes::from(b).slice(lead_b..);
        // Consecutive pages of one frame are one run.
        let mut runs = Runs::default();
        for i in 0..4 {
            runs.push(frame_a.clone(), i * 8192..(i + 1) * 8192);
        }
        assert_eq!(runs.runs.len(), 1);
        // A page further on in the frame, then another frame: three runs.
        runs.push(frame_a.clone(), l..l + 8192);
        runs.push(frame_b.clone(), 0..l);
        assert_eq!(runs.runs.len(), 3);
        assert_eq!(runs.bytes, 5 * 8192 + l);
        assert!(runs.gathered.is_none(), "two frames are held as they are");
        let mut want = frame_a[..4 * 8192].to_vec();
        want.extend_from_slice(&frame_a[l..l + 8192]);
        want.extend_from_slice(&frame_b[..]);
        // Runs that start inside a page: not aligned, so gathered first.
        let mut odd = Runs::default();
        odd.push(frame_a.clone(), 100..100 + l);
        odd.push(frame_b.clone(), 0..8192);
        let mut want_odd = frame_a[100..100 + l].to_vec();
        want_odd.extend_from_slice(&frame_b[..8192]);

        let disk = tempfile::tempdir().unwrap();
        let mut dirs = vec![disk.path().to_path_buf()];
        let shm = Path::new("/dev/shm");
        let tmpfs = shm.is_dir().then(|| tempfile::tempdir_in(shm).unwrap());
        dirs.extend(tmpfs.as_ref().map(|d| d.path().to_path_buf()));
        for dir in dirs {
            let p = dir.join("f");
            let size = 8 * l as u64;
            create_file(&p, 0o600, size).unwrap();
            write_slices_at(&p, &runs.slices(), l as u64).unwrap();
            write_slices_at(&p, &odd.slices(), 5 * l as u64).unwrap();
            let got = std::fs::read(&p).unwrap();
            assert_eq!(got.len() as u64, size);
            assert!(got[..l].iter().all(|&x| x == 0));
            assert_eq!(&got[l..l + want.len()], &want[..], "{}", dir.display());
            assert!(got[l + want.len()..5 * l].iter().all(|&x| x == 0));
            assert_eq!(&got[5 * l..5 * l + want_odd.len()], &want_odd[..]);
        }
    }

    #[test]
    fn a_write_holds_at_most_two_frames_then_gathers() {
        // Pages from four frames (a backup whose pages were stored at different times):
        // the first two frames are held, the third makes the write copy everything.
        let frames: Vec<Bytes> = (0..4u8)
            .map(|i| {
                let (v, lead) = aligned(4 * 8192, 10 + i);
                Bytes::from(v).slice(lead..)
            })
            .collect();
        let mut runs = Runs::default();
        let mut want = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            for p in [1, 3] {
                let r = p * 8192..(p + 1) * 8192;
                want.extend_from_slice(&f[r.clone()]);
                runs.push(f.clone(), r);
            }
            let held = runs
                .runs
                .iter()
                .map(|(f, _)| f.as_ptr())
                .collect::<Vec<_>>();
            if i < 2 {
                assert!(runs.gathered.is_none());
                assert_eq!(held.len(), 2 * (i + 1));
            } else {
                assert!(held.is_empty(), "frame {i} still held");
            }
        }
        assert_eq!(runs.bytes, want.len());
        let slices = runs.slices();
        assert_eq!(slices.len(), 1);
        assert_eq!(slices[0], &want[..]);
        assert!(is_aligned(slices[0]));
        // The write holds no frame: dropping the caller's copies frees them.
        for f in &frames {
            assert!(f.is_unique(), "a frame is still shared");
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        create_file(&p, 0o600, want.len() as u64).unwrap();
        write_slices_at(&p, &runs.slices(), 0).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), want);
    }

    #[test]
    fn a_vectored_write_continues_after_each_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = std::fs::File::create(&p).unwrap();
        let parts: Vec<Vec<u8>> = (0..5u8)
            .map(|i| vec![i + 1; 1000 + 777 * i as usize])
            .collect();
        let slices: Vec<&[u8]> = parts.iter().map(|v| &v[..]).collect();
        write_all_vectored_at(&f, &slices, 10).unwrap();
        let got = std::fs::read(&p).unwrap();
        assert!(got[..10].iter().all(|&x| x == 0));
        assert_eq!(&got[10..], &parts.concat()[..]);
    }

    #[test]
    fn only_long_aligned_writes_are_direct() {
        let l = DIRECT_MIN_LEN;
        assert!(direct_write(l, 0));
        assert!(direct_write(2 * l, 8192));
        // Small (a catalog file's page or a few), or unaligned in offset or length.
        assert!(!direct_write(8192, 0));
        assert!(!direct_write(l - DIRECT_ALIGN, 0));
        assert!(!direct_write(l, 512));
        assert!(!direct_write(l + 100, 0));
        // Memory: a buffer that is not aligned is gathered into one that is before an
        // O_DIRECT write.
        let (a, lead) = aligned(2 * l, 1);
        let a = &a[lead..];
        assert!(is_aligned(&a[..l]));
        assert!(!is_aligned(&a[DIRECT_ALIGN / 2..DIRECT_ALIGN / 2 + l]));
        assert!(!is_aligned(&a[..l + 100]));
        let (g, g_lead) = aligned_buffer(l);
        assert_eq!(
            (g.len(), g[g_lead..].as_ptr().align_offset(DIRECT_ALIGN)),
            (g_lead, 0)
        );
        assert!(g.capacity() >= g_lead + l);
    }

    #[test]
    fn sync_paths_syncs_every_file_and_reports_a_failure() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..3 * SYNC_PARALLEL)
            .map(|i| dir.path().join(format!("f{i}")))
            .collect();
        for p in &paths {
            std::fs::write(p, b"x").unwrap();
        }
        rt.block_on(sync_paths(&paths)).unwrap();
        rt.block_on(sync_paths(&[])).unwrap();
        // A file that cannot be synced (it is gone) fails the whole call, wherever it is.
        for at in [0, paths.len() / 2, paths.len() - 1] {
            let mut with_missing = paths.clone();
            with_missing[at] = dir.path().join("missing");
            let e = rt.block_on(sync_paths(&with_missing)).unwrap_err();
            assert!(e.to_string().contains("missing"), "{e}");
        }
    }

    #[test]
    fn safe_join_refuses_escapes() {
        let root = Path::new("/r");
        assert_eq!(
            safe_join(root, "base/1/2").unwrap(),
            Path::new("/r/base/1/2")
        );
        for bad in ["", "../x", "/etc/passwd", "a/../../b"] {
            assert_eq!(
                safe_join(root, bad).unwrap_err().code(),
                "verify.manifest_path_invalid",
                "{bad}"
            );
        }
    }
}
