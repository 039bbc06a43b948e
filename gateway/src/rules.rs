//! The append rules every store obeys, in one pure place: dedupe by `n`, the size
//! limit's truncation line, nothing after a terminal status, and how a record moves a
//! job's [`Progress`]. The memory store and the spool call [`apply`]; Redis's `job.lua`
//! mirrors it (a differential test against a real `redis-server` keeps them alike).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::entry::{Entry, Kind};
use crate::record::{rfc3339_millis, JobStatus, Record, RecordBody, Stream};

/// A record as the publisher hands it over.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub(crate) n: Option<u64>,
    pub(crate) body: RecordBody,
}

/// What one publish request has done so far, across its batches.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub(crate) struct Tally {
    pub(crate) accepted: u64,
    pub(crate) duplicates: u64,
    pub(crate) last_seq: u64,
    pub(crate) last_n: Option<u64>,
}

impl Tally {
    /// Counts what one append stored. `last_*` name the job's counters even when the
    /// append kept nothing: that is where a publisher resumes.
    pub(crate) fn add(&mut self, appended: &Appended) {
        self.accepted += appended.accepted;
        self.duplicates += appended.duplicates;
        // A job deleted meanwhile answers with no state at all: keep what we knew.
        if !appended.entries.is_empty() || appended.progress.next_seq > 1 {
            self.last_seq = appended.progress.last_seq();
            self.last_n = appended.progress.last_n;
        }
    }
}

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

    /// The status the lifecycle ends this job with now, if any: `lost` when running with
    /// no sign of a publisher since `lost_before_ms`, `expired` when queued since before
    /// `expired_before_ms`.
    pub(crate) fn idle_end(
        &self,
        lost_before_ms: u64,
        expired_before_ms: u64,
    ) -> Option<JobStatus> {
        match self.status {
            JobStatus::Running if self.activity_ms <= lost_before_ms => Some(JobStatus::Lost),
            JobStatus::Queued if self.created_ms <= expired_before_ms => Some(JobStatus::Expired),
            _ => None,
        }
    }
}

/// What one append stored: the store's answer, whichever store it is.
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
    /// Nothing stored, the job as it was.
    pub(crate) fn nothing(progress: Progress) -> Self {
        Self {
            progress,
            ..Self::default()
        }
    }

    /// Adds a later append of the same batch.
    pub(crate) fn absorb(&mut self, later: Appended) {
        self.entries.extend(later.entries);
        self.progress = later.progress;
        self.accepted += later.accepted;
        self.duplicates += later.duplicates;
        self.finished |= later.finished;
    }
}

/// The time of one append, formatted once for all its records.
pub(crate) struct Stamp {
    at: SystemTime,
    rfc3339: String,
}

impl Stamp {
    pub(crate) fn now() -> Self {
        Self::at_ms(crate::store::now_ms())
    }

    pub(crate) fn at_ms(ms: u64) -> Self {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        Self {
            at,
            rfc3339: rfc3339_millis(at),
        }
    }
}

/// Applies `batch` to a job at `from`, in order: records whose `n` was seen are
/// dropped, records past `max_log_bytes` are counted (the first leaves a truncation
/// line), nothing follows a terminal status (`finished`). Returns what to store.
pub(crate) fn apply(
    from: &Progress,
    batch: impl IntoIterator<Item = Incoming>,
    max_log_bytes: u64,
    now: &Stamp,
) -> Appended {
    let mut out = Appended::nothing(*from);
    let draft = &mut out.progress;
    for incoming in batch {
        if draft.status.is_terminal() {
            out.finished = true;
            break;
        }
        if let Some(n) = incoming.n {
            if draft.last_n.is_some_and(|last| n <= last) {
                out.duplicates += 1;
                continue;
            }
            draft.last_n = Some(n);
        }
        out.accepted += 1;
        let len = incoming.body.payload_len() as u64;
        // A terminal status always fits: a job must be able to finish at its size limit.
        // Any other status counts like a line, so repeated `running` cannot fill a disk
        // past the limit. Once truncated, the log stays truncated (no later short line
        // slips in).
        let always =
            matches!(incoming.body, RecordBody::Status { status, .. } if status.is_terminal());
        if !always && (draft.truncated || draft.stored_bytes + len > max_log_bytes) {
            draft.dropped_lines += 1;
            if !draft.truncated {
                let line = format!(
                    "tailgate: log truncated at {} bytes; later records are counted, not stored",
                    draft.stored_bytes
                );
                let body = RecordBody::Log {
                    stream: Stream::System,
                    line,
                };
                push(draft, &mut out.entries, now, body, None, None);
            }
            continue;
        }
        let counted = Some(len.min(u64::from(u32::MAX)) as u32);
        push(
            draft,
            &mut out.entries,
            now,
            incoming.body,
            incoming.n,
            counted,
        );
    }
    out
}

