use super::*;
use kafka_ops_core::ManualClock;
use proptest::prelude::*;

fn breaker(config: BreakerConfig) -> (CircuitBreaker, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    (
        CircuitBreaker::with_clock("downstream", config, clock.clone()).unwrap(),
        clock,
    )
}

fn call(b: &CircuitBreaker, outcome: CallOutcome) -> bool {
    match b.try_acquire() {
        Ok(permit) => {
            b.record(permit, outcome);
            true
        }
        Err(_) => false,
    }
}

fn small() -> BreakerConfig {
    BreakerConfig {
        window: SlidingWindow::Count(10),
        minimum_calls: 4,
        failure_rate_threshold: 50.0,
        open_duration: Duration::from_secs(30),
        half_open_calls: 2,
        ..BreakerConfig::default()
    }
}

#[test]
fn opens_at_the_failure_rate_then_half_opens_then_closes() {
    let (b, clock) = breaker(small());
    let changes: Arc<Mutex<Vec<(BreakerState, BreakerState)>>> = Arc::default();
    {
        let changes = changes.clone();
        b.on_state_change(move |c| changes.lock().unwrap().push((c.from, c.to)));
    }
    assert!(call(&b, CallOutcome::Success));
    assert!(call(&b, CallOutcome::Failure));
    assert!(call(&b, CallOutcome::Success));
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "3 calls: below minimum_calls"
    );
    assert!(call(&b, CallOutcome::Failure));
    // 2 of 4 failed: 50% ≥ 50%.
    assert_eq!(b.state(), BreakerState::Open);
    let rejected = b.try_acquire().unwrap_err();
    assert_eq!(rejected.retry_after, Duration::from_secs(30));
    clock.advance(Duration::from_secs(29));
    assert!(b.try_acquire().is_err());
    clock.advance(Duration::from_secs(1));
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let first = b.try_acquire().unwrap();
    let second = b.try_acquire().unwrap();
    assert_eq!(
        b.try_acquire().unwrap_err().state,
        BreakerState::HalfOpen,
        "only 2 probes"
    );
    b.record(first, CallOutcome::Success);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    b.record(second, CallOutcome::Success);
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(
        *changes.lock().unwrap(),
        vec![
            (BreakerState::Closed, BreakerState::Open),
            (BreakerState::Open, BreakerState::HalfOpen),
            (BreakerState::HalfOpen, BreakerState::Closed)
        ]
    );
}

#[test]
fn a_failed_probe_reopens_for_longer_when_asked() {
    let config = BreakerConfig {
        open_duration_multiplier: 2.0,
        max_open_duration: Duration::from_secs(100),
        ..small()
    };
    let (b, clock) = breaker(config);
    for _ in 0..4 {
        call(&b, CallOutcome::Failure);
    }
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after,
        Duration::from_secs(30)
    );
    clock.advance(Duration::from_secs(30));
    assert!(call(&b, CallOutcome::Failure), "the probe is let through");
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after,
        Duration::from_secs(60)
    );
    clock.advance(Duration::from_secs(60));
    assert!(call(&b, CallOutcome::Failure));
    // 120 s capped at 100 s.
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after,
        Duration::from_secs(100)
    );
    clock.advance(Duration::from_secs(100));
    assert!(call(&b, CallOutcome::Success));
    assert!(call(&b, CallOutcome::Success));
    assert_eq!(b.state(), BreakerState::Closed);
    // Closing starts the growth over.
    for _ in 0..4 {
        call(&b, CallOutcome::Failure);
    }
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after,
        Duration::from_secs(30)
    );
}

#[test]
fn slow_calls_open_it_too() {
    let config = BreakerConfig {
        slow_call_rate_threshold: 75.0,
        slow_call_duration: Duration::from_secs(2),
        ..small()
    };
    let (b, clock) = breaker(config);
    for _ in 0..4 {
        let permit = b.try_acquire().unwrap();
        clock.advance(Duration::from_secs(3));
        b.record(permit, CallOutcome::Success);
    }
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn a_time_window_forgets_old_calls() {
    let config = BreakerConfig {
        window: SlidingWindow::Time(Duration::from_secs(10)),
        ..small()
    };
    let (b, clock) = breaker(config);
    for _ in 0..3 {
        call(&b, CallOutcome::Failure);
    }
    clock.advance(Duration::from_secs(11));
    call(&b, CallOutcome::Failure);
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "the first three fell out of the window"
    );
}

