//! Side-by-side: the idempotency stores against their bare peers, in the same run.
//!
//! ```text
//! cargo bench -p kafka-ops-benches --bench dedup_stores
//! ```
//!
//! - P4: the in-memory store's `begin` + `complete` over N distinct keys (default 10 M) against
//!   inserting the same keys' 128-bit hashes into a bare `HashMap<u128, _>`; prints the
//!   throughput ratio (target ≥ 0.5×) and the resident bytes per key of each.
//! - P5: the Redis store against `redis-benchmark -P 16 -t set` on the same server: many
//!   concurrent callers of `begin` + `complete` (single calls that meet a busy connection go
//!   together), and `begin_many` + `complete_many` over batches of keys; prints keys/s and the
//!   ratios to the peer's SETs/s (each key costs our store two writes, the peer one).
//! - P6: the PostgreSQL store against `pgbench` running the store's insert-on-conflict with the
//!   same number of connections on the same database: the same two paths, and the inbox path
//!   (`begin`, then `complete_in_pooled` and the caller's commit, one transaction per key).
//!
//! Each figure is the median of three rounds. BENCHMARKS.md has the measured ratios.
//!
//! Knobs (environment): `KAFKA_OPS_BENCH_KEYS` (P4 keys), `KAFKA_OPS_BENCH_REDIS_KEYS` (P5
//! keys, default 200 000), `KAFKA_OPS_BENCH_POSTGRES_KEYS` (P6 keys, default 100 000),
//! `KAFKA_OPS_REDIS_URL` and `KAFKA_OPS_POSTGRES_URL` (default the loopback servers), and
//! `KAFKA_OPS_BENCH_SKIP_MEMORY`, `_SKIP_REDIS`, `_SKIP_POSTGRES` (set: leave that part out).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_ops_core::handler::Outcome;
use kafka_ops_idempotency::Claim;
use kafka_ops_idempotency::store::memory::MemoryStore;
use kafka_ops_idempotency::store::postgres::PostgresStore;
use kafka_ops_idempotency::store::redis::RedisStore;
use kafka_ops_idempotency::store::{
    Begin, BeginRequest, Completion, FencingToken, IdempotencyStore, PayloadDigest, StoredOutcome,
};
use xxhash_rust::xxh3::xxh3_128;

const ROUNDS: usize = 3;
const LEASE: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(3600);
/// Short, so the benchmark's keys leave the shared server soon after.
const REDIS_TTL: Duration = Duration::from_secs(120);

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| v.replace('_', "").parse().expect("a count"))
        .unwrap_or(default)
}

/// Resident memory of this process, from `/proc/self/statm` (Linux).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// One side of P4: keys in, (time taken, resident bytes grown) out.
type Run = fn(&[String], PayloadDigest) -> (Duration, u64);

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn processed() -> StoredOutcome {
    StoredOutcome {
        outcome: Outcome::Processed,
        result: None,
    }
}

/// The peer: what a hand-rolled dedup set costs — hash each key, insert it with its digest.
fn bare_hashmap(keys: &[String], digest: PayloadDigest) -> (Duration, u64) {
    let before = resident_bytes();
    let started = Instant::now();
    let mut seen: HashMap<u128, PayloadDigest> = HashMap::new();
    for key in keys {
        seen.insert(xxh3_128(key.as_bytes()), digest);
    }
    let elapsed = started.elapsed();
    let grown = resident_bytes().saturating_sub(before);
    assert_eq!(black_box(&seen).len(), keys.len());
    (elapsed, grown)
}

/// Ours: the full contract per key — begin (fencing token, lease) and complete (outcome, TTL).
fn memory_store(keys: &[String], digest: PayloadDigest) -> (Duration, u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let before = resident_bytes();
    // Headroom: the bound is per shard, and no key may be evicted here.
    let store = MemoryStore::new(keys.len() + keys.len() / 8);
    let outcome = processed();
    let started = Instant::now();
    runtime.block_on(async {
        for key in keys {
            let Begin::Acquired(token) = store.begin(key, digest, LEASE).await.unwrap() else {
                panic!("a distinct key was not acquired");
            };
            store.complete(key, token, &outcome, TTL).await.unwrap();
        }
    });
    let elapsed = started.elapsed();
    let grown = resident_bytes().saturating_sub(before);
    assert_eq!(black_box(&store).len(), keys.len());
    (elapsed, grown)
}

