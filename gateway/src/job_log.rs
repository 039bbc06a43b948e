//! One job's append-only log: the per-process fan-out point. Its ring of recent records
//! is a cache over the [`Store`]: appends go to the store first (written to the OS),
//! then into the ring, then readers wake; a reader behind the ring reads the store.
//!
//! Publishing appends under a short lock and announces the last seq to the job's
//! [`Wakeups`]; it never waits on a reader. Readers keep their own cursor and copy out
//! `Arc`s; caught-up readers never touch the disk.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::watch;

use crate::entry::{Entry, Frame, Kind};
use crate::job_id::JobId;
use crate::memory::MemoryBudget;
use crate::record::{rfc3339_millis, JobStatus};
pub(crate) use crate::rules::{Incoming, Tally};
use crate::store::{now_ms, Fsync, Progress, Recovered, Store, StoreError, Tombstone};
use crate::wakeups::Wakeups;

/// Limits that apply to every job.
#[derive(Debug, Clone)]
pub(crate) struct JobLimits {
    /// Bytes of records held in memory per job; the oldest are evicted beyond it.
    pub(crate) memory_bytes: usize,
    /// Bytes of records stored per job; later ones are counted, not stored.
    pub(crate) max_log_bytes: u64,
    pub(crate) max_subscribers: usize,
    /// Readers are woken at most once per this window (scaled down for few readers, see
    /// [`crate::wakeups`]); appends inside it share a write.
    pub(crate) gather: Duration,
}

/// Why an append kept nothing (or nothing past some point).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum AppendError {
    /// The job's log is closed by a terminal status.
    #[error("the job has finished")]
    Finished,
    /// The store refused the batch; nothing of it was kept.
    #[error(transparent)]
    Store(#[from] StoreError),
}

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
    /// The records cannot be read (a damaged spool, a failing disk).
    Failed(String),
    /// The store cannot be reached now (Redis is down); a later read may succeed.
    Unavailable(String),
    /// Records `from..=to` are no longer in the ring: [`JobLog::read_back`] them.
    Behind { from: u64, to: u64 },
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
    /// An upload is held back because the process is over its memory budget and nothing
    /// anywhere can be shed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) waiting_for_memory: bool,
    /// Why the job's records cannot be read, when they cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// A record in the ring and what it costs the memory budget now.
#[derive(Debug)]
struct Held {
    entry: Arc<Entry>,
    cost: usize,
}

#[derive(Debug)]
struct State {
    ring: VecDeque<Held>,
    ring_bytes: usize,
    progress: Progress,
    /// When the job finished, on this process's clock, for memory retention.
    finished_instant: Option<Instant>,
    /// The last append or attach change, for idle reaping and shedding order.
    last_activity: Instant,
    /// Capgo clients' last confirmed ids, by stable token hash; the newest last.
    confirmations: Vec<(u64, u64)>,
    /// When the lifecycle last noted an open upload's activity in the store (wall ms).
    noted_ms: u64,
}

impl State {
    fn first_held(&self) -> u64 {
        self.ring
            .front()
            .map_or(self.progress.next_seq, |h| h.entry.seq())
    }
}

/// One job's log.
pub(crate) struct JobLog {
    id: JobId,
    /// The job's life in the store: a job lost or deleted and created again has a new
    /// one, and readers of the old life start over.
    life: String,
    state: Mutex<State>,
    /// Held by the one append (or lifecycle end) in flight, across the store's await:
    /// the store, then the ring, then the wake-up, in seq order.
    writer: tokio::sync::Mutex<()>,
    /// Tells readers of appends, at most once per gather window.
    wakeups: Arc<Wakeups>,
    limits: JobLimits,
    memory: Arc<MemoryBudget>,
    store: Arc<Store>,
    /// Why the store cannot give this job's records back, when it cannot.
    broken: Option<String>,
    /// Readers attached now; bounded by `limits.max_subscribers`.
    subscribers: AtomicUsize,
    /// Uploads in progress; a job with one is never reaped nor declared lost.
    publishers: AtomicUsize,
    /// An upload of this job waits for the memory budget.
    waiting_for_memory: AtomicBool,
    /// Set when the gateway drains: readers end at their next wake-up.
    closed: AtomicBool,
}

