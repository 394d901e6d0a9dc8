#![allow(clippy::unwrap_used)]
use super::*;
use kafka_ops_core::ManualClock;
use proptest::prelude::*;

fn limiter(limit: DeadLetterLimit) -> (DeadLetterLimiter, ManualClock) {
    let clock = ManualClock::new();
    (
        DeadLetterLimiter::new(limit, Arc::new(clock.clone())).unwrap(),
        clock,
    )
}

fn at(offset: i64) -> Offset {
    Offset::new(offset).unwrap()
}

/// Checks and, when allowed, counts a dead letter, as the layer does after the write.
fn dead_letter(limiter: &DeadLetterLimiter, offset: i64) -> Result<(), LimitBreach> {
    limiter.check("orders", 0, at(offset))?;
    limiter.record_dead_lettered("orders", 0);
    Ok(())
}

#[test]
fn invalid_limits_are_refused() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
    let window = Duration::from_secs(60);
    for bad in [
        DeadLetterLimit::ratio(0.0, window),
        DeadLetterLimit::ratio(1.5, window),
        DeadLetterLimit::ratio(f64::NAN, window),
        DeadLetterLimit::ratio(0.5, Duration::ZERO),
        DeadLetterLimit::default().consecutive(0),
    ] {
        assert!(
            matches!(
                DeadLetterLimiter::new(bad, clock.clone()),
                Err(DlqError::Config(_))
            ),
            "{bad:?}"
        );
    }
    assert!(DeadLetterLimiter::new(DeadLetterLimit::ratio(1.0, window), clock).is_ok());
}

#[test]
fn the_consecutive_limit_refuses_the_next_one_until_a_record_succeeds() {
    let (limiter, _) = limiter(DeadLetterLimit::default().consecutive(3));
    for offset in 0..3 {
        dead_letter(&limiter, offset).unwrap();
    }
    assert_eq!(
        dead_letter(&limiter, 3),
        Err(LimitBreach::Consecutive { max: 3 })
    );
    // Records after the refused one are refused for that reason, and nothing was counted.
    assert_eq!(
        dead_letter(&limiter, 4),
        Err(LimitBreach::AfterRefusal { refused: at(3) })
    );
    assert_eq!(
        limiter.counts("orders", 0),
        LimitCounts {
            records: 3,
            dead_lettered: 3,
            consecutive: 3
        }
    );
    // The refused record comes back (the consumer restarted): judged again, refused again.
    assert_eq!(
        dead_letter(&limiter, 3),
        Err(LimitBreach::Consecutive { max: 3 })
    );
    // It succeeds the next time: the run and the refusal are over.
    limiter.record_finished("orders", 0, at(3));
    assert_eq!(limiter.counts("orders", 0).consecutive, 0);
    dead_letter(&limiter, 4).unwrap();
    dead_letter(&limiter, 5).unwrap();
    assert_eq!(limiter.counts("orders", 0).consecutive, 2);
}

/// The group was moved past the refused record (a poison skip, an offset reset) and the
/// consumer restarted with the same layer: the refused record never comes back, and records
/// after it finishing end the refusal.
#[test]
fn a_record_after_the_refused_one_finishing_ends_the_refusal() {
    let (limiter, _) = limiter(DeadLetterLimit::default().consecutive(3));
    for offset in 0..3 {
        dead_letter(&limiter, offset).unwrap();
    }
    assert_eq!(
        dead_letter(&limiter, 3),
        Err(LimitBreach::Consecutive { max: 3 })
    );
    limiter.record_finished("orders", 0, at(4));
    limiter.record_finished("orders", 0, at(5));
    dead_letter(&limiter, 500).unwrap();
    // A record before the refused one finishing (handled alongside it) does not end it.
    for offset in 501..503 {
        dead_letter(&limiter, offset).unwrap();
    }
    assert_eq!(
        dead_letter(&limiter, 503),
        Err(LimitBreach::Consecutive { max: 3 })
    );
    limiter.record_finished("orders", 0, at(499));
    assert_eq!(
        dead_letter(&limiter, 504),
        Err(LimitBreach::AfterRefusal { refused: at(503) })
    );
    // Another partition's records never end it.
    limiter.record_finished("orders", 1, at(600));
    limiter.record_finished("refunds", 0, at(600));
    assert_eq!(
        dead_letter(&limiter, 504),
        Err(LimitBreach::AfterRefusal { refused: at(503) })
    );
}

#[test]
fn the_ratio_is_judged_over_the_window_once_it_holds_enough_records() {
    let window = Duration::from_secs(10);
    let (limiter, clock) = limiter(DeadLetterLimit::ratio(0.5, window).min_records(4));
    // Below the minimum a lone failure passes even though it is 100 % of the window.
    dead_letter(&limiter, 0).unwrap();
    limiter.record_finished("orders", 0, at(1));
    limiter.record_finished("orders", 0, at(2));
    // 2 of 4: exactly the ratio, allowed.
    dead_letter(&limiter, 3).unwrap();
    // 3 of 5 would be above it.
    assert_eq!(
        dead_letter(&limiter, 4),
        Err(LimitBreach::Ratio {
            dead_lettered: 3,
            records: 5,
            max_ratio: 0.5,
            window
        })
    );
    // The window slides by tenths: 9.999 s later everything still counts ...
    clock.advance(Duration::from_millis(9_999));
    assert_eq!(limiter.counts("orders", 0).records, 4);
    assert!(dead_letter(&limiter, 4).is_err());
    // ... at 10 s the first bucket, holding all four, has left it.
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        limiter.counts("orders", 0),
        LimitCounts {
            records: 0,
            dead_lettered: 0,
            consecutive: 1
        }
    );
    dead_letter(&limiter, 4).unwrap();
}

