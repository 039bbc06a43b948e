//! SSE readers over HTTP/1.1, served directly on their socket.
//!
//! hyper keeps its dispatcher and two 8 KiB buffers per connection for as long as a
//! response streams, and an SSE reader may idle for an hour. So a `GET .../logs` that will
//! certainly succeed is answered here: the head is parsed with `httparse`, the response
//! head written once, then each chunk of shared frames goes straight to the socket and the
//! task holds little more than its cursor. Every other request, and every refusal, goes to
//! hyper with the bytes already read replayed in front ([`Prefixed`]). Over TLS the same
//! holds after the handshake; a client that chose HTTP/2 by ALPN goes to hyper.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::app::App;
use crate::auth::Access;
use crate::conn::{Conn, Prefixed};
use crate::handlers::{self, Opened};
use crate::job_id::JobId;
use crate::routes;
use crate::subscription::Subscription;

/// Bytes read at first for a request head; grown up to the header limit.
const FIRST_READ: usize = 1024;
/// Headers a fast-path request may carry.
pub(crate) const MAX_HEADERS: usize = 48;

/// What a connection turned out to be.
pub(crate) enum Outcome {
    /// An SSE request this path serves: run it with [`SseSocket::run`].
    Stream(SseSocket),
    /// Not ours: hyper serves it, starting with the bytes already read.
    Hyper(Prefixed),
    /// The peer left or never sent a head in time.
    Dropped,
}

/// Reads the request head from `stream` and decides who serves it.
pub(crate) async fn accept(app: &App, mut stream: Conn) -> Outcome {
    let limit = app.config.limits.max_header_bytes;
    let read = tokio::time::timeout(
        app.config.header_read_timeout,
        read_head(&mut stream, limit),
    )
    .await;
    let (buf, head_req) = match read {
        Err(_) | Ok(Err(_)) => return Outcome::Dropped,
        // HTTP/2 by ALPN: hyper's, whatever the bytes.
        Ok(Ok(Head::Complete(buf, _) | Head::Other(buf))) if stream.alpn_h2() => {
            return Outcome::Hyper(Prefixed::new(buf.freeze(), stream))
        }
        Ok(Ok(Head::Eof)) => return Outcome::Dropped,
        Ok(Ok(Head::Other(buf))) => return Outcome::Hyper(Prefixed::new(buf.freeze(), stream)),
        Ok(Ok(Head::Complete(buf, req))) => (buf, req),
    };
    let started = std::time::Instant::now();
    let opened = match head_req {
        Some(req) => {
            // The request span of this path; the stream itself runs outside any span.
            let span = tracing::info_span!(
                "request",
                http.method = "GET",
                http.path = %crate::redact::path(req.uri().path()),
                http.route = "job_logs",
                job.id = tracing::field::Empty,
                http.status_code = tracing::field::Empty,
            );
            let sub = open(app, &req).instrument(span.clone()).await;
            if sub.is_some() {
                span.record("http.status_code", 200);
                crate::metrics::get().request("job_logs", 200);
                let _in = span.enter();
                routes::access_log(
                    &http::Method::GET,
                    "job_logs",
                    http::StatusCode::OK,
                    started,
                );
            }
            sub.map(|sub| (sub, req.headers().get(http::header::ORIGIN).cloned()))
        }
        None => None,
    };
    let Some((sub, origin)) = opened else {
        return Outcome::Hyper(Prefixed::new(buf.freeze(), stream));
    };
    let mut head = Response::new(());
    handlers::sse_headers(head.headers_mut());
    handlers::encoding_headers(head.headers_mut(), sub.content_encoding());
    routes::apply_cors(&app.config.cors_origins, origin.as_ref(), &mut head);
    Outcome::Stream(SseSocket {
        stream,
        sub,
        head: response_head(&head),
        shutdown: app.shutdown.clone(),
    })
}

/// An accepted SSE reader: its socket, its subscription, the response head to send first.
pub(crate) struct SseSocket {
    stream: Conn,
    sub: Subscription,
    head: BytesMut,
    /// Ends a write blocked on a reader that stopped reading, when the gateway drains.
    shutdown: CancellationToken,
}

impl SseSocket {
    /// Streams until the subscription ends, the peer leaves or the gateway shuts down.
    pub(crate) async fn run(mut self) {
        if let Err(e) = self.stream_out().await {
            tracing::debug!(error = %e, "stream reader went away");
        }
    }

