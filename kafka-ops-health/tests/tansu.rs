//! Probes and the restart gate against a real broker process (tansu), which reports a real
//! controller (the mock cluster does not).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use kafka_ops_core::kafka::cluster::KafkaCluster;
use kafka_ops_core::testkit::{Tansu, unique_name};
use kafka_ops_health::probes::{BrokerConnectivityProbe, ControllerProbe};
use kafka_ops_health::{HealthProbe, RestartGateOptions, RestartRefusal, Status, safe_to_restart};

async fn start() -> Tansu {
    tokio::task::spawn_blocking(Tansu::start)
        .await
        .unwrap()
        .expect("tansu must be installed and start (the README's test command installs it)")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_broker_is_its_own_controller_and_may_not_restart() {
    let tansu = start().await;
    let cluster = Arc::new(
        KafkaCluster::from_config(&tansu.client_config())
            .unwrap()
            .with_timeout(Duration::from_secs(10)),
    );
    let controller = ControllerProbe::new(cluster.clone()).check().await.unwrap();
    assert_eq!(controller.status, Status::Healthy, "{controller:?}");
    let id = controller.details["controller"].as_i64().unwrap() as i32;

    let connectivity = BrokerConnectivityProbe::new(cluster.clone())
        .expect_brokers(1)
        .check()
        .await
        .unwrap();
    assert_eq!(connectivity.status, Status::Healthy, "{connectivity:?}");

    // A topic whose only replica is this broker.
    let topic = unique_name("gate");
    tansu.create_topic(&topic, 2).await.unwrap();
    let verdict = safe_to_restart(cluster.as_ref(), id, RestartGateOptions::default())
        .await
        .unwrap();
    assert!(!verdict.safe);
    assert!(
        verdict.refusals.contains(&RestartRefusal::IsController),
        "{verdict:?}"
    );
    assert!(
        verdict.refusals.iter().any(|r| matches!(
            r,
            RestartRefusal::NoInSyncReplicaElsewhere { examples, .. } if examples.iter().any(|e| e.starts_with(&topic))
        )),
        "{verdict:?}"
    );
}
