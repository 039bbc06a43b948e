//! The gateway crate's integration tests, in one binary (also makes `cargo test` build the
//! `tailgate` binary that the black-box tests in `tests/` run).

mod cli;
mod fuzz_corpus;
