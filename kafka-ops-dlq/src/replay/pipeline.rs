//! What a running replay has in flight, and the note that makes it safe to resume.
//!
//! Records are written without stopping: each is sent as soon as it is read, tagged with its
//! place in send order, and the producer's answers are collected in bulk later. Every few
//! thousand records a *checkpoint* commits, per dead-letter partition, the first offset whose
//! record is not known to be stored, and a note of the destination partitions this run may be
//! writing to, each with an offset at or below anything the run writes there from that point
//! on. A run that crashed
//! reads those destination partitions from the noted offsets and skips what it finds there with
//! its own replay id; nothing past the committed offsets can be anywhere else.
//!
//! Why the noted offsets hold: answered records are taken only from the front of the queue, so
//! every record taken was sent before every record still queued; the idempotent producer stores
//! the records of one partition in the order they were sent. The offset after the last record
//! taken in a destination partition is therefore at or below every later record there, and
//! every record taken lies before the committed offset of its dead-letter partition.
//!
//! A crashed run's marks are different: records it wrote past its committed offsets lie beyond
//! them, and this run has not passed those records' dead-letter offsets yet. Such *inherited*
//! marks are kept as they are, never moved up to what this run stored, until the run has read
//! everything (moved up, a second crash would lose sight of the first run's records and the
//! next run would write them again).

use std::collections::{BTreeMap, HashMap, VecDeque};

use kafka_ops_core::Error;
use kafka_ops_core::dead_letter::Delivered;
use kafka_ops_core::kafka::AckedProducer;

use crate::error::DlqError;

/// The most a note may take, so it fits the broker's 4 KiB limit on commit metadata
/// (`offset.metadata.max.bytes`) with the rest of the state; past it, the run waits for what it
/// has in flight and starts a fresh note.
pub(super) const NOTE_BUDGET: usize = 3_000;

/// The most one noted partition takes in the note: `[2147483647,9223372036854775807],`.
const NOTE_BYTES_PER_PARTITION: usize = 33;

/// One record sent and not yet taken off the queue.
struct InFlight {
    /// Dead-letter partition and offset it was read from.
    partition: i32,
    offset: i64,
    /// Index of its destination topic in [`Pipeline::destinations`].
    destination: usize,
    /// Where it was stored, once the producer answered.
    stored: Option<Delivered>,
}

/// A destination topic: its noted partitions and what this run stored there.
#[derive(Debug)]
pub(super) struct DestinationTopic {
    pub(super) name: String,
    /// Per partition, the noted offset a resumed run reads from; `None`: not noted.
    marks: Vec<Option<i64>>,
    /// Per partition, the offset after the last acknowledged record taken off the queue.
    stored_up_to: Vec<Option<i64>>,
    /// Per partition, whether its mark came from a crashed run (see the module documentation).
    inherited: Vec<bool>,
}

impl DestinationTopic {
    /// How many partitions the topic has.
    pub(super) fn partitions(&self) -> usize {
        self.marks.len()
    }
}

/// The in-flight queue and the note.
#[derive(Default)]
pub(super) struct Pipeline {
    in_flight: VecDeque<InFlight>,
    /// The producer's tag of the record at the front of `in_flight` (tags follow send order).
    front_tag: u64,
    answers: Vec<(u64, Result<Delivered, Error>)>,
    pub(super) destinations: Vec<DestinationTopic>,
    by_name: HashMap<String, usize>,
    note_bytes: usize,
    /// Records taken off the queue, acknowledged.
    pub(super) stored: u64,
}

impl Pipeline {
    /// The index of destination `topic` of `partitions` partitions, known from now on.
    pub(super) fn destination(&mut self, topic: &str, partitions: i32) -> usize {
        if let Some(index) = self.by_name.get(topic) {
            return *index;
        }
        let count = usize::try_from(partitions).unwrap_or(0);
        self.destinations.push(DestinationTopic {
            name: topic.to_string(),
            marks: vec![None; count],
            stored_up_to: vec![None; count],
            inherited: vec![false; count],
        });
        let index = self.destinations.len() - 1;
        self.by_name.insert(topic.to_string(), index);
        index
    }

    /// Whether `partition` of `destination` is in the note.
    pub(super) fn is_noted(&self, destination: usize, partition: i32) -> bool {
        self.mark(destination, partition).is_some()
    }

    fn mark(&self, destination: usize, partition: i32) -> Option<i64> {
        let partition = usize::try_from(partition).ok()?;
        *self.destinations.get(destination)?.marks.get(partition)?
    }