#[test]
fn force_open_holds_until_reset_and_stale_permits_are_ignored() {
    let (b, clock) = breaker(small());
    let early = b.try_acquire().unwrap();
    b.force_open();
    clock.advance(Duration::from_secs(3_600));
    assert_eq!(b.state(), BreakerState::Open);
    assert!(b.try_acquire().is_err());
    b.reset();
    assert_eq!(b.state(), BreakerState::Closed);
    // A call that started before the reset says nothing about now.
    b.record(early, CallOutcome::Failure);
    for _ in 0..3 {
        call(&b, CallOutcome::Success);
    }
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn bad_settings_are_refused() {
    for config in [
        BreakerConfig {
            failure_rate_threshold: 0.0,
            ..small()
        },
        BreakerConfig {
            minimum_calls: 0,
            ..small()
        },
        BreakerConfig {
            window: SlidingWindow::Count(0),
            ..small()
        },
        BreakerConfig {
            open_duration_multiplier: 0.5,
            ..small()
        },
        BreakerConfig {
            max_open_duration: Duration::from_secs(1),
            ..small()
        },
    ] {
        assert!(CircuitBreaker::new("x", config).is_err(), "{config:?}");
    }
}

#[test]
fn a_count_window_smaller_than_minimum_calls_is_refused() {
    // Five calls can never reach ten: such a breaker would never open.
    let error = CircuitBreaker::new(
        "x",
        BreakerConfig {
            window: SlidingWindow::Count(5),
            ..BreakerConfig::default()
        },
    )
    .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("minimum_calls"), "{text}");
    // As large as minimum_calls is enough.
    CircuitBreaker::new(
        "x",
        BreakerConfig {
            window: SlidingWindow::Count(10),
            ..BreakerConfig::default()
        },
    )
    .unwrap();
}

