//! A reader's subscription: one cursor into one job's log, written out as SSE.
//!
//! When behind, it takes every record available (up to a byte budget) and writes them
//! as one chunk; when caught up, it waits for the log's wake-up or the keep-alive tick.
//! Shutdown arrives through the same wake-up (the log closes). It holds nothing but its
//! cursor: a slow reader only falls further behind. Every wait here runs once per event
//! per reader, so it costs no lock and no timer work beyond the one keep-alive timer.

use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::body::Body;
use crate::compress::ReaderCoder;
use crate::entry::{Entry, Frame as EntryFrame, Kind};
use crate::job_log::{Attached, Read};
use crate::metrics::{self, GaugeGuard};
use crate::sse;
use crate::streams::SubjectSlot;

/// How log records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Format {
    /// `data:` is the record's JSON.
    Json,
    /// `data:` is the raw line (status and custom events stay JSON).
    Text,
}

/// The SSE frame of `entry` in `format`: shared by every reader (and shared stream).
pub(crate) fn frame_of(format: Format, entry: &Entry) -> Bytes {
    match (format, entry.kind()) {
        (Format::Text, Kind::Log(_)) => entry.frame_for_use(EntryFrame::SseText),
        _ => entry.sse.clone(),
    }
}

/// [`frame_of`] with the job's life in its id (`id: <seq>-<life>`); as is without a life.
pub(crate) fn frame_with_life(format: Format, entry: &Entry, life: &str) -> Bytes {
    let frame = frame_of(format, entry);
    if life.is_empty() {
        return frame;
    }
    let body = match frame.strip_prefix(b"id: ") {
        Some(rest) => rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(&frame[..], |nl| &rest[nl + 1..]),
        None => &frame[..],
    };
    let mut out = BytesMut::with_capacity(body.len() + life.len() + 24);
    write_id(&mut out, entry.seq(), life);
    out.extend_from_slice(body);
    out.freeze()
}

/// How a subscription paces itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pacing {
    /// A comment is sent after this long without a write.
    pub(crate) keepalive: Duration,
    /// Bytes taken from the log per write.
    pub(crate) batch_bytes: usize,
}

/// One reader's position in one job's log.
pub(crate) struct Subscription {
    /// Keeps the reader counted on its job; gives the log.
    attached: Attached,
    /// Keeps the stream counted on its token's subject.
    _subject: SubjectSlot,
    /// Seq of the next record to send.
    cursor: u64,
    format: Format,
    pacing: Pacing,
    /// Woken when the job announces appends (see [`crate::wakeups`]).
    seq_rx: watch::Receiver<u64>,
    /// Sent before anything else: the retry hint and open comment, maybe a reset.
    opening: Option<Bytes>,
    /// When something was last written, for keep-alives.
    last_write: Instant,
    /// Fires at the keep-alive deadline; re-armed only when it fires, so a busy stream
    /// does no timer work per event.
    keepalive: Pin<Box<Sleep>>,
    /// The terminal status went out: the stream is over.
    done: bool,
    /// When the reader attached (Unix ms): records appended before are replays, which
    /// `tailgate_delivery_lag_seconds` does not observe.
    attached_ms: u64,
    /// Counts this reader in `tailgate_readers_active`.
    _counted: GaugeGuard,
    /// The reader's compressed output, when it asked for a coding (boxed: small when not).
    coder: Option<Box<ReaderCoder>>,
}

impl Subscription {
    /// A subscription starting at `cursor`; `reset` prepends an `event: reset` with that
    /// reason.
    pub(crate) fn new(
        attached: Attached,
        subject: SubjectSlot,
        cursor: u64,
        reset: Option<&'static str>,
        format: Format,
        pacing: Pacing,
        coder: Option<ReaderCoder>,
    ) -> Self {
        let seq_rx = attached.job().watch();
        let mut opening = BytesMut::from(sse::PRELUDE);
        if let Some(reason) = reset {
            metrics::get().reset_sent();
            let data = json!({ "reason": reason }).to_string();
            // `0-<life>`: a reconnect before the first record resumes in the new life.
            write_id(&mut opening, 0, attached.job().life());
            sse::write_event(&mut opening, None, "reset", &data);
        }
        Self {
            attached,
            _subject: subject,
            cursor,
            format,
            pacing,
            seq_rx,
            opening: Some(opening.freeze()),
            last_write: Instant::now(),
            keepalive: Box::pin(tokio::time::sleep(pacing.keepalive)),
            done: false,
            attached_ms: metrics::now_ms(),
            _counted: metrics::get().sse_reader(),
            coder: coder.map(Box::new),
        }
    }

    /// The memory budget, which a chunk waiting for a slow socket is charged to.
    pub(crate) fn memory(&self) -> &std::sync::Arc<crate::memory::MemoryBudget> {
        self.attached.job().memory()
    }

