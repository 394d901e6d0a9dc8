//! The self-healing example as a process: its shipped configurations validate, a bad one is
//! refused with every problem named, and a dry run on the embedded cluster decides without
//! acting.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;

use kafka_ops_core::testkit::unique_name;

mod support;
use support::example_binary;

fn config_path(name: &str) -> String {
    format!(
        "{}/self-healing/config/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn the_shipped_configurations_validate() {
    for name in ["minimal", "development", "production"] {
        let output = Command::new(example_binary("self-healing"))
            .args(["--config", &config_path(name), "--validate"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{name}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.starts_with("configuration OK"), "{stdout}");
    }
}

fn write_config(text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.yaml", unique_name("self-healing")));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_bad_configuration_is_refused_with_every_problem() {
    let path = write_config(
        r#"
engine: { interval: 0s }
monitors:
  - { type: health, probes: [brokers] }
notifiers:
  - { type: webhook, url: "https://hooks.example.com/x", retries: 3 }
"#,
    );
    let output = Command::new(example_binary("self-healing"))
        .args(["--config", path.to_str().unwrap(), "--validate"])
        .output()
        .unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "engine: invalid recovery configuration: engine.interval must be positive",
        "monitors[0] (health): probes: unknown probe \"brokers\"",
        "notifiers[0] (webhook): unknown field `retries`",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }

    let path = write_config("engine:\n  interval: soon\n");
    let output = Command::new(example_binary("self-healing"))
        .args(["--config", path.to_str().unwrap(), "--validate"])
        .output()
        .unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("engine.interval") && stderr.contains("line 2"),
        "{stderr}"
    );
}

#[test]
fn a_dry_run_on_the_embedded_cluster_decides_without_acting() {
    let audit = std::env::temp_dir().join(format!("{}.jsonl", unique_name("audit")));
    let path = write_config(&format!(
        r#"
engine: {{ interval: 300ms, grace_checks: 1, grace_period: 0s }}
monitors:
  - {{ name: cluster, type: health, probes: [broker_connectivity], expected_brokers: 3, anomalous_at: degraded }}
playbooks:
  - matches: "broker_*"
    actions: [{{ type: wait_and_recheck, wait: 1s, monitor: cluster }}, {{ type: pause_consumer }}]
notifiers: [{{ type: log }}]
audit: {{ path: "{}" }}
"#,
        audit.display()
    ));
    let output = Command::new(example_binary("self-healing"))
        .args([
            "--config",
            path.to_str().unwrap(),
            "--dry-run",
            "--rounds",
            "8",
        ])
        .output()
        .unwrap();
    std::fs::remove_file(&path).ok();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("(dry run: deciding, not acting)"),
        "{stdout}"
    );
    assert!(stdout.contains("(demo) broker 2 taken down"), "{stdout}");
    assert!(
        stdout
            .contains("dry run    broker_connectivity: would run wait_and_recheck, pause_consumer"),
        "{stdout}"
    );
    assert!(stdout.contains("stopped after 8 rounds"), "{stdout}");
    let trail = kafka_ops_recovery::AuditTrail::read(&audit).unwrap();
    std::fs::remove_file(&audit).ok();
    assert!(
        trail.iter().all(|r| r.dry_run && r.action.is_none()),
        "{trail:?}"
    );
    assert!(
        trail
            .iter()
            .any(|r| r.decision.starts_with("dry run: would run"))
    );
}
