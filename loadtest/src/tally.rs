//! What one process's readers add up to: live counters for the progress bar, latency sinks,
//! and the final [`ShardResult`] a child hands its parent (histograms as V2/base64).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::accounting::Counts;
use crate::latency::{self, HistogramError, LatencySink};

/// Which accounting group a reader belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Group {
    /// Ordinary readers: every count must be zero.
    Main,
    /// Deliberately slow or stalled readers (slow scenario), accounted apart.
    Slow,
}

/// Live state shared by all readers of one process.
#[derive(Debug, Default)]
pub struct Tally {
    /// Lines received, for the progress bar and events/s.
    pub delivered: AtomicU64,
    /// Connections currently open.
    pub open: AtomicU64,
    /// Readers whose first connection is set up (or gave up), for the start barrier.
    pub ready: AtomicU64,
    /// Connections made, reconnects included.
    pub connects: AtomicU64,
    /// Bytes read from the readers' sockets after the response head (compressed, framed).
    pub wire_bytes: AtomicU64,
    /// Errors so far, for the progress bar.
    pub error_count: AtomicU64,
    /// Errors by kind.
    errors: Mutex<BTreeMap<String, u64>>,
    /// Correctness counts of finished readers, main group.
    main: Mutex<Counts>,
    /// Correctness counts of finished readers, slow group.
    slow: Mutex<Counts>,
    /// Readers whose stream ended the way it should (terminal status, or all lines for nchan).
    pub completed: AtomicU64,
    /// Publish-to-receipt latency of main-group readers.
    pub latency_main: LatencySink,
    /// Publish-to-receipt latency of slow-group readers.
    pub latency_slow: LatencySink,
    /// Time from starting a TCP connect to having the response head.
    pub connect: LatencySink,
}

impl Tally {
    pub fn error(&self, kind: &str) {
        self.error_count.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *errors.entry(kind.to_string()).or_default() += 1;
    }

    pub fn finish_reader(&self, group: Group, counts: &Counts) {
        let slot = match group {
            Group::Main => &self.main,
            Group::Slow => &self.slow,
        };
        slot.lock().unwrap_or_else(|p| p.into_inner()).add(counts);
    }

    pub fn latency(&self, group: Group) -> &LatencySink {
        match group {
            Group::Main => &self.latency_main,
            Group::Slow => &self.latency_slow,
        }
    }

    /// The live counters, as the progress bar shows them.
    pub fn live(&self) -> Live {
        Live {
            delivered: self.delivered.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed),
            ready: self.ready.load(Ordering::Relaxed),
            errors: self.error_count.load(Ordering::Relaxed),
        }
    }

    /// Everything this process measured, ready to merge or send to the parent.
    pub fn result(&self) -> ShardResult {
        ShardResult {
            main: *self.main.lock().unwrap_or_else(|p| p.into_inner()),
            slow: *self.slow.lock().unwrap_or_else(|p| p.into_inner()),
            errors: self
                .errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            connects: self.connects.load(Ordering::Relaxed),
            wire_bytes: self.wire_bytes.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            latency_main: latency::encode(&self.latency_main.snapshot()),
            latency_slow: latency::encode(&self.latency_slow.snapshot()),
            connect: latency::encode(&self.connect.snapshot()),
        }
    }
}

/// Live counters of one process.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Live {
    pub delivered: u64,
    pub open: u64,
    pub ready: u64,
    pub errors: u64,
}

impl Live {
    pub fn add(&mut self, o: &Live) {
        self.delivered += o.delivered;
        self.open += o.open;
        self.ready += o.ready;
        self.errors += o.errors;
    }
}

/// One process's final numbers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShardResult {
    pub main: Counts,
    pub slow: Counts,
    pub errors: BTreeMap<String, u64>,
    pub connects: u64,
    #[serde(default)]
    pub wire_bytes: u64,
    pub completed: u64,
    /// Histograms, V2-serialised and base64-encoded.
    pub latency_main: String,
    pub latency_slow: String,
    pub connect: String,
}

/// Several processes' numbers merged.
#[derive(Debug, Clone)]
pub struct Merged {
    pub main: Counts,
    pub slow: Counts,
    pub errors: BTreeMap<String, u64>,
    pub connects: u64,
    pub wire_bytes: u64,
    pub completed: u64,
    pub latency_main: Histogram<u64>,
    pub latency_slow: Histogram<u64>,
    pub connect: Histogram<u64>,
}

impl Merged {
    pub fn merge(shards: &[ShardResult]) -> Result<Self, HistogramError> {
        let mut out = Merged {
            main: Counts::default(),
            slow: Counts::default(),
            errors: BTreeMap::new(),
            connects: 0,
            wire_bytes: 0,
            completed: 0,
            latency_main: latency::new_histogram(),
            latency_slow: latency::new_histogram(),
            connect: latency::new_histogram(),
        };
        for s in shards {
            out.main.add(&s.main);
            out.slow.add(&s.slow);
            for (k, v) in &s.errors {
                *out.errors.entry(k.clone()).or_default() += v;
            }
            out.connects += s.connects;
            out.wire_bytes += s.wire_bytes;
            out.completed += s.completed;
            latency::merge(&mut out.latency_main, &latency::decode(&s.latency_main)?)?;
            latency::merge(&mut out.latency_slow, &latency::decode(&s.latency_slow)?)?;
            latency::merge(&mut out.connect, &latency::decode(&s.connect)?)?;
        }
        Ok(out)
    }
}
