//! Token shape, time and claim checks: each refusal with its status and reason.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::StatusCode;
use jsonwebtoken::{Algorithm, Header};
use serde_json::json;

use super::*;

#[test]
fn authenticator_is_shareable() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Authenticator>();
    let debug = format!("{:?}", hmac_auth());
    assert!(
        debug.contains("HS256") && !debug.contains("unit-test-secret"),
        "{debug}"
    );
}

#[test]
fn new_needs_a_secret_or_a_key() {
    assert!(matches!(
        Authenticator::new(&settings(None, Vec::new())),
        Err(KeyError::NoKeys)
    ));
    assert!(Authenticator::new(&settings(
        None,
        vec![key(None, Algorithm::RS256, "rsa_a.pub.pem")]
    ))
    .is_ok());
}

#[test]
fn good_hmac_token_is_accepted_with_its_claims() {
    let token = hs(&with("scope", json!("publish")));
    let claims = hmac_auth().verify(&token, &job(), Access::Publish);
    let claims = match claims {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(claims.sub, "user-1");
    assert_eq!(claims.job, JOB);
    assert_eq!(claims.scopes, vec!["publish".to_owned()]);
    assert_eq!(claims.app_id, None);
    assert!(claims.exp > unix_now());
}

#[test]
fn the_secret_verifies_all_three_hmac_algorithms() {
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let token = hs_raw(Header::new(alg), SECRET, &claims());
        assert!(read(&hmac_auth(), &token).is_ok(), "{alg:?}");
    }
}

#[test]
fn missing_token_is_401_missing() {
    let headers = http::HeaderMap::new();
    assert_eq!(token_from_request(&headers, Some("last_event_id=3")), None);
    let err = AuthError::Missing;
    assert_eq!(
        (err.status(), err.reason()),
        (StatusCode::UNAUTHORIZED, "missing")
    );
}

#[test]
fn malformed_tokens_are_401_malformed() {
    let good = hs(&claims());
    let auth = hmac_auth();
    let bad_json = format!("{}.{}.c2ln", URL_SAFE_NO_PAD.encode("{\"alg\""), "e30");
    let (head, rest) = good.split_once('.').unwrap_or_default();
    let bad_b64_payload = format!("{head}.%%%.{}", rest.rsplit('.').next().unwrap_or(""));
    for token in [
        "not-a-jwt",
        "a.b",
        "a.b.c.d",
        bad_json.as_str(),
        bad_b64_payload.as_str(),
    ] {
        assert_401(read(&auth, token), token, "malformed");
    }
}

#[test]
fn non_numeric_exp_counts_as_missing() {
    let token = hs(&with("exp", json!("tomorrow")));
    assert_eq!(
        read(&hmac_auth(), &token),
        Err(AuthError::MissingClaim("exp".into()))
    );
}

#[test]
fn expired_is_401_and_leeway_is_honoured() {
    let now = unix_now();
    let auth = hmac_auth();
    let ten_ago = hs(&with("exp", json!(now - 10)));
    assert!(
        read(&auth, &ten_ago).is_ok(),
        "10 s ago is inside 30 s leeway"
    );
    let minute_ago = hs(&with("exp", json!(now - 60)));
    assert_401(read(&auth, &minute_ago), &minute_ago, "expired");
    let strict = authenticator(&AuthSettings {
        leeway: Duration::ZERO,
        ..settings(Some(SECRET), Vec::new())
    });
    assert_401(read(&strict, &ten_ago), &ten_ago, "expired");
}

#[test]
fn missing_exp_is_missing_claim() {
    let token = hs(&without("exp"));
    assert_401(read(&hmac_auth(), &token), &token, "missing_claim");
}

#[test]
fn nbf_in_the_future_is_not_yet_valid() {
    let now = unix_now();
    let later = hs(&with("nbf", json!(now + 120)));
    assert_401(read(&hmac_auth(), &later), &later, "not_yet_valid");
    let within_leeway = hs(&with("nbf", json!(now + 10)));
    assert!(read(&hmac_auth(), &within_leeway).is_ok());
}

