//! Capgo's WebSocket stream, followed by a client that behaves like the published CLI:
//! every line once and in order across disconnects, the final status then a close,
//! custom and batch frames, heartbeats, pings, shutdown.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tailgate_tests::capgo::{
    capgo_config, capgo_token, publish, publish_lines, publish_status, stream_url, CliClient,
    Ended, PREFIX,
};
use tailgate_tests::TestServer;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);

fn lines(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| format!("line {i}")).collect()
}

fn client(server: &TestServer, job: &str) -> CliClient {
    CliClient::new(stream_url(server.addr, PREFIX, job, &capgo_token(job)))
}

#[tokio::test]
async fn every_line_once_and_in_order_across_forced_disconnects() {
    let server = TestServer::start_with(capgo_config()).await;
    let job = "cut";
    publish_lines(server.addr, job, lines(1..=40)).await;
    let mut cli = client(&server, job);
    // Cut twice: once in the replay, once in the live part.
    cli.cut_after_lines = vec![15, 70];
    let addr = server.addr;
    let publisher = tokio::spawn(async move {
        for chunk in 0..8 {
            let from = 41 + chunk * 10;
            tokio::time::sleep(Duration::from_millis(150)).await;
            publish_lines(addr, job, lines(from..=from + 9)).await;
        }
        publish_status(addr, job, "succeeded").await;
    });
    let ends = cli.follow(T).await;
    publisher.await.unwrap();
    assert_eq!(cli.lines, lines(1..=120), "every line once, in order");
    assert_eq!(cli.final_status.as_deref(), Some("succeeded"));
    assert_eq!(cli.connections, 3, "{ends:?}");
    assert_eq!(ends.iter().filter(|e| **e == Ended::Cut).count(), 2);
    let ids: Vec<u64> = cli
        .records
        .iter()
        .filter_map(|r| r["id"].as_u64())
        .collect();
    assert_eq!(ids, (1..=121).collect::<Vec<_>>(), "no record twice");
    server.stop().await;
}