fn p4_memory_vs_hashmap() {
    let count = env_count("KAFKA_OPS_BENCH_KEYS", 10_000_000);
    println!("P4: in-memory store vs bare HashMap<u128, _>, {count} distinct keys");
    let keys: Vec<String> = (0..count).map(|i| format!("orders:evt-{i:010}")).collect();
    let digest = PayloadDigest::of(Some(b"{\"order\":1}"));
    let (mut peer, mut ours) = (Vec::new(), Vec::new());
    let (mut peer_bytes, mut our_bytes) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate which goes first, so neither always meets a warm allocator.
        let runs: [Run; 2] = if round % 2 == 0 {
            [bare_hashmap, memory_store]
        } else {
            [memory_store, bare_hashmap]
        };
        for (index, run) in runs.iter().enumerate() {
            let (elapsed, bytes) = run(&keys, digest);
            let per_second = count as f64 / elapsed.as_secs_f64();
            let is_peer = (index == 0) == (round % 2 == 0);
            if is_peer {
                peer.push(per_second);
                peer_bytes.push(bytes as f64 / count as f64);
            } else {
                ours.push(per_second);
                our_bytes.push(bytes as f64 / count as f64);
            }
        }
    }
    let (peer, ours) = (median(peer), median(ours));
    println!(
        "  bare HashMap insert     {:>12.0} keys/s  {:>6.1} B/key",
        peer,
        median(peer_bytes)
    );
    println!(
        "  MemoryStore begin+complete {:>9.0} keys/s  {:>6.1} B/key",
        ours,
        median(our_bytes)
    );
    println!("  ratio ours/peer: {:.2}x (target >= 0.5x)", ours / peer);
}

/// `redis-benchmark -P 16 -t set`: the server's SET throughput with pipelining.
fn redis_benchmark_sets(url: &str, requests: usize) -> f64 {
    let address = url.trim_start_matches("redis://");
    let (host, port) = address
        .trim_end_matches('/')
        .split_once(':')
        .unwrap_or((address, "6379"));
    let output = Command::new("redis-benchmark")
        .args([
            "-h", host, "-p", port, "-P", "16", "-t", "set", "-q", "--csv",
        ])
        .args(["-n", &requests.to_string(), "-r", "1000000"])
        .output()
        .expect("redis-benchmark runs (Debian package redis-tools)");
    let text = String::from_utf8_lossy(&output.stdout);
    // CSV: "test","rps",... then "SET","123456.79",...
    text.lines()
        .find(|line| line.starts_with("\"SET\""))
        .and_then(|line| line.split(',').nth(1))
        .map(|rps| rps.trim_matches('"').parse().expect("a rate"))
        .unwrap_or_else(|| panic!("no SET line in redis-benchmark output: {text}"))
}

/// Callers at once on the coalesced path: the driver's records in flight.
const CALLERS: usize = 256;
/// Keys a call on the multi-key path.
const BATCH: usize = 256;

/// Runs `work(worker)` for `callers` workers at once; `count` keys over the time they took.
async fn keys_per_second<F, W>(callers: usize, count: usize, work: W) -> f64
where
    W: Fn(usize) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    let workers: Vec<_> = (0..callers)
        .map(|worker| tokio::spawn(work(worker)))
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    count as f64 / started.elapsed().as_secs_f64()
}

fn digest() -> PayloadDigest {
    PayloadDigest::of(Some(b"{\"order\":1}"))
}

/// Takes a distinct key, which must be free.
async fn take(store: &dyn IdempotencyStore, key: &str) -> FencingToken {
    match store.begin(key, digest(), LEASE).await.unwrap() {
        Begin::Acquired(token) => token,
        other => panic!("a distinct key was not acquired: {other:?}"),
    }
}

/// Ours, as the layer calls it: `CALLERS` concurrent callers, each `begin` + `complete` one key at
/// a time; the store coalesces what arrives while a call is under way.
async fn coalesced<S: IdempotencyStore + 'static>(
    store: Arc<S>,
    run: &str,
    count: usize,
    ttl: Duration,
) -> f64 {
    keys_per_second(CALLERS, count, |worker| {
        let (store, run) = (store.clone(), run.to_string());
        async move {
            for i in (worker..count).step_by(CALLERS) {
                let key = format!("{run}:evt-{i}");
                let token = take(store.as_ref(), &key).await;
                store
                    .complete(&key, token, &processed(), ttl)
                    .await
                    .unwrap();
            }
        }
    })
    .await
}

