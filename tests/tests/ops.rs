//! Operations: `/metrics` moves with traffic, `--metrics-listen`, the shutdown grace,
//! JSON bodies for hyper's own refusals, and `--print-config` on the deploy sample.

use std::path::Path;
use std::time::{Duration, Instant};

use tailgate_tests::gateway::Gateway;
use tailgate_tests::{bearer, cli, http_client, read_token, TestServer, AUDIENCE, ISSUER, SECRET};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

/// The value of the sample line starting with `series ` (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(server: &TestServer) -> String {
    let reply = server.get("/metrics", &[]).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        reply.headers
    );
    reply.text()
}

#[tokio::test]
async fn metrics_move_as_traffic_flows() {
    let server = TestServer::start().await;
    let before = scrape(&server).await;

    let mut reader = server.subscribe("metered", "", &[]).await;
    let records =
        "{\"n\":1,\"line\":\"a\"}\n{\"n\":2,\"line\":\"b\"}\n{\"n\":2,\"line\":\"b again\"}\n";
    let reply = server.publish_ndjson("metered", records).await;
    assert_eq!(reply.json()["duplicates"], 1);
    for _ in 0..2 {
        reader.next_within(WAIT).await.expect("event");
    }
    let refused = server
        .get(
            "/v1/jobs/metered/logs",
            &[("authorization", "Bearer not.a.jwt")],
        )
        .await;
    assert_eq!(refused.status, 401);
    let gap = server
        .subscribe("metered", "", &[("last-event-id", "99")])
        .await;
    drop(gap);

    let after = scrape(&server).await;
    for series in [
        "tailgate_records_published_total",
        "tailgate_published_bytes_total",
        "tailgate_events_delivered_total",
        "tailgate_delivered_bytes_total",
        "tailgate_duplicates_dropped_total",
        "tailgate_resets_sent_total",
        "tailgate_auth_failures_total{reason=\"malformed\"}",
        "tailgate_http_requests_total{route=\"job_logs\",status=\"200\"}",
        "tailgate_http_requests_total{route=\"metrics\",status=\"200\"}",
        "tailgate_delivery_lag_seconds_count",
    ] {
        assert!(
            sample(&after, series) > sample(&before, series),
            "{series} did not move:\n{after}"
        );
    }
    assert!(
        sample(&after, "tailgate_readers_active{kind=\"sse\"}") >= 1.0,
        "{after}"
    );
    assert!(
        sample(&after, "tailgate_jobs{status=\"running\"}") >= 1.0,
        "{after}"
    );
    assert!(
        sample(
            &after,
            "tailgate_connections_open{protocol=\"http1\",transport=\"tcp\"}"
        ) >= 1.0,
        "{after}"
    );
    assert!(
        after.contains("# HELP tailgate_delivery_lag_seconds "),
        "{after}"
    );
    drop(reader);
    server.stop().await;
}

#[tokio::test]
async fn spool_metrics_move_with_a_data_dir() {
    let dir = std::env::temp_dir().join(format!("tailgate-ops-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = tailgate_tests::test_config();
    config.store.data_dir = Some(dir.clone());
    let server = TestServer::start_with(config).await;
    let before = scrape(&server).await;
    assert_eq!(
        server.publish_text("spooled", "on disk\n").await.status,
        200
    );
    // The terminal status is always fsynced.
    assert_eq!(
        server
            .set_status("spooled", "succeeded", Some(0))
            .await
            .status,
        200
    );
    let after = scrape(&server).await;
    assert!(sample(&after, "tailgate_spool_bytes") > 0.0, "{after}");
    assert!(
        sample(&after, "tailgate_fsync_seconds_count")
            > sample(&before, "tailgate_fsync_seconds_count"),
        "{after}"
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn gateway_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--jwt-secret",
        SECRET,
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
    ];
    args.extend_from_slice(extra);
    args
}

#[tokio::test]
async fn metrics_listen_moves_metrics_off_the_main_listener() {
    let gw = Gateway::start(&gateway_args(&["--metrics-listen", "127.0.0.1:0"]), &[]).await;
    let metrics = gw.metrics_addr.expect("metrics address printed");
    let main = http_client::request(gw.addr, "GET", "/metrics", &[], Default::default()).await;
    main.assert_error(404, "not_found");
    let scrape = http_client::request(metrics, "GET", "/metrics", &[], Default::default()).await;
    assert_eq!(scrape.status, 200);
    assert!(
        scrape.text().contains("tailgate_connections_open"),
        "{}",
        scrape.text()
    );
    let ready = http_client::request(metrics, "GET", "/readyz", &[], Default::default()).await;
    assert_eq!(ready.status, 200);
    let other =
        http_client::request(metrics, "GET", "/v1/jobs/x/logs", &[], Default::default()).await;
    other.assert_error(404, "not_found");
    assert_eq!(gw.stop(WAIT).await, Some(0));
}

#[tokio::test]
async fn sigterm_turns_readyz_off_and_serves_through_the_grace() {
    let mut gw = Gateway::start(&gateway_args(&["--shutdown-grace-secs", "2"]), &[]).await;
    let addr = gw.addr;
    let started = Instant::now();
    gw.signal("TERM");
    gw.wait_log("serving through the grace period", WAIT).await;
    let ready = http_client::request(addr, "GET", "/readyz", &[], Default::default()).await;
    ready.assert_error(503, "draining");
    // Everything else is still served, new connections included.
    let health = http_client::request(addr, "GET", "/healthz", &[], Default::default()).await;
    assert_eq!(health.status, 200);
    let auth = bearer(&read_token("graceful"));
    let status = http_client::request(
        addr,
        "GET",
        "/v1/jobs/graceful",
        &[("authorization", &auth)],
        Default::default(),
    )
    .await;
    assert_eq!(status.status, 200, "{}", status.text());
    let code = tokio::time::timeout(WAIT, gw.child.wait())
        .await
        .expect("exited")
        .expect("wait")
        .code();
    assert_eq!(code, Some(0));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "exited before the grace ended: {:?}",
        started.elapsed()
    );
}

/// Sends raw bytes and reads the answer until the server closes.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn json_body(answer: &str) -> serde_json::Value {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer:?}"))
}

