//! The archive's writer. Every tick it takes the finished jobs past their quiet period:
//! the spool's, listed from the spool; Redis's, claimed from the shared queue (so one
//! instance takes each job, and another takes it over if that one dies). Each is
//! streamed from the store in batches into frames (never the whole raw log in memory),
//! then written as one object with a conditional put. Whoever loses a race (another
//! instance, or a restart redoing an upload) verifies the winner's object instead. Only
//! then is the local copy dropped. A failed upload leaves the job where it was and is
//! retried with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::{PutMode, PutOptions, PutPayload};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::format::{Encoder, Meta, DEFAULT_FRAME_BYTES};
use super::{metrics, Archive, ArchiveError};
use crate::job_id::JobId;
use crate::store::{now_ms, Recovered, Store, StoreError};

/// Records read from the store per batch while encoding.
const READ_BATCH: usize = 1024 * 1024;
/// Backoff after a failed upload: doubling from the first, capped at the last.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// What one upload did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Uploaded {
    /// This instance wrote the object: its size, and the raw record bytes in it.
    Wrote { bytes: u64, raw: u64 },
    /// The object was there already and holds the same job.
    Verified,
}

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("reading the job from the store: {0}")]
    Store(#[from] StoreError),
    #[error("the store does not hold record {0} of the job")]
    Missing(u64),
    #[error("the archive already holds a different log for this job")]
    Mismatch,
}

/// Encodes `job` from `store` and writes it, or verifies the object already there.
pub(crate) async fn archive_job(
    archive: &Archive,
    store: &Arc<Store>,
    recovered: &Recovered,
    life: Option<String>,
) -> Result<Uploaded, UploadError> {
    let meta = Meta {
        job_id: recovered.id.as_str().to_string(),
        progress: recovered.progress,
        confirmations: recovered.confirmations.clone(),
        life,
        archived_ms: now_ms(),
    };
    // The store is read asynchronously; each frame is compressed on the blocking pool.
    let (parts, raw) = encode(store, &recovered.id, &meta).await?;
    let bytes: u64 = parts.iter().map(|p| p.len() as u64).sum();
    let path = archive.path(&recovered.id);
    let options = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    let payload: PutPayload = parts.into_iter().collect();
    match archive.store().put_opts(&path, payload, options).await {
        Ok(_) => {
            archive.wrote(&recovered.id);
            Ok(Uploaded::Wrote { bytes, raw })
        }
        Err(object_store::Error::AlreadyExists { .. })
        | Err(object_store::Error::Precondition { .. }) => {
            let theirs = archive.fetch_index(&recovered.id).await?;
            match theirs {
                Some(index)
                    if index.meta.job_id == meta.job_id
                        && index.meta.progress.last_seq() == meta.progress.last_seq()
                        && index.meta.progress.status == meta.progress.status =>
                {
                    Ok(Uploaded::Verified)
                }
                _ => Err(UploadError::Mismatch),
            }
        }
        Err(e) => Err(ArchiveError::from(e).into()),
    }
}

/// The object's parts and the raw record bytes they hold.
async fn encode(
    store: &Arc<Store>,
    job: &JobId,
    meta: &Meta,
) -> Result<(Vec<Bytes>, u64), UploadError> {
    let mut encoder = Encoder::new(DEFAULT_FRAME_BYTES).map_err(ArchiveError::from)?;
    let last = meta.progress.last_seq();
    let mut next = 1;
    let mut raw = 0u64;
    while next <= last {
        let batch = store.read_local(job, next, last, READ_BATCH).await?;
        match batch.first() {
            Some(first) if first.seq() == next => {}
            _ => return Err(UploadError::Missing(next)),
        }
        for entry in &batch {
            raw += entry.json().len() as u64;
            next = entry.seq() + 1;
        }
        // Compressing is CPU work: the batch goes to the blocking pool with the encoder.
        encoder = tokio::task::spawn_blocking(move || {
            for entry in &batch {
                encoder.push(entry)?;
            }
            Ok::<_, super::format::FormatError>(encoder)
        })
        .await
        .map_err(|e| ArchiveError::Unavailable(e.to_string()))?
        .map_err(ArchiveError::from)?;
    }
    let meta = meta.clone();
    let parts = tokio::task::spawn_blocking(move || encoder.finish(&meta))
        .await
        .map_err(|e| ArchiveError::Unavailable(e.to_string()))?
        .map_err(ArchiveError::from)?;
    Ok((parts, raw))
}

/// A job waiting to be archived again after a failure.
struct Retry {
    at: Instant,
    backoff: Duration,
}

/// Retries remembered at most (a shared store's queue holds the rest).
const MAX_RETRIES: usize = 64 * 1024;