/// Ours, multi-key: `begin_many` + `complete_many` over `BATCH` keys a call, two callers at once.
async fn multi_key<S: IdempotencyStore + 'static>(
    store: Arc<S>,
    run: &str,
    count: usize,
    ttl: Duration,
) -> f64 {
    const CALLERS: usize = 2;
    keys_per_second(CALLERS, count, |worker| {
        let (store, run) = (store.clone(), run.to_string());
        async move {
            let keys: Vec<usize> = (worker..count).step_by(CALLERS).collect();
            for chunk in keys.chunks(BATCH) {
                let requests: Vec<BeginRequest> = chunk
                    .iter()
                    .map(|i| BeginRequest {
                        key: format!("{run}:evt-{i}"),
                        digest: digest(),
                        lease: LEASE,
                    })
                    .collect();
                let answers = store.begin_many(&requests).await.unwrap();
                let completions: Vec<Completion> = requests
                    .into_iter()
                    .zip(answers)
                    .map(|(request, answer)| {
                        let Begin::Acquired(token) = answer else {
                            panic!("a distinct key was not acquired: {answer:?}");
                        };
                        Completion {
                            key: request.key,
                            token,
                            outcome: processed(),
                            ttl,
                        }
                    })
                    .collect();
                let done = store.complete_many(&completions).await.unwrap();
                assert!(done.iter().all(Result::is_ok));
            }
        }
    })
    .await
}

fn p5_redis_vs_redis_benchmark() {
    let url =
        std::env::var("KAFKA_OPS_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let count = env_count("KAFKA_OPS_BENCH_REDIS_KEYS", 200_000);
    println!("P5: Redis store vs redis-benchmark -P 16 -t set, {count} keys, same server ({url})");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(
        runtime
            .block_on(RedisStore::connect(&url))
            .expect("Redis answers"),
    );
    let (mut peer, mut single, mut many) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        peer.push(redis_benchmark_sets(&url, count));
        let run = format!("kafka-ops-bench-{}-{round}", std::process::id());
        single.push(runtime.block_on(coalesced(store.clone(), &run, count, REDIS_TTL)));
        let run = format!("{run}-many");
        many.push(runtime.block_on(multi_key(store.clone(), &run, count, REDIS_TTL)));
    }
    let (peer, single, many) = (median(peer), median(single), median(many));
    println!("  redis-benchmark -P 16 SET   {peer:>10.0} keys/s");
    println!("  RedisStore, {CALLERS} callers      {single:>10.0} keys/s (begin + complete each)");
    println!("  RedisStore, {BATCH} keys a call {many:>10.0} keys/s (begin_many + complete_many)");
    println!(
        "  ratio ours/peer: {:.2}x coalesced, {:.2}x multi-key (target >= 0.5x)",
        single / peer,
        many / peer
    );
}

/// What a hand-rolled dedup table costs in PostgreSQL: pgbench running the store's insert-on-
/// conflict for one new key a transaction (the store's own statement is this one over an
/// array of keys), with as many connections as the store's pool.
const PGBENCH_SCRIPT: &str = r#"\set k random(1, 1000000000000)
\set token random(1, 9000000000000000000)
INSERT INTO kafka_ops_idempotency AS t (key, state, token, digest, lease_until, expires_at) VALUES ('RUN:' || :client_id || ':' || :k, 'in_progress', :token, '\x000000000000000000000000000000aa'::bytea, now() + make_interval(secs => 60), now() + make_interval(secs => 60) + interval '1 day') ON CONFLICT (key) DO UPDATE SET state = 'in_progress', token = EXCLUDED.token, digest = EXCLUDED.digest, lease_until = EXCLUDED.lease_until, outcome = NULL, expires_at = EXCLUDED.expires_at WHERE (t.state = 'in_progress' AND t.lease_until <= now()) OR (t.state = 'completed' AND t.expires_at <= now()) RETURNING token;
"#;

/// The connections of `PostgresStore::connect`'s pool, and so of the peer.
const CONNECTIONS: usize = 4;

/// `pgbench -n -M prepared -c N -j N -t count/N -f <script>`: keys (transactions) per second.
fn pgbench_inserts(config: &str, run: &str, count: usize) -> f64 {
    let script = std::env::temp_dir().join(format!("{run}.pgbench.sql"));
    std::fs::write(&script, PGBENCH_SCRIPT.replace("RUN", run)).unwrap();
    let clients = CONNECTIONS.to_string();
    let output = Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-c", &clients, "-j", &clients])
        .args(["-t", &(count / CONNECTIONS).to_string(), "-f"])
        .arg(&script)
        .arg(config)
        .output()
        .expect("pgbench runs (Debian: the postgresql package's server binaries)");
    std::fs::remove_file(&script).ok();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pgbench failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // "tps = 1234.567890 (without initial connection time)"
    text.lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|tps| tps.parse().expect("a rate"))
        .unwrap_or_else(|| panic!("no tps line in pgbench output: {text}"))
}

