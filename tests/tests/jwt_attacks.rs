//! What was tried against the token check, kept as tests against the real server: `alg`
//! none in every casing, empty and stripped signatures, HS256 signed with the RSA public
//! key, kid tricks, jwk/jku/x5u/x5c/crit headers, oversize tokens, bad base64, duplicate
//! claims, wrong claim types, leeway edges, scope tricks and job claim type confusion.
//! Each is refused (or, where the RFC says which duplicate wins, read the same way every
//! time), with the status and code a client can act on.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use tailgate::auth::KeySpec;
use tailgate_tests::{test_config, TestServer, AUDIENCE, ISSUER, SECRET};

const JOB: &str = "target-job";
const RSA_PUB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../gateway/src/auth/testdata/rsa_a.pub.pem"
);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn b64(raw: &str) -> String {
    URL_SAFE_NO_PAD.encode(raw)
}

/// `header.payload.signature` over the raw JSON texts (so duplicates survive), HMAC-signed
/// with `key` under `alg`.
fn signed_with(alg: Algorithm, key: &[u8], header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &EncodingKey::from_secret(key), alg)
        .expect("sign");
    format!("{input}.{sig}")
}

fn signed(header: &str, payload: &str) -> String {
    signed_with(Algorithm::HS256, SECRET.as_bytes(), header, payload)
}

/// Good claims for the target job, with `extra` merged over them.
fn claims(extra: Value) -> String {
    let t = now();
    let mut c = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "attacker", "job_id": JOB,
        "iat": t, "exp": t + 600,
    });
    if let (Some(base), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if v.is_null() {
                base.remove(k);
            } else {
                base.insert(k.clone(), v.clone());
            }
        }
    }
    c.to_string()
}

const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// GET (read) or POST (publish) the target job with `token`; the status and error code.
async fn try_token(server: &TestServer, token: &str, publish: bool) -> (u16, String) {
    let auth = format!("Bearer {token}");
    let headers = [("authorization", auth.as_str())];
    let reply = if publish {
        server
            .post(&format!("/v1/jobs/{JOB}/logs"), &headers, "line\n")
            .await
    } else {
        server.get(&format!("/v1/jobs/{JOB}"), &headers).await
    };
    let code = match reply.status {
        200 => String::new(),
        _ => reply.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    };
    (reply.status, code)
}

#[track_caller]
fn refused(got: (u16, String), status: u16, case: &str) {
    assert_eq!(got.0, status, "{case}: {got:?}");
    let code = if status == 401 {
        "invalid_token"
    } else {
        got.1.as_str()
    };
    assert_eq!(got.1, code, "{case}");
}

#[tokio::test]
async fn the_control_token_is_accepted() {
    let server = TestServer::start().await;
    let good = signed(HS256, &claims(json!({"scope": "publish"})));
    assert_eq!(try_token(&server, &good, false).await.0, 200);
    assert_eq!(try_token(&server, &good, true).await.0, 200);
}