#[tokio::test]
async fn final_status_then_the_server_closes_and_a_reconnect_learns_it_again() {
    let server = TestServer::start_with(capgo_config()).await;
    let job = "fin";
    publish_lines(server.addr, job, lines(1..=3)).await;
    publish(
        server.addr,
        job,
        &[json!({"status": "failed", "exit_code": 2})],
    )
    .await;
    let mut cli = client(&server, job);
    cli.close_on_final = false;
    let end = tokio::time::timeout(T, cli.session()).await.unwrap();
    match end {
        Ended::ServerClosed(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert_eq!(cli.lines, lines(1..=3));
    assert_eq!(cli.final_status.as_deref(), Some("failed"));
    let last = cli.records.last().unwrap();
    assert_eq!(
        last,
        &json!({"type": "status", "status": "failed", "id": 4})
    );

    // The same client again (everything confirmed): no line again, the status again.
    cli.final_status = None;
    let end = tokio::time::timeout(T, cli.session()).await.unwrap();
    assert!(matches!(end, Ended::ServerClosed(Some(_))), "{end:?}");
    assert_eq!(cli.lines, lines(1..=3), "no line twice");
    assert_eq!(cli.final_status.as_deref(), Some("failed"));
    server.stop().await;
}

#[tokio::test]
async fn lost_is_failed_for_the_cli() {
    let server = TestServer::start_with(capgo_config()).await;
    publish_status(server.addr, "lost1", "lost").await;
    let mut cli = client(&server, "lost1");
    cli.follow(T).await;
    assert_eq!(cli.final_status.as_deref(), Some("failed"));
    server.stop().await;
}

#[tokio::test]
async fn custom_and_batch_frames() {
    let server = TestServer::start_with(capgo_config()).await;
    let job = "qr";
    publish(server.addr,
        job,
        &[
            json!({"line": "building"}),
            json!({"custom": {"kind": "qr_download_link", "data": {"url": "https://example.com/app.apk"}}}),
            json!({"line": "uploaded"}),
        ],
    )
    .await;
    let mut cli = client(&server, job);
    let mut ws = cli.connect().await;
    let first = next_json(&mut ws).await;
    assert_eq!(first["type"], "batch_messages", "{first}");
    assert_eq!(
        first["messages"],
        json!([
            {"type": "log", "message": "building", "id": 1},
            {"type": "custom_msg", "kind": "qr_download_link", "data": {"url": "https://example.com/app.apk"}, "id": 2},
            {"type": "log", "message": "uploaded", "id": 3},
        ])
    );
    ws.send(Message::text(r#"{"type":"confirmed_received","lastId":3}"#))
        .await
        .unwrap();
    // A live record alone is its own frame.
    publish(
        server.addr,
        job,
        &[json!({"custom": {"kind": "note", "data": {"a": [1, 2]}}})],
    )
    .await;
    let single = next_json(&mut ws).await;
    assert_eq!(
        single,
        json!({"type": "custom_msg", "kind": "note", "data": {"a": [1, 2]}, "id": 4})
    );
    drop(ws);

    // A long replay comes in bounded batches.
    publish_lines(server.addr, job, lines(1..=450)).await;
    publish_status(server.addr, job, "succeeded").await;
    cli.last_id = 3;
    cli.follow(T).await;
    assert_eq!(
        cli.lines,
        lines(1..=450),
        "resumed after the confirmed id 3"
    );
    let batches: Vec<usize> = cli
        .frames
        .iter()
        .filter(|f| f["type"] == "batch_messages")
        .map(|f| f["messages"].as_array().unwrap().len())
        .collect();
    assert!(batches.len() >= 3, "{batches:?}");
    assert!(batches.iter().all(|n| *n <= 200), "{batches:?}");
    assert_eq!(
        cli.records[0]["id"], 4,
        "the unconfirmed custom record again"
    );
    server.stop().await;
}

#[tokio::test]
async fn heartbeats_are_answered_and_confirm() {
    let server = TestServer::start_with(capgo_config()).await;
    let job = "hb";
    publish_lines(server.addr, job, lines(1..=5)).await;
    let mut cli = client(&server, job);
    let mut ws = cli.connect().await;
    let first = next_json(&mut ws).await;
    assert_eq!(first["messages"].as_array().unwrap().len(), 5);
    // Confirm by heartbeat only, as the CLI's 2 s heartbeat does.
    ws.send(Message::text(r#"{"type":"heartbeat","lastId":5}"#))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "heartbeat_response"})
    );
    ws.send(Message::text(r#"{"type":"heartbeat"}"#))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "heartbeat_response"})
    );
    ws.send(Message::text("not json")).await.unwrap();
    ws.close(None).await.unwrap();
    drop(ws);

    publish_lines(server.addr, job, lines(6..=7)).await;
    publish_status(server.addr, job, "succeeded").await;
    cli.follow(T).await;
    assert_eq!(
        cli.lines,
        lines(6..=7),
        "resumed after the heartbeat's lastId"
    );

    // Another token for the same job has its own position.
    let token = tailgate_tests::mint(&tailgate::auth::capgo_claims("user-2", job, "app"));
    let mut other = CliClient::new(stream_url(server.addr, PREFIX, job, &token));
    other.follow(T).await;
    assert_eq!(other.lines, lines(1..=7));
    server.stop().await;
}

#[tokio::test]
async fn pings_keep_a_silent_stream_alive() {
    let mut config = capgo_config();
    config.keepalive = Duration::from_millis(300);
    let server = TestServer::start_with(config).await;
    let job = "quiet";
    let mut cli = client(&server, job);
    cli.heartbeat_every = Duration::from_millis(200);
    let addr = server.addr;
    let publisher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        publish_lines(addr, job, lines(1..=1)).await;
        publish_status(addr, job, "succeeded").await;
    });
    let ends = cli.follow(T).await;
    publisher.await.unwrap();
    assert_eq!(cli.connections, 1, "{ends:?}");
    assert!(cli.pings >= 3, "pings {}", cli.pings);
    assert_eq!(cli.lines, lines(1..=1));
    server.stop().await;
}

#[tokio::test]
async fn a_silent_client_is_dropped() {
    let mut config = capgo_config();
    config.keepalive = Duration::from_millis(200);
    let server = TestServer::start_with(config).await;
    let cli = client(&server, "mute");
    let mut ws = cli.connect().await;
    // Read without answering heartbeats or pings (the codec still answers pings, so
    // stop reading entirely and see the server give up on the socket).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = server
        .get(
            "/v1/jobs/mute",
            &[(
                "authorization",
                &tailgate_tests::bearer(&capgo_token("mute")),
            )],
        )
        .await;
    assert_eq!(status.json()["subscribers"], 0, "{}", status.text());
    let mut closed = false;
    while let Ok(Some(msg)) = tokio::time::timeout(T, ws.next()).await {
        match msg {
            Ok(Message::Close(_)) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => {}
        }
    }
    assert!(closed);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_each_socket_with_going_away() {
    let server = TestServer::start_with(capgo_config()).await;
    publish_lines(server.addr, "sd", lines(1..=2)).await;
    let cli = client(&server, "sd");
    let mut ws = cli.connect().await;
    next_json(&mut ws).await;
    let reader = tokio::spawn(async move {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(4), server.stop())
        .await
        .expect("shutdown completes with a socket open");
    let frame = reader.await.unwrap().expect("close frame");
    assert_eq!(frame.code, CloseCode::Away);
}

async fn next_json(ws: &mut tailgate_tests::capgo::Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(T, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}
