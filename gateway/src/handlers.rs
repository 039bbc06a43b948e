//! What each job route does once its request passed the shape and token checks.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming as IncomingBody;
use serde::Serialize;

use crate::app::App;
use crate::auth::JobClaims;
use crate::body::{empty, full, Body};
use crate::compress::{BodyCoder, ReaderCoder};
use crate::entry::Kind;
use crate::error::ApiError;
use crate::job_id::JobId;
use crate::job_log::{Attached, JobLog, Read};
use crate::publish;
use crate::record::Stream;
use crate::routes::query_param;
use crate::store::StoreError;
use crate::streams::SubjectSlot;
use crate::subscription::{Format, Subscription};

/// Longest `?wait=` on the status route.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// `GET /metrics`: the Prometheus scrape.
pub(crate) fn metrics(app: &App) -> Response<Body> {
    crate::metrics::get().set_memory_used(app.hub.memory().used());
    let text = crate::metrics::get().render(app.hub.statuses(), app.hub.store().disk_bytes());
    let mut resp = Response::new(full(Bytes::from(text)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    resp
}

pub(crate) fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

pub(crate) fn json(value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(full(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `GET /readyz`: 503 from the shutdown signal on, and while the store cannot serve (Redis
/// unreachable), naming why.
pub(crate) fn readyz(app: &App) -> Response<Body> {
    if !app.is_ready() {
        return ApiError::Draining.into_response();
    }
    match app.hub.store().unready() {
        Some(why) => ApiError::Storage {
            error: StoreError::unavailable(why, None),
            tally: None,
        }
        .into_response(),
        None => text(StatusCode::OK, "ok\n"),
    }
}

pub(crate) async fn job(app: &App, id: &JobId) -> Result<Arc<JobLog>, ApiError> {
    Ok(app.hub.job(id).await?)
}

/// `POST /v1/jobs/{job}/logs`: counted among the subject's uploads while its body streams.
pub(crate) async fn publish(
    app: &App,
    id: &JobId,
    req: Request<IncomingBody>,
    claims: &JobClaims,
) -> Result<Response<Body>, ApiError> {
    if app.is_draining() {
        return Err(ApiError::Draining);
    }
    let format = publish::Format::from_headers(req.headers())?;
    let _upload = claim_upload(app, claims)?;
    let stream = match query_param(req.uri().query(), "stream").as_deref() {
        None | Some("stdout") => Stream::Stdout,
        Some("stderr") => Stream::Stderr,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "stream {other:?} is not stdout or stderr"
            )))
        }
    };
    let job = job(app, id).await?;
    if job.is_finished() {
        return Err(ApiError::JobFinished { tally: None });
    }
    let tally = publish::upload(
        &app.hub,
        &job,
        req.into_body(),
        format,
        stream,
        app.upload_limits(),
    )
    .await?;
    Ok(json(&tally))
}

/// `POST /v1/jobs/{job}/status`.
pub(crate) async fn set_status(
    app: &App,
    id: &JobId,
    req: Request<IncomingBody>,
) -> Result<Response<Body>, ApiError> {
    let job = job(app, id).await?;
    publish::set_status(&job, req.into_body()).await?;
    Ok(json(&job.snapshot()))
}

/// Where a reader resumes: the last seq it has, and the job's life it had it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resume {
    pub(crate) seq: u64,
    /// `None` for a bare number, which means "this life".
    pub(crate) life: Option<String>,
}

impl Resume {
    /// Parses an event id as the gateway writes it, `<seq>-<life>`, or a bare `<seq>`.
    pub(crate) fn parse(id: &str) -> Option<Self> {
        let (seq, life) = match id.split_once('-') {
            Some((seq, life)) => (seq, Some(life)),
            None => (id, None),
        };
        let seq = seq.parse().ok()?;
        let life = match life {
            Some(l)
                if !l.is_empty()
                    && l.len() <= 32
                    && l.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                Some(l.to_string())
            }
            Some(_) => return None,
            None => None,
        };
        Some(Self { seq, life })
    }
}

/// Where a reader resumes: `Last-Event-ID`, else `last_event_id`, else `last_sequence`.
pub(crate) fn resume_point<B>(req: &Request<B>) -> Result<Option<Resume>, ApiError> {
    let query = req.uri().query();
    let raw = match req.headers().get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::BadRequest("Last-Event-ID is not text".into()))?
                .to_string(),
        ),
        None => query_param(query, "last_event_id")
            .or_else(|| query_param(query, "last_sequence"))
            .map(|v| v.into_owned()),
    };
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        // Not quoted back: a header's value never goes into a message (messages are logged).
        Some(v) => Resume::parse(v).map(Some).ok_or_else(|| {
            ApiError::BadRequest(
                "the last event id is not an event id (<seq>-<life>, or a bare <seq>)".into(),
            )
        }),
    }
}

/// An SSE request that passed every check: a stream to write, or nothing left to read.
pub(crate) enum Opened {
    Stream(Subscription),
    /// A finished job already read to its end: `204`, which stops EventSource reconnecting.
    NoContent,
}

