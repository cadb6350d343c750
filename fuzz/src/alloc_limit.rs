//! The fuzz binaries' allocator: the system allocator, but any single allocation over
//! [`MAX_ALLOC`] aborts the process, which libFuzzer reports as a crash with the input.
//! Inputs are at most some tens of KiB, so such an allocation means a parser sized a buffer
//! from a length in the input instead of from the bytes it has (libFuzzer's own
//! `-malloc_limit_mb` needs a sanitizer's malloc hooks; the targets build without one).
//! Each libFuzzer binary includes this file (the corpus replay test does not).

use std::alloc::{GlobalAlloc, Layout, System};

/// The largest single allocation a target may make: the manifest target's decompression
/// limit (16 MiB) with room for a growing buffer's doubling.
pub const MAX_ALLOC: usize = 64 << 20;

/// [`System`] with the [`MAX_ALLOC`] check.
pub struct Limited;

fn check(size: usize) {
    if size > MAX_ALLOC {
        eprintln!(
            "hs-fuzz: single allocation over {} MiB ({size} bytes): a parser trusts a length \
             from its input",
            MAX_ALLOC >> 20
        );
        // Where it happened (the backtrace's own small allocations pass the check).
        eprintln!("{}", std::backtrace::Backtrace::force_capture());
        std::process::abort();
    }
}

// SAFETY: every call is passed on unchanged to the system allocator; the check only
// aborts before an oversized request.
unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Limited = Limited;
