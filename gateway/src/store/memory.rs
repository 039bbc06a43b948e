//! The memory-only store (`--memory-only`): nothing is kept beyond each job's ring, so a
//! restart forgets every job and a reader behind the ring gets a `gap`. Only the
//! tombstones of jobs dropped after retention are kept, in memory, so they answer 410.

use std::sync::Arc;

use super::tombstones::MemoryTombstones;
use super::{Batch, Fsync, Progress, Recovered, Store, StoreError, Tombstone};
use crate::entry::Entry;
use crate::job_id::JobId;

/// Tombstones held at most in memory-only mode.
const TOMBSTONE_CAPACITY: usize = 100_000;

/// Nothing beyond memory.
pub(crate) struct MemoryStore {
    tombstones: MemoryTombstones,
}

impl MemoryStore {
    pub(crate) fn new(tombstone_ttl_ms: u64) -> Self {
        Self {
            tombstones: MemoryTombstones::new(TOMBSTONE_CAPACITY, tombstone_ttl_ms),
        }
    }
}

impl Store for MemoryStore {
    fn is_durable(&self) -> bool {
        false
    }

    fn create(&self, job: &JobId, _progress: &Progress) -> Result<(), StoreError> {
        self.tombstones.remove(job);
        Ok(())
    }

    fn append(&self, _job: &JobId, _batch: Batch<'_>) -> Result<(), StoreError> {
        Ok(())
    }

    fn note(&self, _: &JobId, _: &Progress, _: Option<(u64, u64)>) -> Result<(), StoreError> {
        Ok(())
    }

    fn read(&self, _: &JobId, _: u64, _: u64, _: usize) -> Result<Vec<Arc<Entry>>, StoreError> {
        Ok(Vec::new())
    }

    fn sync(&self, _job: &JobId) -> Result<(), StoreError> {
        Ok(())
    }

    fn fsync(&self) -> Fsync {
        Fsync::Never
    }

    fn load(&self, _job: &JobId) -> Option<Recovered> {
        None
    }

    fn recover(&self) -> Vec<Recovered> {
        Vec::new()
    }

    fn tombstone(&self, job: &JobId) -> Option<Tombstone> {
        self.tombstones.get(job, super::now_ms())
    }

    fn forget(&self, job: &JobId, tombstone: Tombstone) -> bool {
        self.tombstones.insert(job, tombstone);
        true
    }

    fn sweep(&self, _now_ms: u64) -> Vec<JobId> {
        Vec::new()
    }

    fn flush(&self) {}
}
