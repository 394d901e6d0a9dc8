//! Shared by the CLI tests.
#![allow(clippy::unwrap_used, dead_code)]

use kafka_ops_examples::cli::{Output, run};

/// Runs the CLI in-process; returns (exit code, stdout, stderr).
pub async fn cli(args: &[&str]) -> (i32, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = run(
        std::iter::once("kafka-ops").chain(args.iter().copied()),
        &mut Output {
            out: &mut out,
            err: &mut err,
        },
    )
    .await;
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}
