//! The exporter's state as Prometheus series. Names follow what Kafka users already query
//! (`kafka_consumergroup_lag`, `kafka_partition_latest_offset`, ...), labels are `group`,
//! `topic` and `partition`; the README maps kafka-lag-exporter's and KMinion's names to these.
//!
//! A value that is not known (no commit, an unreadable end offset, no time-lag estimate yet) has
//! no sample at all: never a made-up number, never NaN.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_ops_core::Severity;
use kafka_ops_core::lag::burrow::PartitionStatus;
use kafka_ops_core::lag::verdict::GroupStatus;

use super::state::{ExporterState, GroupEntry, GroupView};
use super::text::{Exposition, Kind, Value};

const PARTITION_STATUSES: [PartitionStatus; 5] = [
    PartitionStatus::Ok,
    PartitionStatus::Warning,
    PartitionStatus::Stall,
    PartitionStatus::Stop,
    PartitionStatus::Rewind,
];

const GROUP_STATUSES: [(GroupStatus, &str); 3] = [
    (GroupStatus::Ok, "OK"),
    (GroupStatus::Warning, "WARN"),
    (GroupStatus::Error, "ERR"),
];

const SEVERITIES: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

/// Seconds to the microsecond: finer digits are noise in a scrape, and they make every sample
/// a long float.
fn seconds(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1e6
}

/// The groups that have a snapshot, in order.
fn views(state: &ExporterState) -> impl Iterator<Item = (&str, &GroupView)> {
    state
        .groups
        .iter()
        .filter_map(|(group, entry)| entry.view.as_ref().map(|view| (group.as_str(), view)))
}

/// One family with a sample per partition row of every group, for the rows `value` knows.
fn partition_family<V: Into<Value>>(
    out: &mut Exposition,
    state: &ExporterState,
    (name, help): (&str, &str),
    value: impl Fn(&GroupView, usize) -> Option<V>,
) {
    out.family(name, Kind::Gauge, help);
    for (group, view) in views(state) {
        for (i, row) in view.lag.partitions.iter().enumerate() {
            if let Some(v) = value(view, i) {
                let partition = row.partition.to_string();
                out.sample(
                    name,
                    &[
                        ("group", group),
                        ("topic", &row.topic),
                        ("partition", &partition),
                    ],
                    v,
                );
            }
        }
    }
}

/// One family with a sample per group, for the groups `value` knows.
fn group_family<V: Into<Value>>(
    out: &mut Exposition,
    state: &ExporterState,
    (name, help): (&str, &str),
    value: impl Fn(&GroupView) -> Option<V>,
) {
    out.family(name, Kind::Gauge, help);
    for (group, view) in views(state) {
        if let Some(v) = value(view) {
            out.sample(name, &[("group", group)], v);
        }
    }
}

impl ExporterState {
    /// Every series as of `now`, in the text exposition format (without the scrape's own
    /// duration, which [`Shared::scrape`](super::Shared::scrape) appends once the text is made).
    pub fn render(&self, now: Instant) -> String {
        let mut out = Exposition::default();
        self.render_partitions(&mut out);
        self.render_groups(&mut out);
        self.render_dead_letters(&mut out);
        self.render_self(&mut out, now);
        out.finish()
    }

