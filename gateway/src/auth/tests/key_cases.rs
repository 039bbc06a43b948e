//! Algorithms, `kid` selection, key rotation and Capgo-shaped tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::StatusCode;
use jsonwebtoken::{Algorithm, Header};
use serde_json::Value;

use super::*;

#[test]
fn alg_none_is_wrong_algorithm() {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
    let unsigned = format!("{header}.{payload}.");
    assert_401(read(&hmac_auth(), &unsigned), &unsigned, "wrong_algorithm");
    // An HMAC header with the signature stripped is not let through either.
    let good = hs(&claims());
    let stripped = &good[..=good.rfind('.').unwrap_or(0)];
    assert_401(read(&hmac_auth(), stripped), stripped, "bad_signature");
}

#[test]
fn hmac_token_cannot_use_an_rsa_public_key_as_secret() {
    let rs_only = authenticator(&settings(
        None,
        vec![key(Some("a"), Algorithm::RS256, "rsa_a.pub.pem")],
    ));
    // The classic confusion: HMAC over the RSA public key's PEM bytes, with and without kid.
    let plain = hs_raw(Header::new(Algorithm::HS256), RSA_A_PUB, &claims());
    assert_401(read(&rs_only, &plain), &plain, "wrong_algorithm");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("a".into());
    let with_kid = hs_raw(header, RSA_A_PUB, &claims());
    assert_401(read(&rs_only, &with_kid), &with_kid, "wrong_algorithm");
    // With a secret configured too, the PEM is just a wrong secret.
    let both = authenticator(&settings(
        Some(SECRET),
        vec![key(Some("a"), Algorithm::RS256, "rsa_a.pub.pem")],
    ));
    assert_401(read(&both, &plain), &plain, "bad_signature");
}

#[test]
fn asymmetric_algorithm_without_its_key_is_wrong_algorithm() {
    let token = mint(&minter(EC_P256_KEY, Algorithm::ES256, None), &claims());
    assert_401(read(&hmac_auth(), &token), &token, "wrong_algorithm");
}

#[test]
fn every_public_key_kind_verifies() {
    let auth = authenticator(&settings(
        None,
        vec![
            key(Some("rs"), Algorithm::RS256, "rsa_a.pub.pem"),
            key(Some("ps"), Algorithm::PS256, "rsa_b.pub.pem"),
            key(Some("es"), Algorithm::ES256, "ec_p256.pub.pem"),
            key(Some("es384"), Algorithm::ES384, "ec_p384.pub.pem"),
            key(Some("ed"), Algorithm::EdDSA, "ed25519.pub.pem"),
        ],
    ));
    let cases = [
        (RSA_A_KEY, Algorithm::RS256, "rs"),
        (RSA_B_KEY, Algorithm::PS256, "ps"),
        (EC_P256_KEY, Algorithm::ES256, "es"),
        (EC_P384_KEY, Algorithm::ES384, "es384"),
        (ED25519_KEY, Algorithm::EdDSA, "ed"),
    ];
    for (pem, alg, kid) in cases {
        let token = mint(&minter(pem, alg, Some(kid)), &claims());
        assert_eq!(
            read(&auth, &token).map(|c| c.sub),
            Ok("user-1".into()),
            "{kid}"
        );
        // Without kid, the key is found by algorithm alone.
        let untagged = mint(&minter(pem, alg, None), &claims());
        assert!(read(&auth, &untagged).is_ok(), "{kid} without kid");
    }
    // The RSA key under another algorithm of its family is refused.
    let rs384 = mint(&minter(RSA_A_KEY, Algorithm::RS384, Some("rs")), &claims());
    assert_401(read(&auth, &rs384), &rs384, "wrong_algorithm");
}

fn two_rsa_keys() -> Authenticator {
    authenticator(&settings(
        None,
        vec![
            key(Some("a"), Algorithm::RS256, "rsa_a.pub.pem"),
            key(Some("b"), Algorithm::RS256, "rsa_b.pub.pem"),
        ],
    ))
}

