//! Following jobs for local readers: one task per instance reads every followed job's
//! stream with one blocking `XREAD` on its own connection, and hands new records to the
//! job's `JobLog`, which wakes its readers. Redis work grows with instances x followed
//! jobs, never with readers. On a Cluster, where one `XREAD` cannot span slots,
//! [`super::sharded`] follows the jobs by their sharded channels instead.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::Notify;

use super::keys::JobKeys;
use super::link::Conn;
use super::script::{decode_entries, text};
use crate::job_id::JobId;
use crate::store::Follower;

/// How long one `XREAD` blocks when nothing arrives.
const BLOCK: Duration = Duration::from_secs(5);
/// Records read per job per round.
pub(super) const COUNT: usize = 128;

struct Registered {
    epoch: String,
    follower: Weak<dyn Follower>,
}

/// The jobs this instance holds, and which of them the read in flight covers.
#[derive(Default)]
pub(crate) struct Followed {
    jobs: Mutex<HashMap<JobId, Registered>>,
    /// Jobs the current `XREAD` covers; a job outside it wakes the tailer.
    reading: Mutex<HashSet<JobId>>,
    /// Wakes a tailer with nothing to follow, or a Cluster's with a new job.
    pub(super) poke: Notify,
    /// The tailer connection's client id, for `CLIENT UNBLOCK` (0: none).
    client_id: AtomicI64,
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

    /// Whether the read in flight covers `job`.
    pub(crate) fn is_reading(&self, job: &JobId) -> bool {
        lock(&self.reading).contains(job)
    }

    pub(crate) fn client_id(&self) -> i64 {
        self.client_id.load(Ordering::Acquire)
    }

    pub(crate) fn poke(&self) {
        self.poke.notify_one();
    }

    /// The followed jobs with readers now, and where each one's stream continues.
    pub(super) fn round(&self) -> Vec<(JobId, Arc<dyn Follower>, String)> {
        let mut jobs = lock(&self.jobs);
        jobs.retain(|_, r| r.follower.strong_count() > 0);
        let round: Vec<_> = jobs
            .iter()
            .filter_map(|(id, r)| {
                let f = r.follower.upgrade()?;
                if !f.is_followed() {
                    return None;
                }
                let from = format!("{}-0", f.next_seq().saturating_sub(1));
                Some((id.clone(), f, from))
            })
            .collect();
        *lock(&self.reading) = round.iter().map(|(id, ..)| id.clone()).collect();
        super::metrics::get().set_followed(round.len());
        round
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

/// Follows jobs until the Redis thread stops: reconnects after any failure, and then
/// checks that Redis still holds each job in the same life.
pub(crate) async fn run(followed: Arc<Followed>, conn: Conn, url: String, timeout: Duration) {
    let mut pause = Duration::from_millis(50);
    loop {
        let result = if conn.is_cluster() {
            match check_lives(&followed, &conn, None).await {
                Ok(()) => {
                    let since = std::time::Instant::now();
                    let result = super::sharded::follow(&followed, &conn, &url, timeout).await;
                    if since.elapsed() > BLOCK {
                        // It ran a while: the next failure is a new one.
                        pause = Duration::from_millis(50);
                    }
                    result
                }
                Err(e) => Err(e),
            }
        } else {
            match connect(&url, timeout).await {
                Ok((mut tail, id)) => match check_lives(&followed, &conn, Some(&mut tail)).await {
                    Ok(()) => {
                        followed.client_id.store(id, Ordering::Release);
                        pause = Duration::from_millis(50);
                        follow(&followed, tail).await
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        };
        followed.client_id.store(0, Ordering::Release);
        lock(&followed.reading).clear();
        if let Err(e) = result {
            tracing::debug!(error = %e, "redis tailer lost its connection");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

async fn connect(url: &str, timeout: Duration) -> redis::RedisResult<(MultiplexedConnection, i64)> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(BLOCK + timeout));
    let mut tail = redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut tail)
        .await?;
    Ok((tail, id))
}

/// Ends every job Redis no longer holds in the life this instance knows: its readers
/// reconnect and are told to reset. Asks on the tailer's fresh connection when it has
/// one (a Cluster's goes through the command connection).
async fn check_lives(
    followed: &Followed,
    conn: &Conn,
    mut tail: Option<&mut MultiplexedConnection>,
) -> redis::RedisResult<()> {
    for (job, epoch, follower) in followed.epochs() {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(JobKeys::new(&job).meta).arg("ep");
        let now: Option<String> = match tail.as_deref_mut() {
            Some(tail) => cmd.query_async(tail).await?,
            None => conn.query(&cmd).await?,
        };
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

/// One blocking `XREAD` over every followed job after another, until the connection
/// fails.
async fn follow(followed: &Followed, mut tail: MultiplexedConnection) -> redis::RedisResult<()> {
    loop {
        let round = followed.round();
        if round.is_empty() {
            let _ = tokio::time::timeout(BLOCK, followed.poke.notified()).await;
            continue;
        }
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(COUNT)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS");
        for (job, ..) in &round {
            cmd.arg(JobKeys::new(job).log);
        }
        for (_, _, from) in &round {
            cmd.arg(from);
        }
        let reply: Value = cmd.query_async(&mut tail).await?;
        deliver(&round, &reply);
    }
}

/// Hands each stream of an `XREAD` reply to its job; returns the most records one had.
pub(super) fn deliver(round: &[(JobId, Arc<dyn Follower>, String)], reply: &Value) -> usize {
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
        let Some((job, follower, _)) = round.iter().find(|(job, ..)| JobKeys::new(job).log == key)
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
