//! [`AckedProducer`]: the one producer every kafka-ops write goes through.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rdkafka::message::Message;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use tokio::sync::oneshot;

use crate::dead_letter::Delivered;
use crate::error::Error;
use crate::ffi::{self, ClientQueue};
use crate::kafka::{kafka_error, lock, metadata, owned_headers, set_unless_set};
use crate::record::Headers;
use crate::types::Timestamp;

/// What to write: a record by reference.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Target topic.
    pub topic: &'a str,
    /// Target partition; `None` lets the partitioner choose (by key).
    pub partition: Option<i32>,
    /// Key; `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// Value; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// Headers, in order.
    pub headers: &'a Headers<'a>,
    /// Create-time timestamp; `None` for the producer's clock.
    pub timestamp: Option<Timestamp>,
}

/// Writes records so that an acknowledged one is stored on every in-sync replica and written
/// once: idempotent, `acks=all`, a bounded delivery timeout, batched briefly (`linger.ms=5`
/// unless the configuration sets it). Consumer settings in the configuration it is made from
/// are dropped, SASL/TLS settings pass through.
///
/// [`send`](Self::send) enqueues and returns the acknowledgement to await, so callers keep many
/// records in flight; [`send_tracked`](Self::send_tracked) tags a record instead and
/// [`take_answers`](Self::take_answers) collects the answers in bulk, for writers of many
/// records that need no future per record. A full local queue is waited out, never reported as
/// a failure. Dropping the producer purges what is still queued: [`flush`](Self::flush) first.
pub struct AckedProducer {
    producer: Served,
    delivery_timeout: Duration,
    max_record_bytes: usize,
}

/// The record the producer writes, tagged with its delivery opaque.
type Out<'a> = BaseRecord<'a, [u8], [u8], usize>;

/// Who serves the delivery reports.
enum Served {
    /// rdkafka's thread of its own.
    ByThread(ThreadedProducer<AckContext>),
    /// The caller, in [`AckedProducer::take_answers`], [`AckedProducer::flush`] and sends that
    /// find the local queue full, from the producer's main queue.
    ByCaller {
        /// Declared first, so it is dropped before the producer.
        main: ClientQueue,
        producer: BaseProducer<AckContext>,
    },
}

impl Served {
    fn context(&self) -> &AckContext {
        match self {
            Served::ByThread(producer) => producer.context(),
            Served::ByCaller { producer, .. } => producer.context(),
        }
    }

    /// Serves delivery reports, waiting up to `timeout` for the first, where the caller
    /// serves them; waits for the producer's thread to serve them otherwise.
    fn poll(&self, timeout: Duration) {
        match self {
            Served::ByThread(producer) => producer.poll(timeout),
            Served::ByCaller { main, producer } => {
                let context = producer.context();
                ffi::serve_delivery_reports(main, timeout, |report| {
                    let answer = match report.stored {
                        Ok((partition, offset)) => Ok(Delivered { partition, offset }),
                        Err((code, description)) => Err(Error::NotAcknowledged {
                            topic: report.topic.into_owned(),
                            source: Box::new(Error::Kafka {
                                operation: "produce",
                                code: Some(code),
                                source: description.into(),
                            }),
                        }),
                    };
                    context.answer(report.opaque, answer);
                });
            }
        }
    }

    // rdkafka's own signature: the record comes back to be sent again when the queue is full.
    #[allow(clippy::result_large_err)]
    fn send<'a>(&self, record: Out<'a>) -> Result<(), (rdkafka::error::KafkaError, Out<'a>)> {
        match self {
            Served::ByThread(producer) => producer.send(record),
            Served::ByCaller { producer, .. } => producer.send(record),
        }
    }

    fn flush(&self, timeout: Duration) -> Result<(), Error> {
        match self {
            Served::ByThread(producer) => producer
                .flush(timeout)
                .map_err(|e| kafka_error("flush producer", e)),
            Served::ByCaller { producer, .. } => {
                let deadline = crate::kafka::deadline_after(Instant::now(), timeout);
                loop {
                    // Sends what lingers at once; answers only what was already answered.
                    let _ = producer.flush(Duration::ZERO);
                    self.poll(Duration::from_millis(10));
                    if producer.in_flight_count() == 0 {
                        return Ok(());
                    }
                    if Instant::now() >= deadline {
                        return Err(Error::Timeout {
                            operation: "flush producer",
                            timeout,
                        });
                    }
                }
            }
        }
    }

    fn client(&self) -> &rdkafka::client::Client<AckContext> {
        match self {
            Served::ByThread(producer) => producer.client(),
            Served::ByCaller { producer, .. } => producer.client(),
        }
    }
}

