//! The dead-letter layer: what the inner handler gives up on is written to the dead-letter
//! topic, and only then does the record count as done.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kafka_ops_core::handler::Layer;
use kafka_ops_core::handler::{Disposition, Handler, HandlerError, Outcome};
use kafka_ops_core::{ErrorClass, Record, Timestamp};

use kafka_ops_core::dead_letter::{DeadLetterSink, Envelope};

use crate::error::DlqError;
use crate::limit::{DeadLetterLimit, DeadLetterLimiter, LimitBreach};

/// Routes failed records to a [`DeadLetterSink`].
///
/// A failure is dead-lettered when its disposition is
/// [`DeadLetter`](Disposition::DeadLetter), or when it is undecided and permanent (bad data
/// will not get better). Once the sink has acknowledged it the record ends as
/// [`Outcome::DeadLettered`] and the driver may commit past it. Until then nothing is
/// committed: a transient sink failure (a broker down, a timeout) comes back as a transient
/// error asking the driver to redeliver the record after `retry_after`; a record too large to
/// write even truncated, or a write the cluster refuses for good (a topic limit below the
/// record, a topic this client may not write), stops the consumer ([`Disposition::Stop`])
/// rather than lose the record or run its handler again forever.
///
/// With a [`limit`](Self::limit), a failure that would take its partition past the
/// [`DeadLetterLimit`] is not routed: the consumer stops on it with
/// [`DlqError::LimitReached`] (a fatal error with [`Disposition::Stop`]), so the group's
/// committed offset stays at that record, right after the last one routed.
#[derive(Clone)]
pub struct DeadLetterLayer {
    sink: Arc<dyn DeadLetterSink>,
    envelope: Envelope,
    route_permanent: bool,
    retry_after: Duration,
    limiter: Option<Arc<DeadLetterLimiter>>,
}

impl fmt::Debug for DeadLetterLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterLayer")
            .field("envelope", &self.envelope)
            .field("route_permanent", &self.route_permanent)
            .field("retry_after", &self.retry_after)
            .field("limiter", &self.limiter)
            .finish()
    }
}

impl DeadLetterLayer {
    /// A layer writing through `sink`, building records with `envelope`.
    pub fn new(sink: Arc<dyn DeadLetterSink>, mut envelope: Envelope) -> Self {
        // The sink's limit is fixed: apply it once, not per record.
        envelope.max_record_bytes = envelope.max_record_bytes.min(sink.max_record_bytes());
        DeadLetterLayer {
            sink,
            envelope,
            route_permanent: true,
            retry_after: Duration::from_secs(1),
            limiter: None,
        }
    }

    /// Stops the consumer instead of dead-lettering past `limit` (none by default), counted
    /// per partition on the envelope's clock. Every handler this layer makes shares the
    /// counts; an invalid limit is refused.
    pub fn limit(mut self, limit: DeadLetterLimit) -> Result<Self, DlqError> {
        let limiter = DeadLetterLimiter::new(limit, self.envelope.clock.clone())?;
        self.limiter = Some(Arc::new(limiter));
        Ok(self)
    }

    /// The limiter's counts, when a limit is set.
    pub fn limiter(&self) -> Option<&DeadLetterLimiter> {
        self.limiter.as_deref()
    }

    /// Whether undecided permanent failures are dead-lettered (default yes); when not, only
    /// failures marked [`Disposition::DeadLetter`] are.
    pub fn route_permanent(mut self, route: bool) -> Self {
        self.route_permanent = route;
        self
    }

    /// How long after a failed dead-letter write the record is tried again (default 1 s).
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = delay;
        self
    }

    fn routes(&self, error: &HandlerError) -> bool {
        match error.disposition() {
            Disposition::DeadLetter => true,
            Disposition::Undecided => {
                self.route_permanent && error.class() == ErrorClass::Permanent
            }
            _ => false,
        }
    }
}

impl<H: Handler> Layer<H> for DeadLetterLayer {
    type Handler = DeadLettering<H>;
    fn layer(&self, inner: H) -> DeadLettering<H> {
        DeadLettering {
            inner,
            layer: self.clone(),
        }
    }
}

