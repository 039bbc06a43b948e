//! Several real gateway processes sharing jobs through one real Redis: publish on one,
//! read on the others (byte-identical events), resume and dedupe across instances, the
//! lifecycle once per job, and Redis faults (down at start, lost mid-run, restarted
//! without its data). Skipped with a message where `redis-server` is missing; with
//! `CI=true` they fail instead.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;
use tailgate_tests::daemon::{test_args, Daemon};
use tailgate_tests::http_client::{self, Reply, Upload};
use tailgate_tests::redis::{available, free_port, Persistence, RedisServer};
use tailgate_tests::redis_ha::Cluster;
use tailgate_tests::{bearer, publish_token, read_token, SseStream};

pub(crate) const WITHIN: Duration = Duration::from_secs(20);

pub(crate) fn gateway(redis: &str, extra: &[&str]) -> Daemon {
    let mut a = test_args();
    a.extend(["--redis-url".to_string(), redis.to_string()]);
    a.extend(extra.iter().map(|s| s.to_string()));
    Daemon::start(&a)
}

pub(crate) async fn get(addr: SocketAddr, job: &str, path: &str) -> Reply {
    let auth = bearer(&read_token(job));
    http_client::request(addr, "GET", path, &[("authorization", &auth)], Bytes::new()).await
}

pub(crate) async fn publish(addr: SocketAddr, job: &str, body: String) -> Reply {
    tailgate_tests::publish_ndjson(addr, job, body).await
}

