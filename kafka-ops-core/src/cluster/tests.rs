use super::*;
use crate::clock::ManualClock;
use crate::lag::PartitionLag;
use mockall::predicate::*;

/// One mock implementing all three traits.
type Mocks = MockClusterQuery;

impl Mocks {
    /// Mocks of a broker without DescribeGroups (as librdkafka's mock cluster).
    fn cannot_describe() -> Self {
        let mut m = Mocks::default();
        m.groups.expect_describe_groups().returning(|_| {
            Err(Error::Unsupported {
                operation: "describe consumer groups",
                reason: "no admin API".into(),
            })
        });
        m
    }
}

#[tokio::test]
async fn partitions_members_own_without_a_commit_are_listed_as_unknown() {
    let mut m = Mocks::default();
    m.groups.expect_group_offsets().returning(|_| {
        Ok(BTreeMap::from([(
            TopicPartition::new("orders", 0),
            Ok(o(40)),
        )]))
    });
    m.groups.expect_describe_groups().returning(|groups| {
        Ok(vec![GroupDescription {
            group: groups[0].clone(),
            state: GroupState::Reconciling,
            group_type: GroupType::Consumer,
            assignor: "uniform".into(),
            coordinator: Some(1),
            members: vec![GroupMember {
                member_id: "m-1".into(),
                client_id: "billing".into(),
                host: "/10.0.0.1".into(),
                instance_id: None,
                assignment: vec![
                    TopicPartition::new("orders", 0),
                    TopicPartition::new("refunds", 2),
                ],
                target_assignment: Some(vec![TopicPartition::new("refunds", 2)]),
            }],
            error: None,
        }])
    });
    m.metadata
        .expect_metadata()
        .returning(|_| Ok(metadata(vec![topic("orders", 1)])));
    m.offsets
        .expect_watermarks()
        .returning(|p, _| Ok(marks_for(p)));
    let (lag, _) = group_lag(&m, "g", &ManualClock::new(), LagOptions::default())
        .await
        .unwrap();
    let rows: Vec<(String, Option<Offset>, Option<u64>)> = lag
        .partitions
        .iter()
        .map(|r| (r.topic_partition().to_string(), r.committed, r.lag))
        .collect();
    assert_eq!(
        rows,
        [
            ("orders/0".to_string(), Some(o(40)), Some(60)),
            ("refunds/2".to_string(), None, None)
        ]
    );
}

fn o(v: i64) -> Offset {
    Offset::new(v).unwrap()
}
fn topic(name: &str, partitions: i32) -> TopicInfo {
    TopicInfo {
        name: name.into(),
        partitions: (0..partitions)
            .map(|id| PartitionInfo {
                id,
                leader: Some(1),
                replicas: vec![1],
                isr: vec![1],
                error: None,
            })
            .collect(),
        error: None,
    }
}
fn metadata(topics: Vec<TopicInfo>) -> ClusterMetadata {
    ClusterMetadata {
        brokers: vec![],
        controller: Some(1),
        topics,
    }
}
fn marks_for(partitions: &[TopicPartition]) -> PartitionResults<Watermarks> {
    partitions
        .iter()
        .map(|tp| {
            let result = if &*tp.topic == "down" {
                Err(PartitionError::from_code(KafkaCode::LEADER_NOT_AVAILABLE))
            } else {
                Ok(Watermarks {
                    low: o(0),
                    high: o(100),
                })
            };
            (tp.clone(), result)
        })
        .collect()
}

#[tokio::test]
async fn group_offsets_path_lists_every_partition_of_committed_topics() {
    let mut m = Mocks::cannot_describe();
    m.groups
        .expect_group_offsets()
        .with(eq("g"))
        .returning(|_| {
            Ok(BTreeMap::from([(
                TopicPartition::new("orders", 1),
                Ok(o(40)),
            )]))
        });
    m.metadata
        .expect_metadata()
        .withf(|topics| topics.is_empty())
        .returning(|_| Ok(metadata(vec![topic("orders", 3)])));
    m.offsets
        .expect_watermarks()
        .times(1)
        .returning(|p, _| Ok(marks_for(p)));
    let clock = ManualClock::at(Timestamp::from_millis(5));
    let (lag, discovery) = group_lag(&m, "g", &clock, LagOptions::default())
        .await
        .unwrap();
    assert_eq!(discovery, Discovery::GroupOffsets);
    assert_eq!(lag.partitions.len(), 3);
    assert_eq!(lag.partitions[1].lag, Some(60));
    assert_eq!(lag.partitions[0].lag, None);
    assert_eq!(lag.partitions[0].committed, None);
    assert_eq!(lag.taken_at, Timestamp::from_millis(5));
    assert_eq!(lag.total_lag(), 60);
}

