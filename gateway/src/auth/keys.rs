//! Verifying keys: loading PEM public keys at config time, and picking the keys a token may
//! be checked with from its header's `kid` and `alg`.
//!
//! A key is only ever used with the one algorithm it was configured for, so a token's `alg`
//! can never turn an RSA public key into an HMAC secret (algorithm confusion).

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use super::error::AuthError;
use super::spec::{alg_name, KeySpec};

/// Why the configured keys cannot be used; reported once at startup.
///
/// Messages name the file, never key material or the secret.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no token key configured: give a JWT secret or at least one public key")]
    NoKeys,
    #[error("the JWT secret is empty")]
    EmptySecret,
    #[error("cannot read key file {}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {} is not a valid {} PEM public key", file.display(), alg_name(*alg))]
    Parse {
        file: PathBuf,
        alg: Algorithm,
        #[source]
        source: Option<jsonwebtoken::errors::Error>,
    },
    #[error("key file {} holds a private key; give the gateway the public key only", file.display())]
    PrivateKey { file: PathBuf },
    #[error("key file {} is configured for {}, which needs the shared secret, not a key file", file.display(), alg_name(*alg))]
    NotPublicKeyAlg { file: PathBuf, alg: Algorithm },
    #[error("key id {kid} is configured twice")]
    DuplicateKid { kid: String },
}

/// A key bound to the single algorithm it verifies.
pub(crate) struct VerifyingKey {
    pub(crate) kid: Option<String>,
    pub(crate) alg: Algorithm,
    pub(crate) key: DecodingKey,
}

/// Every key the gateway verifies with: one entry per (key, algorithm) pair.
pub(crate) struct KeySet {
    /// The shared secret appears three times (HS256/384/512), each public key once.
    keys: Vec<VerifyingKey>,
}

impl KeySet {
    /// Loads and checks every key now, so a bad key file stops startup, not a request.
    pub(crate) fn load(secret: Option<&[u8]>, specs: &[KeySpec]) -> Result<Self, KeyError> {
        let mut keys = Vec::with_capacity(specs.len() + 3);
        if let Some(secret) = secret {
            if secret.is_empty() {
                return Err(KeyError::EmptySecret);
            }
            for &alg in AlgorithmFamily::Hmac.algorithms() {
                keys.push(VerifyingKey {
                    kid: None,
                    alg,
                    key: DecodingKey::from_secret(secret),
                });
            }
        }
        for spec in specs {
            if let Some(kid) = &spec.kid {
                if specs.iter().filter(|s| s.kid.as_ref() == Some(kid)).count() > 1 {
                    return Err(KeyError::DuplicateKid { kid: kid.clone() });
                }
            }
            let pem = std::fs::read(&spec.file).map_err(|source| KeyError::Read {
                file: spec.file.clone(),
                source,
            })?;
            keys.push(VerifyingKey {
                kid: spec.kid.clone(),
                alg: spec.alg,
                key: decode_public_pem(&pem, spec.alg, &spec.file)?,
            });
        }
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(Self { keys })
    }

    /// A set of keys already checked (a JWKS).
    pub(crate) fn from_keys(keys: Vec<VerifyingKey>) -> Self {
        Self { keys }
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The keys a token with this header may be verified with, in configured order.
    ///
    /// With a `kid`: exactly that key, and only if it is for `alg`. Without: every key for
    /// `alg`. Never empty on success.
    pub(crate) fn select(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<&VerifyingKey>, AuthError> {
        if let Some(kid) = kid {
            let key = self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or(AuthError::UnknownKey)?;
            return if key.alg == alg {
                Ok(vec![key])
            } else {
                Err(AuthError::WrongAlgorithm)
            };
        }
        let matching: Vec<&VerifyingKey> = self.keys.iter().filter(|k| k.alg == alg).collect();
        if matching.is_empty() {
            Err(AuthError::WrongAlgorithm)
        } else {
            Ok(matching)
        }
    }

    /// The algorithm of each key, in configured order (repeats included).
    pub(crate) fn algorithms(&self) -> impl Iterator<Item = Algorithm> + '_ {
        self.keys.iter().map(|k| k.alg)
    }

    /// `(kid, alg)` of each key, for `Debug` and startup logs; no key material.
    pub(crate) fn describe(&self) -> Vec<(Option<&str>, &'static str)> {
        self.keys
            .iter()
            .map(|k| (k.kid.as_deref(), alg_name(k.alg)))
            .collect()
    }
}

/// Parses a PEM public key for `alg` and proves the crypto backend accepts it for `alg`.
fn decode_public_pem(pem: &[u8], alg: Algorithm, file: &Path) -> Result<DecodingKey, KeyError> {
    if pem
        .windows(b"PRIVATE KEY-----".len())
        .any(|w| w == b"PRIVATE KEY-----")
    {
        return Err(KeyError::PrivateKey {
            file: file.to_owned(),
        });
    }
    let parse_error = |source| KeyError::Parse {
        file: file.to_owned(),
        alg,
        source,
    };
    let key = match alg.family() {
        AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
        AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
        AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
        AlgorithmFamily::Hmac => {
            return Err(KeyError::NotPublicKeyAlg {
                file: file.to_owned(),
                alg,
            })
        }
    }
    .map_err(|e| parse_error(Some(e)))?;
    // Building a verifier checks the key against the algorithm (e.g. a P-384 key given as
    // ES256). A probe signature cannot verify, so only an error here means a bad key.
    jsonwebtoken::crypto::verify("AAAA", b"probe", &key, alg).map_err(|e| parse_error(Some(e)))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/auth/testdata")
            .join(name)
    }

