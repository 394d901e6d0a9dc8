//! The reference consumer, run as its users run it: every layer composed over the embedded
//! mock cluster, and the final summary adds up — each event charged once, duplicates skipped,
//! poison dead-lettered, nothing left behind.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;

mod support;
use support::example_binary;

#[test]
fn every_record_ends_once_through_every_layer() {
    let output = Command::new(example_binary("reference-consumer"))
        .args([
            "--records",
            "1000",
            "--failure-rate",
            "0.3",
            "--latency",
            "0ms",
            "--retry-tiers",
            "200ms,400ms",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let done = stdout
        .lines()
        .find(|l| l.starts_with("done in"))
        .unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    // 1 000 records: every tenth repeats the event 7 before it (100), every hundredth is not
    // JSON (10). The downstream fails 30% of calls: 4 tries in place, then two tiers of 4
    // more, so a record reaches a tier about once in 120 and the dead-letter topic about once in
    // two million.
    for expected in [
        "890 processed (890 orders charged",
        "100 duplicates skipped",
        "10 dead-lettered",
    ] {
        assert!(done.contains(expected), "{expected:?} in {done:?}");
    }
    let tiered: u64 = done
        .split(" sent to retry tiers")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        tiered > 0,
        "some records went through the retry tiers: {done}"
    );
    assert!(stdout.contains("breaker "), "{stdout}");
}
