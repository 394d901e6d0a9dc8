//! Retry topics: non-blocking retries in delay tiers.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use kafka_ops_core::budget::{Budget, RetryUse};
use kafka_ops_core::handler::Layer;
use kafka_ops_core::handler::{ConsumerControl, Disposition, Handler, HandlerError, Outcome};
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

/// What the retry-tier layer does with a transient failure once the shared retry budget is
/// spent.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum WhenBudgetSpent {
    /// Dead-letter it now, with its error and attempts as they are (the default): during an
    /// outage the dead-letter topic holds what the tiers could not take, to be replayed.
    #[default]
    DeadLetter,
    /// Hold it (uncommitted; with per-partition ordering its partition waits behind it) and
    /// pause the consumer until the budget has a retry again; the consumer resumes as soon as
    /// a record ends other than held for redelivery (it succeeded, got a tier, was
    /// dead-lettered).
    Pause(Arc<dyn ConsumerControl>),
}

impl fmt::Debug for WhenBudgetSpent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WhenBudgetSpent::DeadLetter => "DeadLetter",
            WhenBudgetSpent::Pause(_) => "Pause",
        })
    }
}

/// Retry topics: non-blocking retries in delay tiers.
///
/// A record that fails transiently is not retried in place (which would stall its partition);
/// it is written to the next *tier* — a topic read after a delay (e.g. 5 s, 30 s, 5 min) — and
/// the source offset moves on. Tier topics are consumed by the same layer: a record whose due
/// time has not come is handed back to the driver with
/// [`RedeliverAt`](Disposition::RedeliverAt), so the driver holds that partition until the head
/// record is due — no busy loop, no sleep in the poll loop, and records behind it (due later)
/// wait with it. A failure marked [`RetryLater`](Disposition::RetryLater) goes to the next tier
/// whatever its class. A due time further off than the tier's delay plus a minute of clock skew
/// is not trusted: that record is tried at once. A record that fails after the last tier, fails
/// permanently at any point, or that the tier topic refuses for good (too large with the retry
/// headers), is marked [`DeadLetter`](Disposition::DeadLetter) for the
/// [`DeadLetterLayer`](crate::DeadLetterLayer) around this one, which writes it to the
/// *original* topic's dead-letter topic with its original coordinates.
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
///
/// # A shared retry budget
///
/// Tier sends are retries too: during a downstream outage every transient failure would go to
/// a tier, however the in-place retries are limited. With a [`budget`](Self::budget) — the same
/// one the retry layer inside spends from (kafka-ops-recovery's `RetryBudget` implements core's
/// [`Budget`]) — each tier send takes a retry from it, and once it is spent the record is
/// dead-lettered at once or held with the consumer paused ([`WhenBudgetSpent`]). The budget's
/// `stats()` count the grants and refusals of each use; the
/// `kafka_ops_retry_budget_spent_total{action}` counter counts what this layer did about them.
#[derive(Clone)]
pub struct RetryTopicLayer {
    tiers: RetryTiers,
    sink: Arc<dyn DeadLetterSink>,
    clock: Arc<dyn Clock>,
    partitioning: PartitionStrategy,
    retry_after: Duration,
    budget: Option<Arc<dyn Budget>>,
    when_spent: WhenBudgetSpent,
    earn: bool,
    paused: Arc<AtomicBool>,
}

impl fmt::Debug for RetryTopicLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryTopicLayer")
            .field("tiers", &self.tiers)
            .field("partitioning", &self.partitioning)
            .field("retry_after", &self.retry_after)
            .field("budget", &self.budget)
            .field("when_spent", &self.when_spent)
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
            budget: None,
            when_spent: WhenBudgetSpent::default(),
            earn: false,
            paused: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Each tier send takes a retry from `budget`; share it with the in-place retries so both
    /// together stay within it. Successes are earned where the retry layer holding the same
    /// budget sees them; see [`earn_successes`](Self::earn_successes) for stacks without one.
    pub fn budget(mut self, budget: Arc<dyn Budget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// What happens to a failure once the budget is spent (default: dead-letter it).
    pub fn when_budget_spent(mut self, when: WhenBudgetSpent) -> Self {
        self.when_spent = when;
        self
    }

    /// This layer records each record that succeeds in the budget: for stacks with no retry
    /// layer on the same budget (with one, a success would be earned twice).
    pub fn earn_successes(mut self) -> Self {
        self.earn = true;
        self
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
        error: HandlerError,
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
            // One the cluster refuses for good (a record too large once the retry headers are
            // on it) goes to the dead-letter layer, whose envelope truncates what does not fit.
            Err(send_error) if send_error.class() != ErrorClass::Transient => {
                tracing::warn!(error = %send_error, tier = %letter.topic, topic = %topic,
                    partition, offset, "retry tier refuses the record; dead-lettering it instead");
                Err(to_dead_letter(error, attempts, first, now))
            }
            Err(send_error) => Err(crate::layer::write_failed(
                record,
                send_error,
                now.plus(layer.retry_after),
                &letter.topic,
            )),
        }
    }
}

