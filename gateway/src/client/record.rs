//! What a [`Follower`](super::Follower) delivers: the job's records as parsed from SSE
//! events, and how following ended (with the exit code `tail` reports for it).

use serde_json::Value;

/// One record of the job's log.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub seq: u64,
    /// Gateway time, RFC 3339.
    pub ts: String,
    pub body: RecordBody,
    /// The event's data as sent.
    pub json: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RecordBody {
    Log {
        /// `stdout`, `stderr` or `system`.
        stream: String,
        line: String,
    },
    Status {
        status: String,
        exit_code: Option<i32>,
        /// A terminal status: the stream ends after it.
        is_final: bool,
    },
    Custom {
        kind: String,
        data: Value,
    },
}

/// Why following ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The job reached a terminal status.
    Finished {
        status: String,
        exit_code: Option<i32>,
    },
    /// `until_seq` was reached.
    CaughtUp,
}

impl Ending {
    /// The process exit code a follower reports: 0 for `succeeded` (and for caught up), the
    /// job's exit code (1 if none or out of range) for `failed`, 1 for other terminal statuses.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::CaughtUp => 0,
            Self::Finished { status, exit_code } => match (status.as_str(), exit_code) {
                ("succeeded", _) => 0,
                ("failed", Some(code)) => u8::try_from(*code).ok().filter(|c| *c != 0).unwrap_or(1),
                _ => 1,
            },
        }
    }
}

/// The seq in an event id: the id itself, or its trailing digits (an id carrying the
/// job's life before the seq).
pub(crate) fn seq_of_id(id: &str) -> Option<u64> {
    let id = id.trim();
    let digits = id.len() - id.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    id[id.len() - digits..].parse().ok()
}

impl Record {
    pub(crate) fn from_event(seq: u64, event: &str, raw: &str, json: Value) -> Self {
        let text = |name: &str| json[name].as_str().unwrap_or_default().to_string();
        let body = match event {
            "log" => RecordBody::Log {
                stream: text("stream"),
                // A `?format=text` stream sends the raw line as data.
                line: if json.is_object() {
                    text("line")
                } else {
                    raw.to_string()
                },
            },
            "status" => RecordBody::Status {
                status: text("status"),
                exit_code: json["exit_code"].as_i64().map(|c| c as i32),
                is_final: json["final"].as_bool().unwrap_or(false),
            },
            _ => RecordBody::Custom {
                kind: text("kind"),
                data: json["data"].clone(),
            },
        };
        Self {
            seq,
            ts: text("ts"),
            body,
            json,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(status: &str, exit_code: Option<i32>) -> u8 {
        Ending::Finished {
            status: status.into(),
            exit_code,
        }
        .exit_code()
    }

    #[test]
    fn exit_codes_follow_the_job() {
        assert_eq!(finished("succeeded", None), 0);
        assert_eq!(finished("succeeded", Some(3)), 0);
        assert_eq!(finished("failed", Some(3)), 3);
        assert_eq!(finished("failed", None), 1);
        assert_eq!(finished("failed", Some(0)), 1, "a failed job never exits 0");
        assert_eq!(finished("failed", Some(300)), 1);
        assert_eq!(finished("failed", Some(-2)), 1);
        assert_eq!(finished("cancelled", Some(0)), 1);
        assert_eq!(finished("lost", None), 1);
        assert_eq!(Ending::CaughtUp.exit_code(), 0);
    }

    #[test]
    fn seqs_come_from_bare_or_life_qualified_ids() {
        assert_eq!(seq_of_id("abc-42"), Some(42));
        assert_eq!(seq_of_id("17"), Some(17));
        assert_eq!(seq_of_id("x"), None);
    }
}
