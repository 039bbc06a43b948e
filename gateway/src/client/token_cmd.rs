//! `tailgate token mint|inspect`: mint job tokens (Tailgate's or exactly Capgo's shape) and
//! look inside one: header, claims, time to expiry, and with a key whether the gateway
//! would accept it for a job.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use clap::{Args, Subcommand};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::ENV_TOKEN;
use crate::auth::{
    capgo_claims, job_claims, unix_now, Access, AuthSettings, Authenticator, KeySpec, Minter,
    DEFAULT_JOB_CLAIM, DEFAULT_LEEWAY,
};
use crate::config::MIN_HMAC_SECRET_BYTES;
use crate::job_id::JobId;

/// Mint or inspect job tokens (JWTs).
#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Mint a token for one job and print it.
    Mint(MintArgs),
    /// Print a token's header and claims and its time to expiry; with a secret or key, check
    /// whether the gateway would accept it for its job. Exit 1 if it would not.
    Inspect(InspectArgs),
}

/// How the token is signed (mint) or verified (inspect).
#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// HMAC shared secret (HS256, HS384, HS512), as the gateway's --jwt-secret.
    #[arg(
        long,
        env = "TAILGATE_JWT_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub secret: Option<String>,
    /// Read the HMAC secret from a file (one trailing newline is dropped); wins over --secret.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// PEM key file instead of a secret (wins over both): the private key to mint, the
    /// public key to inspect. Needs --alg.
    #[arg(long, value_name = "PEM", requires = "alg")]
    pub key: Option<PathBuf>,
    /// Algorithm: HS256 (default with a secret), HS384, HS512, RS256/384/512, PS256/384/512,
    /// ES256, ES384 or EdDSA.
    #[arg(long, value_name = "ALG")]
    pub alg: Option<String>,
}

/// `tailgate token mint`.
#[derive(Debug, Clone, Args)]
pub struct MintArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    /// `iss` claim: the issuer the gateway requires (its --jwt-issuer).
    #[arg(
        long,
        env = "TAILGATE_JWT_ISSUER",
        hide_env_values = true,
        required_unless_present = "capgo"
    )]
    pub issuer: Option<String>,
    /// `aud` claim: the audience the gateway requires (its --jwt-audience).
    #[arg(
        long,
        env = "TAILGATE_JWT_AUDIENCE",
        hide_env_values = true,
        required_unless_present = "capgo"
    )]
    pub audience: Option<String>,
    /// `sub` claim: who the token is for (a user or worker id).
    #[arg(long, value_name = "SUBJECT")]
    pub sub: String,
    /// The job the token is for (the job claim).
    #[arg(long, value_name = "JOB")]
    pub job: String,
    /// Name of the job claim (the gateway's --jwt-job-claim).
    #[arg(long, default_value = DEFAULT_JOB_CLAIM, value_name = "NAME")]
    pub job_claim: String,
    /// `scope` claim, space-separated: `publish` lets the token publish; without it the
    /// token may only read.
    #[arg(long, value_name = "SCOPE")]
    pub scope: Option<String>,
    /// Lifetime: `exp` = `iat` + TTL (e.g. `15m`, `4h`).
    #[arg(long, default_value = "4h", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Extra claim `NAME=VALUE`, repeatable; VALUE is taken as JSON when it parses as JSON
    /// (`n=3`, `tags=["a"]`), else as a string. Overrides the claims above.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    pub claims: Vec<String>,
    /// `kid` header, which selects the verifying key on the gateway (key rotation). Use it
    /// with --key: the gateway refuses an HMAC token that names a kid (its secret has none).
    #[arg(long, value_name = "KID")]
    pub kid: Option<String>,
    /// Mint exactly Capgo's `logs_token` shape: HS256, `iss: "capgo"`, `aud: "build-logs"`,
    /// `sub`, `job_id`, `app_id`, `iat`, `exp` = `iat` + 4 h, no scope. --issuer, --audience,
    /// --ttl and --job-claim are ignored.
    #[arg(long, requires = "app_id", conflicts_with_all = ["scope", "claims", "key"])]
    pub capgo: bool,
    /// With --capgo: the `app_id` claim.
    #[arg(long, value_name = "APP")]
    pub app_id: Option<String>,
}

/// `tailgate token inspect`.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// The token; `-` reads it from stdin.
    #[arg(env = ENV_TOKEN, hide_env_values = true, value_name = "TOKEN")]
    pub token: String,
    #[command(flatten)]
    pub key: KeyArgs,
    /// The issuer the gateway requires [default: the token's own `iss`].
    #[arg(long, value_name = "ISS")]
    pub issuer: Option<String>,
    /// The audience the gateway requires [default: the token's own `aud`].
    #[arg(long, value_name = "AUD")]
    pub audience: Option<String>,
    /// The job to check access to [default: the token's job claim].
    #[arg(long, value_name = "JOB")]
    pub job: Option<String>,
    /// Name of the job claim (the gateway's --jwt-job-claim).
    #[arg(long, default_value = DEFAULT_JOB_CLAIM, value_name = "NAME")]
    pub job_claim: String,
}

