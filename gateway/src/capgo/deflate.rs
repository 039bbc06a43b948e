//! `permessage-deflate` (RFC 7692) for the Capgo WebSocket: the negotiation in the upgrade,
//! and the session's compressor, which keeps its context from message to message (the
//! frames of one build repeat each other) while the session sends.
//!
//! tungstenite 0.30 has no extensions: an outgoing message is compressed here and sent as a
//! raw frame with RSV1 set; incoming compressed frames are inflated below tungstenite by
//! [`super::inflate_io`]. A compressor left idle is dropped (its memory back) and the next
//! message starts a fresh one: raw deflate after a sync flush is a clean cut, so the
//! client's decompressor, which keeps its window, reads on without knowing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress, Status};
use http::HeaderMap;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

use crate::memory::MemoryBudget;

/// The extension's name in `Sec-WebSocket-Extensions`.
pub(crate) const EXTENSION: &str = "permessage-deflate";
/// The tail of every sync-flushed message, removed before sending (RFC 7692 7.2.1).
pub(crate) const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The largest LZ77 window (and the one used unless the client asks for less).
const MAX_WINDOW_BITS: u8 = 15;
/// zlib cannot write a raw deflate stream with a 256-byte window: offers asking for it
/// are declined.
const MIN_WINDOW_BITS: u8 = 9;
/// Memory of one compressor at window 15 and zlib's default memory level (window, hash
/// chains, pending buffer), for the memory budget.
const FOOTPRINT: usize = 272 * 1024;
/// Sessions compressing at once, by default; past it a session sends its messages
/// uncompressed (RSV1 is per message) until one is freed.
pub(crate) const DEFAULT_MAX_COMPRESSORS: usize = 256;

