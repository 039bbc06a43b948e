//! The store: where a job's records live beyond the in-memory ring, the truth about each
//! job that `JobLog` caches, and what a restart recovers. One async seam, [`Store`]:
//! `open` (the job, created when new, or its tombstone), `append` / `end_if_idle` (each
//! returns what it stored), `read(job, from..=to, byte budget)`, `note` (fire and forget),
//! `sweep` / `sweep_lifecycle` (maintenance), `sync` / `flush`, `unready` (health). It is
//! opened once, by [`open::open`], before the hub is built.
//!
//! - [`memory`]: nothing beyond the ring (`--memory-only`): evicted records are a `gap`.
//! - [`spool`]: one append-only, checksummed file per job under `--data-dir` (default).
//! - [`redis`]: shared by several instances (`--redis-url`); it assigns seqs.
//!
//! The archive (`--archive-url`, [`crate::archive`]) is a cold tier behind the spool or
//! Redis: the arms below send a job or records the store no longer holds to it.
//!
//! The append rules themselves live in [`crate::rules`]; each store applies them (or,
//! Redis, mirrors them in its script) and returns what it stored. A new store (an archive
//! tier, another shared engine) is one more variant of [`Store`] and one arm per method.

pub(crate) mod error;
pub(crate) mod memory;
pub(crate) mod open;
pub(crate) mod redis;
pub(crate) mod spool;
pub(crate) mod tombstones;

use std::sync::{Arc, Weak};
use std::time::Duration;

use self::redis::RedisStore;
use crate::entry::Entry;
use crate::job_id::JobId;
use crate::record::JobStatus;
use crate::rules::{self, Incoming, Stamp};
use memory::MemoryStore;
use spool::Spool;

pub(crate) use crate::config::Fsync;
pub(crate) use crate::rules::{Appended, Progress};
pub(crate) use error::{Cause, StoreError};
pub(crate) use tombstones::Tombstone;

/// A job found in the store at start-up or on first use.
#[derive(Debug, Clone)]
pub(crate) struct Recovered {
    pub(crate) id: JobId,
    /// The job's life: a job the store lost or deleted and created again has a new one,
    /// and the SSE `id:` carries it (`<seq>-<life>`), so a reader of an earlier life
    /// starts over instead of continuing in the wrong one.
    pub(crate) life: String,
    pub(crate) progress: Progress,
    /// Capgo clients' last confirmed ids, by the stable hash of their token.
    pub(crate) confirmations: Vec<(u64, u64)>,
    /// Why the job's records cannot be read, when they cannot.
    pub(crate) broken: Option<String>,
}

impl Recovered {
    /// A job with nothing stored yet beyond `progress`, in a local store's life.
    pub(crate) fn new(id: JobId, progress: Progress) -> Self {
        Self {
            id,
            life: local_life(&progress),
            progress,
            confirmations: Vec::new(),
            broken: None,
        }
    }
}

/// What the store says about a job a request names.
#[derive(Debug)]
pub(crate) enum Opened {
    /// The copy held in memory is current: the store has nothing newer.
    Held,
    /// The job as the store holds it (created now when it was new), in its life: a job
    /// the store lost or deleted and created again has a new one.
    Job(Recovered),
    /// Deleted by retention.
    Gone(Tombstone),
}

/// Where records live beyond the ring, and the truth about each job that `JobLog`
/// caches. Every store applies the append rules ([`crate::rules`]) itself and returns
/// what it stored, so `JobLog` has one code path whichever store it runs on.
///
/// Every method is `async` or never blocks: the spool's file I/O runs on the blocking
/// pool, Redis commands are awaited on the client's multiplexed connection, the memory
/// store only computes. The set of stores is closed, so this is an enum with static
/// dispatch and native `async fn`s rather than a boxed async trait; a fourth store
/// (an archive tier, JetStream) is one more variant and one more arm per method.
pub(crate) enum Store {
    /// Nothing beyond the ring (`--memory-only`).
    Memory(MemoryStore),
    /// One file per job under `--data-dir`.
    Spool(Arc<Spool>),
    /// Shared by several instances (`--redis-url`).
    Redis(Arc<RedisStore>),
}

