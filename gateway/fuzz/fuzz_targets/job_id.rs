#![no_main]
//! libFuzzer entry for `tailgate::fuzz::job_id`; the invariants live there.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tailgate::fuzz::job_id(data));
