//! `fanout`: J jobs x S readers each, every reader follows its job from the first line to the
//! terminal status; publishers at `--rate` for `--duration`.

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
        "fanout",
        ReaderKind::Follow,
        PublishKind::Stream,
        0.0,
    );
    let outcome = run_phase(settings, target, spec).await?;
    Ok(Report::from_phase(settings, &outcome, true))
}
