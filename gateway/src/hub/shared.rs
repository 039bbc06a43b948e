//! The hub over a shared store (Redis): every request asks the store for the job's
//! state, so each instance answers alike; the local `JobLog` is a cache the store's
//! tailer keeps current while readers watch it.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry as MapEntry;

use super::{Hub, JobError};
use crate::job_id::JobId;
use crate::job_log::JobLog;
use crate::store::{Follower, Loaded, Shared};

impl Hub {
    /// The job named `id` as the shared store holds it (created when new). A job the
    /// store lost and created again replaces the local copy, whose readers end and
    /// reconnect (and are told to reset).
    pub(super) fn shared_job(
        &self,
        shared: &dyn Shared,
        id: &JobId,
    ) -> Result<Arc<JobLog>, JobError> {
        let (recovered, epoch) = match shared.load(id)? {
            Loaded::Job { recovered, epoch } => (recovered, epoch),
            Loaded::Gone(tombstone) => return Err(JobError::Expired(tombstone)),
        };
        if !self.jobs.contains_key(id) && self.jobs.len() >= self.settings.max_jobs {
            self.reap(Instant::now());
            if self.jobs.len() >= self.settings.max_jobs {
                return Err(JobError::TooMany(self.settings.max_jobs));
            }
        }
        let job = match self.jobs.entry(id.clone()) {
            MapEntry::Occupied(e) if !e.get().is_closed() && shared.is_life(id, &epoch) => {
                let job = Arc::clone(e.get());
                drop(e);
                job.reconcile(recovered);
                return Ok(job);
            }
            MapEntry::Occupied(mut e) => {
                let job = Arc::new(self.job_log(recovered));
                let old = e.insert(Arc::clone(&job));
                old.close();
                job
            }
            MapEntry::Vacant(e) => {
                let job = Arc::new(self.job_log(recovered));
                e.insert(Arc::clone(&job));
                job
            }
        };
        let follower: Weak<dyn Follower> = Arc::downgrade(&job) as Weak<JobLog>;
        shared.follow(id, &epoch, follower);
        Ok(job)
    }

    /// The lifecycle of jobs no instance may hold (their instance died): one instance at
    /// a time sweeps them, holding a lease for a few ticks.
    pub(super) fn sweep_shared(&self, shared: &dyn Shared, now_ms: u64) {
        let before = |limit: Duration| now_ms.saturating_sub(limit.as_millis() as u64);
        let s = &self.settings;
        let lease = self.tick() * 3;
        for (id, status) in
            shared.sweep_lifecycle(before(s.publisher_grace), before(s.queued_ttl), lease)
        {
            tracing::info!(job.id = %id, job.status = %status, "job ended by its lifecycle");
        }
    }
}
