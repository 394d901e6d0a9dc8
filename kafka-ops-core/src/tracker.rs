//! Which offsets are safe to commit when records finish out of order.
//!
//! A consumer that handles records concurrently finishes them in any order, but Kafka keeps one
//! committed offset per partition: committing offset `n` says "everything below `n` is done". The
//! [`OffsetTracker`] records each offset as it is dispatched and as it completes, and yields, per
//! partition, the highest offset whose every predecessor has completed — never past a record that
//! is still running or that failed.
//!
//! ```
//! use kafka_ops_core::tracker::OffsetTracker;
//! use kafka_ops_core::{Offset, TopicPartition};
//!
//! let tp = TopicPartition::new("orders", 0);
//! let o = |v| Offset::new(v).unwrap();
//! let mut tracker = OffsetTracker::new();
//! for offset in [10, 11, 12] {
//!     tracker.track(&tp, o(offset)).unwrap();
//! }
//! tracker.complete(&tp, o(12));
//! assert_eq!(tracker.safe_offset(&tp), Some(o(10))); // 10 and 11 still running
//! tracker.complete(&tp, o(10));
//! assert_eq!(tracker.safe_offset(&tp), Some(o(11)));
//! tracker.complete(&tp, o(11));
//! assert_eq!(tracker.safe_offset(&tp), Some(o(13))); // all done: commit the next offset
//! ```

use std::collections::VecDeque;

use foldhash::{HashMap, HashSet};

use crate::error::Error;
use crate::types::{Offset, TopicPartition};

#[derive(Debug, Default, Clone)]
struct PartitionState {
    /// Dispatched offsets not yet released, ascending, with a "done" flag.
    pending: VecDeque<(i64, bool)>,
    /// Offset after the highest tracked one.
    next: Option<i64>,
    /// The last offset committed (or known committed) for this partition.
    committed: Option<i64>,
    /// Entries of `pending` not done yet (kept so counting is O(1) on the poll loop's path).
    unfinished: usize,
}

impl PartitionState {
    fn safe(&self) -> Option<i64> {
        match self.pending.front() {
            Some((offset, _)) => Some(*offset),
            None => self.next,
        }
    }
}

/// Per-partition offset bookkeeping for at-least-once commits.
#[derive(Debug, Default, Clone)]
pub struct OffsetTracker {
    partitions: HashMap<TopicPartition, PartitionState>,
    unfinished: usize,
}

