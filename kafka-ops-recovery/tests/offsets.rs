//! Offset operations against the mock cluster (data paths) and the real cluster (group
//! description, by-time offsets).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_ops_core::cluster::OffsetQuery;
use kafka_ops_core::handler::{Outcome, handler_fn};
use kafka_ops_core::kafka::driver::{Driver, DriverConfig};
use kafka_ops_core::testkit::{self, MockKafka, RealKafka, TestRecord, unique_name};
use kafka_ops_core::{Offset, Record, Timestamp, TopicPartition};
use kafka_ops_recovery::{DrainProgress, OffsetChange};
use kafka_ops_recovery::{MembershipCheck, OffsetOps, OffsetsBackup, RecoveryError, ResetTarget};

async fn committed<Q: OffsetQuery>(
    cluster: &Q,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Vec<Option<i64>> {
    testkit::committed(cluster, group, topic, partitions)
        .await
        .unwrap()
}

/// 3 partitions of 20 records; the group committed 5 and 10 on the first two, nothing on the third.
async fn setup() -> (MockKafka, String, String) {
    let kafka = MockKafka::start(3).unwrap();
    let topic = unique_name("orders");
    kafka.create_topic(&topic, 3).unwrap();
    for p in 0..3 {
        let records = (0..20).map(|i| TestRecord::keyed(format!("k{i}"), "v").to_partition(p));
        kafka.produce(&topic, records).await.unwrap();
    }
    let group = unique_name("billing");
    kafka
        .commit(
            &group,
            &[
                (
                    TopicPartition::new(topic.as_str(), 0),
                    Offset::new(5).unwrap(),
                ),
                (
                    TopicPartition::new(topic.as_str(), 1),
                    Offset::new(10).unwrap(),
                ),
            ],
        )
        .await
        .unwrap();
    (kafka, topic, group)
}

fn afters(changes: &[OffsetChange]) -> Vec<i64> {
    changes.iter().map(|c| c.after).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_reset_target_plans_before_and_after_and_applies() {
    let (kafka, topic, group) = setup().await;
    let ops = OffsetOps::new(Arc::new(kafka.cluster().unwrap()), kafka.client_config());
    let topics = [topic.clone()];
    let plan = |target| {
        let ops = ops.clone();
        let (group, topics) = (group.clone(), topics.clone());
        async move { ops.plan_reset(&group, &topics, &[], target).await.unwrap() }
    };
    let earliest = plan(ResetTarget::Earliest).await;
    assert_eq!(
        earliest
            .changes
            .iter()
            .map(|c| c.before)
            .collect::<Vec<_>>(),
        vec![Some(5), Some(10), None]
    );
    assert_eq!(afters(&earliest.changes), vec![0, 0, 0]);
    assert_eq!(
        afters(&plan(ResetTarget::Latest).await.changes),
        vec![20, 20, 20]
    );
    assert_eq!(
        afters(&plan(ResetTarget::Offset(15)).await.changes),
        vec![15, 15, 15]
    );
    let beyond = plan(ResetTarget::Offset(99)).await;
    assert_eq!(afters(&beyond.changes), vec![20, 20, 20]);
    assert!(beyond.changes.iter().all(|c| c.clamped));
    let back = plan(ResetTarget::ShiftBy(-7)).await;
    assert_eq!(afters(&back.changes), vec![0, 3, 0]);
    assert_eq!(
        back.changes.iter().map(|c| c.clamped).collect::<Vec<_>>(),
        vec![true, false, true]
    );

    // A plan is a dry run: nothing changed yet.
    assert_eq!(
        committed(&kafka.cluster().unwrap(), &group, &topic, 3).await,
        vec![Some(5), Some(10), None]
    );
    // One partition only.
    let one = ops
        .plan_reset(
            &group,
            &[],
            &[TopicPartition::new(topic.as_str(), 1)],
            ResetTarget::ShiftBy(4),
        )
        .await
        .unwrap();
    // The mock cluster cannot describe groups: the caller must accept not checking for members.
    assert!(matches!(
        ops.apply(&one, MembershipCheck::Required).await,
        Err(RecoveryError::CannotVerifyGroup { .. })
    ));
    ops.apply(&one, MembershipCheck::SkipWhenUnsupported)
        .await
        .unwrap();
    assert_eq!(
        committed(&kafka.cluster().unwrap(), &group, &topic, 3).await,
        vec![Some(5), Some(14), None]
    );

    let missing = ops
        .plan_reset(&group, &[unique_name("nope")], &[], ResetTarget::Earliest)
        .await;
    assert!(matches!(missing, Err(RecoveryError::Config(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn export_then_import_restores_the_offsets() {
    let (kafka, topic, group) = setup().await;
    let ops = OffsetOps::new(Arc::new(kafka.cluster().unwrap()), kafka.client_config());
    let backup = ops.export(&group).await.unwrap();
    assert_eq!(
        backup.offsets[&topic]
            .clone()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![(0, 5), (1, 10)]
    );
    // Through a file's JSON.
    let json = serde_json::to_string_pretty(&backup).unwrap();
    let restored: OffsetsBackup = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, backup);

    let wipe = ops
        .plan_reset(
            &group,
            std::slice::from_ref(&topic),
            &[],
            ResetTarget::Latest,
        )
        .await
        .unwrap();
    ops.apply(&wipe, MembershipCheck::SkipWhenUnsupported)
        .await
        .unwrap();
    assert_eq!(
        committed(&kafka.cluster().unwrap(), &group, &topic, 3).await,
        vec![Some(20), Some(20), Some(20)]
    );

    let import = ops.plan_import(&restored, None).await.unwrap();
    assert_eq!(
        import
            .changes
            .iter()
            .map(|c| (c.before, c.after))
            .collect::<Vec<_>>(),
        vec![(Some(20), 5), (Some(20), 10)]
    );
    ops.apply(&import, MembershipCheck::SkipWhenUnsupported)
        .await
        .unwrap();
    // Partition 2 was never in the backup and keeps what it has now.
    assert_eq!(
        committed(&kafka.cluster().unwrap(), &group, &topic, 3).await,
        vec![Some(5), Some(10), Some(20)]
    );

    // A backup older than the log: offsets outside it now are clamped, and said to be.
    let mut stale = restored.clone();
    stale.offsets.get_mut(&topic).unwrap().insert(0, 500);
    stale.offsets.get_mut(&topic).unwrap().insert(1, -3);
    let plan = ops.plan_import(&stale, None).await.unwrap();
    assert_eq!(
        plan.changes
            .iter()
            .map(|c| (c.partition, c.after, c.clamped))
            .collect::<Vec<_>>(),
        vec![(0, 20, true), (1, 0, true)]
    );
    // A partition the topic no longer has is an error, not a commit into nowhere.
    let mut gone = restored.clone();
    gone.offsets.get_mut(&topic).unwrap().insert(7, 1);
    let error = ops.plan_import(&gone, None).await.unwrap_err();
    assert!(error.to_string().contains(topic.as_str()), "{error}");

    // The same offsets into another group.
    let copy = unique_name("billing-copy");
    let plan = ops.plan_import(&restored, Some(&copy)).await.unwrap();
    ops.apply(&plan, MembershipCheck::SkipWhenUnsupported)
        .await
        .unwrap();
    assert_eq!(
        committed(&kafka.cluster().unwrap(), &copy, &topic, 3).await,
        vec![Some(5), Some(10), None]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_for_drain_follows_a_consumer_to_zero_and_times_out_without_one() {
    let (kafka, topic, group) = setup().await;
    let ops = OffsetOps::new(Arc::new(kafka.cluster().unwrap()), kafka.client_config());
    // Nobody consumes: the wait ends with the lag still there.
    let error = ops
        .wait_for_drain(
            &group,
            Duration::from_millis(600),
            Duration::from_millis(200),
            |_| {},
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, RecoveryError::NotDrained { lag: 25, .. }),
        "{error}"
    );

    // A group without any committed offset (a misspelt name) is never "drained".
    let error = ops
        .wait_for_drain(
            &unique_name("bilings"),
            Duration::from_millis(600),
            Duration::from_millis(200),
            |_| {},
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, RecoveryError::NoCommittedOffsets { .. }),
        "{error}"
    );

    // Only the partitions the group committed on count; start the third at its end.
    kafka
        .commit(
            &group,
            &[(
                TopicPartition::new(topic.as_str(), 2),
                Offset::new(20).unwrap(),
            )],
        )
        .await
        .unwrap();
    let driver = Driver::new(
        kafka.consumer_config(&group),
        DriverConfig::new([topic.as_str()]),
        handler_fn(|_: &Record<'_>| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(Outcome::Processed)
        }),
    );
    let handle = driver.handle();
    let run = tokio::spawn(driver.run());
    let seen: Arc<Mutex<Vec<DrainProgress>>> = Arc::default();
    let waited = {
        let seen = seen.clone();
        ops.wait_for_drain(
            &group,
            Duration::from_secs(60),
            Duration::from_millis(100),
            move |p| seen.lock().unwrap().push(p),
        )
        .await
        .unwrap()
    };
    handle.shutdown();
    run.await.unwrap().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.first().unwrap().lag, 25);
    assert_eq!(seen.last().unwrap().lag, 0);
    assert!(
        seen.windows(2).all(|w| w[1].lag <= w[0].lag),
        "lag only went down"
    );
    assert!(waited >= seen.first().unwrap().elapsed);
}

#[tokio::test(flavor = "multi_thread")]
async fn on_the_real_cluster_a_group_resets_to_a_datetime_only_once_it_is_empty() {
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("events");
    kafka.create_topic(&topic, 1).await.unwrap();
    // Four records, then six ten seconds later (create time): a time between finds offset 4.
    let base = Timestamp::from_system_time(std::time::SystemTime::now()).as_millis() - 600_000;
    let records = (0..10).map(|i| {
        let at = if i < 4 { base + i } else { base + 10_000 + i };
        TestRecord::keyed(format!("k{i}"), "v")
            .to_partition(0)
            .at(at)
    });
    kafka.produce(&topic, records).await.unwrap();
    let group = unique_name("reader");
    let tp = TopicPartition::new(topic.as_str(), 0);
    kafka
        .commit(&group, &[(tp.clone(), Offset::new(9).unwrap())])
        .await
        .unwrap();
    let ops = OffsetOps::new(Arc::new(kafka.cluster()), kafka.client_config());
    let target = ResetTarget::DateTime(Timestamp::from_millis(base + 5_000));
    let plan = ops
        .plan_reset(&group, std::slice::from_ref(&topic), &[], target)
        .await
        .unwrap();
    assert_eq!(
        (plan.changes[0].before, plan.changes[0].after),
        (Some(9), 4)
    );

    // A member is consuming: the real broker describes it, and the reset is refused.
    let member = testkit::Subscriber::join(&kafka.consumer_config(&group), &topic).unwrap();
    member.wait_assigned(Duration::from_secs(30)).unwrap();
    let refused = ops
        .apply(&plan, MembershipCheck::Required)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, RecoveryError::GroupActive { members, .. } if members.len() == 1),
        "{refused}"
    );
    drop(member);

    // Once it left, the strict check passes and the offset moves.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match ops.apply(&plan, MembershipCheck::Required).await {
            Ok(_) => break,
            Err(RecoveryError::GroupActive { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(
        kafka.committed(&group, &topic, 1).await.unwrap(),
        vec![Some(4)]
    );
}