    async fn stream_out(&mut self) -> io::Result<()> {
        loop {
            let chunk = tokio::select! {
                biased;
                chunk = self.sub.next_chunk() => chunk,
                gone = peer_gone(self.stream.tcp()) => if gone { return Ok(()) } else { continue },
            };
            let Some(data) = chunk else { break };
            if !self.write(&data).await? {
                return Ok(());
            }
        }
        self.head.extend_from_slice(b"0\r\n\r\n");
        self.stream.write_all(&self.head).await?;
        self.stream.flush().await?;
        self.stream.shutdown().await
    }

    /// Writes `data` as one chunk (the response head rides along the first): at once when
    /// a cleartext socket takes it all (the common case: no future, no allocation), else
    /// (or over TLS) waiting for room unless the gateway drains. Returns `false` when the
    /// drain ended the wait.
    async fn write(&mut self, data: &Bytes) -> io::Result<bool> {
        const CRLF: &[u8] = b"\r\n";
        let size = ChunkSize::new(data.len());
        let slices = [
            io::IoSlice::new(&self.head),
            io::IoSlice::new(size.as_bytes()),
            io::IoSlice::new(data),
            io::IoSlice::new(CRLF),
        ];
        let total: usize = slices.iter().map(|s| s.len()).sum();
        let written = match self.stream.try_write_vectored(&slices) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if written == total {
            if !self.head.is_empty() {
                self.head = BytesMut::new(); // frees the head's buffer for an idle reader
            }
            return Ok(true);
        }
        // A reader that does not keep up holds this chunk: counted in the memory budget
        // until the socket took it, so the rings make room for it.
        let _held = self.sub.memory().charge(total - written);
        let mut framing = std::mem::take(&mut self.head);
        framing.extend_from_slice(size.as_bytes());
        let mut rest = framing.freeze().chain(data.clone()).chain(CRLF);
        rest.advance(written);
        let stream = &mut self.stream;
        let write = async move {
            stream.write_all_buf(&mut rest).await?;
            stream.flush().await
        };
        tokio::select! {
            done = write => done.map(|()| true),
            _ = self.shutdown.cancelled() => Ok(false),
        }
    }
}

/// A chunk's size line (`{hex}\r\n`), built on the stack.
struct ChunkSize {
    buf: [u8; 18],
    start: usize,
}

impl ChunkSize {
    fn new(len: usize) -> Self {
        let mut buf = [0u8; 18];
        buf[16] = b'\r';
        buf[17] = b'\n';
        let mut start = 16;
        let mut rest = len;
        loop {
            start -= 1;
            buf[start] = b"0123456789abcdef"[rest % 16];
            rest /= 16;
            if rest == 0 {
                break;
            }
        }
        Self { buf, start }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

enum Head {
    /// A complete head, as a request when it is one this path may take.
    Complete(BytesMut, Option<Box<Request<()>>>),
    /// Something this path does not parse (HTTP/2 preface, odd or oversized heads).
    Other(BytesMut),
    Eof,
}

async fn read_head<S: AsyncRead + Unpin>(stream: &mut S, limit: usize) -> io::Result<Head> {
    let mut buf = BytesMut::with_capacity(FIRST_READ);
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(if buf.is_empty() {
                Head::Eof
            } else {
                Head::Other(buf)
            });
        }
        if !b"GET ".starts_with(&buf[..buf.len().min(4)]) {
            return Ok(Head::Other(buf));
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let req = (len == buf.len())
                    .then(|| request(&parsed))
                    .flatten()
                    .map(Box::new);
                return Ok(Head::Complete(buf, req));
            }
            Ok(httparse::Status::Partial) if buf.len() < limit => {
                if buf.capacity() == buf.len() {
                    buf.reserve(buf.len().min(limit - buf.len()));
                }
            }
            _ => return Ok(Head::Other(buf)),
        }
    }
}

