//! `tailgate serve --print-config`: the effective configuration as TOML, each key with
//! the layer its value came from, secrets redacted. The output is itself a valid config
//! file (a redacted secret aside).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use toml::Value;

use super::load::FILE_KEYS;
use super::{
    Config, Fsync, JwksSource, LogFormat, DEFAULT_ARCHIVE_QUIET, DEFAULT_ARCHIVE_UPLOADS,
    DEFAULT_ARCHIVE_ZSTD_LEVEL, DEFAULT_DATA_DIR, DEFAULT_FSYNC_INTERVAL, DEFAULT_JWKS_REFRESH,
    DEFAULT_REDIS_TIMEOUT,
};

/// Shown instead of a secret.
const REDACTED: &str = "<redacted>";

/// Which layer set a key, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Source {
    #[default]
    Default,
    File,
    Env,
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Default => "default",
            Self::File => "file",
            Self::Env => "env",
            Self::Flag => "flag",
        })
    }
}

/// The source of every key that was set; any other key has its default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources(BTreeMap<String, Source>);

impl Sources {
    /// The source of `key` (file spelling, `_`, or flag spelling, `-`).
    pub fn get(&self, key: &str) -> Source {
        self.0
            .get(&key.replace('-', "_"))
            .copied()
            .unwrap_or_default()
    }

    pub(super) fn set(&mut self, key: &str, source: Source) {
        self.0.insert(key.replace('-', "_"), source);
    }
}

pub(super) fn render(c: &Config) -> String {
    let mut out = String::from(
        "# Effective tailgate configuration. Each key says where its value came from:\n\
         # flag, env (TAILGATE_<KEY>), file (--config) or default. Secrets are redacted.\n",
    );
    for (key, value) in values(c) {
        let source = c.sources.get(key);
        // Writing to a String cannot fail.
        let _ = match value {
            Some(v) => writeln!(out, "{key} = {v} # {source}"),
            None => writeln!(out, "# {key} is not set # {source}"),
        };
    }
    out
}

