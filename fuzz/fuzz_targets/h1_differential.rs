#![no_main]
//! See `webcluster_fuzz::h1_differential` (fuzz/src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| webcluster_fuzz::h1_differential(data));
