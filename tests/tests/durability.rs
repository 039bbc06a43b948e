//! The durable spool, through the real binary: kill -9 mid-build with readers attached,
//! a stalled reader catching up from disk, the lifecycle across a restart, start-up
//! faults, and what stays on disk.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tailgate_tests::daemon::{test_args, Daemon, TempDir};
use tailgate_tests::http_client::{self, Upload};
use tailgate_tests::{bearer, publish_ndjson, publish_token, read_token, SseStream};
use tokio::sync::watch;

fn args(data: &TempDir, extra: &[&str]) -> Vec<String> {
    let mut a = test_args();
    a.push("--data-dir".into());
    a.push(data.path().display().to_string());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

async fn status(addr: SocketAddr, job: &str) -> Value {
    let auth = bearer(&read_token(job));
    let reply = http_client::request(
        addr,
        "GET",
        &format!("/v1/jobs/{job}"),
        &[("authorization", &auth)],
        Default::default(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

fn ndjson(range: std::ops::RangeInclusive<u64>) -> String {
    range
        .map(|n| format!("{{\"n\":{n},\"line\":\"line {n}\"}}\n"))
        .collect()
}

/// Opens the job's SSE stream after `last` (0: from the start).
async fn subscribe(
    addr: SocketAddr,
    job: &str,
    last: u64,
) -> hyper::Response<hyper::body::Incoming> {
    let auth = bearer(&read_token(job));
    let last = last.to_string();
    let mut headers = vec![("authorization", auth.as_str())];
    if last != "0" {
        headers.push(("last-event-id", last.as_str()));
    }
    http_client::open(addr, "GET", &format!("/v1/jobs/{job}/logs"), &headers).await
}

/// A reader that follows the job to its final status across gateway restarts,
/// reconnecting with `Last-Event-ID`; returns every event's (seq, line) in order.
/// `attached` hears once the first stream is open.
async fn follow(
    job: &'static str,
    mut addr_rx: watch::Receiver<SocketAddr>,
    attached: tokio::sync::mpsc::Sender<()>,
) -> Vec<(u64, String)> {
    let mut seen: Vec<(u64, String)> = Vec::new();
    loop {
        let addr = *addr_rx.borrow_and_update();
        let last = seen.last().map_or(0, |(s, _)| *s);
        let resp = subscribe(addr, job, last).await;
        assert_eq!(resp.status(), 200, "reader resumes after {last}");
        let _ = attached.try_send(());
        let mut sse = SseStream::new(resp.into_body());
        while let Some(event) = sse.next().await {
            assert_ne!(event.event, "gap", "no reader ever meets a gap");
            assert_ne!(event.event, "reset", "the job survived the restart");
            let seq = event.seq();
            let expected = seen.last().map_or(1, |(s, _)| s + 1);
            assert_eq!(seq, expected, "every record once, in order");
            let json = event.json();
            if event.event == "status" && json["final"] == true {
                seen.push((seq, "<final>".into()));
                return seen;
            }
            seen.push((seq, json["line"].as_str().unwrap_or_default().to_string()));
        }
        // The stream broke: the gateway died. Wait for the next one.
        addr_rx.changed().await.expect("gateway restarted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_upload_loses_nothing_and_doubles_nothing() {
    let data = TempDir::new("kill9");
    let mut gw = Daemon::start(&args(&data, &[]));
    let (addr_tx, addr_rx) = watch::channel(gw.addr);
    let job = "build-kill9";

    // A first request the worker saw acknowledged: n 1..=100.
    let reply = publish_ndjson(gw.addr, job, ndjson(1..=100)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["last_n"], 100);

    let (attached_tx, mut attached_rx) = tokio::sync::mpsc::channel(100);
    let readers: Vec<_> = (0..50)
        .map(|_| tokio::spawn(follow(job, addr_rx.clone(), attached_tx.clone())))
        .collect();
    // Every reader's stream is open before the gateway dies (a request in flight at
    // kill -9 would be a client-side failure, not the gateway's).
    for _ in 0..50 {
        attached_rx.recv().await.expect("a reader attached");
    }

    // The upload in progress when the gateway dies: 101..=300 sent, never answered.
    let auth = bearer(&publish_token(job));
    let upload = Upload::start(
        gw.addr,
        &format!("/v1/jobs/{job}/logs"),
        &[
            ("authorization", &auth),
            ("content-type", "application/x-ndjson"),
        ],
    )
    .await;
    for chunk in (101..=300).collect::<Vec<u64>>().chunks(20) {
        upload.send(ndjson(chunk[0]..=chunk[chunk.len() - 1])).await;
    }
    // Wait until the gateway has stored them (what a reader could have seen).
    let stored = loop {
        let s = status(gw.addr, job).await;
        if s["last_n"] == 300 {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(stored["last_seq"], 300);

    gw.crash_and_restart();
    addr_tx.send(gw.addr).expect("readers listen");
    drop(upload);

    let after = status(gw.addr, job).await;
    assert_eq!(after["status"], "running");
    assert_eq!(after["last_n"], 300, "last_n survives kill -9");
    assert_eq!(after["last_seq"], 300);
    assert_eq!(after["lines"], 300);

    // The worker resends from its last acknowledged n (100): 101..=300 are duplicates.
    let mut resend = ndjson(101..=500);
    resend.push_str("{\"n\":501,\"status\":\"succeeded\",\"exit_code\":0}\n");
    let reply = publish_ndjson(gw.addr, job, resend).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let tally = reply.json();
    assert_eq!(
        (tally["accepted"].as_u64(), tally["duplicates"].as_u64()),
        (Some(201), Some(200))
    );
    assert_eq!(tally["last_seq"], 501);

    for reader in readers {
        let seen = tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .expect("reader finished")
            .expect("reader task");
        assert_eq!(seen.len(), 501);
        for (i, (seq, line)) in seen.iter().take(500).enumerate() {
            assert_eq!(*seq, i as u64 + 1);
            assert_eq!(line, &format!("line {}", i + 1));
        }
    }

    // Finished, and still finished after another crash; a reader who read it all: 204.
    gw.crash_and_restart();
    let s = status(gw.addr, job).await;
    assert_eq!(
        (s["status"].as_str(), s["exit_code"].as_i64()),
        (Some("succeeded"), Some(0))
    );
    let resp = subscribe(gw.addr, job, 501).await;
    assert_eq!(resp.status(), 204);
    let auth = bearer(&read_token(job));
    let text = http_client::request(
        gw.addr,
        "GET",
        &format!("/v1/jobs/{job}/log?tail_bytes=18"),
        &[("authorization", &auth)],
        Default::default(),
    )
    .await;
    assert_eq!(text.text(), "line 499\nline 500\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_stalled_for_a_whole_build_reads_it_all_from_the_spool() {
    const LINES: u64 = 400_000;
    let data = TempDir::new("stalled");
    let gw = Daemon::start(&args(
        &data,
        &[
            "--job-memory-bytes",
            "1048576",
            "--memory-budget-bytes",
            "16777216",
        ],
    ));
    let job = "big-build";
    // The stalled reader: connected from the start, reading nothing until the end.
    let stalled = subscribe(gw.addr, job, 0).await;
    assert_eq!(stalled.status(), 200);

    let auth = bearer(&publish_token(job));
    let upload = Upload::start(
        gw.addr,
        &format!("/v1/jobs/{job}/logs"),
        &[("authorization", &auth), ("content-type", "text/plain")],
    )
    .await;
    let pad = "x".repeat(480);
    let mut peak_rss = 0;
    let mut n = 0;
    while n < LINES {
        let mut chunk = String::with_capacity(512 * 1000);
        for _ in 0..1000 {
            n += 1;
            chunk.push_str(&format!("{n:08} {pad}\n"));
        }
        upload.send(chunk).await;
        if n.is_multiple_of(50_000) {
            peak_rss = peak_rss.max(gw.rss_bytes());
        }
    }
    let reply = upload.finish().await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut done = tailgate_tests::http_client::request(
        gw.addr,
        "POST",
        &format!("/v1/jobs/{job}/status"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        r#"{"status":"succeeded","exit_code":0}"#.into(),
    )
    .await;
    assert_eq!(done.status, 200, "{}", std::mem::take(&mut done.body).len());

    let mut sse = SseStream::new(stalled.into_body());
    let mut expect = 1u64;
    while let Some(event) = sse.next().await {
        assert_ne!(event.event, "gap", "no gap");
        assert_eq!(event.seq(), expect);
        if event.event == "log" {
            let line = event.json()["line"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(line.starts_with(&format!("{expect:08} ")), "{line:.20}");
        }
        expect += 1;
        if expect.is_multiple_of(100_000) {
            peak_rss = peak_rss.max(gw.rss_bytes());
        }
    }
    assert_eq!(expect, LINES + 2, "every line and the final status");
    // 200 MB went through a 16 MiB memory budget: memory stays bounded by it, not the log.
    assert!(
        peak_rss < 120 << 20,
        "peak RSS {} MiB over the bound",
        peak_rss >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_and_expired_are_wall_clock_and_survive_a_restart() {
    let data = TempDir::new("lifecycle");
    let mut gw = Daemon::start(&args(
        &data,
        &["--publisher-grace-secs", "1", "--queued-ttl-secs", "2"],
    ));
    let reply = publish_ndjson(gw.addr, "worker-gone", ndjson(1..=3)).await;
    assert_eq!(reply.status, 200);
    // A reader names a job nobody publishes to: queued.
    assert_eq!(status(gw.addr, "never-published").await["status"], "queued");
    gw.crash_and_restart();
    // The clocks count from timestamps in the spool, not from the restart.
    let mut reader = SseStream::new(subscribe(gw.addr, "worker-gone", 3).await.into_body());
    let event = reader
        .next_within(Duration::from_secs(10))
        .await
        .expect("status event");
    assert_eq!(
        (event.event.as_str(), event.json()["status"].as_str()),
        ("status", Some("lost"))
    );
    assert!(
        reader.next_within(Duration::from_secs(5)).await.is_none(),
        "the stream ends"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(gw.addr, "never-published").await;
        if s["status"] == "expired" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "queued job never expired: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.crash_and_restart();
    assert_eq!(status(gw.addr, "worker-gone").await["status"], "lost");
    assert_eq!(
        status(gw.addr, "never-published").await["status"],
        "expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_jobs_answer_410_from_their_tombstone() {
    let data = TempDir::new("tombstone");
    let mut gw = Daemon::start(&args(
        &data,
        &["--disk-retention-secs", "0", "--retention-secs", "0"],
    ));
    let job = "old-build";
    let reply = publish_ndjson(gw.addr, job, ndjson(1..=2)).await;
    assert_eq!(reply.status, 200);
    let auth = bearer(&publish_token(job));
    let done = http_client::request(
        gw.addr,
        "POST",
        &format!("/v1/jobs/{job}/status"),
        &[("authorization", &auth)],
        r#"{"status":"failed","exit_code":3}"#.into(),
    )
    .await;
    assert_eq!(done.status, 200);
    let read = bearer(&read_token(job));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let gone = loop {
        let r = http_client::request(
            gw.addr,
            "GET",
            &format!("/v1/jobs/{job}"),
            &[("authorization", &read)],
            Default::default(),
        )
        .await;
        if r.status == 410 {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never deleted: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    gone.assert_error(410, "job_expired");
    assert_eq!(
        (
            gone.json()["status"].as_str(),
            gone.json()["exit_code"].as_i64()
        ),
        (Some("failed"), Some(3))
    );
    assert!(
        !data.join("jobs/old-build.spool").exists(),
        "the spool is deleted"
    );
    gw.crash_and_restart();
    let sse = subscribe(gw.addr, job, 0).await;
    assert_eq!(
        sse.status(),
        410,
        "the tombstone survives a restart; no new empty job"
    );
    let publish = publish_ndjson(gw.addr, job, ndjson(3..=3)).await;
    publish.assert_error(410, "job_expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_data_dir_is_a_startup_error_naming_it() {
    let data = TempDir::new("unwritable");
    std::fs::create_dir_all(data.path()).unwrap();
    let file = data.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let bad = file.join("data");
    let mut a = test_args();
    a.extend(["--data-dir".into(), bad.display().to_string()]);
    let (code, stderr) = Daemon::try_start(&a).err().expect("refused to start");
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains(&bad.display().to_string()), "{stderr}");

    // A second gateway on a directory in use is refused too.
    let _first = Daemon::start(&args(&data, &[]));
    let (code, stderr) = Daemon::try_start(&args(&data, &[])).err().expect("refused");
    assert_eq!(code, Some(64));
    assert!(stderr.contains("another tailgate process"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_and_files_are_private_and_job_ids_cannot_escape_it() {
    use std::os::unix::fs::PermissionsExt;
    let data = TempDir::new("private");
    let gw = Daemon::start(&args(&data, &[]));
    let reply = publish_ndjson(gw.addr, "ok.job-1_x", ndjson(1..=1)).await;
    assert_eq!(reply.status, 200);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(data.path()), 0o700);
    assert_eq!(mode(&data.join("jobs")), 0o700);
    assert_eq!(mode(&data.join("jobs/ok.job-1_x.spool")), 0o600);
    let auth = bearer(&publish_token("x"));
    for path in [
        "/v1/jobs/../logs",
        "/v1/jobs/%2e%2e/logs",
        "/v1/jobs/..%2Fescape/logs",
        "/v1/jobs/a%2Fb/logs",
        "/v1/jobs/a%00b/logs",
        "/v1/jobs/.../../../etc/logs",
        "/v1/jobs/%2Fetc%2Fpasswd/logs",
    ] {
        let r = http_client::request(
            gw.addr,
            "POST",
            path,
            &[("authorization", &auth)],
            "x\n".into(),
        )
        .await;
        assert!(r.status == 400 || r.status == 404, "{path}: {}", r.status);
    }
    let mut names: Vec<String> = std::fs::read_dir(data.join("jobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["ok.job-1_x.spool"]);
    let top: Vec<String> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        top.iter()
            .all(|n| ["jobs", "tombstones", "LOCK"].contains(&n.as_str())),
        "{top:?}"
    );
}

/// Publishes 1 KiB lines to `job` until the gateway refuses; returns the refusal and
/// how many lines were acknowledged before it.
async fn publish_until_refused(addr: SocketAddr, job: &str) -> (http_client::Reply, u64) {
    let auth = bearer(&publish_token(job));
    let mut acknowledged = 0u64;
    for round in 0..10_000u64 {
        let body: String = (0..64)
            .map(|i| format!("{round:05}-{i:02} {}\n", "z".repeat(1000)))
            .collect();
        let reply = http_client::request(
            addr,
            "POST",
            &format!("/v1/jobs/{job}/logs"),
            &[("authorization", &auth), ("content-type", "text/plain")],
            body.into(),
        )
        .await;
        if reply.status != 200 {
            return (reply, acknowledged);
        }
        acknowledged = reply.json()["last_seq"].as_u64().unwrap_or(0);
    }
    panic!("never refused");
}

/// After a refusal, the acknowledged records are all there and readers are served.
async fn acknowledged_lines_survive(addr: SocketAddr, job: &str, reply: &http_client::Reply) {
    let body = reply.json();
    assert!(reply.header("retry-after").is_some(), "{body}");
    let last_seq = body["last_seq"]
        .as_u64()
        .expect("the refusal reports last_seq");
    assert_eq!(status(addr, job).await["last_seq"].as_u64(), Some(last_seq));
    let resp = subscribe(addr, job, 0).await;
    assert_eq!(resp.status(), 200);
    let mut sse = SseStream::new(resp.into_body());
    for seq in 1..=last_seq {
        let e = sse
            .next_within(Duration::from_secs(10))
            .await
            .expect("event");
        assert_eq!((e.seq(), e.event.as_str()), (seq, "log"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_budget_refuses_with_507_and_keeps_what_was_acknowledged() {
    let data = TempDir::new("budget");
    let gw = Daemon::start(&args(&data, &["--max-disk-bytes", "300000"]));
    let (reply, acknowledged) = publish_until_refused(gw.addr, "too-big").await;
    reply.assert_error(507, "insufficient_storage");
    assert!(reply.json()["message"]
        .as_str()
        .unwrap()
        .contains("--max-disk-bytes"));
    assert!(acknowledged > 0);
    acknowledged_lines_survive(gw.addr, "too-big", &reply).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_ends_the_publish_with_507_and_loses_nothing_acknowledged() {
    let data = TempDir::new("fulldisk");
    std::fs::create_dir_all(data.path()).unwrap();
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=512k",
            "tailgate-test",
            &data.path().display().to_string(),
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        let why = "cannot mount a small tmpfs (needs root): full-disk test not run";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(data.path().to_path_buf());
    let gw = Daemon::start(&args(&data, &[]));
    let (reply, acknowledged) = publish_until_refused(gw.addr, "disk-full").await;
    reply.assert_error(507, "insufficient_storage");
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("disk is full"),
        "{}",
        reply.text()
    );
    assert!(
        !reply.text().contains(&*data.path().to_string_lossy()),
        "no data-dir path reaches a client: {}",
        reply.text()
    );
    assert!(acknowledged > 0);
    acknowledged_lines_survive(gw.addr, "disk-full", &reply).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capgo_cli_resumes_after_its_confirmed_id_across_a_restart() {
    use tailgate::auth::{CAPGO_AUDIENCE, CAPGO_ISSUER};
    use tailgate_tests::capgo::{self, capgo_token, stream_url, CliClient, Ended, PREFIX};
    let data = TempDir::new("capgo");
    let a = vec![
        "--jwt-secret".to_string(),
        tailgate_tests::SECRET.into(),
        "--jwt-issuer".into(),
        CAPGO_ISSUER.into(),
        "--jwt-audience".into(),
        CAPGO_AUDIENCE.into(),
        "--data-dir".into(),
        data.path().display().to_string(),
    ];
    let mut gw = Daemon::start(&a);
    let job = "capgo-build";
    let lines =
        |r: std::ops::RangeInclusive<u64>| r.map(|i| format!("step {i}")).collect::<Vec<_>>();
    capgo::publish_lines(gw.addr, job, lines(1..=5)).await;
    let token = capgo_token(job);
    let mut cli = CliClient::new(stream_url(gw.addr, PREFIX, job, &token));
    cli.cut_after_lines = vec![5];
    let end = tokio::time::timeout(Duration::from_secs(10), cli.session())
        .await
        .expect("session");
    assert!(matches!(end, Ended::Cut), "{end:?}");
    assert_eq!(cli.lines, lines(1..=5));

    gw.crash_and_restart();
    capgo::publish_lines(gw.addr, job, lines(6..=8)).await;
    capgo::publish_status(gw.addr, job, "succeeded").await;
    // The CLI reconnects with no resume point and shows whatever it is sent.
    let mut again = CliClient::new(stream_url(gw.addr, PREFIX, job, &token));
    again.follow(Duration::from_secs(20)).await;
    assert_eq!(
        again.lines,
        lines(6..=8),
        "continues after the confirmed id, nothing twice"
    );
    assert_eq!(again.final_status.as_deref(), Some("succeeded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_mid_spool_costs_one_record_and_readers_get_a_gap_for_it() {
    let data = TempDir::new("flip");
    let mut gw = Daemon::start(&args(&data, &[]));
    let job = "flipped";
    let reply = publish_ndjson(gw.addr, job, ndjson(1..=1000)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let auth = bearer(&publish_token(job));
    let done = http_client::request(
        gw.addr,
        "POST",
        &format!("/v1/jobs/{job}/status"),
        &[("authorization", &auth)],
        r#"{"status":"succeeded","exit_code":0}"#.into(),
    )
    .await;
    assert_eq!(done.status, 200);
    gw.kill9();
    let path = data.join("jobs/flipped.spool");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(9)
        .position(|w| w == b"line 500\"")
        .expect("record 500");
    bytes[at + 1] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let gw = Daemon::start(&args(&data, &[]));

    let st = status(gw.addr, job).await;
    assert_eq!(st["status"], "succeeded", "{st}");
    assert_eq!(st["last_seq"], 1001, "{st}");
    let resp = subscribe(gw.addr, job, 0).await;
    assert_eq!(resp.status(), 200);
    let mut sse = SseStream::new(resp.into_body());
    let mut seqs = Vec::new();
    let mut gaps = Vec::new();
    while let Some(e) = sse.next_within(Duration::from_secs(10)).await {
        match e.event.as_str() {
            "gap" => gaps.push((e.json()["from"].as_u64(), e.json()["to"].as_u64())),
            "status" if e.json()["final"] == true => {
                seqs.push(e.seq());
                break;
            }
            _ => seqs.push(e.seq()),
        }
    }
    assert_eq!(
        gaps,
        vec![(Some(500), Some(500))],
        "the lost record is a gap"
    );
    let want: Vec<u64> = (1..=1001).filter(|&s| s != 500).collect();
    assert_eq!(seqs, want, "everything intact, the final status included");
    let aside: Vec<String> = std::fs::read_dir(data.join("jobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("flipped.spool.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged file is kept");
    assert_eq!(
        std::fs::read(data.join(&format!("jobs/{}", aside[0]))).unwrap(),
        bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_files_in_the_data_dir_does_not_let_a_second_gateway_share_it() {
    let data = TempDir::new("lock-delete");
    let _first = Daemon::start(&args(&data, &[]));
    for name in ["LOCK", ".lock"] {
        let _ = std::fs::remove_file(data.join(name));
    }
    let (code, stderr) = Daemon::try_start(&args(&data, &[]))
        .err()
        .expect("a second gateway is refused");
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("another tailgate process"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_or_symlink_planted_as_a_spool_does_not_stop_start_up() {
    let data = TempDir::new("fifo");
    drop(Daemon::start(&args(&data, &[])));
    let jobs = data.join("jobs");
    let made = std::process::Command::new("mkfifo")
        .arg(jobs.join("fifo.spool"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(made, "mkfifo");
    let outside = data.join("outside");
    std::fs::write(&outside, b"not a spool").unwrap();
    std::os::unix::fs::symlink(&outside, jobs.join("link.spool")).unwrap();
    // Before the fix this never printed its address: open(2) on the FIFO blocked.
    let gw = Daemon::start(&args(&data, &[]));
    for job in ["fifo", "link"] {
        let st = status(gw.addr, job).await;
        assert_eq!(st["status"], "lost", "{st}");
        let why = st["error"].as_str().unwrap_or_default();
        assert!(!why.contains(&*data.path().to_string_lossy()), "{why}");
    }
    assert_eq!(std::fs::read(&outside).unwrap(), b"not a spool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_to_frame_is_refused_with_413_not_acknowledged() {
    // With the spool such a limit is refused at start-up...
    let data = TempDir::new("frame-limit");
    let (code, stderr) = Daemon::try_start(&args(&data, &["--max-line-bytes", "16777216"]))
        .err()
        .expect("refused");
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("max-line-bytes"), "{stderr}");
    // ...and where it is allowed, a record that large is refused at publish.
    let mut a = test_args();
    a.extend(["--memory-only", "--max-line-bytes", "16777216"].map(String::from));
    let gw = Daemon::start(&a);
    let job = "huge";
    let mut body = vec![1u8; 12 << 20];
    body.push(b'\n');
    let auth = bearer(&publish_token(job));
    let reply = http_client::request(
        gw.addr,
        "POST",
        &format!("/v1/jobs/{job}/logs"),
        &[("authorization", &auth), ("content-type", "text/plain")],
        body.into(),
    )
    .await;
    reply.assert_error(413, "too_large");
    assert!(reply.text().contains("67108834"), "{}", reply.text());
    assert_eq!(status(gw.addr, job).await["last_seq"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_others_can_write_is_warned_about_at_start_up() {
    use std::os::unix::fs::PermissionsExt;
    let data = TempDir::new("shared-dir");
    std::fs::create_dir_all(data.path()).unwrap();
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let dir = data.path().display().to_string();
    let owned = test_args();
    let mut args: Vec<&str> = owned.iter().map(String::as_str).collect();
    args.extend(["--data-dir", dir.as_str()]);
    let mut gw = tailgate_tests::gateway::Gateway::start(&args, &[]).await;
    let line = gw
        .wait_log("writable by its group or others", Duration::from_secs(10))
        .await;
    assert!(line.contains("WARN"), "{line}");
}