/// Most Capgo confirmations kept per job (the newest win).
const MAX_CONFIRMATIONS: usize = 64;

impl JobLog {
    /// A job as the store holds it (new: `Recovered` with a fresh `Progress`).
    pub(crate) fn new(
        recovered: Recovered,
        limits: JobLimits,
        memory: Arc<MemoryBudget>,
        store: Arc<Store>,
    ) -> Self {
        let now = Instant::now();
        let progress = recovered.progress;
        let finished_instant = progress
            .finished_ms
            .filter(|_| progress.status.is_terminal())
            .map(|t| {
                let ago = Duration::from_millis(now_ms().saturating_sub(t));
                now.checked_sub(ago).unwrap_or(now)
            });
        let wakeups = Wakeups::new(limits.gather);
        Self {
            id: recovered.id,
            life: recovered.life,
            writer: tokio::sync::Mutex::new(()),
            state: Mutex::new(State {
                ring: VecDeque::new(),
                ring_bytes: 0,
                progress,
                finished_instant,
                last_activity: now,
                confirmations: recovered.confirmations,
                noted_ms: 0,
            }),
            wakeups,
            limits,
            memory,
            store,
            broken: recovered.broken,
            subscribers: AtomicUsize::new(0),
            publishers: AtomicUsize::new(0),
            waiting_for_memory: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent state behind (the progress is
        // replaced whole, after the store took the batch), so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn id(&self) -> &JobId {
        &self.id
    }

    /// The job's life in the store.
    pub(crate) fn life(&self) -> &str {
        &self.life
    }

    /// Appends `batch` through the store, which applies the rules (dedupe by `n`, the
    /// size limit, nothing after a terminal status) and returns what it stored; then
    /// the ring takes that and readers wake once. Records before a terminal status are
    /// kept even when later ones are refused; a store error keeps nothing of this batch.
    pub(crate) async fn append(
        &self,
        batch: impl IntoIterator<Item = Incoming>,
        tally: &mut Tally,
    ) -> Result<(), AppendError> {
        let batch: Vec<Incoming> = batch.into_iter().collect();
        // One writer at a time per job: store, then ring, then wake, in seq order.
        let _writer = self.writer.lock().await;
        let cached = {
            let st = self.lock();
            // Whatever happens, the tally names the job's counters, where a publisher
            // resumes.
            tally.last_seq = st.progress.last_seq();
            tally.last_n = st.progress.last_n;
            st.progress
        };
        let appended = self
            .store
            .append(&self.id, &cached, batch, self.limits.max_log_bytes)
            .await?;
        tally.add(&appended);
        crate::metrics::get().appended(&appended.entries, appended.duplicates);
        let finished = appended.finished;
        self.lock().last_activity = Instant::now();
        self.take(appended.entries, Some(appended.progress));
        if finished {
            return Err(AppendError::Finished);
        }
        Ok(())
    }

    /// Forces what was appended to disk when the policy says so now: after every append
    /// with `--fsync always`, and at the terminal status. Runs off the runtime's threads.
    pub(crate) async fn settle(self: &Arc<Self>) -> Result<(), StoreError> {
        let finished = self.is_finished();
        if !finished && self.store.fsync() != Fsync::Always {
            return Ok(());
        }
        if !self.store.is_durable() {
            return Ok(());
        }
        self.store.sync(&self.id).await
    }

    /// Sheds up to `want` bytes of this job's oldest held records; returns the bytes freed.
    pub(crate) fn shed(&self, want: usize) -> usize {
        let freed = {
            let mut st = self.lock();
            let limit = st.ring_bytes.saturating_sub(want);
            evict(&mut st, limit)
        };
        self.memory.sub(freed);
        freed
    }

    /// The process's memory budget, which this job's ring counts in.
    pub(crate) fn memory(&self) -> &Arc<MemoryBudget> {
        &self.memory
    }

    /// Bytes held in the ring.
    pub(crate) fn held_bytes(&self) -> usize {
        self.lock().ring_bytes
    }

    /// Records from `cursor` on, read back from the store when the ring no longer holds
    /// them.
    pub(crate) async fn read_any(&self, cursor: u64, budget: usize, frame: Option<Frame>) -> Read {
        match self.read(cursor, budget, frame) {
            // Boxed: the store's read future (Redis, the archive) is kilobytes, and inline
            // every caught-up reader's task would carry it for its whole life.
            Read::Behind { from, to } => Box::pin(self.read_back(from, to, budget)).await,
            read => read,
        }
    }

    /// Records from `cursor` on in the ring, up to about `budget` bytes, with `frame`
    /// built and kept for each (charged to the memory budget once, when the record is
    /// held) while the budget has room; over it, readers encode their frames for one use
    /// and the ring does not grow. [`Read::Behind`] when the ring no longer holds the
    /// cursor. Never waits on a store.
    pub(crate) fn read(&self, cursor: u64, budget: usize, frame: Option<Frame>) -> Read {
        if let Some(why) = &self.broken {
            return Read::Failed(why.clone());
        }
        let mut st = self.lock();
        if cursor >= st.progress.next_seq {
            return if st.progress.status.is_terminal() {
                Read::End
            } else {
                Read::Idle
            };
        }
        let first = st.first_held();
        if cursor < first {
            return Read::Behind {
                from: cursor,
                to: first - 1,
            };
        }
        let start = (cursor - first) as usize;
        let frame = frame.filter(|_| !self.memory.is_over());
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut added = 0;
        for held in st.ring.range_mut(start..) {
            if !out.is_empty() && bytes + held.entry.sse.len() > budget {
                break;
            }
            bytes += held.entry.sse.len();
            let wanted = match (frame, held.entry.kind()) {
                (Some(Frame::SseText), Kind::Log(_)) | (Some(Frame::CapgoWs), _) => frame,
                _ => None,
            };
            if let Some(which) = wanted {
                if let (_, true) = held.entry.frame(which) {
                    let cost = held.entry.cost();
                    added += cost - held.cost;
                    held.cost = cost;
                }
            }
            out.push(Arc::clone(&held.entry));
        }
        st.ring_bytes += added;
        drop(st);
        self.memory.add(added);
        Read::Entries(out)
    }

    /// Records `from..=to` that the ring no longer holds, read back from the store
    /// within about `budget` bytes. Only readers behind the ring wait on it.
    pub(crate) async fn read_back(&self, from: u64, to: u64, budget: usize) -> Read {
        match self.store.read(&self.id, from, to, budget).await {
            Ok(older) => match older.first() {
                Some(e) if e.seq() == from => Read::Entries(older),
                // Records lost to damage before the next one the store holds.
                Some(e) if e.seq() > from && e.seq() <= to => Read::Gap {
                    from,
                    to: e.seq() - 1,
                },
                _ => Read::Gap { from, to },
            },
            Err(e @ StoreError::Unavailable { .. }) => Read::Unavailable(e.report()),
            Err(e) => {
                let why = e.report();
                tracing::warn!(job.id = %self.id, error = %why, "cannot read records back from the store");
                Read::Failed(why)
            }
        }
    }

    /// The seq from which the log's lines hold at most `bytes` bytes (each with its LF):
    /// where `?tail_bytes=` starts. Reads backwards in growing windows, each forward.
    pub(crate) async fn tail_start(&self, bytes: usize) -> u64 {
        let mut start = self.last_seq() + 1;
        let mut used = 0usize;
        let mut window = 256u64;
        while start > 1 {
            let from = start.saturating_sub(window).max(1);
            let (lens, floor) = self.line_lens(from, start).await;
            for &(seq, len) in lens.iter().rev() {
                if used + len > bytes {
                    return seq + 1;
                }
                used += len;
            }
            if floor > from {
                return floor;
            }
            start = from;
            window = window.saturating_mul(4);
        }
        1
    }

    /// The text bytes (line and LF) of each record in `from..end`, and the first seq
    /// after any records that are no longer held.
    async fn line_lens(&self, from: u64, end: u64) -> (Vec<(u64, usize)>, u64) {
        let mut lens = Vec::new();
        let (mut cursor, mut floor) = (from, from);
        while cursor < end {
            match self.read_any(cursor, 256 * 1024, None).await {
                Read::Entries(entries) => {
                    for e in entries.iter().take_while(|e| e.seq() < end) {
                        let len = match (e.kind(), e.counted()) {
                            (Kind::Log(_), Some(len)) => len as usize + 1,
                            (Kind::Log(_), None) => e.line().map_or(1, |l| l.len() + 1),
                            _ => 0,
                        };
                        lens.push((e.seq(), len));
                    }
                    cursor = entries.last().map_or(end, |e| e.seq() + 1);
                }
                Read::Gap { to, .. } => {
                    lens.clear();
                    floor = to + 1;
                    cursor = to + 1;
                }
                _ => break,
            }
        }
        (lens, floor)
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
        let seq_rx = self.wakeups.subscribe();
        self.store.wake(&self.id);
        seq_rx
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.lock().progress.last_seq()
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.lock().progress.status.is_terminal()
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let st = self.lock();
        let p = &st.progress;
        let last_seq = p.last_seq();
        let first_seq = match (last_seq, self.store.is_durable() && self.broken.is_none()) {
            (0, _) => 0,
            (_, true) => 1,
            (_, false) => st.first_held(),
        };
        let at = |ms: u64| rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
        Snapshot {
            job_id: self.id.to_string(),
            status: p.status,
            exit_code: p.exit_code,
            lines: p.lines,
            bytes: p.bytes,
            dropped_lines: p.dropped_lines,
            first_seq,
            last_seq,
            last_n: p.last_n,
            created_at: at(p.created_ms),
            started_at: p.started_ms.map(at),
            finished_at: p.finished_ms.map(at),
            subscribers: self.subscribers.load(Ordering::Relaxed),
            waiting_for_memory: self.waiting_for_memory.load(Ordering::Relaxed),
            error: self.broken.clone(),
        }
    }

    /// What is left once the job is deleted.
    pub(crate) fn tombstone(&self) -> Tombstone {
        let st = self.lock();
        Tombstone {
            status: st.progress.status,
            exit_code: st.progress.exit_code,
            finished_ms: st.progress.finished_ms,
            deleted_ms: now_ms(),
        }
    }

    /// Marks (or clears) an upload of this job as waiting for memory.
    pub(crate) fn set_waiting_for_memory(&self, waiting: bool) {
        self.waiting_for_memory.store(waiting, Ordering::Relaxed);
    }

    /// The last id the Capgo client with token hash `hash` confirmed.
    pub(crate) fn confirmed(&self, hash: u64) -> Option<u64> {
        let st = self.lock();
        st.confirmations
            .iter()
            .rev()
            .find(|(h, _)| *h == hash)
            .map(|(_, id)| *id)
    }

    /// Keeps a Capgo client's confirmation with the job (in the store too), so its
    /// resume survives a restart. Ids only move forward.
    pub(crate) fn confirm(&self, hash: u64, id: u64) {
        let mut st = self.lock();
        if st
            .confirmations
            .iter()
            .any(|(h, last)| *h == hash && *last >= id)
        {
            return;
        }
        st.confirmations.retain(|(h, _)| *h != hash);
        st.confirmations.push((hash, id));
        if st.confirmations.len() > MAX_CONFIRMATIONS {
            st.confirmations.remove(0);
        }
        drop(st);
        self.store.note(&self.id, 0, Some((hash, id)));
    }

    /// Applies the job lifecycle at wall-clock `now_ms`: a running job whose publisher
    /// has been gone for `grace` becomes `lost`; a queued job nobody published to for
    /// `queued_ttl` becomes `expired`. Returns the status it moved to.
    pub(crate) async fn check_lifecycle(
        &self,
        now_ms: u64,
        grace: Duration,
        queued_ttl: Duration,
    ) -> Option<JobStatus> {
        if self.broken.is_some() {
            return None;
        }
        let progress = self.lock().progress;
        if self.publishers.load(Ordering::Acquire) > 0 {
            // An upload here keeps the job alive, for every instance of a shared store:
            // the store's activity mark must never grow `grace` old while it lasts. Noted
            // every tick, every job with an open upload called the store at once (3,000
            // silent uploads: ~9,000 Redis commands in one second, every 10 s); noted
            // when the mark is a quarter to half of `grace` old (ticks are at most a
            // quarter apart), at a point fixed per job, jobs started together spread out.
            let mut st = self.lock();
            let mark = st.progress.activity_ms.max(st.noted_ms);
            if now_ms.saturating_sub(mark) >= note_after(&self.id, grace) {
                st.noted_ms = now_ms;
                drop(st);
                self.store.note(&self.id, now_ms, None);
            }
            return None;
        }
        let before = |limit: Duration| now_ms.saturating_sub(limit.as_millis() as u64);
        let (lost_before, expired_before) = (before(grace), before(queued_ttl));
        // The local copy is never newer than the store: a job that looks busy here is.
        progress.idle_end(lost_before, expired_before)?;
        let _writer = self.writer.lock().await;
        let cached = self.lock().progress;
        match self
            .store
            .end_if_idle(&self.id, &cached, lost_before, expired_before)
            .await
        {
            Ok(appended) => {
                let ended = (!appended.entries.is_empty()).then_some(appended.progress.status);
                self.take(appended.entries, Some(appended.progress));
                ended
            }
            Err(e) => {
                tracing::warn!(job.id = %self.id, error = %e.report(), "cannot end the job");
                None
            }
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

    /// Nobody reads or publishes now.
    pub(crate) fn is_unattached(&self) -> bool {
        self.subscribers.load(Ordering::Acquire) == 0
            && self.publishers.load(Ordering::Acquire) == 0
    }

    /// When the job last saw an append or a reader or publisher leave.
    pub(crate) fn last_activity(&self) -> Instant {
        self.lock().last_activity
    }

    /// Whether the job's memory copy may be dropped: nobody attached, and finished longer
    /// than `retention` ago, or (`idle` given) unfinished and idle longer than it.
    pub(crate) fn is_expired(
        &self,
        now: Instant,
        retention: Duration,
        idle: Option<Duration>,
    ) -> bool {
        if !self.is_unattached() {
            return false;
        }
        let st = self.lock();
        match (st.finished_instant, idle) {
            (Some(t), _) => now.saturating_duration_since(t) >= retention,
            (None, Some(idle)) => now.saturating_duration_since(st.last_activity) >= idle,
            (None, None) => false,
        }
    }
}

/// Drops the oldest records until the ring holds at most `limit` bytes; returns the
/// bytes freed.
fn evict(st: &mut State, limit: usize) -> usize {
    let mut freed = 0;
    while st.ring_bytes > limit {
        let Some(old) = st.ring.pop_front() else {
            break;
        };
        st.ring_bytes -= old.cost;
        freed += old.cost;
    }
    freed
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
        let job = &self.job;
        match self.role {
            Role::Subscriber => {
                job.subscribers.fetch_sub(1, Ordering::AcqRel);
                job.lock().last_activity = Instant::now();
            }
            Role::Publisher => {
                job.publishers.fetch_sub(1, Ordering::AcqRel);
                let mut st = job.lock();
                st.last_activity = Instant::now();
                if st.progress.status.is_terminal() {
                    return;
                }
                // The publisher's grace counts from now, also across a restart. An append
                // within the last second already told the store as much.
                let now = now_ms();
                if now.saturating_sub(st.progress.activity_ms) < 1000 {
                    return;
                }
                st.progress.activity_ms = now;
                drop(st);
                job.store.note(&job.id, now, None);
            }
        }
    }
}

/// How old the store's activity mark of `job` may grow while an upload is open here
/// before it is noted again: from a quarter to half of `grace`, fixed per job.
pub(crate) fn note_after(job: &JobId, grace: Duration) -> u64 {
    use std::hash::{Hash, Hasher};
    let quarter = (grace.as_millis() as u64 / 4).max(1);
    // SipHash with fixed keys: the same point for a job on every instance and run.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    job.as_str().hash(&mut h);
    quarter + h.finish() % quarter
}

mod cache;
#[cfg(test)]
pub(crate) mod tests;
