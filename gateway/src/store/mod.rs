//! The store: where a job's records live beyond the in-memory ring, and what a restart
//! recovers. `JobLog` appends through it before readers wake, and reads back from it
//! what its ring no longer holds.
//!
//! - [`memory`]: nothing beyond the ring (`--memory-only`): evicted records are a `gap`.
//! - [`spool`]: one append-only, checksummed file per job under `--data-dir` (default).

pub(crate) mod memory;
pub(crate) mod spool;
pub(crate) mod tombstones;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::entry::Entry;
use crate::job_id::JobId;
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

    /// Deletes what retention and the disk budget say must go (never a running job);
    /// returns the jobs deleted, so memory drops them too.
    fn sweep(&self, now_ms: u64) -> Vec<JobId>;

    /// Forces everything appended to stable storage, at shutdown. Blocking.
    fn flush(&self);
}

/// Milliseconds since the Unix epoch now.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
