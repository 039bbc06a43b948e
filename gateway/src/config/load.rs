//! Layering flags over `TAILGATE_*` environment over the TOML file over defaults.
//!
//! Each key has one name: `--keepalive-secs` is `TAILGATE_KEEPALIVE_SECS` and
//! `keepalive_secs` in the file. Environment is read through [`Env`] so tests pass a map.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;

use super::*;
use crate::auth::KeySpec;

/// Where environment variables come from.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// A fixed map, for tests.
#[derive(Debug, Default, Clone)]
pub struct MapEnv(pub HashMap<String, String>);

impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

/// `tailgate serve` flags. Each also reads `TAILGATE_<NAME>` and `<name>` in the file.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file; keys are the flag names with `_` for `-`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Development mode: random secret, issuer `tailgate-dev`, and printed example commands.
    #[arg(long)]
    pub dev: bool,
    /// Print the effective configuration as TOML (each key with its source, secrets
    /// redacted) and exit without binding.
    #[arg(long)]
    pub print_config: bool,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Shared secret for HS256/384/512 tokens.
    #[arg(long, value_name = "SECRET")]
    pub jwt_secret: Option<String>,
    /// File holding the shared secret (trailing newline ignored).
    #[arg(long, value_name = "FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Accept an HMAC secret shorter than 32 bytes (RFC 7518 section 3.2 requires at least
    /// the hash size: 32 bytes for HS256), e.g. to verify an existing issuer's tokens.
    #[arg(long)]
    pub jwt_allow_short_secret: bool,
    /// Required `iss` claim.
    #[arg(long, value_name = "ISS")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim (string, or an array containing it).
    #[arg(long, value_name = "AUD")]
    pub jwt_audience: Option<String>,
    /// Public key for RS256/ES256/EdDSA tokens: `kid=K,alg=RS256,file=pub.pem` (kid
    /// optional). Repeatable, for rotation; the environment separates entries with `;`.
    #[arg(long, value_name = "SPEC")]
    pub jwt_key: Vec<KeySpec>,
    /// Name of the claim that must equal the job in the path [default: job_id].
    #[arg(long, value_name = "NAME")]
    pub jwt_job_claim: Option<String>,
    /// Clock leeway for exp/nbf/iat, seconds [default: 30].
    #[arg(long, value_name = "SECS")]
    pub jwt_leeway_secs: Option<u64>,
    /// SSE keep-alive comment interval, seconds [default: 15].
    #[arg(long, value_name = "SECS")]
    pub keepalive_secs: Option<u64>,
    /// Drop a finished job's copy in memory this long after it finished, once nobody reads
    /// it; its spool stays (see `--disk-retention-secs`) and is read again on demand. With
    /// `--memory-only` the job is then gone. Seconds [default: 3600].
    #[arg(long, value_name = "SECS")]
    pub retention_secs: Option<u64>,
    /// Drop an unfinished job idle this long with nobody attached, seconds [default: 3600].
    #[arg(long, value_name = "SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Time given to uploads and responses on shutdown, seconds [default: 10].
    #[arg(long, value_name = "SECS")]
    pub drain_timeout_secs: Option<u64>,
    /// On SIGTERM, answer `/readyz` with 503 but keep serving this long before draining,
    /// so a load balancer stops sending traffic first, seconds [default: 0].
    #[arg(long, value_name = "SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// PEM certificate chain: serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN); SIGHUP reloads it.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Serve `/metrics`, `/healthz` and `/readyz` on this address instead of the main
    /// listener.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve `/metrics` on the main listener to anyone who asks (without `--metrics-listen`).
    /// Off: the main listener answers `/metrics` with 404, since job counts and traffic are
    /// not for every client [default: false].
    #[arg(long)]
    pub metrics_public: bool,
    /// JWKS document URL (`https://issuer/.well-known/jwks.json`): verification keys by `kid`.
    #[arg(long, value_name = "URL")]
    pub jwks_url: Option<String>,
    /// Accept an `http://` JWKS URL: anyone on the path could then swap the keys. For a
    /// sidecar on loopback or tests [default: false].
    #[arg(long)]
    pub jwks_allow_http: bool,
    /// JWKS document file, instead of `--jwks-url`.
    #[arg(long, value_name = "FILE")]
    pub jwks_file: Option<PathBuf>,
    /// Fetch the JWKS again this often, seconds [default: 300].
    #[arg(long, value_name = "SECS")]
    pub jwks_refresh_secs: Option<u64>,
    /// Time a client has to send its request headers, seconds [default: 10].
    #[arg(long, value_name = "SECS")]
    pub header_read_timeout_secs: Option<u64>,
    /// A job wakes its readers at most once per this window, ms; lines arriving inside it
    /// share one write per reader. A line after a quiet window goes out at once. The window
    /// scales with the job's readers: full at 1,000, a hundredth at 10
    /// (0: every line wakes every reader: most CPU under load) [default: 20].
    #[arg(long, value_name = "MS")]
    pub gather_ms: Option<u64>,
    /// Allowed CORS origin (`*` for any). Repeatable; the environment separates with `,`.
    #[arg(long, value_name = "ORIGIN")]
    pub cors_origin: Vec<String>,
    /// Open connections at most [default: 16384].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Jobs held at most [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_jobs: Option<usize>,
    /// Readers per job at most [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_subscribers_per_job: Option<usize>,
    /// Concurrent long-lived reads per token subject (`sub`): SSE streams, Capgo
    /// WebSockets, `?wait=` status requests and `/log` downloads; over it: 429 [default: 64].
    #[arg(long, value_name = "N")]
    pub max_streams_per_subject: Option<usize>,
    /// Concurrent uploads (publish requests) per token subject (`sub`), at most half of
    /// --max-connections; over it: 429 [default: 4096].
    #[arg(long, value_name = "N")]
    pub max_uploads_per_subject: Option<usize>,
    /// Longer plain-text lines are split, bytes [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub max_line_bytes: Option<usize>,
    /// Longer NDJSON records are refused, bytes [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub max_record_bytes: Option<usize>,
    /// Request header size limit, bytes [default: 16384].
    #[arg(long, value_name = "BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Records held in memory per job, bytes; the oldest are evicted (and read back from
    /// the spool when a reader needs them) [default: 4 MiB].
    #[arg(long, value_name = "BYTES")]
    pub job_memory_bytes: Option<usize>,
    /// Records held in memory by all jobs, bytes; uploads wait beyond it [default: 1 GiB].
    #[arg(long, value_name = "BYTES")]
    pub memory_budget_bytes: Option<usize>,
    /// Log text stored per job, bytes; later lines are counted, not stored [default: 512 MiB].
    #[arg(long, value_name = "BYTES")]
    pub max_log_bytes: Option<u64>,
    /// Bytes a subscriber writes per batch [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub batch_bytes: Option<usize>,
    /// `Content-Encoding` on SSE streams: `off`, or the codings offered in
    /// order of preference, from `zstd` and `gzip` [default: zstd,gzip].
    #[arg(long, value_name = "CODINGS")]
    pub compression: Option<String>,
    /// gzip level, 1 (fast) to 9 (small) [default: 3].
    #[arg(long, value_name = "N")]
    pub gzip_level: Option<u32>,
    /// zstd level, 1 (fast) to 19 (small) [default: 3].
    #[arg(long, value_name = "N")]
    pub zstd_level: Option<i32>,
    /// Serve Capgo's `logs_url` routes under `--capgo-prefix`: `true` or `false`
    /// [default: true].
    #[arg(long, value_name = "BOOL")]
    pub capgo_compat: Option<bool>,
    /// Path prefix of the Capgo routes [default: /build_logs_direct].
    #[arg(long, value_name = "PATH")]
    pub capgo_prefix: Option<String>,
    /// Log output: `pretty` or `json` [default: pretty].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Directory holding every job's spool, created 0700 [default: ./tailgate-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep jobs in memory only: a restart forgets them, a reader behind the ring gets a
    /// `gap`.
    #[arg(long)]
    pub memory_only: bool,
    /// When appended records are forced to disk: `interval`, `always` or `never` (the
    /// terminal status is always fsynced) [default: interval].
    #[arg(long, value_name = "MODE")]
    pub fsync: Option<String>,
    /// Period of `--fsync interval`, ms [default: 1000].
    #[arg(long, value_name = "MS")]
    pub fsync_interval_ms: Option<u64>,
    /// Delete a finished job's spool this long after it finished, seconds [default: 86400].
    #[arg(long, value_name = "SECS")]
    pub disk_retention_secs: Option<u64>,
    /// Size of the data directory at most, bytes; the oldest finished jobs are deleted
    /// first, and publishes get 507 when running jobs fill it [default: 10 GiB].
    #[arg(long, value_name = "BYTES")]
    pub max_disk_bytes: Option<u64>,
    /// A deleted job answers `410 job_expired` for this long, seconds [default: 604800].
    #[arg(long, value_name = "SECS")]
    pub tombstone_secs: Option<u64>,
    /// Share jobs with other instances through Redis: `redis://host:6379/0`, `rediss://`
    /// for TLS, `redis+cluster://` for Redis Cluster. Replaces the data directory.
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// The Redis URL names a Redis Cluster node.
    #[arg(long)]
    pub redis_cluster: bool,
    /// A Redis round trip at most before publishes answer 503, ms [default: 2000].
    #[arg(long, value_name = "MS")]
    pub redis_timeout_ms: Option<u64>,
    /// Acknowledge a publish only once this many Redis replicas have it (Redis `WAIT`),
    /// so it survives a failover to one of them [default: 0, no wait].
    #[arg(long, value_name = "N")]
    pub redis_wait_replicas: Option<u32>,
    /// Move finished logs to object storage: `s3://bucket/prefix` (or `file:///dir`).
    /// The gateway then serves them from there (see "Archive" in the README).
    #[arg(long, value_name = "URL")]
    pub archive_url: Option<String>,
    /// An S3-compatible endpoint (`http://` allowed), addressed path-style; unset, the
    /// standard AWS_ENDPOINT_URL, else AWS itself.
    #[arg(long, value_name = "URL")]
    pub archive_endpoint: Option<String>,
    /// A finished job's local copy stays this long after its terminal status (behind
    /// Redis it is archived within this time; the spool's after it), seconds [default: 2].
    #[arg(long, value_name = "SECS")]
    pub archive_quiet_secs: Option<u64>,
    /// Uploads to the archive at once, at most (about the cores a gateway may use)
    /// [default: 2].
    #[arg(long, value_name = "N")]
    pub archive_uploads: Option<usize>,
    /// zstd level of archived logs, 1 to 19: higher is smaller and slower to archive
    /// [default: 3].
    #[arg(long, value_name = "LEVEL")]
    pub archive_zstd_level: Option<i32>,
    /// A running job whose publisher has been gone this long becomes `lost`, seconds
    /// [default: 600].
    #[arg(long, value_name = "SECS")]
    pub publisher_grace_secs: Option<u64>,
    /// A queued job nobody published to for this long becomes `expired`, seconds
    /// [default: 3600].
    #[arg(long, value_name = "SECS")]
    pub queued_ttl_secs: Option<u64>,
}

