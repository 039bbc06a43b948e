//! The spool's I/O threads: one writes appends, notes and job creations in the order
//! they arrive; one reads records back for readers behind the ring. File I/O never runs
//! on the runtime's worker threads, the thread count stays fixed whatever the number of
//! uploads and readers, and each kind of I/O has one thread (one allocator arena, so
//! freed buffers are reused rather than kept by many). The rules run on the caller.
//!
//! The thread works in batches: it takes everything queued at once, does all of it, and
//! only then answers. A thread wake-up on either side costs more than a small `write`
//! (measured: the hop, not the file, was most of the spool's cost per append), so a
//! batch of appends from many jobs costs the thread one wake-up, and its answers reach
//! the runtime together, where one worker takes them all instead of one per answer.
//! A job's appends never share a batch (the job's writer gate lets one append in
//! flight), so there is nothing to merge within one job.
//!
//! Batches form by themselves only when the thread is busy. On an idle machine the ci
//! shape's 6,000 appends a second from 300 jobs arrive one at a time, and each one woke
//! the thread and then a worker. So when appends come from many jobs at once (at least
//! [`MANY_JOBS`] different jobs within [`RECENT`]), the thread stops being woken: it
//! looks at its queue every [`TICK`] instead, and each look takes what queued since. An
//! append then waits up to one tick longer, a bounded cost that only that load pays;
//! one busy job (an upload at full speed) never waits for a tick, and a tick that finds
//! nothing puts the thread back to waiting to be woken.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Semaphore};

use crate::store::StoreError;

/// Writes queued at most; an append waits for room beyond it (back-pressure).
const QUEUE: usize = 4096;

/// How often the thread looks at its queue while appends come from many jobs.
const TICK: Duration = Duration::from_micros(1000);
/// Different jobs that must have appended within [`RECENT`] for the thread to tick.
const MANY_JOBS: usize = 4;
/// The window [`MANY_JOBS`] counts in.
const RECENT: Duration = Duration::from_millis(5);
/// Appends remembered for that count (a bound, not a tuning knob).
const REMEMBERED: usize = 16;

/// One piece of queued I/O: done on the thread, answered after its whole batch.
trait Op: Send {
    /// The job this I/O is for (any value unique to it while it lives), or 0.
    fn job(&self) -> usize {
        0
    }
    /// Does the I/O (on the thread).
    fn run(&mut self);
    /// Hands the result to whoever waits for it (after the batch).
    fn answer(self: Box<Self>);
}

/// I/O whose caller awaits the result.
struct Answered<F, T> {
    job: usize,
    write: Option<F>,
    result: Option<Result<T, StoreError>>,
    tx: oneshot::Sender<Result<T, StoreError>>,
}

impl<F, T> Op for Answered<F, T>
where
    F: FnOnce() -> Result<T, StoreError> + Send,
    T: Send,
{
    fn job(&self) -> usize {
        self.job
    }

    fn run(&mut self) {
        if let Some(write) = self.write.take() {
            self.result = Some(write());
        }
    }

    fn answer(self: Box<Self>) {
        // No result: the write panicked, which fails that write only.
        let _ = self.tx.send(self.result.unwrap_or_else(|| Err(stopped())));
    }
}

/// I/O nobody waits for (a note).
struct Detached<F>(Option<F>);

impl<F: FnOnce() + Send> Op for Detached<F> {
    fn run(&mut self) {
        if let Some(write) = self.0.take() {
            write();
        }
    }

    fn answer(self: Box<Self>) {}
}

struct Queue {
    ops: VecDeque<Box<dyn Op>>,
    /// The thread waits for work: the next push wakes it (and only that one).
    idle: bool,
    /// The spool is gone: the thread ends once the queue is empty.
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
    /// One permit per free place in the queue.
    room: Semaphore,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue is consistent between any two statements (a push or a drain).
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `op` (its place already taken), waking the thread if it waits.
    fn push(&self, op: Box<dyn Op>) {
        let wake = {
            let mut queue = self.lock();
            queue.ops.push_back(op);
            std::mem::replace(&mut queue.idle, false)
        };
        if wake {
            self.work.notify_one();
        }
    }

