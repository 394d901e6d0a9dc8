//! The self-healing engine against real things: a consumer that stopped, a broker taken down,
//! escalation to a webhook and to an SMTP server, and the audit trail.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_ops_core::handler::{Outcome, handler_fn};
use kafka_ops_core::kafka::driver::{Driver, DriverConfig, DriverHandle};
use kafka_ops_core::testkit::{MockKafka, TestRecord, unique_name};
use kafka_ops_core::{Record, Severity, Timestamp};
use kafka_ops_health::HealthChecker;
use kafka_ops_health::probes::{BrokerConnectivityProbe, ConsumerLivenessProbe};
use kafka_ops_recovery::SmtpNotifier;
use kafka_ops_recovery::SmtpSettings;
use kafka_ops_recovery::actions::{RestartConsumer, WaitAndRecheck};
use kafka_ops_recovery::monitors::HealthMonitor;
use kafka_ops_recovery::{
    AuditTrail, BackoffPolicy, Engine, EngineConfig, EngineEvent, Monitor, Notification, Notifier,
    Playbook, WebhookNotifier,
};

fn quick() -> EngineConfig {
    EngineConfig {
        interval: Duration::from_millis(200),
        grace_checks: 2,
        grace_period: Duration::ZERO,
        cooldown: Duration::ZERO,
        retry: BackoffPolicy::constant(Duration::from_millis(100), 2),
        ..EngineConfig::default()
    }
}

fn audit_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{}.jsonl", unique_name("audit")))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_consumer_is_detected_and_restarted() {
    let kafka = MockKafka::start(1).unwrap();
    let topic = unique_name("orders");
    kafka.create_topic(&topic, 2).unwrap();
    kafka
        .produce(
            &topic,
            (0..10).map(|i| TestRecord::keyed(format!("k{i}"), "v")),
        )
        .await
        .unwrap();
    let handle = DriverHandle::new();
    let monitor: Arc<dyn Monitor> = Arc::new(HealthMonitor::new(
        "consumer",
        HealthChecker::new().probe(
            ConsumerLivenessProbe::new(Arc::new(handle.clone()))
                .with_max_poll_gap(Duration::from_secs(5)),
        ),
    ));
    let restart = {
        let (handle, config, topic) = (
            handle.clone(),
            kafka.consumer_config(&unique_name("g")),
            topic.clone(),
        );
        RestartConsumer::new(move || {
            let driver = Driver::with_handle(
                config.clone(),
                DriverConfig::new([topic.as_str()]),
                handler_fn(|_: &Record<'_>| async { Ok(Outcome::Processed) }),
                handle.clone(),
            );
            Box::pin(async move {
                tokio::spawn(driver.run());
                Ok(())
            })
        })
    };
    let path = audit_path();
    let engine = Engine::new(quick())
        .unwrap()
        .monitor(monitor)
        .playbook(Playbook {
            matches: "consumer_liveness".into(),
            actions: vec![Arc::new(restart)],
        })
        .audit(AuditTrail::open(&path).unwrap());

    assert_eq!(
        engine.tick().await,
        vec![EngineEvent::Detected {
            key: "consumer_liveness".into(),
            checks: 1
        }]
    );
    assert_eq!(
        engine.tick().await,
        vec![EngineEvent::Recovered {
            key: "consumer_liveness".into(),
            action: "restart_consumer".into()
        }]
    );
    // The restarted consumer polls: the anomaly clears.
    let mut cleared = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if engine.tick().await.contains(&EngineEvent::Cleared {
            key: "consumer_liveness".into(),
        }) {
            cleared = true;
            break;
        }
    }
    assert!(
        cleared,
        "the consumer never came back: {:?}",
        handle.stats()
    );
    handle.shutdown();

    let trail = AuditTrail::read(&path).unwrap();
    let decisions: Vec<(&str, Option<&str>)> = trail
        .iter()
        .map(|r| (r.decision.as_str(), r.result.as_deref()))
        .collect();
    assert_eq!(
        decisions,
        vec![
            ("detected", None),
            ("act", Some("ok: consumer restarted")),
            ("cleared", None)
        ]
    );
    assert!(
        trail
            .iter()
            .all(|r| r.anomaly == "consumer_liveness" && r.monitor == "consumer" && !r.dry_run)
    );
    std::fs::remove_file(path).ok();
}