impl fmt::Debug for AckedProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckedProducer")
            .field("delivery_timeout", &self.delivery_timeout)
            .field("max_record_bytes", &self.max_record_bytes)
            .finish()
    }
}

/// Consumer-only settings a producer must not be given (librdkafka warns about each).
const CONSUMER_SETTINGS: &[&str] = &[
    "group.id",
    "group.instance.id",
    "group.protocol",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "isolation.level",
    "enable.partition.eof",
    "partition.assignment.strategy",
    "fetch.wait.max.ms",
    "topic.metadata.refresh.interval.ms",
];

impl AckedProducer {
    /// A producer for the cluster `client_config` points at. `delivery.timeout.ms` (default
    /// 30 s) bounds each acknowledgement; `message.max.bytes` (default 1 000 000) is the
    /// largest record it accepts.
    pub fn new(client_config: &ClientConfig) -> Result<Self, Error> {
        let (config, delivery_timeout, max_record_bytes) = Self::settings(client_config);
        let producer = config
            .create_with_context(AckContext::default())
            .map_err(|e| kafka_error("create producer", e))?;
        Ok(AckedProducer {
            producer: Served::ByThread(producer),
            delivery_timeout,
            max_record_bytes,
        })
    }

    /// [`new`](Self::new), for one blocking loop that writes many records with
    /// [`send_tracked`](Self::send_tracked): no thread of its own serves the acknowledgements;
    /// [`take_answers`](Self::take_answers), [`flush`](Self::flush) and sends that find the
    /// local queue full do, on the caller's thread. librdkafka allocates each record and its
    /// headers on the sending thread and frees them where the acknowledgement is served; on
    /// one thread, the allocator serves them from that thread's cache instead of its shared
    /// heap. [`send`](Self::send)'s acknowledgements too arrive only during those calls.
    pub fn served_by_caller(client_config: &ClientConfig) -> Result<Self, Error> {
        let (config, delivery_timeout, max_record_bytes) = Self::settings(client_config);
        let producer: BaseProducer<AckContext> = config
            .create_with_context(AckContext::default())
            .map_err(|e| kafka_error("create producer", e))?;
        Ok(AckedProducer {
            producer: Served::ByCaller {
                main: ClientQueue::main_of(producer.client())?,
                producer,
            },
            delivery_timeout,
            max_record_bytes,
        })
    }

    /// The producer's configuration, delivery timeout and largest record.
    fn settings(client_config: &ClientConfig) -> (ClientConfig, Duration, usize) {
        let mut config = client_config.clone();
        for key in CONSUMER_SETTINGS {
            config.remove(key);
        }
        config.set("enable.idempotence", "true").set("acks", "all");
        set_unless_set(&mut config, &[("linger.ms", "5")]);
        let delivery_timeout = Duration::from_millis(
            config
                .get("delivery.timeout.ms")
                .or_else(|| config.get("message.timeout.ms"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(30_000),
        );
        config.remove("message.timeout.ms").set(
            "delivery.timeout.ms",
            delivery_timeout.as_millis().to_string(),
        );
        let max_record_bytes = config
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        (config, delivery_timeout, max_record_bytes)
    }

    /// The largest record it accepts, in bytes.
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// How long the producer tries before an acknowledgement fails.
    pub fn delivery_timeout(&self) -> Duration {
        self.delivery_timeout
    }

    /// Enqueues `record` and returns its acknowledgement: where it was stored, or
    /// [`Error::NotAcknowledged`] once the producer gave up. Blocks (briefly, serving
    /// deliveries) while the local queue is full; call from a blocking thread when that matters,
    /// or await acknowledgements as they come.
    pub fn send(&self, record: Outgoing<'_>) -> Result<Ack, Error> {
        let (sender, answer) = oneshot::channel();
        let slot = lock(&self.producer.context().waiting).insert(sender);
        if let Err(error) = self.enqueue(record, slot << 1) {
            lock(&self.producer.context().waiting).take(slot);
            return Err(error);
        }
        Ok(Ack { answer })
    }

    /// Enqueues `record` tagged `tag` (below 2^63); its answer is collected by
    /// [`take_answers`](Self::take_answers). Blocks like [`send`](Self::send) while the local
    /// queue is full.
    pub fn send_tracked(&self, record: Outgoing<'_>, tag: u64) -> Result<(), Error> {
        let tag = usize::try_from(tag)
            .ok()
            .filter(|tag| *tag <= usize::MAX >> 1)
            .ok_or_else(|| Error::InvalidInput(format!("tag {tag} is too large")))?;
        self.enqueue(record, (tag << 1) | 1)
    }

    /// Moves the answers of tracked records that arrived since the last call into `into`, each
    /// with its tag, in the order they arrived (records of one partition are answered in the
    /// order they were sent).
    pub fn take_answers(&self, into: &mut Vec<(u64, Result<Delivered, Error>)>) {
        if let Served::ByCaller { .. } = &self.producer {
            self.producer.poll(Duration::ZERO);
        }
        let mut answers = lock(&self.producer.context().answers);
        if into.is_empty() {
            std::mem::swap(into, &mut answers);
        } else {
            into.append(&mut answers);
        }
    }

    fn enqueue(&self, record: Outgoing<'_>, opaque: usize) -> Result<(), Error> {
        let mut out = BaseRecord::<[u8], [u8], usize>::with_opaque_to(record.topic, opaque)
            .headers(owned_headers(record.headers));
        if let Some(partition) = record.partition {
            out = out.partition(partition);
        }
        if let Some(key) = record.key {
            out = out.key(key);
        }
        if let Some(value) = record.value {
            out = out.payload(value);
        }
        if let Some(time) = record.timestamp {
            out = out.timestamp(time.as_millis());
        }
        loop {
            match self.producer.send(out) {
                Ok(()) => return Ok(()),
                Err((error, back))
                    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                {
                    // The local queue is full: let deliveries drain, then enqueue again.
                    self.producer.poll(Duration::from_millis(10));
                    out = back;
                }
                Err((error, _)) => return Err(kafka_error("produce", error)),
            }
        }
    }

    /// Sends `record` and waits for its acknowledgement.
    pub async fn send_and_wait(&self, record: Outgoing<'_>) -> Result<Delivered, Error> {
        self.send(record)?.await
    }

    /// Waits (up to `timeout`) until every record sent so far is acknowledged or failed.
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        self.producer.flush(timeout)
    }

    /// The partition count of `topic` as the cluster's metadata gives it (`None` when the
    /// topic does not exist or the metadata cannot be read within `timeout`). Blocking.
    pub fn partition_count(&self, topic: &str, timeout: Duration) -> Option<i32> {
        metadata::partition_count(self.producer.client(), topic, timeout)
            .ok()
            .flatten()
    }
}

/// The acknowledgement of one record [`AckedProducer::send`] enqueued: resolves to where the
/// record was stored, or [`Error::NotAcknowledged`]. It needs no waker to make progress (the
/// producer's own thread serves deliveries), so a caller may also check it without awaiting.
#[must_use = "a record is stored only once its acknowledgement says so"]
pub struct Ack {
    answer: oneshot::Receiver<Result<Delivered, Error>>,
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ack")
    }
}

