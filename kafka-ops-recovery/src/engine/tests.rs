use super::*;
use kafka_ops_core::ManualClock;
use std::sync::atomic::{AtomicU32, Ordering};

/// A monitor whose next answers the test sets.
struct Scripted {
    name: &'static str,
    signals: Mutex<Vec<Signal>>,
}

impl Scripted {
    fn new(name: &'static str, signals: Vec<Signal>) -> Arc<Self> {
        Arc::new(Scripted {
            name,
            signals: Mutex::new(signals),
        })
    }
}

#[async_trait]
impl Monitor for Scripted {
    fn name(&self) -> &str {
        self.name
    }
    async fn observe(&self) -> Result<Vec<Signal>, RecoveryError> {
        Ok(self.signals.lock().unwrap().clone())
    }
}

/// An action that fails a set number of times.
struct Flaky {
    failures_left: AtomicU32,
    runs: AtomicU32,
}

#[async_trait]
impl RecoveryAction for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    async fn execute(&self, _anomaly: &Anomaly) -> Result<String, RecoveryError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if self.failures_left.load(Ordering::SeqCst) > 0 {
            self.failures_left.fetch_sub(1, Ordering::SeqCst);
            return Err(RecoveryError::ActionFailed {
                action: "flaky".into(),
                reason: "not yet".into(),
            });
        }
        Ok("fixed".into())
    }
}

#[derive(Default)]
struct Collect(Mutex<Vec<Notification>>);

#[async_trait]
impl Notifier for Collect {
    fn name(&self) -> &str {
        "collect"
    }
    async fn notify(&self, n: &Notification) -> Result<(), RecoveryError> {
        self.0.lock().unwrap().push(n.clone());
        Ok(())
    }
}

struct Setup {
    engine: Engine,
    monitor: Arc<Scripted>,
    action: Arc<Flaky>,
    notes: Arc<Collect>,
    clock: Arc<ManualClock>,
}

fn setup(failures: u32, config: EngineConfig) -> Setup {
    let clock = Arc::new(ManualClock::new());
    let monitor = Scripted::new(
        "scripted",
        vec![Signal::anomaly("consumer_liveness", "not polling")],
    );
    let action = Arc::new(Flaky {
        failures_left: AtomicU32::new(failures),
        runs: AtomicU32::new(0),
    });
    let notes = Arc::new(Collect::default());
    let engine = Engine::new(config)
        .unwrap()
        .with_clock(clock.clone())
        .monitor(monitor.clone())
        .playbook(Playbook {
            matches: "consumer_*".into(),
            actions: vec![action.clone()],
        })
        .notifier(notes.clone());
    Setup {
        engine,
        monitor,
        action,
        notes,
        clock,
    }
}

