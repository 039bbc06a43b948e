//! Capgo's WebSocket JSON frames, as bytes: one per record, a status frame, and the
//! batch around frames already encoded. Below `entry` (which caches each record's frame)
//! and `capgo` (which speaks the protocol), so neither reaches into the other.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

use crate::record::{JobStatus, Record, RecordBody};

/// `{"type":"log","message":..,"id":seq}`, `{"type":"status","status":..,"id":seq}` or
/// `{"type":"custom_msg","kind":..,"data":..,"id":seq}`.
pub(crate) fn record_frame(record: &Record) -> Bytes {
    let text = match &record.body {
        RecordBody::Log { line, .. } => format!(
            r#"{{"type":"log","message":{},"id":{}}}"#,
            json_string(line),
            record.seq
        ),
        RecordBody::Status { status, .. } => status_frame(*status, record.seq),
        RecordBody::Custom { kind, data } => format!(
            r#"{{"type":"custom_msg","kind":{},"data":{},"id":{}}}"#,
            json_string(kind),
            data,
            record.seq
        ),
    };
    // Exactly its length: `format!` grows its string by doubling, and a held frame's
    // spare capacity would be memory the budget does not see.
    let mut bytes = text.into_bytes();
    bytes.shrink_to_fit();
    Bytes::from(bytes)
}

/// A status frame for `status` at `seq`.
pub(crate) fn status_frame(status: JobStatus, seq: u64) -> String {
    format!(
        r#"{{"type":"status","status":"{}","id":{seq}}}"#,
        capgo_status(status)
    )
}

/// The status as Capgo names it. Capgo has no `lost`; its CLI treats only `succeeded`,
/// `failed`, `expired`, `released` and `cancelled` as final, so a lost job is `failed`.
pub(crate) fn capgo_status(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Lost => "failed",
        other => other.as_str(),
    }
}

/// `{"type":"batch_messages","messages":[..]}` around already encoded frames.
pub(crate) fn batch(frames: &[Bytes]) -> Bytes {
    const HEAD: &[u8] = br#"{"type":"batch_messages","messages":["#;
    let len = HEAD.len() + 2 + frames.iter().map(|f| f.len() + 1).sum::<usize>();
    let mut out = BytesMut::with_capacity(len);
    out.put_slice(HEAD);
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(frame);
    }
    out.put_slice(b"]}");
    out.freeze()
}

fn json_string(s: &str) -> String {
    Value::from(s).to_string()
}