/// Every key the file may hold.
pub(super) const FILE_KEYS: &[&str] = &[
    "listen",
    "jwt_secret",
    "jwt_secret_file",
    "jwt_allow_short_secret",
    "jwt_issuer",
    "jwt_audience",
    "jwt_key",
    "jwt_job_claim",
    "jwt_leeway_secs",
    "keepalive_secs",
    "retention_secs",
    "idle_timeout_secs",
    "drain_timeout_secs",
    "shutdown_grace_secs",
    "tls_cert",
    "tls_key",
    "metrics_listen",
    "metrics_public",
    "jwks_url",
    "jwks_allow_http",
    "jwks_file",
    "jwks_refresh_secs",
    "header_read_timeout_secs",
    "gather_ms",
    "cors_origin",
    "max_connections",
    "max_jobs",
    "max_subscribers_per_job",
    "max_streams_per_subject",
    "max_uploads_per_subject",
    "max_line_bytes",
    "max_record_bytes",
    "max_header_bytes",
    "job_memory_bytes",
    "memory_budget_bytes",
    "max_log_bytes",
    "batch_bytes",
    "log_format",
    "compression",
    "gzip_level",
    "zstd_level",
    "capgo_compat",
    "capgo_prefix",
    "dev",
    "data_dir",
    "memory_only",
    "fsync",
    "fsync_interval_ms",
    "disk_retention_secs",
    "max_disk_bytes",
    "tombstone_secs",
    "redis_url",
    "redis_cluster",
    "redis_timeout_ms",
    "redis_wait_replicas",
    "archive_url",
    "archive_endpoint",
    "archive_quiet_secs",
    "archive_uploads",
    "archive_zstd_level",
    "publisher_grace_secs",
    "queued_ttl_secs",
];

/// The environment and the file, below the flags.
struct Layers<'a> {
    env: &'a dyn Env,
    file: toml::Table,
    /// Which layer gave each key its value.
    sources: RefCell<Sources>,
}