impl From<MemoryStore> for Store {
    fn from(store: MemoryStore) -> Self {
        Self::Memory(store)
    }
}

impl From<Arc<Spool>> for Store {
    fn from(store: Arc<Spool>) -> Self {
        Self::Spool(store)
    }
}

impl From<Arc<RedisStore>> for Store {
    fn from(store: Arc<RedisStore>) -> Self {
        Self::Redis(store)
    }
}

/// Runs `f` on the spool off the runtime's worker threads.
async fn blocking<T: Send + 'static>(
    spool: &Arc<Spool>,
    f: impl FnOnce(&Spool) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let spool = Arc::clone(spool);
    tokio::task::spawn_blocking(move || f(&spool))
        .await
        .unwrap_or_else(|e| Err(StoreError::failed(format!("the spool task failed: {e}"))))
}

impl Store {
    /// Whether evicted records can be read back (and jobs survive a restart).
    pub(crate) fn is_durable(&self) -> bool {
        !matches!(self, Self::Memory(_))
    }

    /// Whether a job's memory copy may go while it is unfinished and idle: the store
    /// then either forgets it (memory) or ends it by itself when nobody holds it (Redis,
    /// whose lease sweep does). The spool keeps it until its lifecycle ends it here.
    pub(crate) fn drops_idle_copies(&self) -> bool {
        !matches!(self, Self::Spool(_))
    }

    /// Bytes the store holds on disk, for the metrics (none in memory).
    pub(crate) fn disk_bytes(&self) -> Option<u64> {
        match self {
            Self::Spool(s) => Some(s.disk_bytes()),
            _ => None,
        }
    }

    /// The job a request names. `held` is the life of the copy in memory, if any; the
    /// store creates the job when it is new (unless a tombstone says it was deleted).
    pub(crate) async fn open(&self, job: &JobId, held: Option<&str>) -> Result<Opened, StoreError> {
        match self {
            Self::Memory(m) => m.open_job(job, held),
            // A finished job the disk budget deleted under its memory copy answers from
            // its tombstone (410), not from what memory still holds of it.
            Self::Spool(s) if held.is_some() && s.holds(job) => Ok(Opened::Held),
            Self::Spool(_) if held.is_none() && self.archive().is_some() => {
                match self.archived_elsewhere(job).await {
                    Some(archived) => Ok(Opened::Job(archived)),
                    None => self.open_spool(job, held).await,
                }
            }
            Self::Spool(_) => self.open_spool(job, held).await,
            Self::Redis(r) => r.open_tiered(job, held).await,
        }
    }

    /// The spool's answer for a job, and the archive's for one it archived.
    async fn open_spool(&self, job: &JobId, held: Option<&str>) -> Result<Opened, StoreError> {
        let Self::Spool(s) = self else {
            return Err(StoreError::failed("not the spool"));
        };
        let (spool, id, holds) = (Arc::clone(s), job.clone(), held.is_some());
        let opened = s
            .writer
            .run(move || match holds {
                true => Ok(match spool.tombstone(&id) {
                    Some(tombstone) => Opened::Gone(tombstone),
                    None => Opened::Held,
                }),
                false => spool.open_job(&id),
            })
            .await?;
        // Archiving leaves a tombstone: only a job that has one may be archived here.
        match (opened, s.archive.get()) {
            (Opened::Gone(tombstone), Some(archive)) => {
                crate::archive::tiered::open(archive, job, held, tombstone).await
            }
            (opened, _) => Ok(opened),
        }
    }

    /// The archive behind the store, when there is one.
    fn archive(&self) -> Option<&Arc<crate::archive::Archive>> {
        match self {
            Self::Spool(s) => s.archive.get(),
            Self::Redis(r) => r.archive(),
            Self::Memory(_) => None,
        }
    }

