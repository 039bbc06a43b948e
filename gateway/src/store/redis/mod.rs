//! The shared store (`--redis-url`): any number of instances serve the same jobs from
//! Redis, the source of truth. A job is a stream of records (`tailgate:{job}:log`, entry
//! ids `<seq>-0`) and a meta hash; every change is one atomic run of [`script`]'s job
//! script, so two instances never give one seq to two records. Each instance follows the
//! jobs its readers watch ([`tail`]) into their local rings.

pub(crate) mod errors;
pub(crate) mod keys;
pub(crate) mod lease;
pub(crate) mod link;
pub(crate) mod metrics;
pub(crate) mod policy;
pub(crate) mod replicas;
pub(crate) mod script;
pub(crate) mod sharded;
pub(crate) mod tail;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use super::{Appended, Follower, Fsync, Opened, Progress, Recovered, Store, StoreError, Tombstone};
use crate::entry::Entry;
use crate::job_id::JobId;
use crate::record::JobStatus;
use crate::rules::Incoming;
use keys::JobKeys;
use link::{Bridge, Conn};
use script::{Common, Prepared};
use tail::Followed;

/// Where Redis is and how long to wait for it.
#[derive(Debug, Clone)]
pub(crate) struct RedisSettings {
    /// `redis://` or `rediss://` (TLS).
    pub(crate) url: String,
    pub(crate) cluster: bool,
    /// A round trip takes at most this long before the store reports Redis unavailable.
    pub(crate) timeout: Duration,
    /// Replicas that must have an append before it is acknowledged (0: none).
    pub(crate) wait_replicas: u32,
    /// A finished job's keys expire this long after it finished.
    pub(crate) retention: Duration,
    /// Its tombstone answers 410 this much longer.
    pub(crate) tombstone_ttl: Duration,
}

/// Records sent to the script per call at most, so one call never holds Redis long.
const MAX_SCRIPT_RECORDS: usize = 1000;
/// How often readiness is checked, and how long its `PING` may take: `/readyz` turns
/// 503 within 1.5 s of Redis going away or freezing.
const HEALTH_EVERY: Duration = Duration::from_millis(500);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// The shared store.
pub(crate) struct RedisStore {
    bridge: Bridge,
    conn: Conn,
    common: Common,
    followed: Arc<Followed>,
    /// Why Redis cannot be used now (`None`: ready), for `/readyz`.
    unready: Arc<Mutex<Option<String>>>,
    /// The lifecycle sweep's place in `tailgate:jobs`.
    sweep: lease::Sweep,
    /// Replicas an append waits for (`--redis-wait-replicas`).
    replicas: replicas::Replicas,
}

impl RedisStore {
    /// Starts the Redis thread, the health check (which loads the script) and the
    /// tailer. Redis need not be up: until it is, `/readyz` says so.
    pub(crate) fn open(settings: RedisSettings) -> Result<Arc<Self>, std::io::Error> {
        let bridge = Bridge::start(settings.timeout)?;
        let conn = {
            let _redis_thread = bridge.enter();
            Conn::new(&settings.url, settings.cluster, settings.timeout)
                .map_err(|e| std::io::Error::other(format!("redis: {e}")))?
        };
        let store = Arc::new(Self {
            bridge,
            conn: conn.clone(),
            common: Common {
                instance: format!("{:016x}", rand::random::<u64>()),
                retention: settings.retention,
                tombstone_ttl: settings.tombstone_ttl,
            },
            followed: Arc::new(Followed::default()),
            unready: Arc::new(Mutex::new(Some("redis: not connected yet".into()))),
            sweep: lease::Sweep::default(),
            replicas: replicas::Replicas::new(settings.wait_replicas, settings.timeout),
        });
        store
            .bridge
            .spawn(health(conn.clone(), Arc::clone(&store.unready)));
        store.bridge.spawn(tail::run(
            Arc::clone(&store.followed),
            conn,
            settings.url,
            settings.timeout,
        ));
        Ok(store)
    }

