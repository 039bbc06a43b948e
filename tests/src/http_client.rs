//! A minimal HTTP/1.1 client over hyper for tests: one connection per request.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

/// A whole response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a JSON error body with `code`.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.text());
        let v = self.json();
        assert_eq!(v["error"], code, "body: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "body: {v}"
        );
    }
}

fn build<B>(
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: B,
) -> Request<B> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(body).expect("request")
}

/// Sends a request and returns the response with its body still streaming.
pub async fn open(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response<Incoming> {
    send(
        addr,
        build(method, addr, path, headers, Full::new(Bytes::new())),
    )
    .await
}

async fn send<B>(addr: SocketAddr, req: Request<B>) -> Response<Incoming>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender.send_request(req).await.expect("send request")
}

/// Sends a request and reads the whole response.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Reply {
    let resp = send(addr, build(method, addr, path, headers, Full::new(body))).await;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("read body").to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// A chunked upload that stays open while chunks are sent.
pub struct Upload {
    tx: mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
    reply: JoinHandle<Reply>,
}

impl Upload {
    pub async fn start(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let req = build(
            "POST",
            addr,
            path,
            headers,
            StreamBody::new(ReceiverStream::new(rx)),
        );
        let reply = tokio::spawn(async move {
            let resp = send(addr, req).await;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Reply {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            }
        });
        Self { tx, reply }
    }

    /// Sends one chunk of the body.
    pub async fn send(&self, chunk: impl Into<Bytes>) {
        self.tx
            .send(Ok(Frame::data(chunk.into())))
            .await
            .expect("upload body open");
    }

    /// The response while the body is still open: a request refused before its body is
    /// read is answered so. [`Upload::finish`] must not follow.
    pub async fn early_reply(&mut self) -> Reply {
        (&mut self.reply).await.expect("upload task")
    }

    /// Ends the body and returns the response.
    pub async fn finish(self) -> Reply {
        drop(self.tx);
        self.reply.await.expect("upload task")
    }
}