/// Finished jobs past the quiet period that this instance should archive now, at most
/// `max`: the spool's, or those claimed from Redis's queue.
async fn due(store: &Arc<Store>, quiet_ms: u64, max: usize) -> Vec<Recovered> {
    let Store::Redis(r) = &**store else {
        let now = now_ms();
        return store
            .finished()
            .await
            .into_iter()
            .filter(|r| {
                r.progress.status.is_terminal()
                    && r.broken.is_none()
                    && r.progress.finished_ms.unwrap_or(0) + quiet_ms <= now
            })
            .collect();
    };
    if let Ok(queued) = r.queued_archive().await {
        metrics::get().set_pending(queued);
    }
    if max == 0 {
        return Vec::new();
    }
    let claimed = match r.claim_archive(max).await {
        Ok(claimed) => claimed,
        Err(e) => {
            tracing::debug!(error = %e.report(), "cannot claim finished jobs to archive");
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(claimed.len());
    for job in claimed {
        match r.archive_state(&job).await {
            Ok(Some((recovered, false))) if recovered.progress.status.is_terminal() => {
                out.push(recovered);
            }
            // Archived already, gone with retention, or (a new life) not finished.
            Ok(_) => r.unqueue_archive(&job).await,
            // Claimed: due again when the claim runs out.
            Err(e) => {
                tracing::debug!(job.id = %job, error = %e.report(), "cannot read a job to archive")
            }
        }
    }
    out
}

/// Archives every finished job of `store` past the quiet period until `shutdown`,
/// at most `config.uploads` at once.
pub(crate) async fn run(archive: Arc<Archive>, store: Arc<Store>, shutdown: CancellationToken) {
    let quiet_ms = archive.config.quiet.as_millis() as u64;
    let every =
        (archive.config.quiet / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let uploads = archive.config.uploads.max(1);
    let slots = Arc::new(Semaphore::new(uploads));
    let shared = matches!(&*store, Store::Redis(_));
    let mut retries: HashMap<JobId, Retry> = HashMap::new();
    let (done_tx, mut done_rx) =
        tokio::sync::mpsc::unbounded_channel::<(Recovered, Result<Uploaded, UploadError>)>();
    let mut running: HashMap<JobId, ()> = HashMap::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Some((recovered, result)) = done_rx.recv() => {
                running.remove(&recovered.id);
                finished(&store, &recovered, result, &mut retries).await;
                // A shared queue may hold more due jobs: claim the free slot now rather
                // than at the next tick. The spool's list waits for the tick.
                if !shared {
                    continue;
                }
            }
            _ = tick.tick() => {}
        }
        let free = slots.available_permits();
        let due = due(&store, quiet_ms, if shared { free } else { usize::MAX }).await;
        if !shared {
            metrics::get().set_pending(due.len());
            retries.retain(|id, _| due.iter().any(|r| &r.id == id));
        } else if retries.len() > MAX_RETRIES {
            retries.clear();
        }
        for recovered in due {
            if running.contains_key(&recovered.id)
                || (!shared
                    && retries
                        .get(&recovered.id)
                        .is_some_and(|r| r.at > Instant::now()))
            {
                continue;
            }
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                break;
            };
            running.insert(recovered.id.clone(), ());
            let (task_archive, store, done_tx) =
                (Arc::clone(&archive), Arc::clone(&store), done_tx.clone());
            // On the archive's runtime, with the client's connections.
            archive.spawn(async move {
                let archive = task_archive;
                let _permit = permit;
                let result =
                    archive_job(&archive, &store, &recovered, Some(recovered.life.clone())).await;
                if let Ok(Uploaded::Wrote { bytes, raw }) = &result {
                    let lag = now_ms().saturating_sub(recovered.progress.finished_ms.unwrap_or(0));
                    metrics::get().archived(*bytes, *raw, Duration::from_millis(lag));
                    tracing::debug!(job.id = %recovered.id, archive.bytes = bytes, "job archived");
                }
                let _ = done_tx.send((recovered, result));
            });
        }
    }
}

/// After an upload: drop the local copy, or schedule a retry (Redis: due again then).
async fn finished(
    store: &Arc<Store>,
    recovered: &Recovered,
    result: Result<Uploaded, UploadError>,
    retries: &mut HashMap<JobId, Retry>,
) {
    let job = &recovered.id;
    match result {
        Ok(uploaded) => {
            if uploaded == Uploaded::Verified {
                metrics::get().raced();
                tracing::debug!(job.id = %job, "job already archived; verified");
            }
            retries.remove(job);
            store.drop_archived(job, &recovered.life).await;
        }
        Err(e) => {
            metrics::get().failed();
            let backoff = retries
                .get(job)
                .map_or(BACKOFF_FIRST, |r| (r.backoff * 2).min(BACKOFF_MAX));
            tracing::warn!(
                job.id = %job,
                error = %e,
                archive.retry_in_secs = backoff.as_secs(),
                "cannot archive a finished job; it stays local"
            );
            if let Store::Redis(r) = &**store {
                r.requeue_archive(job, now_ms() + backoff.as_millis() as u64)
                    .await;
            }
            retries.insert(
                job.clone(),
                Retry {
                    at: Instant::now() + backoff,
                    backoff,
                },
            );
        }
    }
}

#[cfg(test)]
#[path = "upload_tests.rs"]
mod tests;
