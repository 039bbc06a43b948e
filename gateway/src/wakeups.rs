//! When a job's readers hear of new records: at most once per gather window.
//!
//! Every wake-up costs each reader a task poll and a write syscall, so the job, not each
//! reader, decides when to wake them. An append after a quiet window wakes at once (a
//! trickle of lines pays no latency); appends inside the window share one wake-up at its
//! end, so each reader writes them in one chunk. One timer per job, never per reader.
//!
//! The window grows with the readers, as the cost of a wake-up does: the full window at
//! [`FULL_WINDOW_READERS`] readers and beyond, a hundredth of it at 10. A job followed by
//! one terminal sees its lines at once; a job fanned out to a thousand readers, whose
//! wake-up takes milliseconds of writes anyway, trades a few more for fewer, larger writes.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Readers at which a job's window reaches the configured gather window.
pub(crate) const FULL_WINDOW_READERS: u32 = 1000;

/// A job's wake-up channel: readers wait on [`Wakeups::subscribe`], appends call
/// [`Wakeups::announce`].
pub(crate) struct Wakeups {
    /// The last seq readers were told of.
    tx: watch::Sender<u64>,
    /// Wake-ups are at least this far apart with [`FULL_WINDOW_READERS`] readers
    /// (zero: every announce wakes).
    window: Duration,
    state: Mutex<State>,
}

struct State {
    /// When readers were last woken.
    last_wake: Option<Instant>,
    /// A wake-up is scheduled at the end of the window.
    pending: bool,
    /// The last seq announced, woken or not.
    latest: u64,
}

impl Wakeups {
    pub(crate) fn new(window: Duration) -> Arc<Self> {
        Arc::new(Self {
            tx: watch::Sender::new(0),
            window,
            state: Mutex::new(State {
                last_wake: None,
                pending: false,
                latest: 0,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a plain assignment: a poisoned lock holds consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver for a reader; it changes when records up to its value are readable.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }

    /// Receivers alive: readers (and status waiters) of the job.
    pub(crate) fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// The window for a job with `readers` readers.
    fn window_for(&self, readers: usize) -> Duration {
        let readers = u32::try_from(readers).unwrap_or(u32::MAX);
        self.window * readers.min(FULL_WINDOW_READERS) / FULL_WINDOW_READERS
    }

    /// Records up to `seq` are in the log, which `readers` follow: wake them now, or at the
    /// end of the window when they were woken less than a window ago.
    pub(crate) fn announce(self: &Arc<Self>, seq: u64, readers: usize) {
        let now = Instant::now();
        let mut st = self.lock();
        st.latest = seq;
        if st.pending {
            return;
        }
        let window = self.window_for(readers);
        let due = st.last_wake.map(|at| at + window);
        if let (Some(due), Ok(runtime)) = (due, tokio::runtime::Handle::try_current()) {
            if due > now {
                st.pending = true;
                let this = Arc::clone(self);
                runtime.spawn(async move {
                    tokio::time::sleep_until(due).await;
                    this.wake_latest();
                });
                return;
            }
        }
        // Quiet for a window (or no runtime to wait on, as in unit tests): wake now.
        st.last_wake = Some(now);
        drop(st);
        self.send(seq);
    }

    /// Wakes readers with `seq`, never lowering the value a racing wake-up already sent.
    fn send(&self, seq: u64) {
        self.tx.send_modify(|last| *last = (*last).max(seq));
    }

    fn wake_latest(&self) {
        let mut st = self.lock();
        st.pending = false;
        st.last_wake = Some(Instant::now());
        let seq = st.latest;
        drop(st);
        self.send(seq);
    }

    /// Wakes every reader now, with nothing new: the log closed.
    pub(crate) fn wake_all(&self) {
        self.tx.send_modify(|_| {});
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(20);
    const FULL: usize = FULL_WINDOW_READERS as usize;

    #[tokio::test(start_paused = true)]
    async fn a_quiet_job_wakes_at_once() {
        let wakeups = Wakeups::new(WINDOW);
        let mut rx = wakeups.subscribe();
        wakeups.announce(1, FULL);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 1);

        // A window later, the next append wakes at once too.
        tokio::time::advance(WINDOW).await;
        wakeups.announce(2, FULL);
        assert_eq!(*rx.borrow_and_update(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn appends_inside_the_window_share_one_wakeup_at_its_end() {
        let wakeups = Wakeups::new(WINDOW);
        let mut rx = wakeups.subscribe();
        wakeups.announce(1, FULL);
        rx.borrow_and_update();
        let woken_at = Instant::now();

        tokio::time::advance(Duration::from_millis(1)).await;
        wakeups.announce(2, FULL);
        wakeups.announce(3, FULL);
        assert!(!rx.has_changed().unwrap(), "woke inside the window");

        rx.changed().await.unwrap();
        assert_eq!(
            *rx.borrow_and_update(),
            3,
            "the wake-up carries the latest seq"
        );
        assert_eq!(Instant::now(), woken_at + WINDOW);
        assert!(!rx.has_changed().unwrap(), "one wake-up for both appends");
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_scales_with_the_readers() {
        let wakeups = Wakeups::new(WINDOW);
        assert_eq!(wakeups.window_for(0), Duration::ZERO);
        assert_eq!(wakeups.window_for(10), WINDOW / 100);
        assert_eq!(wakeups.window_for(500), WINDOW / 2);
        assert_eq!(wakeups.window_for(FULL * 20), WINDOW);

        // A lone reader is woken on every append, however close together.
        let mut rx = wakeups.subscribe();
        wakeups.announce(1, 1);
        rx.borrow_and_update();
        tokio::time::advance(WINDOW / 100).await;
        wakeups.announce(2, 1);
        assert_eq!(*rx.borrow_and_update(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_window_wakes_on_every_announce() {
        let wakeups = Wakeups::new(Duration::ZERO);
        let mut rx = wakeups.subscribe();
        for seq in 1..=3 {
            wakeups.announce(seq, FULL);
            assert_eq!(*rx.borrow_and_update(), seq);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn wake_all_reaches_a_waiting_reader_inside_the_window() {
        let wakeups = Wakeups::new(WINDOW);
        let mut rx = wakeups.subscribe();
        wakeups.announce(1, FULL);
        rx.borrow_and_update();
        wakeups.wake_all();
        assert!(rx.has_changed().unwrap());
    }
}
