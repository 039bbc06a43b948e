//! [`Publisher`]: streams records to a job as NDJSON with a publisher sequence `n`,
//! at least once to the gateway and so exactly once for readers.
//!
//! Records wait in the [`Backlog`] until an upload's answer (or, after a broken connection,
//! the job's `last_n`) acknowledges them. An upload stays open while records arrive, each
//! sent at once, and is ended after `rotate_bytes` or a quiet spell so acknowledgements keep
//! the backlog small; after a failure the publisher backs off, reads `last_n` and resends.
//! A gateway that stays silent (no answer once an upload ended, or an upload it stopped
//! reading) is a failed attempt like a broken connection; a TLS failure stops publishing.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ::http::header;
use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use super::backlog::{Backlog, DEFAULT_MEMORY_BYTES};
use super::backoff::Backoff;
use super::url::JobUrl;
use super::{error_chain, token_for};
use crate::net::http::{self, ApiFailure, HttpError};

/// An upload the gateway has not read from for this long is given up and resent.
const UPLOAD_STALL: Duration = Duration::from_secs(60);

/// Called before each retry with the delay and the reason.
pub type RetryHook = Arc<dyn Fn(Duration, &str) + Send + Sync>;

/// How to publish.
#[derive(Clone)]
pub struct PublisherOptions {
    pub url: JobUrl,
    pub token: Option<String>,
    pub backoff: Backoff,
    /// Records held in memory before the spool file takes the rest.
    pub memory_bytes: usize,
    /// An upload is ended (and acknowledged) after this many bytes.
    pub rotate_bytes: usize,
    /// An upload that sent something and then had nothing to send this long is ended.
    pub rotate_idle: Duration,
    pub on_retry: Option<RetryHook>,
}

impl PublisherOptions {
    pub fn new(url: JobUrl, token: Option<String>) -> Self {
        Self {
            url,
            token,
            backoff: Backoff::default(),
            memory_bytes: DEFAULT_MEMORY_BYTES,
            rotate_bytes: 1024 * 1024,
            rotate_idle: Duration::from_secs(2),
            on_retry: None,
        }
    }
}

/// Why publishing stopped for good.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// `401`/`403`.
    #[error("the gateway refused the token: {}", .0.message)]
    Rejected(ApiFailure),
    /// Another answer retrying cannot change: `409 job_finished`, `400`, `413`...
    #[error("the gateway refused the upload: {0}")]
    Refused(ApiFailure),
    #[error("the spool file failed: {0}")]
    Spool(String),
    #[error("{unsent} records were not acknowledged in time")]
    Timeout { unsent: u64 },
    /// A failure retrying cannot fix: an untrusted certificate, a port without TLS.
    #[error("{0}")]
    Unusable(String),
}

/// What the publisher did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records acknowledged by the gateway.
    pub acknowledged: u64,
    /// The job's `last_n` when done.
    pub last_n: u64,
    /// Uploads that failed and were retried.
    pub retries: u32,
}

/// State shared by the producer side and the sending task.
struct Shared {
    backlog: Mutex<Backlog>,
    /// No more records will be pushed.
    closed: std::sync::atomic::AtomicBool,
    /// Wakes the sender when a record is pushed or the publisher closes.
    wake: Notify,
    /// The first error of pushing (spool I/O), reported at the end.
    push_error: Mutex<Option<String>>,
}

impl Shared {
    fn backlog(&self) -> MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running publisher: push records, then [`finish`](Self::finish).
pub struct Publisher {
    shared: Arc<Shared>,
    task: JoinHandle<Result<Summary, PublishError>>,
}

impl Publisher {
    /// Starts the sending task; nothing is sent until a record is pushed.
    pub fn start(opts: PublisherOptions) -> Self {
        let shared = Arc::new(Shared {
            backlog: Mutex::new(Backlog::new(opts.memory_bytes)),
            closed: false.into(),
            wake: Notify::new(),
            push_error: Mutex::new(None),
        });
        let sender = Sender {
            token: token_for(opts.token.as_deref(), &opts.url),
            opts,
            shared: Arc::clone(&shared),
            base: None,
            synced: false,
            summary: Summary::default(),
        };
        let task = tokio::spawn(sender.run());
        Self { shared, task }
    }

    /// Queues a log line (`stream`: `stdout` or `stderr`).
    pub fn line(&self, stream: &str, line: &str) {
        self.push(json!({ "line": line, "stream": stream }));
    }

    /// Queues a custom record.
    pub fn custom(&self, kind: &str, data: Value) {
        self.push(json!({ "custom": { "kind": kind, "data": data } }));
    }

