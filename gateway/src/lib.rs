//! Tailgate: a live build-log streaming gateway.
//!
//! - [`job_id`]: the validated job name.
//! - [`auth`]: job-scoped JWTs (extract, verify, mint).

pub mod auth;
pub mod job_id;