    fn spec(kid: Option<&str>, alg: Algorithm, file: &str) -> KeySpec {
        KeySpec {
            kid: kid.map(str::to_owned),
            alg,
            file: testdata(file),
        }
    }

    #[test]
    fn loads_every_supported_key_kind() {
        let specs = [
            spec(Some("r"), Algorithm::RS256, "rsa_a.pub.pem"),
            spec(None, Algorithm::PS256, "rsa_b.pub.pem"),
            spec(None, Algorithm::ES256, "ec_p256.pub.pem"),
            spec(None, Algorithm::ES384, "ec_p384.pub.pem"),
            spec(None, Algorithm::EdDSA, "ed25519.pub.pem"),
        ];
        let set = KeySet::load(Some(b"s3cret"), &specs);
        let described = set.as_ref().map(KeySet::describe).ok();
        assert_eq!(
            described,
            Some(vec![
                (None, "HS256"),
                (None, "HS384"),
                (None, "HS512"),
                (Some("r"), "RS256"),
                (None, "PS256"),
                (None, "ES256"),
                (None, "ES384"),
                (None, "EdDSA"),
            ])
        );
    }

    #[test]
    fn key_errors_name_the_file() {
        let err = |specs: &[KeySpec]| match KeySet::load(None, specs) {
            Ok(_) => String::from("loaded"),
            Err(e) => e.to_string(),
        };
        let missing = err(&[spec(None, Algorithm::RS256, "nope.pem")]);
        assert!(missing.starts_with("cannot read key file ") && missing.ends_with("nope.pem"));
        let wrong_kind = err(&[spec(None, Algorithm::RS256, "ec_p256.pub.pem")]);
        assert!(wrong_kind.contains("ec_p256.pub.pem is not a valid RS256 PEM public key"));
        let wrong_curve = err(&[spec(None, Algorithm::ES256, "ec_p384.pub.pem")]);
        assert!(wrong_curve.contains("ec_p384.pub.pem is not a valid ES256"));
        let not_pem = err(&[spec(None, Algorithm::EdDSA, "README.md")]);
        assert!(
            not_pem.contains("README.md is not a valid EdDSA"),
            "{not_pem}"
        );
        let private = err(&[spec(None, Algorithm::RS256, "rsa_a.key.pem")]);
        assert!(
            private.contains("rsa_a.key.pem holds a private key"),
            "{private}"
        );
        let hmac = err(&[spec(None, Algorithm::HS256, "rsa_a.pub.pem")]);
        assert!(hmac.contains("needs the shared secret"), "{hmac}");
        let dup = err(&[
            spec(Some("k"), Algorithm::RS256, "rsa_a.pub.pem"),
            spec(Some("k"), Algorithm::RS256, "rsa_b.pub.pem"),
        ]);
        assert_eq!(dup, "key id k is configured twice");
    }

    #[test]
    fn needs_a_non_empty_secret_or_a_key() {
        assert!(matches!(KeySet::load(None, &[]), Err(KeyError::NoKeys)));
        assert!(matches!(
            KeySet::load(Some(b""), &[]),
            Err(KeyError::EmptySecret)
        ));
    }

    #[test]
    fn select_binds_each_key_to_its_algorithm() {
        let specs = [
            spec(Some("a"), Algorithm::RS256, "rsa_a.pub.pem"),
            spec(None, Algorithm::RS256, "rsa_b.pub.pem"),
        ];
        let Ok(set) = KeySet::load(Some(b"s3cret"), &specs) else {
            panic!("test keys load");
        };
        let kids = |r: Result<Vec<&VerifyingKey>, AuthError>| {
            r.map(|ks| {
                ks.iter()
                    .map(|k| (k.kid.clone(), k.alg))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            kids(set.select(Some("a"), Algorithm::RS256)),
            Ok(vec![(Some("a".into()), Algorithm::RS256)])
        );
        assert_eq!(
            kids(set.select(None, Algorithm::RS256)),
            Ok(vec![
                (Some("a".into()), Algorithm::RS256),
                (None, Algorithm::RS256)
            ])
        );
        assert_eq!(
            kids(set.select(None, Algorithm::HS384)),
            Ok(vec![(None, Algorithm::HS384)])
        );
        assert_eq!(
            kids(set.select(Some("a"), Algorithm::HS256)),
            Err(AuthError::WrongAlgorithm)
        );
        assert_eq!(
            kids(set.select(Some("zz"), Algorithm::RS256)),
            Err(AuthError::UnknownKey)
        );
        assert_eq!(
            kids(set.select(None, Algorithm::ES256)),
            Err(AuthError::WrongAlgorithm)
        );
    }
}
