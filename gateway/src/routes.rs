//! Routing: the request's shape first (route, method, job id), then its token, then the
//! handler. Every failure becomes a JSON error; CORS headers are added on the way out.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming as IncomingBody;
use tracing::Instrument;

use crate::app::App;
use crate::auth::{token_from_request, Access, AuthError, JobClaims};
use crate::body::{empty, Body};
use crate::capgo;
use crate::error::ApiError;
use crate::handlers;
use crate::job_id::JobId;
use crate::metrics;
use crate::redact;
use crate::view;

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Healthz,
    Readyz,
    Metrics,
    /// `/v1/jobs/{job}`
    JobStatus(&'a str),
    /// `/v1/jobs/{job}/logs`
    JobLogs(&'a str),
    /// `/v1/jobs/{job}/log`
    JobText(&'a str),
    /// `/v1/jobs/{job}/status`
    JobSetStatus(&'a str),
    /// `/v1/jobs/{job}/view` and its files: the live log page, served without a token.
    View(&'a str, view::Asset),
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Option<Self> {
        match path {
            "/healthz" => return Some(Self::Healthz),
            "/readyz" => return Some(Self::Readyz),
            "/metrics" => return Some(Self::Metrics),
            _ => {}
        }
        let rest = path.strip_prefix("/v1/jobs/")?;
        let mut parts = rest.splitn(2, '/');
        let job = parts.next()?;
        match parts.next() {
            None => Some(Self::JobStatus(job)),
            Some("logs") => Some(Self::JobLogs(job)),
            Some("log") => Some(Self::JobText(job)),
            Some("status") => Some(Self::JobSetStatus(job)),
            Some(rest) => view::Asset::parse(rest).map(|asset| Self::View(job, asset)),
        }
    }

    /// The methods the route answers, for `405` and `Allow`.
    fn allow(self) -> &'static str {
        match self {
            Self::Healthz
            | Self::Readyz
            | Self::Metrics
            | Self::JobStatus(_)
            | Self::JobText(_)
            | Self::View(..) => "GET, HEAD, OPTIONS",
            Self::JobLogs(_) => "GET, POST, OPTIONS",
            Self::JobSetStatus(_) => "POST, OPTIONS",
        }
    }

    /// The route's name for spans and metrics: fixed, never the job id.
    fn name(self) -> &'static str {
        match self {
            Self::Healthz => "healthz",
            Self::Readyz => "readyz",
            Self::Metrics => "metrics",
            Self::JobStatus(_) => "job_status",
            Self::JobLogs(_) => "job_logs",
            Self::JobText(_) => "job_log",
            Self::JobSetStatus(_) => "job_set_status",
            Self::View(..) => "job_view",
        }
    }

    fn job(self) -> Option<&'a str> {
        match self {
            Self::Healthz | Self::Readyz | Self::Metrics => None,
            Self::JobStatus(j)
            | Self::JobLogs(j)
            | Self::JobText(j)
            | Self::JobSetStatus(j)
            | Self::View(j, _) => Some(j),
        }
    }
}

/// Whether `path` is a probe, answered even over the connection cap.
pub(crate) fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// The job of a `GET /v1/jobs/{job}/logs` path, the one route the socket fast path serves.
pub(crate) fn stream_route(path: &str) -> Option<&str> {
    match Route::parse(path)? {
        Route::JobLogs(job) => Some(job),
        _ => None,
    }
}

/// The route name of `path` for spans and metrics (`unknown` for no route).
pub(crate) fn route_name(app: &App, path: &str) -> &'static str {
    if capgo::owns(&app.config.capgo, path) {
        return "capgo";
    }
    Route::parse(path).map_or("unknown", Route::name)
}

