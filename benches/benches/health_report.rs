//! A full health report — every built-in probe over 3 brokers, 100 partitions and 10 groups —
//! timed over repeated runs, with the number of broker requests one report costs.
//!
//! ```text
//! cargo bench -p kafka-ops-benches --bench health_report
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_ops_core::kafka::driver::DriverHandle;
use kafka_ops_core::testkit::{MockKafka, TestRecord, unique_name};
use kafka_ops_core::{Offset, TopicPartition};
use kafka_ops_health::HealthChecker;
use kafka_ops_health::probes::*;

const TOPICS: usize = 10;
const PARTITIONS: i32 = 10;
const GROUPS: usize = 10;
const ROUNDS: usize = 30;

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let kafka = MockKafka::start(3).unwrap();
    let topics: Vec<String> = (0..TOPICS).map(|t| format!("events-{t}")).collect();
    runtime.block_on(async {
        for topic in &topics {
            kafka.create_topic(topic, PARTITIONS).unwrap();
            for p in 0..PARTITIONS {
                let records =
                    (0..20).map(|i| TestRecord::keyed(format!("k{i}"), "v").to_partition(p));
                kafka.produce(topic, records).await.unwrap();
            }
        }
        kafka.create_topic("events.dlq", 1).unwrap();
        kafka
            .produce(
                "events.dlq",
                (0..50).map(|i| TestRecord::keyed(format!("k{i}"), "v")),
            )
            .await
            .unwrap();
        // Each group commits half way on one topic.
        for (g, topic) in topics.iter().enumerate().take(GROUPS) {
            let commits: Vec<_> = (0..PARTITIONS)
                .map(|p| {
                    (
                        TopicPartition::new(topic.as_str(), p),
                        Offset::new(10).unwrap(),
                    )
                })
                .collect();
            kafka.commit(&format!("group-{g}"), &commits).await.unwrap();
        }
    });
    let cluster = Arc::new(kafka.cluster().unwrap());
    let groups: Vec<String> = (0..GROUPS).map(|g| format!("group-{g}")).collect();
    let canary = unique_name("canary");
    kafka.create_topic(&canary, 1).unwrap();
    let checker = HealthChecker::new()
        .with_default_timeout(Duration::from_secs(30))
        .probe(BrokerConnectivityProbe::new(cluster.clone()).expect_brokers(3))
        .probe(ControllerProbe::new(cluster.clone()).with_configs(cluster.clone()))
        .probe(PartitionsProbe::new(cluster.clone()))
        .probe(
            RequiredTopicsProbe::new(cluster.clone())
                .topic("events-0")
                .topic("events-9"),
        )
        .probe(ConsumerLagProbe::new(cluster.clone(), groups))
        .probe(DeadLetterDepthProbe::new(
            cluster.clone(),
            DeadLetterTopics::default(),
        ))
        .probe(CanaryProbe::new(&kafka.client_config(), canary).unwrap())
        .probe(ConsumerLivenessProbe::new(Arc::new(DriverHandle::new())));

    // A warm-up round fills the metadata and leader caches, as a long-running checker's would.
    runtime.block_on(checker.check());
    kafka.track_requests();
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let report = runtime.block_on(checker.check());
        times.push(started.elapsed());
        assert_eq!(report.probes.len(), 8);
    }
    let requests = kafka.requests();
    times.sort();
    let mut by_api: BTreeMap<i16, usize> = BTreeMap::new();
    for request in &requests {
        *by_api.entry(request.api_key).or_default() += 1;
    }
    println!(
        "health report: 8 probes, 3 brokers, {} partitions, {GROUPS} groups, {ROUNDS} rounds",
        TOPICS as i32 * PARTITIONS
    );
    println!(
        "  median {:?}, p90 {:?}",
        times[ROUNDS / 2],
        times[ROUNDS * 9 / 10]
    );
    println!(
        "  broker requests per report: {:.1} (by API key: {})",
        requests.len() as f64 / ROUNDS as f64,
        by_api
            .iter()
            .map(|(api, n)| format!("{api}={:.1}", *n as f64 / ROUNDS as f64))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
