use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::clock::ManualClock;

mod interleavings;

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

fn offsets(ready: &[(TopicPartition, Arc<OwnedRecord>, Run)]) -> Vec<(i32, i64)> {
    let mut v: Vec<_> = ready
        .iter()
        .map(|(tp, r, run)| {
            assert_eq!(run.offset(), r.offset);
            (tp.partition, r.offset.get())
        })
        .collect();
    v.sort();
    v
}

/// The run of record `n` of `partition` that is running and counts, as the driver kept it
/// from `ready`.
fn run(s: &Scheduler, partition: i32, n: i64) -> Run {
    let ids: Vec<u64> = s.work[&tp(partition)]
        .running
        .iter()
        .filter(|(_, record)| record.offset == offset(n))
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(ids.len(), 1, "one run of {n} in partition {partition}");
    Run {
        offset: offset(n),
        id: ids[0],
    }
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
        s.complete(&tp(0), run(&s, 0, 0), Ok(Outcome::Processed)),
        Some(Finished::Done(Outcome::Processed))
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
    s.complete(&tp(0), run(&s, 0, 2), Ok(Outcome::Processed));
    s.complete(&tp(0), run(&s, 0, 0), Ok(Outcome::Processed));
    assert_eq!(s.commit_candidates(None), [(tp(0), offset(1))]);
    s.complete(&tp(0), run(&s, 0, 1), Ok(Outcome::Duplicate));
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
        run(&s, 0, 0),
        Err(redeliver_in(&clock, Duration::from_millis(1_500))),
    );
    assert_eq!(
        finished,
        Some(Finished::Redelivered {
            due: before + Duration::from_millis(1_500)
        })
    );
    assert_eq!(s.next_due(), Some(before + Duration::from_millis(1_500)));
    // Partition 1 is unaffected; partition 0 waits, the later record too.
    s.complete(&tp(1), run(&s, 1, 0), Ok(Outcome::Processed));
    assert!(s.ready().is_empty());
    clock.advance(Duration::from_millis(1_499));
    assert!(s.ready().is_empty());
    clock.advance(Duration::from_millis(1));
    assert_eq!(offsets(&s.ready()), [(0, 0)]);
    assert_eq!(s.next_due(), None);
    // Nothing is committed past the redelivered record meanwhile.
    assert_eq!(s.commit_candidates(Some(&[tp(0)])), [(tp(0), offset(0))]);
    s.complete(&tp(0), run(&s, 0, 0), Ok(Outcome::Retried));
    assert_eq!(offsets(&s.ready()), [(0, 1)]);
}

#[test]
fn unordered_redelivery_delays_only_that_record() {
    let (mut s, clock) = scheduler(Ordering::Unordered);
    assert_eq!(s.accept(tp(0), record(0, 0)), Accepted::Tracked);
    s.ready();
    s.complete(
        &tp(0),
        run(&s, 0, 0),
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
        s.complete(&tp(0), run(&s, 0, 0), Err(past)),
        Some(Finished::Redelivered { due: clock.now() })
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
        s.complete(&tp(0), run(&s, 0, 7), Err(skip)),
        Some(Finished::Done(Outcome::Skipped))
    );
    assert_eq!(s.commit_candidates(None), [(tp(0), offset(8))]);
}

#[test]
fn a_failure_stops_everything_and_commits_nothing_past_it() {
    let (mut s, _) = scheduler(Ordering::PerPartition);
    assert_eq!(s.accept(tp(0), record(0, 0)), Accepted::Tracked);
    assert_eq!(s.accept(tp(0), record(0, 1)), Accepted::Tracked);
    assert_eq!(s.accept(tp(1), record(1, 0)), Accepted::Tracked);
    assert_eq!(s.accept(tp(2), record(2, 0)), Accepted::Tracked);
    s.ready();
    s.complete(&tp(1), run(&s, 1, 0), Ok(Outcome::Processed));
    assert_eq!(
        s.complete(&tp(0), run(&s, 0, 0), Err(HandlerError::permanent("bad"))),
        Some(Finished::Failed)
    );
    assert!(s.has_failed());
    assert!(s.ready().is_empty());
    let mut candidates = s.commit_candidates(None);
    candidates.sort();
    assert_eq!(
        candidates,
        [(tp(0), offset(0)), (tp(1), offset(1)), (tp(2), offset(0))]
    );
    // A second failure does not replace the first.
    s.complete(&tp(2), run(&s, 2, 0), Err(HandlerError::fatal("later")));
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
    s.complete(&tp(0), run(&s, 0, 0), Ok(Outcome::Processed));
    assert_eq!(s.commit_candidates(Some(&[tp(0)])), [(tp(0), offset(1))]);
    s.mark_committed(&tp(0), offset(1));
    assert!(s.commit_candidates(None).is_empty());
    assert!(s.ready().is_empty());
    s.forget(&[tp(0)]);
    assert_eq!(s.in_flight(), 0);
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
    s.complete(&tp(0), run(&s, 0, 3), Ok(Outcome::Processed));
    assert_eq!(offsets(&s.ready()), [(0, 4)]);
    s.complete(&tp(0), run(&s, 0, 4), Ok(Outcome::Processed));
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
        s.complete(&tp(0), run(&s, 0, n), Ok(Outcome::Processed));
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
    let five = run(&s, 0, 5);
    // 5 runs when 2 arrives: read again from 2, but 2 waits for 5 to finish.
    assert_eq!(s.accept(tp(0), record(0, 2)), Accepted::Behind);
    assert_eq!(s.accept(tp(0), record(0, 2)), Accepted::Tracked);
    assert!(s.ready().is_empty(), "5 still runs");
    assert_eq!(s.running_total(), 1);
    // 5's late result counts for nothing: 2 is not done.
    assert_eq!(s.complete(&tp(0), five, Ok(Outcome::Processed)), None);
    assert_eq!(s.commit_candidates(None), [(tp(0), offset(2))]);
    assert_eq!(offsets(&s.ready()), [(0, 2)]);
}

