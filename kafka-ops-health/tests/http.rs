//! The HTTP endpoints, called with a real HTTP client.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kafka_ops_core::kafka::KafkaCluster;
use kafka_ops_core::kafka::client_config;
use kafka_ops_health::http::{HealthSource, install_prometheus_recorder, router, serve_on};
use kafka_ops_health::probes::BrokerConnectivityProbe;
use kafka_ops_health::{Check, HealthChecker, HealthError, HealthProbe, ProbeKind, Status};

/// A probe whose answer the test sets.
struct Switch {
    name: &'static str,
    kind: ProbeKind,
    status: Arc<Mutex<Status>>,
}

#[async_trait]
impl HealthProbe for Switch {
    fn name(&self) -> &str {
        self.name
    }
    fn kind(&self) -> ProbeKind {
        self.kind
    }
    async fn check(&self) -> Result<Check, HealthError> {
        Ok(match *self.status.lock().unwrap() {
            Status::Healthy => Check::healthy("fine"),
            Status::Degraded => Check::degraded("slow"),
            Status::Unhealthy => Check::unhealthy("down"),
        })
    }
}

async fn start(checker: HealthChecker, metrics: bool) -> String {
    let handle = metrics.then(|| install_prometheus_recorder().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(HealthSource::OnDemand(Arc::new(checker)), handle);
    tokio::spawn(serve_on(listener, app));
    format!("http://{addr}")
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn status_codes_follow_liveness_and_readiness() {
    let live = Arc::new(Mutex::new(Status::Healthy));
    let ready = Arc::new(Mutex::new(Status::Healthy));
    let checker = HealthChecker::new()
        .probe(Switch {
            name: "loop",
            kind: ProbeKind::Liveness,
            status: live.clone(),
        })
        .probe(Switch {
            name: "downstream",
            kind: ProbeKind::Readiness,
            status: ready.clone(),
        });
    let base = start(checker, true).await;

    assert_eq!(get(&format!("{base}/livez")).await.0, 200);
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200);

    // Degraded is still serving: 200.
    *ready.lock().unwrap() = Status::Degraded;
    let (code, body) = get(&format!("{base}/readyz")).await;
    assert_eq!((code, body.as_str()), (200, r#"{"status":"degraded"}"#));

    // A readiness failure fails readiness, not liveness.
    *ready.lock().unwrap() = Status::Unhealthy;
    assert_eq!(get(&format!("{base}/readyz")).await.0, 503);
    assert_eq!(get(&format!("{base}/livez")).await.0, 200);
    let (code, body) = get(&format!("{base}/health")).await;
    assert_eq!(code, 503);
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["status"], "unhealthy");
    assert_eq!(report["live"], "healthy");
    assert_eq!(report["probes"][1]["name"], "downstream");
    assert_eq!(report["probes"][1]["message"], "down");

    // A liveness failure fails both.
    *live.lock().unwrap() = Status::Unhealthy;
    *ready.lock().unwrap() = Status::Healthy;
    assert_eq!(get(&format!("{base}/livez")).await.0, 503);
    assert_eq!(get(&format!("{base}/readyz")).await.0, 503);

    let (code, metrics) = get(&format!("{base}/metrics")).await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains(r#"kafka_ops_health_status{probe="loop"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("kafka_ops_health_probe_duration_seconds"),
        "{metrics}"
    );
}

/// A probe that takes its time.
struct Slow(ProbeKind);

#[async_trait]
impl HealthProbe for Slow {
    fn name(&self) -> &str {
        "slow"
    }
    fn kind(&self) -> ProbeKind {
        self.0
    }
    async fn check(&self) -> Result<Check, HealthError> {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(Check::healthy("late"))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn liveness_on_demand_waits_for_no_other_probe() {
    let checker = HealthChecker::new()
        .probe(Switch {
            name: "loop",
            kind: ProbeKind::Liveness,
            status: Arc::new(Mutex::new(Status::Healthy)),
        })
        .probe(Slow(ProbeKind::Readiness));
    let base = start(checker, false).await;
    let livez = tokio::time::timeout(Duration::from_secs(1), get(&format!("{base}/livez")))
        .await
        .expect("/livez answers without waiting for the readiness probe");
    assert_eq!(livez.0, 200);
    // /readyz runs the readiness probe too.
    let (code, _) = get(&format!("{base}/readyz")).await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_appears_in_any_response() {
    const SECRET: &str = "sasl-hunter2-not-for-http";
    let mut config = client_config("127.0.0.1:1");
    config
        .set("security.protocol", "sasl_plaintext")
        .set("sasl.mechanism", "PLAIN")
        .set("sasl.username", "svc")
        .set("sasl.password", SECRET);
    let cluster = Arc::new(
        KafkaCluster::from_config(&config)
            .unwrap()
            .with_timeout(Duration::from_millis(500)),
    );
    let checker = HealthChecker::new()
        .with_default_timeout(Duration::from_secs(3))
        .probe(BrokerConnectivityProbe::new(cluster));
    let base = start(checker, false).await;
    for path in ["/livez", "/readyz", "/health", "/metrics"] {
        let (_, body) = get(&format!("{base}{path}")).await;
        assert!(!body.contains(SECRET), "{path} leaks the secret: {body}");
    }
    let (code, body) = get(&format!("{base}/health")).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("cluster unreachable"), "{body}");
    assert_eq!(get(&format!("{base}/metrics")).await.0, 404);
}