async fn delete_rows(config: &str, run: &str) {
    let (client, connection) = tokio_postgres::connect(config, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL answers");
    tokio::spawn(connection);
    client
        .execute(
            "DELETE FROM kafka_ops_idempotency WHERE key LIKE $1",
            &[&format!("{run}%")],
        )
        .await
        .unwrap();
}

/// Ours through the inbox, as a handler uses it: `CALLERS` concurrent callers, each `begin`s
/// one key (coalesced) and marks it done inside its own transaction on the application's pool
/// of `CONNECTIONS` connections (a transaction and a commit a key, as the handler's writes need).
async fn inbox(store: Arc<PostgresStore>, config: &str, run: &str, count: usize) -> f64 {
    use kafka_ops_idempotency::store::postgres::deadpool_postgres::{Manager, Pool};
    let manager = Manager::new(config.parse().unwrap(), tokio_postgres::NoTls);
    let pool = Pool::builder(manager)
        .max_size(CONNECTIONS)
        .build()
        .unwrap();
    keys_per_second(CALLERS, count, |worker| {
        let (store, pool, run) = (store.clone(), pool.clone(), run.to_string());
        async move {
            for i in (worker..count).step_by(CALLERS) {
                let key = format!("{run}:evt-{i}");
                let token = take(store.as_ref(), &key).await;
                let claim = Claim {
                    key,
                    token,
                    ttl: TTL,
                };
                let mut client = pool.get().await.unwrap();
                let tx = client.transaction().await.unwrap();
                store
                    .complete_in_pooled(&tx, &claim, &processed())
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        }
    })
    .await
}

fn p6_postgres_vs_pgbench() {
    let config = std::env::var("KAFKA_OPS_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 dbname=test user=postgres".into());
    let count = env_count("KAFKA_OPS_BENCH_POSTGRES_KEYS", 100_000);
    println!(
        "P6: PostgreSQL store vs pgbench -c {CONNECTIONS} of its insert-on-conflict, {count} keys, same database"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = runtime.block_on(async {
        let store = PostgresStore::connect(&config)
            .await
            .expect("PostgreSQL answers");
        store.migrate().await.unwrap();
        Arc::new(store)
    });
    let (mut peer, mut single, mut many, mut marked) = (vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        let run = format!("kafka-ops-bench-{}-{round}", std::process::id());
        peer.push(pgbench_inserts(&config, &format!("{run}-pgbench"), count));
        single.push(runtime.block_on(coalesced(store.clone(), &run, count, TTL)));
        let many_run = format!("{run}-many");
        many.push(runtime.block_on(multi_key(store.clone(), &many_run, count, TTL)));
        let inbox_run = format!("{run}-inbox");
        marked.push(runtime.block_on(inbox(store.clone(), &config, &inbox_run, count)));
        runtime.block_on(delete_rows(&config, &run));
    }
    let (peer, single, many) = (median(peer), median(single), median(many));
    let marked = median(marked);
    println!("  pgbench insert-on-conflict  {peer:>10.0} keys/s");
    println!("  PostgresStore, {CALLERS} callers   {single:>10.0} keys/s (begin + complete each)");
    println!(
        "  PostgresStore, {BATCH} keys a call {many:>9.0} keys/s (begin_many + complete_many)"
    );
    println!(
        "  PostgresStore + inbox mark  {marked:>10.0} keys/s (begin, then complete_in_pooled + commit)"
    );
    println!(
        "  ratio ours/peer: {:.2}x coalesced, {:.2}x multi-key (target >= 0.5x); inbox {:.2}x",
        single / peer,
        many / peer,
        marked / peer
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    if std::env::var_os("KAFKA_OPS_BENCH_SKIP_MEMORY").is_none() {
        p4_memory_vs_hashmap();
    }
    if std::env::var_os("KAFKA_OPS_BENCH_SKIP_REDIS").is_none() {
        p5_redis_vs_redis_benchmark();
    }
    if std::env::var_os("KAFKA_OPS_BENCH_SKIP_POSTGRES").is_none() {
        p6_postgres_vs_pgbench();
    }
}