#[test]
fn positions_past_transaction_markers_advance_commits() {
    let (mut s, _) = scheduler(Ordering::PerPartition);
    assert_eq!(s.accept(tp(0), record(0, 0)), Accepted::Tracked);
    s.ready();
    s.complete(&tp(0), run(&s, 0, 0), Ok(Outcome::Processed));
    // Offset 1 is a commit marker librdkafka never hands over; the position says so.
    s.observe_position(&tp(0), offset(2));
    assert_eq!(s.commit_candidates(None), [(tp(0), offset(2))]);
}

#[test]
fn a_result_of_a_record_read_again_does_not_count_for_its_new_run() {
    let (mut s, _) = scheduler(Ordering::PerPartition);
    for n in [5, 6] {
        assert_eq!(s.accept(tp(0), record(0, n)), Accepted::Tracked);
    }
    assert_eq!(offsets(&s.ready()), [(0, 5)]);
    let old_five = run(&s, 0, 5);
    // The log was truncated: 2 arrives, and the partition is read again from it.
    assert_eq!(s.accept(tp(0), record(0, 2)), Accepted::Behind);
    for n in 2..=6 {
        assert_eq!(s.accept(tp(0), record(0, n)), Accepted::Tracked);
    }
    assert_eq!(s.complete(&tp(0), old_five, Ok(Outcome::Processed)), None);
    for n in 2..=4 {
        assert_eq!(offsets(&s.ready()), [(0, n)]);
        s.complete(&tp(0), run(&s, 0, n), Ok(Outcome::Processed));
    }
    assert_eq!(offsets(&s.ready()), [(0, 5)]);
    assert_eq!(
        s.commit_candidates(None),
        [(tp(0), offset(5))],
        "the new run of 5 is not done"
    );
    s.complete(&tp(0), run(&s, 0, 5), Ok(Outcome::Processed));
    assert_eq!(offsets(&s.ready()), [(0, 6)]);
    s.complete(&tp(0), run(&s, 0, 6), Ok(Outcome::Processed));
    assert_eq!(s.commit_candidates(None), [(tp(0), offset(7))]);
}

#[test]
fn unordered_a_record_read_again_may_run_beside_its_old_run() {
    let (mut s, clock) = scheduler(Ordering::Unordered);
    for n in [5, 6] {
        assert_eq!(s.accept(tp(0), record(0, n)), Accepted::Tracked);
    }
    assert_eq!(offsets(&s.ready()), [(0, 5), (0, 6)]);
    let old_five = run(&s, 0, 5);
    let old_six = run(&s, 0, 6);
    assert_eq!(s.accept(tp(0), record(0, 2)), Accepted::Behind);
    for n in 2..=6 {
        assert_eq!(s.accept(tp(0), record(0, n)), Accepted::Tracked);
    }
    assert_eq!(offsets(&s.ready()).len(), 5);
    assert_eq!(s.running_total(), 7, "the old runs still go on");
    // Neither the old runs' results nor their requests count.
    assert_eq!(s.complete(&tp(0), old_five, Ok(Outcome::Processed)), None);
    let again = redeliver_in(&clock, Duration::ZERO);
    assert_eq!(s.complete(&tp(0), old_six, Err(again)), None);
    assert!(s.ready().is_empty());
    assert_eq!(s.next_due(), None);
    for n in [2, 3, 4, 6] {
        s.complete(&tp(0), run(&s, 0, n), Ok(Outcome::Processed));
    }
    assert_eq!(s.commit_candidates(None), [(tp(0), offset(5))]);
    s.complete(&tp(0), run(&s, 0, 5), Ok(Outcome::Processed));
    assert_eq!(s.commit_candidates(None), [(tp(0), offset(7))]);
}

