//! Prometheus metrics: one process-wide registry, counters bumped with one atomic add.
//!
//! Hot paths call [`get`] and touch a pre-built handle (no lock, no label lookup per
//! event). Label lookups happen only per connection, per request or per refusal. Jobs by
//! status are counted when scraped. The README's "Metrics" table documents each family.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::entry::Entry;
use crate::process_metrics::ProcessMetrics;
use crate::record::JobStatus;

/// The `Content-Type` of a scrape.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ConnLabels {
    /// `http1` or `http2`.
    pub(crate) protocol: &'static str,
    /// `tcp` or `tls`.
    pub(crate) transport: &'static str,
}

/// One reader kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ReaderLabels {
    /// `sse` or `websocket`.
    pub(crate) kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// What was built: `tailgate_build_info{version}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

/// Every metric family the gateway exports, with cheap handles for the hot paths.
pub(crate) struct Metrics {
    registry: Registry,
    connections: Family<ConnLabels, Gauge>,
    /// Readers by kind, resolved once: attaching one costs one atomic add.
    sse_readers: Gauge,
    ws_readers: Gauge,
    jobs: Family<StatusLabels, Gauge>,
    records_published: Counter,
    bytes_published: Counter,
    events_delivered: Counter,
    bytes_delivered: Counter,
    gaps_sent: Counter,
    resets_sent: Counter,
    duplicates_dropped: Counter,
    auth_failures: Family<ReasonLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    /// Time from a record's append to its write to a reader that was already attached
    /// when it was appended (live), observed per write. Replays of older records would
    /// add the log's age, so they are not observed.
    delivery_lag: AtomicHistogram,
    spool_bytes: Gauge,
    /// Bytes counted against the memory budget, set at scrape time.
    memory_used: Gauge,
    /// Time one job's `fsync` (fdatasync) took.
    fsync_seconds: AtomicHistogram,
    tls_reloads: Family<StatusLabels, Counter>,
    jwks_refreshes: Family<StatusLabels, Counter>,
    /// `process_*`, read at scrape time.
    process: ProcessMetrics,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub(crate) fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("tailgate");
        crate::store::redis::metrics::register(&mut registry);
        let connections = Family::<ConnLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "Open client connections by protocol and transport",
            connections.clone(),
        );
        let readers = Family::<ReaderLabels, Gauge>::default();
        registry.register(
            "readers_active",
            "Readers following a job (SSE streams, Capgo WebSockets)",
            readers.clone(),
        );
        let jobs = Family::<StatusLabels, Gauge>::default();
        registry.register("jobs", "Jobs held, by status", jobs.clone());
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let records_published = counter(
            &mut registry,
            "records_published",
            "Records appended to job logs (lines, statuses, custom records)",
        );
        let bytes_published = counter(
            &mut registry,
            "published_bytes",
            "Bytes of the SSE frames of appended records",
        );
        let events_delivered = counter(
            &mut registry,
            "events_delivered",
            "Records written to SSE readers (one per reader)",
        );
        let bytes_delivered = counter(
            &mut registry,
            "delivered_bytes",
            "Bytes of records written to SSE readers",
        );
        let gaps_sent = counter(
            &mut registry,
            "gaps_sent",
            "gap events sent: records a reader asked for were no longer held",
        );
        let resets_sent = counter(
            &mut registry,
            "resets_sent",
            "reset events sent: a Last-Event-ID beyond the job's last seq",
        );
        let duplicates_dropped = counter(
            &mut registry,
            "duplicates_dropped",
            "NDJSON records dropped because their n was already seen",
        );
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused for their token, by reason",
            auth_failures.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        let delivery_lag = AtomicHistogram::default();
        registry.register(
            "delivery_lag_seconds",
            "Time from a record's append to its write to a reader attached before the append (oldest record of each live write; replays are not observed)",
            delivery_lag.clone(),
        );
        let spool_bytes = Gauge::default();
        registry.register(
            "spool_bytes",
            "Bytes of job spools on disk (0 with --memory-only)",
            spool_bytes.clone(),
        );
        let memory_used = Gauge::default();
        registry.register(
            "memory_budget_used_bytes",
            "Bytes counted against --memory-budget-bytes: held records and their frames, catch-up encoders, the archive cache, chunks waiting for slow readers",
            memory_used.clone(),
        );
        let fsync_seconds = AtomicHistogram::default();
        registry.register(
            "fsync_seconds",
            "Time each job spool fsync took",
            fsync_seconds.clone(),
        );
        let tls_reloads = Family::<StatusLabels, Counter>::default();
        registry.register(
            "tls_reloads",
            "Certificate reloads on SIGHUP, by outcome (ok, error)",
            tls_reloads.clone(),
        );
        let jwks_refreshes = Family::<StatusLabels, Counter>::default();
        registry.register(
            "jwks_refreshes",
            "JWKS fetches, by outcome (ok, error)",
            jwks_refreshes.clone(),
        );
        registry.register(
            "build",
            "The running gateway's version",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        crate::archive::metrics::register(&mut registry);
        let sse_readers = readers.get_or_create(&ReaderLabels { kind: "sse" }).clone();
        let ws_readers = readers
            .get_or_create(&ReaderLabels { kind: "websocket" })
            .clone();
        Self {
            registry,
            connections,
            sse_readers,
            ws_readers,
            jobs,
            records_published,
            bytes_published,
            events_delivered,
            bytes_delivered,
            gaps_sent,
            resets_sent,
            duplicates_dropped,
            auth_failures,
            requests,
            delivery_lag,
            spool_bytes,
            memory_used,
            fsync_seconds,
            tls_reloads,
            jwks_refreshes,
            process: ProcessMetrics::new(),
        }
    }

    /// Counts an open connection until the guard drops.
    pub(crate) fn connection(&self, labels: ConnLabels) -> GaugeGuard {
        GaugeGuard::new(self.connections.get_or_create(&labels).clone())
    }

    /// Counts an attached SSE reader until the guard drops.
    pub(crate) fn sse_reader(&self) -> GaugeGuard {
        GaugeGuard::new(self.sse_readers.clone())
    }

    /// Counts an attached Capgo WebSocket reader until the guard drops.
    pub(crate) fn ws_reader(&self) -> GaugeGuard {
        GaugeGuard::new(self.ws_readers.clone())
    }

    /// One append to a job's log: the records stored and the duplicates dropped.
    pub(crate) fn appended(&self, records: &[Arc<Entry>], duplicates: u64) {
        let bytes: usize = records.iter().map(|e| e.sse.len()).sum();
        self.records_published.inc_by(records.len() as u64);
        self.bytes_published.inc_by(bytes as u64);
        if duplicates > 0 {
            self.duplicates_dropped.inc_by(duplicates);
        }
    }

    /// One write of `events` records (`bytes` long) to a reader; the oldest was appended
    /// at `oldest_ts_ms`, the reader attached at `attached_ms` (Unix milliseconds). The lag
    /// is observed only for a live write: records appended after the reader attached.
    pub(crate) fn delivered(
        &self,
        events: usize,
        bytes: usize,
        oldest_ts_ms: u64,
        attached_ms: u64,
    ) {
        self.events_delivered.inc_by(events as u64);
        self.bytes_delivered.inc_by(bytes as u64);
        if oldest_ts_ms >= attached_ms {
            self.delivery_lag
                .observe(Duration::from_millis(now_ms().saturating_sub(oldest_ts_ms)));
        }
    }

    /// Sets the memory budget's use for the next scrape.
    pub(crate) fn set_memory_used(&self, bytes: usize) {
        self.memory_used
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub(crate) fn fsynced(&self, took: Duration) {
        self.fsync_seconds.observe(took);
    }

    pub(crate) fn gap_sent(&self) {
        self.gaps_sent.inc();
    }

    pub(crate) fn reset_sent(&self) {
        self.resets_sent.inc();
    }

    pub(crate) fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub(crate) fn request(&self, route: &'static str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
    }

    pub(crate) fn tls_reload(&self, ok: bool) {
        let status = if ok { "ok" } else { "error" };
        self.tls_reloads
            .get_or_create(&StatusLabels { status })
            .inc();
    }

    pub(crate) fn jwks_refresh(&self, ok: bool) {
        let status = if ok { "ok" } else { "error" };
        self.jwks_refreshes
            .get_or_create(&StatusLabels { status })
            .inc();
    }

    /// The scrape: sets the gauges read at scrape time (jobs by status, the spool's bytes),
    /// then encodes everything.
    pub(crate) fn render(
        &self,
        statuses: impl IntoIterator<Item = JobStatus>,
        spool_bytes: Option<u64>,
    ) -> String {
        if let Some(bytes) = spool_bytes {
            self.spool_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        let mut counts = [0i64; STATUSES.len()];
        for status in statuses {
            if let Some(i) = STATUSES.iter().position(|s| *s == status) {
                counts[i] += 1;
            }
        }
        for (status, count) in STATUSES.iter().zip(counts) {
            self.jobs
                .get_or_create(&StatusLabels {
                    status: status.as_str(),
                })
                .set(count);
        }
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail.
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, self.process.refresh());
        let _ = encode_eof(&mut out);
        out
    }
}

