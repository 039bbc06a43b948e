#![no_main]
//! libFuzzer entry for `tailgate::fuzz::ndjson_records`; the invariants live there.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tailgate::fuzz::ndjson_records(data));