/// A loopback webhook receiver: every JSON body posted to it.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    use axum::routing::post;
    let received: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let app = {
        let received = received.clone();
        axum::Router::new().route(
            "/hook",
            post(move |body: String| {
                let received = received.clone();
                async move {
                    received
                        .lock()
                        .unwrap()
                        .push(serde_json::from_str(&body).unwrap());
                    "ok"
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_down_that_does_not_recover_escalates_to_the_webhook() {
    let kafka = MockKafka::start(3).unwrap();
    let cluster = Arc::new(
        kafka
            .cluster()
            .unwrap()
            .with_timeout(Duration::from_secs(3)),
    );
    let monitor: Arc<dyn Monitor> = Arc::new(
        HealthMonitor::new(
            "cluster",
            HealthChecker::new().probe(BrokerConnectivityProbe::new(cluster).expect_brokers(3)),
        )
        .anomalous_at(kafka_ops_health::Status::Degraded),
    );
    let (url, received) = webhook_receiver().await;
    let path = audit_path();
    let engine = Engine::new(quick())
        .unwrap()
        .monitor(monitor.clone())
        .playbook(Playbook {
            matches: "broker_*".into(),
            actions: vec![Arc::new(WaitAndRecheck::new(
                Duration::from_millis(100),
                monitor,
            ))],
        })
        .notifier(Arc::new(
            WebhookNotifier::new(url, Duration::from_secs(5)).unwrap(),
        ))
        .audit(AuditTrail::open(&path).unwrap());
    assert_eq!(engine.tick().await, vec![], "all brokers up");

    kafka.broker_down(2).unwrap();
    let mut events = Vec::new();
    for _ in 0..100 {
        events = engine.tick().await;
        if events
            .iter()
            .any(|e| matches!(e, EngineEvent::Escalated { .. }))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        events,
        vec![EngineEvent::Escalated {
            key: "broker_connectivity".into()
        }]
    );
    let bodies = received.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["level"], "critical");
    assert_eq!(bodies[0]["anomaly"], "broker_connectivity");
    let text = bodies[0]["text"].as_str().unwrap();
    assert!(
        text.contains("2 of 3 brokers up") && text.contains("escalating"),
        "{text}"
    );

    let trail = AuditTrail::read(&path).unwrap();
    let attempts: Vec<_> = trail
        .iter()
        .filter(|r| r.decision == "act")
        .map(|r| r.attempt)
        .collect();
    assert_eq!(
        attempts,
        vec![Some(1), Some(2), Some(3)],
        "the first try and two retries"
    );
    assert_eq!(trail.last().unwrap().decision, "escalate");
    std::fs::remove_file(path).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_arrive_by_mail() {
    // A real SMTP server on loopback (Python's aiosmtpd, installed by the test command), which
    // prints each message it receives.
    let port = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let mut server = tokio::process::Command::new("python3")
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 must be installed");
    let mut ready = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        if let Some(status) = server.try_wait().unwrap() {
            panic!(
                "aiosmtpd exited ({status}): it must be installed (python3 -m pip install aiosmtpd)"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "aiosmtpd did not start listening");
    let notifier = SmtpNotifier::new(&SmtpSettings {
        host: "127.0.0.1".into(),
        port,
        security: "plain".into(),
        username: None,
        password: None,
        from: "kafka-ops <kafka-ops@example.com>".into(),
        to: vec!["oncall@example.com".into()],
    })
    .unwrap();
    notifier
        .notify(&Notification {
            level: Severity::Critical,
            title: "kafka-ops: consumer_liveness".into(),
            text: "billing stopped polling; restart failed 4 times".into(),
            anomaly: "consumer_liveness".into(),
            monitor: "billing".into(),
            time: Timestamp::from_millis(1_795_420_800_000),
        })
        .await
        .unwrap();
    server.start_kill().unwrap();
    let output = server.wait_with_output().await.unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("Subject: [critical] kafka-ops: consumer_liveness"),
        "{printed}"
    );
    assert!(printed.contains("billing stopped polling"), "{printed}");
    assert!(printed.contains("oncall@example.com"), "{printed}");
}
