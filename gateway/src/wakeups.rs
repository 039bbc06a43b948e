//! When a job's readers hear of new records: at most once per gather window.
//!
//! Every wake-up costs each reader a task poll and a write syscall, so under load the job,
//! not each reader, decides when to wake them. An append after a quiet window wakes at
//! once (a trickle of lines pays no latency); appends inside the window share one wake-up
//! at its end, so each reader writes them in one chunk. One timer per job, never per reader.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// A job's wake-up channel: readers wait on [`Wakeups::subscribe`], appends call
/// [`Wakeups::announce`].
pub(crate) struct Wakeups {
    /// The last seq readers were told of.
    tx: watch::Sender<u64>,
    /// Wake-ups are at least this far apart (zero: every announce wakes).
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

    /// Records up to `seq` are in the log: wake readers now, or at the end of the window
    /// when they were woken less than a window ago.
    pub(crate) fn announce(self: &Arc<Self>, seq: u64) {
        let now = Instant::now();
        let mut st = self.lock();
        st.latest = seq;
        if st.pending {
            return;
        }
        let due = st.last_wake.map(|at| at + self.window);
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
        self.tx.send_replace(seq);
    }

    fn wake_latest(&self) {
        let mut st = self.lock();
        st.pending = false;
        st.last_wake = Some(Instant::now());
        let seq = st.latest;
        drop(st);
        self.tx.send_replace(seq);
    }

    /// Wakes every reader now, with nothing new: the log closed.
    pub(crate) fn wake_all(&self) {
        self.tx.send_modify(|_| {});
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(5);

    #[tokio::test(start_paused = true)]
    async fn a_quiet_job_wakes_at_once() {
        let wakeups = Wakeups::new(WINDOW);
        let mut rx = wakeups.subscribe();
        wakeups.announce(1);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 1);

        // A window later, the next append wakes at once too.
        tokio::time::advance(WINDOW).await;
        wakeups.announce(2);
        assert_eq!(*rx.borrow_and_update(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn appends_inside_the_window_share_one_wakeup_at_its_end() {
        let wakeups = Wakeups::new(WINDOW);
        let mut rx = wakeups.subscribe();
        wakeups.announce(1);
        rx.borrow_and_update();
        let woken_at = Instant::now();

        tokio::time::advance(Duration::from_millis(1)).await;
        wakeups.announce(2);
        wakeups.announce(3);
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
    async fn a_zero_window_wakes_on_every_announce() {
        let wakeups = Wakeups::new(Duration::ZERO);
        let mut rx = wakeups.subscribe();
        for seq in 1..=3 {
            wakeups.announce(seq);
            assert_eq!(*rx.borrow_and_update(), seq);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn wake_all_reaches_a_waiting_reader_inside_the_window() {
        let wakeups = Wakeups::new(WINDOW);
        let mut rx = wakeups.subscribe();
        wakeups.announce(1);
        rx.borrow_and_update();
        wakeups.wake_all();
        assert!(rx.has_changed().unwrap());
    }
}
