//! The chaos suite on librdkafka's mock cluster: the reference consumer, as a process, over
//! 100 000 orders (10% repeated event ids, 1% poison, 5% of downstream calls failing) while the
//! cluster misbehaves — brokers going down and up, Produce and OffsetCommit requests failing,
//! responses delayed — and the consumer itself is killed with SIGKILL at least ten times at
//! random points and restarted. See `chaos_support` for the run and what it proves;
//! `chaos_real_kafka.rs` runs it on the real cluster with its nodes SIGKILLed.
//!
//! The mock cluster lives in this process, so killing the consumer does not take it down.
//! `KAFKA_OPS_CHAOS_RECORDS` and `KAFKA_OPS_CHAOS_KILLS` scale the run (defaults 100 000 and 12).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use kafka_ops_core::testkit::MockKafka;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

mod chaos_support;
use chaos_support::{Plan, Protocol, Target, run, setting};

/// What the fault injector did.
#[derive(Debug, Default)]
struct Faults {
    broker_outages: AtomicU64,
    produce_error_bursts: AtomicU64,
    commit_error_bursts: AtomicU64,
    slow_brokers: AtomicU64,
}

/// Two to five errors drawn from `errors`, for the next requests of one API.
fn burst(rng: &mut fastrand::Rng, errors: &[RDKafkaRespErr]) -> Vec<RDKafkaRespErr> {
    (0..rng.usize(2..6))
        .map(|_| errors[rng.usize(..errors.len())])
        .collect()
}

/// Injects a random fault every 0.3–1.5 s until `stop`, then leaves the cluster healthy.
async fn inject_faults(
    kafka: Arc<MockKafka>,
    stop: Arc<AtomicBool>,
    faults: Arc<Faults>,
    seed: u64,
) {
    use RDKafkaRespErr::*;
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(rng.u64(300..1_500))).await;
        let broker = rng.i32(1..=kafka.brokers());
        match rng.u8(0..4) {
            0 => {
                kafka.broker_down(broker).unwrap();
                tokio::time::sleep(Duration::from_millis(rng.u64(300..1_500))).await;
                kafka.broker_up(broker).unwrap();
                faults.broker_outages.fetch_add(1, Ordering::SeqCst);
            }
            1 => {
                let errors = [
                    RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                    RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                    RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                ];
                kafka.request_errors(RDKafkaApiKey::Produce, &burst(&mut rng, &errors));
                faults.produce_error_bursts.fetch_add(1, Ordering::SeqCst);
            }
            2 => {
                let errors = [
                    RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                    RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
                    RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
                    RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
                ];
                kafka.request_errors(RDKafkaApiKey::OffsetCommit, &burst(&mut rng, &errors));
                faults.commit_error_bursts.fetch_add(1, Ordering::SeqCst);
            }
            _ => {
                kafka
                    .broker_round_trip_time(broker, Duration::from_millis(rng.u64(20..200)))
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(rng.u64(500..2_000))).await;
                kafka
                    .broker_round_trip_time(broker, Duration::ZERO)
                    .unwrap();
                faults.slow_brokers.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_order_ends_exactly_once_under_chaos() {
    let records = setting("KAFKA_OPS_CHAOS_RECORDS", 100_000);
    let kills = setting("KAFKA_OPS_CHAOS_KILLS", 12).max(10);
    let seed = setting("KAFKA_OPS_CHAOS_SEED", fastrand::u64(..));
    println!("chaos: seed {seed} (KAFKA_OPS_CHAOS_SEED repeats the fault schedule)");
    let kafka = Arc::new(MockKafka::start(3).unwrap());
    let faults = Arc::new(Faults::default());
    let injector = {
        let (kafka, faults) = (kafka.clone(), faults.clone());
        Box::new(move |stop: Arc<AtomicBool>| {
            Box::pin(async move {
                inject_faults(kafka, stop, faults.clone(), seed).await;
                format!(
                    "{} broker outages, {} Produce error bursts, {} OffsetCommit error bursts, {} slow brokers",
                    faults.broker_outages.load(Ordering::SeqCst),
                    faults.produce_error_bursts.load(Ordering::SeqCst),
                    faults.commit_error_bursts.load(Ordering::SeqCst),
                    faults.slow_brokers.load(Ordering::SeqCst),
                )
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>
        })
    };
    run(
        Target::Mock(kafka),
        Plan {
            records,
            kills,
            seed,
            protocol: Protocol::Classic,
        },
        injector,
    )
    .await;
}
