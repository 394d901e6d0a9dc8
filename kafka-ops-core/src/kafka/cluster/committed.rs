//! Committed offsets of any group, read through a consumer of that group (never through
//! librdkafka's admin `ListConsumerGroupOffsets`; see [`RangeReader::committed_offsets`]).
//!
//! The consumer does not join the group: it only asks the group's coordinator. One is kept per
//! group, a bounded number of groups at a time, so a lag pass every few seconds does not create
//! a client each time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::ClientConfig;

use crate::cluster::PartitionResults;
use crate::error::Error;
use crate::kafka::RangeReader;
use crate::types::{Offset, TopicPartition};

/// Groups whose consumer is kept; one more evicts another.
const KEPT_GROUPS: usize = 64;
/// Requests of one read in flight at once.
const PARALLEL_REQUESTS: usize = 8;

/// The consumers kept per group.
#[derive(Default)]
pub(super) struct GroupReaders {
    readers: Mutex<HashMap<String, Arc<RangeReader>>>,
}

impl GroupReaders {
    /// The consumer of `group`, created on first use.
    fn reader(&self, config: &ClientConfig, group: &str) -> Result<Arc<RangeReader>, Error> {
        let mut readers = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(reader) = readers.get(group) {
            return Ok(reader.clone());
        }
        let reader = Arc::new(RangeReader::with_group(config, group)?);
        if readers.len() >= KEPT_GROUPS
            && let Some(evicted) = readers.keys().next().cloned()
        {
            readers.remove(&evicted);
        }
        readers.insert(group.to_string(), reader.clone());
        Ok(reader)
    }

    /// `group`'s committed offsets of `partitions`, in their order, asked in requests of at
    /// most `batch_size` partitions (librdkafka matches an OffsetFetch answer's partitions by
    /// linear search), up to [`PARALLEL_REQUESTS`] at a time, each bounded by `timeout`.
    pub(super) fn committed(
        &self,
        config: &ClientConfig,
        group: &str,
        partitions: &[TopicPartition],
        batch_size: usize,
        timeout: Duration,
    ) -> Result<PartitionResults<Option<Offset>>, Error> {
        let reader = self.reader(config, group)?;
        let chunks: Vec<&[TopicPartition]> = partitions.chunks(batch_size.max(1)).collect();
        if chunks.len() <= 1 {
            return reader.committed_offsets(partitions, timeout);
        }
        let next = AtomicUsize::new(0);
        let mut answers: Vec<Option<Result<PartitionResults<Option<Offset>>, Error>>> =
            (0..chunks.len()).map(|_| None).collect();
        let finished: Vec<Vec<(usize, Result<_, Error>)>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..PARALLEL_REQUESTS.min(chunks.len()))
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let index = next.fetch_add(1, Ordering::Relaxed);
                            let Some(chunk) = chunks.get(index) else {
                                break;
                            };
                            done.push((index, reader.committed_offsets(chunk, timeout)));
                        }
                        done
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().unwrap_or_default())
                .collect()
        });
        for (index, answer) in finished.into_iter().flatten() {
            answers[index] = Some(answer);
        }
        let mut out = Vec::with_capacity(partitions.len());
        for answer in answers {
            match answer {
                Some(Ok(part)) => out.extend(part),
                Some(Err(error)) => return Err(error),
                None => {
                    return Err(Error::Kafka {
                        operation: "read committed offsets",
                        code: None,
                        source: "a request thread panicked".into(),
                    });
                }
            }
        }
        Ok(out)
    }
}
