//! Command line: the scenario and its flags. The parsed [`Settings`] also travel, as JSON, to
//! the child processes of `--procs`, so parent and children agree on every knob.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

/// Load scenarios with correctness accounting, for Tailgate and Nchan side by side.
#[derive(Debug, Clone, Parser, Serialize, Deserialize)]
#[command(name = "tailgate-loadtest", version, about)]
pub struct Settings {
    /// Publish the lines of the build logs in DIR (`*.log`, see loadtest/corpus/) instead of
    /// padding: each line is `<counter> <micros> <corpus line>`, the corpus cycled through.
    #[arg(long, value_name = "DIR")]
    pub corpus: Option<PathBuf>,

    /// Readers ask for this `Content-Encoding` (`gzip` or `zstd`) and decode it; `off` asks
    /// for none. Bytes on the wire per reader are reported either way.
    #[arg(long, default_value = "off", value_name = "CODING")]
    pub compression: String,

    /// Scenario to run.
    #[arg(value_enum, required_unless_present = "child")]
    pub scenario: Option<Scenario>,

    /// Server base URL (http only, loopback).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// More instances of the same gateway (sharing jobs through Redis): readers are spread
    /// round-robin over `--url` and these; publishers use `--url`. Repeatable.
    #[arg(long = "reader-url", value_name = "URL")]
    #[serde(default)]
    pub reader_urls: Vec<String>,

    /// Which server speaks at `--url`.
    #[arg(long, value_enum, default_value_t = Target::Tailgate)]
    pub target: Target,

    /// HMAC secret the gateway verifies tokens with (tailgate target).
    #[arg(
        long,
        env = "TAILGATE_JWT_SECRET",
        default_value = "",
        hide_env_values = true
    )]
    pub jwt_secret: String,

    /// Token issuer (`iss`) the gateway expects.
    #[arg(long, env = "TAILGATE_JWT_ISSUER", default_value = "capgo")]
    pub jwt_issuer: String,

    /// Token audience (`aud`) the gateway expects.
    #[arg(long, env = "TAILGATE_JWT_AUDIENCE", default_value = "build-logs")]
    pub jwt_audience: String,

    /// Number of jobs, each with its own publisher.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,

    /// Readers per job.
    #[arg(long, default_value_t = 100)]
    pub readers: usize,

    /// Lines per second per job, or `max` (as fast as the server takes them).
    #[arg(long, default_value = "1000", value_parser = parse_rate)]
    pub rate: Rate,

    /// Bytes per line, line end excluded (at least the counter and timestamp, ~25 bytes).
    #[arg(long, default_value_t = 100)]
    pub line_bytes: usize,

    /// How long publishers publish (idle: how long readers stay connected), e.g. `10`, `10s`, `500ms`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "duration_ms")]
    pub duration: Duration,

    /// Processes the readers are spread over (each has its own file limit).
    #[arg(long, default_value_t = 1)]
    pub procs: usize,

    /// Server process to account CPU and memory for (Linux `/proc`); repeat it to sum
    /// several (every instance, and Redis).
    #[arg(long)]
    #[serde(default)]
    pub server_pid: Vec<u32>,

    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// No live progress bar.
    #[arg(long)]
    pub no_progress: bool,

    /// Connections being opened at once (connects beyond this wait their turn).
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,

    /// After publishing ends, how long readers may take to receive the rest.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "duration_ms")]
    pub drain: Duration,

    /// slow: share of each job's readers that are slow (0..1).
    #[arg(long, default_value_t = 0.1)]
    pub slow_share: f64,

    /// slow: what slow readers do until publishing ends.
    #[arg(long, value_enum, default_value_t = SlowMode::Stall)]
    pub slow_mode: SlowMode,

    /// slow, trickle mode: bytes per second a slow reader reads.
    #[arg(long, default_value_t = 4096)]
    pub slow_bytes_per_sec: u64,

    /// churn/resume: mean time a connection lives before the reader leaves or drops it
    /// (each connection draws 0.5x to 1.5x of this).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    #[serde(with = "duration_ms")]
    pub hold: Duration,

    /// Tokio worker threads per process (0: 2 for a single process, 1 per child with --procs).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,

    /// Prefix of the job names (default: random per run, so jobs start empty).
    #[arg(long)]
    pub run_id: Option<String>,

    /// Tailgate: readers' first connection sends `Last-Event-ID: ID`, so they follow only
    /// what comes after a history published beforehand (the job `<run-id>-fanout-0` of a
    /// `--run-id` run); the history is not read, timed or counted.
    #[arg(long, value_name = "ID")]
    #[serde(default)]
    pub start_after: Option<String>,

    /// Internal: run as a reader child of `--procs` (settings arrive on stdin).
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub child: bool,
}