#[tokio::test]
async fn unsupported_or_empty_listing_falls_back_to_a_metadata_scan() {
    for unsupported in [true, false] {
        let mut m = Mocks::cannot_describe();
        m.groups.expect_group_offsets().returning(move |_| {
            if unsupported {
                Err(Error::Unsupported {
                    operation: "list group offsets",
                    reason: "no admin API".into(),
                })
            } else {
                Ok(BTreeMap::new())
            }
        });
        m.metadata
            .expect_metadata()
            .withf(|topics| topics.is_empty())
            .returning(|_| {
                Ok(metadata(vec![
                    topic("a", 2),
                    topic("b", 2),
                    topic("__consumer_offsets", 50),
                ]))
            });
        m.offsets
            .expect_committed_offsets()
            .withf(|_, partitions| partitions.len() == 4)
            .returning(|_, partitions| {
                Ok(partitions
                    .iter()
                    .map(|tp| {
                        (
                            tp.clone(),
                            Ok((&*tp.topic == "a" && tp.partition == 0).then(|| o(7))),
                        )
                    })
                    .collect())
            });
        m.offsets
            .expect_watermarks()
            .returning(|p, _| Ok(marks_for(p)));
        let clock = ManualClock::new();
        let (lag, discovery) = group_lag(&m, "g", &clock, LagOptions::default())
            .await
            .unwrap();
        assert_eq!(discovery, Discovery::MetadataScan);
        // Topic b has no commit: not listed. Topic a: both partitions, one without commit.
        assert_eq!(
            lag.partitions
                .iter()
                .map(|p| p.topic_partition().to_string())
                .collect::<Vec<_>>(),
            ["a/0", "a/1"]
        );
        assert_eq!(lag.partitions[0].lag, Some(93));
    }
}

#[tokio::test]
async fn unreadable_partitions_are_reported_not_guessed() {
    let mut m = Mocks::cannot_describe();
    m.groups.expect_group_offsets().returning(|_| {
        Ok(BTreeMap::from([
            (TopicPartition::new("down", 0), Ok(o(1))),
            (TopicPartition::new("up", 0), Ok(o(1))),
            (
                TopicPartition::new("up", 1),
                Err(PartitionError::from_code(KafkaCode::NOT_COORDINATOR)),
            ),
        ]))
    });
    m.metadata
        .expect_metadata()
        .returning(|_| Ok(metadata(vec![topic("down", 1), topic("up", 2)])));
    m.offsets.expect_watermarks().returning(|p, _| {
        // The answer for "down" is missing altogether, as if the broker dropped it.
        Ok(marks_for(p)
            .into_iter()
            .filter(|(tp, _)| &*tp.topic == "up")
            .collect())
    });
    let (lag, _) = group_lag(&m, "g", &ManualClock::new(), LagOptions::default())
        .await
        .unwrap();
    assert!(!lag.is_complete());
    let unknown: Vec<_> = lag.unknown_partitions().collect();
    assert_eq!(unknown.len(), 2);
    assert_eq!(unknown[0].lag, None);
    assert_eq!(
        unknown[1].unknown_reason.as_deref(),
        Some("committed offset unreadable: NOT_COORDINATOR (16)")
    );
    assert_eq!(lag.total_lag(), 99);
}

#[tokio::test]
async fn errors_other_than_unsupported_propagate() {
    let mut m = Mocks::cannot_describe();
    m.groups.expect_group_offsets().returning(|_| {
        Err(Error::Timeout {
            operation: "list group offsets",
            timeout: std::time::Duration::from_secs(1),
        })
    });
    let result = group_lag(&m, "g", &ManualClock::new(), LagOptions::default()).await;
    assert!(matches!(result, Err(Error::Timeout { .. })));
}

