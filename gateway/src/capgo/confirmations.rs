//! The last id each Capgo client confirmed, per job and token, so a reconnecting client
//! (which sends no resume point and drops no duplicates) continues strictly after it.
//!
//! Keyed by the job and a hash of the token (the token itself is never stored); bounded
//! in entries, and each entry expires a while after its last confirmation. The hash is
//! stable across restarts because the job keeps its confirmations in the store too
//! ([`crate::job_log::JobLog::confirm`]), so a reconnect after a restart still resumes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::job_id::JobId;

/// Which client a confirmation belongs to: a job and the hash of its reader's token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey {
    job: JobId,
    /// The job's life: a confirmation from an earlier life never resumes a later one.
    life: String,
    token_hash: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    last_id: u64,
    touched: Instant,
}

impl ClientKey {
    /// The stable hash of the client's token, as the job's store keeps it.
    pub(crate) fn token_hash(&self) -> u64 {
        self.token_hash
    }
}

/// A stable 64-bit digest of `token` (SHA-256, truncated), the same in every process.
fn token_hash(token: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"tailgate capgo confirmation\0")
        .chain_update(token.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// Every client's last confirmed id.
pub(crate) struct Confirmations {
    slots: Mutex<HashMap<ClientKey, Slot>>,
    /// An entry not confirmed again for this long is forgotten.
    ttl: Duration,
    /// Entries held at most; beyond it the expired, then the oldest, are dropped.
    capacity: usize,
    /// Sessions open per client right now. Only a client whose connections have all
    /// closed resumes after its confirmed id: a second, concurrent connection with the same
    /// token is another reader and starts at the beginning. One entry per open session.
    open: Mutex<HashMap<ClientKey, u32>>,
}

/// One open session of one client; counted until dropped.
pub(crate) struct OpenSession {
    owner: Arc<Confirmations>,
    key: ClientKey,
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

impl Confirmations {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            open: Mutex::new(HashMap::new()),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// Counts a session of `key` as open; `true` when no other is, so it may resume.
    pub(crate) fn open(self: &Arc<Self>, key: &ClientKey) -> (OpenSession, bool) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key.clone()).or_insert(0);
        *n += 1;
        let alone = *n == 1;
        drop(open);
        let session = OpenSession {
            owner: Arc::clone(self),
            key: key.clone(),
        };
        (session, alone)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ClientKey, Slot>> {
        // Every update is a single insert or removal: a poisoned map is still consistent.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key of the client reading `job` with `token`.
    pub(crate) fn key(&self, job: &JobId, life: &str, token: &str) -> ClientKey {
        ClientKey {
            job: job.clone(),
            life: life.to_string(),
            token_hash: token_hash(token),
        }
    }

    /// The last id `key` confirmed, unless forgotten.
    pub(crate) fn last(&self, key: &ClientKey) -> Option<u64> {
        self.last_at(key, Instant::now())
    }

    fn last_at(&self, key: &ClientKey, now: Instant) -> Option<u64> {
        let slots = self.lock();
        let slot = slots.get(key)?;
        (now.saturating_duration_since(slot.touched) < self.ttl).then_some(slot.last_id)
    }

    /// Records that `key` has every record up to `id`; ids only move forward.
    pub(crate) fn confirm(&self, key: &ClientKey, id: u64) {
        self.confirm_at(key, id, Instant::now());
    }

    fn confirm_at(&self, key: &ClientKey, id: u64, now: Instant) {
        let mut slots = self.lock();
        if let Some(slot) = slots.get_mut(key) {
            let live = now.saturating_duration_since(slot.touched) < self.ttl;
            slot.last_id = if live { slot.last_id.max(id) } else { id };
            slot.touched = now;
            return;
        }
        if slots.len() >= self.capacity {
            self.make_room(&mut slots, now);
        }
        slots.insert(
            key.clone(),
            Slot {
                last_id: id,
                touched: now,
            },
        );
    }

    /// Forgets `key`, when its job started over.
    pub(crate) fn forget(&self, key: &ClientKey) {
        self.lock().remove(key);
    }

    /// Drops expired entries, then the least recently confirmed quarter if still full.
    fn make_room(&self, slots: &mut HashMap<ClientKey, Slot>, now: Instant) {
        slots.retain(|_, s| now.saturating_duration_since(s.touched) < self.ttl);
        if slots.len() < self.capacity {
            return;
        }
        let mut ages: Vec<Instant> = slots.values().map(|s| s.touched).collect();
        let cut = (self.capacity / 4).max(1).min(ages.len() - 1);
        let (_, oldest_kept, _) = ages.select_nth_unstable(cut);
        let oldest_kept = *oldest_kept;
        slots.retain(|_, s| s.touched >= oldest_kept);
        tracing::debug!(
            capgo.confirmations = slots.len(),
            "confirmation store full; dropped the oldest"
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(s: &str) -> JobId {
        JobId::parse(s).unwrap()
    }

    #[test]
    fn ids_move_forward_per_job_and_token() {
        let store = Confirmations::new(Duration::from_secs(60), 100);
        let a = store.key(&job("j1"), "l1", "token-a");
        let b = store.key(&job("j1"), "l1", "token-b");
        let other_job = store.key(&job("j2"), "l1", "token-a");
        assert_eq!(a, store.key(&job("j1"), "l1", "token-a"));
        assert_eq!(store.last(&a), None);
        store.confirm(&a, 5);
        store.confirm(&a, 3);
        assert_eq!(store.last(&a), Some(5), "never backwards");
        assert_eq!((store.last(&b), store.last(&other_job)), (None, None));
        store.forget(&a);
        assert_eq!(store.last(&a), None);
    }

    #[test]
    fn only_a_client_with_no_open_session_may_resume() {
        let store = Arc::new(Confirmations::new(Duration::from_secs(60), 100));
        let a = store.key(&job("j"), "l1", "token-a");
        let (first, alone) = store.open(&a);
        assert!(alone);
        let (second, alone) = store.open(&a);
        assert!(!alone, "the first is still open");
        let (other, alone) = store.open(&store.key(&job("j"), "l1", "token-b"));
        assert!(alone, "another token is another client");
        drop((first, second, other));
        assert!(store.open(&a).1, "both closed: the next may resume");
        assert_eq!(
            store.open.lock().unwrap().len(),
            0,
            "no entry outlives its sessions"
        );
    }

    #[test]
    fn entries_expire() {
        let store = Confirmations::new(Duration::from_secs(60), 100);
        let a = store.key(&job("j"), "l1", "t");
        let t0 = Instant::now();
        store.confirm_at(&a, 9, t0);
        assert_eq!(store.last_at(&a, t0 + Duration::from_secs(59)), Some(9));
        assert_eq!(store.last_at(&a, t0 + Duration::from_secs(61)), None);
        store.confirm_at(&a, 2, t0 + Duration::from_secs(61));
        assert_eq!(
            store.last_at(&a, t0 + Duration::from_secs(62)),
            Some(2),
            "an expired id does not hold a new one back"
        );
    }

    #[test]
    fn bounded_dropping_expired_then_oldest() {
        let store = Confirmations::new(Duration::from_secs(60), 8);
        let t0 = Instant::now();
        for i in 0..8u64 {
            let k = store.key(&job("j"), "l1", &format!("t{i}"));
            store.confirm_at(&k, i, t0 + Duration::from_secs(i));
        }
        assert_eq!(store.len(), 8);
        let newest = store.key(&job("j"), "l1", "t7");
        let oldest = store.key(&job("j"), "l1", "t0");
        let k = store.key(&job("j"), "l1", "late");
        store.confirm_at(&k, 1, t0 + Duration::from_secs(10));
        assert!(store.len() <= 8);
        let now = t0 + Duration::from_secs(10);
        assert_eq!(store.last_at(&oldest, now), None, "oldest dropped");
        assert_eq!(store.last_at(&newest, now), Some(7));
        assert_eq!(store.last_at(&k, now), Some(1));
        // All expired: they go first.
        for i in 0..20u64 {
            let k = store.key(&job("j"), "l1", &format!("x{i}"));
            store.confirm_at(&k, i, t0 + Duration::from_secs(1000 + i));
        }
        assert!(store.len() <= 8);
    }
}