pub(crate) async fn finish(addr: SocketAddr, job: &str, status: &str) {
    let auth = bearer(&publish_token(job));
    let reply = http_client::request(
        addr,
        "POST",
        &format!("/v1/jobs/{job}/status"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        format!("{{\"status\":\"{status}\",\"exit_code\":0}}").into(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// Publishes like a worker: a 503 (Redis unavailable) is retried after a pause.
pub(crate) async fn publish_retrying(addr: SocketAddr, job: &str, body: String) -> Reply {
    for _ in 0..50 {
        let reply = publish(addr, job, body.clone()).await;
        if reply.status != 503 {
            return reply;
        }
        assert!(reply.header("retry-after").is_some());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("redis never came back");
}

pub(crate) fn ndjson(range: std::ops::RangeInclusive<u64>) -> String {
    range
        .map(|n| format!("{{\"n\":{n},\"line\":\"line {n} \\u001b[1mé\\r\\ndata: x\"}}\n"))
        .collect()
}

pub(crate) async fn open(
    addr: SocketAddr,
    job: &str,
    last: Option<u64>,
) -> hyper::Response<hyper::body::Incoming> {
    let auth = bearer(&read_token(job));
    let last = last.map(|l| l.to_string());
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(last) = &last {
        headers.push(("last-event-id", last.as_str()));
    }
    let resp = http_client::open(addr, "GET", &format!("/v1/jobs/{job}/logs"), &headers).await;
    assert_eq!(resp.status(), 200);
    resp
}

pub(crate) async fn reader(addr: SocketAddr, job: &str, last: Option<u64>) -> SseStream {
    SseStream::new(open(addr, job, last).await.into_body())
}

/// The raw bytes of every event of a stream until the server ends it (the opening and
/// keep-alive comments left out).
async fn raw_events(resp: hyper::Response<hyper::body::Incoming>) -> Vec<String> {
    let body = tokio::time::timeout(WITHIN, resp.into_body().collect())
        .await
        .expect("the stream ends after the final status")
        .expect("body")
        .to_bytes();
    String::from_utf8_lossy(&body)
        .split_inclusive("\n\n")
        .map(without_comments)
        .filter(|e| e.starts_with("id: "))
        .map(String::from)
        .collect()
}

/// An event block without the comment and `retry:` lines that may open it (the stream's
/// opening bytes share the first event's block; keep-alives are lone comment lines).
fn without_comments(mut block: &str) -> &str {
    while block.starts_with(':') || block.starts_with("retry:") {
        block = block.split_once('\n').map_or("", |(_, rest)| rest);
    }
    block
}

pub(crate) fn seqs(events: &[tailgate_tests::Event]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e.id.is_some())
        .map(|e| e.seq())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_published_on_one_instance_reads_the_same_on_every_other() {
    if !available() {
        return;
    }
    let redis = RedisServer::start(Persistence::Off);
    let [a, b, c] = [(); 3].map(|_| gateway(&redis.url(), &[]));
    let job = "shared-1";
    // Live readers on every instance before anything is published.
    let live = [
        open(a.addr, job, None).await,
        open(b.addr, job, None).await,
        open(c.addr, job, None).await,
    ];
    let c_addr = c.addr;
    let waiter =
        tokio::spawn(async move { get(c_addr, job, &format!("/v1/jobs/{job}?wait=30")).await });
    let reply = publish(a.addr, job, ndjson(1..=30)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["last_seq"], 30);
    let reply = publish(b.addr, job, ndjson(31..=60)).await;
    assert_eq!(reply.json()["accepted"], 30);
    assert_eq!(reply.json()["last_seq"], 60);
    finish(c.addr, job, "succeeded").await;

    let mut streams = Vec::new();
    for resp in live {
        streams.push(raw_events(resp).await);
    }
    assert_eq!(streams[0].len(), 61);
    assert!(
        streams[0][0].starts_with("id: 1-") && streams[0][0].contains("\nevent: log\n"),
        "{}",
        streams[0][0]
    );
    assert!(streams[0][60].starts_with("id: 61-") && streams[0][60].contains("\nevent: status\n"));
    assert_eq!(streams[0], streams[1], "A and B send byte-identical events");
    assert_eq!(streams[0], streams[2], "A and C send byte-identical events");
    // A late reader, served from Redis, gets the same bytes too.
    assert_eq!(raw_events(open(b.addr, job, None).await).await, streams[0]);

    let waited = waiter.await.expect("wait task");
    assert_eq!(waited.status, 200);
    assert_eq!(waited.json()["status"], "succeeded");
    let mut statuses = Vec::new();
    for gw in [&a, &b, &c] {
        let mut s = get(gw.addr, job, &format!("/v1/jobs/{job}")).await.json();
        s.as_object_mut().map(|o| o.remove("subscribers"));
        statuses.push(s);
    }
    assert_eq!(statuses[0]["last_seq"], 61);
    assert_eq!(statuses[0]["lines"], 60);
    assert_eq!(statuses[0], statuses[1]);
    assert_eq!(statuses[0], statuses[2]);
    for path in [
        format!("/v1/jobs/{job}/log"),
        format!("/v1/jobs/{job}/log?tail_bytes=100"),
    ] {
        let texts: Vec<String> = [&a, &b, &c]
            .iter()
            .map(|gw| get(gw.addr, job, &path))
            .collect::<futures_util::future::JoinAll<_>>()
            .await
            .into_iter()
            .map(|r| r.text())
            .collect();
        assert!(texts[0].contains("line 60"), "{}", texts[0]);
        assert_eq!(texts[0], texts[1], "{path}");
        assert_eq!(texts[0], texts[2], "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_resume_and_publishers_resend_through_other_instances() {
    if !available() {
        return;
    }
    let redis = RedisServer::start(Persistence::Off);
    let [a, b, c] = [(); 3].map(|_| gateway(&redis.url(), &[]));
    let job = "shared-resume";
    assert_eq!(publish(a.addr, job, ndjson(1..=10)).await.status, 200);
    let mut first = reader(b.addr, job, None).await;
    for want in 1..=5 {
        assert_eq!(first.next_within(WITHIN).await.expect("event").seq(), want);
    }
    drop(first);
    let mut resumed = reader(c.addr, job, Some(5)).await;
    // A worker resends through another instance after a broken connection.
    let reply = publish(b.addr, job, ndjson(8..=15)).await;
    assert_eq!(reply.json()["accepted"], 5, "{}", reply.text());
    assert_eq!(reply.json()["duplicates"], 3);
    assert_eq!(reply.json()["last_seq"], 15);
    // B's metrics count what B stored and dropped.
    let metrics = http_client::request(b.addr, "GET", "/metrics", &[], Bytes::new()).await;
    let value = |name: &str| {
        metrics
            .text()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    assert_eq!(value("tailgate_records_published_total"), Some(5.0));
    assert_eq!(value("tailgate_duplicates_dropped_total"), Some(3.0));
    finish(a.addr, job, "failed").await;
    let events = resumed.collect(WITHIN).await;
    assert_eq!(
        seqs(&events),
        (6..=16).collect::<Vec<_>>(),
        "nothing skipped or repeated"
    );
    assert_eq!(events.last().unwrap().json()["status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_limit_truncates_once_whichever_instance_publishes() {
    if !available() {
        return;
    }
    let redis = RedisServer::start(Persistence::Off);
    let extra = ["--max-log-bytes", "400"];
    let [a, b] = [(); 2].map(|_| gateway(&redis.url(), &extra));
    let job = "shared-limit";
    let mut on_b = reader(b.addr, job, None).await;
    // A few lines fit, then one notice; later lines are counted, not stored.
    assert_eq!(publish(a.addr, job, ndjson(1..=10)).await.status, 200);
    let reply = publish(b.addr, job, ndjson(11..=20)).await;
    assert_eq!(reply.json()["accepted"], 10, "{}", reply.text());
    finish(a.addr, job, "succeeded").await;
    let events = on_b.collect(WITHIN).await;
    let notices: Vec<_> = events
        .iter()
        .filter(|e| e.event == "log" && e.json()["stream"] == "system")
        .collect();
    assert_eq!(notices.len(), 1, "{events:?}");
    assert!(notices[0].json()["line"]
        .as_str()
        .unwrap()
        .starts_with("tailgate: log truncated at "));
    let logs = events.iter().filter(|e| e.event == "log").count() as u64;
    for gw in [&a, &b] {
        let status = get(gw.addr, job, &format!("/v1/jobs/{job}")).await.json();
        assert_eq!(status["lines"].as_u64().unwrap() + 1, logs, "{status}");
        assert!(status["dropped_lines"].as_u64().unwrap() > 0, "{status}");
        assert_eq!(
            status["dropped_lines"].as_u64().unwrap() + status["lines"].as_u64().unwrap(),
            20,
            "{status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_with_a_hundred_readers_each_see_every_line_once() {
    if !available() {
        return;
    }
    let redis = RedisServer::start(Persistence::Off);
    let gws = [(); 3].map(|_| gateway(&redis.url(), &[]));
    let job = "shared-fanout";
    let mut readers = Vec::new();
    for gw in &gws {
        for _ in 0..100 {
            readers.push(reader(gw.addr, job, None).await);
        }
    }
    let tasks: Vec<_> = readers
        .into_iter()
        .map(|mut r| tokio::spawn(async move { seqs(&r.collect(Duration::from_secs(60)).await) }))
        .collect();
    for chunk in 0..10 {
        let from = chunk * 20 + 1;
        let gw = &gws[chunk as usize % 3];
        assert_eq!(
            publish(gw.addr, job, ndjson(from..=from + 19)).await.status,
            200
        );
    }
    finish(gws[1].addr, job, "succeeded").await;
    let want: Vec<u64> = (1..=201).collect();
    for task in tasks {
        assert_eq!(task.await.expect("reader"), want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_resends_to_another_instance_after_one_is_killed() {
    if !available() {
        return;
    }
    let redis = RedisServer::start(Persistence::Off);
    let mut a = gateway(&redis.url(), &[]);
    let b = gateway(&redis.url(), &[]);
    let job = "shared-kill";
    let mut on_b = reader(b.addr, job, None).await;
    let mut on_a = reader(a.addr, job, None).await;
    let auth = bearer(&publish_token(job));
    let upload = Upload::start(
        a.addr,
        &format!("/v1/jobs/{job}/logs"),
        &[
            ("authorization", &auth),
            ("content-type", "application/x-ndjson"),
        ],
    )
    .await;
    upload.send(ndjson(1..=20)).await;
    for want in 1..=20 {
        assert_eq!(on_b.next_within(WITHIN).await.expect("event").seq(), want);
    }
    let mut seen_on_a = 0;
    while seen_on_a < 12 {
        seen_on_a = on_a.next_within(WITHIN).await.expect("event").seq();
    }
    a.kill9();
    drop(upload);
    // A's reader loses its connection and resumes on B.
    while on_a.next().await.is_some() {}
    let mut resumed = reader(b.addr, job, Some(seen_on_a)).await;
    // The worker never got its reply: it sends everything again, to B.
    let reply = publish(b.addr, job, ndjson(1..=40)).await;
    assert_eq!(reply.json()["accepted"], 20, "{}", reply.text());
    assert_eq!(reply.json()["duplicates"], 20);
    finish(b.addr, job, "succeeded").await;
    let rest = on_b.collect(WITHIN).await;
    assert_eq!(seqs(&rest), (21..=41).collect::<Vec<_>>());
    let resumed = resumed.collect(WITHIN).await;
    assert_eq!(
        seqs(&resumed),
        (13..=41).collect::<Vec<_>>(),
        "A's reader lost nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_is_named_by_readyz_until_it_comes() {
    if !available() {
        return;
    }
    let port = free_port();
    let gw = gateway(
        &format!("redis://127.0.0.1:{port}/0"),
        &["--redis-timeout-ms", "500"],
    );
    let ready = http_client::request(gw.addr, "GET", "/readyz", &[], Bytes::new()).await;
    assert_eq!(ready.status, 503);
    assert!(ready.text().contains("redis"), "{}", ready.text());
    let reply = publish(gw.addr, "shared-down", ndjson(1..=3)).await;
    reply.assert_error(503, "store_unavailable");
    assert!(reply.header("retry-after").is_some());

    let redis = RedisServer::start_on(port, Persistence::Off, &[]);
    wait_ready(gw.addr).await;
    let reply = publish_retrying(gw.addr, "shared-down", ndjson(1..=3)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        redis.cli(&["XLEN", "tailgate:{shared-down}:log"]).trim(),
        "3"
    );
}

pub(crate) async fn wait_ready(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let ready = http_client::request(addr, "GET", "/readyz", &[], Bytes::new()).await;
        if ready.status == 200 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {}",
            ready.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_mid_run_refuses_publishes_and_readers_resume_without_gap() {
    if !available() {
        return;
    }
    let mut redis = RedisServer::start(Persistence::Always);
    let extra = ["--redis-timeout-ms", "500", "--keepalive-secs", "1"];
    let a = gateway(&redis.url(), &extra);
    let b = gateway(&redis.url(), &extra);
    let job = "shared-outage";
    let mut on_b = reader(b.addr, job, None).await;
    assert_eq!(publish(a.addr, job, ndjson(1..=5)).await.status, 200);
    for want in 1..=5 {
        assert_eq!(on_b.next_within(WITHIN).await.expect("event").seq(), want);
    }
    redis.stop();
    let reply = publish(a.addr, job, ndjson(6..=10)).await;
    reply.assert_error(503, "store_unavailable");
    assert!(reply.header("retry-after").is_some());
    // The reader stays connected: keep-alives go on.
    let comments = on_b.parser.comments;
    tokio::time::timeout(WITHIN, on_b.wait_comments(comments + 2))
        .await
        .expect("keep-alives continue while redis is down");

    redis.restart();
    let reply = publish_retrying(a.addr, job, ndjson(6..=10)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json()["accepted"],
        5,
        "nothing of the refused publish was kept"
    );
    finish(a.addr, job, "succeeded").await;
    let rest = on_b.collect(WITHIN).await;
    assert_eq!(
        seqs(&rest),
        (6..=11).collect::<Vec<_>>(),
        "no gap, no double"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_without_its_data_resets_readers() {
    if !available() {
        return;
    }
    let mut redis = RedisServer::start(Persistence::Off);
    let a = gateway(&redis.url(), &[]);
    let b = gateway(&redis.url(), &[]);
    let job = "shared-reborn";
    let mut on_b = reader(b.addr, job, None).await;
    assert_eq!(publish(a.addr, job, ndjson(1..=5)).await.status, 200);
    for want in 1..=5 {
        assert_eq!(on_b.next_within(WITHIN).await.expect("event").seq(), want);
    }
    redis.restart();
    // The instance notices the job's new life and ends its readers, which reconnect.
    let ended = on_b.collect(WITHIN).await;
    assert!(ended.is_empty(), "no record of another life: {ended:?}");
    // The new life is created through the instance that held the old one.
    assert_eq!(
        publish_retrying(b.addr, job, ndjson(1..=2)).await.status,
        200
    );
    let mut again = reader(b.addr, job, Some(5)).await;
    let reset = again.next_within(WITHIN).await.expect("reset");
    assert_eq!(reset.event, "reset");
    assert_eq!(again.next_within(WITHIN).await.expect("event").seq(), 1);
    assert_eq!(again.next_within(WITHIN).await.expect("event").seq(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_ends_a_job_once_across_instances() {
    if !available() {
        return;
    }
    let redis = RedisServer::start(Persistence::Off);
    let extra = ["--publisher-grace-secs", "1"];
    let gws = [(); 3].map(|_| gateway(&redis.url(), &extra));
    let job = "shared-lost";
    let mut readers = Vec::new();
    for gw in &gws {
        readers.push(reader(gw.addr, job, None).await);
    }
    assert_eq!(publish(gws[0].addr, job, ndjson(1..=3)).await.status, 200);
    for mut r in readers {
        let events = r.collect(WITHIN).await;
        assert_eq!(seqs(&events), vec![1, 2, 3, 4]);
        assert_eq!(events[3].json()["status"], "lost");
    }
    assert_eq!(
        redis.cli(&["XLEN", "tailgate:{shared-lost}:log"]).trim(),
        "4"
    );
    let ttl: i64 = redis
        .cli(&["PTTL", "tailgate:{shared-lost}:log"])
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 0, "a finished job's keys expire with retention");
}

/// A silent open upload on one instance keeps its job alive for the others: its
/// instance notes the upload's activity in Redis (spread out, from a quarter to half of
/// the grace apart), so neither the other instance holding the job nor the lease holder's
/// sweep ever finds it idle for the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_open_upload_keeps_its_job_alive_on_every_instance() {
    if !available() {
        return;
    }
    let redis = RedisServer::start(Persistence::Off);
    let extra = ["--publisher-grace-secs", "2"];
    let (a, b) = (gateway(&redis.url(), &extra), gateway(&redis.url(), &extra));
    let job = "shared-silent";
    let mut on_b = reader(b.addr, job, None).await;
    let auth = bearer(&publish_token(job));
    let upload = Upload::start(
        a.addr,
        &format!("/v1/jobs/{job}/logs"),
        &[
            ("authorization", &auth),
            ("content-type", "application/x-ndjson"),
        ],
    )
    .await;
    upload.send(ndjson(1..=1)).await;
    assert_eq!(on_b.next_within(WITHIN).await.expect("event").seq(), 1);
    // Three graces of silence: a `lost` status would arrive here.
    if let Ok(event) = tokio::time::timeout(Duration::from_secs(6), on_b.next()).await {
        panic!("the job ended while its upload was open: {event:?}");
    }
    upload.send(ndjson(2..=2)).await;
    assert_eq!(on_b.next_within(WITHIN).await.expect("event").seq(), 2);
    let st = redis.cli(&["HGET", "tailgate:{shared-silent}:meta", "st"]);
    assert_eq!(st.trim(), "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_nobody_holds_is_ended_once_by_the_lease_holder() {
    if !available() {
        return;
    }
    let redis = RedisServer::start(Persistence::Off);
    let extra = ["--publisher-grace-secs", "1"];
    let mut a = gateway(&redis.url(), &extra);
    let job = "shared-orphan";
    assert_eq!(publish(a.addr, job, ndjson(1..=2)).await.status, 200);
    // Its instance dies; no instance holds the job, but they sweep what Redis lists.
    a.kill9();
    let _others = [(); 2].map(|_| gateway(&redis.url(), &extra));
    let deadline = std::time::Instant::now() + WITHIN;
    // Ended (and, finished, off the list of jobs to sweep).
    while redis
        .cli(&["HGET", "tailgate:{shared-orphan}:meta", "st"])
        .trim()
        != "lost"
        || !redis
            .cli(&["ZSCORE", "tailgate:jobs", job])
            .trim()
            .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the orphan never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        redis.cli(&["XLEN", "tailgate:{shared-orphan}:log"]).trim(),
        "3",
        "one lost status, whichever instance swept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capgo_cli_resumes_on_another_instance() {
    use tailgate::auth::{CAPGO_AUDIENCE, CAPGO_ISSUER};
    use tailgate_tests::capgo::{self, capgo_token, stream_url, CliClient, Ended, PREFIX};
    if !available() {
        return;
    }
    let redis = RedisServer::start(Persistence::Off);
    let args = |url: &str| {
        vec![
            "--jwt-secret".to_string(),
            tailgate_tests::SECRET.into(),
            "--jwt-issuer".into(),
            CAPGO_ISSUER.into(),
            "--jwt-audience".into(),
            CAPGO_AUDIENCE.into(),
            "--redis-url".into(),
            url.into(),
        ]
    };
    let a = Daemon::start(&args(&redis.url()));
    let b = Daemon::start(&args(&redis.url()));
    let job = "capgo-shared";
    let lines =
        |r: std::ops::RangeInclusive<u64>| r.map(|i| format!("step {i}")).collect::<Vec<_>>();
    capgo::publish_lines(a.addr, job, lines(1..=5)).await;
    let token = capgo_token(job);
    let mut cli = CliClient::new(stream_url(a.addr, PREFIX, job, &token));
    cli.cut_after_lines = vec![5];
    let end = tokio::time::timeout(WITHIN, cli.session())
        .await
        .expect("session");
    assert!(matches!(end, Ended::Cut), "{end:?}");
    assert_eq!(cli.lines, lines(1..=5));

    capgo::publish_lines(b.addr, job, lines(6..=8)).await;
    capgo::publish_status(b.addr, job, "succeeded").await;
    let mut again = CliClient::new(stream_url(b.addr, PREFIX, job, &token));
    again.follow(WITHIN).await;
    assert_eq!(
        again.lines,
        lines(6..=8),
        "continues after the id confirmed on A"
    );
    assert_eq!(again.final_status.as_deref(), Some("succeeded"));
}

/// A CA and a certificate for 127.0.0.1 it signed, made with `openssl` in `dir`: the CA,
/// the certificate and its key.
fn tls_files(dir: &std::path::Path) -> Option<(String, String, String)> {
    let at = |name: &str| dir.join(name).display().to_string();
    let run = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    std::fs::create_dir_all(dir).ok()?;
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").ok()?;
    let ok = run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        &at("ca.key"),
        "-out",
        &at("ca.pem"),
    ]) && run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &at("redis.key"),
        "-out",
        &at("redis.csr"),
    ]) && run(&[
        "x509",
        "-req",
        "-in",
        &at("redis.csr"),
        "-CA",
        &at("ca.pem"),
        "-CAkey",
        &at("ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &at("ext.cnf"),
        "-out",
        &at("redis.pem"),
    ]);
    ok.then(|| (at("ca.pem"), at("redis.pem"), at("redis.key")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_jobs_over_rediss() {
    if !available() {
        return;
    }
    let dir = tailgate_tests::daemon::TempDir::new("redis-tls");
    let Some((ca, cert, key)) = tls_files(dir.path()) else {
        let why = "openssl cannot make a test certificate";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipped: {why}");
        return;
    };
    let redis = RedisServer::start_tls(&ca, &cert, &key);
    let url = format!("rediss://127.0.0.1:{}/0", redis.port);
    let start = |extra: &[(&str, &str)]| {
        let mut a = test_args();
        a.extend(["--redis-url".to_string(), url.clone()]);
        Daemon::try_start_with_env(&a, extra).expect("gateway")
    };
    // The system's trust store plus the test CA (SSL_CERT_FILE), as for a private CA.
    let a = start(&[("SSL_CERT_FILE", ca.as_str())]);
    let b = start(&[("SSL_CERT_FILE", ca.as_str())]);
    let job = "shared-tls";
    let mut on_b = reader(b.addr, job, None).await;
    let reply = publish_retrying(a.addr, job, ndjson(1..=5)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    finish(a.addr, job, "succeeded").await;
    assert_eq!(
        seqs(&on_b.collect(WITHIN).await),
        (1..=6).collect::<Vec<_>>()
    );
    assert_eq!(
        redis.cli(&["XLEN", "tailgate:{shared-tls}:log"]).trim(),
        "6"
    );

    // Without the CA the certificate is refused: not ready, publishes refused.
    let untrusting = start(&[]);
    let ready = http_client::request(untrusting.addr, "GET", "/readyz", &[], Bytes::new()).await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    publish(untrusting.addr, job, ndjson(6..=6))
        .await
        .assert_error(503, "store_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_keeps_each_job_on_one_slot_and_serves_it() {
    if !available() {
        return;
    }
    let cluster = Cluster::start(3);
    let (url, nodes) = (cluster.url(), &cluster.nodes);
    let a = gateway(&url, &[]);
    let b = gateway(&url, &[]);
    for job in ["cluster-a", "cluster-b", "cluster-c"] {
        let slots: Vec<String> = ["log", "meta", "capgo", "gone"]
            .iter()
            .map(|k| nodes[0].cli(&["CLUSTER", "KEYSLOT", &format!("tailgate:{{{job}}}:{k}")]))
            .collect();
        assert!(slots.iter().all(|s| *s == slots[0]), "{slots:?}");
        let mut on_b = reader(b.addr, job, None).await;
        let reply = publish(a.addr, job, ndjson(1..=10)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        finish(a.addr, job, "succeeded").await;
        let events = on_b.collect(WITHIN).await;
        assert_eq!(seqs(&events), (1..=11).collect::<Vec<_>>());
        let status = get(b.addr, job, &format!("/v1/jobs/{job}")).await.json();
        assert_eq!(status["status"], "succeeded");
        assert_eq!(status["lines"], Value::from(10));
    }
}

/// nginx with `deploy/compose-nginx.conf` (and the location it includes), its upstreams pointed at `gateways`; stopped on
/// drop. `None` (skipped) where nginx is missing outside CI.
struct Nginx {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tailgate_tests::daemon::TempDir,
}

impl Nginx {
    fn start(gateways: &[&Daemon]) -> Option<Self> {
        let found = std::process::Command::new("nginx")
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            let why = "nginx is not installed (apt-get install -y nginx-light)";
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
            eprintln!("skipped: {why}");
            return None;
        }
        let dir = tailgate_tests::daemon::TempDir::new("nginx");
        std::fs::create_dir_all(dir.path()).expect("nginx dir");
        let port = free_port();
        let d = dir.path().display().to_string();
        let site = include_str!("../../deploy/compose-nginx.conf")
            .replace("tailgate-a:8080", &gateways[0].addr.to_string())
            .replace("tailgate-b:8080", &gateways[1].addr.to_string())
            .replace("listen 8080;", &format!("listen 127.0.0.1:{port};"))
            .replace(
                "/etc/nginx/tailgate-locations.conf",
                &format!("{d}/locations.conf"),
            );
        std::fs::write(dir.join("site.conf"), site).expect("site");
        std::fs::write(
            dir.join("locations.conf"),
            include_str!("../../deploy/nginx/tailgate-locations.conf"),
        )
        .expect("locations");
        std::fs::write(
            dir.join("nginx.conf"),
            format!(
                "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
                 events {{}}\n\
                 http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
                 include {d}/site.conf; }}\n"
            ),
        )
        .expect("nginx.conf");
        let child = std::process::Command::new("nginx")
            .args(["-c", &format!("{d}/nginx.conf"), "-p", &d])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let deadline = std::time::Instant::now() + WITHIN;
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self {
            child,
            addr,
            _dir: dir,
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_compose_nginx_two_instances_serve_as_one() {
    if !available() {
        return;
    }
    let redis = RedisServer::start(Persistence::Off);
    let a = gateway(&redis.url(), &[]);
    let b = gateway(&redis.url(), &[]);
    let Some(nginx) = Nginx::start(&[&a, &b]) else {
        return;
    };
    let job = "behind-nginx";
    let mut live = Vec::new();
    for _ in 0..4 {
        live.push(open(nginx.addr, job, None).await);
    }
    // nginx spread the readers over both instances.
    for gw in [&a, &b] {
        let status = get(gw.addr, job, &format!("/v1/jobs/{job}")).await.json();
        assert!(status["subscribers"].as_u64() >= Some(1), "{status}");
    }
    for chunk in 0..4 {
        let from = chunk * 10 + 1;
        let reply = publish(nginx.addr, job, ndjson(from..=from + 9)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    finish(nginx.addr, job, "succeeded").await;
    let mut streams = Vec::new();
    for resp in live {
        streams.push(raw_events(resp).await);
    }
    assert_eq!(streams[0].len(), 41);
    assert!(
        streams.iter().all(|s| *s == streams[0]),
        "identical through either instance"
    );
}