/// Every file key with its effective value (`None`: not set), in `FILE_KEYS` order.
pub(super) fn values(c: &Config) -> Vec<(&'static str, Option<Value>)> {
    let text = |s: &str| Some(Value::String(s.to_string()));
    let secs = |d: std::time::Duration| Some(Value::Integer(d.as_secs() as i64));
    let int = |n: u64| Some(Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)));
    let list =
        |items: Vec<String>| Some(Value::Array(items.into_iter().map(Value::String).collect()));
    let path = |p: Option<&std::path::PathBuf>| p.and_then(|p| text(&p.display().to_string()));
    let lim = &c.limits;
    let secret_given = c.auth.hmac_secret.is_some() && c.jwt_secret_file.is_none();
    FILE_KEYS
        .iter()
        .map(|&key| {
            let value = match key {
                "listen" => text(&c.listen.to_string()),
                "jwt_secret" => secret_given.then(|| Value::String(REDACTED.into())),
                "jwt_secret_file" => path(c.jwt_secret_file.as_ref()),
                "jwt_allow_short_secret" => Some(Value::Boolean(c.jwt_allow_short_secret)),
                // Empty: missing (`--print-config` shows a config that cannot start).
                "jwt_issuer" => (!c.auth.issuer.is_empty()).then(|| c.auth.issuer.clone().into()),
                "jwt_audience" => {
                    (!c.auth.audience.is_empty()).then(|| c.auth.audience.clone().into())
                }
                "jwt_key" => list(c.auth.keys.iter().map(ToString::to_string).collect()),
                "jwt_job_claim" => text(&c.auth.job_claim),
                "jwt_leeway_secs" => secs(c.auth.leeway),
                "keepalive_secs" => secs(c.keepalive),
                "retention_secs" => secs(c.retention),
                "idle_timeout_secs" => secs(c.idle_timeout),
                "drain_timeout_secs" => secs(c.drain_timeout),
                "shutdown_grace_secs" => secs(c.shutdown_grace),
                "tls_cert" => path(c.tls.as_ref().map(|t| &t.cert)),
                "tls_key" => path(c.tls.as_ref().map(|t| &t.key)),
                "metrics_listen" => c.metrics_listen.and_then(|a| text(&a.to_string())),
                "metrics_public" => Some(Value::Boolean(c.metrics_public)),
                "jwks_url" => match c.jwks.as_ref().map(|j| &j.source) {
                    Some(JwksSource::Url(url)) => text(&redact_url(url)),
                    _ => None,
                },
                "jwks_allow_http" => Some(Value::Boolean(c.jwks_allow_http)),
                "jwks_file" => match c.jwks.as_ref().map(|j| &j.source) {
                    Some(JwksSource::File(file)) => path(Some(file)),
                    _ => None,
                },
                "jwks_refresh_secs" => {
                    secs(c.jwks.as_ref().map_or(DEFAULT_JWKS_REFRESH, |j| j.refresh))
                }
                "header_read_timeout_secs" => secs(c.header_read_timeout),
                "gather_ms" => int(c.gather.as_millis() as u64),
                "cors_origin" => list(c.cors_origins.clone()),
                "max_connections" => int(lim.max_connections as u64),
                "max_jobs" => int(lim.max_jobs as u64),
                "max_subscribers_per_job" => int(lim.max_subscribers_per_job as u64),
                "max_streams_per_subject" => int(lim.max_streams_per_subject as u64),
                "max_uploads_per_subject" => int(lim.max_uploads_per_subject as u64),
                "max_line_bytes" => int(lim.max_line_bytes as u64),
                "max_record_bytes" => int(lim.max_record_bytes as u64),
                "max_header_bytes" => int(lim.max_header_bytes as u64),
                "job_memory_bytes" => int(lim.job_memory_bytes as u64),
                "memory_budget_bytes" => int(lim.memory_budget_bytes as u64),
                "max_log_bytes" => int(lim.max_log_bytes),
                "batch_bytes" => int(lim.batch_bytes as u64),
                "log_format" => text(match c.log_format {
                    LogFormat::Pretty => "pretty",
                    LogFormat::Json => "json",
                }),
                "compression" => text(&c.compression.codings.to_string()),
                "gzip_level" => int(u64::from(c.compression.gzip_level)),
                "zstd_level" => Some(Value::Integer(i64::from(c.compression.zstd_level))),
                "capgo_compat" => Some(Value::Boolean(c.capgo.enabled)),
                "capgo_prefix" => text(&c.capgo.prefix),
                "dev" => Some(Value::Boolean(c.dev)),
                // Unused with memory_only or redis_url, but it has a default all the same.
                "data_dir" => match &c.store.data_dir {
                    Some(dir) => path(Some(dir)),
                    None => text(DEFAULT_DATA_DIR),
                },
                "memory_only" => Some(Value::Boolean(
                    c.store.data_dir.is_none() && c.store.redis.is_none(),
                )),
                // The URL's user, password and query are secrets.
                "redis_url" => c
                    .store
                    .redis
                    .as_ref()
                    .and_then(|r| text(&redact_url(&r.url))),
                "redis_cluster" => Some(Value::Boolean(
                    c.store.redis.as_ref().is_some_and(|r| r.cluster),
                )),
                "redis_timeout_ms" => int(c
                    .store
                    .redis
                    .as_ref()
                    .map_or(DEFAULT_REDIS_TIMEOUT, |r| r.timeout)
                    .as_millis() as u64),
                "redis_wait_replicas" => int(c
                    .store
                    .redis
                    .as_ref()
                    .map_or(0, |r| u64::from(r.wait_replicas))),
                "archive_url" => c
                    .store
                    .archive
                    .as_ref()
                    .and_then(|a| text(&redact_url(&a.url))),
                "archive_endpoint" => c
                    .store
                    .archive
                    .as_ref()
                    .and_then(|a| a.endpoint.as_deref())
                    .and_then(|e| text(&redact_url(e))),
                "archive_quiet_secs" => secs(
                    c.store
                        .archive
                        .as_ref()
                        .map_or(DEFAULT_ARCHIVE_QUIET, |a| a.quiet),
                ),
                "archive_uploads" => int(c
                    .store
                    .archive
                    .as_ref()
                    .map_or(DEFAULT_ARCHIVE_UPLOADS, |a| a.uploads)
                    as u64),
                "archive_zstd_level" => Some(Value::Integer(i64::from(
                    c.store
                        .archive
                        .as_ref()
                        .map_or(DEFAULT_ARCHIVE_ZSTD_LEVEL, |a| a.level),
                ))),
                "fsync" => text(match c.store.fsync {
                    Fsync::Interval(_) => "interval",
                    Fsync::Always => "always",
                    Fsync::Never => "never",
                }),
                "fsync_interval_ms" => int(match c.store.fsync {
                    Fsync::Interval(every) => every.as_millis() as u64,
                    _ => DEFAULT_FSYNC_INTERVAL.as_millis() as u64,
                }),
                "disk_retention_secs" => secs(c.store.disk_retention),
                "max_disk_bytes" => int(c.store.max_disk_bytes),
                "tombstone_secs" => secs(c.store.tombstone_ttl),
                "publisher_grace_secs" => secs(c.publisher_grace),
                "queued_ttl_secs" => secs(c.queued_ttl),
                // A key added to FILE_KEYS without a line here; the test below names it.
                _ => text("<not printable>"),
            };
            (key, value)
        })
        .collect()
}

