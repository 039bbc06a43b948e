//! Runs one phase: start the readers (here or in `--procs` children), wait until they are
//! connected, publish, tell readers publishing ended, collect and merge what they measured,
//! and sample the server's CPU and memory around it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cli::Settings;
use crate::fleet::LocalFleet;
use crate::latency::HistogramError;
use crate::plan::PhaseSpec;
use crate::procs::{ChildFleet, ProcsError};
use crate::progress::{Progress, Snapshot};
use crate::publisher::{self, PublishOutcome, PublishPlan};
use crate::server_stats::{self, StatsError};
use crate::tally::{Live, Merged, Tally};
use crate::target::{TargetClient, TargetError};

/// Why a run could not be carried out (as opposed to measuring failures).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("target")]
    Target(#[from] TargetError),
    #[error("child processes")]
    Procs(#[from] ProcsError),
    #[error("server statistics")]
    Stats(#[from] StatsError),
    #[error("merging histograms")]
    Histogram(#[from] HistogramError),
    #[error("cannot write the report to {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The server's cost over a phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerCost {
    /// CPU seconds from the moment all readers were connected to the last reader's end.
    pub cpu_seconds: f64,
    /// Resident memory before any reader connected.
    pub rss_bytes_before: u64,
    /// Resident memory when publishing ended, every reader still connected.
    pub rss_bytes_after: u64,
    /// Highest thread count of each `--server-pid` (in flag order) from before the readers
    /// connected to the last reader's end.
    pub peak_threads: Vec<u64>,
    /// CPU seconds of each `--server-pid` (in flag order) over the same window as
    /// `cpu_seconds`, so a run can count instances and Redis apart.
    pub cpu_seconds_each: Vec<f64>,
}

/// What one phase measured.
#[derive(Debug)]
pub struct PhaseOutcome {
    pub spec: PhaseSpec,
    pub merged: Merged,
    pub publishers: Vec<PublishOutcome>,
    /// From all readers connected to the last reader done.
    pub delivery_secs: f64,
    /// Time readers took to connect (first connection each).
    pub connect_secs: f64,
    pub server: Option<ServerCost>,
}

impl PhaseOutcome {
    pub fn published(&self) -> u64 {
        self.publishers.iter().map(|p| p.published).sum()
    }
}

enum Fleet {
    Local(LocalFleet),
    Children(ChildFleet),
}

/// Reads a fleet's live counters.
type LiveSource = Arc<dyn Fn() -> Live + Send + Sync>;

impl Fleet {
    fn live_source(&self) -> LiveSource {
        match self {
            Fleet::Local(f) => {
                let tally = f.tally.clone();
                Arc::new(move || tally.live())
            }
            Fleet::Children(f) => Arc::new(f.live_source()),
        }
    }
}

/// Runs `spec` against `target`.
pub async fn run_phase(
    settings: &Settings,
    target: Arc<TargetClient>,
    spec: PhaseSpec,
) -> Result<PhaseOutcome, RunError> {
    let pids = &settings.server_pid;
    let before = server_stats::sample_sum(pids)?;
    let thread_watch = server_stats::ThreadWatch::start(pids);
    let publisher_tally = Arc::new(Tally::default());
    let published_live = Arc::new(AtomicU64::new(0));
    let total_readers = spec.total_readers() as u64;

    let connect_start = Instant::now();
    let fleet = if settings.procs > 1 {
        Fleet::Children(ChildFleet::start(settings, &spec).await?)
    } else {
        Fleet::Local(LocalFleet::start(settings, target.clone(), &spec, 0, 1)?)
    };
    let live = fleet.live_source();
    let progress = {
        let live = live.clone();
        let published_live = published_live.clone();
        let publisher_tally = publisher_tally.clone();
        Progress::start(
            &spec.label,
            settings.duration,
            settings.no_progress,
            Arc::new(move || {
                let now = live();
                Snapshot {
                    ready: now.ready,
                    open: now.open,
                    published: published_live.load(Ordering::Relaxed),
                    delivered: now.delivered,
                    errors: now.errors + publisher_tally.error_count.load(Ordering::Relaxed),
                }
            }),
        )
    };

    // Wait until every reader has its first connection (or gave up on it).
    let ready_deadline =
        Instant::now() + Duration::from_secs(60) + Duration::from_millis(total_readers * 2);
    loop {
        let ready = live().ready;
        if ready >= total_readers {
            break;
        }
        if Instant::now() >= ready_deadline {
            publisher_tally.error("readers_not_ready");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_secs = connect_start.elapsed().as_secs_f64();
    let go = Instant::now();
    let cpu_start = server_stats::sample_sum(pids)?;
    let cpu_each_start = server_stats::cpu_each(pids)?;

    let plan = PublishPlan {
        kind: spec.publish,
        rate: settings.rate,
        duration: settings.duration,
        line_bytes: settings.line_bytes,
    };
    let mut publishers = JoinSet::new();
    for (j, job) in spec.jobs.iter().enumerate() {
        let target = target.clone();
        let job = job.clone();
        let live = published_live.clone();
        let tally = publisher_tally.clone();
        publishers.spawn(async move {
            (
                j,
                publisher::publish(&target, &job, plan, &live, &tally).await,
            )
        });
    }
    let mut outcomes = vec![PublishOutcome::default(); spec.jobs.len()];
    while let Some(joined) = publishers.join_next().await {
        match joined {
            Ok((j, outcome)) => outcomes[j] = outcome,
            Err(_) => publisher_tally.error("publisher_panicked"),
        }
    }
    let after_publish = server_stats::sample_sum(pids)?;
    let published: Vec<u64> = outcomes.iter().map(|o| o.published).collect();

    let mut shards = match fleet {
        Fleet::Local(f) => {
            f.end(published);
            vec![f.finish().await]
        }
        Fleet::Children(mut f) => {
            f.end(&published).await?;
            f.finish().await?
        }
    };
    let delivery_secs = go.elapsed().as_secs_f64();
    let cpu_end = server_stats::sample_sum(pids)?;
    let cpu_each_end = server_stats::cpu_each(pids)?;
    let peak_threads = thread_watch.finish();
    progress.finish();
    shards.push(publisher_tally.result());
    let merged = Merged::merge(&shards)?;

    let server = match (before, cpu_start, after_publish, cpu_end) {
        (Some(b), Some(s), Some(a), Some(e)) => Some(ServerCost {
            cpu_seconds: e.cpu_seconds - s.cpu_seconds,
            rss_bytes_before: b.rss_bytes,
            rss_bytes_after: a.rss_bytes,
            peak_threads,
            cpu_seconds_each: cpu_each_end
                .iter()
                .zip(&cpu_each_start)
                .map(|(e, s)| e - s)
                .collect(),
        }),
        _ => None,
    };
    Ok(PhaseOutcome {
        spec,
        merged,
        publishers: outcomes,
        delivery_secs,
        connect_secs,
        server,
    })
}
