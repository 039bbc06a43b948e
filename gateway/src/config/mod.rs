//! Typed configuration, validated before anything binds.
//!
//! Sources, strongest first: command-line flags, `TAILGATE_*` environment, the TOML file
//! given by `--config`, then the `DEFAULT_*` values here. See [`load`].

mod load;
mod print;
#[cfg(test)]
mod sample;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::archive::{
    ArchiveConfig, DEFAULT_ARCHIVE_QUIET, DEFAULT_ARCHIVE_TIMEOUT, DEFAULT_ARCHIVE_UPLOADS,
    DEFAULT_ARCHIVE_ZSTD_LEVEL,
};
use crate::auth::AuthSettings;

pub use load::{env_name, Env, MapEnv, ProcessEnv, ServeArgs};
pub use print::{redact_url, Source, Sources};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_JOB_CLAIM: &str = "job_id";
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(15);
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(3600);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::ZERO;
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_GATHER: Duration = Duration::from_millis(20);
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
pub const DEFAULT_MAX_JOBS: usize = 10_000;
pub const DEFAULT_MAX_SUBSCRIBERS_PER_JOB: usize = 10_000;
pub const DEFAULT_MAX_STREAMS_PER_SUBJECT: usize = 64;
pub const DEFAULT_MAX_UPLOADS_PER_SUBJECT: usize = 4096;
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
pub const DEFAULT_JOB_MEMORY_BYTES: usize = 4 * 1024 * 1024;
pub const DEFAULT_MEMORY_BUDGET_BYTES: usize = 1024 * 1024 * 1024;
pub const DEFAULT_MAX_LOG_BYTES: u64 = 512 * 1024 * 1024;
pub const DEFAULT_BATCH_BYTES: usize = 64 * 1024;
pub const DEFAULT_CAPGO_PREFIX: &str = "/build_logs_direct";
/// Shortest HMAC secret accepted without `--jwt-allow-short-secret`: RFC 7518 section 3.2
/// wants a key at least as long as the hash (HS256: 32 bytes).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;
pub const DEFAULT_DATA_DIR: &str = "./tailgate-data";
pub const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_millis(1000);
pub const DEFAULT_DISK_RETENTION: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_MAX_DISK_BYTES: u64 = 10 * 1024 * 1024 * 1024;
pub const DEFAULT_TOMBSTONE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// A Redis round trip at most before publishes answer 503.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_PUBLISHER_GRACE: Duration = Duration::from_secs(600);
pub const DEFAULT_QUEUED_TTL: Duration = Duration::from_secs(3600);

/// How log lines of the gateway itself are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub auth: AuthSettings,
    /// Idle SSE streams get a comment this often.
    pub keepalive: Duration,
    /// Finished jobs are kept this long once nobody reads them.
    pub retention: Duration,
    /// Unfinished jobs with no activity and nobody attached are dropped after this.
    pub idle_timeout: Duration,
    /// On shutdown, uploads and responses get this long to finish.
    pub drain_timeout: Duration,
    /// On SIGTERM, `/readyz` answers 503 at once but serving goes on this long, so a load
    /// balancer notices before the drain starts.
    pub shutdown_grace: Duration,
    /// Serve HTTPS with this certificate and key (reloaded on SIGHUP).
    pub tls: Option<TlsFiles>,
    /// Serve `/metrics` (and the probes) here instead of on the main listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Serve `/metrics` on the main listener too (`--metrics-public`); off, it answers 404
    /// there, since job counts and traffic are not for every client.
    pub metrics_public: bool,
    /// An `http://` JWKS URL was accepted on purpose (`--jwks-allow-http`).
    pub jwks_allow_http: bool,
    /// Verification keys from a JWKS document, besides the secret and `--jwt-key`s.
    pub jwks: Option<JwksConfig>,
    /// The file the HMAC secret was read from, shown by `--print-config`.
    pub jwt_secret_file: Option<PathBuf>,
    /// An HMAC secret under 32 bytes was accepted on purpose (`--jwt-allow-short-secret`).
    pub jwt_allow_short_secret: bool,
    /// Where each key's value came from, for `--print-config`.
    pub sources: Sources,
    /// A client has this long to send its request headers.
    pub header_read_timeout: Duration,
    /// A job with 1,000 readers or more wakes them at most once per this window (fewer
    /// readers: proportionally less); lines inside it share a write.
    pub gather: Duration,
    /// Origins allowed by CORS (`*` for any); empty: no CORS headers.
    pub cors_origins: Vec<String>,
    pub limits: Limits,
    /// Capgo's `logs_url` routes: a WebSocket speaking Capgo's frames, and SSE.
    pub capgo: CapgoConfig,
    /// Where jobs are kept beyond memory.
    pub store: StoreConfig,
    /// A running job whose publisher has been gone this long becomes `lost`.
    pub publisher_grace: Duration,
    /// A queued job nobody published to for this long becomes `expired`.
    pub queued_ttl: Duration,
    pub log_format: LogFormat,
    /// Started with `--dev`: a random secret and a printed example.
    pub dev: bool,
    /// `Content-Encoding` on SSE streams: codings, levels.
    pub compression: crate::compress::CompressionConfig,
}