    fn render_partitions(&self, out: &mut Exposition) {
        partition_family(
            out,
            self,
            (
                "kafka_consumergroup_current_offset",
                "The group's committed offset (the next record it will read).",
            ),
            |view, i| view.lag.partitions[i].committed.map(|o| o.get()),
        );
        partition_family(
            out,
            self,
            (
                "kafka_consumergroup_lag",
                "Offset lag: end offset minus committed offset (absent without a commit).",
            ),
            |view, i| view.lag.partitions[i].lag,
        );
        partition_family(
            out,
            self,
            (
                "kafka_consumergroup_lag_seconds",
                "Time lag: how long ago the end offset was where the group is now (0 when caught up).",
            ),
            |view, i| view.lag.partitions[i].time_lag.map(seconds),
        );
        let name = "kafka_consumergroup_partition_status";
        out.family(
            name,
            Kind::Gauge,
            "Burrow's partition status: 1 for the current one of OK, WARN, STALL, STOP, REWIND.",
        );
        for (group, view) in views(self) {
            for (row, evaluation) in view.lag.partitions.iter().zip(&view.evaluations) {
                if row.committed.is_none() {
                    continue;
                }
                let partition = row.partition.to_string();
                for status in PARTITION_STATUSES {
                    out.sample(
                        name,
                        &[
                            ("group", group),
                            ("topic", &row.topic),
                            ("partition", &partition),
                            ("status", status.as_str()),
                        ],
                        evaluation.status == status,
                    );
                }
            }
        }
        // End offsets belong to the partition, not the group: one series per partition any group
        // reads, from the newest snapshot that read it.
        let mut marks: BTreeMap<(Arc<str>, i32), (kafka_ops_core::Timestamp, i64, i64)> =
            BTreeMap::new();
        for (_, view) in views(self) {
            for row in &view.lag.partitions {
                if let (Some(low), Some(high)) = (row.log_start, row.end_offset) {
                    let entry = marks.entry((row.topic.clone(), row.partition)).or_insert((
                        view.lag.taken_at,
                        low.get(),
                        high.get(),
                    ));
                    if view.lag.taken_at > entry.0 {
                        *entry = (view.lag.taken_at, low.get(), high.get());
                    }
                }
            }
        }
        type Pick = fn(&(kafka_ops_core::Timestamp, i64, i64)) -> i64;
        let families: [(&str, &str, Pick); 2] = [
            (
                "kafka_partition_latest_offset",
                "The partition's end offset (high watermark; last stable offset with --read-committed).",
                |(_, _, high)| *high,
            ),
            (
                "kafka_partition_earliest_offset",
                "The partition's log-start offset.",
                |(_, low, _)| *low,
            ),
        ];
        for (name, help, pick) in families {
            out.family(name, Kind::Gauge, help);
            for ((topic, partition), marks) in &marks {
                let partition = partition.to_string();
                out.sample(
                    name,
                    &[("topic", topic), ("partition", &partition)],
                    pick(marks),
                );
            }
        }
    }

    fn render_groups(&self, out: &mut Exposition) {
        let name = "kafka_consumergroup_topic_lag";
        out.family(
            name,
            Kind::Gauge,
            "The group's offset lag on a topic, over the partitions whose lag is known.",
        );
        for (group, view) in views(self) {
            // A topic none of whose partitions' lag is known has no sample: never a made-up 0.
            for topic in view
                .lag
                .topics()
                .into_iter()
                .filter(|topic| topic.unknown_partitions < topic.partitions)
            {
                out.sample(
                    name,
                    &[("group", group), ("topic", &topic.topic)],
                    topic.total_lag,
                );
            }
        }
        group_family(
            out,
            self,
            (
                "kafka_consumergroup_total_lag",
                "The group's total offset lag over the partitions whose lag is known.",
            ),
            |view| {
                view.lag
                    .partitions
                    .iter()
                    .any(|row| row.lag.is_some())
                    .then_some(view.verdict.total_lag)
            },
        );
        group_family(
            out,
            self,
            (
                "kafka_consumergroup_max_lag",
                "The group's largest partition offset lag.",
            ),
            |view| view.lag.max_lag().and_then(|row| row.lag),
        );
        group_family(
            out,
            self,
            (
                "kafka_consumergroup_max_lag_seconds",
                "The group's largest partition time lag.",
            ),
            |view| view.lag.max_time_lag().map(seconds),
        );
        let name = "kafka_consumergroup_status";
        out.family(
            name,
            Kind::Gauge,
            "Burrow's group status (worst partition; STOP, STALL, REWIND are ERR): 1 for the current one.",
        );
        for (group, view) in views(self) {
            let Some(current) = view.verdict.status else {
                continue;
            };
            for (status, word) in GROUP_STATUSES {
                out.sample(
                    name,
                    &[("group", group), ("status", word)],
                    current == status,
                );
            }
        }
        let name = "kafka_consumergroup_severity";
        out.family(
            name,
            Kind::Gauge,
            "The runbook verdict (total lag and growth thresholds, Burrow, anomalies): 1 for the current one of ok, warning, critical.",
        );
        for (group, view) in views(self) {
            for severity in SEVERITIES {
                out.sample(
                    name,
                    &[("group", group), ("severity", severity.status_word())],
                    view.verdict.severity == severity,
                );
            }
        }
        type EntryValue = fn(&GroupEntry) -> Value;
        let entries: [(&str, Kind, &str, EntryValue); 2] = [
            (
                "kafka_ops_exporter_group_up",
                Kind::Gauge,
                "1 when the last poll read the group; 0 when it failed (its last values are still served).",
                |entry| entry.up.into(),
            ),
            (
                "kafka_ops_exporter_group_errors_total",
                Kind::Counter,
                "Reads of the group that failed while the other groups were read.",
                |entry| entry.errors.into(),
            ),
        ];
        for (name, kind, help, value) in entries {
            out.family(name, kind, help);
            for (group, entry) in &self.groups {
                out.sample(name, &[("group", group)], value(entry));
            }
        }
    }

