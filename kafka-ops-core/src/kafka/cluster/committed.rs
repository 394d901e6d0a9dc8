//! Committed offsets of any group, read through a consumer of that group (never through
//! librdkafka's admin `ListConsumerGroupOffsets`; see [`RangeReader::committed_offsets`]).
//!
//! The consumer does not join the group: it only asks the group's coordinator. One is kept per
//! group, for the groups used most recently, so a lag pass every few seconds does not create a
//! client each time — also when one pass asks for more groups than are usually kept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;

use crate::cluster::PartitionResults;
use crate::error::Error;
use crate::kafka::RangeReader;
use crate::types::{Offset, TopicPartition};

/// Groups whose consumer is kept at least; a call asking for more keeps that many.
const KEPT_GROUPS: usize = 64;
/// A consumer unused this long is closed when the next call needs room: a one-off call over
/// every group does not hold its clients (threads and connections each) for the process's life.
const IDLE: Duration = Duration::from_secs(300);
/// Consumers closed at once when many go together. librdkafka takes tens of milliseconds to
/// close one (80 ms on the real cluster), mostly waiting for its threads to end: closed one
/// after the other, 150 groups' consumers took 12 s.
const PARALLEL_CLOSES: usize = 32;
/// Requests in flight at once, over all groups of one call.
const PARALLEL_REQUESTS: usize = 8;
const OPERATION: &str = "read committed offsets";

/// One group's committed offsets, or why they could not be read.
type Answer = Result<PartitionResults<Option<Offset>>, Error>;

/// The consumers kept per group, with when each was last used.
#[derive(Default)]
pub(super) struct GroupReaders {
    readers: Mutex<Kept<Arc<RangeReader>>>,
}

