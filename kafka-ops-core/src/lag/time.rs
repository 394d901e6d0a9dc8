//! Time lag: how long ago the producer was where the consumer is now.
//!
//! Offset lag says "5 000 records behind"; whether that is one second or one hour depends on the
//! produce rate. [`EndOffsetHistory`] keeps a bounded table of `(end offset, sample time)` points
//! for one partition and estimates the time at which the end offset passed any offset `c`:
//!
//! ```text
//! t(c) = t_r − (o_r − c) · (t_r − t_l) / (o_r − o_l)
//! ```
//!
//! where `l` and `r` are the table points around `c`. Below the oldest point the slope of the two
//! oldest distinct offsets is extended backwards from the oldest point. A consumer at or beyond
//! the newest end offset is caught up: its time lag is exactly zero, however idle the topic is.
//! All arithmetic is integer milliseconds, so there is no NaN and no rounding drift.
//!
//! ```
//! use std::time::Duration;
//! use kafka_ops_core::lag::time::EndOffsetHistory;
//! use kafka_ops_core::{Offset, Timestamp};
//!
//! let mut table = EndOffsetHistory::new(60);
//! table.record(Offset::new(1_000).unwrap(), Timestamp::from_millis(0)).unwrap();
//! table.record(Offset::new(2_000).unwrap(), Timestamp::from_millis(10_000)).unwrap();
//! // The end passed offset 1 500 at t = 5 s; at t = 10 s the consumer there is 5 s behind.
//! let behind = table.time_lag(Offset::new(1_500).unwrap(), Timestamp::from_millis(10_000));
//! assert_eq!(behind, Some(Duration::from_secs(5)));
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use crate::error::Error;
use crate::types::{Offset, Timestamp};

/// Default number of points kept per partition.
pub const DEFAULT_CAPACITY: usize = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Point {
    offset: i64,
    at: i64,
}

/// A bounded, ordered table of end-offset samples for one partition.
///
/// Points must arrive in time order with non-decreasing offsets; anything else is rejected with
/// [`Error::InvalidInput`] (an end offset going backwards means the topic was recreated or
/// truncated, and the old table no longer describes it). A flat run (the same end offset sampled
/// many times on an idle partition) is kept as its first and last point only: the first says when
/// the offset was reached, the last that it had not moved since.
#[derive(Debug, Clone)]
pub struct EndOffsetHistory {
    points: VecDeque<Point>,
    capacity: usize,
}

impl Default for EndOffsetHistory {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl EndOffsetHistory {
    /// An empty table keeping at most `capacity` points (at least 2).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(2);
        EndOffsetHistory {
            points: VecDeque::new(),
            capacity,
        }
    }

    /// Number of points held.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether no sample was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The newest end offset and when it was sampled.
    pub fn latest(&self) -> Option<(Offset, Timestamp)> {
        self.points.back().map(|p| {
            (
                Offset::new(p.offset).unwrap_or_default(),
                Timestamp::from_millis(p.at),
            )
        })
    }

