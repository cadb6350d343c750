//! Sorting more fixed-size records than fit in memory: sorted runs in unnamed
//! temporary files (the system temp dir, `TMPDIR`), merged back in order.
//!
//! Whole-repository checks compare two sets that grow with the repository (the
//! chunks the packs hold, the chunks the backups reference). Each side is pushed
//! into an [`ExternalSort`] and read back sorted, so the comparison is a merge and
//! memory stays at [`RUN_BYTES`] plus a read buffer per merged run, whatever the
//! repository's size. The temporary files are unlinked from the start: nothing is
//! left behind, even when the process is killed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use hs_base::code;

use crate::error::{Error, Result};

/// Bytes of records held in memory before they are sorted and written out as a run.
pub(crate) const RUN_BYTES: usize = 16 << 20;

/// The big-endian `u32` at the front of `b`: records keep their numbers big-endian, so
/// that comparing records byte by byte orders those numbers too.
pub(crate) fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
/// Runs merged at once (each with its own read buffer of [`READ_BUFFER`] bytes).
const FAN_IN: usize = 64;
/// The read buffer of each run being merged.
const READ_BUFFER: usize = 64 << 10;

fn temp_error(e: std::io::Error) -> Error {
    let dir = std::env::temp_dir();
    let c = if e.kind() == std::io::ErrorKind::StorageFull {
        code::IO_NO_SPACE
    } else {
        code::IO_WRITE_FAILED
    };
    Error::new(
        c,
        format!(
            "a temporary file in {} (records being sorted) failed",
            dir.display()
        ),
    )
    .with_source(e)
    .with_suggestion(
        "make room in the temp dir, or point TMPDIR at a file system with space \
         (a whole-repository check needs about 24 bytes per chunk reference)",
    )
}

/// Sorts records of `N` bytes (compared as byte strings) with bounded memory.
pub(crate) struct ExternalSort<const N: usize> {
    buf: Vec<[u8; N]>,
    /// Sorted runs by level: a level's runs are merged into one run of the next
    /// level once there are [`FAN_IN`] of them, so few files are open at once.
    levels: Vec<Vec<File>>,
    run_records: usize,
}

impl<const N: usize> Default for ExternalSort<N> {
    /// Runs of [`RUN_BYTES`], or of `HS_SORT_RUN_BYTES` when set (tests set a few
    /// hundred bytes to take the temporary-file path on a small repository).
    fn default() -> Self {
        let run_bytes = std::env::var("HS_SORT_RUN_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(RUN_BYTES);
        Self::with_run_bytes(run_bytes)
    }
}

impl<const N: usize> ExternalSort<N> {
    /// A sorter that writes a run every `run_bytes` bytes of records (tests use small runs).
    pub(crate) fn with_run_bytes(run_bytes: usize) -> Self {
        ExternalSort {
            buf: Vec::new(),
            levels: Vec::new(),
            run_records: (run_bytes / N).max(1),
        }
    }

    pub(crate) fn push(&mut self, record: [u8; N]) -> Result<()> {
        self.buf.push(record);
        if self.buf.len() >= self.run_records {
            self.spill()?;
        }
        Ok(())
    }

    /// Sorts the buffered records and writes them out as one run.
    fn spill(&mut self) -> Result<()> {
        self.buf.sort_unstable();
        let mut f = tempfile::tempfile().map_err(temp_error)?;
        {
            let mut w = BufWriter::with_capacity(READ_BUFFER, &mut f);
            for r in &self.buf {
                w.write_all(r).map_err(temp_error)?;
            }
            w.flush().map_err(temp_error)?;
        }
        f.seek(SeekFrom::Start(0)).map_err(temp_error)?;
        self.buf.clear();
        let mut level = 0;
        let mut run = f;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(run);
            if self.levels[level].len() < FAN_IN {
                return Ok(());
            }
            run = merge_to_file::<N>(std::mem::take(&mut self.levels[level]))?;
            level += 1;
        }
    }

