//! `serve --dev`: a shell-pasteable banner: the gateway's address, a fresh sample job,
//! tokens for it, and commands that use them, so every README example runs after it.

use std::net::SocketAddr;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use crate::auth::{job_claims, Minter};
use crate::config::Config;

/// The sample job's name before its per-start suffix.
pub const DEV_JOB_PREFIX: &str = "demo";

/// A sample job no earlier start used: a restart (or a durable store) never hands the
/// README's examples a job an earlier run already finished.
pub fn fresh_job() -> String {
    let suffix: u32 = rand::random();
    format!("{DEV_JOB_PREFIX}-{:06x}", suffix & 0xff_ffff)
}

/// The banner printed at start in dev mode, or `None` without an HMAC secret.
pub fn banner(addr: SocketAddr, config: &Config, job: &str) -> Option<String> {
    let secret = config.auth.hmac_secret.as_ref()?;
    let secret = std::str::from_utf8(secret).ok()?;
    let minter = Minter::hmac(secret.as_bytes(), Algorithm::HS256).ok()?;
    let a = &config.auth;
    let ttl = Duration::from_secs(4 * 3600);
    let mint = |publish| {
        let claims = job_claims(
            &a.issuer,
            &a.audience,
            "dev",
            &a.job_claim,
            job,
            ttl,
            publish,
        );
        minter.mint(&claims).ok()
    };
    let (publish, read) = (mint(true)?, mint(false)?);
    Some(format!(
        "\n# tailgate dev mode: paste these lines into a shell. Each start makes a new sample job;\n\
         # `serve --dev --jwt-secret S` (or TAILGATE_JWT_SECRET, exported below) keeps the secret.\n\
         export TAILGATE_URL=http://{addr} JOB={job}\n\
         export TAILGATE_JWT_SECRET={secret} TAILGATE_JWT_ISSUER={iss} TAILGATE_JWT_AUDIENCE={aud}\n\
         export PUB={publish} READ={read}\n\n\
         # follow the sample job (leave it running):\n\
         curl -N -H \"Authorization: Bearer $READ\" \"$TAILGATE_URL/v1/jobs/$JOB/logs\"\n\
         # or watch it in a browser:\n\
         #   http://{addr}/v1/jobs/{job}/view#token={read}\n\n\
         # publish a few lines (the job stays open: the README's examples go on with it):\n\
         printf 'hello\\nfrom tailgate\\n' | curl -sS --fail-with-body -H \"Authorization: Bearer $PUB\" -H 'Content-Type: text/plain' --data-binary @- \"$TAILGATE_URL/v1/jobs/$JOB/logs\"\n\
         # and finish it when you are done (a finished job refuses more lines with 409):\n\
         #   curl -sS --fail-with-body -H \"Authorization: Bearer $PUB\" -d '{{\"status\":\"succeeded\",\"exit_code\":0}}' \"$TAILGATE_URL/v1/jobs/$JOB/status\"\n\n\
         # a token for another job (the secret, issuer and audience come from the exports):\n\
         tailgate token mint --sub me --job build-1 --scope publish\n",
        secret = shell_word(secret),
        iss = shell_word(&a.issuer),
        aud = shell_word(&a.audience),
    ))
}

/// `s` as one `sh` word: as it is when that is safe, else in single quotes.
fn shell_word(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@%+=,".contains(&b));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_jobs_are_valid_and_differ() {
        let (a, b) = (fresh_job(), fresh_job());
        assert!(crate::job_id::JobId::parse(&a).is_ok(), "{a}");
        assert!(a.starts_with("demo-") && a.len() == 11, "{a}");
        // 24 random bits: a clash in two draws is one in 16 million.
        assert_ne!(a, b);
    }

    #[test]
    fn the_banner_is_shell_words_only() {
        let mut config = Config::new_hmac(b"0123abcd".repeat(8), "tailgate-dev", "tailgate-dev");
        config.dev = true;
        let addr = SocketAddr::from(([127, 0, 0, 1], 8080));
        let banner = banner(addr, &config, "demo-abc123").expect("banner");
        assert!(banner.contains("export TAILGATE_URL=http://127.0.0.1:8080 JOB=demo-abc123\n"));
        assert!(banner.contains("tailgate token mint --sub me"));
        config.auth.issuer = "it's mine".into();
        let banner = super::banner(addr, &config, "demo-abc123").expect("banner");
        assert!(
            banner.contains("TAILGATE_JWT_ISSUER='it'\\''s mine' "),
            "{banner}"
        );
    }
}
