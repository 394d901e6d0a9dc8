#![allow(clippy::unwrap_used)]
use std::sync::Mutex;

use kafka_ops_core::handler::{HandlerBuilder, handler_fn};
use kafka_ops_core::{ManualClock, Offset};

use super::*;
use kafka_ops_core::dead_letter::Delivered;

#[derive(Default)]
struct Kept(Mutex<Vec<DeadLetter>>);

#[async_trait]
impl DeadLetterSink for Kept {
    async fn send(&self, letter: &DeadLetter) -> Result<Delivered, kafka_ops_core::Error> {
        self.0.lock().unwrap().push(letter.clone());
        Ok(Delivered {
            partition: 0,
            offset: 0,
        })
    }
    fn max_record_bytes(&self) -> usize {
        1_000_000
    }
}

/// A retry topic that takes nothing: every record is larger than it allows.
struct TooSmall;

#[async_trait]
impl DeadLetterSink for TooSmall {
    async fn send(&self, letter: &DeadLetter) -> Result<Delivered, kafka_ops_core::Error> {
        Err(kafka_ops_core::Error::NotAcknowledged {
            topic: letter.topic.clone(),
            source: Box::new(kafka_ops_core::Error::Broker {
                operation: "produce",
                code: kafka_ops_core::KafkaCode::MESSAGE_TOO_LARGE,
                message: "too large".into(),
            }),
        })
    }
    fn max_record_bytes(&self) -> usize {
        1_000_000
    }
}

fn tiers() -> RetryTiers {
    RetryTiers::new([Duration::from_secs(5), Duration::from_secs(30)]).unwrap()
}

fn setup(error: fn() -> HandlerError) -> (impl Handler, Arc<Kept>, Arc<ManualClock>) {
    let sink = Arc::new(Kept::default());
    let clock = Arc::new(ManualClock::at(Timestamp::from_millis(100_000)));
    let handler = HandlerBuilder::new()
        .layer(RetryTopicLayer::new(tiers(), sink.clone()).clock(clock.clone()))
        .handler(handler_fn(
            move |_r: &Record<'_>| async move { Err(error()) },
        ));
    (handler, sink, clock)
}

fn transient() -> HandlerError {
    HandlerError::transient(std::io::Error::other("downstream timeout"))
}

fn as_record(letter: &DeadLetter, offset: i64) -> Record<'static> {
    let mut record = Record::new(letter.topic.clone(), 0, Offset::new(offset).unwrap());
    record.headers = letter.headers.clone();
    record.with_value(letter.value.clone().unwrap())
}

#[test]
fn tiers_are_validated_and_named() {
    assert!(RetryTiers::new([]).is_err());
    assert!(RetryTiers::new([Duration::ZERO]).is_err());
    assert!(RetryTiers::new([Duration::from_secs(5), Duration::from_secs(1)]).is_err());
    let spring = tiers().named(|topic, i| format!("{topic}-retry-{i}"));
    assert_eq!(
        spring.topics("orders"),
        ["orders-retry-0", "orders-retry-1"]
    );
}

