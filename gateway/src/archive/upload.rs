//! The archive's writer. Every tick it takes the finished jobs past their quiet period:
//! the spool's, listed from the spool; Redis's, claimed from the shared queue (so one
//! instance takes each job, and another takes it over if that one dies). Each is
//! streamed from the store in batches into frames (never the whole raw log in memory),
//! then written as one object with a conditional put, or, above `part_bytes` compressed,
//! uploaded in parts and published with a conditional copy (never the whole object in
//! memory either). Whoever loses a race (another
//! instance, or a restart redoing an upload) verifies the winner's object instead. Only
//! then is the local copy dropped. A failed upload leaves the job where it was and is
//! retried with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::format::{Encoder, Meta, DEFAULT_FRAME_BYTES};
use super::{metrics, Archive, ArchiveError};
use crate::entry::Entry;
use crate::job_id::JobId;
use crate::store::redis::archived;
use crate::store::{now_ms, Recovered, Store, StoreError};

/// Bytes of records read from the spool per batch while encoding.
const READ_BATCH: usize = 1024 * 1024;
/// Records per `XRANGE` page read from Redis while encoding (about a MiB of reply).
const PAGE_RECORDS: usize = 2048;
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
///
/// Frames are written out as they are compressed. While the object is at most
/// `part_bytes` they are held, then written with one conditional put. A larger object
/// goes up in parts (multipart) to a name of its own under `.uploads/`, holding about two
/// parts at a time, and is then published with a conditional copy (a multipart copy
/// completed with `If-None-Match: *`): the one-writer rule holds either way, and a writer
/// killed mid-upload leaves no object under the job's name.
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
    let mut sink = Sink::Held {
        parts: Vec::new(),
        bytes: 0,
    };
    // The store is read asynchronously; each frame is compressed on the blocking pool.
    let encoded = encode(archive, store, &recovered.id, &meta, &mut sink).await;
    let written = match encoded {
        Ok(raw) => sink.publish(archive, &recovered.id).await.map(|w| (w, raw)),
        Err(e) => {
            sink.abort().await;
            return Err(e);
        }
    };
    match written {
        Ok((Some(bytes), raw)) => {
            archive.wrote(&recovered.id);
            Ok(Uploaded::Wrote { bytes, raw })
        }
        Ok((None, _)) => {
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
        Err(e) => Err(e.into()),
    }
}

/// Parts of a multipart upload in flight at once, besides the one being filled.
const PARTS_IN_FLIGHT: usize = 1;

/// Where an object's compressed bytes go as they are made.
enum Sink {
    /// Held until the end (the object is small so far).
    Held { parts: Vec<Bytes>, bytes: u64 },
    /// Going up in parts to `tmp`.
    Parts {
        writer: WriteMultipart,
        tmp: Path,
        bytes: u64,
    },
}

impl Sink {
    /// Takes `frames`; past `archive.config.part_bytes`, switches to a multipart upload.
    async fn push(
        &mut self,
        archive: &Archive,
        job: &JobId,
        frames: Vec<Bytes>,
    ) -> Result<(), ArchiveError> {
        match self {
            Self::Held { parts, bytes } => {
                for frame in frames {
                    *bytes += frame.len() as u64;
                    parts.push(frame);
                }
                let part_bytes = archive.config.part_bytes.max(1);
                if *bytes > part_bytes as u64 {
                    let tmp = archive.upload_path(job);
                    let upload = archive.store().put_multipart(&tmp).await?;
                    let mut writer = WriteMultipart::new_with_chunk_size(upload, part_bytes);
                    for part in parts.drain(..) {
                        writer.put(part);
                    }
                    let bytes = *bytes;
                    *self = Self::Parts { writer, tmp, bytes };
                    if let Self::Parts { writer, .. } = self {
                        writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                    }
                }
            }
            Self::Parts { writer, bytes, .. } => {
                for frame in frames {
                    *bytes += frame.len() as u64;
                    writer.put(frame);
                    // Waits while parts are in flight: memory stays at about two parts.
                    writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                }
            }
        }
        Ok(())
    }

