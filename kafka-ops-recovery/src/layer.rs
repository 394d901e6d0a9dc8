//! Handler layers: retry with backoff, and a circuit breaker wired to the consumer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use kafka_ops_core::handler::Layer;
use kafka_ops_core::handler::{ConsumerControl, Disposition, Handler, HandlerError, Outcome};
use kafka_ops_core::{Clock, ErrorClass, Record, SystemClock};

use crate::backoff::Backoff;
use crate::breaker::{BreakerState, CallOutcome, CircuitBreaker};
use crate::error::BreakerOpen;
use crate::policy::{Decision, RetryPolicy};

/// Retries a failing record in place on the policy's schedule, then hands the policy's decision
/// (retry tier, dead-letter, skip, stop) to the outer layers through the error's disposition,
/// with the attempt count and first/last failure times recorded.
///
/// A failure that already carries a decision (a redelivery time from a circuit breaker, a skip)
/// passes through untouched.
#[derive(Debug, Clone)]
pub struct RetryLayer {
    policy: Arc<RetryPolicy>,
    clock: Arc<dyn Clock>,
}

impl RetryLayer {
    /// A layer applying `policy`.
    pub fn new(policy: RetryPolicy) -> Self {
        RetryLayer {
            policy: Arc::new(policy),
            clock: Arc::new(SystemClock),
        }
    }

    /// Failure times and the elapsed-time limit come from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

impl<H: Handler> Layer<H> for RetryLayer {
    type Handler = Retry<H>;
    fn layer(&self, inner: H) -> Retry<H> {
        Retry {
            inner,
            policy: self.policy.clone(),
            clock: self.clock.clone(),
        }
    }
}

/// The handler [`RetryLayer`] makes.
#[derive(Debug)]
pub struct Retry<H> {
    inner: H,
    policy: Arc<RetryPolicy>,
    clock: Arc<dyn Clock>,
}

#[async_trait]
impl<H: Handler> Handler for Retry<H> {
    async fn handle(&self, record: &Record<'_>) -> Result<Outcome, HandlerError> {
        let mut backoff = Backoff::new(self.policy.backoff, self.clock.clone(), fastrand::u64(..));
        let mut first_failure = None;
        let mut attempts = 0u32;
        loop {
            let error = match self.inner.handle(record).await {
                Ok(outcome) => {
                    if let Some(budget) = &self.policy.budget {
                        budget.record_success();
                    }
                    if attempts > 0 {
                        metrics::counter!("kafka_ops_retry_recovered_total").increment(1);
                    }
                    return Ok(outcome);
                }
                Err(error) => error,
            };
            if error.disposition() != Disposition::Undecided {
                return Err(error);
            }
            attempts += 1;
            let now = self.clock.wall();
            let first = *first_failure.get_or_insert(now);
            let decision = self.policy.decide(&error, &mut backoff);
            match decision {
                Decision::RetryAfter(delay) => {
                    metrics::counter!("kafka_ops_retries_total").increment(1);
                    tracing::debug!(
                        topic = %record.topic, partition = record.partition, offset = %record.offset,
                        attempt = attempts, ?delay, %error, "retrying the record"
                    );
                    // A zero delay retries at once: tokio's timer would round it up to its
                    // next tick (a millisecond or more).
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                }
                other => {
                    let disposition = other.disposition().unwrap_or(Disposition::Undecided);
                    tracing::info!(
                        topic = %record.topic, partition = record.partition, offset = %record.offset,
                        attempts, ?disposition, %error, "giving the record up to outer layers"
                    );
                    return Err(error
                        .with_disposition(disposition)
                        .with_attempts(attempts)
                        .with_failure_times(first, now));
                }
            }
        }
    }
}

/// Guards a downstream with a [`CircuitBreaker`] and keeps the consumer in step with it:
///
/// - when the breaker opens, the consumer pauses (the poll loop stays alive, the group keeps
///   the member); records that meet the open breaker, and the failure that opened it, are held
///   for redelivery when it half-opens, so nothing is lost and nothing spins;
/// - when its open duration ends it half-opens on time, whether or not a record comes to ask
///   (the held ones may have left with their partitions in a rebalance), and the consumer
///   resumes: closing takes
///   [`half_open_calls`](crate::BreakerConfig::half_open_calls) successful probes, and a paused
///   consumer would fetch no records to probe with. The first records through are the probes;
///   records that meet the breaker while every probe is taken are held for a tenth of the open
///   duration, like those meeting it open;
/// - a failed probe opens the breaker again and the consumer pauses again; enough successful
///   probes close it and the consumer keeps fetching.
///
/// Transient and fatal failures count against the downstream; permanent ones (a bad record) say
/// nothing about it and count as answered calls.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer {
    breaker: Arc<CircuitBreaker>,
    clock: Arc<dyn Clock>,
}

