//! The memory-only store (`--memory-only`): nothing is kept beyond each job's ring, so a
//! restart forgets every job and a reader behind the ring gets a `gap`. Only the
//! tombstones of jobs dropped after retention are kept, in memory, so they answer 410.

use std::sync::Arc;

use super::tombstones::MemoryTombstones;
use super::{Appended, Fsync, Opened, Progress, Recovered, Store, StoreError, Tombstone};
use crate::entry::Entry;
use crate::job_id::JobId;
use crate::rules::{self, Incoming, Stamp};

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

    fn open(&self, job: &JobId, held: Option<&str>) -> Result<Opened, StoreError> {
        if held.is_some() {
            return Ok(Opened::Held);
        }
        if let Some(tombstone) = self.tombstones.get(job, super::now_ms()) {
            return Ok(Opened::Gone(tombstone));
        }
        // An expired tombstone goes: the job starts a new life.
        self.tombstones.remove(job);
        Ok(Opened::Job {
            recovered: Recovered::new(job.clone(), Progress::new(super::now_ms())),
            life: super::new_life(),
        })
    }

    fn append(
        &self,
        _job: &JobId,
        cached: &Progress,
        batch: Vec<Incoming>,
        max_log_bytes: u64,
    ) -> Result<Appended, StoreError> {
        Ok(rules::apply(cached, batch, max_log_bytes, &Stamp::now()))
    }

    fn end_if_idle(
        &self,
        _job: &JobId,
        cached: &Progress,
        lost_before_ms: u64,
        expired_before_ms: u64,
    ) -> Result<Appended, StoreError> {
        let now = Stamp::now();
        Ok(rules::end_if_idle(
            cached,
            lost_before_ms,
            expired_before_ms,
            &now,
        ))
    }

    fn note(&self, _: &JobId, _: u64, _: Option<(u64, u64)>) -> Result<(), StoreError> {
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

    fn recover(&self) -> Vec<Recovered> {
        Vec::new()
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
