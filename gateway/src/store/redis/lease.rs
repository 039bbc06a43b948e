//! The lifecycle for jobs no instance holds (their instance died, nobody reads them):
//! one instance at a time holds a lease in Redis and checks the unfinished jobs listed
//! in `tailgate:jobs`, oldest first, a bounded slice per tick. Ending a job is the job
//! script's `end` op, so it happens once even when a held copy ends it too.
//!
//! The sweep is also the archive's safety net behind Redis: a finished job leaves the
//! list only after it is in the archive queue (or marked archived), so an instance that
//! died between the terminal status and its `ZADD` to the queue loses no job.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::LazyLock;

use redis::Script;

use super::script::text;
use super::RedisStore;
use crate::job_id::JobId;
use crate::record::JobStatus;

/// Every job created, scored by its creation time; finished jobs leave it.
pub(crate) const JOBS_KEY: &str = "tailgate:jobs";
/// Who runs the sweep now: one instance's id, expiring unless renewed.
const LEASE_KEY: &str = "tailgate:lifecycle-lease";
/// Jobs checked per tick at most.
const SLICE: usize = 500;

/// Takes or renews the lease for `ARGV[2]` ms; 1 when this instance holds it.
static LEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(LEASE_LUA));

const LEASE_LUA: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Where the next slice starts.
#[derive(Default)]
pub(crate) struct Sweep {
    offset: AtomicUsize,
}

impl RedisStore {
    /// Lists a job just created, so the sweep finds it even if nobody holds it.
    pub(super) fn list_job(&self, job: &JobId, created_ms: u64) {
        let cmd = redis::cmd("ZADD")
            .arg(JOBS_KEY)
            .arg("NX")
            .arg(created_ms)
            .arg(job.as_str())
            .to_owned();
        let conn = self.conn.clone();
        tokio::spawn(async move {
            let _: redis::RedisResult<i64> = conn.query(&cmd).await;
        });
    }

    /// When this instance holds the lease (for `lease_ms`), ends the listed jobs the
    /// lifecycle says must end; returns them. With the archive (`archive_quiet_ms`), a
    /// finished job not yet marked archived is queued for it (due its quiet period after
    /// the terminal status) before it leaves the list.
    pub(crate) async fn sweep_jobs(
        &self,
        lost_before_ms: u64,
        expired_before_ms: u64,
        lease_ms: u64,
        archive_quiet_ms: Option<u64>,
    ) -> Vec<(JobId, JobStatus)> {
        let mut inv = LEASE_SCRIPT.prepare_invoke();
        inv.key(LEASE_KEY).arg(&self.common.instance).arg(lease_ms);
        let held = self.round_trip(self.conn.invoke::<i64>(&inv)).await;
        super::metrics::get().set_lease_holder(matches!(held, Ok(1)));
        if !matches!(held, Ok(1)) {
            return Vec::new();
        }
        let from = self.sweep.offset.load(Ordering::Relaxed);
        let cmd = redis::cmd("ZRANGE")
            .arg(JOBS_KEY)
            .arg(from)
            .arg(from + SLICE - 1)
            .to_owned();
        let Ok(listed) = self.round_trip(self.conn.query::<redis::Value>(&cmd)).await else {
            return Vec::new();
        };
        let ids: Vec<JobId> = match &listed {
            redis::Value::Array(items) => items
                .iter()
                .filter_map(text)
                .filter_map(|id| JobId::parse(&id).ok())
                .collect(),
            _ => Vec::new(),
        };
        let next = if ids.len() < SLICE { 0 } else { from + SLICE };
        self.sweep.offset.store(next, Ordering::Relaxed);
        let mut ended = Vec::new();
        let mut done = Vec::new();
        for id in ids {
            let Ok(appended) = self
                .end_if_idle(&id, lost_before_ms, expired_before_ms)
                .await
            else {
                break;
            };
            if !appended.entries.is_empty() {
                ended.push((id.clone(), appended.progress.status));
            }
            if appended.finished || appended.progress.status.is_terminal() {
                done.push((id, appended.progress.finished_ms.unwrap_or(0)));
            }
        }
        if let Some(quiet_ms) = archive_quiet_ms {
            if !self.queue_unarchived(&done, quiet_ms).await {
                // They stay listed, and are queued by a later sweep.
                return ended;
            }
        }
        if !done.is_empty() {
            let mut cmd = redis::cmd("ZREM");
            cmd.arg(JOBS_KEY);
            for (id, _) in &done {
                cmd.arg(id.as_str());
            }
            let conn = self.conn.clone();
            tokio::spawn(async move {
                let _: redis::RedisResult<i64> = conn.query(&cmd).await;
            });
        }
        ended
    }

    /// Queues for the archive each of `done` (finished jobs, with their terminal ms) that
    /// is not marked archived, due `quiet_ms` after it finished. `ZADD NX`: a job queued
    /// already (due, claimed, or waiting for a retry) keeps its place. Whether every
    /// job is queued or marked.
    async fn queue_unarchived(&self, done: &[(JobId, u64)], quiet_ms: u64) -> bool {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(super::archived::QUEUE_KEY).arg("NX");
        let mut queued = 0;
        for (id, finished_ms) in done {
            match self.is_archived(id).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(_) => return false,
            }
            cmd.arg(finished_ms.saturating_add(quiet_ms))
                .arg(id.as_str());
            queued += 1;
        }
        if queued == 0 {
            return true;
        }
        match self.round_trip(self.conn.query::<i64>(&cmd)).await {
            Ok(added) => {
                if added > 0 {
                    tracing::info!(
                        archive.queued = added,
                        "finished jobs missing from the archive queue were queued"
                    );
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e.report(), "cannot queue finished jobs for the archive; they stay listed");
                false
            }
        }
    }
}