/// A PEM certificate chain and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where the JWKS comes from and how often it is fetched again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksConfig {
    pub source: JwksSource,
    /// Fetched again this often; a token with an unknown `kid` may also trigger a fetch
    /// (at most once per [`crate::auth::JWKS_MIN_REFRESH`]).
    pub refresh: Duration,
}

/// A JWKS URL (`http://` or `https://`) or a local file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    Url(String),
    File(PathBuf),
}

/// Bounds on everything that could grow.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_jobs: usize,
    pub max_subscribers_per_job: usize,
    /// Concurrent long-lived reads per token subject: SSE, Capgo WebSocket, `?wait=`,
    /// `/log` downloads.
    pub max_streams_per_subject: usize,
    /// Concurrent uploads per token subject: a sibling cap, since one publish subject
    /// often serves a whole build fleet; at most half of `max_connections` applies.
    pub max_uploads_per_subject: usize,
    /// Longer plain-text lines are split.
    pub max_line_bytes: usize,
    /// Longer NDJSON records are refused (`400 bad_record`).
    pub max_record_bytes: usize,
    pub max_header_bytes: usize,
    /// Records held in memory per job; the oldest are evicted beyond it.
    pub job_memory_bytes: usize,
    /// Records held in memory by all jobs; uploads wait beyond it.
    pub memory_budget_bytes: usize,
    /// Log text stored per job; later lines are counted, not stored.
    pub max_log_bytes: u64,
    /// Bytes a subscriber takes from the log per write.
    pub batch_bytes: usize,
}

/// When appended records are forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Every so often, by a background thread; and at each terminal status.
    Interval(Duration),
    /// Before each append is acknowledged to its publisher.
    Always,
    /// Only at the terminal status; the OS writes back when it likes.
    Never,
}

/// Where jobs are kept beyond memory, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `None`: memory only (`--memory-only`); a restart forgets every job.
    pub data_dir: Option<PathBuf>,
    pub fsync: Fsync,
    /// A finished job's spool is deleted this long after it finished.
    pub disk_retention: Duration,
    /// The data directory's size at most; the oldest finished jobs are deleted first.
    pub max_disk_bytes: u64,
    /// A deleted job answers `410` for this long.
    pub tombstone_ttl: Duration,
    /// Share jobs with other instances through Redis (`--redis-url`) instead of a spool.
    pub redis: Option<RedisConfig>,
    /// Move finished logs to object storage (`--archive-url`), behind the spool.
    pub archive: Option<ArchiveConfig>,
}

/// Where the shared store is.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` (TLS), with any `+cluster` marker removed.
    pub url: String,
    /// Redis Cluster (`--redis-cluster` or a `redis+cluster://` URL).
    pub cluster: bool,
    /// Each round trip at most; then the store reports Redis unavailable.
    pub timeout: Duration,
    /// Replicas that must have a publish before it is acknowledged (`WAIT`; 0: none).
    pub wait_replicas: u32,
}

