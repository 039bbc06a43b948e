//! Live progress bar: elapsed against the planned duration, with readers, lines published and
//! delivered, delivery rate and errors. Draws nothing when stderr is not a terminal.

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A snapshot of the run's live counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub ready: u64,
    pub open: u64,
    pub published: u64,
    pub delivered: u64,
    pub errors: u64,
}

/// Where the bar reads its counters from.
pub type Source = Arc<dyn Fn() -> Snapshot + Send + Sync>;

/// A running progress bar; finish it with [`Progress::finish`].
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    task: JoinHandle<()>,
}

impl Progress {
    /// Starts updating a bar labelled `label` every 250 ms. `hidden` draws nothing.
    pub fn start(label: &str, total: Duration, hidden: bool, source: Source) -> Self {
        let bar = ProgressBar::with_draw_target(
            Some(total.as_millis().max(1) as u64),
            if hidden {
                ProgressDrawTarget::hidden()
            } else {
                ProgressDrawTarget::stderr_with_hz(4)
            },
        );
        bar.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:24}] {elapsed:>4} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        let task_bar = bar.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut last = Snapshot::default();
            let mut last_at = start;
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let now = source();
                let secs = last_at.elapsed().as_secs_f64().max(1e-3);
                let rate = (now.delivered.saturating_sub(last.delivered)) as f64 / secs;
                task_bar.set_position(start.elapsed().as_millis() as u64);
                task_bar.set_message(format!(
                    "readers {}/{} open  published {}  delivered {} ({:.0}/s)  errors {}",
                    now.ready, now.open, now.published, now.delivered, rate, now.errors
                ));
                last = now;
                last_at = Instant::now();
            }
        });
        Self { bar, task }
    }

    pub fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}
