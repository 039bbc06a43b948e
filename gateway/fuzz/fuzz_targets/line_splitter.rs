#![no_main]
//! libFuzzer entry for `tailgate::fuzz::line_splitter`; the invariants live there.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tailgate::fuzz::line_splitter(data));
