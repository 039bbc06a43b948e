//! The client side of `permessage-deflate` below tungstenite, which refuses frames with
//! RSV1 set: client frames are read here first, and a compressed message (RSV1 on its
//! first frame) is inflated and handed on as one plain, final frame. Everything else goes
//! through unchanged. A compressed message inflates to `max_message` bytes at most.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::deflate::TAIL;

/// Bytes read off the socket at a time.
const READ_CHUNK: usize = 1024;
/// Buffers above this are given back once empty (an idle reader stays small).
const KEEP_CAPACITY: usize = 4096;

/// The socket, with compressed client messages inflated on the way in.
pub(crate) struct InflateIo<S> {
    io: S,
    /// `None`: the extension was not agreed, bytes go through as they come.
    inflate: Option<Inflate>,
}

struct Inflate {
    /// Bytes off the socket not yet parsed into a whole frame.
    raw: BytesMut,
    /// Bytes ready for tungstenite.
    out: BytesMut,
    /// The compressed message being collected: its opcode and payload so far.
    message: Option<(u8, Vec<u8>)>,
    /// The client's compression context (made on its first compressed message).
    decompress: Option<Decompress>,
    max_message: usize,
    /// The socket ended.
    eof: bool,
}

impl<S> InflateIo<S> {
    /// `io` as it is when `agreed` is false.
    pub(crate) fn new(io: S, agreed: bool, max_message: usize) -> Self {
        Self {
            io,
            inflate: agreed.then(|| Inflate {
                raw: BytesMut::new(),
                out: BytesMut::new(),
                message: None,
                decompress: None,
                max_message,
                eof: false,
            }),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for InflateIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(state) = this.inflate.as_mut() else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        loop {
            if !state.out.is_empty() {
                let n = state.out.len().min(buf.remaining());
                buf.put_slice(&state.out[..n]);
                state.out.advance(n);
                shrink(&mut state.out);
                return Poll::Ready(Ok(()));
            }
            if state.eof {
                // A cut frame goes to tungstenite as it is, which reports it.
                let rest = state.raw.split();
                if rest.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                state.out = rest;
                continue;
            }
            if state.parse()? {
                continue;
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                state.eof = true;
            }
            state.raw.extend_from_slice(read.filled());
        }
    }
}

impl Inflate {
    /// Handles one whole frame from `raw`, if one is there; `false` when more bytes are
    /// needed.
    fn parse(&mut self) -> io::Result<bool> {
        let Some(head) = Header::parse(&self.raw, self.max_message)? else {
            return Ok(false);
        };
        if self.raw.len() < head.len + head.payload {
            return Ok(false);
        }
        let frame = self.raw.split_to(head.len + head.payload);
        shrink(&mut self.raw);
        let is_control = head.opcode & 0x8 != 0;
        let starts_compressed = head.rsv1 && (head.opcode == 1 || head.opcode == 2);
        let continues = head.opcode == 0 && self.message.is_some();
        if is_control || !(starts_compressed || continues) {
            self.out.extend_from_slice(&frame);
            return Ok(true);
        }
        if starts_compressed && self.message.is_some() {
            return Err(invalid("a new message began inside a compressed one"));
        }
        let mut payload = frame[head.len..].to_vec();
        if let Some(key) = head.mask {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= key[i % 4];
            }
        }
        let (opcode, mut collected) = self.message.take().unwrap_or((head.opcode, Vec::new()));
        if collected.len() + payload.len() > self.max_message {
            return Err(invalid("a compressed message is too large"));
        }
        collected.extend_from_slice(&payload);
        if !head.fin {
            self.message = Some((opcode, collected));
            return Ok(true);
        }
        let plain = self.inflate(collected)?;
        write_frame(&mut self.out, opcode, &plain);
        Ok(true)
    }

    fn inflate(&mut self, mut compressed: Vec<u8>) -> io::Result<Vec<u8>> {
        compressed.extend_from_slice(&TAIL);
        let d = self
            .decompress
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, 15));
        let limit = self.max_message;
        let mut out = Vec::with_capacity(1024);
        let start = d.total_in();
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().min(limit + 1 - out.len()).max(1));
            }
            let (used, made) = ((d.total_in() - start) as usize, out.len());
            let status = d
                .decompress_vec(&compressed[used..], &mut out, FlushDecompress::Sync)
                .map_err(|_| invalid("a compressed message does not inflate"))?;
            if out.len() > limit {
                return Err(invalid("a compressed message inflates too large"));
            }
            if status == Status::StreamEnd {
                // A final block ends the client's stream: its next message starts afresh.
                d.reset(false);
                return Ok(out);
            }
            let now = (d.total_in() - start) as usize;
            if now == compressed.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if now == used && out.len() == made && out.len() < out.capacity() {
                return Err(invalid("a compressed message is cut short"));
            }
        }
    }
}

/// A client frame's header.
struct Header {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    /// Header bytes.
    len: usize,
    /// Payload bytes.
    payload: usize,
}