/// The parsed head as an `http::Request`, if it is a plain `GET .../logs`. The caller
/// passes only heads with nothing after them: pipelined bytes stay in order with hyper.
pub(crate) fn request(parsed: &httparse::Request<'_, '_>) -> Option<Request<()>> {
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return None;
    }
    let path = parsed.path?;
    let mut req = Request::builder().method("GET").uri(path).body(()).ok()?;
    // The route of the path as parsed into the request (a `#` or odd bytes may make it
    // differ from the raw text; found by fuzzing).
    routes::stream_route(req.uri().path())?;
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let body_or_upgrade = name == http::header::CONTENT_LENGTH && h.value != b"0"
            || name == http::header::TRANSFER_ENCODING
            || name == http::header::UPGRADE
            || name == http::header::EXPECT;
        if body_or_upgrade {
            return None;
        }
        req.headers_mut()
            .append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    Some(req)
}

/// Runs the same checks as the hyper path; `None` leaves the answer to hyper.
async fn open(app: &App, req: &Request<()>) -> Option<Subscription> {
    let job = JobId::parse(routes::stream_route(req.uri().path())?).ok()?;
    // Not counted here: a refusal is answered (and counted once) by hyper's path.
    let claims = routes::check_token(app, req, &job, Access::Read).ok()?;
    tracing::Span::current().record("job.id", job.as_str());
    match handlers::open_stream(app, &job, req, &claims).await.ok()? {
        Opened::Stream(sub) => Some(sub),
        Opened::NoContent => None,
    }
}

fn response_head(resp: &Response<()>) -> BytesMut {
    let mut head = BytesMut::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    for (name, value) in resp.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
    head
}

/// Completes when the peer closed (`true`) or sent something it should not have
/// (`true`: a streaming response takes no further requests), or on a spurious wake-up.
/// Over TLS the bytes read are records rustls never sees: a close_notify or a request
/// both end the stream, so they need not be decrypted.
async fn peer_gone(stream: &TcpStream) -> bool {
    // `poll_read_ready` keeps one waker slot on the socket; `readable()` would queue and
    // unqueue a waiter on every event this task writes.
    if std::future::poll_fn(|cx| stream.poll_read_ready(cx))
        .await
        .is_err()
    {
        return true;
    }
    let mut probe = [0u8; 64];
    !matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_lines_are_lowercase_hex() {
        for (len, want) in [
            (0, "0\r\n"),
            (1, "1\r\n"),
            (255, "ff\r\n"),
            (65_536, "10000\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            assert_eq!(ChunkSize::new(len).as_bytes(), want.as_bytes());
        }
    }

    #[test]
    fn only_plain_stream_gets_are_taken() {
        fn take(head: &[u8]) -> Option<Request<()>> {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Request::new(&mut headers);
            parsed.parse(head).ok()?;
            request(&parsed)
        }
        let ok = b"GET /v1/jobs/a/logs?token=t HTTP/1.1\r\nhost: x\r\nlast-event-id: 3\r\n\r\n";
        let req = take(ok).expect("taken");
        assert_eq!(req.uri().query(), Some("token=t"));
        assert_eq!(req.headers()["last-event-id"], "3");
        for other in [
            &b"GET /v1/jobs/a/log HTTP/1.1\r\nhost: x\r\n\r\n"[..],
            b"POST /v1/jobs/a/logs HTTP/1.1\r\nhost: x\r\n\r\n",
            b"GET /v1/jobs/a/logs HTTP/1.0\r\nhost: x\r\n\r\n",
            b"GET /v1/jobs/a/logs HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
            b"GET /v1/jobs/a/logs HTTP/1.1\r\ncontent-length: 5\r\n\r\n",
            b"GET /v1/jobs/#a/logs HTTP/1.1\r\nhost: x\r\n\r\n",
        ] {
            assert!(take(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }

    #[tokio::test]
    async fn pipelined_bytes_go_to_hyper() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let head = b"GET /v1/jobs/a/logs HTTP/1.1\r\nhost: x\r\n\r\n";
        client
            .write_all(&[&head[..], b"GET /healthz HTTP/1.1\r\n\r\n"].concat())
            .await
            .unwrap();
        match read_head(&mut server, 16 * 1024).await.unwrap() {
            Head::Complete(buf, req) => {
                assert!(buf.len() > head.len());
                assert!(req.is_none(), "a head with bytes after it is hyper's");
            }
            _ => panic!("expected a complete head"),
        }
        // The same head alone is this path's.
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(head).await.unwrap();
        match read_head(&mut server, 16 * 1024).await.unwrap() {
            Head::Complete(_, req) => assert!(req.is_some()),
            _ => panic!("expected a complete head"),
        }
    }
}
