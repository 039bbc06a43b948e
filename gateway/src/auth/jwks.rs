//! Verification keys from the issuer's JWKS document (`--jwks-url` / `--jwks-file`).
//!
//! The set is fetched at start (a failure stops start-up), again every refresh interval,
//! and when a token names a `kid` the set lacks, at most once per [`JWKS_MIN_REFRESH`] so
//! a flood of made-up kids cannot make the gateway hammer the issuer. Such a token is
//! answered at once from the current set; the fetch runs in the background, so a slow
//! issuer never holds a request (or its connection slot). A failed fetch keeps the last
//! good set. Each key verifies only the `alg` the document gives it (EC and OKP keys imply
//! theirs); symmetric (`oct`) and encryption keys are ignored. A token without `kid` is
//! verified by the set only when it holds one key of the token's algorithm, so a forged
//! token costs one signature check, not one per key.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::keys::{KeySet, VerifyingKey};
use crate::config::{JwksConfig, JwksSource};

/// Fetches triggered by unknown kids are at least this far apart.
pub const JWKS_MIN_REFRESH: Duration = Duration::from_secs(10);
/// A fetch may take this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys taken from one document, at most.
const MAX_KEYS: usize = 100;

/// Why the JWKS could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read the JWKS file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `url` is redacted (no user info, no query string).
    #[error("cannot fetch the JWKS from {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("the JWKS is not a JSON object with a \"keys\" array")]
    NotJwks,
    #[error("the JWKS holds no usable signature key")]
    NoKeys,
}

impl JwksError {
    /// The config key to name in the start-up error.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Read { .. } => "jwks-file",
            _ => "jwks-url",
        }
    }
}

/// The current key set and how to fetch it again.
pub(crate) struct Jwks {
    config: JwksConfig,
    keys: RwLock<Arc<KeySet>>,
    /// Held while fetching, so the periodic refresh and an unknown kid's never overlap.
    fetching: tokio::sync::Mutex<()>,
    /// When the last fetch for an unknown kid started.
    last_unknown_kid_fetch: Mutex<Option<Instant>>,
    /// A background fetch for an unknown kid is running: later unknown kids add none.
    unknown_kid_fetch_running: AtomicBool,
}

impl Jwks {
    /// Fetches the set once; an error here is a start-up error.
    pub(crate) async fn load(config: &JwksConfig) -> Result<Self, JwksError> {
        let keys = fetch(&config.source).await?;
        Ok(Self {
            config: config.clone(),
            keys: RwLock::new(Arc::new(keys)),
            fetching: tokio::sync::Mutex::new(()),
            last_unknown_kid_fetch: Mutex::new(None),
            unknown_kid_fetch_running: AtomicBool::new(false),
        })
    }

    /// The keys in force now.
    pub(crate) fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Fetches again, keeping the last good set on failure.
    async fn refresh(&self) {
        match fetch(&self.config.source).await {
            Ok(keys) => {
                crate::metrics::get().jwks_refresh(true);
                tracing::debug!(jwks.keys = keys.len(), "JWKS refreshed");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
            }
            Err(e) => {
                crate::metrics::get().jwks_refresh(false);
                tracing::warn!(
                    error = %crate::report::error_chain(&e),
                    "JWKS refresh failed; keeping the last good keys"
                );
            }
        }
    }

    /// A token named a kid the set lacks: starts a fetch in the background unless one is
    /// running or the last started less than [`JWKS_MIN_REFRESH`] ago. Returns whether a
    /// fetch was started. The token itself is answered from the current set: a rotation's
    /// first token is refused once, the next (after the fetch) accepted.
    pub(crate) fn refresh_for_unknown_kid(self: &Arc<Self>) -> bool {
        {
            let mut last = self
                .last_unknown_kid_fetch
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < JWKS_MIN_REFRESH)
                || self.unknown_kid_fetch_running.swap(true, Ordering::AcqRel)
            {
                return false;
            }
            *last = Some(Instant::now());
        }
        let jwks = Arc::clone(self);
        tokio::spawn(async move {
            {
                let _one_at_a_time = jwks.fetching.lock().await;
                jwks.refresh().await;
            }
            jwks.unknown_kid_fetch_running
                .store(false, Ordering::Release);
        });
        true
    }

    /// Refreshes every interval until `shutdown`.
    pub(crate) async fn refresh_until(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.refresh) => {}
            }
            let _one_at_a_time = self.fetching.lock().await;
            self.refresh().await;
        }
    }
}

