//! What of a request may reach a log: its path with secrets cut out. A client that forgot
//! the `?` sends `/v1/jobs/j/logs&token=<jwt>`, and a JWT pasted as a job id is a path
//! segment: both are masked wherever they appear. Query strings are never logged at all.

use std::borrow::Cow;

/// What replaces a secret.
const MASK: &str = "<redacted>";

/// `path` with the value of every `token=` (any case) and every JWT-shaped run masked.
pub(crate) fn path(path: &str) -> Cow<'_, str> {
    if !path.to_ascii_lowercase().contains("token=") && !path.contains("eyJ") {
        return Cow::Borrowed(path);
    }
    let lower = path.to_ascii_lowercase();
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if lower[i..].starts_with("token=") {
            out.push_str(&path[i..i + 6]);
            i += 6;
            let end = path[i..]
                .find(['&', '/', ';', '?', '#'])
                .map_or(path.len(), |e| i + e);
            if end > i {
                out.push_str(MASK);
            }
            i = end;
        } else if path[i..].starts_with("eyJ") {
            // base64url of `{"`: the start of every JWT header; mask the whole run.
            let end = bytes[i..]
                .iter()
                .position(|&b| !(b.is_ascii_alphanumeric() || b"-_.%=".contains(&b)))
                .map_or(path.len(), |e| i + e);
            out.push_str(MASK);
            i = end;
        } else {
            let c = path[i..].chars().next().unwrap_or_default();
            out.push(c);
            i += c.len_utf8().max(1);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_masked_wherever_they_appear() {
        for (raw, want) in [
            ("/v1/jobs/j/logs", "/v1/jobs/j/logs"),
            (
                "/v1/jobs/j/logs&token=abc.def.ghi",
                "/v1/jobs/j/logs&token=<redacted>",
            ),
            (
                "/v1/jobs/j/logs&TOKEN=abc/x",
                "/v1/jobs/j/logs&TOKEN=<redacted>/x",
            ),
            ("/a;token=s3cret&b=1", "/a;token=<redacted>&b=1"),
            (
                "/v1/jobs/eyJhbGc.eyJzdWIi.sig/logs",
                "/v1/jobs/<redacted>/logs",
            ),
            ("/x/token=", "/x/token="),
            ("/é/token=ü", "/é/token=<redacted>"),
        ] {
            assert_eq!(path(raw), want, "{raw}");
        }
        assert!(matches!(path("/healthz"), Cow::Borrowed(_)));
    }
}
