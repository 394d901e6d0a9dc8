//! Committed offsets of any group, read through a consumer of that group (never through
//! librdkafka's admin `ListConsumerGroupOffsets`; see [`RangeReader::committed_offsets`]): the
//! path for what [`offset_fetch`](super::offset_fetch) cannot answer (secured listeners,
//! librdkafka's mock cluster, a coordinator moving or unreachable, brokers before Kafka 3.0).
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

/// Consumers kept besides a call's own: a call over `n` groups keeps up to `n` + this many, so
/// other callers' groups (a health probe's, one group's lag between passes) are not evicted by
/// each pass and recreated by each call.
const KEPT_GROUPS: usize = 64;
/// A consumer unused this long is closed at the next call: a one-off call over every group
/// does not hold its clients (threads and connections each) for the process's life.
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
    /// The consumer of each of `groups`, in their order, created on first use. The call's
    /// groups already kept are marked used before any is created, so making room never evicts
    /// one of them; readers unused for [`IDLE`] are closed. Readers that go are closed on a
    /// thread of their own: the call does not wait for librdkafka.
    fn readers(
        &self,
        config: &ClientConfig,
        groups: &[String],
    ) -> Vec<Result<Arc<RangeReader>, Error>> {
        let (readers, closing) = {
            let mut kept = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
            kept.take_for(groups, Instant::now(), |group| {
                // `read_committed`: librdkafka then asks for stable offsets, which Kafka's
                // group coordinator answers from its latest state; otherwise, right after it
                // took the group over, an acknowledged commit can read "never committed" (see
                // `offset_fetch::encode_request`). On older coordinators a group with a
                // transactional offset commit pending answers only once the transaction ends:
                // until then it fails with a timeout, never with a wrong offset.
                let mut config = config.clone();
                config.set("isolation.level", "read_committed");
                RangeReader::with_group(&config, group).map(Arc::new)
            })
        };
        if !closing.is_empty() {
            // Should the thread not start, the closure is dropped here and closes them inline.
            let _ = std::thread::Builder::new()
                .name("kafka-ops-close".into())
                .spawn(move || close_all(closing));
        }
        readers
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
        let deadline = crate::kafka::deadline_after(Instant::now(), timeout);
        let readers = self.readers(config, groups);
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

    /// The value of each of `groups` at `now`, made by `make` where none is kept, and the
    /// values that went: every one idle for [`IDLE`], and the least recently used ones when
    /// there was no room. The groups already kept are marked used before any value is made, so
    /// none of them makes room for another.
    fn take_for<E>(
        &mut self,
        groups: &[String],
        now: Instant,
        mut make: impl FnMut(&str) -> Result<V, E>,
    ) -> (Vec<Result<V, E>>, Vec<V>) {
        let mut gone = self.sweep_idle(now);
        let found: Vec<Option<V>> = groups.iter().map(|group| self.get(group, now)).collect();
        let values = groups
            .iter()
            .zip(found)
            .map(|(group, found)| match found {
                Some(value) => Ok(value),
                None => {
                    let value = make(group)?;
                    gone.extend(self.insert(group, value.clone(), now, groups.len() + KEPT_GROUPS));
                    Ok(value)
                }
            })
            .collect();
        (values, gone)
    }

    /// Takes out every value unused for [`IDLE`] at `now`.
    fn sweep_idle(&mut self, now: Instant) -> Vec<V> {
        let idle: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, (_, used))| now.saturating_duration_since(*used) >= IDLE)
            .map(|(name, _)| name.clone())
            .collect();
        idle.iter()
            .filter_map(|name| self.entries.remove(name))
            .map(|(value, _)| value)
            .collect()
    }

    /// Keeps `value` for `group`, used at `now`, with room for `capacity` values. Returns what
    /// made room: the least recently used value, when full.
    fn insert(&mut self, group: &str, value: V, now: Instant, capacity: usize) -> Option<V> {
        let evicted = if self.entries.len() >= capacity.max(1) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(name, _)| name.clone());
            oldest
                .and_then(|name| self.entries.remove(&name))
                .map(|(value, _)| value)
        } else {
            None
        };
        self.entries.insert(group.to_string(), (value, now));
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(prefix: &str, count: usize) -> Vec<String> {
        (0..count).map(|i| format!("{prefix}{i}")).collect()
    }

    /// One call over `groups` at `now`, as `committed` makes it: returns how many values were
    /// made and how many went.
    fn call(kept: &mut Kept<String>, groups: &[String], now: Instant) -> (usize, usize) {
        let mut made = 0;
        let (values, gone) = kept.take_for(groups, now, |group| {
            made += 1;
            Ok::<_, ()>(group.to_string())
        });
        assert!(values.iter().zip(groups).all(|(v, g)| v.as_ref() == Ok(g)));
        (made, gone.len())
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
        assert_eq!(call(&mut kept, &groups, start), (200, 0));
        for round in 1..=3 {
            let now = start + Duration::from_secs(5 * round);
            assert_eq!(call(&mut kept, &groups, now), (0, 0), "round {round}");
        }
        assert_eq!(kept.entries.len(), 200);
    }

    #[test]
    fn another_callers_group_between_passes_recreates_nothing() {
        let mut kept = Kept::default();
        let pass = names("g", 200);
        let probe = names("probe", 1);
        let start = Instant::now();
        call(&mut kept, &pass, start);
        // The probe's first call takes the place of one of the pass's groups, which the next
        // pass makes again; after that, pass and probe alternate without making anything.
        assert_eq!(
            call(&mut kept, &probe, start + Duration::from_secs(1)),
            (1, 1)
        );
        assert_eq!(
            call(&mut kept, &pass, start + Duration::from_secs(2)),
            (1, 0)
        );
        for round in 1..=5 {
            let now = start + Duration::from_secs(10 * round);
            assert_eq!(call(&mut kept, &probe, now), (0, 0), "probe, round {round}");
            let now = now + Duration::from_secs(5);
            assert_eq!(call(&mut kept, &pass, now), (0, 0), "pass, round {round}");
        }
    }

    #[test]
    fn a_call_never_evicts_its_own_groups() {
        let mut kept = Kept::default();
        let start = Instant::now();
        // More groups kept than the next call makes room for, all used after the call's own.
        let mine = names("mine", 10);
        call(&mut kept, &mine, start);
        call(
            &mut kept,
            &names("other", 100),
            start + Duration::from_secs(1),
        );
        let mut asked = mine.clone();
        asked.extend(names("new", 5));
        // Each new group takes the place of one of the others, however recently those were used.
        assert_eq!(
            call(&mut kept, &asked, start + Duration::from_secs(2)),
            (5, 5)
        );
        assert!(asked.iter().all(|group| kept.entries.contains_key(group)));
        assert_eq!(kept.entries.len(), 110);
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
        assert_eq!(evicted.as_deref(), Some("g1"));
        assert_eq!(kept.entries.len(), KEPT_GROUPS);
        assert!(kept.get("g0", start).is_some());
    }

    #[test]
    fn idle_groups_go_at_the_next_call_even_with_room_to_spare() {
        let mut kept = Kept::default();
        let start = Instant::now();
        call(&mut kept, &names("once", 300), start);
        let steady = names("steady", 10);
        // Not idle yet: each new group takes the place of one old one.
        assert_eq!(call(&mut kept, &steady, start + IDLE / 2), (10, 10));
        assert_eq!(kept.entries.len(), 300);
        // Only the steady groups are asked for, all kept: the idle ones still go.
        assert_eq!(call(&mut kept, &steady, start + IDLE * 5 / 4), (0, 290));
        assert_eq!(kept.entries.len(), 10);
    }
}