impl Layers<'_> {
    /// `flag`, else `TAILGATE_<KEY>`, else `<key>` in the file.
    fn get<T: FromStr>(&self, flag: Option<T>, key: &str) -> Result<Option<T>, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        if flag.is_some() {
            self.found(key, Source::Flag);
            return Ok(flag);
        }
        let env_name = env_name(key);
        if let Some(raw) = self.env.var(&env_name) {
            self.found(key, Source::Env);
            return raw
                .trim()
                .parse()
                .map(Some)
                .map_err(|e| ConfigError::new(&env_name, format!("{e}")));
        }
        let file_key = key.replace('-', "_");
        match self.file.get(&file_key) {
            None => Ok(None),
            Some(v) => scalar(v)
                .inspect(|_| self.found(key, Source::File))
                .ok_or_else(|| ConfigError::new(&file_key, "expected a string, number or boolean"))?
                .parse()
                .map(Some)
                .map_err(|e| ConfigError::new(&file_key, format!("{e}"))),
        }
    }

    /// A repeatable key: the flags if any, else the environment split at `sep`, else
    /// the file's array.
    fn list<T>(&self, flags: &[T], key: &str, sep: char) -> Result<Vec<T>, ConfigError>
    where
        T: FromStr + Clone,
        T::Err: std::fmt::Display,
    {
        if !flags.is_empty() {
            self.found(key, Source::Flag);
            return Ok(flags.to_vec());
        }
        let parse = |name: &str, raw: &str| {
            raw.trim()
                .parse::<T>()
                .map_err(|e| ConfigError::new(name, format!("{e}")))
        };
        let env_name = env_name(key);
        if let Some(raw) = self.env.var(&env_name) {
            self.found(key, Source::Env);
            return raw
                .split(sep)
                .filter(|s| !s.trim().is_empty())
                .map(|s| parse(&env_name, s))
                .collect();
        }
        let file_key = key.replace('-', "_");
        match self.file.get(&file_key) {
            None => Ok(Vec::new()),
            Some(toml::Value::Array(items)) => {
                self.found(key, Source::File);
                items
                    .iter()
                    .map(|v| {
                        let raw = scalar(v)
                            .ok_or_else(|| ConfigError::new(&file_key, "expected strings"))?;
                        parse(&file_key, &raw)
                    })
                    .collect()
            }
            Some(_) => Err(ConfigError::new(&file_key, "expected an array")),
        }
    }
}

impl Layers<'_> {
    fn found(&self, key: &str, source: Source) {
        self.sources.borrow_mut().set(key, source);
    }

    /// An on/off key: on when the flag is given, else the environment's or the file's.
    fn switch(&self, flag: bool, key: &str) -> Result<bool, ConfigError> {
        Ok(self.get(flag.then_some(true), key)?.unwrap_or(false))
    }
}

/// The environment variable of setting `key` (`max-jobs`: `TAILGATE_MAX_JOBS`).
pub fn env_name(key: &str) -> String {
    format!("TAILGATE_{}", key.replace('-', "_").to_ascii_uppercase())
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

fn read_file(args: &ServeArgs, env: &dyn Env) -> Result<toml::Table, ConfigError> {
    let path = match (&args.config, env.var("TAILGATE_CONFIG")) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => PathBuf::from(p),
        (None, None) => return Ok(toml::Table::new()),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError::new("config", format!("cannot read {}: {e}", path.display())))?;
    let table: toml::Table = text.parse().map_err(|e| {
        ConfigError::new(
            "config",
            format!("{} is not valid TOML: {e}", path.display()),
        )
    })?;
    if let Some(unknown) = table.keys().find(|k| !FILE_KEYS.contains(&k.as_str())) {
        return Err(ConfigError::new(
            unknown.as_str(),
            format!("unknown key in {}", path.display()),
        ));
    }
    Ok(table)
}

fn secs(v: Option<u64>, default: Duration) -> Duration {
    v.map_or(default, Duration::from_secs)
}

fn positive<T: PartialOrd + Default + Copy>(key: &str, v: T) -> Result<T, ConfigError> {
    if v <= T::default() {
        return Err(ConfigError::new(key, "must be greater than zero"));
    }
    Ok(v)
}

pub(super) fn load(args: &ServeArgs, env: &dyn Env) -> Result<Config, ConfigError> {
    load_all(args, env, true).map(|(config, _)| config)
}

/// The configuration even when the token settings are missing (for `--print-config`):
/// the config, and the first missing setting that would stop `serve`.
pub(super) fn load_for_print(
    args: &ServeArgs,
    env: &dyn Env,
) -> Result<(Config, Option<ConfigError>), ConfigError> {
    load_all(args, env, false)
}

