use std::time::Duration;

use kafka_ops_core::cluster::{BrokerInfo, PartitionInfo, TopicInfo};
use kafka_ops_core::{ManualClock, Offset, TopicPartition, Watermarks};

use super::*;

const DAY: u64 = 24 * 3600 * 1000;
const NOW: i64 = 100 * DAY as i64;

fn o(v: i64) -> Offset {
    Offset::new(v).unwrap()
}

fn ago(days: f64) -> Timestamp {
    Timestamp::from_millis(NOW - (days * DAY as f64) as i64)
}

/// A row of `topic`/0 committed at `committed` with the log ending at `end`.
fn row(topic: &str, committed: Option<i64>, end: i64) -> PartitionLag {
    row_from(topic, committed, 0, end)
}

/// [`row`] with the log starting at `start`.
fn row_from(topic: &str, committed: Option<i64>, start: i64, end: i64) -> PartitionLag {
    let marks = Watermarks {
        low: o(start),
        high: o(end),
    };
    PartitionLag::compute(
        &TopicPartition::new(topic, 0),
        committed.map(o),
        Some(marks),
    )
}

fn group(
    name: &str,
    state: GroupState,
    members: usize,
    partitions: Vec<PartitionLag>,
    newest: Option<Timestamp>,
) -> GroupFacts {
    GroupFacts {
        group: name.into(),
        state,
        members,
        members_unread: None,
        partitions,
        newest_consumed: newest,
    }
}

fn topic_facts(name: &str, newest: Option<Timestamp>, depth: Option<u64>) -> TopicFacts {
    TopicFacts {
        topic: name.into(),
        partitions: 1,
        records: 10,
        newest_record: newest,
        unreadable_partitions: 0,
        dead_letter_depth: depth,
    }
}

fn partition(id: i32, leader: Option<i32>, replicas: &[i32]) -> PartitionInfo {
    PartitionInfo {
        id,
        leader,
        replicas: replicas.to_vec(),
        isr: replicas.to_vec(),
        error: None,
    }
}

fn broker(id: i32) -> BrokerInfo {
    BrokerInfo {
        id,
        host: "localhost".into(),
        port: 9092,
    }
}

fn balanced() -> ClusterMetadata {
    ClusterMetadata {
        brokers: vec![broker(1), broker(2), broker(3)],
        controller: Some(1),
        topics: vec![TopicInfo {
            name: "orders".into(),
            partitions: vec![
                partition(0, Some(1), &[1, 2]),
                partition(1, Some(2), &[2, 3]),
                partition(2, Some(3), &[3, 1]),
            ],
            error: None,
        }],
    }
}

fn facts(groups: Vec<GroupFacts>, topics: Vec<TopicFacts>) -> HygieneFacts {
    HygieneFacts {
        metadata: balanced(),
        groups,
        unreadable_groups: Vec::new(),
        topics,
    }
}

fn clock() -> ManualClock {
    ManualClock::at(Timestamp::from_millis(NOW))
}

type Verdict = (String, bool, bool, String);

fn verdicts(report: &HygieneReport) -> Vec<Verdict> {
    report
        .groups
        .iter()
        .map(|g| {
            (
                g.group.clone(),
                g.inactive,
                g.safe_to_delete,
                g.reason.clone(),
            )
        })
        .collect()
}

fn v(group: &str, inactive: bool, safe: bool, reason: &str) -> Verdict {
    (group.into(), inactive, safe, reason.into())
}

