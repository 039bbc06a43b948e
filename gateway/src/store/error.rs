//! Why a store call failed: typed, with the `io::Error` or Redis error under it kept as
//! the source, so whoever reports it (a log line, a JSON body, `/readyz`) shows the chain.

use std::sync::Arc;

/// The error under a store failure, kept whole for the report. Shared, because one
/// failure may be handed to several callers (an append's publisher and its metrics).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum Cause {
    #[error(transparent)]
    Io(Arc<std::io::Error>),
    #[error(transparent)]
    Redis(Arc<::redis::RedisError>),
}

/// Why the store refused or failed an operation. `Display` says this level only; the
/// cause (an `io::Error`, a Redis error) is its source: report it with
/// [`StoreError::report`].
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum StoreError {
    /// The disk budget (`--max-disk-bytes`) or the disk itself is full.
    #[error("{what}")]
    Full {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    /// Reading or writing failed; the records before it are kept.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The store cannot be reached now (Redis is down); retrying soon may work.
    #[error("{what}")]
    Unavailable {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
}

impl StoreError {
    /// A failed file operation: `Full` when the disk is full. The OS error is kept as the
    /// source (its kind and message).
    pub(crate) fn io(what: impl std::fmt::Display, e: &std::io::Error) -> Self {
        let full = e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull;
        let cause = Some(Cause::Io(Arc::new(std::io::Error::new(
            e.kind(),
            e.to_string(),
        ))));
        if full {
            Self::Full {
                what: format!("{what}: the disk is full"),
                cause,
            }
        } else {
            Self::Io {
                what: what.to_string(),
                cause,
            }
        }
    }

    /// A failure with no error under it (damaged data, a refused state).
    pub(crate) fn failed(what: impl Into<String>) -> Self {
        Self::Io {
            what: what.into(),
            cause: None,
        }
    }

    /// The store holds its budget.
    pub(crate) fn full(what: impl Into<String>) -> Self {
        Self::Full {
            what: what.into(),
            cause: None,
        }
    }

    /// The store cannot be reached now, because of `cause` if known.
    pub(crate) fn unavailable(what: impl Into<String>, cause: Option<Cause>) -> Self {
        Self::Unavailable {
            what: what.into(),
            cause,
        }
    }

    /// The error and its causes in one line, for logs, bodies and `/readyz`.
    pub(crate) fn report(&self) -> String {
        crate::report::error_chain(self)
    }
}
