//! Committed offsets of any group, read through a consumer of that group (never through
//! librdkafka's admin `ListConsumerGroupOffsets`; see [`RangeReader::committed_offsets`]).
//!
//! The consumer does not join the group: it only asks the group's coordinator. One is kept per
//! group, for the groups used most recently, so a lag pass every few seconds does not create a
//! client each time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;

use crate::cluster::PartitionResults;
use crate::error::Error;
use crate::kafka::RangeReader;
use crate::types::{Offset, TopicPartition};

/// Groups whose consumer is kept; one more evicts the least recently used.
const KEPT_GROUPS: usize = 64;
/// Requests in flight at once, over all groups of one call.
const PARALLEL_REQUESTS: usize = 8;
const OPERATION: &str = "read committed offsets";

/// One group's committed offsets, or why they could not be read.
type Answer = Result<PartitionResults<Option<Offset>>, Error>;

/// The consumers kept per group, with when each was last used.
#[derive(Default)]
pub(super) struct GroupReaders {
    readers: Mutex<HashMap<String, (Arc<RangeReader>, Instant)>>,
}

impl GroupReaders {
    /// The consumer of `group`, created on first use.
    fn reader(&self, config: &ClientConfig, group: &str) -> Result<Arc<RangeReader>, Error> {
        let evicted = {
            let mut readers = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((reader, used)) = readers.get_mut(group) {
                *used = Instant::now();
                return Ok(reader.clone());
            }
            // `read_uncommitted`: under `read_committed` librdkafka asks for stable offsets
            // only, and a group with a transactional offset commit pending would not answer
            // until its transaction ends.
            let mut config = config.clone();
            config.set("isolation.level", "read_uncommitted");
            let reader = Arc::new(RangeReader::with_group(&config, group)?);
            let evicted = if readers.len() >= KEPT_GROUPS {
                let oldest = readers
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(name, _)| name.clone());
                oldest.and_then(|name| readers.remove(&name))
            } else {
                None
            };
            readers.insert(group.to_string(), (reader.clone(), Instant::now()));
            (reader, evicted)
        };
        // Closing a consumer waits for librdkafka: not under the lock.
        let (reader, evicted) = evicted;
        drop(evicted);
        Ok(reader)
    }

    /// Each of `groups`' committed offsets of `partitions`, in their order, one answer per
    /// group. Partitions are asked in requests of at most `batch_size` (librdkafka matches an
    /// OffsetFetch answer's partitions by linear search), [`PARALLEL_REQUESTS`] at a time over
    /// all groups, the whole call bounded by `timeout`: a group whose coordinator does not
    /// answer in time gets [`Error::Timeout`], the others their offsets.
    pub(super) fn committed(
        &self,
        config: &ClientConfig,
        groups: &[String],
        partitions: &[TopicPartition],
        batch_size: usize,
        timeout: Duration,
    ) -> Vec<Answer> {
        let deadline = Instant::now() + timeout;
        let readers: Vec<Result<Arc<RangeReader>, Error>> = groups
            .iter()
            .map(|group| self.reader(config, group))
            .collect();
        let chunks: Vec<&[TopicPartition]> = partitions.chunks(batch_size.max(1)).collect();
        let tasks: Vec<(usize, usize)> = readers
            .iter()
            .enumerate()
            .filter(|(_, reader)| reader.is_ok())
            .flat_map(|(group, _)| (0..chunks.len()).map(move |chunk| (group, chunk)))
            .collect();
        let failed: Vec<AtomicBool> = groups.iter().map(|_| AtomicBool::new(false)).collect();
        let next = AtomicUsize::new(0);
        let work = || {
            let mut done = Vec::new();
            while let Some(&(group, chunk)) = tasks.get(next.fetch_add(1, Ordering::Relaxed)) {
                // A group that already failed is not asked again.
                if failed[group].load(Ordering::Relaxed) {
                    continue;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                let answer = match &readers[group] {
                    Ok(_) if left.is_zero() => Err(Error::Timeout {
                        operation: OPERATION,
                        timeout,
                    }),
                    Ok(reader) => reader.committed_offsets(chunks[chunk], left),
                    Err(_) => continue,
                };
                if answer.is_err() {
                    failed[group].store(true, Ordering::Relaxed);
                }
                done.push((group, chunk, answer));
            }
            done
        };
        let finished: Vec<(usize, usize, Answer)> = if tasks.len() <= 1 {
            work()
        } else {
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..PARALLEL_REQUESTS.min(tasks.len()))
                    .map(|_| scope.spawn(work))
                    .collect();
                workers
                    .into_iter()
                    .flat_map(|worker| worker.join().unwrap_or_default())
                    .collect()
            })
        };
        let mut by_group: Vec<Vec<Option<Answer>>> = groups
            .iter()
            .map(|_| (0..chunks.len()).map(|_| None).collect())
            .collect();
        for (group, chunk, answer) in finished {
            by_group[group][chunk] = Some(answer);
        }
        readers
            .into_iter()
            .zip(by_group)
            .map(|(reader, answers)| {
                reader?;
                let mut out = Vec::with_capacity(partitions.len());
                let mut missing = false;
                for answer in answers {
                    match answer {
                        Some(Ok(part)) => out.extend(part),
                        Some(Err(error)) => return Err(error),
                        None => missing = true,
                    }
                }
                if missing {
                    // Only a request thread that panicked leaves a chunk without an answer.
                    return Err(Error::Kafka {
                        operation: OPERATION,
                        code: None,
                        source: "a request thread stopped without answering".into(),
                    });
                }
                Ok(out)
            })
            .collect()
    }
}
