//! NDJSON publish records: `{"n":7,"line":"..."}`, `{"status":"failed","exit_code":2}`,
//! `{"custom":{"kind":"...","data":{}}}`, each with an optional publisher sequence `n`.

use serde::Deserialize;
use serde_json::Value;

use crate::record::{JobStatus, RecordBody, Stream};

/// One parsed NDJSON line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NdjsonRecord {
    /// Publisher-side sequence number, for dropping resent duplicates.
    pub(crate) n: Option<u64>,
    pub(crate) body: RecordBody,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    n: Option<u64>,
    line: Option<String>,
    stream: Option<String>,
    /// The publisher's clock; accepted, but records carry the gateway's time.
    #[allow(dead_code)]
    ts: Option<Value>,
    status: Option<String>,
    exit_code: Option<i32>,
    custom: Option<WireCustom>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireCustom {
    kind: String,
    #[serde(default)]
    data: Value,
}

/// Parses one NDJSON line; `default_stream` applies to a log record without `stream`.
/// Invalid UTF-8 is replaced (U+FFFD per invalid sequence), as in plain-text uploads: a
/// build's output is never refused for its bytes. The error is a sentence for the
/// `bad_record` message.
pub(crate) fn parse(line: &[u8], default_stream: Stream) -> Result<NdjsonRecord, String> {
    let text = String::from_utf8_lossy(line);
    let wire: Wire = serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}"))?;
    let body = match (wire.line, wire.status, wire.custom) {
        (Some(line), None, None) => {
            let stream = match wire.stream {
                Some(s) => s.parse::<Stream>()?,
                None => default_stream,
            };
            if stream == Stream::System {
                return Err("stream \"system\" is reserved for the gateway".into());
            }
            RecordBody::Log { stream, line }
        }
        (None, Some(status), None) => {
            let status = status.parse::<JobStatus>()?;
            if status == JobStatus::Queued {
                return Err("status \"queued\" cannot be published".into());
            }
            RecordBody::Status {
                status,
                exit_code: wire.exit_code,
            }
        }
        (None, None, Some(custom)) => {
            if custom.kind.is_empty() {
                return Err("custom record needs a non-empty \"kind\"".into());
            }
            RecordBody::Custom {
                kind: custom.kind,
                data: custom.data,
            }
        }
        (None, None, None) => {
            return Err("record needs one of \"line\", \"status\" or \"custom\"".into())
        }
        _ => return Err("record may hold only one of \"line\", \"status\" and \"custom\"".into()),
    };
    Ok(NdjsonRecord { n: wire.n, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_shapes() {
        let log = parse(
            br#"{"n":7,"line":"x","stream":"stderr","ts":"2026"}"#,
            Stream::Stdout,
        );
        assert_eq!(
            log,
            Ok(NdjsonRecord {
                n: Some(7),
                body: RecordBody::Log {
                    stream: Stream::Stderr,
                    line: "x".into()
                }
            })
        );
        let st = parse(
            br#"{"n":8,"status":"failed","exit_code":2}"#,
            Stream::Stdout,
        )
        .unwrap();
        assert_eq!(
            st.body,
            RecordBody::Status {
                status: JobStatus::Failed,
                exit_code: Some(2)
            }
        );
        let c = parse(
            br#"{"custom":{"kind":"qr","data":{"url":"u"}}}"#,
            Stream::Stdout,
        )
        .unwrap();
        assert_eq!(c.n, None);
        assert!(matches!(c.body, RecordBody::Custom { ref kind, .. } if kind == "qr"));
        let plain = parse(br#"{"line":"y"}"#, Stream::Stderr).unwrap();
        assert_eq!(
            plain.body,
            RecordBody::Log {
                stream: Stream::Stderr,
                line: "y".into()
            }
        );
    }

    #[test]
    fn bad_records_say_why() {
        for (bad, why) in [
            (&b"{"[..], "invalid JSON"),
            (br#"{"n":1}"#, "needs one of"),
            (br#"{"line":"a","status":"failed"}"#, "only one of"),
            (br#"{"status":"done"}"#, "unknown status"),
            (br#"{"line":"a","stream":"stdin"}"#, "unknown stream"),
            (br#"{"line":"a","stream":"system"}"#, "reserved"),
            (br#"{"line":"a","extra":1}"#, "unknown field"),
            (br#"{"n":-1,"line":"a"}"#, "invalid"),
        ] {
            let err = parse(bad, Stream::Stdout).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }
}