    fn render_dead_letters(&self, out: &mut Exposition) {
        let name = "kafka_dead_letter_depth";
        out.family(
            name,
            Kind::Gauge,
            "Records waiting in the dead-letter topic (log start to end, over its partitions).",
        );
        for (topic, depth) in &self.dead_letters {
            if let Some(depth) = depth {
                out.sample(name, &[("topic", topic)], *depth);
            }
        }
    }

    fn render_self(&self, out: &mut Exposition, now: Instant) {
        out.single(
            "kafka_ops_exporter_up",
            Kind::Gauge,
            "1 when the last poll of the cluster succeeded (as /readyz).",
            self.is_ready(),
        );
        out.single(
            "kafka_ops_exporter_staleness_seconds",
            Kind::Gauge,
            "Seconds since the last successful poll (since the start before the first).",
            seconds(self.staleness(now)),
        );
        out.single(
            "kafka_ops_exporter_polls_total",
            Kind::Counter,
            "Polls of the cluster, successful or not.",
            self.polls,
        );
        let name = "kafka_ops_exporter_poll_errors_total";
        out.family(
            name,
            Kind::Counter,
            "Polls whose lag pass (stage lag) or dead-letter depths (stage dead_letter) failed.",
        );
        out.sample(name, &[("stage", "lag")], self.lag_errors);
        out.sample(name, &[("stage", "dead_letter")], self.dead_letter_errors);
        if let Some(duration) = self.last_poll_duration {
            out.single(
                "kafka_ops_exporter_poll_duration_seconds",
                Kind::Gauge,
                "How long the last poll took.",
                seconds(duration),
            );
        }
        out.single(
            "kafka_ops_exporter_groups",
            Kind::Gauge,
            "Groups the exporter tracks.",
            self.groups.len(),
        );
        let held = self.held();
        let name = "kafka_ops_exporter_history_entries";
        out.family(
            name,
            Kind::Gauge,
            "Lag history held (bounded per partition and group): partitions tracked, end-offset points, commits, total-lag samples.",
        );
        for (kind, value) in [
            ("partition", held.partitions),
            ("end_offset", held.end_offset_points),
            ("commit", held.commits),
            ("total_lag", held.totals),
        ] {
            out.sample(name, &[("kind", kind)], value);
        }
        out.single(
            "kafka_ops_exporter_scrapes_total",
            Kind::Counter,
            "Scrapes of /metrics served, this one included.",
            self.scrapes,
        );
    }
}

/// The last family of a scrape: how long rendering it took.
pub(crate) fn scrape_duration(duration: Duration) -> String {
    let mut out = Exposition::default();
    out.single(
        "kafka_ops_exporter_scrape_duration_seconds",
        Kind::Gauge,
        "How long this scrape took to render.",
        seconds(duration),
    );
    out.finish()
}
