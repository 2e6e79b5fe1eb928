#![no_main]
//! See `webcluster_fuzz::config` (fuzz/src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| webcluster_fuzz::config(data));