/// The handler [`DeadLetterLayer`] makes.
#[derive(Debug)]
pub struct DeadLettering<H> {
    inner: H,
    layer: DeadLetterLayer,
}

impl<H: Handler> DeadLettering<H> {
    async fn route(
        &self,
        record: &Record<'_>,
        error: HandlerError,
    ) -> Result<Outcome, HandlerError> {
        let layer = &self.layer;
        let target = layer.envelope.target_for(record);
        let partitions = layer.sink.partitions(&target).await;
        let letter = match layer.envelope.build(record, &error, partitions) {
            Ok(letter) => letter,
            Err(oversize @ kafka_ops_core::Error::Oversize { .. }) => {
                tracing::error!(error = %oversize, "cannot dead-letter the record; stopping without committing it");
                return Err(HandlerError::fatal(oversize).with_disposition(Disposition::Stop));
            }
            Err(other) => return Err(HandlerError::transient(other)),
        };
        match layer.sink.send(&letter).await {
            Ok(delivered) => {
                tracing::warn!(
                    topic = %record.topic, partition = record.partition, offset = record.offset.get(),
                    dlq = %letter.topic, dlq_partition = delivered.partition, dlq_offset = delivered.offset,
                    class = %error.class(), error = %error.cause(),
                    "record dead-lettered"
                );
                Ok(Outcome::DeadLettered)
            }
            Err(send_error) => {
                metrics::counter!("kafka_ops_dlq_send_failures_total").increment(1);
                let again = layer.envelope.clock.wall().plus(layer.retry_after);
                Err(write_failed(record, send_error, again, "dead-letter"))
            }
        }
    }
}

/// What a failed write of `record` to a dead-letter or retry topic makes of it. A transient
/// failure (a broker down, a timeout) keeps the record uncommitted and brings it back at
/// `again`. One the broker or client will refuse every time — a record larger than the
/// topic takes, a topic this client may not write, an invalid record — stops the consumer
/// without committing the record, as a dead letter too large to build does: delivering it
/// again would only run its handler again, and hold its partition, forever.
pub(crate) fn write_failed(
    record: &Record<'_>,
    send_error: kafka_ops_core::Error,
    again: Timestamp,
    target: &str,
) -> HandlerError {
    if send_error.class() == ErrorClass::Transient {
        tracing::warn!(error = %send_error, topic = %record.topic, partition = record.partition,
            offset = record.offset.get(), target, "write failed; the record stays uncommitted and comes back");
        return HandlerError::transient(send_error)
            .with_disposition(Disposition::RedeliverAt(again));
    }
    tracing::error!(error = %send_error, topic = %record.topic, partition = record.partition,
        offset = record.offset.get(), target, "write refused; stopping without committing the record");
    HandlerError::fatal(send_error).with_disposition(Disposition::Stop)
}

/// The error that stops the consumer on a record the limit refused.
fn refused(record: &Record<'_>, breach: LimitBreach, failure: HandlerError) -> HandlerError {
    metrics::counter!("kafka_ops_dlq_limit_reached_total").increment(1);
    let error = DlqError::LimitReached {
        topic: record.topic.to_string(),
        partition: record.partition,
        offset: record.offset,
        breach,
        failure: Box::new(failure),
    };
    tracing::error!(%error, "dead-letter limit reached; stopping the consumer");
    HandlerError::fatal(error).with_disposition(Disposition::Stop)
}

