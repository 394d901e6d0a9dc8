//! The scheduler against a model, whatever the interleaving of arrivals, results, clock,
//! commits, partitions read again and partitions assigned again.

use std::collections::BTreeSet;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Step {
    Accept(i32),
    /// Finishes a run: done, asking for redelivery, or (for runs that no longer count) failed.
    Finish(usize, u8),
    Advance(u64),
    Commit,
    /// A record below what the partition handed over arrives: it is read again from there.
    ReadAgain(i32, i64),
    /// Revoked (without waiting for what runs), forgotten, and assigned back.
    Reassign(i32),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3i32).prop_map(Step::Accept),
        4 => (0..8usize, 0..3u8).prop_map(|(i, how)| Step::Finish(i, how)),
        2 => (0..3_000u64).prop_map(Step::Advance),
        2 => Just(Step::Commit),
        1 => (0..3i32, 0..6i64).prop_map(|(p, back)| Step::ReadAgain(p, back)),
        1 => (0..3i32).prop_map(Step::Reassign),
    ]
}

/// What the property expects of one partition.
#[derive(Default)]
struct Expected {
    /// The offset the log hands over next.
    next: i64,
    /// Where the current reading began.
    from: i64,
    /// Offsets of the current reading that are done.
    done: BTreeSet<i64>,
    /// The last commit since the partition was last assigned.
    committed: Option<i64>,
    /// The last commit ever: where the partition is read from when assigned again.
    resume: i64,
    /// The highest offset started in the current reading.
    started_last: i64,
    /// Whether the partition was handed a record since it was last assigned.
    tracked: bool,
}

/// A run the property started, and whether its result counts (the scheduler counts it as
/// running until its result arrives, whether it counts or not).
struct Started {
    tp: TopicPartition,
    run: Run,
    counts: bool,
}

fn start(
    s: &mut Scheduler,
    ordering: Ordering,
    runs: &mut Vec<Started>,
    expected: &mut [Expected; 3],
) -> Result<(), TestCaseError> {
    for (tp, r, run) in s.ready() {
        let e = &mut expected[tp.partition as usize];
        prop_assert_eq!(run.offset(), r.offset);
        prop_assert!(
            !e.done.contains(&r.offset.get()),
            "a done record runs again"
        );
        prop_assert!(
            !runs
                .iter()
                .any(|o| o.tp == tp && o.counts && o.run.offset() == r.offset),
            "a record runs twice at once"
        );
        if ordering == Ordering::PerPartition {
            prop_assert!(
                !runs.iter().any(|o| o.tp == tp),
                "two records of one partition run"
            );
            prop_assert!(r.offset.get() >= e.started_last, "out of order");
        }
        e.started_last = e.started_last.max(r.offset.get());
        runs.push(Started {
            tp,
            run,
            counts: true,
        });
    }
    Ok(())
}

fn finish(
    s: &mut Scheduler,
    clock: &ManualClock,
    started: Started,
    how: u8,
    expected: &mut [Expected; 3],
) -> Result<(), TestCaseError> {
    let result = match how {
        1 => Err(redeliver_in(clock, Duration::from_millis(500))),
        // A counting run that fails stops everything: only the others fail.
        2 if !started.counts => Err(HandlerError::permanent("late")),
        _ => Ok(Outcome::Processed),
    };
    let finished = s.complete(&started.tp, started.run, result);
    prop_assert_eq!(finished.is_some(), started.counts);
    if let Some(Finished::Done(_)) = finished {
        expected[started.tp.partition as usize]
            .done
            .insert(started.run.offset().get());
    }
    prop_assert!(!s.has_failed());
    Ok(())
}

proptest! {
    /// Whatever the interleaving, with partitions read again and assigned again while their
    /// records run: only a record's latest run counts; with per-partition ordering at most one
    /// record of a partition runs at a time, in offset order; a commit never passes a record
    /// that is not done; every accepted record is done in the end.
    #[test]
    fn invariants_hold_whatever_the_interleaving(
        ordering in prop_oneof![Just(Ordering::PerPartition), Just(Ordering::Unordered)],
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        let (mut s, clock) = scheduler(ordering);
        let mut expected: [Expected; 3] = Default::default();
        for e in &mut expected {
            e.started_last = -1;
        }
        let mut runs: Vec<Started> = Vec::new();
        for step in steps {
            match step {
                Step::Accept(p) => {
                    let e = &mut expected[p as usize];
                    prop_assert_eq!(s.accept(tp(p), record(p, e.next)), Accepted::Tracked);
                    e.next += 1;
                    e.tracked = true;
                }
                Step::Finish(i, how) if !runs.is_empty() => {
                    let started = runs.remove(i % runs.len());
                    finish(&mut s, &clock, started, how, &mut expected)?;
                }
                Step::Finish(..) => {}
                Step::Advance(ms) => clock.advance(Duration::from_millis(ms)),
                Step::Commit => {
                    for (tp, at) in s.commit_candidates(None) {
                        let e = &mut expected[tp.partition as usize];
                        prop_assert!((e.from..at.get()).all(|o| e.done.contains(&o)), "commit past an unfinished record");
                        prop_assert!(e.committed.is_none_or(|c| at.get() > c));
                        e.committed = Some(at.get());
                        e.resume = at.get();
                        s.mark_committed(&tp, at);
                    }
                }
                Step::ReadAgain(p, back) => {
                    let e = &mut expected[p as usize];
                    if e.tracked && e.next > 0 {
                        let at = e.next - 1 - back % e.next;
                        prop_assert_eq!(s.accept(tp(p), record(p, at)), Accepted::Behind);
                        for started in runs.iter_mut().filter(|o| o.tp == tp(p) && o.run.offset().get() >= at) {
                            started.counts = false;
                        }
                        e.done.retain(|o| *o < at);
                        e.next = at;
                        e.from = e.from.min(at);
                        e.started_last = e.started_last.min(at - 1);
                    }
                }
                Step::Reassign(p) => {
                    s.revoke(&[tp(p)]);
                    s.forget(&[tp(p)]);
                    s.assign(&[tp(p)]);
                    for started in runs.iter_mut().filter(|o| o.tp == tp(p)) {
                        started.counts = false;
                    }
                    let e = &mut expected[p as usize];
                    *e = Expected {
                        next: e.resume,
                        from: e.resume,
                        resume: e.resume,
                        started_last: e.resume - 1,
                        ..Expected::default()
                    };
                }
            }
            start(&mut s, ordering, &mut runs, &mut expected)?;
            prop_assert_eq!(s.running_total(), runs.len());
        }
        // Drain: finish everything, letting redeliveries come due.
        for _ in 0..10_000 {
            if runs.is_empty() && s.in_flight() == 0 { break; }
            clock.advance(Duration::from_millis(500));
            start(&mut s, ordering, &mut runs, &mut expected)?;
            for started in std::mem::take(&mut runs) {
                finish(&mut s, &clock, started, 0, &mut expected)?;
            }
        }
        prop_assert_eq!(s.in_flight(), 0);
        let mut want: Vec<(TopicPartition, Offset)> = (0..3)
            .filter(|p| {
                let e = &expected[*p as usize];
                e.tracked && e.committed.is_none_or(|c| e.next > c)
            })
            .map(|p| (tp(p), offset(expected[p as usize].next)))
            .collect();
        want.sort();
        let mut candidates = s.commit_candidates(None);
        candidates.sort();
        prop_assert_eq!(candidates, want);
    }
}
