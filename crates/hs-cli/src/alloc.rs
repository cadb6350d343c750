//! Allocator settings for the process, applied first thing in `main`.
//!
//! With glibc's defaults, peak memory (RSS) grew with the run length, not with what the
//! program held: glibc raises its mmap threshold to the size of every large block it
//! frees (up to 32 MiB), so after the first pack buffer (about 19 MiB) or decoded frame
//! (1 MiB) is freed, every later one comes from the per-thread heaps ("arenas"), where
//! the 8 KiB chunk copies made between them keep the freed space from being returned.
//! Measured on a pgbench scale 300 cluster (issue 15, notes/i15/slopes.md): `backup` 171
//! MiB and `restore` 172 MiB with the defaults, 90 and 117 MiB with a fixed 1 MiB
//! threshold, for heap peaks of about 85 and 107 MB.
//!
//! A fixed threshold (which also turns glibc's adjustment off) puts every block of 1 MiB
//! or more (pack buffers, decoded frames, WAL segments, index objects) in its own
//! mapping, returned to the system when freed; smaller blocks stay in the arenas.
//! A fixed threshold also fixes the trim threshold (free memory at an arena's top kept
//! rather than returned) at its 128 KiB default, so an arena shrank and grew again all
//! the time: a restore took six times the page faults (334,000 instead of 54,000 at
//! scale 300) and a third more system time. [`TRIM_THRESHOLD`] sets it to 4 MiB: back to
//! 61,000 faults, for about 6 MiB more RSS.
//! Other C libraries are left alone.

/// Blocks of this size or more are mapped on their own (glibc's `M_MMAP_THRESHOLD`).
pub(crate) const MMAP_THRESHOLD: usize = 1 << 20;
/// Free memory at the top of an arena kept for reuse (glibc's `M_TRIM_THRESHOLD`).
pub(crate) const TRIM_THRESHOLD: usize = 4 << 20;

/// Applies the settings above; call it before any other thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(crate) fn configure() {
    let int = |v: usize| libc::c_int::try_from(v).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only changes malloc's parameters; it is called before any other
    // thread exists, and a refused value (return 0) leaves the defaults in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, int(MMAP_THRESHOLD));
        libc::mallopt(libc::M_TRIM_THRESHOLD, int(TRIM_THRESHOLD));
    }
}

/// Applies the settings above (nothing to do outside glibc).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn configure() {}
