//! One publisher per job. Tailgate: one long chunked upload, lines paced at the rate, then the
//! terminal status so streams end. Nchan: one POST per line on a kept-alive connection.
//! Each line carries its counter and send time (see [`crate::line`]).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::cli::{Rate, Target};
use crate::latency::unix_micros;
use crate::line::write_line;
use crate::plan::PublishKind;
use crate::tally::Tally;
use crate::target::{TargetClient, TargetError};

/// Most lines in one chunk at a fixed rate (bounds a catch-up burst after a stall).
const MAX_BATCH: u64 = 4096;
/// Lines per chunk with `--rate max`.
const MAX_RATE_BATCH: u64 = 256;

/// Why a publisher stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("could not mint the publish token")]
    Token(#[from] TargetError),
    #[error("connect failed")]
    Connect(#[source] std::io::Error),
    #[error("HTTP exchange failed")]
    Http(#[from] hyper::Error),
    #[error("could not build the request")]
    Request(#[from] hyper::http::Error),
    #[error("server answered {0}")]
    Status(u16),
}

impl PublishError {
    /// Short kind for the errors table.
    pub fn kind(&self) -> String {
        match self {
            PublishError::Token(_) => "publish_token".into(),
            PublishError::Connect(e) => {
                format!("publish_connect_{}", crate::connect::io_kind(e.kind()))
            }
            PublishError::Http(_) => "publish_http_error".into(),
            PublishError::Request(_) => "publish_request".into(),
            PublishError::Status(s) => format!("publish_http_{s}"),
        }
    }
}

/// What a publisher did.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublishOutcome {
    /// Lines sent (and, for nchan, acknowledged): the last counter.
    pub published: u64,
    /// From the first line to the last.
    pub elapsed: Duration,
    /// Time spent waiting for the server to take lines (backpressure).
    pub blocked: Duration,
}

/// How a publisher paces itself.
#[derive(Debug, Clone, Copy)]
pub struct PublishPlan {
    pub kind: PublishKind,
    pub rate: Rate,
    pub duration: Duration,
    pub line_bytes: usize,
}

/// Hands out how many lines to send next, and when.
struct Pacer {
    plan: PublishPlan,
    start: Instant,
    sent: u64,
}

impl Pacer {
    fn new(plan: PublishPlan) -> Self {
        Self {
            plan,
            start: Instant::now(),
            sent: 0,
        }
    }

    /// Waits until lines are due; `None` once the duration is over.
    async fn next_batch(&mut self) -> Option<u64> {
        match (self.plan.kind, self.plan.rate) {
            (PublishKind::Idle, _) => {
                if self.sent > 0 {
                    return None;
                }
                tokio::time::sleep_until(self.start + self.plan.duration).await;
                Some(1)
            }
            (PublishKind::Stream, Rate::Max) => {
                (self.start.elapsed() < self.plan.duration).then_some(MAX_RATE_BATCH)
            }
            (PublishKind::Stream, Rate::PerSecond(rate)) => loop {
                let elapsed = self.start.elapsed();
                if elapsed >= self.plan.duration {
                    return None;
                }
                let due = (rate * elapsed.as_secs_f64()).floor() as u64 + 1;
                if due > self.sent {
                    return Some((due - self.sent).min(MAX_BATCH));
                }
                let next_at = self.start + Duration::from_secs_f64(self.sent as f64 / rate);
                tokio::time::sleep_until(next_at.min(self.start + self.plan.duration)).await;
            },
        }
    }

    fn batch(&mut self, n: u64, line_bytes: usize, lf: bool) -> Vec<u8> {
        let now = unix_micros();
        let mut out = Vec::with_capacity(n as usize * (line_bytes + 1));
        for _ in 0..n {
            self.sent += 1;
            write_line(&mut out, self.sent, now, line_bytes);
            if lf {
                out.push(b'\n');
            }
        }
        out
    }
}

/// Publishes to `job` per `plan`, counting lines in `published_live`.
pub async fn publish(
    target: &TargetClient,
    job: &str,
    plan: PublishPlan,
    published_live: &AtomicU64,
    tally: &Tally,
) -> PublishOutcome {
    let result = match target.kind {
        Target::Tailgate => publish_tailgate(target, job, plan, published_live).await,
        Target::Nchan => publish_nchan(target, job, plan, published_live, tally).await,
    };
    match result {
        Ok(outcome) => outcome,
        Err((outcome, e)) => {
            tally.error(&e.kind());
            outcome
        }
    }
}

type Failed = (PublishOutcome, PublishError);

async fn publish_tailgate(
    target: &TargetClient,
    job: &str,
    plan: PublishPlan,
    published_live: &AtomicU64,
) -> Result<PublishOutcome, Failed> {
    let fail = |e: PublishError| (PublishOutcome::default(), e);
    let auth = target.publish_auth(job).map_err(|e| fail(e.into()))?;
    let mut sender = handshake(target).await.map_err(fail)?;
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    let mut request = Request::post(target.publish_path(job))
        .header(HOST, &target.host)
        .header(CONTENT_TYPE, "text/plain");
    if let Some(auth) = &auth {
        request = request.header(AUTHORIZATION, auth);
    }
    let request = request
        .body(StreamBody::new(ReceiverStream::new(rx)))
        .map_err(|e| fail(e.into()))?;
    let response = tokio::spawn(sender.send_request(request));

    let mut pacer = Pacer::new(plan);
    let mut outcome = PublishOutcome::default();
    let mut broken = false;
    while let Some(n) = pacer.next_batch().await {
        let chunk = Bytes::from(pacer.batch(n, plan.line_bytes, true));
        let waited = Instant::now();
        if tx.send(Ok(Frame::data(chunk))).await.is_err() {
            // The connection is gone; lines of this batch never left.
            pacer.sent -= n;
            broken = true;
            break;
        }
        outcome.blocked += waited.elapsed();
        published_live.fetch_add(n, Ordering::Relaxed);
        outcome.published = pacer.sent;
    }
    outcome.elapsed = pacer.start.elapsed();
    drop(tx);

    let status = match response.await {
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            // Drain the body so the connection finishes cleanly.
            let _ = resp.into_body().collect().await;
            status
        }
        Ok(Err(e)) => return Err((outcome, e.into())),
        Err(_) => return Err((outcome, PublishError::Status(0))),
    };
    if !(200..300).contains(&status) {
        return Err((outcome, PublishError::Status(status)));
    }
    if broken {
        return Err((outcome, PublishError::Status(status)));
    }
    finish_job(target, job, auth.as_deref())
        .await
        .map_err(|e| (outcome, e))?;
    Ok(outcome)
}

/// Posts the terminal status so every stream of the job ends.
async fn finish_job(
    target: &TargetClient,
    job: &str,
    auth: Option<&str>,
) -> Result<(), PublishError> {
    let mut sender = handshake::<Full<Bytes>>(target).await?;
    let mut request = Request::post(target.status_path(job))
        .header(HOST, &target.host)
        .header(CONTENT_TYPE, "application/json");
    if let Some(auth) = auth {
        request = request.header(AUTHORIZATION, auth);
    }
    let request = request.body(Full::new(Bytes::from_static(
        br#"{"status":"succeeded","exit_code":0}"#,
    )))?;
    expect_success(sender.send_request(request).await?).await
}

async fn publish_nchan(
    target: &TargetClient,
    job: &str,
    plan: PublishPlan,
    published_live: &AtomicU64,
    tally: &Tally,
) -> Result<PublishOutcome, Failed> {
    let mut sender = handshake::<Full<Bytes>>(target)
        .await
        .map_err(|e| (PublishOutcome::default(), e))?;
    let path = target.publish_path(job);
    let mut pacer = Pacer::new(plan);
    let mut outcome = PublishOutcome::default();
    while let Some(n) = pacer.next_batch().await {
        for _ in 0..n {
            let line = Bytes::from(pacer.batch(1, plan.line_bytes, false));
            let waited = Instant::now();
            let result = post_line(&mut sender, target, &path, line).await;
            outcome.blocked += waited.elapsed();
            match result {
                Ok(()) => {
                    published_live.fetch_add(1, Ordering::Relaxed);
                    outcome.published = pacer.sent;
                }
                Err(e) => {
                    // Not published: the next line reuses the counter.
                    pacer.sent -= 1;
                    tally.error(&e.kind());
                    if matches!(e, PublishError::Http(_)) {
                        sender = handshake(target).await.map_err(|e| (outcome, e))?;
                    }
                }
            }
        }
    }
    outcome.elapsed = pacer.start.elapsed();
    Ok(outcome)
}

async fn post_line(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &TargetClient,
    path: &str,
    line: Bytes,
) -> Result<(), PublishError> {
    sender.ready().await?;
    let request = Request::post(path)
        .header(HOST, &target.host)
        .header(CONTENT_TYPE, "text/plain")
        .body(Full::new(line))?;
    expect_success(sender.send_request(request).await?).await
}

async fn handshake<B>(target: &TargetClient) -> Result<SendRequest<B>, PublishError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(target.addr)
        .await
        .map_err(PublishError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Errors surface on the request future; nothing more to do here.
        let _ = conn.await;
    });
    Ok(sender)
}

/// Reads `resp` to its end; a status outside 2xx is the error.
async fn expect_success(resp: hyper::Response<hyper::body::Incoming>) -> Result<(), PublishError> {
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(PublishError::Status(status))
    }
}
