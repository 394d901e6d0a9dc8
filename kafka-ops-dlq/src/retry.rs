//! Retry topics: non-blocking retries in delay tiers.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kafka_ops_core::handler::Layer;
use kafka_ops_core::handler::{Disposition, Handler, HandlerError, Outcome};
use kafka_ops_core::{Clock, ErrorClass, Record, SystemClock, Timestamp};

use kafka_ops_core::dead_letter::retry::{BadRetryHeader, RetryState, names};
use kafka_ops_core::dead_letter::{DeadLetter, DeadLetterSink, PartitionStrategy};

use crate::error::DlqError;

/// Names tier `index` of a topic.
pub type TierNaming = Arc<dyn Fn(&str, usize) -> String + Send + Sync>;

/// The delay tiers and how their topics are named.
#[derive(Clone)]
pub struct RetryTiers {
    delays: Vec<Duration>,
    naming: TierNaming,
}

impl fmt::Debug for RetryTiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryTiers")
            .field("delays", &self.delays)
            .finish_non_exhaustive()
    }
}

impl RetryTiers {
    /// Tiers with these delays, in order, named `<topic>.retry.<index>`. At least one, none
    /// zero, none shorter than the one before.
    pub fn new(delays: impl IntoIterator<Item = Duration>) -> Result<Self, DlqError> {
        let delays: Vec<Duration> = delays.into_iter().collect();
        if delays.is_empty() {
            return Err(DlqError::Config("at least one retry tier is needed".into()));
        }
        if delays.iter().any(Duration::is_zero) || delays.windows(2).any(|w| w[1] < w[0]) {
            return Err(DlqError::Config(format!(
                "retry delays must be positive and non-decreasing: {delays:?}"
            )));
        }
        Ok(RetryTiers {
            delays,
            naming: Arc::new(|topic, tier| format!("{topic}.retry.{tier}")),
        })
    }

    /// Names tier `index` of `topic` your way (Spring's default is `<topic>-retry-<index>`).
    pub fn named(mut self, naming: impl Fn(&str, usize) -> String + Send + Sync + 'static) -> Self {
        self.naming = Arc::new(naming);
        self
    }

    /// The delays.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// The tier topic `index` of `topic`.
    pub fn topic(&self, topic: &str, index: usize) -> String {
        (self.naming)(topic, index)
    }

    /// Every tier topic of `topic`, to subscribe to (and create) beside it.
    pub fn topics(&self, topic: &str) -> Vec<String> {
        (0..self.delays.len())
            .map(|i| self.topic(topic, i))
            .collect()
    }
}