    fn call(
        &self,
        job: &JobId,
        op: &str,
        add: impl FnOnce(&mut redis::ScriptInvocation<'static>),
    ) -> Result<redis::Value, StoreError> {
        let mut inv = script::invocation(job, op, super::now_ms(), &self.common);
        add(&mut inv);
        let conn = self.conn.clone();
        let reply = self
            .bridge
            .block(async move { conn.invoke::<redis::Value>(&inv).await });
        self.noted(reply)
    }

    /// Passes `result` on; a failure marks the store unready until the health check
    /// reaches Redis again.
    fn noted<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::Unavailable(why)) = &result {
            *self.unready.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
        }
        result
    }

    fn load_job(&self, job: &JobId) -> Result<script::Loaded, StoreError> {
        let reply = self.call(job, "load", |_| {})?;
        let loaded = script::decode_load(job, &reply).map_err(StoreError::Io)?;
        if let script::Loaded::Job {
            recovered,
            created: true,
            ..
        } = &loaded
        {
            self.list_job(job, recovered.progress.created_ms);
        }
        Ok(loaded)
    }

    fn run_append(
        &self,
        job: &JobId,
        records: &[Prepared],
        ts: SystemTime,
        max_log_bytes: u64,
    ) -> Result<Appended, StoreError> {
        let reply = self.call(job, "append", |inv| {
            script::append_args(inv, records, ts, max_log_bytes)
        })?;
        if !self.replicas.is_off() {
            let (replicas, conn) = (self.replicas, self.conn.clone());
            let confirmed = self.bridge.block(async move { replicas.wait(&conn).await });
            self.noted(confirmed.and_then(|n| self.replicas.check(n)))?;
        }
        script::decode_append(&reply, records, ts).map_err(StoreError::Io)
    }
}

impl RedisStore {
    /// Ends the job as its lifecycle says (the script's `end` op), once, whichever
    /// instance asks first.
    pub(crate) fn end_job_if_idle(
        &self,
        job: &JobId,
        lost_before_ms: u64,
        expired_before_ms: u64,
    ) -> Result<Appended, StoreError> {
        let ts = SystemTime::now();
        let records = [
            script::prepare_status(JobStatus::Lost, ts),
            script::prepare_status(JobStatus::Expired, ts),
        ];
        let now = script::ms(ts);
        let mut inv = script::invocation(job, "end", now, &self.common);
        inv.arg(lost_before_ms)
            .arg(records[0].rest())
            .arg(expired_before_ms)
            .arg(records[1].rest());
        let conn = self.conn.clone();
        let reply = self.noted(
            self.bridge
                .block(async move { conn.invoke::<redis::Value>(&inv).await }),
        )?;
        let mut appended = script::decode_append(&reply, &records, ts).map_err(StoreError::Io)?;
        // The script names the one record it stored as the first; it is whichever
        // status the job took.
        if appended.progress.status == JobStatus::Expired {
            let reply = script::decode_append(&reply, &records[1..], ts).map_err(StoreError::Io)?;
            appended = reply;
        }
        Ok(appended)
    }
}

/// Pings Redis every second: readiness follows, and the script is loaded (again) each
/// time Redis comes back, so appends run it by its SHA.
async fn health(conn: Conn, unready: Arc<Mutex<Option<String>>>) {
    let mut loaded = false;
    let mut ever_ready = false;
    loop {
        let ping = tokio::time::timeout(HEALTH_TIMEOUT, conn.query::<String>(&redis::cmd("PING")))
            .await
            .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))));
        let state = match ping {
            Ok(_) if loaded => None,
            Ok(_) => match load_script(&conn).await {
                Ok(()) => {
                    loaded = true;
                    policy::check(&conn).await;
                    tracing::info!("redis is ready");
                    None
                }
                Err(e) => Some(format!("redis: cannot load the job script: {e}")),
            },
            Err(e) => {
                loaded = false;
                Some(format!("redis: {e}"))
            }
        };
        let was = std::mem::replace(
            &mut *unready.lock().unwrap_or_else(|e| e.into_inner()),
            state.clone(),
        );
        if let (Some(why), None) = (&state, &was) {
            tracing::warn!(error = %why, "redis is unavailable");
        }
        if state.is_none() && was.is_some() && ever_ready {
            metrics::get().reconnected();
        }
        ever_ready |= state.is_none();
        tokio::time::sleep(HEALTH_EVERY).await;
    }
}

async fn load_script(conn: &Conn) -> redis::RedisResult<()> {
    let code = include_str!("job.lua");
    let _: String = conn
        .query(redis::cmd("SCRIPT").arg("LOAD").arg(code))
        .await?;
    Ok(())
}

impl Store for RedisStore {
    fn is_durable(&self) -> bool {
        true
    }

    fn drops_idle_copies(&self) -> bool {
        // Redis holds the job for every instance, and the lease sweep ends it.
        true
    }

    fn open(&self, job: &JobId, _held: Option<&str>) -> Result<Opened, StoreError> {
        // Every request asks: another instance may have moved the job on, or Redis may
        // have lost it (a new life).
        Ok(match self.load_job(job)? {
            script::Loaded::Job {
                recovered, epoch, ..
            } => Opened::Job {
                recovered,
                life: epoch,
            },
            script::Loaded::Gone(tombstone) => Opened::Gone(tombstone),
        })
    }

