//! `kafka-ops health` and `kafka-ops restart-check` end to end against the real cluster (a
//! KRaft quorum, a node SIGKILLed) and the mock cluster.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use kafka_ops_core::testkit::{MockKafka, RealKafka, TestRecord, unique_name};

mod support;
use support::{cli, example_binary};

#[tokio::test(flavor = "multi_thread")]
async fn health_prints_every_probe_and_fails_on_a_full_dead_letter_topic() {
    // The real cluster: every probe healthy but the dead-letter topic, so the exit code says
    // exactly what the full topic is worth (a warning).
    let kafka = RealKafka::exclusive().await.unwrap();
    let tag = unique_name("dlq");
    let dlq = format!("orders.{tag}");
    kafka.create_topic(&dlq, 1).await.unwrap();
    let records = (0..150).map(|i| TestRecord::keyed(format!("k{i}"), "v"));
    kafka.produce(&dlq, records).await.unwrap();
    let suffix = format!(".{tag}");
    let health = |fail_on: &'static str| {
        let (bootstrap, dlq, suffix) = (kafka.bootstrap().to_string(), dlq.clone(), suffix.clone());
        async move {
            cli(&[
                "health",
                "--bootstrap",
                &bootstrap,
                "--expected-brokers",
                "3",
                "--topic",
                &format!("{dlq}:1"),
                "--dlq-suffix",
                &suffix,
                "--fail-on",
                fail_on,
            ])
            .await
        }
    };
    let (code, out, err) = health("warning").await;
    assert!(err.is_empty(), "{err}");
    for probe in [
        "broker_connectivity",
        "controller",
        "partitions",
        "dead_letter_depth",
        "required_topics",
    ] {
        assert!(out.contains(probe), "{probe} missing:\n{out}");
    }
    assert!(out.contains("3 of 3 brokers up"), "{out}");
    assert!(out.contains("KRaft quorum: all 3 voters up"), "{out}");
    assert!(out.contains("holds 150 records"), "{out}");
    assert_eq!(code, 1, "a warning fails --fail-on warning:\n{out}");
    let (code, out, _) = health("critical").await;
    assert_eq!(code, 0, "nothing is critical:\n{out}");

    let (code, out, _) = cli(&["health", "--bootstrap", kafka.bootstrap(), "--json"]).await;
    assert_eq!(code, 0, "by default only critical fails:\n{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["probes"][0]["name"], "broker_connectivity");
    assert_eq!(report["probes"][0]["status"], "healthy");
    assert_eq!(report["probes"][1]["name"], "controller");
    assert_eq!(report["probes"][1]["status"], "healthy");
    assert_eq!(
        report["probes"][1]["details"]["voters_up"],
        serde_json::json!([1, 2, 3])
    );
}

