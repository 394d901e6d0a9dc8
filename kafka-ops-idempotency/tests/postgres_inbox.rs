//! The PostgreSQL inbox against the running server: a completion made inside the caller's
//! transaction commits or rolls back with the caller's own writes, and a stale token is refused,
//! through a plain client (`complete_in`) and through a pooled one (`complete_in_pooled`), for
//! keys the table holds as they are and for keys it holds mapped.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use kafka_ops_core::handler::{Handler, HandlerBuilder, HandlerError, Outcome, handler_fn};
use kafka_ops_core::testkit::unique_name;
use kafka_ops_core::{Offset, Record};
use kafka_ops_idempotency::conformance::{
    postgres_client, postgres_config, postgres_store as store,
};
use kafka_ops_idempotency::keys::{HeaderKey, KeyPolicy};
use kafka_ops_idempotency::store::postgres::PostgresStore;
use kafka_ops_idempotency::store::postgres::deadpool_postgres::{Manager, Pool};
use kafka_ops_idempotency::store::{
    Begin, FencingToken, IdempotencyStore, PayloadDigest, StoredOutcome, storage_key,
};
use kafka_ops_idempotency::{Claim, IdempotencyError, IdempotencyLayer, current_claim};

const LEASE: Duration = Duration::from_secs(60);

fn digest() -> PayloadDigest {
    PayloadDigest::of(Some(b"{\"order\":7}"))
}

fn processed() -> StoredOutcome {
    StoredOutcome {
        outcome: Outcome::Processed,
        result: None,
    }
}

/// A pool of the application's own, as a handler on deadpool has.
fn application_pool() -> Pool {
    let manager = Manager::new(postgres_config().parse().unwrap(), tokio_postgres::NoTls);
    Pool::builder(manager).max_size(2).build().unwrap()
}

/// Takes a fresh key and returns its claim.
async fn claim(store: &PostgresStore, name: &str) -> Claim {
    let key = unique_name(name);
    let Begin::Acquired(token) = store.begin(&key, digest(), LEASE).await.unwrap() else {
        panic!("a fresh key was not acquired");
    };
    Claim {
        key,
        token,
        ttl: Duration::from_secs(3600),
    }
}

/// A table of the handler's side effects.
async fn effects_table(client: &tokio_postgres::Client) -> String {
    let table = unique_name("inbox_effects").replace('-', "_");
    client
        .batch_execute(&format!("CREATE TABLE {table} (event_id text PRIMARY KEY)"))
        .await
        .unwrap();
    table
}

