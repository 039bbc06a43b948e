//! Publishing: a worker's upload, read as it arrives, split into records and appended to
//! the job log one chunk at a time, so readers see each line while the body is still open.
//!
//! The body is read only as fast as records can be stored: each chunk's records are in
//! the store before the next chunk is read, and when the process is over its memory
//! budget and nothing anywhere can be shed, reading pauses (TCP backpressure) instead of
//! dropping lines.

pub(crate) mod lines;
pub(crate) mod ndjson;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::Incoming as IncomingBody;
use serde::Deserialize;

use crate::error::ApiError;
use crate::hub::Hub;
use crate::job_log::{AppendError, Incoming, JobLog, Tally};
use crate::record::{JobStatus, RecordBody, Stream};
use crate::store::spool::frame;
use lines::{LineSplitter, Overflow};

/// The two upload formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Bytes split into log lines at LF.
    Text,
    /// One JSON record per line.
    Ndjson,
}

impl Format {
    /// From `Content-Type`; a missing one means plain text.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let Some(value) = headers.get(http::header::CONTENT_TYPE) else {
            return Ok(Self::Text);
        };
        let mime = value.to_str().map_err(|_| ApiError::UnsupportedMediaType)?;
        let essence = mime
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "text/plain" => Ok(Self::Text),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Ok(Self::Ndjson),
            _ => Err(ApiError::UnsupportedMediaType),
        }
    }
}

/// Sizes an upload is held to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UploadLimits {
    pub(crate) max_line_bytes: usize,
    pub(crate) max_record_bytes: usize,
}

/// Shed this much below the budget at once, so the next chunks do not shed again.
pub(crate) const SHED_SLACK_BYTES: usize = 1024 * 1024;

