//! Concurrent long-lived requests per token subject (`sub`), so one token holder cannot
//! take every connection slot from everyone else. One [`SubjectStreams`] counts reads
//! (SSE, Capgo WebSocket, `?wait=`, `/log` downloads), a sibling counts uploads.
//!
//! The map holds only subjects with a request open: at most one entry per open request.

use std::sync::Arc;

use dashmap::DashMap;

/// Open requests of one kind by subject, with the per-subject cap.
pub(crate) struct SubjectStreams {
    counts: DashMap<String, usize>,
    max: usize,
}

/// One open request of one subject; frees its place when dropped.
pub(crate) struct SubjectSlot {
    owner: Arc<SubjectStreams>,
    sub: String,
}

impl SubjectStreams {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            counts: DashMap::new(),
            max,
        }
    }

    /// A place for one more request of `sub`, or `None` at the cap.
    pub(crate) fn claim(self: &Arc<Self>, sub: &str) -> Option<SubjectSlot> {
        let mut count = self.counts.entry(sub.to_string()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(SubjectSlot {
            owner: Arc::clone(self),
            sub: sub.to_string(),
        })
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    #[cfg(test)]
    fn open(&self, sub: &str) -> usize {
        self.counts.get(sub).map_or(0, |c| *c)
    }
}

impl Drop for SubjectSlot {
    fn drop(&mut self) {
        self.owner.counts.remove_if_mut(&self.sub, |_, count| {
            *count -= 1;
            *count == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_per_subject_and_freed_on_drop() {
        let streams = Arc::new(SubjectStreams::new(2));
        let a1 = streams.claim("a").expect("first");
        let a2 = streams.claim("a").expect("second");
        assert!(streams.claim("a").is_none(), "a third is over the cap");
        let b = streams
            .claim("b")
            .expect("another subject is not held back");
        drop(a1);
        let a3 = streams.claim("a").expect("a place was freed");
        drop((a2, a3, b));
        assert_eq!((streams.open("a"), streams.open("b")), (0, 0));
        assert!(streams.counts.is_empty(), "no entry outlives its streams");
    }
}