impl<H> RetryTopics<H> {
    /// The failure a spent budget turns `error` into.
    fn budget_spent(
        &self,
        record: &Record<'_>,
        budget: &dyn Budget,
        error: HandlerError,
        attempts: u32,
        first: Timestamp,
    ) -> HandlerError {
        let layer = &self.layer;
        let now = layer.clock.wall();
        match &layer.when_spent {
            WhenBudgetSpent::Pause(consumer) => {
                metrics::counter!("kafka_ops_retry_budget_spent_total", "action" => "pause")
                    .increment(1);
                if !layer.paused.swap(true, Ordering::SeqCst) {
                    tracing::warn!("retry budget spent; pausing the consumer until it refills");
                    consumer.pause();
                }
                let wait = budget.until_available().unwrap_or(layer.retry_after);
                HandlerError::transient(DlqError::BudgetSpent { retry_after: wait })
                    .with_disposition(Disposition::RedeliverAt(now.plus(wait)))
            }
            WhenBudgetSpent::DeadLetter => {
                metrics::counter!("kafka_ops_retry_budget_spent_total", "action" => "dead_letter")
                    .increment(1);
                tracing::warn!(topic = %record.topic, partition = record.partition,
                    offset = record.offset.get(), error = %error.cause(),
                    "retry budget spent; dead-lettering instead of sending to a retry tier");
                to_dead_letter(error, attempts, first, now)
            }
        }
    }

    /// Resumes the consumer this layer paused, now that a record ended other than held.
    fn resume(&self) {
        if let WhenBudgetSpent::Pause(consumer) = &self.layer.when_spent
            && self.layer.paused.swap(false, Ordering::SeqCst)
        {
            tracing::info!("retry budget refilled; resuming the consumer");
            consumer.resume();
        }
    }
}

/// How far ahead of this instance's clock another instance's may run before a due time it wrote
/// is no longer trusted.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

#[async_trait]
impl<H: Handler> Handler for RetryTopics<H> {
    async fn handle(&self, record: &Record<'_>) -> Result<Outcome, HandlerError> {
        let result = self.route(record).await;
        // The consumer stays paused only while records wait to be delivered again (for the
        // budget, or for their turn): one that ends any other way — processed, sent to a tier,
        // dead-lettered, passed on — resumes it, or a held record that then failed for good
        // would leave the consumer paused with nothing left to resume it.
        let held = matches!(&result, Err(error) if matches!(error.disposition(), Disposition::RedeliverAt(_)));
        if !held {
            self.resume();
        }
        result
    }
}

impl<H: Handler> RetryTopics<H> {
    /// The record's way through the tiers: processed, sent to the next tier, dead-lettered,
    /// or held for redelivery.
    async fn route(&self, record: &Record<'_>) -> Result<Outcome, HandlerError> {
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
            let now = layer.clock.wall();
            // A due time further off than the tier's whole delay and the clock skew allowed
            // between instances cannot come from a writer that agrees with this clock (a
            // clock far ahead, a damaged header): the record is tried now rather than hold the
            // tier's partition that long.
            let latest = now
                .plus(layer.tiers.delays[state.tier as usize])
                .plus(MAX_CLOCK_SKEW);
            let trusted = state.due <= latest;
            if !trusted {
                tracing::warn!(topic = %record.topic, partition = record.partition,
                    offset = record.offset.get(), due = %state.due,
                    "retry record due further off than its tier's delay; trying it now");
            } else if now < state.due {
                return Err(HandlerError::transient(NotDue(state.due))
                    .with_disposition(Disposition::RedeliverAt(state.due)));
            }
        }
        let error = match self.inner.handle(record).await {
            Ok(outcome) => {
                if let Some(budget) = &layer.budget
                    && layer.earn
                {
                    budget.record_success();
                }
                return Ok(outcome);
            }
            Err(error) => error,
        };
        let now = layer.clock.wall();
        let before = state.as_ref().map_or(0, |s| s.attempts);
        let attempts = before.saturating_add(error.attempts().max(1));
        let first = state.as_ref().map_or_else(
            || error.failure_times().0.unwrap_or(now),
            |s| s.first_failure,
        );
        let retry_here = match error.disposition() {
            // Asked for by name (a recovery rule, the handler): whatever the class.
            Disposition::RetryLater => true,
            Disposition::Undecided => error.class() == ErrorClass::Transient,
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
        if let Some(budget) = &layer.budget {
            if !budget.try_spend(RetryUse::Tier) {
                return Err(self.budget_spent(record, budget.as_ref(), error, attempts, first));
            }
            self.resume();
        }
        self.to_tier(record, state.as_ref(), index, attempts, first, error)
            .await
    }
}

#[cfg(test)]
mod tests;