/// The error handed to the dead-letter layer when a record's retry headers are unreadable or
/// name a tier past the last one (a record copied between topics by hand, or tiers
/// reconfigured): it is not retried again, so it cannot loop.
#[derive(Debug, thiserror::Error)]
pub enum RetryGuard {
    /// Headers present but unreadable.
    #[error("retry headers are unreadable: {0}")]
    Unreadable(#[from] BadRetryHeader),
    /// A tier past the last one.
    #[error("record claims retry tier {tier} with only {tiers} retry tiers")]
    PastLastTier {
        /// The tier it claims.
        tier: u32,
        /// Tiers configured.
        tiers: usize,
    },
}

/// Not due yet: the driver holds the partition until then.
#[derive(Debug, thiserror::Error)]
#[error("retry not due until {0}")]
pub struct NotDue(pub Timestamp);

/// Retry topics: non-blocking retries in delay tiers.
///
/// A record that fails transiently is not retried in place (which would stall its partition);
/// it is written to the next *tier* — a topic read after a delay (e.g. 5 s, 30 s, 5 min) — and
/// the source offset moves on. Tier topics are consumed by the same layer: a record whose due
/// time has not come is handed back to the driver with
/// [`RedeliverAt`](Disposition::RedeliverAt), so the driver holds that partition until the head
/// record is due — no busy loop, no sleep in the poll loop, and records behind it (due later)
/// wait with it. A record that fails after the last tier, or fails permanently at any point, is
/// marked [`DeadLetter`](Disposition::DeadLetter) for the [`DeadLetterLayer`](crate::DeadLetterLayer) around this one,
/// which writes it to the *original* topic's dead-letter topic with its original coordinates.
///
/// Compose with the dead-letter layer outside:
///
/// ```
/// # use std::sync::Arc;
/// # use std::time::Duration;
/// use kafka_ops_core::handler::{HandlerBuilder, handler_fn, Outcome};
/// use kafka_ops_core::Record;
/// use kafka_ops_dlq::{RetryTiers, RetryTopicLayer};
/// use kafka_ops_core::dead_letter::{DeadLetterSink, Envelope};
/// use kafka_ops_dlq::DeadLetterLayer;
/// # fn build(sink: Arc<dyn DeadLetterSink>) {
/// let tiers = RetryTiers::new([Duration::from_secs(5), Duration::from_secs(30)]).unwrap();
/// assert_eq!(tiers.topics("orders"), ["orders.retry.0", "orders.retry.1"]);
/// let handler = HandlerBuilder::new()
///     .layer(DeadLetterLayer::new(sink.clone(), Envelope::new("billing", "billing-1")))
///     .layer(RetryTopicLayer::new(tiers, sink))
///     .handler(handler_fn(|_r: &Record<'_>| async { Ok(Outcome::Processed) }));
/// // Subscribe the driver to "orders" and every tier topic.
/// # let _ = handler; }
/// ```
///
/// # Headers (`kafka-ops.retry.*`, UTF-8 decimal text)
///
/// | header | value |
/// |---|---|
/// | `kafka-ops.retry.original-topic` / `-partition` / `-offset` | where the record was first consumed |
/// | `kafka-ops.retry.attempts` | failures so far |
/// | `kafka-ops.retry.tier` | the tier it was written to |
/// | `kafka-ops.retry.due` | when it may be tried again (ms since the epoch) |
/// | `kafka-ops.retry.first-failure` | when it first failed (ms since the epoch) |
/// | `kafka-ops.retry.last-error` | the last error's message (at most 1 KiB) |
#[derive(Clone)]
pub struct RetryTopicLayer {
    tiers: RetryTiers,
    sink: Arc<dyn DeadLetterSink>,
    clock: Arc<dyn Clock>,
    partitioning: PartitionStrategy,
    retry_after: Duration,
}

impl fmt::Debug for RetryTopicLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryTopicLayer")
            .field("tiers", &self.tiers)
            .field("partitioning", &self.partitioning)
            .field("retry_after", &self.retry_after)
            .finish_non_exhaustive()
    }
}

impl RetryTopicLayer {
    /// Tier records are written through `sink` (the dead-letter sink does: idempotent,
    /// acknowledged by all replicas).
    pub fn new(tiers: RetryTiers, sink: Arc<dyn DeadLetterSink>) -> Self {
        RetryTopicLayer {
            tiers,
            sink,
            clock: Arc::new(SystemClock),
            partitioning: PartitionStrategy::default(),
            retry_after: Duration::from_secs(1),
        }
    }

    /// The clock due times are set and compared on.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How tier partitions are chosen (default: the original partition when the tier has it).
    pub fn partitioning(mut self, strategy: PartitionStrategy) -> Self {
        self.partitioning = strategy;
        self
    }

    /// How long after a failed tier write the record is tried again (default 1 s).
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = delay;
        self
    }
}

impl<H: Handler> Layer<H> for RetryTopicLayer {
    type Handler = RetryTopics<H>;
    fn layer(&self, inner: H) -> RetryTopics<H> {
        RetryTopics {
            inner,
            layer: self.clone(),
        }
    }
}

/// The handler [`RetryTopicLayer`] makes.
#[derive(Debug)]
pub struct RetryTopics<H> {
    inner: H,
    layer: RetryTopicLayer,
}

fn to_dead_letter(
    error: HandlerError,
    attempts: u32,
    first: Timestamp,
    now: Timestamp,
) -> HandlerError {
    error
        .with_attempts(attempts)
        .with_failure_times(first, now)
        .with_disposition(Disposition::DeadLetter)
}

