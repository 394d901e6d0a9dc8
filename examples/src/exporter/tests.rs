//! The exporter's state and series, exactly, on a manual clock.

use std::time::Duration;

use kafka_ops_core::lag::burrow::BurrowConfig;
use kafka_ops_core::lag::monitor::{HeldHistory, LagMonitorConfig};
use kafka_ops_core::lag::{GroupLag, PartitionLag};
use kafka_ops_core::{Clock, Error, ManualClock, Offset, TopicPartition, Watermarks};

use super::{ExporterState, PollReport};

/// A partition row: topic, partition, committed offset, log start, end.
type Row<'a> = (&'a str, i32, Option<i64>, i64, i64);

fn lag(group: &str, clock: &ManualClock, rows: &[Row<'_>]) -> GroupLag {
    let rows = rows
        .iter()
        .map(|(topic, partition, committed, low, high)| {
            PartitionLag::compute(
                &TopicPartition::new(*topic, *partition),
                committed.map(|c| Offset::new(c).unwrap()),
                Some(Watermarks {
                    low: Offset::new(*low).unwrap(),
                    high: Offset::new(*high).unwrap(),
                }),
            )
        })
        .collect();
    GroupLag::new(group, clock.wall(), rows)
}

fn report(groups: Vec<(&str, Result<GroupLag, Error>)>, dlq: &[(&str, Option<u64>)]) -> PollReport {
    PollReport {
        groups: groups
            .into_iter()
            .map(|(g, lag)| (g.to_string(), lag))
            .collect(),
        dead_letters: Ok(dlq.iter().map(|(t, d)| (t.to_string(), *d)).collect()),
    }
}

fn unreachable() -> Error {
    Error::Timeout {
        operation: "list groups",
        timeout: Duration::from_secs(1),
    }
}

/// Records a poll that took `took`, ending now.
fn record(
    state: &mut ExporterState,
    clock: &ManualClock,
    took: Duration,
    poll: Result<PollReport, Error>,
) {
    let finished = clock.now();
    state.record_poll(poll, finished - took, finished);
}

/// The samples of `name` (its `# HELP`/`# TYPE` lines left out).
fn samples(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn one_group_renders_exactly() {
    let clock = ManualClock::new();
    let mut state = ExporterState::new(LagMonitorConfig::default(), clock.now()).unwrap();
    // orders/0 is read, 20 behind; orders/1 was never committed.
    let first = lag(
        "billing",
        &clock,
        &[("orders", 0, Some(10), 0, 30), ("orders", 1, None, 0, 5)],
    );
    record(
        &mut state,
        &clock,
        Duration::from_millis(250),
        Ok(report(vec![("billing", Ok(first))], &[])),
    );
    clock.advance(Duration::from_secs(10));
    // Ten seconds later the end moved 30 → 50 and the group reached 30: the end passed 30 ten
    // seconds ago, so it is 10 s behind.
    let second = lag(
        "billing",
        &clock,
        &[("orders", 0, Some(30), 2, 50), ("orders", 1, None, 0, 5)],
    );
    record(
        &mut state,
        &clock,
        Duration::from_millis(500),
        Ok(report(
            vec![("billing", Ok(second))],
            &[("orders.dlq", Some(3))],
        )),
    );
    state.record_scrape();
    clock.advance(Duration::from_millis(1_500));
    // History held: two end-offset points per partition (orders/1's flat run keeps its first
    // and last), orders/0's two commits, two total-lag samples.
    let expected = r#"# HELP kafka_consumergroup_current_offset The group's committed offset (the next record it will read).
# TYPE kafka_consumergroup_current_offset gauge
kafka_consumergroup_current_offset{group="billing",topic="orders",partition="0"} 30
# HELP kafka_consumergroup_lag Offset lag: end offset minus committed offset (absent without a commit).
# TYPE kafka_consumergroup_lag gauge
kafka_consumergroup_lag{group="billing",topic="orders",partition="0"} 20
# HELP kafka_consumergroup_lag_seconds Time lag: how long ago the end offset was where the group is now (0 when caught up).
# TYPE kafka_consumergroup_lag_seconds gauge
kafka_consumergroup_lag_seconds{group="billing",topic="orders",partition="0"} 10
# HELP kafka_consumergroup_partition_status Burrow's partition status: 1 for the current one of OK, WARN, STALL, STOP, REWIND.
# TYPE kafka_consumergroup_partition_status gauge
kafka_consumergroup_partition_status{group="billing",topic="orders",partition="0",status="OK"} 1
kafka_consumergroup_partition_status{group="billing",topic="orders",partition="0",status="WARN"} 0
kafka_consumergroup_partition_status{group="billing",topic="orders",partition="0",status="STALL"} 0
kafka_consumergroup_partition_status{group="billing",topic="orders",partition="0",status="STOP"} 0
kafka_consumergroup_partition_status{group="billing",topic="orders",partition="0",status="REWIND"} 0
# HELP kafka_partition_latest_offset The partition's end offset (high watermark; last stable offset with --read-committed).
# TYPE kafka_partition_latest_offset gauge
kafka_partition_latest_offset{topic="orders",partition="0"} 50
kafka_partition_latest_offset{topic="orders",partition="1"} 5
# HELP kafka_partition_earliest_offset The partition's log-start offset.
# TYPE kafka_partition_earliest_offset gauge
kafka_partition_earliest_offset{topic="orders",partition="0"} 2
kafka_partition_earliest_offset{topic="orders",partition="1"} 0
# HELP kafka_consumergroup_topic_lag The group's offset lag on a topic, over the partitions whose lag is known.
# TYPE kafka_consumergroup_topic_lag gauge
kafka_consumergroup_topic_lag{group="billing",topic="orders"} 20
# HELP kafka_consumergroup_total_lag The group's total offset lag over the partitions whose lag is known.
# TYPE kafka_consumergroup_total_lag gauge
kafka_consumergroup_total_lag{group="billing"} 20
# HELP kafka_consumergroup_max_lag The group's largest partition offset lag.
# TYPE kafka_consumergroup_max_lag gauge
kafka_consumergroup_max_lag{group="billing"} 20
# HELP kafka_consumergroup_max_lag_seconds The group's largest partition time lag.
# TYPE kafka_consumergroup_max_lag_seconds gauge
kafka_consumergroup_max_lag_seconds{group="billing"} 10
# HELP kafka_consumergroup_status Burrow's group status (worst partition; STOP, STALL, REWIND are ERR): 1 for the current one.
# TYPE kafka_consumergroup_status gauge
kafka_consumergroup_status{group="billing",status="OK"} 1
kafka_consumergroup_status{group="billing",status="WARN"} 0
kafka_consumergroup_status{group="billing",status="ERR"} 0
# HELP kafka_consumergroup_severity The runbook verdict (total lag and growth thresholds, Burrow, anomalies): 1 for the current one of ok, warning, critical.
# TYPE kafka_consumergroup_severity gauge
kafka_consumergroup_severity{group="billing",severity="ok"} 1
kafka_consumergroup_severity{group="billing",severity="warning"} 0
kafka_consumergroup_severity{group="billing",severity="critical"} 0
# HELP kafka_ops_exporter_group_up 1 when the last poll read the group; 0 when it failed (its last values are still served).
# TYPE kafka_ops_exporter_group_up gauge
kafka_ops_exporter_group_up{group="billing"} 1
# HELP kafka_ops_exporter_group_errors_total Reads of the group that failed while the other groups were read.
# TYPE kafka_ops_exporter_group_errors_total counter
kafka_ops_exporter_group_errors_total{group="billing"} 0
# HELP kafka_dead_letter_depth Records waiting in the dead-letter topic (log start to end, over its partitions).
# TYPE kafka_dead_letter_depth gauge
kafka_dead_letter_depth{topic="orders.dlq"} 3
# HELP kafka_ops_exporter_up 1 when the last poll of the cluster succeeded (as /readyz).
# TYPE kafka_ops_exporter_up gauge
kafka_ops_exporter_up 1
# HELP kafka_ops_exporter_staleness_seconds Seconds since the last successful poll (since the start before the first).
# TYPE kafka_ops_exporter_staleness_seconds gauge
kafka_ops_exporter_staleness_seconds 1.5
# HELP kafka_ops_exporter_polls_total Polls of the cluster, successful or not.
# TYPE kafka_ops_exporter_polls_total counter
kafka_ops_exporter_polls_total 2
# HELP kafka_ops_exporter_poll_errors_total Polls whose lag pass (stage lag) or dead-letter depths (stage dead_letter) failed.
# TYPE kafka_ops_exporter_poll_errors_total counter
kafka_ops_exporter_poll_errors_total{stage="lag"} 0
kafka_ops_exporter_poll_errors_total{stage="dead_letter"} 0
# HELP kafka_ops_exporter_poll_duration_seconds How long the last poll took.
# TYPE kafka_ops_exporter_poll_duration_seconds gauge
kafka_ops_exporter_poll_duration_seconds 0.5
# HELP kafka_ops_exporter_groups Groups the exporter tracks.
# TYPE kafka_ops_exporter_groups gauge
kafka_ops_exporter_groups 1
# HELP kafka_ops_exporter_history_entries Lag history held (bounded per partition and group): partitions tracked, end-offset points, commits, total-lag samples.
# TYPE kafka_ops_exporter_history_entries gauge
kafka_ops_exporter_history_entries{kind="partition"} 2
kafka_ops_exporter_history_entries{kind="end_offset"} 4
kafka_ops_exporter_history_entries{kind="commit"} 2
kafka_ops_exporter_history_entries{kind="total_lag"} 2
# HELP kafka_ops_exporter_scrapes_total Scrapes of /metrics served, this one included.
# TYPE kafka_ops_exporter_scrapes_total counter
kafka_ops_exporter_scrapes_total 1
"#;
    assert_eq!(state.render(clock.now()), expected);
}

#[test]
fn groups_appear_and_disappear_and_a_failing_group_hides_no_other() {
    let clock = ManualClock::new();
    let mut state = ExporterState::new(LagMonitorConfig::default(), clock.now()).unwrap();
    let a = lag("a", &clock, &[("t", 0, Some(1), 0, 4)]);
    let b = lag("b", &clock, &[("t", 0, Some(2), 0, 4)]);
    record(
        &mut state,
        &clock,
        Duration::ZERO,
        Ok(report(vec![("a", Ok(a)), ("b", Ok(b))], &[])),
    );
    assert_eq!(state.groups().collect::<Vec<_>>(), ["a", "b"]);

    // "a" is gone; "b" cannot be read this time; "c" appears.
    clock.advance(Duration::from_secs(1));
    let c = lag("c", &clock, &[("u", 0, Some(0), 0, 7)]);
    record(
        &mut state,
        &clock,
        Duration::ZERO,
        Ok(report(vec![("b", Err(unreachable())), ("c", Ok(c))], &[])),
    );
    assert!(state.is_ready());
    let text = state.render(clock.now());
    assert_eq!(
        samples(&text, "kafka_consumergroup_lag"),
        [
            // b's last values are still served, marked down.
            r#"kafka_consumergroup_lag{group="b",topic="t",partition="0"} 2"#,
            r#"kafka_consumergroup_lag{group="c",topic="u",partition="0"} 7"#,
        ]
    );
    assert_eq!(
        samples(&text, "kafka_ops_exporter_group_up"),
        [
            r#"kafka_ops_exporter_group_up{group="b"} 0"#,
            r#"kafka_ops_exporter_group_up{group="c"} 1"#,
        ]
    );
    assert_eq!(
        samples(&text, "kafka_ops_exporter_group_errors_total"),
        [
            r#"kafka_ops_exporter_group_errors_total{group="b"} 1"#,
            r#"kafka_ops_exporter_group_errors_total{group="c"} 0"#,
        ]
    );
    assert!(!text.contains(r#"group="a""#), "{text}");
    assert_eq!(
        samples(&text, "kafka_ops_exporter_groups"),
        ["kafka_ops_exporter_groups 2"]
    );
    // a's history went with it.
    assert_eq!(state.held().partitions, 2);
}

#[test]
fn an_unreachable_cluster_keeps_the_values_and_they_grow_stale() {
    let clock = ManualClock::new();
    let mut state = ExporterState::new(LagMonitorConfig::default(), clock.now()).unwrap();
    clock.advance(Duration::from_secs(2));
    // Before any poll: not ready, stale since the start.
    assert!(!state.is_ready());
    assert_eq!(state.staleness(clock.now()), Duration::from_secs(2));

    let g = lag("g", &clock, &[("t", 0, Some(3), 0, 9)]);
    record(
        &mut state,
        &clock,
        Duration::from_secs(1),
        Ok(report(vec![("g", Ok(g))], &[("t.dlq", Some(4))])),
    );
    assert!(state.is_ready());
    assert_eq!(state.staleness(clock.now()), Duration::ZERO);

    for _ in 0..3 {
        clock.advance(Duration::from_secs(5));
        record(
            &mut state,
            &clock,
            Duration::from_secs(5),
            Err(unreachable()),
        );
    }
    clock.advance(Duration::from_millis(250));
    assert!(!state.is_ready());
    assert_eq!(state.staleness(clock.now()), Duration::from_millis(15_250));
    let text = state.render(clock.now());
    assert_eq!(
        samples(&text, "kafka_ops_exporter_up"),
        ["kafka_ops_exporter_up 0"]
    );
    assert_eq!(
        samples(&text, "kafka_ops_exporter_staleness_seconds"),
        ["kafka_ops_exporter_staleness_seconds 15.25"]
    );
    assert_eq!(
        samples(&text, "kafka_ops_exporter_poll_errors_total"),
        [
            r#"kafka_ops_exporter_poll_errors_total{stage="lag"} 3"#,
            r#"kafka_ops_exporter_poll_errors_total{stage="dead_letter"} 0"#,
        ]
    );
    assert_eq!(
        samples(&text, "kafka_consumergroup_lag"),
        [r#"kafka_consumergroup_lag{group="g",topic="t",partition="0"} 6"#]
    );
    assert_eq!(
        samples(&text, "kafka_dead_letter_depth"),
        [r#"kafka_dead_letter_depth{topic="t.dlq"} 4"#]
    );

    // Back: ready again, fresh; the dead-letter read fails on its own and keeps its last depth.
    let g = lag("g", &clock, &[("t", 0, Some(9), 0, 9)]);
    record(
        &mut state,
        &clock,
        Duration::ZERO,
        Ok(PollReport {
            groups: vec![("g".into(), Ok(g))],
            dead_letters: Err(unreachable()),
        }),
    );
    assert!(state.is_ready());
    assert_eq!(state.staleness(clock.now()), Duration::ZERO);
    let text = state.render(clock.now());
    assert_eq!(
        samples(&text, "kafka_dead_letter_depth"),
        [r#"kafka_dead_letter_depth{topic="t.dlq"} 4"#]
    );
    assert_eq!(
        samples(&text, "kafka_ops_exporter_poll_errors_total")[1],
        r#"kafka_ops_exporter_poll_errors_total{stage="dead_letter"} 1"#
    );
    assert_eq!(
        samples(&text, "kafka_ops_exporter_polls_total"),
        ["kafka_ops_exporter_polls_total 5"]
    );
}

#[test]
fn history_stays_within_its_caps_over_many_polls() {
    let clock = ManualClock::new();
    let config = LagMonitorConfig {
        burrow: BurrowConfig {
            window: 4,
            ..BurrowConfig::default()
        },
        time_lag_points: 8,
        growth_window: Duration::from_secs(60),
        ..LagMonitorConfig::default()
    };
    let mut state = ExporterState::new(config, clock.now()).unwrap();
    for i in 0..1_000i64 {
        // Ends and commits move every poll, so every table fills to its cap.
        let g = lag(
            "g",
            &clock,
            &[
                ("t", 0, Some(i), 0, 2 * i + 1),
                ("t", 1, Some(i), 0, 3 * i + 1),
            ],
        );
        let h = lag("h", &clock, &[("t", 0, Some(i / 2), 0, 2 * i + 1)]);
        record(
            &mut state,
            &clock,
            Duration::ZERO,
            Ok(report(vec![("g", Ok(g)), ("h", Ok(h))], &[])),
        );
        clock.advance(Duration::from_secs(10));
    }
    assert_eq!(
        state.held(),
        HeldHistory {
            partitions: 3,
            end_offset_points: 3 * 8,
            commits: 3 * 4,
            // 60 s of 10 s polls, and the one before for the rate: 7 per group.
            totals: 2 * 7,
        }
    );
    // A partition that goes away takes its history with it.
    let g = lag("g", &clock, &[("t", 0, Some(1_000), 0, 2_001)]);
    record(
        &mut state,
        &clock,
        Duration::ZERO,
        Ok(report(vec![("g", Ok(g))], &[])),
    );
    assert_eq!(state.held().partitions, 1);
    assert_eq!(state.held().end_offset_points, 8);
}

#[test]
fn group_and_topic_names_are_escaped_in_labels() {
    let clock = ManualClock::new();
    let mut state = ExporterState::new(LagMonitorConfig::default(), clock.now()).unwrap();
    let name = "we\"ird\\group\nname";
    let g = lag(name, &clock, &[("t", 0, Some(1), 0, 2)]);
    record(
        &mut state,
        &clock,
        Duration::ZERO,
        Ok(report(vec![(name, Ok(g))], &[])),
    );
    let text = state.render(clock.now());
    assert_eq!(
        samples(&text, "kafka_consumergroup_total_lag"),
        [r#"kafka_consumergroup_total_lag{group="we\"ird\\group\nname"} 1"#]
    );
}

#[test]
fn unknown_values_have_no_sample() {
    let clock = ManualClock::new();
    let mut state = ExporterState::new(LagMonitorConfig::default(), clock.now()).unwrap();
    let mut g = lag("g", &clock, &[("t", 0, Some(1), 0, 2)]);
    g.partitions.push(PartitionLag::unknown(
        &TopicPartition::new("t", 1),
        Some(Offset::new(4).unwrap()),
        "leader down",
    ));
    record(
        &mut state,
        &clock,
        Duration::ZERO,
        Ok(report(vec![("g", Ok(g))], &[("d.dlq", None)])),
    );
    let text = state.render(clock.now());
    // Partition 1's committed offset is known, its end is not: no lag, no end offset, no NaN.
    assert_eq!(
        samples(&text, "kafka_consumergroup_current_offset").len(),
        2
    );
    assert_eq!(samples(&text, "kafka_consumergroup_lag").len(), 1);
    assert_eq!(samples(&text, "kafka_partition_latest_offset").len(), 1);
    assert!(samples(&text, "kafka_dead_letter_depth").is_empty());
    assert!(!text.contains("NaN"));
    // The unreadable partition is a finding: the group is a warning, not silently ok.
    assert_eq!(
        samples(&text, "kafka_consumergroup_severity")[1],
        r#"kafka_consumergroup_severity{group="g",severity="warning"} 1"#
    );
}

#[test]
fn a_group_whose_lag_is_all_unknown_has_no_total_and_no_topic_lag() {
    let clock = ManualClock::new();
    let mut state = ExporterState::new(LagMonitorConfig::default(), clock.now()).unwrap();
    let mut down = lag("down", &clock, &[]);
    down.partitions.push(PartitionLag::unknown(
        &TopicPartition::new("t", 0),
        Some(Offset::new(4).unwrap()),
        "leader down",
    ));
    let known = lag("known", &clock, &[("t", 0, Some(1), 0, 3)]);
    record(
        &mut state,
        &clock,
        Duration::ZERO,
        Ok(report(vec![("down", Ok(down)), ("known", Ok(known))], &[])),
    );
    let text = state.render(clock.now());
    assert_eq!(
        samples(&text, "kafka_consumergroup_total_lag"),
        [r#"kafka_consumergroup_total_lag{group="known"} 2"#]
    );
    assert_eq!(
        samples(&text, "kafka_consumergroup_topic_lag"),
        [r#"kafka_consumergroup_topic_lag{group="known",topic="t"} 2"#]
    );
}

#[test]
fn an_unusable_configuration_is_refused() {
    let config = LagMonitorConfig {
        burrow: BurrowConfig {
            window: 1,
            ..BurrowConfig::default()
        },
        ..LagMonitorConfig::default()
    };
    assert!(matches!(
        ExporterState::new(config, ManualClock::new().now()),
        Err(Error::Config(_))
    ));
}
