//! Tombstones: what is left of a job deleted by retention (its id, final status and
//! when it finished), so a reader with a still-valid token gets `410 job_expired`
//! instead of a new, empty job that never ends. Kept for `--tombstone-secs`.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::spool::files;
use crate::job_id::JobId;
use crate::record::JobStatus;

/// A deleted job's last words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tombstone {
    pub(crate) status: JobStatus,
    pub(crate) exit_code: Option<i32>,
    pub(crate) finished_ms: Option<u64>,
    pub(crate) deleted_ms: u64,
}

/// Tombstones held in memory, bounded in count; the oldest go first.
pub(crate) struct MemoryTombstones {
    inner: Mutex<(HashMap<JobId, Tombstone>, VecDeque<JobId>)>,
    capacity: usize,
    ttl_ms: u64,
}

impl MemoryTombstones {
    pub(crate) fn new(capacity: usize, ttl_ms: u64) -> Self {
        Self {
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
            capacity: capacity.max(1),
            ttl_ms,
        }
    }

    pub(crate) fn insert(&self, job: &JobId, tombstone: Tombstone) {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *guard;
        if map.insert(job.clone(), tombstone).is_none() {
            order.push_back(job.clone());
        }
        while map.len() > self.capacity {
            match order.pop_front() {
                Some(old) => map.remove(&old),
                None => break,
            };
        }
    }

    pub(crate) fn get(&self, job: &JobId, now_ms: u64) -> Option<Tombstone> {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .0
            .get(job)
            .filter(|t| now_ms.saturating_sub(t.deleted_ms) < self.ttl_ms)
            .cloned()
    }

    pub(crate) fn remove(&self, job: &JobId) {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        guard.0.remove(job);
    }
}

/// Tombstones as small files under `<data-dir>/tombstones/`, one per job, named by the
/// validated job id; read on demand, swept when older than the TTL.
pub(crate) struct DirTombstones {
    dir: PathBuf,
    ttl_ms: u64,
}

impl DirTombstones {
    pub(crate) fn new(dir: PathBuf, ttl_ms: u64) -> Self {
        Self { dir, ttl_ms }
    }

    fn path(&self, job: &JobId) -> PathBuf {
        self.dir.join(format!("{job}.json"))
    }

    /// Writes the tombstone and forces it, and its directory entry, to disk: the job's
    /// spool is deleted next, and a power loss must not leave neither.
    pub(crate) fn insert(&self, job: &JobId, tombstone: &Tombstone) -> std::io::Result<()> {
        let json = serde_json::to_vec(tombstone).unwrap_or_default();
        let path = self.path(job);
        let mut file = files::create(&path)?;
        std::io::Write::write_all(&mut file, &json)?;
        files::sync_data(&file, &path)?;
        files::sync_dir(&self.dir)
    }

    pub(crate) fn get(&self, job: &JobId, now_ms: u64) -> Option<Tombstone> {
        let raw = files::read(&self.path(job)).ok()?;
        let tombstone: Tombstone = serde_json::from_slice(&raw).ok()?;
        (now_ms.saturating_sub(tombstone.deleted_ms) < self.ttl_ms).then_some(tombstone)
    }

    pub(crate) fn remove(&self, job: &JobId) {
        let _ = std::fs::remove_file(self.path(job));
    }

    /// Deletes tombstones older than the TTL; returns how many.
    pub(crate) fn sweep(&self, now_ms: u64) -> usize {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut removed = 0;
        for item in dir.flatten() {
            let path = item.path();
            let old = files::read(&path)
                .ok()
                .and_then(|raw| serde_json::from_slice::<Tombstone>(&raw).ok())
                .is_none_or(|t| now_ms.saturating_sub(t.deleted_ms) >= self.ttl_ms);
            if old && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stone(deleted_ms: u64) -> Tombstone {
        Tombstone {
            status: JobStatus::Succeeded,
            exit_code: Some(0),
            finished_ms: Some(1),
            deleted_ms,
        }
    }

    #[test]
    fn memory_tombstones_expire_and_stay_bounded() {
        let t = MemoryTombstones::new(2, 1000);
        let (a, b, c) = (
            JobId::parse("a").unwrap(),
            JobId::parse("b").unwrap(),
            JobId::parse("c").unwrap(),
        );
        t.insert(&a, stone(0));
        assert_eq!(t.get(&a, 999), Some(stone(0)));
        assert_eq!(t.get(&a, 1000), None, "expired");
        t.insert(&b, stone(0));
        t.insert(&c, stone(0));
        assert_eq!(t.get(&a, 1), None, "oldest dropped at capacity");
        assert!(t.get(&c, 1).is_some());
    }

    #[test]
    fn dir_tombstones_round_trip_and_sweep() {
        let dir = std::env::temp_dir().join(format!("tailgate-tomb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t = DirTombstones::new(dir.clone(), 1000);
        let a = JobId::parse("a.b-c").unwrap();
        t.insert(&a, &stone(10)).unwrap();
        assert_eq!(t.get(&a, 500), Some(stone(10)));
        assert_eq!(t.sweep(500), 0);
        assert_eq!(t.sweep(1010), 1);
        assert_eq!(t.get(&a, 500), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
