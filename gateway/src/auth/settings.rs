//! How tokens are verified: the trusted keys, issuer, audience, job claim and clock leeway.

use std::fmt;
use std::time::Duration;

use super::spec::KeySpec;

/// The job claim's name unless configured otherwise (Capgo's name for it).
pub const DEFAULT_JOB_CLAIM: &str = "job_id";

/// Clock skew tolerated on `exp`, `nbf` and `iat` unless configured otherwise.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Token verification settings, turned into an [`Authenticator`](super::Authenticator) once
/// at startup.
///
/// `Debug` redacts the secret so the settings can be logged.
#[derive(Clone)]
pub struct AuthSettings {
    /// Verifies HS256, HS384 and HS512 tokens.
    pub hmac_secret: Option<Vec<u8>>,
    /// Public keys for the asymmetric algorithms, selected by `kid`.
    pub keys: Vec<KeySpec>,
    pub issuer: String,
    pub audience: String,
    /// Name of the claim that holds the job id.
    pub job_claim: String,
    pub leeway: Duration,
}

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field(
                "hmac_secret",
                &self.hmac_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("keys", &self.keys)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("job_claim", &self.job_claim)
            .field("leeway", &self.leeway)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_secret() {
        let settings = AuthSettings {
            hmac_secret: Some(b"hunter2-very-secret".to_vec()),
            keys: Vec::new(),
            issuer: "capgo".into(),
            audience: "build-logs".into(),
            job_claim: DEFAULT_JOB_CLAIM.into(),
            leeway: DEFAULT_LEEWAY,
        };
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        // Nor as the byte list a derived Debug would print.
        assert!(!debug.contains("104, 117"), "{debug}");
        assert!(
            debug.contains("hmac_secret: Some(\"<redacted>\")"),
            "{debug}"
        );
        assert!(debug.contains("issuer: \"capgo\""), "{debug}");
    }
}
