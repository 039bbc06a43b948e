//! The archive's metrics, registered into the process registry by `metrics.rs`:
//! objects and bytes archived, archive lag, ranged-read latency, failures, and what is
//! waiting to be archived.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The archive's counters, one set per process.
pub(crate) struct ArchiveMetrics {
    /// Objects written by this instance (a race lost and verified is not counted).
    objects: Counter,
    /// Compressed bytes written, and the raw record bytes they hold.
    bytes: Counter,
    raw_bytes: Counter,
    /// From a job's terminal status to its object being written.
    lag: Histogram,
    /// One GET against the archive (an index or a frame).
    read_seconds: Histogram,
    /// Uploads that failed (retried with backoff) and verified races.
    failures: Counter,
    races: Counter,
    /// Finished jobs waiting for an upload (or its retry).
    pending: Gauge,
}

static METRICS: LazyLock<ArchiveMetrics> = LazyLock::new(|| ArchiveMetrics {
    objects: Counter::default(),
    bytes: Counter::default(),
    raw_bytes: Counter::default(),
    lag: Histogram::new(exponential_buckets(0.1, 2.0, 12)),
    read_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
    failures: Counter::default(),
    races: Counter::default(),
    pending: Gauge::default(),
});

/// The process's archive metrics.
pub(crate) fn get() -> &'static ArchiveMetrics {
    &METRICS
}

/// Adds the archive's families to the registry (`tailgate_archive_*`).
pub(crate) fn register(registry: &mut Registry) {
    let m = get();
    let r = registry.sub_registry_with_prefix("archive");
    r.register(
        "objects",
        "Job logs written to the archive",
        m.objects.clone(),
    );
    r.register(
        "bytes",
        "Compressed bytes written to the archive",
        m.bytes.clone(),
    );
    r.register(
        "raw_bytes",
        "Record bytes (SSE JSON) in the objects written",
        m.raw_bytes.clone(),
    );
    r.register(
        "lag_seconds",
        "Time from a job's terminal status to its archived object",
        m.lag.clone(),
    );
    r.register(
        "read_seconds",
        "Time of each GET from the archive (an index or a ranged frame)",
        m.read_seconds.clone(),
    );
    r.register(
        "failures",
        "Uploads that failed; the job stays local and is retried with backoff",
        m.failures.clone(),
    );
    r.register(
        "races",
        "Uploads another instance had already made, verified instead",
        m.races.clone(),
    );
    r.register(
        "pending_jobs",
        "Finished jobs waiting to be archived",
        m.pending.clone(),
    );
}

impl ArchiveMetrics {
    pub(crate) fn archived(&self, bytes: u64, raw_bytes: u64, lag: Duration) {
        self.objects.inc();
        self.bytes.inc_by(bytes);
        self.raw_bytes.inc_by(raw_bytes);
        self.lag.observe(lag.as_secs_f64());
    }

    pub(crate) fn observe_read(&self, took: Duration) {
        self.read_seconds.observe(took.as_secs_f64());
    }

    pub(crate) fn failed(&self) {
        self.failures.inc();
    }

    pub(crate) fn raced(&self) {
        self.races.inc();
    }

    pub(crate) fn set_pending(&self, jobs: usize) {
        self.pending.set(i64::try_from(jobs).unwrap_or(i64::MAX));
    }
}