async fn effects(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pooled_completion_commits_and_rolls_back_with_the_handlers_writes() {
    let store = store().await;
    let pool = application_pool();
    let mut client = pool.get().await.unwrap();
    let table = effects_table(&client).await;
    let insert = format!("INSERT INTO {table} (event_id) VALUES ($1)");

    // Rolled back: neither the write nor the mark happened; the key is still held.
    let rolled_back = claim(&store, "inbox-rollback").await;
    let tx = client.transaction().await.unwrap();
    tx.execute(&insert, &[&rolled_back.key]).await.unwrap();
    store
        .complete_in_pooled(&tx, &rolled_back, &processed())
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(effects(&client, &table).await, 0);
    assert!(matches!(
        store
            .begin(&rolled_back.key, digest(), LEASE)
            .await
            .unwrap(),
        Begin::InProgress { .. }
    ));

    // Committed, many times on the same connection (its cached statement): both happened.
    for round in 0..3 {
        let committed = claim(&store, &format!("inbox-commit-{round}")).await;
        let tx = client.transaction().await.unwrap();
        tx.execute(&insert, &[&committed.key]).await.unwrap();
        store
            .complete_in_pooled(&tx, &committed, &processed())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            store.begin(&committed.key, digest(), LEASE).await.unwrap(),
            Begin::Duplicate(processed())
        );
    }
    assert_eq!(effects(&client, &table).await, 3);
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_token_is_refused_in_the_callers_transaction_pooled_or_not() {
    let store = store().await;
    let pool = application_pool();
    let mut pooled = pool.get().await.unwrap();
    let mut plain = postgres_client().await;
    let table = effects_table(&plain).await;
    let insert = format!("INSERT INTO {table} (event_id) VALUES ($1)");

    let held = claim(&store, "inbox-stale").await;
    let stale = Claim {
        token: FencingToken(held.token.0.wrapping_add(1)),
        ..held.clone()
    };

    let tx = pooled.transaction().await.unwrap();
    tx.execute(&insert, &[&stale.key]).await.unwrap();
    let refused = store.complete_in_pooled(&tx, &stale, &processed()).await;
    assert!(
        matches!(&refused, Err(IdempotencyError::StaleToken { key }) if *key == stale.key),
        "{refused:?}"
    );
    tx.rollback().await.unwrap();

    let tx = plain.transaction().await.unwrap();
    tx.execute(&insert, &[&stale.key]).await.unwrap();
    let refused = store.complete_in(&tx, &stale, &processed()).await;
    assert!(
        matches!(&refused, Err(IdempotencyError::StaleToken { key }) if *key == stale.key),
        "{refused:?}"
    );
    tx.rollback().await.unwrap();

    // The holder's own token still completes, through the plain client.
    let tx = plain.transaction().await.unwrap();
    tx.execute(&insert, &[&held.key]).await.unwrap();
    store.complete_in(&tx, &held, &processed()).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(effects(&plain, &table).await, 1);
    assert_eq!(
        store.begin(&held.key, digest(), LEASE).await.unwrap(),
        Begin::Duplicate(processed())
    );
    plain
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

/// The inbox as the layer drives it: the handler stores its outcome with a result in its own
/// transaction, then the layer completes the key again (without a result). The stored result
/// is what a duplicate gets back.
#[tokio::test(flavor = "multi_thread")]
async fn the_layers_completion_after_the_inbox_keeps_the_stored_result() {
    let store = store().await;
    let pool = application_pool();
    let receipt = StoredOutcome {
        outcome: Outcome::Processed,
        result: Some(b"receipt-7".to_vec()),
    };
    let handler = {
        let (store, receipt) = (store.clone(), receipt.clone());
        handler_fn(move |_record: &Record<'_>| {
            let (store, pool, receipt) = (store.clone(), pool.clone(), receipt.clone());
            async move {
                let claim = current_claim().expect("inside the idempotent layer");
                let mut client = pool.get().await.map_err(HandlerError::transient)?;
                let tx = client
                    .transaction()
                    .await
                    .map_err(HandlerError::transient)?;
                store
                    .complete_in_pooled(&tx, &claim, &receipt)
                    .await
                    .map_err(HandlerError::transient)?;
                tx.commit().await.map_err(HandlerError::transient)?;
                Ok(Outcome::Processed)
            }
        })
    };
    let namespace = unique_name("inbox-result");
    let handler = HandlerBuilder::new()
        .layer(IdempotencyLayer::new(
            Arc::new(store.clone()),
            KeyPolicy::new(namespace.clone(), HeaderKey("event-id".into())),
        ))
        .handler(handler);
    let event = Record::new("orders", 0, Offset::ZERO)
        .with_value(b"{\"order\":7}".to_vec())
        .with_header("event-id", b"evt-7".to_vec());
    assert_eq!(handler.handle(&event).await.unwrap(), Outcome::Processed);
    assert_eq!(
        store
            .begin(&format!("{namespace}:evt-7"), digest(), LEASE)
            .await
            .unwrap(),
        Begin::Duplicate(receipt)
    );
}

/// Keys PostgreSQL's `text` and primary-key index cannot hold as they are (NUL bytes; 3 000
/// bytes) complete in the caller's transaction, pooled or not, without aborting it; a stale
/// token is refused naming the caller's key. The rows are keyed as `storage_key` maps the keys,
/// and an ordinary key is stored as it is.
#[tokio::test(flavor = "multi_thread")]
async fn keys_no_column_holds_as_they_are_complete_in_the_callers_transaction() {
    let store = store().await;
    let pool = application_pool();
    let mut pooled = pool.get().await.unwrap();
    let mut plain = postgres_client().await;
    let nul = format!("{}:\0\0\0\0\0\0\0*", unique_name("inbox-nul"));
    let long = format!("{}:{}", unique_name("inbox-long"), "x".repeat(3000));
    let plain_key = unique_name("inbox-plain");
    for (round, key) in [&nul, &long, &plain_key].into_iter().enumerate() {
        let Begin::Acquired(token) = store.begin(key, digest(), LEASE).await.unwrap() else {
            panic!("{key:?} was not acquired");
        };
        let held = Claim {
            key: key.clone(),
            token,
            ttl: Duration::from_secs(3600),
        };
        let stale = Claim {
            token: FencingToken(token.0.wrapping_add(1)),
            ..held.clone()
        };
        let receipt = StoredOutcome {
            outcome: Outcome::Processed,
            result: Some(format!("receipt-{round}").into_bytes()),
        };
        let pooled_tx = pooled.transaction().await.unwrap();
        let refused = store.complete_in_pooled(&pooled_tx, &stale, &receipt).await;
        assert!(
            matches!(&refused, Err(IdempotencyError::StaleToken { key: named }) if named == key),
            "{refused:?}"
        );
        // The transaction is still usable: the statement did not fail.
        pooled_tx.execute("SELECT 1", &[]).await.unwrap();
        if round % 2 == 0 {
            store
                .complete_in_pooled(&pooled_tx, &held, &receipt)
                .await
                .unwrap();
            pooled_tx.commit().await.unwrap();
        } else {
            pooled_tx.rollback().await.unwrap();
            let tx = plain.transaction().await.unwrap();
            store.complete_in(&tx, &held, &receipt).await.unwrap();
            tx.commit().await.unwrap();
        }
        assert_eq!(
            store.begin(key, digest(), LEASE).await.unwrap(),
            Begin::Duplicate(receipt)
        );
        let stored = storage_key(key);
        assert_eq!(stored.as_ref() == key.as_str(), key == &plain_key);
        let rows: i64 = plain
            .query_one(
                "SELECT count(*) FROM kafka_ops_idempotency WHERE key = $1",
                &[&stored.as_ref()],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 1, "{stored}");
    }
}
