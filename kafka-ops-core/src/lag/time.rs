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
//! where `l` is the last table point at or below `c` and `r` the first above it (so a consumer
//! at an offset the end sat on for a while is behind only since the end was last seen there).
//! Below the oldest point the slope of the two oldest distinct offsets is extended backwards from
//! the oldest point. A consumer at or beyond the newest end offset is caught up: its time lag is
//! exactly zero, however idle the topic is.
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
/// the offset was reached (interpolation below the run needs it), the last that it had not moved
/// since (a consumer at that offset is behind only from then on).
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

    /// Estimated time at which the end offset moved past `offset`, that is when the record at
    /// `offset` was produced: interpolated between the last point at or below `offset` and the
    /// first point above it. On a flat run that is the run's last point, the last time the end was
    /// seen still at `offset`. `None` when the table cannot say (empty, or `offset` lies below a
    /// table without any slope).
    ///
    /// At or beyond the newest end offset the end has not moved past `offset` yet; this then gives
    /// when the end reached its newest offset ([`time_lag`](Self::time_lag) is zero there).
    pub fn time_of(&self, offset: Offset) -> Option<Timestamp> {
        let c = offset.get();
        let points = &self.points;
        let newest = *points.back()?;
        if c >= newest.offset {
            let first = points.partition_point(|p| p.offset < newest.offset);
            return Some(Timestamp::from_millis(points[first].at));
        }
        // The newest point lies above `c`, so `right` exists. Taking the last point at or below
        // `c` as `left` (not the first point equal to it) is what makes a consumer that was
        // caught up on an idle partition fall behind by one sampling gap when the end moves on,
        // rather than by the whole idle time.
        let above = points.partition_point(|p| p.offset <= c);
        let right = points[above];
        if above == 0 {
            // Below the table: extend the slope of the two oldest distinct offsets backwards,
            // anchored at the oldest point (the end was already past `c` at that time).
            let oldest = points[0];
            let run_end = points.partition_point(|p| p.offset <= oldest.offset);
            let next = *points.get(run_end)?;
            let run_last = points[run_end - 1];
            let delta = interpolate(
                oldest.offset - c,
                next.at - run_last.at,
                next.offset - oldest.offset,
            );
            return Some(Timestamp::from_millis(oldest.at.saturating_sub(delta)));
        }
        let left = points[above - 1];
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
        // The end was still at 100 at 60 s, so a consumer there is behind since 60 s, not 0 s ...
        assert_eq!(h.time_of(o(100)), Some(t(60_000)));
        // ... and only started moving after 60 s: 125 was passed at 90 s, not 60 s.
        assert_eq!(h.time_of(o(125)), Some(t(90_000)));
    }

    #[test]
    fn a_consumer_at_a_flat_run_is_behind_since_the_run_ended() {
        // The end sat at 100 for an hour, then moved on. A consumer at 100 has read everything
        // produced up to the last sample that still showed 100: it is behind by one sampling gap,
        // not by the whole idle hour.
        let before = table(&[(100, 0), (100, 3_600_000)]);
        assert_eq!(before.time_lag(o(100), t(3_600_000)), Some(Duration::ZERO));
        let after = table(&[(100, 0), (100, 3_600_000), (101, 3_630_000)]);
        assert_eq!(after.time_of(o(100)), Some(t(3_600_000)));
        assert_eq!(
            after.time_lag(o(100), t(3_630_000)),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn a_flat_run_inside_the_table_splits_the_interpolation() {
        let h = table(&[
            (50, 0),
            (100, 1_000),
            (100, 3_000),
            (100, 5_000),
            (200, 6_000),
        ]);
        assert_eq!(h.len(), 4);
        // Below the run: the end passed 99 on its way up to 100 (reached at 1 s).
        assert_eq!(h.time_of(o(99)), Some(t(980)));
        // At the run: the end left 100 after its last sample there.
        assert_eq!(h.time_of(o(100)), Some(t(5_000)));
        // Above the run: the slope from the run's last point to the next one.
        assert_eq!(h.time_of(o(150)), Some(t(5_500)));
        assert_eq!(h.time_lag(o(100), t(6_000)), Some(Duration::from_secs(1)));
    }

    #[test]
    fn uncompressed_runs_read_like_compressed_ones() {
        let samples = [
            (50, 0),
            (100, 1_000),
            (100, 3_000),
            (100, 5_000),
            (200, 6_000),
        ];
        let compressed = table(&samples);
        let raw = raw_table(&samples);
        assert_eq!(raw.len(), 5);
        for c in 0..=210 {
            assert_eq!(raw.time_of(o(c)), compressed.time_of(o(c)), "offset {c}");
        }
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

    /// A table holding every sample as given: what `record` would keep without compressing runs.
    fn raw_table(points: &[(i64, i64)]) -> EndOffsetHistory {
        EndOffsetHistory {
            points: points
                .iter()
                .map(|&(offset, at)| Point { offset, at })
                .collect(),
            capacity: points.len().max(2),
        }
    }

    /// Sample sequences in which the end often stands still, so flat runs are common.
    fn samples() -> impl Strategy<Value = Vec<(i64, i64)>> {
        let step = prop_oneof![Just(0i64), Just(0i64), 1i64..5, 0i64..500];
        proptest::collection::vec((step, 0i64..10_000), 1..40).prop_map(|steps| {
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

        #[test]
        fn time_lag_is_monotone_at_any_time(
            points in samples(),
            capacity in 2usize..20,
            later in 0i64..100_000,
        ) {
            let mut h = EndOffsetHistory::new(capacity);
            for (offset, at) in &points {
                h.record(o(*offset), t(*at)).unwrap();
            }
            let now = t(points.last().unwrap().1 + later);
            let newest = points.last().unwrap().0;
            let mut previous: Option<Duration> = None;
            for c in 0..=newest + 1 {
                let lag = h.time_lag(o(c), now);
                if let (Some(before), Some(lag)) = (previous, lag) {
                    prop_assert!(lag <= before, "offset {}: {:?} after {:?}", c, lag, before);
                }
                prop_assert!(previous.is_none() || lag.is_some(), "offset {} lost its estimate", c);
                previous = lag;
            }
        }

        #[test]
        fn a_caught_up_consumer_falls_behind_by_at_most_one_sampling_gap(
            points in samples(),
            capacity in 2usize..20,
        ) {
            let mut h = EndOffsetHistory::new(capacity);
            let mut previous: Option<(i64, i64)> = None;
            for &(end, at) in &points {
                h.record(o(end), t(at)).unwrap();
                if let Some((end_before, at_before)) = previous {
                    // Every consumer that was caught up at the previous sample.
                    for c in end_before..=end + 1 {
                        let gap = Duration::from_millis((at - at_before).unsigned_abs());
                        let lag = h.time_lag(o(c), t(at));
                        prop_assert!(
                            lag.is_some_and(|lag| lag <= gap),
                            "consumer at {} caught up at {}: {:?} behind at {}, gap {:?}",
                            c, at_before, lag, at, gap
                        );
                    }
                }
                prop_assert_eq!(h.time_lag(o(end), t(at)), Some(Duration::ZERO));
                previous = Some((end, at));
            }
        }

        #[test]
        fn compressing_runs_changes_no_estimate(points in samples(), later in 0i64..100_000) {
            let compressed = table(&points);
            let raw = raw_table(&points);
            let now = t(points.last().unwrap().1 + later);
            for c in 0..=points.last().unwrap().0 + 1 {
                prop_assert_eq!(raw.time_of(o(c)), compressed.time_of(o(c)), "offset {}", c);
                prop_assert_eq!(raw.time_lag(o(c), now), compressed.time_lag(o(c), now));
            }
        }
    }
}
