//! The [`Authenticator`]: checks a token's shape, picks its keys, verifies the signature and
//! the registered claims with `jsonwebtoken`, then the job claims with `claims`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::claims::{Access, ClaimRules, JobClaims};
use super::error::AuthError;
use super::jwks::Jwks;
use super::keys::{KeyError, KeySet};
use super::mint::unix_now;
use super::settings::AuthSettings;
use crate::job_id::JobId;

/// Longest token accepted, in bytes; longer ones are refused as malformed before any decoding.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Verifies job tokens against the configured keys and claims.
///
/// Built once at startup (key files are read then); immutable, so share it in an `Arc`.
pub struct Authenticator {
    keys: KeySet,
    /// One `jsonwebtoken` validation per algorithm that has a key, built once.
    validations: Vec<(Algorithm, Validation)>,
    issuer: String,
    job_claim: String,
    leeway: u64,
    /// Keys from the issuer's JWKS, besides the configured ones.
    jwks: Option<Arc<Jwks>>,
}

/// Every algorithm a JWKS key may carry.
const JWKS_ALGS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl Authenticator {
    /// Loads the secret and key files; fails if neither is given or a key file is bad.
    pub fn new(settings: &AuthSettings) -> Result<Self, KeyError> {
        Self::build(settings, None)
    }

    /// Also verifies with the keys of `jwks`; the secret and key files may then be absent.
    pub(crate) fn with_jwks(settings: &AuthSettings, jwks: Arc<Jwks>) -> Result<Self, KeyError> {
        Self::build(settings, Some(jwks))
    }

    /// The JWKS, when keys come from one.
    pub(crate) fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    fn build(settings: &AuthSettings, jwks: Option<Arc<Jwks>>) -> Result<Self, KeyError> {
        let keys = match KeySet::load(settings.hmac_secret.as_deref(), &settings.keys) {
            Err(KeyError::NoKeys) if jwks.is_some() => KeySet::from_keys(Vec::new()),
            loaded => loaded?,
        };
        let leeway = settings.leeway.as_secs();
        let mut validations: Vec<(Algorithm, Validation)> = Vec::new();
        let jwks_algs = jwks.as_ref().map_or(&[][..], |_| &JWKS_ALGS[..]);
        for alg in keys.algorithms().chain(jwks_algs.iter().copied()) {
            if validations.iter().all(|(a, _)| *a != alg) {
                let mut validation = Validation::new(alg);
                validation.leeway = leeway;
                validation.validate_exp = true;
                validation.validate_nbf = true;
                validation.validate_aud = true;
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                validation.set_issuer(&[&settings.issuer]);
                validation.set_audience(&[&settings.audience]);
                validations.push((alg, validation));
            }
        }
        Ok(Self {
            keys,
            validations,
            issuer: settings.issuer.clone(),
            job_claim: settings.job_claim.clone(),
            leeway,
            jwks,
        })
    }

    /// Checks `token` for `access` to `job` and returns the claims it grants.
    ///
    /// Without a token, answer [`AuthError::Missing`] instead of calling this.
    pub fn verify(&self, token: &str, job: &JobId, access: Access) -> Result<JobClaims, AuthError> {
        let header = inspect(token)?;
        let jwks = self.jwks.as_ref().map(|j| j.current());
        let candidates = select(
            [Some(&self.keys), jwks.as_deref()],
            header.kid.as_deref(),
            header.alg,
        )?;
        let validation = self
            .validations
            .iter()
            .find(|(alg, _)| *alg == header.alg)
            .map(|(_, v)| v)
            .ok_or(AuthError::WrongAlgorithm)?;
        // Several keys share an alg only without a kid (rotation): the first that verifies
        // the signature decides; any other failure is about the token, not the key.
        let mut claims = None;
        for candidate in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &candidate.key, validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                Err(e) => return Err(AuthError::from_jwt(&e)),
            }
        }
        let claims = claims.ok_or(AuthError::BadSignature)?;
        ClaimRules {
            issuer: &self.issuer,
            job_claim: &self.job_claim,
            job: job.as_str(),
            access,
            now: unix_now(),
            leeway: self.leeway,
        }
        .check(&claims)
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("keys", &self.keys.describe())
            .field("issuer", &self.issuer)
            .field("job_claim", &self.job_claim)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