    /// Writes the object under the job's name unless it exists: its size, or `None`
    /// when another writer got there first.
    async fn publish(self, archive: &Archive, job: &JobId) -> Result<Option<u64>, ArchiveError> {
        let path = archive.path(job);
        match self {
            Self::Held { parts, bytes } => {
                let options = PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                };
                let payload: PutPayload = parts.into_iter().collect();
                match archive.store().put_opts(&path, payload, options).await {
                    Ok(_) => Ok(Some(bytes)),
                    Err(e) if lost_race(&e) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
            Self::Parts { writer, tmp, bytes } => {
                if let Err(e) = writer.finish().await {
                    // The parts of an upload never completed are the bucket's to drop
                    // (its AbortIncompleteMultipartUpload rule); `finish` aborted it.
                    return Err(e.into());
                }
                let options = CopyOptions {
                    mode: CopyMode::Create,
                    ..CopyOptions::default()
                };
                let copied = archive.store().copy_opts(&tmp, &path, options).await;
                if let Err(e) = archive.store().delete(&tmp).await {
                    tracing::debug!(error = %crate::client::error_chain(&e), "cannot delete an upload's parts object; the bucket's lifecycle rule will");
                }
                match copied {
                    Ok(()) => Ok(Some(bytes)),
                    Err(e) if lost_race(&e) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// After a failure: stops a multipart upload (best effort; the bucket's
    /// AbortIncompleteMultipartUpload rule drops what a crash leaves).
    async fn abort(self) {
        if let Self::Parts { writer, .. } = self {
            let _ = writer.abort().await;
        }
    }
}

/// The object was there already: another writer won.
fn lost_race(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
    )
}

/// A batch of a job's records as read from the store.
enum Page {
    /// The spool's entries.
    Entries(Vec<Arc<Entry>>),
    /// One `XRANGE` reply from Redis, decoded where it is encoded (off the runtime),
    /// without an SSE frame built per record.
    Stream(redis::Value),
}

impl Page {
    /// Its first seq and the seq after its last (a job's seqs have no holes; the encoder
    /// checks), or `None` when it is empty.
    fn span(&self) -> Option<(u64, u64)> {
        match self {
            Self::Entries(entries) => Some((entries.first()?.seq(), entries.last()?.seq() + 1)),
            Self::Stream(reply) => {
                archived::stream_span(reply).map(|(first, n)| (first, first + n as u64))
            }
        }
    }

    /// Feeds the records to `encoder`; their raw (JSON) bytes.
    fn encode(&self, encoder: &mut Encoder) -> Result<u64, UploadError> {
        fn entries(entries: &[Arc<Entry>], encoder: &mut Encoder) -> Result<u64, UploadError> {
            let mut raw = 0;
            for entry in entries {
                raw += entry.json().len() as u64;
                encoder.push(entry).map_err(ArchiveError::from)?;
            }
            Ok(raw)
        }
        match self {
            Self::Entries(list) => entries(list, encoder),
            Self::Stream(reply) => match archived::stream_records(reply) {
                Ok(records) => {
                    let mut raw = 0;
                    for record in &records {
                        raw += record.json.len() as u64;
                        encoder.push_ref(record).map_err(ArchiveError::from)?;
                    }
                    Ok(raw)
                }
                // Anything unusual is read the way every other read does.
                Err(_) => {
                    let list = archived::stream_entries(reply).map_err(StoreError::failed)?;
                    entries(&list, encoder)
                }
            },
        }
    }
}

/// Records `from..=to` of `job` (a prefix of them).
async fn read_page(
    store: &Arc<Store>,
    job: &JobId,
    from: u64,
    to: u64,
) -> Result<Page, UploadError> {
    Ok(match &**store {
        Store::Redis(r) => Page::Stream(r.stream_page(job, from, to, PAGE_RECORDS).await?),
        _ => Page::Entries(store.read_local(job, from, to, READ_BATCH).await?),
    })
}

/// Streams the job's records into frames and the frames into `sink`; the raw record
/// bytes. The index and trailer go into `sink` last. While one page is encoded on the
/// blocking pool, the next is read, so the store's round trip and the CPU overlap; at
/// most two pages are held.
async fn encode(
    archive: &Archive,
    store: &Arc<Store>,
    job: &JobId,
    meta: &Meta,
    sink: &mut Sink,
) -> Result<u64, UploadError> {
    let mut encoder =
        Encoder::new(DEFAULT_FRAME_BYTES, archive.config.level).map_err(ArchiveError::from)?;
    let last = meta.progress.last_seq();
    let mut next = 1;
    let mut raw = 0u64;
    let mut page = match last {
        0 => None,
        _ => Some(read_page(store, job, next, last).await?),
    };
    while let Some(current) = page.take() {
        match current.span() {
            Some((first, after)) if first == next => next = after,
            _ => return Err(UploadError::Missing(next)),
        }
        // Compressing is CPU work: the page goes to the blocking pool with the encoder.
        let encoding = tokio::task::spawn_blocking(move || {
            let raw = current.encode(&mut encoder)?;
            let frames = encoder.take_frames();
            Ok::<_, UploadError>((encoder, frames, raw))
        });
        let reading = async {
            match next <= last {
                true => read_page(store, job, next, last).await.map(Some),
                false => Ok(None),
            }
        };
        let (encoded, read) = tokio::join!(encoding, reading);
        let (back, frames, page_raw) =
            encoded.map_err(|e| ArchiveError::Unavailable(e.to_string()))??;
        encoder = back;
        raw += page_raw;
        page = read?;
        sink.push(archive, job, frames).await?;
    }
    if next <= last {
        return Err(UploadError::Missing(next));
    }
    let meta = meta.clone();
    let rest = tokio::task::spawn_blocking(move || encoder.finish(&meta))
        .await
        .map_err(|e| ArchiveError::Unavailable(e.to_string()))?
        .map_err(ArchiveError::from)?;
    sink.push(archive, job, rest).await?;
    Ok(raw)
}

/// A job waiting to be archived again after a failure.
struct Retry {
    at: Instant,
    backoff: Duration,
}

/// Retries remembered at most (a shared store's queue holds the rest).
const MAX_RETRIES: usize = 64 * 1024;

/// Finished jobs that this instance should archive now, at most `max`: the spool's past
/// the quiet period, or those claimed from Redis's queue from their terminal status on
/// (their local copy stays until the quiet period ends: see [`run`]).
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
    let claimed = match r.claim_archive(max, Duration::from_millis(quiet_ms)).await {
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

/// Archives every finished job of `store` until `shutdown`, at most `config.uploads` at
/// once, and drops each one's local copy once it is archived and its quiet period (after
/// the terminal status) is over. The spool's jobs are taken when the quiet period ends;
/// Redis's from the terminal status on, so that their encoding and upload run within the
/// quiet period instead of after it (a slot is free again as soon as its object is
/// written).
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
    // An upload's slot frees when its object is written, before its quiet period ends.
    let slot_freed = Arc::new(tokio::sync::Notify::new());
    let mut running: HashMap<JobId, ()> = HashMap::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Some((recovered, result)) = done_rx.recv() => {
                running.remove(&recovered.id);
                finished(&store, &recovered, result, &mut retries, quiet_ms).await;
                // A shared queue may hold more due jobs: claim the free slot now rather
                // than at the next tick. The spool's list waits for the tick.
                if !shared {
                    continue;
                }
            }
            _ = slot_freed.notified(), if shared => {}
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
            let (task_archive, store, done_tx, slot_freed) = (
                Arc::clone(&archive),
                Arc::clone(&store),
                done_tx.clone(),
                Arc::clone(&slot_freed),
            );
            // On the archive's runtime, with the client's connections.
            archive.spawn(async move {
                let archive = task_archive;
                let result =
                    archive_job(&archive, &store, &recovered, Some(recovered.life.clone())).await;
                drop(permit);
                slot_freed.notify_one();
                let finished_ms = recovered.progress.finished_ms.unwrap_or(0);
                if let Ok(Uploaded::Wrote { bytes, raw }) = &result {
                    let lag = now_ms().saturating_sub(finished_ms);
                    metrics::get().archived(*bytes, *raw, Duration::from_millis(lag));
                    tracing::debug!(job.id = %recovered.id, archive.bytes = bytes, "job archived");
                }
                // The local copy stays for the quiet period after the terminal status
                // (a job claimed from Redis is encoded and uploaded within it).
                let wait = (finished_ms + quiet_ms).saturating_sub(now_ms());
                if result.is_ok() && wait > 0 {
                    tokio::time::sleep(Duration::from_millis(wait)).await;
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
    quiet_ms: u64,
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
                // Scored as a local copy's end is (writers claim up to `quiet` early):
                // claimable again after the backoff.
                let due = now_ms() + backoff.as_millis() as u64 + quiet_ms;
                r.requeue_archive(job, due).await;
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
