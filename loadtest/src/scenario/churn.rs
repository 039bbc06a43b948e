//! `churn`: every reader connects, reads for about `--hold`, leaves and connects again until
//! publishing ends. Measures connect latency, connects per second and errors; each connection
//! must see no hole in what it received (Tailgate: starting at line 1).

use std::sync::Arc;

use crate::cli::Settings;
use crate::engine::{run_phase, RunError};
use crate::plan::{PhaseSpec, PublishKind, ReaderKind};
use crate::report::Report;
use crate::target::TargetClient;

pub(super) async fn run(
    settings: &Settings,
    target: Arc<TargetClient>,
    run_id: &str,
) -> Result<Report, RunError> {
    let spec = PhaseSpec::new(
        settings,
        run_id,
        "churn",
        ReaderKind::Churn,
        PublishKind::Stream,
        0.0,
    );
    let outcome = run_phase(settings, target, spec).await?;
    let mut report = Report::from_phase(settings, &outcome, false);
    report.connects_per_sec = Some(report.connects as f64 / outcome.delivery_secs.max(1e-9));
    Ok(report)
}
