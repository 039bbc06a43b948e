//! The server under test: its address, its routes, and (for Tailgate) the tokens it wants.
//! Readers and publishers ask this module for paths and headers, never build them.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use tailgate::auth::{job_claims, Minter};

use crate::cli::{Settings, Target};

/// Lifetime of minted tokens: longer than any bounded run.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Why the target could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("--url `{0}` is not an http://host:port[/path] URL")]
    BadUrl(String),
    #[error("--url host `{0}` does not resolve")]
    Resolve(String),
    #[error("--url `{0}` is not a loopback address; the load test only talks to loopback")]
    NotLoopback(SocketAddr),
    #[error("could not mint a token")]
    Mint(#[from] tailgate::auth::MintError),
}

/// Where and how to talk to the server.
#[derive(Clone)]
pub struct TargetClient {
    pub kind: Target,
    /// Resolved socket address of `--url`.
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Path prefix from `--url`, without a trailing slash.
    base_path: String,
    /// Where readers connect, round-robin: `--url`, then each `--reader-url` (address and
    /// `Host`). Every one serves the same path prefix as `--url`.
    readers: Vec<(SocketAddr, String)>,
    /// Signs read and publish tokens (tailgate only).
    minter: Option<Minter>,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for TargetClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetClient")
            .field("kind", &self.kind)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl TargetClient {
    pub fn new(settings: &Settings) -> Result<Self, TargetError> {
        let (addr, authority, path) = endpoint(&settings.url)?;
        let mut readers = vec![(addr, authority.clone())];
        for url in &settings.reader_urls {
            let (addr, authority, _) = endpoint(url)?;
            readers.push((addr, authority));
        }
        let minter = match settings.target {
            Target::Tailgate => Some(Minter::hmac(
                settings.jwt_secret.as_bytes(),
                jsonwebtoken::Algorithm::HS256,
            )?),
            Target::Nchan => None,
        };
        Ok(Self {
            kind: settings.target,
            addr,
            host: authority,
            base_path: path.trim_end_matches('/').to_string(),
            readers,
            minter,
            issuer: settings.jwt_issuer.clone(),
            audience: settings.jwt_audience.clone(),
        })
    }

    /// Where reader `index` connects: its address and `Host` header.
    pub fn reader_endpoint(&self, index: usize) -> (SocketAddr, &str) {
        let (addr, host) = &self.readers[index % self.readers.len()];
        (*addr, host)
    }

    /// Path of the reader's stream.
    pub fn read_path(&self, job: &str) -> String {
        match self.kind {
            Target::Tailgate => format!("{}/v1/jobs/{job}/logs", self.base_path),
            Target::Nchan => format!("{}/sub/{job}", self.base_path),
        }
    }

    /// Path lines are published to.
    pub fn publish_path(&self, job: &str) -> String {
        match self.kind {
            Target::Tailgate => format!("{}/v1/jobs/{job}/logs", self.base_path),
            Target::Nchan => format!("{}/pub/{job}", self.base_path),
        }
    }

    /// Path of the terminal status (tailgate only).
    pub fn status_path(&self, job: &str) -> String {
        format!("{}/v1/jobs/{job}/status", self.base_path)
    }

    /// `Authorization` header value for reader `reader` (`None` for nchan). Each reader is
    /// its own subject, as each viewer of a build is its own user, so the gateway's
    /// per-subject stream cap (`--max-streams-per-subject`) applies as in production.
    pub fn read_auth(&self, job: &str, reader: usize) -> Result<Option<String>, TargetError> {
        self.auth(job, &format!("tailgate-loadtest-reader-{reader}"), false)
    }

    /// `Authorization` header value for the publisher (`None` for nchan).
    pub fn publish_auth(&self, job: &str) -> Result<Option<String>, TargetError> {
        self.auth(job, "tailgate-loadtest", true)
    }

    fn auth(&self, job: &str, sub: &str, publish: bool) -> Result<Option<String>, TargetError> {
        let Some(minter) = &self.minter else {
            return Ok(None);
        };
        let claims = job_claims(
            &self.issuer,
            &self.audience,
            sub,
            "job_id",
            job,
            TOKEN_TTL,
            publish,
        );
        Ok(Some(format!("Bearer {}", minter.mint(&claims)?)))
    }
}

/// The loopback address, authority and path of an `http://host:port[/path]` URL.
fn endpoint(url: &str) -> Result<(SocketAddr, String, String), TargetError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| TargetError::BadUrl(url.to_string()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(TargetError::BadUrl(url.to_string()));
    }
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| TargetError::Resolve(authority.to_string()))?;
    if !addr.ip().is_loopback() {
        return Err(TargetError::NotLoopback(addr));
    }
    Ok((addr, authority.to_string(), path.to_string()))
}
