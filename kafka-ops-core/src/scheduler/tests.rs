use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::clock::ManualClock;

fn tp(partition: i32) -> TopicPartition {
    TopicPartition::new("orders", partition)
}

fn offset(n: i64) -> Offset {
    Offset::new(n).unwrap()
}

fn record(partition: i32, n: i64) -> OwnedRecord {
    crate::record::Record::new("orders", partition, offset(n)).into_owned()
}

fn scheduler(ordering: Ordering) -> (Scheduler, ManualClock) {
    let clock = ManualClock::at(Timestamp::from_millis(1_000_000));
    (Scheduler::new(ordering, Arc::new(clock.clone())), clock)
}

fn offsets(ready: &[(TopicPartition, Arc<OwnedRecord>)]) -> Vec<(i32, i64)> {
    let mut v: Vec<_> = ready
        .iter()
        .map(|(tp, r)| (tp.partition, r.offset.get()))
        .collect();
    v.sort();
    v
}

fn redeliver_in(clock: &ManualClock, after: Duration) -> HandlerError {
    HandlerError::transient("busy")
        .with_disposition(Disposition::RedeliverAt(clock.wall().plus(after)))
}

#[test]
fn per_partition_runs_one_record_per_partition_in_offset_order() {
    let (mut s, _) = scheduler(Ordering::PerPartition);
    for n in 0..3 {
        assert_eq!(s.accept(tp(0), record(0, n)), Accepted::Tracked);
        assert_eq!(s.accept(tp(1), record(1, n + 10)), Accepted::Tracked);
    }
    assert_eq!(offsets(&s.ready()), [(0, 0), (1, 10)]);
    // Nothing more while both heads run.
    assert!(s.ready().is_empty());
    assert_eq!(s.running_total(), 2);
    assert_eq!(s.in_flight(), 6);

    assert_eq!(
        s.complete(&tp(0), offset(0), Ok(Outcome::Processed)),
        Finished::Done(Outcome::Processed)
    );
    assert_eq!(offsets(&s.ready()), [(0, 1)]);
    // A partition's first record not done is what may be committed, done or not.
    let mut candidates = s.commit_candidates(None);
    candidates.sort();
    assert_eq!(candidates, [(tp(0), offset(1)), (tp(1), offset(10))]);
}

#[test]
fn unordered_runs_everything_waiting() {
    let (mut s, _) = scheduler(Ordering::Unordered);
    for n in 0..4 {
        assert_eq!(s.accept(tp(0), record(0, n)), Accepted::Tracked);
    }
    assert_eq!(s.ready().len(), 4);
    // Finishing out of order commits only up to the first gap.
    s.complete(&tp(0), offset(2), Ok(Outcome::Processed));
    s.complete(&tp(0), offset(0), Ok(Outcome::Processed));
    assert_eq!(s.commit_candidates(None), [(tp(0), offset(1))]);
    s.complete(&tp(0), offset(1), Ok(Outcome::Duplicate));
    assert_eq!(s.commit_candidates(None), [(tp(0), offset(3))]);
}

#[test]
fn per_partition_redelivery_holds_the_partition_until_exactly_due() {
    let (mut s, clock) = scheduler(Ordering::PerPartition);
    assert_eq!(s.accept(tp(0), record(0, 0)), Accepted::Tracked);
    assert_eq!(s.accept(tp(0), record(0, 1)), Accepted::Tracked);
    assert_eq!(s.accept(tp(1), record(1, 0)), Accepted::Tracked);
    s.ready();
    let before = clock.now();
    let finished = s.complete(
        &tp(0),
        offset(0),
        Err(redeliver_in(&clock, Duration::from_millis(1_500))),
    );
    assert_eq!(
        finished,
        Finished::Redelivered {
            due: before + Duration::from_millis(1_500)
        }
    );
    assert_eq!(s.next_due(), Some(before + Duration::from_millis(1_500)));
    // Partition 1 is unaffected; partition 0 waits, the later record too.
    s.complete(&tp(1), offset(0), Ok(Outcome::Processed));
    assert!(s.ready().is_empty());
    clock.advance(Duration::from_millis(1_499));
    assert!(s.ready().is_empty());
    clock.advance(Duration::from_millis(1));
    assert_eq!(offsets(&s.ready()), [(0, 0)]);
    assert_eq!(s.next_due(), None);
    // Nothing is committed past the redelivered record meanwhile.
    assert_eq!(s.commit_candidates(Some(&[tp(0)])), [(tp(0), offset(0))]);
    s.complete(&tp(0), offset(0), Ok(Outcome::Retried));
    assert_eq!(offsets(&s.ready()), [(0, 1)]);
}

