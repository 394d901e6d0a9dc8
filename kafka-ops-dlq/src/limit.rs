//! The dead-letter limit: how much of a partition may go to the dead-letter topic before the
//! consumer stops instead.
//!
//! A consumer whose every record fails is not handling errors, it is emptying its topic into
//! the dead-letter topic (a bad deploy, a changed schema, a downstream that rejects
//! everything). Like Sentry Arroyo's DLQ limit, a [`DeadLetterLimit`] bounds, per partition,
//! the share of dead letters among the records finished over a sliding window and the number
//! of dead letters in a row; the [`DeadLetterLimiter`] keeps the counts and answers, on an
//! injected [`Clock`], whether one more dead letter stays within them.
//!
//! Partitions are the ones records are read from: a record handed to a retry tier counts as
//! finished on its source partition, and the tier topic's partitions, where exhausted retries
//! end as dead letters, are limited on their own. Records that do not finish (held for
//! redelivery, a failed dead-letter write) are not counted.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use foldhash::HashMap;
use kafka_ops_core::{Clock, Offset};
use serde::{Deserialize, Serialize};

use crate::error::DlqError;

/// The window is counted in this many buckets, so it slides in steps of a tenth of itself and
/// a partition's counts take a fixed, small amount of memory whatever its throughput.
const BUCKETS: u64 = 10;

/// How much of a partition may be dead-lettered.
///
/// ```
/// use std::time::Duration;
/// use kafka_ops_dlq::limit::DeadLetterLimit;
///
/// // At most half of the last minute's records, at most 100 in a row.
/// let limit = DeadLetterLimit::ratio(0.5, Duration::from_secs(60)).consecutive(100);
/// assert_eq!(limit.max_consecutive, Some(100));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeadLetterLimit {
    /// Dead letters over records finished in the window, at most (above 0, at most 1);
    /// `None`: no ratio limit.
    pub max_ratio: Option<f64>,
    /// The span the ratio is taken over; it slides in tenths of itself.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// The ratio is judged only once the window holds this many records, the one about to be
    /// dead-lettered included, so that the first failure of a quiet partition is not a 100 %
    /// ratio.
    pub min_records: u32,
    /// Dead letters in a row, at most (at least 1); `None`: no limit.
    pub max_consecutive: Option<u32>,
}

impl Default for DeadLetterLimit {
    /// No limit: a layer without one routes whatever it is given.
    fn default() -> Self {
        DeadLetterLimit {
            max_ratio: None,
            window: Duration::from_secs(60),
            min_records: 100,
            max_consecutive: None,
        }
    }
}

impl DeadLetterLimit {
    /// At most `max_ratio` of the records finished over `window` dead-lettered.
    pub fn ratio(max_ratio: f64, window: Duration) -> Self {
        DeadLetterLimit {
            max_ratio: Some(max_ratio),
            window,
            ..DeadLetterLimit::default()
        }
    }

    /// At most `max` dead letters in a row.
    pub fn consecutive(mut self, max: u32) -> Self {
        self.max_consecutive = Some(max);
        self
    }

    /// The ratio is judged from `records` records in the window on.
    pub fn min_records(mut self, records: u32) -> Self {
        self.min_records = records;
        self
    }

