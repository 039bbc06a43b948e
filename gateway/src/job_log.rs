//! One job's append-only log: a byte-bounded ring of records, each encoded once into the
//! `Bytes` every subscriber shares, plus the job's status and the wake-up readers wait on.
//!
//! Publishing appends under a short lock and announces the last seq to the job's
//! [`Wakeups`]; it never waits on a reader. Readers keep their own cursor and copy out `Arc`s.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::watch;

use crate::history::History;
use crate::job_id::JobId;
use crate::memory::MemoryBudget;
use crate::record::{rfc3339_millis, JobStatus, Record, RecordBody, Stream};
use crate::sse;
use crate::wakeups::Wakeups;

/// Per-record bookkeeping counted against the memory budget besides its bytes.
const ENTRY_OVERHEAD: usize = 160;

/// Frames encoded lazily, on first use by a reader of that kind, then shared.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LazyFrame {
    /// SSE with `?format=text`: a log line as raw `data:` lines.
    SseText = 0,
    /// Capgo's WebSocket JSON frame (`log`, `status` or `custom_msg`).
    CapgoWs = 1,
}

/// One record of the log with its shared encodings.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) record: Record,
    /// The SSE frame with JSON data, encoded once at append.
    pub(crate) sse: Bytes,
    lazy: [OnceLock<Bytes>; 2],
}

impl Entry {
    pub(crate) fn new(record: Record) -> Self {
        let sse = sse::event(
            Some(record.seq),
            record.body.event_name(),
            &record.to_json(),
        );
        Self {
            record,
            sse,
            lazy: Default::default(),
        }
    }

    pub(crate) fn seq(&self) -> u64 {
        self.record.seq
    }

    /// The frame of kind `which`, encoding it with `encode` the first time.
    pub(crate) fn lazy_frame(
        &self,
        which: LazyFrame,
        encode: impl FnOnce(&Record) -> Bytes,
    ) -> Bytes {
        self.lazy[which as usize]
            .get_or_init(|| encode(&self.record))
            .clone()
    }

    fn cost(&self) -> usize {
        ENTRY_OVERHEAD + self.sse.len() + self.record.body.payload_len()
    }
}

/// Limits that apply to every job.
#[derive(Debug, Clone)]
pub(crate) struct JobLimits {
    /// Bytes of records held in memory per job; the oldest are evicted beyond it.
    pub(crate) memory_bytes: usize,
    /// Bytes of log text stored per job; later lines are counted, not stored.
    pub(crate) max_log_bytes: u64,
    pub(crate) max_subscribers: usize,
    /// Readers are woken at most once per this window (scaled down for few readers, see
    /// [`crate::wakeups`]); appends inside it share a write.
    pub(crate) gather: Duration,
}

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

/// The job's log is closed by a terminal status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JobFinished;

/// What a reader finds at its cursor.
#[derive(Debug)]
pub(crate) enum Read {
    /// Records from the cursor on, in order, within the byte budget (at least one).
    Entries(Vec<Arc<Entry>>),
    /// Records `from..=to` are no longer held anywhere.
    Gap { from: u64, to: u64 },
    /// Nothing new yet.
    Idle,
    /// The log is closed and the cursor is past its end.
    End,
}

/// The JSON status of a job.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Snapshot {
    pub(crate) job_id: String,
    pub(crate) status: JobStatus,
    pub(crate) exit_code: Option<i32>,
    pub(crate) lines: u64,
    pub(crate) bytes: u64,
    pub(crate) dropped_lines: u64,
    pub(crate) first_seq: u64,
    pub(crate) last_seq: u64,
    pub(crate) last_n: Option<u64>,
    pub(crate) created_at: String,
    pub(crate) started_at: Option<String>,
    pub(crate) finished_at: Option<String>,
    pub(crate) subscribers: usize,
}

#[derive(Debug)]
struct State {
    ring: VecDeque<Arc<Entry>>,
    ring_bytes: usize,
    /// Seq the next record gets; records so far are `1..next_seq`.
    next_seq: u64,
    status: JobStatus,
    exit_code: Option<i32>,
    lines: u64,
    bytes: u64,
    dropped_lines: u64,
    truncated: bool,
    last_n: Option<u64>,
    started_at: Option<SystemTime>,
    finished_at: Option<SystemTime>,
    finished_instant: Option<Instant>,
    last_activity: Instant,
}

impl State {
    fn first_held(&self) -> u64 {
        self.ring.front().map_or(self.next_seq, |e| e.seq())
    }
}