#[test]
fn unordered_redelivery_delays_only_that_record() {
    let (mut s, clock) = scheduler(Ordering::Unordered);
    assert_eq!(s.accept(tp(0), record(0, 0)), Accepted::Tracked);
    s.ready();
    s.complete(
        &tp(0),
        offset(0),
        Err(redeliver_in(&clock, Duration::from_secs(2))),
    );
    assert_eq!(s.accept(tp(0), record(0, 1)), Accepted::Tracked);
    assert_eq!(offsets(&s.ready()), [(0, 1)]);
    clock.advance(Duration::from_secs(2));
    assert_eq!(offsets(&s.ready()), [(0, 0)]);
}

#[test]
fn a_redelivery_in_the_past_is_due_at_once() {
    let (mut s, clock) = scheduler(Ordering::PerPartition);
    assert_eq!(s.accept(tp(0), record(0, 0)), Accepted::Tracked);
    s.ready();
    let past = HandlerError::transient("x")
        .with_disposition(Disposition::RedeliverAt(Timestamp::from_millis(0)));
    assert_eq!(
        s.complete(&tp(0), offset(0), Err(past)),
        Finished::Redelivered { due: clock.now() }
    );
    assert_eq!(offsets(&s.ready()), [(0, 0)]);
}

#[test]
fn a_skip_counts_as_skipped_and_commits() {
    let (mut s, _) = scheduler(Ordering::PerPartition);
    assert_eq!(s.accept(tp(0), record(0, 7)), Accepted::Tracked);
    s.ready();
    let skip = HandlerError::permanent("poison").with_disposition(Disposition::Skip);
    assert_eq!(
        s.complete(&tp(0), offset(7), Err(skip)),
        Finished::Done(Outcome::Skipped)
    );
    assert_eq!(s.commit_candidates(None), [(tp(0), offset(8))]);
}

#[test]
fn a_failure_stops_everything_and_commits_nothing_past_it() {
    let (mut s, _) = scheduler(Ordering::PerPartition);
    assert_eq!(s.accept(tp(0), record(0, 0)), Accepted::Tracked);
    assert_eq!(s.accept(tp(0), record(0, 1)), Accepted::Tracked);
    assert_eq!(s.accept(tp(1), record(1, 0)), Accepted::Tracked);
    s.ready();
    s.complete(&tp(1), offset(0), Ok(Outcome::Processed));
    assert_eq!(
        s.complete(&tp(0), offset(0), Err(HandlerError::permanent("bad"))),
        Finished::Failed
    );
    assert!(s.has_failed());
    assert!(s.ready().is_empty());
    let mut candidates = s.commit_candidates(None);
    candidates.sort();
    assert_eq!(candidates, [(tp(0), offset(0)), (tp(1), offset(1))]);
    // A second failure does not replace the first.
    assert_eq!(s.accept(tp(2), record(2, 0)), Accepted::Tracked);
    s.complete(&tp(2), offset(0), Err(HandlerError::fatal("later")));
    let (partition, at, error) = s.take_failure().unwrap();
    assert_eq!((partition, at), (tp(0), offset(0)));
    assert_eq!(error.cause().to_string(), "bad");
    assert!(!s.has_failed());
}

#[test]
fn room_respects_the_total_and_the_partition_buffer() {
    let (mut s, _) = scheduler(Ordering::PerPartition);
    for n in 0..3 {
        assert_eq!(s.accept(tp(0), record(0, n)), Accepted::Tracked);
    }
    assert_eq!(s.room_for(&tp(0), 10, 4), 1);
    assert_eq!(s.room_for(&tp(1), 10, 4), 4);
    assert_eq!(s.room_for(&tp(1), 5, 4), 2);
    let (mut u, _) = scheduler(Ordering::Unordered);
    for n in 0..3 {
        assert_eq!(u.accept(tp(0), record(0, n)), Accepted::Tracked);
    }
    // The partition buffer bounds only per-partition ordering.
    assert_eq!(u.room_for(&tp(0), 10, 1), 7);
}

