//! Connections over `--max-connections`: the probes (`/healthz`, `/readyz`, `/metrics`)
//! still answer, since a gateway at its cap is alive and a probe is short; every other
//! request gets `503 overloaded`. These connections have a small cap of their own and a
//! short deadline, and carry one request each.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::app::App;
use crate::conn::Conn;
use crate::error::ApiError;
use crate::routes;
use crate::server::handshake;
use crate::tls::Tls;

/// Connections over the cap served at once; beyond them a raw `503`.
const OVER_CAP_CONNECTIONS: usize = 64;
/// How long such a connection may take, request and answer.
const OVER_CAP_DEADLINE: Duration = Duration::from_secs(5);

/// The slots for connections over the cap.
pub(crate) fn over_cap_slots() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(OVER_CAP_CONNECTIONS))
}

/// Serves one connection that arrived over the cap: a probe is answered, anything else
/// refused.
pub(crate) async fn serve_over_cap(
    app: Arc<App>,
    stream: TcpStream,
    slots: Arc<Semaphore>,
    tls: Option<Tls>,
) {
    let Ok(_slot) = slots.try_acquire_owned() else {
        // Plain text into a TLS handshake helps nobody: just close.
        if tls.is_none() {
            refuse(stream).await;
        }
        return;
    };
    let stream = match tls {
        None => Conn::Plain(stream),
        Some(tls) => match handshake(&tls, stream, OVER_CAP_DEADLINE).await {
            Some(tls) => Conn::Tls(Box::new(tls)),
            None => return,
        },
    };
    let service = service_fn(move |req| {
        let app = Arc::clone(&app);
        async move {
            let resp = if routes::is_probe(req.uri().path()) {
                routes::handle(app, req).await
            } else {
                ApiError::Overloaded.into_response()
            };
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(OVER_CAP_DEADLINE)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(OVER_CAP_DEADLINE, conn).await;
}

/// Answers `503` without reading the request, and closes.
async fn refuse(mut stream: TcpStream) {
    let body = r#"{"error":"overloaded","message":"the gateway is at its connection limit"}"#;
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(resp.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}