    /// Takes everything queued, waiting for work; `false` once closed and empty. When
    /// `ticking` and nothing is queued, it first lets one [`TICK`] pass without being
    /// woken, so what queues meanwhile comes as one batch; if nothing came, it waits to
    /// be woken.
    fn take(&self, batch: &mut Vec<Box<dyn Op>>, ticking: bool) -> bool {
        let mut queue = self.lock();
        if ticking && queue.ops.is_empty() {
            let until = Instant::now() + TICK;
            loop {
                let now = Instant::now();
                if now >= until || queue.closed {
                    break;
                }
                queue = self
                    .work
                    .wait_timeout(queue, until - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        while queue.ops.is_empty() {
            if queue.closed {
                return false;
            }
            queue.idle = true;
            queue = self.work.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
        queue.idle = false;
        batch.extend(queue.ops.drain(..));
        drop(queue);
        self.room.add_permits(batch.len());
        true
    }
}

/// The jobs of the last few appends, to tell many jobs appending from one busy job.
#[derive(Default)]
struct Recent {
    /// `(when, job)`, oldest first, at most [`REMEMBERED`].
    seen: VecDeque<(Instant, usize)>,
}

impl Recent {
    fn note(&mut self, now: Instant, job: usize) {
        if job == 0 {
            return;
        }
        if self.seen.len() == REMEMBERED {
            self.seen.pop_front();
        }
        self.seen.push_back((now, job));
    }

    /// Whether [`MANY_JOBS`] different jobs appended within [`RECENT`] of `now`.
    fn many(&self, now: Instant) -> bool {
        let mut jobs = [0usize; MANY_JOBS];
        let mut found = 0;
        for &(_, job) in self
            .seen
            .iter()
            .rev()
            .take_while(|(at, _)| now.saturating_duration_since(*at) <= RECENT)
        {
            if !jobs[..found].contains(&job) {
                jobs[found] = job;
                found += 1;
                if found == MANY_JOBS {
                    return true;
                }
            }
        }
        false
    }
}

/// The queue to one I/O thread; the thread ends when the spool is dropped.
pub(crate) struct Writer {
    shared: Arc<Shared>,
}

impl Writer {
    /// Starts the thread, named `name`; with `coalesce`, appends from many jobs are
    /// taken a tick at a time (see the module's docs).
    pub(crate) fn start(name: &str, coalesce: bool) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                ops: VecDeque::new(),
                idle: false,
                closed: false,
            }),
            work: Condvar::new(),
            room: Semaphore::new(QUEUE),
        });
        let thread = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || work(&thread, coalesce))?;
        Ok(Self { shared })
    }

    /// Runs `write` on the thread and awaits its answer.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        write: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run_for(0, write).await
    }

    /// [`Writer::run`] for an append to the job `job` (a value unique to the job while
    /// it lives): what tells many jobs appending from one.
    pub(crate) async fn run_for<T: Send + 'static>(
        &self,
        job: usize,
        write: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        match self.shared.room.acquire().await {
            Ok(place) => place.forget(),
            Err(_) => return Err(stopped()),
        }
        let (tx, rx) = oneshot::channel();
        self.shared.push(Box::new(Answered {
            job,
            write: Some(write),
            result: None,
            tx,
        }));
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Queues `write` without waiting for it: best effort, dropped when the queue is full.
    pub(crate) fn spawn(&self, write: impl FnOnce() + Send + 'static) {
        match self.shared.room.try_acquire() {
            Ok(place) => place.forget(),
            Err(_) => {
                tracing::debug!("the spool's write queue is full: a note was dropped");
                return;
            }
        }
        self.shared.push(Box::new(Detached(Some(write))));
    }
}

#[cfg(test)]
impl Writer {
    /// Ops queued and not yet taken by the thread.
    pub(crate) fn queued(&self) -> usize {
        self.shared.lock().ops.len()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_one();
    }
}

