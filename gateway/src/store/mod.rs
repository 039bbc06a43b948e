//! The store: where a job's records live beyond the in-memory ring, and what a restart
//! recovers. `JobLog` appends through it before readers wake, and reads back from it
//! what its ring no longer holds.
//!
//! - [`memory`]: nothing beyond the ring (`--memory-only`): evicted records are a `gap`.
//! - [`spool`]: one append-only, checksummed file per job under `--data-dir` (default).
//! - [`redis`]: shared by several instances (`--redis-url`); it assigns seqs ([`Shared`]).

pub(crate) mod memory;
pub(crate) mod redis;
pub(crate) mod spool;
pub(crate) mod tombstones;

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::entry::Entry;
use crate::job_id::JobId;
use crate::job_log::Incoming;
use crate::record::JobStatus;

pub(crate) use tombstones::Tombstone;

/// What a job has become, as the store keeps it: enough to rebuild its `JobLog` and
/// answer its status without reading its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Progress {
    /// Seq the next record gets; records so far are `1..next_seq`.
    pub(crate) next_seq: u64,
    pub(crate) status: JobStatus,
    pub(crate) exit_code: Option<i32>,
    /// Log lines stored, and their bytes.
    pub(crate) lines: u64,
    pub(crate) bytes: u64,
    /// Bytes of every stored record counted against `--max-log-bytes`.
    pub(crate) stored_bytes: u64,
    /// Records refused after the size limit.
    pub(crate) dropped_lines: u64,
    pub(crate) truncated: bool,
    pub(crate) last_n: Option<u64>,
    /// Wall-clock milliseconds since the Unix epoch.
    pub(crate) created_ms: u64,
    pub(crate) started_ms: Option<u64>,
    pub(crate) finished_ms: Option<u64>,
    /// The last sign of a publisher: an append, or an upload ending. The lifecycle rules
    /// (`lost`, `expired`) count from it, so they survive a restart.
    pub(crate) activity_ms: u64,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new(0)
    }
}

impl Progress {
    pub(crate) fn new(created_ms: u64) -> Self {
        Self {
            next_seq: 1,
            status: JobStatus::Queued,
            exit_code: None,
            lines: 0,
            bytes: 0,
            stored_bytes: 0,
            dropped_lines: 0,
            truncated: false,
            last_n: None,
            created_ms,
            started_ms: None,
            finished_ms: None,
            activity_ms: created_ms,
        }
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Takes `entry` into the counters, as appending it did.
    pub(crate) fn apply(&mut self, entry: &Entry) {
        use crate::entry::Kind;
        self.next_seq = entry.seq() + 1;
        self.activity_ms = self.activity_ms.max(entry.ts_ms());
        if let Some(n) = entry.n() {
            self.last_n = Some(self.last_n.map_or(n, |last| last.max(n)));
        }
        let counted = entry.counted().map(u64::from);
        self.stored_bytes += counted.unwrap_or(0);
        match (entry.kind(), counted) {
            (Kind::Status(status, exit_code), _) => {
                self.status = status;
                self.exit_code = exit_code;
                if status.is_terminal() {
                    self.finished_ms = Some(entry.ts_ms());
                }
            }
            (Kind::Log(_), None) => self.truncated = true,
            (Kind::Log(_), Some(len)) => {
                self.lines += 1;
                self.bytes += len;
            }
            (Kind::Custom, _) => {}
        }
        if self.status == JobStatus::Queued {
            self.status = JobStatus::Running;
        }
        if self.started_ms.is_none() {
            self.started_ms = Some(entry.ts_ms());
        }
    }
}

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

/// One batch of appends: records in seq order, and the job's state after them.
#[derive(Debug)]
pub(crate) struct Batch<'a> {
    pub(crate) records: &'a [Arc<Entry>],
    pub(crate) progress: &'a Progress,
}