#[tokio::test]
async fn transient_failures_climb_the_tiers_then_go_to_the_dead_letter_layer() {
    let (handler, sink, clock) = setup(transient);
    let first = Record::new("orders", 2, Offset::new(41).unwrap()).with_value(b"v".to_vec());
    assert_eq!(handler.handle(&first).await.unwrap(), Outcome::Retried);
    let tier0 = sink.0.lock().unwrap()[0].clone();
    assert_eq!(tier0.topic, "orders.retry.0");
    let state = RetryState::read(&tier0.headers).unwrap().unwrap();
    assert_eq!(
        state,
        RetryState {
            topic: "orders".into(),
            partition: 2,
            offset: 41,
            attempts: 1,
            tier: 0,
            due: Timestamp::from_millis(105_000),
            first_failure: Timestamp::from_millis(100_000),
        }
    );

    // Read from tier 0 before it is due: held, the handler does not run.
    let at_tier0 = as_record(&tier0, 0);
    clock.advance(Duration::from_millis(4_999));
    let held = handler.handle(&at_tier0).await.unwrap_err();
    assert_eq!(
        held.disposition(),
        Disposition::RedeliverAt(Timestamp::from_millis(105_000))
    );
    assert_eq!(sink.0.lock().unwrap().len(), 1);

    // Due: fails again, goes to tier 1 with the original coordinates kept.
    clock.advance(Duration::from_millis(1));
    assert_eq!(handler.handle(&at_tier0).await.unwrap(), Outcome::Retried);
    let tier1 = sink.0.lock().unwrap()[1].clone();
    assert_eq!(tier1.topic, "orders.retry.1");
    let state = RetryState::read(&tier1.headers).unwrap().unwrap();
    assert_eq!(
        (state.topic.as_str(), state.partition, state.offset),
        ("orders", 2, 41)
    );
    assert_eq!((state.attempts, state.tier), (2, 1));
    assert_eq!(state.due, Timestamp::from_millis(135_000));
    assert_eq!(
        tier1
            .headers
            .iter()
            .filter(|h| h.key == names::ATTEMPTS)
            .count(),
        1,
        "retry headers are replaced, not piled up"
    );

    // After the last tier: handed to the dead-letter layer with every attempt counted.
    clock.advance(Duration::from_secs(30));
    let exhausted = handler.handle(&as_record(&tier1, 0)).await.unwrap_err();
    assert_eq!(exhausted.disposition(), Disposition::DeadLetter);
    assert_eq!(exhausted.attempts(), 3);
    assert_eq!(
        exhausted.failure_times(),
        (
            Some(Timestamp::from_millis(100_000)),
            Some(Timestamp::from_millis(135_000))
        )
    );
}

#[tokio::test]
async fn in_place_retries_add_attempts_but_do_not_use_up_tiers() {
    // Each pass retried 4 times in place (a retry layer inside this one).
    let (handler, sink, clock) = setup(|| transient().with_attempts(4));
    let first = Record::new("orders", 0, Offset::new(3).unwrap()).with_value(b"v".to_vec());
    assert_eq!(handler.handle(&first).await.unwrap(), Outcome::Retried);
    let tier0 = sink.0.lock().unwrap()[0].clone();
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        handler.handle(&as_record(&tier0, 0)).await.unwrap(),
        Outcome::Retried
    );
    let tier1 = sink.0.lock().unwrap()[1].clone();
    let state = RetryState::read(&tier1.headers).unwrap().unwrap();
    assert_eq!((state.tier, state.attempts), (1, 8));
    clock.advance(Duration::from_secs(30));
    let exhausted = handler.handle(&as_record(&tier1, 0)).await.unwrap_err();
    assert_eq!(exhausted.disposition(), Disposition::DeadLetter);
    assert_eq!(exhausted.attempts(), 12);
}

#[tokio::test]
async fn permanent_failures_skip_the_tiers() {
    let (handler, sink, _) = setup(|| HandlerError::permanent(std::io::Error::other("bad amount")));
    let record = Record::new("orders", 0, Offset::new(1).unwrap());
    let error = handler.handle(&record).await.unwrap_err();
    assert_eq!(error.disposition(), Disposition::DeadLetter);
    assert_eq!(error.attempts(), 1);
    assert!(sink.0.lock().unwrap().is_empty());
    // Fatal errors pass through untouched.
    let (fatal, _, _) = setup(|| HandlerError::fatal(std::io::Error::other("disk gone")));
    assert_eq!(
        fatal.handle(&record).await.unwrap_err().disposition(),
        Disposition::Undecided
    );
}

