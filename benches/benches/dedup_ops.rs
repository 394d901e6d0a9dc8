//! The idempotency hot path, one operation at a time: what the layer pays per record before
//! and after the handler.
//!
//! ```text
//! cargo bench -p kafka-ops-benches --bench dedup_ops
//! ```
//!
//! - key: the `event-id` header read and namespaced; the 128-bit digest of a 1 KiB payload;
//! - memory store: `begin` + `complete` of a new key, and `begin` of a completed one (the
//!   duplicate answer), in a store already holding 1 M keys;
//! - layer: a duplicate answered by the offset fast path, without the store.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kafka_ops_core::handler::Outcome;
use kafka_ops_core::handler::{Handler, HandlerBuilder, handler_fn};
use kafka_ops_core::{Offset, Record};
use kafka_ops_idempotency::IdempotencyLayer;
use kafka_ops_idempotency::keys::{HeaderKey, KeyPolicy};
use kafka_ops_idempotency::store::memory::MemoryStore;
use kafka_ops_idempotency::store::{Begin, IdempotencyStore, PayloadDigest, StoredOutcome};

const LEASE: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(3600);
/// Operations per measured iteration, so the runtime's `block_on` is not what is timed.
const BATCH: u64 = 1_000;

fn done() -> StoredOutcome {
    StoredOutcome {
        outcome: Outcome::Processed,
        result: None,
    }
}

fn keys_and_digests(c: &mut Criterion) {
    let mut group = c.benchmark_group("key");
    group.throughput(Throughput::Elements(1));
    let payload = vec![b'x'; 1024];
    let record = Record::new("orders", 0, Offset::ZERO)
        .with_value(payload.clone())
        .with_header("event-id", b"evt-000000042".to_vec());
    let policy = KeyPolicy::new("billing", HeaderKey("event-id".into()));
    group.bench_function("header_key", |b| b.iter(|| policy.decide(&record).unwrap()));
    group.bench_function("digest_1KiB", |b| {
        b.iter(|| PayloadDigest::of(Some(&payload)))
    });
    group.finish();
}

async fn fill(store: &MemoryStore, digest: PayloadDigest) {
    for i in 0..1_000_000 {
        let key = format!("svc:evt-{i}");
        let Begin::Acquired(token) = store.begin(&key, digest, LEASE).await.unwrap() else {
            panic!("not acquired");
        };
        store.complete(&key, token, &done(), TTL).await.unwrap();
    }
}

fn memory_store(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // Two stores of 1 M completed keys: new keys go to one, duplicates are asked of the other
    // (which new keys would otherwise push out).
    let digest = PayloadDigest::of(Some(b"{}"));
    let filled = || {
        let store = MemoryStore::new(100_000_000);
        runtime.block_on(fill(&store, digest));
        store
    };
    let (store, duplicates) = (filled(), filled());
    let mut group = c.benchmark_group("memory_store");
    group.throughput(Throughput::Elements(1));
    let mut next = 1_000_000_u64;
    group.bench_function("begin_complete_new_key", |b| {
        b.iter(|| {
            next += 1;
            let key = format!("svc:evt-{next}");
            runtime.block_on(async {
                let Begin::Acquired(token) = store.begin(&key, digest, LEASE).await.unwrap() else {
                    panic!("not acquired");
                };
                store.complete(&key, token, &done(), TTL).await.unwrap();
            });
        })
    });
    let mut seen = 0_u64;
    group.bench_function("begin_duplicate", |b| {
        b.iter(|| {
            seen = (seen + 7_919) % 1_000_000;
            let key = format!("svc:evt-{seen}");
            let answer = runtime
                .block_on(duplicates.begin(&key, digest, LEASE))
                .unwrap();
            assert!(matches!(answer, Begin::Duplicate(_)));
        })
    });
    group.finish();
}

fn layer_fast_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let handler = HandlerBuilder::new()
        .layer(IdempotencyLayer::new(
            Arc::new(MemoryStore::new(100_000)),
            KeyPolicy::new("billing", HeaderKey("event-id".into())),
        ))
        .handler(handler_fn(|_record: &Record<'_>| async {
            Ok(Outcome::Processed)
        }));
    let records: Vec<Record<'static>> = (0..10_000)
        .map(|i| {
            Record::new("orders", 0, Offset::new(i).unwrap())
                .with_value(b"{}".to_vec())
                .with_header("event-id", format!("evt-{i}").into_bytes())
        })
        .collect();
    runtime.block_on(async {
        for record in &records {
            handler.handle(record).await.unwrap();
        }
    });
    let mut group = c.benchmark_group("layer");
    group.throughput(Throughput::Elements(BATCH));
    let mut i = 0;
    group.bench_function("redelivered_offset", |b| {
        b.iter(|| {
            runtime.block_on(async {
                for _ in 0..BATCH {
                    i = (i + 1) % records.len();
                    let outcome = handler.handle(&records[i]).await.unwrap();
                    assert_eq!(outcome, Outcome::Duplicate);
                }
            });
        })
    });
    group.finish();
}

criterion_group!(benches, keys_and_digests, memory_store, layer_fast_path);
criterion_main!(benches);
