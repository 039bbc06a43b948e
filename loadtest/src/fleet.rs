//! The readers of one process: spawned as tasks on this runtime, told when publishing ends,
//! and awaited. The parent runs one directly, or each `--procs` child runs one.

use std::sync::Arc;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cli::Settings;
use crate::plan::PhaseSpec;
use crate::reader::{run_reader, EndInfo, ReaderEnv};
use crate::tally::{ShardResult, Tally};
use crate::target::{TargetClient, TargetError};

/// Readers running in this process.
#[derive(Debug)]
pub struct LocalFleet {
    pub tally: Arc<Tally>,
    /// Tells readers publishing is over (and how many lines each job got).
    end_tx: watch::Sender<Option<EndInfo>>,
    tasks: JoinSet<()>,
    drain: std::time::Duration,
}

impl LocalFleet {
    /// Starts this shard's readers of `phase`.
    pub fn start(
        settings: &Settings,
        target: Arc<TargetClient>,
        phase: &PhaseSpec,
        shard: usize,
        shards: usize,
    ) -> Result<Self, TargetError> {
        let tally = Arc::new(Tally::default());
        let (end_tx, end_rx) = watch::channel(None);
        let paths = phase.jobs.iter().map(|j| target.read_path(j)).collect();
        // Readers mint their tokens as they connect; a bad key fails the run here instead.
        if let Some(job) = phase.jobs.first() {
            target.read_auth(job, 0)?;
        }
        let env = ReaderEnv {
            target,
            tally: tally.clone(),
            gate: Arc::new(Semaphore::new(settings.connect_concurrency)),
            paths: Arc::new(paths),
            jobs: Arc::new(phase.jobs.clone()),
            end: end_rx,
            start_after: settings.start_after.as_deref().map(Arc::from),
            accept_encoding: (settings.compression != "off").then(|| settings.compression.clone()),
        };
        let mut tasks = JoinSet::new();
        for spec in phase.readers(settings, shard, shards) {
            tasks.spawn(run_reader(env.clone(), spec));
        }
        Ok(Self {
            tally,
            end_tx,
            tasks,
            drain: settings.drain,
        })
    }

    /// Publishing is over: `published[j]` lines went to job `j`.
    pub fn end(&self, published: Vec<u64>) {
        let _ = self.end_tx.send(Some(EndInfo {
            published: Arc::new(published),
            deadline: Instant::now() + self.drain,
        }));
    }

    /// Waits for every reader and returns what they measured.
    pub async fn finish(mut self) -> ShardResult {
        while let Some(joined) = self.tasks.join_next().await {
            if joined.is_err() {
                self.tally.error("reader_panicked");
            }
        }
        self.tally.result()
    }
}
