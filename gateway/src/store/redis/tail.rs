//! Following jobs for local readers: the jobs this instance holds, which of them have
//! readers here, and the task that follows them ([`super::follow`]) into their local
//! rings, reconnecting after any failure. Redis work grows with records, never with
//! readers or idle followed jobs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use redis::Value;
use tokio::sync::Notify;

use super::keys::JobKeys;
use super::link::Conn;
use super::script::{decode_entries, text};
use crate::job_id::JobId;
use crate::store::Follower;

/// Records read per job per catch-up read.
pub(super) const COUNT: usize = 128;
/// A subscription that lasted this long was healthy: the next failure pauses briefly.
const HEALTHY: Duration = Duration::from_secs(5);

struct Registered {
    epoch: String,
    follower: Weak<dyn Follower>,
}

/// The jobs this instance holds, and which of them the subscription covers.
#[derive(Default)]
pub(crate) struct Followed {
    jobs: Mutex<HashMap<JobId, Registered>>,
    /// Jobs the subscription covers now; a job outside it wakes the follower.
    reading: Mutex<HashSet<JobId>>,
    /// Wakes the follower: a job got its first reader here.
    pub(super) poke: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Followed {
    /// Registers `job` in its life `epoch` (replacing an earlier life's registration).
    pub(crate) fn register(&self, job: &JobId, epoch: &str, follower: Weak<dyn Follower>) {
        let mut jobs = lock(&self.jobs);
        jobs.retain(|_, r| r.follower.strong_count() > 0);
        jobs.insert(
            job.clone(),
            Registered {
                epoch: epoch.to_string(),
                follower,
            },
        );
    }

    /// Whether the subscription covers `job`.
    pub(crate) fn is_reading(&self, job: &JobId) -> bool {
        lock(&self.reading).contains(job)
    }

    pub(crate) fn poke(&self) {
        self.poke.notify_one();
    }

    /// The followed jobs with readers now.
    pub(super) fn round(&self) -> Vec<(JobId, Arc<dyn Follower>)> {
        let mut jobs = lock(&self.jobs);
        jobs.retain(|_, r| r.follower.strong_count() > 0);
        let round: Vec<_> = jobs
            .iter()
            .filter_map(|(id, r)| {
                let f = r.follower.upgrade()?;
                f.is_followed().then(|| (id.clone(), f))
            })
            .collect();
        super::metrics::get().set_followed(round.len());
        round
    }

    /// The jobs the subscription covers from now on.
    pub(super) fn set_reading(&self, jobs: HashSet<JobId>) {
        *lock(&self.reading) = jobs;
    }

    fn epochs(&self) -> Vec<(JobId, String, Weak<dyn Follower>)> {
        lock(&self.jobs)
            .iter()
            .map(|(id, r)| (id.clone(), r.epoch.clone(), r.follower.clone()))
            .collect()
    }

    fn forget(&self, job: &JobId) {
        lock(&self.jobs).remove(job);
    }
}

/// Follows jobs for as long as the runtime runs: reconnects after any failure, and then
/// checks that Redis still holds each job in the same life.
pub(crate) async fn run(followed: Arc<Followed>, conn: Conn, url: String, timeout: Duration) {
    let mut pause = Duration::from_millis(50);
    loop {
        let result = match check_lives(&followed, &conn).await {
            Ok(()) => {
                let since = Instant::now();
                let result = super::follow::follow(&followed, &conn, &url, timeout).await;
                if since.elapsed() > HEALTHY {
                    // It ran a while: the next failure is a new one.
                    pause = Duration::from_millis(50);
                }
                result
            }
            Err(e) => Err(e),
        };
        followed.set_reading(HashSet::new());
        if let Err(e) = result {
            tracing::debug!(error = %e, "redis follower lost its connection");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Ends every job Redis no longer holds in the life this instance knows: its readers
/// reconnect and are told to reset.
async fn check_lives(followed: &Followed, conn: &Conn) -> redis::RedisResult<()> {
    for (job, epoch, follower) in followed.epochs() {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(JobKeys::new(&job).meta).arg("ep");
        let now: Option<String> = conn.query(&cmd).await?;
        if now.as_deref() != Some(epoch.as_str()) {
            tracing::warn!(job.id = %job, "redis lost the job; its readers start again");
            followed.forget(&job);
            if let Some(f) = follower.upgrade() {
                f.end();
            }
        }
    }
    Ok(())
}

/// Hands each stream of an `XREAD` reply to its job; returns the most records one had.
pub(super) fn deliver(round: &[(JobId, Arc<dyn Follower>)], reply: &Value) -> usize {
    let streams: Vec<(&Value, &Value)> = match reply {
        Value::Array(items) => items
            .iter()
            .filter_map(|s| match s {
                Value::Array(kv) if kv.len() == 2 => Some((&kv[0], &kv[1])),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        _ => return 0,
    };
    let mut got = 0;
    for (key, entries) in streams {
        let Some(key) = text(key) else { continue };
        let Some((job, follower)) = round.iter().find(|(job, _)| JobKeys::new(job).log == key)
        else {
            continue;
        };
        match decode_entries(entries) {
            Ok(entries) if !entries.is_empty() => {
                got = got.max(entries.len());
                follower.absorb(entries);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(job.id = %job, error = %e, "cannot read a job's stream"),
        }
    }
    got
}
