//! [`Follower`]: follows one job's SSE stream to its end across broken connections and
//! gateway restarts, resuming with `Last-Event-ID` so no record is delivered twice or skipped.
//! The event id is opaque (the gateway may put the job's life in it) and echoed back as
//! received; records are ordered by the `seq` of their data.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::Value;

use super::backoff::Backoff;
use super::record::seq_of_id;
pub use super::record::{Ending, Record, RecordBody};
use super::sse::{EventStream, SseEvent};
use super::url::JobUrl;
use super::{error_chain, token_for};
use crate::net::http::{self, ApiFailure};

/// How to follow a job.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    pub url: JobUrl,
    /// Overrides a `token` in the URL.
    pub token: Option<String>,
    /// Stop once this seq has been delivered (`--no-follow`).
    pub until_seq: Option<u64>,
    /// Start after this event id (`--last-event-id`, `--from-seq`, `?last_event_id=`);
    /// `None`: from the first record.
    pub resume_from: Option<String>,
    pub backoff: Backoff,
    /// A stream silent this long (not even a keep-alive) is taken as dead and reopened.
    pub idle_timeout: Duration,
    /// Stop with [`FollowError::Unavailable`] when no attempt has reached the gateway for
    /// this long; `None`: retry forever.
    pub give_up_after: Option<Duration>,
    /// Ask for a compressed stream (`Accept-Encoding: zstd, gzip`); `--no-compress` clears it.
    pub compress: bool,
}

impl FollowOptions {
    pub fn new(url: JobUrl, token: Option<String>) -> Self {
        let resume_from = url.url_last_event_id.clone().filter(|id| !id.is_empty());
        Self {
            url,
            token,
            until_seq: None,
            resume_from,
            backoff: Backoff::default(),
            idle_timeout: Duration::from_secs(60),
            give_up_after: None,
            compress: true,
        }
    }
}

/// What happened next while following.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// About to open the stream for the first time.
    Connecting,
    /// The stream is open.
    Connected,
    /// The stream broke (or could not be opened); the next attempt comes after `delay`.
    Reconnecting { delay: Duration, cause: String },
    /// A log, status or custom record, each delivered once.
    Record(Record),
    /// Records `from..=to` are no longer held by the gateway and were skipped.
    Gap { from: u64, to: u64 },
    /// The gateway does not know the resume point (it lost the job's earlier life); the log
    /// starts again from seq 1.
    Reset { reason: String },
    /// Following is over; every later call returns this again.
    End(Ending),
}

/// Following stopped for good: retrying would not help.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// `401`/`403`: the token is missing, invalid, expired or for another job.
    #[error("the gateway refused the token: {}", .0.message)]
    Rejected(ApiFailure),
    /// Another answer that retrying will not change (`400`, `404`...).
    #[error("the gateway refused the request: {0}")]
    Refused(ApiFailure),
    /// No attempt reached the gateway for `give_up_after`.
    #[error("gave up after {}: {cause}", humantime::format_duration(*.after))]
    Unavailable { after: Duration, cause: String },
    /// A failure retrying cannot fix: an untrusted certificate, a port without TLS.
    #[error("{cause}; {hint}")]
    Unusable { cause: String, hint: &'static str },
}

/// Follows one job's stream; pull [`Update`]s with [`next`](Self::next).
pub struct Follower {
    opts: FollowOptions,
    token: Option<String>,
    stream: Option<EventStream>,
    /// The last seq delivered, from the records' data: what is new.
    last_seq: Option<u64>,
    /// The id of the last event taken, as received: the resume point (`Last-Event-ID`).
    last_id: Option<String>,
    /// Why the previous connection ended, until the retry is announced.
    cause: Option<String>,
    /// When the announced retry may start.
    retry_at: Option<tokio::time::Instant>,
    /// The current connection delivered an event (resets the backoff).
    delivered: bool,
    /// Since when no attempt has reached the gateway, for `give_up_after`.
    failing_since: Option<tokio::time::Instant>,
    /// When the latest attempt started: a failing spell starts with its first attempt.
    attempt_started: Option<tokio::time::Instant>,
    started: bool,
    ended: Option<Ending>,
    pending: VecDeque<Update>,
}

