//! The shared store (`--redis-url`): any number of instances serve the same jobs from
//! Redis, the source of truth. A job is a stream of records (`tailgate:{job}:log`, entry
//! ids `<seq>-0`) and a meta hash; every change is one atomic run of [`script`]'s job
//! script, so two instances never give one seq to two records. Each instance follows the
//! jobs its readers watch ([`tail`], [`follow`]) into their local rings, from the records
//! the script publishes with each append ([`notice`]).

pub(crate) mod archived;
pub(crate) mod errors;
pub(crate) mod follow;
pub(crate) mod keys;
pub(crate) mod lease;
pub(crate) mod link;
pub(crate) mod metrics;
pub(crate) mod notice;
pub(crate) mod policy;
pub(crate) mod replicas;
pub(crate) mod script;
pub(crate) mod tail;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use super::{Appended, Follower, Opened, StoreError};
use crate::entry::Entry;
use crate::job_id::JobId;
use crate::record::JobStatus;
use crate::rules::Incoming;
use link::Conn;
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
    conn: Conn,
    /// How long one round trip may take before Redis counts as unavailable.
    timeout: Duration,
    common: Common,
    followed: Arc<Followed>,
    /// Why Redis cannot be used now (`None`: ready), for `/readyz`.
    unready: Arc<Mutex<Option<String>>>,
    /// The lifecycle sweep's place in `tailgate:jobs`.
    sweep: lease::Sweep,
    /// Replicas an append waits for (`--redis-wait-replicas`).
    replicas: replicas::Replicas,
    /// The archive behind Redis (`--archive-url`), set once at start-up ([`archived`]).
    pub(crate) archive: std::sync::OnceLock<Arc<crate::archive::Archive>>,
}

impl RedisStore {
    /// Starts the health check (which loads the script) and the tailer, as tasks on the
    /// current runtime. Redis need not be up: until it is, `/readyz` says so.
    pub(crate) fn open(settings: RedisSettings) -> Result<Arc<Self>, redis::RedisError> {
        let conn = Conn::new(&settings.url, settings.cluster, settings.timeout)?;
        let store = Arc::new(Self {
            conn: conn.clone(),
            timeout: settings.timeout,
            common: Common {
                instance: format!("{:016x}", rand::random::<u64>()),
                retention: settings.retention,
                tombstone_ttl: settings.tombstone_ttl,
                announce: if settings.cluster {
                    "SPUBLISH"
                } else {
                    "PUBLISH"
                },
            },
            followed: Arc::new(Followed::default()),
            unready: Arc::new(Mutex::new(Some("redis: not connected yet".into()))),
            sweep: lease::Sweep::default(),
            replicas: replicas::Replicas::new(settings.wait_replicas, settings.timeout),
            archive: std::sync::OnceLock::new(),
        });
        tokio::spawn(health(conn.clone(), Arc::clone(&store.unready)));
        tokio::spawn(tail::run(
            Arc::clone(&store.followed),
            conn,
            settings.url,
            settings.timeout,
        ));
        Ok(store)
    }

