//! Token minting: the issuer side, for `--dev`, `tailgate token`, tests and the loadtest.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

/// Capgo's issuer, audience and token lifetime, as its `/build/start` mints them.
pub const CAPGO_ISSUER: &str = "capgo";
pub const CAPGO_AUDIENCE: &str = "build-logs";
pub const CAPGO_TTL: Duration = Duration::from_secs(4 * 3600);

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("signing key is not a valid {alg:?} PEM key")]
    BadKey {
        alg: Algorithm,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    #[error("algorithm {0:?} is not supported for minting")]
    UnsupportedAlgorithm(Algorithm),
    #[error("could not sign the token")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// A signing key and the header fields that go with it.
#[derive(Clone)]
pub struct Minter {
    key: EncodingKey,
    alg: Algorithm,
    kid: Option<String>,
}

impl Minter {
    /// An HMAC minter (HS256, HS384 or HS512) over a shared secret.
    pub fn hmac(secret: &[u8], alg: Algorithm) -> Result<Self, MintError> {
        if !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return Err(MintError::UnsupportedAlgorithm(alg));
        }
        Ok(Self {
            key: EncodingKey::from_secret(secret),
            alg,
            kid: None,
        })
    }

    /// A minter over a PEM private key for RS256/384/512, PS256/384/512, ES256/384 or EdDSA.
    pub fn from_pem(pem: &[u8], alg: Algorithm) -> Result<Self, MintError> {
        let key = match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => EncodingKey::from_rsa_pem(pem),
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
            other => return Err(MintError::UnsupportedAlgorithm(other)),
        }
        .map_err(|source| MintError::BadKey { alg, source })?;
        Ok(Self {
            key,
            alg,
            kid: None,
        })
    }

    /// Sets the `kid` header, which selects the verifying key on the gateway.
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Signs `claims` as they are.
    pub fn mint(&self, claims: &Value) -> Result<String, MintError> {
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.key).map_err(MintError::Sign)
    }
}

/// Claims for a Tailgate job token: `iss`, `aud`, `sub`, the job claim, `iat`, `exp`
/// and, when `publish` is set, `scope: "publish"`.
pub fn job_claims(
    issuer: &str,
    audience: &str,
    sub: &str,
    job_claim: &str,
    job: &str,
    ttl: Duration,
    publish: bool,
) -> Value {
    let now = unix_now();
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(issuer));
    claims.insert("aud".into(), json!(audience));
    claims.insert("sub".into(), json!(sub));
    claims.insert(job_claim.into(), json!(job));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + ttl.as_secs()));
    if publish {
        claims.insert("scope".into(), json!("publish"));
    }
    Value::Object(claims)
}

/// Claims exactly as Capgo's `/build/start` mints its `logs_token`: no scope, 4 h.
pub fn capgo_claims(sub: &str, job: &str, app_id: &str) -> Value {
    let now = unix_now();
    json!({
        "iss": CAPGO_ISSUER,
        "aud": CAPGO_AUDIENCE,
        "sub": sub,
        "job_id": job,
        "app_id": app_id,
        "iat": now,
        "exp": now + CAPGO_TTL.as_secs(),
    })
}

/// Seconds since the Unix epoch, as JWT time claims count them.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