impl Follower {
    pub fn new(opts: FollowOptions) -> Self {
        let token = token_for(opts.token.as_deref(), &opts.url);
        let last_id = opts.resume_from.clone();
        Self {
            last_seq: last_id.as_deref().and_then(|id| id.trim().parse().ok()),
            last_id,
            opts,
            token,
            stream: None,
            cause: None,
            retry_at: None,
            delivered: false,
            failing_since: None,
            attempt_started: None,
            started: false,
            ended: None,
            pending: VecDeque::new(),
        }
    }

    /// The last seq delivered.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// Updates already read and waiting: output may be batched until there are none.
    pub fn has_buffered(&self) -> bool {
        !self.pending.is_empty() || self.stream.as_ref().is_some_and(EventStream::has_buffered)
    }

    /// The next update; reconnects as needed, and fails only when retrying cannot help.
    pub async fn next(&mut self) -> Result<Update, FollowError> {
        loop {
            if let Some(update) = self.pending.pop_front() {
                return Ok(update);
            }
            if let Some(end) = &self.ended {
                self.stream = None;
                return Ok(Update::End(end.clone()));
            }
            let Some(stream) = self.stream.as_mut() else {
                self.connect().await?;
                continue;
            };
            match stream.next().await {
                Ok(Some(event)) => {
                    self.delivered = true;
                    self.accept(event);
                }
                Ok(None) => self.lost("the gateway ended the stream".into()),
                Err(e) => self.lost(error_chain(&e)),
            }
        }
    }

    fn lost(&mut self, cause: String) {
        self.stream = None;
        self.cause = Some(cause);
    }

    /// One step towards an open stream: announce, wait, or try.
    async fn connect(&mut self) -> Result<(), FollowError> {
        if !self.started {
            self.started = true;
            self.pending.push_back(Update::Connecting);
            return Ok(());
        }
        if let Some(cause) = self.cause.take() {
            if std::mem::take(&mut self.delivered) {
                self.opts.backoff.reset();
            }
            let now = tokio::time::Instant::now();
            let mut delay = self.opts.backoff.next_delay();
            if let Some(limit) = self.opts.give_up_after {
                let since = self.attempt_started.unwrap_or(now);
                let failing = now - *self.failing_since.get_or_insert(since);
                match limit.checked_sub(failing).filter(|d| !d.is_zero()) {
                    // The last attempt comes at the limit, not a backoff step past it.
                    Some(left) => delay = delay.min(left),
                    None => {
                        return Err(FollowError::Unavailable {
                            after: limit,
                            cause,
                        })
                    }
                }
            }
            self.retry_at = Some(now + delay);
            self.pending
                .push_back(Update::Reconnecting { delay, cause });
            return Ok(());
        }
        if let Some(at) = self.retry_at.take() {
            tokio::time::sleep_until(at).await;
        }
        self.attempt().await
    }

