//! The spool: the embedded durable store. One append-only file per job under
//! `<data-dir>/jobs/`, each record framed with its length and a checksum ([`frame`]),
//! recovered at start-up by one forward scan ([`scan`]) that cuts a torn tail. Retention
//! and a disk budget delete the oldest finished jobs, leaving tombstones.
//!
//! Records reach the OS's page cache (a copy into the job's append window, [`window`],
//! or a `write`) before `append` returns, so before any reader sees them; `--fsync` says
//! when they reach the disk.

pub(crate) mod files;
pub(crate) mod frame;
pub(crate) mod index;
pub(crate) mod job;
pub(crate) mod reader;
pub(crate) mod recover;
pub(crate) mod scan;
pub(crate) mod syncer;
pub(crate) mod window;
pub(crate) mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::tombstones::DirTombstones;
use super::{Appended, Fsync, Opened, Progress, Recovered, StoreError, Tombstone};
use crate::entry::Entry;
use crate::job_id::JobId;
use job::SpoolJob;

/// One batch of records to write: in seq order, and the job's state after them.
#[derive(Debug)]
pub(crate) struct Batch<'a> {
    pub(crate) records: &'a [Arc<Entry>],
    pub(crate) progress: &'a Progress,
}

/// How the spool keeps and drops data.
#[derive(Debug, Clone)]
pub(crate) struct SpoolSettings {
    pub(crate) dir: PathBuf,
    pub(crate) fsync: Fsync,
    /// A finished job's spool is deleted this long after it finished.
    pub(crate) disk_retention: Duration,
    /// The data directory's size at most; the oldest finished jobs go first.
    pub(crate) max_disk_bytes: u64,
    /// Tombstones of deleted jobs are kept this long.
    pub(crate) tombstone_ttl: Duration,
}

