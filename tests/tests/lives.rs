//! Lives in event ids: every life of a job has an id, the SSE `id:` carries it
//! (`<seq>-<life>`), and a resume from another life gets `event: reset` and the log from
//! seq 1, never a `204` and never a continuation, whatever the two lives' lengths. Each
//! way a life ends is tried: Redis restarted without its data, a `--memory-only`
//! restart, and a job created again after its tombstone expired. A bare number still
//! means "this life".

use std::net::SocketAddr;
use std::time::Duration;

use tailgate_tests::daemon::{test_args, Daemon};
use tailgate_tests::http_client;
use tailgate_tests::redis::{available, Persistence, RedisServer};
use tailgate_tests::{bearer, publish_ndjson, read_token, SseStream};

const WITHIN: Duration = Duration::from_secs(20);

/// Opens the job's stream resuming from `last` (a whole event id, or a bare number).
async fn open(addr: SocketAddr, job: &str, last: Option<&str>) -> (u16, SseStream) {
    let auth = bearer(&read_token(job));
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(last) = last {
        headers.push(("last-event-id", last));
    }
    let resp = http_client::open(addr, "GET", &format!("/v1/jobs/{job}/logs"), &headers).await;
    let status = resp.status().as_u16();
    (status, SseStream::new(resp.into_body()))
}

fn lines(names: &[&str]) -> String {
    names
        .iter()
        .map(|l| format!("{{\"line\":\"{l}\"}}\n"))
        .collect()
}

fn done() -> String {
    "{\"status\":\"succeeded\",\"exit_code\":0}\n".into()
}

/// Reads `count` events; each carries the job's life in its id.
async fn read(stream: &mut SseStream, count: usize) -> Vec<(u64, String, String)> {
    let mut out = Vec::new();
    for _ in 0..count {
        let e = stream.next_within(WITHIN).await.expect("event");
        let life = e.life().expect("the id names the life").to_string();
        let what = match e.event.as_str() {
            "log" => e.json()["line"].as_str().unwrap_or_default().to_string(),
            other => other.to_string(),
        };
        out.push((e.seq(), life, what));
    }
    out
}

/// A reader of the earlier life (its last id `2-<old>`) of a job whose new life holds
/// `after1` and the final status (seqs 1 and 2): reset, then the new log from seq 1.
async fn assert_resets(addr: SocketAddr, job: &str, old_id: &str, old_life: &str) {
    let (status, mut again) = open(addr, job, Some(old_id)).await;
    assert_eq!(status, 200, "never a 204 for an id of another life");
    let reset = again.next_within(WITHIN).await.expect("reset");
    assert_eq!(reset.event, "reset");
    assert_eq!(reset.json()["reason"], "new_life");
    let events = read(&mut again, 2).await;
    assert_eq!(events[0].0, 1);
    assert_eq!(events[0].2, "after1");
    assert_eq!((events[1].0, events[1].2.as_str()), (2, "status"));
    assert_ne!(events[0].1, old_life, "the new life has a new id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_only_restart_is_a_new_life() {
    let mut args = test_args();
    args.push("--memory-only".into());
    let mut gw = Daemon::start(&args);
    let job = "lives-memory";
    let (_, mut reader) = open(gw.addr, job, None).await;
    assert_eq!(
        publish_ndjson(gw.addr, job, lines(&["before1", "before2"]))
            .await
            .status,
        200
    );
    let seen = read(&mut reader, 2).await;
    let old_life = seen[1].1.clone();
    let old_id = format!("2-{old_life}");
    gw.crash_and_restart();
    let body = lines(&["after1"]) + &done();
    assert_eq!(publish_ndjson(gw.addr, job, body).await.status, 200);
    // The new life is as long as the old one and finished: the old check answered 204.
    assert_resets(gw.addr, job, &old_id, &old_life).await;
    // A bare number means "this life": the finished job read to its end is a 204.
    let (status, _) = open(gw.addr, job, Some("2")).await;
    assert_eq!(status, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_created_again_after_its_tombstone_expired_is_a_new_life() {
    let mut args = test_args();
    args.extend(
        [
            "--memory-only",
            "--retention-secs",
            "1",
            "--tombstone-secs",
            "1",
        ]
        .map(String::from),
    );
    let gw = Daemon::start(&args);
    let job = "lives-tombstone";
    let body = lines(&["before1"]) + &done();
    assert_eq!(publish_ndjson(gw.addr, job, body).await.status, 200);
    let (_, mut reader) = open(gw.addr, job, None).await;
    let seen = read(&mut reader, 2).await;
    let old_life = seen[1].1.clone();
    let old_id = format!("2-{old_life}");
    drop(reader);
    // Retention drops the job and leaves a tombstone (410); once that expires, the job
    // can be created again.
    let auth = bearer(&read_token(job));
    let mut gone = false;
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the tombstone never expired"
        );
        let reply = http_client::request(
            gw.addr,
            "GET",
            &format!("/v1/jobs/{job}"),
            &[("authorization", &auth)],
            bytes::Bytes::new(),
        )
        .await;
        match reply.status {
            410 => gone = true,
            200 if gone => break,
            200 => {}
            other => panic!("unexpected status {other}: {}", reply.text()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = lines(&["after1"]) + &done();
    assert_eq!(publish_ndjson(gw.addr, job, body).await.status, 200);
    assert_resets(gw.addr, job, &old_id, &old_life).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_without_its_data_is_a_new_life_on_every_instance() {
    if !available() {
        return;
    }
    let mut redis = RedisServer::start(Persistence::Off);
    let gateway = || {
        let mut a = test_args();
        a.extend(["--redis-url".to_string(), redis.url()]);
        Daemon::start(&a)
    };
    let (a, b) = (gateway(), gateway());
    let job = "lives-redis";
    let (_, mut on_b) = open(b.addr, job, None).await;
    assert_eq!(
        publish_ndjson(a.addr, job, lines(&["before1", "before2"]))
            .await
            .status,
        200
    );
    let seen = read(&mut on_b, 2).await;
    let old_life = seen[1].1.clone();
    let old_id = format!("2-{old_life}");
    redis.restart();
    let body = lines(&["after1"]) + &done();
    let mut published = false;
    for _ in 0..100 {
        let reply = publish_ndjson(a.addr, job, body.clone()).await;
        if reply.status == 200 {
            published = true;
            break;
        }
        assert_eq!(reply.status, 503, "{}", reply.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(published, "redis never came back");
    // The new life reaches seq 2, as the old one did: both instances reset the reader.
    for addr in [b.addr, a.addr] {
        assert_resets(addr, job, &old_id, &old_life).await;
    }
}
