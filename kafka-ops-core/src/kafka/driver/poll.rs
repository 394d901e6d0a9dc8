//! The poll loop: takes records from librdkafka's queues while the scheduler has room, starts
//! what the scheduler hands out, and commits what it allows.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use foldhash::HashMap;
use futures_util::FutureExt;
use rdkafka::Message;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use tracing::Instrument;

use super::handle::{Control, bump};
use super::rebalance::{Completion, DriverContext, LoopEvent, LoopState, Shared, partitions_of};
use super::{Driver, DriverConfig};
use crate::class::{ErrorClass, KafkaCode};
use crate::error::Error;
use crate::ffi::{ClientQueue, Delivery, MessageBatch};
use crate::handler::{Handler, HandlerError, Outcome};
use crate::kafka::lock;
use crate::kafka::{classify, kafka_error, record_from_message};
use crate::record::OwnedRecord;
use crate::scheduler::{Accepted, Run};
use crate::types::{Offset, TopicPartition};

/// Records the consumer hands over per poll call before the loop does its housekeeping.
pub(super) const POLL_BATCH: usize = 1_024;

/// How long a handler's first poll may hold the poll thread before handlers stop being polled
/// there (see `RunLoop::spawn`).
const INLINE_POLL_BUDGET: Duration = Duration::from_millis(1);

/// Inline polls over [`INLINE_POLL_BUDGET`] in a row that end inline polls for the run. One is
/// not enough: a hash table growing, a page fault or the thread losing its core makes a single
/// poll slow now and then, and ending inline polls for that costs every later record a task.
const SLOW_INLINE_POLLS_IN_A_ROW: u32 = 3;

/// One inline poll in this many is timed against [`INLINE_POLL_BUDGET`].
const TIMED_INLINE_POLL_EVERY: u32 = 16;

/// A topic's name as partitions hold it, and as records hold it.
pub(super) type TopicNames = (Arc<str>, Cow<'static, str>);

/// At most this many topic names are interned for the life of the process.
const INTERNED_TOPICS: usize = 4_096;

/// `topic` as a name shared by every record read from it, so a record's topic costs no
/// allocation (see [`intern`]).
fn interned(topic: &str) -> Cow<'static, str> {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = lock(&NAMES);
    intern(&mut names, INTERNED_TOPICS, topic)
}

/// `name` from `names`, added (and kept for the life of the process) while fewer than `limit`
/// are there; a copy of its own past that, so consumers of ever-new topics do not grow the set
/// without bound.
fn intern(names: &mut BTreeSet<&'static str>, limit: usize, name: &str) -> Cow<'static, str> {
    if let Some(known) = names.get(name) {
        return Cow::Borrowed(*known);
    }
    if names.len() >= limit {
        return Cow::Owned(name.to_string());
    }
    let kept: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.insert(kept);
    Cow::Borrowed(kept)
}

/// A partition's queue, split off the consumer queue: read in batches through `batch`, while
/// `_split` keeps the split (and the wake-up when messages arrive) alive.
pub(super) struct SplitQueue {
    /// Declared first, so it is dropped before `_split`, which holds the consumer.
    batch: ClientQueue,
    /// The topic's names, for the records read here.
    names: TopicNames,
    _split: PartitionQueue<DriverContext>,
}

/// Header names seen by this loop, each shared by every record that carries it (see
/// [`intern`]): most topics carry the same few names on every record.
#[derive(Default)]
pub(super) struct HeaderNames(foldhash::HashSet<&'static str>);

impl HeaderNames {
    fn get(&mut self, name: &str) -> Cow<'static, str> {
        if let Some(known) = self.0.get(name) {
            return Cow::Borrowed(*known);
        }
        let name = interned(name);
        if let Cow::Borrowed(known) = name {
            self.0.insert(known);
        }
        name
    }
}

pub(super) struct RunLoop<'a, H> {
    pub(super) driver: &'a Driver<H>,
    pub(super) shared: &'a Arc<Shared>,
    pub(super) consumer: &'a Arc<BaseConsumer<DriverContext>>,
    pub(super) sender: Sender<LoopEvent>,
    pub(super) runtime: tokio::runtime::Handle,
    /// Each assigned partition's own librdkafka queue: records are taken from it only while
    /// there is room, so backpressure never needs pause/resume (whose purge and refetch would
    /// cost more than the work) and the consumer queue stays free for rebalance events.
    pub(super) queues: HashMap<TopicPartition, SplitQueue>,
    /// The partitions of `queues`, sorted: the order of the round-robin pulls, kept here so a
    /// loop iteration does not collect and sort every assigned partition again.
    pub(super) queue_order: Vec<TopicPartition>,
    /// Interned topic names, so records share one allocation per topic.
    pub(super) topics: RefCell<HashMap<String, TopicNames>>,
    /// Interned header names, so records share one allocation per header name.
    pub(super) header_names: RefCell<HeaderNames>,
    /// The messages of the last batch read from a partition queue.
    pub(super) batch: MessageBatch,
    /// The records of that batch, owned, on their way to the scheduler (kept for its capacity).
    pub(super) pulled: Vec<OwnedRecord>,
    pub(super) last_commit: Instant,
    /// Where the next round of queue pulls starts, so no partition is always served last.
    pub(super) next_queue: usize,
    /// Whether handlers get their first poll on the poll thread.
    pub(super) inline_polls: Cell<bool>,
    /// Inline polls over the budget since the last one within it.
    pub(super) slow_inline_polls: Cell<u32>,
    /// Inline polls so far (one in [`TIMED_INLINE_POLL_EVERY`] is timed).
    pub(super) inline_poll_count: Cell<u32>,
}

