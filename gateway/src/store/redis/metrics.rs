//! The shared store's Prometheus families, registered into the gateway's registry by
//! [`register`]: each command's latency by command, errors by kind, reconnects, the jobs
//! this instance follows, and whether it holds the lifecycle lease. The README's
//! "Metrics" table documents them.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The commands the store sends; anything else is counted as `other`, so the label set
/// stays bounded.
const COMMANDS: [&str; 14] = [
    "evalsha",
    "xread",
    "xrange",
    "get",
    "ping",
    "script",
    "client",
    "zadd",
    "zrange",
    "zrem",
    "wait",
    "config",
    "hget",
    "evalsha_ro",
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CommandLabels {
    command: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 3.3 s.
    Histogram::new(exponential_buckets(0.00005, 4.0, 9))
}

/// The shared store's metric handles.
pub(crate) struct RedisMetrics {
    commands: Family<CommandLabels, Histogram, fn() -> Histogram>,
    errors: Family<KindLabels, Counter>,
    reconnects: Counter,
    followed_jobs: Gauge,
    lease_holder: Gauge,
}

static METRICS: LazyLock<RedisMetrics> = LazyLock::new(|| RedisMetrics {
    commands: Family::new_with_constructor(latency_histogram),
    errors: Family::default(),
    reconnects: Counter::default(),
    followed_jobs: Gauge::default(),
    lease_holder: Gauge::default(),
});

pub(crate) fn get() -> &'static RedisMetrics {
    &METRICS
}

/// Adds the families to the gateway's registry (prefix `tailgate_redis_`).
pub(crate) fn register(registry: &mut Registry) {
    let m = get();
    let redis = registry.sub_registry_with_prefix("redis");
    redis.register(
        "command_seconds",
        "Redis round trips by command (xread includes its blocking wait)",
        m.commands.clone(),
    );
    redis.register(
        "errors",
        "Redis failures by kind (timeout, connection, refused)",
        m.errors.clone(),
    );
    redis.register(
        "reconnects",
        "Times the health check reached Redis again after losing it",
        m.reconnects.clone(),
    );
    redis.register(
        "followed_jobs",
        "Jobs this instance follows in Redis for its local readers",
        m.followed_jobs.clone(),
    );
    redis.register(
        "lease_holder",
        "1 while this instance holds the lifecycle lease, else 0",
        m.lease_holder.clone(),
    );
}

/// The bounded label for a command named `name`.
fn label(name: &[u8]) -> &'static str {
    COMMANDS
        .iter()
        .find(|c| c.as_bytes().eq_ignore_ascii_case(name))
        .copied()
        .unwrap_or("other")
}

/// The label of `cmd`'s name.
pub(crate) fn command_label(cmd: &redis::Cmd) -> &'static str {
    match cmd.args_iter().next() {
        Some(redis::Arg::Simple(name)) => label(name),
        _ => "other",
    }
}

impl RedisMetrics {
    /// Runs `fut`, recording its time under `command` and its failure, if any.
    pub(crate) async fn timed<T>(
        &self,
        command: &'static str,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        let start = Instant::now();
        let result = fut.await;
        self.commands
            .get_or_create(&CommandLabels { command })
            .observe(start.elapsed().as_secs_f64());
        if let Err(e) = &result {
            self.error(e);
        }
        result
    }

    fn error(&self, e: &redis::RedisError) {
        let kind = if e.is_timeout() {
            "timeout"
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            "connection"
        } else {
            "refused"
        };
        self.errors.get_or_create(&KindLabels { kind }).inc();
    }

    pub(crate) fn reconnected(&self) {
        self.reconnects.inc();
    }

    pub(crate) fn set_followed(&self, jobs: usize) {
        self.followed_jobs.set(jobs as i64);
    }

    pub(crate) fn set_lease_holder(&self, held: bool) {
        self.lease_holder.set(i64::from(held));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_labels_are_bounded() {
        assert_eq!(command_label(&redis::cmd("XREAD")), "xread");
        assert_eq!(command_label(redis::cmd("wait").arg(1)), "wait");
        assert_eq!(command_label(&redis::cmd("FLUSHALL")), "other");
    }
}