impl OffsetTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the record at `offset` was dispatched. Offsets of a partition must be tracked
    /// in increasing order (gaps are fine: compaction and transaction markers leave them).
    pub fn track(&mut self, partition: &TopicPartition, offset: Offset) -> Result<(), Error> {
        let state = self.partitions.entry(partition.clone()).or_default();
        let offset = offset.get();
        if let Some(next) = state.next
            && offset < next
        {
            return Err(Error::InvalidInput(format!(
                "{partition}: offset {offset} tracked after {}; forget the partition before re-reading it",
                next - 1
            )));
        }
        state.pending.push_back((offset, false));
        state.unfinished += 1;
        self.unfinished += 1;
        state.next = Some(offset + 1);
        Ok(())
    }

    /// Records that the record at `offset` is done. Returns `false` when the offset is not
    /// tracked (its partition was revoked and forgotten meanwhile, or it completed already).
    ///
    /// A record is known by its offset alone: once an offset is tracked again (after
    /// [`rewind`](Self::rewind) or [`forget`](Self::forget)), completing it completes the new
    /// record. A caller whose results may outlive a rewind or a forget must tell the runs apart
    /// before calling this, as [`Scheduler`](crate::scheduler::Scheduler) does.
    pub fn complete(&mut self, partition: &TopicPartition, offset: Offset) -> bool {
        let Some(state) = self.partitions.get_mut(partition) else {
            return false;
        };
        let offset = offset.get();
        let Ok(index) = state.pending.binary_search_by_key(&offset, |(o, _)| *o) else {
            return false;
        };
        if state.pending[index].1 {
            return false;
        }
        state.pending[index].1 = true;
        state.unfinished -= 1;
        self.unfinished -= 1;
        while state.pending.front().is_some_and(|(_, done)| *done) {
            state.pending.pop_front();
        }
        true
    }

    /// The offset to commit for `partition`: every record below it is done.
    pub fn safe_offset(&self, partition: &TopicPartition) -> Option<Offset> {
        self.partitions
            .get(partition)
            .and_then(PartitionState::safe)
            .and_then(|o| Offset::new(o).ok())
    }

    /// Partitions whose safe offset moved past their last commit, with the offset to commit.
    pub fn commit_candidates(&self) -> Vec<(TopicPartition, Offset)> {
        let mut out: Vec<(TopicPartition, Offset)> = self
            .partitions
            .iter()
            .filter_map(|(tp, state)| {
                let safe = state.safe()?;
                (state.committed.is_none_or(|c| safe > c))
                    .then(|| Offset::new(safe).ok().map(|o| (tp.clone(), o)))
                    .flatten()
            })
            .collect();
        out.sort();
        out
    }

    /// Commit candidates restricted to `partitions`.
    pub fn commit_candidates_for(
        &self,
        partitions: &[TopicPartition],
    ) -> Vec<(TopicPartition, Offset)> {
        let wanted: HashSet<&TopicPartition> = partitions.iter().collect();
        self.commit_candidates()
            .into_iter()
            .filter(|(tp, _)| wanted.contains(tp))
            .collect()
    }

    /// Records that `offset` was committed for `partition`.
    pub fn mark_committed(&mut self, partition: &TopicPartition, offset: Offset) {
        if let Some(state) = self.partitions.get_mut(partition) {
            state.committed = Some(
                state
                    .committed
                    .map_or(offset.get(), |c| c.max(offset.get())),
            );
        }
    }

    /// Forgets `partition`'s records at or after `offset` (done or not), so the partition can be
    /// read again from `offset` after a seek back. Completions for them are ignored until they
    /// are tracked again (see [`complete`](Self::complete)).
    pub fn rewind(&mut self, partition: &TopicPartition, offset: Offset) {
        if let Some(state) = self.partitions.get_mut(partition) {
            let offset = offset.get();
            let before = state.unfinished;
            state.pending.retain(|(o, _)| *o < offset);
            state.unfinished = state.pending.iter().filter(|(_, done)| !done).count();
            self.unfinished -= before - state.unfinished;
            if state.next.is_some_and(|next| next > offset) {
                state.next = Some(offset);
            }
        }
    }

    /// Moves `partition` past offsets that hold no record for the consumer — transaction
    /// markers, and aborted records under `read_committed` — once the consumer's `position`
    /// (the offset after the last record or marker it handed over) is past them. Without this a
    /// consumer that read everything before a transaction's commit marker commits the marker's
    /// offset and shows a lag of 1 for as long as no record follows.
    ///
    /// Every record below `position` must have been [tracked](Self::track): the position then
    /// only adds offsets without records, and the partition's safe offset reaches it once every
    /// tracked record is done. A lower position changes nothing.
    pub fn observe_position(&mut self, partition: &TopicPartition, position: Offset) {
        let state = self.partitions.entry(partition.clone()).or_default();
        let position = position.get();
        if state.next.is_none_or(|next| position > next) {
            state.next = Some(position);
        }
    }

    /// Records still running (or failed) in `partition`.
    pub fn in_flight(&self, partition: &TopicPartition) -> usize {
        self.partitions.get(partition).map_or(0, |s| s.unfinished)
    }

    /// Records still running (or failed) in all partitions.
    pub fn total_in_flight(&self) -> usize {
        self.unfinished
    }

    /// Records of `partition` tracked and not past its safe offset: the unfinished ones and
    /// those done after the first unfinished one — what a restart would hand over again.
    pub fn pending(&self, partition: &TopicPartition) -> usize {
        self.partitions
            .get(partition)
            .map_or(0, |s| s.pending.len())
    }

    /// Drops everything known about `partition` (after a revoke): completions that arrive later
    /// for it are ignored until its offsets are tracked again (see [`complete`](Self::complete)),
    /// which may start from any position.
    pub fn forget(&mut self, partition: &TopicPartition) {
        if let Some(state) = self.partitions.remove(partition) {
            self.unfinished -= state.unfinished;
        }
    }

    /// Drops everything.
    pub fn forget_all(&mut self) {
        self.partitions.clear();
        self.unfinished = 0;
    }

    /// The partitions currently tracked.
    pub fn partitions(&self) -> impl Iterator<Item = &TopicPartition> {
        self.partitions.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_position_past_markers_is_committed_once_every_record_is_done() {
        let tp = TopicPartition::new("t", 0);
        let mut tracker = OffsetTracker::new();
        for offset in 0..5 {
            tracker.track(&tp, o(offset)).unwrap();
        }
        // The consumer handed over records 0..=4 and the commit marker at 5.
        tracker.observe_position(&tp, o(6));
        assert_eq!(tracker.safe_offset(&tp), Some(o(0)));
        for offset in [4, 0, 1, 2] {
            tracker.complete(&tp, o(offset));
        }
        assert_eq!(tracker.safe_offset(&tp), Some(o(3)));
        tracker.complete(&tp, o(3));
        assert_eq!(tracker.safe_offset(&tp), Some(o(6)));
        assert_eq!(tracker.commit_candidates(), [(tp.clone(), o(6))]);
        // A lower or equal position changes nothing; the next record comes after the marker.
        tracker.observe_position(&tp, o(2));
        assert_eq!(tracker.safe_offset(&tp), Some(o(6)));
        assert!(tracker.track(&tp, o(5)).is_err());
        tracker.track(&tp, o(6)).unwrap();
        assert_eq!(tracker.safe_offset(&tp), Some(o(6)));
    }

    #[test]
    fn a_position_alone_makes_a_partition_committable() {
        // A partition whose consumer only passed markers since its assignment.
        let tp = TopicPartition::new("t", 1);
        let mut tracker = OffsetTracker::new();
        tracker.observe_position(&tp, o(9));
        assert_eq!(tracker.commit_candidates(), [(tp.clone(), o(9))]);
        tracker.mark_committed(&tp, o(9));
        assert!(tracker.commit_candidates().is_empty());
    }

    fn o(v: i64) -> Offset {
        Offset::new(v).unwrap()
    }

    #[test]
    fn gaps_in_offsets_are_fine() {
        let tp = TopicPartition::new("t", 0);
        let mut t = OffsetTracker::new();
        t.track(&tp, o(5)).unwrap();
        t.track(&tp, o(9)).unwrap();
        assert!(t.complete(&tp, o(5)));
        assert_eq!(t.safe_offset(&tp), Some(o(9)));
        assert!(t.complete(&tp, o(9)));
        assert_eq!(t.safe_offset(&tp), Some(o(10)));
    }

    #[test]
    fn going_backwards_is_an_error_until_forgotten() {
        let tp = TopicPartition::new("t", 0);
        let mut t = OffsetTracker::new();
        t.track(&tp, o(5)).unwrap();
        assert!(t.track(&tp, o(5)).is_err());
        t.forget(&tp);
        assert!(!t.complete(&tp, o(5)));
        t.track(&tp, o(2)).unwrap();
        assert_eq!(t.safe_offset(&tp), Some(o(2)));
    }

    #[test]
    fn rewind_allows_reading_a_partition_again() {
        let tp = TopicPartition::new("t", 0);
        let mut t = OffsetTracker::new();
        for offset in 0..5 {
            t.track(&tp, o(offset)).unwrap();
        }
        t.complete(&tp, o(0));
        t.complete(&tp, o(3));
        assert_eq!(t.pending(&tp), 4, "1 to 4: 3 is done, but behind 1");
        t.rewind(&tp, o(2));
        assert_eq!(t.safe_offset(&tp), Some(o(1)));
        assert_eq!(t.in_flight(&tp), 1);
        assert_eq!(t.pending(&tp), 1);
        // Offset 3 completed before the rewind, but it will be read again: it no longer counts.
        assert!(!t.complete(&tp, o(3)));
        t.track(&tp, o(2)).unwrap();
        t.complete(&tp, o(1));
        t.complete(&tp, o(2));
        assert_eq!(t.safe_offset(&tp), Some(o(3)));
    }

    #[test]
    fn unknown_and_repeated_completions_are_ignored() {
        let tp = TopicPartition::new("t", 0);
        let mut t = OffsetTracker::new();
        t.track(&tp, o(1)).unwrap();
        t.track(&tp, o(2)).unwrap();
        assert!(!t.complete(&tp, o(7)));
        assert!(!t.complete(&TopicPartition::new("u", 0), o(1)));
        assert!(t.complete(&tp, o(2)));
        assert!(!t.complete(&tp, o(2)));
        assert_eq!(t.in_flight(&tp), 1);
    }

    #[test]
    fn commit_candidates_only_report_progress() {
        let a = TopicPartition::new("a", 0);
        let b = TopicPartition::new("b", 0);
        let mut t = OffsetTracker::new();
        t.track(&a, o(0)).unwrap();
        t.track(&b, o(0)).unwrap();
        t.complete(&a, o(0));
        assert_eq!(
            t.commit_candidates(),
            vec![(a.clone(), o(1)), (b.clone(), o(0))]
        );
        t.mark_committed(&a, o(1));
        t.mark_committed(&b, o(0));
        assert!(t.commit_candidates().is_empty());
        t.complete(&b, o(0));
        assert_eq!(
            t.commit_candidates_for(std::slice::from_ref(&b)),
            vec![(b.clone(), o(1))]
        );
        assert_eq!(t.commit_candidates_for(&[a]), vec![]);
        assert_eq!(t.total_in_flight(), 0);
    }

    proptest! {
        /// Whatever order records finish in, the safe offset never passes an unfinished record,
        /// and once all are done it is one past the last.
        #[test]
        fn never_commits_past_an_unfinished_record(
            gaps in proptest::collection::vec(1i64..4, 1..60),
            order in any::<proptest::sample::Index>(),
            completions in proptest::collection::vec(any::<proptest::sample::Index>(), 0..80),
        ) {
            let tp = TopicPartition::new("t", 0);
            let mut tracker = OffsetTracker::new();
            let mut offsets = Vec::new();
            let mut next = order.index(5) as i64;
            for gap in gaps {
                tracker.track(&tp, o(next)).unwrap();
                offsets.push(next);
                next += gap;
            }
            let mut done = std::collections::BTreeSet::new();
            for pick in completions {
                let offset = offsets[pick.index(offsets.len())];
                tracker.complete(&tp, o(offset));
                done.insert(offset);
                let safe = tracker.safe_offset(&tp).unwrap().get();
                for offset in &offsets {
                    if *offset < safe {
                        prop_assert!(done.contains(offset), "safe {} passes unfinished {}", safe, offset);
                    }
                }
                prop_assert_eq!(tracker.in_flight(&tp), offsets.iter().filter(|o| !done.contains(o)).count());
                prop_assert_eq!(tracker.total_in_flight(), tracker.in_flight(&tp));
                prop_assert_eq!(tracker.pending(&tp), offsets.iter().filter(|o| **o >= safe).count());
                let first_unfinished = offsets.iter().find(|o| !done.contains(o));
                match first_unfinished {
                    Some(first) => prop_assert_eq!(safe, *first),
                    None => prop_assert_eq!(safe, offsets.last().unwrap() + 1),
                }
            }
            for offset in &offsets {
                tracker.complete(&tp, o(*offset));
            }
            prop_assert_eq!(tracker.safe_offset(&tp), Some(o(offsets.last().unwrap() + 1)));
            prop_assert_eq!(tracker.in_flight(&tp), 0);
            prop_assert_eq!(tracker.total_in_flight(), 0);
        }
    }
}
