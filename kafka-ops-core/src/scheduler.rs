//! The consumer driver's decisions, without a consumer: which records run now, which wait for
//! their partition or their due time, and which offsets may be committed — on an injected
//! [`Clock`], so redelivery timing is tested exactly.
//!
//! The driver (`kafka::driver`, feature `kafka`) feeds it what librdkafka hands over
//! ([`accept`](Scheduler::accept)), starts what it returns ([`ready`](Scheduler::ready)),
//! reports each handler's result ([`complete`](Scheduler::complete)) and commits
//! [`commit_candidates`](Scheduler::commit_candidates).
//!
//! A result names the [`Run`] it belongs to, not just its offset: the same offset of a
//! partition may be started again while an earlier run of it still goes on (the partition was
//! read again from an earlier offset, or revoked and assigned back), and only the latest run's
//! result counts.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use kafka_ops_core::handler::{Disposition, HandlerError, Outcome};
//! use kafka_ops_core::scheduler::{Accepted, Ordering, Scheduler};
//! use kafka_ops_core::{ManualClock, Offset, Record, Timestamp, TopicPartition};
//!
//! let clock = ManualClock::at(Timestamp::from_millis(0));
//! let mut scheduler = Scheduler::new(Ordering::PerPartition, Arc::new(clock.clone()));
//! let tp = TopicPartition::new("orders", 0);
//! for offset in 0..2 {
//!     let record = Record::new("orders", 0, Offset::new(offset).unwrap()).into_owned();
//!     assert_eq!(scheduler.accept(tp.clone(), record), Accepted::Tracked);
//! }
//! // One record of a partition at a time.
//! let first = scheduler.ready();
//! assert_eq!(first.len(), 1);
//! let (_, record, run) = &first[0];
//! assert_eq!(record.offset, Offset::ZERO);
//! // It asks to be tried again in five seconds: its partition waits.
//! let later = HandlerError::transient("503")
//!     .with_disposition(Disposition::RedeliverAt(Timestamp::from_millis(5_000)));
//! scheduler.complete(&tp, *run, Err(later));
//! assert!(scheduler.ready().is_empty());
//! clock.advance(Duration::from_secs(5));
//! let again = scheduler.ready();
//! let (_, record, run) = &again[0];
//! assert_eq!(record.offset, Offset::ZERO);
//! scheduler.complete(&tp, *run, Ok(Outcome::Processed));
//! assert_eq!(scheduler.commit_candidates(None), [(tp.clone(), Offset::new(1).unwrap())]);
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use foldhash::{HashMap, HashSet};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::handler::{Disposition, HandlerError, Outcome};
use crate::record::OwnedRecord;
use crate::tracker::OffsetTracker;
use crate::types::{Offset, Timestamp, TopicPartition};

/// How records of one partition may overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// One record per partition at a time, in offset order; partitions run in parallel.
    #[default]
    PerPartition,
    /// Any record may run beside any other (commits still never pass an unfinished record).
    Unordered,
}

/// With unordered processing, how many times `max_in_flight` records one partition may hold
/// from its first unfinished record on (see [`Scheduler::room_for`]). Above 1 so a head record
/// that is merely slower than the rest does not throttle its partition at once.
pub const UNORDERED_WINDOW: usize = 4;

/// One start of a record, handed out by [`Scheduler::ready`]: its result counts only when
/// [`Scheduler::complete`] is given this run, and only while the run is still the record's
/// latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    offset: Offset,
    id: u64,
}

impl Run {
    /// The offset of the record this run started.
    pub fn offset(self) -> Offset {
        self.offset
    }
}

/// One partition's records between librdkafka and their completion.
#[derive(Default)]
struct PartitionWork {
    /// Taken from librdkafka, not started yet, in offset order.
    waiting: VecDeque<Arc<OwnedRecord>>,
    /// Started and not finished, by run; kept so a redelivery can run the record again.
    running: HashMap<u64, Arc<OwnedRecord>>,
    /// Runs still going whose records the partition reads again: their results count for
    /// nothing, but per-partition ordering still waits for them, so two records of the
    /// partition never run at once.
    superseded: HashSet<u64>,
    /// Per-partition ordering: nothing of this partition runs before this instant (a record
    /// asked to be redelivered later; it waits at the front of `waiting`).
    held_until: Option<Instant>,
    /// Unordered processing: records to run again at their instant.
    delayed: Vec<(Instant, Arc<OwnedRecord>)>,
    /// Being read again from an earlier offset, and no record of it has arrived since.
    rereading: bool,
}

