//! libFuzzer target `proto_codec`: arbitrary bytes into [`hs_fuzz::proto_codec`]; it must never panic.
#![no_main]

#[path = "../src/alloc_limit.rs"]
mod alloc_limit;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hs_fuzz::proto_codec(data);
});
