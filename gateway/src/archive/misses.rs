//! Jobs the archive was just asked for and does not hold: a bounded negative cache, so
//! a request for an unknown or deleted job (each instance looks in the shared bucket
//! before creating a job or answering 410) costs one GET per job per [`MISS_TTL`], not
//! one per request. Entries are short-lived because another instance may archive the
//! job at any time; a read that must not miss an object bypasses this cache.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::job_id::JobId;

/// How long a miss is believed.
pub(crate) const MISS_TTL: Duration = Duration::from_secs(5);
/// Misses remembered at most (about 200 bytes each).
pub(crate) const MAX_MISSES: usize = 16 * 1024;

/// When each job missed, and the misses in the order they came (oldest first out).
type Seen = (HashMap<JobId, Instant>, VecDeque<(JobId, Instant)>);

/// Recent misses, oldest first out.
pub(crate) struct Misses {
    inner: Mutex<Seen>,
    capacity: usize,
    ttl: Duration,
}

impl Misses {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// Whether `job` missed within the TTL.
    pub(crate) fn contains(&self, job: &JobId) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.0.get(job).is_some_and(|at| at.elapsed() < self.ttl)
    }

    /// Notes a miss of `job` now, dropping expired entries and, when full, the oldest.
    pub(crate) fn insert(&self, job: &JobId) {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *inner;
        while let Some((old, at)) = order.front() {
            if now.duration_since(*at) < self.ttl && map.len() < self.capacity {
                break;
            }
            // Only the entry this queue slot was made for: a re-inserted job has a newer.
            if map.get(old) == Some(at) {
                map.remove(old);
            }
            order.pop_front();
        }
        map.insert(job.clone(), now);
        order.push_back((job.clone(), now));
    }

    /// Forgets a miss: the job was just archived.
    pub(crate) fn remove(&self, job: &JobId) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.0.remove(job);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> JobId {
        JobId::parse(&format!("job-{n}")).unwrap()
    }

    #[test]
    fn misses_are_bounded_and_forgotten() {
        let misses = Misses::new(3, Duration::from_secs(60));
        for n in 0..10 {
            misses.insert(&id(n));
        }
        assert!(misses.len() <= 3, "{}", misses.len());
        assert!(misses.contains(&id(9)));
        assert!(!misses.contains(&id(0)));
        misses.remove(&id(9));
        assert!(!misses.contains(&id(9)));
    }

    #[test]
    fn a_miss_expires() {
        let misses = Misses::new(10, Duration::ZERO);
        misses.insert(&id(1));
        assert!(!misses.contains(&id(1)));
    }
}