/// The data directory could not be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use data directory {}", path.display())]
pub struct OpenError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn err(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError {
    let path = path.to_path_buf();
    move |source| OpenError { path, source }
}

/// How often tombstones are swept (each sweep lists the directory).
const TOMBSTONE_SWEEP_EVERY: Duration = Duration::from_secs(600);

/// The durable store.
pub(crate) struct Spool {
    jobs_dir: PathBuf,
    jobs: DashMap<JobId, Arc<SpoolJob>>,
    tombstones: DirTombstones,
    settings: SpoolSettings,
    /// Bytes of every spool.
    total: AtomicU64,
    /// Jobs deleted to make room during an append, for the next sweep to report.
    deleted: Mutex<Vec<JobId>>,
    /// When tombstones were last swept.
    tombstones_swept: Mutex<Instant>,
    /// The jobs directory, open, for `syncfs`.
    jobs_dir_handle: File,
    /// Where appends, notes and creations are written, off the runtime.
    pub(crate) writer: writer::Writer,
    /// Where records are read back for readers behind the ring, off the runtime.
    pub(crate) reader: writer::Writer,
    /// Where every fsync runs: callers' (`--fsync always`, terminal statuses) and the
    /// interval's tick.
    pub(crate) syncer: syncer::Syncer,
    /// The archive behind the spool (`--archive-url`), set once at start-up: it answers
    /// for jobs the spool archived and dropped.
    pub(crate) archive: std::sync::OnceLock<Arc<crate::archive::Archive>>,
    /// Held for the process's life: one gateway per data directory.
    _lock: File,
}

impl Spool {
    /// Before the server runs: creates and checks the data directory and keeps it locked
    /// until [`Spool::open`] takes the lock over. Cheap: no job is read.
    pub(crate) fn check(dir: &Path) -> Result<(), OpenError> {
        let lock = Self::prepare(dir)?;
        files::keep_lock(dir, lock);
        Ok(())
    }

    /// Creates the data directory if needed, checks it is writable and not in use by
    /// another gateway, and locks it; returns the lock.
    fn prepare(dir: &Path) -> Result<File, OpenError> {
        let jobs_dir = dir.join(files::JOBS);
        let tomb_dir = dir.join(files::TOMBSTONES);
        for d in [dir, &jobs_dir, &tomb_dir] {
            files::create_dir(d).map_err(err(d))?;
        }
        let lock = files::lock(dir).map_err(err(dir))?;
        let probe = jobs_dir.join(".write-probe");
        files::write_new(&probe, b"").map_err(err(&jobs_dir))?;
        let _ = std::fs::remove_file(&probe);
        Ok(lock)
    }

    /// Opens (creating if needed) the data directory and recovers every job in it.
    pub(crate) fn open(settings: SpoolSettings) -> Result<Arc<Self>, OpenError> {
        let dir = settings.dir.clone();
        let lock = Self::prepare(&dir)?;
        if files::is_shared_writable(&dir) {
            tracing::warn!(
                spool.dir = %dir.display(),
                "the data directory is writable by its group or others: they can plant or replace job files (chmod 700 it)"
            );
        }
        let jobs_dir = dir.join(files::JOBS);
        let tomb_dir = dir.join(files::TOMBSTONES);

        let spool = Arc::new(Self {
            tombstones: DirTombstones::new(tomb_dir, settings.tombstone_ttl.as_millis() as u64),
            jobs_dir: jobs_dir.clone(),
            jobs: DashMap::new(),
            settings,
            total: AtomicU64::new(0),
            deleted: Mutex::new(Vec::new()),
            tombstones_swept: Mutex::new(Instant::now()),
            jobs_dir_handle: File::open(&jobs_dir).map_err(err(&jobs_dir))?,
            writer: writer::Writer::start("tailgate-spool-w", true).map_err(err(&jobs_dir))?,
            reader: writer::Writer::start("tailgate-spool-r", false).map_err(err(&jobs_dir))?,
            syncer: syncer::Syncer::new(),
            archive: std::sync::OnceLock::new(),
            _lock: lock,
        });
        let started = Instant::now();
        let listing = std::fs::read_dir(&jobs_dir).map_err(err(&jobs_dir))?;
        for item in listing.flatten() {
            let name = item.file_name();
            let Some(id) = name.to_str().and_then(files::job_of) else {
                continue;
            };
            let job = recover::recover_one(item.path());
            spool.total.fetch_add(job.lock().len, Ordering::Relaxed);
            spool.jobs.insert(id, Arc::new(job));
        }
        tracing::info!(
            spool.dir = %dir.display(),
            spool.jobs = spool.jobs.len(),
            spool.bytes = spool.total.load(Ordering::Relaxed),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "recovered the spool"
        );
        let interval = match spool.settings.fsync {
            Fsync::Interval(every) => Some(every),
            Fsync::Always | Fsync::Never => None,
        };
        spool
            .syncer
            .start(Arc::downgrade(&spool), interval)
            .map_err(err(&jobs_dir))?;
        Ok(spool)
    }

    fn job(&self, id: &JobId) -> Result<Arc<SpoolJob>, StoreError> {
        self.jobs
            .get(id)
            .map(|j| Arc::clone(&j))
            .ok_or_else(|| StoreError::failed(format!("job {id} has no spool (deleted?)")))
    }

    /// Deletes finished jobs, oldest first, until `needed` more bytes fit the budget.
    fn make_room(&self, needed: u64) -> bool {
        let max = self.settings.max_disk_bytes;
        if self.total.load(Ordering::Relaxed) + needed <= max {
            return true;
        }
        let mut finished: Vec<(u64, JobId)> = self
            .jobs
            .iter()
            .filter_map(|j| {
                let st = j.lock();
                st.progress
                    .finished_ms
                    .filter(|_| st.progress.status.is_terminal())
                    .map(|t| (t, j.key().clone()))
            })
            .collect();
        finished.sort();
        let mut deleted = Vec::new();
        for (_, id) in finished {
            if self.total.load(Ordering::Relaxed) + needed <= max {
                break;
            }
            self.delete(&id);
            deleted.push(id);
        }
        if !deleted.is_empty() {
            tracing::info!(
                spool.deleted = deleted.len(),
                "deleted the oldest finished jobs to stay under --max-disk-bytes"
            );
            self.deleted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(deleted);
        }
        self.total.load(Ordering::Relaxed) + needed <= max
    }

    /// Removes a job's spool and leaves its tombstone.
    fn delete(&self, id: &JobId) {
        let Some((_, job)) = self.jobs.remove(id) else {
            return;
        };
        let st = job.lock();
        let tombstone = Tombstone {
            status: st.progress.status,
            exit_code: st.progress.exit_code,
            finished_ms: st.progress.finished_ms,
            deleted_ms: super::now_ms(),
        };
        if let Err(e) = self.tombstones.insert(id, &tombstone) {
            tracing::warn!(job.id = %id, error = %e, "cannot write a tombstone");
        }
        match std::fs::remove_file(&job.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(job.id = %id, error = %e, "cannot delete a spool"),
        }
        self.total.fetch_sub(st.len, Ordering::Relaxed);
    }

    /// The fsync of `--fsync interval` (and of shutdown, with `all`): each dirty spool,
    /// or, when many are dirty, one `syncfs` of the data directory's filesystem (one call
    /// instead of one per job). After a `syncfs`, what was written while it ran waits for
    /// the next interval, unless `all`: fsyncing it alone made the interval path cost
    /// one `fdatasync` per busy job per tick (measured: most of the spool's fsync CPU).
    fn sync_dirty(&self, all: bool) {
        let jobs: Vec<Arc<SpoolJob>> = self.jobs.iter().map(|j| Arc::clone(&j)).collect();
        let covered = self.sync_jobs(&jobs.iter().collect::<Vec<_>>());
        if covered && !all {
            return;
        }
        // What is still dirty (or was written meanwhile) is synced alone; finished jobs
        // close their writers.
        for job in jobs {
            if let Err(e) = job.sync() {
                tracing::warn!(error = %e.report(), "background fsync failed");
            }
        }
    }

    /// When many of `jobs` have frames not yet on disk, one `syncfs` covers them all
    /// (what each had written when it started) and `true` says so; otherwise nothing is
    /// done, and each is left to its own fsync ([`SpoolJob::sync`]).
    fn sync_jobs(&self, jobs: &[&Arc<SpoolJob>]) -> bool {
        let dirty: Vec<(&Arc<SpoolJob>, u64)> = jobs
            .iter()
            .filter_map(|j| j.unsynced().map(|upto| (*j, upto)))
            .collect();
        if !cfg!(target_os = "linux") || dirty.len() < SYNCFS_FROM {
            return false;
        }
        let started = Instant::now();
        let synced = syncfs(&self.jobs_dir_handle);
        crate::metrics::get().fsynced(started.elapsed());
        match synced {
            // It started after each of those bytes was written.
            Ok(()) => {
                dirty.iter().for_each(|(job, upto)| job.mark_synced(*upto));
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "syncfs failed: each spool is fsynced alone");
                false
            }
        }
    }
}