/// Runs `tailgate token ...`.
pub fn run(command: TokenCommand) -> ExitCode {
    let result = match command {
        TokenCommand::Mint(args) => mint(&args).map(|token| {
            println!("{token}");
            true
        }),
        TokenCommand::Inspect(args) => inspect(&args).map(|(report, ok)| {
            print!("{report}");
            ok
        }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("tailgate: {message}");
            ExitCode::from(super::exit::EXIT_USAGE)
        }
    }
}

/// Mints the token `args` describe.
pub fn mint(args: &MintArgs) -> Result<String, String> {
    let mut claims = if args.capgo {
        capgo_claims(
            &args.sub,
            &args.job,
            args.app_id.as_deref().unwrap_or_default(),
        )
    } else {
        let scopes: Vec<&str> = args
            .scope
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let mut claims = job_claims(
            args.issuer.as_deref().unwrap_or_default(),
            args.audience.as_deref().unwrap_or_default(),
            &args.sub,
            &args.job_claim,
            &args.job,
            args.ttl,
            false,
        );
        if !scopes.is_empty() {
            claims["scope"] = scopes.join(" ").into();
        }
        claims
    };
    for claim in &args.claims {
        let (name, value) = claim
            .split_once('=')
            .ok_or_else(|| format!("--claim {claim:?} is not NAME=VALUE"))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        claims[name] = value;
    }
    let alg = if args.capgo {
        Algorithm::HS256
    } else {
        parse_alg(args.key.alg.as_deref(), args.key.key.is_some())?
    };
    let minter = match &args.key.key {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("--key {}: {e}", path.display()))?;
            Minter::from_pem(&pem, alg).map_err(|e| format!("--key {}: {e}", path.display()))?
        }
        None => {
            let secret = secret(&args.key)?;
            if secret.len() < MIN_HMAC_SECRET_BYTES {
                eprintln!(
                    "tailgate: warning: the secret is {} bytes; a gateway refuses HMAC secrets \
                     shorter than {MIN_HMAC_SECRET_BYTES} bytes (RFC 7518 section 3.2) unless \
                     started with --jwt-allow-short-secret",
                    secret.len()
                );
            }
            Minter::hmac(&secret, alg).map_err(|e| e.to_string())?
        }
    };
    let minter = match &args.kid {
        Some(kid) => minter.with_kid(kid),
        None => minter,
    };
    minter.mint(&claims).map_err(|e| e.to_string())
}

/// The inspection report and whether the token passed (or was only decoded).
pub fn inspect(args: &InspectArgs) -> Result<(String, bool), String> {
    let token = if args.token == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("reading the token from stdin: {e}"))?;
        s
    } else {
        args.token.clone()
    };
    let token = token.trim();
    let (header, claims) = decode_parts(token)?;
    let mut out = String::new();
    out.push_str(&format!("header: {}\n", pretty(&header)));
    out.push_str(&format!(
        "claims: {}\n",
        pretty(&Value::Object(claims.clone()))
    ));
    let now = unix_now();
    match claims.get("exp").and_then(Value::as_u64) {
        Some(exp) if exp > now => out.push_str(&format!(
            "expires: in {} ({})\n",
            humantime::format_duration(Duration::from_secs(exp - now)),
            at(exp)
        )),
        Some(exp) => out.push_str(&format!(
            "expires: expired {} ago ({})\n",
            humantime::format_duration(Duration::from_secs(now - exp)),
            at(exp)
        )),
        None => out.push_str("expires: never (no exp claim: the gateway refuses it)\n"),
    }
    let has_key =
        args.key.secret.is_some() || args.key.secret_file.is_some() || args.key.key.is_some();
    if !has_key {
        out.push_str("signature: not checked (give --secret or --key to verify)\n");
        return Ok((out, true));
    }
    let settings = settings_for(args, &header, &claims)?;
    let auth = Authenticator::new(&settings).map_err(|e| e.to_string())?;
    let job_name = match &args.job {
        Some(j) => j.clone(),
        None => claims
            .get(&args.job_claim)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the token has no {} claim; give --job", args.job_claim))?
            .to_string(),
    };
    let job = JobId::parse(&job_name).map_err(|e| format!("job {job_name:?}: {e}"))?;
    let read = auth.verify(token, &job, Access::Read);
    let publish = auth.verify(token, &job, Access::Publish);
    out.push_str(&format!(
        "gateway: iss {:?}, aud {:?}, job claim {:?}\n",
        settings.issuer, settings.audience, settings.job_claim
    ));
    match (&read, &publish) {
        (Ok(_), Ok(_)) => out.push_str(&format!(
            "verdict: accepted for job {job}: read and publish\n"
        )),
        (Ok(_), Err(e)) => out.push_str(&format!(
            "verdict: accepted for job {job}: read only ({e})\n"
        )),
        (Err(e), _) => out.push_str(&format!("verdict: rejected for job {job}: {e}\n")),
    }
    Ok((out, read.is_ok()))
}

