//! One Capgo WebSocket reader's session (after the `upgrade`): sends the job's records as
//! Capgo frames from just after the client's last confirmed id, answers heartbeats, pings
//! through silent build steps, and closes after the final status or on shutdown.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::confirmations::{ClientKey, Confirmations, OpenSession};
use super::deflate::Deflater;
use super::frames::{self, ClientFrame};
use crate::app::App;
use crate::entry::Frame as EntryFrame;
use crate::job_log::{Attached, Read};
use crate::memory::Charge;
use crate::streams::SubjectSlot;

/// Records per `batch_messages` frame at most.
const MAX_BATCH_RECORDS: usize = 200;
/// Bytes of records taken per frame at most (the last record may pass it).
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// How long a close frame and the client's answer may take.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// The largest WebSocket frame header a server writes (no mask).
const FRAME_HEADER: usize = 10;
/// A frame that cannot be written for this long means the client is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the log has for the client next.
enum Next {
    /// A frame to send; `true` when it carries the final status.
    Frame(Bytes, bool),
    /// Nothing yet.
    Idle,
}

/// How long a woken session waits before reading, so a burst's frames share one batch.
const CLI_GATHER: Duration = Duration::from_millis(5);

/// One WebSocket reader's cursor into one job's log.
pub(super) struct Session {
    /// Keeps the reader counted on its job; gives the log.
    attached: Attached,
    /// Seq of the next record to send.
    cursor: u64,
    key: ClientKey,
    confirmations: Arc<Confirmations>,
    /// Counts this session as open for its client (see [`Confirmations::open`]).
    _open: OpenSession,
    /// Its connection slot and its place among its subject's streams.
    _held: (OwnedSemaphorePermit, SubjectSlot),
    /// Woken on every append.
    seq_rx: watch::Receiver<u64>,
    /// Pings this often; a client silent for three times this long is gone.
    keepalive: Duration,
    batch_bytes: usize,
    shutdown: CancellationToken,
    /// Counts this reader in `tailgate_readers_active`.
    _counted: crate::metrics::GaugeGuard,
    /// Compresses its messages when the client agreed to `permessage-deflate`.
    deflate: Option<Deflater>,
    /// tungstenite's out buffer, charged to the memory budget: it keeps the capacity of the
    /// largest frame written (up to a batch, 64 KiB by default) for the session's life,
    /// idle or not.
    out_buffer: Option<Charge>,
}

impl Session {
    pub(super) fn new(
        app: &App,
        attached: Attached,
        key: ClientKey,
        held: (OwnedSemaphorePermit, SubjectSlot),
        deflate: Option<Deflater>,
    ) -> Self {
        let confirmations = Arc::clone(&app.capgo.confirmations);
        let job = attached.job();
        let last_seq = job.last_seq();
        // Resume only a client that has gone: a second connection with the same token
        // while the first is open is another reader, and starts at the beginning.
        let (open, alone) = confirmations.open(&key);
        let confirmed = if alone {
            confirmations
                .last(&key)
                .or_else(|| job.confirmed(key.token_hash()))
        } else {
            None
        };
        let cursor = match confirmed {
            // An id beyond the log is from an earlier life of the job: start over.
            Some(n) if n > last_seq => {
                confirmations.forget(&key);
                1
            }
            Some(n) => n + 1,
            None => 1,
        };
        let pacing = app.pacing();
        Self {
            seq_rx: job.watch(),
            attached,
            cursor,
            key,
            confirmations,
            _open: open,
            _held: held,
            keepalive: pacing.keepalive,
            batch_bytes: pacing.batch_bytes.min(MAX_BATCH_BYTES),
            shutdown: app.shutdown.child_token(),
            _counted: crate::metrics::get().ws_reader(),
            deflate,
            out_buffer: None,
        }
    }