#[test]
fn groups_are_judged_by_members_last_consumed_record_and_lag() {
    let groups = vec![
        group(
            "a-members",
            GroupState::Stable,
            2,
            vec![row("t", Some(3), 10)],
            Some(ago(30.0)),
        ),
        group(
            "b-fresh",
            GroupState::Empty,
            0,
            vec![row("t", Some(10), 10)],
            Some(ago(6.9)),
        ),
        group(
            "c-boundary",
            GroupState::Empty,
            0,
            vec![row("t", Some(10), 10)],
            Some(ago(7.0)),
        ),
        group(
            "d-lagging",
            GroupState::Empty,
            0,
            vec![row("t", Some(5), 10)],
            Some(ago(8.0)),
        ),
        group("e-never", GroupState::Empty, 0, Vec::new(), None),
        group(
            "f-uncommitted",
            GroupState::Empty,
            0,
            vec![row("t", None, 10)],
            None,
        ),
        // Retention deleted everything up to its commit.
        group(
            "g-gone",
            GroupState::Empty,
            0,
            vec![row_from("t", Some(4), 4, 4)],
            None,
        ),
        group(
            "h-unreadable",
            GroupState::Empty,
            0,
            vec![PartitionLag::unknown(
                &TopicPartition::new("t", 0),
                Some(o(1)),
                "leader down",
            )],
            Some(ago(9.0)),
        ),
        // A KIP-848 group reconciling: members by state even if the count says none.
        group(
            "i-reconciling",
            GroupState::Reconciling,
            0,
            Vec::new(),
            None,
        ),
        // The record behind its commit is stored, but no time could be read for it (a
        // transaction marker, compacted away): not judged inactive.
        group(
            "j-time-unknown",
            GroupState::Empty,
            0,
            vec![row("t", Some(4), 4)],
            None,
        ),
    ];
    let report = evaluate(
        &facts(groups.clone(), Vec::new()),
        &HygieneOptions::default(),
        &clock(),
    );
    assert_eq!(
        verdicts(&report),
        [
            v("a-members", false, false, "2 members"),
            v(
                "b-fresh",
                false,
                false,
                "no members, last consumed record 6days 21h 36m old"
            ),
            v(
                "c-boundary",
                true,
                true,
                "no members, last consumed record 7days old"
            ),
            v(
                "d-lagging",
                true,
                false,
                "no members, last consumed record 8days old; 5 records unconsumed (accepted: 0)"
            ),
            v("e-never", true, true, "no members, no committed offset"),
            v(
                "f-uncommitted",
                true,
                true,
                "no members, no committed offset"
            ),
            v(
                "g-gone",
                true,
                true,
                "no members, no record left behind its commits"
            ),
            v(
                "h-unreadable",
                true,
                false,
                "no members, last consumed record 9days old; lag unreadable on 1 partitions"
            ),
            v("i-reconciling", false, false, "0 members"),
            v(
                "j-time-unknown",
                false,
                false,
                "no members, time of its last consumed record unknown"
            ),
        ]
    );
    assert_eq!(report.groups[3].total_lag, 5);
    assert_eq!(report.severity, Severity::Warning);
    assert_eq!(report.findings, ["6 inactive groups (4 safe to delete)"]);
    assert_eq!(report.taken_at, Timestamp::from_millis(NOW));

    // The operator accepts losing five records: the lagging group may go.
    let lenient = HygieneOptions {
        accepted_lag: 5,
        ..HygieneOptions::default()
    };
    let report = evaluate(&facts(groups, Vec::new()), &lenient, &clock());
    assert!(report.groups[3].safe_to_delete);
    assert!(!report.groups[7].safe_to_delete);
}

#[test]
fn a_group_whose_members_could_not_be_read_is_never_inactive() {
    // Caught up, idle for a month, listed as `Unknown` (a KIP-848 group reconciling) and its
    // description timed out: it may have members.
    let unread = GroupFacts {
        members_unread: Some("describing the group failed: timed out".into()),
        ..group(
            "unread",
            GroupState::Unknown,
            0,
            vec![row("t", Some(10), 10)],
            Some(ago(30.0)),
        )
    };
    let judged = judge_group(
        &unread,
        &HygieneOptions::default(),
        Timestamp::from_millis(NOW),
    );
    assert!(!judged.inactive && !judged.safe_to_delete, "{judged:?}");
    assert!(
        judged.reason.contains("members unknown"),
        "{}",
        judged.reason
    );
    let report = evaluate(
        &facts(vec![unread.clone()], Vec::new()),
        &HygieneOptions::default(),
        &clock(),
    );
    assert_eq!(
        report.findings,
        ["1 groups with members unknown (not judged)"]
    );
    assert_eq!(report.severity, Severity::Warning);
    // Read, the same group is inactive and safe to delete.
    let read = GroupFacts {
        members_unread: None,
        ..unread
    };
    let judged = judge_group(
        &read,
        &HygieneOptions::default(),
        Timestamp::from_millis(NOW),
    );
    assert!(judged.inactive && judged.safe_to_delete, "{judged:?}");
}

