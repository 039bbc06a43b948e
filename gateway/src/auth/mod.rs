//! Job-scoped JWTs: where a token comes from, which keys verify it, what it allows.
//!
//! STUB (being replaced on the auth branch): accepts nothing.

mod mint;

use std::time::Duration;

use crate::job_id::JobId;

pub use mint::{
    capgo_claims, job_claims, unix_now, MintError, Minter, CAPGO_AUDIENCE, CAPGO_ISSUER, CAPGO_TTL,
};

/// What a request wants to do with its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Publish,
}

/// How tokens are verified.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub hmac_secret: Option<Vec<u8>>,
    pub keys: Vec<KeySpec>,
    pub issuer: String,
    pub audience: String,
    pub job_claim: String,
    pub leeway: Duration,
}

/// `kid=K,alg=RS256,file=pub.pem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub kid: Option<String>,
    pub alg: jsonwebtoken::Algorithm,
    pub file: std::path::PathBuf,
}

impl std::str::FromStr for KeySpec {
    type Err = String;
    fn from_str(_s: &str) -> Result<Self, String> {
        Err("stub".into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("stub")]
    Stub,
}

/// The verified claims a request acts under.
#[derive(Debug, Clone)]
pub struct JobClaims {
    pub sub: String,
    pub job: String,
    pub scopes: Vec<String>,
    pub app_id: Option<String>,
    pub exp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token was given")]
    Missing,
}

impl AuthError {
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::UNAUTHORIZED
    }
    pub fn code(&self) -> &'static str {
        "invalid_token"
    }
    pub fn reason(&self) -> &'static str {
        "missing"
    }
}

pub struct Authenticator;

impl Authenticator {
    pub fn new(_settings: &AuthSettings) -> Result<Self, KeyError> {
        Ok(Self)
    }
    pub fn verify(
        &self,
        _token: &str,
        _job: &JobId,
        _access: Access,
    ) -> Result<JobClaims, AuthError> {
        Err(AuthError::Missing)
    }
}

pub fn token_from_request<'a>(
    _headers: &'a http::HeaderMap,
    _query: Option<&'a str>,
) -> Option<std::borrow::Cow<'a, str>> {
    None
}
