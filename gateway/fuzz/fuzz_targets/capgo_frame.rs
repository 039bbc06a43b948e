#![no_main]
//! libFuzzer entry for `tailgate::fuzz::capgo_frame`; the invariants live there.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tailgate::fuzz::capgo_frame(data));