/// From this many dirty spools on, one `syncfs` replaces their fsyncs.
const SYNCFS_FROM: usize = 8;

#[cfg(target_os = "linux")]
fn syncfs(dir: &File) -> std::io::Result<()> {
    rustix::fs::syncfs(dir).map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn syncfs(_dir: &File) -> std::io::Result<()> {
    Err(std::io::Error::other("syncfs is Linux-only"))
}

fn recovered(id: &JobId, job: &SpoolJob) -> Recovered {
    let st = job.lock();
    Recovered {
        id: id.clone(),
        life: super::local_life(&st.progress),
        progress: st.progress,
        confirmations: st.confirmations.clone(),
        broken: st.broken.clone(),
    }
}

impl Spool {
    /// The job a request names, when memory does not hold it: as the spool holds it,
    /// else created (unless a tombstone says it was deleted).
    pub(crate) fn open_job(&self, id: &JobId) -> Result<Opened, StoreError> {
        if let Some(recovered) = self.load(id) {
            return Ok(Opened::Job(recovered));
        }
        if let Some(tombstone) = self.tombstone(id) {
            return Ok(Opened::Gone(tombstone));
        }
        let progress = Progress::new(super::now_ms());
        self.create(id, &progress)?;
        tracing::debug!(job.id = %id, "job created");
        Ok(Opened::Job(Recovered::new(id.clone(), progress)))
    }

    /// Whether the spool holds the job (it was not deleted). No I/O.
    pub(crate) fn holds(&self, id: &JobId) -> bool {
        self.jobs.contains_key(id)
    }

    /// The job an append goes to, and its state as last written (where the rules start
    /// from). No I/O. Looked up once per append and handed to the writer thread: each
    /// lookup hashes the job id, and the three an append made cost the workers about 45 ms
    /// of a ci-shape run (perf). Only finished jobs are deleted, and nothing is written to
    /// a finished job, so the job cannot go between this and the write.
    pub(crate) fn job_for_append(
        &self,
        id: &JobId,
    ) -> Result<(Arc<SpoolJob>, Progress), StoreError> {
        let job = self.job(id)?;
        let progress = job.lock().progress;
        Ok((job, progress))
    }

    /// Notes a sign of the publisher and a Capgo confirmation.
    pub(crate) fn note(
        &self,
        id: &JobId,
        activity_ms: u64,
        confirm: Option<(u64, u64)>,
    ) -> Result<(), StoreError> {
        let job = self.job(id)?;
        let added = job.note(activity_ms, confirm)?;
        self.total.fetch_add(added, Ordering::Relaxed);
        Ok(())
    }

    /// Records `from..=to`, or a prefix within about `budget` bytes.
    pub(crate) fn read(
        &self,
        id: &JobId,
        from: u64,
        to: u64,
        budget: usize,
    ) -> Result<Vec<Arc<Entry>>, StoreError> {
        match self.jobs.get(id).map(|j| Arc::clone(&j)) {
            Some(job) => job.read(from, to, budget),
            // Not a gap: the records are gone with the job.
            None => Err(StoreError::failed(format!(
                "job {id} was deleted by retention or the disk budget"
            ))),
        }
    }

    /// Forces the job's appended records to disk. Blocking (tests call it from threads).
    #[cfg(test)]
    pub(crate) fn sync(&self, id: &JobId) -> Result<(), StoreError> {
        match self.jobs.get(id).map(|j| Arc::clone(&j)) {
            Some(job) => job.sync(),
            None => Ok(()),
        }
    }

    /// Forces the job's appended records to disk, on the fsync thread ([`syncer`]).
    pub(crate) async fn sync_off_runtime(&self, id: &JobId) -> Result<(), StoreError> {
        match self.jobs.get(id).map(|j| Arc::clone(&j)) {
            Some(job) => self.syncer.sync(job).await,
            None => Ok(()),
        }
    }

    /// Bytes of every spool.
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The fsync policy appends follow.
    pub(crate) fn fsync(&self) -> Fsync {
        self.settings.fsync
    }

    /// Every job held, as recovered at start-up.
    pub(crate) fn recover(&self) -> Vec<Recovered> {
        self.jobs
            .iter()
            .map(|j| recovered(j.key(), j.value()))
            .collect()
    }

    /// Finished jobs whose records are still held here, for the archive's writer.
    pub(crate) fn finished(&self) -> Vec<Recovered> {
        self.jobs
            .iter()
            .filter(|j| j.lock().progress.status.is_terminal())
            .map(|j| recovered(j.key(), j.value()))
            .collect()
    }

    /// The job's log is safe in the archive: drop the local copy and leave a tombstone.
    pub(crate) fn drop_archived(&self, id: &JobId) {
        self.delete(id);
    }

    /// Deletes what retention and the disk budget say must go; returns the jobs deleted.
    pub(crate) fn sweep(&self, now_ms: u64) -> Vec<JobId> {
        let mut gone: Vec<JobId> =
            std::mem::take(&mut *self.deleted.lock().unwrap_or_else(|e| e.into_inner()));
        let keep_ms = self.settings.disk_retention.as_millis() as u64;
        let old: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|j| {
                let st = j.lock();
                st.progress.status.is_terminal()
                    && st
                        .progress
                        .finished_ms
                        .is_some_and(|t| now_ms.saturating_sub(t) >= keep_ms)
            })
            .map(|j| j.key().clone())
            .collect();
        for id in old {
            self.delete(&id);
            gone.push(id);
        }
        self.make_room(0);
        gone.extend(std::mem::take(
            &mut *self.deleted.lock().unwrap_or_else(|e| e.into_inner()),
        ));
        let mut swept = self
            .tombstones_swept
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if swept.elapsed() >= TOMBSTONE_SWEEP_EVERY {
            *swept = Instant::now();
            self.tombstones.sweep(now_ms);
        }
        gone
    }

    /// Forces everything appended to disk, at shutdown, and gives back the running jobs'
    /// append windows (a clean restart finds no zeros to cut). Blocking.
    pub(crate) fn flush(&self) {
        self.sync_dirty(true);
        for job in self.jobs.iter() {
            job.trim();
        }
    }
}

