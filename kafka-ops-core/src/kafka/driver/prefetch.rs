//! How much librdkafka has fetched ahead of the handlers, read from its statistics: the figure
//! that shows whether the per-partition prefetch bound holds, and what a consumer's memory
//! beyond its handlers is made of.

use rdkafka::statistics::Statistics;
use serde::{Deserialize, Serialize};

use crate::types::TopicPartition;

/// Records librdkafka has fetched from the brokers and the driver has not taken yet, summed over
/// the partitions' fetch queues of its latest statistics (`fetchq_cnt`, `fetchq_size`).
///
/// Present in [`DriverStats::prefetched`](super::DriverStats::prefetched) once librdkafka
/// reported statistics, which it does every `statistics.interval.ms` of the consumer
/// configuration (off by default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prefetched {
    /// Messages waiting in the fetch queues.
    pub messages: u64,
    /// Their size in bytes.
    pub bytes: u64,
    /// The partition with the most bytes waiting (the first in order among equals), and how
    /// many (none when all are empty).
    pub largest: Option<(TopicPartition, u64)>,
}

impl Prefetched {
    /// Sums fetch queues given as `(topic, partition, messages, bytes)`. librdkafka's internal
    /// "unassigned" partition (-1) holds no fetched records and is left out; a negative count
    /// counts as zero.
    pub(crate) fn sum<'a>(queues: impl IntoIterator<Item = (&'a str, i32, i64, u64)>) -> Self {
        let mut total = Prefetched::default();
        for (topic, partition, messages, bytes) in queues {
            if partition < 0 {
                continue;
            }
            total.messages += u64::try_from(messages).unwrap_or(0);
            total.bytes += bytes;
            // Ties go to the first partition in order: librdkafka's document lists partitions
            // in no fixed order, and the figure must not flap between equal ones.
            let fuller = |(held, most): &(TopicPartition, u64)| {
                bytes > *most
                    || (bytes == *most
                        && (topic, partition) < (held.topic.as_ref(), held.partition))
            };
            if bytes > 0 && total.largest.as_ref().is_none_or(fuller) {
                total.largest = Some((TopicPartition::new(topic, partition), bytes));
            }
        }
        total
    }

    /// The prefetch librdkafka's `statistics` report.
    pub(crate) fn of(statistics: &Statistics) -> Self {
        Self::sum(statistics.topics.iter().flat_map(|(name, topic)| {
            topic.partitions.values().map(move |partition| {
                (
                    name.as_str(),
                    partition.partition,
                    partition.fetchq_cnt,
                    partition.fetchq_size,
                )
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sums_every_assigned_partition_and_names_the_fullest() {
        let prefetched = Prefetched::sum([
            ("orders", 0, 10, 1_000),
            ("orders", 1, 30, 3_000),
            ("payments", 0, 20, 2_000),
            // librdkafka's internal partition for messages without one.
            ("orders", -1, 5, 500),
        ]);
        assert_eq!(
            prefetched,
            Prefetched {
                messages: 60,
                bytes: 6_000,
                largest: Some((TopicPartition::new("orders", 1), 3_000)),
            }
        );
    }

    #[test]
    fn nothing_fetched_has_no_largest_partition() {
        assert_eq!(
            Prefetched::sum([("orders", 0, 0, 0), ("orders", 1, -1, 0)]),
            Prefetched::default()
        );
        assert_eq!(Prefetched::sum([]), Prefetched::default());
    }

    #[test]
    fn reads_the_fetch_queues_of_librdkafkas_statistics() {
        use rdkafka::statistics::{Partition, Topic};
        let partition = |id: i32, fetchq_cnt: i64, fetchq_size: u64| {
            (
                id,
                Partition {
                    partition: id,
                    fetchq_cnt,
                    fetchq_size,
                    ..Partition::default()
                },
            )
        };
        let topic = Topic {
            topic: "orders".into(),
            partitions: [
                partition(0, 4, 4_096),
                partition(1, 7, 9_000),
                partition(-1, 3, 0),
            ]
            .into_iter()
            .collect(),
            ..Topic::default()
        };
        let statistics = Statistics {
            topics: [("orders".to_string(), topic)].into_iter().collect(),
            ..Statistics::default()
        };
        assert_eq!(
            Prefetched::of(&statistics),
            Prefetched {
                messages: 11,
                bytes: 13_096,
                largest: Some((TopicPartition::new("orders", 1), 9_000)),
            }
        );
    }

    #[test]
    fn equal_partitions_name_the_first_in_order_whatever_the_documents_order() {
        let queues = [
            ("b", 0, 1, 100),
            ("a", 2, 1, 100),
            ("a", 1, 1, 100),
            ("a", 3, 1, 50),
        ];
        let first = Some((TopicPartition::new("a", 1), 100));
        assert_eq!(Prefetched::sum(queues).largest, first);
        assert_eq!(Prefetched::sum(queues.into_iter().rev()).largest, first);
    }

    proptest! {
        #[test]
        fn totals_are_the_sums_and_the_largest_is_a_maximum_in_any_order(
            queues in proptest::collection::vec((-1i32..8, 0i64..1_000, 0u64..4), 0..40),
            rotation in 0usize..40,
        ) {
            let named: Vec<(&str, i32, i64, u64)> =
                queues.iter().map(|&(p, m, b)| ("t", p, m, b)).collect();
            let prefetched = Prefetched::sum(named.iter().copied());
            let mut rotated = named.clone();
            if !rotated.is_empty() {
                let by = rotation % rotated.len();
                rotated.rotate_left(by);
            }
            prop_assert_eq!(&Prefetched::sum(rotated), &prefetched);
            let assigned = || queues.iter().filter(|(p, _, _)| *p >= 0);
            prop_assert_eq!(prefetched.bytes, assigned().map(|(_, _, b)| b).sum::<u64>());
            prop_assert_eq!(
                prefetched.messages,
                assigned().map(|(_, m, _)| u64::try_from(*m).unwrap()).sum::<u64>()
            );
            let most = assigned().map(|(_, _, b)| *b).max().filter(|b| *b > 0);
            prop_assert_eq!(prefetched.largest.map(|(_, b)| b), most);
        }
    }
}