#[test]
fn kid_selects_exactly_one_of_two_rsa_keys() {
    let auth = two_rsa_keys();
    let a = mint(&minter(RSA_A_KEY, Algorithm::RS256, Some("a")), &claims());
    let b = mint(&minter(RSA_B_KEY, Algorithm::RS256, Some("b")), &claims());
    assert!(read(&auth, &a).is_ok());
    assert!(read(&auth, &b).is_ok());
    // Key b's signature under kid a: only key a is tried, so it fails.
    let mislabelled = mint(&minter(RSA_B_KEY, Algorithm::RS256, Some("a")), &claims());
    assert_401(read(&auth, &mislabelled), &mislabelled, "bad_signature");
}

#[test]
fn unknown_kid_is_401_unknown_key() {
    let token = mint(&minter(RSA_A_KEY, Algorithm::RS256, Some("c")), &claims());
    assert_401(read(&two_rsa_keys(), &token), &token, "unknown_key");
}

#[test]
fn rotation_overlap_accepts_old_and_new_tokens_without_kid() {
    // Both keys configured during the overlap; tokens without kid try each RS256 key.
    let auth = two_rsa_keys();
    for pem in [RSA_A_KEY, RSA_B_KEY] {
        let token = mint(&minter(pem, Algorithm::RS256, None), &claims());
        assert!(read(&auth, &token).is_ok());
    }
    let stranger = mint(&minter(RSA_A_KEY, Algorithm::PS256, None), &claims());
    assert_401(read(&auth, &stranger), &stranger, "wrong_algorithm");
}

#[test]
fn rotation_retired_key_no_longer_verifies() {
    let new_only = authenticator(&settings(
        None,
        vec![key(Some("b"), Algorithm::RS256, "rsa_b.pub.pem")],
    ));
    let old_with_kid = mint(&minter(RSA_A_KEY, Algorithm::RS256, Some("a")), &claims());
    assert_401(read(&new_only, &old_with_kid), &old_with_kid, "unknown_key");
    let old_without_kid = mint(&minter(RSA_A_KEY, Algorithm::RS256, None), &claims());
    assert_401(
        read(&new_only, &old_without_kid),
        &old_without_kid,
        "bad_signature",
    );
    let new = mint(&minter(RSA_B_KEY, Algorithm::RS256, Some("b")), &claims());
    assert!(read(&new_only, &new).is_ok());
}

#[test]
fn capgo_token_reads_but_cannot_publish() {
    let auth = authenticator(&AuthSettings {
        issuer: CAPGO_ISSUER.into(),
        audience: CAPGO_AUDIENCE.into(),
        ..settings(Some(SECRET), Vec::new())
    });
    let minter = match Minter::hmac(SECRET, Algorithm::HS256) {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    };
    let token = mint(&minter, &capgo_claims("user-42", JOB, "com.example.app"));
    assert_eq!(
        read(&auth, &token),
        Ok(JobClaims {
            sub: "user-42".into(),
            job: JOB.into(),
            scopes: Vec::new(),
            app_id: Some("com.example.app".into()),
            exp: unix_now_plus_capgo_ttl(&token),
        })
    );
    let publish = auth.verify(&token, &job(), Access::Publish);
    assert_refused(publish, &token, StatusCode::FORBIDDEN, "missing_scope");
    // And a Capgo token is not accepted by a gateway configured for another issuer.
    assert_401(read(&hmac_auth(), &token), &token, "wrong_issuer");
}

/// The `exp` Capgo put in `token` (iat + 4 h), read back from the payload.
fn unix_now_plus_capgo_ttl(token: &str) -> u64 {
    let payload = token.split('.').nth(1).unwrap_or("");
    let claims: Value = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let (iat, exp) = (claims["iat"].as_u64(), claims["exp"].as_u64());
    assert_eq!(exp.zip(iat).map(|(e, i)| e - i), Some(CAPGO_TTL.as_secs()));
    exp.unwrap_or(0)
}