    async fn attempt(&mut self) -> Result<(), FollowError> {
        let started = tokio::time::Instant::now();
        self.attempt_started = Some(started);
        // An attempt ends at the give-up limit, however long its timeouts.
        let left = self.opts.give_up_after.map(|limit| {
            let failing = started - self.failing_since.unwrap_or(started);
            limit.saturating_sub(failing).max(Duration::from_millis(1))
        });
        let url = &self.opts.url;
        let token = self.token.as_deref();
        let query_token = if url.token_in_query() { token } else { None };
        let path = url.stream_path(query_token, self.last_seq);
        let mut req = http::request("GET", &url.endpoint, &path)
            .header(::http::header::ACCEPT, "text/event-stream");
        if !url.token_in_query() {
            req = http::bearer(req, token);
        }
        if let Some(id) = &self.last_id {
            req = req.header("last-event-id", id.as_str());
        }
        if self.opts.compress {
            req = req.header(
                ::http::header::ACCEPT_ENCODING,
                crate::compress::decode::ACCEPT,
            );
        }
        let req = match req.body(http_body_util::Empty::<bytes::Bytes>::new()) {
            Ok(r) => r,
            Err(e) => {
                self.cause = Some(e.to_string());
                return Ok(());
            }
        };
        let sent = http::send(&url.endpoint, req);
        let sent = match left {
            Some(left) => match tokio::time::timeout(left, sent).await {
                Ok(sent) => sent,
                Err(_) => {
                    let after = humantime::format_duration(left);
                    self.cause = Some(format!("{} did not answer within {after}", url.endpoint));
                    return Ok(());
                }
            },
            None => sent.await,
        };
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                if let (true, Some(hint)) = (e.is_permanent(), e.hint()) {
                    return Err(FollowError::Unusable {
                        cause: error_chain(&e),
                        hint,
                    });
                }
                self.cause = Some(error_chain(&e));
                return Ok(());
            }
        };
        if matches!(resp.status().as_u16(), 200 | 204) {
            self.failing_since = None;
        }
        match resp.status().as_u16() {
            200 => {
                let encoding = resp.headers().get(::http::header::CONTENT_ENCODING);
                let decoder = match crate::compress::decode::BodyDecoder::for_encoding(
                    encoding.and_then(|v| v.to_str().ok()),
                ) {
                    Ok(d) => d,
                    Err(why) => {
                        self.cause = Some(why);
                        return Ok(());
                    }
                };
                let stream = EventStream::new(resp.into_body())
                    .with_idle_timeout(self.opts.idle_timeout)
                    .with_decoder(decoder);
                self.stream = Some(stream);
                self.pending.push_back(Update::Connected);
            }
            204 => self.finished_already().await?,
            _ => {
                let failure = ApiFailure::read(resp).await;
                if failure.is_auth() {
                    return Err(FollowError::Rejected(failure));
                }
                if !failure.is_retryable() {
                    return Err(FollowError::Refused(failure));
                }
                if let Some(after) = failure.retry_after {
                    self.retry_at = Some(tokio::time::Instant::now() + after);
                }
                self.cause = Some(failure.to_string());
            }
        }
        Ok(())
    }

    /// `204`: the job finished and we have its last record; ask how it ended.
    async fn finished_already(&mut self) -> Result<(), FollowError> {
        let url = &self.opts.url;
        let req = match http::get(&url.endpoint, &url.status_path(), self.token.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                self.cause = Some(error_chain(&e));
                return Ok(());
            }
        };
        match http::exchange_json(&url.endpoint, req).await {
            Ok(Ok(status)) => {
                self.ended = Some(Ending::Finished {
                    status: status["status"].as_str().unwrap_or("lost").to_string(),
                    exit_code: status["exit_code"].as_i64().map(|c| c as i32),
                });
            }
            Ok(Err(f)) if f.is_auth() => return Err(FollowError::Rejected(f)),
            Ok(Err(f)) => self.cause = Some(f.to_string()),
            Err(e) => self.cause = Some(error_chain(&e)),
        }
        Ok(())
    }

    fn accept(&mut self, event: SseEvent) {
        let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
        let seq = data["seq"]
            .as_u64()
            .or_else(|| event.id.as_deref().and_then(seq_of_id));
        match event.event.as_str() {
            "log" | "status" | "custom" => {
                let Some(seq) = seq else { return };
                if self.last_seq.is_some_and(|last| seq <= last) {
                    return;
                }
                self.last_seq = Some(seq);
                self.last_id = Some(event.id.clone().unwrap_or_else(|| seq.to_string()));
                let record = Record::from_event(seq, &event.event, &event.data, data);
                if let RecordBody::Status {
                    status,
                    exit_code,
                    is_final: true,
                } = &record.body
                {
                    self.ended = Some(Ending::Finished {
                        status: status.clone(),
                        exit_code: *exit_code,
                    });
                }
                self.pending.push_back(Update::Record(record));
            }
            "gap" => {
                let from = data["from"].as_u64().unwrap_or(0);
                let to = data["to"].as_u64().or(seq).unwrap_or(from);
                if self.last_seq.is_some_and(|last| to <= last) {
                    return;
                }
                self.last_seq = Some(to);
                self.last_id = Some(event.id.clone().unwrap_or_else(|| to.to_string()));
                self.pending.push_back(Update::Gap { from, to });
            }
            "reset" => {
                self.last_seq = None;
                self.last_id = None;
                let reason = data["reason"].as_str().unwrap_or("unknown").to_string();
                self.pending.push_back(Update::Reset { reason });
            }
            _ => return,
        }
        if self.ended.is_none() {
            if let (Some(until), Some(last)) = (self.opts.until_seq, self.last_seq) {
                if last >= until {
                    self.ended = Some(Ending::CaughtUp);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower() -> Follower {
        let url = JobUrl::from_logs_url("http://127.0.0.1:1/v1/jobs/j/logs").unwrap();
        Follower::new(FollowOptions::new(url, None))
    }

    fn event(id: Option<&str>, event: &str, data: &str) -> SseEvent {
        SseEvent {
            id: id.map(str::to_string),
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn records_are_delivered_once_and_gaps_reset_move_the_cursor() {
        let mut f = follower();
        let log = |seq: u64| {
            event(
                Some(&seq.to_string()),
                "log",
                &format!(r#"{{"seq":{seq},"ts":"t","stream":"stdout","line":"l{seq}"}}"#),
            )
        };
        f.accept(log(1));
        f.accept(log(2));
        f.accept(log(2));
        f.accept(log(1));
        assert_eq!(f.pending.len(), 2);
        f.accept(event(Some("9"), "gap", r#"{"from":3,"to":9}"#));
        assert_eq!(f.last_seq(), Some(9));
        f.accept(log(5));
        assert_eq!(f.pending.len(), 3, "a record inside the gap is old");
        f.accept(event(
            None,
            "reset",
            r#"{"reason":"unknown_last_event_id"}"#,
        ));
        assert_eq!(f.last_seq(), None);
        f.accept(log(1));
        f.accept(event(
            Some("2"),
            "status",
            r#"{"seq":2,"ts":"t","status":"failed","exit_code":4,"final":true}"#,
        ));
        let updates: Vec<Update> = f.pending.drain(..).collect();
        assert!(matches!(
            &updates[0],
            Update::Record(Record { seq: 1, body: RecordBody::Log { line, .. }, .. }) if line == "l1"
        ));
        assert_eq!(updates[2], Update::Gap { from: 3, to: 9 });
        assert!(
            matches!(&updates[3], Update::Reset { reason } if reason == "unknown_last_event_id")
        );
        assert_eq!(
            f.ended,
            Some(Ending::Finished {
                status: "failed".into(),
                exit_code: Some(4)
            })
        );
    }

    #[test]
    fn until_seq_ends_following() {
        let mut f = follower();
        f.opts.until_seq = Some(2);
        f.accept(event(Some("1"), "log", r#"{"stream":"stdout","line":"a"}"#));
        assert_eq!(f.ended, None);
        f.accept(event(Some("2"), "custom", r#"{"kind":"k","data":{}}"#));
        assert_eq!(f.ended, Some(Ending::CaughtUp));
    }

    #[test]
    fn event_ids_are_echoed_as_received_and_seqs_come_from_the_data() {
        let mut f = follower();
        f.accept(event(
            Some("life7-1"),
            "log",
            r#"{"seq":1,"stream":"stdout","line":"a"}"#,
        ));
        f.accept(event(
            Some("life7-2"),
            "log",
            r#"{"seq":2,"stream":"stdout","line":"b"}"#,
        ));
        f.accept(event(
            Some("life7-2"),
            "log",
            r#"{"seq":2,"stream":"stdout","line":"b"}"#,
        ));
        assert_eq!(
            (f.last_seq(), f.last_id.as_deref()),
            (Some(2), Some("life7-2"))
        );
        assert_eq!(f.pending.len(), 2, "the repeat is dropped");
        let url = JobUrl::from_logs_url("http://h/v1/jobs/j/logs?last_event_id=L2-9").unwrap();
        let f = Follower::new(FollowOptions::new(url, None));
        assert_eq!(
            f.last_id.as_deref(),
            Some("L2-9"),
            "resumed from the URL, opaque"
        );
    }
}
