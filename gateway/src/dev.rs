//! `serve --dev`: ready-to-paste commands with valid tokens for a sample job.

use std::net::SocketAddr;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use crate::auth::{job_claims, Minter};
use crate::config::Config;

/// The sample job of the printed commands.
pub const DEV_JOB: &str = "demo";

/// The banner printed at start in dev mode, or `None` without an HMAC secret.
pub fn banner(addr: SocketAddr, config: &Config) -> Option<String> {
    let secret = config.auth.hmac_secret.as_ref()?;
    let minter = Minter::hmac(secret, Algorithm::HS256).ok()?;
    let a = &config.auth;
    let ttl = Duration::from_secs(4 * 3600);
    let mint = |publish| {
        minter
            .mint(&job_claims(
                &a.issuer,
                &a.audience,
                "dev",
                &a.job_claim,
                DEV_JOB,
                ttl,
                publish,
            ))
            .ok()
    };
    let (publish, read) = (mint(true)?, mint(false)?);
    let base = format!("http://{addr}/v1/jobs/{DEV_JOB}");
    Some(format!(
        "\ntailgate dev mode: secret {secret}, issuer {iss}, audience {aud}\n\n\
         # follow the sample job (leave it running):\n\
         curl -N -H 'Authorization: Bearer {read}' {base}/logs\n\n\
         # or watch it in a browser:\n\
         {base}/view#token={read}\n\n\
         # publish a few lines, then finish the job:\n\
         printf 'hello\\nfrom tailgate\\n' | curl -sS -H 'Authorization: Bearer {publish}' -H 'Content-Type: text/plain' --data-binary @- {base}/logs\n\
         curl -sS -H 'Authorization: Bearer {publish}' -H 'Content-Type: application/json' -d '{{\"status\":\"succeeded\",\"exit_code\":0}}' {base}/status\n",
        secret = String::from_utf8_lossy(secret),
        iss = a.issuer,
        aud = a.audience,
    ))
}