impl Future for Ack {
    type Output = Result<Delivered, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.answer).poll(cx).map(|answer| {
            answer.unwrap_or_else(|_| {
                Err(Error::NotAcknowledged {
                    topic: String::new(),
                    source: "the producer went away before acknowledging".into(),
                })
            })
        })
    }
}

/// Routes each delivery report: an odd opaque is a tracked record's tag (shifted), an even one
/// the slot of a waiting [`Ack`].
#[derive(Default)]
struct AckContext {
    waiting: Mutex<Slots>,
    answers: Mutex<Vec<(u64, Result<Delivered, Error>)>>,
}

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let answer = match result {
            Ok(message) => Ok(Delivered {
                partition: message.partition(),
                offset: message.offset(),
            }),
            Err((error, message)) => Err(Error::NotAcknowledged {
                topic: message.topic().to_string(),
                source: Box::new(kafka_error("produce", error.clone())),
            }),
        };
        self.answer(opaque, answer);
    }
}

impl AckContext {
    /// Hands `answer` to whoever waits for the record sent with `opaque`.
    fn answer(&self, opaque: usize, answer: Result<Delivered, Error>) {
        if opaque & 1 == 1 {
            lock(&self.answers).push(((opaque >> 1) as u64, answer));
        } else if let Some(sender) = lock(&self.waiting).take(opaque >> 1) {
            // The receiver may be gone (the caller stopped waiting); the record is stored anyway.
            let _ = sender.send(answer);
        }
    }
}

/// The senders of waiting [`Ack`]s, by slot; freed slots are reused.
#[derive(Default)]
struct Slots {
    senders: Vec<Option<oneshot::Sender<Result<Delivered, Error>>>>,
    free: Vec<usize>,
}

impl Slots {
    fn insert(&mut self, sender: oneshot::Sender<Result<Delivered, Error>>) -> usize {
        match self.free.pop() {
            Some(slot) => {
                self.senders[slot] = Some(sender);
                slot
            }
            None => {
                self.senders.push(Some(sender));
                self.senders.len() - 1
            }
        }
    }

    fn take(&mut self, slot: usize) -> Option<oneshot::Sender<Result<Delivered, Error>>> {
        let sender = self.senders.get_mut(slot)?.take();
        if sender.is_some() {
            self.free.push(slot);
        }
        sender
    }
}
