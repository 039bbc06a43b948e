//! What the gateway's own log may hold. Log lines of jobs are data and tokens are secrets
//! at every level, so the libraries that would print them are silenced whatever
//! `TAILGATE_LOG` says: tungstenite traces each WebSocket frame's payload (a Capgo reader's
//! log lines), and h2/hpack trace header blocks (an `Authorization` header).

use tracing_subscriber::filter::{Directive, EnvFilter};

/// Targets never logged, at any level.
pub const SILENCED: &[&str] = &["tungstenite", "tokio_tungstenite", "h2", "hpack"];

/// `filter` with the [`SILENCED`] targets turned off.
pub fn quiet_codecs(filter: EnvFilter) -> EnvFilter {
    SILENCED.iter().fold(filter, |filter, target| {
        match format!("{target}=off").parse::<Directive>() {
            Ok(directive) => filter.add_directive(directive),
            Err(_) => filter,
        }
    })
}
