//! Handler layers: retry with backoff, and a circuit breaker wired to the consumer.

use std::sync::Arc;
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

/// Guards a downstream with a [`CircuitBreaker`] and keeps the consumer in step with it: when
/// the breaker opens, the consumer pauses (the poll loop stays alive, the group keeps the
/// member); records that meet the open breaker are held for redelivery when it half-opens, so
/// nothing is lost and nothing spins; the first of them is the half-open probe; when the breaker
/// closes, the consumer resumes.
///
/// Transient and fatal failures count against the downstream; permanent ones (a bad record) say
/// nothing about it and count as answered calls.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer {
    breaker: Arc<CircuitBreaker>,
    clock: Arc<dyn Clock>,
}

impl CircuitBreakerLayer {
    /// A layer over `breaker`, pausing and resuming `consumer` as the breaker opens and closes.
    pub fn new(breaker: Arc<CircuitBreaker>, consumer: Arc<dyn ConsumerControl>) -> Self {
        breaker.on_state_change(move |change| match change.to {
            BreakerState::Open => consumer.pause(),
            BreakerState::Closed => consumer.resume(),
            BreakerState::HalfOpen => {}
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
        let due = self.clock.wall().plus(retry_after);
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
                let retry_after = self
                    .breaker
                    .try_acquire()
                    .err()
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
    use kafka_ops_core::{ManualClock, Offset};
    use std::sync::atomic::{AtomicU32, Ordering};

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
}
