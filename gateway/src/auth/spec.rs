//! `--jwt-key` specs: `kid=K,alg=RS256,file=pub.pem`, parsed and printed.
//!
//! Only asymmetric algorithms name a key file; HMAC uses the shared secret.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use jsonwebtoken::Algorithm;

/// One public verifying key: `kid=K,alg=RS256,file=pub.pem` (`kid` optional).
///
/// Several specs at once allow key rotation: tokens pick theirs by `kid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub file: PathBuf,
}

/// Algorithms a key file may be configured for, as spelled in a spec.
const PUBLIC_KEY_ALGS: [(&str, Algorithm); 9] = [
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

impl FromStr for KeySpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut kid = None;
        let mut alg = None;
        let mut file = None;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, value)) = part.split_once('=') else {
                return Err(format!(
                    "key spec part `{part}` is not name=value (expected kid=K,alg=RS256,file=pub.pem)"
                ));
            };
            let (name, value) = (name.trim(), value.trim());
            if value.is_empty() {
                return Err(format!("key spec `{name}` is empty"));
            }
            let slot_taken = match name {
                "kid" => kid.replace(value.to_owned()).is_some(),
                "alg" => alg.replace(parse_alg(value)?).is_some(),
                "file" => file.replace(PathBuf::from(value)).is_some(),
                other => {
                    return Err(format!(
                        "unknown key spec field `{other}` (expected kid, alg or file)"
                    ))
                }
            };
            if slot_taken {
                return Err(format!("key spec field `{name}` is given twice"));
            }
        }
        let alg = alg.ok_or("key spec needs alg= (e.g. alg=RS256)")?;
        let file = file.ok_or("key spec needs file= (a PEM public key)")?;
        Ok(Self { kid, alg, file })
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(kid) = &self.kid {
            write!(f, "kid={kid},")?;
        }
        write!(f, "alg={},file={}", alg_name(self.alg), self.file.display())
    }
}

fn parse_alg(value: &str) -> Result<Algorithm, String> {
    if let Some((_, alg)) = PUBLIC_KEY_ALGS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value))
    {
        return Ok(*alg);
    }
    let names: Vec<&str> = PUBLIC_KEY_ALGS.iter().map(|(name, _)| *name).collect();
    if value.len() == 5 && value[..2].eq_ignore_ascii_case("HS") {
        return Err(format!(
            "alg {value} uses the shared secret (--jwt-secret), not a key file; key files take one of {}",
            names.join(", ")
        ));
    }
    Err(format!(
        "unsupported key alg `{value}`: expected one of {}",
        names.join(", ")
    ))
}

/// The JOSE name of `alg`, for messages and `Display`.
pub(crate) fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::EdDSA => "EdDSA",
        other => PUBLIC_KEY_ALGS
            .iter()
            .find(|(_, a)| *a == other)
            .map_or("unknown", |(name, _)| name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_and_minimal_specs() {
        assert_eq!(
            "kid=2024-a,alg=RS256,file=/etc/tailgate/a.pem".parse::<KeySpec>(),
            Ok(KeySpec {
                kid: Some("2024-a".into()),
                alg: Algorithm::RS256,
                file: "/etc/tailgate/a.pem".into(),
            })
        );
        assert_eq!(
            " file=ed.pem , alg=eddsa ".parse::<KeySpec>(),
            Ok(KeySpec {
                kid: None,
                alg: Algorithm::EdDSA,
                file: "ed.pem".into(),
            })
        );
        for (name, alg) in PUBLIC_KEY_ALGS {
            let parsed = format!("alg={name},file=k.pem").parse::<KeySpec>();
            assert_eq!(parsed.map(|s| s.alg), Ok(alg));
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["kid=k1,alg=ES256,file=k.pem", "alg=PS512,file=/a/b.pem"] {
            let spec: Result<KeySpec, String> = text.parse();
            assert_eq!(spec.map(|s| s.to_string()).as_deref(), Ok(text));
        }
    }

    #[test]
    fn refuses_bad_specs_with_a_clear_message() {
        let cases = [
            ("alg=RS256", "needs file="),
            ("kid=a,file=a.pem", "needs alg="),
            (
                "alg=RS256,file=a.pem,color=red",
                "unknown key spec field `color`",
            ),
            ("alg=RS256,file=a.pem,file=b.pem", "`file` is given twice"),
            ("alg=XS256,file=a.pem", "unsupported key alg `XS256`"),
            ("alg=none,file=a.pem", "unsupported key alg `none`"),
            ("alg=HS256,file=a.pem", "uses the shared secret"),
            ("alg=RS256,file=", "`file` is empty"),
            ("RS256,a.pem", "is not name=value"),
        ];
        for (text, expected) in cases {
            match text.parse::<KeySpec>() {
                Ok(spec) => panic!("{text} parsed as {spec:?}"),
                Err(msg) => assert!(msg.contains(expected), "{text}: {msg}"),
            }
        }
    }
}