impl CircuitBreakerLayer {
    /// A layer over `breaker`, pausing `consumer` while the breaker is open and resuming it
    /// when the breaker half-opens (or is reset).
    pub fn new(breaker: Arc<CircuitBreaker>, consumer: Arc<dyn ConsumerControl>) -> Self {
        // Changes made on two threads may arrive out of order (a fast-failing probe right
        // after the half-open): only one newer than every change applied so far is applied.
        let applied = AtomicU64::new(0);
        let watched = Arc::downgrade(&breaker);
        breaker.on_state_change(move |change| {
            if applied.fetch_max(change.sequence, Ordering::SeqCst) >= change.sequence {
                return;
            }
            if change.to == BreakerState::Open {
                consumer.pause();
                wake_when_open_ends(watched.clone());
            } else if change.from == BreakerState::Open {
                consumer.resume();
            }
        });
        CircuitBreakerLayer {
            breaker,
            clock: Arc::new(SystemClock),
        }
    }

    /// Redelivery times come from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// Asks the breaker for its state once its open duration has ended, so it half-opens (and the
/// consumer resumes) even when no record comes to ask: the held ones may have gone with their
/// partitions in a rebalance, and a paused consumer fetches no others. One short-lived thread
/// per opening, holding the breaker only while it asks.
fn wake_when_open_ends(breaker: Weak<CircuitBreaker>) {
    let spawned = std::thread::Builder::new()
        .name("kafka-ops-breaker-wake".into())
        .spawn(move || {
            loop {
                let wait = match breaker.upgrade().map(|breaker| breaker.rejection()) {
                    Some(Some(rejected)) if rejected.state == BreakerState::Open => {
                        rejected.retry_after
                    }
                    // Half-open, closed or gone: nothing left to wake.
                    _ => return,
                };
                std::thread::sleep(wait.clamp(Duration::from_millis(10), Duration::from_secs(60)));
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "no thread to half-open the breaker on time; the next record will");
    }
}

impl<H: Handler> Layer<H> for CircuitBreakerLayer {
    type Handler = Breaker<H>;
    fn layer(&self, inner: H) -> Breaker<H> {
        Breaker {
            inner,
            breaker: self.breaker.clone(),
            clock: self.clock.clone(),
        }
    }
}

/// The handler [`CircuitBreakerLayer`] makes.
#[derive(Debug)]
pub struct Breaker<H> {
    inner: H,
    breaker: Arc<CircuitBreaker>,
    clock: Arc<dyn Clock>,
}

impl<H> Breaker<H> {
    fn held(&self, retry_after: Duration) -> HandlerError {
        // Redelivery times are whole milliseconds: rounded down, the last fraction of an open
        // duration would bring the record straight back, again and again until it passed.
        let millis = retry_after.as_nanos().div_ceil(1_000_000);
        let wait = Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX));
        let due = self.clock.wall().plus(wait);
        HandlerError::transient(BreakerOpen {
            name: self.breaker.name().to_string(),
            retry_after,
        })
        .with_disposition(Disposition::RedeliverAt(due))
    }
}