/// Reads `body` to its end, appending as it goes; answers with the tally.
pub(crate) async fn upload(
    hub: &Hub,
    job: &Arc<JobLog>,
    mut body: IncomingBody,
    format: Format,
    stream: Stream,
    limits: UploadLimits,
) -> Result<Tally, ApiError> {
    let _publishing = job.attach_publisher();
    let mut tally = Tally::default();
    let mut parser = Parser::new(format, stream, limits, job.snapshot().last_n);
    loop {
        wait_for_memory(hub, job).await;
        let frame = match body.frame().await {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                // The upload broke off: keep the complete lines, drop the partial one.
                tracing::debug!(error = %e, "upload body ended early");
                append(job, parser.take(), &mut tally).await?;
                return Err(ApiError::BodyRead);
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let failed = parser.push(&data);
        append(job, parser.take(), &mut tally).await?;
        if let Some((line, message)) = failed {
            return Err(refused(job, &parser, line, message, tally));
        }
    }
    let failed = parser.finish();
    append(job, parser.take(), &mut tally).await?;
    if let Some((line, message)) = failed {
        return Err(refused(job, &parser, line, message, tally));
    }
    Ok(tally)
}

/// `413 too_large` for a record no store can hold, else [`bad_record`].
fn refused(job: &JobLog, parser: &Parser, line: u64, message: String, tally: Tally) -> ApiError {
    if parser.sink.too_large {
        ApiError::TooLarge(format!("line {line}: {message}"))
    } else {
        bad_record(job, line, message, tally)
    }
}

/// A `400 bad_record` carrying the job's counters, not this request's: a publisher
/// resumes from the job's `last_seq` and `last_n`, whatever this request managed.
fn bad_record(job: &JobLog, line: u64, message: String, mut tally: Tally) -> ApiError {
    let snapshot = job.snapshot();
    tally.last_seq = snapshot.last_seq;
    tally.last_n = snapshot.last_n;
    ApiError::BadRecord {
        line,
        message,
        tally,
    }
}

/// Appends and stores one chunk's records, fsyncing when the policy says so, before the
/// next chunk is read.
async fn append(
    job: &Arc<JobLog>,
    batch: Vec<Incoming>,
    tally: &mut Tally,
) -> Result<(), ApiError> {
    if batch.is_empty() {
        return Ok(());
    }
    let appended = job.append(batch, tally).await;
    let settled = job.settle().await;
    appended.map_err(|e| ApiError::append(e, *tally))?;
    settled.map_err(|e| ApiError::append(AppendError::Store(e), *tally))
}

/// Holds the upload while the process is over its memory budget: rings are shed across
/// all jobs (least recently active first); the upload waits only while nothing
/// anywhere can be shed, and says so (log line, status JSON).
async fn wait_for_memory(hub: &Hub, job: &JobLog) {
    let memory = hub.memory();
    if !memory.is_over() {
        return;
    }
    hub.shed(memory.excess() + SHED_SLACK_BYTES);
    if !memory.is_over() {
        return;
    }
    tracing::warn!(
        job.id = %job.id(),
        memory.used = memory.used(),
        "upload waits: the memory budget is full and nothing can be shed"
    );
    job.set_waiting_for_memory(true);
    while memory.is_over() {
        let freed = memory.freed.notified();
        let _ = tokio::time::timeout(Duration::from_millis(200), freed).await;
        hub.shed(memory.excess() + SHED_SLACK_BYTES);
    }
    job.set_waiting_for_memory(false);
}

/// Turns body bytes into records, one format or the other.
pub(crate) struct Parser {
    splitter: LineSplitter,
    sink: Sink,
    max_record_bytes: usize,
}

/// Where completed lines become records; apart from the splitter, so both can be
/// borrowed at once.
struct Sink {
    format: Format,
    stream: Stream,
    batch: Vec<Incoming>,
    /// Lines seen, for naming a bad record.
    line_no: u64,
    /// The first bad record: its line and why. Nothing after it is taken.
    failed: Option<(u64, String)>,
    /// Longer NDJSON `line` fields are split, as plain-text lines are.
    max_line_bytes: usize,
    /// The highest `n` known to the job: a record at or below it is a resend, kept whole
    /// so the log drops it whole (its pieces, past the first, carry no `n`).
    last_n: Option<u64>,
    /// The failed record is larger as JSON than a record can be (the spool's frame).
    too_large: bool,
}

impl Parser {
    pub(crate) fn new(
        format: Format,
        stream: Stream,
        limits: UploadLimits,
        last_n: Option<u64>,
    ) -> Self {
        let splitter = match format {
            Format::Text => LineSplitter::new(limits.max_line_bytes, Overflow::Split),
            Format::Ndjson => LineSplitter::new(limits.max_record_bytes, Overflow::Refuse),
        };
        let sink = Sink {
            format,
            stream,
            batch: Vec::new(),
            line_no: 0,
            failed: None,
            max_line_bytes: limits.max_line_bytes,
            last_n,
            too_large: false,
        };
        Self {
            splitter,
            sink,
            max_record_bytes: limits.max_record_bytes,
        }
    }

    /// Feeds one chunk; returns the bad record that ends the upload, if any.
    pub(crate) fn push(&mut self, data: &Bytes) -> Option<(u64, String)> {
        if self.sink.failed.is_none()
            && self
                .splitter
                .push(data, &mut |line| self.sink.take(line))
                .is_err()
            && self.sink.failed.is_none()
        {
            let message = format!("record is longer than {} bytes", self.max_record_bytes);
            self.sink.failed = Some((self.sink.line_no + 1, message));
        }
        self.sink.failed.clone()
    }

    pub(crate) fn finish(&mut self) -> Option<(u64, String)> {
        if self.sink.failed.is_none() {
            self.splitter.finish(&mut |line| self.sink.take(line));
        }
        self.sink.failed.clone()
    }

    pub(crate) fn take(&mut self) -> Vec<Incoming> {
        std::mem::take(&mut self.sink.batch)
    }
}

impl Sink {
    fn take(&mut self, line: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        self.line_no += 1;
        // Worst cases: a text line's bytes all escaped; an NDJSON record's JSON is no
        // longer than its input.
        let json = match self.format {
            Format::Text => frame::worst_json(line.len()),
            Format::Ndjson => line.len().saturating_add(frame::RECORD_OVERHEAD),
        };
        if json > frame::max_payload() {
            self.too_large = true;
            self.failed = Some((
                self.line_no,
                format!(
                    "a record can take up to {json} bytes as JSON, over the limit of {} bytes",
                    frame::max_payload()
                ),
            ));
            return;
        }
        match self.format {
            Format::Text => self.batch.push(Incoming {
                n: None,
                body: RecordBody::Log {
                    stream: self.stream,
                    line: String::from_utf8_lossy(line).into_owned(),
                },
            }),
            Format::Ndjson => {
                if line.iter().all(u8::is_ascii_whitespace) {
                    return;
                }
                match ndjson::parse(line, self.stream) {
                    Ok(rec) => self.push_record(rec),
                    Err(message) => self.failed = Some((self.line_no, message)),
                }
            }
        }
    }
}

impl Sink {
    /// Adds an NDJSON record, its `line` split at `max_line_bytes` like a plain-text line:
    /// the first piece carries the record's `n`, the rest none, so the pieces are one
    /// record for deduplication.
    fn push_record(&mut self, rec: ndjson::NdjsonRecord) {
        let resend = matches!((rec.n, self.last_n), (Some(n), Some(last)) if n <= last);
        self.last_n = self.last_n.max(rec.n);
        let (stream, line) = match rec.body {
            RecordBody::Log { stream, line } if line.len() > self.max_line_bytes && !resend => {
                (stream, line)
            }
            body => {
                self.batch.push(Incoming { n: rec.n, body });
                return;
            }
        };
        let mut n = rec.n;
        for piece in lines::split_str(&line, self.max_line_bytes) {
            self.batch.push(Incoming {
                n: n.take(),
                body: RecordBody::Log {
                    stream,
                    line: piece.to_string(),
                },
            });
        }
    }
}

/// `POST .../status` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusRequest {
    status: String,
    exit_code: Option<i32>,
}

