//! `tailgate-loadtest`: load scenarios with correctness accounting, for Tailgate and Nchan.
//!
//! - [`cli`]: flags and the [`cli::Settings`] every process shares.
//! - [`scenario`]: fanout, idle, slow, churn, resume; [`plan`] their phases and readers.
//! - [`engine`]: runs a phase; [`fleet`] readers in-process; [`procs`] readers in children.
//! - [`reader`]: one SSE reader over [`connect`] + [`http1`] + [`sse`]; [`publisher`] one per job.
//! - [`accounting`], [`latency`], [`tally`], [`server_stats`], [`report`], [`progress`], [`line`].
//! - [`delay_proxy`]: the `tailgate-delay-proxy` relay (Redis "across a network", `scale.sh`).

pub mod accounting;
pub mod cli;
pub mod connect;
pub mod delay_proxy;
pub mod engine;
pub mod fleet;
pub mod http1;
pub mod latency;
pub mod line;
pub mod plan;
pub mod procs;
pub mod progress;
pub mod publisher;
pub mod reader;
pub mod report;
pub mod scenario;
pub mod server_stats;
pub mod sse;
pub mod tally;
pub mod target;

pub use cli::Settings;
pub use engine::RunError;
pub use report::Report;

/// Runs the scenario `settings` names and returns its report.
pub async fn run(settings: &Settings) -> Result<Report, RunError> {
    scenario::run(settings).await
}
