//! `tailgate push`: run a command (or read stdin) and stream its output to a job, then post
//! the job's terminal status; exits with the command's own exit code.

use std::ffi::OsString;
use std::io::Write;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::backlog::DEFAULT_MEMORY_BYTES;
use super::capture::{self, Capture};
use super::exit::{EXIT_REFUSED, EXIT_REJECTED, EXIT_UNAVAILABLE, EXIT_USAGE};
use super::lines::LineSplitter;
use super::mask::{Masker, ENV_MASK};
use super::publisher::{PublishError, Publisher, PublisherOptions};
use super::url::JobUrl;
use super::{error_chain, ENV_TOKEN};
use crate::net::http::{self, HttpError};

/// Exit code when the command cannot be started (as shells use).
const EXIT_NOT_RUN: u8 = 127;

/// After the command exits, its output pipes get this long to close (a background
/// grandchild may hold them open).
const PIPE_GRACE: Duration = Duration::from_secs(5);

/// The token check before the command runs waits this long at most: a slow or silent
/// gateway does not hold the build back.
const CHECK_WAIT: Duration = Duration::from_secs(3);

/// Terminal statuses `--status` accepts.
const STATUSES: [&str; 6] = [
    "succeeded",
    "failed",
    "cancelled",
    "expired",
    "released",
    "lost",
];

/// Stream a build's output to a job: run CMD, or read stdin when no command is given.
///
/// With a command: its stdout and stderr are read through one pipe, so lines keep the order
/// the command wrote them in (`--tty`: a pseudo-terminal; `--separate-streams`: two streams),
/// and sent line by line as each line ends, then the status (`succeeded` for exit code 0,
/// else `failed` with the exit code; `cancelled` when tailgate got SIGINT/SIGTERM, which it
/// forwards to the command), and tailgate exits with the command's exit code (128+N when
/// killed by signal N). The command runs in its own process group with stdin from /dev/null.
///
/// Delivery is at least once to the gateway and exactly once for readers: records carry a
/// sequence `n`, wait in a local buffer (memory, then a private spool file) until
/// acknowledged, and are resent from the job's `last_n` after a broken connection.
#[derive(Debug, Clone, Args)]
#[command(after_help = super::exit::TABLE)]
pub struct PushArgs {
    /// The gateway's base URL, e.g. `https://logs.example.com` (routes are under `/v1/jobs/`).
    #[arg(long, env = "TAILGATE_URL", value_name = "BASE")]
    pub url: String,
    /// The job to publish to.
    #[arg(long, env = "TAILGATE_JOB", value_name = "JOB")]
    pub job: String,
    /// A token for the job with scope `publish`.
    #[arg(long, env = ENV_TOKEN, hide_env_values = true, value_name = "JWT")]
    pub token: Option<String>,
    /// PEM file of CA certificates to trust besides the public roots (a private CA).
    #[arg(long, env = super::ENV_CA_FILE, value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Without a command: the terminal status to post when stdin ends (succeeded, failed,
    /// cancelled, expired, released or lost). Without it the job is left open. With a
    /// command the status follows the command's exit code.
    #[arg(long, value_name = "STATUS", value_parser = STATUSES)]
    pub status: Option<String>,
    /// With --status: the exit code to post with it.
    #[arg(
        long,
        requires = "status",
        value_name = "CODE",
        allow_negative_numbers = true
    )]
    pub exit_code: Option<i32>,
    /// Without a command: the stream stdin's lines belong to (stdout or stderr).
    #[arg(long, default_value = "stdout", value_parser = ["stdout", "stderr"])]
    pub stream: String,
    /// Replace every occurrence of VALUE with `***` before a line leaves the machine
    /// (repeatable). The TAILGATE_MASK environment variable adds one value per line, and
    /// keeps values out of the process list.
    #[arg(long = "mask", value_name = "VALUE")]
    pub masks: Vec<String>,
    /// Do not echo the (masked) output to this terminal; only send it.
    #[arg(long, short)]
    pub quiet: bool,
    /// Once the command has ended, wait at most this long for the gateway to acknowledge
    /// everything (e.g. `30s`, `5m`).
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub flush_timeout: Duration,
    /// Bytes of unacknowledged output kept in memory; beyond it a spool file (mode 0600, in
    /// the temp dir) takes the rest, so a long outage neither loses output nor blocks the command.
    #[arg(long, default_value_t = DEFAULT_MEMORY_BYTES, value_name = "BYTES")]
    pub buffer_bytes: usize,
    /// How long one attempt may take to connect (TCP and TLS), and then to get the answer's
    /// headers once an upload ended; a gateway that accepts and stays silent is a failed
    /// attempt, and the command is not held back by it.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Run the command on a pseudo-terminal: it sees a terminal (line-buffered output,
    /// colours, progress bars), and its stdout and stderr are one stream in its own order.
    #[arg(long, conflicts_with = "separate_streams")]
    pub tty: bool,
    /// Read stdout and stderr through two pipes and send them as the two streams; lines
    /// written close together may then be sent in a different order than written.
    #[arg(long)]
    pub separate_streams: bool,
    /// The command to run, after `--`, and its arguments.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Runs `tailgate push`.
