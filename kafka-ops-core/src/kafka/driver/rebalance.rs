//! What the poll loop shares with librdkafka's rebalance callbacks (which run inside `poll`, on
//! the same thread): the scheduler behind a lock, the completion channel, the commit, and the
//! callbacks themselves.

use foldhash::HashSet;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};

use super::Prefetched;
use super::handle::{Control, bump};
use crate::error::Error;
use crate::ffi::ClientQueue;
use crate::handler::{HandlerError, Outcome};
use crate::kafka::{add_at_offset, lock};
use crate::record::OwnedRecord;
use crate::scheduler::{Run, Scheduler};
use crate::types::TopicPartition;

/// A handler's result, sent from the task that ran it.
pub(super) struct Completion {
    pub(super) partition: TopicPartition,
    pub(super) run: Run,
    pub(super) result: Result<Outcome, HandlerError>,
}

/// What wakes the poll loop: a finished record, or librdkafka saying a queue has messages.
pub(super) enum LoopEvent {
    Completion(Completion),
    Wakeup,
}

/// Poll-loop state shared with the rebalance callbacks.
pub(super) struct LoopState {
    pub(super) scheduler: Scheduler,
    /// A fatal consumer error.
    pub(super) fatal: Option<Error>,
    /// Partitions the last rebalance assigned, whose queues the poll loop must split off.
    pub(super) to_split: Vec<TopicPartition>,
    /// Partitions the last rebalance revoked, whose queues the poll loop must drop.
    pub(super) to_drop: Vec<TopicPartition>,
    /// Partitions this driver paused and has not resumed: librdkafka keeps a partition's pause
    /// across its revocation and return, so one revoked while paused must be resumed when it
    /// comes back to a driver no longer paused. Only those: resuming a partition bumps its
    /// fetch version in librdkafka, which makes it fetch again what it had prefetched.
    pub(super) paused_partitions: HashSet<TopicPartition>,
    /// The records each dispatch round starts, kept between rounds (see
    /// [`Scheduler::ready_into`]).
    pub(super) ready: Vec<(TopicPartition, Arc<OwnedRecord>, Run)>,
}

impl LoopState {
    pub(super) fn new(scheduler: Scheduler) -> Self {
        LoopState {
            scheduler,
            fatal: None,
            to_split: Vec::new(),
            to_drop: Vec::new(),
            paused_partitions: HashSet::default(),
            ready: Vec::new(),
        }
    }

    /// Hands a result to the scheduler and counts it, unless it no longer counts (its record
    /// was read again or its partition revoked meanwhile: another run's result counts).
    pub(super) fn apply(&mut self, completion: Completion, control: &Control) {
        if let Some(finished) =
            self.scheduler
                .complete(&completion.partition, completion.run, completion.result)
        {
            control.counters.record(finished);
        }
    }
}

pub(super) struct Shared {
    pub(super) control: Arc<Control>,
    pub(super) state: Mutex<LoopState>,
    pub(super) events: Mutex<Receiver<LoopEvent>>,
    pub(super) revoke_timeout: Duration,
}

impl Shared {
    /// Applies every completion already waiting; returns how many events were seen.
    pub(super) fn drain_events(&self, state: &mut LoopState) -> usize {
        let receiver = lock(&self.events);
        let mut seen = 0;
        while let Ok(event) = receiver.try_recv() {
            seen += 1;
            if let LoopEvent::Completion(completion) = event {
                state.apply(completion, &self.control);
            }
        }
        seen
    }

    /// Waits up to `timeout` for an event, then applies everything waiting.
    pub(super) fn wait_for_event(&self, timeout: Duration) {
        let first = lock(&self.events).recv_timeout(timeout);
        let mut state = lock(&self.state);
        if let Ok(LoopEvent::Completion(completion)) = first {
            state.apply(completion, &self.control);
        }
        self.drain_events(&mut state);
    }

    pub(super) fn publish_in_flight(&self, state: &LoopState) {
        self.control
            .counters
            .in_flight
            .store(state.scheduler.in_flight() as u64, AtomicOrdering::Relaxed);
    }

    /// Commits the safe offsets of `only` (or of every tracked partition) and waits for the
    /// broker's answer. Commits are synchronous on purpose: the poll thread is not a latency
    /// path (handlers run elsewhere), and a confirmed commit is what the scheduler may rely on.
    pub(super) fn commit<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        only: Option<&[TopicPartition]>,
    ) -> KafkaResult<()> {
        let candidates = lock(&self.state).scheduler.commit_candidates(only);
        if candidates.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::with_capacity(candidates.len());
        for (tp, offset) in &candidates {
            add_at_offset(&mut list, &tp.topic, tp.partition, offset.get())?;
        }
        // No lock is held here: librdkafka may run callbacks that take it.
        let result = consumer.commit(&list, CommitMode::Sync);
        match &result {
            Ok(()) => {
                bump(&self.control.counters.commits);
                metrics::counter!("kafka_ops_commits_total", "result" => "ok").increment(1);
                let mut state = lock(&self.state);
                for (tp, offset) in &candidates {
                    state.scheduler.mark_committed(tp, *offset);
                }
            }
            Err(error) => {
                bump(&self.control.counters.commit_failures);
                metrics::counter!("kafka_ops_commits_total", "result" => "error").increment(1);
                tracing::warn!(%error, "offset commit failed; it will be retried");
            }
        }
        result
    }
}

