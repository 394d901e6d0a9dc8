//! `kafka-ops exporter` over a long run on the real cluster: many groups and partitions, ends and
//! commits moving every second, until every history is at its cap; then its resident memory must
//! stay flat. Minutes long, so ignored by default:
//!
//! ```sh
//! KAFKA_OPS_SOAK_SECS=300 cargo test -p kafka-ops-examples --all-features \
//!     --test exporter_soak_real_kafka -- --ignored --nocapture
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use kafka_ops_core::testkit::{RealKafka, TestRecord, unique_name};
use kafka_ops_core::{Offset, TopicPartition};

mod support;
use support::exporter::{Exporter, value};

const GROUPS: usize = 100;
const PARTITIONS: i32 = 24;
const HISTORY_POINTS: usize = 20;
const WINDOW: usize = 10;

/// The exporter's resident memory, in KiB, from the kernel's account of the process.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .map(|kib| kib.trim().parse().unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "minutes long: run by hand for the exporter's memory figure"]
async fn memory_stays_flat_once_every_history_is_full() {
    let run_for = Duration::from_secs(
        std::env::var("KAFKA_OPS_SOAK_SECS")
            .map(|s| s.parse().unwrap())
            .unwrap_or(300),
    );
    let kafka = RealKafka::shared().await.unwrap();
    let topic = unique_name("soak");
    kafka.create_topic(&topic, PARTITIONS).await.unwrap();
    let groups: Vec<String> = (0..GROUPS)
        .map(|i| unique_name(&format!("soak{i}")))
        .collect();
    let commit = |group: &str, offset: i64| {
        let offsets: Vec<(TopicPartition, Offset)> = (0..PARTITIONS)
            .map(|p| {
                (
                    TopicPartition::new(topic.as_str(), p),
                    Offset::new(offset).unwrap(),
                )
            })
            .collect();
        let group = group.to_string();
        let kafka = &kafka;
        async move { kafka.commit(&group, &offsets).await.unwrap() }
    };
    let produce_round = || {
        kafka.produce(
            &topic,
            (0..PARTITIONS).map(|p| TestRecord::value("x").to_partition(p)),
        )
    };
    produce_round().await.unwrap();
    for group in &groups {
        commit(group, 0).await;
    }

    let mut args = vec![
        "--bootstrap".to_string(),
        kafka.bootstrap().to_string(),
        "--history-points".into(),
        HISTORY_POINTS.to_string(),
        "--window".into(),
        WINDOW.to_string(),
        "--dlq-suffix".into(),
        String::new(),
    ];
    for group in &groups {
        args.extend(["--group".into(), group.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let exporter = Exporter::start(&args);
    let rows = GROUPS * PARTITIONS as usize;
    let full = |text: &str| {
        value(
            text,
            r#"kafka_ops_exporter_history_entries{kind="end_offset"}"#,
        ) == Some((rows * HISTORY_POINTS) as f64)
            && value(text, r#"kafka_ops_exporter_history_entries{kind="commit"}"#)
                == Some((rows * WINDOW) as f64)
    };

    // Every second one record per partition (every end offset moves) and a tenth of the groups
    // commit further (each group's commit window moves every ten seconds).
    let started = Instant::now();
    let mut round = 0i64;
    let mut at_cap: Option<(Duration, u64, f64)> = None;
    let mut peak = 0u64;
    while started.elapsed() < run_for {
        round += 1;
        produce_round().await.unwrap();
        for group in groups.iter().skip(round as usize % 10).step_by(10) {
            commit(group, round).await;
        }
        let text = exporter.metrics().await;
        let rss = resident_kib(exporter.pid());
        peak = peak.max(rss);
        if at_cap.is_none() && full(&text) {
            let polls = value(&text, "kafka_ops_exporter_polls_total").unwrap();
            at_cap = Some((started.elapsed(), rss, polls));
            println!(
                "every history full after {:?}, {polls} polls: {rss} KiB resident",
                started.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let text = exporter.metrics().await;
    let end = resident_kib(exporter.pid());
    let polls = value(&text, "kafka_ops_exporter_polls_total").unwrap();
    let poll_seconds = value(&text, "kafka_ops_exporter_poll_duration_seconds").unwrap();
    println!(
        "after {:?}: {polls} polls over {GROUPS} groups × {PARTITIONS} partitions, last poll \
         {poll_seconds:.2}s; resident {end} KiB at the end, {peak} KiB at most",
        started.elapsed()
    );
    let (when, at_cap_kib, at_cap_polls) = at_cap.expect("the histories never filled");
    assert!(full(&text), "histories beyond their caps:\n{text}");
    assert!(
        polls >= at_cap_polls + 60.0,
        "too few polls after the caps ({at_cap_polls} by {when:?}, {polls} at the end): run longer"
    );
    // Flat: what is held is at its cap, so the process must not keep growing (allocator noise
    // and librdkafka's buffers aside).
    assert!(
        end <= at_cap_kib + at_cap_kib / 5,
        "resident memory grew from {at_cap_kib} KiB at the caps to {end} KiB"
    );
    assert_eq!(exporter.terminate().code(), Some(0));
    kafka.delete_topics(&[&topic]).await.unwrap();
}
