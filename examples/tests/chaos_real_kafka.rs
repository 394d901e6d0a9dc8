//! The chaos suite on the real cluster: the reference consumer with the PostgreSQL inbox over
//! 20 000 orders while one node after another is SIGKILLed and restarted (leader elections, ISR
//! shrinking and growing, coordinators moving) and the consumer itself is SIGKILLed at least
//! five times; 0 missing, 0 doubled. It runs once on the classic protocol and once on KIP-848's
//! (`group.protocol=consumer`). See `chaos_support` for the run and what it proves.
//!
//! `KAFKA_OPS_CHAOS_REAL_RECORDS` and `KAFKA_OPS_CHAOS_REAL_KILLS` scale each run (defaults
//! 20 000 and 6); `KAFKA_OPS_CHAOS_SEED` repeats a schedule.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kafka_ops_core::testkit::RealKafka;

mod chaos_support;
use chaos_support::{Injector, Plan, Protocol, Target, run, setting};

/// Kills a random node every few seconds, keeps it down a while, starts it again and waits
/// until it serves metadata; one node down at a time, so `min.insync.replicas=2` holds.
fn node_killer(kafka: Arc<RealKafka>, seed: u64) -> Injector {
    Box::new(move |stop: Arc<AtomicBool>| {
        Box::pin(async move {
            let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
            let mut kills = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(rng.u64(2_000..6_000))).await;
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let node = rng.u8(1..=3);
                kafka.stop_broker(node).await.unwrap();
                tokio::time::sleep(Duration::from_millis(rng.u64(2_000..8_000))).await;
                kafka.start_broker(node).await.unwrap();
                kills.push(node);
            }
            kafka.restore().await.unwrap();
            format!(
                "{} node kills (SIGKILL, then restarted): nodes {kills:?}",
                kills.len()
            )
        })
    })
}

async fn chaos_on_the_real_cluster(protocol: Protocol) {
    let records = setting("KAFKA_OPS_CHAOS_REAL_RECORDS", 20_000);
    let kills = setting("KAFKA_OPS_CHAOS_REAL_KILLS", 6).max(5);
    let seed = setting("KAFKA_OPS_CHAOS_SEED", fastrand::u64(..));
    println!("chaos: seed {seed} (KAFKA_OPS_CHAOS_SEED repeats the schedule)");
    let kafka = Arc::new(RealKafka::exclusive().await.unwrap());
    run(
        Target::Real(kafka.clone()),
        Plan {
            records,
            kills,
            seed,
            protocol,
        },
        node_killer(kafka, seed),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_order_ends_exactly_once_while_nodes_die_classic_protocol() {
    chaos_on_the_real_cluster(Protocol::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_order_ends_exactly_once_while_nodes_die_kip848_protocol() {
    chaos_on_the_real_cluster(Protocol::Consumer).await;
}
