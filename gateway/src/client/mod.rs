//! Clients of the gateway, usable from Rust programs and behind `tailgate tail|push|token`.
//!
//! - `url`: stream URLs and job routes; `http`: one hyper connection per request (TLS too);
//!   `sse`: the incremental SSE parser; `backoff`: reconnect delays; [`follow`]: a job's
//!   stream followed across reconnects, delivering [`record`]s; [`publisher`]: NDJSON upload
//!   with resend from `last_n`, over the `backlog` (memory, then a spool file); `mask`,
//!   `lines`: what `push` sends; `capture`: how `push` reads the command's output (one pipe,
//!   a terminal, or two pipes); `tls`: trusted roots and why a handshake cannot work.
//! - The commands: [`tail`], [`push`], [`token_cmd`]; `output` prints what `tail` follows.

pub mod backlog;
pub mod backoff;
pub mod capture;
pub mod exit;
pub mod follow;
pub mod http;
pub mod lines;
pub mod mask;
pub mod output;
pub mod publisher;
pub mod push;
pub mod record;
pub mod sse;
pub mod tail;
pub mod tls;
pub mod token_cmd;
pub mod url;

pub use backoff::Backoff;
pub use follow::{Ending, FollowError, FollowOptions, Follower, Update};
pub use publisher::{Publisher, PublisherOptions};
pub use url::JobUrl;

/// Environment variable holding the token when `--token` is not given.
pub const ENV_TOKEN: &str = "TAILGATE_TOKEN";

/// The token to use: the explicit one, else a `token` query parameter of the URL.
pub(crate) fn token_for(explicit: Option<&str>, url: &JobUrl) -> Option<String> {
    explicit
        .map(str::to_string)
        .or_else(|| url.url_token.clone())
        .filter(|t| !t.is_empty())
}

/// A current-thread runtime for a client command, or the exit code after saying why not.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("tailgate: cannot start the runtime: {e}");
            std::process::ExitCode::from(exit::EXIT_SOFTWARE)
        })
}

/// `error: source: source...`, for one-line messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