    /// The end offsets held, oldest first (for Burrow's "was it caught up recently" check).
    pub fn end_offsets(&self) -> impl Iterator<Item = Offset> + '_ {
        self.points
            .iter()
            .filter_map(|p| Offset::new(p.offset).ok())
    }

    /// The newest `n` end offsets held, oldest first.
    pub fn recent_end_offsets(&self, n: usize) -> impl Iterator<Item = Offset> + '_ {
        self.points
            .iter()
            .skip(self.points.len().saturating_sub(n))
            .filter_map(|p| Offset::new(p.offset).ok())
    }

    /// Adds a sample. Rejects samples older than the newest one, and end offsets that go backwards.
    pub fn record(&mut self, end: Offset, at: Timestamp) -> Result<(), Error> {
        let point = Point {
            offset: end.get(),
            at: at.as_millis(),
        };
        if let Some(last) = self.points.back().copied() {
            if point.at < last.at {
                return Err(Error::InvalidInput(format!(
                    "end-offset sample at {at} is older than the newest sample at {}",
                    Timestamp::from_millis(last.at)
                )));
            }
            if point.offset < last.offset {
                return Err(Error::InvalidInput(format!(
                    "end offset went backwards from {} to {end} (topic recreated or truncated?)",
                    last.offset
                )));
            }
            if point == last {
                return Ok(());
            }
            let len = self.points.len();
            let run_has_two = len >= 2 && self.points[len - 2].offset == last.offset;
            if point.offset == last.offset && run_has_two {
                // Extend the flat run: only its first and last points matter.
                if let Some(back) = self.points.back_mut() {
                    back.at = point.at;
                }
                return Ok(());
            }
        }
        self.points.push_back(point);
        while self.points.len() > self.capacity {
            self.points.pop_front();
        }
        Ok(())
    }

    /// Estimated time at which the end offset reached `offset`; `None` when the table cannot say
    /// (empty, or `offset` lies below a table without any slope).
    pub fn time_of(&self, offset: Offset) -> Option<Timestamp> {
        let c = offset.get();
        let points = &self.points;
        let newest = *points.back()?;
        if c >= newest.offset {
            // The first point of the newest run: when the end got there.
            let first = points.partition_point(|p| p.offset < newest.offset);
            return Some(Timestamp::from_millis(points[first].at));
        }
        let first_at_or_above = points.partition_point(|p| p.offset < c);
        let candidate = points[first_at_or_above];
        if candidate.offset == c {
            return Some(Timestamp::from_millis(candidate.at));
        }
        if first_at_or_above == 0 {
            // Below the table: extend the slope of the two oldest distinct offsets backwards,
            // anchored at the oldest point (the end was already there at that time).
            let oldest = points[0];
            let run_end = points.partition_point(|p| p.offset <= oldest.offset);
            let next = *points.get(run_end)?;
            let run_last = points[run_end - 1];
            let delta = interpolate(
                oldest.offset - c,
                next.at - run_last.at,
                next.offset - oldest.offset,
            );
            return Some(Timestamp::from_millis(oldest.at - delta));
        }
        let right = candidate;
        let left = points[first_at_or_above - 1];
        let delta = interpolate(
            right.offset - c,
            right.at - left.at,
            right.offset - left.offset,
        );
        Some(Timestamp::from_millis(right.at - delta))
    }

    /// How far behind in time a consumer at `committed` is, as of `now`.
    ///
    /// Zero when caught up (at or beyond the newest end offset); `None` when the table cannot
    /// estimate it.
    pub fn time_lag(&self, committed: Offset, now: Timestamp) -> Option<Duration> {
        let newest = self.points.back()?;
        if committed.get() >= newest.offset {
            return Some(Duration::ZERO);
        }
        self.time_of(committed).map(|t| now.saturating_since(t))
    }
}