impl GroupReaders {
    /// The consumer of `group`, created on first use; `wanted` is how many groups the call
    /// asks for (none of them is evicted for another).
    fn reader(
        &self,
        config: &ClientConfig,
        group: &str,
        wanted: usize,
    ) -> Result<Arc<RangeReader>, Error> {
        let (reader, evicted) = {
            let mut readers = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if let Some(reader) = readers.get(group, now) {
                return Ok(reader);
            }
            // `read_uncommitted`: under `read_committed` librdkafka asks for stable offsets
            // only, and a group with a transactional offset commit pending would not answer
            // until its transaction ends.
            let mut config = config.clone();
            config.set("isolation.level", "read_uncommitted");
            let reader = Arc::new(RangeReader::with_group(&config, group)?);
            let evicted = readers.insert(group, reader.clone(), now, KEPT_GROUPS.max(wanted));
            (reader, evicted)
        };
        // Closing a consumer waits for librdkafka: not under the lock, and not in the call.
        if !evicted.is_empty() {
            // Should the thread not start, the closure is dropped here and closes them inline.
            let _ = std::thread::Builder::new()
                .name("kafka-ops-close".into())
                .spawn(move || close_all(evicted));
        }
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
            .map(|group| self.reader(config, group, groups.len()))
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

impl Drop for GroupReaders {
    fn drop(&mut self) {
        let kept = std::mem::take(
            self.readers
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        close_all(
            kept.entries
                .into_values()
                .map(|(reader, _)| reader)
                .collect(),
        );
    }
}

/// Drops `values` on up to [`PARALLEL_CLOSES`] threads at once and returns when all are gone
/// (inline, for any a thread could not be started for).
fn close_all<V: Send>(mut values: Vec<V>) {
    if values.len() <= 1 {
        return;
    }
    let chunk = values.len().div_ceil(PARALLEL_CLOSES);
    std::thread::scope(|scope| {
        while !values.is_empty() {
            let some = values.split_off(values.len().saturating_sub(chunk));
            let _ = std::thread::Builder::new()
                .name("kafka-ops-close".into())
                .spawn_scoped(scope, move || drop(some));
        }
    });
}

/// Values kept by group name, least recently used first out.
struct Kept<V> {
    entries: HashMap<String, (V, Instant)>,
}

impl<V> Default for Kept<V> {
    fn default() -> Self {
        Kept {
            entries: HashMap::new(),
        }
    }
}

impl<V: Clone> Kept<V> {
    /// `group`'s value, now marked used at `now`.
    fn get(&mut self, group: &str, now: Instant) -> Option<V> {
        let (value, used) = self.entries.get_mut(group)?;
        *used = now;
        Some(value.clone())
    }

    /// Keeps `value` for `group`, used at `now`, with room for `capacity` values. Returns what
    /// made room: every value idle for [`IDLE`] when full, else the least recently used one.
    fn insert(&mut self, group: &str, value: V, now: Instant, capacity: usize) -> Vec<V> {
        let mut evicted = Vec::new();
        if self.entries.len() >= capacity.max(1) {
            let idle: Vec<String> = self
                .entries
                .iter()
                .filter(|(_, (_, used))| now.saturating_duration_since(*used) >= IDLE)
                .map(|(name, _)| name.clone())
                .collect();
            evicted.extend(idle.iter().filter_map(|name| self.entries.remove(name)));
            if self.entries.len() >= capacity.max(1) {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(name, _)| name.clone());
                evicted.extend(oldest.and_then(|name| self.entries.remove(&name)));
            }
        }
        self.entries.insert(group.to_string(), (value, now));
        evicted.into_iter().map(|(value, _)| value).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(prefix: &str, count: usize) -> Vec<String> {
        (0..count).map(|i| format!("{prefix}{i}")).collect()
    }

    /// One pass over `groups` at `now`, as `committed` makes it: each is looked up, or created.
    fn pass(kept: &mut Kept<String>, groups: &[String], now: Instant) -> usize {
        let mut created = 0;
        for group in groups {
            if kept.get(group, now).is_none() {
                created += 1;
                kept.insert(group, group.clone(), now, KEPT_GROUPS.max(groups.len()));
            }
        }
        created
    }

    /// Counts itself dropped, then waits (bounded) until `all` are: only values dropped at the
    /// same time all see the full count.
    struct Closing {
        dropped: Arc<(Mutex<usize>, std::sync::Condvar)>,
        all: usize,
        saw_all: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Drop for Closing {
        fn drop(&mut self) {
            let (count, changed) = &*self.dropped;
            let mut count = count.lock().unwrap();
            *count += 1;
            changed.notify_all();
            let (count, _) = changed
                .wait_timeout_while(count, Duration::from_secs(5), |count| *count < self.all)
                .unwrap();
            if *count == self.all {
                self.saw_all.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    #[test]
    fn many_values_are_closed_at_the_same_time_and_all_of_them() {
        let dropped = Arc::new((Mutex::new(0), std::sync::Condvar::new()));
        let saw_all = Arc::new(AtomicUsize::new(0));
        let values: Vec<Closing> = (0..PARALLEL_CLOSES)
            .map(|_| Closing {
                dropped: dropped.clone(),
                all: PARALLEL_CLOSES,
                saw_all: saw_all.clone(),
            })
            .collect();
        close_all(values);
        assert_eq!(saw_all.load(Ordering::SeqCst), PARALLEL_CLOSES);
        // More values than threads: each thread drops its share, all of them.
        let counted = Arc::new(());
        close_all((0..1000).map(|_| counted.clone()).collect());
        assert_eq!(Arc::strong_count(&counted), 1);
    }

    #[test]
    fn a_pass_over_more_groups_than_usually_kept_creates_each_once() {
        let mut kept = Kept::default();
        let groups = names("g", 200);
        let start = Instant::now();
        assert_eq!(pass(&mut kept, &groups, start), 200);
        for round in 1..=3 {
            let now = start + Duration::from_secs(5 * round);
            assert_eq!(pass(&mut kept, &groups, now), 0, "round {round}");
        }
        assert_eq!(kept.entries.len(), 200);
    }

    #[test]
    fn the_least_recently_used_group_makes_room() {
        let mut kept = Kept::default();
        let start = Instant::now();
        for (i, group) in names("g", KEPT_GROUPS).iter().enumerate() {
            let used = start + Duration::from_millis(u64::try_from(i).unwrap());
            kept.insert(group, group.clone(), used, KEPT_GROUPS);
        }
        // g0 used again later than all the others: g1 is now the oldest.
        kept.get("g0", start + Duration::from_secs(1));
        let evicted = kept.insert(
            "new",
            "new".into(),
            start + Duration::from_secs(2),
            KEPT_GROUPS,
        );
        assert_eq!(evicted, ["g1".to_string()]);
        assert_eq!(kept.entries.len(), KEPT_GROUPS);
        assert!(kept.get("g0", start).is_some());
    }

    #[test]
    fn idle_groups_all_go_once_room_is_needed() {
        let mut kept = Kept::default();
        let start = Instant::now();
        pass(&mut kept, &names("once", 300), start);
        // Not idle yet: each new group takes the place of one old one.
        assert_eq!(pass(&mut kept, &names("steady", 10), start + IDLE / 2), 10);
        assert_eq!(kept.entries.len(), 300);
        // Now the rest of the big call's groups are idle: the next one that needs room clears
        // all of them at once, and keeps the groups still in use.
        let evicted = kept.insert("next", "next".into(), start + IDLE * 5 / 4, KEPT_GROUPS);
        assert_eq!(evicted.len(), 290);
        assert!(evicted.iter().all(|name| name.starts_with("once")));
        assert_eq!(kept.entries.len(), 11);
    }
}
