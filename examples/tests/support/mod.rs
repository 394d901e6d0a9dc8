//! Shared by the CLI tests.
#![allow(clippy::unwrap_used, dead_code)]

pub(crate) mod exporter;

use std::path::PathBuf;

use kafka_ops_examples::cli::{Output, run};

/// Runs the CLI in-process; returns (exit code, stdout, stderr).
pub(crate) async fn cli(args: &[&str]) -> (i32, String, String) {
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

/// The built example program `name` (`cargo test` builds examples beside the tests).
pub(crate) fn example_binary(name: &str) -> PathBuf {
    // Tests run from target/<profile>/deps.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|p| p.parent()).unwrap();
    let binary = profile_dir.join("examples").join(name);
    assert!(
        binary.is_file(),
        "{} is missing: build the examples (cargo test builds them)",
        binary.display()
    );
    binary
}