fn config() -> EngineConfig {
    EngineConfig {
        interval: Duration::from_secs(10),
        grace_checks: 3,
        grace_period: Duration::from_secs(20),
        cooldown: Duration::from_secs(300),
        ..EngineConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn acts_only_after_the_grace_period_then_cools_down() {
    let s = setup(0, config());
    for checks in 1..=2 {
        assert_eq!(
            s.engine.tick().await,
            vec![EngineEvent::Detected {
                key: "consumer_liveness".into(),
                checks
            }]
        );
        s.clock.advance(Duration::from_secs(10));
    }
    // Third check at 20 s: both the count and the period are met.
    assert_eq!(
        s.engine.tick().await,
        vec![EngineEvent::Recovered {
            key: "consumer_liveness".into(),
            action: "flaky".into()
        }]
    );
    // Still anomalous during the cooldown: left alone.
    s.clock.advance(Duration::from_secs(10));
    assert_eq!(s.engine.tick().await, vec![]);
    assert_eq!(s.action.runs.load(Ordering::SeqCst), 1);
    // Healthy again after the cooldown: cleared.
    s.clock.advance(Duration::from_secs(300));
    *s.monitor.signals.lock().unwrap() = vec![Signal::healthy("consumer_liveness")];
    assert_eq!(
        s.engine.tick().await,
        vec![EngineEvent::Cleared {
            key: "consumer_liveness".into()
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn an_anomaly_that_cleared_during_the_cooldown_gets_a_new_grace_period() {
    let s = setup(0, config());
    let key = || "consumer_liveness".to_string();
    let set = |signal: Signal| *s.monitor.signals.lock().unwrap() = vec![signal];
    let detected = |checks| vec![EngineEvent::Detected { key: key(), checks }];
    let recovered = || {
        vec![EngineEvent::Recovered {
            key: key(),
            action: "flaky".into(),
        }]
    };
    for checks in 1..=2 {
        assert_eq!(s.engine.tick().await, detected(checks));
        s.clock.advance(Duration::from_secs(10));
    }
    assert_eq!(s.engine.tick().await, recovered());
    // Healthy during the cooldown: cleared (once), its grace counting gone.
    set(Signal::healthy(key()));
    for round in 0..3 {
        s.clock.advance(Duration::from_secs(10));
        let events = s.engine.tick().await;
        if round == 0 {
            assert_eq!(events, vec![EngineEvent::Cleared { key: key() }]);
        } else {
            assert_eq!(events, vec![]);
        }
    }
    // After the cooldown, one anomalous check is a new anomaly in its grace period.
    s.clock.advance(Duration::from_secs(300));
    set(Signal::anomaly(key(), "not polling"));
    assert_eq!(s.engine.tick().await, detected(1));
    assert_eq!(s.action.runs.load(Ordering::SeqCst), 1);
    s.clock.advance(Duration::from_secs(10));
    assert_eq!(s.engine.tick().await, detected(2));
    s.clock.advance(Duration::from_secs(10));
    assert_eq!(s.engine.tick().await, recovered());
    assert_eq!(s.action.runs.load(Ordering::SeqCst), 2);

    // Back during this cooldown: counted from its return, but not acted on before the
    // cooldown ends, however long it lasts.
    set(Signal::healthy(key()));
    s.clock.advance(Duration::from_secs(10));
    assert_eq!(
        s.engine.tick().await,
        vec![EngineEvent::Cleared { key: key() }]
    );
    set(Signal::anomaly(key(), "not polling"));
    s.clock.advance(Duration::from_secs(10));
    assert_eq!(s.engine.tick().await, detected(1));
    for checks in 2..=3 {
        s.clock.advance(Duration::from_secs(100));
        assert_eq!(s.engine.tick().await, detected(checks));
    }
    // 300 s after acting.
    s.clock.advance(Duration::from_secs(80));
    assert_eq!(s.engine.tick().await, recovered());
    assert_eq!(s.action.runs.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn the_runbook_policy_retries_then_escalates() {
    let s = setup(
        10,
        EngineConfig {
            grace_checks: 1,
            grace_period: Duration::ZERO,
            ..config()
        },
    );
    let started = tokio::time::Instant::now();
    let events = s.engine.tick().await;
    assert_eq!(
        events,
        vec![EngineEvent::Escalated {
            key: "consumer_liveness".into()
        }]
    );
    // The first try and three retries after 10 s, 15 s and 22.5 s.
    assert_eq!(s.action.runs.load(Ordering::SeqCst), 4);
    assert_eq!(started.elapsed(), Duration::from_millis(47_500));
    let notes = s.notes.0.lock().unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].level, Severity::Critical);
    assert!(
        notes[0]
            .text
            .contains("automatic recovery failed after flaky (4 attempts each)"),
        "{}",
        notes[0].text
    );
}

#[tokio::test(start_paused = true)]
async fn dry_run_decides_without_acting_and_widespread_anomalies_only_notify() {
    let s = setup(
        0,
        EngineConfig {
            grace_checks: 1,
            grace_period: Duration::ZERO,
            dry_run: true,
            ..config()
        },
    );
    assert_eq!(
        s.engine.tick().await,
        vec![EngineEvent::WouldAct {
            key: "consumer_liveness".into(),
            actions: vec!["flaky".into()]
        }]
    );
    assert_eq!(s.action.runs.load(Ordering::SeqCst), 0);

    let s = setup(
        0,
        EngineConfig {
            grace_checks: 1,
            grace_period: Duration::ZERO,
            ..config()
        },
    );
    *s.monitor.signals.lock().unwrap() =
        vec![Signal::anomaly("consumer_group", "3 of 4 consumers stuck").with_extent(3, 4)];
    assert_eq!(
        s.engine.tick().await,
        vec![EngineEvent::TooWidespread {
            key: "consumer_group".into()
        }]
    );
    assert_eq!(s.action.runs.load(Ordering::SeqCst), 0);
    assert!(s.notes.0.lock().unwrap()[0].text.contains("too widespread"));
}

#[tokio::test(start_paused = true)]
async fn an_unhandled_anomaly_is_reported() {
    let s = setup(
        0,
        EngineConfig {
            grace_checks: 1,
            grace_period: Duration::ZERO,
            ..config()
        },
    );
    *s.monitor.signals.lock().unwrap() = vec![Signal::anomaly("disk", "full")];
    assert_eq!(
        s.engine.tick().await,
        vec![EngineEvent::Unhandled { key: "disk".into() }]
    );
    assert_eq!(s.notes.0.lock().unwrap()[0].level, Severity::Warning);
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_the_running_round_finish() {
    let s = setup(
        1,
        EngineConfig {
            grace_checks: 1,
            grace_period: Duration::ZERO,
            retry: BackoffPolicy::constant(Duration::from_secs(5), 3),
            ..config()
        },
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let seen: Arc<Mutex<Vec<EngineEvent>>> = Arc::default();
    let run = {
        let seen = seen.clone();
        async move {
            s.engine
                .run(
                    async {
                        stopped.await.ok();
                    },
                    |events| seen.lock().unwrap().extend_from_slice(events),
                )
                .await;
            s.action.runs.load(Ordering::SeqCst)
        }
    };
    let handle = tokio::spawn(run);
    // Stop while the action waits 5 s before its retry.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.send(()).unwrap();
    assert_eq!(handle.await.unwrap(), 2, "the retry still ran");
    assert_eq!(
        *seen.lock().unwrap(),
        vec![EngineEvent::Recovered {
            key: "consumer_liveness".into(),
            action: "flaky".into()
        }]
    );
}

#[test]
fn bad_settings_are_refused() {
    assert!(
        Engine::new(EngineConfig {
            interval: Duration::ZERO,
            ..config()
        })
        .is_err()
    );
    assert!(
        Engine::new(EngineConfig {
            max_affected_percent: 0.0,
            ..config()
        })
        .is_err()
    );
    assert!(
        Engine::new(EngineConfig {
            grace_checks: 0,
            ..config()
        })
        .is_err()
    );
}

#[test]
fn a_retry_policy_without_any_limit_is_refused() {
    // Neither a number of attempts nor a time limit: a failing action would be retried for
    // ever and the round would never end.
    let unbounded = BackoffPolicy {
        max_attempts: None,
        max_elapsed: None,
        ..BackoffPolicy::runbook()
    };
    let error = Engine::new(EngineConfig {
        retry: unbounded,
        ..config()
    })
    .unwrap_err();
    assert!(error.to_string().contains("engine.retry"), "{error}");
    for bounded in [
        BackoffPolicy {
            max_attempts: None,
            ..BackoffPolicy::runbook()
        }
        .with_max_elapsed(Duration::from_secs(60)),
        BackoffPolicy::runbook(),
    ] {
        assert!(
            Engine::new(EngineConfig {
                retry: bounded,
                ..config()
            })
            .is_ok()
        );
    }
}

/// An action that ends `takes` later on the manual clock (waits, retries, slow restarts).
struct Slow {
    clock: Arc<ManualClock>,
    takes: Duration,
    runs: AtomicU32,
}

#[async_trait]
impl RecoveryAction for Slow {
    fn name(&self) -> &str {
        "slow"
    }
    async fn execute(&self, _anomaly: &Anomaly) -> Result<String, RecoveryError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.clock.advance(self.takes);
        Ok("fixed, slowly".into())
    }
}

#[tokio::test(start_paused = true)]
async fn the_cooldown_starts_when_the_handling_ends() {
    let clock = Arc::new(ManualClock::new());
    let action = Arc::new(Slow {
        clock: clock.clone(),
        takes: Duration::from_secs(400),
        runs: AtomicU32::new(0),
    });
    let engine = Engine::new(EngineConfig {
        grace_checks: 1,
        grace_period: Duration::ZERO,
        cooldown: Duration::from_secs(300),
        ..config()
    })
    .unwrap()
    .with_clock(clock.clone())
    .monitor(Scripted::new(
        "scripted",
        vec![Signal::anomaly("consumer_liveness", "not polling")],
    ))
    .playbook(Playbook {
        matches: "consumer_*".into(),
        actions: vec![action.clone()],
    });
    let recovered = || {
        vec![EngineEvent::Recovered {
            key: "consumer_liveness".into(),
            action: "slow".into(),
        }]
    };
    assert_eq!(engine.tick().await, recovered());
    // The handling took 400 s, longer than the cooldown: it still holds for 300 s after it.
    clock.advance(Duration::from_secs(10));
    assert_eq!(engine.tick().await, vec![]);
    clock.advance(Duration::from_secs(280));
    assert_eq!(engine.tick().await, vec![]);
    assert_eq!(action.runs.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_secs(10));
    assert_eq!(engine.tick().await, recovered());
    assert_eq!(action.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_same_key_from_two_monitors_is_two_anomalies() {
    // Two health monitors of different groups both report the probe's key: the healthy one
    // must not clear the other's anomaly.
    for healthy_first in [false, true] {
        let clock = Arc::new(ManualClock::new());
        let sick = Scripted::new("billing", vec![Signal::anomaly("consumer_lag", "lags")]);
        let fine = Scripted::new("audit", vec![Signal::healthy("consumer_lag")]);
        let action = Arc::new(Flaky {
            failures_left: AtomicU32::new(0),
            runs: AtomicU32::new(0),
        });
        let path = std::env::temp_dir().join(format!(
            "{}.jsonl",
            kafka_ops_core::testkit::unique_name("audit")
        ));
        let mut engine = Engine::new(EngineConfig {
            grace_checks: 2,
            grace_period: Duration::ZERO,
            ..config()
        })
        .unwrap()
        .with_clock(clock.clone())
        .audit(AuditTrail::open(&path).unwrap());
        let (first, second): (Arc<dyn Monitor>, Arc<dyn Monitor>) = if healthy_first {
            (fine.clone(), sick.clone())
        } else {
            (sick.clone(), fine.clone())
        };
        engine = engine.monitor(first).monitor(second).playbook(Playbook {
            matches: "consumer_*".into(),
            actions: vec![action.clone()],
        });
        assert_eq!(
            engine.tick().await,
            vec![EngineEvent::Detected {
                key: "consumer_lag".into(),
                checks: 1
            }]
        );
        clock.advance(Duration::from_secs(10));
        assert_eq!(
            engine.tick().await,
            vec![EngineEvent::Recovered {
                key: "consumer_lag".into(),
                action: "flaky".into()
            }]
        );
        assert_eq!(action.runs.load(Ordering::SeqCst), 1);
        let trail = AuditTrail::read(&path).unwrap();
        std::fs::remove_file(&path).ok();
        let acted: Vec<&str> = trail
            .iter()
            .filter(|r| r.decision == "act")
            .map(|r| r.monitor.as_str())
            .collect();
        assert_eq!(acted, ["billing"]);
        assert!(trail.iter().all(|r| r.decision != "cleared"), "{trail:#?}");
    }
}

/// A notifier whose endpoint answers with an error.
struct Refusing;

#[async_trait]
impl Notifier for Refusing {
    fn name(&self) -> &str {
        "webhook"
    }
    async fn notify(&self, _n: &Notification) -> Result<(), RecoveryError> {
        Err(RecoveryError::Notify {
            notifier: "webhook".into(),
            source: "the webhook answered 500 Internal Server Error".into(),
        })
    }
}

/// An action failing with an error whose cause says what went wrong.
struct Broken;

#[async_trait]
impl RecoveryAction for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    async fn execute(&self, _anomaly: &Anomaly) -> Result<String, RecoveryError> {
        Err(RecoveryError::Io {
            what: "write the restart marker".into(),
            source: std::io::Error::other("no space left on device"),
        })
    }
}

/// A new audit trail's path.
fn audit_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "{}.jsonl",
        kafka_ops_core::testkit::unique_name("audit")
    ))
}

/// An engine that acts on the first anomalous check and retries an action once.
fn acting_at_once() -> Engine {
    Engine::new(EngineConfig {
        grace_checks: 1,
        grace_period: Duration::ZERO,
        retry: BackoffPolicy::constant(Duration::from_secs(1), 1),
        ..config()
    })
    .unwrap()
    .with_clock(Arc::new(ManualClock::new()))
}

#[tokio::test(start_paused = true)]
async fn the_audit_trail_and_notifications_keep_the_whole_cause_chain() {
    let path = audit_path();
    let notes = Arc::new(Collect::default());
    let engine = acting_at_once()
        .monitor(Scripted::new(
            "scripted",
            vec![Signal::anomaly("consumer_liveness", "not polling")],
        ))
        .playbook(Playbook {
            matches: "consumer_*".into(),
            actions: vec![Arc::new(Broken)],
        })
        .notifier(Arc::new(Refusing))
        .notifier(notes.clone())
        .audit(AuditTrail::open(&path).unwrap());
    assert_eq!(
        engine.tick().await,
        vec![EngineEvent::Escalated {
            key: "consumer_liveness".into()
        }]
    );
    let trail = AuditTrail::read(&path).unwrap();
    std::fs::remove_file(&path).ok();
    let result = |decision: &str| {
        trail
            .iter()
            .find(|r| r.decision == decision)
            .and_then(|r| r.result.clone())
            .unwrap_or_else(|| panic!("no {decision} record: {trail:#?}"))
    };
    assert_eq!(
        result("act"),
        "failed: could not write the restart marker: no space left on device"
    );
    assert_eq!(
        result("notification failed"),
        "notifier webhook failed: the webhook answered 500 Internal Server Error"
    );
    let notes = notes.0.lock().unwrap();
    assert!(
        notes[0].text.contains("no space left on device"),
        "{}",
        notes[0].text
    );
}

/// A monitor, action or notifier that panics: a plug-in's bug.
struct Panicking;

#[async_trait]
impl Monitor for Panicking {
    fn name(&self) -> &str {
        "panicking"
    }
    async fn observe(&self) -> Result<Vec<Signal>, RecoveryError> {
        panic!("index out of bounds in the monitor")
    }
}

#[async_trait]
impl RecoveryAction for Panicking {
    fn name(&self) -> &str {
        "panicking"
    }
    async fn execute(&self, _anomaly: &Anomaly) -> Result<String, RecoveryError> {
        panic!("the action's bug")
    }
}

#[async_trait]
impl Notifier for Panicking {
    fn name(&self) -> &str {
        "panicking"
    }
    async fn notify(&self, _n: &Notification) -> Result<(), RecoveryError> {
        panic!("the notifier's bug")
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_monitor_action_or_notifier_fails_its_call_not_the_engine() {
    let path = audit_path();
    let notes = Arc::new(Collect::default());
    let engine = acting_at_once()
        .monitor(Arc::new(Panicking))
        .monitor(Scripted::new(
            "scripted",
            vec![Signal::anomaly("consumer_liveness", "not polling")],
        ))
        .playbook(Playbook {
            matches: "consumer_*".into(),
            actions: vec![Arc::new(Panicking)],
        })
        .notifier(Arc::new(Panicking))
        .notifier(notes.clone())
        .audit(AuditTrail::open(&path).unwrap());
    // The other monitor still runs; the action's panic is a failed attempt, retried, then
    // escalated; the escalation still reaches the notifier after the panicking one.
    assert_eq!(
        engine.tick().await,
        vec![
            EngineEvent::MonitorFailed {
                monitor: "panicking".into(),
                error: "panicked: index out of bounds in the monitor".into(),
            },
            EngineEvent::Escalated {
                key: "consumer_liveness".into()
            }
        ]
    );
    let trail = AuditTrail::read(&path).unwrap();
    std::fs::remove_file(&path).ok();
    let results = |decision: &str| -> Vec<String> {
        trail
            .iter()
            .filter(|r| r.decision == decision)
            .filter_map(|r| r.result.clone())
            .collect()
    };
    assert_eq!(
        results("act"),
        [
            "failed: panicked: the action's bug",
            "failed: panicked: the action's bug"
        ]
    );
    assert_eq!(
        results("notification failed"),
        ["panicked: the notifier's bug"]
    );
    assert_eq!(
        notes.0.lock().unwrap().len(),
        1,
        "the other notifier was told"
    );
}
