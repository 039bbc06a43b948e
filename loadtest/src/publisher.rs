//! One publisher per job. Tailgate: one long chunked upload, lines paced at the rate, then the
//! terminal status so streams end. Nchan: one POST per line, pipelined on one kept-alive
//! connection (nginx answers them in order), at most [`NCHAN_IN_FLIGHT`] unanswered.
//!
//! Each line carries its counter and its *scheduled* send time (see [`crate::line`]): a
//! server that makes the publisher wait shows that wait as latency instead of hiding it
//! (no coordinated omission), so latencies compare at the same offered load.

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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore, TryAcquireError};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::cli::{Rate, Target};
use crate::http1;
use crate::latency::unix_micros;
use crate::line::write_line;
use crate::plan::PublishKind;
use crate::tally::Tally;
use crate::target::{TargetClient, TargetError};

/// Most lines in one chunk at a fixed rate (bounds a catch-up burst after a stall).
const MAX_BATCH: u64 = 4096;
/// Lines per chunk with `--rate max`.
const MAX_RATE_BATCH: u64 = 256;
/// Nchan POSTs sent and not yet answered, at most; beyond it the publisher waits.
const NCHAN_IN_FLIGHT: usize = 64;

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
    #[error("connection failed")]
    Io(#[source] std::io::Error),
    #[error("response could not be parsed")]
    Protocol(#[from] crate::http1::ProtocolError),
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
            PublishError::Io(e) => format!("publish_{}", crate::connect::io_kind(e.kind())),
            PublishError::Protocol(_) => "publish_protocol".into(),
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
    /// `start` as wall-clock microseconds, for the lines' scheduled times.
    start_unix: u64,
    sent: u64,
}

impl Pacer {
    fn new(plan: PublishPlan) -> Self {
        Self {
            plan,
            start: Instant::now(),
            start_unix: unix_micros(),
            sent: 0,
        }
    }

    /// When line `counter` (from 1) was due: on the rate's schedule, or now with no rate.
    fn scheduled_micros(&self, counter: u64) -> u64 {
        match (self.plan.kind, self.plan.rate) {
            (PublishKind::Stream, Rate::PerSecond(rate)) => {
                self.start_unix + ((counter - 1) as f64 * 1e6 / rate) as u64
            }
            _ => unix_micros(),
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
        let mut out = Vec::with_capacity(n as usize * (line_bytes + 1));
        for _ in 0..n {
            self.sent += 1;
            write_line(
                &mut out,
                self.sent,
                self.scheduled_micros(self.sent),
                line_bytes,
            );
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
        Target::Nchan => publish_nchan(target, job, plan, published_live).await,
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
) -> Result<PublishOutcome, Failed> {
    let fail = |e: PublishError| (PublishOutcome::default(), e);
    let stream = TcpStream::connect(target.addr)
        .await
        .map_err(|e| fail(PublishError::Connect(e)))?;
    let _ = stream.set_nodelay(true);
    let (read_half, mut write_half) = stream.into_split();
    let window = Semaphore::new(NCHAN_IN_FLIGHT);
    // This job's acknowledged lines; `published_live` counts every job's.
    let answered = AtomicU64::new(0);
    let counters = [&answered, published_live];
    let mut answers = std::pin::pin!(read_answers(read_half, &window, counters));

    let path = target.publish_path(job);
    let mut pacer = Pacer::new(plan);
    let mut outcome = PublishOutcome::default();
    let send = async {
        while let Some(n) = pacer.next_batch().await {
            let mut requests = Vec::new();
            for _ in 0..n {
                let permit = match window.try_acquire() {
                    Ok(permit) => permit,
                    Err(TryAcquireError::Closed) => return Ok(()), // see the reader's error
                    Err(TryAcquireError::NoPermits) => {
                        // Send what is due, then wait for an answer to free a place.
                        write_half
                            .write_all(&requests)
                            .await
                            .map_err(PublishError::Io)?;
                        requests.clear();
                        let waited = Instant::now();
                        let Ok(permit) = window.acquire().await else {
                            return Ok(());
                        };
                        outcome.blocked += waited.elapsed();
                        permit
                    }
                };
                permit.forget();
                let line = pacer.batch(1, plan.line_bytes, false);
                requests.extend(http1::post_request(
                    &target.host,
                    &path,
                    "text/plain",
                    &line,
                ));
            }
            write_half
                .write_all(&requests)
                .await
                .map_err(PublishError::Io)?;
        }
        Ok(())
    };
    let mut failure = tokio::select! {
        sent = send => sent.err(),
        answered = &mut answers => Some(answered.err().unwrap_or(PublishError::Status(0))),
    };
    outcome.elapsed = pacer.start.elapsed();
    if failure.is_none() {
        // Every answer in (all places back), the reader's error, or time up.
        let all = u32::try_from(NCHAN_IN_FLIGHT).unwrap_or(u32::MAX);
        tokio::select! {
            _ = window.acquire_many(all) => {}
            answered = &mut answers => failure = answered.err(),
            () = tokio::time::sleep(NCHAN_ANSWER_WAIT) => {
                failure = Some(PublishError::Io(std::io::ErrorKind::TimedOut.into()));
            }
        }
    }
    outcome.published = answered.load(Ordering::Relaxed);
    match failure {
        Some(e) => Err((outcome, e)),
        None => Ok(outcome),
    }
}

/// How long the last unanswered POSTs get once the run is over.
const NCHAN_ANSWER_WAIT: Duration = Duration::from_secs(30);

/// Reads the answers to pipelined POSTs in order: each one frees a place in `window`; each
/// 2xx counts a line published in both `counters`. Stops at the first refusal (later lines
/// would be lost).
async fn read_answers(
    mut read_half: OwnedReadHalf,
    window: &Semaphore,
    counters: [&AtomicU64; 2],
) -> Result<(), PublishError> {
    let mut reader = http1::ResponseReader::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = read_half.read(&mut buf).await.map_err(PublishError::Io)?;
        if n == 0 {
            return Err(PublishError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        for status in reader.feed(&buf[..n])? {
            if !(200..300).contains(&status) {
                window.close();
                return Err(PublishError::Status(status));
            }
            for counter in counters {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            window.add_permits(1);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::parse_line;
    use clap::Parser;

    #[test]
    fn lines_carry_their_scheduled_time_not_the_time_they_left() {
        let plan = PublishPlan {
            kind: PublishKind::Stream,
            rate: Rate::PerSecond(100.0),
            duration: Duration::from_secs(1),
            line_bytes: 40,
        };
        let mut pacer = Pacer::new(plan);
        // Three lines sent late, in one batch: each keeps its own slot, 10 ms apart.
        let batch = pacer.batch(3, plan.line_bytes, true);
        let stamps: Vec<(u64, u64)> = batch
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| parse_line(l).unwrap())
            .collect();
        let start = pacer.start_unix;
        assert_eq!(
            stamps,
            [(1, start), (2, start + 10_000), (3, start + 20_000)]
        );
    }

    /// A stand-in for Nchan's publisher endpoint: answers each POST (with a body, to
    /// exercise the framing) and returns the lines' counters in the order they came.
    async fn fake_nchan(listener: tokio::net::TcpListener) -> Vec<u64> {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut counters = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                if buf.len() < end + 4 + len {
                    break;
                }
                let body: Vec<u8> = buf.drain(..end + 4 + len).skip(end + 4).collect();
                counters.push(parse_line(&body).unwrap().0);
                let answer = b"HTTP/1.1 202 Accepted\r\nContent-Length: 7\r\n\r\nqueued\n";
                socket.write_all(answer).await.unwrap();
            }
            match socket.read(&mut chunk).await.unwrap() {
                0 => return counters,
                n => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    #[tokio::test]
    async fn nchan_posts_are_pipelined_in_order_and_counted_when_answered() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(fake_nchan(listener));
        let settings = crate::cli::Settings::try_parse_from([
            "tailgate-loadtest",
            "fanout",
            "--target",
            "nchan",
            "--url",
            &url,
        ])
        .unwrap();
        let target = TargetClient::new(&settings).unwrap();
        let plan = PublishPlan {
            kind: PublishKind::Stream,
            rate: Rate::PerSecond(2000.0),
            duration: Duration::from_millis(200),
            line_bytes: 60,
        };
        // Another job's publisher has already counted 1,000 lines in the shared counter.
        let published = AtomicU64::new(1000);
        let outcome = publish_nchan(&target, "job", plan, &published)
            .await
            .unwrap();
        assert!(outcome.published > 100, "{outcome:?}");
        assert_eq!(published.load(Ordering::Relaxed), 1000 + outcome.published);
        let received = server.await.unwrap();
        let want: Vec<u64> = (1..=outcome.published).collect();
        assert_eq!(received, want);
    }
}
