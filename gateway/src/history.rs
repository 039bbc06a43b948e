//! Where records evicted from a job's memory ring are read back from.
//!
//! The embedded default keeps no history, so a reader who needs evicted records gets a
//! `gap` event. A durable spool implements [`History`] to close that gap.

use std::sync::Arc;

use crate::job_id::JobId;
use crate::job_log::Entry;

/// Older records of a job, by seq.
pub(crate) trait History: Send + Sync + 'static {
    /// Records `from..=to` (or a prefix of them, up to about `budget` bytes), or an empty
    /// vector when they are gone.
    fn read(&self, job: &JobId, from: u64, to: u64, budget: usize) -> Vec<Arc<Entry>>;
}

/// No history beyond memory: evicted records are gone.
#[derive(Debug, Default)]
pub(crate) struct NoHistory;

impl History for NoHistory {
    fn read(&self, _job: &JobId, _from: u64, _to: u64, _budget: usize) -> Vec<Arc<Entry>> {
        Vec::new()
    }
}