    /// Queues a status record (a terminal one closes the job's log).
    pub fn status(&self, status: &str, exit_code: Option<i32>) {
        let mut record = json!({ "status": status });
        if let Some(code) = exit_code {
            record["exit_code"] = code.into();
        }
        self.push(record);
    }

    fn push(&self, record: Value) {
        let pushed = self.shared.backlog().push(Bytes::from(record.to_string()));
        if let Err(e) = pushed {
            let mut slot = self
                .shared
                .push_error
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert_with(|| e.to_string());
        }
        self.shared.wake.notify_one();
    }

    /// Records pushed and not yet acknowledged.
    pub fn unacknowledged(&self) -> u64 {
        self.shared.backlog().len()
    }

    /// The sending task stopped on an error (later records will not be sent).
    pub fn has_failed(&self) -> bool {
        self.task.is_finished()
            && !self
                .shared
                .closed
                .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Closes the publisher and waits up to `timeout` until every record is acknowledged.
    pub async fn finish(self, timeout: Duration) -> Result<Summary, PublishError> {
        self.shared
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.shared.wake.notify_one();
        let mut task = self.task;
        let result = match tokio::time::timeout(timeout, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(PublishError::Spool(format!("publisher task failed: {e}"))),
            Err(_) => {
                task.abort();
                Err(PublishError::Timeout {
                    unsent: self.shared.backlog().len(),
                })
            }
        };
        let push_error = self
            .shared
            .push_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match push_error {
            Some(e) if result.is_ok() => Err(PublishError::Spool(e)),
            _ => result,
        }
    }
}

/// How one upload ended.
enum Outcome {
    /// The gateway answered `200` with its `last_n`.
    Acknowledged(u64),
    Retry(String, Option<Duration>),
}

/// The sending task.
struct Sender {
    opts: PublisherOptions,
    token: Option<String>,
    shared: Arc<Shared>,
    /// `n` = base + local seq; the job's `last_n` when first read.
    base: Option<u64>,
    /// The backlog is acknowledged up to what the gateway holds.
    synced: bool,
    summary: Summary,
}

impl Sender {
    async fn run(mut self) -> Result<Summary, PublishError> {
        loop {
            let (empty, closed) = {
                let b = self.shared.backlog();
                (b.is_empty(), self.is_closed())
            };
            if empty && closed && self.base.is_some() {
                return Ok(self.summary);
            }
            if empty && self.base.is_some() {
                self.shared.wake.notified().await;
                continue;
            }
            let outcome = if self.synced {
                self.upload().await?
            } else {
                self.sync().await?
            };
            match outcome {
                Outcome::Acknowledged(last_n) => {
                    self.acknowledge(last_n)?;
                    self.opts.backoff.reset();
                }
                Outcome::Retry(cause, retry_after) => {
                    self.synced = false;
                    self.summary.retries += 1;
                    let delay = self
                        .opts
                        .backoff
                        .next_delay()
                        .max(retry_after.unwrap_or_default());
                    if let Some(hook) = &self.opts.on_retry {
                        hook(delay, &cause);
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.shared
            .closed
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn acknowledge(&mut self, last_n: u64) -> Result<(), PublishError> {
        let base = *self.base.get_or_insert(last_n);
        self.summary.last_n = last_n;
        let mut backlog = self.shared.backlog();
        let before = backlog.acked();
        backlog
            .ack(last_n.saturating_sub(base))
            .map_err(|e| PublishError::Spool(e.to_string()))?;
        self.summary.acknowledged += backlog.acked() - before;
        Ok(())
    }

    /// Reads the job's `last_n`: the first time it fixes the base, later it acknowledges what
    /// the gateway got before a connection broke.
    async fn sync(&mut self) -> Result<Outcome, PublishError> {
        let url = &self.opts.url;
        let req = http::get(&url.endpoint, &url.status_path(), self.token.as_deref());
        let answer = match req {
            Ok(req) => http::exchange_json(&url.endpoint, req).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(Ok(status)) => {
                self.synced = true;
                Ok(Outcome::Acknowledged(
                    status["last_n"].as_u64().unwrap_or(0),
                ))
            }
            Ok(Err(failure)) => classify(failure),
            Err(e) => network(e),
        }
    }

    /// One NDJSON upload of the unacknowledged records, then whatever arrives, until rotation.
    async fn upload(&mut self) -> Result<Outcome, PublishError> {
        let base = self.base.unwrap_or(0);
        let url = self.opts.url.clone();
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
        let req = http::bearer(
            http::request("POST", &url.endpoint, &url.publish_path()),
            self.token.as_deref(),
        )
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(StreamBody::new(ReceiverStream::new(rx)));
        let req = match req {
            Ok(r) => r,
            Err(e) => return Ok(Outcome::Retry(e.to_string(), None)),
        };
        let endpoint = url.endpoint.clone();
        let mut answer = std::pin::pin!(async {
            let answer = http::send_streaming(&endpoint, req).await?;
            answer.await
        });
        let mut early = None;
        let mut cursor = self.shared.backlog().acked();
        let mut sent_bytes = 0usize;
        loop {
            let (next, spooled) = {
                let b = self.shared.backlog();
                (b.after(cursor), b.has_spooled())
            };
            match next {
                Some((seq, record)) => {
                    let line = numbered(base + seq, &record);
                    let len = line.len();
                    tokio::select! {
                        r = &mut answer => { early = Some(r); break; }
                        sent = tx.send(Ok(Frame::data(line))) => {
                            if sent.is_err() { break; }
                            cursor = seq;
                            sent_bytes += len;
                            if sent_bytes >= self.opts.rotate_bytes { break; }
                        }
                        () = tokio::time::sleep(UPLOAD_STALL) => {
                            let stalled = format!(
                                "{endpoint} stopped reading the upload for {}",
                                humantime::format_duration(UPLOAD_STALL)
                            );
                            return Ok(Outcome::Retry(stalled, None));
                        }
                    }
                }
                None if spooled || self.is_closed() => break,
                None => {
                    let idle = self.opts.rotate_idle;
                    tokio::select! {
                        r = &mut answer => { early = Some(r); break; }
                        _ = self.shared.wake.notified() => {}
                        _ = tokio::time::sleep(idle), if sent_bytes > 0 => break,
                    }
                }
            }
        }
        drop(tx);
        let resp = match early {
            Some(r) => r,
            // The answer comes once the body ended; a silent gateway is a failed attempt.
            None => {
                let after = http::connect_timeout();
                tokio::time::timeout(after, answer)
                    .await
                    .unwrap_or_else(|_| {
                        Err(HttpError::NoAnswer {
                            addr: endpoint.to_string(),
                            after,
                        })
                    })
            }
        };
        self.answer(resp).await
    }

    async fn answer(
        &mut self,
        resp: Result<::http::Response<hyper::body::Incoming>, HttpError>,
    ) -> Result<Outcome, PublishError> {
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return network(e),
        };
        if !resp.status().is_success() {
            return classify(ApiFailure::read(resp).await);
        }
        match http::read_body(resp.into_body()).await {
            Ok(body) => match serde_json::from_slice::<Value>(&body) {
                Ok(v) => Ok(Outcome::Acknowledged(v["last_n"].as_u64().unwrap_or(0))),
                Err(e) => Ok(Outcome::Retry(format!("bad answer: {e}"), None)),
            },
            Err(e) => Ok(Outcome::Retry(error_chain(&e), None)),
        }
    }
}

/// Retry on network trouble; stop on a TLS failure retrying cannot fix.
fn network(e: HttpError) -> Result<Outcome, PublishError> {
    match e.hint() {
        Some(hint) if e.is_permanent() => Err(PublishError::Unusable(format!(
            "{}; {hint}",
            error_chain(&e)
        ))),
        _ => Ok(Outcome::Retry(error_chain(&e), None)),
    }
}

/// Retry on overload and network trouble; stop on anything else.
fn classify(failure: ApiFailure) -> Result<Outcome, PublishError> {
    if failure.is_auth() {
        Err(PublishError::Rejected(failure))
    } else if failure.is_retryable() {
        let after = failure.retry_after;
        Ok(Outcome::Retry(failure.to_string(), after))
    } else {
        Err(PublishError::Refused(failure))
    }
}

/// `{"n":N,` + the record's fields + LF.
fn numbered(n: u64, record: &[u8]) -> Bytes {
    let mut line = Vec::with_capacity(record.len() + 24);
    line.extend_from_slice(b"{\"n\":");
    line.extend_from_slice(n.to_string().as_bytes());
    if record.len() > 2 {
        line.push(b',');
    }
    line.extend_from_slice(record.get(1..).unwrap_or(b"}"));
    line.push(b'\n');
    Bytes::from(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_goes_first_in_the_object() {
        assert_eq!(
            numbered(7, br#"{"line":"x"}"#),
            Bytes::from_static(b"{\"n\":7,\"line\":\"x\"}\n")
        );
        assert_eq!(numbered(1, b"{}"), Bytes::from_static(b"{\"n\":1}\n"));
    }
}
