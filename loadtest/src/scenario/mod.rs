//! The scenarios: each builds its phase(s), runs them with [`crate::engine`] and shapes the
//! report. `fanout`, `idle`, `slow`, `churn`, `resume`: one file each.

mod churn;
mod fanout;
mod idle;
mod resume;
mod slow;

use std::sync::Arc;

use rand::Rng;

use crate::cli::{Scenario, Settings};
use crate::engine::RunError;
use crate::report::Report;
use crate::target::TargetClient;

/// Runs the scenario `settings` names and returns its report.
pub async fn run(settings: &Settings) -> Result<Report, RunError> {
    let target = Arc::new(TargetClient::new(settings)?);
    let run_id = settings.run_id.clone().unwrap_or_else(random_run_id);
    match settings.scenario() {
        Scenario::Fanout => fanout::run(settings, target, &run_id).await,
        Scenario::Idle => idle::run(settings, target, &run_id).await,
        Scenario::Slow => slow::run(settings, target, &run_id).await,
        Scenario::Churn => churn::run(settings, target, &run_id).await,
        Scenario::Resume => resume::run(settings, target, &run_id).await,
    }
}

/// A short random prefix, so every run's jobs are new and start at seq 1.
fn random_run_id() -> String {
    format!("lt{:08x}", rand::rng().random::<u32>())
}
