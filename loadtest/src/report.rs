//! The run's report: built from a phase's outcome, printed as a human table, written as JSON
//! (`--json`), and mapped to the exit code.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::accounting::Counts;
use crate::cli::Settings;
use crate::engine::PhaseOutcome;
use crate::latency::Percentiles;
use crate::tally::Group;

/// Exit code when a line was lost, doubled or reordered.
pub const EXIT_INCORRECT: u8 = 1;
/// Exit code when delivery was correct but errors occurred.
pub const EXIT_ERRORS: u8 = 2;

/// The server's cost, when `--server-pid` was given.
#[derive(Debug, Clone, Serialize)]
pub struct ServerReport {
    pub cpu_seconds: f64,
    pub events_per_cpu_second: f64,
    pub rss_bytes_before: u64,
    pub rss_bytes_after: u64,
    pub rss_bytes_per_reader: f64,
    /// Highest thread count per `--server-pid`, in flag order, sampled through the run.
    pub peak_threads: Vec<u64>,
    /// CPU seconds per `--server-pid`, in flag order (their sum is `cpu_seconds`).
    pub cpu_seconds_each: Vec<f64>,
}

/// The slow scenario's comparison with a run without slow readers.
#[derive(Debug, Clone, Serialize)]
pub struct SlowReport {
    pub mode: String,
    pub slow_readers: u64,
    /// Slow readers' own counts; their gap-announced losses do not fail the run.
    pub slow_counts: Counts,
    pub slow_latency_us: Percentiles,
    pub baseline_publish_rate: f64,
    pub publish_rate: f64,
    pub publish_rate_change_pct: f64,
    pub baseline_fast_latency_us: Percentiles,
    pub fast_latency_us: Percentiles,
    pub fast_p99_change_pct: f64,
    pub baseline_publisher_blocked_secs: f64,
    pub publisher_blocked_secs: f64,
}

/// Everything a run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    pub jobs: usize,
    pub readers_per_job: usize,
    pub readers: u64,
    pub rate: String,
    pub line_bytes: usize,
    /// Lines the publishers got into the server, all jobs.
    pub published: u64,
    /// Lines received, all readers (each line once per reader).
    pub delivered: u64,
    /// What `delivered` must be when every reader follows every line (not for churn).
    pub expected_delivered: Option<u64>,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Lines announced missing by `gap` events (included in `lost`).
    pub gapped: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub latency_us: Percentiles,
    pub connect_us: Percentiles,
    pub connects: u64,
    /// Body bytes read per reader (as sent: compressed with `--compression`, chunk framing).
    pub wire_bytes_per_reader: f64,
    pub compression: String,
    /// Lines from `--corpus` instead of padding.
    pub corpus: bool,
    /// Time from the first connect until every reader was connected.
    pub connect_phase_secs: f64,
    /// From all readers connected to the last reader done.
    pub duration_secs: f64,
    pub events_per_sec: f64,
    /// Lines per second each publisher achieved (mean over jobs).
    pub publish_rate: f64,
    /// Time publishers waited for the server to take lines (sum over jobs).
    pub publisher_blocked_secs: f64,
    /// Readers whose stream ended as it should.
    pub completed_readers: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow: Option<SlowReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connects_per_sec: Option<f64>,
}

impl Report {
    /// The base report of one phase. `full_follow`: every main-group reader should receive
    /// every line.
    pub fn from_phase(settings: &Settings, outcome: &PhaseOutcome, full_follow: bool) -> Self {
        let m = &outcome.merged;
        let published = outcome.published();
        let readers = outcome.spec.total_readers() as u64;
        let silent_slow_loss = m.slow.lost.saturating_sub(m.slow.gapped);
        let delivered = m.main.delivered + m.slow.delivered;
        let secs = outcome.delivery_secs.max(1e-9);
        let rates: Vec<f64> = outcome
            .publishers
            .iter()
            .map(|p| p.published as f64 / p.elapsed.as_secs_f64().max(1e-9))
            .collect();
        let server = outcome.server.as_ref().map(|s| ServerReport {
            cpu_seconds: s.cpu_seconds,
            events_per_cpu_second: if s.cpu_seconds > 0.0 {
                delivered as f64 / s.cpu_seconds
            } else {
                0.0
            },
            rss_bytes_before: s.rss_bytes_before,
            rss_bytes_after: s.rss_bytes_after,
            rss_bytes_per_reader: (s.rss_bytes_after as f64 - s.rss_bytes_before as f64)
                / readers.max(1) as f64,
            peak_threads: s.peak_threads.clone(),
            cpu_seconds_each: s.cpu_seconds_each.clone(),
        });
        Report {
            scenario: settings.scenario().name().into(),
            target: settings.target.name().into(),
            jobs: outcome.spec.jobs.len(),
            readers_per_job: outcome.spec.readers_per_job,
            readers,
            rate: settings.rate.to_string(),
            line_bytes: settings.line_bytes,
            published,
            delivered,
            expected_delivered: full_follow
                .then_some(published * outcome.spec.readers_per_job as u64),
            lost: m.main.lost + silent_slow_loss,
            duplicated: m.main.duplicated + m.slow.duplicated,
            reordered: m.main.reordered + m.slow.reordered,
            gapped: m.main.gapped + m.slow.gapped,
            errors: m.errors.values().sum(),
            errors_by_kind: m.errors.clone(),
            latency_us: Percentiles::of(&m.latency_main),
            connect_us: Percentiles::of(&m.connect),
            connects: m.connects,
            wire_bytes_per_reader: m.wire_bytes as f64 / readers.max(1) as f64,
            compression: settings.compression.clone(),
            corpus: settings.corpus.is_some(),
            connect_phase_secs: outcome.connect_secs,
            duration_secs: outcome.delivery_secs,
            events_per_sec: delivered as f64 / secs,
            publish_rate: rates.iter().sum::<f64>() / rates.len().max(1) as f64,
            publisher_blocked_secs: outcome
                .publishers
                .iter()
                .map(|p| p.blocked.as_secs_f64())
                .sum(),
            completed_readers: m.completed,
            server,
            slow: None,
            connects_per_sec: None,
        }
    }