/// The keys of every set (configured keys, then the JWKS) that may verify a token with
/// this `kid` and `alg`; the JWKS only by kid when it has several keys of `alg`. With none:
/// `WrongAlgorithm` if a set knows the kid (or has keys) but for another algorithm, else
/// `UnknownKey`.
fn select<'a>(
    sets: [Option<&'a KeySet>; 2],
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<Vec<&'a super::keys::VerifyingKey>, AuthError> {
    let mut candidates = Vec::new();
    let mut wrong_alg = false;
    let mut needs_kid = false;
    for (i, set) in sets.into_iter().enumerate() {
        let Some(set) = set else { continue };
        match set.select(kid, alg) {
            // A JWKS (the second set) may hold a hundred keys of one algorithm: without a
            // kid, a token would cost one signature check per key. It must name its key.
            Ok(keys) if i == 1 && kid.is_none() && keys.len() > 1 => needs_kid = true,
            Ok(keys) => candidates.extend(keys),
            Err(AuthError::WrongAlgorithm) => wrong_alg = true,
            Err(_) => {}
        }
    }
    match (candidates.is_empty(), wrong_alg || kid.is_none()) {
        (false, _) => Ok(candidates),
        (true, _) if needs_kid => Err(AuthError::MissingKid),
        (true, true) => Err(AuthError::WrongAlgorithm),
        (true, false) => Err(AuthError::UnknownKey),
    }
}

/// What the unverified header says about how to verify the token.
#[derive(Debug, PartialEq, Eq)]
struct TokenHeader {
    alg: Algorithm,
    kid: Option<String>,
}

/// Checks the token is three base64url parts with JSON-object header and payload, and reads
/// `alg` and `kid`. `alg: none` and algorithms `jsonwebtoken` does not know are refused here.
fn inspect(token: &str) -> Result<TokenHeader, AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let header = json_object(header)?;
    json_object(payload)?;
    URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| AuthError::Malformed)?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) if alg.eq_ignore_ascii_case("none") => {
            return Err(AuthError::WrongAlgorithm)
        }
        Some(Value::String(alg)) => {
            Algorithm::from_str(alg).map_err(|_| AuthError::WrongAlgorithm)?
        }
        _ => return Err(AuthError::Malformed),
    };
    // RFC 7515 section 4.1.11: a header listing extensions in `crit` must be refused by
    // a verifier that does not understand them, and this one implements none.
    if header.contains_key("crit") {
        return Err(AuthError::Malformed);
    }
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(AuthError::Malformed),
    };
    Ok(TokenHeader { alg, kid })
}

fn json_object(part: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(AuthError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    fn token(header: Value) -> String {
        format!("{}.{}.c2ln", b64(&header), b64(&json!({"sub": "u"})))
    }

    #[test]
    fn reads_alg_and_kid() {
        assert_eq!(
            inspect(&token(json!({"alg": "RS256", "kid": "k1", "typ": "JWT"}))),
            Ok(TokenHeader {
                alg: Algorithm::RS256,
                kid: Some("k1".into())
            })
        );
        assert_eq!(
            inspect(&token(json!({"alg": "EdDSA"}))),
            Ok(TokenHeader {
                alg: Algorithm::EdDSA,
                kid: None
            })
        );
    }

    #[test]
    fn none_and_unknown_algorithms_are_wrong_algorithm() {
        for alg in ["none", "None", "NONE", "HS1", "rs256", ""] {
            assert_eq!(
                inspect(&token(json!({ "alg": alg }))),
                Err(AuthError::WrongAlgorithm),
                "{alg}"
            );
        }
    }

    #[test]
    fn bad_shapes_are_malformed() {
        let good = token(json!({"alg": "HS256"}));
        let payload = b64(&json!({"sub": "u"}));
        let cases = [
            String::new(),
            "abc".into(),
            "a.b".into(),
            format!("{good}.extra"),
            format!("!!!.{payload}.c2ln"),
            format!("{}.{payload}.c2ln", URL_SAFE_NO_PAD.encode("not json")),
            format!("{}.{payload}.c2ln", b64(&json!(["alg", "HS256"]))),
            format!("{}.{payload}.c2ln", b64(&json!({"typ": "JWT"}))),
            format!("{}.{payload}.c2ln", b64(&json!({"alg": 256}))),
            format!("{}.{payload}.c2ln", b64(&json!({"alg": "HS256", "kid": 7}))),
            format!(
                "{}.{payload}.c2ln",
                b64(&json!({"alg": "HS256", "crit": ["exp"]}))
            ),
            format!(
                "{}.{payload}.c2ln",
                b64(&json!({"alg": "HS256", "crit": []}))
            ),
            good.replace(&payload, "e30="),
            good.replace(&payload, &URL_SAFE_NO_PAD.encode("[]")),
            good.replace("c2ln", "*sig*"),
            format!("{}.{payload}.c2ln", "a".repeat(MAX_TOKEN_LEN)),
        ];
        for case in cases {
            assert_eq!(inspect(&case), Err(AuthError::Malformed), "{case:.60}");
        }
        assert!(inspect(&good).is_ok());
    }
}
