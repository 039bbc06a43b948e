//! Capgo compatibility: the routes a Capgo `logs_url` names (`{prefix}/{job}`), so the
//! published Capgo CLI streams a build from Tailgate unchanged.
//!
//! - `POST {prefix}/{job}/start`: checks the `x-capgo-log-token`, answers `{"ok":true}`.
//! - `GET {prefix}/{job}/stream?token=`: `upgrade`, then `ws`, a WebSocket session speaking
//!   Capgo's `frames`, resuming after the client's last id in `confirmations`, compressed
//!   with `permessage-deflate` when the client offers it (`deflate`, `inflate_io`).
//! - `GET {prefix}/{job}`: the SSE stream, as `GET /v1/jobs/{job}/logs`.
//! - `GET {prefix}/{job}/view`: the live log page (`view`), reading that stream.

mod confirmations;
mod deflate;
pub(crate) mod frames;
mod inflate_io;
mod upgrade;
mod ws;

use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming as IncomingBody;
use serde_json::json;
use tokio_util::task::TaskTracker;

use crate::app::App;
use crate::auth::Access;
use crate::body::Body;
use crate::config::{CapgoConfig, Config};
use crate::error::ApiError;
use crate::handlers;
use crate::job_id::JobId;
use crate::memory::MemoryBudget;
use crate::routes::{authorize, preflight};
use crate::view;

pub(crate) use confirmations::Confirmations;

/// Confirmations outlive their last use by this many jobs' worth of entries at most.
const CONFIRMATIONS_PER_JOB: usize = 4;

/// What the Capgo routes share across requests.
pub(crate) struct CapgoState {
    /// Each client's last confirmed id, for resuming after a reconnect.
    pub(crate) confirmations: Arc<Confirmations>,
    /// Running WebSocket sessions, which hyper no longer tracks once upgraded; the
    /// drain waits for them to send their close frames.
    pub(crate) sessions: TaskTracker,
    /// The sessions' `permessage-deflate` compressors; `None` with `--compression off`.
    compressors: Option<Arc<deflate::Compressors>>,
}

impl CapgoState {
    pub(crate) fn new(config: &Config, memory: Arc<MemoryBudget>) -> Self {
        // A client reconnects while its job is held: for the job's retention after it
        // finished, or its idle timeout before.
        let ttl = config.retention.max(config.idle_timeout);
        let capacity = config.limits.max_jobs.saturating_mul(CONFIRMATIONS_PER_JOB);
        Self {
            confirmations: Arc::new(Confirmations::new(ttl, capacity)),
            sessions: TaskTracker::new(),
            compressors: (!config.compression.codings.0.is_empty()).then(|| {
                Arc::new(deflate::Compressors::new(
                    deflate::DEFAULT_MAX_COMPRESSORS,
                    config.compression.gzip_level,
                    memory,
                ))
            }),
        }
    }

    /// Waits for every WebSocket session to end (they end themselves on shutdown).
    pub(crate) async fn drain(&self) {
        self.sessions.close();
        self.sessions.wait().await;
    }
}

/// Whether `path` is under the Capgo prefix and the routes are on.
pub(crate) fn owns(config: &CapgoConfig, path: &str) -> bool {
    config.enabled
        && path
            .strip_prefix(config.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// What a path under the prefix names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    /// `{prefix}/{job}`: SSE.
    Sse(&'a str),
    /// `{prefix}/{job}/start`.
    Start(&'a str),
    /// `{prefix}/{job}/stream`: WebSocket.
    Stream(&'a str),
    /// `{prefix}/{job}/view` and its files: the live log page, served without a token.
    View(&'a str, view::Asset),
}

impl<'a> Route<'a> {
    fn parse(prefix: &str, path: &'a str) -> Option<Self> {
        let rest = path.strip_prefix(prefix)?.strip_prefix('/')?;
        let mut parts = rest.splitn(2, '/');
        let job = parts.next()?;
        match parts.next() {
            None => Some(Self::Sse(job)),
            Some("start") => Some(Self::Start(job)),
            Some("stream") => Some(Self::Stream(job)),
            Some(rest) => view::Asset::parse(rest).map(|asset| Self::View(job, asset)),
        }
    }

    fn job(self) -> &'a str {
        match self {
            Self::Sse(j) | Self::Start(j) | Self::Stream(j) | Self::View(j, _) => j,
        }
    }

    fn method(self) -> Method {
        match self {
            Self::Start(_) => Method::POST,
            Self::Sse(_) | Self::Stream(_) | Self::View(..) => Method::GET,
        }
    }

    fn allow(self) -> &'static str {
        match self {
            Self::Start(_) => "POST, OPTIONS",
            Self::Sse(_) | Self::Stream(_) | Self::View(..) => "GET, OPTIONS",
        }
    }
}

/// Serves a request under the prefix: shape, method, job id, token, then the route.
pub(crate) async fn dispatch(
    app: &Arc<App>,
    req: Request<IncomingBody>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_owned();
    let route = Route::parse(&app.config.capgo.prefix, &path).ok_or(ApiError::NotFound)?;
    if req.method() == Method::OPTIONS {
        return Ok(preflight(route.allow()));
    }
    if req.method() != route.method() {
        return Err(ApiError::MethodNotAllowed {
            allow: route.allow(),
        });
    }
    let job = JobId::parse(route.job())?;
    if let Route::View(_, asset) = route {
        return Ok(view::serve(asset, &view::Links::capgo(&job)));
    }
    let claims = authorize(app, &req, &job, Access::Read).await?;
    match route {
        Route::Start(_) => start(app, &job).await,
        Route::Sse(_) => handlers::stream(app, &job, &req, &claims).await,
        Route::Stream(_) => upgrade::upgrade(app, &job, req, &claims).await,
        Route::View(..) => Err(ApiError::NotFound),
    }
}

/// `POST {prefix}/{job}/start`: the token may read the job; the CLI then opens the stream.
async fn start(app: &App, id: &JobId) -> Result<Response<Body>, ApiError> {
    let snapshot = handlers::job(app, id).await?.snapshot();
    Ok(handlers::json(&json!({
        "ok": true,
        "job_id": id.as_str(),
        "status": snapshot.status,
        "last_seq": snapshot.last_seq,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_under_the_prefix() {
        let p = "/build_logs_direct";
        assert_eq!(
            Route::parse(p, "/build_logs_direct/j1"),
            Some(Route::Sse("j1"))
        );
        assert_eq!(
            Route::parse(p, "/build_logs_direct/j1/start"),
            Some(Route::Start("j1"))
        );
        assert_eq!(
            Route::parse(p, "/build_logs_direct/j1/stream"),
            Some(Route::Stream("j1"))
        );
        assert_eq!(
            Route::parse(p, "/build_logs_direct/j1/view"),
            Some(Route::View("j1", view::Asset::Page))
        );
        assert_eq!(Route::parse(p, "/build_logs_direct/j1/other"), None);
        assert_eq!(Route::parse(p, "/build_logs_direct"), None);
        assert_eq!(Route::parse(p, "/build_logs_directx/j1"), None);
    }

    #[test]
    fn owns_only_its_prefix_when_enabled() {
        let mut c = CapgoConfig::default();
        assert!(owns(&c, "/build_logs_direct/j"));
        assert!(owns(&c, "/build_logs_direct"));
        assert!(!owns(&c, "/build_logs_directory/j"));
        assert!(!owns(&c, "/v1/jobs/j"));
        c.enabled = false;
        assert!(!owns(&c, "/build_logs_direct/j"));
    }
}
