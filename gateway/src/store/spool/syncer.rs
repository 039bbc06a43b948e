//! The spool's fsync thread: every fsync a caller waits for (`--fsync always`, and each
//! job's terminal status in every mode) and the tick of `--fsync interval`, on one
//! thread, so the thread count stays fixed whatever the number of jobs that finish at
//! once. (Each of those fsyncs went through `spawn_blocking` before, one thread each: the
//! ci shape's 300 jobs finishing together made the process peak at 17-35 threads.)
//!
//! The thread takes every request queued at once. When several spools wait, one
//! `syncfs` of the data directory's filesystem covers them all (one call and one journal
//! commit instead of one per job); a single one gets its own `fdatasync`. Each request is
//! answered only after an fsync that started after its caller's write ended, as
//! [`SpoolJob::sync`] promises.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Semaphore};

use super::job::SpoolJob;
use super::Spool;
use crate::store::StoreError;

/// Fsync requests queued at most; a caller waits for room beyond it.
const QUEUE: usize = 4096;

/// One caller waiting for its job's written frames to reach the disk.
struct Request {
    job: Arc<SpoolJob>,
    tx: oneshot::Sender<Result<(), StoreError>>,
}

struct Queue {
    requests: Vec<Request>,
    /// The spool is gone: the thread ends.
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
}

/// The queue to the fsync thread; the thread ends when the spool is dropped.
pub(crate) struct Syncer {
    shared: Arc<Shared>,
}

impl Syncer {
    pub(crate) fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue {
                    requests: Vec::new(),
                    closed: false,
                }),
                work: Condvar::new(),
                room: Semaphore::new(QUEUE),
            }),
        }
    }

    /// Starts the thread for `spool`, which ticks every `interval` when there is one
    /// (`--fsync interval`).
    pub(crate) fn start(
        &self,
        spool: Weak<Spool>,
        interval: Option<Duration>,
    ) -> std::io::Result<()> {
        let shared = Arc::clone(&self.shared);
        std::thread::Builder::new()
            .name("tailgate-fsync".into())
            .spawn(move || work(&shared, &spool, interval))?;
        Ok(())
    }

    /// Forces `job`'s written frames to disk on the thread, and awaits it.
    pub(crate) async fn sync(&self, job: Arc<SpoolJob>) -> Result<(), StoreError> {
        match self.shared.room.acquire().await {
            Ok(place) => place.forget(),
            Err(_) => return Err(stopped()),
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut queue = self.shared.lock();
            if queue.closed {
                return Err(stopped());
            }
            queue.requests.push(Request { job, tx });
        }
        self.shared.work.notify_one();
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }
}

#[cfg(test)]
impl Syncer {
    /// Requests queued and not yet taken by the thread.
    pub(crate) fn queued(&self) -> usize {
        self.shared.lock().requests.len()
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_one();
    }
}

/// The thread: requests as they come, and the interval's tick when it is due.
fn work(shared: &Shared, spool: &Weak<Spool>, interval: Option<Duration>) {
    let mut next_tick = interval.map(|every| Instant::now() + every);
    let mut batch: Vec<Request> = Vec::new();
    loop {
        let tick = {
            let mut queue = shared.lock();
            let tick = loop {
                if queue.closed {
                    // The spool is gone, so nobody can still be waiting.
                    return;
                }
                let now = Instant::now();
                let due = next_tick.is_some_and(|at| now >= at);
                if due || !queue.requests.is_empty() {
                    break due;
                }
                queue = match next_tick {
                    None => shared.work.wait(queue).unwrap_or_else(|e| e.into_inner()),
                    Some(at) => {
                        shared
                            .work
                            .wait_timeout(queue, at - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                };
            };
            batch.append(&mut queue.requests);
            tick
        };
        shared.room.add_permits(batch.len());
        let Some(spool) = spool.upgrade() else {
            return;
        };
        // A panic fails this batch's callers (their answers are dropped), not the thread.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if tick {
                spool.sync_dirty(false);
            }
            let jobs: Vec<&Arc<SpoolJob>> = batch.iter().map(|r| &r.job).collect();
            spool.sync_jobs(&jobs);
            for request in batch.drain(..) {
                // At once when the fsync above covered it; else its own fsync.
                let _ = request.tx.send(request.job.sync());
            }
        }));
        batch.clear();
        if tick {
            next_tick = interval.map(|every| Instant::now() + every);
        }
    }
}

fn stopped() -> StoreError {
    StoreError::failed("the spool's fsync thread stopped")
}
