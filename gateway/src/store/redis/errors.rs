//! What a Redis failure tells a client, and what it tells the operator. Clients get
//! `503 store_unavailable` with a plain reason; the server's own words (a Lua error's
//! script SHA and line, a key name) go to the log only. A publish that timed out or lost
//! its connection may have been stored all the same, and the reason says so: a resend
//! is only safe with NDJSON `n` (what `tailgate push` sends).

use std::time::Duration;

use redis::{ErrorKind, RedisError};

use crate::store::StoreError;

/// What a client may do when an append's fate is unknown.
pub(crate) const MAY_BE_STORED: &str = "the publish may have been stored: resend it as NDJSON \
     with the same `n` values (as `tailgate push` does) so it is kept once";

/// A Redis error as the store reports it: the server cannot be used now.
pub(crate) fn unavailable(e: &RedisError) -> StoreError {
    if e.is_timeout() {
        return StoreError::Unavailable(format!("redis did not answer in time; {MAY_BE_STORED}"));
    }
    if e.is_connection_dropped() {
        return StoreError::Unavailable(format!("redis closed the connection; {MAY_BE_STORED}"));
    }
    if e.is_io_error() || e.is_connection_refusal() {
        return StoreError::Unavailable("redis: cannot reach the server".into());
    }
    match e.kind() {
        // Redirections, a down slot, a server still loading or busy: transient.
        ErrorKind::Server(_) if !script_failed(e) => {
            tracing::warn!(error = %e, "redis refused a command");
            let code = e.code().unwrap_or("error").to_ascii_lowercase();
            StoreError::Unavailable(format!("redis refused a command ({code})"))
        }
        _ => {
            // A script error carries its SHA, the script's line and perhaps a key: the
            // log gets them, the client a clean reason.
            tracing::warn!(error = %e, "redis refused the job's change");
            StoreError::Unavailable("redis refused the job's change; see the gateway's log".into())
        }
    }
}

/// Whether `e` is the job script failing (an error raised while it ran).
fn script_failed(e: &RedisError) -> bool {
    let text = e.to_string();
    text.contains("script") || text.contains("user_function")
}

/// A round trip that did not end within `timeout`.
pub(crate) fn timed_out(timeout: Duration) -> StoreError {
    StoreError::Unavailable(format!(
        "redis did not answer within {} ms; {MAY_BE_STORED}",
        timeout.as_millis()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_error_reaches_clients_without_its_sha_or_line() {
        let e = RedisError::from((
            ErrorKind::Extension,
            "ERR",
            "Error running script (call to f_0123456789abcdef0123456789abcdef01234567): \
             @user_script:71: WRONGTYPE Operation against a key holding the wrong kind of value"
                .to_string(),
        ));
        let StoreError::Unavailable(why) = unavailable(&e) else {
            panic!("not unavailable")
        };
        assert!(!why.contains("f_0123"), "{why}");
        assert!(!why.contains("user_script"), "{why}");
        assert!(why.contains("refused"), "{why}");
    }

    #[test]
    fn a_timeout_says_the_publish_may_have_been_stored() {
        let StoreError::Unavailable(why) = timed_out(Duration::from_millis(2000)) else {
            panic!("not unavailable")
        };
        assert!(why.contains("may have been stored"), "{why}");
        assert!(why.contains("2000 ms"), "{why}");
    }
}
