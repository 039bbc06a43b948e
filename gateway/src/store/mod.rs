//! The store: where a job's records live beyond the in-memory ring, and what a restart
//! recovers. `JobLog` appends through it before readers wake, and reads back from it
//! what its ring no longer holds.
//!
//! - [`memory`]: nothing beyond the ring (`--memory-only`): evicted records are a `gap`.
//! - [`spool`]: one append-only, checksummed file per job under `--data-dir` (default).
//! - [`redis`]: shared by several instances (`--redis-url`); it assigns seqs.
//!
//! The append rules themselves live in [`crate::rules`]; each store applies them (or,
//! Redis, mirrors them in its script) and returns what it stored.

pub(crate) mod memory;
pub(crate) mod redis;
pub(crate) mod spool;
pub(crate) mod tombstones;

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::entry::Entry;
use crate::job_id::JobId;
use crate::record::JobStatus;
use crate::rules::Incoming;

pub(crate) use crate::rules::{Appended, Progress};
pub(crate) use tombstones::Tombstone;

/// A job found in the store at start-up or on first use.
#[derive(Debug, Clone)]
pub(crate) struct Recovered {
    pub(crate) id: JobId,
    pub(crate) progress: Progress,
    /// Capgo clients' last confirmed ids, by the stable hash of their token.
    pub(crate) confirmations: Vec<(u64, u64)>,
    /// Why the job's records cannot be read, when they cannot.
    pub(crate) broken: Option<String>,
}

impl Recovered {
    /// A job with nothing stored yet beyond `progress`.
    pub(crate) fn new(id: JobId, progress: Progress) -> Self {
        Self {
            id,
            progress,
            confirmations: Vec::new(),
            broken: None,
        }
    }
}

/// Why the store refused or failed an operation.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum StoreError {
    /// The disk budget (`--max-disk-bytes`) or the disk itself is full.
    #[error("{0}")]
    Full(String),
    /// Reading or writing failed; the records before it are kept.
    #[error("{0}")]
    Io(String),
    /// The store cannot be reached now (Redis is down); retrying soon may work.
    #[error("{0}")]
    Unavailable(String),
}

impl StoreError {
    pub(crate) fn io(what: impl std::fmt::Display, e: &std::io::Error) -> Self {
        if e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull {
            Self::Full(format!("{what}: the disk is full"))
        } else {
            Self::Io(format!("{what}: {e}"))
        }
    }
}

/// When appended records are forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Every so often, by a background thread; and at each terminal status.
    Interval(Duration),
    /// Before each append is acknowledged to its publisher.
    Always,
    /// Only at the terminal status; the OS writes back when it likes.
    Never,
}

/// What the store says about a job a request names.
#[derive(Debug)]
pub(crate) enum Opened {
    /// The copy held in memory is current: the store has nothing newer.
    Held,
    /// The job as the store holds it (created now when it was new), in life `life`: a
    /// job the store lost or deleted and created again has a new one.
    Job { recovered: Recovered, life: String },
    /// Deleted by retention.
    Gone(Tombstone),
}

