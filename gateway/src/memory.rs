//! The process-wide budget for log bytes held in memory, across all jobs.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Bytes of records held in every job's ring, against a limit.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    used: AtomicUsize,
    limit: usize,
    /// Woken when records are freed, so a publisher held back by the budget retries.
    pub(crate) freed: Notify,
}

impl MemoryBudget {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            limit,
            freed: Notify::new(),
        }
    }

    pub(crate) fn add(&self, n: usize) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(&self, n: usize) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::Relaxed);
            self.freed.notify_waiters();
        }
    }

    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Bytes above the limit (0 when under it).
    pub(crate) fn excess(&self) -> usize {
        self.used().saturating_sub(self.limit)
    }

    pub(crate) fn is_over(&self) -> bool {
        self.used() > self.limit
    }
}
