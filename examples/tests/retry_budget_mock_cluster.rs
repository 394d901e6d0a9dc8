//! One retry budget for in-place retries and retry-tier sends, end to end on librdkafka's mock
//! cluster, during a downstream outage in which every call fails. With the budget on the
//! in-place retries alone, every failure still becomes a tier record; with the same budget on
//! the tier layer too, in-place retries and tier sends together take exactly what it holds and
//! the rest goes straight to the dead-letter topic, counted in the budget's stats. With
//! `WhenBudgetSpent::Pause` the consumer pauses with the record held instead, and goes on when
//! the budget refills.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kafka_ops_core::budget::{Budget, BudgetStats};
use kafka_ops_core::dead_letter::{Envelope, headers};
use kafka_ops_core::handler::{HandlerBuilder, HandlerError, Outcome, handler_fn};
use kafka_ops_core::kafka::KafkaDeadLetterSink;
use kafka_ops_core::kafka::driver::{Driver, DriverConfig, DriverHandle, DriverReport};
use kafka_ops_core::testkit::{MockKafka, TestRecord, unique_name};
use kafka_ops_core::{Error, ManualClock, Record};
use kafka_ops_dlq::{DeadLetterLayer, RetryTiers, RetryTopicLayer, WhenBudgetSpent};
use kafka_ops_recovery::{BackoffPolicy, RetryBudget, RetryBudgetConfig, RetryLayer, RetryPolicy};

const RECORDS: i64 = 30;

/// Ten retries (a floor of 1 a second over a 10 s window, nothing earned) on a clock that moves
/// only when told to, so the counts are exact.
fn budget() -> (RetryBudget, ManualClock) {
    let clock = ManualClock::new();
    let config = RetryBudgetConfig {
        min_retries_per_second: 1.0,
        retry_ratio: 0.0,
        window: Duration::from_secs(10),
    };
    let budget = RetryBudget::with_clock(config, Arc::new(clock.clone())).unwrap();
    (budget, clock)
}

struct Run {
    kafka: MockKafka,
    topic: String,
    tier: String,
    group: String,
    calls: Arc<AtomicU64>,
    handle: DriverHandle,
    task: tokio::task::JoinHandle<Result<DriverReport, Error>>,
}

/// Starts a consumer over `RECORDS` records of a one-partition topic and its one retry tier
/// (2 s). Every call fails transiently; the retry layer retries twice in place (within
/// `in_place`, when given) and hands exhausted records to the tier layer `tiers` configures.
async fn start(
    in_place: Option<RetryBudget>,
    tiers: impl FnOnce(RetryTopicLayer, DriverHandle) -> RetryTopicLayer,
) -> Run {
    let kafka = MockKafka::start(1).unwrap();
    let topic = unique_name("orders");
    let group = unique_name("billing");
    let retry_tiers = RetryTiers::new([Duration::from_secs(2)]).unwrap();
    let tier = retry_tiers.topic(&topic, 0);
    for name in [&topic, &tier, &format!("{topic}.dlq")] {
        kafka.create_topic(name, 1).unwrap();
    }
    let records = (0..RECORDS).map(|i| TestRecord::keyed(format!("k{i}"), "order"));
    kafka.produce(&topic, records).await.unwrap();

    let sink = Arc::new(KafkaDeadLetterSink::new(&kafka.client_config()).unwrap());
    let mut policy =
        RetryPolicy::new(BackoffPolicy::constant(Duration::ZERO, 2)).with_retry_tiers();
    if let Some(budget) = in_place {
        policy = policy.with_budget(budget);
    }
    let handle = DriverHandle::new();
    let calls = Arc::new(AtomicU64::new(0));
    let handler = HandlerBuilder::new()
        .layer(DeadLetterLayer::new(
            sink.clone(),
            Envelope::new(&group, "test-instance"),
        ))
        .layer(tiers(
            RetryTopicLayer::new(retry_tiers, sink),
            handle.clone(),
        ))
        .layer(RetryLayer::new(policy))
        .handler(handler_fn({
            let calls = calls.clone();
            move |_record: &Record<'_>| {
                calls.fetch_add(1, Ordering::SeqCst);
                async {
                    Err::<Outcome, _>(HandlerError::transient(std::io::Error::other(
                        "payments API: 503",
                    )))
                }
            }
        }));
    let mut config = DriverConfig::new([topic.clone(), tier.clone()]);
    config.commit_interval = Duration::from_millis(100);
    let driver = Driver::with_handle(
        kafka.consumer_config(&group),
        config,
        handler,
        handle.clone(),
    );
    let task = tokio::spawn(driver.run());
    Run {
        kafka,
        topic,
        tier,
        group,
        calls,
        handle,
        task,
    }
}

impl Run {
    fn dlq(&self) -> String {
        format!("{}.dlq", self.topic)
    }

    async fn count(&self, topic: &str) -> usize {
        self.kafka.read_all(topic).await.unwrap().len()
    }

    async fn committed(&self, topic: &str) -> Option<i64> {
        self.kafka.committed(&self.group, topic, 1).await.unwrap()[0]
    }

