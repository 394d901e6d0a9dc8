use super::*;
use kafka_ops_core::cluster::{
    GroupDescription, GroupMember, GroupState, GroupType, MockClusterQuery, MockGroupQuery,
    PartitionError,
};
use kafka_ops_core::{KafkaCode, ListedOffset, Watermarks};

/// One mock cluster made of the three query mocks.
type Mocks = MockClusterQuery;

fn offset(n: i64) -> Offset {
    Offset::new(n).unwrap()
}

/// A cluster whose partitions hold offsets 0..100, committed nowhere, where a time lookup
/// answers `by_time` for partition 0 and 1 in turn.
fn cluster(by_time: [Result<Option<i64>, PartitionError>; 2]) -> OffsetOps {
    let mut mocks = Mocks::default();
    mocks
        .offsets
        .expect_committed_offsets()
        .returning(|_, partitions| {
            Ok(partitions.iter().map(|tp| (tp.clone(), Ok(None))).collect())
        });
    mocks
        .offsets
        .expect_watermarks()
        .returning(|partitions, _| {
            Ok(partitions
                .iter()
                .map(|tp| {
                    let marks = Watermarks {
                        low: offset(0),
                        high: offset(100),
                    };
                    (tp.clone(), Ok(marks))
                })
                .collect())
        });
    mocks
        .offsets
        .expect_list_offsets()
        .returning(move |queries, _| {
            Ok(queries
                .iter()
                .zip(by_time.clone())
                .map(|((tp, _), answer)| {
                    let listed = answer.map(|found| ListedOffset {
                        offset: found.map(offset),
                        timestamp: None,
                    });
                    (tp.clone(), listed)
                })
                .collect())
        });
    OffsetOps::new(Arc::new(mocks), ClientConfig::new())
}

async fn plan_by_time(ops: &OffsetOps) -> Result<ResetPlan, RecoveryError> {
    let partitions = [
        TopicPartition::new("orders", 0),
        TopicPartition::new("orders", 1),
    ];
    let at = ResetTarget::DateTime(Timestamp::from_millis(1_795_420_800_000));
    ops.plan_reset("billing", &[], &partitions, at).await
}

#[tokio::test]
async fn a_datetime_reset_moves_to_the_end_only_where_no_record_is_that_late() {
    let plan = plan_by_time(&cluster([Ok(Some(40)), Ok(None)]))
        .await
        .unwrap();
    let after: Vec<i64> = plan.changes.iter().map(|c| c.after).collect();
    assert_eq!(after, [40, 100]);
}

#[tokio::test]
async fn a_partition_whose_time_lookup_failed_fails_the_plan() {
    let leaderless = PartitionError::from_code(KafkaCode::LEADER_NOT_AVAILABLE);
    let error = plan_by_time(&cluster([Ok(Some(40)), Err(leaderless.clone())]))
        .await
        .expect_err("a failed lookup must not become the end offset");
    assert!(
        matches!(&error, RecoveryError::PartitionUnreadable { partition, .. } if partition.partition == 1),
        "{error:?}"
    );
    assert!(error.to_string().contains("orders/1"), "{error}");
    let source = std::error::Error::source(&error)
        .and_then(|source| source.downcast_ref::<PartitionError>());
    assert_eq!(source, Some(&leaderless));
}

#[test]
fn targets_parse_and_print() {
    for text in ["earliest", "latest", "offset:42", "shift:-100", "shift:5"] {
        assert_eq!(text.parse::<ResetTarget>().unwrap().to_string(), text);
    }
    let at: ResetTarget = "datetime:2026-11-23T08:00:00Z".parse().unwrap();
    assert_eq!(
        at,
        ResetTarget::DateTime(Timestamp::from_millis(1_795_420_800_000))
    );
    for bad in ["", "soon", "offset:x", "datetime:yesterday", "shift:"] {
        assert!(bad.parse::<ResetTarget>().is_err(), "{bad}");
    }
}

