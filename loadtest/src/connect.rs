//! Opening a reader's stream: a bounded number of connects at once, retries with backoff for
//! transient failures, and the response head read with a timeout. Records connect time.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::http1::{self, BodyDecoder, ProtocolError};
use crate::tally::Tally;
use crate::target::TargetClient;

/// Attempts per connection before the reader gives up.
const ATTEMPTS: u32 = 6;
/// Time allowed from TCP connect to a complete response head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect failed: {0:?}")]
    Io(ErrorKind),
    #[error("no response head within {0:?}")]
    Timeout(Duration),
    #[error("server answered {0}")]
    Status(u16),
    #[error("response head is malformed")]
    Protocol(#[from] ProtocolError),
    #[error("connection closed before the response head")]
    Closed,
}

impl ConnectError {
    /// Short kind for the errors table.
    pub fn kind(&self) -> String {
        match self {
            ConnectError::Io(k) => format!("connect_{}", io_kind(*k)),
            ConnectError::Timeout(_) => "connect_timeout".into(),
            ConnectError::Status(s) => format!("http_{s}"),
            ConnectError::Protocol(_) => "protocol".into(),
            ConnectError::Closed => "connect_closed".into(),
        }
    }

    fn is_transient(&self) -> bool {
        match self {
            ConnectError::Io(_) | ConnectError::Timeout(_) | ConnectError::Closed => true,
            ConnectError::Status(s) => *s == 429 || *s == 503 || *s == 502,
            ConnectError::Protocol(_) => false,
        }
    }
}

/// Lowercase name of an I/O error kind for the errors table.
pub fn io_kind(kind: ErrorKind) -> String {
    let name = format!("{kind:?}");
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// An open stream whose response head has been read.
#[derive(Debug)]
pub struct OpenStream {
    pub stream: TcpStream,
    pub decoder: BodyDecoder,
    /// Body bytes that arrived together with the head.
    pub early_body: Vec<u8>,
    /// The server answered 204 (nothing left to send).
    pub no_content: bool,
    /// Undoes the response's `Content-Encoding`, when it has one.
    pub content: Option<Content>,
}

/// A `Content-Encoding` decoder (the gateway client's own).
pub struct Content(pub tailgate::compress::decode::BodyDecoder);

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Content")
    }
}

/// Opens `path` with `headers`, retrying transient failures. Each failed attempt is counted
/// in `tally` by kind; the final error is returned.
pub async fn open(
    target: &TargetClient,
    reader: usize,
    gate: &Semaphore,
    tally: &Tally,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<OpenStream, ConnectError> {
    let (addr, host) = target.reader_endpoint(reader);
    let request = http1::get_request(host, path, headers);
    let mut backoff = Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        let result = {
            // Closed only if the semaphore is dropped, which never happens while readers run.
            let _permit = gate.acquire().await;
            let started = Instant::now();
            let result = tokio::time::timeout(HEAD_TIMEOUT, attempt_open(addr, &request))
                .await
                .unwrap_or(Err(ConnectError::Timeout(HEAD_TIMEOUT)));
            if result.is_ok() {
                let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                tally.connect.record_all(0, &[us]);
                tally.connects.fetch_add(1, Ordering::Relaxed);
            }
            result
        };
        match result {
            Ok(open) => return Ok(open),
            Err(e) => {
                tally.error(&e.kind());
                if !e.is_transient() || attempt >= ATTEMPTS {
                    return Err(e);
                }
            }
        }
        attempt += 1;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn attempt_open(addr: SocketAddr, request: &[u8]) -> Result<OpenStream, ConnectError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| ConnectError::Io(e.kind()))?;
    // Without nodelay, the request waits on Nagle for no reason.
    let _ = stream.set_nodelay(true);
    stream
        .write_all(request)
        .await
        .map_err(|e| ConnectError::Io(e.kind()))?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let n = stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| ConnectError::Io(e.kind()))?;
        if n == 0 {
            return Err(ConnectError::Closed);
        }
        if let Some((head, used)) = http1::parse_head(&buf)? {
            if head.status == 204 {
                return Ok(OpenStream {
                    stream,
                    decoder: BodyDecoder::new(head.framing),
                    early_body: Vec::new(),
                    no_content: true,
                    content: None,
                });
            }
            if !(200..300).contains(&head.status) {
                return Err(ConnectError::Status(head.status));
            }
            let content = tailgate::compress::decode::BodyDecoder::for_encoding(
                head.content_encoding.as_deref(),
            )
            .map_err(|_| ConnectError::Status(head.status))?
            .map(Content);
            return Ok(OpenStream {
                stream,
                decoder: BodyDecoder::new(head.framing),
                early_body: buf.split_off(used),
                no_content: false,
                content,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_kinds_are_snake_case() {
        assert_eq!(io_kind(ErrorKind::ConnectionRefused), "connection_refused");
        assert_eq!(
            ConnectError::Io(ErrorKind::ConnectionReset).kind(),
            "connect_connection_reset"
        );
    }
}
