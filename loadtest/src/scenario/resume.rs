//! `resume`: readers follow their job but drop the connection every `--hold` (jittered) and
//! reconnect with `Last-Event-ID`; across all reconnects no line may be lost or doubled.

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
        "resume",
        ReaderKind::Resume,
        PublishKind::Stream,
        0.0,
    );
    let outcome = run_phase(settings, target, spec).await?;
    Ok(Report::from_phase(settings, &outcome, true))
}