impl Settings {
    /// Checks flags that clap cannot check alone.
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.compression.as_str(), "off" | "gzip" | "zstd") {
            return Err(format!(
                "--compression {:?} is not off, gzip or zstd",
                self.compression
            ));
        }
        if self.jobs == 0 {
            return Err("--jobs must be at least 1".into());
        }
        if self.procs == 0 {
            return Err("--procs must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.slow_share) {
            return Err("--slow-share must be between 0 and 1".into());
        }
        if !self.url.starts_with("http://") {
            return Err("--url must be an http:// URL".into());
        }
        if self.reader_urls.iter().any(|u| !u.starts_with("http://")) {
            return Err("--reader-url must be an http:// URL".into());
        }
        if self.target == Target::Tailgate && self.jwt_secret.is_empty() {
            return Err(
                "--jwt-secret (or TAILGATE_JWT_SECRET) is required for --target tailgate".into(),
            );
        }
        if self.connect_concurrency == 0 {
            return Err("--connect-concurrency must be at least 1".into());
        }
        Ok(())
    }

    pub fn scenario(&self) -> Scenario {
        self.scenario.unwrap_or(Scenario::Fanout)
    }
}

/// The load scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// J jobs x S readers each, publishers at R lines/s per job, for D seconds.
    Fanout,
    /// Readers connected and idle; server memory per reader.
    Idle,
    /// Fanout with a share of slow or stalled readers, compared with a run without them.
    Slow,
    /// Readers connecting and leaving at a rate: connect latency, errors.
    Churn,
    /// Readers that drop and reconnect with Last-Event-ID mid-stream.
    Resume,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Idle => "idle",
            Scenario::Slow => "slow",
            Scenario::Churn => "churn",
            Scenario::Resume => "resume",
        }
    }
}

/// The server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Tailgate,
    Nchan,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Tailgate => "tailgate",
            Target::Nchan => "nchan",
        }
    }
}

/// What slow readers do while publishing runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowMode {
    /// Read nothing until publishing ends, then drain at full speed.
    Stall,
    /// Read `--slow-bytes-per-sec` until publishing ends, then drain at full speed.
    Trickle,
}

/// Publishing rate per job.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rate {
    PerSecond(f64),
    Max,
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::PerSecond(r) => write!(f, "{r}/s"),
            Rate::Max => f.write_str("max"),
        }
    }
}

fn parse_rate(s: &str) -> Result<Rate, String> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(Rate::PerSecond(r)),
        _ => Err(format!("`{s}` is neither a positive number nor `max`")),
    }
}

/// Parses `10`, `10s`, `1.5s`, `500ms` or `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(Duration::from_secs_f64(v * scale)),
        _ => Err(format!("`{s}` is not a duration (e.g. 10, 10s, 500ms, 2m)")),
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates_and_durations() {
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert_eq!(parse_rate("250"), Ok(Rate::PerSecond(250.0)));
        assert!(parse_rate("0").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    }

    #[test]
    fn settings_survive_json() {
        let s = Settings::parse_from([
            "tailgate-loadtest",
            "slow",
            "--rate",
            "max",
            "--jwt-secret",
            "s",
            "--duration",
            "3s",
        ]);
        let back: Settings = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.scenario, Some(Scenario::Slow));
        assert_eq!(back.rate, Rate::Max);
        assert_eq!(back.duration, Duration::from_secs(3));
    }
}