/// Now as Unix milliseconds (0 before 1970), the clock records are stamped with.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Decrements its gauge when dropped: an open connection or an attached reader.
#[derive(Debug)]
pub(crate) struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Every status, so a scrape shows zeros too.
const STATUSES: [JobStatus; 8] = [
    JobStatus::Queued,
    JobStatus::Running,
    JobStatus::Succeeded,
    JobStatus::Failed,
    JobStatus::Cancelled,
    JobStatus::Expired,
    JobStatus::Released,
    JobStatus::Lost,
];

/// Upper bounds of the histogram buckets (delivery lag, fsync), seconds: 1-2.5-5 steps.
const LAG_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A histogram of atomics: `prometheus-client`'s own takes a lock per observation.
#[derive(Debug, Clone, Default)]
struct AtomicHistogram(std::sync::Arc<HistogramCells>);

#[derive(Debug, Default)]
struct HistogramCells {
    /// Observations per bucket (not cumulative); the last cell is `+Inf`.
    buckets: [AtomicU64; LAG_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    fn observe(&self, value: Duration) {
        let secs = value.as_secs_f64();
        let i = LAG_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LAG_BUCKETS.len());
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.0
            .sum_micros
            .fetch_add(value.as_micros() as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        // Per-bucket counts: the encoder makes them cumulative.
        let mut count = 0;
        let mut buckets = Vec::with_capacity(LAG_BUCKETS.len() + 1);
        for (i, cell) in self.0.buckets.iter().enumerate() {
            let n = cell.load(Ordering::Relaxed);
            count += n;
            let bound = LAG_BUCKETS.get(i).copied().unwrap_or(f64::MAX);
            buckets.push((bound, n));
        }
        let sum = self.0.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_shows_counters_move() {
        let m = get();
        let value = |text: &str, name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or(0.0)
        };
        let before = m.render([], None);
        m.appended(&[], 1);
        let now = now_ms();
        m.delivered(3, 30, now, now);
        m.auth_failure("expired");
        let reader = m.sse_reader();
        let after = m.render([JobStatus::Running, JobStatus::Running], Some(4096));
        for name in [
            "tailgate_duplicates_dropped_total",
            "tailgate_events_delivered_total",
            "tailgate_auth_failures_total{reason=\"expired\"}",
            "tailgate_delivery_lag_seconds_count",
        ] {
            assert!(
                value(&after, name) > value(&before, name),
                "{name} did not move:\n{after}"
            );
        }
        assert!(value(&after, "tailgate_readers_active{kind=\"sse\"}") >= 1.0);
        assert_eq!(value(&after, "tailgate_jobs{status=\"running\"}"), 2.0);
        assert_eq!(value(&after, "tailgate_spool_bytes"), 4096.0);
        assert!(after.ends_with("# EOF\n"), "{after}");
        drop(reader);
    }

    #[test]
    fn lag_buckets_are_cumulative() {
        let h = AtomicHistogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let mut registry = Registry::default();
        registry.register("lag_seconds", "test", h);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(
            out.contains("lag_seconds_bucket{le=\"0.001\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("lag_seconds_bucket{le=\"0.05\"} 2\n"), "{out}");
        assert!(out.contains("lag_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("lag_seconds_count 3\n"), "{out}");
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;

    fn count(text: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix("tailgate_delivery_lag_seconds_count "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    #[test]
    fn replays_are_not_observed_as_lag() {
        let m = Metrics::new();
        let now = now_ms();
        // A 37-minute-old record sent to a reader who attached just now: a replay.
        m.delivered(1, 10, now - 37 * 60 * 1000, now);
        let replayed = m.render([], None);
        assert_eq!(count(&replayed), 0.0, "{replayed}");
        assert!(
            replayed.contains("tailgate_events_delivered_total 1\n"),
            "{replayed}"
        );
        // Appended after the reader attached: live.
        m.delivered(1, 10, now, now - 5);
        assert_eq!(count(&m.render([], None)), 1.0);
    }

    #[test]
    fn a_scrape_has_build_info_process_metrics_and_a_5s_bucket() {
        let text = get().render([], None);
        assert!(
            text.contains(&format!(
                "tailgate_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        for name in [
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
            "tailgate_delivery_lag_seconds_bucket{le=\"5.0\"}",
        ] {
            assert!(text.lines().any(|l| l.starts_with(name)), "{name}:\n{text}");
        }
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
