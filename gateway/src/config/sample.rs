//! The sample configuration `deploy/tailgate.toml`, rendered from the one source of truth:
//! each key's flag help (`ServeArgs`' doc comments, what `serve --help` shows), its
//! default (what `--print-config` prints for an empty configuration), and the few values
//! a deployment sets. A test compares the file with [`render`], and each help's
//! `[default: ...]` with the real default, so neither can drift.

use clap::Args as _;

use super::print::values;
use super::{Config, MapEnv, ServeArgs};

/// The sample's sections, every file key exactly once (a test checks).
const SECTIONS: &[(&str, &[&str])] = &[
    (
        "Listening",
        &[
            "listen",
            "tls_cert",
            "tls_key",
            "metrics_listen",
            "metrics_public",
            "header_read_timeout_secs",
        ],
    ),
    (
        "Tokens",
        &[
            "jwt_secret_file",
            "jwt_secret",
            "jwt_allow_short_secret",
            "jwt_key",
            "jwks_url",
            "jwks_file",
            "jwks_allow_http",
            "jwks_refresh_secs",
            "jwt_issuer",
            "jwt_audience",
            "jwt_job_claim",
            "jwt_leeway_secs",
        ],
    ),
    (
        "Streams and jobs",
        &[
            "keepalive_secs",
            "gather_ms",
            "retention_secs",
            "idle_timeout_secs",
            "cors_origin",
            "capgo_compat",
            "capgo_prefix",
        ],
    ),
    ("Compression", &["compression", "gzip_level", "zstd_level"]),
    (
        "Durability",
        &[
            "data_dir",
            "memory_only",
            "fsync",
            "fsync_interval_ms",
            "disk_retention_secs",
            "max_disk_bytes",
            "tombstone_secs",
            "publisher_grace_secs",
            "queued_ttl_secs",
        ],
    ),
    (
        "Several instances (README: Running several instances)",
        &[
            "redis_url",
            "redis_cluster",
            "redis_timeout_ms",
            "redis_wait_replicas",
        ],
    ),
    (
        "Archive (README: Archive)",
        &[
            "archive_url",
            "archive_endpoint",
            "archive_quiet_secs",
            "archive_uploads",
            "archive_zstd_level",
        ],
    ),
    ("Shutdown", &["shutdown_grace_secs", "drain_timeout_secs"]),
    (
        "Limits",
        &[
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
        ],
    ),
    ("Logs", &["log_format", "dev"]),
];

/// What this sample deployment sets, unlike the defaults.
const CHOICES: &[(&str, &str)] = &[
    ("listen", "\"0.0.0.0:8080\""),
    ("metrics_listen", "\"0.0.0.0:9090\""),
    ("jwt_secret_file", "\"/etc/tailgate/jwt-secret\""),
    ("jwt_issuer", "\"capgo\""),
    ("jwt_audience", "\"build-logs\""),
    ("data_dir", "\"/var/lib/tailgate\""),
    ("shutdown_grace_secs", "5"),
    ("log_format", "\"json\""),
];

/// Example values for keys without a default, shown commented out.
const EXAMPLES: &[(&str, &str)] = &[
    ("tls_cert", "\"/etc/tailgate/tls/tls.crt\""),
    ("tls_key", "\"/etc/tailgate/tls/tls.key\""),
    (
        "jwt_secret",
        "\"...\" # better: jwt_secret_file or TAILGATE_JWT_SECRET",
    ),
    (
        "jwt_key",
        "[\"kid=2026-11,alg=RS256,file=/etc/tailgate/keys/2026-11.pem\"]",
    ),
    (
        "jwks_url",
        "\"https://auth.example.com/.well-known/jwks.json\"",
    ),
    ("jwks_file", "\"/etc/tailgate/jwks.json\""),
    ("cors_origin", "[\"https://console.example.com\"]"),
    (
        "redis_url",
        "\"redis://redis:6379/0\" # with a password: TAILGATE_REDIS_URL",
    ),
    (
        "archive_url",
        "\"s3://build-logs/tailgate\" # credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY",
    ),
    ("archive_endpoint", "\"http://minio:9000\""),
];

const HEADER: &str = "\
# Sample Tailgate configuration: every key, with its default where it has one.
# Generated from the gateway's own flag help and defaults (gateway/src/config/sample.rs);
# a test fails when they differ: TAILGATE_BLESS=1 cargo test -p tailgate --lib sample
# rewrites it.
#
# Each key is also a flag (`listen` is `--listen`, `_` becomes `-`) and an environment
# variable (`TAILGATE_LISTEN`). Flags win over the environment, the environment over this
# file, this file over the defaults. Check what is in effect, and where each value came
# from, without starting the server:
#
#   tailgate serve --print-config --config /etc/tailgate/tailgate.toml
#
# Keys this deployment sets are uncommented (with the default beside them); every other
# key is commented out, showing its default or an example.
";

/// Longest comment line.
const WIDTH: usize = 92;