#[test]
fn topics_are_idle_past_the_threshold_and_dead_letters_carry_their_depth() {
    let mut unreadable = topic_facts("e-unreadable", Some(ago(30.0)), None);
    unreadable.unreadable_partitions = 1;
    let topics = vec![
        topic_facts("a-busy", Some(ago(0.5)), None),
        topic_facts("b-idle", Some(ago(1.0)), None),
        topic_facts("c-empty", None, None),
        topic_facts("d.dlq", Some(ago(0.1)), Some(150)),
        unreadable,
    ];
    let options = HygieneOptions {
        idle_after: Duration::from_secs(24 * 3600),
        ..HygieneOptions::default()
    };
    let report = evaluate(&facts(Vec::new(), topics), &options, &clock());
    let idle: Vec<(&str, bool, Option<u64>)> = report
        .topics
        .iter()
        .map(|t| (t.topic.as_str(), t.idle, t.dead_letter_depth))
        .collect();
    assert_eq!(
        idle,
        [
            ("a-busy", false, None),
            ("b-idle", true, None),
            ("c-empty", true, None),
            ("d.dlq", false, Some(150)),
            ("e-unreadable", false, None),
        ]
    );
    assert_eq!(report.severity, Severity::Warning);
    assert_eq!(
        report.findings,
        ["2 idle topics", "dead-letter topic d.dlq holds 150 records"]
    );

    let deep = vec![topic_facts("d.dlq", Some(ago(0.1)), Some(1_001))];
    let report = evaluate(&facts(Vec::new(), deep), &options, &clock());
    assert_eq!(report.severity, Severity::Critical);
    assert_eq!(
        report.findings,
        ["dead-letter topic d.dlq holds 1001 records"]
    );

    let calm = vec![topic_facts("d.dlq", Some(ago(0.1)), Some(100))];
    let report = evaluate(&facts(Vec::new(), calm), &options, &clock());
    assert_eq!(
        (report.severity, report.findings.len()),
        (Severity::Info, 0)
    );
}

#[test]
fn leadership_counts_leaders_preferred_replicas_and_skew() {
    assert_eq!(
        leadership(&balanced()),
        Leadership {
            brokers: vec![
                BrokerLeadership {
                    broker: 1,
                    leaders: 1,
                    preferred: 1,
                    not_preferred: 0
                },
                BrokerLeadership {
                    broker: 2,
                    leaders: 1,
                    preferred: 1,
                    not_preferred: 0
                },
                BrokerLeadership {
                    broker: 3,
                    leaders: 1,
                    preferred: 1,
                    not_preferred: 0
                },
            ],
            not_preferred: Vec::new(),
            leaderless: Vec::new(),
            skew: 0,
        }
    );
    // Broker 3 restarted: its partition moved to broker 1, and another topic lost its leader;
    // broker 4 is listed but leads nothing.
    let mut metadata = balanced();
    metadata.brokers.push(broker(4));
    metadata.topics[0].partitions[2].leader = Some(1);
    metadata.topics.push(TopicInfo {
        name: "audit".into(),
        partitions: vec![partition(0, None, &[3, 2]), partition(1, Some(1), &[1, 3])],
        error: None,
    });
    let found = leadership(&metadata);
    assert_eq!(
        found.brokers,
        [
            BrokerLeadership {
                broker: 1,
                leaders: 3,
                preferred: 2,
                not_preferred: 1
            },
            BrokerLeadership {
                broker: 2,
                leaders: 1,
                preferred: 1,
                not_preferred: 0
            },
            BrokerLeadership {
                broker: 3,
                leaders: 0,
                preferred: 2,
                not_preferred: 0
            },
            BrokerLeadership {
                broker: 4,
                leaders: 0,
                preferred: 0,
                not_preferred: 0
            },
        ]
    );
    assert_eq!(
        found.not_preferred,
        [MisplacedLeader {
            topic: "orders".into(),
            partition: 2,
            leader: 1,
            preferred: 3
        }]
    );
    assert_eq!(found.leaderless, [TopicPartition::new("audit", 0)]);
    assert_eq!(found.skew, 3);
    let mut with_metadata = facts(Vec::new(), Vec::new());
    with_metadata.metadata = metadata;
    let report = evaluate(&with_metadata, &HygieneOptions::default(), &clock());
    assert_eq!(report.severity, Severity::Critical);
    assert_eq!(
        report.findings,
        [
            "1 partitions without a leader",
            "1 partitions led off their preferred replica (leader skew 3)"
        ]
    );
}

