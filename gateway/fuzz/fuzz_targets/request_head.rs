#![no_main]
//! libFuzzer entry for `tailgate::fuzz::request_head`; the invariants live there.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tailgate::fuzz::request_head(data));
