//! One record of a job's log as readers share it: the SSE frame encoded once, and the
//! other frames (`?format=text`, Capgo) encoded on first use.
//!
//! The record's text is stored once, inside the SSE frame: the line, the status and the
//! record itself are derived from the frame's JSON when a reader needs them, so a held
//! record costs its frame and a small header, and the memory budget counts just that.

use std::sync::OnceLock;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use crate::record::{JobStatus, Record, RecordBody, Stream};
use crate::sse;

/// What the allocator adds to each allocation (glibc: a 16-byte header, 16-byte steps).
const ALLOC_OVERHEAD: usize = 16;

/// What a frame costs besides its bytes once readers share it: `Bytes` moves a frame
/// into a shared header (a pointer, a capacity, a count) on its first clone, and the
/// allocator adds its share to both allocations.
const FRAME_OVERHEAD: usize = 3 * std::mem::size_of::<usize>() + 2 * ALLOC_OVERHEAD;

/// Bookkeeping per held record besides its frames' bytes: the `Arc` with this struct,
/// its ring slot, the allocator's share of both allocations, and the SSE frame's.
pub(crate) const ENTRY_OVERHEAD: usize = std::mem::size_of::<Entry>()
    + 2 * std::mem::size_of::<usize>()
    + 32
    + 2 * ALLOC_OVERHEAD
    + FRAME_OVERHEAD;

/// What kind of record an entry is, without parsing its JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Log(Stream),
    Status(JobStatus, Option<i32>),
    Custom,
}

impl Kind {
    pub(crate) fn of(body: &RecordBody) -> Self {
        match body {
            RecordBody::Log { stream, .. } => Self::Log(*stream),
            RecordBody::Status { status, exit_code } => Self::Status(*status, *exit_code),
            RecordBody::Custom { .. } => Self::Custom,
        }
    }

    pub(crate) fn event_name(self) -> &'static str {
        match self {
            Self::Log(_) => "log",
            Self::Status(..) => "status",
            Self::Custom => "custom",
        }
    }
}

/// The frames besides the SSE JSON one, each built on first use and then shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    /// SSE with `?format=text`: a log line as raw `data:` lines.
    SseText = 0,
    /// Capgo's WebSocket JSON frame (`log`, `status` or `custom_msg`).
    CapgoWs = 1,
}

impl Frame {
    fn encode(self, entry: &Entry) -> Bytes {
        match self {
            Self::SseText => match entry.line() {
                Some(line) => sse::event(Some(entry.seq), "log", &line),
                None => entry.sse.clone(),
            },
            Self::CapgoWs => crate::wire::capgo::record_frame(&entry.record()),
        }
    }
}

/// One record of the log with its shared encodings.
#[derive(Debug)]
pub(crate) struct Entry {
    seq: u64,
    ts_ms: u64,
    kind: Kind,
    /// The publisher's sequence number, kept so the store can recover `last_n`.
    n: Option<u64>,
    /// Bytes the record counts against the job's size limit; `None` for the gateway's
    /// own truncation notice, which counts nothing.
    counted: Option<u32>,
    /// `id: N\nevent: E\ndata: <json>\n\n`, encoded once, written to every reader.
    pub(crate) sse: Bytes,
    /// Where the JSON starts inside `sse`.
    json_at: u32,
    lazy: [OnceLock<Bytes>; 2],
}

/// A stored payload that is not a record's JSON.
#[derive(Debug, thiserror::Error)]
#[error("stored record {seq} is not valid: {why}")]
pub(crate) struct BadPayload {
    pub(crate) seq: u64,
    pub(crate) why: String,
}

impl Entry {
    /// Encodes `record`; `counted` is what it weighs against the size limit.
    #[cfg(test)]
    pub(crate) fn new(record: &Record, n: Option<u64>, counted: Option<u32>) -> Self {
        Self::new_at(record, n, counted, &record.ts())
    }

    /// [`Entry::new`] with the record's `ts` already formatted.
    pub(crate) fn new_at(record: &Record, n: Option<u64>, counted: Option<u32>, ts: &str) -> Self {
        let kind = Kind::of(&record.body);
        let json = record.to_json_at(ts);
        Self::from_json(record.seq, record.ts_ms, kind, n, counted, &json)
    }

