//! Job-scoped JWTs: where a token comes from, which keys verify it, what it allows.
//!
//! - `extract`: the token from a request; `verify`: the [`Authenticator`];
//!   `spec`/`keys`: `--jwt-key` specs, loading keys, `kid`/`alg` selection;
//!   `claims`: [`JobClaims`], [`Access`]; `error`: [`AuthError`]; `mint`: the issuer side;
//!   `jwks`: keys from the issuer's JWKS document, refreshed.

mod claims;
mod error;
mod extract;
mod jwks;
mod keys;
mod mint;
mod settings;
mod spec;
mod verify;

#[cfg(test)]
mod tests;

pub use claims::{Access, JobClaims, PUBLISH_SCOPE};
pub use error::AuthError;
pub use extract::{token_from_request, CAPGO_TOKEN_HEADER, TOKEN_QUERY_PARAM};
pub(crate) use jwks::Jwks;
pub use jwks::{JwksError, JWKS_MIN_REFRESH};
pub use keys::KeyError;
pub use mint::{
    capgo_claims, job_claims, unix_now, MintError, Minter, CAPGO_AUDIENCE, CAPGO_ISSUER, CAPGO_TTL,
};
pub use settings::{AuthSettings, DEFAULT_JOB_CLAIM, DEFAULT_LEEWAY};
pub use spec::KeySpec;
pub use verify::{Authenticator, MAX_TOKEN_LEN};