    /// Whether a destination partition of this topic is noted yet.
    pub(super) fn has_notes(&self, destination: usize) -> bool {
        self.destinations
            .get(destination)
            .is_some_and(|d| d.marks.iter().any(Option::is_some))
    }

    /// What noting one more partition of `destination` costs in the note, in bytes (at most).
    pub(super) fn note_cost(&self, destination: usize) -> usize {
        // `"topic":[` once per topic, then one entry per partition.
        let topic = if self.has_notes(destination) {
            0
        } else {
            self.destinations
                .get(destination)
                .map_or(0, |d| d.name.len() + 6)
        };
        topic + NOTE_BYTES_PER_PARTITION
    }

    /// What noting every partition of `destination`, none noted yet, costs in the note.
    pub(super) fn note_cost_of_all(&self, destination: usize) -> usize {
        let others = self
            .destinations
            .get(destination)
            .map_or(0, |d| d.partitions().saturating_sub(1));
        self.note_cost(destination) + NOTE_BYTES_PER_PARTITION * others
    }

    /// Bytes the note takes now (an upper bound).
    pub(super) fn note_bytes(&self) -> usize {
        self.note_bytes
    }

    /// Notes `partition` of `destination` with `mark`.
    pub(super) fn note(&mut self, destination: usize, partition: i32, mark: i64) {
        let cost = self.note_cost(destination);
        if let (Some(topic), Ok(index)) = (
            self.destinations.get_mut(destination),
            usize::try_from(partition),
        ) && let Some(slot) = topic.marks.get_mut(index)
            && slot.is_none()
        {
            *slot = Some(mark);
            self.note_bytes += cost;
        }
    }

    /// The offset after the last record this run stored in `partition` of `destination`.
    pub(super) fn stored_up_to(&self, destination: usize, partition: i32) -> Option<i64> {
        let partition = usize::try_from(partition).ok()?;
        *self
            .destinations
            .get(destination)?
            .stored_up_to
            .get(partition)?
    }

    /// Notes `partition` of `destination` with a crashed run's `mark`, kept as it is until
    /// [`clear_note`](Self::clear_note) is told the run has read everything.
    pub(super) fn note_inherited(&mut self, destination: usize, partition: i32, mark: i64) {
        self.note(destination, partition, mark);
        if let (Some(topic), Ok(index)) = (
            self.destinations.get_mut(destination),
            usize::try_from(partition),
        ) && let (Some(Some(slot)), Some(inherited)) =
            (topic.marks.get_mut(index), topic.inherited.get_mut(index))
        {
            *slot = (*slot).min(mark);
            *inherited = true;
        }
    }

    /// Forgets the note (only once nothing is in flight: then no record of this run past the
    /// committed offsets exists anywhere). Inherited marks stay unless `read_everything`: a
    /// crashed run's records past its commits may still lie ahead.
    pub(super) fn clear_note(&mut self, read_everything: bool) {
        debug_assert!(self.in_flight.is_empty());
        self.note_bytes = 0;
        for topic in &mut self.destinations {
            let mut kept = 0;
            for (mark, inherited) in topic.marks.iter_mut().zip(&mut topic.inherited) {
                if read_everything || !*inherited {
                    *mark = None;
                    *inherited = false;
                } else if mark.is_some() {
                    kept += 1;
                }
            }
            if kept > 0 {
                self.note_bytes += topic.name.len() + 6 + NOTE_BYTES_PER_PARTITION * kept;
            }
        }
    }

    /// The note as the commit metadata carries it: per topic, `(partition, offset to read
    /// from)`, each mark moved up to what this run has stored since.
    pub(super) fn marks(&self) -> BTreeMap<String, Vec<(i32, i64)>> {
        let mut marks = BTreeMap::new();
        for topic in &self.destinations {
            let noted: Vec<(i32, i64)> = topic
                .marks
                .iter()
                .zip(&topic.stored_up_to)
                .zip(&topic.inherited)
                .enumerate()
                .filter_map(|(partition, ((mark, stored), inherited))| {
                    let mark = (*mark)?;
                    let at = if *inherited {
                        mark
                    } else {
                        stored.map_or(mark, |stored| stored.max(mark))
                    };
                    Some((i32::try_from(partition).ok()?, at))
                })
                .collect();
            if !noted.is_empty() {
                marks.insert(topic.name.clone(), noted);
            }
        }
        marks
    }

    /// The tag to send the next record with.
    pub(super) fn next_tag(&self) -> u64 {
        self.front_tag + self.in_flight.len() as u64
    }

    /// Queues a record read at `partition`/`offset`, sent with [`next_tag`](Self::next_tag).
    pub(super) fn push(&mut self, partition: i32, offset: i64, destination: usize) {
        self.in_flight.push_back(InFlight {
            partition,
            offset,
            destination,
            stored: None,
        });
    }