impl PartitionWork {
    fn buffered(&self) -> usize {
        self.waiting.len() + self.running() + self.delayed.len()
    }

    /// Handlers running for the partition, superseded ones included: they still hold their
    /// records and their threads.
    fn running(&self) -> usize {
        self.running.len() + self.superseded.len()
    }
}

/// What [`Scheduler::accept`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a record behind its partition must be read again"]
pub enum Accepted {
    /// Tracked; it starts when its turn comes.
    Tracked,
    /// Not taken: it is below a record its partition already handed over. The partition's
    /// bookkeeping was started over and its unstarted records dropped; read the partition again
    /// from this record's offset.
    Behind,
}

/// What became of a finished record, for counters and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Done with this outcome (a handler's [`Disposition::Skip`] counts as
    /// [`Outcome::Skipped`]); its offset may be committed once its predecessors are done.
    Done(Outcome),
    /// Held to run again at `due`.
    Redelivered {
        /// When it runs again.
        due: Instant,
    },
    /// Failed with nothing to recover it: nothing more is started, and nothing is committed
    /// past it.
    Failed,
}

/// The driver's pure state; see the [module documentation](self).
pub struct Scheduler {
    tracker: OffsetTracker,
    work: HashMap<TopicPartition, PartitionWork>,
    failure: Option<(TopicPartition, Offset, HandlerError)>,
    ordering: Ordering,
    clock: Arc<dyn Clock>,
    /// The id of the next [`Run`]. Never reused, so a run forgotten with its partition cannot
    /// be mistaken for a later one.
    next_run: u64,
    /// Runs of forgotten partitions still going (a handler outlived the revoke): they count
    /// as running, and when their partition is assigned again its next record waits for them
    /// under per-partition ordering, as for a record being read again.
    orphans: HashMap<TopicPartition, HashSet<u64>>,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("ordering", &self.ordering)
            .field("partitions", &self.work.len())
            .field("in_flight", &self.tracker.total_in_flight())
            .field("failed", &self.failure.is_some())
            .finish()
    }
}

impl Scheduler {
    /// An empty scheduler keeping `ordering`, on `clock`.
    pub fn new(ordering: Ordering, clock: Arc<dyn Clock>) -> Self {
        Scheduler {
            tracker: OffsetTracker::new(),
            work: HashMap::default(),
            failure: None,
            ordering,
            clock,
            next_run: 0,
            orphans: HashMap::default(),
        }
    }

    /// Takes a record librdkafka handed over: tracked at once (it may not be committed past
    /// until it is done), started by a later [`ready`](Self::ready).
    ///
    /// A record below one its partition already handed over is not taken
    /// ([`Accepted::Behind`]): the partition is being read again from an earlier offset (after
    /// a log truncation, for instance), or its records arrived out of order. What the partition
    /// holds from that offset on is dropped — its tracking and its records not started yet —
    /// while everything below it stays, and records already running finish (their results no
    /// longer count). The caller must make the consumer read the partition again from the
    /// record's offset: otherwise the records dropped would never come back, and committing
    /// after later ones would skip them. Until the partition's next record arrives, the
    /// consumer's position is not taken for it (it may still be the one from before).
    pub fn accept(&mut self, partition: TopicPartition, record: OwnedRecord) -> Accepted {
        let offset = record.offset;
        if let Err(error) = self.tracker.track(&partition, offset) {
            tracing::warn!(%error, "reading the partition again from the earlier offset");
            self.tracker.rewind(&partition, offset);
            let work = self.work.entry(partition).or_default();
            let below = |record: &Arc<OwnedRecord>| record.offset < offset;
            work.waiting.retain(below);
            work.delayed.retain(|(_, record)| below(record));
            // The records read again get new runs; these ones' results must not count for them.
            let superseded: Vec<u64> = work
                .running
                .extract_if(|_, record| !below(record))
                .map(|(id, _)| id)
                .collect();
            work.superseded.extend(superseded);
            if work.waiting.is_empty() {
                work.held_until = None;
            }
            work.rereading = true;
            return Accepted::Behind;
        }
        let work = self.work.entry(partition).or_default();
        work.rereading = false;
        work.waiting.push_back(Arc::new(record));
        Accepted::Tracked
    }

    /// The records to start now, marked running: with per-partition ordering the head of each
    /// partition that has nothing running and is not held; unordered, everything waiting; and
    /// every delayed record that is due. Nothing once a record failed.
    ///
    /// Each comes with the [`Run`] its result must be [completed](Self::complete) with.
    pub fn ready(&mut self) -> Vec<(TopicPartition, Arc<OwnedRecord>, Run)> {
        let mut started = Vec::new();
        self.ready_into(&mut started);
        started
    }