#[tokio::test]
async fn alg_none_in_every_casing_and_empty_or_stripped_signatures() {
    let server = TestServer::start().await;
    let payload = claims(json!({}));
    for alg in ["none", "None", "NONE", "nOnE", "none ", ""] {
        let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
        for sig in ["", "AAAA"] {
            let token = format!("{}.{}.{sig}", b64(&header), b64(&payload));
            refused(
                try_token(&server, &token, false).await,
                401,
                &format!("alg {alg:?} sig {sig:?}"),
            );
        }
    }
    let good = signed(HS256, &payload);
    let (head, _) = good.rsplit_once('.').unwrap();
    for token in [
        format!("{head}."),
        head.to_string(),
        format!("{head}.{}", &good[good.len() - 10..]),
        format!("{good}.extra"),
    ] {
        refused(try_token(&server, &token, false).await, 401, &token);
    }
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let mut config = test_config();
    config.auth.hmac_secret = None;
    config.auth.keys = vec![KeySpec {
        kid: None,
        alg: Algorithm::RS256,
        file: RSA_PUB.into(),
    }];
    let server = TestServer::start_with(config).await;
    let pem = std::fs::read(RSA_PUB).expect("public key");
    let payload = claims(json!({}));
    for (alg, header) in [
        (Algorithm::HS256, HS256),
        (Algorithm::HS384, r#"{"alg":"HS384"}"#),
        (Algorithm::HS512, r#"{"alg":"HS512"}"#),
    ] {
        for key in [&pem[..], pem.trim_ascii_end()] {
            let token = signed_with(alg, key, header, &payload);
            refused(
                try_token(&server, &token, false).await,
                401,
                &format!("{alg:?} over the PEM"),
            );
        }
    }
}

#[tokio::test]
async fn kid_tricks_and_key_carrying_headers() {
    let server = TestServer::start().await;
    let payload = claims(json!({}));
    let attacker = b"attacker-chosen-secret-attacker-chosen";
    // kid names nothing the gateway knows: an HMAC secret has no kid.
    for kid in [
        "../../../../dev/null",
        "' OR '1'='1",
        "",
        "default",
        "0",
        "/proc/self/environ",
    ] {
        let header = json!({"alg": "HS256", "kid": kid}).to_string();
        refused(
            try_token(&server, &signed(&header, &payload), false).await,
            401,
            kid,
        );
    }
    for kid in [json!(1), json!(["a"]), json!({"k": 1})] {
        let header = json!({"alg": "HS256", "kid": kid}).to_string();
        refused(
            try_token(&server, &signed(&header, &payload), false).await,
            401,
            "kid type",
        );
    }
    // Headers that would hand the verifier a key or a place to fetch one: the token is
    // signed with the attacker's own secret, which those headers describe.
    let jwk = json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode(attacker)});
    for header in [
        json!({"alg": "HS256", "jwk": jwk}),
        json!({"alg": "HS256", "jku": "https://attacker.example/jwks.json"}),
        json!({"alg": "HS256", "x5u": "https://attacker.example/cert.pem"}),
        json!({"alg": "HS256", "x5c": [STANDARD.encode(attacker)]}),
    ] {
        let token = signed_with(Algorithm::HS256, attacker, &header.to_string(), &payload);
        refused(
            try_token(&server, &token, false).await,
            401,
            &header.to_string(),
        );
    }
    // crit names extensions the verifier must understand; this one supports none, so even
    // a token signed with the real secret is refused (RFC 7515 section 4.1.11).
    for crit in [json!(["exp"]), json!(["b64"]), json!([])] {
        let header = json!({"alg": "HS256", "crit": crit, "b64": false}).to_string();
        refused(
            try_token(&server, &signed(&header, &payload), false).await,
            401,
            "crit",
        );
    }
}

#[tokio::test]
async fn oversize_tokens_and_bad_base64() {
    let server = TestServer::start().await;
    // Over the token limit (16 KiB) is over the header limit too: refused before parsing.
    let big = signed(HS256, &claims(json!({ "pad": "x".repeat(20 * 1024) })));
    let auth = format!("Bearer {big}");
    let reply = server
        .get(&format!("/v1/jobs/{JOB}"), &[("authorization", &auth)])
        .await;
    assert!(
        matches!(reply.status, 401 | 431),
        "oversize: {}",
        reply.status
    );
    let payload = claims(json!({}));
    let good = signed(HS256, &payload);
    let parts: Vec<&str> = good.split('.').collect();
    let padded = format!("{}==.{}.{}", parts[0], parts[1], parts[2]);
    let standard = format!(
        "{}.{}.{}",
        STANDARD.encode(HS256),
        STANDARD.encode(&payload),
        parts[2]
    );
    for token in [
        padded,
        standard,
        format!("{}.{}!.{}", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}*", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}", b64("not json"), parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], b64("[1,2]"), parts[2]),
        format!("%{good}"),
    ] {
        refused(
            try_token(&server, &token, false).await,
            401,
            &token[..token.len().min(40)],
        );
    }
}