impl<H: Handler> RetryTopics<H> {
    /// Writes `record` to tier `index` after its `attempts`-th failure.
    async fn to_tier(
        &self,
        record: &Record<'_>,
        state: Option<&RetryState>,
        index: usize,
        attempts: u32,
        first: Timestamp,
        error: &HandlerError,
    ) -> Result<Outcome, HandlerError> {
        let layer = &self.layer;
        let now = layer.clock.wall();
        let (topic, partition, offset) = match state {
            Some(s) => (s.topic.clone(), s.partition, s.offset),
            None => (
                record.topic.to_string(),
                record.partition,
                record.offset.get(),
            ),
        };
        let target = layer.tiers.topic(&topic, index);
        let due = now.plus(layer.tiers.delays[index]);
        let mut headers = record.headers.clone().into_owned();
        headers.remove_where(|key| key.starts_with(kafka_ops_core::dead_letter::retry::PREFIX));
        let mut set = |name: &'static str, value: String| {
            headers.push(name, Some(value.into_bytes()));
        };
        set(names::ORIGINAL_TOPIC, topic.clone());
        set(names::ORIGINAL_PARTITION, partition.to_string());
        set(names::ORIGINAL_OFFSET, offset.to_string());
        set(names::ATTEMPTS, attempts.to_string());
        set(names::TIER, index.to_string());
        set(names::DUE, due.as_millis().to_string());
        set(names::FIRST_FAILURE, first.as_millis().to_string());
        let mut message = error.cause().to_string();
        if message.len() > 1_024 {
            let mut end = 1_024;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        set(names::LAST_ERROR, message);
        let partitions = layer.sink.partitions(&target).await;
        let letter = DeadLetter {
            partition: layer.partitioning.choose(partition, partitions),
            topic: target,
            key: record.key().map(<[u8]>::to_vec),
            value: record.value().map(<[u8]>::to_vec),
            headers,
            timestamp: record.timestamp.time(),
            truncated_from: None,
        };
        match layer.sink.send(&letter).await {
            Ok(_) => {
                metrics::counter!("kafka_ops_retry_tier_total", "tier" => index.to_string())
                    .increment(1);
                tracing::info!(%topic, partition, offset, tier = %letter.topic, attempts, due = %due,
                    error = %error.cause(), "record sent to a retry tier");
                Ok(Outcome::Retried)
            }
            Err(send_error) => {
                tracing::warn!(error = %send_error, tier = %letter.topic,
                    "retry-tier write failed; the record stays uncommitted and comes back");
                Err(HandlerError::transient(send_error)
                    .with_disposition(Disposition::RedeliverAt(now.plus(layer.retry_after))))
            }
        }
    }
}

#[async_trait]
impl<H: Handler> Handler for RetryTopics<H> {
    async fn handle(&self, record: &Record<'_>) -> Result<Outcome, HandlerError> {
        let layer = &self.layer;
        let tiers = layer.tiers.delays.len();
        let state = match RetryState::read(&record.headers) {
            Ok(state) => state,
            Err(bad) => {
                let now = layer.clock.wall();
                return Err(to_dead_letter(
                    HandlerError::permanent(RetryGuard::from(bad)),
                    1,
                    now,
                    now,
                ));
            }
        };
        if let Some(state) = &state {
            if state.tier as usize >= tiers {
                let now = layer.clock.wall();
                let guard = RetryGuard::PastLastTier {
                    tier: state.tier,
                    tiers,
                };
                return Err(to_dead_letter(
                    HandlerError::permanent(guard),
                    state.attempts,
                    state.first_failure,
                    now,
                ));
            }
            if layer.clock.wall() < state.due {
                return Err(HandlerError::transient(NotDue(state.due))
                    .with_disposition(Disposition::RedeliverAt(state.due)));
            }
        }
        let error = match self.inner.handle(record).await {
            Ok(outcome) => return Ok(outcome),
            Err(error) => error,
        };
        let now = layer.clock.wall();
        let before = state.as_ref().map_or(0, |s| s.attempts);
        let attempts = before + error.attempts().max(1);
        let first = state.as_ref().map_or_else(
            || error.failure_times().0.unwrap_or(now),
            |s| s.first_failure,
        );
        let retry_here = match error.disposition() {
            Disposition::Undecided | Disposition::RetryLater => {
                error.class() == ErrorClass::Transient
            }
            _ => false,
        };
        if !retry_here {
            if error.disposition() == Disposition::Undecided
                && error.class() == ErrorClass::Permanent
            {
                // Permanent failures skip the remaining tiers.
                return Err(to_dead_letter(error, attempts, first, now));
            }
            // Fatal, Stop, Skip, RedeliverAt and DeadLetter pass through as they are.
            return Err(error);
        }
        let index = state.as_ref().map_or(0, |s| s.tier as usize + 1);
        if index >= tiers {
            metrics::counter!("kafka_ops_retry_exhausted_total").increment(1);
            return Err(to_dead_letter(error, attempts, first, now));
        }
        self.to_tier(record, state.as_ref(), index, attempts, first, &error)
            .await
    }
}

#[cfg(test)]
mod tests {
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
        let (handler, sink, _) =
            setup(|| HandlerError::permanent(std::io::Error::other("bad amount")));
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
}
