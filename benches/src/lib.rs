//! What the side-by-side benchmarks share; each benchmark is its own target in `benches/`.

use kafka_ops_core::testkit::{MockKafka, TestProducer, TestRecord};

/// The number in environment variable `name`, or `default` when it is unset or not a number.
pub fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes `records` records to `topic`, record `i` being `record(i)`, in batches of 50 000 so
/// the producer's queue never fills, lingering so the broker gets large message sets;
/// panics on any failure (a benchmark cannot go on).
pub fn fill(
    runtime: &tokio::runtime::Runtime,
    kafka: &MockKafka,
    topic: &str,
    records: u64,
    record: impl Fn(u64) -> TestRecord,
) {
    const BATCH: u64 = 50_000;
    let producer =
        TestProducer::with_linger(kafka.bootstrap(), std::time::Duration::from_millis(50))
            .unwrap_or_else(|error| panic!("a producer for {topic}: {error}"));
    runtime.block_on(async {
        let mut sent = 0;
        while sent < records {
            let n = BATCH.min(records - sent);
            if let Err(error) = producer.produce(topic, (sent..sent + n).map(&record)).await {
                panic!("filling {topic}: {error}");
            }
            sent += n;
        }
    });
}
