//! `tailgate token mint|inspect` as a real process: minted tokens work on a real gateway,
//! inspect reads them back, and a Capgo-shaped token has exactly Capgo's claims.

use std::time::Duration;

use tailgate_tests::cli::{run, tailgate};
use tailgate_tests::{bearer, TestServer, AUDIENCE, ISSUER, SECRET};

const WAIT: Duration = Duration::from_secs(30);

async fn mint(args: &[&str]) -> String {
    let mut all = vec!["token", "mint", "--secret", SECRET];
    all.extend_from_slice(args);
    let done = run(tailgate(&all), WAIT).await;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let token = done.stdout.trim().to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_tokens_publish_and_read_on_a_real_gateway() {
    let server = TestServer::start().await;
    let common = [
        "--issuer",
        ISSUER,
        "--audience",
        AUDIENCE,
        "--sub",
        "ci",
        "--job",
        "minted",
    ];
    let publish = mint(&[&common[..], &["--scope", "publish", "--ttl", "10m"]].concat()).await;
    let read = mint(&common).await;
    let reply = server
        .post(
            "/v1/jobs/minted/logs",
            &[
                ("authorization", &bearer(&publish)),
                ("content-type", "text/plain"),
            ],
            "hello\n",
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = server
        .post(
            "/v1/jobs/minted/logs",
            &[
                ("authorization", &bearer(&read)),
                ("content-type", "text/plain"),
            ],
            "no\n",
        )
        .await;
    reply.assert_error(403, "insufficient_scope");
    let reply = server
        .get("/v1/jobs/minted/log", &[("authorization", &bearer(&read))])
        .await;
    assert_eq!(reply.text(), "hello\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_round_trips_and_judges() {
    let token = mint(&[
        "--issuer",
        ISSUER,
        "--audience",
        AUDIENCE,
        "--sub",
        "u1",
        "--job",
        "j-7",
        "--scope",
        "publish",
        "--claim",
        "build=42",
        "--claim",
        "branch=main",
        "--kid",
        "k1",
    ])
    .await;
    let done = run(tailgate(&["token", "inspect", &token]), WAIT).await;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    for want in [
        "\"kid\": \"k1\"",
        "\"job_id\": \"j-7\"",
        "\"build\": 42",
        "\"branch\": \"main\"",
        "not checked",
    ] {
        assert!(
            done.stdout.contains(want),
            "{want} missing from:\n{}",
            done.stdout
        );
    }
    assert!(
        done.stdout.contains("expires: in 4h (") || done.stdout.contains("expires: in 3h 59m"),
        "{}",
        done.stdout
    );

    let token = mint(&[
        "--issuer",
        ISSUER,
        "--audience",
        AUDIENCE,
        "--sub",
        "u1",
        "--job",
        "j-7",
    ])
    .await;
    let good = run(
        tailgate(&[
            "token", "inspect", &token, "--secret", SECRET, "--issuer", ISSUER,
        ]),
        WAIT,
    )
    .await;
    assert_eq!(good.code, Some(0), "{}", good.stdout);
    assert!(
        good.stdout
            .contains("verdict: accepted for job j-7: read only"),
        "{}",
        good.stdout
    );

    let mut from_env = tailgate(&["token", "inspect", "--job", "other"]);
    from_env
        .env("TAILGATE_TOKEN", &token)
        .env("TAILGATE_JWT_SECRET", SECRET);
    let other_job = run(from_env, WAIT).await;
    assert_eq!(other_job.code, Some(1));
    assert!(
        other_job
            .stdout
            .contains("rejected for job other: the token is for another job"),
        "{}",
        other_job.stdout
    );

    let bad_key = run(
        tailgate(&["token", "inspect", &token, "--secret", "wrong"]),
        WAIT,
    )
    .await;
    assert_eq!(bad_key.code, Some(1));
    assert!(
        bad_key.stdout.contains("signature does not verify"),
        "{}",
        bad_key.stdout
    );

    let wrong_iss = run(
        tailgate(&[
            "token", "inspect", &token, "--secret", SECRET, "--issuer", "capgo",
        ]),
        WAIT,
    )
    .await;
    assert_eq!(wrong_iss.code, Some(1));

    let garbage = run(tailgate(&["token", "inspect", "not-a-jwt"]), WAIT).await;
    assert_eq!(garbage.code, Some(64));
    assert!(
        garbage.stderr.contains("three dot-separated parts"),
        "{}",
        garbage.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capgo_tokens_have_exactly_capgos_shape_and_read_on_a_capgo_configured_gateway() {
    let token = mint(&[
        "--capgo",
        "--sub",
        "user-9",
        "--job",
        "build-1",
        "--app-id",
        "com.example.app",
    ])
    .await;
    let done = run(
        tailgate(&["token", "inspect", &token, "--secret", SECRET]),
        WAIT,
    )
    .await;
    assert_eq!(done.code, Some(0), "{}", done.stdout);
    let claims_json = done
        .stdout
        .split("claims: ")
        .nth(1)
        .and_then(|s| s.split("\nexpires:").next())
        .unwrap();
    let claims: serde_json::Value = serde_json::from_str(claims_json).unwrap();
    let mut names: Vec<&str> = claims
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["app_id", "aud", "exp", "iat", "iss", "job_id", "sub"]
    );
    assert_eq!(claims["iss"], "capgo");
    assert_eq!(claims["aud"], "build-logs");
    assert_eq!(claims["app_id"], "com.example.app");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        4 * 3600
    );
    assert!(done.stdout.contains("\"alg\": \"HS256\""));
    assert!(
        done.stdout.contains("accepted for job build-1: read only"),
        "{}",
        done.stdout
    );

    let server =
        TestServer::start_with(tailgate::Config::new_hmac(SECRET, "capgo", "build-logs")).await;
    let reply = server
        .get("/v1/jobs/build-1", &[("authorization", &bearer(&token))])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let clash = run(
        tailgate(&[
            "token", "mint", "--capgo", "--secret", "s", "--sub", "u", "--job", "j", "--app-id",
            "a", "--scope", "publish",
        ]),
        WAIT,
    )
    .await;
    assert_eq!(
        clash.code,
        Some(64),
        "--capgo takes no scope: a usage error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asymmetric_keys_mint_and_verify() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../gateway/src/auth/testdata");
    for (alg, name) in [
        ("RS256", "rsa_a"),
        ("ES256", "ec_p256"),
        ("EdDSA", "ed25519"),
    ] {
        let private = format!("{dir}/{name}.key.pem");
        let public = format!("{dir}/{name}.pub.pem");
        let args = [
            "token",
            "mint",
            "--key",
            &private,
            "--alg",
            alg,
            "--kid",
            "k",
            "--issuer",
            "i",
            "--audience",
            "a",
            "--sub",
            "s",
            "--job",
            "j",
        ];
        let minted = run(tailgate(&args), WAIT).await;
        assert_eq!(minted.code, Some(0), "{alg}: {}", minted.stderr);
        let token = minted.stdout.trim();
        let checked = run(
            tailgate(&["token", "inspect", token, "--key", &public, "--alg", alg]),
            WAIT,
        )
        .await;
        assert_eq!(
            checked.code,
            Some(0),
            "{alg}: {}{}",
            checked.stdout,
            checked.stderr
        );
        assert!(
            checked.stdout.contains("accepted for job j"),
            "{}",
            checked.stdout
        );
        let other = format!("{dir}/rsa_b.pub.pem");
        let wrong = run(
            tailgate(&["token", "inspect", token, "--key", &other, "--alg", "RS256"]),
            WAIT,
        )
        .await;
        assert_ne!(wrong.code, Some(0), "{alg} against another key");
    }
}
