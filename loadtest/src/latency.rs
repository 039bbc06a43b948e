//! HDR latency histograms: sharded for cheap recording from many readers, serialisable (V2,
//! base64) so child processes can hand theirs to the parent for an exact merge.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest value tracked: 10 minutes in microseconds; larger values are clamped.
const MAX_US: u64 = 600_000_000;
const SHARDS: usize = 8;

/// Why a histogram could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    #[error("histogram is not valid base64")]
    Base64(#[from] base64::DecodeError),
    #[error("histogram is not a valid V2 serialisation: {0:?}")]
    Decode(hdrhistogram::serialization::DeserializeError),
    #[error("histograms could not be merged")]
    Merge,
}

/// Microseconds since the Unix epoch (the publisher embeds this in each line).
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A new, empty histogram with the load test's bounds (1 us to 10 min, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("static histogram bounds are valid")
}

/// A histogram many readers record into; each reader sticks to one shard.
#[derive(Debug)]
pub struct LatencySink {
    /// Shards, so readers on different threads rarely contend for one lock.
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Default for LatencySink {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
        }
    }
}

impl LatencySink {
    /// Records `values` (microseconds) into the shard for `reader`.
    pub fn record_all(&self, reader: usize, values: &[u64]) {
        if values.is_empty() {
            return;
        }
        let mut h = self.shards[reader % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for &v in values {
            h.saturating_record(v.clamp(1, MAX_US));
        }
    }

    /// Merges the shards into one histogram.
    pub fn snapshot(&self) -> Histogram<u64> {
        let mut out = new_histogram();
        for shard in &self.shards {
            let h = shard.lock().unwrap_or_else(|p| p.into_inner());
            // Same bounds on both sides, so adding cannot fail.
            let _ = out.add(&*h);
        }
        out
    }
}

/// Percentiles as printed and written to JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    /// Number of samples behind these numbers.
    pub count: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            count: h.len(),
        }
    }
}

/// Encodes a histogram as base64 of its V2 serialisation.
pub fn encode(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    // Writing into a Vec cannot fail for a valid histogram.
    let _ = V2Serializer::new().serialize(h, &mut buf);
    base64::engine::general_purpose::STANDARD.encode(buf)
}

/// Decodes what [`encode`] produced.
pub fn decode(s: &str) -> Result<Histogram<u64>, HistogramError> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s)?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(HistogramError::Decode)
}

/// Adds `other` into `into`, growing bounds as needed.
pub fn merge(into: &mut Histogram<u64>, other: &Histogram<u64>) -> Result<(), HistogramError> {
    into.add(other).map_err(|_| HistogramError::Merge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_merge_roundtrip() {
        let sink = LatencySink::default();
        sink.record_all(0, &[100, 200, 300]);
        sink.record_all(5, &[1_000_000]);
        let h = sink.snapshot();
        let back = decode(&encode(&h)).unwrap();
        assert_eq!(back.len(), 4);
        let mut total = new_histogram();
        merge(&mut total, &back).unwrap();
        merge(&mut total, &back).unwrap();
        let p = Percentiles::of(&total);
        assert_eq!(p.count, 8);
        assert!(p.max >= 1_000_000 && p.p50 >= 200 && p.p50 < 400, "{p:?}");
    }
}