/// One job's log.
pub(crate) struct JobLog {
    id: JobId,
    state: Mutex<State>,
    /// Tells readers of appends, at most once per gather window.
    wakeups: Arc<Wakeups>,
    limits: JobLimits,
    memory: Arc<MemoryBudget>,
    history: Arc<dyn History>,
    created_at: SystemTime,
    /// Readers attached now; bounded by `limits.max_subscribers`.
    subscribers: AtomicUsize,
    /// Uploads in progress; a job with one is never reaped.
    publishers: AtomicUsize,
    /// Set when the gateway drains: readers end at their next wake-up.
    closed: AtomicBool,
}

impl JobLog {
    pub(crate) fn new(
        id: JobId,
        limits: JobLimits,
        memory: Arc<MemoryBudget>,
        history: Arc<dyn History>,
    ) -> Self {
        let now = Instant::now();
        Self {
            id,
            state: Mutex::new(State {
                ring: VecDeque::new(),
                ring_bytes: 0,
                next_seq: 1,
                status: JobStatus::Queued,
                exit_code: None,
                lines: 0,
                bytes: 0,
                dropped_lines: 0,
                truncated: false,
                last_n: None,
                started_at: None,
                finished_at: None,
                finished_instant: None,
                last_activity: now,
            }),
            wakeups: Wakeups::new(limits.gather),
            limits,
            memory,
            history,
            created_at: SystemTime::now(),
            subscribers: AtomicUsize::new(0),
            publishers: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent state behind (every update is
        // a push or a counter), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `batch` in order, dropping records whose `n` was already seen, and
    /// announces it to readers once. Records before a terminal status are kept even when
    /// later ones fail.
    pub(crate) fn append(
        &self,
        batch: impl IntoIterator<Item = Incoming>,
        tally: &mut Tally,
    ) -> Result<(), JobFinished> {
        let now = SystemTime::now();
        let mut st = self.lock();
        st.last_activity = Instant::now();
        let before = st.next_seq;
        let mut result = Ok(());
        for incoming in batch {
            if st.status.is_terminal() {
                result = Err(JobFinished);
                break;
            }
            if let Some(n) = incoming.n {
                if st.last_n.is_some_and(|last| n <= last) {
                    tally.duplicates += 1;
                    crate::metrics::get().duplicate_dropped();
                    continue;
                }
                st.last_n = Some(n);
            }
            tally.accepted += 1;
            if let RecordBody::Log { line, .. } = &incoming.body {
                let len = line.len() as u64;
                if st.bytes + len > self.limits.max_log_bytes {
                    st.dropped_lines += 1;
                    if !st.truncated {
                        st.truncated = true;
                        let line = format!(
                            "tailgate: log truncated at {} bytes; later lines are counted, not stored",
                            st.bytes
                        );
                        self.push(
                            &mut st,
                            now,
                            RecordBody::Log {
                                stream: Stream::System,
                                line,
                            },
                        );
                    }
                    continue;
                }
                st.lines += 1;
                st.bytes += len;
            }
            self.push(&mut st, now, incoming.body);
        }
        tally.last_n = st.last_n;
        tally.last_seq = st.next_seq - 1;
        let appended = st.next_seq != before;
        let freed = self.evict(&mut st, self.limits.memory_bytes);
        drop(st);
        self.memory.sub(freed);
        if appended {
            let readers = self.subscribers.load(Ordering::Relaxed);
            self.wakeups.announce(tally.last_seq, readers);
        }
        result
    }

    fn push(&self, st: &mut State, now: SystemTime, body: RecordBody) {
        match &body {
            RecordBody::Status { status, exit_code } => {
                st.status = *status;
                st.exit_code = *exit_code;
                if status.is_terminal() {
                    st.finished_at = Some(now);
                    st.finished_instant = Some(Instant::now());
                }
            }
            _ if st.status == JobStatus::Queued => st.status = JobStatus::Running,
            _ => {}
        }
        if st.status != JobStatus::Queued && st.started_at.is_none() {
            st.started_at = Some(now);
        }
        let entry = Entry::new(Record::new(st.next_seq, now, body));
        st.next_seq += 1;
        crate::metrics::get().record_published(entry.sse.len());
        let cost = entry.cost();
        st.ring_bytes += cost;
        self.memory.add(cost);
        st.ring.push_back(Arc::new(entry));
    }

    /// Drops the oldest records until the ring holds at most `limit` bytes; returns the
    /// bytes freed.
    fn evict(&self, st: &mut State, limit: usize) -> usize {
        let mut freed = 0;
        while st.ring_bytes > limit {
            let Some(old) = st.ring.pop_front() else {
                break;
            };
            let cost = old.cost();
            st.ring_bytes -= cost;
            freed += cost;
        }
        freed
    }

    /// Shrinks this job's ring to `limit` bytes, when the process is over its budget.
    pub(crate) fn shed(&self, limit: usize) {
        let freed = {
            let mut st = self.lock();
            self.evict(&mut st, limit)
        };
        self.memory.sub(freed);
    }

    /// Records from `cursor` on, up to about `budget` bytes.
    pub(crate) fn read(&self, cursor: u64, budget: usize) -> Read {
        let st = self.lock();
        if cursor >= st.next_seq {
            return if st.status.is_terminal() {
                Read::End
            } else {
                Read::Idle
            };
        }
        let first = st.first_held();
        if cursor < first {
            drop(st);
            let older = self.history.read(&self.id, cursor, first - 1, budget);
            return match older.first() {
                Some(e) if e.seq() == cursor => Read::Entries(older),
                _ => Read::Gap {
                    from: cursor,
                    to: first - 1,
                },
            };
        }
        let start = (cursor - first) as usize;
        let mut out = Vec::new();
        let mut bytes = 0;
        for entry in st.ring.range(start..) {
            if !out.is_empty() && bytes + entry.sse.len() > budget {
                break;
            }
            bytes += entry.sse.len();
            out.push(Arc::clone(entry));
        }
        Read::Entries(out)
    }

    /// The log records held in memory, oldest first, for the plain-text view.
    pub(crate) fn held_log_lines(&self) -> Vec<Arc<Entry>> {
        let st = self.lock();
        st.ring
            .iter()
            .filter(|e| matches!(e.record.body, RecordBody::Log { .. }))
            .cloned()
            .collect()
    }

    /// Ends every reader of this job at its next wake-up, which this sends: the gateway
    /// is draining. Readers then reconnect to another instance with `Last-Event-ID`.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wakeups.wake_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// A receiver of the last announced seq, for readers waiting to be woken.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.wakeups.subscribe()
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.lock().next_seq - 1
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.lock().status.is_terminal()
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let st = self.lock();
        let last_seq = st.next_seq - 1;
        Snapshot {
            job_id: self.id.to_string(),
            status: st.status,
            exit_code: st.exit_code,
            lines: st.lines,
            bytes: st.bytes,
            dropped_lines: st.dropped_lines,
            first_seq: if last_seq == 0 { 0 } else { st.first_held() },
            last_seq,
            last_n: st.last_n,
            created_at: rfc3339_millis(self.created_at),
            started_at: st.started_at.map(rfc3339_millis),
            finished_at: st.finished_at.map(rfc3339_millis),
            subscribers: self.subscribers.load(Ordering::Relaxed),
        }
    }

    /// Registers a reader, within the per-job limit; the guard unregisters it.
    pub(crate) fn attach_subscriber(self: &Arc<Self>) -> Option<Attached> {
        let prev = self.subscribers.fetch_add(1, Ordering::AcqRel);
        if prev >= self.limits.max_subscribers {
            self.subscribers.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Attached {
            job: Arc::clone(self),
            role: Role::Subscriber,
        })
    }

    /// Registers an upload in progress; the guard unregisters it.
    pub(crate) fn attach_publisher(self: &Arc<Self>) -> Attached {
        self.publishers.fetch_add(1, Ordering::AcqRel);
        Attached {
            job: Arc::clone(self),
            role: Role::Publisher,
        }
    }

    /// Whether the job may be dropped: nobody attached, and finished longer than
    /// `retention` ago or idle longer than `idle`.
    pub(crate) fn is_expired(
        &self,
        now: Instant,
        retention: std::time::Duration,
        idle: std::time::Duration,
    ) -> bool {
        if self.subscribers.load(Ordering::Acquire) > 0
            || self.publishers.load(Ordering::Acquire) > 0
        {
            return false;
        }
        let st = self.lock();
        match st.finished_instant {
            Some(t) => now.saturating_duration_since(t) >= retention,
            None => now.saturating_duration_since(st.last_activity) >= idle,
        }
    }
}

impl Drop for JobLog {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        self.memory.sub(st.ring_bytes);
    }
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Subscriber,
    Publisher,
}

/// Keeps a job counted as watched or published to while held.
pub(crate) struct Attached {
    job: Arc<JobLog>,
    role: Role,
}

impl Attached {
    pub(crate) fn job(&self) -> &Arc<JobLog> {
        &self.job
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let counter = match self.role {
            Role::Subscriber => &self.job.subscribers,
            Role::Publisher => &self.job.publishers,
        };
        counter.fetch_sub(1, Ordering::AcqRel);
        self.job.lock().last_activity = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::NoHistory;

    fn log(memory_bytes: usize, max_log_bytes: u64) -> Arc<JobLog> {
        Arc::new(JobLog::new(
            JobId::parse("j").unwrap(),
            JobLimits {
                memory_bytes,
                max_log_bytes,
                max_subscribers: 2,
                gather: Duration::ZERO,
            },
            Arc::new(MemoryBudget::new(usize::MAX)),
            Arc::new(NoHistory),
        ))
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

    fn seqs(read: Read) -> Vec<u64> {
        match read {
            Read::Entries(v) => v.iter().map(|e| e.seq()).collect(),
            other => panic!("expected entries, got {other:?}"),
        }
    }

    #[test]
    fn appends_dense_seqs_and_drops_duplicate_n() {
        let job = log(1 << 20, u64::MAX);
        let mut tally = Tally::default();
        job.append(
            [
                line(Some(1), "a"),
                line(Some(2), "b"),
                line(Some(2), "b"),
                line(None, "c"),
            ],
            &mut tally,
        )
        .unwrap();
        job.append([line(Some(1), "a"), line(Some(3), "d")], &mut tally)
            .unwrap();
        assert_eq!(
            (
                tally.accepted,
                tally.duplicates,
                tally.last_seq,
                tally.last_n
            ),
            (4, 2, 4, Some(3))
        );
        assert_eq!(seqs(job.read(1, usize::MAX)), vec![1, 2, 3, 4]);
        assert_eq!(
            seqs(job.read(3, 1)),
            vec![3],
            "a budget still yields one record"
        );
        assert!(matches!(job.read(5, 100), Read::Idle));
        assert_eq!(job.snapshot().status, JobStatus::Running);
    }

    #[test]
    fn terminal_status_closes_the_log() {
        let job = log(1 << 20, u64::MAX);
        let mut tally = Tally::default();
        let done = Incoming {
            n: None,
            body: RecordBody::Status {
                status: JobStatus::Failed,
                exit_code: Some(3),
            },
        };
        let res = job.append([line(None, "a"), done, line(None, "late")], &mut tally);
        assert_eq!(res, Err(JobFinished));
        assert_eq!(tally.accepted, 2);
        assert!(matches!(job.read(3, 100), Read::End));
        let snap = job.snapshot();
        assert_eq!(
            (snap.status, snap.exit_code, snap.lines),
            (JobStatus::Failed, Some(3), 1)
        );
    }

    #[test]
    fn eviction_turns_into_a_gap() {
        let job = log(3 * (ENTRY_OVERHEAD + 120), u64::MAX);
        let mut tally = Tally::default();
        job.append(
            (0..10).map(|i| line(None, &format!("line {i}"))),
            &mut tally,
        )
        .unwrap();
        let first = job.snapshot().first_seq;
        assert!(first > 1 && first < 10, "first held {first}");
        match job.read(1, 1000) {
            Read::Gap { from, to } => assert_eq!((from, to), (1, first - 1)),
            other => panic!("expected a gap, got {other:?}"),
        }
        assert_eq!(seqs(job.read(first, usize::MAX)).last(), Some(&10));
    }

    #[test]
    fn size_limit_truncates_with_one_notice() {
        let job = log(1 << 20, 10);
        let mut tally = Tally::default();
        job.append((0..5).map(|_| line(None, "abcd")), &mut tally)
            .unwrap();
        let snap = job.snapshot();
        assert_eq!((snap.lines, snap.bytes, snap.dropped_lines), (2, 8, 3));
        let entries = match job.read(1, usize::MAX) {
            Read::Entries(v) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(entries.len(), 3);
        assert!(
            matches!(&entries[2].record.body, RecordBody::Log { stream: Stream::System, line } if line.contains("truncated at 8 bytes"))
        );
    }

    #[test]
    fn subscriber_limit_and_reaping() {
        let job = log(1 << 20, u64::MAX);
        let a = job.attach_subscriber().unwrap();
        let b = job.attach_subscriber().unwrap();
        assert!(job.attach_subscriber().is_none());
        let zero = std::time::Duration::ZERO;
        assert!(!job.is_expired(Instant::now(), zero, zero));
        drop(a);
        assert!(job.attach_subscriber().is_some());
        drop(b);
        assert!(job.is_expired(
            Instant::now() + std::time::Duration::from_secs(1),
            zero,
            zero
        ));
    }
}
