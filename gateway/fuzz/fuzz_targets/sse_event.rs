#![no_main]
//! libFuzzer entry for `tailgate::fuzz::sse_event`; the invariants live there.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tailgate::fuzz::sse_event(data));