    /// Every record pushed, in ascending order (duplicates kept).
    pub(crate) fn finish(mut self) -> Result<Sorted<N>> {
        if self.levels.is_empty() {
            self.buf.sort_unstable();
            return Ok(Sorted::Memory(std::mem::take(&mut self.buf).into_iter()));
        }
        if !self.buf.is_empty() {
            self.spill()?;
        }
        self.buf = Vec::new();
        // Each level holds fewer than FAN_IN runs; fold the levels together until
        // one merge can take what is left.
        let mut runs: Vec<File> = Vec::new();
        for level in std::mem::take(&mut self.levels) {
            runs.extend(level);
            if runs.len() > FAN_IN {
                runs = vec![merge_to_file::<N>(runs)?];
            }
        }
        Ok(Sorted::Merge(Merge::new(runs)?))
    }
}

fn merge_to_file<const N: usize>(runs: Vec<File>) -> Result<File> {
    let mut m = Merge::<N>::new(runs)?;
    let mut f = tempfile::tempfile().map_err(temp_error)?;
    {
        let mut w = BufWriter::with_capacity(READ_BUFFER, &mut f);
        while let Some(r) = m.next_record()? {
            w.write_all(&r).map_err(temp_error)?;
        }
        w.flush().map_err(temp_error)?;
    }
    f.seek(SeekFrom::Start(0)).map_err(temp_error)?;
    Ok(f)
}

/// The sorted records of an [`ExternalSort`].
pub(crate) enum Sorted<const N: usize> {
    Memory(std::vec::IntoIter<[u8; N]>),
    Merge(Merge<N>),
}

impl<const N: usize> Sorted<N> {
    pub(crate) fn next_record(&mut self) -> Result<Option<[u8; N]>> {
        match self {
            Sorted::Memory(it) => Ok(it.next()),
            Sorted::Merge(m) => m.next_record(),
        }
    }
}

/// A k-way merge of sorted runs.
pub(crate) struct Merge<const N: usize> {
    readers: Vec<BufReader<File>>,
    heap: BinaryHeap<Reverse<([u8; N], usize)>>,
}

impl<const N: usize> Merge<N> {
    fn new(runs: Vec<File>) -> Result<Self> {
        let mut m = Merge {
            readers: runs
                .into_iter()
                .map(|f| BufReader::with_capacity(READ_BUFFER, f))
                .collect(),
            heap: BinaryHeap::new(),
        };
        for i in 0..m.readers.len() {
            m.refill(i)?;
        }
        Ok(m)
    }

    fn refill(&mut self, i: usize) -> Result<()> {
        let mut r = [0u8; N];
        match self.readers[i].read_exact(&mut r) {
            Ok(()) => self.heap.push(Reverse((r, i))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => return Err(temp_error(e)),
        }
        Ok(())
    }

    fn next_record(&mut self) -> Result<Option<[u8; N]>> {
        let Some(Reverse((r, i))) = self.heap.pop() else {
            return Ok(None);
        };
        self.refill(i)?;
        Ok(Some(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn drain<const N: usize>(mut s: Sorted<N>) -> Vec<[u8; N]> {
        let mut out = Vec::new();
        while let Some(r) = s.next_record().unwrap() {
            out.push(r);
        }
        out
    }

    #[test]
    fn multi_level_merge_sorts_everything() {
        // 3-byte records, 2 per run: 5000 records make 2500 runs, more than one
        // merge takes (two merge levels).
        let mut s = ExternalSort::<3>::with_run_bytes(6);
        let mut want = Vec::new();
        let mut x: u32 = 12345;
        for _ in 0..5000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let r = [(x >> 24) as u8, (x >> 16) as u8, (x >> 8) as u8];
            s.push(r).unwrap();
            want.push(r);
        }
        want.sort_unstable();
        assert_eq!(drain(s.finish().unwrap()), want);
    }

    #[test]
    fn empty_and_in_memory() {
        assert!(drain(ExternalSort::<4>::default().finish().unwrap()).is_empty());
        let mut s = ExternalSort::<1>::default();
        for b in [3u8, 1, 2, 1] {
            s.push([b]).unwrap();
        }
        assert_eq!(drain(s.finish().unwrap()), vec![[1], [1], [2], [3]]);
    }

    proptest! {
        #[test]
        fn same_as_sorting_in_memory(v in proptest::collection::vec(any::<[u8; 5]>(), 0..400), run in 5usize..100) {
            let mut s = ExternalSort::<5>::with_run_bytes(run);
            for r in &v {
                s.push(*r).unwrap();
            }
            let mut want = v.clone();
            want.sort_unstable();
            prop_assert_eq!(drain(s.finish().unwrap()), want);
        }
    }
}