/// A URL with its secrets taken out, for `--print-config`, start-up errors and logs:
/// `scheme://user:pass@host/path?query#frag` as `scheme://<redacted>@host/path?<redacted>`.
///
/// Passwords are often not percent-encoded, so everything up to the *last* `@` counts as
/// user info (a password may hold `@`, `:`, `/`, `?` or `#`); an `@` in a query then
/// hides the host too, which costs only readability. Query string and fragment are cut.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((_, host)) => (true, host),
        None => (false, rest),
    };
    let (rest, cut) = match rest.find(['?', '#']) {
        Some(i) => (&rest[..i], true),
        None => (rest, false),
    };
    let mut out = String::with_capacity(url.len());
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push_str("://");
    }
    if userinfo {
        out.push_str(REDACTED);
        out.push('@');
    }
    out.push_str(rest);
    if cut {
        out.push('?');
        out.push_str(REDACTED);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{MapEnv, ServeArgs};
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> MapEnv {
        MapEnv(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn a_redis_url_is_printed_without_its_password() {
        let e = env(&[
            ("TAILGATE_JWT_SECRET", "s3cret-s3cret-s3cret-s3cret-s3cr"),
            ("TAILGATE_JWT_ISSUER", "i"),
            ("TAILGATE_JWT_AUDIENCE", "a"),
            (
                "TAILGATE_REDIS_URL",
                "redis+cluster://u:hunter2@node:7000/0",
            ),
        ]);
        let text = Config::load(&ServeArgs::default(), &e).unwrap().to_toml();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("redis_url = \"redis://<redacted>@node:7000/0\" # env"),
            "{text}"
        );
        assert!(text.contains("redis_cluster = true"), "{text}");
        assert!(text.contains("memory_only = false"), "{text}");
    }

    #[test]
    fn every_key_is_printed_with_its_source_and_secrets_are_not() {
        let dir = std::env::temp_dir().join(format!("tailgate-print-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(&file, "jwt_issuer = \"file-iss\"\nmax_jobs = 3\n").unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            keepalive_secs: Some(9),
            ..Default::default()
        };
        let e = env(&[
            ("TAILGATE_JWT_SECRET", "hunter2-hunter2-hunter2-hunter2!"),
            ("TAILGATE_JWT_AUDIENCE", "env-aud"),
        ]);
        let c = Config::load(&args, &e).unwrap();
        let text = c.to_toml();
        assert!(!text.contains("hunter2"), "{text}");
        for key in FILE_KEYS {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{key} = "))
                    || l.starts_with(&format!("# {key} is not set"))),
                "{key} missing:\n{text}"
            );
        }
        assert!(!text.contains("<not printable>"), "{text}");
        for line in [
            "jwt_secret = \"<redacted>\" # env",
            "jwt_issuer = \"file-iss\" # file",
            "jwt_audience = \"env-aud\" # env",
            "keepalive_secs = 9 # flag",
            "max_jobs = 3 # file",
            "retention_secs = 3600 # default",
            "# tls_cert is not set # default",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
        }

        // The output is a config file: read back, it gives the same settings.
        let round = text.replace("\"<redacted>\"", "\"hunter2-hunter2-hunter2-hunter2!\"");
        std::fs::write(&file, round).unwrap();
        let again = Config::load(
            &ServeArgs {
                config: Some(file),
                ..Default::default()
            },
            &env(&[]),
        )
        .unwrap();
        assert_eq!(
            values(&again)
                .into_iter()
                .map(|(k, v)| (k, v.map(|v| v.to_string())))
                .collect::<Vec<_>>(),
            values(&c)
                .into_iter()
                .map(|(k, v)| (k, v.map(|v| v.to_string())))
                .collect::<Vec<_>>()
        );
    }
}
