//! Capgo's JSON frames: each record's frame is encoded once, on first use, and shared by
//! every WebSocket reader of the job; batches are built from those shared frames.

use bytes::Bytes;
use serde_json::Value;

use crate::entry::{Entry, Frame};
pub(crate) use crate::wire::capgo::{batch, status_frame};

/// The answer to every client `heartbeat`.
pub(crate) const HEARTBEAT_RESPONSE: &str = r#"{"type":"heartbeat_response"}"#;

/// The record's frame, shared by every reader.
pub(crate) fn entry_frame(entry: &Entry) -> Bytes {
    entry.frame_for_use(Frame::CapgoWs)
}

/// What a client frame asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientFrame {
    /// `{"type":"heartbeat","lastId":N}`: answer, and confirm `N`.
    Heartbeat { last_id: Option<u64> },
    /// `{"type":"confirmed_received","lastId":N}`.
    Confirmed { last_id: Option<u64> },
    /// Anything else, ignored.
    Other,
}

/// Reads a client text frame; never fails (unknown frames are [`ClientFrame::Other`]).
pub(crate) fn parse_client(text: &str) -> ClientFrame {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) else {
        return ClientFrame::Other;
    };
    let last_id = obj.get("lastId").and_then(|v| match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    match obj.get("type").and_then(Value::as_str) {
        Some("heartbeat") => ClientFrame::Heartbeat { last_id },
        Some("confirmed_received") => ClientFrame::Confirmed { last_id },
        _ => ClientFrame::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Stream;
    use crate::record::{JobStatus, Record, RecordBody};
    use crate::wire::capgo::record_frame;
    use serde_json::json;

    fn rec(seq: u64, body: RecordBody) -> Record {
        Record {
            seq,
            ts_ms: 0,
            body,
        }
    }

    fn parse(b: &Bytes) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn record_frames_have_capgo_shapes() {
        let log = rec(
            7,
            RecordBody::Log {
                stream: Stream::Stderr,
                line: "a \"quoted\"\r\n\u{1b}[1mline".into(),
            },
        );
        assert_eq!(
            parse(&record_frame(&log)),
            json!({"type":"log","message":"a \"quoted\"\r\n\u{1b}[1mline","id":7})
        );
        let status = rec(
            8,
            RecordBody::Status {
                status: JobStatus::Succeeded,
                exit_code: Some(0),
            },
        );
        assert_eq!(
            parse(&record_frame(&status)),
            json!({"type":"status","status":"succeeded","id":8})
        );
        let lost = rec(
            9,
            RecordBody::Status {
                status: JobStatus::Lost,
                exit_code: None,
            },
        );
        assert_eq!(parse(&record_frame(&lost))["status"], "failed");
        let custom = rec(
            10,
            RecordBody::Custom {
                kind: "qr_download_link".into(),
                data: json!({"url":"https://x/y?a=1"}),
            },
        );
        assert_eq!(
            parse(&record_frame(&custom)),
            json!({"type":"custom_msg","kind":"qr_download_link","data":{"url":"https://x/y?a=1"},"id":10})
        );
    }

    #[test]
    fn batches_wrap_shared_frames() {
        let frames: Vec<Bytes> = (1..=3)
            .map(|i| {
                record_frame(&rec(
                    i,
                    RecordBody::Log {
                        stream: Stream::Stdout,
                        line: format!("l{i}"),
                    },
                ))
            })
            .collect();
        let v = parse(&batch(&frames));
        assert_eq!(v["type"], "batch_messages");
        let ids: Vec<u64> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(parse(&batch(&[]))["messages"], json!([]));
    }

    #[test]
    fn client_frames_are_read_leniently() {
        assert_eq!(
            parse_client(r#"{"type":"heartbeat","lastId":12}"#),
            ClientFrame::Heartbeat { last_id: Some(12) }
        );
        assert_eq!(
            parse_client(r#"{"type":"confirmed_received","lastId":3.0}"#),
            ClientFrame::Confirmed { last_id: Some(3) }
        );
        assert_eq!(
            parse_client(r#"{"type":"heartbeat"}"#),
            ClientFrame::Heartbeat { last_id: None }
        );
        assert_eq!(
            parse_client(r#"{"type":"confirmed_received","lastId":-1}"#),
            ClientFrame::Confirmed { last_id: None }
        );
        for other in ["", "nope", "[]", r#"{"type":"hello"}"#] {
            assert_eq!(parse_client(other), ClientFrame::Other, "{other}");
        }
    }
}