#[async_trait]
impl<H: Handler> Handler for Breaker<H> {
    async fn handle(&self, record: &Record<'_>) -> Result<Outcome, HandlerError> {
        let permit = match self.breaker.try_acquire() {
            Ok(permit) => permit,
            Err(rejected) => {
                metrics::counter!("kafka_ops_breaker_rejected_total", "breaker" => self.breaker.name().to_string()).increment(1);
                return Err(self.held(rejected.retry_after));
            }
        };
        let result = self.inner.handle(record).await;
        let outcome = match &result {
            Err(error) if error.class() != ErrorClass::Permanent => CallOutcome::Failure,
            _ => CallOutcome::Success,
        };
        self.breaker.record(permit, outcome);
        match result {
            // The failure that opened the breaker (or failed its probe) waits for the next
            // half-open like the records behind it.
            Err(error)
                if outcome == CallOutcome::Failure
                    && self.breaker.state() == BreakerState::Open =>
            {
                // Only asks: a permit taken here would be a probe no record ever uses, should
                // the open duration end in between.
                let retry_after = self
                    .breaker
                    .rejection()
                    .map_or(Duration::ZERO, |rejected| rejected.retry_after);
                tracing::warn!(%error, ?retry_after, "downstream failing; circuit open");
                Err(self.held(retry_after))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::BackoffPolicy;
    use crate::breaker::{BreakerConfig, SlidingWindow};
    use kafka_ops_core::handler::{HandlerBuilder, MockConsumerControl, handler_fn};
    use kafka_ops_core::{ManualClock, Offset, Timestamp};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::time::Instant;

    fn record() -> Record<'static> {
        Record::new("orders", 0, Offset::ZERO).with_value(b"{}".to_vec())
    }

    #[tokio::test(start_paused = true)]
    async fn retries_in_place_then_hands_the_decision_out() {
        let calls = Arc::new(AtomicU32::new(0));
        let handler = {
            let calls = calls.clone();
            HandlerBuilder::new()
                .layer(RetryLayer::new(RetryPolicy::new(BackoffPolicy::constant(
                    Duration::from_secs(1),
                    2,
                ))))
                .handler(handler_fn(move |_: &Record<'_>| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async { Err::<Outcome, _>(HandlerError::transient("downstream 503")) }
                }))
        };
        let started = tokio::time::Instant::now();
        let error = handler.handle(&record()).await.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 3, "first try and two retries");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(error.disposition(), Disposition::DeadLetter);
        assert_eq!(error.attempts(), 3);
        let (first, last) = error.failure_times();
        assert!(first.is_some() && last >= first);
    }

