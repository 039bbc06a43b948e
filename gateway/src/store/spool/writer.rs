//! The spool's I/O threads: one writes appends, notes and job creations in the order
//! they arrive; one reads records back for readers behind the ring. File I/O never runs
//! on the runtime's worker threads, the thread count stays fixed whatever the number of
//! uploads and readers, and each kind of I/O has one thread (one allocator arena, so
//! freed buffers are reused rather than kept by many). The rules run on the caller.

use std::panic::AssertUnwindSafe;

use tokio::sync::{mpsc, oneshot};

use crate::store::StoreError;

/// Writes queued at most; an append waits for room beyond it (back-pressure).
const QUEUE: usize = 4096;

type Task = Box<dyn FnOnce() + Send>;

/// The queue to one I/O thread; the thread ends when the spool is dropped.
pub(crate) struct Writer {
    tx: mpsc::Sender<Task>,
}

impl Writer {
    /// Starts the thread, named `name`.
    pub(crate) fn start(name: &str) -> std::io::Result<Self> {
        let (tx, mut rx) = mpsc::channel::<Task>(QUEUE);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Some(task) = rx.blocking_recv() {
                    // A panic in one write fails that write only (its caller sees the
                    // answer dropped), not every later one.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(task));
                }
            })?;
        Ok(Self { tx })
    }

    /// Runs `write` on the thread and awaits its answer.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        write: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (done_tx, done_rx) = oneshot::channel();
        let task: Task = Box::new(move || {
            let _ = done_tx.send(write());
        });
        if self.tx.send(task).await.is_err() {
            return Err(stopped());
        }
        done_rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Queues `write` without waiting for it: best effort, dropped when the queue is full.
    pub(crate) fn spawn(&self, write: impl FnOnce() + Send + 'static) {
        if self.tx.try_send(Box::new(write)).is_err() {
            tracing::debug!("the spool's write queue is full: a note was dropped");
        }
    }
}

fn stopped() -> StoreError {
    StoreError::failed("the spool's writer thread stopped")
}
