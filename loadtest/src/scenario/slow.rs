//! `slow`: a fanout run without slow readers (baseline), then the same with `--slow-share` of
//! each job's readers stalled or trickling. Reports how the publisher's rate and the fast
//! readers' latency changed. Slow readers drain at full speed once publishing ends.

use std::sync::Arc;

use crate::cli::Settings;
use crate::engine::{run_phase, RunError};
use crate::plan::{PhaseSpec, PublishKind, ReaderKind};
use crate::report::{group_latency, Report, SlowReport};
use crate::tally::Group;
use crate::target::TargetClient;

pub(super) async fn run(
    settings: &Settings,
    target: Arc<TargetClient>,
    run_id: &str,
) -> Result<Report, RunError> {
    let base_spec = PhaseSpec::new(
        settings,
        run_id,
        "baseline",
        ReaderKind::Follow,
        PublishKind::Stream,
        0.0,
    );
    let baseline = run_phase(settings, target.clone(), base_spec).await?;
    let base_report = Report::from_phase(settings, &baseline, true);

    let spec = PhaseSpec::new(
        settings,
        run_id,
        "with-slow",
        ReaderKind::Follow,
        PublishKind::Stream,
        settings.slow_share,
    );
    let slow_readers = (spec.slow_per_job() * spec.jobs.len()) as u64;
    let outcome = run_phase(settings, target, spec).await?;
    let mut report = Report::from_phase(settings, &outcome, true);

    let fast = group_latency(&outcome, Group::Main);
    report.slow = Some(SlowReport {
        mode: format!("{:?}", settings.slow_mode).to_lowercase(),
        slow_readers,
        slow_counts: outcome.merged.slow,
        slow_latency_us: group_latency(&outcome, Group::Slow),
        baseline_publish_rate: base_report.publish_rate,
        publish_rate: report.publish_rate,
        publish_rate_change_pct: change_pct(base_report.publish_rate, report.publish_rate),
        baseline_fast_latency_us: base_report.latency_us,
        fast_latency_us: fast,
        fast_p99_change_pct: change_pct(base_report.latency_us.p99 as f64, fast.p99 as f64),
        baseline_publisher_blocked_secs: base_report.publisher_blocked_secs,
        publisher_blocked_secs: report.publisher_blocked_secs,
    });
    // The baseline's own failures count too.
    report.lost += base_report.lost;
    report.duplicated += base_report.duplicated;
    report.reordered += base_report.reordered;
    for (kind, n) in base_report.errors_by_kind {
        *report
            .errors_by_kind
            .entry(format!("baseline_{kind}"))
            .or_default() += n;
        report.errors += n;
    }
    Ok(report)
}

fn change_pct(before: f64, after: f64) -> f64 {
    if before == 0.0 {
        0.0
    } else {
        (after - before) / before * 100.0
    }
}
