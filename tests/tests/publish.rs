//! Publishing: chunked uploads seen live, NDJSON with duplicate suppression, bad input.

use std::time::Duration;

use tailgate_tests::{bearer, publish_token, read_token, test_config, TestServer};

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn lines_reach_readers_while_the_upload_is_open() {
    let server = TestServer::start().await;
    let mut sse = server.subscribe("live", "", &[]).await;
    let upload = server.start_upload("live", "text/plain").await;
    upload.send("first li").await;
    upload.send("ne\nsecond").await;
    let e = sse.next_within(T).await.unwrap();
    assert_eq!(
        e.json()["line"],
        "first line",
        "a line across chunks stays one line"
    );
    upload.send(" line\n").await;
    let e = sse.next_within(T).await.unwrap();
    assert_eq!(e.json()["line"], "second line");
    upload.send("partial tail").await;
    let reply = upload.finish().await;
    assert_eq!(reply.status, 200);
    let v = reply.json();
    assert_eq!(
        (
            v["accepted"].as_u64(),
            v["duplicates"].as_u64(),
            v["last_seq"].as_u64()
        ),
        (Some(3), Some(0), Some(3))
    );
    assert_eq!(
        sse.next_within(T).await.unwrap().json()["line"],
        "partial tail"
    );
}

#[tokio::test]
async fn ndjson_drops_resent_records_by_n() {
    let server = TestServer::start().await;
    let first = "{\"n\":1,\"line\":\"one\"}\n{\"n\":2,\"line\":\"two\",\"stream\":\"stderr\"}\n{\"n\":3,\"custom\":{\"kind\":\"qr_download_link\",\"data\":{\"url\":\"https://x\"}}}\n";
    let v = server.publish_ndjson("nd", first).await.json();
    assert_eq!(
        (v["accepted"].as_u64(), v["last_n"].as_u64()),
        (Some(3), Some(3))
    );
    // A worker resends after a broken connection: 2 and 3 again, then 4.
    let again = "{\"n\":2,\"line\":\"two\"}\n{\"n\":3,\"line\":\"three?\"}\n{\"n\":4,\"line\":\"four\"}\n{\"n\":5,\"status\":\"failed\",\"exit_code\":2}\n";
    let v = server.publish_ndjson("nd", again).await.json();
    assert_eq!(
        (
            v["accepted"].as_u64(),
            v["duplicates"].as_u64(),
            v["last_n"].as_u64()
        ),
        (Some(2), Some(2), Some(5))
    );
    let events = server.subscribe("nd", "", &[]).await.collect(T).await;
    let kinds: Vec<(&str, String)> = events
        .iter()
        .map(|e| {
            let j = e.json();
            let what = j
                .get("line")
                .or(j.get("kind"))
                .or(j.get("status"))
                .unwrap()
                .as_str()
                .unwrap()
                .to_string();
            (e.event.as_str(), what)
        })
        .collect();
    let want = [
        ("log", "one"),
        ("log", "two"),
        ("custom", "qr_download_link"),
        ("log", "four"),
        ("status", "failed"),
    ];
    assert_eq!(kinds, want.map(|(a, b)| (a, b.to_string())).to_vec());
    assert_eq!(events[1].json()["stream"], "stderr");
    assert_eq!(events[2].json()["data"]["url"], "https://x");
    assert_eq!(events[4].json()["exit_code"], 2);
    let status = server
        .get(
            "/v1/jobs/nd",
            &[("authorization", &bearer(&read_token("nd")))],
        )
        .await
        .json();
    assert_eq!(
        (
            status["status"].as_str(),
            status["exit_code"].as_i64(),
            status["last_n"].as_u64()
        ),
        (Some("failed"), Some(2), Some(5))
    );
}

#[tokio::test]
async fn malformed_ndjson_names_its_line_and_keeps_earlier_records() {
    let server = TestServer::start().await;
    let body = "{\"line\":\"ok 1\"}\n{\"line\":\"ok 2\"}\n{\"line\": oops}\n{\"line\":\"never\"}\n";
    let reply = server.publish_ndjson("bad", body).await;
    reply.assert_error(400, "bad_record");
    let v = reply.json();
    assert_eq!(v["line"], 3);
    assert!(v["message"].as_str().unwrap().starts_with("line 3:"), "{v}");
    assert_eq!(v["accepted"], 2);
    let text = server
        .get(
            "/v1/jobs/bad/log",
            &[("authorization", &bearer(&read_token("bad")))],
        )
        .await;
    assert_eq!(text.text(), "ok 1\nok 2\n");
}