    #[tokio::test(start_paused = true)]
    async fn a_recovered_record_succeeds_and_decisions_from_inside_stand() {
        let calls = Arc::new(AtomicU32::new(0));
        let flaky = {
            let calls = calls.clone();
            handler_fn(move |_: &Record<'_>| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        Err(HandlerError::transient("blip"))
                    } else {
                        Ok(Outcome::Processed)
                    }
                }
            })
        };
        let layer = RetryLayer::new(RetryPolicy::new(BackoffPolicy::constant(
            Duration::from_millis(10),
            5,
        )));
        let handler = HandlerBuilder::new().layer(layer.clone()).handler(flaky);
        assert_eq!(handler.handle(&record()).await.unwrap(), Outcome::Processed);

        let skip = HandlerBuilder::new()
            .layer(layer)
            .handler(handler_fn(|_: &Record<'_>| async {
                Err::<Outcome, _>(HandlerError::transient("x").with_disposition(Disposition::Skip))
            }));
        assert_eq!(
            skip.handle(&record()).await.unwrap_err().disposition(),
            Disposition::Skip
        );
    }

    #[tokio::test]
    async fn an_open_breaker_pauses_the_consumer_and_holds_records() {
        let clock = Arc::new(ManualClock::new());
        let breaker = Arc::new(
            CircuitBreaker::with_clock(
                "payments",
                BreakerConfig {
                    window: SlidingWindow::Count(4),
                    minimum_calls: 2,
                    open_duration: Duration::from_secs(5),
                    half_open_calls: 1,
                    ..BreakerConfig::default()
                },
                clock.clone(),
            )
            .unwrap(),
        );
        let mut control = MockConsumerControl::new();
        control.expect_pause().times(1).return_const(());
        control.expect_resume().times(1).return_const(());
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let handler = {
            let failing = failing.clone();
            HandlerBuilder::new()
                .layer(
                    CircuitBreakerLayer::new(breaker.clone(), Arc::new(control))
                        .with_clock(clock.clone()),
                )
                .handler(handler_fn(move |_: &Record<'_>| {
                    let fail = failing.load(Ordering::SeqCst);
                    async move {
                        if fail {
                            Err(HandlerError::transient("503"))
                        } else {
                            Ok(Outcome::Processed)
                        }
                    }
                }))
        };
        // The first failure passes through; the second opens the breaker and is held.
        assert_eq!(
            handler.handle(&record()).await.unwrap_err().disposition(),
            Disposition::Undecided
        );
        let held = handler.handle(&record()).await.unwrap_err();
        let due = clock.wall().plus(Duration::from_secs(5));
        assert_eq!(held.disposition(), Disposition::RedeliverAt(due));
        assert_eq!(breaker.state(), BreakerState::Open);
        // Records meeting the open breaker are held too, without calling the downstream.
        let rejected = handler.handle(&record()).await.unwrap_err();
        assert_eq!(rejected.disposition(), Disposition::RedeliverAt(due));
        assert!(rejected.downcast_ref::<BreakerOpen>().is_some());
        // Half-open: the probe goes through, succeeds, and the consumer resumes.
        failing.store(false, Ordering::SeqCst);
        clock.advance(Duration::from_secs(5));
        assert_eq!(handler.handle(&record()).await.unwrap(), Outcome::Processed);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    /// A consumer that only remembers whether it is paused.
    #[derive(Debug, Default)]
    struct Consumer(AtomicBool);

    impl ConsumerControl for Consumer {
        fn pause(&self) {
            self.0.store(true, Ordering::SeqCst);
        }
        fn resume(&self) {
            self.0.store(false, Ordering::SeqCst);
        }
        fn is_paused(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
        fn shutdown(&self) {}
    }

    /// A downstream the test switches between failing and working; with a gate, calls wait at
    /// it until the test lets them through.
    #[derive(Debug, Clone, Default)]
    struct Downstream {
        failing: Arc<AtomicBool>,
        gate: Option<Arc<tokio::sync::Semaphore>>,
        calls: Arc<AtomicU32>,
    }

    #[async_trait]
    impl Handler for Downstream {
        async fn handle(&self, _record: &Record<'_>) -> Result<Outcome, HandlerError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if let Some(gate) = &self.gate {
                gate.acquire().await.unwrap().forget();
            }
            if self.failing.load(Ordering::SeqCst) {
                Err(HandlerError::transient("503"))
            } else {
                Ok(Outcome::Processed)
            }
        }
    }

    /// Default settings (three half-open probes) but opening after two calls.
    fn three_probes() -> BreakerConfig {
        BreakerConfig {
            minimum_calls: 2,
            open_duration: Duration::from_secs(5),
            ..BreakerConfig::default()
        }
    }

    #[test]
    fn an_open_breaker_half_opens_on_time_with_no_record_to_ask() {
        // Real time: the wake-up sleeps on it.
        let breaker = Arc::new(
            CircuitBreaker::new(
                "downstream",
                BreakerConfig {
                    open_duration: Duration::from_millis(100),
                    ..three_probes()
                },
            )
            .unwrap(),
        );
        let consumer = Arc::new(Consumer::default());
        let _layer = CircuitBreakerLayer::new(breaker.clone(), consumer.clone());
        for _ in 0..2 {
            let permit = breaker.try_acquire().unwrap();
            breaker.record(permit, CallOutcome::Failure);
        }
        assert!(consumer.is_paused());
        // The held records went with their partitions: nothing calls the breaker again.
        let deadline = Instant::now() + Duration::from_secs(5);
        while consumer.is_paused() {
            assert!(
                Instant::now() < deadline,
                "still paused after the open duration"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
    }

    /// Two failing records: the first passes through, the second opens the breaker and is held.
    async fn fail_until_open(
        handler: &impl Handler,
        downstream: &Downstream,
        breaker: &CircuitBreaker,
    ) {
        downstream.failing.store(true, Ordering::SeqCst);
        assert_eq!(
            handler.handle(&record()).await.unwrap_err().disposition(),
            Disposition::Undecided
        );
        assert!(matches!(
            handler.handle(&record()).await.unwrap_err().disposition(),
            Disposition::RedeliverAt(_)
        ));
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test]
    async fn half_open_resumes_the_consumer_and_a_failed_probe_pauses_it_again() {
        let clock = Arc::new(ManualClock::new());
        let config = three_probes();
        assert_eq!(config.half_open_calls, 3);
        let breaker =
            Arc::new(CircuitBreaker::with_clock("payments", config, clock.clone()).unwrap());
        let consumer = Arc::new(Consumer::default());
        let downstream = Downstream::default();
        let handler = CircuitBreakerLayer::new(breaker.clone(), consumer.clone())
            .with_clock(clock.clone())
            .layer(downstream.clone());

        fail_until_open(&handler, &downstream, &breaker).await;
        assert!(consumer.is_paused());
        // The open duration ends: the first record is a probe and the consumer fetches again,
        // or the two probes still missing would never arrive.
        clock.advance(Duration::from_secs(5));
        downstream.failing.store(false, Ordering::SeqCst);
        assert_eq!(handler.handle(&record()).await.unwrap(), Outcome::Processed);
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(
            !consumer.is_paused(),
            "half-open must fetch records to probe with"
        );
        for _ in 0..2 {
            assert_eq!(handler.handle(&record()).await.unwrap(), Outcome::Processed);
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(!consumer.is_paused());

        // Again, and this time a probe fails: open, and paused again.
        fail_until_open(&handler, &downstream, &breaker).await;
        assert!(consumer.is_paused());
        clock.advance(Duration::from_secs(5));
        downstream.failing.store(false, Ordering::SeqCst);
        assert_eq!(handler.handle(&record()).await.unwrap(), Outcome::Processed);
        assert!(!consumer.is_paused());
        downstream.failing.store(true, Ordering::SeqCst);
        let held = handler.handle(&record()).await.unwrap_err();
        assert_eq!(
            held.disposition(),
            Disposition::RedeliverAt(clock.wall().plus(Duration::from_secs(5)))
        );
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(consumer.is_paused());
    }

    #[tokio::test]
    async fn records_beyond_the_probes_are_held_while_half_open() {
        let clock = Arc::new(ManualClock::new());
        let breaker = Arc::new(
            CircuitBreaker::with_clock("payments", three_probes(), clock.clone()).unwrap(),
        );
        let consumer = Arc::new(Consumer::default());
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let downstream = Downstream {
            gate: Some(gate.clone()),
            ..Downstream::default()
        };
        let handler = Arc::new(
            CircuitBreakerLayer::new(breaker.clone(), consumer.clone())
                .with_clock(clock.clone())
                .layer(downstream.clone()),
        );
        gate.add_permits(2);
        fail_until_open(&handler, &downstream, &breaker).await;
        clock.advance(Duration::from_secs(5));
        downstream.failing.store(false, Ordering::SeqCst);
        // Three probes in flight at once.
        let probes: Vec<_> = (0..3)
            .map(|_| {
                let handler = handler.clone();
                tokio::spawn(async move { handler.handle(&record()).await })
            })
            .collect();
        while downstream.calls.load(Ordering::SeqCst) < 5 {
            tokio::task::yield_now().await;
        }
        assert!(!consumer.is_paused());
        // A fourth record is held for a tenth of the open duration, without calling the
        // downstream: it neither spins nor is lost.
        let held = handler.handle(&record()).await.unwrap_err();
        assert_eq!(
            held.disposition(),
            Disposition::RedeliverAt(clock.wall().plus(Duration::from_millis(500)))
        );
        assert!(held.downcast_ref::<BreakerOpen>().is_some());
        assert_eq!(downstream.calls.load(Ordering::SeqCst), 5);
        gate.add_permits(3);
        for probe in probes {
            assert_eq!(probe.await.unwrap().unwrap(), Outcome::Processed);
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        // Redelivered, it goes through.
        gate.add_permits(1);
        assert_eq!(handler.handle(&record()).await.unwrap(), Outcome::Processed);
        assert!(!consumer.is_paused());
    }

    /// A clock that, once armed, moves forward right after its next reading: it puts time
    /// between two readings the layer takes.
    #[derive(Debug)]
    struct JumpingClock {
        clock: ManualClock,
        jump: Mutex<Option<Duration>>,
    }

    impl Clock for JumpingClock {
        fn now(&self) -> Instant {
            let now = self.clock.now();
            if let Some(by) = self.jump.lock().unwrap().take() {
                self.clock.advance(by);
            }
            now
        }
        fn wall(&self) -> Timestamp {
            self.clock.wall()
        }
    }

    #[tokio::test]
    async fn the_open_duration_ending_while_a_failure_is_held_loses_no_probe() {
        let clock = Arc::new(JumpingClock {
            clock: ManualClock::new(),
            jump: Mutex::new(None),
        });
        let breaker = Arc::new(
            CircuitBreaker::with_clock(
                "payments",
                BreakerConfig {
                    window: SlidingWindow::Count(4),
                    minimum_calls: 1,
                    open_duration: Duration::from_secs(5),
                    half_open_calls: 1,
                    ..BreakerConfig::default()
                },
                clock.clone(),
            )
            .unwrap(),
        );
        let consumer = Arc::new(Consumer::default());
        let downstream = Downstream::default();
        let handler = CircuitBreakerLayer::new(breaker.clone(), consumer.clone())
            .with_clock(clock.clone())
            .layer(downstream.clone());
        // The open duration ends just after the layer saw the breaker open, before it asks how
        // long to hold the failure.
        {
            let clock = clock.clone();
            let armed = AtomicBool::new(false);
            breaker.on_state_change(move |change| {
                if change.to == BreakerState::Open && !armed.swap(true, Ordering::SeqCst) {
                    *clock.jump.lock().unwrap() = Some(Duration::from_secs(5));
                }
            });
        }
        downstream.failing.store(true, Ordering::SeqCst);
        let held = handler.handle(&record()).await.unwrap_err();
        assert_eq!(held.disposition(), Disposition::RedeliverAt(clock.wall()));
        // Redelivered at once, it is the probe: nothing else took it.
        downstream.failing.store(false, Ordering::SeqCst);
        assert_eq!(handler.handle(&record()).await.unwrap(), Outcome::Processed);
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(!consumer.is_paused());
    }

    #[tokio::test]
    async fn a_record_held_for_less_than_a_millisecond_does_not_come_straight_back() {
        let clock = Arc::new(ManualClock::new());
        let breaker = Arc::new(
            CircuitBreaker::with_clock("payments", three_probes(), clock.clone()).unwrap(),
        );
        let downstream = Downstream::default();
        let handler = CircuitBreakerLayer::new(breaker.clone(), Arc::new(Consumer::default()))
            .with_clock(clock.clone())
            .layer(downstream.clone());
        fail_until_open(&handler, &downstream, &breaker).await;
        clock.advance(Duration::from_secs(5) - Duration::from_micros(300));
        let held = handler.handle(&record()).await.unwrap_err();
        assert_eq!(
            held.downcast_ref::<BreakerOpen>()
                .map(|open| open.retry_after),
            Some(Duration::from_micros(300))
        );
        assert_eq!(
            held.disposition(),
            Disposition::RedeliverAt(clock.wall().plus(Duration::from_millis(1)))
        );
    }
}
