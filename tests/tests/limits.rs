//! Every bound answers with a clear error, and loses nothing already accepted.

use tailgate_tests::{bearer, read_token, test_config, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn readers_per_job_and_jobs_held_are_bounded() {
    let mut config = test_config();
    config.limits.max_subscribers_per_job = 2;
    config.limits.max_jobs = 3;
    let server = TestServer::start_with(config).await;
    let _a = server.subscribe("j", "", &[]).await;
    let _b = server.subscribe("j", "", &[]).await;
    let r = server
        .get(
            "/v1/jobs/j/logs",
            &[("authorization", &bearer(&read_token("j")))],
        )
        .await;
    r.assert_error(429, "over_limit");
    assert!(r.header("retry-after").is_some());
    for job in ["k", "l"] {
        assert_eq!(
            server
                .get(
                    &format!("/v1/jobs/{job}"),
                    &[("authorization", &bearer(&read_token(job)))]
                )
                .await
                .status,
            200
        );
    }
    let r = server
        .get(
            "/v1/jobs/m",
            &[("authorization", &bearer(&read_token("m")))],
        )
        .await;
    r.assert_error(429, "over_limit");
    // Existing jobs still work.
    assert_eq!(server.publish_text("k", "still here\n").await.status, 200);
}

#[tokio::test]
async fn connections_over_the_cap_get_503() {
    let mut config = test_config();
    config.limits.max_connections = 2;
    let server = TestServer::start_with(config).await;
    let _a = server.subscribe("c", "", &[]).await;
    let _b = server.subscribe("c", "", &[]).await;
    let mut third = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    third
        .write_all(b"GET /v1/jobs/c HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    third.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    assert!(resp.contains(r#""error":"overloaded""#), "{resp}");
}

#[tokio::test]
async fn oversized_headers_and_records_are_refused() {
    let mut config = test_config();
    config.limits.max_record_bytes = 1024;
    let server = TestServer::start_with(config).await;
    let huge = "x".repeat(64 * 1024);
    let mut conn = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let req = format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {huge}\r\n\r\n");
    let _ = conn.write_all(req.as_bytes()).await;
    let mut resp = String::new();
    let _ = conn.read_to_string(&mut resp).await;
    assert!(
        resp.starts_with("HTTP/1.1 431"),
        "{:?}",
        &resp[..resp.len().min(80)]
    );

    let body = format!(
        "{{\"line\":\"ok\"}}\n{{\"line\":\"{}\"}}\n",
        "y".repeat(2000)
    );
    let r = server.publish_ndjson("rec", body).await;
    r.assert_error(400, "bad_record");
    assert_eq!(
        (r.json()["line"].as_u64(), r.json()["accepted"].as_u64()),
        (Some(2), Some(1))
    );
}
