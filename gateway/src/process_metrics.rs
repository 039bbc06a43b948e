//! `process_*` metrics, read from `/proc/self` at scrape time (Linux; elsewhere absent):
//! resident memory, open file descriptors against their limit, start time. An exhausted
//! fd limit is the first thing a gateway holding thousands of streams runs into.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The gauges, registered without the `tailgate_` prefix, as Prometheus' own clients
/// name them.
pub(crate) struct ProcessMetrics {
    registry: Registry,
    resident: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
}

impl ProcessMetrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let resident = gauge(
            &mut registry,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
        );
        let open_fds = gauge(
            &mut registry,
            "process_open_fds",
            "Open file descriptors (sockets, spool files...)",
        );
        let max_fds = gauge(
            &mut registry,
            "process_max_fds",
            "The soft limit on open file descriptors",
        );
        let start: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
        start.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, seconds",
            start,
        );
        Self {
            registry,
            resident,
            open_fds,
            max_fds,
        }
    }

    /// Reads the current values; the registry to encode.
    pub(crate) fn refresh(&self) -> &Registry {
        if let Some(kb) = status_kb("VmRSS:") {
            self.resident.set(kb.saturating_mul(1024));
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory's own fd is among them.
            let n = dir.count().saturating_sub(1);
            self.open_fds.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Some(limit) = max_open_files() {
            self.max_fds.set(limit);
        }
        &self.registry
    }
}

/// A `kB` field of `/proc/self/status`.
fn status_kb(field: &str) -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The soft `Max open files` of `/proc/self/limits`.
fn max_open_files() -> Option<i64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let m = ProcessMetrics::new();
        let _file = std::fs::File::open("/proc/self/status").expect("open");
        m.refresh();
        assert!(m.resident.get() > 0);
        assert!(m.open_fds.get() >= 1);
        assert!(m.max_fds.get() >= m.open_fds.get());
    }
}
