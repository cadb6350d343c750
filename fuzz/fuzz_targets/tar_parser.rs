//! libFuzzer target `tar_parser`: arbitrary bytes into [`hs_fuzz::tar_parser`]; it must never panic.
#![no_main]

#[path = "../src/alloc_limit.rs"]
mod alloc_limit;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hs_fuzz::tar_parser(data);
});