    /// Lost, duplicated or reordered lines, or fewer deliveries than expected.
    pub fn is_correct(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.reordered == 0
            && self
                .expected_delivered
                .is_none_or(|e| self.delivered + self.slow_gapped() >= e)
    }

    fn slow_gapped(&self) -> u64 {
        self.slow.as_ref().map_or(0, |s| s.slow_counts.gapped)
    }

    /// 0: correct and no errors; 1: incorrect delivery; 2: errors.
    pub fn exit_code(&self) -> u8 {
        if !self.is_correct() {
            EXIT_INCORRECT
        } else if self.errors > 0 {
            EXIT_ERRORS
        } else {
            0
        }
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let row = |out: &mut String, k: &str, v: String| {
            let _ = writeln!(out, "  {k:<13} {v}");
        };
        let _ = writeln!(
            out,
            "tailgate-loadtest {} against {}: {} job(s) x {} readers, rate {}, {} B lines",
            self.scenario, self.target, self.jobs, self.readers_per_job, self.rate, self.line_bytes
        );
        let verdict = if self.is_correct() { "OK" } else { "FAILED" };
        row(
            &mut out,
            "correctness",
            format!(
                "{verdict}: lost {}  duplicated {}  reordered {}  (gap-announced {})",
                self.lost, self.duplicated, self.reordered, self.gapped
            ),
        );
        row(
            &mut out,
            "delivered",
            match self.expected_delivered {
                Some(e) => format!(
                    "{} of {} expected ({} published, {} readers completed)",
                    self.delivered, e, self.published, self.completed_readers
                ),
                None => format!("{} ({} published)", self.delivered, self.published),
            },
        );
        row(&mut out, "latency us", fmt_pct(&self.latency_us));
        row(
            &mut out,
            "wire",
            format!(
                "{:.0} B per reader (compression {}, {})",
                self.wire_bytes_per_reader,
                self.compression,
                if self.corpus {
                    "corpus lines"
                } else {
                    "padded lines"
                }
            ),
        );
        row(
            &mut out,
            "throughput",
            format!(
                "{:.0} events/s over {:.2} s; publisher {:.0} lines/s per job (blocked {:.2} s)",
                self.events_per_sec,
                self.duration_secs,
                self.publish_rate,
                self.publisher_blocked_secs
            ),
        );
        row(
            &mut out,
            "connect us",
            format!(
                "{}  ({} connects, all readers in {:.2} s{})",
                fmt_pct(&self.connect_us),
                self.connects,
                self.connect_phase_secs,
                self.connects_per_sec
                    .map(|r| format!(", {r:.0} connects/s"))
                    .unwrap_or_default()
            ),
        );
        let errors = if self.errors_by_kind.is_empty() {
            "none".to_string()
        } else {
            self.errors_by_kind
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        row(&mut out, "errors", errors);
        if let Some(s) = &self.server {
            row(
                &mut out,
                "server cpu",
                format!(
                    "{:.2} s ({} per --server-pid), {:.0} events per CPU-second",
                    s.cpu_seconds,
                    s.cpu_seconds_each
                        .iter()
                        .map(|c| format!("{c:.2}"))
                        .collect::<Vec<_>>()
                        .join(" / "),
                    s.events_per_cpu_second
                ),
            );
            row(
                &mut out,
                "server rss",
                format!(
                    "{} before, {} after, {:.0} B per reader",
                    fmt_bytes(s.rss_bytes_before),
                    fmt_bytes(s.rss_bytes_after),
                    s.rss_bytes_per_reader
                ),
            );
            row(
                &mut out,
                "server threads",
                format!(
                    "peak {} (per --server-pid, in order)",
                    s.peak_threads
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(" / ")
                ),
            );
        }
        if let Some(s) = &self.slow {
            row(
                &mut out,
                "slow readers",
                format!(
                    "{} ({}): lost {} (gap-announced {}), latency p99 {} us",
                    s.slow_readers,
                    s.mode,
                    s.slow_counts.lost,
                    s.slow_counts.gapped,
                    s.slow_latency_us.p99
                ),
            );
            row(
                &mut out,
                "publisher",
                format!(
                    "{:.0} lines/s without slow readers, {:.0} with: {:+.1} %",
                    s.baseline_publish_rate, s.publish_rate, s.publish_rate_change_pct
                ),
            );
            row(
                &mut out,
                "fast p99 us",
                format!(
                    "{} without slow readers, {} with: {:+.1} %",
                    s.baseline_fast_latency_us.p99, s.fast_latency_us.p99, s.fast_p99_change_pct
                ),
            );
        }
        out
    }

    /// The JSON document of `--json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
    }
}

/// Helper for scenarios: the latency of one group in a phase.
pub fn group_latency(outcome: &PhaseOutcome, group: Group) -> Percentiles {
    match group {
        Group::Main => Percentiles::of(&outcome.merged.latency_main),
        Group::Slow => Percentiles::of(&outcome.merged.latency_slow),
    }
}

fn fmt_pct(p: &Percentiles) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        p.p50, p.p90, p.p99, p.p999, p.max
    )
}

fn fmt_bytes(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}
