//! `idle`: readers connect and sit idle for `--duration`; the server's resident memory per
//! reader is the number to read. One line per job at the end proves every reader was alive.

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
        "idle",
        ReaderKind::Follow,
        PublishKind::Idle,
        0.0,
    );
    let outcome = run_phase(settings, target, spec).await?;
    Ok(Report::from_phase(settings, &outcome, true))
}