/// The flag help of every `serve` key, without its `[default: ...]`, by file key.
fn help(key: &str) -> (String, Option<String>) {
    let cmd = ServeArgs::augment_args(clap::Command::new("serve"));
    let flag = key.replace('_', "-");
    let text = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some(flag.as_str()))
        .and_then(|a| a.get_help())
        .map(ToString::to_string)
        .unwrap_or_default();
    match text.rsplit_once(" [default: ") {
        Some((help, default)) => (
            help.to_string(),
            Some(default.trim_end_matches(']').to_string()),
        ),
        None => (text, None),
    }
}

/// The configuration of an empty environment: every key at its default.
fn defaults() -> Config {
    let empty = MapEnv::default();
    match super::load::load_for_print(&ServeArgs::default(), &empty) {
        Ok((c, _)) => c,
        // An empty configuration loads (the token keys missing aside).
        Err(_) => Config::new_hmac(Vec::new(), "", ""),
    }
}

/// Wraps `text` into `# ` lines.
fn comment(out: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > WIDTH && line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

/// `deploy/tailgate.toml` as it must read.
pub(crate) fn render() -> String {
    let defaults: Vec<(&str, Option<String>)> = values(&defaults())
        .into_iter()
        .map(|(k, v)| (k, v.map(|v| v.to_string())))
        .collect();
    // An empty list is no default worth showing: an example says more.
    let default_of = |key: &str| {
        defaults
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.clone())
            .filter(|v| v != "[]")
    };
    let lookup = |table: &[(&str, &'static str)], key: &str| {
        table.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    };
    let mut out = String::from(HEADER);
    for (title, keys) in SECTIONS {
        out.push_str(&format!("\n# --- {title} "));
        let used = 8 + title.len();
        out.push_str(&"-".repeat(WIDTH.saturating_sub(used)));
        out.push('\n');
        for key in *keys {
            let (help, _) = help(key);
            comment(&mut out, &help);
            let default = default_of(key);
            let line = match (lookup(CHOICES, key), &default, lookup(EXAMPLES, key)) {
                (Some(choice), Some(d), _) => format!("{key} = {choice} # default: {d}"),
                (Some(choice), None, _) => format!("{key} = {choice}"),
                (None, Some(d), _) => format!("# {key} = {d}"),
                (None, None, Some(example)) => format!("# {key} = {example}"),
                (None, None, None) => format!("# {key} is not set by default"),
            };
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::load::FILE_KEYS;
    use super::*;

    fn sample_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/tailgate.toml")
    }

    #[test]
    fn the_sections_hold_every_key_once() {
        let mut listed: Vec<&str> = SECTIONS
            .iter()
            .flat_map(|(_, keys)| keys.iter().copied())
            .collect();
        listed.sort_unstable();
        let mut known = FILE_KEYS.to_vec();
        known.sort_unstable();
        assert_eq!(listed, known);
        for (key, _) in CHOICES.iter().chain(EXAMPLES) {
            assert!(FILE_KEYS.contains(key), "{key}");
        }
    }

    #[test]
    fn every_flag_is_a_file_key_and_the_other_way_round() {
        let cmd = ServeArgs::augment_args(clap::Command::new("serve"));
        let mut flags: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| !matches!(*l, "config" | "print-config"))
            .map(|l| l.replace('-', "_"))
            .collect();
        flags.sort_unstable();
        let mut keys: Vec<String> = FILE_KEYS.iter().map(ToString::to_string).collect();
        keys.sort_unstable();
        assert_eq!(flags, keys);
    }

    /// `4 MiB` as `4194304`, strings unquoted, a note after a comma dropped (`0, no
    /// wait`), so help and TOML compare.
    fn normal(value: &str) -> String {
        let value = value.split(", ").next().unwrap_or(value).trim_matches('"');
        for (unit, factor) in [(" KiB", 1u64 << 10), (" MiB", 1 << 20), (" GiB", 1 << 30)] {
            if let Some(n) = value.strip_suffix(unit).and_then(|n| n.parse::<u64>().ok()) {
                return (n * factor).to_string();
            }
        }
        value.to_string()
    }

    #[test]
    fn each_help_states_the_real_default() {
        let config = defaults();
        for (key, value) in values(&config) {
            let (_, stated) = help(key);
            let real = value.map(|v| v.to_string());
            match (stated, real) {
                (Some(stated), Some(real)) => {
                    assert_eq!(normal(&stated), normal(&real), "--{key}'s help")
                }
                (None, None) => {}
                // Switches and lists need no `[default: ...]`.
                (None, Some(real)) if real == "false" || real == "[]" => {}
                (stated, real) => panic!("--{key}: help says {stated:?}, default is {real:?}"),
            }
        }
    }

    #[test]
    fn the_deploy_sample_is_rendered_from_the_flags_and_defaults() {
        let want = render();
        let path = sample_path();
        if std::env::var("TAILGATE_BLESS").as_deref() == Ok("1") {
            std::fs::write(&path, &want).expect("write the sample");
        }
        let have = std::fs::read_to_string(&path).expect("read the sample");
        assert!(
            have == want,
            "deploy/tailgate.toml differs from the flags and defaults; \
             TAILGATE_BLESS=1 cargo test -p tailgate --lib sample rewrites it. Expected:\n{want}"
        );
        // It is a config the gateway loads.
        let parsed: toml::Table = have.parse().expect("TOML");
        assert_eq!(parsed["jwt_issuer"].as_str(), Some("capgo"));
    }
}