    fn validate(&self) -> Result<(), DlqError> {
        if let Some(ratio) = self.max_ratio
            && !(ratio > 0.0 && ratio <= 1.0)
        {
            return Err(DlqError::Config(format!(
                "the dead-letter ratio limit must be above 0 and at most 1, not {ratio}"
            )));
        }
        if self.window.is_zero() {
            return Err(DlqError::Config(
                "the dead-letter limit's window must be positive".into(),
            ));
        }
        if self.max_consecutive == Some(0) {
            return Err(DlqError::Config(
                "at most 0 consecutive dead letters would dead-letter nothing: use at least 1"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Which limit one more dead letter would break.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum LimitBreach {
    /// It would be dead letter number `max + 1` in a row.
    Consecutive {
        /// The limit.
        max: u32,
    },
    /// It would make `dead_lettered` of `records` finished in the window dead letters.
    Ratio {
        /// Dead letters in the window, this one included.
        dead_lettered: u64,
        /// Records finished in the window, this one included.
        records: u64,
        /// The limit.
        max_ratio: f64,
        /// The window.
        window: Duration,
    },
    /// An earlier record of the partition was refused: nothing after it is dead-lettered
    /// until that record is handled again, or a record at or after it finishes without a dead
    /// letter (the group was moved past it).
    AfterRefusal {
        /// The refused record's offset.
        refused: Offset,
    },
}

impl fmt::Display for LimitBreach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitBreach::Consecutive { max } => {
                write!(f, "more than {max} consecutive dead letters")
            }
            LimitBreach::Ratio {
                dead_lettered,
                records,
                max_ratio,
                window,
            } => write!(
                f,
                "{dead_lettered} dead letters among {records} records in {}, above the ratio {max_ratio}",
                humantime::format_duration(*window)
            ),
            LimitBreach::AfterRefusal { refused } => {
                write!(f, "the record at offset {refused} was refused before it")
            }
        }
    }
}

/// A partition's counts in the window and its current run of dead letters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitCounts {
    /// Records finished in the window (dead letters included).
    pub records: u64,
    /// Dead letters in the window.
    pub dead_lettered: u64,
    /// Dead letters since the last record that finished otherwise.
    pub consecutive: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    index: u64,
    records: u64,
    dead_lettered: u64,
}

#[derive(Debug, Default)]
struct PartitionState {
    buckets: VecDeque<Bucket>,
    consecutive: u32,
    refused: Option<Offset>,
}

impl PartitionState {
    /// Drops buckets that left the window ending in bucket `now`.
    fn slide(&mut self, now: u64) {
        while self
            .buckets
            .front()
            .is_some_and(|b| b.index + BUCKETS <= now)
        {
            self.buckets.pop_front();
        }
    }

    fn totals(&self) -> (u64, u64) {
        self.buckets.iter().fold((0, 0), |(records, dead), b| {
            (records + b.records, dead + b.dead_lettered)
        })
    }

    fn count(&mut self, now: u64, dead: bool) {
        self.slide(now);
        let dead = u64::from(dead);
        match self.buckets.back_mut() {
            Some(bucket) if bucket.index == now => {
                bucket.records += 1;
                bucket.dead_lettered += dead;
            }
            _ => self.buckets.push_back(Bucket {
                index: now,
                records: 1,
                dead_lettered: dead,
            }),
        }
    }
}

/// Keeps each partition's counts against a [`DeadLetterLimit`]. Pure: time comes from the
/// clock it is given. Shared by every record the layer handles (it locks briefly per record).
///
/// The layer asks [`check`](Self::check) before it writes a dead letter and counts it with
/// [`record_dead_lettered`](Self::record_dead_lettered) only once the write was acknowledged,
/// so a failed write that brings the record back is not counted twice. With per-partition
/// ordering (the driver's default) the check and the count of a partition never interleave,
/// and the limit is exact; with unordered handling records of one partition running together
/// may each pass the check before either is counted.
pub struct DeadLetterLimiter {
    limit: DeadLetterLimit,
    clock: Arc<dyn Clock>,
    started: Instant,
    bucket: Duration,
    partitions: Mutex<HashMap<String, HashMap<i32, PartitionState>>>,
}

impl fmt::Debug for DeadLetterLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterLimiter")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl DeadLetterLimiter {
    /// A limiter timed by `clock`; an invalid limit is refused.
    pub fn new(limit: DeadLetterLimit, clock: Arc<dyn Clock>) -> Result<Self, DlqError> {
        limit.validate()?;
        let bucket = (limit.window / BUCKETS as u32).max(Duration::from_nanos(1));
        Ok(DeadLetterLimiter {
            started: clock.now(),
            limit,
            clock,
            bucket,
            partitions: Mutex::new(HashMap::default()),
        })
    }