    /// Waits (at most a minute) until the source and the tier are committed to their ends and
    /// every source record is in the dead-letter topic, then stops the consumer.
    async fn finish(&mut self, tier_records: i64) -> DriverReport {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let done = self.committed(&self.topic).await == Some(RECORDS)
                && self.committed(&self.tier).await == Some(tier_records)
                && self.count(&self.dlq()).await == RECORDS as usize;
            if done {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the outage was never worked through"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.handle.shutdown();
        (&mut self.task).await.unwrap().unwrap()
    }

    /// Every source record, once, in the dead-letter topic.
    async fn assert_all_dead_lettered(&self) {
        let mut offsets: Vec<i64> = self
            .kafka
            .read_all(&self.dlq())
            .await
            .unwrap()
            .iter()
            .map(|letter| headers::parse(&letter.headers).original_offset.unwrap())
            .collect();
        offsets.sort_unstable();
        assert_eq!(offsets, (0..RECORDS).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_on_in_place_retries_alone_lets_the_outage_flood_the_tiers() {
    let (budget, _clock) = budget();
    let mut run = start(Some(budget.clone()), |tiers, _| tiers).await;
    let report = run.finish(RECORDS).await;
    // The first five records spend the ten retries in place; then every record goes to the
    // tier at once: all thirty of them, and each comes back to fail again.
    assert_eq!(run.count(&run.tier).await, RECORDS as usize);
    run.assert_all_dead_lettered().await;
    assert_eq!(
        budget.stats(),
        BudgetStats {
            in_place_granted: 10,
            in_place_refused: 25 + 30,
            tier_granted: 0,
            tier_refused: 0,
            successes: 0,
        }
    );
    assert_eq!(run.calls.load(Ordering::SeqCst), 5 * 3 + 25 + 30);
    assert_eq!((report.stats.retried, report.stats.dead_lettered), (30, 30));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_budget_for_in_place_retries_and_tiers_sends_the_rest_to_the_dead_letter_topic() {
    let (budget, _clock) = budget();
    let shared = Arc::new(budget.clone());
    let mut run = start(Some(budget.clone()), |tiers, _| tiers.budget(shared)).await;
    let report = run.finish(3).await;
    // Records 0-2 take two retries in place and a tier send each (9); record 3 takes the last
    // retry in place, then neither a retry nor a tier send is left: it and every later record
    // go straight to the dead-letter topic, and so do the three tier records when they fail
    // again.
    assert_eq!(run.count(&run.tier).await, 3);
    run.assert_all_dead_lettered().await;
    assert_eq!(
        budget.stats(),
        BudgetStats {
            in_place_granted: 3 * 2 + 1,
            in_place_refused: 1 + 26 + 3,
            tier_granted: 3,
            tier_refused: 1 + 26,
            successes: 0,
        }
    );
    assert_eq!(run.calls.load(Ordering::SeqCst), 3 * 3 + 2 + 26 + 3);
    assert_eq!((report.stats.retried, report.stats.dead_lettered), (3, 30));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spent_budget_can_pause_the_consumer_until_it_refills() {
    // The budget on the tier sends only, so that the count is the tier's alone: tier records
    // failing again are past the last tier and take nothing from it.
    let (budget, clock) = budget();
    let shared = Arc::new(budget.clone());
    let run = start(None, |tiers, handle| {
        tiers
            .budget(shared)
            .when_budget_spent(WhenBudgetSpent::Pause(Arc::new(handle)))
    })
    .await;
    let dead_lettered = async || -> Vec<i64> {
        run.kafka
            .read_all(&run.dlq())
            .await
            .unwrap()
            .iter()
            .map(|letter| headers::parse(&letter.headers).original_offset.unwrap())
            .collect()
    };
    // Records 0-9 take the ten tier sends; record 10 is held, uncommitted, the consumer paused.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(run.handle.is_paused() && run.committed(&run.topic).await == Some(10)) {
        assert!(Instant::now() < deadline, "never paused at record 10");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It stays so while the budget is spent: the held record comes back every second (the
    // time the budget needs for one retry) and is held again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(run.handle.is_paused());
    assert_eq!(run.committed(&run.topic).await, Some(10));
    assert_eq!(run.count(&run.tier).await, 10);
    let early = dead_lettered().await;
    assert!(
        early.iter().all(|offset| *offset < 10),
        "only tier records, exhausted, were dead-lettered: {early:?}"
    );

    // Five seconds of budget: records 10-14 go to the tier, the consumer resumes, and record
    // 15 is held with the consumer paused again.
    clock.advance(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(run.committed(&run.topic).await == Some(15) && run.handle.is_paused()) {
        assert!(Instant::now() < deadline, "never went on to record 15");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(run.count(&run.tier).await, 15);
    let stats = budget.stats();
    assert_eq!((stats.tier_granted, stats.in_place_granted), (15, 0));
    assert!(
        stats.tier_refused >= 2,
        "refused at records 10 and 15: {stats:?}"
    );
    run.handle.shutdown();
    run.task.await.unwrap().unwrap();
}
