//! Side-by-side: the idempotency stores against their bare peers, in the same run.
//!
//! ```text
//! cargo bench -p kafka-ops-benches --bench dedup_stores
//! ```
//!
//! - P4: the in-memory store's `begin` + `complete` over N distinct keys (default 10 M) against
//!   inserting the same keys' 128-bit hashes into a bare `HashMap<u128, _>`; prints the
//!   throughput ratio (target ≥ 0.5×) and the resident bytes per key of each.
//! - P5: the Redis store's `begin` + `complete` (a `SET NX PX` and a fencing script) with 64
//!   concurrent callers on one multiplexed connection, against `redis-benchmark -P 16 -t set`
//!   on the same server; prints keys/s, commands/s and their ratios to the peer's SETs/s.
//!
//! Measured on the 2-core development machine (10 M keys; 200 000 Redis keys): P4 0.53-0.55×
//! at 58 B/key against the bare map's 55 B/key (the peer's own rate varies by up to 30% from
//! run to run, so run it more than once); P5 0.08× in keys/s, 0.16× in commands/s.
//!
//! Knobs (environment): `KAFKA_OPS_BENCH_KEYS` (P4 keys), `KAFKA_OPS_BENCH_REDIS_KEYS` (P5
//! keys, default 200 000), `KAFKA_OPS_REDIS_URL` (default the loopback Redis),
//! `KAFKA_OPS_BENCH_SKIP_REDIS` (set: P4 only).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_ops_core::handler::Outcome;
use kafka_ops_idempotency::store::memory::MemoryStore;
use kafka_ops_idempotency::store::redis::RedisStore;
use kafka_ops_idempotency::store::{Begin, IdempotencyStore, PayloadDigest, StoredOutcome};
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

async fn redis_store(store: Arc<RedisStore>, run: &str, count: usize) -> f64 {
    const CALLERS: usize = 64;
    let started = Instant::now();
    let workers: Vec<_> = (0..CALLERS)
        .map(|worker| {
            let store = store.clone();
            let run = run.to_string();
            tokio::spawn(async move {
                let digest = PayloadDigest::of(Some(b"{\"order\":1}"));
                let outcome = processed();
                for i in (worker..count).step_by(CALLERS) {
                    let key = format!("{run}:evt-{i}");
                    let Begin::Acquired(token) = store.begin(&key, digest, LEASE).await.unwrap()
                    else {
                        panic!("a distinct key was not acquired");
                    };
                    store
                        .complete(&key, token, &outcome, REDIS_TTL)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    count as f64 / started.elapsed().as_secs_f64()
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
    let (mut peer, mut ours) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        peer.push(redis_benchmark_sets(&url, count * 2));
        let run = format!("kafka-ops-bench-{}-{round}", std::process::id());
        ours.push(runtime.block_on(redis_store(store.clone(), &run, count)));
    }
    let (peer, ours) = (median(peer), median(ours));
    println!("  redis-benchmark SET      {peer:>10.0} commands/s");
    println!(
        "  RedisStore begin+complete {ours:>9.0} keys/s ({:.0} commands/s)",
        ours * 2.0
    );
    println!(
        "  ratio keys/s to SETs/s: {:.2}x; commands/s to SETs/s: {:.2}x",
        ours / peer,
        ours * 2.0 / peer
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    p4_memory_vs_hashmap();
    if std::env::var_os("KAFKA_OPS_BENCH_SKIP_REDIS").is_none() {
        p5_redis_vs_redis_benchmark();
    }
}