#[test]
fn unreadable_groups_are_warnings_and_bad_depths_are_refused() {
    let mut f = facts(Vec::new(), Vec::new());
    f.unreadable_groups.push(GroupFailure {
        group: "locked".into(),
        code: None,
        reason: "not allowed".into(),
    });
    let report = evaluate(&f, &HygieneOptions::default(), &clock());
    assert_eq!(report.severity, Severity::Warning);
    assert_eq!(report.findings, ["group locked: not allowed"]);
    let bad = HygieneOptions {
        dead_letter_warning: 10,
        dead_letter_critical: 5,
        ..HygieneOptions::default()
    };
    assert!(matches!(validate(&bad), Err(crate::HealthError::Config(_))));
    assert!(validate(&HygieneOptions::default()).is_ok());
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Partitions as (leader or none, replicas) over brokers 1..=4.
    fn partitions() -> impl Strategy<Value = Vec<(Option<i32>, Vec<i32>)>> {
        prop::collection::vec(
            (
                prop::option::weighted(0.9, 1..=4i32),
                prop::collection::vec(1..=4i32, 1..=3),
            ),
            0..40,
        )
    }

    proptest! {
        #[test]
        fn leadership_counts_add_up(parts in partitions()) {
            let mut metadata = balanced();
            metadata.topics[0].partitions = parts
                .iter()
                .enumerate()
                .map(|(id, (leader, replicas))| partition(id as i32, *leader, replicas))
                .collect();
            let found = leadership(&metadata);
            let led: usize = found.brokers.iter().map(|b| b.leaders).sum();
            let preferred: usize = found.brokers.iter().map(|b| b.preferred).sum();
            let off: usize = found.brokers.iter().map(|b| b.not_preferred).sum();
            prop_assert_eq!(led + found.leaderless.len(), parts.len());
            prop_assert_eq!(preferred, parts.len());
            prop_assert_eq!(off, found.not_preferred.len());
            let expected_off = parts
                .iter()
                .filter(|(leader, replicas)| leader.is_some_and(|l| l != replicas[0]))
                .count();
            prop_assert_eq!(off, expected_off);
            let most = found.brokers.iter().map(|b| b.leaders).max().unwrap_or(0);
            let fewest = found.brokers.iter().map(|b| b.leaders).min().unwrap_or(0);
            prop_assert_eq!(found.skew, most - fewest);
            // Every listed broker appears, even one leading nothing.
            prop_assert!(found.brokers.iter().filter(|b| b.broker <= 3).count() == 3);
        }

        #[test]
        fn members_are_never_flagged_and_safe_implies_inactive(
            members in 0usize..3,
            committed in prop::option::of(0i64..20),
            end in 0i64..20,
            age_days in prop::option::of(0.0f64..30.0),
            accepted in 0u64..10,
        ) {
            let committed = committed.map(|c| c.min(end));
            let state = if members > 0 { GroupState::Stable } else { GroupState::Empty };
            let facts = group(
                "g",
                state,
                members,
                vec![row("t", committed, end)],
                age_days.map(ago),
            );
            let options = HygieneOptions { accepted_lag: accepted, ..HygieneOptions::default() };
            let judged = judge_group(&facts, &options, Timestamp::from_millis(NOW));
            if members > 0 {
                prop_assert!(!judged.inactive && !judged.safe_to_delete);
            }
            if judged.safe_to_delete {
                prop_assert!(judged.inactive);
                prop_assert!(judged.total_lag <= accepted);
            }
            let lag = committed.map_or(0, |c| (end - c) as u64);
            prop_assert_eq!(judged.total_lag, lag);
        }
    }
}