/// Checks an SSE request for `job` (format, resume point, limits) and attaches a reader.
/// Shared by the hyper path and the direct socket path, so both answer alike.
pub(crate) async fn open_stream<B>(
    app: &App,
    id: &JobId,
    req: &Request<B>,
    claims: &JobClaims,
) -> Result<Opened, ApiError> {
    if app.is_draining() {
        return Err(ApiError::Draining);
    }
    let format = match query_param(req.uri().query(), "format").as_deref() {
        None | Some("json") => Format::Json,
        Some("text") => Format::Text,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format {other:?} is not json or text"
            )))
        }
    };
    let resume = resume_point(req)?;
    let job = job(app, id).await?;
    let Some((cursor, reset)) = start_cursor(&job, resume.as_ref()) else {
        return Ok(Opened::NoContent);
    };
    let subject = claim_stream(app, claims)?;
    let attached = attach_reader(app, &job, id)?;
    let coder = crate::compress::negotiate(req.headers(), app.compress.codings()).map(|coding| {
        let shared = app.compress.get(attached.job(), coding, format);
        ReaderCoder::new(shared, app.compress.clone())
    });
    let sub = Subscription::new(
        attached,
        subject,
        cursor,
        reset,
        format,
        app.pacing(),
        coder,
    );
    Ok(Opened::Stream(sub))
}

/// Counts a long-lived read of the token's subject, or refuses it at
/// `--max-streams-per-subject`: SSE, WebSocket, `?wait=` and `/log` downloads alike.
pub(crate) fn claim_stream(app: &App, claims: &JobClaims) -> Result<SubjectSlot, ApiError> {
    app.streams
        .claim(&claims.sub)
        .ok_or_else(|| ApiError::OverLimit {
            message: format!(
                "this token's subject has its maximum of {} open streams, waits and downloads",
                app.streams.max()
            ),
            retry_after: Duration::from_secs(5),
        })
}

/// Counts an upload of the token's subject, or refuses it at `--max-uploads-per-subject`.
fn claim_upload(app: &App, claims: &JobClaims) -> Result<SubjectSlot, ApiError> {
    app.uploads
        .claim(&claims.sub)
        .ok_or_else(|| ApiError::OverLimit {
            message: format!(
                "this token's subject has its maximum of {} uploads in progress",
                app.uploads.max()
            ),
            retry_after: Duration::from_secs(5),
        })
}

/// Counts a reader on `job`, or refuses it at the per-job limit: SSE and WebSocket alike.
pub(crate) fn attach_reader(
    app: &App,
    job: &Arc<JobLog>,
    id: &JobId,
) -> Result<Attached, ApiError> {
    job.attach_subscriber().ok_or_else(|| ApiError::OverLimit {
        message: format!(
            "job {id} has its maximum of {} readers",
            app.config.limits.max_subscribers_per_job
        ),
        retry_after: Duration::from_secs(5),
    })
}

/// The headers of every SSE response.
pub(crate) fn sse_headers(h: &mut http::HeaderMap) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
}

/// `Content-Encoding` when compressed, and `Vary` always: the answer depends on
/// `Accept-Encoding` (a cache must not give a compressed body to a client that cannot read it).
pub(crate) fn encoding_headers(h: &mut http::HeaderMap, encoding: Option<&'static str>) {
    if let Some(token) = encoding {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(token));
    }
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
}

/// `GET /v1/jobs/{job}/logs`: the SSE stream.
pub(crate) async fn stream<B>(
    app: &App,
    id: &JobId,
    req: &Request<B>,
    claims: &JobClaims,
) -> Result<Response<Body>, ApiError> {
    match open_stream(app, id, req, claims).await? {
        Opened::Stream(sub) => {
            let encoding = sub.content_encoding();
            let mut resp = Response::new(sub.into_body());
            sse_headers(resp.headers_mut());
            encoding_headers(resp.headers_mut(), encoding);
            Ok(resp)
        }
        Opened::NoContent => {
            let mut resp = Response::new(empty());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            Ok(resp)
        }
    }
}

/// The first seq to send and why to reset first (if so), or `None` when a finished job
/// was already read to its end in this life (answered `204`, which stops EventSource
/// reconnecting). An id from another life of the job starts over from seq 1, whatever
/// the two lives' lengths: never a continuation in the wrong life, never a false `204`.
pub(crate) fn start_cursor(
    job: &JobLog,
    resume: Option<&Resume>,
) -> Option<(u64, Option<&'static str>)> {
    let last = job.last_seq();
    let Some(resume) = resume else {
        return Some((1, None));
    };
    match (resume.seq, resume.life.as_deref()) {
        (_, Some(life)) if life != job.life() => Some((1, Some("new_life"))),
        (n, _) if n > last => Some((1, Some("unknown_last_event_id"))),
        (n, _) if n == last && job.is_finished() => None,
        (n, _) => Some((n + 1, None)),
    }
}

/// Bytes of log text sent per chunk of the plain-text view.
const TEXT_CHUNK_BYTES: usize = 64 * 1024;

