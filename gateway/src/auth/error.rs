//! Why a token was refused, and how each refusal looks on the wire (status, code, metric label).
//!
//! Messages describe the token's fault in one sentence; they never quote the token or a key.

use http::{HeaderValue, StatusCode};
use jsonwebtoken::errors::{Error as JwtError, ErrorKind};

/// Why a request's token does not allow what it asked for.
///
/// Callers branch on it to build the `401`/`403` response and count refusals by [`reason`].
///
/// [`reason`]: AuthError::reason
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token was given")]
    Missing,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token signature does not verify")]
    BadSignature,
    #[error("the token was issued by an issuer this gateway does not trust")]
    WrongIssuer,
    #[error("the token is meant for another audience")]
    WrongAudience,
    /// A required claim is absent, empty or of the wrong type; holds the claim's name.
    #[error("the token lacks the required claim {0}")]
    MissingClaim(String),
    #[error("the token names a signing key this gateway does not know")]
    UnknownKey,
    /// No `kid`, and the JWKS holds several keys of the token's algorithm.
    #[error("the token must name its signing key (kid): several keys share its algorithm")]
    MissingKid,
    #[error("the token is signed with an algorithm this gateway does not accept")]
    WrongAlgorithm,
    #[error("the token is for another job")]
    WrongJob,
    #[error("the token does not allow publishing to this job")]
    MissingScope,
}

impl AuthError {
    /// `401` when the token itself is not acceptable, `403` when it is valid but not for this.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::WrongJob | Self::MissingScope => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The `error` code of the JSON body (and of `WWW-Authenticate` for 401s).
    pub fn code(&self) -> &'static str {
        match self {
            Self::WrongJob => "forbidden",
            Self::MissingScope => "insufficient_scope",
            _ => "invalid_token",
        }
    }

    /// A short snake_case label, fixed per variant, for refusal metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadSignature => "bad_signature",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::MissingClaim(_) => "missing_claim",
            Self::UnknownKey => "unknown_key",
            Self::MissingKid => "missing_kid",
            Self::WrongAlgorithm => "wrong_algorithm",
            Self::WrongJob => "wrong_job",
            Self::MissingScope => "missing_scope",
        }
    }

    /// The `WWW-Authenticate` value RFC 6750 asks for on a 401; `None` for 403s.
    ///
    /// Quotes and backslashes (only possible through a configured claim name) are dropped
    /// so the quoted-string stays well formed.
    pub fn www_authenticate(&self) -> Option<HeaderValue> {
        if self.status() != StatusCode::UNAUTHORIZED {
            return None;
        }
        let description: String = self
            .to_string()
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && (' '..='~').contains(c))
            .collect();
        let value = format!(
            "Bearer error=\"{}\", error_description=\"{description}\"",
            self.code()
        );
        HeaderValue::from_str(&value).ok()
    }

    /// Maps a `jsonwebtoken` failure from signature or registered-claim checks to ours.
    pub(crate) fn from_jwt(err: &JwtError) -> Self {
        match err.kind() {
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::Provider(_) => Self::BadSignature,
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidIssuer => Self::WrongIssuer,
            ErrorKind::InvalidAudience => Self::WrongAudience,
            ErrorKind::MissingRequiredClaim(claim) => Self::MissingClaim(claim.clone()),
            ErrorKind::InvalidAlgorithm
            | ErrorKind::MissingAlgorithm
            | ErrorKind::InvalidAlgorithmName => Self::WrongAlgorithm,
            // InvalidToken, InvalidClaimFormat, Base64, Json, Utf8 and anything added later.
            _ => Self::Malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [AuthError; 13] = [
        AuthError::Missing,
        AuthError::Malformed,
        AuthError::Expired,
        AuthError::NotYetValid,
        AuthError::BadSignature,
        AuthError::WrongIssuer,
        AuthError::WrongAudience,
        AuthError::MissingClaim(String::new()),
        AuthError::UnknownKey,
        AuthError::MissingKid,
        AuthError::WrongAlgorithm,
        AuthError::WrongJob,
        AuthError::MissingScope,
    ];

    #[test]
    fn only_wrong_job_and_missing_scope_are_403() {
        for err in ALL {
            let forbidden = matches!(err, AuthError::WrongJob | AuthError::MissingScope);
            let expected = if forbidden {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNAUTHORIZED
            };
            assert_eq!(err.status(), expected, "{err:?}");
            assert_eq!(err.code() == "invalid_token", !forbidden, "{err:?}");
            assert_eq!(err.www_authenticate().is_some(), !forbidden, "{err:?}");
        }
        assert_eq!(AuthError::WrongJob.code(), "forbidden");
        assert_eq!(AuthError::MissingScope.code(), "insufficient_scope");
    }

    #[test]
    fn reasons_are_distinct_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for err in ALL {
            let reason = err.reason();
            assert!(
                reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{reason}"
            );
            assert!(seen.insert(reason), "duplicate reason {reason}");
        }
    }

    #[test]
    fn www_authenticate_is_rfc6750_shaped() {
        let value = AuthError::Expired.www_authenticate().map(|v| v.to_owned());
        assert_eq!(
            value.as_ref().and_then(|v| v.to_str().ok()),
            Some(r#"Bearer error="invalid_token", error_description="the token has expired""#)
        );
        let odd = AuthError::MissingClaim("a\"b\\c\u{e9}".into()).www_authenticate();
        let odd = odd.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(odd.ends_with("claim abc\""), "{odd}");
    }

    #[test]
    fn jwt_errors_map_precisely() {
        let cases = [
            (ErrorKind::InvalidSignature, AuthError::BadSignature),
            (ErrorKind::ExpiredSignature, AuthError::Expired),
            (ErrorKind::ImmatureSignature, AuthError::NotYetValid),
            (ErrorKind::InvalidIssuer, AuthError::WrongIssuer),
            (ErrorKind::InvalidAudience, AuthError::WrongAudience),
            (ErrorKind::InvalidAlgorithm, AuthError::WrongAlgorithm),
            (ErrorKind::InvalidToken, AuthError::Malformed),
            (
                ErrorKind::InvalidClaimFormat("exp".into()),
                AuthError::Malformed,
            ),
            (
                ErrorKind::MissingRequiredClaim("aud".into()),
                AuthError::MissingClaim("aud".into()),
            ),
        ];
        for (kind, expected) in cases {
            assert_eq!(AuthError::from_jwt(&JwtError::from(kind)), expected);
        }
    }
}
