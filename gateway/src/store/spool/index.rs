//! A sparse seq -> file offset index: one point per [`SPACING`] bytes of spool, so a
//! range read seeks near its first record instead of scanning from the start. Rebuilt
//! by the recovery scan; about 16 bytes per 64 KiB of log.

/// Bytes of spool between two index points.
pub(crate) const SPACING: u64 = 64 * 1024;

#[derive(Debug, Default, Clone)]
pub(crate) struct SparseIndex {
    /// `(seq, offset of its frame)`, both increasing.
    points: Vec<(u64, u64)>,
}

impl SparseIndex {
    /// Notes the frame of `seq` at `offset`, keeping it when it is far enough from the
    /// last point.
    pub(crate) fn note(&mut self, seq: u64, offset: u64) {
        match self.points.last() {
            Some(&(_, last)) if offset < last + SPACING => {}
            _ => self.points.push((seq, offset)),
        }
    }

    /// The offset to start reading at to find `seq`: the last point at or before it.
    pub(crate) fn seek(&self, seq: u64) -> Option<(u64, u64)> {
        let i = self.points.partition_point(|&(s, _)| s <= seq);
        i.checked_sub(1).map(|i| self.points[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeks_to_the_last_point_at_or_before() {
        let mut index = SparseIndex::default();
        for seq in 1..=1000u64 {
            index.note(seq, 8 + (seq - 1) * 1000);
        }
        assert_eq!(index.seek(0), None);
        assert_eq!(index.seek(1), Some((1, 8)));
        let (seq, offset) = index.seek(500).unwrap();
        assert!(seq <= 500 && 500 - seq < 66, "{seq}");
        assert_eq!(offset, 8 + (seq - 1) * 1000);
        assert!(index.points.len() < 20, "{}", index.points.len());
    }
}