    fn append(
        &self,
        job: &JobId,
        _cached: &Progress,
        batch: Vec<Incoming>,
        max_log_bytes: u64,
    ) -> Result<Appended, StoreError> {
        let ts = SystemTime::now();
        let records: Vec<Prepared> = batch.into_iter().map(|i| script::prepare(i, ts)).collect();
        let mut total = Appended::default();
        for chunk in records.chunks(MAX_SCRIPT_RECORDS) {
            let appended = self.run_append(job, chunk, ts, max_log_bytes)?;
            total.absorb(appended);
            if total.finished {
                break;
            }
        }
        Ok(total)
    }

    fn end_if_idle(
        &self,
        job: &JobId,
        _cached: &Progress,
        lost_before_ms: u64,
        expired_before_ms: u64,
    ) -> Result<Appended, StoreError> {
        self.end_job_if_idle(job, lost_before_ms, expired_before_ms)
    }

    fn note(
        &self,
        job: &JobId,
        activity_ms: u64,
        confirm: Option<(u64, u64)>,
    ) -> Result<(), StoreError> {
        // Best effort and off the caller's path: a lost note only moves the lifecycle
        // or a Capgo resume back a little.
        let mut inv = script::invocation(job, "note", super::now_ms(), &self.common);
        inv.arg(activity_ms);
        match confirm {
            Some((hash, id)) => inv.arg(hash).arg(id),
            None => inv.arg("").arg(""),
        };
        let conn = self.conn.clone();
        let job = job.clone();
        self.bridge.spawn(async move {
            if let Err(e) = conn.invoke::<redis::Value>(&inv).await {
                tracing::debug!(job.id = %job, error = %e, "cannot note a job's state in redis");
            }
        });
        Ok(())
    }

    fn read(
        &self,
        job: &JobId,
        from: u64,
        to: u64,
        budget: usize,
    ) -> Result<Vec<Arc<Entry>>, StoreError> {
        // Entries are a few hundred bytes: ask for about the budget's worth, then cut.
        let count = (budget / 256).clamp(16, 1024);
        let cmd = redis::cmd("XRANGE")
            .arg(JobKeys::new(job).log)
            .arg(format!("{from}-0"))
            .arg(format!("{to}-0"))
            .arg("COUNT")
            .arg(count)
            .to_owned();
        let conn = self.conn.clone();
        let reply = self.noted(
            self.bridge
                .block(async move { conn.query::<redis::Value>(&cmd).await }),
        )?;
        let mut entries = script::decode_entries(&reply).map_err(StoreError::Io)?;
        let mut bytes = 0;
        let keep = entries
            .iter()
            .take_while(|e| {
                bytes += e.sse.len();
                bytes <= budget
            })
            .count()
            .max(1);
        entries.truncate(keep);
        Ok(entries)
    }

    fn sync(&self, _job: &JobId) -> Result<(), StoreError> {
        Ok(())
    }

    fn fsync(&self) -> Fsync {
        // Redis's own persistence settings (appendfsync) decide.
        Fsync::Never
    }

    fn recover(&self) -> Vec<Recovered> {
        // Jobs load from Redis on first use.
        Vec::new()
    }

    fn forget(&self, _job: &JobId, _tombstone: Tombstone) -> bool {
        // The keys expire by themselves, and other instances may still serve the job.
        false
    }

    fn sweep(&self, _now_ms: u64) -> Vec<JobId> {
        Vec::new()
    }

    fn flush(&self) {}

    fn sweep_lifecycle(
        &self,
        lost_before_ms: u64,
        expired_before_ms: u64,
        lease: Duration,
    ) -> Vec<(JobId, JobStatus)> {
        self.sweep_jobs(lost_before_ms, expired_before_ms, lease.as_millis() as u64)
    }

    fn follow(&self, job: &JobId, life: &str, follower: Weak<dyn Follower>) {
        self.followed.register(job, life, follower);
    }

    fn unready(&self) -> Option<String> {
        self.unready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn wake(&self, job: &JobId) {
        if self.followed.is_reading(job) {
            return;
        }
        self.followed.poke();
        // The blocking read in flight does not cover the job: end it early, so the
        // next one does. It may not have reached Redis yet: try again a few times.
        let (followed, conn, job) = (Arc::clone(&self.followed), self.conn.clone(), job.clone());
        self.bridge.spawn(async move {
            for _ in 0..20 {
                if followed.is_reading(&job) {
                    return;
                }
                let id = followed.client_id();
                if id != 0 {
                    let unblocked: redis::RedisResult<i64> = conn
                        .query(redis::cmd("CLIENT").arg("UNBLOCK").arg(id))
                        .await;
                    if matches!(unblocked, Ok(1)) {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
}