/// `strict`: a missing secret, issuer or audience is an error at once; otherwise it is
/// returned beside a config that has them empty.
fn load_all(
    args: &ServeArgs,
    env: &dyn Env,
    strict: bool,
) -> Result<(Config, Option<ConfigError>), ConfigError> {
    let l = Layers {
        env,
        file: read_file(args, env)?,
        sources: RefCell::default(),
    };
    let dev = if args.dev {
        l.found("dev", Source::Flag);
        true
    } else {
        l.get::<bool>(None, "dev")?.unwrap_or(false)
    };
    let mut secret_file = l.get(args.jwt_secret_file.clone(), "jwt-secret-file")?;
    let mut secret_value = l.get(args.jwt_secret.clone(), "jwt-secret")?;
    // A secret from a stronger layer replaces a secret file from a weaker one (and the
    // other way round): `TAILGATE_JWT_SECRET` overrides the file's `jwt_secret_file`.
    if secret_file.is_some() && secret_value.is_some() {
        let sources = l.sources.borrow();
        let (value_source, file_source) =
            (sources.get("jwt-secret"), sources.get("jwt-secret-file"));
        if value_source > file_source {
            secret_file = None;
        } else if file_source > value_source {
            secret_value = None;
        }
    }
    let secret = match (secret_value, secret_file.clone()) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "jwt-secret-file",
                "give either a secret or a secret file, not both",
            ))
        }
        (Some(s), None) => Some(s.into_bytes()),
        (None, Some(path)) => {
            let raw = std::fs::read(&path).map_err(|e| {
                ConfigError::new(
                    "jwt-secret-file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            Some(
                raw.strip_suffix(b"\n")
                    .map(|s| s.strip_suffix(b"\r").unwrap_or(s))
                    .unwrap_or(&raw)
                    .to_vec(),
            )
        }
        (None, None) => None,
    };
    if secret.as_ref().is_some_and(|s| s.is_empty()) {
        return Err(ConfigError::new("jwt-secret", "is empty"));
    }
    let keys: Vec<KeySpec> = l.list(&args.jwt_key, "jwt-key", ';')?;
    let jwks = jwks(&l, args)?;
    let issuer = l.get(args.jwt_issuer.clone(), "jwt-issuer")?;
    let audience = l.get(args.jwt_audience.clone(), "jwt-audience")?;

    let mut missing_key = None;
    let (secret, issuer, audience) = if dev {
        let secret = secret.or_else(|| (keys.is_empty()).then(random_secret));
        (
            secret,
            issuer.unwrap_or_else(|| "tailgate-dev".into()),
            audience.unwrap_or_else(|| "tailgate-dev".into()),
        )
    } else {
        let no_key = secret.is_none() && keys.is_empty() && jwks.is_none();
        let missing = [
            no_key.then(|| ConfigError::new(
                "jwt-secret",
                "missing: set --jwt-secret, --jwt-secret-file or TAILGATE_JWT_SECRET (or --jwt-key / --jwks-url for public keys), or use --dev",
            )),
            issuer.is_none().then(|| ConfigError::new(
                "jwt-issuer",
                "missing: set --jwt-issuer or TAILGATE_JWT_ISSUER",
            )),
            audience.is_none().then(|| ConfigError::new(
                "jwt-audience",
                "missing: set --jwt-audience or TAILGATE_JWT_AUDIENCE",
            )),
        ];
        missing_key = missing.into_iter().flatten().next();
        if let (true, Some(e)) = (strict, &missing_key) {
            return Err(e.clone());
        }
        let present = |v: Option<String>, key: &str| match v {
            Some(v) if v.trim().is_empty() => Err(ConfigError::new(key, "is empty")),
            v => Ok(v.unwrap_or_default()),
        };
        (
            secret,
            present(issuer, "jwt-issuer")?,
            present(audience, "jwt-audience")?,
        )
    };
    if dev {
        for (key, v) in [("jwt-issuer", &issuer), ("jwt-audience", &audience)] {
            if v.trim().is_empty() {
                return Err(ConfigError::new(key, "is empty"));
            }
        }
    }
    let allow_short = l
        .get(
            args.jwt_allow_short_secret.then_some(true),
            "jwt-allow-short-secret",
        )?
        .unwrap_or(false);
    if let Some(len) = secret.as_ref().map(Vec::len) {
        if len < MIN_HMAC_SECRET_BYTES && !dev && !allow_short {
            return Err(ConfigError::new(
                "jwt-secret",
                format!(
                    "is {len} bytes; HMAC secrets need at least {MIN_HMAC_SECRET_BYTES} (RFC 7518 section 3.2), \
                     or pass --jwt-allow-short-secret"
                ),
            ));
        }
    }

    let mut config = Config::new_hmac(Vec::new(), &issuer, &audience);
    config.dev = dev;
    config.jwt_allow_short_secret = allow_short;
    config.jwt_secret_file = secret_file;
    config.auth.hmac_secret = secret;
    config.auth.keys = keys;
    config.jwks = jwks;
    config.jwks_allow_http = l.switch(args.jwks_allow_http, "jwks-allow-http")?;
    if let Some(listen) = l.get(args.listen, "listen")? {
        config.listen = listen;
    }
    if let Some(claim) = l.get(args.jwt_job_claim.clone(), "jwt-job-claim")? {
        if claim.is_empty() {
            return Err(ConfigError::new("jwt-job-claim", "is empty"));
        }
        config.auth.job_claim = claim;
    }
    config.auth.leeway = secs(
        l.get(args.jwt_leeway_secs, "jwt-leeway-secs")?,
        DEFAULT_LEEWAY,
    );
    config.keepalive = secs(
        l.get(args.keepalive_secs, "keepalive-secs")?
            .map(|v| positive("keepalive-secs", v))
            .transpose()?,
        DEFAULT_KEEPALIVE,
    );
    config.retention = secs(
        l.get(args.retention_secs, "retention-secs")?,
        DEFAULT_RETENTION,
    );
    config.idle_timeout = secs(
        l.get(args.idle_timeout_secs, "idle-timeout-secs")?,
        DEFAULT_IDLE_TIMEOUT,
    );
    config.drain_timeout = secs(
        l.get(args.drain_timeout_secs, "drain-timeout-secs")?,
        DEFAULT_DRAIN_TIMEOUT,
    );
    config.shutdown_grace = secs(
        l.get(args.shutdown_grace_secs, "shutdown-grace-secs")?,
        DEFAULT_SHUTDOWN_GRACE,
    );
    config.tls = match (
        l.get(args.tls_cert.clone(), "tls-cert")?,
        l.get(args.tls_key.clone(), "tls-key")?,
    ) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::new(
                "tls-key",
                "missing: --tls-cert needs --tls-key",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "tls-cert",
                "missing: --tls-key needs --tls-cert",
            ))
        }
    };
    config.metrics_listen = l.get(args.metrics_listen, "metrics-listen")?;
    config.metrics_public = l.switch(args.metrics_public, "metrics-public")?;
    config.header_read_timeout = secs(
        l.get(args.header_read_timeout_secs, "header-read-timeout-secs")?
            .map(|v| positive("header-read-timeout-secs", v))
            .transpose()?,
        DEFAULT_HEADER_READ_TIMEOUT,
    );
    config.gather = l
        .get(args.gather_ms, "gather-ms")?
        .map_or(DEFAULT_GATHER, Duration::from_millis);
    config.cors_origins = l.list(&args.cors_origin, "cors-origin", ',')?;
    config.log_format = match l.get(args.log_format.clone(), "log-format")?.as_deref() {
        None | Some("pretty") => LogFormat::Pretty,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(ConfigError::new(
                "log-format",
                format!("{other:?} is not pretty or json"),
            ))
        }
    };
    if let Some(codings) = l.get(args.compression.clone(), "compression")? {
        config.compression.codings = codings
            .parse()
            .map_err(|e: String| ConfigError::new("compression", e))?;
    }
    if let Some(level) = l.get(args.gzip_level, "gzip-level")? {
        if !(1..=9).contains(&level) {
            return Err(ConfigError::new("gzip-level", "must be from 1 to 9"));
        }
        config.compression.gzip_level = level;
    }
    if let Some(level) = l.get(args.zstd_level, "zstd-level")? {
        if !(1..=19).contains(&level) {
            return Err(ConfigError::new("zstd-level", "must be from 1 to 19"));
        }
        config.compression.zstd_level = level;
    }
    if let Some(enabled) = l.get(args.capgo_compat, "capgo-compat")? {
        config.capgo.enabled = enabled;
    }
    if let Some(prefix) = l.get(args.capgo_prefix.clone(), "capgo-prefix")? {
        config.capgo.prefix = capgo_prefix(&prefix)?;
    }

    config.store = store_config(args, &l)?;
    config.publisher_grace = secs(
        l.get(args.publisher_grace_secs, "publisher-grace-secs")?
            .map(|v| positive("publisher-grace-secs", v))
            .transpose()?,
        DEFAULT_PUBLISHER_GRACE,
    );
    config.queued_ttl = secs(
        l.get(args.queued_ttl_secs, "queued-ttl-secs")?
            .map(|v| positive("queued-ttl-secs", v))
            .transpose()?,
        DEFAULT_QUEUED_TTL,
    );

    let lim = &mut config.limits;
    let sizes: [(&str, Option<usize>, &mut usize); 11] = [
        (
            "max-connections",
            args.max_connections,
            &mut lim.max_connections,
        ),
        ("max-jobs", args.max_jobs, &mut lim.max_jobs),
        (
            "max-subscribers-per-job",
            args.max_subscribers_per_job,
            &mut lim.max_subscribers_per_job,
        ),
        (
            "max-streams-per-subject",
            args.max_streams_per_subject,
            &mut lim.max_streams_per_subject,
        ),
        (
            "max-uploads-per-subject",
            args.max_uploads_per_subject,
            &mut lim.max_uploads_per_subject,
        ),
        (
            "max-line-bytes",
            args.max_line_bytes,
            &mut lim.max_line_bytes,
        ),
        (
            "max-record-bytes",
            args.max_record_bytes,
            &mut lim.max_record_bytes,
        ),
        (
            "max-header-bytes",
            args.max_header_bytes,
            &mut lim.max_header_bytes,
        ),
        (
            "job-memory-bytes",
            args.job_memory_bytes,
            &mut lim.job_memory_bytes,
        ),
        (
            "memory-budget-bytes",
            args.memory_budget_bytes,
            &mut lim.memory_budget_bytes,
        ),
        ("batch-bytes", args.batch_bytes, &mut lim.batch_bytes),
    ];
    for (key, flag, slot) in sizes {
        if let Some(v) = l.get(flag, key)? {
            *slot = positive(key, v)?;
        }
    }
    if let Some(v) = l.get(args.max_log_bytes, "max-log-bytes")? {
        lim.max_log_bytes = positive("max-log-bytes", v)?;
    }
    config.sources = l.sources.take();
    if lim.max_line_bytes < 16 {
        return Err(ConfigError::new("max-line-bytes", "must be at least 16"));
    }
    if config.store.data_dir.is_some() {
        use crate::store::spool::frame;
        let limit = frame::max_payload();
        if frame::worst_json(lim.max_line_bytes) > limit {
            return Err(ConfigError::new(
                "max-line-bytes",
                format!(
                    "a line can take six times its bytes as JSON, over the spool's frame limit of {limit} bytes: at most {} with the spool",
                    frame::max_line_bytes()
                ),
            ));
        }
        if lim.max_record_bytes.saturating_add(frame::RECORD_OVERHEAD) > limit {
            return Err(ConfigError::new(
                "max-record-bytes",
                format!(
                    "over the spool's frame limit of {limit} bytes: at most {} with the spool",
                    limit - frame::RECORD_OVERHEAD
                ),
            ));
        }
    }
    if lim.max_header_bytes < 8192 {
        return Err(ConfigError::new(
            "max-header-bytes",
            "must be at least 8192",
        ));
    }
    Ok((config, missing_key))
}

