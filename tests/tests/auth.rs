//! Token rules over real HTTP: every rejection with its status, code and challenge.

use std::time::Duration;

use serde_json::json;
use tailgate::auth::{capgo_claims, unix_now, Minter};
use tailgate_tests::{bearer, mint, read_token, test_config, TestServer, AUDIENCE, ISSUER};

fn claims(job: &str) -> serde_json::Value {
    let now = unix_now();
    json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": "u1", "job_id": job, "iat": now, "exp": now + 600 })
}

async fn get_status(server: &TestServer, job: &str, token: &str) -> tailgate_tests::Reply {
    server
        .get(
            &format!("/v1/jobs/{job}"),
            &[("authorization", &bearer(token))],
        )
        .await
}

#[tokio::test]
async fn each_rejection_has_its_status() {
    let server = TestServer::start().await;
    let now = unix_now();
    let with = |patch: serde_json::Value| {
        let mut c = claims("j1");
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        mint(&c)
    };
    let other_secret = Minter::hmac(b"another-secret", jsonwebtoken::Algorithm::HS256)
        .unwrap()
        .mint(&claims("j1"))
        .unwrap();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("malformed", "not.a.jwt".into(), 401, "invalid_token"),
        (
            "expired",
            with(json!({ "exp": now - 120, "iat": now - 700 })),
            401,
            "invalid_token",
        ),
        (
            "not yet valid",
            with(json!({ "nbf": now + 600 })),
            401,
            "invalid_token",
        ),
        ("bad signature", other_secret, 401, "invalid_token"),
        (
            "wrong issuer",
            with(json!({ "iss": "someone-else" })),
            401,
            "invalid_token",
        ),
        (
            "wrong audience",
            with(json!({ "aud": "other" })),
            401,
            "invalid_token",
        ),
        ("no exp", with(json!({ "exp": null })), 401, "invalid_token"),
        (
            "empty sub",
            with(json!({ "sub": "" })),
            401,
            "invalid_token",
        ),
        (
            "wrong job",
            with(json!({ "job_id": "j2" })),
            403,
            "forbidden",
        ),
    ];
    for (name, token, status, code) in cases {
        let reply = get_status(&server, "j1", &token).await;
        assert_eq!(reply.status, status, "{name}: {}", reply.text());
        reply.assert_error(status, code);
        let challenge = reply.header("www-authenticate");
        if status == 401 {
            assert!(
                challenge.is_some_and(|c| c.starts_with("Bearer error=\"invalid_token\"")),
                "{name}: {challenge:?}"
            );
        }
    }
    // An audience array containing ours is accepted.
    let token = with(json!({ "aud": ["x", AUDIENCE] }));
    assert_eq!(get_status(&server, "j1", &token).await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn missing_token_and_alg_none_are_401() {
    let server = TestServer::start().await;
    let reply = server.get("/v1/jobs/j1/logs", &[]).await;
    reply.assert_error(401, "invalid_token");
    assert!(reply.header("www-authenticate").is_some());
    // alg "none": header {"alg":"none","typ":"JWT"}, payload, empty signature.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims("j1").to_string())
    );
    get_status(&server, "j1", &token)
        .await
        .assert_error(401, "invalid_token");
    server.stop().await;
}

#[tokio::test]
async fn reading_token_cannot_publish() {
    let server = TestServer::start().await;
    let auth = bearer(&read_token("j1"));
    let reply = server
        .post(
            "/v1/jobs/j1/logs",
            &[("authorization", &auth), ("content-type", "text/plain")],
            "x\n",
        )
        .await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(reply.json()["error"], "insufficient_scope");
    // Nothing was stored.
    assert_eq!(
        get_status(&server, "j1", &read_token("j1")).await.json()["last_seq"],
        0
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_job_id_is_400_whatever_the_token() {
    let server = TestServer::start().await;
    for path in [
        "/v1/jobs/a%2Fb/logs",
        "/v1/jobs/../logs",
        "/v1/jobs/x%20y",
        &format!("/v1/jobs/{}", "a".repeat(129)),
    ] {
        server.get(path, &[]).await.assert_error(400, "bad_job_id");
    }
    server.stop().await;
}

#[tokio::test]
async fn three_token_sources_work() {
    let server = TestServer::start().await;
    server.publish_text("j1", "hello\n").await;
    let token = read_token("j1");
    assert_eq!(
        server
            .get("/v1/jobs/j1", &[("x-capgo-log-token", &token)])
            .await
            .status,
        200
    );
    assert_eq!(
        server
            .get(&format!("/v1/jobs/j1?token={token}"), &[])
            .await
            .status,
        200
    );
    assert_eq!(
        server
            .get(
                "/v1/jobs/j1",
                &[("authorization", &format!("bearer {token}"))]
            )
            .await
            .status,
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn capgo_token_reads_with_capgo_settings() {
    let mut config = test_config();
    config.auth.issuer = "capgo".into();
    config.auth.audience = "build-logs".into();
    let server = TestServer::start_with(config).await;
    let secret = tailgate_tests::SECRET.as_bytes();
    let minter = Minter::hmac(secret, jsonwebtoken::Algorithm::HS256).unwrap();
    let token = minter
        .mint(&capgo_claims("user-42", "build-7", "com.example.app"))
        .unwrap();
    let mut sse = server_subscribe_with(&server, "build-7", &token).await;
    // A worker publishes with a publish-scoped Capgo-issuer token.
    let mut publish = capgo_claims("worker", "build-7", "com.example.app");
    publish["scope"] = json!("publish");
    let pub_token = minter.mint(&publish).unwrap();
    let reply = server
        .post(
            "/v1/jobs/build-7/logs",
            &[
                ("authorization", &bearer(&pub_token)),
                ("content-type", "text/plain"),
            ],
            "built\n",
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let event = sse.next_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(event.json()["line"], "built");
    // Capgo's token has no scope: it cannot publish.
    let reply = server
        .post(
            "/v1/jobs/build-7/logs",
            &[
                ("authorization", &bearer(&token)),
                ("content-type", "text/plain"),
            ],
            "x\n",
        )
        .await;
    assert_eq!(reply.status, 403);
    // A default-configured gateway refuses it (wrong issuer).
    let plain = TestServer::start().await;
    get_status(&plain, "build-7", &token)
        .await
        .assert_error(401, "invalid_token");
    server.stop().await;
    plain.stop().await;
}

async fn server_subscribe_with(
    server: &TestServer,
    job: &str,
    token: &str,
) -> tailgate_tests::SseStream {
    let resp = tailgate_tests::http_client::open(
        server.addr,
        "GET",
        &format!("/v1/jobs/{job}/logs?token={token}"),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    tailgate_tests::SseStream::new(resp.into_body())
}
