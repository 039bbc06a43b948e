//! `tailgate tail`: follow a job's log until it ends, and exit as the job did.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::exit::{
    EXIT_IO, EXIT_REFUSED, EXIT_REJECTED, EXIT_TIMEOUT, EXIT_UNAVAILABLE, EXIT_USAGE,
};
use super::follow::{Ending, FollowError, FollowOptions, Follower, Update};
use super::output::{gap_fields, Printer, Style};
use super::url::JobUrl;
use super::{error_chain, token_for, ENV_TOKEN};
use crate::net::http;

/// How long `tail` keeps trying to reach a gateway that does not answer.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(600);

/// Follow a job's log live and exit with the job's result.
///
/// Exit code: 0 when the job succeeded; the job's exit code (1 if it has none) when it
/// failed; 1 for any other end (cancelled, expired, released, lost), said on stderr. Network
/// errors, silent gateways and gateway restarts are retried with backoff (one line on stderr
/// per failed attempt), resuming after the last record printed, so no line is printed twice
/// or skipped. TLS failures (an untrusted certificate, a port without TLS) are not retried.
#[derive(Debug, Clone, Args)]
#[command(after_help = super::exit::TABLE)]
pub struct TailArgs {
    /// The job's stream URL: `http(s)://HOST/v1/jobs/JOB/logs`, the page URL
    /// `.../v1/jobs/JOB/view#token=...`, or a Capgo `http(s)://HOST/build_logs_direct/JOB`
    /// (or its `ws(s)://.../stream` form). A `token` in the query or fragment is used when no
    /// token is given, `last_event_id` (or `last_sequence`) as the resume point; the URL is
    /// never printed with them.
    #[arg(value_name = "LOGS_URL")]
    pub logs_url: String,
    /// A token for the job; a read-only one is enough.
    #[arg(long, env = ENV_TOKEN, hide_env_values = true, value_name = "JWT")]
    pub token: Option<String>,
    /// PEM file of CA certificates to trust besides the public roots (a private CA).
    #[arg(long, env = super::ENV_CA_FILE, value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Strip ANSI colour and other escape sequences from the lines (also when the NO_COLOR
    /// environment variable is set). Without it, lines are printed byte for byte.
    #[arg(long)]
    pub no_color: bool,
    /// Prefix each line with the time the gateway received it (RFC 3339, UTC).
    #[arg(long)]
    pub timestamps: bool,
    /// Print every event as one JSON object per line on stdout (`event` is `log`, `status`,
    /// `custom`, `gap` or `reset`; the other fields are the gateway's), instead of raw lines.
    #[arg(long)]
    pub json: bool,
    /// Print the log so far and exit 0, instead of following until the job ends.
    #[arg(long)]
    pub no_follow: bool,
    /// Give up after this long in all (e.g. `90s`, `10m`, `2h`) and exit 75.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Give up when the gateway stays unreachable (refused, unanswered, overloaded) this
    /// long since the last connection that worked, and exit 69.
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub give_up_after: Duration,
    /// Ask for the stream uncompressed (by default it asks for zstd or gzip, about a
    /// tenth of the bytes).
    #[arg(long)]
    pub no_compress: bool,
    /// How long one attempt may take to connect (TCP and TLS), and then to get the answer's
    /// headers; a gateway that accepts and stays silent is a failed attempt.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Start after this event id (as the gateway sent it in `id:`), instead of from the first
    /// record; overrides a `last_event_id` in the URL.
    #[arg(long, value_name = "ID", conflicts_with = "from_seq")]
    pub last_event_id: Option<String>,
    /// Start at this record (`--from-seq 1`: the whole log).
    #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(u64).range(1..))]
    pub from_seq: Option<u64>,
}

/// Runs `tailgate tail`.
pub fn run(args: TailArgs) -> ExitCode {
    if let Err(code) = super::trust_ca_file(args.ca_file.as_deref()) {
        return code;
    }
    crate::net::http::set_connect_timeout(args.connect_timeout);
    let runtime = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    ExitCode::from(runtime.block_on(tail(args)))
}

/// `tailgate tail` as a future resolving to the exit code.
pub async fn tail(args: TailArgs) -> u8 {
    let url = match JobUrl::from_logs_url(&args.logs_url) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("tailgate: {e}");
            return EXIT_USAGE;
        }
    };
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let mut printer = Printer::new(Style {
        strip_color: args.no_color || no_color,
        timestamps: args.timestamps,
        json: args.json,
    });
    let timeout = args.timeout;
    let work = follow(args, url, &mut printer);
    let code = match timeout {
        Some(t) => match tokio::time::timeout(t, work).await {
            Ok(code) => code,
            Err(_) => {
                let _ = printer.flush();
                let _ = printer.notice(&format!("gave up after {}", humantime::format_duration(t)));
                EXIT_TIMEOUT
            }
        },
        None => work.await,
    };
    let _ = printer.flush();
    code
}