    /// The `Content-Encoding` of this stream, if compressed.
    pub(crate) fn content_encoding(&self) -> Option<&'static str> {
        self.coder.as_ref().map(|c| c.coding().token())
    }

    /// The next bytes to write, or `None` when the stream is over. A compressed stream
    /// ends with its coding's trailer.
    pub(crate) async fn next_chunk(&mut self) -> Option<Bytes> {
        match self.next_plain().await {
            Some(chunk) => Some(chunk),
            None => self.coder.take().map(|mut c| c.finish()),
        }
    }

    /// Compresses this reader's own bytes (not a shared event) when it has a coding.
    fn own(&mut self, raw: Bytes) -> Bytes {
        match self.coder.as_mut() {
            Some(coder) => coder.own(&raw),
            None => raw,
        }
    }

    async fn next_plain(&mut self) -> Option<Bytes> {
        if let Some(opening) = self.opening.take() {
            return Some(self.own(opening));
        }
        loop {
            if self.done || self.attached.job().is_closed() {
                return None;
            }
            // Mark the current seq seen before reading, so no append slips between.
            self.seq_rx.borrow_and_update();
            let frame = (self.format == Format::Text).then_some(EntryFrame::SseText);
            match self
                .attached
                .job()
                .read_any(self.cursor, self.pacing.batch_bytes, frame)
                .await
            {
                Read::Entries(entries) => return Some(self.encode(&entries)),
                Read::Gap { from, to } => {
                    self.cursor = to + 1;
                    self.touch();
                    metrics::get().gap_sent();
                    let data = json!({ "from": from, "to": to }).to_string();
                    let mut out = BytesMut::new();
                    self.write_id(&mut out, to);
                    sse::write_event(&mut out, None, "gap", &data);
                    return Some(self.own(out.freeze()));
                }
                Read::Failed(why) => {
                    self.done = true;
                    let data = json!({ "error": "store_unavailable", "message": why }).to_string();
                    return Some(self.own(sse::event(None, "error", &data)));
                }
                Read::End => return None,
                // Redis is down: wait (with keep-alives) and read again.
                Read::Idle | Read::Unavailable(_) | Read::Behind { .. } => {}
            }
            tokio::select! {
                biased;
                changed = self.seq_rx.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = self.keepalive.as_mut() => {
                    let due = self.last_write + self.pacing.keepalive;
                    if Instant::now() >= due {
                        self.touch();
                        self.keepalive.as_mut().reset(self.last_write + self.pacing.keepalive);
                        return Some(self.own(Bytes::from_static(sse::KEEPALIVE)));
                    }
                    self.keepalive.as_mut().reset(due);
                }
            }
        }
    }

    fn touch(&mut self) {
        self.last_write = Instant::now();
    }

    /// The frames of `entries` as one chunk; advances the cursor (past `entries` when a
    /// shared compressed chunk held more).
    fn encode(&mut self, entries: &[std::sync::Arc<Entry>]) -> Bytes {
        self.touch();
        if let Some(last) = entries.last() {
            self.cursor = last.seq() + 1;
            self.done = last.is_terminal();
        }
        let out = match &mut self.coder {
            Some(coder) => {
                let (out, written) = coder.entries(entries);
                if let Some(w) = written.filter(|w| w.seq >= self.cursor) {
                    self.cursor = w.seq + 1;
                    self.done = w.terminal;
                }
                out
            }
            None => {
                let life = self.attached.job().life().len() + 1;
                let mut out =
                    BytesMut::with_capacity(entries.iter().map(|e| e.sse.len() + life).sum());
                for entry in entries {
                    let frame = frame_of(self.format, entry);
                    // Each shared frame opens with `id: <seq>\n`; the reader's copy names
                    // the job's life too (`id: <seq>-<life>`), so a resume in another life
                    // is seen.
                    let body = match frame.strip_prefix(b"id: ") {
                        Some(rest) => rest
                            .iter()
                            .position(|&b| b == b'\n')
                            .map_or(&frame[..], |nl| &rest[nl + 1..]),
                        None => &frame[..],
                    };
                    self.write_id(&mut out, entry.seq());
                    out.extend_from_slice(body);
                }
                out.freeze()
            }
        };
        if let Some(first) = entries.first() {
            // The cursor moved past every event written (a shared chunk may hold more).
            let events = self.cursor.saturating_sub(first.seq()) as usize;
            metrics::get().delivered(events, out.len(), first.ts_ms(), self.attached_ms);
        }
        out
    }

    /// Writes `id: <seq>-<life>`: what the reader sends back as `Last-Event-ID`.
    fn write_id(&self, out: &mut BytesMut, seq: u64) {
        write_id(out, seq, self.attached.job().life());
    }

    /// The subscription as a streaming response body.
    pub(crate) fn into_body(self) -> Body {
        let frames = stream::unfold(self, |mut sub| async move {
            let chunk = sub.next_chunk().await?;
            Some((Ok(Frame::data(chunk)), sub))
        });
        StreamBody::new(frames).boxed_unsync()
    }
}

/// Writes `id: <seq>-<life>\n`.
fn write_id(out: &mut BytesMut, seq: u64, life: &str) {
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(b"-");
    out.extend_from_slice(life.as_bytes());
    out.extend_from_slice(b"\n");
}