/// Ends an idle job as its lifecycle says (see [`Progress::idle_end`]); nothing when
/// it is not idle.
pub(crate) fn end_if_idle(
    from: &Progress,
    lost_before_ms: u64,
    expired_before_ms: u64,
    now: &Stamp,
) -> Appended {
    match from.idle_end(lost_before_ms, expired_before_ms) {
        Some(status) => {
            let body = RecordBody::Status {
                status,
                exit_code: None,
            };
            apply(from, [Incoming { n: None, body }], u64::MAX, now)
        }
        None => Appended::nothing(*from),
    }
}

/// Gives the next record its seq and time, and takes it into `draft`.
fn push(
    draft: &mut Progress,
    entries: &mut Vec<Arc<Entry>>,
    now: &Stamp,
    body: RecordBody,
    n: Option<u64>,
    counted: Option<u32>,
) {
    let record = Record::new(draft.next_seq, now.at, body);
    let entry = Entry::new_at(&record, n, counted, &now.rfc3339);
    draft.apply(&entry);
    entries.push(Arc::new(entry));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_statuses_count_against_the_size_limit_and_the_end_still_fits() {
        let now = Stamp::now();
        let running = (0..500).map(|_| status(JobStatus::Running));
        let a = apply(&Progress::new(1), running, 1024, &now);
        assert!(a.progress.stored_bytes <= 1024, "{:?}", a.progress);
        assert!(a.entries.len() < 100, "{} records stored", a.entries.len());
        assert!(a.progress.truncated);
        assert_eq!(a.progress.dropped_lines + a.entries.len() as u64 - 1, 500);
        let done = apply(&a.progress, [status(JobStatus::Succeeded)], 1024, &now);
        assert_eq!(
            done.progress.status,
            JobStatus::Succeeded,
            "a job can always end"
        );
    }

    fn line(n: Option<u64>, text: &str) -> Incoming {
        Incoming {
            n,
            body: RecordBody::Log {
                stream: Stream::Stdout,
                line: text.into(),
            },
        }
    }

    fn status(status: JobStatus) -> Incoming {
        Incoming {
            n: None,
            body: RecordBody::Status {
                status,
                exit_code: None,
            },
        }
    }

    #[test]
    fn resent_ns_are_dropped_and_seqs_continue() {
        let now = Stamp::at_ms(1_000);
        let a = apply(
            &Progress::new(0),
            [line(Some(1), "a"), line(Some(2), "b")],
            100,
            &now,
        );
        let b = apply(
            &a.progress,
            [line(Some(2), "b"), line(Some(3), "c")],
            100,
            &now,
        );
        assert_eq!((b.accepted, b.duplicates), (1, 1));
        let seqs: Vec<u64> = b.entries.iter().map(|e| e.seq()).collect();
        assert_eq!(seqs, vec![3]);
        assert_eq!(b.progress.last_n, Some(3));
        assert_eq!(b.progress.status, JobStatus::Running);
    }

    #[test]
    fn the_size_limit_leaves_one_truncation_line_and_a_status_still_fits() {
        let now = Stamp::at_ms(1_000);
        let batch = [line(None, "12345"), line(None, "67890"), line(None, "x")];
        let a = apply(&Progress::new(0), batch, 8, &now);
        assert_eq!(a.entries.len(), 2, "one line, then the notice");
        assert!(a.entries[1]
            .line()
            .is_some_and(|l| l.contains("truncated at 5 bytes")));
        assert_eq!(a.progress.dropped_lines, 2);
        let done = apply(&a.progress, [status(JobStatus::Succeeded)], 8, &now);
        assert_eq!(done.entries.len(), 1);
        assert_eq!(done.progress.status, JobStatus::Succeeded);
    }

    #[test]
    fn nothing_follows_a_terminal_status() {
        let now = Stamp::at_ms(1_000);
        let batch = [
            line(None, "a"),
            status(JobStatus::Failed),
            line(None, "late"),
        ];
        let a = apply(&Progress::new(0), batch, 100, &now);
        assert!(a.finished);
        assert_eq!(a.entries.len(), 2);
        let b = apply(&a.progress, [line(None, "later")], 100, &now);
        assert!(b.finished && b.entries.is_empty());
    }

    #[test]
    fn idle_jobs_end_by_their_lifecycle_and_busy_ones_do_not() {
        let now = Stamp::at_ms(10_000);
        let queued = Progress::new(5_000);
        assert!(end_if_idle(&queued, 0, 4_000, &now).entries.is_empty());
        let expired = end_if_idle(&queued, 0, 6_000, &now);
        assert_eq!(expired.progress.status, JobStatus::Expired);
        let running = apply(&queued, [line(None, "a")], 100, &Stamp::at_ms(7_000)).progress;
        assert!(end_if_idle(&running, 6_999, u64::MAX, &now)
            .entries
            .is_empty());
        assert_eq!(
            end_if_idle(&running, 7_000, 0, &now).progress.status,
            JobStatus::Lost
        );
    }
}