#[tokio::test]
async fn hyper_s_own_refusals_have_json_bodies() {
    let server = TestServer::start().await;
    let big = "x".repeat(20 * 1024);
    for (request, status, code) in [
        (
            format!("GET /healthz HTTP/1.1\r\nhost: a\r\nx-big: {big}\r\n\r\n"),
            "431",
            "headers_too_large",
        ),
        (
            format!("GET /v1/jobs/a/logs HTTP/1.1\r\nhost: a\r\nx-big: {big}\r\n\r\n"),
            "431",
            "headers_too_large",
        ),
        (
            "GET / HTTP/1.1\r\nbad header\r\n\r\n".to_string(),
            "400",
            "bad_request",
        ),
        ("NOT HTTP AT ALL\r\n\r\n".to_string(), "400", "bad_request"),
        // After a good request on the same connection, too.
        (
            "GET /healthz HTTP/1.1\r\nhost: a\r\n\r\nGET / HTTP/1.1\r\nbad header\r\n\r\n"
                .to_string(),
            "400",
            "bad_request",
        ),
    ] {
        let answer = raw(server.addr, request.as_bytes()).await;
        let last = answer.rfind("HTTP/1.1 ").map_or("", |i| &answer[i..]);
        assert!(
            last.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer:?}"
        );
        assert!(
            last.contains("content-type: application/json"),
            "{answer:?}"
        );
        let v = json_body(last);
        assert_eq!(v["error"], code, "{answer:?}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    server.stop().await;
}

#[tokio::test]
async fn print_config_reads_the_deploy_sample() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/tailgate.toml");
    let secret_file = std::env::temp_dir().join(format!("tailgate-print-{}", std::process::id()));
    std::fs::write(&secret_file, "sample-secret-sample-secret-1234\n").expect("secret");
    let sample = sample.display().to_string();
    let mut cmd = cli::tailgate(&["serve", "--print-config", "--config", &sample]);
    cmd.env("TAILGATE_JWT_SECRET_FILE", &secret_file);
    let done = cli::run(cmd, WAIT).await;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let text = done.stdout;
    assert!(!text.contains("sample-secret"), "{text}");
    let parsed: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("not TOML ({e}):\n{text}"));
    assert_eq!(parsed["jwt_issuer"].as_str(), Some("capgo"));
    assert!(text.contains("jwt_secret_file = "), "{text}");
    assert!(text
        .lines()
        .any(|l| l.starts_with("jwt_secret_file = ") && l.ends_with("# env")));
    assert!(
        text.lines()
            .any(|l| l.starts_with("listen = ") && l.ends_with("# file")),
        "{text}"
    );
    // Every key of the sample is one the binary knows and printed.
    let sample_text = std::fs::read_to_string(&sample).expect("sample");
    for line in text.lines() {
        let key = match line.split_once(" = ") {
            Some((key, _)) => key,
            None => match line
                .strip_prefix("# ")
                .and_then(|l| l.split_once(" is not set"))
            {
                Some((key, _)) => key,
                None => continue,
            },
        };
        assert!(
            sample_text.contains(&format!("{key} =")),
            "deploy/tailgate.toml does not mention {key}"
        );
    }
}

#[tokio::test]
async fn a_refused_h1_stream_counts_one_auth_failure_and_replays_add_no_lag() {
    // A process of its own: the counters are exact.
    let gw = Gateway::start(&gateway_args(&["--metrics-public"]), &[]).await;
    let refused = http_client::request(
        gw.addr,
        "GET",
        "/v1/jobs/counted/logs",
        &[("authorization", "Bearer not.a.jwt")],
        Default::default(),
    )
    .await;
    refused.assert_error(401, "invalid_token");
    let job = "replayed";
    let reply = tailgate_tests::publish_ndjson(gw.addr, job, "{\"n\":1,\"line\":\"old\"}\n").await;
    assert_eq!(reply.status, 200);
    // Attached after the append: everything it gets is a replay.
    let auth = bearer(&read_token(job));
    let opened = http_client::open(
        gw.addr,
        "GET",
        &format!("/v1/jobs/{job}/logs"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(opened.status().as_u16(), 200);
    let mut late = tailgate_tests::SseStream::new(opened.into_body());
    assert!(late.next_within(WAIT).await.is_some(), "the replayed line");
    let text = http_client::request(gw.addr, "GET", "/metrics", &[], Default::default())
        .await
        .text();
    assert_eq!(
        sample(&text, "tailgate_auth_failures_total{reason=\"malformed\"}"),
        1.0,
        "{text}"
    );
    assert!(
        sample(&text, "tailgate_events_delivered_total") >= 1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "tailgate_delivery_lag_seconds_count"),
        0.0,
        "{text}"
    );
    assert!(sample(&text, "process_open_fds") > 0.0, "{text}");
    assert!(text.contains("tailgate_build_info{version="), "{text}");
    drop(late);
    assert_eq!(gw.stop(WAIT).await, Some(0));
}
