//! JSON bodies for the refusals hyper writes itself.
//!
//! hyper answers a request it cannot parse (400), an over-long URI (414) or oversized
//! headers (431) on its own, with an empty body, before any handler runs. [`JsonRefusals`]
//! sits between hyper and the socket and swaps exactly that response for the same status
//! with the gateway's `{"error","message"}` body. The gateway's own 400s always carry a
//! body, so a 400/414/431 head with `content-length: 0` can only be hyper's.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Wraps hyper's side of a connection; reads pass through.
pub(crate) struct JsonRefusals<S> {
    inner: S,
    /// The JSON answer still to write, once hyper's empty one was swallowed.
    pending: Bytes,
    /// The header limit, for the 431 message.
    max_header_bytes: usize,
}

impl<S> JsonRefusals<S> {
    pub(crate) fn new(inner: S, max_header_bytes: usize) -> Self {
        Self {
            inner,
            pending: Bytes::new(),
            max_header_bytes,
        }
    }
}

impl<S: AsyncWrite + Unpin> JsonRefusals<S> {
    /// Writes what is pending; ready once nothing is.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

/// The JSON answer replacing hyper's empty refusal `head`, if it is one.
fn replacement(head: &[u8], max_header_bytes: usize) -> Option<Bytes> {
    let status = head.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    let (line, code, message) = match status {
        b"400" => (
            "400 Bad Request",
            "bad_request",
            "the request is not valid HTTP".to_string(),
        ),
        b"414" => (
            "414 URI Too Long",
            "uri_too_long",
            "the request URI is too long".to_string(),
        ),
        b"431" => (
            "431 Request Header Fields Too Large",
            "headers_too_large",
            format!("the request headers are larger than {max_header_bytes} bytes"),
        ),
        _ => return None,
    };
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let lower = head[..end + 2].to_ascii_lowercase();
    if !lower.windows(21).any(|w| w == b"\r\ncontent-length: 0\r\n") {
        return None;
    }
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    Some(Bytes::from(format!(
        "HTTP/1.1 {line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )))
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonRefusals<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonRefusals<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(json) = replacement(buf, self.max_header_bytes) {
            self.pending = json;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        // hyper writes an empty refusal's head as one buffer, and nothing after it.
        if let [only] = bufs {
            if let Some(json) = replacement(only, self.max_header_bytes) {
                self.pending = json;
                return Poll::Ready(Ok(only.len()));
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_s_empty_refusals_are_replaced() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Sat, 28 Nov 2026 08:00:00 GMT\r\n\r\n";
        let json = replacement(hyper_431, 16384).expect("replaced");
        let text = String::from_utf8_lossy(&json);
        assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
        assert!(text.contains("content-type: application/json"), "{text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "headers_too_large");
        assert!(v["message"].as_str().unwrap_or("").contains("16384"));

        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert!(replacement(hyper_400, 1).is_some());
        // The gateway's own answers have bodies; other statuses are never touched.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 61\r\n\r\n";
        assert!(replacement(ours, 1).is_none());
        assert!(replacement(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n", 1).is_none());
        assert!(replacement(b"HTTP/1.1 400 Bad", 1).is_none());
    }
}
