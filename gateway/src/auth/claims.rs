//! What a verified token says: subject, job, scopes, and what access they allow.
//!
//! `jsonwebtoken` checks the registered claims it knows (exp, nbf, iss, aud); this module
//! checks the rest (iat, sub, the job claim, scope) on the already signature-checked payload.

use serde_json::{Map, Value};

use super::error::AuthError;

/// What a request wants to do with its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Follow or fetch the log: any valid token for the job.
    Read,
    /// Append lines or set the status: needs the `publish` scope.
    Publish,
}

/// The scope that allows [`Access::Publish`].
pub const PUBLISH_SCOPE: &str = "publish";

/// The verified claims a request acts under, kept for spans and audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobClaims {
    pub sub: String,
    pub job: String,
    pub scopes: Vec<String>,
    /// Capgo's app id, when the issuer sends one.
    pub app_id: Option<String>,
    pub exp: u64,
}

impl JobClaims {
    /// Whether these claims allow `access`.
    pub fn allows(&self, access: Access) -> bool {
        match access {
            Access::Read => true,
            Access::Publish => self.scopes.iter().any(|s| s == PUBLISH_SCOPE),
        }
    }
}

/// What the caller expects of the claims beyond what `jsonwebtoken` checked.
pub(crate) struct ClaimRules<'a> {
    pub(crate) issuer: &'a str,
    pub(crate) job_claim: &'a str,
    pub(crate) job: &'a str,
    pub(crate) access: Access,
    pub(crate) now: u64,
    pub(crate) leeway: u64,
}

impl ClaimRules<'_> {
    /// Checks iss (a single string: `jsonwebtoken` also takes an array), iat, sub, the job
    /// claim and scope, in that order, and builds the claims.
    pub(crate) fn check(&self, claims: &Map<String, Value>) -> Result<JobClaims, AuthError> {
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer) {
            return Err(AuthError::WrongIssuer);
        }
        if let Some(iat) = claims.get("iat") {
            let iat = numeric_date(iat).ok_or(AuthError::Malformed)?;
            if iat > self.now.saturating_add(self.leeway) {
                return Err(AuthError::NotYetValid);
            }
        }
        let exp = claims
            .get("exp")
            .and_then(numeric_date)
            .ok_or_else(|| AuthError::MissingClaim("exp".into()))?;
        let sub = non_empty_str(claims, "sub")?;
        let job = non_empty_str(claims, self.job_claim)?;
        if job != self.job {
            return Err(AuthError::WrongJob);
        }
        let scopes = scopes(claims.get("scope"))?;
        let app_id = claims
            .get("app_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let claims = JobClaims {
            sub: sub.to_owned(),
            job: job.to_owned(),
            scopes,
            app_id,
            exp,
        };
        if claims.allows(self.access) {
            Ok(claims)
        } else {
            Err(AuthError::MissingScope)
        }
    }
}

/// A JWT NumericDate as whole seconds: a non-negative integer, or a float rounded as
/// `jsonwebtoken` does for `exp`.
fn numeric_date(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f.round() as u64)
    })
}

fn non_empty_str<'c>(claims: &'c Map<String, Value>, name: &str) -> Result<&'c str, AuthError> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AuthError::MissingClaim(name.to_owned()))
}

/// `scope` as a space-separated string (RFC 8693) or an array of strings; absent is none.
fn scopes(scope: Option<&Value>) -> Result<Vec<String>, AuthError> {
    match scope {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s.split_ascii_whitespace().map(str::to_owned).collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or(AuthError::Malformed))
            .collect(),
        Some(_) => Err(AuthError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn check(claims: Value, access: Access) -> Result<JobClaims, AuthError> {
        let rules = ClaimRules {
            issuer: "capgo",
            job_claim: "job_id",
            job: "job-1",
            access,
            now: NOW,
            leeway: 30,
        };
        match claims {
            Value::Object(map) => rules.check(&map),
            _ => Err(AuthError::Malformed),
        }
    }

    fn base() -> Value {
        json!({"iss": "capgo", "sub": "u1", "job_id": "job-1", "iat": NOW, "exp": NOW + 60})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut claims = base();
        claims[key] = value;
        claims
    }

    #[test]
    fn builds_claims_from_a_good_payload() {
        let claims = check(with("scope", json!("read publish")), Access::Publish);
        assert_eq!(
            claims,
            Ok(JobClaims {
                sub: "u1".into(),
                job: "job-1".into(),
                scopes: vec!["read".into(), "publish".into()],
                app_id: None,
                exp: NOW + 60,
            })
        );
    }

    #[test]
    fn scope_may_be_an_array() {
        let claims = check(with("scope", json!(["publish"])), Access::Publish);
        assert_eq!(claims.map(|c| c.scopes), Ok(vec!["publish".to_owned()]));
        assert_eq!(
            check(with("scope", json!([1])), Access::Read),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            check(with("scope", json!(7)), Access::Read),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn publish_needs_the_exact_scope_word() {
        for scope in ["publisher", "read", "", "PUBLISH"] {
            assert_eq!(
                check(with("scope", json!(scope)), Access::Publish),
                Err(AuthError::MissingScope),
                "{scope}"
            );
            assert!(check(with("scope", json!(scope)), Access::Read).is_ok());
        }
        assert_eq!(check(base(), Access::Publish), Err(AuthError::MissingScope));
    }

    #[test]
    fn iat_within_leeway_passes_beyond_fails() {
        assert!(check(with("iat", json!(NOW + 30)), Access::Read).is_ok());
        assert_eq!(
            check(with("iat", json!(NOW + 31)), Access::Read),
            Err(AuthError::NotYetValid)
        );
        assert_eq!(
            check(with("iat", json!("yesterday")), Access::Read),
            Err(AuthError::Malformed)
        );
        assert!(check(with("iat", json!(NOW as f64 - 0.4)), Access::Read).is_ok());
    }

    #[test]
    fn sub_and_job_must_be_non_empty_strings() {
        let missing = |name: &str| Err(AuthError::MissingClaim(name.into()));
        assert_eq!(check(with("sub", json!("")), Access::Read), missing("sub"));
        assert_eq!(check(with("sub", json!(42)), Access::Read), missing("sub"));
        assert_eq!(
            check(with("job_id", json!(null)), Access::Read),
            missing("job_id")
        );
        assert_eq!(
            check(with("job_id", json!("job-2")), Access::Read),
            Err(AuthError::WrongJob)
        );
    }

    #[test]
    fn iss_must_be_the_single_configured_string() {
        assert_eq!(
            check(with("iss", json!(["capgo"])), Access::Read),
            Err(AuthError::WrongIssuer)
        );
        assert_eq!(
            check(with("iss", json!("capgo2")), Access::Read),
            Err(AuthError::WrongIssuer)
        );
    }

    #[test]
    fn app_id_is_kept_when_a_string() {
        let claims = check(with("app_id", json!("com.example.app")), Access::Read);
        assert_eq!(
            claims.map(|c| c.app_id),
            Ok(Some("com.example.app".to_owned()))
        );
        let claims = check(with("app_id", json!(5)), Access::Read);
        assert_eq!(claims.map(|c| c.app_id), Ok(None));
    }
}
