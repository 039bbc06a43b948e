//! The hub: every job held in memory by id, loaded from the store or created on first
//! valid use, its memory copy dropped after retention. It also runs what applies to all
//! jobs: the lifecycle (`lost`, `expired`), the store's retention sweep, and shedding
//! rings across jobs when the process is over its memory budget.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;

use crate::job_id::JobId;
use crate::job_log::{JobLimits, JobLog};
use crate::memory::MemoryBudget;
use crate::record::JobStatus;
use crate::store::{now_ms, Follower, Opened, Recovered, Store, StoreError, Tombstone};

/// Why a job cannot be had.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum JobError {
    /// The hub holds as many jobs as it may.
    #[error("the gateway holds its maximum of {0} jobs")]
    TooMany(usize),
    /// The job was deleted by retention; its tombstone says how it ended.
    #[error("the job's log was deleted by retention")]
    Expired(Tombstone),
    /// The store cannot take a new job.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long jobs live and how many there may be.
#[derive(Debug, Clone)]
pub(crate) struct HubSettings {
    pub(crate) max_jobs: usize,
    /// A finished job's memory copy is dropped this long after it finished.
    pub(crate) retention: Duration,
    pub(crate) idle_timeout: Duration,
    /// A running job whose publisher is gone this long becomes `lost`.
    pub(crate) publisher_grace: Duration,
    /// A queued job nobody published to for this long becomes `expired`.
    pub(crate) queued_ttl: Duration,
    pub(crate) job: JobLimits,
}

/// Every job the gateway holds.
pub(crate) struct Hub {
    jobs: DashMap<JobId, Arc<JobLog>>,
    settings: HubSettings,
    memory: Arc<MemoryBudget>,
    store: Arc<Store>,
}

impl Hub {
    /// A hub holding every unfinished job the store recovered (finished ones load on
    /// first use).
    pub(crate) fn new(settings: HubSettings, memory: Arc<MemoryBudget>, store: Arc<Store>) -> Self {
        let hub = Self {
            jobs: DashMap::new(),
            settings,
            memory,
            store,
        };
        for recovered in hub.store.recover() {
            if !recovered.progress.status.is_terminal() && hub.jobs.len() < hub.settings.max_jobs {
                let id = recovered.id.clone();
                hub.jobs.insert(id, Arc::new(hub.job_log(recovered)));
            }
        }
        hub
    }

    fn job_log(&self, recovered: Recovered) -> JobLog {
        JobLog::new(
            recovered,
            self.settings.job.clone(),
            Arc::clone(&self.memory),
            Arc::clone(&self.store),
        )
    }

