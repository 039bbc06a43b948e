//! Records: the entries of a job's log, and the statuses a job moves through.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

/// Which output a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    /// Lines the gateway itself writes (truncation notices).
    System,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::System => "system",
        }
    }
}

impl FromStr for Stream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stdout" => Ok(Self::Stdout),
            "stderr" => Ok(Self::Stderr),
            "system" => Ok(Self::System),
            other => Err(format!(
                "unknown stream {other:?}: expected stdout, stderr or system"
            )),
        }
    }
}

/// Where a job is in its life. After a terminal status the log is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Expired,
    Released,
    Lost,
}

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Released => "released",
            Self::Lost => "lost",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "expired" => Self::Expired,
            "released" => Self::Released,
            "lost" => Self::Lost,
            other => {
                return Err(format!(
                    "unknown status {other:?}: expected queued, running, succeeded, failed, \
                     cancelled, expired, released or lost"
                ))
            }
        })
    }
}

/// What a record says, before the log gives it a seq and a time.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordBody {
    Log {
        stream: Stream,
        line: String,
    },
    Status {
        status: JobStatus,
        exit_code: Option<i32>,
    },
    Custom {
        kind: String,
        data: Value,
    },
}

impl RecordBody {
    /// The SSE event name, chosen by the gateway, never by input.
    pub fn event_name(&self) -> &'static str {
        match self {
            Self::Log { .. } => "log",
            Self::Status { .. } => "status",
            Self::Custom { .. } => "custom",
        }
    }

    /// Bytes of payload this record carries, for size limits.
    pub fn payload_len(&self) -> usize {
        match self {
            Self::Log { line, .. } => line.len(),
            Self::Status { .. } => 16,
            Self::Custom { kind, data } => kind.len() + data.to_string().len(),
        }
    }
}

/// One entry of a job's log.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub seq: u64,
    /// Gateway time of the append, in milliseconds since the Unix epoch.
    pub ts_ms: u64,
    pub body: RecordBody,
}

impl Record {
    pub fn new(seq: u64, ts: SystemTime, body: RecordBody) -> Self {
        let ts_ms = ts
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self { seq, ts_ms, body }
    }

    /// `ts` as RFC 3339, UTC, milliseconds: `2026-11-20T10:00:00.123Z`.
    pub fn ts(&self) -> String {
        rfc3339_millis(UNIX_EPOCH + Duration::from_millis(self.ts_ms))
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self.body, RecordBody::Status { status, .. } if status.is_terminal())
    }

    /// The record as the one-line JSON of an SSE `data` field, keys in wire order.
    pub fn to_json(&self) -> String {
        self.to_json_at(&self.ts())
    }

    /// [`Record::to_json`] with `ts` already formatted (records of one append share it).
    pub fn to_json_at(&self, ts: &str) -> String {
        let seq = self.seq;
        let json = match &self.body {
            RecordBody::Log { stream, line } => serde_json::to_string(&LogJson {
                seq,
                ts,
                stream: stream.as_str(),
                line,
            }),
            RecordBody::Status { status, exit_code } => serde_json::to_string(&StatusJson {
                seq,
                ts,
                status: status.as_str(),
                exit_code: *exit_code,
                r#final: status.is_terminal(),
            }),
            RecordBody::Custom { kind, data } => serde_json::to_string(&CustomJson {
                seq,
                ts,
                kind,
                data,
            }),
        };
        // Serializing strings, numbers and an already-valid `Value` cannot fail.
        json.unwrap_or_default()
    }
}

#[derive(Serialize)]
struct LogJson<'a> {
    seq: u64,
    ts: &'a str,
    stream: &'a str,
    line: &'a str,
}

#[derive(Serialize)]
struct StatusJson<'a> {
    seq: u64,
    ts: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    r#final: bool,
}

#[derive(Serialize)]
struct CustomJson<'a> {
    seq: u64,
    ts: &'a str,
    kind: &'a str,
    data: &'a Value,
}

/// RFC 3339 in UTC with milliseconds, as every timestamp on the wire is written.
pub fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_json_has_the_wire_fields() {
        let r = Record {
            seq: 42,
            ts_ms: 1_795_000_000_123,
            body: RecordBody::Log {
                stream: Stream::Stdout,
                line: "a\r\nevent: x".into(),
            },
        };
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["seq"], 42);
        assert_eq!(v["stream"], "stdout");
        assert_eq!(v["line"], "a\r\nevent: x");
        assert!(v["ts"].as_str().unwrap().ends_with(".123Z"));
        assert!(!r.to_json().contains('\n'));
        assert!(
            r.to_json().starts_with(r#"{"seq":42,"ts":"#),
            "{}",
            r.to_json()
        );
    }

    #[test]
    fn status_json_marks_final() {
        let body = RecordBody::Status {
            status: JobStatus::Failed,
            exit_code: Some(2),
        };
        let v: Value = serde_json::from_str(
            &Record {
                seq: 1,
                ts_ms: 0,
                body,
            }
            .to_json(),
        )
        .unwrap();
        assert_eq!(
            (v["status"].as_str(), v["exit_code"].as_i64()),
            (Some("failed"), Some(2))
        );
        assert_eq!(v["final"], true);
        assert_eq!(
            "running".parse::<JobStatus>().map(JobStatus::is_terminal),
            Ok(false)
        );
        assert!("done".parse::<JobStatus>().is_err());
    }
}