/// `--jwks-url` or `--jwks-file` (not both), and the refresh interval.
fn jwks(l: &Layers<'_>, args: &ServeArgs) -> Result<Option<JwksConfig>, ConfigError> {
    let source = match (
        l.get(args.jwks_url.clone(), "jwks-url")?,
        l.get(args.jwks_file.clone(), "jwks-file")?,
    ) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "jwks-file",
                "give either a JWKS URL or a JWKS file, not both",
            ))
        }
        (Some(url), None) => {
            let shown = redact_url(&url);
            if url.starts_with("http://") {
                if !l.switch(args.jwks_allow_http, "jwks-allow-http")? {
                    return Err(ConfigError::new(
                        "jwks-url",
                        format!(
                            "{shown:?} is plain http://, so anyone on the path could swap the keys: \
                             use https://, or pass --jwks-allow-http (a sidecar on loopback)"
                        ),
                    ));
                }
            } else if !url.starts_with("https://") {
                return Err(ConfigError::new(
                    "jwks-url",
                    format!("{shown:?} is not an https:// URL"),
                ));
            }
            JwksSource::Url(url)
        }
        (None, Some(file)) => JwksSource::File(file),
        (None, None) => return Ok(None),
    };
    let refresh = l
        .get(args.jwks_refresh_secs, "jwks-refresh-secs")?
        .map(|v| positive("jwks-refresh-secs", v))
        .transpose()?;
    Ok(Some(JwksConfig {
        source,
        refresh: secs(refresh, DEFAULT_JWKS_REFRESH),
    }))
}

/// Where jobs are kept: `--memory-only`, or a spool under `--data-dir` and its policy.
fn store_config(args: &ServeArgs, l: &Layers<'_>) -> Result<StoreConfig, ConfigError> {
    let memory_only = if args.memory_only {
        l.found("memory-only", Source::Flag);
        true
    } else {
        l.get::<bool>(None, "memory-only")?.unwrap_or(false)
    };
    // `--memory-only` wins over a data directory set anywhere (an image's environment,
    // say), so one flag turns durability off.
    let data_dir: Option<PathBuf> = l.get(args.data_dir.clone(), "data-dir")?;
    let interval = l
        .get(args.fsync_interval_ms, "fsync-interval-ms")?
        .map(|v| positive("fsync-interval-ms", v))
        .transpose()?
        .map_or(DEFAULT_FSYNC_INTERVAL, Duration::from_millis);
    let fsync = match l.get(args.fsync.clone(), "fsync")?.as_deref() {
        None | Some("interval") => Fsync::Interval(interval),
        Some("always") => Fsync::Always,
        Some("never") => Fsync::Never,
        Some(other) => {
            return Err(ConfigError::new(
                "fsync",
                format!("{other:?} is not interval, always or never"),
            ))
        }
    };
    let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    if data_dir.as_os_str().is_empty() {
        return Err(ConfigError::new("data-dir", "is empty"));
    }
    let redis = redis_config(args, l)?;
    let archive = archive_config(args, l)?;
    if archive.is_some() && memory_only && redis.is_none() {
        return Err(ConfigError::new(
            "archive-url",
            "needs the spool (a data directory) or redis: it archives from there",
        ));
    }
    Ok(StoreConfig {
        archive,
        data_dir: (!memory_only && redis.is_none()).then_some(data_dir),
        redis,
        fsync,
        disk_retention: secs(
            l.get(args.disk_retention_secs, "disk-retention-secs")?,
            DEFAULT_DISK_RETENTION,
        ),
        max_disk_bytes: l
            .get(args.max_disk_bytes, "max-disk-bytes")?
            .map(|v| positive("max-disk-bytes", v))
            .transpose()?
            .unwrap_or(DEFAULT_MAX_DISK_BYTES),
        tombstone_ttl: secs(
            l.get(args.tombstone_secs, "tombstone-secs")?,
            DEFAULT_TOMBSTONE_TTL,
        ),
    })
}

