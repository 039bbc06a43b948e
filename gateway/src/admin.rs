//! The `--metrics-listen` listener: `/metrics`, `/healthz` and `/readyz` only, apart from
//! the main listener so scrapes and probes need no route through the public one.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::App;
use crate::body::Body;
use crate::error::ApiError;
use crate::handlers;

/// Scrapers and probers connected at once, at most.
const MAX_CONNECTIONS: usize = 64;

/// Serves until the gateway drains.
pub(crate) async fn serve(listener: TcpListener, app: Arc<App>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            _ = app.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Over the bound, the newcomer waits in the kernel's queue, not in memory.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| {
                let resp = answer(&app, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

fn answer(app: &App, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return ApiError::MethodNotAllowed { allow: "GET, HEAD" }.into_response();
    }
    match req.uri().path() {
        "/metrics" => handlers::metrics(app),
        "/healthz" => handlers::text(StatusCode::OK, "ok\n"),
        "/readyz" if app.is_ready() => handlers::text(StatusCode::OK, "ok\n"),
        "/readyz" => ApiError::Draining.into_response(),
        _ => ApiError::NotFound.into_response(),
    }
}
