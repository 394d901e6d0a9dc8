//! The reference consumer, run as its users run it: every layer composed over the embedded
//! mock cluster, and the final summary adds up — each event charged once, duplicates skipped,
//! poison dead-lettered, nothing left behind.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;

mod support;
use support::example_binary;

/// The number just before `label` in `line` ("... 12 sent to retry tiers" → 12).
fn count_before(line: &str, label: &str) -> u64 {
    line.split(label)
        .next()
        .filter(|head| head.len() < line.len())
        .and_then(|head| head.trim_end().rsplit([' ', '(']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count before {label:?} in {line:?}"))
}

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
            "--seed",
            "18",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("downstream failures drawn from seed 18 (--seed 18 repeats them)"),
        "{stdout}"
    );
    let line = |start: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?}:\n{stdout}"))
            .to_string()
    };
    let done = line("done in");
    let letters = line("orders.dlq holds");
    // 1 000 records: every tenth repeats the event 7 before it (100), every hundredth is not
    // JSON (10). The downstream fails 30% of calls: 4 tries in place, then two tiers of 4
    // more, so a record reaches a tier about once in 120. Whether one of the 890 good orders
    // fails all twelve tries (about once in two million per order) the breaker's timing
    // decides: the counts are checked by what must hold either way.
    assert!(done.contains("100 duplicates skipped"), "{done}");
    let processed = count_before(&done, " processed (");
    let charged = count_before(&done, " orders charged");
    let dead_lettered = count_before(&done, " dead-lettered");
    let permanent = count_before(&letters, " permanent");
    let exhausted = count_before(&letters, " after retries");
    let held = count_before(&letters, " dead letters");
    assert_eq!(permanent, 10, "exactly the poison records: {letters}");
    assert_eq!(
        charged, processed,
        "each processed order charged once: {done}"
    );
    assert_eq!(
        processed + exhausted,
        890,
        "every good order charged or dead-lettered, once: {done}\n{letters}"
    );
    assert_eq!(
        dead_lettered, held,
        "the topic holds what the consumer dead-lettered: {done}\n{letters}"
    );
    let tiered = count_before(&done, " sent to retry tiers");
    assert!(
        tiered > 0,
        "some records went through the retry tiers: {done}"
    );
    assert!(stdout.contains("breaker "), "{stdout}");
}
