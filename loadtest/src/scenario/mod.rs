//! The scenarios: each builds its phase(s), runs them with [`crate::engine`] and shapes the
//! report. Four are one phase each, set by a row of [`one_phase`]; `slow` compares two.

mod slow;

use std::sync::Arc;

use rand::Rng;

use crate::cli::{Scenario, Settings};
use crate::engine::{run_phase, RunError};
use crate::plan::{PhaseSpec, PublishKind, ReaderKind};
use crate::report::Report;
use crate::target::TargetClient;

/// Runs the scenario `settings` names and returns its report.
pub async fn run(settings: &Settings) -> Result<Report, RunError> {
    let target = Arc::new(TargetClient::new(settings)?);
    let run_id = settings.run_id.clone().unwrap_or_else(random_run_id);
    match settings.scenario() {
        Scenario::Slow => slow::run(settings, target, &run_id).await,
        // `fanout`: J jobs x S readers each, every reader follows its job from the first line
        // to the terminal status; publishers at `--rate` for `--duration`.
        Scenario::Fanout => {
            one_phase(
                settings,
                target,
                &run_id,
                "fanout",
                ReaderKind::Follow,
                PublishKind::Stream,
            )
            .await
        }
        // `idle`: readers connect and sit idle for `--duration`; the server's resident memory
        // per reader is the number to read. One line per job at the end proves each was alive.
        Scenario::Idle => {
            one_phase(
                settings,
                target,
                &run_id,
                "idle",
                ReaderKind::Follow,
                PublishKind::Idle,
            )
            .await
        }
        // `resume`: readers follow their job but drop the connection every `--hold` (jittered)
        // and reconnect with `Last-Event-ID`; across all reconnects no line may be lost or doubled.
        Scenario::Resume => {
            one_phase(
                settings,
                target,
                &run_id,
                "resume",
                ReaderKind::Resume,
                PublishKind::Stream,
            )
            .await
        }
        // `churn`: every reader connects, reads for about `--hold`, leaves and connects again
        // until publishing ends: connect latency, connects per second, errors; each connection
        // must see no hole in what it received (Tailgate: starting at line 1).
        Scenario::Churn => {
            one_phase(
                settings,
                target,
                &run_id,
                "churn",
                ReaderKind::Churn,
                PublishKind::Stream,
            )
            .await
        }
    }
}

/// Runs one phase of `reader` readers against `publish` publishers and reports it.
async fn one_phase(
    settings: &Settings,
    target: Arc<TargetClient>,
    run_id: &str,
    name: &str,
    reader: ReaderKind,
    publish: PublishKind,
) -> Result<Report, RunError> {
    let spec = PhaseSpec::new(settings, run_id, name, reader, publish, 0.0);
    let outcome = run_phase(settings, target, spec).await?;
    // Churning readers leave on purpose: they are not expected to see every line.
    let churn = matches!(reader, ReaderKind::Churn);
    let mut report = Report::from_phase(settings, &outcome, !churn);
    if churn {
        report.connects_per_sec = Some(report.connects as f64 / outcome.delivery_secs.max(1e-9));
    }
    Ok(report)
}

/// A short random prefix, so every run's jobs are new and start at seq 1.
fn random_run_id() -> String {
    format!("lt{:08x}", rand::rng().random::<u32>())
}