#[tokio::test]
async fn duplicate_claims_read_as_the_lexically_last_everywhere() {
    // RFC 7519 section 4: a parser either refuses duplicate names or takes the last one.
    let server = TestServer::start().await;
    let t = now();
    let base = format!(
        r#""iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"u","iat":{t},"exp":{}"#,
        t + 600
    );
    let other_then_ours = format!(r#"{{{base},"job_id":"other","job_id":"{JOB}"}}"#);
    assert_eq!(
        try_token(&server, &signed(HS256, &other_then_ours), false)
            .await
            .0,
        200
    );
    let ours_then_other = format!(r#"{{{base},"job_id":"{JOB}","job_id":"other"}}"#);
    refused(
        try_token(&server, &signed(HS256, &ours_then_other), false).await,
        403,
        "last job wins",
    );
    let scope_then_none =
        format!(r#"{{{base},"job_id":"{JOB}","scope":"publish","scope":"read"}}"#);
    refused(
        try_token(&server, &signed(HS256, &scope_then_none), true).await,
        403,
        "last scope wins",
    );
    // A duplicate header name is not a token this gateway reads at all.
    let header = r#"{"alg":"none","alg":"HS256"}"#;
    let payload = claims(json!({}));
    refused(
        try_token(&server, &signed(header, &payload), false).await,
        401,
        "duplicate alg",
    );
}

#[tokio::test]
async fn wrong_claim_types_and_job_claim_type_confusion() {
    let server = TestServer::start().await;
    let t = now();
    for (extra, status) in [
        (json!({"exp": (t + 600).to_string()}), 401),
        (json!({"exp": null}), 401),
        (json!({"exp": -1}), 401),
        (json!({"exp": true}), 401),
        (json!({"nbf": "0"}), 401),
        (json!({"iat": "now"}), 401),
        (json!({"iss": [ISSUER]}), 401),
        (json!({"aud": 7}), 401),
        (json!({"aud": {"aud": AUDIENCE}}), 401),
        (json!({"sub": 7}), 401),
        (json!({"sub": ""}), 401),
        (json!({"sub": ["u"]}), 401),
        (json!({"job_id": [JOB]}), 401),
        (json!({"job_id": {"id": JOB}}), 401),
        (json!({"job_id": null}), 401),
        (json!({"job_id": format!("{JOB} ")}), 403),
        (json!({"job_id": JOB.to_uppercase()}), 403),
        (json!({"job_id": format!("{JOB}\u{0}")}), 403),
    ] {
        let token = signed(HS256, &claims(extra.clone()));
        refused(
            try_token(&server, &token, false).await,
            status,
            &extra.to_string(),
        );
    }
    // A numeric job claim for a numeric job id is not that job's string.
    let token = signed(HS256, &claims(json!({"job_id": 123})));
    let reply = server
        .get(
            "/v1/jobs/123",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
    assert_eq!(reply.status, 401, "{}", reply.text());
}

#[tokio::test]
async fn leeway_edges() {
    // The default leeway is 30 s; 10 s inside and outside it, so a second ticking over
    // during the test changes nothing.
    let server = TestServer::start().await;
    let t = now();
    for (extra, status) in [
        (json!({"exp": t - 20}), 200),
        (json!({"exp": t - 40}), 401),
        (json!({"nbf": t + 20}), 200),
        (json!({"nbf": t + 40}), 401),
        (json!({"iat": t + 20}), 200),
        (json!({"iat": t + 40}), 401),
        (json!({"exp": (t - 20) as f64 + 0.5}), 200),
    ] {
        let token = signed(HS256, &claims(extra.clone()));
        assert_eq!(try_token(&server, &token, false).await.0, status, "{extra}");
    }
}

#[tokio::test]
async fn scope_tricks_do_not_grant_publish() {
    let server = TestServer::start().await;
    for scope in [
        json!("publisher"),
        json!("PUBLISH"),
        json!("read,publish"),
        json!("pub lish"),
        json!(""),
        json!(["read"]),
        json!({"publish": true}),
        json!(true),
    ] {
        let token = signed(HS256, &claims(json!({ "scope": scope })));
        let (status, code) = try_token(&server, &token, true).await;
        assert!(
            (status == 403 && code == "insufficient_scope")
                || (status == 401 && code == "invalid_token"),
            "scope {scope}: {status} {code}"
        );
    }
    for claim in ["scopes", "scp", "permissions"] {
        let token = signed(HS256, &claims(json!({ claim: "publish" })));
        assert_eq!(
            try_token(&server, &token, true).await,
            (403, "insufficient_scope".into()),
            "{claim}"
        );
    }
    for scope in [
        json!("read publish"),
        json!("  publish  "),
        json!(["publish"]),
    ] {
        let token = signed(HS256, &claims(json!({ "scope": scope })));
        assert_eq!(try_token(&server, &token, true).await.0, 200, "{scope}");
    }
}
