//! End-to-end verification cases: real signed tokens through [`Authenticator::verify`], one
//! test per rejection with its status and reason. This file is the kit; `claim_cases` covers
//! shape, time and claims, `key_cases` algorithms, `kid` selection, rotation and Capgo tokens.

mod claim_cases;
mod key_cases;

use std::path::PathBuf;

use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;
use crate::job_id::JobId;

const SECRET: &[u8] = b"unit-test-secret-not-for-production";
const ISS: &str = "https://issuer.test";
const AUD: &str = "tailgate";
const JOB: &str = "job-1";

const RSA_A_KEY: &[u8] = include_bytes!("../testdata/rsa_a.key.pem");
const RSA_A_PUB: &[u8] = include_bytes!("../testdata/rsa_a.pub.pem");
const RSA_B_KEY: &[u8] = include_bytes!("../testdata/rsa_b.key.pem");
const EC_P256_KEY: &[u8] = include_bytes!("../testdata/ec_p256.key.pem");
const EC_P384_KEY: &[u8] = include_bytes!("../testdata/ec_p384.key.pem");
const ED25519_KEY: &[u8] = include_bytes!("../testdata/ed25519.key.pem");

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/auth/testdata")
        .join(name)
}

fn key(kid: Option<&str>, alg: Algorithm, file: &str) -> KeySpec {
    KeySpec {
        kid: kid.map(str::to_owned),
        alg,
        file: testdata(file),
    }
}

fn settings(secret: Option<&[u8]>, keys: Vec<KeySpec>) -> AuthSettings {
    AuthSettings {
        hmac_secret: secret.map(<[u8]>::to_vec),
        keys,
        issuer: ISS.into(),
        audience: AUD.into(),
        job_claim: DEFAULT_JOB_CLAIM.into(),
        leeway: DEFAULT_LEEWAY,
    }
}

fn authenticator(settings: &AuthSettings) -> Authenticator {
    match Authenticator::new(settings) {
        Ok(auth) => auth,
        Err(e) => panic!("test settings must load: {e}"),
    }
}

fn hmac_auth() -> Authenticator {
    authenticator(&settings(Some(SECRET), Vec::new()))
}

/// Valid read-only claims for `JOB`; tests change one thing at a time.
fn claims() -> Value {
    let now = unix_now();
    json!({
        "iss": ISS, "aud": AUD, "sub": "user-1", "job_id": JOB,
        "iat": now, "exp": now + 600,
    })
}

fn with(key: &str, value: Value) -> Value {
    let mut c = claims();
    c[key] = value;
    c
}

fn without(key: &str) -> Value {
    let mut c = claims();
    if let Some(map) = c.as_object_mut() {
        map.remove(key);
    }
    c
}

fn mint(minter: &Minter, claims: &Value) -> String {
    match minter.mint(claims) {
        Ok(token) => token,
        Err(e) => panic!("minting a test token: {e}"),
    }
}

fn minter(pem: &[u8], alg: Algorithm, kid: Option<&str>) -> Minter {
    let minter = match Minter::from_pem(pem, alg) {
        Ok(m) => m,
        Err(e) => panic!("test key: {e}"),
    };
    match kid {
        Some(kid) => minter.with_kid(kid),
        None => minter,
    }
}

fn hs(claims: &Value) -> String {
    let minter = match Minter::hmac(SECRET, Algorithm::HS256) {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    };
    mint(&minter, claims)
}

/// Signs with an arbitrary header and HMAC key bytes, for forged-header cases.
fn hs_raw(header: Header, secret: &[u8], claims: &Value) -> String {
    match jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)) {
        Ok(token) => token,
        Err(e) => panic!("{e}"),
    }
}

fn job() -> JobId {
    match JobId::parse(JOB) {
        Ok(job) => job,
        Err(e) => panic!("{e}"),
    }
}

fn read(auth: &Authenticator, token: &str) -> Result<JobClaims, AuthError> {
    auth.verify(token, &job(), Access::Read)
}

/// Asserts a refusal's status and reason, and that its message leaks neither token nor secret.
#[track_caller]
fn assert_refused(
    result: Result<JobClaims, AuthError>,
    token: &str,
    status: StatusCode,
    reason: &str,
) {
    match result {
        Ok(claims) => panic!("accepted, expected {reason}: {claims:?}"),
        Err(err) => {
            assert_eq!((err.status(), err.reason()), (status, reason), "{err:?}");
            let message = err.to_string();
            assert!(!token.is_empty() && !message.contains(token));
            assert!(!message.contains(std::str::from_utf8(SECRET).unwrap_or("?")));
        }
    }
}

#[track_caller]
fn assert_401(result: Result<JobClaims, AuthError>, token: &str, reason: &str) {
    assert_refused(result, token, StatusCode::UNAUTHORIZED, reason);
}