    /// Awaits one round trip, at most the timeout; a failure marks the store unready
    /// until the health check reaches Redis again.
    pub(crate) async fn round_trip<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let result = match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(link::unavailable(e)),
            Err(_) => Err(errors::timed_out(self.timeout)),
        };
        // The reason only: the server's own words (a script's SHA and line) stay in the
        // log, not in `/readyz`.
        if let Err(e @ StoreError::Unavailable { .. }) = &result {
            *self.unready.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
        }
        result
    }

    async fn call(
        &self,
        job: &JobId,
        op: &str,
        add: impl FnOnce(&mut redis::ScriptInvocation<'static>),
    ) -> Result<redis::Value, StoreError> {
        let mut inv = script::invocation(job, op, super::now_ms(), &self.common);
        add(&mut inv);
        self.round_trip(self.conn.invoke::<redis::Value>(&inv))
            .await
    }

    async fn load_job(&self, job: &JobId) -> Result<script::Loaded, StoreError> {
        let reply = self.call(job, "load", |_| {}).await?;
        let loaded = script::decode_load(job, &reply).map_err(StoreError::failed)?;
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

    /// The job a request names, as Redis holds it (created when new). Every request
    /// asks: another instance may have moved the job on, or Redis may have lost it (a
    /// new life).
    pub(crate) async fn open_job(&self, job: &JobId) -> Result<Opened, StoreError> {
        Ok(match self.load_job(job).await? {
            script::Loaded::Job { recovered, .. } => Opened::Job(recovered),
            script::Loaded::Gone(tombstone) => Opened::Gone(tombstone),
        })
    }

    /// Appends `batch` by the script's rules (the mirror of [`crate::rules`]), in calls
    /// of at most [`MAX_SCRIPT_RECORDS`]; returns what Redis stored.
    pub(crate) async fn append(
        &self,
        job: &JobId,
        batch: Vec<Incoming>,
        max_log_bytes: u64,
    ) -> Result<Appended, StoreError> {
        let ts = SystemTime::now();
        let records: Vec<Prepared> = batch.into_iter().map(|i| script::prepare(i, ts)).collect();
        let mut total = Appended::default();
        for chunk in records.chunks(MAX_SCRIPT_RECORDS) {
            let reply = self
                .call(job, "append", |inv| {
                    script::append_args(inv, chunk, ts, max_log_bytes)
                })
                .await?;
            let appended = script::decode_append(&reply, chunk, ts).map_err(StoreError::failed)?;
            if !self.replicas.is_off() {
                let confirmed = self.round_trip(self.replicas.wait(&self.conn)).await?;
                self.replicas.check(confirmed)?;
            }
            total.absorb(appended);
            if total.finished {
                break;
            }
        }
        Ok(total)
    }

    /// Ends the job as its lifecycle says (the script's `end` op), once, whichever
    /// instance asks first.
    pub(crate) async fn end_if_idle(
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
        let reply = self
            .round_trip(self.conn.invoke::<redis::Value>(&inv))
            .await?;
        let mut appended =
            script::decode_append(&reply, &records, ts).map_err(StoreError::failed)?;
        // The script names the one record it stored as the first; it is whichever
        // status the job took.
        if appended.progress.status == JobStatus::Expired {
            appended =
                script::decode_append(&reply, &records[1..], ts).map_err(StoreError::failed)?;
        }
        Ok(appended)
    }

    /// Notes a sign of the publisher (the script keeps the latest) and a Capgo
    /// confirmation.
    pub(crate) async fn note(
        &self,
        job: &JobId,
        activity_ms: u64,
        confirm: Option<(u64, u64)>,
    ) -> Result<(), StoreError> {
        let mut inv = script::invocation(job, "note", super::now_ms(), &self.common);
        inv.arg(activity_ms);
        match confirm {
            Some((hash, id)) => inv.arg(hash).arg(id),
            None => inv.arg("").arg(""),
        };
        self.round_trip(self.conn.invoke::<redis::Value>(&inv))
            .await
            .map(|_| ())
    }

    /// Records `from..=to`, or a prefix of them within about `budget` bytes.
    pub(crate) async fn read(
        &self,
        job: &JobId,
        from: u64,
        to: u64,
        budget: usize,
    ) -> Result<Vec<Arc<Entry>>, StoreError> {
        // Entries are a few hundred bytes: ask for about the budget's worth, then cut.
        let count = (budget / 256).clamp(16, 1024);
        let reply = self.stream_page(job, from, to, count).await?;
        let mut entries = script::decode_entries(&reply).map_err(StoreError::failed)?;
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

    /// Delivers the job's new records to `follower` while it has readers, in life `life`.
    pub(crate) fn follow(&self, job: &JobId, life: &str, follower: Weak<dyn Follower>) {
        self.followed.register(job, life, follower);
    }

    /// Why Redis cannot be used now, for `/readyz`.
    pub(crate) fn unready(&self) -> Option<String> {
        self.unready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A reader started waiting on the job: make sure its records are being followed.
    pub(crate) fn wake(&self, job: &JobId) {
        if !self.followed.is_reading(job) {
            self.followed.poke();
        }
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