/// The shared store, when a Redis URL is set: the URL checked (never echoed, it may hold
/// a password), `+cluster` taken off the scheme.
fn redis_config(args: &ServeArgs, l: &Layers<'_>) -> Result<Option<RedisConfig>, ConfigError> {
    let Some(raw) = l.get::<String>(args.redis_url.clone(), "redis-url")? else {
        return Ok(None);
    };
    let flag = l.switch(args.redis_cluster, "redis-cluster")?;
    let (scheme, rest) = raw.split_once("://").unwrap_or(("", ""));
    let (url, cluster) = match scheme {
        "redis" | "rediss" => (raw.clone(), flag),
        "redis+cluster" | "rediss+cluster" => {
            let plain = scheme.trim_end_matches("+cluster");
            (format!("{plain}://{rest}"), true)
        }
        _ => {
            return Err(ConfigError::new(
                "redis-url",
                "must start with redis://, rediss:// or redis+cluster://",
            ))
        }
    };
    if redis::IntoConnectionInfo::into_connection_info(url.as_str()).is_err() {
        return Err(ConfigError::new("redis-url", "is not a valid Redis URL"));
    }
    let timeout = l
        .get(args.redis_timeout_ms, "redis-timeout-ms")?
        .map(|v| positive("redis-timeout-ms", v))
        .transpose()?
        .map_or(DEFAULT_REDIS_TIMEOUT, Duration::from_millis);
    let wait_replicas = l
        .get(args.redis_wait_replicas, "redis-wait-replicas")?
        .unwrap_or(0);
    Ok(Some(RedisConfig {
        url,
        cluster,
        timeout,
        wait_replicas,
    }))
}

/// The archive, when a URL is set: `s3://bucket[/prefix]` or `file:///dir`; the endpoint
/// from the flag, else the standard `AWS_ENDPOINT_URL`.
fn archive_config(args: &ServeArgs, l: &Layers<'_>) -> Result<Option<ArchiveConfig>, ConfigError> {
    let Some(url) = l.get::<String>(args.archive_url.clone(), "archive-url")? else {
        return Ok(None);
    };
    let ok = match url.split_once("://") {
        Some(("s3", rest)) => {
            let bucket = rest.split('/').next().unwrap_or("");
            !bucket.is_empty() && !bucket.contains(['@', ':', '?', '#'])
        }
        Some(("file", rest)) => rest.starts_with('/') && rest.len() > 1,
        _ => false,
    };
    if !ok {
        return Err(ConfigError::new(
            "archive-url",
            "must be s3://bucket[/prefix] or file:///dir",
        ));
    }
    let endpoint = match l.get::<String>(args.archive_endpoint.clone(), "archive-endpoint")? {
        Some(e) => Some(e),
        None => l.env.var("AWS_ENDPOINT_URL").filter(|e| !e.is_empty()),
    };
    if let Some(e) = &endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(ConfigError::new(
                "archive-endpoint",
                "must start with http:// or https://",
            ));
        }
    }
    let mut archive = ArchiveConfig::new(url);
    archive.endpoint = endpoint;
    archive.quiet = secs(
        l.get(args.archive_quiet_secs, "archive-quiet-secs")?,
        DEFAULT_ARCHIVE_QUIET,
    );
    if let Some(n) = l.get(args.archive_uploads, "archive-uploads")? {
        archive.uploads = positive("archive-uploads", n)?;
    }
    if let Some(level) = l.get(args.archive_zstd_level, "archive-zstd-level")? {
        if !(1..=19).contains(&level) {
            return Err(ConfigError::new(
                "archive-zstd-level",
                "must be from 1 to 19",
            ));
        }
        archive.level = level;
    }
    Ok(Some(archive))
}

/// A Capgo prefix: `/` and path segments, no trailing `/`, not under the gateway's own
/// routes.
fn capgo_prefix(raw: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| Err(ConfigError::new("capgo-prefix", format!("{raw:?} {why}")));
    let prefix = raw.trim().trim_end_matches('/');
    if !prefix.starts_with('/') {
        return bad("must start with /");
    }
    if prefix
        .split('/')
        .skip(1)
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return bad("must be non-empty path segments");
    }
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-~".contains(&b))
    {
        return bad("may only hold letters, digits and / . _ - ~");
    }
    let clashes = |own: &str| prefix == own || prefix.starts_with(&format!("{own}/"));
    if ["/v1", "/healthz", "/readyz", "/metrics"]
        .iter()
        .any(|own| clashes(own))
    {
        return bad("overlaps the gateway's own routes");
    }
    Ok(prefix.to_string())
}