#[async_trait]
impl<H: Handler> Handler for DeadLettering<H> {
    async fn handle(&self, record: &Record<'_>) -> Result<Outcome, HandlerError> {
        let result = self.inner.handle(record).await;
        let Some(limiter) = &self.layer.limiter else {
            return match result {
                Err(error) if self.layer.routes(&error) => self.route(record, error).await,
                other => other,
            };
        };
        let (topic, partition) = (&*record.topic, record.partition);
        match result {
            Err(error) if self.layer.routes(&error) => {
                if let Err(breach) = limiter.check(topic, partition, record.offset) {
                    return Err(refused(record, breach, error));
                }
                let routed = self.route(record, error).await;
                if routed.is_ok() {
                    limiter.record_dead_lettered(topic, partition);
                }
                routed
            }
            // Written by a layer inside this one: counted, too late to refuse.
            Ok(Outcome::DeadLettered) => {
                limiter.record_dead_lettered(topic, partition);
                Ok(Outcome::DeadLettered)
            }
            Ok(outcome) => {
                limiter.record_finished(topic, partition, record.offset);
                Ok(outcome)
            }
            // Not finished (redelivered, stopping): not counted.
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Mutex;

    use kafka_ops_core::handler::{HandlerBuilder, handler_fn};
    use kafka_ops_core::{ManualClock, Offset, Timestamp};

    use super::*;
    use kafka_ops_core::Error;
    use kafka_ops_core::dead_letter::{DeadLetter, Delivered};

    /// Keeps what it is given, or fails while `failing` is set (refuses for good while
    /// `refusing` is).
    #[derive(Default)]
    struct Recorded {
        letters: Mutex<Vec<DeadLetter>>,
        failing: std::sync::atomic::AtomicBool,
        refusing: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl DeadLetterSink for Recorded {
        async fn send(&self, letter: &DeadLetter) -> Result<Delivered, Error> {
            if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Error::NotAcknowledged {
                    topic: letter.topic.clone(),
                    source: "broker down".into(),
                });
            }
            if self.refusing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Error::NotAcknowledged {
                    topic: letter.topic.clone(),
                    source: Box::new(Error::Broker {
                        operation: "produce",
                        code: kafka_ops_core::KafkaCode::MESSAGE_TOO_LARGE,
                        message: "the record is larger than the topic takes".into(),
                    }),
                });
            }
            let mut letters = self.letters.lock().unwrap();
            letters.push(letter.clone());
            Ok(Delivered {
                partition: 0,
                offset: letters.len() as i64 - 1,
            })
        }
        fn max_record_bytes(&self) -> usize {
            1_000
        }
    }

    fn handler(sink: Arc<Recorded>, error: fn() -> HandlerError) -> impl Handler {
        let envelope = Envelope {
            clock: Arc::new(ManualClock::at(Timestamp::from_millis(10_000))),
            ..Envelope::new("g", "i")
        };
        HandlerBuilder::new()
            .layer(DeadLetterLayer::new(sink, envelope))
            .handler(handler_fn(
                move |_r: &Record<'_>| async move { Err(error()) },
            ))
    }

    fn record() -> Record<'static> {
        Record::new("orders", 0, Offset::new(5).unwrap()).with_value(b"v".to_vec())
    }

    #[tokio::test]
    async fn permanent_and_marked_failures_are_dead_lettered_transient_ones_pass() {
        let sink = Arc::new(Recorded::default());
        let permanent = handler(sink.clone(), || {
            HandlerError::permanent(std::io::Error::other("bad"))
        });
        assert_eq!(
            permanent.handle(&record()).await.unwrap(),
            Outcome::DeadLettered
        );
        let marked = handler(sink.clone(), || {
            HandlerError::transient(std::io::Error::other("gave up"))
                .with_disposition(Disposition::DeadLetter)
        });
        assert_eq!(
            marked.handle(&record()).await.unwrap(),
            Outcome::DeadLettered
        );
        let transient = handler(sink.clone(), || {
            HandlerError::transient(std::io::Error::other("later"))
        });
        assert_eq!(
            transient.handle(&record()).await.unwrap_err().class(),
            ErrorClass::Transient
        );
        assert_eq!(sink.letters.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_failed_write_keeps_the_record_for_redelivery() {
        let sink = Arc::new(Recorded::default());
        sink.failing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let h = handler(sink.clone(), || {
            HandlerError::permanent(std::io::Error::other("bad"))
        });
        let error = h.handle(&record()).await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::Transient);
        assert_eq!(
            error.disposition(),
            Disposition::RedeliverAt(Timestamp::from_millis(11_000))
        );
        sink.failing
            .store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(h.handle(&record()).await.unwrap(), Outcome::DeadLettered);
    }

    #[tokio::test]
    async fn a_write_the_broker_refuses_for_good_stops_instead_of_looping() {
        let sink = Arc::new(Recorded::default());
        sink.refusing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let h = handler(sink.clone(), || {
            HandlerError::permanent(std::io::Error::other("bad"))
        });
        let error = h.handle(&record()).await.unwrap_err();
        assert_eq!(error.disposition(), Disposition::Stop);
        assert_eq!(error.class(), ErrorClass::Fatal);
        assert!(matches!(
            error.downcast_ref::<Error>(),
            Some(Error::NotAcknowledged { .. })
        ));
        assert!(sink.letters.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_record_too_large_even_truncated_stops_the_consumer() {
        let sink = Arc::new(Recorded::default());
        let h = handler(sink.clone(), || {
            HandlerError::permanent(std::io::Error::other("bad"))
        });
        let huge_key = record().with_key(vec![0_u8; 5_000]);
        let error = h.handle(&huge_key).await.unwrap_err();
        assert_eq!(error.disposition(), Disposition::Stop);
        assert!(matches!(
            error.downcast_ref::<Error>(),
            Some(Error::Oversize { .. })
        ));
        // The sink's limit applies: a large value is truncated to it, not refused.
        let big_value = record().with_value(vec![1_u8; 5_000]);
        assert_eq!(h.handle(&big_value).await.unwrap(), Outcome::DeadLettered);
        assert!(sink.letters.lock().unwrap()[0].size() <= 1_000);
    }

    #[tokio::test]
    async fn past_the_limit_the_consumer_stops_instead_of_routing() {
        let sink = Arc::new(Recorded::default());
        let envelope = Envelope {
            clock: Arc::new(ManualClock::at(Timestamp::from_millis(10_000))),
            ..Envelope::new("g", "i")
        };
        let layer = DeadLetterLayer::new(sink.clone(), envelope)
            .limit(DeadLetterLimit::default().consecutive(2))
            .unwrap();
        let h = HandlerBuilder::new()
            .layer(layer.clone())
            .handler(crate::test_support::fine_or(|| {
                HandlerError::permanent(std::io::Error::other("bad"))
            }));
        let at = |offset: i64, value: &str| {
            Record::new("orders", 0, Offset::new(offset).unwrap())
                .with_value(value.as_bytes().to_vec())
        };
        assert_eq!(h.handle(&at(0, "x")).await.unwrap(), Outcome::DeadLettered);
        assert_eq!(h.handle(&at(1, "fine")).await.unwrap(), Outcome::Processed);
        assert_eq!(h.handle(&at(2, "x")).await.unwrap(), Outcome::DeadLettered);
        assert_eq!(h.handle(&at(3, "x")).await.unwrap(), Outcome::DeadLettered);
        let stop = h.handle(&at(4, "x")).await.unwrap_err();
        assert_eq!(stop.disposition(), Disposition::Stop);
        assert_eq!(stop.class(), ErrorClass::Fatal);
        match stop.downcast_ref::<DlqError>() {
            Some(DlqError::LimitReached {
                topic,
                partition: 0,
                offset,
                breach: LimitBreach::Consecutive { max: 2 },
                failure,
            }) => {
                assert_eq!((topic.as_str(), offset.get()), ("orders", 4));
                assert_eq!(failure.cause().to_string(), "bad");
            }
            other => panic!("not the limit: {other:?}"),
        }
        assert_eq!(
            stop.to_string(),
            "fatal error: dead-letter limit reached on orders/0 at offset 4: more than 2 \
             consecutive dead letters; stopping instead of dead-lettering it"
        );
        assert_eq!(
            sink.letters.lock().unwrap().len(),
            3,
            "the refused record was not written"
        );
        let counts = layer.limiter().unwrap().counts("orders", 0);
        assert_eq!(
            (counts.records, counts.dead_lettered, counts.consecutive),
            (4, 3, 2)
        );
        // A failed write is not counted: the record comes back and is judged again.
        sink.failing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let other = Record::new("orders", 1, Offset::new(0).unwrap());
        assert_eq!(
            h.handle(&other).await.unwrap_err().class(),
            ErrorClass::Transient
        );
        assert_eq!(layer.limiter().unwrap().counts("orders", 1).records, 0);
        assert!(
            DeadLetterLayer::new(sink, Envelope::new("g", "i"))
                .limit(DeadLetterLimit::ratio(2.0, Duration::from_secs(1)))
                .is_err()
        );
    }
}
