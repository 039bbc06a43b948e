//! Following jobs for local readers without polling and without reading back: the job
//! script publishes every append's records on the job's channel (see [`super::notice`]),
//! and this instance holds one RESP3 subscription over the channels of the jobs its
//! readers follow (`SUBSCRIBE` on one server; `SSUBSCRIBE` on a Cluster, routed by hash
//! slot, since one `XREAD` cannot span slots). A notice hands its records to the job's
//! `JobLog`; the instance that appended them holds them already and skips it by its
//! header. Redis work grows with records, never with followed jobs or readers.
//!
//! A notice can be missed: before a subscription is confirmed, when the notice queue
//! overflows, while a job has no reader here. Every (re)subscription, overflow and hole
//! in the seqs is followed by an `XREAD` of that job from where its local copy ends, so
//! a missed notice costs a little latency, never a record. On a Cluster slots move: the
//! node that gives a slot away ends its subscriptions there (`sunsubscribe`), and the
//! job is subscribed again where `MOVED` sends the client. Until then the old node keeps
//! the subscription while the script may already run on the new one (`ASK`): those
//! notices are missed, and the read after the new subscription brings their records.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value,
};
use tokio::sync::mpsc;

use super::keys::JobKeys;
use super::link::Conn;
use super::notice;
use super::tail::{deliver, Followed, COUNT};
use crate::job_id::JobId;
use crate::store::Follower;

/// Notices buffered between the subscription and this task; past that the task reads
/// every followed job once instead of the notices it dropped.
const NOTICES: usize = 4096;
/// Reads in flight at once after a burst of missed notices.
const READS_IN_FLIGHT: usize = 32;
/// (Un)subscribes in flight at once: 300 readers arriving together cost a few round trips,
/// not 300 in a row while notices wait (2.6 ms each behind a 1 ms link: 0.8 s).
const SUBSCRIBES_IN_FLIGHT: usize = 64;
/// How often, with nothing new, the task drops the jobs nobody follows any more.
const REFRESH: Duration = Duration::from_secs(5);

/// A followed job: where its records go.
struct Job {
    id: JobId,
    follower: Arc<dyn Follower>,
}

/// The subscription connection: one server's, or a Cluster's (one per node inside).
/// Clones share it, so (un)subscribes can be pipelined.
#[derive(Clone)]
enum Subscriber {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Subscriber {
    async fn connect(
        conn: &Conn,
        url: &str,
        timeout: Duration,
        tx: mpsc::Sender<PushInfo>,
        overflow: Arc<AtomicBool>,
    ) -> redis::RedisResult<Self> {
        let sender = move |info: PushInfo| {
            if tx.try_send(info).is_err() {
                overflow.store(true, Ordering::Release);
            }
            Ok::<(), std::convert::Infallible>(())
        };
        if conn.is_cluster() {
            let client = super::link::retrying(ClusterClientBuilder::new(vec![url]))
                .use_protocol(ProtocolVersion::RESP3)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .push_sender(sender)
                .build()?;
            return Ok(Self::Cluster(client.get_async_connection().await?));
        }
        let info = url.into_connection_info()?;
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_push_sender(sender);
        let sub = redis::Client::open(info.set_redis_settings(resp3))?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(Self::Single(sub))
    }

    async fn subscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Self::Single(c) => c.subscribe(channel).await,
            Self::Cluster(c) => c.ssubscribe(channel).await,
        }
    }

    async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Self::Single(c) => c.unsubscribe(channel).await,
            Self::Cluster(c) => c.sunsubscribe(channel).await,
        }
    }
}

/// Follows jobs until the subscription's connection fails.
pub(super) async fn follow(
    followed: &Followed,
    conn: &Conn,
    url: &str,
    timeout: Duration,
) -> redis::RedisResult<()> {
    let (tx, mut rx) = mpsc::channel::<PushInfo>(NOTICES);
    let overflow = Arc::new(AtomicBool::new(false));
    let sub = Subscriber::connect(conn, url, timeout, tx, Arc::clone(&overflow)).await?;
    // Channel (the job's log key) to job, for the jobs subscribed now.
    let mut subscribed: HashMap<String, Job> = HashMap::new();
    let mut dirty: HashSet<String> = HashSet::new();
    let mut refresh = true;
    loop {
        if std::mem::take(&mut refresh) {
            resubscribe(followed, &sub, &mut subscribed, &mut dirty).await?;
        }
        if overflow.swap(false, Ordering::AcqRel) {
            dirty.extend(subscribed.keys().cloned());
        }
        if !dirty.is_empty() {
            catch_up(conn, &subscribed, &mut dirty).await?;
        } else {
            tokio::select! {
                got = rx.recv() => match got {
                    Some(info) => refresh |= take(info, &mut subscribed, &mut dirty)?,
                    None => return Err(lost("the subscription ended")),
                },
                _ = followed.poke.notified() => refresh = true,
                _ = tokio::time::sleep(REFRESH) => refresh = true,
            }
        }
        while let Ok(info) = rx.try_recv() {
            refresh |= take(info, &mut subscribed, &mut dirty)?;
        }
    }
}