pub fn run(args: PushArgs) -> ExitCode {
    if let Err(code) = super::trust_ca_file(args.ca_file.as_deref()) {
        return code;
    }
    crate::net::http::set_connect_timeout(args.connect_timeout);
    let runtime = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let code = runtime.block_on(push(args));
    // A read of stdin may still be blocked in the runtime's thread pool.
    runtime.shutdown_timeout(Duration::from_millis(100));
    ExitCode::from(code)
}

/// Where output goes: masked, echoed, published.
struct Sink<'a> {
    masker: Masker,
    publisher: &'a Publisher,
    echo: bool,
}

impl Sink<'_> {
    fn line(&self, stream: &str, line: &str) {
        let line = self.masker.mask(line);
        if self.echo {
            let _ = if stream == "stderr" {
                writeln!(std::io::stderr().lock(), "{line}")
            } else {
                writeln!(std::io::stdout().lock(), "{line}")
            };
        }
        self.publisher.line(stream, &line);
    }
}

/// `tailgate push` as a future resolving to the exit code.
pub async fn push(args: PushArgs) -> u8 {
    let url = match JobUrl::from_base(&args.url, &args.job) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("tailgate: --url/--job: {e}");
            return EXIT_USAGE;
        }
    };
    if let Err(code) = preflight(&url, args.token.as_deref()).await {
        return code;
    }
    let mut opts = PublisherOptions::new(url, args.token.clone());
    opts.memory_bytes = args.buffer_bytes;
    // Said terminal or not, as `tail` does: a CI log must show why output is held back.
    opts.on_retry = Some(std::sync::Arc::new(|delay: Duration, cause: &str| {
        eprintln!(
            "tailgate: {cause}; retrying in {}",
            humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
        );
    }));
    let publisher = Publisher::start(opts);
    let env_masks = std::env::var(ENV_MASK).ok();
    let sink = Sink {
        masker: Masker::from_flags_and_env(&args.masks, env_masks.as_deref()),
        publisher: &publisher,
        echo: !args.quiet,
    };
    let capture = if args.tty {
        Capture::Tty
    } else if args.separate_streams {
        Capture::Separate
    } else {
        Capture::Merged
    };
    let code = if args.command.is_empty() {
        from_stdin(&args, &sink).await
    } else {
        run_command(&args.command, capture, &sink).await
    };
    drop(sink);
    match publisher.finish(args.flush_timeout).await {
        Ok(_) => code,
        Err(e) => {
            eprintln!("tailgate: publishing failed: {e}");
            match (e, args.command.is_empty()) {
                (_, false) => code,
                (PublishError::Rejected(_), true) => EXIT_REJECTED,
                (PublishError::Refused(_), true) => EXIT_REFUSED,
                (PublishError::Timeout { .. }, true) => EXIT_UNAVAILABLE,
                (PublishError::Spool(_), true) => super::exit::EXIT_IO,
                (PublishError::Unusable(_), true) => EXIT_REFUSED,
            }
        }
    }
}

