//! Correctness accounting: each reader checks that it got every publisher counter once and in
//! order. Missing counters are kept as ranges, so memory stays small however long the run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Totals over one or many readers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Lines received (each counter once; doubles not included).
    pub delivered: u64,
    /// Lines a reader should have received and never did (gap-announced ones included).
    pub lost: u64,
    /// Lines received a second time.
    pub duplicated: u64,
    /// Lines received after a line with a higher counter (each counted once, not lost).
    pub reordered: u64,
    /// Lines the server announced as missing with a `gap` event (a subset of `lost`).
    pub gapped: u64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.delivered += other.delivered;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.gapped += other.gapped;
    }

    /// Whether any line was lost, doubled or reordered.
    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.reordered == 0
    }
}

/// One reader's view of one job's counters (which start at 1).
#[derive(Debug, Clone)]
pub struct SeqTracker {
    /// One past the highest counter received; `None` until the first line when the reader
    /// starts wherever it joins (`starts_anywhere`).
    next: Option<u64>,
    /// Counter the reader's range starts at, once known.
    first: Option<u64>,
    /// Ranges `start -> end` (inclusive) below `next` not received yet.
    holes: BTreeMap<u64, u64>,
    delivered: u64,
    duplicated: u64,
    reordered: u64,
    gapped: u64,
}

impl SeqTracker {
    /// A tracker expecting every counter from 1.
    pub fn from_start() -> Self {
        Self::with_next(Some(1))
    }

    /// A tracker whose range starts at the first counter it receives (a late joiner on a
    /// server that does not replay history).
    pub fn starts_anywhere() -> Self {
        Self::with_next(None)
    }

    fn with_next(next: Option<u64>) -> Self {
        Self {
            next,
            first: next,
            holes: BTreeMap::new(),
            delivered: 0,
            duplicated: 0,
            reordered: 0,
            gapped: 0,
        }
    }

    /// Highest counter received so far (0 when none).
    pub fn highest(&self) -> u64 {
        self.next.map_or(0, |n| n - 1)
    }

    /// Lines received so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Records one received counter.
    pub fn record(&mut self, counter: u64) {
        let next = match self.next {
            Some(n) => n,
            None => {
                self.first = Some(counter);
                counter
            }
        };
        if counter == next {
            self.next = Some(next + 1);
            self.delivered += 1;
        } else if counter > next {
            self.holes.insert(next, counter - 1);
            self.next = Some(counter + 1);
            self.delivered += 1;
        } else if self.fill_hole(counter) {
            self.reordered += 1;
            self.delivered += 1;
        } else if let Some(first) = self.first.filter(|&f| counter < f) {
            // Older than where this reader started: it arrived out of order.
            if counter + 1 < first {
                self.holes.insert(counter + 1, first - 1);
            }
            self.first = Some(counter);
            self.reordered += 1;
            self.delivered += 1;
        } else {
            self.duplicated += 1;
        }
    }

    /// Records a server `gap` event for counters `from..=to`.
    pub fn record_gap(&mut self, from: u64, to: u64) {
        if to >= from {
            self.gapped += to - from + 1;
        }
    }

    fn fill_hole(&mut self, counter: u64) -> bool {
        let Some((&start, &end)) = self.holes.range(..=counter).next_back() else {
            return false;
        };
        if counter > end {
            return false;
        }
        self.holes.remove(&start);
        if start < counter {
            self.holes.insert(start, counter - 1);
        }
        if counter < end {
            self.holes.insert(counter + 1, end);
        }
        true
    }

    /// Final counts when the reader should have received every counter up to `last`
    /// (`None`: only holes inside the received range count as lost, for readers that left
    /// early on purpose).
    pub fn finish(&self, last: Option<u64>) -> Counts {
        let mut lost: u64 = self.holes.iter().map(|(s, e)| e - s + 1).sum();
        if let Some(last) = last {
            // Received nothing at all: everything up to `last` is missing.
            lost += last.saturating_sub(self.highest());
        }
        Counts {
            delivered: self.delivered,
            lost,
            duplicated: self.duplicated,
            reordered: self.reordered,
            gapped: self.gapped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seq: &[u64], last: u64) -> Counts {
        let mut t = SeqTracker::from_start();
        for &c in seq {
            t.record(c);
        }
        t.finish(Some(last))
    }

    #[test]
    fn clean_sequence_gives_zeros() {
        let c = run(&[1, 2, 3, 4, 5], 5);
        assert_eq!(
            c,
            Counts {
                delivered: 5,
                ..Counts::default()
            }
        );
        assert!(c.is_clean());
    }

    #[test]
    fn detects_a_lost_line() {
        let c = run(&[1, 2, 4, 5], 5);
        assert_eq!(
            (c.lost, c.duplicated, c.reordered, c.delivered),
            (1, 0, 0, 4)
        );
        // Lost at the tail: the reader stopped before the publisher's last line.
        let c = run(&[1, 2, 3], 5);
        assert_eq!((c.lost, c.duplicated, c.reordered), (2, 0, 0));
        assert!(!c.is_clean());
    }

    #[test]
    fn detects_a_doubled_line() {
        let c = run(&[1, 2, 3, 3, 4, 5], 5);
        assert_eq!(
            (c.lost, c.duplicated, c.reordered, c.delivered),
            (0, 1, 0, 5)
        );
        assert!(!c.is_clean());
    }

    #[test]
    fn detects_a_reordered_line() {
        let c = run(&[1, 3, 2, 4, 5], 5);
        assert_eq!(
            (c.lost, c.duplicated, c.reordered, c.delivered),
            (0, 0, 1, 5)
        );
        assert!(!c.is_clean());
    }

    #[test]
    fn all_three_at_once() {
        // 2 lost, 5 doubled, 4 reordered.
        let c = run(&[1, 3, 5, 5, 4, 6], 6);
        assert_eq!(
            (c.lost, c.duplicated, c.reordered, c.delivered),
            (1, 1, 1, 5)
        );
    }

    #[test]
    fn nothing_received_loses_everything() {
        assert_eq!(run(&[], 7).lost, 7);
    }

    #[test]
    fn gap_event_is_counted_and_its_lines_are_lost() {
        let mut t = SeqTracker::from_start();
        t.record(1);
        t.record_gap(2, 4);
        t.record(5);
        let c = t.finish(Some(5));
        assert_eq!((c.lost, c.gapped), (3, 3));
    }

    #[test]
    fn late_joiner_range_starts_at_first_line() {
        let mut t = SeqTracker::starts_anywhere();
        for c in [10, 11, 13] {
            t.record(c);
        }
        assert_eq!(t.finish(None).lost, 1);
        assert_eq!(t.finish(Some(15)).lost, 3);
    }
}
