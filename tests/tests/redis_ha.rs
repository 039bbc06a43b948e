//! Redis as a team runs it, against real `redis-server` processes: a 3-primary Cluster
//! followed by notices instead of polling (idle jobs cost no reads) and through a slot
//! that moves (`MOVED`), publishing and reading while it is half-moved (`ASK`, `TRYAGAIN`); a replica promoted while an upload runs, with
//! `--redis-wait-replicas 1` keeping every acknowledged line; `/readyz` within 2 s of
//! losing Redis; and the job script's failures (a lost meta hash, a wrong-typed key)
//! answered cleanly. Skipped with a message where `redis-server` is missing; with
//! `CI=true` they fail instead.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tailgate_tests::gateway::Gateway;
use tailgate_tests::http_client;
use tailgate_tests::redis::{available, Persistence, RedisServer};
use tailgate_tests::redis_ha::{Cluster, Front, Replicated};

use crate::redis::{
    finish, gateway, ndjson, publish, publish_retrying, reader, seqs, wait_ready, WITHIN,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_is_followed_by_notices_and_through_a_moving_slot() {
    if !available() {
        return;
    }
    let cluster = Cluster::start(3);
    let (a, b) = (gateway(&cluster.url(), &[]), gateway(&cluster.url(), &[]));
    let jobs: Vec<String> = (0..20).map(|i| format!("cl-{i}")).collect();
    let mut readers = Vec::new();
    for job in &jobs {
        readers.push(reader(b.addr, job, None).await);
    }
    for job in &jobs {
        assert_eq!(publish(a.addr, job, ndjson(1..=3)).await.status, 200);
    }
    for r in &mut readers {
        for want in 1..=3 {
            assert_eq!(r.next_within(WITHIN).await.expect("event").seq(), want);
        }
    }

    // Idle: 20 followed jobs cost no reads (polling each every 100 ms made 400 here).
    cluster.reset_stats();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = cluster.calls("xread");
    assert!(idle <= 2, "{idle} XREADs in 2 idle seconds");

    // Records come in the script's notices: no reads at all while nothing is missed.
    for job in &jobs[..5] {
        assert_eq!(publish(a.addr, job, ndjson(4..=5)).await.status, 200);
    }
    for r in &mut readers[..5] {
        for want in 4..=5 {
            assert_eq!(r.next_within(WITHIN).await.expect("event").seq(), want);
        }
    }
    let busy = cluster.calls("xread");
    assert_eq!(busy, 0, "{busy} XREADs for 5 batches");

    // A slot moves under a running job (its subscription on the old node ends): the next
    // publishes (`MOVED`) reach the reader on B, in order.
    let job = &jobs[0];
    let slot = cluster.slot(&format!("tailgate:{{{job}}}:log"));
    let to = (cluster.owner(slot) + 1) % 3;
    cluster.move_slot(slot, to);
    assert_eq!(cluster.owner(slot), to);
    let reply = publish_retrying(a.addr, job, ndjson(6..=7)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    finish(a.addr, job, "succeeded").await;
    let rest = readers[0].collect(WITHIN).await;
    assert_eq!(seqs(&rest), (6..=8).collect::<Vec<_>>());
}

/// A slot caught half-moved (IMPORTING on the new node, MIGRATING on the old one, the
/// keys already sent by `MIGRATE`): the old node answers `ASK`, and the job's script
/// named four keys of which a live job lacks two, which a node mid-move refuses
/// (`TRYAGAIN`) until the move ends. Publishes, a new reader's read-back and a status read
/// must all succeed during the move, and the reader already following on another
/// instance gets every record, in order, once the slot settles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_slot_is_mid_move_publishes_and_reads_without_loss() {
    if !available() {
        return;
    }
    let cluster = Cluster::start(3);
    let (a, b, c) = (
        gateway(&cluster.url(), &[]),
        gateway(&cluster.url(), &[]),
        gateway(&cluster.url(), &[]),
    );
    let job = "mid-move";
    let mut on_b = reader(b.addr, job, None).await;
    assert_eq!(publish(a.addr, job, ndjson(1..=3)).await.status, 200);
    for want in 1..=3 {
        assert_eq!(on_b.next_within(WITHIN).await.expect("event").seq(), want);
    }

    let slot = cluster.slot(&format!("tailgate:{{{job}}}:meta"));
    let to = (cluster.owner(slot) + 1) % 3;
    cluster.migrate_slot(slot, to);
    assert_ne!(cluster.owner(slot), to, "the slot must still be mid-move");

    // The first try succeeds: no 503 while the move lasts.
    let reply = publish(a.addr, job, ndjson(4..=5)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let status = crate::redis::get(c.addr, job, &format!("/v1/jobs/{job}")).await;
    assert_eq!(status.status, 200, "{}", status.text());
    assert_eq!(status.json()["lines"], serde_json::Value::from(5));
    let mut on_c = reader(c.addr, job, None).await;
    for want in 1..=5 {
        assert_eq!(on_c.next_within(WITHIN).await.expect("event").seq(), want);
    }
    assert_eq!(
        cluster.nodes[cluster.owner(slot)]
            .cli(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()])
            .trim(),
        "0",
        "the records went to the node the slot moves to"
    );

    cluster.settle_slot(slot, to);
    assert_eq!(cluster.owner(slot), to);
    let reply = publish(a.addr, job, ndjson(6..=6)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // Earlier in a move: the old node still holds the meta hash but refuses the keys the
    // job lacks. The script stops before any write (`TRYAGAIN`), and the publish goes
    // through once the keys have moved.
    let from = to;
    let to = (from + 1) % 3;
    cluster.open_move(slot, to);
    cluster.reset_stats();
    let publishing = tokio::spawn(publish(a.addr, job, ndjson(7..=8)));
    let deadline = Instant::now() + WITHIN;
    while cluster.errors(from, "TRYAGAIN") == 0 {
        assert!(Instant::now() < deadline, "the publish never met the move");
        assert!(
            !publishing.is_finished(),
            "the publish ended before the keys moved"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.migrate_keys(slot, to);
    let reply = publishing.await.expect("publish task");
    assert_eq!(reply.status, 200, "{}", reply.text());
    cluster.settle_slot(slot, to);
    finish(a.addr, job, "succeeded").await;
    assert_eq!(
        seqs(&on_b.collect(WITHIN).await),
        (4..=9).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(&on_c.collect(WITHIN).await),
        (6..=9).collect::<Vec<_>>()
    );
    let status = crate::redis::get(b.addr, job, &format!("/v1/jobs/{job}"))
        .await
        .json();
    assert_eq!(
        status["lines"],
        serde_json::Value::from(8),
        "no line stored twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_promoted_mid_upload_keeps_every_line_acknowledged_after_wait() {
    if !available() {
        return;
    }
    let mut pair = Replicated::start();
    let front = Front::start(pair.primary.port).await;
    let gw = gateway(
        &front.url(),
        &["--redis-wait-replicas", "1", "--redis-timeout-ms", "1000"],
    );
    let job = "failover";
    let (acked_tx, mut acked_rx) = tokio::sync::watch::channel(0u64);
    let addr = gw.addr;
    // The uploader: batches of 10 numbered lines, each resent until acknowledged.
    let upload = tokio::spawn(async move {
        for batch in 0..30u64 {
            let lines = ndjson(batch * 10 + 1..=batch * 10 + 10);
            let reply = publish_retrying(addr, job, lines).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            acked_tx.send_replace(batch * 10 + 10);
        }
    });
    acked_rx
        .wait_for(|n| *n >= 100)
        .await
        .expect("the upload runs");
    let front = &front;
    pair.fail_over(|port| front.switch(port));
    upload.await.expect("every batch acknowledged");
    finish(gw.addr, job, "succeeded").await;

    // Every acknowledged line once, in order, on the promoted primary.
    let lines = pair
        .primary
        .cli(&["XLEN", &format!("tailgate:{{{job}}}:log")]);
    assert_eq!(lines.trim(), "301", "300 lines and the status");
    let events = reader(gw.addr, job, None).await.collect(WITHIN).await;
    assert_eq!(seqs(&events), (1..=301).collect::<Vec<_>>());
    for (i, e) in events.iter().take(300).enumerate() {
        assert!(
            e.data.contains(&format!("\"line\":\"line {} ", i + 1)),
            "{}",
            e.data
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_within_2s_of_redis_freezing_or_dying() {
    if !available() {
        return;
    }
    let mut redis = RedisServer::start(Persistence::Off);
    let gw = gateway(&redis.url(), &[]);
    wait_ready(gw.addr).await;
    let until_unready = || async {
        let start = Instant::now();
        loop {
            let ready = http_client::request(gw.addr, "GET", "/readyz", &[], Bytes::new()).await;
            if ready.status == 503 {
                ready.assert_error(503, "store_unavailable");
                return start.elapsed();
            }
            assert!(start.elapsed() < WITHIN, "never unready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // Frozen (a hung host): only the health check's own timeout notices.
    redis.signal("STOP");
    let took = until_unready().await;
    assert!(took < Duration::from_secs(2), "{took:?} after redis froze");
    redis.signal("CONT");
    wait_ready(gw.addr).await;
    // Gone.
    redis.stop();
    let took = until_unready().await;
    assert!(took < Duration::from_secs(2), "{took:?} after redis died");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_meta_hash_starts_a_new_life_and_script_errors_stay_in_the_log() {
    if !available() {
        return;
    }
    let redis = RedisServer::start(Persistence::Off);
    let (a, b) = (gateway(&redis.url(), &[]), gateway(&redis.url(), &[]));
    let job = "evicted";
    assert_eq!(publish(a.addr, job, ndjson(1..=5)).await.status, 200);
    // What an `allkeys-*` eviction or a stray DEL does: the stream stays, the meta goes.
    redis.cli(&["DEL", &format!("tailgate:{{{job}}}:meta")]);
    let reply = publish(b.addr, job, ndjson(1..=2)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["last_seq"], 2, "a new life from seq 1");
    let stream = redis.cli(&["XLEN", &format!("tailgate:{{{job}}}:log")]);
    assert_eq!(stream.trim(), "2", "the old life's records are gone");

    // A key of the wrong type makes the script fail: a clean 503, no SHA, no line.
    let broken = "wrongtype";
    redis.cli(&["SET", &format!("tailgate:{{{broken}}}:meta"), "x"]);
    let reply = publish(a.addr, broken, ndjson(1..=1)).await;
    reply.assert_error(503, "store_unavailable");
    let text = reply.text();
    for leak in ["user_script", "f_", "WRONGTYPE", "tailgate:{"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_redis_is_named_in_the_log_at_start() {
    if !available() {
        return;
    }
    let redis = RedisServer::start_on(
        tailgate_tests::redis::free_port(),
        Persistence::Off,
        &["--maxmemory-policy", "allkeys-lru"],
    );
    let url = redis.url();
    let mut gw = Gateway::start(
        &[
            "--redis-url",
            &url,
            "--jwt-secret",
            tailgate_tests::SECRET,
            "--jwt-issuer",
            tailgate_tests::ISSUER,
            "--jwt-audience",
            tailgate_tests::AUDIENCE,
        ],
        &[],
    )
    .await;
    let line = gw.wait_log("maxmemory_policy", WITHIN).await;
    assert!(line.contains("allkeys-lru"), "{line}");
    assert!(line.contains("noeviction"), "{line}");
}
