//! Purging the PostgreSQL store against the running server: exactly the rows past their time
//! go (completed keys past their TTL, leases ended a day ago, also rows written before leases
//! carried their purge time), and the purge reads one index, not the whole table.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use kafka_ops_core::testkit::unique_name;
use kafka_ops_idempotency::conformance::{postgres_client, postgres_store as store};
use kafka_ops_idempotency::store::postgres::PURGE_EXPIRED;
use kafka_ops_idempotency::store::{Begin, IdempotencyStore, PayloadDigest};

/// Writes a row as the store (or an earlier version of it) leaves it; times are SQL
/// expressions.
async fn row(
    client: &tokio_postgres::Client,
    key: &str,
    state: &str,
    lease_until: &str,
    expires_at: &str,
) {
    client
        .execute(
            &format!(
                "INSERT INTO kafka_ops_idempotency (key, state, token, digest, lease_until, expires_at)
                 VALUES ($1, $2, 7, '\\x00'::bytea, {lease_until}, {expires_at})"
            ),
            &[&key, &state],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_the_rows_past_their_time_are_purged() {
    let store = store().await;
    let client = postgres_client().await;
    let run = unique_name("purge");
    let key = |name: &str| format!("{run}:{name}");
    let cases = [
        (
            "done-expired",
            "completed",
            "NULL",
            "now() - interval '1 second'",
            false,
        ),
        (
            "done-live",
            "completed",
            "NULL",
            "now() + interval '1 hour'",
            true,
        ),
        (
            "lease-ended-long-ago",
            "in_progress",
            "now() - interval '25 hours'",
            "now() - interval '1 hour'",
            false,
        ),
        (
            "lease-ended-recently",
            "in_progress",
            "now() - interval '1 hour'",
            "now() + interval '23 hours'",
            true,
        ),
        (
            "old-format-lease-ended-long-ago",
            "in_progress",
            "now() - interval '25 hours'",
            "NULL",
            false,
        ),
        (
            "old-format-lease-ended-recently",
            "in_progress",
            "now() - interval '1 hour'",
            "NULL",
            true,
        ),
    ];
    for (name, state, lease_until, expires_at, _) in &cases {
        row(&client, &key(name), state, lease_until, expires_at).await;
    }
    // Other tests may purge at the same time: which rows are left is the answer, not the count.
    store.purge_expired().await.unwrap();
    for (name, _, _, _, kept) in &cases {
        let found = client
            .query_opt(
                "SELECT 1 FROM kafka_ops_idempotency WHERE key = $1",
                &[&key(name)],
            )
            .await
            .unwrap()
            .is_some();
        assert_eq!(found, *kept, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_carries_the_time_its_row_may_be_purged() {
    let store = store().await;
    let client = postgres_client().await;
    let key = unique_name("purge-lease");
    let digest = PayloadDigest::of(Some(b"{}"));
    let begin = store
        .begin(&key, digest, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(matches!(begin, Begin::Acquired(_)), "{begin:?}");
    let row = client
        .query_one(
            "SELECT expires_at - lease_until = interval '1 day' FROM kafka_ops_idempotency WHERE key = $1",
            &[&key],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
}

/// The plan PostgreSQL makes for `statement` with sequential scans priced out: a statement an
/// index can serve gets an index plan, one that needs the whole table still a sequential scan.
async fn plan(client: &tokio_postgres::Client, statement: &str) -> String {
    let lines: Vec<String> = client
        .query(&format!("EXPLAIN {statement}"), &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    lines.join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_purge_reads_an_index_not_the_table() {
    store().await;
    let client = postgres_client().await;
    client
        .batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    let purge = plan(&client, PURGE_EXPIRED).await;
    assert!(!purge.contains("Seq Scan"), "{purge}");
    assert!(
        purge.contains("kafka_ops_idempotency_expires_at"),
        "{purge}"
    );
    // The purge as it was (an `OR` over the lease column, which no index holds) reads the
    // whole table even so: the check above can tell the two apart.
    let before = plan(
        &client,
        "DELETE FROM kafka_ops_idempotency
         WHERE (state = 'completed' AND expires_at <= now())
            OR (state = 'in_progress' AND lease_until <= now() - interval '1 day')",
    )
    .await;
    assert!(before.contains("Seq Scan"), "{before}");
}
