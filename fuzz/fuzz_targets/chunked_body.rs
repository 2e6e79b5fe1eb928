#![no_main]
//! See `webcluster_fuzz::chunked_body` (fuzz/src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| webcluster_fuzz::chunked_body(data));
