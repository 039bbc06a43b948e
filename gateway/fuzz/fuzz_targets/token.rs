#![no_main]
//! libFuzzer entry for `tailgate::fuzz::token`; the invariants live there.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tailgate::fuzz::token(data));
