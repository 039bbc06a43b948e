//! How an error is reported in one line: its message and every source's, joined by
//! `: `. Errors say only their own level (`Display`); whoever reports one (a log line, a
//! JSON body, the CLI) shows the chain. Used by the server, the store and the clients.

/// `e` and its sources, outermost first, joined by `: `.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot write the spool")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_names_every_level_once() {
        let e = Outer(std::io::Error::other("no space left"));
        assert_eq!(error_chain(&e), "cannot write the spool: no space left");
    }
}
