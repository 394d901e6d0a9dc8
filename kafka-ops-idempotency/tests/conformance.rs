//! Every store passes the same conformance suite: memory and redb on a manual clock, Redis and
//! PostgreSQL against the running servers (their leases run on server time).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use kafka_ops_core::ManualClock;
use kafka_ops_idempotency::conformance::{
    LONG_LIVED_KEYS, RealTime, postgres_client, postgres_store, redis_url, run_all,
};
use kafka_ops_idempotency::store::memory::MemoryStore;
use kafka_ops_idempotency::store::redb::RedbStore;
use kafka_ops_idempotency::store::redis::RedisStore;

#[tokio::test(flavor = "multi_thread")]
async fn the_memory_store_conforms() {
    let clock = Arc::new(ManualClock::new());
    run_all(
        Arc::new(MemoryStore::with_clock(10_000, clock.clone())),
        clock.as_ref(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_redb_store_conforms_and_survives_a_restart() {
    let path = std::env::temp_dir().join(format!(
        "{}.redb",
        kafka_ops_core::testkit::unique_name("idem")
    ));
    let clock = Arc::new(ManualClock::new());
    let store = RedbStore::open_with_clock(&path, clock.clone()).unwrap();
    run_all(Arc::new(store.clone()), clock.as_ref()).await;

    // What was completed before a restart is still a duplicate after it.
    use kafka_ops_idempotency::store::{Begin, IdempotencyStore, PayloadDigest, StoredOutcome};
    let digest = PayloadDigest::of(Some(b"order"));
    let Begin::Acquired(token) = store
        .begin("restart:key", digest, std::time::Duration::from_secs(60))
        .await
        .unwrap()
    else {
        panic!("not acquired");
    };
    let outcome = StoredOutcome {
        outcome: kafka_ops_core::handler::Outcome::Processed,
        result: None,
    };
    store
        .complete(
            "restart:key",
            token,
            &outcome,
            std::time::Duration::from_secs(3600),
        )
        .await
        .unwrap();
    drop(store);
    let reopened = RedbStore::open_with_clock(&path, clock).unwrap();
    assert_eq!(
        reopened
            .begin("restart:key", digest, std::time::Duration::from_secs(60))
            .await
            .unwrap(),
        Begin::Duplicate(outcome)
    );
    drop(reopened);
    std::fs::remove_file(path).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_redis_store_conforms() {
    let store = RedisStore::connect(&redis_url())
        .await
        .expect("Redis must be running (the test command checks it)");
    run_all(Arc::new(store), &RealTime).await;
    // The keys the suite completed for a century go, so runs do not pile them up.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let kept: Vec<String> = redis::cmd("KEYS")
        .arg(format!("kafka-ops:idem:{LONG_LIVED_KEYS}*"))
        .query_async(&mut connection)
        .await
        .unwrap();
    if !kept.is_empty() {
        let _: u64 = redis::cmd("DEL")
            .arg(&kept)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_postgres_store_conforms() {
    let store = postgres_store().await;
    run_all(Arc::new(store.clone()), &RealTime).await;
    // Expired rows can be purged.
    store.purge_expired().await.unwrap();
    // The rows the suite completed for a century go, so runs do not pile them up.
    postgres_client()
        .await
        .execute(
            "DELETE FROM kafka_ops_idempotency WHERE starts_with(key, $1)",
            &[&LONG_LIVED_KEYS],
        )
        .await
        .unwrap();
}