/// 32 random bytes as hex, for `--dev`.
fn random_secret() -> Vec<u8> {
    let bytes: [u8; 32] = rand::random();
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A secret of the least accepted length.
    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn env(pairs: &[(&str, &str)]) -> MapEnv {
        MapEnv(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn missing_secret_issuer_audience_are_named() {
        let err = Config::load(&ServeArgs::default(), &env(&[])).unwrap_err();
        assert_eq!(err.key, "jwt-secret");
        let e = env(&[("TAILGATE_JWT_SECRET", "s")]);
        assert_eq!(
            Config::load(&ServeArgs::default(), &e).unwrap_err().key,
            "jwt-issuer"
        );
        let e = env(&[("TAILGATE_JWT_SECRET", "s"), ("TAILGATE_JWT_ISSUER", "i")]);
        assert_eq!(
            Config::load(&ServeArgs::default(), &e).unwrap_err().key,
            "jwt-audience"
        );
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let dir = std::env::temp_dir().join(format!("tailgate-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(&file, "jwt_secret = \"ffffffffffffffffffffffffffffffff\"\njwt_issuer = \"file-iss\"\njwt_audience = \"file-aud\"\nkeepalive_secs = 7\nmax_jobs = 3\n").unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            jwt_issuer: Some("flag-iss".into()),
            ..Default::default()
        };
        let e = env(&[
            ("TAILGATE_JWT_ISSUER", "env-iss"),
            ("TAILGATE_JWT_AUDIENCE", "env-aud"),
            ("TAILGATE_MAX_JOBS", "5"),
        ]);
        let c = Config::load(&args, &e).unwrap();
        assert_eq!(
            (c.auth.issuer.as_str(), c.auth.audience.as_str()),
            ("flag-iss", "env-aud")
        );
        assert_eq!(c.auth.hmac_secret.as_deref(), Some(&[b'f'; 32][..]));
        assert_eq!(
            (c.keepalive, c.limits.max_jobs),
            (Duration::from_secs(7), 5)
        );
        std::fs::write(&file, "jwt_secret = \"f\"\nbogus = 1\n").unwrap();
        assert_eq!(Config::load(&args, &e).unwrap_err().key, "bogus");
    }

    #[test]
    fn bad_values_name_their_key() {
        let base = [
            ("TAILGATE_JWT_SECRET", SECRET),
            ("TAILGATE_JWT_ISSUER", "i"),
            ("TAILGATE_JWT_AUDIENCE", "a"),
        ];
        for (k, v, key) in [
            ("TAILGATE_KEEPALIVE_SECS", "0", "keepalive-secs"),
            ("TAILGATE_KEEPALIVE_SECS", "soon", "TAILGATE_KEEPALIVE_SECS"),
            ("TAILGATE_LISTEN", "nowhere", "TAILGATE_LISTEN"),
            ("TAILGATE_LOG_FORMAT", "xml", "log-format"),
            ("TAILGATE_MAX_LINE_BYTES", "0", "max-line-bytes"),
        ] {
            let mut pairs = base.to_vec();
            pairs.push((k, v));
            assert_eq!(
                Config::load(&ServeArgs::default(), &env(&pairs))
                    .unwrap_err()
                    .key,
                key,
                "{k}={v}"
            );
        }
    }

    #[test]
    fn capgo_routes_are_configurable() {
        let base = [
            ("TAILGATE_JWT_SECRET", SECRET),
            ("TAILGATE_JWT_ISSUER", "i"),
            ("TAILGATE_JWT_AUDIENCE", "a"),
        ];
        let c = Config::load(&ServeArgs::default(), &env(&base)).unwrap();
        assert_eq!(c.capgo, CapgoConfig::default());
        assert!(c.capgo.enabled);
        assert_eq!(c.capgo.prefix, "/build_logs_direct");

        let mut pairs = base.to_vec();
        pairs.push(("TAILGATE_CAPGO_COMPAT", "false"));
        pairs.push(("TAILGATE_CAPGO_PREFIX", "/logs/capgo/"));
        let c = Config::load(&ServeArgs::default(), &env(&pairs)).unwrap();
        assert!(!c.capgo.enabled);
        assert_eq!(c.capgo.prefix, "/logs/capgo");

        let args = ServeArgs {
            capgo_compat: Some(true),
            ..Default::default()
        };
        assert!(Config::load(&args, &env(&pairs)).unwrap().capgo.enabled);

        for bad in ["logs", "/", "/a//b", "/v1/x", "/healthz", "/a b", "/../x"] {
            let mut pairs = base.to_vec();
            pairs.push(("TAILGATE_CAPGO_PREFIX", bad));
            assert_eq!(
                Config::load(&ServeArgs::default(), &env(&pairs))
                    .unwrap_err()
                    .key,
                "capgo-prefix",
                "{bad}"
            );
        }
        let dir = std::env::temp_dir().join(format!("tailgate-capgo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(&file, "capgo_compat = false\ncapgo_prefix = \"/cap\"\n").unwrap();
        let args = ServeArgs {
            config: Some(file),
            ..Default::default()
        };
        let c = Config::load(&args, &env(&base)).unwrap();
        assert_eq!((c.capgo.enabled, c.capgo.prefix.as_str()), (false, "/cap"));

        let mut pairs = base.to_vec();
        pairs.push(("TAILGATE_CAPGO_COMPAT", "maybe"));
        assert_eq!(
            Config::load(&ServeArgs::default(), &env(&pairs))
                .unwrap_err()
                .key,
            "TAILGATE_CAPGO_COMPAT"
        );
    }

    #[test]
    fn a_redis_url_replaces_the_spool_and_never_shows_its_password() {
        let base = [
            ("TAILGATE_JWT_SECRET", SECRET),
            ("TAILGATE_JWT_ISSUER", "i"),
            ("TAILGATE_JWT_AUDIENCE", "a"),
        ];
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(pairs);
            Config::load(&ServeArgs::default(), &env(&all))
        };
        let c = with(&[("TAILGATE_REDIS_URL", "redis://u:hunter2@127.0.0.1:6379/0")]).unwrap();
        let redis = c.store.redis.clone().unwrap();
        assert_eq!(c.store.data_dir, None);
        assert!(!redis.cluster);
        assert_eq!(redis.timeout, DEFAULT_REDIS_TIMEOUT);
        assert!(!format!("{c:?}").contains("hunter2"));

        let c = with(&[("TAILGATE_REDIS_URL", "rediss+cluster://node:7000")]).unwrap();
        let redis = c.store.redis.unwrap();
        assert_eq!(
            (redis.url.as_str(), redis.cluster),
            ("rediss://node:7000", true)
        );
        let c = with(&[
            ("TAILGATE_REDIS_URL", "redis://node:7000"),
            ("TAILGATE_REDIS_CLUSTER", "true"),
            ("TAILGATE_REDIS_TIMEOUT_MS", "250"),
        ])
        .unwrap();
        let redis = c.store.redis.unwrap();
        assert!(redis.cluster);
        assert_eq!(redis.timeout, Duration::from_millis(250));

        for (k, v, key) in [
            ("TAILGATE_REDIS_URL", "http://u:hunter2@node", "redis-url"),
            ("TAILGATE_REDIS_URL", "redis://[bad", "redis-url"),
            ("TAILGATE_REDIS_TIMEOUT_MS", "0", "redis-timeout-ms"),
        ] {
            let mut pairs = vec![("TAILGATE_REDIS_URL", "redis://node")];
            pairs.retain(|(name, _)| *name != k);
            pairs.push((k, v));
            let err = with(&pairs).unwrap_err();
            assert_eq!(err.key, key, "{k}={v}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn a_secret_from_a_stronger_layer_replaces_the_file_s_secret_file() {
        let dir = std::env::temp_dir().join(format!("tailgate-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(
            &file,
            "jwt_secret_file = \"/nonexistent/secret\"\njwt_issuer = \"i\"\njwt_audience = \"a\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file),
            ..Default::default()
        };
        let c = Config::load(&args, &env(&[("TAILGATE_JWT_SECRET", SECRET)])).unwrap();
        assert_eq!(c.auth.hmac_secret.as_deref(), Some(SECRET.as_bytes()));
        assert_eq!(c.jwt_secret_file, None);
        let both = env(&[
            ("TAILGATE_JWT_SECRET", "from-env"),
            ("TAILGATE_JWT_SECRET_FILE", "/nonexistent/secret"),
        ]);
        assert_eq!(
            Config::load(&ServeArgs::default(), &both).unwrap_err().key,
            "jwt-secret-file"
        );
    }

    #[test]
    fn the_store_is_a_spool_unless_memory_only() {
        let base = [
            ("TAILGATE_JWT_SECRET", SECRET),
            ("TAILGATE_JWT_ISSUER", "i"),
            ("TAILGATE_JWT_AUDIENCE", "a"),
        ];
        let c = Config::load(&ServeArgs::default(), &env(&base)).unwrap();
        assert_eq!(
            c.store.data_dir.as_deref(),
            Some(std::path::Path::new(DEFAULT_DATA_DIR))
        );
        assert_eq!(c.store.fsync, Fsync::Interval(DEFAULT_FSYNC_INTERVAL));
        assert_eq!(c.limits.job_memory_bytes, 4 << 20);

        let mut pairs = base.to_vec();
        pairs.extend([
            ("TAILGATE_DATA_DIR", "/var/lib/tailgate"),
            ("TAILGATE_FSYNC", "always"),
            ("TAILGATE_MAX_DISK_BYTES", "1000"),
            ("TAILGATE_PUBLISHER_GRACE_SECS", "5"),
        ]);
        let c = Config::load(&ServeArgs::default(), &env(&pairs)).unwrap();
        assert_eq!(
            c.store.data_dir.as_deref(),
            Some(std::path::Path::new("/var/lib/tailgate"))
        );
        assert_eq!(
            (c.store.fsync, c.store.max_disk_bytes),
            (Fsync::Always, 1000)
        );
        assert_eq!(c.publisher_grace, Duration::from_secs(5));

        let args = ServeArgs {
            memory_only: true,
            ..Default::default()
        };
        assert_eq!(
            Config::load(&args, &env(&pairs)).unwrap().store.data_dir,
            None
        );

        for (k, v, key) in [
            ("TAILGATE_FSYNC", "sometimes", "fsync"),
            ("TAILGATE_FSYNC_INTERVAL_MS", "0", "fsync-interval-ms"),
            ("TAILGATE_MAX_DISK_BYTES", "0", "max-disk-bytes"),
            ("TAILGATE_QUEUED_TTL_SECS", "0", "queued-ttl-secs"),
        ] {
            let mut pairs = base.to_vec();
            pairs.push((k, v));
            let err = Config::load(&ServeArgs::default(), &env(&pairs)).unwrap_err();
            assert_eq!(err.key, key, "{k}={v}");
        }
    }

    #[test]
    fn dev_mode_needs_nothing() {
        let c = Config::load(
            &ServeArgs {
                dev: true,
                ..Default::default()
            },
            &env(&[]),
        )
        .unwrap();
        assert_eq!(c.auth.hmac_secret.as_ref().map(Vec::len), Some(64));
        assert_eq!(c.auth.issuer, "tailgate-dev");
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    fn load(pairs: &[(&str, &str)], args: ServeArgs) -> Result<Config, ConfigError> {
        let mut all = vec![("TAILGATE_JWT_ISSUER", "i"), ("TAILGATE_JWT_AUDIENCE", "a")];
        all.extend_from_slice(pairs);
        let env = MapEnv(
            all.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        Config::load(&args, &env)
    }

    #[test]
    fn short_hmac_secrets_are_refused_naming_the_key_and_the_rfc() {
        let err = load(&[("TAILGATE_JWT_SECRET", "x")], ServeArgs::default()).unwrap_err();
        assert_eq!(err.key, "jwt-secret");
        assert!(err.message.contains("RFC 7518 section 3.2"), "{err}");
        assert!(err.message.contains("--jwt-allow-short-secret"), "{err}");
        let one_short = "x".repeat(MIN_HMAC_SECRET_BYTES - 1);
        assert!(load(&[("TAILGATE_JWT_SECRET", &one_short)], ServeArgs::default()).is_err());
        let enough = "x".repeat(MIN_HMAC_SECRET_BYTES);
        assert!(load(&[("TAILGATE_JWT_SECRET", &enough)], ServeArgs::default()).is_ok());
    }

    #[test]
    fn the_escape_hatch_and_dev_mode_accept_a_short_secret() {
        let flag = ServeArgs {
            jwt_allow_short_secret: true,
            ..Default::default()
        };
        assert!(load(&[("TAILGATE_JWT_SECRET", "x")], flag).is_ok());
        let env = [
            ("TAILGATE_JWT_SECRET", "x"),
            ("TAILGATE_JWT_ALLOW_SHORT_SECRET", "true"),
        ];
        assert!(load(&env, ServeArgs::default()).is_ok());
        let dev = ServeArgs {
            dev: true,
            ..Default::default()
        };
        assert!(load(&[("TAILGATE_JWT_SECRET", "x")], dev).is_ok());
    }
}

#[cfg(test)]
mod frame_limit_tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let secret = "s".repeat(MIN_HMAC_SECRET_BYTES);
        let mut all = vec![
            ("TAILGATE_JWT_ISSUER", "i"),
            ("TAILGATE_JWT_AUDIENCE", "a"),
            ("TAILGATE_JWT_SECRET", secret.as_str()),
        ];
        all.extend_from_slice(pairs);
        let env = MapEnv(
            all.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        Config::load(&ServeArgs::default(), &env)
    }

    #[test]
    fn line_limits_whose_json_cannot_be_framed_are_refused_with_the_spool() {
        // 16 MiB of control bytes is 96 MiB of JSON: over the 64 MiB frame.
        let err = load(&[("TAILGATE_MAX_LINE_BYTES", "16777216")]).unwrap_err();
        assert_eq!(err.key, "max-line-bytes");
        let limit = crate::store::spool::frame::max_payload().to_string();
        assert!(err.message.contains(&limit), "{err}");
        let most = crate::store::spool::frame::max_line_bytes().to_string();
        assert!(load(&[("TAILGATE_MAX_LINE_BYTES", &most)]).is_ok());
        let over = (crate::store::spool::frame::max_line_bytes() + 1).to_string();
        assert!(load(&[("TAILGATE_MAX_LINE_BYTES", &over)]).is_err());
        let err = load(&[("TAILGATE_MAX_RECORD_BYTES", "67108864")]).unwrap_err();
        assert_eq!(err.key, "max-record-bytes");
        // Without the spool there is no frame to fit.
        let memory = [
            ("TAILGATE_MAX_LINE_BYTES", "16777216"),
            ("TAILGATE_MEMORY_ONLY", "true"),
        ];
        assert!(load(&memory).is_ok());
    }
}