#[tokio::test]
async fn wrong_shapes_get_json_errors() {
    let server = TestServer::start().await;
    let auth = bearer(&publish_token("j"));
    let r = server
        .post(
            "/v1/jobs/j/logs",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            "{}",
        )
        .await;
    r.assert_error(415, "unsupported_media_type");
    let r = server.get("/nope", &[]).await;
    r.assert_error(404, "not_found");
    let r = server.get("/v1/jobs/j/logs/extra", &[]).await;
    r.assert_error(404, "not_found");
    let r = server.post("/v1/jobs/j", &[], "").await;
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
    let r = server.get("/v1/jobs/j/status", &[]).await;
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST, OPTIONS"));
    let r = server
        .post(
            "/v1/jobs/j/status",
            &[("authorization", &auth)],
            "{\"status\":\"done\"}",
        )
        .await;
    r.assert_error(400, "bad_request");
    let r = server
        .post(
            "/v1/jobs/j/logs?stream=stdin",
            &[("authorization", &auth)],
            "x\n",
        )
        .await;
    r.assert_error(400, "bad_request");
}

#[tokio::test]
async fn status_json_and_wait() {
    let server = TestServer::start().await;
    let auth = bearer(&read_token("st"));
    let v = server
        .get("/v1/jobs/st", &[("authorization", &auth)])
        .await
        .json();
    assert_eq!(
        (
            v["status"].as_str(),
            v["last_seq"].as_u64(),
            v["lines"].as_u64()
        ),
        (Some("queued"), Some(0), Some(0))
    );
    server.publish_text("st", "ab\ncd\n").await;
    let addr = server.addr;
    let auth2 = auth.clone();
    let waiter = tokio::spawn(async move {
        tailgate_tests::http_client::request(
            addr,
            "GET",
            "/v1/jobs/st?wait=30",
            &[("authorization", &auth2)],
            Default::default(),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiter.is_finished(),
        "wait holds until the job is terminal"
    );
    server.set_status("st", "succeeded", Some(0)).await;
    let v = tokio::time::timeout(T, waiter)
        .await
        .unwrap()
        .unwrap()
        .json();
    for key in [
        "job_id",
        "created_at",
        "started_at",
        "finished_at",
        "first_seq",
        "last_n",
        "subscribers",
        "exit_code",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(
        (
            v["status"].as_str(),
            v["lines"].as_u64(),
            v["bytes"].as_u64(),
            v["last_seq"].as_u64()
        ),
        (Some("succeeded"), Some(2), Some(4), Some(3))
    );
}

#[tokio::test]
async fn plain_text_log_and_tail_bytes() {
    let server = TestServer::start().await;
    server.publish_text("pl", "alpha\nbeta\ngamma\n").await;
    let auth = bearer(&read_token("pl"));
    let r = server
        .get("/v1/jobs/pl/log", &[("authorization", &auth)])
        .await;
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.text(), "alpha\nbeta\ngamma\n");
    let r = server
        .get("/v1/jobs/pl/log?tail_bytes=12", &[("authorization", &auth)])
        .await;
    assert_eq!(
        r.text(),
        "beta\ngamma\n",
        "at most 12 bytes, from a line start"
    );
    let r = server
        .get("/v1/jobs/pl/log?tail_bytes=3", &[("authorization", &auth)])
        .await;
    assert_eq!(r.text(), "");
}

#[tokio::test]
async fn a_job_over_its_size_limit_is_truncated_visibly() {
    let mut config = test_config();
    config.limits.max_log_bytes = 20;
    let server = TestServer::start_with(config).await;
    server
        .publish_text("big", "0123456789\n0123456789\nxx\nyy\n")
        .await;
    let auth = bearer(&read_token("big"));
    let text = server
        .get("/v1/jobs/big/log", &[("authorization", &auth)])
        .await
        .text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[2].contains("truncated at 20 bytes"), "{text}");
    let v = server
        .get("/v1/jobs/big", &[("authorization", &auth)])
        .await
        .json();
    assert_eq!(
        (v["lines"].as_u64(), v["dropped_lines"].as_u64()),
        (Some(2), Some(2))
    );
}

#[tokio::test]
async fn cors_preflight_and_headers() {
    let mut config = test_config();
    config.cors_origins = vec!["https://ci.example".into()];
    let server = TestServer::start_with(config).await;
    let r = tailgate_tests::http_client::request(
        server.addr,
        "OPTIONS",
        "/v1/jobs/c/logs",
        &[
            ("origin", "https://ci.example"),
            ("access-control-request-method", "GET"),
        ],
        Default::default(),
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://ci.example")
    );
    assert!(r
        .header("access-control-allow-headers")
        .unwrap()
        .contains("last-event-id"));
    let r = server
        .get("/v1/jobs/c", &[("origin", "https://evil.example")])
        .await;
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn the_same_terminal_status_again_is_an_idempotent_200() {
    let server = TestServer::start().await;
    let first = server.set_status("retry", "failed", Some(3)).await;
    assert_eq!(first.status, 200, "{}", first.text());
    // A worker's retry of the very same status: 200 and the same job status.
    let again = server.set_status("retry", "failed", Some(3)).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(
        again.json()["last_seq"],
        first.json()["last_seq"],
        "nothing appended"
    );
    assert_eq!(again.json()["status"], "failed");
    // Another status, or another exit code, is still a conflict.
    server
        .set_status("retry", "succeeded", Some(0))
        .await
        .assert_error(409, "job_finished");
    server
        .set_status("retry", "failed", Some(4))
        .await
        .assert_error(409, "job_finished");
}

#[tokio::test]
async fn a_bad_record_answers_with_the_job_counters() {
    let server = TestServer::start().await;
    let first = "{\"n\":1,\"line\":\"a\"}\n{\"n\":2,\"line\":\"b\"}\n";
    assert_eq!(server.publish_ndjson("resume", first).await.status, 200);
    // A request whose first record is bad has stored nothing itself: the counters are
    // still the job's, where a publisher resumes from.
    let reply = server.publish_ndjson("resume", "{oops}\n").await;
    reply.assert_error(400, "bad_record");
    let v = reply.json();
    assert_eq!(
        (
            v["accepted"].as_u64(),
            v["last_seq"].as_u64(),
            v["last_n"].as_u64()
        ),
        (Some(0), Some(2), Some(2)),
        "{v}"
    );
}

#[tokio::test]
async fn ndjson_is_decoded_lossily_and_its_lines_split_like_text() {
    let mut config = test_config();
    config.limits.max_line_bytes = 16;
    let server = TestServer::start_with(config).await;
    let mut body = b"{\"n\":1,\"line\":\"bad \xff\xfe!\"}\n".to_vec();
    body.extend_from_slice(format!("{{\"n\":2,\"line\":\"{}\"}}\n", "y".repeat(40)).as_bytes());
    let reply = server.publish_ndjson("lossy", body.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["last_n"], 2);
    let log = |server: &TestServer| {
        let auth = bearer(&read_token("lossy"));
        let server_url = server.addr;
        async move {
            tailgate_tests::http_client::request(
                server_url,
                "GET",
                "/v1/jobs/lossy/log",
                &[("authorization", &auth)],
                Default::default(),
            )
            .await
            .text()
        }
    };
    let want = format!(
        "bad \u{fffd}\u{fffd}!\n{}\n{}\n{}\n",
        "y".repeat(16),
        "y".repeat(16),
        "y".repeat(8)
    );
    assert_eq!(log(&server).await, want);
    // Resending both records adds nothing, not even the split line's later pieces.
    let again = server.publish_ndjson("lossy", body).await.json();
    assert_eq!(again["duplicates"], 2, "{again}");
    assert_eq!(log(&server).await, want);
}

#[tokio::test]
async fn method_not_allowed_names_the_allowed_methods() {
    let server = TestServer::start().await;
    let r = server.post("/v1/jobs/j", &[], "").await;
    r.assert_error(405, "method_not_allowed");
    let message = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("GET, HEAD, OPTIONS"), "{message}");
}