#[test]
fn a_result_from_before_the_partition_was_assigned_again_does_not_count() {
    for redelivery in [false, true] {
        let (mut s, clock) = scheduler(Ordering::PerPartition);
        s.assign(&[tp(0)]);
        for n in [10, 11] {
            assert_eq!(s.accept(tp(0), record(0, n)), Accepted::Tracked);
        }
        assert_eq!(offsets(&s.ready()), [(0, 10)]);
        let first = run(&s, 0, 10);
        // It outlives the revoke timeout: the partition is revoked, committed, forgotten, and
        // assigned back; 10 waits for the first run to end, which still counts as running.
        s.revoke(&[tp(0)]);
        assert_eq!(s.commit_candidates(None), [(tp(0), offset(10))]);
        s.mark_committed(&tp(0), offset(10));
        s.forget(&[tp(0)]);
        assert_eq!(s.running_total(), 1);
        assert_eq!(s.running_in(&[tp(0)]), 1);
        s.assign(&[tp(0)]);
        for n in [10, 11] {
            assert_eq!(s.accept(tp(0), record(0, n)), Accepted::Tracked);
        }
        assert!(
            s.ready().is_empty(),
            "two records of a partition never run at once"
        );
        let late = if redelivery {
            Err(redeliver_in(&clock, Duration::ZERO))
        } else {
            Ok(Outcome::Processed)
        };
        assert_eq!(s.complete(&tp(0), first, late), None);
        assert_eq!(offsets(&s.ready()), [(0, 10)]);
        assert!(s.ready().is_empty(), "11 waits for the second run of 10");
        assert_eq!(s.running_total(), 1);
        assert_eq!(s.next_due(), None);
        assert_eq!(s.commit_candidates(None), [(tp(0), offset(10))]);
        s.complete(&tp(0), run(&s, 0, 10), Ok(Outcome::Processed));
        assert_eq!(offsets(&s.ready()), [(0, 11)]);
        assert_eq!(s.commit_candidates(None), [(tp(0), offset(11))]);
    }
}

#[test]
fn a_late_error_for_a_partition_no_longer_owned_stops_nothing() {
    for permanent in [false, true] {
        let (mut s, clock) = scheduler(Ordering::PerPartition);
        s.assign(&[tp(0), tp(1)]);
        assert_eq!(s.accept(tp(0), record(0, 10)), Accepted::Tracked);
        assert_eq!(offsets(&s.ready()), [(0, 10)]);
        let late = run(&s, 0, 10);
        s.revoke(&[tp(0)]);
        s.forget(&[tp(0)]);
        let error = if permanent {
            HandlerError::permanent("bad")
        } else {
            redeliver_in(&clock, Duration::from_secs(1))
        };
        assert_eq!(s.complete(&tp(0), late, Err(error)), None);
        assert!(!s.has_failed());
        assert!(s.commit_candidates(None).is_empty());
        assert_eq!(s.next_due(), None);
        // The consumer goes on with what it owns.
        assert_eq!(s.accept(tp(1), record(1, 0)), Accepted::Tracked);
        assert_eq!(offsets(&s.ready()), [(1, 0)]);
    }
}

#[test]
fn unordered_a_stuck_record_bounds_what_its_partition_holds() {
    const MAX: usize = 4;
    let (mut s, _) = scheduler(Ordering::Unordered);
    let mut next = [0i64; 2];
    let mut stuck = None;
    // As the driver does: take what there is room for, start it; everything but 0 of
    // partition 0 finishes at once.
    for _ in 0..50 {
        for p in 0..2 {
            for _ in 0..s.room_for(&tp(p), MAX, 1) {
                let n = &mut next[p as usize];
                assert_eq!(s.accept(tp(p), record(p, *n)), Accepted::Tracked);
                *n += 1;
            }
        }
        for (p, r, run) in s.ready() {
            if p == tp(0) && r.offset == Offset::ZERO {
                stuck = Some(run);
            } else {
                s.complete(&p, run, Ok(Outcome::Processed));
            }
        }
    }
    assert_eq!(next[0] as usize, MAX * UNORDERED_WINDOW);
    assert_eq!(s.tracker.pending(&tp(0)), MAX * UNORDERED_WINDOW);
    assert_eq!(s.room_for(&tp(0), MAX, 1), 0);
    assert!(next[1] > 100, "the other partition is not held back");
    let candidates = s.commit_candidates(None);
    assert_eq!(candidates[0], (tp(0), Offset::ZERO));
    // The stuck record finishes: what it held back is committed and reading resumes.
    let stuck = stuck.expect("0 started");
    assert!(s.complete(&tp(0), stuck, Ok(Outcome::Processed)).is_some());
    assert_eq!(
        s.commit_candidates(Some(&[tp(0)])),
        [(tp(0), offset(next[0]))]
    );
    assert_eq!(s.tracker.pending(&tp(0)), 0);
    assert_eq!(s.room_for(&tp(0), MAX, 1), MAX);
}