    /// The job named `id`, as the store says: the copy held (brought up to date), else
    /// loaded from the store, else created (unless a tombstone says it was deleted). A
    /// job the store lost and created again replaces the held copy, whose readers end
    /// and reconnect to the new life.
    pub(crate) async fn job(&self, id: &JobId) -> Result<Arc<JobLog>, JobError> {
        let held = self.jobs.get(id).map(|j| Arc::clone(&j));
        if held.is_none() && self.jobs.len() >= self.settings.max_jobs {
            self.reap(Instant::now()).await;
            if self.jobs.len() >= self.settings.max_jobs {
                return Err(JobError::TooMany(self.settings.max_jobs));
            }
        }
        let opened = self.store.open(id, held.as_ref().map(|j| j.life())).await?;
        let recovered = match opened {
            Opened::Held => match held {
                Some(job) => return Ok(job),
                None => {
                    return Err(JobError::Store(StoreError::failed(format!(
                        "the store named job {id} held, but it is not"
                    ))))
                }
            },
            Opened::Gone(tombstone) => return Err(JobError::Expired(tombstone)),
            Opened::Job(recovered) => recovered,
        };
        let job = match self.jobs.entry(id.clone()) {
            // The copy held is in the store's life: it takes the store's state.
            MapEntry::Occupied(e) if e.get().life() == recovered.life && !e.get().is_closed() => {
                let job = Arc::clone(e.get());
                drop(e);
                job.reconcile(recovered);
                return Ok(job);
            }
            // Another request made the copy since we looked: it is as fresh as ours.
            MapEntry::Occupied(e) if held.is_none() && !e.get().is_closed() => {
                return Ok(Arc::clone(e.get()));
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
        self.store.follow(id, job.life(), follower);
        Ok(job)
    }

    pub(crate) fn memory(&self) -> &MemoryBudget {
        &self.memory
    }

    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
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

    /// Drops memory copies past their retention (and, without a durable store, idle
    /// unfinished jobs), then lets the store delete what its retention says; returns
    /// how many jobs left memory.
    pub(crate) async fn reap(&self, now: Instant) -> usize {
        let before = self.jobs.len();
        let retention = self.settings.retention;
        // With a durable store an unfinished job stays until its lifecycle ends it; a
        // shared store holds it for every instance, so an idle local copy may go.
        let idle = self
            .store
            .drops_idle_copies()
            .then_some(self.settings.idle_timeout);
        let mut forgotten = Vec::new();
        self.jobs.retain(|id, job| {
            if !job.is_expired(now, retention, idle) {
                return true;
            }
            if job.is_finished() {
                forgotten.push((id.clone(), job.tombstone()));
            }
            false
        });
        for id in self.store.sweep(forgotten, now_ms()).await {
            self.jobs.remove(&id);
        }
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

    /// Applies the lifecycle to every held job at wall-clock `now_ms`; returns the jobs
    /// it ended.
    pub(crate) async fn run_lifecycle(&self, now_ms: u64) -> Vec<Arc<JobLog>> {
        let (grace, ttl) = (self.settings.publisher_grace, self.settings.queued_ttl);
        // Jobs no instance may hold (their instance died): one instance at a time sweeps
        // them in a shared store, holding a lease for a few ticks.
        let before = |limit: Duration| now_ms.saturating_sub(limit.as_millis() as u64);
        let lease = self.tick() * 3;
        for (id, status) in self
            .store
            .sweep_lifecycle(before(grace), before(ttl), lease)
            .await
        {
            tracing::info!(job.id = %id, job.status = %status, "job ended by its lifecycle");
        }
        let jobs: Vec<Arc<JobLog>> = self.jobs.iter().map(|j| Arc::clone(&j)).collect();
        let mut ended = Vec::new();
        for job in jobs {
            if let Some(status) = job.check_lifecycle(now_ms, grace, ttl).await {
                tracing::info!(job.id = %job.id(), job.status = %status, "job ended by its lifecycle");
                ended.push(job);
            }
        }
        ended
    }

    /// Sheds held records across all jobs until `want` bytes are freed: least recently
    /// active first, finished and unwatched jobs before watched and running ones, each
    /// job's oldest records first. Returns the bytes freed.
    pub(crate) fn shed(&self, want: usize) -> usize {
        let mut victims: Vec<(u8, Instant, Arc<JobLog>)> = self
            .jobs
            .iter()
            .filter(|j| j.held_bytes() > 0)
            .map(|j| {
                let class = match (j.is_finished(), j.is_unattached()) {
                    (true, true) => 0,
                    (false, true) => 1,
                    (true, false) => 2,
                    (false, false) => 3,
                };
                (class, j.last_activity(), Arc::clone(&j))
            })
            .collect();
        victims.sort_by_key(|(class, at, _)| (*class, *at));
        let mut freed = 0;
        for (_, _, job) in victims {
            if freed >= want {
                break;
            }
            freed += job.shed(want - freed);
        }
        freed
    }

    /// Sheds rings whenever the budget goes over its limit, until `shutdown` fires: the
    /// uploads shed before each chunk too, but frames built for readers and the bytes
    /// readers hold for slow sockets grow the budget while no upload runs.
    pub(crate) async fn shed_on_pressure(
        self: Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        /// At most one pass per this long: a pass looks at every job.
        const PAUSE: Duration = Duration::from_millis(10);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.memory.pressure.notified() => {}
            }
            if self.memory.is_over() {
                let freed = self.shed(self.memory.excess() + crate::publish::SHED_SLACK_BYTES);
                tracing::debug!(memory.freed = freed, "shed rings over the memory budget");
            }
            tokio::time::sleep(PAUSE).await;
        }
    }

    /// Runs [`Hub::reap`] and the lifecycle every `every` until `shutdown` fires.
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
                _ = tick.tick() => {}
            }
            for job in self.run_lifecycle(now_ms()).await {
                if let Err(e) = job.settle().await {
                    tracing::warn!(job.id = %job.id(), error = %e.report(), "cannot fsync an ended job");
                }
            }
            self.reap(Instant::now()).await;
        }
    }

    /// How often [`Hub::reap_until`] should run for these settings.
    pub(crate) fn tick(&self) -> Duration {
        let s = &self.settings;
        [s.publisher_grace, s.queued_ttl, s.retention]
            .into_iter()
            .map(|d| d / 4)
            .chain([Duration::from_secs(10)])
            .min()
            .unwrap_or(Duration::from_secs(10))
            .max(Duration::from_millis(100))
    }
}

#[cfg(test)]
mod tests;
