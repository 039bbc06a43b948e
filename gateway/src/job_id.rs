//! Job ids: the one name a job has on the wire, in tokens and on disk.

use std::fmt;
use std::sync::Arc;

/// Longest job id accepted, in bytes.
pub const MAX_JOB_ID_LEN: usize = 128;

/// A validated job id: 1 to 128 bytes of `[A-Za-z0-9._-]`, never `.` or `..`.
///
/// It names files on disk, so the check in [`JobId::parse`] is a security boundary.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(Arc<str>);

/// Why a job id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadJobId {
    #[error("job id is empty")]
    Empty,
    #[error("job id is longer than {MAX_JOB_ID_LEN} bytes")]
    TooLong,
    #[error("job id may only contain A-Z, a-z, 0-9, '.', '_' and '-'")]
    BadCharacter,
    #[error("job id may not be '.' or '..'")]
    DotName,
}

impl JobId {
    /// Checks `raw` against the job id alphabet.
    pub fn parse(raw: &str) -> Result<Self, BadJobId> {
        if raw.is_empty() {
            return Err(BadJobId::Empty);
        }
        if raw.len() > MAX_JOB_ID_LEN {
            return Err(BadJobId::TooLong);
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(BadJobId::BadCharacter);
        }
        if raw == "." || raw == ".." {
            return Err(BadJobId::DotName);
        }
        Ok(Self(Arc::from(raw)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_alphabet() {
        for ok in ["a", "job-1", "A.b_c-9", "...", &"x".repeat(128)] {
            assert!(JobId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(JobId::parse(""), Err(BadJobId::Empty));
        assert_eq!(JobId::parse(&"x".repeat(129)), Err(BadJobId::TooLong));
        assert_eq!(JobId::parse("."), Err(BadJobId::DotName));
        assert_eq!(JobId::parse(".."), Err(BadJobId::DotName));
        for bad in ["a/b", "a b", "a%2f", "é", "a\0", "a\\b", "../etc"] {
            assert_eq!(JobId::parse(bad), Err(BadJobId::BadCharacter), "{bad:?}");
        }
    }
}