/// Refuses early a token the gateway rejects (an empty upload proves the `publish` scope),
/// a job that already ended, or a TLS failure; an unreachable or silent gateway is not a
/// reason to hold the build back (the check waits `CHECK_WAIT` at most).
async fn preflight(url: &JobUrl, token: Option<&str>) -> Result<(), u8> {
    match tokio::time::timeout(CHECK_WAIT, check(url, token)).await {
        Ok(checked) => checked,
        Err(_) => {
            eprintln!(
                "tailgate: {} did not answer the token check within {}; output is buffered",
                url.endpoint,
                humantime::format_duration(CHECK_WAIT)
            );
            Ok(())
        }
    }
}

async fn check(url: &JobUrl, token: Option<&str>) -> Result<(), u8> {
    let empty_upload = http::bearer(
        http::request("POST", &url.endpoint, &url.publish_path()),
        token,
    )
    .header(::http::header::CONTENT_TYPE, "application/x-ndjson")
    .body(http_body_util::Full::new(bytes::Bytes::new()))
    .map_err(HttpError::from);
    let answer = match empty_upload {
        Ok(req) => http::exchange_json(&url.endpoint, req).await,
        Err(e) => Err(e),
    };
    // A finished job refuses even an empty upload (409); its status says how it ended.
    let ask_status = match &answer {
        Ok(Ok(_)) => true,
        Ok(Err(f)) => f.code == "job_finished",
        Err(_) => false,
    };
    let answer = if ask_status {
        match http::get(&url.endpoint, &url.status_path(), token) {
            Ok(req) => http::exchange_json(&url.endpoint, req).await,
            Err(e) => Err(e),
        }
    } else {
        answer
    };
    match answer {
        Ok(Ok(status)) => match status["status"].as_str() {
            Some(s) if STATUSES.contains(&s) => {
                eprintln!("tailgate: job {} already ended ({s})", url.job);
                Err(EXIT_REFUSED)
            }
            _ => Ok(()),
        },
        Ok(Err(f)) if f.is_auth() => {
            eprintln!("tailgate: the gateway refused the token: {}", f.message);
            Err(EXIT_REJECTED)
        }
        Ok(Err(f)) if !f.is_retryable() => {
            eprintln!("tailgate: the gateway refused the request: {f}");
            Err(EXIT_REFUSED)
        }
        Ok(Err(f)) => {
            eprintln!("tailgate: the gateway is unavailable ({f}); output is buffered");
            Ok(())
        }
        Err(e) => match e.hint() {
            Some(hint) if e.is_permanent() => {
                eprintln!("tailgate: {}; {hint}", error_chain(&e));
                Err(EXIT_REFUSED)
            }
            _ => {
                eprintln!("tailgate: {}; output is buffered", error_chain(&e));
                Ok(())
            }
        },
    }
}

/// Sends stdin's lines; on EOF posts `--status` if given. Exit 0, or 130/143 if interrupted.
async fn from_stdin(args: &PushArgs, sink: &Sink<'_>) -> u8 {
    let mut signals = Signals::new();
    let read = pump(tokio::io::stdin(), &args.stream, sink);
    tokio::select! {
        () = read => {
            if let Some(status) = &args.status {
                sink.publisher.status(status, args.exit_code);
            }
            0
        }
        signal = signals.recv() => {
            sink.publisher.status("cancelled", None);
            128 + signal as u8
        }
    }
}

