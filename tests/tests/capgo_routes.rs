//! Capgo's routes around the WebSocket: `/start`, token failures before any upgrade,
//! the SSE stream under the prefix, and the prefix and on/off settings.

use std::time::Duration;

use serde_json::json;
use tailgate::auth::capgo_claims;
use tailgate_tests::capgo::{
    capgo_config, capgo_token, publish_lines, publish_status, stream_url, CliClient, PREFIX,
};
use tailgate_tests::{http_client, mint, Reply, SseStream, TestServer};
use tokio_tungstenite::tungstenite;

const T: Duration = Duration::from_secs(10);

async fn start(server: &TestServer, job: &str, token: Option<&str>) -> Reply {
    let mut headers = vec![("capgo_api", "2025-10-01"), ("x-cli-version", "8.0.0")];
    if let Some(t) = token {
        headers.push(("x-capgo-log-token", t));
    }
    server
        .post(&format!("{PREFIX}/{job}/start"), &headers, "")
        .await
}

/// Tries the upgrade; returns the refusal's status and JSON body.
async fn refused_upgrade(url: &str) -> (u16, serde_json::Value) {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("upgrade to {url} should be refused"),
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
                panic!("body not JSON ({e}): {}", String::from_utf8_lossy(&body))
            });
            (resp.status().as_u16(), json)
        }
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
    }
}

#[tokio::test]
async fn start_checks_the_log_token() {
    let server = TestServer::start_with(capgo_config()).await;
    let ok = start(&server, "j1", Some(&capgo_token("j1"))).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["ok"], true);
    assert_eq!(ok.json()["job_id"], "j1");

    start(&server, "j1", None)
        .await
        .assert_error(401, "invalid_token");
    let other_job = start(&server, "j1", Some(&capgo_token("j2"))).await;
    assert_eq!(other_job.status, 403, "{}", other_job.text());
    let forged = capgo_token("j1").replace('.', ".x");
    assert_eq!(start(&server, "j1", Some(&forged)).await.status, 401);
    let mut expired = capgo_claims("u", "j1", "app");
    expired["exp"] = json!(1_000);
    expired["iat"] = json!(0);
    start(&server, "j1", Some(&mint(&expired)))
        .await
        .assert_error(401, "invalid_token");
    start(&server, "bad%20job", Some(&capgo_token("j1")))
        .await
        .assert_error(400, "bad_job_id");
    let get = server.get(&format!("{PREFIX}/j1/start"), &[]).await;
    get.assert_error(405, "method_not_allowed");
    assert_eq!(get.header("allow"), Some("POST, OPTIONS"));
    server.stop().await;
}

#[tokio::test]
async fn upgrade_token_failures_are_json_before_any_upgrade() {
    let server = TestServer::start_with(capgo_config()).await;
    let no_token = format!("ws://{}{PREFIX}/j1/stream", server.addr);
    let (status, body) = refused_upgrade(&no_token).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );

    let (status, body) = refused_upgrade(&stream_url(server.addr, PREFIX, "j1", "garbage")).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));

    let wrong_job = stream_url(server.addr, PREFIX, "j1", &capgo_token("j2"));
    let (status, body) = refused_upgrade(&wrong_job).await;
    assert_eq!(status, 403, "{body}");

    // A plain GET of the stream route asks for the upgrade.
    let token = capgo_token("j1");
    let plain = server
        .get(
            &format!("{PREFIX}/j1/stream"),
            &[("x-capgo-log-token", &token)],
        )
        .await;
    plain.assert_error(426, "upgrade_required");
    assert_eq!(plain.header("upgrade"), Some("websocket"));
    server.stop().await;
}

#[tokio::test]
async fn sse_under_the_prefix_resumes_from_last_sequence() {
    let server = TestServer::start_with(capgo_config()).await;
    publish_lines(server.addr, "sse", (1..=4).map(|i| format!("l{i}"))).await;
    publish_status(server.addr, "sse", "succeeded").await;
    let token = capgo_token("sse");
    let path = format!("{PREFIX}/sse?token={token}&last_sequence=2");
    let resp = http_client::open(server.addr, "GET", &path, &[]).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let events = SseStream::new(resp.into_body()).collect(T).await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq()).collect();
    assert_eq!(seqs, vec![3, 4, 5]);
    assert_eq!(events[2].event, "status");

    let no_token = server.get(&format!("{PREFIX}/sse"), &[]).await;
    no_token.assert_error(401, "invalid_token");
    server.stop().await;
}

#[tokio::test]
async fn the_prefix_is_configurable_and_the_routes_can_be_off() {
    let mut config = capgo_config();
    config.capgo.prefix = "/capgo/logs".into();
    let server = TestServer::start_with(config).await;
    publish_lines(server.addr, "p", ["one".to_string()]).await;
    publish_status(server.addr, "p", "succeeded").await;
    let mut cli = CliClient::new(stream_url(
        server.addr,
        "/capgo/logs",
        "p",
        &capgo_token("p"),
    ));
    cli.follow(T).await;
    assert_eq!(cli.lines, vec!["one".to_string()]);
    start(&server, "p", Some(&capgo_token("p")))
        .await
        .assert_error(404, "not_found");
    server.stop().await;

    let mut config = capgo_config();
    config.capgo.enabled = false;
    let server = TestServer::start_with(config).await;
    start(&server, "p", Some(&capgo_token("p")))
        .await
        .assert_error(404, "not_found");
    server.stop().await;
}