async fn follow(args: TailArgs, url: JobUrl, printer: &mut Printer) -> u8 {
    let status_line = std::io::stderr().is_terminal();
    let mut opts = FollowOptions::new(url, args.token);
    opts.give_up_after = Some(args.give_up_after);
    opts.compress = !args.no_compress;
    if let Some(seq) = args.from_seq {
        opts.resume_from = (seq > 1).then(|| (seq - 1).to_string());
    }
    if let Some(id) = args.last_event_id {
        opts.resume_from = Some(id).filter(|id| !id.is_empty());
    }
    if args.no_follow {
        match last_seq(&opts).await {
            Ok(0) => return 0,
            Ok(last) => opts.until_seq = Some(last),
            Err(code) => return code,
        }
    }
    let where_to = format!("{} (job {})", opts.url.endpoint, opts.url.job);
    let job = opts.url.job.clone();
    let mut follower = Follower::new(opts);
    let mut reconnecting = false;
    loop {
        let update = match follower.next().await {
            Ok(u) => u,
            Err(e) => {
                let _ = printer.flush();
                let _ = printer.notice(&e.to_string());
                return match e {
                    FollowError::Rejected(_) => EXIT_REJECTED,
                    FollowError::Refused(_) => EXIT_REFUSED,
                    FollowError::Unavailable { .. } => EXIT_UNAVAILABLE,
                    FollowError::Unusable { .. } => EXIT_REFUSED,
                };
            }
        };
        let written = match update {
            Update::Connecting if status_line => printer.notice(&format!("connecting to {where_to}")),
            Update::Connected if status_line && reconnecting => {
                reconnecting = false;
                printer.notice("connected again")
            }
            // Always said, terminal or not: a CI log must show why nothing is coming.
            Update::Reconnecting { delay, cause } => {
                reconnecting = true;
                printer.notice(&format!("{cause}; retrying in {}", millis(delay)))
            }
            Update::Connecting | Update::Connected => Ok(()),
            Update::Record(record) => printer.record(&record),
            Update::Gap { from, to } => printer.json_event("gap", gap_fields(from, to)).and_then(|()| {
                printer.notice(&format!(
                    "records {from} to {to} are no longer held by the gateway; {} skipped",
                    to.saturating_sub(from) + 1
                ))
            }),
            Update::Reset { reason } => printer
                .json_event("reset", serde_json::json!({ "reason": reason }))
                .and_then(|()| {
                    printer.notice(&format!(
                        "the gateway does not know this stream's position ({reason}); the log starts again from the beginning"
                    ))
                }),
            Update::End(ending) => {
                let _ = printer.flush();
                if let Ending::Finished { status, exit_code } = &ending {
                    // A CI log must say why tail exits non-zero; a terminal hears it anyway.
                    if status_line || status != "succeeded" {
                        let code = exit_code.map(|c| format!(" (exit code {c})")).unwrap_or_default();
                        let _ = printer.notice(&format!("job {} {status}{code}", job));
                    }
                }
                return if args.no_follow { 0 } else { ending.exit_code() };
            }
        };
        let flushed = written.and_then(|()| {
            if follower.has_buffered() {
                Ok(())
            } else {
                printer.flush()
            }
        });
        if let Err(e) = flushed {
            // A closed pipe (`tail ... | head`) is the reader's choice, not a failure.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return 0;
            }
            eprintln!("tailgate: cannot write the log: {e}");
            return EXIT_IO;
        }
    }
}

/// The job's last seq, for `--no-follow`; `Err` is the exit code.
async fn last_seq(opts: &FollowOptions) -> Result<u64, u8> {
    let url = &opts.url;
    let token = token_for(opts.token.as_deref(), url);
    let mut backoff = opts.backoff.clone();
    let started = tokio::time::Instant::now();
    let limit = opts.give_up_after.unwrap_or(Duration::MAX);
    loop {
        let left = limit.saturating_sub(started.elapsed());
        let ask = async {
            match http::get(&url.endpoint, &url.status_path(), token.as_deref()) {
                Ok(req) => http::exchange_json(&url.endpoint, req).await,
                Err(e) => Err(e),
            }
        };
        let Ok(answer) = tokio::time::timeout(left, ask).await else {
            eprintln!(
                "tailgate: gave up after {}: {} did not answer",
                humantime::format_duration(limit),
                url.endpoint
            );
            return Err(EXIT_UNAVAILABLE);
        };
        let cause = match answer {
            Ok(Ok(status)) => return Ok(status["last_seq"].as_u64().unwrap_or(0)),
            Ok(Err(f)) if f.is_auth() => {
                eprintln!("tailgate: the gateway refused the token: {}", f.message);
                return Err(EXIT_REJECTED);
            }
            Ok(Err(f)) if !f.is_retryable() => {
                eprintln!("tailgate: the gateway refused the request: {f}");
                return Err(EXIT_REFUSED);
            }
            Ok(Err(f)) => f.to_string(),
            Err(e) => match e.hint() {
                Some(hint) if e.is_permanent() => {
                    eprintln!("tailgate: {}; {hint}", error_chain(&e));
                    return Err(EXIT_REFUSED);
                }
                _ => error_chain(&e),
            },
        };
        let Some(left) = limit
            .checked_sub(started.elapsed())
            .filter(|d| !d.is_zero())
        else {
            eprintln!(
                "tailgate: gave up after {}: {cause}",
                humantime::format_duration(limit)
            );
            return Err(EXIT_UNAVAILABLE);
        };
        let delay = backoff.next_delay().min(left);
        eprintln!("tailgate: {cause}; retrying in {}", millis(delay));
        tokio::time::sleep(delay).await;
    }
}

/// A delay to the millisecond, as people read it (`1s 200ms`).
fn millis(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64))
}
