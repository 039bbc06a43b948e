//! The archive's read cache: parsed indexes and decoded frames of recently read jobs,
//! bounded in bytes and charged to the process memory budget, least recently used out
//! first. A resume from the middle of a popular job then costs no GET at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::format::Index;
use crate::entry::Entry;
use crate::job_id::JobId;
use crate::memory::MemoryBudget;

/// What may be cached: a job's index, or one decoded frame of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Index(JobId),
    Frame(JobId, usize),
}

#[derive(Clone)]
pub(crate) enum Value {
    Index(Arc<Index>),
    Frame(Arc<Vec<Arc<Entry>>>),
}

impl Value {
    fn cost(&self) -> usize {
        match self {
            Self::Index(index) => index.cost(),
            Self::Frame(entries) => 64 + entries.iter().map(|e| e.cost()).sum::<usize>(),
        }
    }
}

struct Slot {
    value: Value,
    cost: usize,
    /// When it was last used, by the cache's own clock.
    used: u64,
}

struct Inner {
    slots: HashMap<Key, Slot>,
    bytes: usize,
    clock: u64,
}

/// Indexes and frames, at most `limit` bytes.
pub(crate) struct Cache {
    inner: Mutex<Inner>,
    limit: usize,
    /// The process budget the cache's bytes count against.
    memory: Arc<MemoryBudget>,
}

impl Cache {
    pub(crate) fn new(limit: usize, memory: Arc<MemoryBudget>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                slots: HashMap::new(),
                bytes: 0,
                clock: 0,
            }),
            limit,
            memory,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, key: &Key) -> Option<Value> {
        let mut inner = self.lock();
        inner.clock += 1;
        let clock = inner.clock;
        let slot = inner.slots.get_mut(key)?;
        slot.used = clock;
        Some(slot.value.clone())
    }

    /// Caches `value` (nothing when it alone is over the limit), evicting the least
    /// recently used entries to make room.
    pub(crate) fn put(&self, key: Key, value: Value) {
        let cost = value.cost();
        if cost > self.limit {
            return;
        }
        let mut inner = self.lock();
        inner.clock += 1;
        let used = inner.clock;
        if let Some(old) = inner.slots.insert(key, Slot { value, cost, used }) {
            inner.bytes -= old.cost;
            self.memory.sub(old.cost);
        }
        inner.bytes += cost;
        self.memory.add(cost);
        while inner.bytes > self.limit {
            let Some(oldest) = inner
                .slots
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(slot) = inner.slots.remove(&oldest) {
                inner.bytes -= slot.cost;
                self.memory.sub(slot.cost);
            }
        }
    }

    /// Forgets everything cached about `job` (its object changed or went away).
    pub(crate) fn forget(&self, job: &JobId) {
        let mut inner = self.lock();
        let gone: Vec<Key> = inner
            .slots
            .keys()
            .filter(|k| matches!(k, Key::Index(j) | Key::Frame(j, _) if j == job))
            .cloned()
            .collect();
        for key in gone {
            if let Some(slot) = inner.slots.remove(&key) {
                inner.bytes -= slot.cost;
                self.memory.sub(slot.cost);
            }
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        let bytes = self.lock().bytes;
        self.memory.sub(bytes);
    }
}