/// Serves one request.
pub(crate) async fn handle(app: Arc<App>, req: Request<IncomingBody>) -> Response<Body> {
    let started = Instant::now();
    let route = route_name(&app, req.uri().path());
    // The path with tokens masked, never the query string: both may hold a token.
    let span = tracing::info_span!(
        "request",
        http.method = %req.method(),
        http.path = %redact::path(req.uri().path()),
        http.route = route,
        job.id = tracing::field::Empty,
        http.status_code = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    );
    let method = req.method().clone();
    let version = req.version();
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut resp = async {
        let resp = match dispatch(&app, req).await {
            Ok(resp) => resp,
            Err(err) => {
                // The code, not the message: a message may quote what the client sent.
                if err.status().is_server_error() {
                    tracing::warn!(error.code = err.code(), "request failed");
                } else {
                    tracing::debug!(error.code = err.code(), "request refused");
                }
                err.into_response()
            }
        };
        access_log(&method, route, resp.status(), started);
        resp
    }
    .instrument(span.clone())
    .await;
    apply_cors(&app.config.cors_origins, origin.as_ref(), &mut resp);
    close_after_refusal(version, &mut resp);
    let status = resp.status().as_u16();
    // For a stream this is the time to its first byte: the body runs on after.
    span.record("http.status_code", status);
    span.record("duration_ms", started.elapsed().as_millis() as u64);
    metrics::get().request(route, status);
    resp
}

/// A `429` on HTTP/1 closes its connection: a client over its cap must not keep the
/// connection (and its `--max-connections` slot) for another try. On HTTP/2 only the
/// refused stream ends: the connection's other streams (a browser multiplexes a page's
/// readers on one) are another request's business, and the connection holds one slot.
fn close_after_refusal<B>(version: Version, resp: &mut Response<B>) {
    if resp.status() == StatusCode::TOO_MANY_REQUESTS && version < Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// One line per request at `info`: method, route name, status, time to the response head
/// (a stream's own duration is its reader's business). Never the path or query string.
pub(crate) fn access_log(
    method: &Method,
    route: &'static str,
    status: StatusCode,
    started: Instant,
) {
    tracing::info!(
        http.method = %method,
        http.route = route,
        http.status = status.as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
}

async fn dispatch(app: &Arc<App>, req: Request<IncomingBody>) -> Result<Response<Body>, ApiError> {
    if capgo::owns(&app.config.capgo, req.uri().path()) {
        return capgo::dispatch(app, req).await;
    }
    let route = Route::parse(req.uri().path()).ok_or(ApiError::NotFound)?;
    let method = req.method().clone();
    if method == Method::OPTIONS {
        return Ok(preflight(route.allow()));
    }
    let allowed = match route {
        Route::JobLogs(_) => method == Method::GET || method == Method::POST,
        Route::JobSetStatus(_) => method == Method::POST,
        _ => method == Method::GET || method == Method::HEAD,
    };
    if !allowed {
        return Err(ApiError::MethodNotAllowed {
            allow: route.allow(),
        });
    }
    let job = match route.job() {
        Some(raw) => JobId::parse(raw)?,
        None => {
            return Ok(match route {
                Route::Readyz => handlers::readyz(app),
                // Job counts and traffic are for operators: on the main listener only with
                // `--metrics-public`, else on `--metrics-listen`.
                Route::Metrics if !app.config.metrics_public => return Err(ApiError::NotFound),
                Route::Metrics => handlers::metrics(app),
                _ => handlers::text(StatusCode::OK, "ok\n"),
            });
        }
    };
    if let Route::View(_, asset) = route {
        return Ok(view::serve(asset, &view::Links::canonical(&job)));
    }
    let access = if method == Method::POST {
        Access::Publish
    } else {
        Access::Read
    };
    let claims = authorize(app, &req, &job, access).await?;
    match route {
        Route::JobLogs(_) if method == Method::POST => {
            handlers::publish(app, &job, req, &claims).await
        }
        Route::JobLogs(_) => handlers::stream(app, &job, &req, &claims).await,
        Route::JobText(_) => handlers::plain_log(app, &job, &req, &claims).await,
        Route::JobStatus(_) => handlers::status(app, &job, &req, &claims).await,
        Route::JobSetStatus(_) => handlers::set_status(app, &job, req).await,
        Route::Healthz | Route::Readyz | Route::Metrics | Route::View(..) => {
            Err(ApiError::NotFound)
        }
    }
}

/// Checks the request's token for `job`; records the job on the request span. A token
/// naming a key the JWKS lacks is refused and makes the JWKS be fetched again in the
/// background (rate-limited).
pub(crate) fn authorize<'a, B>(
    app: &'a App,
    req: &Request<B>,
    job: &'a JobId,
    access: Access,
) -> impl std::future::Future<Output = Result<JobClaims, ApiError>> + Send + 'a {
    let checked = check_token(app, req, job, access);
    if let Err(e) = &checked {
        metrics::get().auth_failure(e.reason());
    }
    async move {
        let claims = checked?;
        tracing::Span::current().record("job.id", job.as_str());
        Ok(claims)
    }
}