impl Header {
    /// The header at the start of `b`; `None` until it is all there. A frame longer than
    /// `max` (plus room for a compressed message's expansion) is refused.
    fn parse(b: &[u8], max: usize) -> io::Result<Option<Self>> {
        if b.len() < 2 {
            return Ok(None);
        }
        let masked = b[1] & 0x80 != 0;
        let (payload, mut len) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(n), 10)
            }
            126 | 127 => return Ok(None),
            n => (u64::from(n), 2),
        };
        if payload > max as u64 + 1024 {
            return Err(invalid("a client frame is too large"));
        }
        let mask = if masked {
            if b.len() < len + 4 {
                return Ok(None);
            }
            let key = [b[len], b[len + 1], b[len + 2], b[len + 3]];
            len += 4;
            Some(key)
        } else {
            None
        };
        Ok(Some(Self {
            fin: b[0] & 0x80 != 0,
            rsv1: b[0] & 0x40 != 0,
            opcode: b[0] & 0x0f,
            mask,
            len,
            payload: payload as usize,
        }))
    }
}

/// A final client frame (masked with a zero key, as a client's must be) holding `payload`.
fn write_frame(out: &mut BytesMut, opcode: u8, payload: &[u8]) {
    out.extend_from_slice(&[0x80 | opcode]);
    match payload.len() {
        n if n < 126 => out.extend_from_slice(&[0x80 | n as u8]),
        n if n <= 0xffff => {
            out.extend_from_slice(&[0x80 | 126]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.extend_from_slice(&[0x80 | 127]);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
}

fn shrink(b: &mut BytesMut) {
    if b.is_empty() && b.capacity() > KEEP_CAPACITY {
        *b = BytesMut::new();
    }
}

fn invalid(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl<S: AsyncWrite + Unpin> AsyncWrite for InflateIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};
    use tokio::io::AsyncReadExt;

    /// A masked client frame.
    fn client_frame(first: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut out = vec![first];
        assert!(payload.len() < 126);
        out.push(0x80 | payload.len() as u8);
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    fn deflated(c: &mut Compress, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        c.compress_vec(text, &mut out, FlushCompress::Sync)
            .expect("deflate");
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - 4);
        out
    }

    /// Reads what tungstenite would see, fed in `step`-byte pieces.
    async fn through(wire: Vec<u8>, step: usize) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in wire.chunks(step) {
                client.write_all(piece).await.expect("write");
            }
        });
        let mut io = InflateIo::new(server, true, 64 * 1024);
        let mut seen = Vec::new();
        io.read_to_end(&mut seen).await.expect("read");
        writer.await.expect("writer");
        seen
    }

    #[tokio::test]
    async fn compressed_messages_come_out_plain_and_the_rest_unchanged() {
        let mut c = Compress::new(Compression::new(6), false);
        let hb = br#"{"type":"heartbeat","lastId":7}"#;
        let key = [1, 2, 3, 4];
        let mut wire = Vec::new();
        // Plain text, a compressed text, a ping, then a compressed message in two
        // fragments (context taken over from the first), then a plain one.
        wire.extend(client_frame(0x81, b"plain", key));
        wire.extend(client_frame(0xc1, &deflated(&mut c, hb), key));
        wire.extend(client_frame(0x89, b"ping", key));
        let second = deflated(&mut c, hb);
        assert!(
            second.len() < 12,
            "context takeover: {} bytes",
            second.len()
        );
        let (a, b) = second.split_at(second.len() / 2);
        wire.extend(client_frame(0x41, a, key));
        wire.extend(client_frame(0x8a, b"pong", key));
        wire.extend(client_frame(0x80, b, key));
        wire.extend(client_frame(0x81, b"end", key));
        let mut expected = Vec::new();
        expected.extend(client_frame(0x81, b"plain", key));
        expected.extend(client_frame(0x81, hb, [0; 4]));
        expected.extend(client_frame(0x89, b"ping", key));
        expected.extend(client_frame(0x8a, b"pong", key));
        expected.extend(client_frame(0x81, hb, [0; 4]));
        expected.extend(client_frame(0x81, b"end", key));
        for step in [1, 3, 7, 1000] {
            assert_eq!(through(wire.clone(), step).await, expected, "step {step}");
        }
    }

    #[tokio::test]
    async fn a_bomb_or_garbage_is_an_error() {
        let mut c = Compress::new(Compression::new(9), false);
        let zeros = vec![b'a'; 80_000];
        let mut out = Vec::with_capacity(4096);
        c.compress_vec(&zeros, &mut out, FlushCompress::Sync)
            .expect("deflate");
        out.truncate(out.len() - 4);
        assert!(out.len() < 125, "{}", out.len());
        let (mut client, server) = tokio::io::duplex(4096);
        let mut wire = client_frame(0xc1, &out, [9, 9, 9, 9]);
        wire.extend(client_frame(0xc1, b"\xff\xff\xff", [0; 4]));
        use tokio::io::AsyncWriteExt;
        client.write_all(&wire).await.expect("write");
        let mut io = InflateIo::new(server, true, 64 * 1024);
        let mut seen = Vec::new();
        let err = io.read_to_end(&mut seen).await.expect_err("too large");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(seen.is_empty());
    }
}