    /// With an archive, a job the spool neither holds nor remembers (another instance,
    /// or this one before a restart, may have archived it) is looked for there before
    /// the spool creates it. The negative cache answers most of these.
    async fn archived_elsewhere(&self, job: &JobId) -> Option<Recovered> {
        let Self::Spool(s) = self else {
            return None;
        };
        let archive = s.archive.get()?;
        if s.holds(job) {
            return None;
        }
        let (spool, id) = (Arc::clone(s), job.clone());
        if s.writer
            .run(move || Ok(spool.tombstone(&id)))
            .await
            .ok()?
            .is_some()
        {
            return None;
        }
        let (inner, id) = (Arc::clone(archive), job.clone());
        match archive.run(async move { inner.lookup(&id).await }).await {
            Ok(Some(index)) => Some(redis::archived::recovered_of(job, &index)),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(job.id = %job, error = %e, "cannot look for a job in the archive");
                None
            }
        }
    }

    /// Queues a job this call finished for the archive (a shared store: any instance
    /// may archive it). The spool's writer finds its finished jobs by itself.
    async fn finished_now(&self, job: &JobId, appended: &Appended) {
        if let (Self::Redis(r), Some(archive)) = (self, self.archive()) {
            if let Some(end) = appended.entries.iter().find(|e| e.is_terminal()) {
                let due = end.ts_ms() + archive.config.quiet.as_millis() as u64;
                r.queue_archive(job, due).await;
            }
        }
    }

    /// Appends `batch` by the rules, to the job at `cached` (the caller's copy; a store
    /// that keeps its own state uses that), and returns what it stored. On error nothing
    /// of the batch is kept, and the records before it stay.
    pub(crate) async fn append(
        &self,
        job: &JobId,
        cached: &Progress,
        batch: Vec<Incoming>,
        max_log_bytes: u64,
    ) -> Result<Appended, StoreError> {
        match self {
            Self::Memory(_) => Ok(rules::apply(cached, batch, max_log_bytes, &Stamp::now())),
            // Nothing follows a terminal status: no need to ask the spool, which no longer
            // holds a job it archived.
            Self::Spool(_) if cached.status.is_terminal() => {
                Ok(rules::apply(cached, batch, max_log_bytes, &Stamp::now()))
            }
            Self::Spool(s) => {
                // The rules run here; the writer thread only writes what they made.
                let (spooled, from) = s.job_for_append(job)?;
                let appended = rules::apply(&from, batch, max_log_bytes, &Stamp::now());
                s.store_off_runtime(spooled, from, appended).await
            }
            Self::Redis(r) => {
                let appended = r.append(job, batch, max_log_bytes).await?;
                self.finished_now(job, &appended).await;
                Ok(appended)
            }
        }
    }

    /// Ends the job as its lifecycle says ([`Progress::idle_end`]), once, whichever
    /// instance asks first; stores nothing when it is not idle there.
    pub(crate) async fn end_if_idle(
        &self,
        job: &JobId,
        cached: &Progress,
        lost_before_ms: u64,
        expired_before_ms: u64,
    ) -> Result<Appended, StoreError> {
        match self {
            Self::Memory(_) => {
                let now = Stamp::now();
                Ok(rules::end_if_idle(
                    cached,
                    lost_before_ms,
                    expired_before_ms,
                    &now,
                ))
            }
            Self::Spool(s) => {
                let (spooled, from) = s.job_for_append(job)?;
                let now = Stamp::now();
                let appended = rules::end_if_idle(&from, lost_before_ms, expired_before_ms, &now);
                s.store_off_runtime(spooled, from, appended).await
            }
            Self::Redis(r) => {
                let appended = r
                    .end_if_idle(job, lost_before_ms, expired_before_ms)
                    .await?;
                self.finished_now(job, &appended).await;
                Ok(appended)
            }
        }
    }

    /// Notes a sign of the publisher at `activity_ms` (an upload ended, or is still
    /// there; it only moves forward) and a Capgo confirmation, without records. Fire and
    /// forget, so it may be called from a `Drop`: a lost note only moves the lifecycle
    /// or a Capgo resume back a little.
    pub(crate) fn note(&self, job: &JobId, activity_ms: u64, confirm: Option<(u64, u64)>) {
        let job = job.clone();
        let failed = |job: &JobId, e: StoreError| {
            tracing::debug!(job.id = %job, error = %e.report(), "cannot note a job's state");
        };
        match self {
            Self::Memory(_) => {}
            Self::Spool(s) => {
                let spool = Arc::clone(s);
                s.writer.spawn(move || {
                    if let Err(e) = spool.note(&job, activity_ms, confirm) {
                        failed(&job, e);
                    }
                });
            }
            Self::Redis(r) => {
                let r = Arc::clone(r);
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        if let Err(e) = r.note(&job, activity_ms, confirm).await {
                            failed(&job, e);
                        }
                    });
                }
            }
        }
    }

    /// Records `from..=to`, or a prefix of them within about `budget` bytes (at least
    /// one); empty when they are not held.
    pub(crate) async fn read(
        &self,
        job: &JobId,
        from: u64,
        to: u64,
        budget: usize,
    ) -> Result<Vec<Arc<Entry>>, StoreError> {
        let hot = self.read_local(job, from, to, budget).await;
        match self.archive() {
            Some(archive) => {
                crate::archive::tiered::read(archive, job, from, to, budget, hot).await
            }
            None => hot,
        }
    }

    /// Records as the store itself holds them, never from the archive: what the
    /// archive's writer encodes.
    pub(crate) async fn read_local(
        &self,
        job: &JobId,
        from: u64,
        to: u64,
        budget: usize,
    ) -> Result<Vec<Arc<Entry>>, StoreError> {
        match self {
            Self::Memory(_) => Ok(Vec::new()),
            Self::Spool(s) => {
                let (spool, id) = (Arc::clone(s), job.clone());
                s.reader
                    .run(move || spool.read(&id, from, to, budget))
                    .await
            }
            Self::Redis(r) => r.read(job, from, to, budget).await,
        }
    }

    /// Forces the job's appended records to stable storage.
    pub(crate) async fn sync(&self, job: &JobId) -> Result<(), StoreError> {
        match self {
            Self::Spool(s) => s.sync_off_runtime(job).await,
            // Redis's own persistence settings (appendfsync) decide.
            _ => Ok(()),
        }
    }

    /// The fsync policy appends follow.
    pub(crate) fn fsync(&self) -> Fsync {
        match self {
            Self::Spool(s) => s.fsync(),
            _ => Fsync::Never,
        }
    }

    /// Every job held, at start-up (the spool read them when it opened; Redis loads
    /// each on first use).
    pub(crate) fn recover(&self) -> Vec<Recovered> {
        match self {
            Self::Spool(s) => s.recover(),
            _ => Vec::new(),
        }
    }

    /// Drops finished jobs from memory's point of view, and deletes what retention and
    /// the disk budget say must go (never a running job). Returns the jobs deleted, so
    /// memory drops them too.
    pub(crate) async fn sweep(
        &self,
        forgotten: Vec<(JobId, Tombstone)>,
        now_ms: u64,
    ) -> Vec<JobId> {
        match self {
            Self::Memory(m) => {
                for (job, tombstone) in forgotten {
                    m.forget(&job, tombstone);
                }
                Vec::new()
            }
            Self::Spool(s) => blocking(s, move |s| Ok(s.sweep(now_ms)))
                .await
                .unwrap_or_default(),
            // The keys expire by themselves, and other instances may still serve them.
            Self::Redis(_) => Vec::new(),
        }
    }

    /// Finished jobs whose records are still held here, for the archive's writer.
    pub(crate) async fn finished(&self) -> Vec<Recovered> {
        match self {
            Self::Spool(s) => blocking(s, |s| Ok(s.finished())).await.unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// The job's log (in life `life`) is safe in the archive: drop the local copy and
    /// leave a tombstone (the spool) or the archived marker (Redis), which send later
    /// requests for the job to the archive.
    pub(crate) async fn drop_archived(&self, job: &JobId, life: &str) {
        match self {
            Self::Spool(s) => {
                let job = job.clone();
                let _ = blocking(s, move |s| {
                    s.drop_archived(&job);
                    Ok(())
                })
                .await;
            }
            Self::Redis(r) => {
                match r.mark_archived(job, life).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::debug!(job.id = %job, "the job changed life before it was marked archived; its keys stay");
                    }
                    Err(e) => {
                        tracing::warn!(job.id = %job, error = %e.report(), "cannot mark an archived job; its keys stay until retention");
                    }
                }
                r.unqueue_archive(job).await;
            }
            Self::Memory(_) => {}
        }
    }

    /// Applies the lifecycle to jobs no instance may hold (a shared store, when this
    /// instance holds the sweep's lease for `lease`); returns the jobs it ended.
    pub(crate) async fn sweep_lifecycle(
        &self,
        lost_before_ms: u64,
        expired_before_ms: u64,
        lease: Duration,
    ) -> Vec<(JobId, JobStatus)> {
        match self {
            Self::Redis(r) => {
                // The jobs it ends, and any finished job whose instance died before
                // queueing it, are queued for the archive by the sweep itself.
                let quiet = r.archive().map(|a| a.config.quiet.as_millis() as u64);
                r.sweep_jobs(
                    lost_before_ms,
                    expired_before_ms,
                    lease.as_millis() as u64,
                    quiet,
                )
                .await
            }
            _ => Vec::new(),
        }
    }

    /// Delivers the job's records that other instances store to `follower` while it
    /// has readers, in life `life` (a shared store; others have nothing to deliver).
    pub(crate) fn follow(&self, job: &JobId, life: &str, follower: Weak<dyn Follower>) {
        if let Self::Redis(r) = self {
            r.follow(job, life, follower);
        }
    }

    /// A reader started waiting on the job: make sure its records are being followed.
    pub(crate) fn wake(&self, job: &JobId) {
        if let Self::Redis(r) = self {
            r.wake(job);
        }
    }

    /// Forces everything appended to stable storage, at shutdown.
    pub(crate) async fn flush(&self) {
        if let Self::Spool(s) = self {
            let _ = blocking(s, |s| {
                s.flush();
                Ok(())
            })
            .await;
        }
    }

    /// Why the store cannot serve now, for `/readyz`.
    pub(crate) fn unready(&self) -> Option<String> {
        match self {
            Self::Redis(r) => r.unready(),
            _ => None,
        }
    }
}

/// The life of a job in a local store (memory, spool): its creation time in hex
/// milliseconds. It is kept with the job, so a restart of the spool keeps it; a job
/// created again (after a `--memory-only` restart, or once its tombstone expired) gets
/// a new one. Redis gives each life a random id instead.
pub(crate) fn local_life(progress: &Progress) -> String {
    format!("{:x}", progress.created_ms)
}

/// A job's local copy, which a shared store keeps up to date (`JobLog`).
pub(crate) trait Follower: Send + Sync {
    /// Someone here waits for the job's records.
    fn is_followed(&self) -> bool;
    /// The seq the local copy expects next.
    fn next_seq(&self) -> u64;
    /// Takes records the store holds (in seq order) and wakes readers.
    fn absorb(&self, entries: Vec<Arc<Entry>>);
    /// The store lost the job: readers end, and reconnect to its new life.
    fn end(&self);
}

/// Milliseconds since the Unix epoch now.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
