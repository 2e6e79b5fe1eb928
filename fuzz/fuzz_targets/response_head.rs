#![no_main]
//! See `webcluster_fuzz::response_head` (fuzz/src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| webcluster_fuzz::response_head(data));