impl std::fmt::Debug for RedisConfig {
    // The URL may carry a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("cluster", &self.cluster)
            .field("timeout", &self.timeout)
            .field("wait_replicas", &self.wait_replicas)
            .finish_non_exhaustive()
    }
}

impl StoreConfig {
    /// Memory only: what [`Config::new_hmac`] starts with, so embedders and tests opt
    /// into a data directory.
    pub fn memory_only() -> Self {
        Self {
            data_dir: None,
            fsync: Fsync::Interval(DEFAULT_FSYNC_INTERVAL),
            disk_retention: DEFAULT_DISK_RETENTION,
            max_disk_bytes: DEFAULT_MAX_DISK_BYTES,
            tombstone_ttl: DEFAULT_TOMBSTONE_TTL,
            redis: None,
            archive: None,
        }
    }

    /// A spool under `dir` with the default policy.
    pub fn spool(dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: Some(dir.into()),
            ..Self::memory_only()
        }
    }
}

/// The Capgo compatibility routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapgoConfig {
    /// Serve the routes at all.
    pub enabled: bool,
    /// Path the routes live under: `{prefix}/{job}`, `{prefix}/{job}/start`,
    /// `{prefix}/{job}/stream`. Starts with `/`, no trailing `/`.
    pub prefix: String,
}

impl Default for CapgoConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            prefix: DEFAULT_CAPGO_PREFIX.to_string(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_jobs: DEFAULT_MAX_JOBS,
            max_subscribers_per_job: DEFAULT_MAX_SUBSCRIBERS_PER_JOB,
            max_streams_per_subject: DEFAULT_MAX_STREAMS_PER_SUBJECT,
            max_uploads_per_subject: DEFAULT_MAX_UPLOADS_PER_SUBJECT,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            job_memory_bytes: DEFAULT_JOB_MEMORY_BYTES,
            memory_budget_bytes: DEFAULT_MEMORY_BUDGET_BYTES,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            batch_bytes: DEFAULT_BATCH_BYTES,
        }
    }
}

impl Config {
    /// Defaults everywhere, verifying HS256/384/512 tokens with `secret`, keeping jobs
    /// in memory only: for tests and embedding.
    pub fn new_hmac(secret: impl Into<Vec<u8>>, issuer: &str, audience: &str) -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080))),
            auth: AuthSettings {
                hmac_secret: Some(secret.into()),
                keys: Vec::new(),
                issuer: issuer.to_string(),
                audience: audience.to_string(),
                job_claim: DEFAULT_JOB_CLAIM.to_string(),
                leeway: DEFAULT_LEEWAY,
            },
            keepalive: DEFAULT_KEEPALIVE,
            retention: DEFAULT_RETENTION,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            tls: None,
            metrics_listen: None,
            metrics_public: false,
            jwks_allow_http: false,
            jwks: None,
            jwt_secret_file: None,
            jwt_allow_short_secret: false,
            sources: Sources::default(),
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            gather: DEFAULT_GATHER,
            cors_origins: Vec::new(),
            limits: Limits::default(),
            capgo: CapgoConfig::default(),
            store: StoreConfig::memory_only(),
            publisher_grace: DEFAULT_PUBLISHER_GRACE,
            queued_ttl: DEFAULT_QUEUED_TTL,
            log_format: LogFormat::Pretty,
            dev: false,
            compression: crate::compress::CompressionConfig::default(),
        }
    }

    /// Builds the config from flags, environment and file, and validates it.
    pub fn load(args: &ServeArgs, env: &dyn Env) -> Result<Self, ConfigError> {
        load::load(args, env)
    }

    /// Like [`Config::load`], but a missing secret, issuer or audience is returned beside
    /// the config (which has them empty) instead of stopping it: `--print-config` shows
    /// what is set exactly when something is missing.
    pub fn load_for_print(
        args: &ServeArgs,
        env: &dyn Env,
    ) -> Result<(Self, Option<ConfigError>), ConfigError> {
        load::load_for_print(args, env)
    }

    /// The effective configuration as TOML, every key with its source, secrets redacted.
    pub fn to_toml(&self) -> String {
        print::render(self)
    }
}

/// A config value that is missing or wrong; names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}