/// Largest `POST .../status` body.
const MAX_STATUS_BODY: usize = 16 * 1024;

/// Reads a status change and appends it as a `status` record.
pub(crate) async fn set_status(job: &Arc<JobLog>, body: IncomingBody) -> Result<(), ApiError> {
    let bytes = http_body_util::Limited::new(body, MAX_STATUS_BODY)
        .collect()
        .await
        .map_err(|_| {
            ApiError::TooLarge(format!(
                "status body is larger than {MAX_STATUS_BODY} bytes"
            ))
        })?
        .to_bytes();
    let req: StatusRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::BadRequest(format!(
            "status body must be {{\"status\":...,\"exit_code\":N}}: {e}"
        ))
    })?;
    let status: JobStatus = req.status.parse().map_err(ApiError::BadRequest)?;
    if status == JobStatus::Queued {
        return Err(ApiError::BadRequest(
            "status \"queued\" cannot be published".into(),
        ));
    }
    let record = Incoming {
        n: None,
        body: RecordBody::Status {
            status,
            exit_code: req.exit_code,
        },
    };
    let mut tally = Tally::default();
    match job.append([record], &mut tally).await {
        // A worker retrying the status that finished the job: the same answer again.
        Err(AppendError::Finished) => {
            let now = job.snapshot();
            if (now.status, now.exit_code) == (status, req.exit_code) {
                Ok(())
            } else {
                Err(ApiError::JobFinished { tally: None })
            }
        }
        Err(e) => Err(ApiError::append(e, tally)),
        Ok(()) => job
            .settle()
            .await
            .map_err(|e| ApiError::append(AppendError::Store(e), tally)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_too_large_to_frame_is_refused_naming_the_limit() {
        let limits = UploadLimits {
            max_line_bytes: 16 << 20,
            max_record_bytes: 16 << 20,
        };
        let mut p = Parser::new(Format::Text, Stream::Stdout, limits, None);
        let mut line = vec![1u8; 12 << 20];
        line.push(b'\n');
        let (at, message) = p.push(&Bytes::from(line)).unwrap();
        assert_eq!(at, 1);
        assert!(p.sink.too_large);
        assert!(
            message.contains(&frame::max_payload().to_string()),
            "{message}"
        );
        assert!(p.take().is_empty(), "nothing of it is appended");
        let mut p = Parser::new(Format::Text, Stream::Stdout, limits, None);
        assert_eq!(p.push(&Bytes::from_static(b"\x01 fits\n")), None);
        assert_eq!(p.take().len(), 1);
    }

    fn parse_all(format: Format, chunks: &[&[u8]]) -> (Vec<RecordBody>, Option<(u64, String)>) {
        let limits = UploadLimits {
            max_line_bytes: 8,
            max_record_bytes: 64,
        };
        let mut p = Parser::new(format, Stream::Stdout, limits, None);
        let mut failed = None;
        for c in chunks {
            failed = failed.or(p.push(&Bytes::copy_from_slice(c)));
        }
        failed = failed.or(p.finish());
        (p.take().into_iter().map(|i| i.body).collect(), failed)
    }

    fn log(line: &str) -> RecordBody {
        RecordBody::Log {
            stream: Stream::Stdout,
            line: line.into(),
        }
    }

    #[test]
    fn text_lines_are_lossy_and_split() {
        let (got, failed) = parse_all(Format::Text, &[b"ok\r\nbad \xff\xfe", b"!\nlong line here"]);
        assert_eq!(failed, None);
        assert_eq!(
            got,
            vec![
                log("ok"),
                log("bad \u{fffd}\u{fffd}!"),
                log("long lin"),
                log("e here")
            ]
        );
    }

    #[test]
    fn ndjson_stops_at_the_bad_record_and_names_its_line() {
        let (got, failed) = parse_all(
            Format::Ndjson,
            &[
                b"{\"line\":\"a\"}\n\n{\"li",
                b"ne\":\"b\"}\n{oops}\n{\"line\":\"c\"}\n",
            ],
        );
        assert_eq!(got, vec![log("a"), log("b")]);
        let (line, message) = failed.unwrap();
        assert_eq!(line, 4);
        assert!(message.contains("invalid JSON"), "{message}");
    }

    #[test]
    fn ndjson_too_long_record_is_refused() {
        let long = format!("{{\"line\":\"{}\"}}\n", "x".repeat(100));
        let (got, failed) = parse_all(Format::Ndjson, &[b"{\"line\":\"a\"}\n", long.as_bytes()]);
        assert_eq!(got, vec![log("a")]);
        assert_eq!(failed.map(|f| f.0), Some(2));
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert_eq!(Format::from_headers(&h).unwrap(), Format::Text);
        h.insert(
            http::header::CONTENT_TYPE,
            "application/x-ndjson; charset=utf-8".parse().unwrap(),
        );
        assert_eq!(Format::from_headers(&h).unwrap(), Format::Ndjson);
        h.insert(
            http::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        );
        assert!(matches!(
            Format::from_headers(&h),
            Err(ApiError::UnsupportedMediaType)
        ));
    }
}

#[cfg(test)]
mod split_tests {
    use super::*;

    fn records(chunks: &[&[u8]], last_n: Option<u64>) -> Vec<Incoming> {
        let limits = UploadLimits {
            max_line_bytes: 16,
            max_record_bytes: 1024,
        };
        let mut p = Parser::new(Format::Ndjson, Stream::Stdout, limits, last_n);
        for c in chunks {
            assert_eq!(p.push(&Bytes::copy_from_slice(c)), None);
        }
        assert_eq!(p.finish(), None);
        p.take()
    }

    fn lines(records: &[Incoming]) -> Vec<(Option<u64>, &str)> {
        records
            .iter()
            .map(|r| match &r.body {
                RecordBody::Log { line, .. } => (r.n, line.as_str()),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn ndjson_lines_are_split_at_max_line_bytes_like_text() {
        let long = "é".repeat(10); // 20 bytes: cut at a character boundary
        let body = format!("{{\"n\":1,\"line\":\"{long}\"}}\n{{\"line\":\"short\"}}\n");
        let got = records(&[body.as_bytes()], None);
        assert_eq!(
            lines(&got),
            vec![(Some(1), "éééééééé"), (None, "éé"), (None, "short")]
        );
    }

    #[test]
    fn a_resent_long_line_stays_whole_so_the_log_drops_it_whole() {
        let body = format!("{{\"n\":3,\"line\":\"{}\"}}\n", "x".repeat(40));
        let got = records(&[body.as_bytes()], Some(3));
        assert_eq!(got.len(), 1, "one record, n 3: a duplicate");
        assert_eq!(got[0].n, Some(3));
    }

    #[test]
    fn ndjson_with_invalid_utf8_is_replaced_not_refused() {
        let got = records(&[b"{\"line\":\"bad \xff\xfe!\"}\n"], None);
        assert_eq!(lines(&got), vec![(None, "bad \u{fffd}\u{fffd}!")]);
    }
}