    /// An entry from its stored JSON, byte-identical to the frame first sent.
    pub(crate) fn from_json(
        seq: u64,
        ts_ms: u64,
        kind: Kind,
        n: Option<u64>,
        counted: Option<u32>,
        json: &str,
    ) -> Self {
        // A record's JSON is one line (serde escapes every control character), so the
        // frame is `id`, `event` and exactly one `data:` field.
        debug_assert!(!json.contains(['\r', '\n']));
        let sse = sse::event(Some(seq), kind.event_name(), json);
        let json_at = (sse.len() - json.len() - 2) as u32;
        Self {
            seq,
            ts_ms,
            kind,
            n,
            counted,
            sse,
            json_at,
            lazy: Default::default(),
        }
    }

    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    pub(crate) fn ts_ms(&self) -> u64 {
        self.ts_ms
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    pub(crate) fn n(&self) -> Option<u64> {
        self.n
    }

    pub(crate) fn counted(&self) -> Option<u32> {
        self.counted
    }

    pub(crate) fn is_terminal(&self) -> bool {
        matches!(self.kind, Kind::Status(status, _) if status.is_terminal())
    }

    /// The record's JSON, exactly as the SSE `data:` field carries it.
    pub(crate) fn json(&self) -> &[u8] {
        &self.sse[self.json_at as usize..self.sse.len() - 2]
    }

    /// The record, decoded from its JSON.
    pub(crate) fn record(&self) -> Record {
        let body = match decode(self.kind, self.json()) {
            Ok(body) => body,
            // The JSON was written by this gateway (or checked on the way back from the
            // store); a record that still fails to decode becomes a visible notice.
            Err(why) => RecordBody::Log {
                stream: Stream::System,
                line: format!("tailgate: record {} cannot be decoded: {why}", self.seq),
            },
        };
        Record {
            seq: self.seq,
            ts_ms: self.ts_ms,
            body,
        }
    }

    /// The log line, for a log record.
    pub(crate) fn line(&self) -> Option<String> {
        match self.kind {
            Kind::Log(_) => match self.record().body {
                RecordBody::Log { line, .. } => Some(line),
                _ => None,
            },
            _ => None,
        }
    }

    /// The frame of kind `which` as built before, or encoded now for this one use and not
    /// kept: a reader's way to it, so only [`Entry::frame`] (whose caller charges the
    /// memory budget) grows a held entry.
    pub(crate) fn frame_for_use(&self, which: Frame) -> Bytes {
        match self.lazy[which as usize].get() {
            Some(frame) => frame.clone(),
            None => which.encode(self),
        }
    }

    /// The frame of kind `which`, encoding it the first time; the bool says whether this
    /// call encoded it (so its bytes can be counted once).
    pub(crate) fn frame(&self, which: Frame) -> (Bytes, bool) {
        let mut made = false;
        let frame = self.lazy[which as usize]
            .get_or_init(|| {
                made = true;
                which.encode(self)
            })
            .clone();
        (frame, made)
    }

    /// What holding this entry costs: its header and every frame built so far.
    pub(crate) fn cost(&self) -> usize {
        let lazy: usize = self
            .lazy
            .iter()
            .filter_map(OnceLock::get)
            .map(|frame| frame.len() + FRAME_OVERHEAD)
            .sum();
        ENTRY_OVERHEAD + self.sse.len() + lazy
    }
}

#[derive(Deserialize)]
struct Wire {
    line: Option<String>,
    kind: Option<String>,
    data: Option<Value>,
}

fn decode(kind: Kind, json: &[u8]) -> Result<RecordBody, String> {
    if let Kind::Status(status, exit_code) = kind {
        return Ok(RecordBody::Status { status, exit_code });
    }
    let wire: Wire = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    match kind {
        Kind::Log(stream) => Ok(RecordBody::Log {
            stream,
            line: wire.line.ok_or("a log record without a line")?,
        }),
        _ => Ok(RecordBody::Custom {
            kind: wire.kind.ok_or("a custom record without a kind")?,
            data: wire.data.unwrap_or(Value::Null),
        }),
    }
}

/// The status and exit code in a stored status record's JSON.
pub(crate) fn decode_status(seq: u64, json: &[u8]) -> Result<Kind, BadPayload> {
    #[derive(Deserialize)]
    struct StatusWire {
        status: String,
        exit_code: Option<i32>,
    }
    let bad = |why: String| BadPayload { seq, why };
    let wire: StatusWire = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
    let status = wire.status.parse().map_err(bad)?;
    Ok(Kind::Status(status, wire.exit_code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, body: RecordBody) -> Record {
        Record {
            seq,
            ts_ms: 1_795_000_000_123,
            body,
        }
    }

    #[test]
    fn the_record_round_trips_through_its_frame() {
        let bodies = [
            RecordBody::Log {
                stream: Stream::Stderr,
                line: "a\r\nevent: x \u{1b}[31m\"q\"".into(),
            },
            RecordBody::Status {
                status: JobStatus::Failed,
                exit_code: Some(2),
            },
            RecordBody::Custom {
                kind: "qr".into(),
                data: serde_json::json!({"url": "https://x"}),
            },
        ];
        for (i, body) in bodies.into_iter().enumerate() {
            let record = rec(i as u64 + 7, body);
            let entry = Entry::new(&record, Some(3), Some(1));
            assert_eq!(entry.record(), record);
            assert_eq!(entry.json(), record.to_json().as_bytes());
            let again = Entry::from_json(
                entry.seq(),
                entry.ts_ms(),
                entry.kind(),
                None,
                Some(1),
                std::str::from_utf8(entry.json()).unwrap(),
            );
            assert_eq!(again.sse, entry.sse, "byte-identical frame");
        }
    }

    #[test]
    fn lazy_frames_are_built_once_and_counted() {
        let entry = Entry::new(
            &rec(
                1,
                RecordBody::Log {
                    stream: Stream::Stdout,
                    line: "x\ry".into(),
                },
            ),
            None,
            Some(3),
        );
        let before = entry.cost();
        let (text, made) = entry.frame(Frame::SseText);
        assert!(made);
        assert_eq!(&text[..], b"id: 1\nevent: log\ndata: x\ndata: y\n\n");
        assert!(!entry.frame(Frame::SseText).1);
        assert_eq!(entry.cost(), before + text.len() + FRAME_OVERHEAD);
        assert_eq!(entry.line().as_deref(), Some("x\ry"));
    }
}