/// Subscribes the jobs with readers here now and drops the others; a new subscription
/// is read once (notices before it were missed).
async fn resubscribe(
    followed: &Followed,
    sub: &Subscriber,
    subscribed: &mut HashMap<String, Job>,
    dirty: &mut HashSet<String>,
) -> redis::RedisResult<()> {
    let round: HashMap<String, Job> = followed
        .round()
        .into_iter()
        .map(|(id, follower)| (JobKeys::new(&id).log, Job { id, follower }))
        .collect();
    let gone: Vec<String> = subscribed
        .keys()
        .filter(|c| !round.contains_key(*c))
        .cloned()
        .collect();
    for channel in &gone {
        subscribed.remove(channel);
    }
    pipelined(sub, &gone, false).await?;
    let new: Vec<String> = round
        .keys()
        .filter(|c| !subscribed.contains_key(*c))
        .cloned()
        .collect();
    pipelined(sub, &new, true).await?;
    dirty.extend(new);
    subscribed.extend(round);
    followed.set_reading(subscribed.values().map(|j| j.id.clone()).collect());
    Ok(())
}

/// Subscribes (or unsubscribes) `channels`, [`SUBSCRIBES_IN_FLIGHT`] at a time on clones of
/// the one connection.
async fn pipelined(sub: &Subscriber, channels: &[String], on: bool) -> redis::RedisResult<()> {
    for chunk in channels.chunks(SUBSCRIBES_IN_FLIGHT) {
        let calls = chunk.iter().map(|channel| {
            let mut sub = sub.clone();
            async move {
                if on {
                    sub.subscribe(channel).await
                } else {
                    sub.unsubscribe(channel).await
                }
            }
        });
        for done in futures_util::future::join_all(calls).await {
            done?;
        }
    }
    Ok(())
}

/// Reads the `dirty` jobs from where their local copies end, some at a time.
async fn catch_up(
    conn: &Conn,
    subscribed: &HashMap<String, Job>,
    dirty: &mut HashSet<String>,
) -> redis::RedisResult<()> {
    let jobs: Vec<(JobId, Arc<dyn Follower>)> = dirty
        .drain()
        .filter_map(|c| subscribed.get(&c))
        .map(|job| (job.id.clone(), Arc::clone(&job.follower)))
        .collect();
    for chunk in jobs.chunks(READS_IN_FLIGHT) {
        let reads = chunk
            .iter()
            .map(|(id, f)| read(conn.clone(), id.clone(), Arc::clone(f)));
        for read in futures_util::future::join_all(reads).await {
            // A full read may have left more: read that job again.
            if let Some(channel) = read? {
                dirty.insert(channel);
            }
        }
    }
    Ok(())
}

fn lost(why: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, why))
}

/// Takes one push from the subscription: a notice's records go to its job; a
/// (re)subscription, or a notice that does not follow on, marks the job to be read.
/// True when a job lost its subscription (its slot moved) and must be subscribed again.
fn take(
    info: PushInfo,
    subscribed: &mut HashMap<String, Job>,
    dirty: &mut HashSet<String>,
) -> redis::RedisResult<bool> {
    let channel = match info.data.first() {
        Some(Value::BulkString(b)) => std::str::from_utf8(b).ok(),
        Some(Value::SimpleString(s)) => Some(s.as_str()),
        _ => None,
    };
    match info.kind {
        PushKind::Message | PushKind::SMessage => {
            let (Some(channel), Some(Value::BulkString(payload))) = (channel, info.data.get(1))
            else {
                return Ok(false);
            };
            if let Some(job) = subscribed.get(channel) {
                if !absorb(job, payload) {
                    dirty.insert(channel.to_string());
                }
            }
        }
        PushKind::Subscribe | PushKind::SSubscribe => {
            if let Some(channel) = channel.filter(|c| subscribed.contains_key(*c)) {
                dirty.insert(channel.to_string());
            }
        }
        // The node gave the slot away: subscribe again where it went, now (a
        // subscription is followed by a read, so nothing in between is missed).
        PushKind::SUnsubscribe => {
            return Ok(channel.is_some_and(|c| subscribed.remove(c).is_some()));
        }
        // The connection broke: start over, and check each job's life first.
        PushKind::Disconnection => return Err(lost("the subscription's connection broke")),
        _ => {}
    }
    Ok(false)
}

/// Hands a notice's new records to `job`; false when they do not follow on from what
/// it holds (a missed notice, an older gateway's notice): then the job is read instead.
fn absorb(job: &Job, payload: &[u8]) -> bool {
    if !job.follower.is_followed() {
        // Nobody reads here now: the next reader's subscription reads it back.
        return true;
    }
    let Some(header) = notice::header(payload) else {
        return false;
    };
    let next = job.follower.next_seq();
    if header.last < next {
        // This instance appended them itself, or read them already.
        return true;
    }
    if header.first > next {
        return false;
    }
    match notice::records(payload, next) {
        Ok(entries) => {
            job.follower.absorb(entries);
            true
        }
        Err(e) => {
            tracing::warn!(job.id = %job.id, error = %e, "cannot take a job's notice");
            false
        }
    }
}

/// Reads one job's new records into its local copy; its channel when the read was full.
async fn read(
    conn: Conn,
    id: JobId,
    follower: Arc<dyn Follower>,
) -> redis::RedisResult<Option<String>> {
    let log = JobKeys::new(&id).log;
    let from = format!("{}-0", follower.next_seq().saturating_sub(1));
    let reply: Value = conn
        .query(
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(COUNT)
                .arg("STREAMS")
                .arg(&log)
                .arg(from),
        )
        .await?;
    let got = deliver(&[(id, follower)], &reply);
    Ok((got >= COUNT).then_some(log))
}