/// `kafka-ops health` against `bootstrap` with `extra` arguments.
async fn health_of(bootstrap: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["health", "--bootstrap", bootstrap];
    args.extend_from_slice(extra);
    cli(&args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_required_topic_fails_health_by_default_and_never_when_told() {
    // The real cluster, every probe healthy but one critical: a required topic that is not
    // there. Each --fail-on mode's exit code, and the default's.
    let kafka = RealKafka::shared().await.unwrap();
    let missing = unique_name("never_created");
    let required = ["--topic", missing.as_str(), "--dlq-suffix", ".no-such-dlq"];
    let with = |mode: Option<&'static str>| {
        let mut args = required.to_vec();
        if let Some(mode) = mode {
            args.extend(["--fail-on", mode]);
        }
        args
    };
    let (code, out, err) = health_of(kafka.bootstrap(), &with(None)).await;
    assert!(err.is_empty(), "{err}");
    assert!(out.contains(&format!("missing topics: {missing}")), "{out}");
    assert!(out.contains("overall: unhealthy (critical)"), "{out}");
    assert_eq!(code, 2, "critical fails without --fail-on:\n{out}");
    let (code, out, _) = health_of(kafka.bootstrap(), &with(Some("critical"))).await;
    assert_eq!(code, 2, "{out}");
    let (code, out, _) = health_of(kafka.bootstrap(), &with(Some("warning"))).await;
    assert_eq!(code, 2, "critical is worse than warning:\n{out}");
    let (code, out, _) = health_of(kafka.bootstrap(), &with(Some("never"))).await;
    assert!(out.contains("overall: unhealthy (critical)"), "{out}");
    assert_eq!(code, 0, "--fail-on never reports and exits 0:\n{out}");

    // Once the topic exists, nothing is critical: exit 0 in every mode.
    kafka.create_topic(&missing, 1).await.unwrap();
    for mode in [None, Some("critical"), Some("warning"), Some("never")] {
        let (code, out, _) = health_of(kafka.bootstrap(), &with(mode)).await;
        assert!(out.contains("overall: healthy (info)"), "{mode:?}:\n{out}");
        assert_eq!(code, 0, "{mode:?}:\n{out}");
    }

    let (code, _, err) = health_of(kafka.bootstrap(), &["--fail-on", "sometimes"]).await;
    assert_eq!(code, 3, "an unknown mode is a usage error");
    assert!(err.contains("invalid value 'sometimes'"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mock_cluster_names_no_real_controller_so_health_is_critical() {
    let kafka = MockKafka::start(3).unwrap();
    let (code, out, _) = health_of(kafka.bootstrap(), &[]).await;
    assert!(
        out.contains("the reported controller 0 is not among the brokers"),
        "{out}"
    );
    assert_eq!(code, 2, "critical fails by default:\n{out}");
    let (code, out, _) = health_of(kafka.bootstrap(), &["--fail-on", "warning"]).await;
    assert_eq!(code, 2, "{out}");
    let (code, out, _) = health_of(kafka.bootstrap(), &["--fail-on", "never"]).await;
    assert!(out.contains("overall: unhealthy (critical)"), "{out}");
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_of_an_unreachable_cluster_is_critical_and_quick() {
    let args = [
        "health",
        "--bootstrap",
        "127.0.0.1:1",
        "--timeout",
        "1s",
        "--probe-timeout",
        "3s",
    ];
    let started = std::time::Instant::now();
    let (code, out, _) = cli(&args).await;
    assert_eq!(code, 2, "an unreachable cluster fails by default:\n{out}");
    assert!(out.contains("cluster unreachable"), "{out}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    // The program itself, as a script calls it: its exit status is the same.
    let status = std::process::Command::new(example_binary("kafka-ops"))
        .args(args)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(out.contains("cluster unreachable"), "{out}");
    assert_eq!(status.status.code(), Some(2), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_check_says_safe_then_refuses_with_its_reasons_while_a_node_is_down() {
    let kafka = RealKafka::exclusive().await.unwrap();
    let topic = unique_name("gate");
    kafka.create_topic(&topic, 1).await.unwrap();
    let check = |broker: &'static str| {
        let bootstrap = kafka.bootstrap().to_string();
        async move {
            cli(&[
                "restart-check",
                "--bootstrap",
                &bootstrap,
                "--broker",
                broker,
            ])
            .await
        }
    };
    let (code, out, err) = check("2").await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("broker 2: safe to restart"), "{out}");

    kafka.stop_broker(3).await.unwrap();
    // Until node 3 is fenced the cluster may still look whole, and a request the stopped node
    // took can leave a reason unverified on the way: wait for the verdict to name them all.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (code, out) = loop {
        let (code, out, err) = check("1").await;
        let settled = out.contains("without it the quorum loses its majority")
            && out.contains("under-replicated partitions");
        if settled || std::time::Instant::now() > deadline {
            assert!(err.is_empty(), "{err}");
            break (code, out);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("NOT safe to restart"), "{out}");
    assert!(
        out.contains("without it the quorum loses its majority"),
        "{out}"
    );
    assert!(out.contains("under-replicated partitions"), "{out}");
    kafka.restore().await.unwrap();

    let (code, _, err) = cli(&[
        "restart-check",
        "--bootstrap",
        "127.0.0.1:1",
        "--timeout",
        "1s",
        "--broker",
        "1",
    ])
    .await;
    assert_eq!(code, 3);
    assert!(err.contains("cannot reach the cluster"), "{err}");
}