impl Spool {
    /// Makes a new job known, so it survives a restart even before its first record.
    pub(crate) fn create(&self, id: &JobId, progress: &Progress) -> Result<(), StoreError> {
        if self.jobs.contains_key(id) {
            return Ok(());
        }
        if !self.make_room(256) {
            return Err(self.full());
        }
        let path = files::spool_path(&self.jobs_dir, id);
        let mut head = bytes::BytesMut::from(&frame::MAGIC[..]);
        let meta = scan::Meta {
            progress: *progress,
            confirm: None,
            lost: None,
        };
        frame::put_meta(&mut head, &serde_json::to_vec(&meta).unwrap_or_default());
        files::write_new(&path, &head).map_err(|e| {
            tracing::warn!(spool.path = %path.display(), error = %e, "cannot create a spool");
            StoreError::io("cannot create the job's spool", &e)
        })?;
        self.tombstones.remove(id);
        let job = SpoolJob::new(
            path,
            head.len() as u64,
            Default::default(),
            *progress,
            Vec::new(),
            None,
        );
        self.total.fetch_add(head.len() as u64, Ordering::Relaxed);
        self.jobs.insert(id.clone(), Arc::new(job));
        Ok(())
    }

    /// [`Spool::write_job`] to the job `id` (tests write this way).
    #[cfg(test)]
    pub(crate) fn write(&self, id: &JobId, batch: Batch<'_>) -> Result<(), StoreError> {
        let job = self.job(id)?;
        self.write_job(&job, batch)
    }

