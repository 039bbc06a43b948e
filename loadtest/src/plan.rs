//! A phase of a run: its jobs, what its readers do and how it publishes. Reader specs are
//! derived deterministically from the phase, so every `--procs` child picks its own share.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cli::{Settings, SlowMode};
use crate::tally::Group;

/// What the readers of a phase do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReaderKind {
    /// Follow the stream to its end (a share may be slow, per `slow_share`).
    Follow,
    /// Connect, read for a while, leave, connect again, until publishing ends.
    Churn,
    /// Follow the stream, dropping and resuming with Last-Event-ID every so often.
    Resume,
}

/// How a phase publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PublishKind {
    /// Lines at `--rate` for `--duration`.
    Stream,
    /// Nothing for `--duration`, then one line per job (proves the idle readers are alive).
    Idle,
}

/// One phase of a scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseSpec {
    /// Human label (`run`, `baseline`, `with-slow`).
    pub label: String,
    /// Job names, unique per run so every job starts empty.
    pub jobs: Vec<String>,
    pub readers_per_job: usize,
    /// Share of each job's readers that are slow (0 outside the slow scenario).
    pub slow_share: f64,
    pub reader_kind: ReaderKind,
    pub publish: PublishKind,
}

/// What one reader does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behavior {
    Follow,
    Stall,
    Trickle { bytes_per_sec: u64 },
    Churn { hold: Duration },
    Resume { hold: Duration },
}

/// One reader of a phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReaderSpec {
    /// Global index (job-major), also the latency shard.
    pub index: usize,
    /// Index into the phase's jobs.
    pub job: usize,
    pub behavior: Behavior,
    pub group: Group,
}

impl PhaseSpec {
    pub fn new(
        settings: &Settings,
        run_id: &str,
        label: &str,
        reader_kind: ReaderKind,
        publish: PublishKind,
        slow_share: f64,
    ) -> Self {
        Self {
            label: label.to_string(),
            jobs: (0..settings.jobs)
                .map(|j| format!("{run_id}-{label}-{j}"))
                .collect(),
            readers_per_job: settings.readers,
            slow_share,
            reader_kind,
            publish,
        }
    }

    pub fn total_readers(&self) -> usize {
        self.jobs.len() * self.readers_per_job
    }

    /// Slow readers per job.
    pub fn slow_per_job(&self) -> usize {
        (self.readers_per_job as f64 * self.slow_share).round() as usize
    }

    /// The readers that process `shard` of `shards` runs.
    pub fn readers(&self, settings: &Settings, shard: usize, shards: usize) -> Vec<ReaderSpec> {
        let slow = self.slow_per_job();
        (0..self.total_readers())
            .filter(|i| i % shards == shard)
            .map(|index| {
                let job = index / self.readers_per_job;
                let within = index % self.readers_per_job;
                let (behavior, group) = match self.reader_kind {
                    ReaderKind::Churn => (
                        Behavior::Churn {
                            hold: settings.hold,
                        },
                        Group::Main,
                    ),
                    ReaderKind::Resume => (
                        Behavior::Resume {
                            hold: settings.hold,
                        },
                        Group::Main,
                    ),
                    ReaderKind::Follow if within < slow => match settings.slow_mode {
                        SlowMode::Stall => (Behavior::Stall, Group::Slow),
                        SlowMode::Trickle => (
                            Behavior::Trickle {
                                bytes_per_sec: settings.slow_bytes_per_sec,
                            },
                            Group::Slow,
                        ),
                    },
                    ReaderKind::Follow => (Behavior::Follow, Group::Main),
                };
                ReaderSpec {
                    index,
                    job,
                    behavior,
                    group,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn shards_cover_every_reader_once() {
        let s = Settings::parse_from(["t", "slow", "--jobs", "3", "--readers", "10"]);
        let phase = PhaseSpec::new(&s, "r", "run", ReaderKind::Follow, PublishKind::Stream, 0.2);
        let mut all: Vec<usize> = (0..4)
            .flat_map(|k| phase.readers(&s, k, 4))
            .map(|r| r.index)
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..30).collect::<Vec<_>>());
        let slow = phase
            .readers(&s, 0, 1)
            .iter()
            .filter(|r| r.group == Group::Slow)
            .count();
        assert_eq!(slow, 6);
    }
}