/// Runs the command with both outputs published; returns its exit code.
async fn run_command(command: &[OsString], capture: Capture, sink: &Sink<'_>) -> u8 {
    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..])
        .stdin(Stdio::null())
        .kill_on_drop(false);
    #[cfg(unix)]
    cmd.process_group(0);
    let spawned = capture::prepare(&mut cmd, capture).and_then(|end| Ok((cmd.spawn()?, end)));
    // The command holds the write ends of the pipe or terminal: closed here, so the reads
    // end when the command's side closes.
    drop(cmd);
    let (mut child, read_end) = match spawned {
        Ok(spawned) => spawned,
        Err(e) => {
            let message = format!("cannot run {}: {e}", command[0].to_string_lossy());
            eprintln!("tailgate: {message}");
            sink.publisher
                .line("stderr", &format!("tailgate: {message}"));
            sink.publisher
                .status("failed", Some(i32::from(EXIT_NOT_RUN)));
            return EXIT_NOT_RUN;
        }
    };
    let outputs = capture::outputs(read_end, &mut child);
    let pumps = futures_util::future::join_all(
        outputs
            .into_iter()
            .map(|(reader, stream)| pump(reader, stream, sink)),
    );
    let mut pumps = std::pin::pin!(pumps);
    let mut signals = Signals::new();
    let mut interrupted = false;
    let mut pumps_done = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = &mut pumps, if !pumps_done => pumps_done = true,
            signal = signals.recv() => {
                interrupted = true;
                forward(&child, signal);
            }
        }
    };
    if !pumps_done && tokio::time::timeout(PIPE_GRACE, &mut pumps).await.is_err() {
        eprintln!("tailgate: the command's output stayed open after it exited; stopped reading");
    }
    let code = match status {
        Ok(status) => exit_code_of(status),
        Err(e) => {
            eprintln!("tailgate: waiting for the command failed: {e}");
            1
        }
    };
    if interrupted {
        sink.publisher.status("cancelled", Some(i32::from(code)));
    } else if code == 0 {
        sink.publisher.status("succeeded", Some(0));
    } else {
        sink.publisher.status("failed", Some(i32::from(code)));
    }
    code
}

/// Reads `reader` to its end, sending each line (and a partial last one).
async fn pump(mut reader: impl AsyncRead + Unpin, stream: &str, sink: &Sink<'_>) {
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => splitter.feed(&buf[..n], |line| sink.line(stream, &line)),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if capture::is_end(&e) => break,
            Err(e) => {
                eprintln!("tailgate: reading {stream} failed: {e}");
                break;
            }
        }
    }
    if let Some(last) = splitter.finish() {
        sink.line(stream, &last);
    }
}

/// The shell convention: the exit code, or 128+N for a process killed by signal N.
fn exit_code_of(status: std::process::ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code & 0xff).unwrap_or(1);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return 128u8.saturating_add(u8::try_from(signal).unwrap_or(0));
        }
    }
    1
}

/// SIGINT and SIGTERM, caught instead of ending tailgate.
struct Signals {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

/// Signal numbers on Linux and the BSDs.
const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Self {
                int: signal(SignalKind::interrupt()).ok(),
                term: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// The next signal's number.
    #[cfg(unix)]
    async fn recv(&mut self) -> i32 {
        async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
            let received = match signal {
                Some(s) => s.recv().await.is_some(),
                None => false,
            };
            if !received {
                std::future::pending::<()>().await;
            }
        }
        tokio::select! {
            () = next(&mut self.int) => SIGINT,
            () = next(&mut self.term) => SIGTERM,
        }
    }

    #[cfg(not(unix))]
    async fn recv(&mut self) -> i32 {
        let _ = tokio::signal::ctrl_c().await;
        SIGINT
    }
}

/// Sends `signal` to the command's process group.
fn forward(child: &tokio::process::Child, signal: i32) {
    #[cfg(unix)]
    {
        use rustix::process::{kill_process_group, Pid, Signal};
        let sig = if signal == SIGTERM {
            Signal::TERM
        } else {
            Signal::INT
        };
        if let Some(pid) = child.id().and_then(|id| Pid::from_raw(id as i32)) {
            let _ = kill_process_group(pid, sig);
        }
    }
    #[cfg(not(unix))]
    let _ = (child, signal);
}