    /// [`ready`](Self::ready) into `started` (appended), so a poll loop reuses one buffer: a
    /// fresh vector per round cost an allocation large enough to make the allocator sort its
    /// free lists every round.
    pub fn ready_into(&mut self, started: &mut Vec<(TopicPartition, Arc<OwnedRecord>, Run)>) {
        if self.failure.is_some() {
            return;
        }
        let now = self.clock.now();
        let next_run = &mut self.next_run;
        let mut start =
            |tp: &TopicPartition, work: &mut PartitionWork, record: Arc<OwnedRecord>| {
                let run = Run {
                    offset: record.offset,
                    id: *next_run,
                };
                *next_run += 1;
                work.running.insert(run.id, record.clone());
                started.push((tp.clone(), record, run));
            };
        for (tp, work) in self.work.iter_mut() {
            if work.held_until.is_some_and(|until| until <= now) {
                work.held_until = None;
            }
            match self.ordering {
                Ordering::PerPartition => {
                    if work.running() == 0
                        && work.held_until.is_none()
                        && let Some(record) = work.waiting.pop_front()
                    {
                        start(tp, work, record);
                    }
                }
                Ordering::Unordered => {
                    while let Some(record) = work.waiting.pop_front() {
                        start(tp, work, record);
                    }
                }
            }
            if !work.delayed.is_empty() {
                let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut work.delayed)
                    .into_iter()
                    .partition(|(at, _)| *at <= now);
                work.delayed = later;
                for (_, record) in due {
                    start(tp, work, record);
                }
            }
        }
    }

    /// Records the result of `run`, a run of a record of `partition` that [`ready`](Self::ready)
    /// handed out.
    ///
    /// Returns `None`, and changes nothing but forgetting the run, when the result counts for
    /// nothing: the partition was [forgotten](Self::forget) since the run started (it may be
    /// owned again, and its record running again, meanwhile), or its record is being read again
    /// ([`Accepted::Behind`]). Such a result neither completes, redelivers nor fails anything:
    /// the record's latest run, if any, decides.
    pub fn complete(
        &mut self,
        partition: &TopicPartition,
        run: Run,
        result: Result<Outcome, HandlerError>,
    ) -> Option<Finished> {
        let Some(work) = self.work.get_mut(partition) else {
            if let Some(orphans) = self.orphans.get_mut(partition) {
                orphans.remove(&run.id);
                if orphans.is_empty() {
                    self.orphans.remove(partition);
                }
            }
            tracing::debug!(%partition, offset = %run.offset, "result for a partition no longer owned; ignored");
            return None;
        };
        let Some(record) = work.running.remove(&run.id) else {
            if work.superseded.remove(&run.id) {
                tracing::debug!(%partition, offset = %run.offset, "result of a record being read again; ignored");
            } else {
                tracing::debug!(%partition, offset = %run.offset, "result of a run from before the partition was assigned again; ignored");
            }
            return None;
        };
        let offset = record.offset;
        let result = match result {
            Err(error) if error.disposition() == Disposition::Skip => {
                tracing::warn!(%partition, %offset, %error, "skipping the record as its handler asked");
                Ok(Outcome::Skipped)
            }
            other => other,
        };
        Some(match result {
            Ok(outcome) => {
                self.tracker.complete(partition, offset);
                Finished::Done(outcome)
            }
            Err(error) => {
                if let Disposition::RedeliverAt(at) = error.disposition() {
                    let due = due(self.clock.as_ref(), at);
                    tracing::debug!(%partition, %offset, %at, "redelivery requested");
                    match self.ordering {
                        // The record goes back to the front and its partition waits for it.
                        Ordering::PerPartition => {
                            work.waiting.push_front(record);
                            work.held_until = Some(due);
                        }
                        Ordering::Unordered => work.delayed.push((due, record)),
                    }
                    return Some(Finished::Redelivered { due });
                }
                tracing::error!(%partition, %offset, %error, "handler failed; stopping without committing past it");
                if self.failure.is_none() {
                    self.failure = Some((partition.clone(), offset, error));
                }
                Finished::Failed
            }
        })
    }

    /// The earliest instant a held or delayed record becomes due.
    pub fn next_due(&self) -> Option<Instant> {
        self.work
            .values()
            .flat_map(|w| {
                w.held_until
                    .into_iter()
                    .chain(w.delayed.iter().map(|(at, _)| *at))
            })
            .min()
    }

    /// How many more records of `partition` may be accepted now: at most `max_in_flight`
    /// unfinished in all and, with per-partition ordering, `partition_buffer` per partition.
    ///
    /// Unordered, a partition also holds at most [`UNORDERED_WINDOW`] × `max_in_flight` records
    /// from its first unfinished one on, done or not: records done behind an unfinished one
    /// cannot be committed, so without this bound one stuck record would let the partition's
    /// bookkeeping — and what a restart handles again — grow without end while the others
    /// finish. Other partitions are not held back by it.
    pub fn room_for(
        &self,
        partition: &TopicPartition,
        max_in_flight: usize,
        partition_buffer: usize,
    ) -> usize {
        let total_room = max_in_flight.saturating_sub(self.tracker.total_in_flight());
        let partition_room = match self.ordering {
            Ordering::PerPartition => {
                let buffered = self.work.get(partition).map_or(0, PartitionWork::buffered);
                partition_buffer.saturating_sub(buffered)
            }
            Ordering::Unordered => max_in_flight
                .saturating_mul(UNORDERED_WINDOW)
                .saturating_sub(self.tracker.pending(partition)),
        };
        total_room.min(partition_room)
    }

    /// Partitions assigned to this consumer: their records are welcome.
    pub fn assign(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            let work = self.work.entry(tp.clone()).or_default();
            if let Some(orphans) = self.orphans.remove(tp) {
                work.superseded.extend(orphans);
            }
        }
    }

    /// Partitions being revoked: their records not started yet belong to the next owner now
    /// (those running may still finish and be committed before [`forget`](Self::forget)).
    pub fn revoke(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if let Some(work) = self.work.get_mut(tp) {
                work.waiting.clear();
                work.delayed.clear();
                work.held_until = None;
            }
        }
    }

    /// Drops everything about `partitions` (once revoked and committed): results of runs
    /// started before count for nothing, even once the partitions are assigned again. Runs
    /// still going stay counted as running (and, assigned again, hold their partition under
    /// per-partition ordering) until their results arrive.
    pub fn forget(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.tracker.forget(tp);
            if let Some(work) = self.work.remove(tp) {
                let going: Vec<u64> = work.running.into_keys().chain(work.superseded).collect();
                if !going.is_empty() {
                    self.orphans.entry(tp.clone()).or_default().extend(going);
                }
            }
        }
    }

    /// Records running in `partitions`, those whose results no longer count included (until
    /// the partitions are forgotten).
    pub fn running_in(&self, partitions: &[TopicPartition]) -> usize {
        partitions
            .iter()
            .map(|tp| {
                self.work.get(tp).map_or(0, PartitionWork::running)
                    + self.orphans.get(tp).map_or(0, HashSet::len)
            })
            .sum()
    }

    /// Records running in all partitions, as [`running_in`](Self::running_in) counts them.
    pub fn running_total(&self) -> usize {
        self.work
            .values()
            .map(PartitionWork::running)
            .sum::<usize>()
            + self.orphans.values().map(HashSet::len).sum::<usize>()
    }

    /// Records accepted and not done (waiting, running, held or failed).
    pub fn in_flight(&self) -> usize {
        self.tracker.total_in_flight()
    }

    /// Offsets that may be committed now, for `only` these partitions or all.
    pub fn commit_candidates(
        &self,
        only: Option<&[TopicPartition]>,
    ) -> Vec<(TopicPartition, Offset)> {
        match only {
            Some(partitions) => self.tracker.commit_candidates_for(partitions),
            None => self.tracker.commit_candidates(),
        }
    }

    /// Records that `offset` of `partition` is committed.
    pub fn mark_committed(&mut self, partition: &TopicPartition, offset: Offset) {
        self.tracker.mark_committed(partition, offset);
    }

    /// The consumer's position in `partition`, past transaction markers it stepped over (see
    /// [`OffsetTracker::observe_position`]).
    pub fn observe_position(&mut self, partition: &TopicPartition, position: Offset) {
        if self.work.get(partition).is_some_and(|work| work.rereading) {
            return;
        }
        self.tracker.observe_position(partition, position);
    }

    /// Whether a record failed with nothing to recover it.
    pub fn has_failed(&self) -> bool {
        self.failure.is_some()
    }

    /// The first unrecovered failure, taken.
    pub fn take_failure(&mut self) -> Option<(TopicPartition, Offset, HandlerError)> {
        self.failure.take()
    }
}

/// When a redelivery asked for `at` (wall clock) is due, on `clock`'s monotonic time.
fn due(clock: &dyn Clock, at: Timestamp) -> Instant {
    clock.now() + at.saturating_since(clock.wall())
}

#[cfg(test)]
mod tests;