#[tokio::test]
async fn a_record_the_retry_topic_refuses_goes_to_the_dead_letter_layer_with_its_failure() {
    let clock = Arc::new(ManualClock::at(Timestamp::from_millis(100_000)));
    let handler = HandlerBuilder::new()
        .layer(RetryTopicLayer::new(tiers(), Arc::new(TooSmall)).clock(clock))
        .handler(handler_fn(|_r: &Record<'_>| async { Err(transient()) }));
    let record = Record::new("orders", 0, Offset::new(1).unwrap()).with_value(b"v".to_vec());
    let error = handler.handle(&record).await.unwrap_err();
    assert_eq!(error.disposition(), Disposition::DeadLetter);
    assert_eq!(error.class(), ErrorClass::Transient);
    assert_eq!(error.cause().to_string(), "downstream timeout");
}

#[tokio::test]
async fn a_retry_asked_for_by_name_goes_to_a_tier_whatever_the_class() {
    let (handler, sink, _) = setup(|| {
        HandlerError::permanent(std::io::Error::other("409 conflict"))
            .with_disposition(Disposition::RetryLater)
    });
    let record = Record::new("orders", 0, Offset::new(1).unwrap()).with_value(b"v".to_vec());
    assert_eq!(handler.handle(&record).await.unwrap(), Outcome::Retried);
    assert_eq!(sink.0.lock().unwrap()[0].topic, "orders.retry.0");
}

#[tokio::test]
async fn a_due_time_beyond_the_tier_delay_is_not_trusted() {
    let (handler, sink, clock) = setup(transient);
    let first = Record::new("orders", 0, Offset::new(1).unwrap()).with_value(b"v".to_vec());
    assert_eq!(handler.handle(&first).await.unwrap(), Outcome::Retried);
    let tier0 = sink.0.lock().unwrap()[0].clone();
    let mut damaged = as_record(&tier0, 0);
    damaged.headers.remove_where(|key| key == names::DUE);
    damaged
        .headers
        .push(names::DUE, Some(i64::MAX.to_string().into_bytes()));
    // Tried now, not held until the header's time.
    assert_eq!(handler.handle(&damaged).await.unwrap(), Outcome::Retried);
    // A writer whose clock runs 30 s ahead of this one's is still waited for.
    let mut ahead = as_record(&tier0, 0);
    ahead.headers.remove_where(|key| key == names::DUE);
    ahead.headers.push(names::DUE, Some(b"135000".to_vec()));
    let held = handler.handle(&ahead).await.unwrap_err();
    assert_eq!(
        held.disposition(),
        Disposition::RedeliverAt(Timestamp::from_millis(135_000))
    );
    // A due time within the tier's delay is still waited for.
    let tier1 = sink.0.lock().unwrap()[1].clone();
    let held = handler.handle(&as_record(&tier1, 0)).await.unwrap_err();
    assert_eq!(
        held.disposition(),
        Disposition::RedeliverAt(Timestamp::from_millis(130_000))
    );
    clock.advance(Duration::from_secs(30));
    let exhausted = handler.handle(&as_record(&tier1, 0)).await.unwrap_err();
    assert_eq!(exhausted.disposition(), Disposition::DeadLetter);
}

#[tokio::test]
async fn the_loop_guard_dead_letters_bad_or_excessive_retry_headers() {
    let (handler, sink, _) = setup(transient);
    let too_many = Record::new("orders.retry.1", 0, Offset::new(1).unwrap())
        .with_header(names::ORIGINAL_TOPIC, b"orders".to_vec())
        .with_header(names::ORIGINAL_PARTITION, b"0".to_vec())
        .with_header(names::ORIGINAL_OFFSET, b"9".to_vec())
        .with_header(names::ATTEMPTS, b"7".to_vec())
        .with_header(names::TIER, b"2".to_vec())
        .with_header(names::DUE, b"0".to_vec())
        .with_header(names::FIRST_FAILURE, b"0".to_vec());
    let error = handler.handle(&too_many).await.unwrap_err();
    assert_eq!(error.disposition(), Disposition::DeadLetter);
    assert!(matches!(
        error.downcast_ref::<RetryGuard>(),
        Some(RetryGuard::PastLastTier { tier: 2, tiers: 2 })
    ));
    let garbled = Record::new("orders.retry.0", 0, Offset::new(1).unwrap())
        .with_header(names::ATTEMPTS, vec![0xff, 0xfe]);
    let error = handler.handle(&garbled).await.unwrap_err();
    assert!(matches!(
        error.downcast_ref::<RetryGuard>(),
        Some(RetryGuard::Unreadable(_))
    ));
    assert!(sink.0.lock().unwrap().is_empty());
}

/// A handler failing transiently behind a tier layer on `budget`, configured by `configure`.
fn budgeted(
    budget: kafka_ops_core::budget::MockBudget,
    configure: impl FnOnce(RetryTopicLayer) -> RetryTopicLayer,
) -> (impl Handler, Arc<Kept>, Arc<ManualClock>) {
    let sink = Arc::new(Kept::default());
    let clock = Arc::new(ManualClock::at(Timestamp::from_millis(100_000)));
    let layer = RetryTopicLayer::new(tiers(), sink.clone())
        .clock(clock.clone())
        .budget(Arc::new(budget));
    let handler = HandlerBuilder::new()
        .layer(configure(layer))
        .handler(crate::test_support::fine_or(transient));
    (handler, sink, clock)
}

/// A budget granting `grants` tier sends, then refusing.
fn granting(grants: usize) -> kafka_ops_core::budget::MockBudget {
    let mut budget = kafka_ops_core::budget::MockBudget::new();
    let mut left = grants;
    budget
        .expect_try_spend()
        .withf(|use_| *use_ == RetryUse::Tier)
        .returning(move |_| {
            let granted = left > 0;
            left = left.saturating_sub(1);
            granted
        });
    budget
}

#[tokio::test]
async fn a_spent_budget_dead_letters_instead_of_sending_to_a_tier() {
    let mut budget = granting(1);
    budget.expect_record_success().never();
    let (handler, sink, _) = budgeted(budget, |layer| layer);
    let record = |offset| Record::new("orders", 0, Offset::new(offset).unwrap());
    assert_eq!(handler.handle(&record(1)).await.unwrap(), Outcome::Retried);
    let spent = handler.handle(&record(2)).await.unwrap_err();
    assert_eq!(spent.disposition(), Disposition::DeadLetter);
    assert_eq!(spent.class(), ErrorClass::Transient);
    assert_eq!(spent.attempts(), 1);
    assert_eq!(spent.cause().to_string(), "downstream timeout");
    assert_eq!(
        sink.0.lock().unwrap().len(),
        1,
        "only the granted one reached a tier"
    );
    // A success is not earned here unless asked: the retry layer inside earns it.
    let fine = record(3).with_value(b"fine".to_vec());
    assert_eq!(handler.handle(&fine).await.unwrap(), Outcome::Processed);
}

#[tokio::test]
async fn a_spent_budget_can_hold_the_record_and_pause_the_consumer_instead() {
    let mut budget = granting(0);
    budget
        .expect_until_available()
        .returning(|| Some(Duration::from_secs(2)));
    let mut consumer = kafka_ops_core::handler::MockConsumerControl::new();
    let mut order = mockall::Sequence::new();
    consumer
        .expect_pause()
        .times(1)
        .in_sequence(&mut order)
        .return_const(());
    consumer
        .expect_resume()
        .times(1)
        .in_sequence(&mut order)
        .return_const(());
    let control: Arc<dyn ConsumerControl> = Arc::new(consumer);
    let (handler, sink, _) = budgeted(budget, |layer| {
        layer.when_budget_spent(WhenBudgetSpent::Pause(control))
    });
    let record = |offset| Record::new("orders", 0, Offset::new(offset).unwrap());
    for offset in 1..=2 {
        let held = handler.handle(&record(offset)).await.unwrap_err();
        assert_eq!(
            held.disposition(),
            Disposition::RedeliverAt(Timestamp::from_millis(102_000))
        );
        assert!(matches!(
            held.downcast_ref::<DlqError>(),
            Some(DlqError::BudgetSpent { retry_after }) if *retry_after == Duration::from_secs(2)
        ));
    }
    assert!(
        sink.0.lock().unwrap().is_empty(),
        "held, neither tiered nor dead-lettered"
    );
    // The downstream is back: the held record succeeds and the consumer resumes, once.
    let fine = record(1).with_value(b"fine".to_vec());
    assert_eq!(handler.handle(&fine).await.unwrap(), Outcome::Processed);
    assert_eq!(handler.handle(&fine).await.unwrap(), Outcome::Processed);
}

#[tokio::test]
async fn a_held_record_that_then_fails_for_good_resumes_the_consumer() {
    let mut budget = granting(0);
    budget
        .expect_until_available()
        .returning(|| Some(Duration::from_secs(2)));
    let mut consumer = kafka_ops_core::handler::MockConsumerControl::new();
    let mut order = mockall::Sequence::new();
    consumer
        .expect_pause()
        .times(1)
        .in_sequence(&mut order)
        .return_const(());
    consumer
        .expect_resume()
        .times(1)
        .in_sequence(&mut order)
        .return_const(());
    let control: Arc<dyn ConsumerControl> = Arc::new(consumer);
    let sink = Arc::new(Kept::default());
    let clock = Arc::new(ManualClock::at(Timestamp::from_millis(100_000)));
    let layer = RetryTopicLayer::new(tiers(), sink.clone())
        .clock(clock)
        .budget(Arc::new(budget))
        .when_budget_spent(WhenBudgetSpent::Pause(control));
    // Times out first; on its redelivery the downstream says the record itself is bad.
    let handler = HandlerBuilder::new()
        .layer(layer)
        .handler(handler_fn(|record: &Record<'_>| {
            let bad = record.value() == Some(&b"bad"[..]);
            async move {
                if bad {
                    Err(HandlerError::permanent(std::io::Error::other("400")))
                } else {
                    Err(transient())
                }
            }
        }));
    let first = Record::new("orders", 0, Offset::new(1).unwrap());
    let held = handler.handle(&first).await.unwrap_err();
    assert!(matches!(held.disposition(), Disposition::RedeliverAt(_)));
    let again = first.with_value(b"bad".to_vec());
    let dead = handler.handle(&again).await.unwrap_err();
    assert_eq!(dead.disposition(), Disposition::DeadLetter);
    // The mock checks that the consumer was resumed, once, after the pause.
}

#[tokio::test]
async fn attempts_read_from_headers_saturate_instead_of_overflowing() {
    let (handler, sink, clock) = setup(transient);
    let first = Record::new("orders", 2, Offset::new(41).unwrap()).with_value(b"v".to_vec());
    assert_eq!(handler.handle(&first).await.unwrap(), Outcome::Retried);
    let tier0 = sink.0.lock().unwrap()[0].clone();
    let mut damaged = as_record(&tier0, 0);
    damaged.headers.remove_where(|key| key == names::ATTEMPTS);
    damaged
        .headers
        .push(names::ATTEMPTS, Some(u32::MAX.to_string().into_bytes()));
    clock.advance(Duration::from_secs(5));
    assert_eq!(handler.handle(&damaged).await.unwrap(), Outcome::Retried);
    let tier1 = sink.0.lock().unwrap()[1].clone();
    let state = RetryState::read(&tier1.headers).unwrap().unwrap();
    assert_eq!((state.attempts, state.tier), (u32::MAX, 1));
}

#[tokio::test]
async fn without_a_retry_layer_the_tier_layer_can_earn_the_successes() {
    let mut budget = granting(0);
    budget.expect_record_success().times(2).return_const(());
    let (handler, _, _) = budgeted(budget, RetryTopicLayer::earn_successes);
    let fine = Record::new("orders", 0, Offset::ZERO).with_value(b"fine".to_vec());
    for _ in 0..2 {
        assert_eq!(handler.handle(&fine).await.unwrap(), Outcome::Processed);
    }
}
