//! The process memory budget: held records are a cache, shed across all jobs when the
//! process is over budget, and the budget counts what records really cost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

/// The scenario of #17 item 10: jobs published while one `?format=text` SSE reader and one
/// Capgo WebSocket reader follow each. What those readers hold (their frames, chunks
/// waiting for the socket) is charged to the budget and shed like the rest, so peak RSS
/// stays within 1.25x the budget plus the idle process (the issue's goal, exactly, at its
/// scale). Scaled by `TAILGATE_MEMORY_SCALE`: 1 is the issue's 256 MiB budget and 100
/// jobs x 5 MB; the default 8 is an eighth of the budget and the jobs (32 MiB, 12 jobs x
/// 5 MB), which a debug build runs in 35-85 s on a loaded 2-core machine, and which gets a
/// fixed 16 MiB more (what does not shrink with the scenario). Measured (debug build):
/// before, 1.84x at 1/4 and 1.92x at 1/8; after, 1.35x and 1.44-1.55x, the budget kept
/// throughout. The issue's scale with a release build (`TAILGATE_TEST_BIN`), 28-47 s on the
/// loaded machine: 2.16x before (the issue), 1.35x with the charges alone, 1.08-1.34x with
/// two malloc arenas, 1.07-1.08x (280-284 MiB) with one (serve's default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_capgo_readers_are_charged_to_the_budget() {
    let scale: usize = std::env::var("TAILGATE_MEMORY_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
        .max(1);
    let budget = 256 * MIB / scale;
    let jobs = 100 / scale;
    let per_job = 5_000_000;
    let data = TempDir::new("rss-readers");
    let mut a = test_args();
    a.extend(
        [
            "--data-dir",
            &data.path().display().to_string(),
            "--memory-budget-bytes",
            &budget.to_string(),
        ]
        .map(String::from),
    );
    let gw = Daemon::start(&a);
    let addr = gw.addr;
    let idle = gw.rss_bytes();
    let started = std::time::Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    for j in 0..jobs {
        let job = format!("job-{j}");
        let auth = bearer(&read_token(&job));
        let path = format!("/v1/jobs/{job}/logs?format=text");
        readers.spawn(async move {
            use http_body_util::BodyExt;
            let resp = http_client::open(addr, "GET", &path, &[("authorization", &auth)]).await;
            assert_eq!(resp.status(), 200);
            let mut body = resp.into_body();
            let mut bytes = 0usize;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.expect("text stream").into_data() {
                    bytes += data.len();
                }
            }
            ("text", bytes)
        });
        let url = tailgate_tests::capgo::stream_url(
            addr,
            tailgate_tests::capgo::PREFIX,
            &job,
            &read_token(&job),
        );
        readers.spawn(async move {
            use futures_util::StreamExt;
            let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .expect("capgo connect");
            let mut bytes = 0usize;
            while let Some(Ok(msg)) = ws.next().await {
                bytes += msg.len();
                if msg.is_close() {
                    break;
                }
            }
            ("capgo", bytes)
        });
    }
    // What the budget counts, beside the RSS, every half second: printed, to tell a
    // budget that is not kept from memory it does not see.
    let stop = Arc::new(AtomicBool::new(false));
    let sampling = Arc::clone(&stop);
    let pid = gw.child.id();
    let sampler = tokio::spawn(async move {
        let mut max_used = 0u64;
        let mut samples = Vec::new();
        while !sampling.load(Ordering::Relaxed) {
            let m = http_client::request(addr, "GET", "/metrics", &[], "".into()).await;
            let used = m
                .text()
                .lines()
                .find_map(|l| l.strip_prefix("tailgate_memory_budget_used_bytes "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0) as u64;
            let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
                * 1024;
            max_used = max_used.max(used);
            samples.push((used >> 20, rss >> 20));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!("(budget used, RSS) MiB every 0.5 s: {samples:?}");
        max_used
    });
    let mut publishers = tokio::task::JoinSet::new();
    for j in 0..jobs {
        publishers.spawn(async move {
            let job = format!("job-{j}");
            let auth = bearer(&publish_token(&job));
            let chunk = lines(&job, 5000, 180);
            let mut sent = 0;
            while sent < per_job {
                sent += chunk.len();
                let reply = http_client::request(
                    addr,
                    "POST",
                    &format!("/v1/jobs/{job}/logs"),
                    &[("authorization", &auth), ("content-type", "text/plain")],
                    chunk.clone().into(),
                )
                .await;
                assert_eq!(reply.status, 200, "{}", reply.text());
            }
            let done = http_client::request(
                addr,
                "POST",
                &format!("/v1/jobs/{job}/status"),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                r#"{"status":"succeeded","exit_code":0}"#.into(),
            )
            .await;
            assert_eq!(done.status, 200, "{}", done.text());
            sent
        });
    }
    let mut published = 0;
    while let Some(sent) = publishers.join_next().await {
        published += sent.expect("publisher");
    }
    let mut read = (0, 0);
    while let Some(got) = readers.join_next().await {
        match got.expect("reader") {
            ("text", n) => read.0 += n,
            (_, n) => read.1 += n,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let max_used = sampler.await.expect("sampler");
    let peak = gw.peak_rss_bytes();
    // The fixed part: upload bodies in flight, readers' batches on their way, allocator
    // arenas; 7-9 MiB at 1/8 and at 1/4 of the scenario, so it does not grow with it. At
    // full scale it fits in the quarter, and the bound is the issue's.
    let fixed = if scale == 1 { 0 } else { 16 << 20 };
    let bound = idle + fixed + budget as u64 * 5 / 4;
    eprintln!(
        "scale 1/{scale}: {jobs} jobs, {} MiB published, {} MiB text and {} MiB Capgo read in {:.1} s; \
         budget {} MiB (at most {} MiB used), idle {} MiB, peak {} MiB ({:.2}x budget over idle), bound {} MiB",
        published >> 20,
        read.0 >> 20,
        read.1 >> 20,
        started.elapsed().as_secs_f64(),
        budget >> 20,
        max_used >> 20,
        idle >> 20,
        peak >> 20,
        (peak - idle) as f64 / budget as f64,
        bound >> 20,
    );
    assert!(
        read.0 >= published && read.1 >= published,
        "every reader read its job whole"
    );
    // Sampled: an upload adds a chunk before it sheds, hence the eighth.
    assert!(
        max_used <= (budget + budget / 8) as u64,
        "the budget was not kept: {} MiB used",
        max_used >> 20
    );
    assert!(
        peak <= bound,
        "peak RSS {} MiB over the bound {} MiB",
        peak >> 20,
        bound >> 20
    );
}

/// `tailgate_memory_budget_used_bytes` of a daemon.
async fn budget_used(addr: std::net::SocketAddr) -> u64 {
    let m = http_client::request(addr, "GET", "/metrics", &[], "".into()).await;
    assert_eq!(m.status, 200);
    m.text()
        .lines()
        .find_map(|l| l.strip_prefix("tailgate_memory_budget_used_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("the budget gauge") as u64
}

/// tungstenite keeps its out buffer at the capacity of the largest frame it wrote, for the
/// session's life: a Capgo reader that caught up with a backlog (64 KiB batches) and then
/// idles holds that much. It is counted in the budget while the session lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_capgo_readers_out_buffer_is_charged() {
    use futures_util::StreamExt;
    let data = TempDir::new("capgo-out");
    let mut a = test_args();
    a.extend(["--data-dir".to_string(), data.path().display().to_string()]);
    let gw = Daemon::start(&a);
    let job = "idle-capgo";
    let reply = http_client::request(
        gw.addr,
        "POST",
        &format!("/v1/jobs/{job}/logs"),
        &[
            ("authorization", &bearer(&publish_token(job))),
            ("content-type", "text/plain"),
        ],
        lines("backlog", 500, 1000).into(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let url = tailgate_tests::capgo::stream_url(
        gw.addr,
        tailgate_tests::capgo::PREFIX,
        job,
        &read_token(job),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("capgo connect");
    let mut largest = 0;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("a frame");
        largest = largest.max(msg.len());
        if msg.to_text().is_ok_and(|t| t.contains("backlog 000499")) {
            break;
        }
    }
    assert!(largest > 48 << 10, "a batch frame of {largest} bytes");
    // Caught up and idle (the job is still running): the session holds its out buffer.
    let held = budget_used(gw.addr).await;
    ws.close(None).await.expect("close");
    while let Some(Ok(_)) = ws.next().await {}
    // The server drops the session after the close handshake; its charge goes with it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut after = budget_used(gw.addr).await;
    while held.saturating_sub(after) < largest as u64 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = budget_used(gw.addr).await;
    }
    assert!(
        held.saturating_sub(after) >= largest as u64,
        "the idle session's out buffer was not counted: {held} bytes used while it lived, {after} after, largest frame {largest}"
    );
}
