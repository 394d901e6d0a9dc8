//! A transactional producer for tests of the last stable offset and of transaction markers.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::error::Error;
use crate::kafka::kafka_error;
use crate::testkit::TestRecord;

/// A producer with a `transactional.id`, whose writes become visible to `read_committed`
/// readers only when a transaction commits.
pub struct TransactionalProducer {
    producer: ThreadedProducer<DefaultProducerContext>,
}

impl std::fmt::Debug for TransactionalProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransactionalProducer")
    }
}

const TIMEOUT: Duration = Duration::from_secs(30);

impl TransactionalProducer {
    /// A producer for `bootstrap` with `transactional.id` = `id`, its transactions initialized.
    /// Blocking: call it from `spawn_blocking` in async tests, or accept a short block.
    pub fn new(bootstrap: &str, id: &str) -> Result<Self, Error> {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("transactional.id", id)
            .set("transaction.timeout.ms", "60000")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(|e| kafka_error("create transactional producer", e))?;
        producer
            .init_transactions(TIMEOUT)
            .map_err(|e| kafka_error("init transactions", e))?;
        Ok(TransactionalProducer { producer })
    }

    /// Begins a transaction.
    pub fn begin(&self) -> Result<(), Error> {
        self.producer
            .begin_transaction()
            .map_err(|e| kafka_error("begin transaction", e))
    }

    /// Sends `records` to `topic` inside the open transaction and waits until the broker has
    /// them (they stay invisible to `read_committed` readers until [`commit`](Self::commit)).
    pub fn send(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = TestRecord>,
    ) -> Result<(), Error> {
        for record in records {
            let mut base = BaseRecord::<[u8], [u8]>::to(topic);
            if let Some(key) = &record.key {
                base = base.key(key.as_slice());
            }
            if let Some(value) = &record.value {
                base = base.payload(value.as_slice());
            }
            if let Some(partition) = record.partition {
                base = base.partition(partition);
            }
            if let Some(timestamp) = record.timestamp {
                base = base.timestamp(timestamp);
            }
            self.producer
                .send(base)
                .map_err(|(e, _)| kafka_error("send in transaction", e))?;
        }
        self.producer
            .flush(TIMEOUT)
            .map_err(|e| kafka_error("flush transaction", e))
    }

    /// Commits the open transaction (writes its commit markers).
    pub fn commit(&self) -> Result<(), Error> {
        self.producer
            .commit_transaction(TIMEOUT)
            .map_err(|e| kafka_error("commit transaction", e))
    }

    /// Aborts the open transaction (writes its abort markers).
    pub fn abort(&self) -> Result<(), Error> {
        self.producer
            .abort_transaction(TIMEOUT)
            .map_err(|e| kafka_error("abort transaction", e))
    }
}
