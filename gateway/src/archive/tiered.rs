//! The archive as a cold tier: a store decorator over the spool. Everything goes to the
//! spool first; the archive answers only where the spool has nothing:
//! - `load` of a job the spool no longer holds but left a tombstone for (archiving
//!   leaves one): the object's index gives the job's state; no object means the bucket's
//!   lifecycle deleted it, and the tombstone answers `410`;
//! - `read` of records the spool no longer holds: ranged GETs of the frames that hold
//!   them (one per frame, none when cached).
//!
//! The store interface is synchronous today: the archive's requests run on its own
//! runtime and the caller waits at most the archive timeout.

use std::sync::Arc;

use super::{Archive, ArchiveError};
use crate::entry::Entry;
use crate::job_id::JobId;
use crate::record::JobStatus;
use crate::store::{
    now_ms, Batch, Fsync, Progress, Recovered, Shared, Store, StoreError, Tombstone,
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

    fn disk_bytes(&self) -> Option<u64> {
        self.hot.disk_bytes()
    }

    fn create(&self, job: &JobId, progress: &Progress) -> Result<(), StoreError> {
        self.hot.create(job, progress)
    }

    fn append(&self, job: &JobId, batch: Batch<'_>) -> Result<(), StoreError> {
        self.hot.append(job, batch)
    }

    fn note(
        &self,
        job: &JobId,
        progress: &Progress,
        confirm: Option<(u64, u64)>,
    ) -> Result<(), StoreError> {
        match self.hot.note(job, progress, confirm) {
            // An archived job is immutable; a note after it (an upload ending late, a
            // Capgo confirmation) has nothing left to update.
            Err(_) if progress.status.is_terminal() && self.hot.load(job).is_none() => Ok(()),
            other => other,
        }
    }

    fn read(
        &self,
        job: &JobId,
        from: u64,
        to: u64,
        budget: usize,
    ) -> Result<Vec<Arc<Entry>>, StoreError> {
        let hot = self.hot.read(job, from, to, budget)?;
        if !hot.is_empty() || from > to {
            return Ok(hot);
        }
        let (archive, job) = (Arc::clone(&self.archive), job.clone());
        let inner = Arc::clone(&archive);
        archive
            .block(async move { inner.read(&job, from, to, budget).await })
            .map_err(store_error)
    }

    fn sync(&self, job: &JobId) -> Result<(), StoreError> {
        self.hot.sync(job)
    }

    fn fsync(&self) -> Fsync {
        self.hot.fsync()
    }

    fn load(&self, job: &JobId) -> Option<Recovered> {
        if let Some(recovered) = self.hot.load(job) {
            return Some(recovered);
        }
        // Archiving leaves a tombstone: without one the job was never here.
        let tombstone = self.hot.tombstone(job)?;
        let (archive, id) = (Arc::clone(&self.archive), job.clone());
        let inner = Arc::clone(&archive);
        match archive.block(async move { inner.fetch_index(&id).await }) {
            Ok(Some(index)) => Some(Recovered {
                id: job.clone(),
                progress: index.meta.progress,
                confirmations: index.meta.confirmations.clone(),
                broken: None,
            }),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(job.id = %job, error = %e, "cannot read an archived job's index");
                Some(broken(job, &tombstone, e))
            }
        }
    }

    fn recover(&self) -> Vec<Recovered> {
        self.hot.recover()
    }

    fn tombstone(&self, job: &JobId) -> Option<Tombstone> {
        self.hot.tombstone(job)
    }

    fn forget(&self, job: &JobId, tombstone: Tombstone) -> bool {
        self.hot.forget(job, tombstone)
    }

    fn drop_archived(&self, job: &JobId) {
        self.hot.drop_archived(job)
    }

    fn sweep(&self, now_ms: u64) -> Vec<JobId> {
        self.hot.sweep(now_ms)
    }

    fn flush(&self) {
        self.hot.flush()
    }

    fn shared(&self) -> Option<&dyn Shared> {
        self.hot.shared()
    }

    fn unready(&self) -> Option<String> {
        // An unreachable archive leaves live traffic alone: finished jobs stay local.
        self.hot.unready()
    }
}

/// An archived job whose object cannot be read now: its readers get an `error` event
/// saying why, and its status is the tombstone's.
fn broken(job: &JobId, tombstone: &Tombstone, e: ArchiveError) -> Recovered {
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
        broken: Some(e.to_string()),
    }
}
