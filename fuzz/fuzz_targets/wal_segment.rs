//! libFuzzer target `wal_segment`: arbitrary bytes into [`hs_fuzz::wal_segment`]; it must never panic.
#![no_main]

#[path = "../src/alloc_limit.rs"]
mod alloc_limit;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hs_fuzz::wal_segment(data);
});
