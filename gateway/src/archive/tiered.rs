//! The archive as a cold tier: a store decorator over the spool. Everything goes to the
//! spool first; the archive answers only where the spool has nothing:
//! - `open` of a job the spool no longer holds but left a tombstone for (archiving
//!   leaves one): the object's index gives the job's state and life; no object means the
//!   bucket's lifecycle deleted it, and the tombstone answers `410`; an unreachable
//!   archive answers `503`, like an unreachable store;
//! - `read` of records the spool no longer holds: ranged GETs of the frames that hold
//!   them (one per frame, none when cached).
//!
//! The store interface is synchronous today: the archive's requests run on its own
//! runtime and the caller waits at most the archive timeout.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Archive, ArchiveError};
use crate::entry::Entry;
use crate::job_id::JobId;
use crate::record::JobStatus;
use crate::rules::Incoming;
use crate::store::{
    now_ms, Appended, Follower, Fsync, Opened, Progress, Recovered, Store, StoreError, Tombstone,
};

/// The spool (hot) with the archive behind it (cold).
pub(crate) struct Tiered {
    hot: Arc<dyn Store>,
    archive: Arc<Archive>,
}

impl Tiered {
    pub(crate) fn new(hot: Arc<dyn Store>, archive: Arc<Archive>) -> Self {
        Self { hot, archive }
    }
}

fn store_error(e: ArchiveError) -> StoreError {
    match e {
        ArchiveError::Format(e) => StoreError::Io(e.to_string()),
        ArchiveError::Unavailable(why) => StoreError::Unavailable(why),
    }
}

impl Store for Tiered {
    fn is_durable(&self) -> bool {
        self.hot.is_durable()
    }

    fn drops_idle_copies(&self) -> bool {
        self.hot.drops_idle_copies()
    }

    fn disk_bytes(&self) -> Option<u64> {
        self.hot.disk_bytes()
    }

    fn open(&self, job: &JobId, held: Option<&str>) -> Result<Opened, StoreError> {
        // Archiving leaves a tombstone: only a job that has one may be in the archive.
        let tombstone = match self.hot.open(job, held)? {
            Opened::Gone(tombstone) => tombstone,
            other => return Ok(other),
        };
        let (archive, id) = (Arc::clone(&self.archive), job.clone());
        let inner = Arc::clone(&archive);
        if held.is_some() {
            // The memory copy is the archived job: it stays while the object is there
            // (its index cached, so a request costs no GET).
            return match archive.block(async move { inner.index(&id).await }) {
                Ok(Some(_)) | Err(ArchiveError::Format(_)) => Ok(Opened::Held),
                Ok(None) => Ok(Opened::Gone(tombstone)),
                Err(e) => Err(store_error(e)),
            };
        }
        match archive.block(async move { inner.fetch_index(&id).await }) {
            Ok(Some(index)) => Ok(Opened::Job {
                recovered: Recovered {
                    id: job.clone(),
                    progress: index.meta.progress,
                    confirmations: index.meta.confirmations.clone(),
                    broken: None,
                },
                life: index.meta.life.clone().unwrap_or_default(),
            }),
            // Deleted by the bucket's lifecycle (or never archived): the tombstone answers.
            Ok(None) => Ok(Opened::Gone(tombstone)),
            Err(ArchiveError::Format(e)) => {
                tracing::warn!(job.id = %job, error = %e, "an archived job's index is damaged");
                Ok(Opened::Job {
                    recovered: broken(job, &tombstone, e.to_string()),
                    life: String::new(),
                })
            }
            Err(e) => Err(store_error(e)),
        }
    }

    fn append(
        &self,
        job: &JobId,
        cached: &Progress,
        batch: Vec<Incoming>,
        max_log_bytes: u64,
    ) -> Result<Appended, StoreError> {
        self.hot.append(job, cached, batch, max_log_bytes)
    }

    fn end_if_idle(
        &self,
        job: &JobId,
        cached: &Progress,
        lost_before_ms: u64,
        expired_before_ms: u64,
    ) -> Result<Appended, StoreError> {
        self.hot
            .end_if_idle(job, cached, lost_before_ms, expired_before_ms)
    }

    fn note(
        &self,
        job: &JobId,
        activity_ms: u64,
        confirm: Option<(u64, u64)>,
    ) -> Result<(), StoreError> {
        self.hot.note(job, activity_ms, confirm)
    }

    fn read(
        &self,
        job: &JobId,
        from: u64,
        to: u64,
        budget: usize,
    ) -> Result<Vec<Arc<Entry>>, StoreError> {
        let hot = self.hot.read(job, from, to, budget);
        if matches!(&hot, Ok(held) if !held.is_empty()) || from > to {
            return hot;
        }
        // The spool has nothing (or says the job was deleted): the archive may have it.
        let (archive, id) = (Arc::clone(&self.archive), job.clone());
        let inner = Arc::clone(&archive);
        match archive.block(async move { inner.read(&id, from, to, budget).await }) {
            Ok(archived) if !archived.is_empty() => Ok(archived),
            Ok(_) => hot,
            Err(e) => Err(store_error(e)),
        }
    }

    fn sync(&self, job: &JobId) -> Result<(), StoreError> {
        self.hot.sync(job)
    }

    fn fsync(&self) -> Fsync {
        self.hot.fsync()
    }

    fn recover(&self) -> Vec<Recovered> {
        self.hot.recover()
    }

    fn forget(&self, job: &JobId, tombstone: Tombstone) -> bool {
        self.hot.forget(job, tombstone)
    }

    fn finished(&self) -> Vec<Recovered> {
        self.hot.finished()
    }

    fn drop_archived(&self, job: &JobId) {
        self.hot.drop_archived(job)
    }

    fn sweep(&self, now_ms: u64) -> Vec<JobId> {
        self.hot.sweep(now_ms)
    }

    fn sweep_lifecycle(
        &self,
        lost_before_ms: u64,
        expired_before_ms: u64,
        lease: Duration,
    ) -> Vec<(JobId, JobStatus)> {
        self.hot
            .sweep_lifecycle(lost_before_ms, expired_before_ms, lease)
    }

    fn follow(&self, job: &JobId, life: &str, follower: Weak<dyn Follower>) {
        self.hot.follow(job, life, follower)
    }

    fn wake(&self, job: &JobId) {
        self.hot.wake(job)
    }

    fn flush(&self) {
        self.hot.flush()
    }

    fn unready(&self) -> Option<String> {
        // An unreachable archive leaves live traffic alone: finished jobs stay local.
        self.hot.unready()
    }
}

/// An archived job whose index is damaged: its readers get an `error` event saying why,
/// and its status is the tombstone's.
fn broken(job: &JobId, tombstone: &Tombstone, why: String) -> Recovered {
    let finished = tombstone.finished_ms.unwrap_or_else(now_ms);
    let mut progress = Progress::new(finished);
    progress.status = if tombstone.status.is_terminal() {
        tombstone.status
    } else {
        JobStatus::Lost
    };
    progress.exit_code = tombstone.exit_code;
    progress.finished_ms = Some(finished);
    Recovered {
        id: job.clone(),
        progress,
        confirmations: Vec::new(),
        broken: Some(why),
    }
}