    /// Writes records the rules made (seq order, continuing the job's last) and the
    /// state after them. On error nothing of the batch is kept.
    fn write_job(&self, job: &SpoolJob, batch: Batch<'_>) -> Result<(), StoreError> {
        let needed: u64 = batch
            .records
            .iter()
            .map(|e| e.json().len() as u64 + 40)
            .sum();
        if !self.make_room(needed) {
            return Err(self.full());
        }
        let added = job.append(batch.records, batch.progress, None)?;
        self.total.fetch_add(added, Ordering::Relaxed);
        Ok(())
    }

    /// The job as the spool holds it, if it does.
    pub(crate) fn load(&self, id: &JobId) -> Option<Recovered> {
        let job = self.jobs.get(id).map(|j| Arc::clone(&j))?;
        Some(recovered(id, &job))
    }

    /// The tombstone of a job deleted by retention.
    pub(crate) fn tombstone(&self, id: &JobId) -> Option<Tombstone> {
        self.tombstones.get(id, super::now_ms())
    }

    /// Writes what the rules made of an append to the job at `from`; nothing when they
    /// changed nothing. Returns it, as stored.
    pub(crate) fn store(
        &self,
        job: &SpoolJob,
        from: &Progress,
        appended: Appended,
    ) -> Result<Appended, StoreError> {
        if appended.progress != *from {
            self.write_job(
                job,
                Batch {
                    records: &appended.entries,
                    progress: &appended.progress,
                },
            )?;
        }
        Ok(appended)
    }

    /// [`Spool::store`] on the writer thread, awaited, to `job` as [`Spool::job_for_append`]
    /// found it.
    pub(crate) async fn store_off_runtime(
        self: &Arc<Self>,
        job: Arc<SpoolJob>,
        from: Progress,
        appended: Appended,
    ) -> Result<Appended, StoreError> {
        // The job's address tells the writer appends of many jobs from one busy job.
        let key = Arc::as_ptr(&job) as usize;
        let spool = Arc::clone(self);
        self.writer
            .run_for(key, move || spool.store(&job, &from, appended))
            .await
    }

    fn full(&self) -> StoreError {
        StoreError::full(format!(
            "the data directory holds its maximum of {} bytes (--max-disk-bytes) in running jobs",
            self.settings.max_disk_bytes
        ))
    }
}

#[cfg(test)]
mod tests;
