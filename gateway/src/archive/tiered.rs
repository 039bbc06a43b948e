//! The archive as a cold tier behind the spool. Everything goes to the spool first; the
//! archive answers only where the spool has nothing:
//! - `open` of a job the spool no longer holds but left a tombstone for (archiving
//!   leaves one): the object's index gives the job's state and life; no object means the
//!   bucket's lifecycle deleted it, and the tombstone answers `410`; an unreachable
//!   archive answers `503`, like an unreachable store;
//! - `read` of records the spool no longer holds: ranged GETs of the frames that hold
//!   them (one per frame, none when cached).
//!
//! Both are awaited: the requests run on the archive's own runtime and the caller's task
//! waits for them without holding a worker.

use std::sync::Arc;

use super::{Archive, ArchiveError};
use crate::entry::Entry;
use crate::job_id::JobId;
use crate::record::JobStatus;
use crate::store::{now_ms, Opened, Progress, Recovered, StoreError, Tombstone};

fn store_error(e: ArchiveError) -> StoreError {
    match e {
        ArchiveError::Format(e) => StoreError::failed(e.to_string()),
        ArchiveError::Unavailable(why) => StoreError::unavailable(why, None),
    }
}

/// What the archive says of a job the spool answered `Gone` for: `held` is the life of
/// the memory copy, if any.
pub(crate) async fn open(
    archive: &Arc<Archive>,
    job: &JobId,
    held: Option<&str>,
    tombstone: Tombstone,
) -> Result<Opened, StoreError> {
    let (inner, id) = (Arc::clone(archive), job.clone());
    if held.is_some() {
        // The memory copy is the archived job: it stays while the object is there
        // (its index cached, so a request costs no GET).
        return match archive.run(async move { inner.index(&id).await }).await {
            Ok(Some(_)) | Err(ArchiveError::Format(_)) => Ok(Opened::Held),
            Ok(None) => Ok(Opened::Gone(tombstone)),
            Err(e) => Err(store_error(e)),
        };
    }
    match archive
        .run(async move { inner.fetch_index(&id).await })
        .await
    {
        Ok(Some(index)) => Ok(Opened::Job(Recovered {
            id: job.clone(),
            life: index.meta.life.clone().unwrap_or_default(),
            progress: index.meta.progress,
            confirmations: index.meta.confirmations.clone(),
            broken: None,
        })),
        // Deleted by the bucket's lifecycle (or never archived): the tombstone answers.
        Ok(None) => Ok(Opened::Gone(tombstone)),
        Err(ArchiveError::Format(e)) => {
            tracing::warn!(job.id = %job, error = %e, "an archived job's index is damaged");
            Ok(Opened::Job(broken(job, &tombstone, e.to_string())))
        }
        Err(e) => Err(store_error(e)),
    }
}

/// `hot` (what the spool read of `from..=to`), or the archive's records where the spool
/// has none.
pub(crate) async fn read(
    archive: &Arc<Archive>,
    job: &JobId,
    from: u64,
    to: u64,
    budget: usize,
    hot: Result<Vec<Arc<Entry>>, StoreError>,
) -> Result<Vec<Arc<Entry>>, StoreError> {
    if matches!(&hot, Ok(held) if !held.is_empty()) || from > to {
        return hot;
    }
    // The spool has nothing (or says the job was deleted): the archive may have it.
    let (inner, id) = (Arc::clone(archive), job.clone());
    match archive
        .run(async move { inner.read(&id, from, to, budget).await })
        .await
    {
        Ok(archived) if !archived.is_empty() => Ok(archived),
        Ok(_) => hot,
        Err(e) => Err(store_error(e)),
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
    let mut recovered = Recovered::new(job.clone(), progress);
    recovered.broken = Some(why);
    recovered
}
