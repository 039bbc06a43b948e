//! Errors a request can end in, each with its status and JSON body
//! `{"error":"<code>","message":"<sentence>"}`.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::json;

use crate::auth::AuthError;
use crate::body::{full, Body};
use crate::hub::JobError;
use crate::job_id::BadJobId;
use crate::job_log::{AppendError, Tally};
use crate::record::rfc3339_millis;
use crate::store::{StoreError, Tombstone};

/// Why a request failed, and whose side caused it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{0}")]
    BadJobId(#[from] BadJobId),
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("no such route")]
    NotFound,
    #[error("method not allowed here; this route answers {allow}")]
    MethodNotAllowed { allow: &'static str },
    #[error("the job has finished; its log is closed")]
    JobFinished { tally: Option<Tally> },
    #[error("{0}")]
    TooLarge(String),
    #[error("content type must be text/plain or application/x-ndjson (with curl, add -H 'Content-Type: text/plain')")]
    UnsupportedMediaType,
    #[error("line {line}: {message}")]
    BadRecord {
        line: u64,
        message: String,
        tally: Tally,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("{message}")]
    OverLimit {
        message: String,
        retry_after: Duration,
    },
    #[error("the gateway is shutting down")]
    Draining,
    #[error("the gateway is at its connection limit")]
    Overloaded,
    #[error("could not read the request body")]
    BodyRead,
    #[error("this route is a WebSocket (version 13): send an upgrade request")]
    UpgradeRequired,
    #[error("the job's log was deleted by retention; it ended {}", .0.status)]
    JobExpired(Tombstone),
    /// The store refused records; the ones acknowledged before stay.
    /// Its message is the store's reason only: the error under it (an OS error, the
    /// Redis server's words) goes to the log, not to the client.
    #[error("{error}; records acknowledged before are kept")]
    Storage {
        error: StoreError,
        tally: Option<Tally>,
    },
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::TooMany(n) => Self::OverLimit {
                message: format!("the gateway holds its maximum of {n} jobs"),
                retry_after: Duration::from_secs(30),
            },
            JobError::Expired(tombstone) => Self::JobExpired(tombstone),
            JobError::Store(error) => Self::Storage { error, tally: None },
        }
    }
}

impl ApiError {
    /// An append's failure, with what the request had stored before it.
    pub(crate) fn append(e: AppendError, tally: Tally) -> Self {
        match e {
            AppendError::Finished => Self::JobFinished { tally: Some(tally) },
            AppendError::Store(error) => Self::Storage {
                error,
                tally: Some(tally),
            },
        }
    }
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::BadJobId(_) | Self::BadRecord { .. } | Self::BadRequest(_) | Self::BodyRead => {
                StatusCode::BAD_REQUEST
            }
            Self::Auth(e) => e.status(),
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::JobFinished { .. } => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::OverLimit { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Draining | Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            Self::JobExpired(_) => StatusCode::GONE,
            Self::Storage {
                error: StoreError::Full { .. },
                ..
            } => StatusCode::INSUFFICIENT_STORAGE,
            Self::Storage { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::BadJobId(_) => "bad_job_id",
            Self::Auth(e) => e.code(),
            Self::NotFound => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::JobFinished { .. } => "job_finished",
            Self::TooLarge(_) => "too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::BadRecord { .. } => "bad_record",
            Self::BadRequest(_) => "bad_request",
            Self::OverLimit { .. } => "over_limit",
            Self::Draining => "draining",
            Self::Overloaded => "overloaded",
            Self::BodyRead => "bad_body",
            Self::UpgradeRequired => "upgrade_required",
            Self::JobExpired(_) => "job_expired",
            Self::Storage {
                error: StoreError::Full { .. },
                ..
            } => "insufficient_storage",
            Self::Storage { .. } => "store_unavailable",
        }
    }

    pub(crate) fn into_response(self) -> Response<Body> {
        let mut body = json!({ "error": self.code(), "message": self.to_string() });
        match &self {
            Self::BadRecord { line, tally, .. } => {
                body["line"] = json!(line);
                merge_tally(&mut body, tally);
            }
            Self::JobFinished { tally: Some(tally) }
            | Self::Storage {
                tally: Some(tally), ..
            } => merge_tally(&mut body, tally),
            Self::JobExpired(t) => {
                body["status"] = json!(t.status);
                body["exit_code"] = json!(t.exit_code);
                body["finished_at"] = json!(t
                    .finished_ms
                    .map(|ms| rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms))));
            }
            _ => {}
        }
        let mut resp = Response::new(full(Bytes::from(body.to_string())));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match &self {
            Self::Auth(e) if e.status() == StatusCode::UNAUTHORIZED => {
                if let Some(challenge) = e.www_authenticate() {
                    headers.insert(header::WWW_AUTHENTICATE, challenge);
                }
            }
            Self::Auth(e) if e.reason() == "missing_scope" => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"insufficient_scope\""),
                );
            }
            Self::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Self::OverLimit { retry_after, .. } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs().max(1)),
                );
            }
            Self::Draining | Self::Overloaded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::Storage {
                error: StoreError::Unavailable { .. },
                ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            }
            Self::Storage { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            }
            Self::UpgradeRequired => {
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            _ => {}
        }
        resp
    }
}

fn merge_tally(body: &mut serde_json::Value, tally: &Tally) {
    body["accepted"] = json!(tally.accepted);
    body["duplicates"] = json!(tally.duplicates);
    body["last_seq"] = json!(tally.last_seq);
    body["last_n"] = json!(tally.last_n);
}