#[test]
fn revoke_drops_waiting_records_and_forget_drops_the_rest() {
    let (mut s, clock) = scheduler(Ordering::PerPartition);
    s.assign(&[tp(0)]);
    for n in 0..3 {
        assert_eq!(s.accept(tp(0), record(0, n)), Accepted::Tracked);
    }
    s.ready();
    s.revoke(&[tp(0)]);
    assert_eq!(s.running_in(&[tp(0)]), 1);
    // The running record may still finish and be committed before the partition goes.
    s.complete(&tp(0), offset(0), Ok(Outcome::Processed));
    assert_eq!(s.commit_candidates(Some(&[tp(0)])), [(tp(0), offset(1))]);
    s.mark_committed(&tp(0), offset(1));
    assert!(s.commit_candidates(None).is_empty());
    assert!(s.ready().is_empty());
    s.forget(&[tp(0)]);
    assert_eq!(s.in_flight(), 0);
    // A late result for a forgotten partition commits nothing.
    s.complete(&tp(0), offset(1), Ok(Outcome::Processed));
    assert!(s.commit_candidates(None).is_empty());
    assert_eq!(s.next_due(), None);
    drop(clock);
}

#[test]
fn a_record_behind_its_partition_drops_only_what_is_at_or_above_it() {
    let (mut s, _) = scheduler(Ordering::PerPartition);
    for n in [3, 4, 5, 6] {
        assert_eq!(s.accept(tp(0), record(0, n)), Accepted::Tracked);
    }
    assert_eq!(s.accept(tp(1), record(1, 9)), Accepted::Tracked);
    assert_eq!(offsets(&s.ready()), [(0, 3), (1, 9)]);
    // 3 runs, 4..6 wait; then 5 arrives again (a truncated log read again from 5, say): 5 and
    // 6 will come again, 3 and 4 stay.
    assert_eq!(s.accept(tp(0), record(0, 5)), Accepted::Behind);
    assert_eq!(s.in_flight(), 3, "3 and 4 of the partition, 9 of the other");
    // The consumer's position is still the one from before the seek: not taken.
    s.observe_position(&tp(0), offset(7));
    let of_partition = |s: &Scheduler| {
        s.commit_candidates(None)
            .into_iter()
            .filter(|(p, _)| *p == tp(0))
            .map(|(_, o)| o.get())
            .collect::<Vec<_>>()
    };
    assert_eq!(of_partition(&s), [3]);
    s.complete(&tp(0), offset(3), Ok(Outcome::Processed));
    assert_eq!(offsets(&s.ready()), [(0, 4)]);
    s.complete(&tp(0), offset(4), Ok(Outcome::Processed));
    assert_eq!(
        of_partition(&s),
        [5],
        "everything below 5 is done, nothing past it"
    );
    assert!(s.ready().is_empty(), "5 and 6 were dropped");
    // Read again from 5: 5 and 6 come back and run in order.
    for n in [5, 6] {
        assert_eq!(s.accept(tp(0), record(0, n)), Accepted::Tracked);
    }
    for n in [5, 6] {
        assert_eq!(offsets(&s.ready()), [(0, n)]);
        s.complete(&tp(0), offset(n), Ok(Outcome::Processed));
    }
    assert_eq!(of_partition(&s), [7]);
}

#[test]
fn a_record_running_when_its_partition_is_read_again_keeps_the_order() {
    let (mut s, _) = scheduler(Ordering::PerPartition);
    for n in [5, 6] {
        assert_eq!(s.accept(tp(0), record(0, n)), Accepted::Tracked);
    }
    assert_eq!(offsets(&s.ready()), [(0, 5)]);
    // 5 runs when 2 arrives: read again from 2, but 2 waits for 5 to finish.
    assert_eq!(s.accept(tp(0), record(0, 2)), Accepted::Behind);
    assert_eq!(s.accept(tp(0), record(0, 2)), Accepted::Tracked);
    assert!(s.ready().is_empty(), "5 still runs");
    // 5's late result counts for nothing: 2 is not done.
    s.complete(&tp(0), offset(5), Ok(Outcome::Processed));
    assert_eq!(s.commit_candidates(None), [(tp(0), offset(2))]);
    assert_eq!(offsets(&s.ready()), [(0, 2)]);
}