/// `GET /v1/jobs/{job}/log`: the log so far as plain text, streamed from the ring and the
/// store in chunks (a 500 MB log never sits in memory whole). Counted among the subject's
/// streams until the body is done or dropped: a client that never reads holds its place.
pub(crate) async fn plain_log<B>(
    app: &App,
    id: &JobId,
    req: &Request<B>,
    claims: &JobClaims,
) -> Result<Response<Body>, ApiError> {
    let tail =
        match query_param(req.uri().query(), "tail_bytes") {
            None => None,
            Some(v) => Some(v.parse::<usize>().map_err(|_| {
                ApiError::BadRequest(format!("tail_bytes {v:?} is not a byte count"))
            })?),
        };
    let job = job(app, id).await?;
    let slot = claim_stream(app, claims)?;
    let end = job.last_seq();
    let start = match tail {
        Some(bytes) => job.tail_start(bytes).await,
        None => 1,
    };
    // Compressed alone (nothing to share): when every catch-up encoder is taken, plain.
    let coder = crate::compress::negotiate(req.headers(), app.compress.codings())
        .and_then(|coding| BodyCoder::new(&app.compress, coding));
    let encoding = coder.as_ref().map(|c| c.coding().token());
    let state = TextState::Reading {
        job,
        cursor: start,
        coder,
    };
    // The slot goes with the body: freed once the last chunk was taken, or on a drop.
    let chunks = stream::unfold((state, slot), move |(state, slot)| async move {
        let (chunk, next) = match state {
            TextState::Reading {
                job,
                cursor,
                mut coder,
            } => {
                let (text, next) = text_chunk(&job, cursor, end).await;
                let bytes = match coder.as_mut() {
                    Some(c) => c.chunk(&text),
                    None => text,
                };
                let next = match (next, coder) {
                    (Some(cursor), coder) => TextState::Reading { job, cursor, coder },
                    (None, Some(coder)) => TextState::Ending(coder),
                    (None, None) => TextState::Done,
                };
                (bytes, next)
            }
            TextState::Ending(mut coder) => (coder.finish(), TextState::Done),
            TextState::Done => return None,
        };
        Some((Ok(Frame::data(chunk)), (next, slot)))
    });
    let mut resp = Response::new(StreamBody::new(chunks).boxed_unsync());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    encoding_headers(resp.headers_mut(), encoding);
    Ok(resp)
}

/// Where the plain-text body is.
enum TextState {
    /// Reading from `cursor`, compressing with `coder` if any.
    Reading {
        job: Arc<JobLog>,
        cursor: u64,
        coder: Option<BodyCoder>,
    },
    /// Every line went out: the coding's end is next.
    Ending(BodyCoder),
    Done,
}

/// The log lines from `cursor` up to `end`, about one chunk's worth, and where the next
/// chunk starts (`None`: this was the last).
async fn text_chunk(job: &JobLog, mut cursor: u64, end: u64) -> (Bytes, Option<u64>) {
    let mut out = BytesMut::new();
    while cursor <= end && out.len() < TEXT_CHUNK_BYTES {
        match job.read_any(cursor, TEXT_CHUNK_BYTES, None).await {
            Read::Entries(entries) => {
                for e in entries.iter().take_while(|e| e.seq() <= end) {
                    if let (Kind::Log(_), Some(line)) = (e.kind(), e.line()) {
                        out.put_slice(line.as_bytes());
                        out.put_u8(b'\n');
                    }
                }
                cursor = entries.last().map_or(end + 1, |e| e.seq() + 1);
            }
            // Without a spool, records evicted from memory are gone: the text holds the rest.
            Read::Gap { to, .. } => cursor = to + 1,
            Read::Failed(why) | Read::Unavailable(why) => {
                out.put_slice(
                    format!("tailgate: the rest of the log cannot be read: {why}\n").as_bytes(),
                );
                return (out.freeze(), None);
            }
            Read::Idle | Read::End | Read::Behind { .. } => return (out.freeze(), None),
        }
    }
    let next = (cursor <= end).then_some(cursor);
    (out.freeze(), next)
}

/// `GET /v1/jobs/{job}`: status JSON; `?wait=S` holds until the job is terminal, counted
/// among the subject's streams meanwhile.
pub(crate) async fn status<B>(
    app: &App,
    id: &JobId,
    req: &Request<B>,
    claims: &JobClaims,
) -> Result<Response<Body>, ApiError> {
    let wait =
        match query_param(req.uri().query(), "wait") {
            None => Duration::ZERO,
            Some(v) => Duration::from_secs(v.parse::<u64>().map_err(|_| {
                ApiError::BadRequest(format!("wait {v:?} is not a number of seconds"))
            })?)
            .min(MAX_WAIT),
        };
    let job = job(app, id).await?;
    if !wait.is_zero() && !job.is_finished() {
        let _slot = claim_stream(app, claims)?;
        let mut seq_rx = job.watch();
        let deadline = tokio::time::Instant::now() + wait;
        while !job.is_finished() {
            tokio::select! {
                _ = app.shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(deadline) => break,
                changed = seq_rx.changed() => if changed.is_err() { break },
            }
        }
    }
    Ok(json(&job.snapshot()))
}
