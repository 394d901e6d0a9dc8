//! Serving a producer's delivery reports from its main queue, one message at a time. rdkafka's
//! own poll collects each report event's messages into a vector sized for the event first; for
//! a bulk writer that is a large allocation per event, which made glibc's allocator consolidate
//! its heap every time.

use std::borrow::Cow;

use super::batch::{ClientQueue, topic_of};
use super::*;

/// The answer for one record the producer was given.
pub(crate) struct DeliveryReport<'a> {
    /// The opaque the record was sent with.
    pub(crate) opaque: usize,
    /// The topic it was sent to.
    pub(crate) topic: Cow<'a, str>,
    /// Where it was stored, or why not.
    pub(crate) stored: Result<(i32, i64), (KafkaCode, String)>,
}

/// Serves the report events waiting on `queue` (a producer's main queue), waiting up to
/// `timeout` for the first: hands each record's answer to `each`, logs error events. Returns how
/// many answers it handed over. The queue's producer must have been created with the opaque
/// of each record a plain `usize` (rdkafka's `DeliveryOpaque = usize`).
pub(crate) fn serve_delivery_reports(
    queue: &ClientQueue,
    timeout: Duration,
    mut each: impl FnMut(DeliveryReport<'_>),
) -> usize {
    let mut answered = 0;
    let mut wait = timeout;
    loop {
        // SAFETY: the queue is live (its client outlives it); the event returned, when not
        // null, is owned here and destroyed below.
        let event = unsafe { rd::rd_kafka_queue_poll(queue.as_ptr(), timeout_ms(wait)) };
        if event.is_null() {
            return answered;
        }
        wait = Duration::ZERO;
        // SAFETY: `event` is a live event.
        let kind = unsafe { rd::rd_kafka_event_type(event) };
        if kind == rd::RD_KAFKA_EVENT_DR {
            loop {
                // SAFETY: the event is live; each message returned belongs to it and is only
                // read before the event is destroyed.
                let message = unsafe { rd::rd_kafka_event_message_next(event) };
                if message.is_null() {
                    break;
                }
                // SAFETY: as above.
                let m = unsafe { &*message };
                // SAFETY: the message is live until the event is destroyed.
                let topic = unsafe { topic_of(m) };
                let stored = if is_error(m.err) {
                    Err((code_of(m.err), describe_code(m.err)))
                } else {
                    Ok((m.partition, m.offset))
                };
                each(DeliveryReport {
                    opaque: m._private as usize,
                    topic,
                    stored,
                });
                answered += 1;
            }
        } else if kind == rd::RD_KAFKA_EVENT_ERROR {
            // SAFETY: the event is live; its error string lives as long as it.
            let (err, text) = unsafe {
                (
                    rd::rd_kafka_event_error(event),
                    opt_string(rd::rd_kafka_event_error_string(event)),
                )
            };
            tracing::warn!(code = %code_of(err), error = text.as_deref().unwrap_or(""), "producer error");
        }
        // SAFETY: the event was returned by the poll above and is destroyed exactly once.
        unsafe { rd::rd_kafka_event_destroy(event) };
    }
}
