//! Exit codes of the client commands. A job's own exit code passes through `tail`, and a
//! command's through `push`; the tools' own failures use sysexits(3) codes, which builds
//! rarely exit with, so a script can tell "the build failed" from "tailgate could not tell".

/// A bad flag, argument or URL (`EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;
/// The gateway could not be reached for `--give-up-after` (`EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// The process could not start its runtime (`EX_SOFTWARE`).
pub const EXIT_SOFTWARE: u8 = 70;
/// The output could not be written (`EX_IOERR`).
pub const EXIT_IO: u8 = 74;
/// `--timeout` expired before the job ended (`EX_TEMPFAIL`: try again later).
pub const EXIT_TIMEOUT: u8 = 75;
/// The gateway refused the request for a reason other than the token: a bad job id, a
/// finished job for `push`, an unknown route; or TLS failed in a way retrying cannot fix:
/// an untrusted certificate, a port without TLS (`EX_PROTOCOL`).
pub const EXIT_REFUSED: u8 = 76;
/// The gateway refused the token: missing, invalid, expired, another job's, or without
/// the scope needed (`EX_NOPERM`).
pub const EXIT_REJECTED: u8 = 77;

/// The table printed by `tail --help` and `push --help`.
pub const TABLE: &str = "\
Exit codes: the job's own (tail: 0 succeeded, its exit_code when it failed, 1 when it ended
otherwise) or the command's (push) pass through; tailgate's own failures use sysexits(3)
codes, which builds rarely exit with:
  64  usage: a bad flag, argument or URL
  69  the gateway stayed unreachable for --give-up-after
  74  the output could not be written
  75  --timeout expired before the job ended
  76  the gateway refused the request (bad job id, unknown route, finished job),
      or TLS failed (certificate not trusted or not for the host, no TLS on the port)
  77  the gateway refused the token (missing, invalid, expired, wrong job or scope)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_every_code_once() {
        for code in [
            EXIT_USAGE,
            EXIT_UNAVAILABLE,
            EXIT_IO,
            EXIT_TIMEOUT,
            EXIT_REFUSED,
            EXIT_REJECTED,
        ] {
            assert_eq!(
                TABLE.matches(&format!("  {code}  ")).count(),
                1,
                "{code} in the table"
            );
        }
    }
}