#[test]
fn iat_in_the_future_is_not_yet_valid() {
    let token = hs(&with("iat", json!(unix_now() + 120)));
    assert_401(read(&hmac_auth(), &token), &token, "not_yet_valid");
}

#[test]
fn bad_signature_is_401() {
    let auth = hmac_auth();
    let other = hs_raw(Header::new(Algorithm::HS256), b"another-secret", &claims());
    assert_401(read(&auth, &other), &other, "bad_signature");
    // A valid token's signature on a different payload.
    let good = hs(&claims());
    let forged_payload = URL_SAFE_NO_PAD.encode(with("job_id", json!("job-2")).to_string());
    let mut parts: Vec<&str> = good.split('.').collect();
    parts[1] = &forged_payload;
    let forged = parts.join(".");
    assert_401(read(&auth, &forged), &forged, "bad_signature");
}

#[test]
fn signature_is_checked_before_claims() {
    let now = unix_now();
    let claims = with("exp", json!(now - 3600));
    let forged = hs_raw(Header::new(Algorithm::HS256), b"another-secret", &claims);
    assert_401(read(&hmac_auth(), &forged), &forged, "bad_signature");
}

#[test]
fn issuer_must_match() {
    let auth = hmac_auth();
    let wrong = hs(&with("iss", json!("https://evil.test")));
    assert_401(read(&auth, &wrong), &wrong, "wrong_issuer");
    let missing = hs(&without("iss"));
    assert_401(read(&auth, &missing), &missing, "missing_claim");
}

#[test]
fn audience_string_or_array_must_contain_ours() {
    let auth = hmac_auth();
    let wrong = hs(&with("aud", json!("other")));
    assert_401(read(&auth, &wrong), &wrong, "wrong_audience");
    let array_with_ours = hs(&with("aud", json!(["other", AUD])));
    assert!(read(&auth, &array_with_ours).is_ok());
    let array_without = hs(&with("aud", json!(["other", "more"])));
    assert_401(
        read(&auth, &array_without),
        &array_without,
        "wrong_audience",
    );
    let missing = hs(&without("aud"));
    assert_401(read(&auth, &missing), &missing, "missing_claim");
}

#[test]
fn sub_must_be_present_and_non_empty() {
    let auth = hmac_auth();
    for token in [hs(&with("sub", json!(""))), hs(&without("sub"))] {
        assert_eq!(
            read(&auth, &token),
            Err(AuthError::MissingClaim("sub".into()))
        );
        assert_401(read(&auth, &token), &token, "missing_claim");
    }
}

#[test]
fn job_claim_must_name_the_paths_job() {
    let auth = hmac_auth();
    let other = hs(&with("job_id", json!("job-2")));
    assert_refused(
        read(&auth, &other),
        &other,
        StatusCode::FORBIDDEN,
        "wrong_job",
    );
    assert_eq!(read(&auth, &other).map_err(|e| e.code()), Err("forbidden"));
    let missing = hs(&without("job_id"));
    assert_401(read(&auth, &missing), &missing, "missing_claim");
}

#[test]
fn job_claim_name_comes_from_settings() {
    let auth = authenticator(&AuthSettings {
        job_claim: "build".into(),
        ..settings(Some(SECRET), Vec::new())
    });
    let renamed = hs(&with("build", json!(JOB)));
    assert_eq!(read(&auth, &renamed).map(|c| c.job), Ok(JOB.to_owned()));
    let default_name = hs(&claims());
    assert_eq!(
        read(&auth, &default_name),
        Err(AuthError::MissingClaim("build".into()))
    );
}

#[test]
fn read_token_cannot_publish() {
    let auth = hmac_auth();
    let read_only = hs(&claims());
    let publish = auth.verify(&read_only, &job(), Access::Publish);
    assert_refused(
        publish.clone(),
        &read_only,
        StatusCode::FORBIDDEN,
        "missing_scope",
    );
    assert_eq!(publish.map_err(|e| e.code()), Err("insufficient_scope"));
    let publisher = hs(&with("scope", json!("logs:read publish")));
    assert!(auth.verify(&publisher, &job(), Access::Publish).is_ok());
    assert!(auth.verify(&publisher, &job(), Access::Read).is_ok());
}
