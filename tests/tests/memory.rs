//! The process memory budget: held records are a cache, shed across all jobs when the
//! process is over budget, and the budget counts what records really cost.

use std::time::Duration;

use tailgate::config::StoreConfig;
use tailgate_tests::daemon::{test_args, Daemon, TempDir};
use tailgate_tests::http_client;
use tailgate_tests::{bearer, publish_token, read_token, test_config, SseStream, TestServer};

const MIB: usize = 1 << 20;

fn lines(tag: &str, count: usize, len: usize) -> String {
    let pad = "y".repeat(len);
    (0..count)
        .map(|i| format!("{tag} {i:06} {pad}\n"))
        .collect()
}

/// Many finished jobs fill the budget; an upload to a new job must still complete (it
/// used to stall forever: only its own ring was shed). With the spool nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_filling_the_budget_never_stall_a_new_upload() {
    let data = TempDir::new("stall");
    let mut config = test_config();
    config.store = StoreConfig::spool(data.path());
    config.limits.memory_budget_bytes = 8 * MIB;
    config.limits.job_memory_bytes = 4 * MIB;
    let server = TestServer::start_with(config).await;
    for j in 0..16 {
        let job = format!("done-{j}");
        let reply = server.publish_text(&job, lines(&job, 2000, 500)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(
            server.set_status(&job, "succeeded", Some(0)).await.status,
            200
        );
    }
    let upload = server.publish_text("new-job", lines("new", 8000, 500));
    let reply = tokio::time::timeout(Duration::from_secs(30), upload)
        .await
        .expect("the upload to a new job completed");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["accepted"], 8000);

    // The shed records of a finished job are read back from the spool, all of them.
    let mut sse = server.subscribe("done-0", "", &[]).await;
    let events = sse.collect(Duration::from_secs(30)).await;
    assert_eq!(events.len(), 2001);
    assert!(events.iter().all(|e| e.event != "gap"));
    assert_eq!(
        events[1999].json()["line"].as_str().map(|l| &l[..13]),
        Some("done-0 001999")
    );
    server.stop().await;
}

/// RSS with the budget full stays within 1.25x the budget plus a fixed base, with a
/// `?format=text` reader making its frames too (they are counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_at_a_full_budget_stays_near_the_budget() {
    let budget = 32 * MIB;
    let data = TempDir::new("rss");
    let mut a = test_args();
    a.extend(
        [
            "--data-dir",
            &data.path().display().to_string(),
            "--memory-budget-bytes",
            &budget.to_string(),
            "--job-memory-bytes",
            &budget.to_string(),
        ]
        .map(String::from),
    );
    let gw = Daemon::start(&a);
    let job = "fill";
    let idle = gw.rss_bytes();
    let auth = bearer(&read_token(job));
    let reader = http_client::open(
        gw.addr,
        "GET",
        &format!("/v1/jobs/{job}/logs?format=text"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(reader.status(), 200);
    let mut text_reader = SseStream::new(reader.into_body());
    let pub_auth = bearer(&publish_token(job));
    let mut sent = 0;
    let mut chunk_no = 0;
    while sent < 2 * budget {
        let chunk = lines(&format!("c{chunk_no}"), 1000, 200);
        sent += chunk.len();
        chunk_no += 1;
        let reply = http_client::request(
            gw.addr,
            "POST",
            &format!("/v1/jobs/{job}/logs"),
            &[("authorization", &pub_auth), ("content-type", "text/plain")],
            chunk.into(),
        )
        .await;
        assert_eq!(reply.status, 200);
        // Keep the reader caught up, so its text frames are built for held records.
        for _ in 0..1000 {
            text_reader
                .next_within(Duration::from_secs(10))
                .await
                .expect("event");
        }
    }
    let full = gw.rss_bytes();
    // The fixed base: the idle process, plus 8 MiB that do not grow with the budget: I/O
    // buffers (upload chunks, the spool's write buffer, readers' batches) and the
    // allocator's per-thread arenas. Measured here: 39-42 MiB over idle at 32 MiB.
    let bound = idle + (8 << 20) + budget as u64 * 5 / 4;
    eprintln!(
        "idle {} MiB, full {} MiB, bound {} MiB",
        idle >> 20,
        full >> 20,
        bound >> 20
    );
    assert!(
        full <= bound,
        "RSS {} MiB at a full {} MiB budget (idle {} MiB)",
        full >> 20,
        budget >> 20,
        idle >> 20
    );
}