#[test]
fn buckets_leave_the_window_one_tenth_at_a_time() {
    let (limiter, clock) = limiter(DeadLetterLimit::ratio(1.0, Duration::from_secs(10)));
    for second in 0..10 {
        for _ in 0..=second {
            limiter.record_finished("orders", 0, at(0));
        }
        if second < 9 {
            clock.advance(Duration::from_secs(1));
        }
    }
    // 1 + 2 + ... + 10 records, one bucket per second.
    assert_eq!(limiter.counts("orders", 0).records, 55);
    clock.advance(Duration::from_secs(1));
    assert_eq!(limiter.counts("orders", 0).records, 54);
    clock.advance(Duration::from_secs(3));
    assert_eq!(limiter.counts("orders", 0).records, 54 - 2 - 3 - 4);
    clock.advance(Duration::from_secs(60));
    assert_eq!(limiter.counts("orders", 0).records, 0);
}

#[test]
fn partitions_are_limited_apart() {
    let (limiter, _) = limiter(DeadLetterLimit::default().consecutive(1));
    limiter.check("orders", 0, at(0)).unwrap();
    limiter.record_dead_lettered("orders", 0);
    assert!(limiter.check("orders", 0, at(1)).is_err());
    limiter.check("orders", 1, at(1)).unwrap();
    limiter.check("payments", 0, at(1)).unwrap();
    assert_eq!(limiter.counts("orders", 1), LimitCounts::default());
    assert_eq!(
        LimitBreach::Consecutive { max: 1 }.to_string(),
        "more than 1 consecutive dead letters"
    );
}

/// One step of a partition's life in the property test.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// The record succeeds.
    Finish,
    /// The record fails and is offered to the dead-letter topic.
    Fail,
    /// Time passes (milliseconds).
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Finish),
        4 => Just(Step::Fail),
        1 => (0_u64..4_000).prop_map(Step::Wait),
    ]
}

proptest! {
    /// Against a plain list of every finished record and the second it finished in: a dead
    /// letter is refused exactly when it would be the (max + 1)-th in a row, or would make the
    /// records of the last ten buckets reach the minimum with a ratio above the limit; and no
    /// run of dead letters is ever longer than the limit.
    #[test]
    fn refuses_exactly_what_the_limits_forbid(
        max_ratio in 0.05_f64..=1.0,
        min_records in 0_u32..20,
        max_consecutive in proptest::option::of(1_u32..8),
        steps in proptest::collection::vec(step(), 1..300),
    ) {
        let limit = DeadLetterLimit {
            max_ratio: Some(max_ratio),
            window: Duration::from_secs(10),
            min_records,
            max_consecutive,
        };
        let (limiter, clock) = limiter(limit);
        let mut elapsed_ms = 0_u64;
        // (bucket, dead-lettered) of every counted record.
        let mut history: Vec<(u64, bool)> = Vec::new();
        let mut run = 0_u32;
        let mut offset = 0_i64;
        for step in steps {
            let bucket = elapsed_ms / 1_000;
            match step {
                Step::Wait(ms) => {
                    clock.advance(Duration::from_millis(ms));
                    elapsed_ms += ms;
                }
                Step::Finish => {
                    limiter.record_finished("t", 0, at(offset));
                    history.push((bucket, false));
                    run = 0;
                    offset += 1;
                }
                Step::Fail => {
                    let in_window = history.iter().filter(|(b, _)| b + 10 > bucket);
                    let (records, dead) = in_window.fold((1_u64, 1_u64), |(r, d), (_, dead)| {
                        (r + 1, d + u64::from(*dead))
                    });
                    let too_many = max_consecutive.is_some_and(|max| run >= max);
                    let too_high = records >= u64::from(min_records)
                        && dead as f64 > max_ratio * records as f64;
                    let answer = limiter.check("t", 0, at(offset));
                    prop_assert_eq!(answer.is_err(), too_many || too_high, "{:?}", answer);
                    if answer.is_ok() {
                        limiter.record_dead_lettered("t", 0);
                        history.push((bucket, true));
                        run += 1;
                        offset += 1;
                        prop_assert!(max_consecutive.is_none_or(|max| run <= max));
                    }
                    // A refused record is not counted and comes back at the same offset.
                }
            }
            let counts = limiter.counts("t", 0);
            let bucket = elapsed_ms / 1_000;
            let kept: Vec<_> = history.iter().filter(|(b, _)| b + 10 > bucket).collect();
            prop_assert_eq!(counts.records, kept.len() as u64);
            prop_assert_eq!(counts.dead_lettered, kept.iter().filter(|(_, d)| *d).count() as u64);
            prop_assert_eq!(counts.consecutive, run);
        }
    }
}
