//! A spec-correct SSE reader (WHATWG "interpret an event stream") over a response body.

use std::collections::VecDeque;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl Event {
    /// The job's life the event id names (`<seq>-<life>`).
    pub fn life(&self) -> Option<&str> {
        self.id.as_deref()?.split_once('-').map(|(_, life)| life)
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("data is not JSON ({e}): {:?}", self.data))
    }

    /// The seq the event id names (`<seq>-<life>`, or a bare `<seq>`).
    pub fn seq(&self) -> u64 {
        self.id
            .as_deref()
            .and_then(|i| i.split('-').next()?.parse().ok())
            .unwrap_or_else(|| panic!("event without id: {self:?}"))
    }
}

/// Parses bytes into events; feedable in any split.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    pending_cr: bool,
    last_id: Option<String>,
    event: String,
    data: Vec<String>,
    /// Comments seen (keep-alives, the open comment).
    pub comments: usize,
    /// `retry:` values seen.
    pub retry: Option<u64>,
}

impl Parser {
    pub fn feed(&mut self, chunk: &[u8], out: &mut VecDeque<Event>) {
        for &b in chunk {
            if std::mem::take(&mut self.pending_cr) && b == b'\n' {
                continue;
            }
            match b {
                b'\r' => {
                    self.pending_cr = true;
                    self.line(out);
                }
                b'\n' => self.line(out),
                _ => self.buf.push(b),
            }
        }
    }

    fn line(&mut self, out: &mut VecDeque<Event>) {
        let line = String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
        if line.is_empty() {
            if !self.data.is_empty() {
                let event = if self.event.is_empty() {
                    "message".to_string()
                } else {
                    std::mem::take(&mut self.event)
                };
                out.push_back(Event {
                    id: self.last_id.clone(),
                    event,
                    data: self.data.join("\n"),
                });
            }
            self.data.clear();
            self.event.clear();
            return;
        }
        if line.starts_with(':') {
            self.comments += 1;
            return;
        }
        let (field, value) = match line.find(':') {
            Some(i) => (
                &line[..i],
                line[i + 1..].strip_prefix(' ').unwrap_or(&line[i + 1..]),
            ),
            None => (line.as_str(), ""),
        };
        match field {
            "id" => self.last_id = Some(value.to_string()),
            "event" => self.event = value.to_string(),
            "data" => self.data.push(value.to_string()),
            "retry" => self.retry = value.parse().ok(),
            _ => {}
        }
    }
}

/// An open SSE response.
pub struct SseStream {
    body: Incoming,
    pub parser: Parser,
    queue: VecDeque<Event>,
    ended: bool,
}

impl SseStream {
    pub fn new(body: Incoming) -> Self {
        Self {
            body,
            parser: Parser::default(),
            queue: VecDeque::new(),
            ended: false,
        }
    }

    /// The next event, `None` when the stream ended. Panics after `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<Event> {
        tokio::time::timeout(timeout, self.next())
            .await
            .expect("timed out waiting for an SSE event")
    }

    /// The next event, or `None` when the server ended the stream.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.parser.feed(&data, &mut self.queue);
                    }
                }
                _ => self.ended = true,
            }
        }
    }

    /// Every event until the server ends the stream (bounded by `timeout`).
    pub async fn collect(&mut self, timeout: Duration) -> Vec<Event> {
        let mut all = Vec::new();
        tokio::time::timeout(timeout, async {
            while let Some(e) = self.next().await {
                all.push(e);
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "stream did not end in {timeout:?}; got {} events",
                all.len()
            )
        });
        all
    }

    /// Reads until the comment count reaches `n` (keep-alives), without consuming events.
    pub async fn wait_comments(&mut self, n: usize) {
        while self.parser.comments < n && !self.ended {
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.parser.feed(&data, &mut self.queue);
                    }
                }
                _ => self.ended = true,
            }
        }
    }
}
