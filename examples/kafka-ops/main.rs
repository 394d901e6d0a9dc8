//! `kafka-ops`: Kafka consumer operations from the runbooks, as commands.
//!
//! ```text
//! cargo run --example kafka-ops -- lag --bootstrap localhost:9092 --group billing --fail-on warning
//! cargo run --example kafka-ops -- exporter --bootstrap localhost:9092 --listen 0.0.0.0:9308
//! ```
//!
//! The commands live in `kafka_ops_examples::cli` so tests run them in-process.

use kafka_ops_examples::cli::{Output, run};

/// jemalloc, for the whole process: librdkafka calls `malloc` for each header of each record a
/// replay reads and writes, and under glibc's allocator that churn cost a replay on a real
/// cluster about a third more CPU per record, and the brokers bigger batches' worth of requests.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let code = run(
        std::env::args_os(),
        &mut Output {
            out: &mut stdout,
            err: &mut stderr,
        },
    )
    .await;
    std::process::exit(code);
}
