//! Clients of the gateway, usable from Rust programs and behind `tailgate tail|push|token`.
//!
//! - `url`: stream URLs and job routes (over `net::url`; requests go through `net::http`);
//!   `sse`: the incremental SSE parser; `backoff`: reconnect delays; [`follow`]: a job's
//!   stream followed across reconnects, delivering [`record`]s; [`publisher`]: NDJSON upload
//!   with resend from `last_n`, over the `backlog` (memory, then a spool file); `mask`,
//!   `lines`: what `push` sends; `capture`: how `push` reads the command's output (one pipe,
//!   a terminal, or two pipes).
//! - The commands: [`tail`], [`push`], [`token_cmd`]; `output` prints what `tail` follows.

pub mod backlog;
pub mod backoff;
pub mod capture;
pub mod exit;
pub mod follow;
pub mod lines;
pub mod mask;
pub mod output;
pub mod publisher;
pub mod push;
pub mod record;
pub mod sse;
pub mod tail;
pub mod token_cmd;
pub mod url;

pub use backoff::Backoff;
pub use follow::{Ending, FollowError, FollowOptions, Follower, Update};
pub use publisher::{Publisher, PublisherOptions};
pub use url::JobUrl;

pub use crate::net::tls::ENV_CA_FILE;

/// Trusts `--ca-file` (if given) for every later connection; a file that cannot be read or
/// holds no certificate is a usage error (exit 64), reported here.
pub(crate) fn trust_ca_file(path: Option<&std::path::Path>) -> Result<(), std::process::ExitCode> {
    let Some(path) = path else { return Ok(()) };
    crate::net::tls::trust_ca_file(path).map_err(|e| {
        eprintln!("tailgate: --ca-file {}: {e}", path.display());
        std::process::ExitCode::from(exit::EXIT_USAGE)
    })
}

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

/// `error: source: source...`, for one-line messages (it lives in [`crate::report`]).
pub use crate::report::error_chain;