/// Where records live beyond the ring. Methods are blocking but short (a write to the
/// OS, a read of a byte budget), except [`Store::sync`], which callers run off the
/// runtime's worker threads.
pub(crate) trait Store: Send + Sync + 'static {
    /// Whether evicted records can be read back (and jobs survive a restart).
    fn is_durable(&self) -> bool;

    /// Bytes the store holds on disk, for the metrics (none in memory).
    fn disk_bytes(&self) -> Option<u64> {
        None
    }

    /// Makes a new job known, so it survives a restart even before its first record.
    fn create(&self, job: &JobId, progress: &Progress) -> Result<(), StoreError>;

    /// Appends records (seq order, continuing the job's last) and the state after them.
    /// On error nothing of the batch is kept, and the records before it stay.
    fn append(&self, job: &JobId, batch: Batch<'_>) -> Result<(), StoreError>;

    /// Notes the job's state without records: an upload ended, a Capgo confirmation.
    fn note(
        &self,
        job: &JobId,
        progress: &Progress,
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

    /// A job the store holds but memory does not (its memory copy was dropped).
    fn load(&self, job: &JobId) -> Option<Recovered>;

    /// Every job held, at start-up.
    fn recover(&self) -> Vec<Recovered>;

    /// The tombstone of a job deleted by retention.
    fn tombstone(&self, job: &JobId) -> Option<Tombstone>;

    /// Drops a finished job from memory's point of view: the store may keep it
    /// (`false`), or deletes it and leaves a tombstone (`true`).
    fn forget(&self, job: &JobId, tombstone: Tombstone) -> bool;

    /// The job's log is safe in the archive: drop the local copy and leave a tombstone,
    /// which sends later requests for the job to the archive.
    fn drop_archived(&self, _job: &JobId) {}

    /// Deletes what retention and the disk budget say must go (never a running job);
    /// returns the jobs deleted, so memory drops them too.
    fn sweep(&self, now_ms: u64) -> Vec<JobId>;

    /// Forces everything appended to stable storage, at shutdown. Blocking.
    fn flush(&self);

    /// The store other instances share, when it is one: it assigns seqs, and holds the
    /// truth about each job that `JobLog` caches.
    fn shared(&self) -> Option<&dyn Shared> {
        None
    }

    /// Why the store cannot serve now, for `/readyz`.
    fn unready(&self) -> Option<String> {
        None
    }
}

/// What one atomic append in a shared store did.
#[derive(Debug, Default)]
pub(crate) struct Appended {
    /// The records stored, with the seqs the store gave them.
    pub(crate) entries: Vec<Arc<Entry>>,
    /// The job's state right after them.
    pub(crate) progress: Progress,
    pub(crate) accepted: u64,
    pub(crate) duplicates: u64,
    /// The job had finished: records after its terminal status were refused.
    pub(crate) finished: bool,
}

impl Appended {
    /// Adds a later append of the same batch.
    pub(crate) fn absorb(&mut self, later: Appended) {
        self.entries.extend(later.entries);
        self.progress = later.progress;
        self.accepted += later.accepted;
        self.duplicates += later.duplicates;
        self.finished |= later.finished;
    }
}

/// A job as a shared store holds it.
#[derive(Debug)]
pub(crate) enum Loaded {
    /// The job (created now when it was new), in life `epoch`: a job the store lost
    /// and created again has a new one.
    Job { recovered: Recovered, epoch: String },
    /// Deleted by retention.
    Gone(Tombstone),
}

/// A store several instances share: each change of a job is one atomic step in it, so
/// the store, not the instance, assigns seqs. Blocking, one round trip each.
pub(crate) trait Shared: Send + Sync {
    /// Appends `batch` as `JobLog::append` would (dedupe by `n`, the size limit's
    /// truncation line, nothing after a terminal status) in one atomic step.
    fn append(
        &self,
        job: &JobId,
        batch: Vec<Incoming>,
        max_log_bytes: u64,
    ) -> Result<Appended, StoreError>;

    /// The job's state now, created when new.
    fn load(&self, job: &JobId) -> Result<Loaded, StoreError>;

    /// Ends the job as its lifecycle says, whichever instance asks first: `lost` when
    /// running with no sign of a publisher since `lost_before_ms`, `expired` when queued
    /// since before `expired_before_ms`. Nothing is stored when neither holds.
    fn end_if_idle(
        &self,
        job: &JobId,
        lost_before_ms: u64,
        expired_before_ms: u64,
    ) -> Result<Appended, StoreError>;

    /// Delivers the job's new records to `follower` while it has readers, in life `epoch`.
    fn follow(&self, job: &JobId, epoch: &str, follower: Weak<dyn Follower>);

    /// Applies the lifecycle to jobs no instance may hold, when this instance holds the
    /// sweep's lease (taken or renewed for `lease`); returns the jobs it ended.
    fn sweep_lifecycle(
        &self,
        lost_before_ms: u64,
        expired_before_ms: u64,
        lease: Duration,
    ) -> Vec<(JobId, JobStatus)>;

    /// Whether this instance follows the job in life `epoch`.
    fn is_life(&self, job: &JobId, epoch: &str) -> bool;

    /// A reader started waiting on the job: make sure its records are being followed.
    fn wake(&self, job: &JobId);
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
