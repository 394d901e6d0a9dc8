//! Value types shared by every kafka-ops crate: partitions, offsets, timestamps, watermarks.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A topic name and a partition number.
///
/// The topic is an `Arc<str>` so that the many copies a consumer keeps (tracker entries, lag rows,
/// in-flight records) share one allocation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicPartition {
    /// The topic name.
    pub topic: Arc<str>,
    /// The partition number (0-based).
    pub partition: i32,
}

impl TopicPartition {
    /// Creates a topic-partition.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Debug for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// A concrete position in a partition's log: always non-negative.
///
/// Kafka's wire format and librdkafka use negative sentinels (`-1001` "invalid/none", `-1`
/// "end", `-2` "beginning"). Those never appear inside an `Offset`: "no offset" is
/// `Option<Offset>::None`, and a raw value that is neither a position nor "none" is an
/// [`InvalidOffset`] (see [`Offset::from_raw`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(try_from = "i64", into = "i64")]
pub struct Offset(i64);

/// A raw offset that is neither a position nor "no offset" (`-1001`). Converts into
/// [`Error::InvalidOffset`](crate::Error::InvalidOffset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid offset {raw}: expected a non-negative position or -1001 (none)")]
pub struct InvalidOffset {
    raw: i64,
}

impl InvalidOffset {
    /// The raw value received.
    pub fn raw(&self) -> i64 {
        self.raw
    }
}

/// librdkafka's `RD_KAFKA_OFFSET_INVALID`: "no offset" (for example a partition a group never committed).
pub const RAW_OFFSET_NONE: i64 = -1001;

impl Offset {
    /// Offset zero.
    pub const ZERO: Offset = Offset(0);

    /// Creates an offset from a non-negative position.
    pub fn new(position: i64) -> Result<Self, InvalidOffset> {
        if position >= 0 {
            Ok(Offset(position))
        } else {
            Err(InvalidOffset { raw: position })
        }
    }

    /// Interprets a raw librdkafka offset: `>= 0` is a position, `-1001` is "no offset"
    /// (`Ok(None)`), anything else is invalid in this context.
    pub fn from_raw(raw: i64) -> Result<Option<Self>, InvalidOffset> {
        match raw {
            RAW_OFFSET_NONE => Ok(None),
            position if position >= 0 => Ok(Some(Offset(position))),
            other => Err(InvalidOffset { raw: other }),
        }
    }

    /// The position as an `i64`, as Kafka's APIs take it.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The offset after this one: the offset to commit once this record is done.
    pub const fn next(self) -> Offset {
        Offset(self.0.saturating_add(1))
    }

    /// `self - other`, or 0 when `other` is ahead.
    pub const fn saturating_distance(self, other: Offset) -> u64 {
        if self.0 > other.0 {
            (self.0 - other.0) as u64
        } else {
            0
        }
    }
}

impl TryFrom<i64> for Offset {
    type Error = InvalidOffset;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Offset::new(value)
    }
}

impl From<Offset> for i64 {
    fn from(value: Offset) -> Self {
        value.0
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A point in time as Kafka stores it: milliseconds since the Unix epoch.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// Creates a timestamp from milliseconds since the Unix epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Converts a `SystemTime`; times before the epoch clamp to the epoch.
    pub fn from_system_time(time: SystemTime) -> Self {
        let millis = time
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(millis)
    }

    /// Converts to a `SystemTime`; negative values clamp to the epoch.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(u64::try_from(self.0).unwrap_or(0))
    }

    /// `self - earlier` as a duration, or zero when `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// This timestamp moved forward by `by` (saturating).
    pub fn plus(self, by: Duration) -> Timestamp {
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_rfc3339_millis(self.to_system_time())
        )
    }
}

/// The range of offsets a partition currently holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermarks {
    /// The log-start offset: the oldest offset still readable (retention moves it forward).
    pub low: Offset,
    /// The end offset: the high watermark, or the last stable offset under `read_committed`.
    pub high: Offset,
}

impl Watermarks {
    /// Number of records between the two marks.
    pub fn depth(&self) -> u64 {
        self.high.saturating_distance(self.low)
    }
}

/// Which end offset a reader sees: the high watermark or the last stable offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationLevel {
    /// End = high watermark (includes records of open transactions).
    #[default]
    ReadUncommitted,
    /// End = last stable offset (LSO): what a `read_committed` consumer can reach.
    ReadCommitted,
}

/// What a list-offsets query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffsetSpec {
    /// The log-start offset.
    Earliest,
    /// The end offset (high watermark, or LSO under `read_committed`).
    Latest,
    /// The offset of the record with the largest timestamp.
    MaxTimestamp,
    /// The first offset whose timestamp is at or after the given time.
    AtTime(Timestamp),
}

/// The answer to a list-offsets query for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedOffset {
    /// The offset found; `None` when no record matches (for example a time after the last record).
    pub offset: Option<Offset>,
    /// The timestamp the broker reported with it, when it reports one.
    pub timestamp: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_offsets_map_to_explicit_states() {
        assert_eq!(Offset::from_raw(0).unwrap(), Some(Offset::ZERO));
        assert_eq!(Offset::from_raw(42).unwrap(), Some(Offset(42)));
        assert_eq!(Offset::from_raw(RAW_OFFSET_NONE).unwrap(), None);
        assert!(matches!(
            Offset::from_raw(-1),
            Err(InvalidOffset { raw: -1 })
        ));
        assert!(Offset::new(-5).is_err());
    }

    #[test]
    fn offset_arithmetic_saturates() {
        assert_eq!(Offset(7).next(), Offset(8));
        assert_eq!(Offset(i64::MAX).next(), Offset(i64::MAX));
        assert_eq!(Offset(10).saturating_distance(Offset(4)), 6);
        assert_eq!(Offset(4).saturating_distance(Offset(10)), 0);
    }

    #[test]
    fn offset_serde_rejects_negative() {
        assert_eq!(serde_json::to_string(&Offset(5)).unwrap(), "5");
        assert!(serde_json::from_str::<Offset>("-1").is_err());
    }

    #[test]
    fn timestamps_round_trip_and_clamp() {
        let t = Timestamp::from_millis(1_700_000_000_123);
        assert_eq!(Timestamp::from_system_time(t.to_system_time()), t);
        assert_eq!(Timestamp::from_millis(-5).to_system_time(), UNIX_EPOCH);
        assert_eq!(
            Timestamp::from_millis(5_000).saturating_since(Timestamp::from_millis(2_000)),
            Duration::from_secs(3)
        );
        assert_eq!(
            Timestamp::from_millis(1).saturating_since(Timestamp::from_millis(2)),
            Duration::ZERO
        );
        assert_eq!(t.to_string(), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn topic_partition_displays_compactly() {
        let tp = TopicPartition::new("orders", 3);
        assert_eq!(tp.to_string(), "orders/3");
        assert_eq!(format!("{tp:?}"), "orders/3");
    }
}
