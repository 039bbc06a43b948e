//! A streaming server-sent events reader: an incremental parser that follows the WHATWG
//! "interpret an event stream" rules (lines end at CR, LF or CRLF, even split across chunks)
//! and an [`EventStream`] over a hyper response body.

use std::collections::VecDeque;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;

/// Longest SSE line accepted; a longer one is a broken stream, not a reason to run out of memory.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The last event id in force when the event was dispatched.
    pub id: Option<String>,
    /// `event:` field, `message` when absent.
    pub event: String,
    /// `data:` fields joined with LF.
    pub data: String,
}

/// Why a stream stopped being readable.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    #[error("reading the event stream failed")]
    Body(#[from] hyper::Error),
    #[error("an event stream line is longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
    #[error("no data, not even a keep-alive, for {0:?}")]
    Idle(Duration),
    #[error("the compressed event stream does not decode")]
    Decode(#[source] std::io::Error),
}

/// Turns bytes into events; feed it chunks split anywhere.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended in CR: an LF first in the next one belongs to it.
    after_cr: bool,
    /// Past the optional byte-order mark at the very start.
    started: bool,
    last_id: Option<String>,
    event: String,
    data: String,
    has_data: bool,
    /// The latest `retry:` value in milliseconds.
    pub retry_ms: Option<u64>,
    /// Comment lines seen (the opening comment, keep-alives).
    pub comments: u64,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `chunk`, appending each completed event to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut VecDeque<SseEvent>) -> Result<(), SseError> {
        if !self.started && !chunk.is_empty() {
            let bom = b"\xEF\xBB\xBF";
            let n = self.line.len();
            // Hold back a possible BOM prefix until it is complete or disproved.
            let mut probe = self.line.clone();
            probe.extend_from_slice(&chunk[..chunk.len().min(3 - n.min(3))]);
            if bom.starts_with(&probe) && probe.len() < 3 {
                self.line = probe;
                return Ok(());
            }
            self.started = true;
            if probe.starts_with(bom) {
                chunk = &chunk[3 - n..];
                self.line.clear();
            }
        }
        for &b in chunk {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                continue;
            }
            match b {
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(out);
                }
                b'\n' => self.end_line(out),
                _ => {
                    if self.line.len() >= MAX_LINE_BYTES {
                        return Err(SseError::LineTooLong);
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(())
    }

    /// The id the stream is at: what a reconnect sends as `Last-Event-ID`.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    fn end_line(&mut self, out: &mut VecDeque<SseEvent>) {
        let raw = std::mem::take(&mut self.line);
        if raw.is_empty() {
            self.dispatch(out);
            return;
        }
        if raw[0] == b':' {
            self.comments += 1;
            return;
        }
        let line = String::from_utf8_lossy(&raw);
        let (field, value) = match line.find(':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (&line[..], ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_string()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry_ms = value.parse().ok();
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut VecDeque<SseEvent>) {
        let event = std::mem::take(&mut self.event);
        if !std::mem::take(&mut self.has_data) {
            return;
        }
        out.push_back(SseEvent {
            id: self.last_id.clone(),
            event: if event.is_empty() {
                "message".into()
            } else {
                event
            },
            data: std::mem::take(&mut self.data),
        });
    }
}

/// Events read from an open `text/event-stream` response.
pub struct EventStream {
    body: Incoming,
    parser: SseParser,
    queue: VecDeque<SseEvent>,
    ended: bool,
    /// A stream silent this long is dead (a half-open connection), not idle.
    idle_timeout: Option<Duration>,
    /// Undoes the response's `Content-Encoding`, chunk by chunk.
    decoder: Option<crate::compress::decode::BodyDecoder>,
}

impl EventStream {
    pub fn new(body: Incoming) -> Self {
        Self {
            body,
            parser: SseParser::new(),
            queue: VecDeque::new(),
            ended: false,
            idle_timeout: None,
            decoder: None,
        }
    }

    /// Decodes the body with `decoder` (from the response's `Content-Encoding`).
    pub fn with_decoder(mut self, decoder: Option<crate::compress::decode::BodyDecoder>) -> Self {
        self.decoder = decoder;
        self
    }

    /// Fails [`next`](Self::next) with [`SseError::Idle`] after `timeout` without a byte.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// The next event; `None` once the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, SseError> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Ok(Some(e));
            }
            if self.ended {
                return Ok(None);
            }
            let frame = match self.idle_timeout {
                Some(t) => tokio::time::timeout(t, self.body.frame())
                    .await
                    .map_err(|_| SseError::Idle(t))?,
                None => self.body.frame().await,
            };
            match frame {
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        let data = match self.decoder.as_mut() {
                            Some(d) => d.feed(&data).map_err(SseError::Decode)?,
                            None => data,
                        };
                        self.parser.feed(&data, &mut self.queue)?;
                    }
                }
                None => self.ended = true,
            }
        }
    }

    /// Events already parsed and waiting: the caller may batch its output until none are.
    pub fn has_buffered(&self) -> bool {
        !self.queue.is_empty()
    }

    pub fn parser(&self) -> &SseParser {
        &self.parser
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in(chunks: &[&[u8]]) -> (Vec<SseEvent>, SseParser) {
        let mut p = SseParser::new();
        let mut out = VecDeque::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        (out.into(), p)
    }

    fn ev(id: Option<&str>, event: &str, data: &str) -> SseEvent {
        SseEvent {
            id: id.map(str::to_string),
            event: event.into(),
            data: data.into(),
        }
    }

    const STREAM: &[u8] = b"\xEF\xBB\xBFretry: 2000\r\n: open\r\n\r\nid: 1\revent: log\rdata: a\r\rid: 2\nevent: log\ndata: b\ndata:  c\ndata\n\ndata: no-event\n\nid\nevent: status\ndata:{\"x\":1}\r\n\r\nevent: dropped\n\nid: 9\0\ndata: keeps-id\n\n";

    #[test]
    fn cr_lf_and_crlf_each_end_a_line() {
        let (events, p) = parse_in(&[STREAM]);
        assert_eq!(
            events,
            vec![
                ev(Some("1"), "log", "a"),
                ev(Some("2"), "log", "b\n c\n"),
                ev(Some("2"), "message", "no-event"),
                ev(Some(""), "status", "{\"x\":1}"),
                ev(Some(""), "message", "keeps-id"),
            ]
        );
        assert_eq!(p.retry_ms, Some(2000));
        assert_eq!(p.comments, 1);
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let (whole, _) = parse_in(&[STREAM]);
        for i in 0..=STREAM.len() {
            for j in i..=STREAM.len() {
                let (split, _) = parse_in(&[&STREAM[..i], &STREAM[i..j], &STREAM[j..]]);
                assert_eq!(split, whole, "split at {i}, {j}");
            }
        }
        let bytewise: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(parse_in(&bytewise).0, whole);
    }

    #[test]
    fn a_bom_is_only_skipped_at_the_start() {
        let (events, _) = parse_in(&[b"\xEF\xBB", b"\xBFdata: x\n\n\xEF\xBB\xBFdata: y\n\n"]);
        assert_eq!(events[0].data, "x");
        assert_eq!(events.len(), 1, "a BOM later is part of a field name");
        let (events, _) = parse_in(&[b"\xEF", b"data: z\n\n"]);
        assert!(
            events.is_empty(),
            "a broken BOM makes a junk line: {events:?}"
        );
    }
}