    pub(super) async fn run<S>(mut self, mut ws: WebSocketStream<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        tracing::debug!(
            cursor = self.cursor,
            deflate = self.deflate.is_some(),
            "capgo reader attached"
        );
        let mut ping = tokio::time::interval_at(Instant::now() + self.keepalive, self.keepalive);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        loop {
            let ready = self.has_more();
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    self.close(&mut ws, CloseCode::Away, "gateway shutting down", CLOSE_WAIT).await;
                    return;
                }
                incoming = ws.next() => match incoming {
                    Some(Ok(msg)) => {
                        last_heard = Instant::now();
                        if let Some(reply) = self.on_message(msg) {
                            let reply = self.message(reply);
                            if !self.send(&mut ws, reply).await {
                                return;
                            }
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "capgo reader went away");
                        return;
                    }
                    None => {
                        tracing::debug!("capgo reader closed");
                        return;
                    }
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() > 3 * self.keepalive {
                        tracing::debug!("capgo reader silent; closing");
                        self.close(&mut ws, CloseCode::Away, "no heartbeat", Duration::ZERO).await;
                        return;
                    }
                    if let Some(deflate) = self.deflate.as_mut() {
                        deflate.idle();
                    }
                    if !self.send(&mut ws, Message::Ping(Bytes::new())).await {
                        return;
                    }
                }
                changed = self.seq_rx.changed(), if !ready => {
                    if changed.is_err() {
                        return;
                    }
                    // Capgo's CLI handles frames concurrently: log lines of one frame that
                    // land after a status frame was handled are dropped. Waiting a moment
                    // lets a burst's lines and its status share one batch frame.
                    tokio::time::sleep(CLI_GATHER).await;
                }
                _ = std::future::ready(()), if ready => {
                    if let Next::Frame(frame, last) = self.next_frame().await {
                        let msg = self.message(frame);
                        if !self.send(&mut ws, msg).await {
                            return;
                        }
                        if last {
                            self.close(&mut ws, CloseCode::Normal, "build finished", CLOSE_WAIT).await;
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Whether the log has something past the cursor, or ended (the final status is then
    /// sent again, so a client reconnecting after it still learns the result). Asks the
    /// log, not the last wake-up's value: a wake-up may be held for the gather window while
    /// records are already readable.
    fn has_more(&mut self) -> bool {
        self.seq_rx.borrow_and_update();
        let job = self.attached.job();
        self.cursor <= job.last_seq() || job.is_finished()
    }

    /// The next frame: one record's frame, a batch, or the final status again.
    async fn next_frame(&mut self) -> Next {
        let job = Arc::clone(self.attached.job());
        loop {
            let read = job
                .read_any(self.cursor, self.batch_bytes, Some(EntryFrame::CapgoWs))
                .await;
            match read {
                Read::Entries(mut entries) => {
                    entries.truncate(MAX_BATCH_RECORDS);
                    let Some(last) = entries.last() else {
                        return Next::Idle;
                    };
                    self.cursor = last.seq() + 1;
                    let done = last.is_terminal();
                    let frame = match entries.as_slice() {
                        [one] => frames::entry_frame(one),
                        many => {
                            let parts: Vec<Bytes> =
                                many.iter().map(|e| frames::entry_frame(e)).collect();
                            frames::batch(&parts)
                        }
                    };
                    return Next::Frame(frame, done);
                }
                Read::Gap { from, to } => {
                    // Capgo has no gap frame: go on from the first record held.
                    tracing::debug!(
                        gap.from = from,
                        gap.to = to,
                        "capgo reader skipped records no longer held"
                    );
                    self.cursor = to + 1;
                }
                Read::Idle | Read::Unavailable(_) | Read::Behind { .. } => return Next::Idle,
                Read::End => return Next::Frame(self.final_status(), true),
                Read::Failed(why) => {
                    tracing::warn!(error = %why, "capgo reader cannot read the job's records");
                    return Next::Frame(self.final_status(), true);
                }
            }
        }
    }

    /// The final status frame, for a client that already confirmed it.
    fn final_status(&self) -> Bytes {
        let job = self.attached.job();
        let last = job.last_seq();
        if let Read::Entries(entries) = job.read(last, 1, Some(EntryFrame::CapgoWs)) {
            if let Some(entry) = entries.first().filter(|e| e.is_terminal()) {
                return frames::entry_frame(entry);
            }
        }
        Bytes::from(frames::status_frame(job.snapshot().status, last))
    }

    /// A frame as a text message, compressed when the extension was agreed.
    fn message(&mut self, frame: Bytes) -> Message {
        match self.deflate.as_mut() {
            Some(deflate) => deflate.text(frame),
            None => text(frame),
        }
    }

    /// Handles a client frame; returns the reply's text, if any.
    fn on_message(&mut self, msg: Message) -> Option<Bytes> {
        let Message::Text(text) = msg else {
            // Pings are answered by the codec; pongs only prove the client is there.
            return None;
        };
        match frames::parse_client(&text) {
            ClientFrame::Heartbeat { last_id } => {
                if let Some(id) = last_id {
                    self.confirm(id);
                }
                Some(Bytes::from_static(frames::HEARTBEAT_RESPONSE.as_bytes()))
            }
            ClientFrame::Confirmed { last_id: Some(id) } => {
                self.confirm(id);
                None
            }
            ClientFrame::Confirmed { last_id: None } | ClientFrame::Other => None,
        }
    }

    /// The client has every record up to `id`: remember it, and skip what it already has.
    fn confirm(&mut self, id: u64) {
        if id == 0 || id > self.attached.job().last_seq() {
            return;
        }
        self.confirmations.confirm(&self.key, id);
        self.attached.job().confirm(self.key.token_hash(), id);
        if id >= self.cursor {
            self.cursor = id + 1;
        }
    }

    /// Sends `msg`; `false` when the client is gone or the gateway is shutting down.
    /// Until the socket took it, the frame and the codec's copy of it are charged to the
    /// memory budget: a client that stops reading holds them. The codec's buffer keeps the
    /// largest frame's capacity afterwards, charged as `out_buffer`.
    async fn send<S>(&mut self, ws: &mut WebSocketStream<S>, msg: Message) -> bool
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let memory = self.attached.job().memory();
        let frame = msg.len() + FRAME_HEADER;
        if self.out_buffer.as_ref().is_none_or(|c| c.bytes() < frame) {
            self.out_buffer = Some(memory.charge(frame));
        }
        let _held = memory.charge(msg.len());
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            res = tokio::time::timeout(WRITE_TIMEOUT, ws.send(msg)) => match res {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "capgo reader went away");
                    false
                }
                Err(_) => {
                    tracing::debug!("capgo reader stopped reading");
                    false
                }
            },
        }
    }

    /// Sends a close frame and waits up to `wait` for the client's answer, still taking
    /// confirmations.
    async fn close<S>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        code: CloseCode,
        reason: &'static str,
        wait: Duration,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let send = tokio::time::timeout(CLOSE_WAIT, ws.close(Some(frame)));
        if !matches!(send.await, Ok(Ok(()))) || wait.is_zero() {
            return;
        }
        // Read until the client's close answer (or the end), so the close is clean; a
        // confirmation of the last frames may still arrive meanwhile.
        let answer = async {
            while let Some(Ok(msg)) = ws.next().await {
                let _ = self.on_message(msg);
            }
        };
        if tokio::time::timeout(wait, answer).await.is_err() {
            tracing::debug!("capgo close not acknowledged");
        }
    }
}

/// A shared frame as a text message; frames are built from `String`s, so this always
/// holds, and a frame that would not be UTF-8 is sent as nothing rather than corrupt.
fn text(frame: Bytes) -> Message {
    Message::Text(Utf8Bytes::try_from(frame).unwrap_or_default())
}
