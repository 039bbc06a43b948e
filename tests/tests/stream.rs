//! The SSE stream: awkward lines, resume, late joiners, gaps, resets, the end.

use std::time::Duration;

use tailgate_tests::{bearer, read_token, test_config, Event, TestServer};

const T: Duration = Duration::from_secs(10);

fn logs(events: &[Event]) -> Vec<(u64, String)> {
    events
        .iter()
        .filter(|e| e.event == "log")
        .map(|e| (e.seq(), e.json()["line"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test]
async fn awkward_lines_come_out_as_one_event_each() {
    let server = TestServer::start().await;
    let mut sse = server.subscribe("awk", "", &[]).await;
    let big = "x".repeat(100 * 1024);
    let mut body = Vec::new();
    body.extend_from_slice(b"crlf line\r\n");
    body.extend_from_slice(b"progress 10%\rprogress 100%\n");
    body.extend_from_slice(
        b"x\r\nevent: status\r\ndata: {\"status\":\"succeeded\"}\r\n\r\nid: 99\n",
    );
    body.extend_from_slice(b"nul\0and \x1b[31mred\x1b[0m\n");
    body.extend_from_slice(b"bad utf8 \xff\xfe\xc3(\n");
    body.extend_from_slice(b"\n");
    body.extend_from_slice(big.as_bytes());
    body.extend_from_slice(b"\nlast without newline");
    let reply = server.publish_text("awk", body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["accepted"], 13);
    server.set_status("awk", "succeeded", Some(0)).await;
    let events = sse.collect(T).await;
    let want: Vec<String> = [
        "crlf line",
        "progress 10%\rprogress 100%",
        "x",
        "event: status",
        "data: {\"status\":\"succeeded\"}",
        "",
        "id: 99",
        "nul\0and \x1b[31mred\x1b[0m",
        "bad utf8 \u{fffd}\u{fffd}\u{fffd}(",
        "",
        &big[..64 * 1024],
        &big[64 * 1024..],
        "last without newline",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let got = logs(&events);
    assert_eq!(got.iter().map(|(_, l)| l.clone()).collect::<Vec<_>>(), want);
    assert_eq!(
        got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=13).collect::<Vec<_>>()
    );
    assert_eq!(
        events.iter().filter(|e| e.event == "status").count(),
        1,
        "no forged status"
    );
    let last = events.last().unwrap();
    assert_eq!(
        (last.event.as_str(), last.json()["final"].as_bool()),
        ("status", Some(true))
    );
    assert_eq!(sse.parser.retry, Some(2000));
}

#[tokio::test]
async fn text_format_splits_data_at_cr_and_lf() {
    let server = TestServer::start().await;
    server.publish_text("txt", "a\rb\nplain\n").await;
    server.set_status("txt", "succeeded", Some(0)).await;
    let events = server
        .subscribe("txt", "?format=text", &[])
        .await
        .collect(T)
        .await;
    let data: Vec<_> = events
        .iter()
        .map(|e| (e.event.as_str(), e.data.as_str()))
        .collect();
    assert_eq!(data[0], ("log", "a\nb"));
    assert_eq!(data[1], ("log", "plain"));
    assert_eq!(events[2].json()["status"], "succeeded");
}

#[tokio::test]
async fn stream_opens_before_any_line_with_the_sse_headers() {
    let server = TestServer::start().await;
    let resp = tailgate_tests::http_client::open(
        server.addr,
        "GET",
        "/v1/jobs/empty/logs",
        &[("authorization", &bearer(&read_token("empty")))],
    )
    .await;
    let h = resp.headers();
    assert_eq!(h["content-type"], "text/event-stream; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache, no-transform");
    assert_eq!(h["x-accel-buffering"], "no");
    let mut sse = tailgate_tests::SseStream::new(resp.into_body());
    sse.wait_comments(1).await;
    assert_eq!(sse.parser.retry, Some(2000));
}

#[tokio::test]
async fn keepalive_comments_flow_while_idle() {
    let mut config = test_config();
    config.keepalive = Duration::from_millis(200);
    let server = TestServer::start_with(config).await;
    let mut sse = server.subscribe("idle", "", &[]).await;
    tokio::time::timeout(T, sse.wait_comments(4))
        .await
        .expect("keep-alives");
    assert!(sse.parser.comments >= 4);
}

#[tokio::test]
async fn resume_from_each_input_is_strictly_after() {
    let server = TestServer::start().await;
    let body: String = (1..=10).map(|i| format!("line {i}\n")).collect();
    server.publish_text("res", body).await;
    server.set_status("res", "succeeded", Some(0)).await;
    let cases: [(&str, Vec<(&str, &str)>); 3] = [
        ("", vec![("last-event-id", "4")]),
        ("?last_event_id=4", vec![]),
        ("?last_sequence=4", vec![]),
    ];
    for (query, headers) in cases {
        let events = server
            .subscribe("res", query, &headers)
            .await
            .collect(T)
            .await;
        let seqs: Vec<u64> = events.iter().map(Event::seq).collect();
        assert_eq!(seqs, (5..=11).collect::<Vec<_>>(), "{query} {headers:?}");
    }
    // The header wins over the query.
    let events = server
        .subscribe("res", "?last_event_id=1", &[("last-event-id", "9")])
        .await
        .collect(T)
        .await;
    assert_eq!(events.first().map(Event::seq), Some(10));
    // A bad id is a clear 400.
    let reply = server
        .get(
            "/v1/jobs/res/logs?last_event_id=abc",
            &[("authorization", &bearer(&read_token("res")))],
        )
        .await;
    reply.assert_error(400, "bad_request");
}

#[tokio::test]
async fn finished_and_fully_read_gets_204() {
    let server = TestServer::start().await;
    server.publish_text("done", "a\nb\n").await;
    let reply = server.set_status("done", "failed", Some(2)).await;
    assert_eq!(reply.json()["status"], "failed");
    let events = server.subscribe("done", "", &[]).await.collect(T).await;
    assert_eq!(events.last().unwrap().seq(), 3);
    let auth = bearer(&read_token("done"));
    let reply = server
        .get(
            "/v1/jobs/done/logs",
            &[("authorization", &auth), ("last-event-id", "3")],
        )
        .await;
    assert_eq!(reply.status, 204);
    assert!(reply.body.is_empty());
    // Publishing to a finished job is refused; nothing changes.
    server
        .publish_text("done", "late\n")
        .await
        .assert_error(409, "job_finished");
    // Even an empty upload: a worker learns at once that the job is over.
    server
        .publish_text("done", "")
        .await
        .assert_error(409, "job_finished");
    server
        .set_status("done", "succeeded", None)
        .await
        .assert_error(409, "job_finished");
}

#[tokio::test]
async fn unknown_last_event_id_resets_to_the_start() {
    let server = TestServer::start().await;
    server.publish_text("rst", "a\nb\n").await;
    let mut sse = server
        .subscribe("rst", "", &[("last-event-id", "500")])
        .await;
    let first = sse.next_within(T).await.unwrap();
    assert_eq!(first.event, "reset");
    assert_eq!(first.json()["reason"], "unknown_last_event_id");
    let a = sse.next_within(T).await.unwrap();
    assert_eq!((a.seq(), a.json()["line"].as_str()), (1, Some("a")));
}

#[tokio::test]
async fn evicted_records_become_a_gap_event() {
    let mut config = test_config();
    config.limits.job_memory_bytes = 4096;
    let server = TestServer::start_with(config).await;
    let body: String = (1..=200)
        .map(|i| format!("line {i:04} {}\n", "x".repeat(40)))
        .collect();
    server.publish_text("gap", body).await;
    server.set_status("gap", "succeeded", Some(0)).await;
    let events = server.subscribe("gap", "", &[]).await.collect(T).await;
    let gap = &events[0];
    assert_eq!(gap.event, "gap");
    let (from, to) = (
        gap.json()["from"].as_u64().unwrap(),
        gap.json()["to"].as_u64().unwrap(),
    );
    assert_eq!(from, 1);
    assert!(to > 1 && to < 200, "gap to {to}");
    let seqs: Vec<u64> = events[1..].iter().map(Event::seq).collect();
    assert_eq!(
        seqs,
        (to + 1..=201).collect::<Vec<_>>(),
        "continues right after the gap"
    );
}

#[tokio::test]
async fn late_joiner_sees_every_line_once_across_the_seam() {
    let server = TestServer::start().await;
    let upload = server.start_upload("seam", "text/plain").await;
    let total = 3000u32;
    let writer = tokio::spawn(async move {
        for i in 1..=total {
            upload.send(format!("line {i}\n")).await;
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        upload.finish().await
    });
    // Join while lines keep arriving.
    let mut readers = Vec::new();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        readers.push(server.subscribe("seam", "", &[]).await);
    }
    let reply = writer.await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    server.set_status("seam", "succeeded", Some(0)).await;
    for mut sse in readers {
        let lines = logs(&sse.collect(T).await);
        assert_eq!(lines.len(), total as usize);
        for (i, (seq, line)) in lines.iter().enumerate() {
            assert_eq!(
                (*seq, line.as_str()),
                (i as u64 + 1, format!("line {}", i + 1).as_str())
            );
        }
    }
}

#[tokio::test]
async fn http2_cleartext_readers_stream_through_hyper() {
    use http_body_util::BodyExt;
    let server = TestServer::start().await;
    server.publish_text("h2", "one\ntwo\n").await;
    server.set_status("h2", "succeeded", Some(0)).await;
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2c prior knowledge");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(format!("http://{}/v1/jobs/h2/logs", server.addr))
        .header("authorization", bearer(&read_token("h2")))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(
        resp.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let body = tokio::time::timeout(T, resp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    let mut parser = tailgate_tests::sse::Parser::default();
    let mut events = std::collections::VecDeque::new();
    parser.feed(&body, &mut events);
    let events: Vec<Event> = events.into();
    assert_eq!(
        logs(&events),
        vec![(1, "one".to_string()), (2, "two".to_string())]
    );
    assert_eq!(events[2].json()["status"], "succeeded");
}