    /// The limit applied.
    pub fn limit(&self) -> &DeadLetterLimit {
        &self.limit
    }

    fn bucket_now(&self) -> u64 {
        let elapsed = self.clock.now().saturating_duration_since(self.started);
        u64::try_from(elapsed.as_nanos() / self.bucket.as_nanos()).unwrap_or(u64::MAX)
    }

    fn with_partition<T>(
        &self,
        topic: &str,
        partition: i32,
        f: impl FnOnce(&mut PartitionState, u64) -> T,
    ) -> T {
        let now = self.bucket_now();
        let mut topics = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(partitions) = topics.get_mut(topic) {
            return f(partitions.entry(partition).or_default(), now);
        }
        // The topic's name is allocated once, when its first record is counted.
        let partitions = topics.entry(topic.to_string()).or_default();
        f(partitions.entry(partition).or_default(), now)
    }

    /// Whether the record at `offset` of `topic`/`partition` may be dead-lettered now. Counts
    /// nothing; a refusal is remembered, so records after it in the partition are refused too
    /// until the refused record comes back (the consumer restarted at it) or a record at or
    /// after it finishes (see [`record_finished`](Self::record_finished)).
    pub fn check(&self, topic: &str, partition: i32, offset: Offset) -> Result<(), LimitBreach> {
        let limit = self.limit;
        self.with_partition(topic, partition, |state, now| {
            match state.refused {
                Some(refused) if offset > refused => {
                    return Err(LimitBreach::AfterRefusal { refused });
                }
                Some(refused) if offset == refused => state.refused = None,
                _ => {}
            }
            state.slide(now);
            let breach = if let Some(max) = limit.max_consecutive
                && state.consecutive >= max
            {
                Some(LimitBreach::Consecutive { max })
            } else {
                let (records, dead) = state.totals();
                let (records, dead_lettered) = (records + 1, dead + 1);
                limit.max_ratio.and_then(|max_ratio| {
                    let over = records >= u64::from(limit.min_records)
                        && dead_lettered as f64 > max_ratio * records as f64;
                    over.then_some(LimitBreach::Ratio {
                        dead_lettered,
                        records,
                        max_ratio,
                        window: limit.window,
                    })
                })
            };
            match breach {
                Some(breach) => {
                    state.refused = Some(offset);
                    Err(breach)
                }
                None => Ok(()),
            }
        })
    }

    /// Counts a dead letter written for `topic`/`partition`.
    pub fn record_dead_lettered(&self, topic: &str, partition: i32) {
        self.with_partition(topic, partition, |state, now| {
            state.count(now, true);
            state.consecutive = state.consecutive.saturating_add(1);
        });
    }

    /// Counts the record at `offset` of `topic`/`partition`, finished without a dead letter: it
    /// ends the run of dead letters, and when it is the refused record or one after it, the
    /// refusal.
    ///
    /// A record after the refused one finishing means the partition moved on without it: the
    /// group was moved past it (a poison skip, an offset reset) and the consumer restarted with
    /// this limiter. The refused record will not come back to end the refusal, which would
    /// otherwise refuse every later dead letter of the partition for as long as the process
    /// runs; the records that follow are judged by the limits again, from a run of none.
    pub fn record_finished(&self, topic: &str, partition: i32, offset: Offset) {
        self.with_partition(topic, partition, |state, now| {
            state.count(now, false);
            state.consecutive = 0;
            if state.refused.is_some_and(|refused| offset >= refused) {
                state.refused = None;
            }
        });
    }

    /// The partition's counts now.
    pub fn counts(&self, topic: &str, partition: i32) -> LimitCounts {
        self.with_partition(topic, partition, |state, now| {
            state.slide(now);
            let (records, dead_lettered) = state.totals();
            LimitCounts {
                records,
                dead_lettered,
                consecutive: state.consecutive,
            }
        })
    }
}

#[cfg(test)]
mod tests;
