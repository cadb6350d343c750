//! libFuzzer target `pack_header`: arbitrary bytes into [`hs_fuzz::pack_header`]; it must never panic.
#![no_main]

#[path = "../src/alloc_limit.rs"]
mod alloc_limit;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hs_fuzz::pack_header(data);
});