/// Where records live beyond the ring, and the truth about each job that `JobLog`
/// caches. Every store applies the append rules ([`crate::rules`]) itself and returns
/// what it stored, so `JobLog` has one code path whichever store it runs on.
///
/// Methods are blocking but short (a write to the OS, a read of a byte budget, one Redis
/// round trip), except [`Store::sync`], which callers run off the runtime's threads.
pub(crate) trait Store: Send + Sync + 'static {
    /// Whether evicted records can be read back (and jobs survive a restart).
    fn is_durable(&self) -> bool;

    /// Whether a job's memory copy may go while it is unfinished and idle: the store
    /// then either forgets it (memory) or ends it by itself when nobody holds it.
    fn drops_idle_copies(&self) -> bool {
        !self.is_durable()
    }

    /// Bytes the store holds on disk, for the metrics (none in memory).
    fn disk_bytes(&self) -> Option<u64> {
        None
    }

    /// The job a request names. `held` is the life of the copy in memory, if any; the
    /// store creates the job when it is new (unless a tombstone says it was deleted).
    fn open(&self, job: &JobId, held: Option<&str>) -> Result<Opened, StoreError>;

    /// Appends `batch` by the rules, to the job at `cached` (the caller's copy; a store
    /// that keeps its own state uses that), and returns what it stored. On error nothing
    /// of the batch is kept, and the records before it stay.
    fn append(
        &self,
        job: &JobId,
        cached: &Progress,
        batch: Vec<Incoming>,
        max_log_bytes: u64,
    ) -> Result<Appended, StoreError>;

    /// Ends the job as its lifecycle says ([`Progress::idle_end`]), once, whichever
    /// instance asks first; stores nothing when it is not idle there.
    fn end_if_idle(
        &self,
        job: &JobId,
        cached: &Progress,
        lost_before_ms: u64,
        expired_before_ms: u64,
    ) -> Result<Appended, StoreError>;

    /// Notes a sign of the publisher at `activity_ms` (an upload ended, or is still
    /// there; it only moves forward) and a Capgo confirmation, without records. Best effort: a lost note only moves the lifecycle
    /// or a Capgo resume back a little.
    fn note(
        &self,
        job: &JobId,
        activity_ms: u64,
        confirm: Option<(u64, u64)>,
    ) -> Result<(), StoreError>;

    /// Records `from..=to`, or a prefix of them within about `budget` bytes (at least
    /// one); empty when they are not held.
    fn read(
        &self,
        job: &JobId,
        from: u64,
        to: u64,
        budget: usize,
    ) -> Result<Vec<Arc<Entry>>, StoreError>;

    /// Forces the job's appended records to stable storage. Blocking.
    fn sync(&self, job: &JobId) -> Result<(), StoreError>;

    /// The fsync policy appends follow.
    fn fsync(&self) -> Fsync;

    /// Every unfinished job held, at start-up (others load on first use).
    fn recover(&self) -> Vec<Recovered>;

    /// Drops a finished job from memory's point of view: the store may keep it
    /// (`false`), or deletes it and leaves a tombstone (`true`).
    fn forget(&self, job: &JobId, tombstone: Tombstone) -> bool;

    /// Finished jobs whose records are still held here, for the archive's writer.
    fn finished(&self) -> Vec<Recovered> {
        Vec::new()
    }

    /// The job's log is safe in the archive: drop the local copy and leave a tombstone,
    /// which sends later requests for the job to the archive.
    fn drop_archived(&self, _job: &JobId) {}

    /// Deletes what retention and the disk budget say must go (never a running job);
    /// returns the jobs deleted, so memory drops them too.
    fn sweep(&self, now_ms: u64) -> Vec<JobId>;

    /// Applies the lifecycle to jobs no instance may hold (a shared store, when this
    /// instance holds the sweep's lease for `lease`); returns the jobs it ended.
    fn sweep_lifecycle(
        &self,
        _lost_before_ms: u64,
        _expired_before_ms: u64,
        _lease: Duration,
    ) -> Vec<(JobId, JobStatus)> {
        Vec::new()
    }

    /// Delivers the job's records that other instances store to `follower` while it
    /// has readers, in life `life` (a shared store; others have nothing to deliver).
    fn follow(&self, _job: &JobId, _life: &str, _follower: Weak<dyn Follower>) {}

    /// A reader started waiting on the job: make sure its records are being followed.
    fn wake(&self, _job: &JobId) {}

    /// Forces everything appended to stable storage, at shutdown. Blocking.
    fn flush(&self);

    /// Why the store cannot serve now, for `/readyz`.
    fn unready(&self) -> Option<String> {
        None
    }
}

/// A fresh life id: random, so a job lost and created again never gets an old one.
pub(crate) fn new_life() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A job's local copy, which a shared store keeps up to date (`JobLog`).
pub(crate) trait Follower: Send + Sync {
    /// Someone here waits for the job's records.
    fn is_followed(&self) -> bool;
    /// The seq the local copy expects next.
    fn next_seq(&self) -> u64;
    /// Takes records the store holds (in seq order) and wakes readers.
    fn absorb(&self, entries: Vec<Arc<Entry>>);
    /// The store lost the job: readers end, and reconnect to its new life.
    fn end(&self);
}

/// Milliseconds since the Unix epoch now.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
