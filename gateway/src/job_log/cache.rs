//! The ring as a cache over the store: it takes what the store stored, in seq order,
//! from this instance's appends and (a shared store) from other instances' alike. The
//! store's state wins over the local copy.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{evict, Held, JobLog};
use crate::entry::Entry;
use crate::store::{Follower, Progress, Recovered};

impl JobLog {
    /// Takes the store's view of the job: its state and Capgo confirmations.
    pub(crate) fn reconcile(&self, recovered: Recovered) {
        {
            let mut st = self.lock();
            for (hash, id) in recovered.confirmations {
                match st.confirmations.iter_mut().find(|(h, _)| *h == hash) {
                    Some(kept) => kept.1 = kept.1.max(id),
                    None => st.confirmations.push((hash, id)),
                }
            }
            let excess = st
                .confirmations
                .len()
                .saturating_sub(super::MAX_CONFIRMATIONS);
            st.confirmations.drain(..excess);
        }
        self.take(Vec::new(), Some(recovered.progress));
    }

    /// Takes records the store holds, in seq order, and the job's state after them;
    /// wakes readers when the log grew. A record past a hole (stored by another instance
    /// and not followed here) restarts the ring: readers below it read the store.
    pub(super) fn take(&self, entries: Vec<Arc<Entry>>, progress: Option<Progress>) {
        let mut st = self.lock();
        let before = st.progress.next_seq;
        let (mut added, mut freed) = (0, 0);
        for entry in entries {
            let next = st.progress.next_seq;
            if entry.seq() < next {
                continue;
            }
            if entry.seq() > next {
                freed += clear(&mut st);
                st.progress.next_seq = entry.seq();
            }
            st.progress.apply(&entry);
            let cost = entry.cost();
            added += cost;
            st.ring_bytes += cost;
            st.ring.push_back(Held { entry, cost });
        }
        if let Some(p) = progress {
            if p.next_seq > st.progress.next_seq {
                freed += clear(&mut st);
            }
            if p.next_seq >= st.progress.next_seq {
                st.progress = p;
            }
        }
        if st.progress.next_seq != before {
            st.last_activity = Instant::now();
        }
        if st.progress.status.is_terminal() && st.finished_instant.is_none() {
            st.finished_instant = Some(Instant::now());
        }
        self.memory.add(added);
        freed += evict(&mut st, self.limits.memory_bytes);
        let (grew, last) = (st.progress.next_seq > before, st.progress.last_seq());
        drop(st);
        self.memory.sub(freed);
        if grew {
            let readers = self.subscribers.load(Ordering::Relaxed);
            self.wakeups.announce(last, readers);
        }
    }
}

/// Empties the ring; returns the bytes freed.
fn clear(st: &mut super::State) -> usize {
    let freed = st.ring_bytes;
    st.ring.clear();
    st.ring_bytes = 0;
    freed
}

impl Follower for JobLog {
    fn is_followed(&self) -> bool {
        self.wakeups.watchers() > 0
    }

    fn next_seq(&self) -> u64 {
        self.lock().progress.next_seq
    }

    fn absorb(&self, entries: Vec<Arc<Entry>>) {
        self.take(entries, None);
    }

    fn end(&self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::job_id::JobId;
    use crate::job_log::{JobLimits, Read};
    use crate::memory::MemoryBudget;
    use crate::record::{Record, RecordBody, Stream};
    use crate::store::memory::MemoryStore;
    use crate::store::now_ms;

    fn job() -> Arc<JobLog> {
        let recovered = Recovered {
            id: JobId::parse("j").unwrap(),
            progress: Progress::new(now_ms()),
            confirmations: Vec::new(),
            broken: None,
        };
        let limits = JobLimits {
            memory_bytes: usize::MAX,
            max_log_bytes: u64::MAX,
            max_subscribers: 2,
            gather: Duration::ZERO,
        };
        Arc::new(JobLog::new(
            recovered,
            String::new(),
            limits,
            Arc::new(MemoryBudget::new(usize::MAX)),
            Arc::new(MemoryStore::new(60_000)),
        ))
    }

    fn entries(seqs: std::ops::RangeInclusive<u64>) -> Vec<Arc<Entry>> {
        seqs.map(|seq| {
            let body = RecordBody::Log {
                stream: Stream::Stdout,
                line: format!("line {seq}"),
            };
            Arc::new(Entry::new(
                &Record::new(seq, SystemTime::now(), body),
                None,
                Some(6),
            ))
        })
        .collect()
    }

    fn seqs(read: Read) -> Vec<u64> {
        match read {
            Read::Entries(e) => e.iter().map(|e| e.seq()).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn records_are_taken_once_in_order_and_a_hole_restarts_the_ring() {
        let job = job();
        let mut seq_rx = job.watch();
        job.absorb(entries(1..=3));
        assert!(seq_rx.has_changed().unwrap(), "readers are woken");
        assert_eq!(*seq_rx.borrow_and_update(), 3);
        // Already held: skipped, nothing announced.
        job.absorb(entries(2..=3));
        assert!(!seq_rx.has_changed().unwrap());
        assert_eq!(seqs(job.read(1, usize::MAX, None)), vec![1, 2, 3]);
        // 4..=5 were stored by another instance and never followed here.
        job.absorb(entries(6..=7));
        assert_eq!(job.last_seq(), 7);
        assert_eq!(seqs(job.read(6, usize::MAX, None)), vec![6, 7]);
        // Below the ring the store is asked; memory holds nothing there.
        assert!(matches!(
            job.read(1, usize::MAX, None),
            Read::Gap { from: 1, to: 5 }
        ));
    }

    #[test]
    fn the_store_state_wins_unless_it_is_older() {
        let job = job();
        job.absorb(entries(1..=2));
        let mut newer = job.lock().progress;
        newer.next_seq = 10;
        newer.dropped_lines = 4;
        job.reconcile(Recovered {
            id: job.id().clone(),
            progress: newer,
            confirmations: vec![(7, 3)],
            broken: None,
        });
        assert_eq!(job.last_seq(), 9);
        assert_eq!(job.snapshot().dropped_lines, 4);
        assert_eq!(job.confirmed(7), Some(3));
        assert!(matches!(
            job.read(1, usize::MAX, None),
            Read::Gap { from: 1, to: 9 }
        ));
        let mut older = newer;
        older.next_seq = 4;
        job.reconcile(Recovered {
            id: job.id().clone(),
            progress: older,
            confirmations: vec![(7, 1)],
            broken: None,
        });
        assert_eq!(job.last_seq(), 9, "an older view is ignored");
        assert_eq!(job.confirmed(7), Some(3), "confirmations only move forward");
    }
}
