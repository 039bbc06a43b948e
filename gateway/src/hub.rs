//! The hub: every live job by id, created on first valid use, reaped when done.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;

use crate::history::History;
use crate::job_id::JobId;
use crate::job_log::{JobLimits, JobLog};
use crate::memory::MemoryBudget;
use crate::record::JobStatus;

/// The hub holds as many jobs as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the gateway holds its maximum of {0} jobs")]
pub(crate) struct TooManyJobs(pub(crate) usize);

/// How long jobs live and how many there may be.
#[derive(Debug, Clone)]
pub(crate) struct HubSettings {
    pub(crate) max_jobs: usize,
    pub(crate) retention: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) job: JobLimits,
}

/// Every job the gateway holds.
pub(crate) struct Hub {
    jobs: DashMap<JobId, Arc<JobLog>>,
    settings: HubSettings,
    memory: Arc<MemoryBudget>,
    history: Arc<dyn History>,
}

impl Hub {
    pub(crate) fn new(
        settings: HubSettings,
        memory: Arc<MemoryBudget>,
        history: Arc<dyn History>,
    ) -> Self {
        Self {
            jobs: DashMap::new(),
            settings,
            memory,
            history,
        }
    }

    /// The job named `id`, created if new.
    pub(crate) fn job(&self, id: &JobId) -> Result<Arc<JobLog>, TooManyJobs> {
        if let Some(job) = self.jobs.get(id) {
            return Ok(Arc::clone(&job));
        }
        if self.jobs.len() >= self.settings.max_jobs {
            self.reap(Instant::now());
            if self.jobs.len() >= self.settings.max_jobs {
                return Err(TooManyJobs(self.settings.max_jobs));
            }
        }
        let job = match self.jobs.entry(id.clone()) {
            MapEntry::Occupied(e) => Arc::clone(e.get()),
            MapEntry::Vacant(e) => {
                let job = Arc::new(JobLog::new(
                    id.clone(),
                    self.settings.job.clone(),
                    Arc::clone(&self.memory),
                    Arc::clone(&self.history),
                ));
                e.insert(Arc::clone(&job));
                tracing::debug!(job.id = %id, "job created");
                job
            }
        };
        Ok(job)
    }

    pub(crate) fn memory(&self) -> &MemoryBudget {
        &self.memory
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Each job's status, for the metrics scrape.
    pub(crate) fn statuses(&self) -> Vec<JobStatus> {
        self.jobs.iter().map(|job| job.snapshot().status).collect()
    }

    /// Ends every reader of every job: the gateway is draining.
    pub(crate) fn close_all(&self) {
        for job in self.jobs.iter() {
            job.close();
        }
    }

    /// Drops finished jobs past their retention and idle jobs, when nobody is attached.
    pub(crate) fn reap(&self, now: Instant) -> usize {
        let before = self.jobs.len();
        let (retention, idle) = (self.settings.retention, self.settings.idle_timeout);
        self.jobs
            .retain(|_, job| !job.is_expired(now, retention, idle));
        let reaped = before.saturating_sub(self.jobs.len());
        if reaped > 0 {
            tracing::debug!(
                jobs.reaped = reaped,
                jobs.held = self.jobs.len(),
                "reaped jobs"
            );
        }
        reaped
    }

    /// Runs [`Hub::reap`] every `every` until `shutdown` fires.
    pub(crate) async fn reap_until(
        self: Arc<Self>,
        every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => { self.reap(Instant::now()); }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::NoHistory;
    use crate::job_log::{Incoming, Tally};
    use crate::record::{JobStatus, RecordBody};

    fn hub(max_jobs: usize) -> Hub {
        let settings = HubSettings {
            max_jobs,
            retention: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(600),
            job: JobLimits {
                memory_bytes: 1 << 20,
                max_log_bytes: 1 << 20,
                max_subscribers: 10,
                gather: Duration::ZERO,
            },
        };
        Hub::new(
            settings,
            Arc::new(MemoryBudget::new(usize::MAX)),
            Arc::new(NoHistory),
        )
    }

    #[test]
    fn same_id_same_job_and_a_bound_on_jobs() {
        let hub = hub(2);
        let a = hub.job(&JobId::parse("a").unwrap()).unwrap();
        assert!(Arc::ptr_eq(
            &a,
            &hub.job(&JobId::parse("a").unwrap()).unwrap()
        ));
        hub.job(&JobId::parse("b").unwrap()).unwrap();
        assert_eq!(
            hub.job(&JobId::parse("c").unwrap()).err(),
            Some(TooManyJobs(2))
        );
    }

    #[test]
    fn reaps_finished_jobs_after_retention_unless_watched() {
        let hub = hub(10);
        let job = hub.job(&JobId::parse("a").unwrap()).unwrap();
        let done = Incoming {
            n: None,
            body: RecordBody::Status {
                status: JobStatus::Succeeded,
                exit_code: None,
            },
        };
        job.append([done], &mut Tally::default()).unwrap();
        let watcher = job.attach_subscriber().unwrap();
        let later = Instant::now() + Duration::from_secs(61);
        assert_eq!(hub.reap(later), 0);
        drop(watcher);
        assert_eq!(hub.reap(Instant::now()), 0, "still within retention");
        assert_eq!(hub.reap(later), 1);
        assert_eq!(hub.len(), 0);
    }
}
