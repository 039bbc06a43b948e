//! The archive shared by instances, against a real S3-compatible server (SeaweedFS) and
//! a real `redis-server`: a Redis job's keys go once it is archived while every instance
//! (one started afterwards too) serves it byte-identical; two gateway processes race to
//! write one object; S3 stopped then started again under a Redis job; 410 once the
//! object is deleted; and a spool instance serving what another one archived.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use tailgate_tests::daemon::{Daemon, TempDir};
use tailgate_tests::http_client;
use tailgate_tests::proxy::{Budget, Proxy};
use tailgate_tests::redis::{self as redis_server, Persistence, RedisServer};
use tailgate_tests::s3::{self, S3Server};
use tailgate_tests::{bearer, publish_ndjson, publish_token};

use crate::archive::{
    archiving, bucket, build, get, object, object_exists, spool_exists, sse, until_archived, views,
};

fn available(test: &str) -> bool {
    s3::available(test) && redis_server::available()
}

fn on_redis(redis: &RedisServer, s3: &S3Server, endpoint: &str) -> Daemon {
    archiving(&["--redis-url", &redis.url()], endpoint, s3, &[])
}

fn log_key(job: &str) -> String {
    format!("tailgate:{{{job}}}:log")
}

/// Waits until Redis no longer holds the job's stream (the archiver dropped it).
async fn until_keys_gone(redis: &RedisServer, job: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while redis.cli(&["EXISTS", &log_key(job)]).trim() != "0" {
        assert!(
            Instant::now() < deadline,
            "{job}'s stream is still in redis after {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A counter's value from the gateway's `/metrics`.
async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let reply = http_client::request(addr, "GET", "/metrics", &[], Default::default()).await;
    reply
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn publish_after_finish(addr: SocketAddr, job: &str) -> u16 {
    let auth = bearer(&publish_token(job));
    http_client::request(
        addr,
        "POST",
        &format!("/v1/jobs/{job}/logs"),
        &[("authorization", &auth), ("content-type", "text/plain")],
        "one more line\n".into(),
    )
    .await
    .status
}

fn assert_same(live: &[(String, bytes::Bytes)], now: &[(String, bytes::Bytes)], who: &str) {
    for ((what, live), (_, now)) in live.iter().zip(now) {
        assert!(
            live == now,
            "{what} from {who} differs after archiving ({} vs {} bytes)",
            live.len(),
            now.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_job_leaves_redis_once_archived_and_every_instance_serves_it_byte_identical() {
    if !available("archive_shared::redis_keys_gone") {
        return;
    }
    let redis = RedisServer::start(Persistence::Off);
    let s3 = S3Server::start();
    let store = bucket(&s3);
    let a = on_redis(&redis, &s3, &s3.endpoint());
    let b = on_redis(&redis, &s3, &s3.endpoint());
    build(a.addr, "shared", 20_000).await;
    let live = views(a.addr, "shared", 12_345).await;
    assert_same(
        &live,
        &views(b.addr, "shared", 12_345).await,
        "another live instance",
    );
    until_keys_gone(&redis, "shared", 60).await;
    assert!(object_exists(&store, "shared").await);
    // What stays is the small marker: the meta hash, marked, expiring with retention.
    let meta = "tailgate:{shared}:meta";
    assert_eq!(redis.cli(&["HEXISTS", meta, "ar"]).trim(), "1");
    let ttl: i64 = redis.cli(&["PTTL", meta]).trim().parse().expect("ttl");
    assert!(ttl > 0, "the marker expires with retention: {ttl}");
    // Both instances, and one that never saw the job live, serve it from the object.
    let c = on_redis(&redis, &s3, &s3.endpoint());
    for (who, gw) in [("a", &a), ("b", &b), ("a new instance", &c)] {
        assert_same(&live, &views(gw.addr, "shared", 12_345).await, who);
    }
    // The marker keeps the job finished: a publish is refused, not a new job.
    assert_eq!(publish_after_finish(c.addr, "shared").await, 409);
    assert_eq!(redis.cli(&["EXISTS", &log_key("shared")]).trim(), "0");

    // Even once Redis forgot the job entirely, the object is found again.
    redis.cli(&[
        "DEL",
        meta,
        "tailgate:{shared}:gone",
        "tailgate:{shared}:capgo",
    ]);
    let d = on_redis(&redis, &s3, &s3.endpoint());
    assert_same(
        &live,
        &views(d.addr, "shared", 12_345).await,
        "after redis forgot it",
    );
    assert_eq!(publish_after_finish(d.addr, "shared").await, 409);
}

/// Milliseconds since the epoch, as the gateway stamps `fa` and `ar`.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Behind Redis a finished job is encoded and uploaded while its quiet period runs, and
/// its stream stays (and is served) until that period ends: the lag is the longer of the
/// two, not their sum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_job_is_uploaded_within_its_quiet_period_and_its_stream_stays_until_it_ends() {
    if !available("archive_shared::within_quiet") {
        return;
    }
    const QUIET_MS: u64 = 8_000;
    let redis = RedisServer::start(Persistence::Off);
    let s3 = S3Server::start();
    let store = bucket(&s3);
    let gw = archiving(
        &["--redis-url", &redis.url()],
        &s3.endpoint(),
        &s3,
        &["--archive-quiet-secs", "8"],
    );
    build(gw.addr, "early", 2_000).await;
    let live = sse(gw.addr, "early", None).await.body;
    let meta = "tailgate:{early}:meta";
    let fa: u64 = redis.cli(&["HGET", meta, "fa"]).trim().parse().expect("fa");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !object_exists(&store, "early").await {
        assert!(Instant::now() < deadline, "no object after 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let written = now_ms();
    assert!(
        written < fa + QUIET_MS,
        "the object was written {} ms after the terminal status, not within the quiet period",
        written - fa
    );
    // The local copy stays for the quiet period: the stream, unmarked, still served.
    assert_eq!(redis.cli(&["EXISTS", &log_key("early")]).trim(), "1");
    assert_eq!(redis.cli(&["HEXISTS", meta, "ar"]).trim(), "0");
    assert!(sse(gw.addr, "early", None).await.body == live);
    until_keys_gone(&redis, "early", 60).await;
    let ar: u64 = redis.cli(&["HGET", meta, "ar"]).trim().parse().expect("ar");
    assert!(
        ar >= fa + QUIET_MS,
        "marked archived {} ms after the terminal status, before the quiet period ended",
        ar - fa
    );
    assert!(sse(gw.addr, "early", None).await.body == live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_race_to_archive_one_job_it_is_written_once_the_loser_verifies() {
    if !available("archive_shared::race") {
        return;
    }
    let redis = RedisServer::start(Persistence::Off);
    let s3 = S3Server::start();
    let store = bucket(&s3);
    // Instance a's answers from S3 are cut: its put lands, but it never learns so, and
    // it puts the job back in the queue to try again.
    let target: SocketAddr = format!("127.0.0.1:{}", s3.port).parse().expect("addr");
    let cut = Proxy::start(
        target,
        Budget {
            up: None,
            down: Some(0),
        },
    )
    .await;
    let mut a = on_redis(&redis, &s3, &format!("http://{}", cut.addr));
    build(a.addr, "raced", 5_000).await;
    let live = sse(a.addr, "raced", None).await.body;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !object_exists(&store, "raced").await {
        assert!(Instant::now() < deadline, "a's upload never landed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // a learns it failed and puts the job back, due in a second: a is gone before
    // then, and b takes the job over.
    while metric(a.addr, "tailgate_archive_failures_total").await < 1.0 {
        assert!(Instant::now() < deadline, "a never gave up its upload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill9();
    let written = store.head(&object("raced")).await.expect("head");
    assert_eq!(redis.cli(&["EXISTS", &log_key("raced")]).trim(), "1");
    let b = on_redis(&redis, &s3, &s3.endpoint());
    until_keys_gone(&redis, "raced", 60).await;
    // b lost the conditional put and verified a's object: written once.
    assert_eq!(metric(b.addr, "tailgate_archive_races_total").await, 1.0);
    assert_eq!(metric(b.addr, "tailgate_archive_objects_total").await, 0.0);
    let now = store.head(&object("raced")).await.expect("head");
    assert_eq!(
        (now.e_tag, now.last_modified),
        (written.e_tag, written.last_modified)
    );
    assert!(sse(b.addr, "raced", None).await.body == live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_s3_down_a_redis_job_stays_in_redis_then_is_archived_when_it_returns() {
    if !available("archive_shared::s3_down") {
        return;
    }
    let redis = RedisServer::start(Persistence::Off);
    let mut s3 = S3Server::start();
    let gw = on_redis(&redis, &s3, &s3.endpoint());
    s3.stop();
    build(gw.addr, "waits", 2_000).await;
    let live = sse(gw.addr, "waits", None).await.body;
    // Past the quiet period and a few retries: still in Redis, still served, ready.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(redis.cli(&["EXISTS", &log_key("waits")]).trim(), "1");
    let ready = http_client::request(gw.addr, "GET", "/readyz", &[], Default::default()).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert!(metric(gw.addr, "tailgate_archive_failures_total").await >= 1.0);
    assert_eq!(metric(gw.addr, "tailgate_archive_pending_jobs").await, 1.0);
    assert!(sse(gw.addr, "waits", None).await.body == live);
    s3.restart();
    until_keys_gone(&redis, "waits", 90).await;
    assert!(object_exists(&bucket(&s3), "waits").await);
    let fresh = on_redis(&redis, &s3, &s3.endpoint());
    assert!(sse(fresh.addr, "waits", None).await.body == live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_job_whose_object_the_bucket_deleted_answers_410() {
    if !available("archive_shared::deleted") {
        return;
    }
    let redis = RedisServer::start(Persistence::Off);
    let s3 = S3Server::start();
    let store = bucket(&s3);
    let gw = on_redis(&redis, &s3, &s3.endpoint());
    build(gw.addr, "deleted", 300).await;
    build(gw.addr, "kept", 300).await;
    until_keys_gone(&redis, "deleted", 60).await;
    until_keys_gone(&redis, "kept", 60).await;
    store.delete(&object("deleted")).await.expect("delete");
    let other = on_redis(&redis, &s3, &s3.endpoint());
    for addr in [gw.addr, other.addr] {
        get(addr, "/v1/jobs/deleted", &[])
            .await
            .assert_error(410, "job_expired");
    }
    let body = sse(other.addr, "kept", None).await.text();
    assert!(
        body.contains("\"seq\":301,") && body.contains("event: status"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_instance_serves_a_job_another_one_archived_and_creates_unknown_ones() {
    if !s3::available("archive_shared::spool") {
        return;
    }
    let s3 = S3Server::start();
    let store = bucket(&s3);
    let (one, two) = (TempDir::new("archive-one"), TempDir::new("archive-two"));
    let dir = |d: &TempDir| d.path().display().to_string();
    let a = archiving(&["--data-dir", &dir(&one)], &s3.endpoint(), &s3, &[]);
    let b = archiving(&["--data-dir", &dir(&two)], &s3.endpoint(), &s3, &[]);
    build(a.addr, "moved", 3_000).await;
    let live = views(a.addr, "moved", 1_234).await;
    until_archived(&store, one.path(), "moved", 60).await;
    assert_same(
        &live,
        &views(b.addr, "moved", 1_234).await,
        "another instance",
    );
    assert_eq!(publish_after_finish(b.addr, "moved").await, 409);
    assert!(
        !spool_exists(two.path(), "moved"),
        "b serves it from the object"
    );
    // A job the bucket does not hold is a new job there, as without the archive.
    let reply = publish_ndjson(b.addr, "fresh", "{\"n\":1,\"line\":\"hi\"}\n").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(spool_exists(two.path(), "fresh"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_that_never_reached_the_archive_queue_is_queued_by_the_sweep() {
    if !available("archive_shared::unqueued") {
        return;
    }
    let redis = RedisServer::start(Persistence::Off);
    let s3 = S3Server::start();
    // A short publisher grace makes the lifecycle sweep tick every second.
    let fast = ["--publisher-grace-secs", "4"];
    // Instance a has no archive: it stores the terminal status and never queues the job,
    // which is what an instance killed between the two leaves behind.
    let mut args = tailgate_tests::daemon::test_args();
    args.extend(["--redis-url".to_string(), redis.url()]);
    args.extend(fast.iter().map(|s| s.to_string()));
    let mut a = Daemon::start(&args);
    build(a.addr, "unqueued", 500).await;
    let live = sse(a.addr, "unqueued", None).await.body;
    a.kill9();
    let queue = "tailgate:archive-queue";
    assert_eq!(redis.cli(&["ZSCORE", queue, "unqueued"]).trim(), "");
    // b archives; it holds the sweep's lease once a's runs out, finds the finished job
    // in the job list, queues it, and archives it.
    let b = archiving(&["--redis-url", &redis.url()], &s3.endpoint(), &s3, &fast);
    until_keys_gone(&redis, "unqueued", 60).await;
    assert!(object_exists(&bucket(&s3), "unqueued").await);
    assert_eq!(redis.cli(&["ZCARD", queue]).trim(), "0");
    assert!(sse(b.addr, "unqueued", None).await.body == live);
    // The job left the sweep's list only once queued.
    let deadline = Instant::now() + Duration::from_secs(30);
    while redis.cli(&["ZSCORE", "tailgate:jobs", "unqueued"]).trim() != "" {
        assert!(
            Instant::now() < deadline,
            "the job stays in the sweep's list"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