/// The consumer context: rebalance and statistics callbacks, run on the poll thread.
pub(super) struct DriverContext {
    pub(super) shared: Arc<Shared>,
}

impl ClientContext for DriverContext {
    /// Keeps the prefetch for [`DriverStats`](super::DriverStats) and the
    /// `kafka_ops_prefetched_bytes` / `_messages` gauges (rdkafka's default would log the whole
    /// document at info level every interval).
    fn stats(&self, statistics: Statistics) {
        let prefetched = Prefetched::of(&statistics);
        metrics::gauge!("kafka_ops_prefetched_bytes").set(prefetched.bytes as f64);
        metrics::gauge!("kafka_ops_prefetched_messages").set(prefetched.messages as f64);
        *lock(&self.shared.control.prefetched) = Some(prefetched);
    }
}

/// The topic-partitions of `list`.
pub(super) fn partitions_of(list: &TopicPartitionList) -> Vec<TopicPartition> {
    list.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

impl DriverContext {
    /// Partitions going away: give their running records a bounded chance to finish, so their
    /// offsets are committed by us rather than redone by the next owner, then commit and forget.
    fn revoke(&self, consumer: &BaseConsumer<Self>, revoked: &[TopicPartition]) {
        let shared = &self.shared;
        lock(&shared.state).scheduler.revoke(revoked);
        let deadline = Instant::now() + shared.revoke_timeout;
        loop {
            let running = {
                let mut state = lock(&shared.state);
                shared.drain_events(&mut state);
                state.scheduler.running_in(revoked)
            };
            let now = Instant::now();
            if running == 0 || now >= deadline {
                break;
            }
            shared.wait_for_event((deadline - now).min(Duration::from_millis(50)));
        }
        if !consumer.assignment_lost()
            && let Err(error) = shared.commit(consumer, Some(revoked))
        {
            tracing::warn!(%error, "commit on revoke failed");
        }
        // A set: a consumer of thousands of partitions would otherwise compare every pair.
        let gone: HashSet<&TopicPartition> = revoked.iter().collect();
        let mut state = lock(&shared.state);
        state.scheduler.forget(revoked);
        state.to_split.retain(|t| !gone.contains(t));
        state.to_drop.extend(revoked.iter().cloned());
        shared.publish_in_flight(&state);
        lock(&shared.control.assigned).retain(|tp| !gone.contains(tp));
    }
}

/// Before librdkafka starts fetching newly assigned partitions, stops it from forwarding their
/// queues to the consumer queue. The poll loop reads each partition from its own queue; a
/// partition whose first records reached the consumer queue and later ones its own queue would
/// be handed over out of order. (The loop splits the queues off after the assignment, but
/// librdkafka may have fetched by then.)
fn keep_partition_queues_apart(consumer: &BaseConsumer<DriverContext>, list: &TopicPartitionList) {
    for element in list.elements() {
        match ClientQueue::partition_of(consumer.client(), element.topic(), element.partition()) {
            Ok(queue) => queue.stop_forwarding(),
            Err(error) => tracing::warn!(
                topic = element.topic(),
                partition = element.partition(),
                %error,
                "could not keep the partition's queue apart before its assignment"
            ),
        }
    }
}

impl ConsumerContext for DriverContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        bump(&self.shared.control.counters.rebalances);
        match rebalance {
            Rebalance::Revoke(list) => {
                let revoked = partitions_of(list);
                tracing::info!(partitions = ?revoked, "partitions revoked");
                self.revoke(consumer, &revoked);
            }
            Rebalance::Assign(list) => keep_partition_queues_apart(consumer, list),
            Rebalance::Error(error) => {
                tracing::warn!(%error, "rebalance error");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let assigned = partitions_of(list);
            tracing::info!(partitions = ?assigned, "partitions assigned");
            // Newly assigned partitions take the consumer's pause state both ways (see
            // `LoopState::paused_partitions`).
            let paused = self.shared.control.paused.load(AtomicOrdering::SeqCst);
            let mut state = lock(&self.shared.state);
            let applied = if paused {
                state.paused_partitions.extend(assigned.iter().cloned());
                consumer.pause(list)
            } else {
                let stale: Vec<&TopicPartition> = assigned
                    .iter()
                    .filter(|tp| state.paused_partitions.remove(*tp))
                    .collect();
                if stale.is_empty() {
                    Ok(())
                } else {
                    tracing::debug!(partitions = ?stale, "resuming partitions paused before their revocation");
                    let mut resumed = TopicPartitionList::with_capacity(stale.len());
                    for tp in stale {
                        resumed.add_partition(&tp.topic, tp.partition);
                    }
                    consumer.resume(&resumed)
                }
            };
            drop(state);
            if let Err(error) = applied {
                tracing::warn!(%error, paused, "could not set the pause state of newly assigned partitions");
            }
            {
                let new: HashSet<&TopicPartition> = assigned.iter().collect();
                let mut state = lock(&self.shared.state);
                state.scheduler.assign(&assigned);
                state.to_drop.retain(|t| !new.contains(t));
                state.to_split.extend(assigned.iter().cloned());
            }
            let mut current = lock(&self.shared.control.assigned);
            current.extend(assigned);
            current.sort();
            current.dedup();
        }
    }
}