#[test]
fn positions_past_transaction_markers_advance_commits() {
    let (mut s, _) = scheduler(Ordering::PerPartition);
    assert_eq!(s.accept(tp(0), record(0, 0)), Accepted::Tracked);
    s.ready();
    s.complete(&tp(0), offset(0), Ok(Outcome::Processed));
    // Offset 1 is a commit marker librdkafka never hands over; the position says so.
    s.observe_position(&tp(0), offset(2));
    assert_eq!(s.commit_candidates(None), [(tp(0), offset(2))]);
}

#[derive(Debug, Clone)]
enum Step {
    Accept(i32),
    Finish(usize, bool),
    Advance(u64),
    Commit,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3i32).prop_map(Step::Accept),
        (0..8usize, any::<bool>()).prop_map(|(i, later)| Step::Finish(i, later)),
        (0..3_000u64).prop_map(Step::Advance),
        Just(Step::Commit),
    ]
}

fn start(
    s: &mut Scheduler,
    running: &mut Vec<(TopicPartition, Offset)>,
    started_last: &mut [i64; 3],
) -> Result<(), TestCaseError> {
    for (tp, r) in s.ready() {
        let p = tp.partition as usize;
        prop_assert!(
            !running.iter().any(|(t, _)| *t == tp),
            "two records of one partition run"
        );
        prop_assert!(r.offset.get() >= started_last[p]);
        started_last[p] = r.offset.get();
        running.push((tp, r.offset));
    }
    Ok(())
}

proptest! {
    /// Whatever the interleaving: per partition at most one record runs at a time and records
    /// start in offset order; a commit never passes a record that is not done; every accepted
    /// record is done in the end.
    #[test]
    fn per_partition_invariants(steps in proptest::collection::vec(step(), 1..120)) {
        let (mut s, clock) = scheduler(Ordering::PerPartition);
        let mut next = [0i64; 3];
        let mut done: [BTreeSet<i64>; 3] = Default::default();
        let mut started_last = [-1i64; 3];
        let mut running: Vec<(TopicPartition, Offset)> = Vec::new();
        let mut committed = [0i64; 3];
        for step in steps {
            match step {
                Step::Accept(p) => {
                    assert_eq!(s.accept(tp(p), record(p, next[p as usize])), Accepted::Tracked);
                    next[p as usize] += 1;
                }
                Step::Finish(i, later) if !running.is_empty() => {
                    let (tp, at) = running.remove(i % running.len());
                    let result = if later { Err(redeliver_in(&clock, Duration::from_millis(500))) } else { Ok(Outcome::Processed) };
                    if let Finished::Done(_) = s.complete(&tp, at, result) {
                        done[tp.partition as usize].insert(at.get());
                    }
                }
                Step::Finish(..) => {}
                Step::Advance(ms) => clock.advance(Duration::from_millis(ms)),
                Step::Commit => {
                    for (tp, at) in s.commit_candidates(None) {
                        let p = tp.partition as usize;
                        prop_assert!((committed[p]..at.get()).all(|o| done[p].contains(&o)), "commit past an unfinished record");
                        committed[p] = at.get();
                        s.mark_committed(&tp, at);
                    }
                }
            }
            start(&mut s, &mut running, &mut started_last)?;
        }
        // Drain: finish everything, letting redeliveries come due.
        for _ in 0..10_000 {
            if running.is_empty() && s.in_flight() == 0 { break; }
            clock.advance(Duration::from_millis(500));
            start(&mut s, &mut running, &mut started_last)?;
            for (tp, at) in std::mem::take(&mut running) {
                s.complete(&tp, at, Ok(Outcome::Processed));
            }
        }
        prop_assert_eq!(s.in_flight(), 0);
        let mut expected: Vec<(TopicPartition, Offset)> = (0..3)
            .filter(|p| next[*p as usize] > committed[*p as usize])
            .map(|p| (tp(p), offset(next[p as usize])))
            .collect();
        expected.sort();
        let mut candidates = s.commit_candidates(None);
        candidates.sort();
        prop_assert_eq!(candidates, expected);
    }
}