#[tokio::test]
async fn time_lag_from_record_timestamps() {
    let mut m = Mocks::cannot_describe();
    m.offsets
        .expect_record_timestamps()
        .withf(|positions| positions.len() == 1 && positions[0].1 == o(10))
        .returning(|positions| {
            Ok(vec![(
                positions[0].0.clone(),
                Some(Timestamp::from_millis(4_000)),
            )])
        });
    let marks = Some(Watermarks {
        low: o(0),
        high: o(20),
    });
    let mut lag = GroupLag::new(
        "g",
        Timestamp::from_millis(10_000),
        vec![
            PartitionLag::compute(&TopicPartition::new("t", 0), Some(o(10)), marks),
            PartitionLag::compute(&TopicPartition::new("t", 1), Some(o(20)), marks),
            PartitionLag::compute(&TopicPartition::new("t", 2), None, marks),
        ],
    );
    fill_time_lag_from_records(&m, &mut lag).await.unwrap();
    assert_eq!(
        lag.partitions[0].time_lag,
        Some(std::time::Duration::from_secs(6))
    );
    assert_eq!(lag.partitions[1].time_lag, Some(std::time::Duration::ZERO));
    assert_eq!(lag.partitions[2].time_lag, None);
}

#[tokio::test]
async fn all_groups_are_collected_in_name_order() {
    let mut m = Mocks::cannot_describe();
    m.groups.expect_list_groups().returning(|| {
        Ok(vec![
            GroupListing {
                group: "z".into(),
                state: GroupState::Stable,
                is_simple: false,
                group_type: GroupType::Classic,
            },
            GroupListing {
                group: "a".into(),
                state: GroupState::Empty,
                is_simple: false,
                group_type: GroupType::Consumer,
            },
        ])
    });
    m.groups.expect_group_offsets().returning(|group| {
        Ok(BTreeMap::from([(
            TopicPartition::new(group.to_string(), 0),
            Ok(o(1)),
        )]))
    });
    m.metadata
        .expect_metadata()
        .returning(|topics| Ok(metadata(topics.iter().map(|t| topic(t, 1)).collect())));
    m.offsets
        .expect_watermarks()
        .returning(|p, _| Ok(marks_for(p)));
    let all = all_groups_lag(&m, &ManualClock::new(), LagOptions::default())
        .await
        .unwrap();
    assert_eq!(
        all.groups
            .iter()
            .map(|g| g.group.as_str())
            .collect::<Vec<_>>(),
        ["a", "z"]
    );
    assert!(all.failed.is_empty());
    assert!(GroupState::Stable.has_members());
    assert!(!GroupState::Empty.has_members());
}

/// Mocks where `listed` groups list their offsets on topic `orders` (committed at 10 on
/// partition 0), `empty` groups list nothing and `failing` fails; metadata holds `orders` with
/// two partitions and every partition ends at 100.
fn three_kinds() -> Mocks {
    let mut m = Mocks::cannot_describe();
    m.groups
        .expect_group_offsets()
        .returning(|group| match group {
            "failing" => Err(Error::Broker {
                operation: "list consumer group offsets",
                code: KafkaCode::GROUP_AUTHORIZATION_FAILED,
                message: "not allowed".into(),
            }),
            "empty" => Ok(BTreeMap::new()),
            _ => Ok(BTreeMap::from([(
                TopicPartition::new("orders", 0),
                Ok(o(10)),
            )])),
        });
    m.metadata
        .expect_metadata()
        .times(1)
        .returning(|_| Ok(metadata(vec![topic("orders", 2)])));
    m.offsets
        .expect_watermarks()
        .times(1)
        .returning(|p, _| Ok(marks_for(p)));
    m
}

#[tokio::test]
async fn a_failing_group_is_reported_and_the_others_still_come_back() {
    let m = three_kinds();
    let clock = ManualClock::at(Timestamp::from_millis(7));
    let names = ["listed", "failing", "empty", "listed"].map(String::from);
    let all = groups_lag(&m, &names, &clock, LagOptions::default())
        .await
        .unwrap();
    let totals: Vec<(&str, u64, usize)> = all
        .groups
        .iter()
        .map(|g| (g.group.as_str(), g.total_lag(), g.partitions.len()))
        .collect();
    // The broker listed one group's offsets, so an empty list means "no commits": no scan
    // (committed_offsets has no expectation and would panic).
    assert_eq!(totals, [("empty", 0, 0), ("listed", 90, 2)]);
    assert!(
        all.groups
            .iter()
            .all(|g| g.taken_at == Timestamp::from_millis(7))
    );
    assert_eq!(
        all.failed,
        [GroupFailure {
            group: "failing".into(),
            code: Some(KafkaCode::GROUP_AUTHORIZATION_FAILED),
            reason: "list consumer group offsets failed with GROUP_AUTHORIZATION_FAILED (30): not allowed"
                .into(),
        }]
    );
}