/// Verification settings: the given key, and the given iss/aud or the token's own.
fn settings_for(
    args: &InspectArgs,
    header: &Value,
    claims: &Map<String, Value>,
) -> Result<AuthSettings, String> {
    let token_alg = header["alg"].as_str().unwrap_or("HS256");
    let (hmac_secret, keys) = match &args.key.key {
        Some(file) => {
            let alg = parse_alg(args.key.alg.as_deref().or(Some(token_alg)), true)?;
            let spec = KeySpec {
                kid: header["kid"].as_str().map(str::to_string),
                alg,
                file: file.clone(),
            };
            (None, vec![spec])
        }
        None => (Some(secret(&args.key)?), Vec::new()),
    };
    let own_aud = match claims.get("aud") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a.first().and_then(Value::as_str).unwrap_or("").to_string(),
        _ => String::new(),
    };
    Ok(AuthSettings {
        hmac_secret,
        keys,
        issuer: args.issuer.clone().unwrap_or_else(|| {
            claims
                .get("iss")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        }),
        audience: args.audience.clone().unwrap_or(own_aud),
        job_claim: args.job_claim.clone(),
        leeway: DEFAULT_LEEWAY,
    })
}

fn secret(key: &KeyArgs) -> Result<Vec<u8>, String> {
    let Some(path) = &key.secret_file else {
        return key
            .secret
            .as_ref()
            .map(|s| s.as_bytes().to_vec())
            .ok_or_else(|| {
                "give --secret, --secret-file or --key (or set TAILGATE_JWT_SECRET)".to_string()
            });
    };
    let mut bytes =
        std::fs::read(path).map_err(|e| format!("--secret-file {}: {e}", path.display()))?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(format!("--secret-file {} is empty", path.display()));
    }
    Ok(bytes)
}

fn parse_alg(alg: Option<&str>, with_key: bool) -> Result<Algorithm, String> {
    match alg {
        None if !with_key => Ok(Algorithm::HS256),
        None => Err("--key needs --alg".into()),
        Some(a) => Algorithm::from_str(a).map_err(|_| {
            format!("--alg {a:?}: expected HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA")
        }),
    }
}

/// The header and claims of a JWT, without verifying anything.
fn decode_parts(token: &str) -> Result<(Value, Map<String, Value>), String> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWT: expected three dot-separated parts".into());
    };
    let decode = |part: &str, what: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .map_err(|e| format!("the {what} is not base64url: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("the {what} is not JSON: {e}"))
    };
    let header = decode(h, "header")?;
    match decode(c, "payload")? {
        Value::Object(claims) => Ok((header, claims)),
        _ => Err("the payload is not a JSON object".into()),
    }
}

/// Unix seconds as RFC 3339.
fn at(secs: u64) -> String {
    crate::record::rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        cmd: TokenCommand,
    }

    fn parse(args: &[&str]) -> TokenCommand {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"))
            .cmd
    }

    #[test]
    fn minted_tokens_inspect_as_accepted() {
        let TokenCommand::Mint(m) = parse(&[
            "mint",
            "--secret",
            "s3",
            "--issuer",
            "i",
            "--audience",
            "a",
            "--sub",
            "u",
            "--job",
            "j1",
            "--scope",
            "publish",
            "--claim",
            "n=3",
            "--claim",
            "note=hi there",
            "--ttl",
            "1h",
        ]) else {
            panic!("mint")
        };
        let token = mint(&m).unwrap();
        let (_, claims) = decode_parts(&token).unwrap();
        assert_eq!(claims["n"], 3);
        assert_eq!(claims["note"], "hi there");
        assert_eq!(claims["scope"], "publish");
        let exp = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
        assert_eq!(exp, 3600);
        let TokenCommand::Inspect(i) = parse(&["inspect", &token, "--secret", "s3"]) else {
            panic!("inspect")
        };
        let (report, ok) = inspect(&i).unwrap();
        assert!(ok, "{report}");
        assert!(report.contains("read and publish"), "{report}");
        let TokenCommand::Inspect(i) = parse(&["inspect", &token, "--secret", "other"]) else {
            panic!("inspect")
        };
        let (report, ok) = inspect(&i).unwrap();
        assert!(!ok && report.contains("does not verify"), "{report}");
    }

    #[test]
    fn capgo_shape_is_exact() {
        let TokenCommand::Mint(m) = parse(&[
            "mint",
            "--capgo",
            "--secret",
            "s",
            "--sub",
            "user-1",
            "--job",
            "b-1",
            "--app-id",
            "com.example.app",
        ]) else {
            panic!("mint")
        };
        let (header, claims) = decode_parts(&mint(&m).unwrap()).unwrap();
        assert_eq!(header["alg"], "HS256");
        let mut names: Vec<&str> = claims.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["app_id", "aud", "exp", "iat", "iss", "job_id", "sub"]
        );
        assert_eq!(
            (claims["iss"].as_str(), claims["aud"].as_str()),
            (Some("capgo"), Some("build-logs"))
        );
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            4 * 3600
        );
    }
}