impl<H: Handler> RunLoop<'_, H> {
    fn control(&self) -> &Control {
        &self.driver.control
    }

    fn config(&self) -> &DriverConfig {
        &self.driver.config
    }

    fn should_stop(&self) -> bool {
        if self.control().shutdown.load(AtomicOrdering::SeqCst) {
            return true;
        }
        let state = lock(&self.shared.state);
        state.scheduler.has_failed() || state.fatal.is_some()
    }

    fn mark_polled(&self) {
        let elapsed = self.control().started.elapsed().as_millis();
        self.control().counters.last_poll.store(
            u64::try_from(elapsed).unwrap_or(u64::MAX - 1) + 1,
            AtomicOrdering::Relaxed,
        );
    }

    pub(super) fn poll_until_stopped(&mut self) {
        while !self.should_stop() {
            let mut progress = {
                let mut state = lock(&self.shared.state);
                let events = self.shared.drain_events(&mut state);
                let dispatched = self.dispatch_ready(&mut state);
                self.shared.publish_in_flight(&state);
                events + dispatched
            };
            self.set_paused(self.control().user_paused.load(AtomicOrdering::SeqCst));
            if self.last_commit.elapsed() >= self.config().commit_interval {
                self.observe_positions();
                // Failures are counted and logged inside; the next interval retries.
                let _ = self.shared.commit(self.consumer.as_ref(), None);
                self.last_commit = Instant::now();
            }
            progress += self.serve_consumer_queue();
            progress += self.pull_partition_queues();
            if progress == 0 {
                // Nothing to do: sleep until a record finishes, a queue gets messages, a held
                // record is due, or the poll interval passes (to keep serving the group).
                let next_due = lock(&self.shared.state).scheduler.next_due();
                let wait = next_due.map_or(self.config().poll_timeout, |due| {
                    due.saturating_duration_since(Instant::now())
                        .min(self.config().poll_timeout)
                });
                self.shared.wait_for_event(wait);
            }
        }
    }

    /// Lets the tracker step over transaction markers (and records aborted under
    /// `read_committed`): librdkafka hides them but moves the consumer's position past them.
    /// Only called from the running loop, where every record taken from librdkafka has been
    /// tracked, so a position never skips a record that is not done.
    fn observe_positions(&self) {
        let positions = match self.consumer.position() {
            Ok(positions) => positions,
            Err(error) => {
                tracing::debug!(%error, "could not read the consumer's positions");
                return;
            }
        };
        let mut state = lock(&self.shared.state);
        for element in positions.elements() {
            if let rdkafka::Offset::Offset(position) = element.offset()
                && let Ok(position) = Offset::new(position)
            {
                let tp = TopicPartition::new(element.topic(), element.partition());
                state.scheduler.observe_position(&tp, position);
            }
        }
    }

    /// Serves the consumer's own queue: rebalance and error events, and records of partitions
    /// whose queue is not split off (yet). Then splits or drops partition queues as the
    /// rebalances asked. Returns how many records and events it handled.
    fn serve_consumer_queue(&mut self) -> usize {
        let mut handled = 0;
        for _ in 0..POLL_BATCH {
            let message = self.consumer.poll(Duration::ZERO);
            self.mark_polled();
            match message {
                None => break,
                Some(message) => {
                    handled += 1;
                    self.take(message);
                }
            }
        }
        self.apply_queue_changes();
        handled
    }

    fn apply_queue_changes(&mut self) {
        let (to_drop, to_split) = {
            let mut state = lock(&self.shared.state);
            (
                std::mem::take(&mut state.to_drop),
                std::mem::take(&mut state.to_split),
            )
        };
        if to_drop.is_empty() && to_split.is_empty() {
            return;
        }
        for tp in to_drop {
            self.queues.remove(&tp);
        }
        for tp in to_split {
            let Some(mut queue) = self.consumer.split_partition_queue(&tp.topic, tp.partition)
            else {
                // Its queue no longer forwards to the consumer queue (see the rebalance
                // callback): nothing else would read its records, so stop.
                tracing::error!(%tp, "could not split the partition's queue");
                lock(&self.shared.state).fatal.get_or_insert(Error::Kafka {
                    operation: "split partition queue",
                    code: None,
                    source: format!("{tp}: librdkafka has no queue for the partition").into(),
                });
                continue;
            };
            let batch =
                match ClientQueue::partition_of(self.consumer.client(), &tp.topic, tp.partition) {
                    Ok(batch) => batch,
                    Err(error) => {
                        // Dropping the split queue would not forward it back: its records would
                        // never be read. Nothing else can read them, so stop.
                        tracing::error!(%tp, %error, "could not open the split partition queue");
                        lock(&self.shared.state).fatal.get_or_insert(error);
                        continue;
                    }
                };
            let wake = self.sender.clone();
            queue.set_nonempty_callback(move || {
                let _ = wake.send(LoopEvent::Wakeup);
            });
            let names = self.topic_names(&tp.topic);
            self.queues.insert(
                tp,
                SplitQueue {
                    batch,
                    names,
                    _split: queue,
                },
            );
        }
        self.queue_order = self.queues.keys().cloned().collect();
        self.queue_order.sort();
    }

    /// How many more records of `tp` may be taken from librdkafka now.
    fn room_for(&self, tp: &TopicPartition) -> usize {
        if self.control().paused.load(AtomicOrdering::SeqCst) {
            return 0;
        }
        let config = self.config();
        lock(&self.shared.state).scheduler.room_for(
            tp,
            config.max_in_flight,
            config.partition_buffer,
        )
    }

    /// Takes records from the partition queues that have room, round-robin. Returns how many.
    fn pull_partition_queues(&mut self) -> usize {
        let count = self.queue_order.len();
        if count == 0 {
            return 0;
        }
        let start = self.next_queue % count;
        self.next_queue = self.next_queue.wrapping_add(1);
        // Taken out for the round: pulling needs `&mut self`, and nothing in it changes queues.
        let order = std::mem::take(&mut self.queue_order);
        let mut taken = 0;
        for tp in order[start..].iter().chain(&order[..start]) {
            let room = self.room_for(tp).min(POLL_BATCH);
            if room > 0 {
                taken += self.pull_partition(tp, room);
            }
        }
        self.queue_order = order;
        if taken > 0 {
            self.mark_polled();
        }
        taken
    }

    /// Takes up to `room` messages of `tp` from its queue in one call and hands its records to
    /// the scheduler under one lock. Returns how many messages were taken.
    fn pull_partition(&mut self, tp: &TopicPartition, room: usize) -> usize {
        let Some(split) = self.queues.get(tp) else {
            return 0;
        };
        let read = self.batch.fill_at_most(&split.batch, Duration::ZERO, room);
        if read == 0 {
            return 0;
        }
        let mut records = std::mem::take(&mut self.pulled);
        {
            let mut header_names = self.header_names.borrow_mut();
            for index in 0..read {
                match self.batch.get(index) {
                    None => {}
                    Some(Delivery::Record(record)) => {
                        bump(&self.control().counters.polled);
                        records.push(
                            record.into_owned_with(split.names.1.clone(), |name| {
                                header_names.get(name)
                            }),
                        );
                    }
                    Some(Delivery::Error(code, description)) => self.consumer_error(
                        code.class(),
                        Error::Kafka {
                            operation: "poll",
                            code: Some(code),
                            source: format!("{tp}: {description}").into(),
                        },
                    ),
                    // The group's own `auto.offset.reset` is `error`: its answer is the
                    // application's, as librdkafka reports it.
                    Some(Delivery::OutOfRange {
                        offset,
                        description,
                        ..
                    }) => {
                        let code = KafkaCode::AUTO_OFFSET_RESET;
                        self.consumer_error(
                            code.class(),
                            Error::Kafka {
                                operation: "poll",
                                code: Some(code),
                                source: format!("{tp} at offset {offset}: {description}").into(),
                            },
                        );
                    }
                }
            }
        }
        self.batch.clear();
        let topic = split.names.0.clone();
        let mut behind = None;
        let mut state = lock(&self.shared.state);
        for record in records.drain(..) {
            if behind.is_some() {
                // The rest of the batch comes again once the partition is read again.
                continue;
            }
            let offset = record.offset;
            let tp = TopicPartition {
                topic: topic.clone(),
                partition: record.partition,
            };
            if state.scheduler.accept(tp, record) == Accepted::Behind {
                behind = Some(offset);
            }
        }
        drop(state);
        self.pulled = records;
        if let Some(offset) = behind {
            self.read_again(tp, offset);
        }
        read
    }

    /// The names of `topic`, interned on first sight.
    fn topic_names(&self, topic: &str) -> TopicNames {
        let mut topics = self.topics.borrow_mut();
        if let Some(known) = topics.get(topic) {
            return known.clone();
        }
        let known = (Arc::<str>::from(topic), interned(topic));
        topics.insert(topic.to_string(), known.clone());
        known
    }

    /// Handles one thing the consumer delivered: a record, or an error.
    fn take(&self, message: KafkaResult<rdkafka::message::BorrowedMessage<'_>>) {
        match message {
            Ok(message) => {
                bump(&self.control().counters.polled);
                match record_from_message(&message) {
                    Ok(record) => {
                        let (topic, name) = self.topic_names(message.topic());
                        let mut header_names = self.header_names.borrow_mut();
                        let record = record.into_owned_with(name, |name| header_names.get(name));
                        drop(header_names);
                        self.accept(topic, record);
                    }
                    Err(error) => {
                        tracing::error!(%error, "unreadable message from the consumer");
                        lock(&self.shared.state).fatal.get_or_insert(error);
                    }
                }
            }
            Err(error) => self.consumer_error(classify(&error), kafka_error("poll", error)),
        }
    }

    /// Counts an error the consumer delivered (from its own queue or a partition's); a fatal
    /// one stops the run with it.
    fn consumer_error(&self, class: ErrorClass, error: Error) {
        bump(&self.control().counters.poll_errors);
        if class == ErrorClass::Fatal {
            tracing::error!(%error, "fatal consumer error");
            lock(&self.shared.state).fatal.get_or_insert(error);
        } else {
            tracing::warn!(%error, "consumer error");
        }
    }

    fn set_paused(&self, pause: bool) {
        let control = self.control();
        if control.paused.load(AtomicOrdering::SeqCst) == pause {
            return;
        }
        let assignment = match self.consumer.assignment() {
            Ok(assignment) => assignment,
            Err(error) => {
                tracing::warn!(%error, "could not read the assignment to pause/resume");
                return;
            }
        };
        let result = if pause {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        match result {
            Ok(()) => {
                let partitions = partitions_of(&assignment);
                let mut state = lock(&self.shared.state);
                if pause {
                    state.paused_partitions.extend(partitions);
                } else {
                    // What is left was revoked while paused: resumed when it comes back.
                    for tp in &partitions {
                        state.paused_partitions.remove(tp);
                    }
                }
                drop(state);
                control.paused.store(pause, AtomicOrdering::SeqCst);
                tracing::debug!(pause, "assignment pause state changed");
            }
            Err(error) => tracing::warn!(%error, pause, "could not change the pause state"),
        }
    }

    /// Hands a received record to the scheduler; [`dispatch_ready`](Self::dispatch_ready)
    /// starts it when its turn comes.
    fn accept(&self, topic: Arc<str>, record: OwnedRecord) {
        let tp = TopicPartition {
            topic,
            partition: record.partition,
        };
        let offset = record.offset;
        let accepted = lock(&self.shared.state)
            .scheduler
            .accept(tp.clone(), record);
        if accepted == Accepted::Behind {
            self.read_again(&tp, offset);
        }
    }

    /// Makes librdkafka deliver `tp` again from `offset`: the scheduler dropped the records it
    /// had taken from there on ([`Accepted::Behind`]), and librdkafka would otherwise go on
    /// after them. The seek also makes librdkafka discard what it still holds of the partition
    /// from before. A seek librdkafka refuses at once stops the driver: going on would commit
    /// past records never handled. (It can refuse later only while the partition is being
    /// revoked, which leaves the partition to its next owner from the committed offset.)
    fn read_again(&self, tp: &TopicPartition, offset: Offset) {
        tracing::warn!(%tp, %offset, "records arrived behind the partition's position; reading it again from there");
        bump(&self.control().counters.rereads);
        if let Err(error) = self.consumer.seek(
            &tp.topic,
            tp.partition,
            rdkafka::Offset::Offset(offset.get()),
            Duration::ZERO,
        ) {
            tracing::error!(%tp, %offset, %error, "could not read the partition again");
            lock(&self.shared.state)
                .fatal
                .get_or_insert(kafka_error("seek", error));
        }
    }

    /// Starts every record that may run now: the head of each idle, unheld partition
    /// (per-partition ordering) and every delayed record that is due. Returns how many.
    fn dispatch_ready(&self, state: &mut LoopState) -> usize {
        // A record that completed inline frees its partition at once: go round again, a
        // bounded number of times so the consumer is still served often.
        let mut total = 0;
        while total < POLL_BATCH {
            let dispatched = self.dispatch_ready_once(state);
            if dispatched == 0 {
                break;
            }
            total += dispatched;
        }
        total
    }

    fn dispatch_ready_once(&self, state: &mut LoopState) -> usize {
        if self.control().shutdown.load(AtomicOrdering::SeqCst) {
            return 0;
        }
        let mut ready = std::mem::take(&mut state.ready);
        state.scheduler.ready_into(&mut ready);
        let count = ready.len();
        for (tp, record, run) in ready.drain(..) {
            self.spawn(tp, record, run, state);
        }
        state.ready = ready;
        count
    }

    /// Starts `record`'s handler. Its first poll runs right here, on the poll thread: a handler
    /// that finishes without waiting on anything (most successful records, through most layers)
    /// completes without a task, a channel message and a thread wake-up. One that waits goes on
    /// as a tokio task. Handlers holding the poll thread longer than [`INLINE_POLL_BUDGET`]
    /// [`SLOW_INLINE_POLLS_IN_A_ROW`] times in a row end inline polls for the run, so CPU-heavy
    /// handlers keep running in parallel on the runtime's workers.
    fn spawn(&self, tp: TopicPartition, record: Arc<OwnedRecord>, run: Run, state: &mut LoopState) {
        let offset = record.offset;
        let handler = self.driver.handler.clone();
        let span = tracing::debug_span!("record", topic = %tp.topic, partition = tp.partition, offset = offset.get());
        let mut handling: Pin<Box<dyn Future<Output = Result<Outcome, HandlerError>> + Send>> =
            Box::pin(async move {
                AssertUnwindSafe(handler.handle(&record))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| {
                        let message = crate::handler::panic_message(panic.as_ref());
                        Err(HandlerError::fatal(format!("handler panicked: {message}")))
                    })
            });
        if self.inline_polls.get() {
            // Reading the clock twice per record cost a tenth of the driver's CPU: time one
            // inline poll in TIMED_INLINE_POLL_EVERY.
            let count = self.inline_poll_count.get().wrapping_add(1);
            self.inline_poll_count.set(count);
            let started = count
                .is_multiple_of(TIMED_INLINE_POLL_EVERY)
                .then(Instant::now);
            let polled = {
                let _runtime = self.runtime.enter();
                let _span = span.enter();
                handling
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()))
            };
            if let Some(started) = started
                && started.elapsed() > INLINE_POLL_BUDGET
            {
                let slow = self.slow_inline_polls.get() + 1;
                self.slow_inline_polls.set(slow);
                if slow >= SLOW_INLINE_POLLS_IN_A_ROW {
                    tracing::debug!(
                        "handlers held the poll thread for over {INLINE_POLL_BUDGET:?} {slow} times in a row; they run as tasks from now on"
                    );
                    self.inline_polls.set(false);
                }
            } else if started.is_some() {
                self.slow_inline_polls.set(0);
            }
            if let Poll::Ready(result) = polled {
                state.apply(
                    Completion {
                        partition: tp,
                        run,
                        result,
                    },
                    self.control(),
                );
                return;
            }
        }
        // Polling again from the task registers the real waker, whatever the first poll left.
        let sender = self.sender.clone();
        self.runtime.spawn(
            async move {
                let result = handling.await;
                // The receiver is gone only after the driver stopped; the record then stays
                // uncommitted and is redelivered, which is the at-least-once contract.
                let _ = sender.send(LoopEvent::Completion(Completion {
                    partition: tp,
                    run,
                    result,
                }));
            }
            .instrument(span),
        );
    }

    /// Stops dispatching, waits (bounded) for running records, and commits synchronously.
    /// Returns the number of records left unfinished.
    pub(super) fn finish(&mut self) -> u64 {
        self.set_paused(true);
        let deadline = Instant::now() + self.config().shutdown_timeout;
        loop {
            let running = {
                let mut state = lock(&self.shared.state);
                self.shared.drain_events(&mut state);
                state.scheduler.running_total()
            };
            let now = Instant::now();
            if running == 0 || now >= deadline {
                break;
            }
            self.shared
                .wait_for_event((deadline - now).min(Duration::from_millis(50)));
            // Keep serving the group (heartbeats, rebalance callbacks) while waiting. A record
            // returned here is not tracked, hence not committed: the next owner reads it.
            let _ = self.consumer.poll(Duration::ZERO);
            self.apply_queue_changes();
        }
        // A rebalance racing the shutdown makes the coordinator refuse commits for a moment:
        // keep serving the group and retry while the shutdown bound allows.
        for attempt in 1..=5 {
            match self.shared.commit(self.consumer.as_ref(), None) {
                Ok(()) => break,
                Err(error)
                    if classify(&error) == ErrorClass::Transient && Instant::now() < deadline =>
                {
                    tracing::info!(%error, attempt, "final commit refused; retrying");
                    let _ = self.consumer.poll(Duration::from_millis(200));
                    self.apply_queue_changes();
                }
                Err(error) => {
                    tracing::warn!(%error, "final commit failed; unfinished offsets will be redelivered");
                    break;
                }
            }
        }
        let state = lock(&self.shared.state);
        self.shared.publish_in_flight(&state);
        state.scheduler.running_total() as u64
    }
}

#[cfg(test)]
mod interning_tests {
    use super::*;

    #[test]
    fn names_are_shared_up_to_the_limit_then_copied() {
        let mut names = BTreeSet::new();
        let first = intern(&mut names, 2, "orders");
        let again = intern(&mut names, 2, "orders");
        let (Cow::Borrowed(first), Cow::Borrowed(again)) = (first, again) else {
            panic!("an interned name is borrowed");
        };
        assert!(std::ptr::eq(first, again));
        assert!(matches!(
            intern(&mut names, 2, "payments"),
            Cow::Borrowed("payments")
        ));
        assert!(matches!(intern(&mut names, 2, "refunds"), Cow::Owned(name) if name == "refunds"));
        assert_eq!(names.len(), 2);
        assert!(matches!(interned("orders"), Cow::Borrowed("orders")));
    }
}