/// [`authorize`] without counting a refusal in `tailgate_auth_failures_total`: for the
/// socket fast path, which leaves a refused request to hyper's path (that counts it once).
pub(crate) fn check_token<B>(
    app: &App,
    req: &Request<B>,
    job: &JobId,
    access: Access,
) -> Result<JobClaims, AuthError> {
    let token = token_from_request(req.headers(), req.uri().query()).ok_or(AuthError::Missing)?;
    let verified = app.auth.verify(&token, job, access);
    // Answered from the current set at once; the set is fetched in the background.
    if let (Err(AuthError::UnknownKey), Some(jwks)) = (&verified, app.auth.jwks()) {
        jwks.refresh_for_unknown_kid();
    }
    verified
}

/// The value of query parameter `name`, percent-decoded.
pub(crate) fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

pub(crate) fn preflight(allow: &'static str) -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static(allow));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(allow),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, last-event-id, x-capgo-log-token"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    resp
}

/// Adds `Access-Control-Allow-Origin` when the request's origin is allowed.
pub(crate) fn apply_cors<B>(
    allowed: &[String],
    origin: Option<&HeaderValue>,
    resp: &mut Response<B>,
) {
    let Some(origin) = origin else { return };
    let ok = allowed
        .iter()
        .any(|a| a == "*" || a.as_bytes() == origin.as_bytes());
    let h = resp.headers_mut();
    if !ok {
        h.remove(header::ACCESS_CONTROL_ALLOW_METHODS);
        h.remove(header::ACCESS_CONTROL_ALLOW_HEADERS);
        h.remove(header::ACCESS_CONTROL_MAX_AGE);
        return;
    }
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.insert(header::VARY, HeaderValue::from_static("origin"));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("www-authenticate, retry-after"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_shape() {
        assert_eq!(Route::parse("/v1/jobs/a"), Some(Route::JobStatus("a")));
        assert_eq!(Route::parse("/v1/jobs/a/logs"), Some(Route::JobLogs("a")));
        assert_eq!(Route::parse("/v1/jobs/a/log"), Some(Route::JobText("a")));
        assert_eq!(
            Route::parse("/v1/jobs/a/status"),
            Some(Route::JobSetStatus("a"))
        );
        assert_eq!(Route::parse("/v1/jobs/a/b/logs"), None);
        assert_eq!(Route::parse("/v1/jobs/a/other"), None);
        assert_eq!(
            Route::parse("/v1/jobs/a/view"),
            Some(Route::View("a", view::Asset::Page))
        );
        assert_eq!(
            Route::parse("/v1/jobs/a/view/page.js"),
            Some(Route::View("a", view::Asset::Script))
        );
        assert_eq!(Route::parse("/v2/jobs/a"), None);
        assert_eq!(Route::parse("/healthz"), Some(Route::Healthz));
    }

    #[test]
    fn query_params_are_decoded() {
        assert_eq!(
            query_param(Some("a=1&token=x%2By&b"), "token").as_deref(),
            Some("x+y")
        );
        assert_eq!(query_param(None, "token"), None);
    }
}