/// What a client offered and the gateway accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// The gateway's window, at most what the client allowed (`server_max_window_bits`).
    pub(crate) window_bits: u8,
    /// The client asked that every message be compressed alone (`server_no_context_takeover`).
    pub(crate) no_context_takeover: bool,
    /// The client offered `server_max_window_bits`, so the answer names it.
    window_named: bool,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` answer.
    pub(crate) fn response(&self) -> String {
        let mut out = String::from(EXTENSION);
        if self.no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.window_named {
            out.push_str(&format!("; server_max_window_bits={}", self.window_bits));
        }
        out
    }
}

/// The first `permessage-deflate` offer of the request the gateway can honour, if any.
/// Offers with an unknown, repeated or invalid parameter are declined (RFC 7692 5.1).
pub(crate) fn negotiate(headers: &HeaderMap) -> Option<Agreed> {
    headers
        .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(accept_offer)
}

fn accept_offer(offer: &str) -> Option<Agreed> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(EXTENSION) {
        return None;
    }
    let mut agreed = Agreed {
        window_bits: MAX_WINDOW_BITS,
        no_context_takeover: false,
        window_named: false,
    };
    let mut seen = Vec::new();
    for param in parts.filter(|p| !p.is_empty()) {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        match (name.as_str(), value) {
            ("server_no_context_takeover", None) => agreed.no_context_takeover = true,
            // The client's own choices: its decompressor side is ours, and reads any window.
            ("client_no_context_takeover", None) => {}
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(v)) => {
                window_bits(v)?;
            }
            ("server_max_window_bits", Some(v)) => {
                let bits = window_bits(v)?;
                if bits < MIN_WINDOW_BITS {
                    return None;
                }
                agreed.window_bits = bits;
                agreed.window_named = true;
            }
            _ => return None,
        }
        seen.push(name);
    }
    Some(agreed)
}

/// A window size parameter: 8 to 15, digits only.
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

/// The compressors of every session, against their maximum.
pub(crate) struct Compressors {
    max: usize,
    alive: Arc<AtomicUsize>,
    memory: Arc<MemoryBudget>,
    level: u32,
}

impl Compressors {
    pub(crate) fn new(max: usize, level: u32, memory: Arc<MemoryBudget>) -> Self {
        Self {
            max,
            alive: Arc::new(AtomicUsize::new(0)),
            memory,
            level: level.min(9),
        }
    }

    /// A compressor, unless the maximum are alive.
    fn take(&self, agreed: Agreed) -> Option<Held> {
        self.alive
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        self.memory.add(FOOTPRINT);
        Some(Held {
            compress: Compress::new_with_window_bits(
                Compression::new(self.level),
                false,
                agreed.window_bits,
            ),
            alive: self.alive.clone(),
            memory: self.memory.clone(),
        })
    }

    /// Compressors alive now.
    #[cfg(test)]
    pub(crate) fn alive(&self) -> usize {
        self.alive.load(Ordering::Acquire)
    }
}

/// One compressor, counted until dropped.
struct Held {
    compress: Compress,
    alive: Arc<AtomicUsize>,
    memory: Arc<MemoryBudget>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.alive.fetch_sub(1, Ordering::AcqRel);
        self.memory.sub(FOOTPRINT);
    }
}

/// One session's outgoing side of the extension.
pub(crate) struct Deflater {
    agreed: Agreed,
    compressors: Arc<Compressors>,
    /// The compressor while the session sends; `None` when idle (or none was free).
    held: Option<Held>,
    /// A message was compressed since the last [`Deflater::idle`].
    used: bool,
}

impl Deflater {
    pub(crate) fn new(agreed: Agreed, compressors: Arc<Compressors>) -> Self {
        Self {
            agreed,
            compressors,
            held: None,
            used: false,
        }
    }

    /// `text` as a message: compressed with RSV1 set, or as it is when no compressor is
    /// free or it fails.
    pub(crate) fn text(&mut self, text: Bytes) -> Message {
        if self.held.is_none() {
            self.held = self.compressors.take(self.agreed);
        }
        if let Some(held) = self.held.as_mut() {
            match deflate(&mut held.compress, &text) {
                Ok(payload) => {
                    if self.agreed.no_context_takeover {
                        held.compress.reset();
                    }
                    self.used = true;
                    let mut frame = Frame::message(payload, OpCode::Data(Data::Text), true);
                    frame.header_mut().rsv1 = true;
                    return Message::Frame(frame);
                }
                // Whatever it wrote is lost with it: the next message starts a fresh one.
                Err(_) => self.held = None,
            }
        }
        Message::Text(tokio_tungstenite::tungstenite::Utf8Bytes::try_from(text).unwrap_or_default())
    }

    /// Called once per keep-alive period: a compressor unused since the last call is
    /// dropped, so a quiet session holds no compressor.
    pub(crate) fn idle(&mut self) {
        if !std::mem::take(&mut self.used) {
            self.held = None;
        }
    }

    #[cfg(test)]
    fn holds(&self) -> bool {
        self.held.is_some()
    }
}

/// `input` deflated and sync-flushed, without the flush's `00 00 ff ff`.
fn deflate(c: &mut Compress, input: &[u8]) -> Result<Vec<u8>, flate2::CompressError> {
    let mut out = Vec::with_capacity(input.len() / 2 + 64);
    let start = c.total_in();
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(256));
        }
        let consumed = (c.total_in() - start) as usize;
        let status = c.compress_vec(&input[consumed..], &mut out, FlushCompress::Sync)?;
        let done = (c.total_in() - start) as usize == input.len();
        // The flush is complete once a call ends with room left in the output.
        if (done && out.len() < out.capacity()) || status == Status::StreamEnd {
            break;
        }
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                http::header::SEC_WEBSOCKET_EXTENSIONS,
                v.parse().expect("header"),
            );
        }
        h
    }

    #[test]
    fn negotiates_what_node_ws_and_browsers_offer() {
        // Node's `ws` (the Capgo CLI) and Chromium.
        let a = negotiate(&headers(&["permessage-deflate; client_max_window_bits"]))
            .expect("ws's offer");
        assert_eq!(a.response(), "permessage-deflate");
        assert_eq!(a.window_bits, 15);
        assert!(!a.no_context_takeover);
        let a = negotiate(&headers(&[
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10, permessage-deflate",
        ]))
        .expect("first offer");
        assert_eq!(
            a.response(),
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10"
        );
        assert_eq!(a.window_bits, 10);
    }

    #[test]
    fn declines_offers_it_cannot_honour() {
        for offer in [
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=1a",
            "permessage-deflate; unknown_param",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
        ] {
            assert_eq!(negotiate(&headers(&[offer])), None, "{offer}");
        }
        // A declined offer falls through to the next one.
        let a = negotiate(&headers(&[
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=12",
        ]));
        assert_eq!(a.map(|a| a.window_bits), Some(12));
    }

    /// Inflates one message as a client does: payload, the tail put back, sync flush.
    fn inflate(d: &mut Decompress, payload: &[u8]) -> Vec<u8> {
        let mut input = payload.to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(1 << 20);
        let start = d.total_in();
        d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .expect("inflates");
        assert_eq!((d.total_in() - start) as usize, input.len());
        out
    }

    fn payload(m: Message) -> Vec<u8> {
        match m {
            Message::Frame(f) => {
                assert!(f.header().rsv1, "compressed messages have RSV1");
                f.into_payload().to_vec()
            }
            other => panic!("not a compressed frame: {other:?}"),
        }
    }

    #[test]
    fn messages_share_a_context_and_survive_a_fresh_compressor() {
        let memory = Arc::new(MemoryBudget::new(1 << 30));
        let all = Arc::new(Compressors::new(1, 6, memory));
        let agreed = negotiate(&headers(&["permessage-deflate"])).expect("offer");
        let mut d1 = Deflater::new(agreed, all.clone());
        let mut client = Decompress::new_with_window_bits(false, 15);
        let line = r#"{"type":"log","message":"   Compiling serde v1.0.219","id":1}"#;
        let first = payload(d1.text(Bytes::from(line)));
        let second = payload(d1.text(Bytes::from(line.replace("id\":1", "id\":2"))));
        assert!(
            second.len() * 3 < first.len(),
            "context takeover: {} then {} bytes",
            first.len(),
            second.len()
        );
        assert_eq!(inflate(&mut client, &first), line.as_bytes());
        assert_eq!(all.alive(), 1);
        // The only compressor is taken: a second session sends plain text.
        let mut d2 = Deflater::new(agreed, all.clone());
        assert!(matches!(d2.text(Bytes::from("x")), Message::Text(_)));
        assert_eq!(
            inflate(&mut client, &second),
            line.replace("id\":1", "id\":2").as_bytes()
        );
        // Idle twice: the compressor goes; the next message uses a fresh one, and the
        // client's decompressor (which kept its window) reads on.
        d1.idle();
        assert!(d1.holds());
        d1.idle();
        assert!(!d1.holds());
        assert_eq!(all.alive(), 0);
        let third = payload(d1.text(Bytes::from(line)));
        assert_eq!(inflate(&mut client, &third), line.as_bytes());
        // A message larger than any output guess.
        let big: String = (0..20_000).map(|i| format!("{i:x}")).collect();
        let fourth = payload(d1.text(Bytes::from(big.clone())));
        assert_eq!(inflate(&mut client, &fourth), big.as_bytes());
    }
}