/// The thread: batch after batch, each done whole before any of it is answered. With
/// `coalesce`, it ticks while many jobs append (see the module's docs).
fn work(shared: &Shared, coalesce: bool) {
    let mut batch: Vec<Box<dyn Op>> = Vec::new();
    let mut recent = Recent::default();
    let mut ticking = false;
    while shared.take(&mut batch, ticking) {
        if coalesce {
            let now = Instant::now();
            batch.iter().for_each(|op| recent.note(now, op.job()));
            ticking = recent.many(now);
        }
        for op in batch.iter_mut() {
            // A panic in one write fails that write only (its caller gets an error), not
            // every later one.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| op.run()));
        }
        for op in batch.drain(..) {
            op.answer();
        }
    }
}

fn stopped() -> StoreError {
    StoreError::failed("the spool's writer thread stopped")
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Holds the thread inside one op until the returned sender is dropped; returns once
    /// the thread is in it, so whatever is queued next makes one batch.
    pub(crate) async fn hold(writer: &Writer) -> std::sync::mpsc::Sender<()> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (inside_tx, inside) = oneshot::channel();
        writer.spawn(move || {
            let _ = inside_tx.send(());
            let _ = held.recv();
        });
        inside.await.expect("the writer thread runs the holding op");
        release
    }

    /// Lets spawned tasks run until `count` ops are queued (bounded).
    pub(crate) async fn until_queued(writer: &Writer, count: usize) {
        for _ in 0..10_000 {
            if writer.queued() >= count {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("{} ops queued, expected {count}", writer.queued());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_is_done_whole_before_any_answer_and_a_panic_fails_one_op() {
        let writer = Arc::new(Writer::start("test-writer", false).unwrap());
        let release = hold(&writer).await;
        let ran = Arc::new(AtomicUsize::new(0));
        let mut answers = Vec::new();
        for i in 0..3usize {
            let (w, ran, seen) = (Arc::clone(&writer), Arc::clone(&ran), Arc::clone(&ran));
            answers.push(tokio::spawn(async move {
                w.run(move || {
                    // In queue order, one after another.
                    assert_eq!(ran.fetch_add(1, Ordering::SeqCst), i);
                    if i == 1 {
                        panic!("this op fails alone");
                    }
                    Ok(i)
                })
                .await
                // What had run when this answer came: the whole batch.
                .map(|i| (i, seen.load(Ordering::SeqCst)))
            }));
        }
        until_queued(&writer, 3).await;
        drop(release);
        let mut got = Vec::new();
        for answer in answers {
            got.push(answer.await.unwrap().ok());
        }
        assert_eq!(got, vec![Some((0, 3)), None, Some((2, 3))]);
        // The thread goes on after the panic.
        assert_eq!(writer.run(|| Ok(7)).await.unwrap(), 7);
    }

    #[test]
    fn the_thread_ticks_only_while_many_jobs_append() {
        let start = Instant::now();
        let mut recent = Recent::default();
        // One busy job: never, however fast it appends.
        for i in 0..100 {
            recent.note(start + Duration::from_micros(i), 7);
        }
        assert!(!recent.many(start + Duration::from_micros(100)));
        // Three more jobs make four within the window.
        for job in [1, 2] {
            recent.note(start + Duration::from_micros(200), job);
        }
        assert!(!recent.many(start + Duration::from_micros(200)));
        recent.note(start + Duration::from_micros(300), 3);
        assert!(recent.many(start + Duration::from_micros(300)));
        // Not once they are older than the window; notes (no job) do not count.
        recent.note(start + RECENT * 2, 0);
        assert!(!recent.many(start + RECENT * 2));
        // The memory is bounded: the oldest go first.
        for i in 0..(REMEMBERED * 4) {
            recent.note(start + RECENT * 3, i % 2 + 10);
        }
        assert_eq!(recent.seen.len(), REMEMBERED);
        assert!(!recent.many(start + RECENT * 3), "two jobs are not many");
    }
}
