//! Records removed under a running read (retention or a purge moving a partition's log start
//! past a reader), on the real cluster: a partition filled in small message sets, a client
//! configuration whose prefetch stays about one set ahead, and a deletion made once from the
//! reader's own callback.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::ClientConfig;

use crate::error::Error;
use crate::kafka::KafkaCluster;
use crate::testkit::{RealKafka, TestRecord};
use crate::types::Offset;

/// Records per message set [`RealKafka::produce_in_small_sets`] writes.
pub const SMALL_SET: usize = 20;

impl RealKafka {
    /// Produces `count` records of 1 kB to `partition` of `topic`, keyed `k0`, `k1`, … in the
    /// order of their offsets (from an empty partition), in message sets of [`SMALL_SET`]: a
    /// fetch returns at least one whole set, so with
    /// [`small_prefetch_config`](Self::small_prefetch_config) a reader stays a few dozen records
    /// ahead of its visitor and a deletion made while it reads lands ahead of it.
    pub async fn produce_in_small_sets(
        &self,
        topic: &str,
        partition: i32,
        count: usize,
    ) -> Result<(), Error> {
        for first in (0..count).step_by(SMALL_SET) {
            let set = (first..count.min(first + SMALL_SET)).map(|n| {
                TestRecord::keyed(format!("k{n}"), vec![b'x'; 1_000]).to_partition(partition)
            });
            self.produce(topic, set).await?;
        }
        Ok(())
    }

    /// [`client_config`](Self::client_config) with the smallest prefetch librdkafka allows: one
    /// message set a fetch, and a fetch only when the queue is empty.
    pub fn small_prefetch_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("queued.min.messages", "1")
            .set("max.partition.fetch.bytes", "1024");
        config
    }
}

/// Deletes a topic's records before the given offsets, once, from a callback of a read that
/// runs on a blocking thread (a progress callback, a reader's visitor): it waits for the
/// deletion on the runtime it was made on, so the read goes on only once the records are gone.
/// Clones share the "once".
#[derive(Debug, Clone)]
pub struct DeleteOnce {
    cluster: KafkaCluster,
    topic: String,
    before: Vec<(i32, Offset)>,
    runtime: tokio::runtime::Handle,
    done: Arc<AtomicBool>,
}

impl DeleteOnce {
    /// Deletes `topic`'s records before `before` (partition, offset) on `kafka`'s cluster. Make
    /// it inside the test's runtime.
    pub fn new(kafka: &RealKafka, topic: &str, before: &[(i32, Offset)]) -> Self {
        DeleteOnce {
            cluster: kafka.cluster(),
            topic: topic.to_string(),
            before: before.to_vec(),
            runtime: tokio::runtime::Handle::current(),
            done: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Deletes the records unless it did before; true when it deleted them now. Call it from a
    /// blocking thread, never from the runtime's own.
    pub fn delete(&self) -> Result<bool, Error> {
        if self.done.swap(true, Ordering::SeqCst) {
            return Ok(false);
        }
        self.runtime
            .block_on(self.cluster.delete_records(&self.topic, &self.before))?;
        Ok(true)
    }

    /// Whether it deleted them.
    pub fn happened(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
}