async fn fetch(source: &JwksSource) -> Result<KeySet, JwksError> {
    let body = match source {
        JwksSource::File(path) => std::fs::read(path).map_err(|source| JwksError::Read {
            path: path.display().to_string(),
            source,
        })?,
        JwksSource::Url(url) => tokio::time::timeout(FETCH_TIMEOUT, fetch_url(url))
            .await
            .map_err(|_| JwksError::Fetch {
                url: crate::config::redact_url(url),
                message: "timed out".into(),
            })??,
    };
    parse(&body)
}

async fn fetch_url(url: &str) -> Result<Vec<u8>, JwksError> {
    use crate::net::http;
    use crate::report::error_chain;
    // The URL may carry an API key in its query or user info: never show those.
    let failed = |message: String| JwksError::Fetch {
        url: crate::config::redact_url(url),
        message,
    };
    // The parser's message would quote the URL.
    let (endpoint, path) = crate::net::url::split(url).map_err(|_| {
        failed("not a URL the gateway can fetch (user info is not supported)".into())
    })?;
    let req = http::get(&endpoint, &path, None).map_err(|e| failed(error_chain(&e)))?;
    let resp = http::send(&endpoint, req)
        .await
        .map_err(|e| failed(error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(failed(format!("answered {}", resp.status())));
    }
    let body = http::read_body(resp.into_body())
        .await
        .map_err(|e| failed(error_chain(&e)))?;
    Ok(body.to_vec())
}

/// The signature keys of a JWKS document; keys this gateway cannot use are skipped.
pub(crate) fn parse(doc: &[u8]) -> Result<KeySet, JwksError> {
    let value: Value = serde_json::from_slice(doc).map_err(|_| JwksError::NotJwks)?;
    let entries = value
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(JwksError::NotJwks)?;
    let keys: Vec<VerifyingKey> = entries
        .iter()
        .filter_map(|entry| {
            let jwk: Jwk = serde_json::from_value(entry.clone()).ok()?;
            verifying_key(&jwk)
        })
        .take(MAX_KEYS)
        .collect();
    if keys.is_empty() {
        return Err(JwksError::NoKeys);
    }
    Ok(KeySet::from_keys(keys))
}

fn verifying_key(jwk: &Jwk) -> Option<VerifyingKey> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let alg = match jwk.common.key_algorithm {
        Some(alg) => alg.to_string().parse::<Algorithm>().ok()?,
        // Only EC and OKP keys say their algorithm through their curve.
        None => match &jwk.algorithm {
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
            _ => return None,
        },
    };
    let family_fits = matches!(
        (&jwk.algorithm, alg.family()),
        (AlgorithmParameters::RSA(_), AlgorithmFamily::Rsa)
            | (AlgorithmParameters::EllipticCurve(_), AlgorithmFamily::Ec)
            | (AlgorithmParameters::OctetKeyPair(_), AlgorithmFamily::Ed)
    );
    if !family_fits {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyingKey {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_signature_keys_with_their_algorithm_only() {
        let rsa = serde_json::json!({
            "kty": "RSA", "kid": "r1", "alg": "RS256", "use": "sig",
            "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
            "e": "AQAB"
        });
        let hmac = serde_json::json!({ "kty": "oct", "kid": "h", "alg": "HS256", "k": "c2VjcmV0" });
        let enc = serde_json::json!({
            "kty": "RSA", "kid": "e", "alg": "RS256", "use": "enc",
            "n": rsa["n"], "e": "AQAB"
        });
        let confused = serde_json::json!({
            "kty": "RSA", "kid": "c", "alg": "ES256", "n": rsa["n"], "e": "AQAB"
        });
        let unknown = serde_json::json!({ "kty": "weird", "kid": "w" });
        let doc = serde_json::json!({ "keys": [hmac, enc, confused, unknown, rsa] });
        let set = parse(doc.to_string().as_bytes()).expect("one usable key");
        assert_eq!(set.describe(), vec![(Some("r1"), "RS256")]);

        let only_hmac = serde_json::json!({ "keys": [hmac] });
        assert!(matches!(
            parse(only_hmac.to_string().as_bytes()),
            Err(JwksError::NoKeys)
        ));
        assert!(matches!(parse(b"[]"), Err(JwksError::NotJwks)));
    }
}