#[test]
fn settings_deserialize_strictly() {
    let config: BreakerConfig =
        serde_json::from_str(r#"{"window": {"count": 5}, "minimum_calls": 5}"#).unwrap();
    assert_eq!(config.window, SlidingWindow::Count(5));
    let error = serde_json::from_str::<BreakerConfig>(r#"{"minimum_call": 5}"#).unwrap_err();
    assert!(error.to_string().contains("unknown field"), "{error}");
}

#[test]
fn a_probe_permit_dropped_without_an_outcome_is_given_back() {
    let (b, clock) = breaker(BreakerConfig {
        half_open_calls: 1,
        ..small()
    });
    for _ in 0..4 {
        call(&b, CallOutcome::Failure);
    }
    clock.advance(Duration::from_secs(30));
    // Taken and never recorded (a cancelled call): the breaker must not wait for it forever.
    drop(b.try_acquire().unwrap());
    let probe = b.try_acquire().expect("the dropped probe was given back");
    assert!(b.try_acquire().is_err(), "still one probe at a time");
    b.record(probe, CallOutcome::Success);
    assert_eq!(b.state(), BreakerState::Closed);
    // A probe from an earlier half-open must not free a slot of a later one.
    let open_then_half_open = || {
        for _ in 0..4 {
            call(&b, CallOutcome::Failure);
        }
        clock.advance(Duration::from_secs(30));
    };
    open_then_half_open();
    let stale = b.try_acquire().unwrap();
    b.force_open();
    b.reset();
    open_then_half_open();
    let current = b.try_acquire().unwrap();
    drop(stale);
    assert!(b.try_acquire().is_err(), "a stale probe freed a slot");
    b.record(current, CallOutcome::Success);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn a_rejection_can_be_read_without_taking_a_probe() {
    let (b, clock) = breaker(BreakerConfig {
        half_open_calls: 1,
        ..small()
    });
    assert_eq!(b.rejection(), None);
    for _ in 0..4 {
        call(&b, CallOutcome::Failure);
    }
    assert_eq!(
        b.rejection(),
        Some(Rejected {
            state: BreakerState::Open,
            retry_after: Duration::from_secs(30)
        })
    );
    clock.advance(Duration::from_secs(30));
    assert_eq!(b.rejection(), None, "half-open with its probe free");
    assert_eq!(b.rejection(), None, "asking took nothing");
    let probe = b.try_acquire().unwrap();
    assert_eq!(b.rejection().map(|r| r.state), Some(BreakerState::HalfOpen));
    b.record(probe, CallOutcome::Success);
}

#[derive(Debug, Clone)]
enum Step {
    Call { fail: bool, hold_secs: u64 },
    Wait(u64),
    ForceOpen,
    Reset,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (any::<bool>(), 0u64..4).prop_map(|(fail, hold_secs)| Step::Call { fail, hold_secs }),
        2 => (0u64..40).prop_map(Step::Wait),
        1 => Just(Step::ForceOpen),
        1 => Just(Step::Reset),
    ]
}

proptest! {
    #[test]
    fn the_state_machine_keeps_its_promises(steps in proptest::collection::vec(step(), 1..200)) {
        let (b, clock) = breaker(BreakerConfig {
            slow_call_rate_threshold: 90.0,
            slow_call_duration: Duration::from_secs(2),
            ..small()
        });
        let transitions: Arc<Mutex<Vec<(BreakerState, BreakerState)>>> = Arc::default();
        {
            let transitions = transitions.clone();
            b.on_state_change(move |c| transitions.lock().unwrap().push((c.from, c.to)));
        }
        let mut forced = false;
        for step in steps {
            let before = b.state();
            transitions.lock().unwrap().clear();
            let natural = match step {
                Step::Call { fail, hold_secs } => {
                    match b.try_acquire() {
                        Ok(permit) => {
                            prop_assert!(before != BreakerState::Open, "an open breaker let a call through");
                            prop_assert!(!forced);
                            clock.advance(Duration::from_secs(hold_secs));
                            b.record(permit, if fail { CallOutcome::Failure } else { CallOutcome::Success });
                        }
                        Err(rejected) => {
                            prop_assert!(before != BreakerState::Closed, "a closed breaker rejected a call");
                            prop_assert!(rejected.state != BreakerState::Closed);
                        }
                    }
                    true
                }
                Step::Wait(secs) => { clock.advance(Duration::from_secs(secs)); true }
                Step::ForceOpen => { b.force_open(); forced = true; false }
                Step::Reset => { b.reset(); forced = false; false }
            };
            if forced {
                prop_assert_eq!(b.state(), BreakerState::Open);
            }
            for (from, to) in transitions.lock().unwrap().iter() {
                prop_assert!(from != to);
                if natural {
                    let allowed = matches!(
                        (from, to),
                        (BreakerState::Closed, BreakerState::Open)
                            | (BreakerState::Open, BreakerState::HalfOpen)
                            | (BreakerState::HalfOpen, BreakerState::Open)
                            | (BreakerState::HalfOpen, BreakerState::Closed)
                    );
                    prop_assert!(allowed, "{:?} → {:?}", from, to);
                }
            }
        }
    }

    #[test]
    fn only_successes_never_open_it(calls in 1usize..100, hold in 0u64..2) {
        let (b, clock) = breaker(small());
        for _ in 0..calls {
            let permit = b.try_acquire().unwrap();
            clock.advance(Duration::from_secs(hold));
            b.record(permit, CallOutcome::Success);
        }
        prop_assert_eq!(b.state(), BreakerState::Closed);
    }
}

#[test]
fn the_layer_applies_changes_that_arrive_out_of_order_in_their_order() {
    let (b, _) = breaker(small());
    let b = Arc::new(b);
    let mut consumer = kafka_ops_core::handler::MockConsumerControl::new();
    // Open (1) pauses; the later re-open (3) arrives before the half-open (2) that preceded
    // it and pauses again: the half-open's resume is stale and must not undo the pause.
    consumer.expect_pause().times(2).return_const(());
    consumer.expect_resume().never();
    let _layer = crate::layer::CircuitBreakerLayer::new(b.clone(), Arc::new(consumer));
    let change = |from, to, sequence| StateChange {
        breaker: "downstream".into(),
        from,
        to,
        reason: "test".into(),
        sequence,
    };
    b.notify(vec![change(BreakerState::Closed, BreakerState::Open, 1)]);
    b.notify(vec![change(BreakerState::HalfOpen, BreakerState::Open, 3)]);
    b.notify(vec![change(BreakerState::Open, BreakerState::HalfOpen, 2)]);
}
