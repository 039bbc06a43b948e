//! What one client (or one token holder) can take from everyone else: connection slots
//! (WebSocket readers count too), streams per token subject, the probes; and a second
//! connection with a Capgo token in use.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tailgate_tests::capgo::{capgo_config, capgo_token, publish_lines, stream_url, PREFIX};
use tailgate_tests::{bearer, mint, test_config, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(10);

/// One raw HTTP/1.1 request on a fresh connection; the answer until the server closes
/// (ask with `connection: close`) or 10 s.
async fn raw(server: &TestServer, head: &str) -> String {
    let mut conn = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut resp = String::new();
    let _ = tokio::time::timeout(T, conn.read_to_string(&mut resp)).await;
    resp
}

/// Retries `attempt` until it is true (a slot is freed when the server sees a close).
async fn eventually(mut attempt: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if attempt().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 5 s");
}

#[tokio::test]
async fn probes_answer_at_the_connection_cap_and_nothing_else_does() {
    let mut config = test_config();
    config.limits.max_connections = 2;
    let server = TestServer::start_with(config).await;
    let _a = server.subscribe("c", "", &[]).await;
    let _b = server.subscribe("c", "", &[]).await;
    for probe in ["/healthz", "/readyz"] {
        let resp = raw(&server, &format!("GET {probe} HTTP/1.1\r\nhost: x\r\n\r\n")).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{probe}: {resp}");
        assert!(resp.ends_with("ok\n"), "{resp}");
    }
    let resp = raw(&server, "GET /v1/jobs/c HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    assert!(resp.contains(r#""error":"overloaded""#), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("retry-after: 1"),
        "{resp}"
    );
}

#[tokio::test]
async fn upgraded_websocket_readers_count_in_max_connections() {
    let mut config = capgo_config();
    config.limits.max_connections = 2;
    let server = TestServer::start_with(config).await;
    let job = "ws-slots";
    publish_lines(server.addr, job, ["one".to_string()]).await;
    let url = stream_url(server.addr, PREFIX, job, &capgo_token(job));
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let first = tokio::time::timeout(T, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.to_text().unwrap().contains("one"));
    // The WebSocket holds one slot: one SSE reader fits beside it, a second does not.
    let auth = bearer(&capgo_token(job));
    let sse_head =
        format!("GET {PREFIX}/{job} HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\n\r\n");
    let _sse = {
        let mut conn = None;
        eventually(async || {
            let mut c = tokio::net::TcpStream::connect(server.addr).await.unwrap();
            c.write_all(sse_head.as_bytes()).await.unwrap();
            let mut buf = [0u8; 12];
            let ok = c.read_exact(&mut buf).await.is_ok() && &buf == b"HTTP/1.1 200";
            if ok {
                conn = Some(c);
            }
            ok
        })
        .await;
        conn
    };
    let resp = raw(&server, &sse_head).await;
    assert!(
        resp.starts_with("HTTP/1.1 503"),
        "the WebSocket still counts: {resp}"
    );
    drop(ws);
    eventually(async || {
        raw(
            &server,
            "GET /v1/jobs/x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await
        .starts_with("HTTP/1.1 401")
    })
    .await;
}

#[tokio::test]
async fn one_subject_cannot_open_more_than_its_streams() {
    let mut config = capgo_config();
    config.limits.max_streams_per_subject = 2;
    let server = TestServer::start_with(config).await;
    // Capgo-style tokens (capgo_config's issuer and audience) with chosen subjects.
    let claims = |sub: &str, job: &str| tailgate::auth::capgo_claims(sub, job, "app");
    let greedy = |job: &str| mint(&claims("greedy", job));
    let path = |job: &str| format!("/v1/jobs/{job}/logs");
    let a = tailgate_tests::http_client::open(
        server.addr,
        "GET",
        &path("j1"),
        &[("authorization", &bearer(&greedy("j1")))],
    )
    .await;
    let b = tailgate_tests::http_client::open(
        server.addr,
        "GET",
        &path("j2"),
        &[("authorization", &bearer(&greedy("j2")))],
    )
    .await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    // A third stream of the same subject, on any job and either protocol: 429.
    let third = server
        .get(&path("j3"), &[("authorization", &bearer(&greedy("j3")))])
        .await;
    third.assert_error(429, "over_limit");
    assert!(third.header("retry-after").is_some());
    let ws = tokio_tungstenite::connect_async(
        stream_url(server.addr, PREFIX, "j4", &greedy("j4")).as_str(),
    )
    .await;
    match ws {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 429),
        other => panic!("expected a 429 before the upgrade: {:?}", other.map(|_| ())),
    }
    // Another subject is not held back; and a closed stream frees its place.
    let other = tailgate_tests::http_client::open(
        server.addr,
        "GET",
        &path("j1"),
        &[(
            "authorization",
            &bearer(&mint(&claims("someone-else", "j1"))),
        )],
    )
    .await;
    assert_eq!(other.status().as_u16(), 200);
    drop(a);
    eventually(async || {
        let auth = bearer(&greedy("j5"));
        let resp = tailgate_tests::http_client::open(
            server.addr,
            "GET",
            &path("j5"),
            &[("authorization", &auth)],
        )
        .await;
        resp.status().as_u16() == 200
    })
    .await;
}

/// The ids of the next frame a Capgo reader gets.
async fn first_ids(ws: &mut tailgate_tests::capgo::Ws) -> Vec<u64> {
    let msg = tokio::time::timeout(T, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let frame: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
    match frame["type"].as_str() {
        Some("batch_messages") => frame["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["id"].as_u64())
            .collect(),
        _ => frame["id"].as_u64().into_iter().collect(),
    }
}

#[tokio::test]
async fn a_second_connection_with_a_token_in_use_starts_at_the_beginning() {
    let server = TestServer::start_with(capgo_config()).await;
    let job = "shared-token";
    publish_lines(server.addr, job, (1..=5).map(|i| format!("line {i}"))).await;
    let url = stream_url(server.addr, PREFIX, job, &capgo_token(job));
    let (mut one, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    assert_eq!(first_ids(&mut one).await, vec![1, 2, 3, 4, 5]);
    let confirm = json!({ "type": "confirmed_received", "lastId": 5 }).to_string();
    one.send(Message::text(confirm.clone())).await.unwrap();
    let hb = json!({ "type": "heartbeat", "lastId": 5 }).to_string();
    one.send(Message::text(hb)).await.unwrap();
    let answer = tokio::time::timeout(T, one.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        answer.to_text().unwrap().contains("heartbeat_response"),
        "confirmation taken"
    );
    // The same token again while the first is open: another reader, from seq 1.
    let (mut two, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    assert_eq!(
        first_ids(&mut two).await,
        vec![1, 2, 3, 4, 5],
        "not mid-log"
    );
    drop(two);
    one.close(None).await.unwrap();
    drop(one);
    // Once both have gone, a reconnect resumes after the confirmed id.
    publish_lines(server.addr, job, ["line 6".to_string()]).await;
    let mut resumed = Vec::new();
    eventually(async || {
        let (mut three, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        resumed = first_ids(&mut three).await;
        resumed == vec![6]
    })
    .await;
}
