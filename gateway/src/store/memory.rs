//! The memory-only store (`--memory-only`): nothing is kept beyond each job's ring, so a
//! restart forgets every job and a reader behind the ring gets a `gap`. Only the
//! tombstones of jobs dropped after retention are kept, in memory, so they answer 410.

use super::tombstones::MemoryTombstones;
use super::{Opened, Progress, Recovered, StoreError, Tombstone};
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

impl MemoryStore {
    /// The job a request names: the copy held, else a new one (unless a tombstone says
    /// it was deleted). Nothing else is known here.
    pub(crate) fn open_job(&self, job: &JobId, held: Option<&str>) -> Result<Opened, StoreError> {
        if held.is_some() {
            return Ok(Opened::Held);
        }
        if let Some(tombstone) = self.tombstones.get(job, super::now_ms()) {
            return Ok(Opened::Gone(tombstone));
        }
        // An expired tombstone goes: the job starts a new life.
        self.tombstones.remove(job);
        let progress = Progress::new(super::now_ms());
        Ok(Opened::Job(Recovered::new(job.clone(), progress)))
    }

    /// A finished job leaves memory: its tombstone answers 410 for a while.
    pub(crate) fn forget(&self, job: &JobId, tombstone: Tombstone) {
        self.tombstones.insert(job, tombstone);
    }
}