fn describing(state: GroupState, members: usize) -> MockGroupQuery {
    let mut mock = MockGroupQuery::new();
    mock.expect_describe_groups().returning(move |groups| {
        Ok(vec![GroupDescription {
            group: groups[0].clone(),
            state,
            group_type: GroupType::Classic,
            assignor: "range".into(),
            coordinator: Some(1),
            members: (0..members)
                .map(|i| GroupMember {
                    member_id: format!("m{i}"),
                    client_id: format!("billing-{i}"),
                    host: "/10.0.0.7".into(),
                    instance_id: None,
                    assignment: Vec::new(),
                    target_assignment: None,
                })
                .collect(),
            error: None,
        }])
    });
    mock
}

#[tokio::test]
async fn a_group_with_members_is_refused_with_their_names() {
    let error = ensure_group_inactive(
        &describing(GroupState::Stable, 2),
        "billing",
        MembershipCheck::Required,
    )
    .await
    .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("billing-0 (/10.0.0.7)") && text.contains("Stable"),
        "{text}"
    );
    ensure_group_inactive(
        &describing(GroupState::Empty, 0),
        "billing",
        MembershipCheck::Required,
    )
    .await
    .unwrap();
}

/// The refusal `ensure_group_inactive` gives group "g", which must be `CannotVerifyGroup`.
async fn cannot_verify(groups: &MockGroupQuery, check: MembershipCheck) -> RecoveryError {
    let error = ensure_group_inactive(groups, "g", check).await.unwrap_err();
    assert!(
        matches!(&error, RecoveryError::CannotVerifyGroup { group, .. } if group == "g"),
        "{error:?}"
    );
    error
}

#[tokio::test]
async fn an_unverifiable_group_is_refused_unless_told_otherwise() {
    let unsupported = || {
        let mut mock = MockGroupQuery::new();
        mock.expect_describe_groups().returning(|_| {
            Err(Error::Unsupported {
                operation: "describe groups",
                reason: "the broker closed the connection".into(),
            })
        });
        mock
    };
    assert!(matches!(
        ensure_group_inactive(&unsupported(), "g", MembershipCheck::Required).await,
        Err(RecoveryError::CannotVerifyGroup { .. })
    ));
    ensure_group_inactive(&unsupported(), "g", MembershipCheck::SkipWhenUnsupported)
        .await
        .unwrap();
    // An answer that leaves the group out says nothing about its members, whatever the check.
    for check in [
        MembershipCheck::Required,
        MembershipCheck::SkipWhenUnsupported,
    ] {
        let mut silent = MockGroupQuery::new();
        silent
            .expect_describe_groups()
            .returning(|_| Ok(Vec::new()));
        let error = cannot_verify(&silent, check).await;
        assert!(
            error.describe().contains("does not describe the group"),
            "{}",
            error.describe()
        );
    }
}

/// A group answered with an error: only a broker that cannot describe groups may be skipped on
/// the operator's word; a timeout or a moving coordinator says nothing about the members.
#[tokio::test]
async fn only_an_unsupported_description_is_skipped_on_the_operators_word() {
    let answered_with = |code: KafkaCode| {
        let mut mock = MockGroupQuery::new();
        mock.expect_describe_groups().returning(move |groups| {
            Ok(vec![GroupDescription {
                group: groups[0].clone(),
                state: GroupState::Unknown,
                group_type: GroupType::Classic,
                assignor: String::new(),
                coordinator: None,
                members: Vec::new(),
                error: Some(PartitionError::from_code(code)),
            }])
        });
        mock
    };
    for code in [KafkaCode::TIMED_OUT, KafkaCode::NOT_COORDINATOR] {
        for check in [
            MembershipCheck::Required,
            MembershipCheck::SkipWhenUnsupported,
        ] {
            let error = cannot_verify(&answered_with(code), check).await;
            // The broker's answer is carried, not relabelled "unsupported".
            assert!(
                error.describe().contains(&code.to_string()),
                "{}",
                error.describe()
            );
        }
    }
    let unsupported = answered_with(KafkaCode::UNSUPPORTED_VERSION);
    assert!(matches!(
        ensure_group_inactive(&unsupported, "g", MembershipCheck::Required).await,
        Err(RecoveryError::CannotVerifyGroup { .. })
    ));
    ensure_group_inactive(&unsupported, "g", MembershipCheck::SkipWhenUnsupported)
        .await
        .unwrap();
}
