//! The real binary at `TAILGATE_LOG=trace`: whatever a client sends, no token, query
//! string, header value or job log line reaches the gateway's log, while the access log
//! says what happened. Pretty logs to a pipe carry no ANSI colour.

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tailgate::auth::{CAPGO_AUDIENCE, CAPGO_ISSUER};
use tailgate_tests::capgo::{capgo_publish_token, capgo_token, stream_url, PREFIX};
use tailgate_tests::http_client::request;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

const LINE_SECRET: &str = "log-line-secret-4f9c";
const HEADER_SECRET: &str = "header-value-secret-77ab";
const FRAME_SECRET: &str = "client-frame-secret-e1d0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_level_logs_hold_no_secret_and_no_log_line() {
    let mut child = Command::new(tailgate_tests::tailgate_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--keepalive-secs",
            "1",
            "--memory-only",
        ])
        .args(["--jwt-secret", tailgate_tests::SECRET])
        .args([
            "--jwt-issuer",
            CAPGO_ISSUER,
            "--jwt-audience",
            CAPGO_AUDIENCE,
        ])
        .env("TAILGATE_LOG", "trace")
        .env("TAILGATE_LOG_FORMAT", "pretty")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tailgate");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr: std::net::SocketAddr = loop {
        let line = stdout.next_line().await.unwrap().expect("listening line");
        if let Some(rest) = line.strip_prefix("tailgate listening on http://") {
            break rest.parse().unwrap();
        }
    };
    let mut stderr = child.stderr.take().expect("stderr");
    let log = tokio::spawn(async move {
        let mut all = Vec::new();
        let _ = stderr.read_to_end(&mut all).await;
        all
    });

    let job = "hygiene";
    let publish = capgo_publish_token(job);
    let read = capgo_token(job);
    let body = format!(
        "{}\n",
        json!({ "n": 1, "line": format!("compiling {LINE_SECRET}") })
    );
    let auth = format!("Bearer {publish}");
    let reply = request(
        addr,
        "POST",
        &format!("/v1/jobs/{job}/logs"),
        &[
            ("authorization", &auth),
            ("content-type", "application/x-ndjson"),
        ],
        Bytes::from(body),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // The token in the query string, on both the socket path and hyper's (a refusal).
    let path = format!("/v1/jobs/{job}/logs?token={read}");
    let mut sse = tailgate_tests::SseStream::new(
        tailgate_tests::http_client::open(addr, "GET", &path, &[])
            .await
            .into_body(),
    );
    assert_eq!(
        sse.next_within(Duration::from_secs(5)).await.unwrap().seq(),
        1
    );
    let refused = request(
        addr,
        "GET",
        &path,
        &[("last-event-id", HEADER_SECRET)],
        Bytes::new(),
    )
    .await;
    assert_eq!(refused.status, 400);
    // A client that forgot the `?`.
    let forgot = request(
        addr,
        "GET",
        &format!("/v1/jobs/{job}/logs&token={read}"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(forgot.status, 404);
    // The Capgo header, and a wrong scheme in Authorization.
    let start = request(
        addr,
        "POST",
        &format!("{PREFIX}/{job}/start"),
        &[
            ("x-capgo-log-token", &read),
            ("authorization", &format!("Basic {HEADER_SECRET}")),
        ],
        Bytes::new(),
    )
    .await;
    assert_eq!(start.status, 200, "{}", start.text());

    // HTTP/2 with the token in a header (h2 traces header blocks).
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{addr}/v1/jobs/{job}/log"))
        .header("authorization", format!("Bearer {read}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = h2.send_request(req).await.expect("h2 request");
    assert_eq!(resp.status(), 200);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&text).contains(LINE_SECRET));

    // A Capgo WebSocket reader: the server's frames carry the line, the client's a secret.
    let (mut ws, _) = tokio_tungstenite::connect_async(stream_url(addr, PREFIX, job, &read))
        .await
        .expect("websocket");
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a frame")
        .expect("open")
        .expect("frame");
    assert!(first.to_text().unwrap_or_default().contains(LINE_SECRET));
    let heartbeat = json!({ "type": "heartbeat", "lastId": 1, "note": FRAME_SECRET });
    ws.send(Message::text(heartbeat.to_string())).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert!(answer.is_ok(), "heartbeat answered");
    drop(ws);
    drop(sse);

    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().expect("pid").to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("drained")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    let log = String::from_utf8_lossy(&log.await.unwrap()).into_owned();

    assert!(log.contains(" DEBUG "), "levels below info were on:\n{log}");
    assert!(
        log.contains("http.status=200"),
        "an access log line:\n{log}"
    );
    assert!(log.contains("http.route=\"job_logs\""), "{log}");
    assert!(
        log.contains("token=<redacted>"),
        "the forgotten `?` path, masked:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "no ANSI colour into a pipe");
    for (what, secret) in [
        ("the publish token", publish.as_str()),
        ("the read token", read.as_str()),
        (
            "a token's signature",
            read.rsplit('.').next().unwrap_or_default(),
        ),
        ("a job log line", LINE_SECRET),
        ("a header value", HEADER_SECRET),
        ("a client frame", FRAME_SECRET),
    ] {
        if let Some(at) = log.find(secret) {
            let line = log[..at].rsplit('\n').next().unwrap_or_default();
            panic!("{what} reached the log: {line}{secret}...");
        }
    }
}