    /// Records sent and not taken off the queue.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Takes acknowledged records off the front of the queue (never from behind one that is
    /// not: see the module documentation). A record the producer gave up on is an error.
    pub(super) fn take_acknowledged(&mut self, producer: &AckedProducer) -> Result<(), DlqError> {
        producer.take_answers(&mut self.answers);
        for (tag, answer) in self.answers.drain(..) {
            let delivered = answer?;
            let index = tag
                .checked_sub(self.front_tag)
                .and_then(|i| usize::try_from(i).ok());
            if let Some(record) = index.and_then(|i| self.in_flight.get_mut(i)) {
                record.stored = Some(delivered);
            }
        }
        while let Some(delivered) = self.in_flight.front().and_then(|front| front.stored) {
            let Some(front) = self.in_flight.pop_front() else {
                break;
            };
            self.front_tag += 1;
            let destination = front.destination;
            self.stored += 1;
            if let (Some(topic), Ok(index)) = (
                self.destinations.get_mut(destination),
                usize::try_from(delivered.partition),
            ) && let Some(slot) = topic.stored_up_to.get_mut(index)
            {
                let after = delivered.offset + 1;
                *slot = Some(slot.map_or(after, |up_to| up_to.max(after)));
            }
        }
        Ok(())
    }

    /// Per dead-letter partition with records in flight, the offset of its first one: nothing
    /// at or after it is known to be stored.
    pub(super) fn first_unstored(&self) -> HashMap<i32, i64> {
        let mut first = HashMap::new();
        for record in &self.in_flight {
            first.entry(record.partition).or_insert(record.offset);
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_never_pass_what_was_noted_and_follow_what_was_stored() {
        let mut pipeline = Pipeline::default();
        let orders = pipeline.destination("orders", 3);
        assert_eq!(pipeline.destination("orders", 3), orders);
        assert!(!pipeline.is_noted(orders, 1));
        pipeline.note(orders, 1, 40);
        pipeline.note(orders, 2, 7);
        assert!(pipeline.is_noted(orders, 1));
        assert_eq!(
            pipeline.note_bytes(),
            "orders".len() + 6 + 33 + 33,
            "the topic is counted once"
        );
        pipeline.destinations[orders].stored_up_to[1] = Some(55);
        pipeline.destinations[orders].stored_up_to[2] = Some(3);
        assert_eq!(
            pipeline.marks(),
            BTreeMap::from([("orders".to_string(), vec![(1, 55), (2, 7)])])
        );
        pipeline.clear_note(false);
        assert!(pipeline.marks().is_empty());
        assert_eq!(pipeline.note_bytes(), 0);
        assert_eq!(pipeline.stored_up_to(orders, 1), Some(55));
    }

    #[test]
    fn a_crashed_runs_marks_stay_where_they_were_until_everything_is_read() {
        let mut pipeline = Pipeline::default();
        let orders = pipeline.destination("orders", 2);
        pipeline.note_inherited(orders, 0, 10);
        pipeline.note(orders, 1, 4);
        // This run stores past both marks; only its own moves up.
        pipeline.destinations[orders].stored_up_to[0] = Some(30);
        pipeline.destinations[orders].stored_up_to[1] = Some(9);
        assert_eq!(
            pipeline.marks(),
            BTreeMap::from([("orders".to_string(), vec![(0, 10), (1, 9)])])
        );
        // A fresh note mid-run keeps the inherited mark...
        pipeline.clear_note(false);
        assert_eq!(
            pipeline.marks(),
            BTreeMap::from([("orders".to_string(), vec![(0, 10)])])
        );
        assert_eq!(pipeline.note_bytes(), "orders".len() + 6 + 33);
        // ... a lower inherited mark wins over a noted one ...
        pipeline.note(orders, 1, 6);
        pipeline.note_inherited(orders, 1, 2);
        assert_eq!(
            pipeline.marks(),
            BTreeMap::from([("orders".to_string(), vec![(0, 10), (1, 2)])])
        );
        // ... and the end of the run forgets everything.
        pipeline.clear_note(true);
        assert!(pipeline.marks().is_empty());
        assert_eq!(pipeline.note_bytes(), 0);
    }

    #[test]
    fn partitions_out_of_range_are_never_noted() {
        let mut pipeline = Pipeline::default();
        let orders = pipeline.destination("orders", 2);
        pipeline.note(orders, 5, 1);
        pipeline.note(orders, -1, 1);
        assert!(pipeline.marks().is_empty());
        assert_eq!(pipeline.note_bytes(), 0);
    }
}