/// `distance · span / width` in exact integer arithmetic (`width > 0`, all inputs non-negative).
fn interpolate(distance: i64, span: i64, width: i64) -> i64 {
    let value = i128::from(distance) * i128::from(span) / i128::from(width.max(1));
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn o(v: i64) -> Offset {
        Offset::new(v).unwrap()
    }
    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }
    fn table(points: &[(i64, i64)]) -> EndOffsetHistory {
        let mut h = EndOffsetHistory::new(60);
        for (offset, at) in points {
            h.record(o(*offset), t(*at)).unwrap();
        }
        h
    }

    #[test]
    fn interpolates_between_points_exactly() {
        let h = table(&[(100, 1_000), (200, 2_000), (400, 4_000)]);
        assert_eq!(h.time_of(o(150)), Some(t(1_500)));
        assert_eq!(h.time_of(o(300)), Some(t(3_000)));
        assert_eq!(h.time_of(o(200)), Some(t(2_000)));
        assert_eq!(h.time_lag(o(300), t(4_000)), Some(Duration::from_secs(1)));
    }

    #[test]
    fn extrapolates_below_the_oldest_point() {
        let h = table(&[(100, 1_000), (200, 2_000)]);
        // 10 ms per record, anchored at (100, 1 000).
        assert_eq!(h.time_of(o(50)), Some(t(500)));
        assert_eq!(
            h.time_lag(o(50), t(2_000)),
            Some(Duration::from_millis(1_500))
        );
    }

    #[test]
    fn caught_up_and_idle_partitions_are_zero() {
        let h = table(&[(100, 1_000), (100, 50_000), (100, 900_000)]);
        assert_eq!(h.time_lag(o(100), t(900_000)), Some(Duration::ZERO));
        assert_eq!(h.time_lag(o(150), t(900_000)), Some(Duration::ZERO));
        // Behind on an idle table with no slope: unknown, not NaN, not a guess.
        assert_eq!(h.time_lag(o(90), t(900_000)), None);
    }

    #[test]
    fn flat_runs_keep_first_and_last_point() {
        let h = table(&[
            (100, 0),
            (100, 10),
            (100, 20),
            (100, 60_000),
            (150, 120_000),
        ]);
        assert_eq!(h.len(), 3);
        // The end reached 100 at t = 0 ...
        assert_eq!(h.time_of(o(100)), Some(t(0)));
        // ... and only started moving after 60 s: 125 was passed at 90 s, not 60 s.
        assert_eq!(h.time_of(o(125)), Some(t(90_000)));
    }

    #[test]
    fn out_of_order_samples_are_rejected() {
        let mut h = table(&[(100, 1_000)]);
        assert!(matches!(
            h.record(o(150), t(999)),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            h.record(o(99), t(2_000)),
            Err(Error::InvalidInput(_))
        ));
        // The table is unchanged by a rejected sample.
        assert_eq!(h.len(), 1);
        // Same time, higher offset is accepted (two reads in one millisecond).
        h.record(o(120), t(1_000)).unwrap();
        assert_eq!(h.time_of(o(110)), Some(t(1_000)));
    }

    #[test]
    fn table_is_bounded() {
        let mut h = EndOffsetHistory::new(3);
        for i in 0..10 {
            h.record(o(i * 10), t(i * 1_000)).unwrap();
        }
        assert_eq!(h.len(), 3);
        assert_eq!(h.latest(), Some((o(90), t(9_000))));
        assert_eq!(
            h.end_offsets().collect::<Vec<_>>(),
            vec![o(70), o(80), o(90)]
        );
    }

    #[test]
    fn empty_table_knows_nothing() {
        let h = EndOffsetHistory::default();
        assert!(h.is_empty());
        assert_eq!(h.time_lag(o(0), t(0)), None);
        assert_eq!(h.time_of(o(0)), None);
    }

    fn samples() -> impl Strategy<Value = Vec<(i64, i64)>> {
        proptest::collection::vec((0i64..500, 0i64..10_000), 1..40).prop_map(|steps| {
            let (mut offset, mut at) = (0i64, 0i64);
            steps
                .into_iter()
                .map(|(d_offset, d_at)| {
                    offset += d_offset;
                    at += d_at;
                    (offset, at)
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn time_lag_is_monotone_in_the_committed_offset(
            points in samples(),
            capacity in 2usize..20,
            a in 0i64..20_000,
            b in 0i64..20_000,
        ) {
            let mut h = EndOffsetHistory::new(capacity);
            for (offset, at) in &points {
                h.record(o(*offset), t(*at)).unwrap();
            }
            let now = t(points.last().unwrap().1);
            let (lo, hi) = (a.min(b), a.max(b));
            match (h.time_lag(o(lo), now), h.time_lag(o(hi), now)) {
                (Some(lag_lo), Some(lag_hi)) => prop_assert!(lag_lo >= lag_hi),
                (None, Some(_)) | (None, None) => {}
                (Some(_), None) => prop_assert!(false, "a lower offset had an estimate, a higher one none"),
            }
            // Estimated times never exceed the newest sample.
            if let Some(at) = h.time_of(o(lo)) {
                prop_assert!(at <= now);
            }
            prop_assert!(h.len() <= capacity);
        }
    }
}