#[tokio::test]
async fn when_every_group_fails_nothing_else_is_asked() {
    let mut m = Mocks::cannot_describe();
    m.groups.expect_group_offsets().returning(|_| {
        Err(Error::Timeout {
            operation: "list group offsets",
            timeout: std::time::Duration::from_secs(1),
        })
    });
    let names = ["a", "b"].map(String::from);
    let all = groups_lag(&m, &names, &ManualClock::new(), LagOptions::default())
        .await
        .unwrap();
    assert!(all.groups.is_empty());
    assert_eq!(
        all.failed
            .iter()
            .map(|f| f.group.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
}

#[tokio::test]
async fn many_groups_time_lag_reads_each_partition_once_per_distinct_position() {
    let mut m = Mocks::cannot_describe();
    let mut asked = mockall::Sequence::new();
    // Round one: the lowest position of each partition; round two: the other position of t/0.
    m.offsets
        .expect_record_timestamps()
        .withf(|p| {
            p == [
                (TopicPartition::new("t", 0), o(10)),
                (TopicPartition::new("t", 1), o(3)),
            ]
        })
        .times(1)
        .in_sequence(&mut asked)
        .returning(|p| {
            Ok(vec![
                (p[0].0.clone(), Some(Timestamp::from_millis(1_000))),
                (p[1].0.clone(), None),
            ])
        });
    m.offsets
        .expect_record_timestamps()
        .withf(|p| p == [(TopicPartition::new("t", 0), o(15))])
        .times(1)
        .in_sequence(&mut asked)
        .returning(|p| Ok(vec![(p[0].0.clone(), Some(Timestamp::from_millis(4_000)))]));
    let marks = Some(Watermarks {
        low: o(0),
        high: o(20),
    });
    let at = Timestamp::from_millis(10_000);
    let mut lags = vec![
        GroupLag::new(
            "a",
            at,
            vec![
                PartitionLag::compute(&TopicPartition::new("t", 0), Some(o(10)), marks),
                PartitionLag::compute(&TopicPartition::new("t", 1), Some(o(3)), marks),
            ],
        ),
        GroupLag::new(
            "b",
            at,
            vec![
                PartitionLag::compute(&TopicPartition::new("t", 0), Some(o(15)), marks),
                PartitionLag::compute(&TopicPartition::new("t", 1), Some(o(20)), marks),
            ],
        ),
    ];
    fill_time_lag_of_groups(&m, &mut lags).await.unwrap();
    let secs = |lag: &GroupLag| -> Vec<Option<u64>> {
        lag.partitions
            .iter()
            .map(|r| r.time_lag.map(|d| d.as_secs()))
            .collect()
    };
    assert_eq!(secs(&lags[0]), [Some(9), None]);
    assert_eq!(secs(&lags[1]), [Some(6), Some(0)]);
}

#[test]
fn only_kafkas_own_topics_are_internal() {
    let topic = |name: &str| TopicInfo {
        name: name.into(),
        partitions: vec![PartitionInfo {
            id: 0,
            leader: Some(1),
            replicas: vec![1],
            isr: vec![1],
            error: None,
        }],
        error: None,
    };
    let metadata = ClusterMetadata {
        brokers: Vec::new(),
        controller: None,
        topics: vec![
            topic("__consumer_offsets"),
            topic("__debezium-heartbeat.inventory"),
            topic("__share_group_state"),
            topic("__transaction_state"),
            topic("orders"),
        ],
    };
    let internal: Vec<&str> = metadata
        .topics
        .iter()
        .filter(|t| t.is_internal())
        .map(|t| &*t.name)
        .collect();
    assert_eq!(
        internal,
        [
            "__consumer_offsets",
            "__share_group_state",
            "__transaction_state"
        ]
    );
    assert_eq!(
        metadata.user_partitions(),
        [
            TopicPartition::new("__debezium-heartbeat.inventory", 0),
            TopicPartition::new("orders", 0)
        ]
    );
}
