#![no_main]
//! See `webcluster_fuzz::status_nginx` (fuzz/src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| webcluster_fuzz::status_nginx(data));
