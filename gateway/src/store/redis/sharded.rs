//! Following jobs on a Redis Cluster, where one `XREAD` cannot span slots (not even
//! slots of one node): the job script announces every append on the job's sharded
//! channel (`SPUBLISH tailgate:{<job>}:log <last seq>`, on the job's own slot), and this
//! instance holds one RESP3 subscription per node over the channels of the jobs its
//! readers follow (`SSUBSCRIBE`, routed by hash slot). A notice makes one `XREAD` of that
//! job from where its local copy ends. Idle jobs cost nothing: Redis work grows with
//! records, never with followed jobs.
//!
//! Slots move: the node that gives a slot away ends its subscriptions there
//! (`sunsubscribe`), and the client re-subscribes where `MOVED`/`ASK` sends it, after
//! reconnects and topology changes too. Every (re)subscription is followed by a read, so
//! a notice missed in between costs a little latency, never a record.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::cluster::ClusterClientBuilder;
use redis::{ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::keys::JobKeys;
use super::link::Conn;
use super::script::text;
use super::tail::{deliver, Followed, COUNT};
use crate::job_id::JobId;
use crate::store::Follower;

/// Notices buffered between the subscription and this task; past that the task reads
/// every followed job once instead of the notices it dropped.
const NOTICES: usize = 4096;
/// Reads in flight at once after a burst of notices.
const READS_IN_FLIGHT: usize = 32;
/// How often, with nothing arriving, the task drops jobs nobody follows any more.
const IDLE: Duration = Duration::from_secs(5);

/// A followed job: its channel's subscription and where its records go.
struct Job {
    id: JobId,
    follower: Arc<dyn Follower>,
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
    let over = Arc::clone(&overflow);
    let client = ClusterClientBuilder::new(vec![url])
        .use_protocol(ProtocolVersion::RESP3)
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .push_sender(move |info: PushInfo| {
            if tx.try_send(info).is_err() {
                over.store(true, Ordering::Release);
            }
            Ok::<(), std::convert::Infallible>(())
        })
        .build()?;
    let mut sub = client.get_async_connection().await?;
    // Channel (the job's log key) to job, for the jobs subscribed now.
    let mut subscribed: HashMap<String, JobId> = HashMap::new();
    let mut dirty: HashSet<String> = HashSet::new();
    loop {
        let round: HashMap<String, Job> = followed
            .round()
            .into_iter()
            .map(|(id, follower, _)| (JobKeys::new(&id).log, Job { id, follower }))
            .collect();
        let gone: Vec<String> = subscribed
            .keys()
            .filter(|c| !round.contains_key(*c))
            .cloned()
            .collect();
        for channel in gone {
            subscribed.remove(&channel);
            sub.sunsubscribe(&channel).await?;
        }
        for (channel, job) in &round {
            if !subscribed.contains_key(channel) {
                sub.ssubscribe(channel).await?;
                subscribed.insert(channel.clone(), job.id.clone());
                dirty.insert(channel.clone());
            }
        }
        if overflow.swap(false, Ordering::AcqRel) {
            dirty.extend(round.keys().cloned());
        }
        if !dirty.is_empty() {
            let jobs: Vec<(JobId, Arc<dyn Follower>)> = dirty
                .drain()
                .filter_map(|c| round.get(&c))
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
        } else {
            tokio::select! {
                got = rx.recv() => match got {
                    Some(info) => notice(info, &mut subscribed, &mut dirty)?,
                    None => return Err(lost("the subscription ended")),
                },
                _ = followed.poke.notified() => {}
                _ = tokio::time::sleep(IDLE) => {}
            }
        }
        while let Ok(info) = rx.try_recv() {
            notice(info, &mut subscribed, &mut dirty)?;
        }
    }
}

fn lost(why: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, why))
}

/// Takes one push from the subscription: a notice marks its job to be read.
fn notice(
    info: PushInfo,
    subscribed: &mut HashMap<String, JobId>,
    dirty: &mut HashSet<String>,
) -> redis::RedisResult<()> {
    let channel = || info.data.first().and_then(text);
    match info.kind {
        // A notice, or a (re)subscription after a reconnect or a slot move: read.
        PushKind::SMessage | PushKind::SSubscribe => {
            if let Some(channel) = channel().filter(|c| subscribed.contains_key(c)) {
                dirty.insert(channel);
            }
        }
        // The node gave the slot away: subscribe again where it went (next round).
        PushKind::SUnsubscribe => {
            if let Some(channel) = channel() {
                subscribed.remove(&channel);
            }
        }
        // A node's connection broke: start over, and check each job's life first.
        PushKind::Disconnection => return Err(lost("a cluster node's connection broke")),
        _ => {}
    }
    Ok(())
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
    let got = deliver(&[(id, follower, String::new())], &reply);
    Ok((got >= COUNT).then_some(log))
}
