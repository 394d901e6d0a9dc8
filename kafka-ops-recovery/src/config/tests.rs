use super::*;

const GOOD: &str = r#"
engine:
  interval: 10s
  grace_checks: 2
  grace_period: 20s
  cooldown: 5m
  retry: { initial_delay: 10s, multiplier: 1.5, max_delay: 120s, max_attempts: 3 }
monitors:
  - { name: cluster, type: health, probes: [broker_connectivity, partitions], expected_brokers: 3 }
playbooks:
  - matches: "broker_*"
    actions: [{ type: wait_and_recheck, wait: 30s, monitor: cluster }]
notifiers: [{ type: log }, { type: webhook, url: "https://hooks.example.com/T0" }]
"#;

#[test]
fn a_good_file_parses_and_validates() {
    let config = SelfHealingConfig::from_yaml(GOOD).unwrap();
    assert_eq!(config.engine.grace_checks, 2);
    assert_eq!(config.engine.retry, crate::BackoffPolicy::runbook());
    let problems = Registry::with_builtins().validate(&config);
    if cfg!(feature = "health") {
        assert_eq!(problems, Vec::<String>::new());
    } else {
        assert!(
            problems[0].starts_with("monitors[0] (health): unknown type"),
            "{problems:?}"
        );
    }
}

#[test]
fn syntax_and_type_errors_name_the_field_and_line() {
    let error = SelfHealingConfig::from_yaml("engine:\n  interval: soon\n").unwrap_err();
    assert!(error.to_string().contains("engine.interval"), "{error}");
    assert!(error.to_string().contains("line 2"), "{error}");
    let error = SelfHealingConfig::from_yaml("engine:\n  intervall: 10s\n").unwrap_err();
    assert!(
        error.to_string().contains("unknown field `intervall`"),
        "{error}"
    );
}

#[test]
fn a_misspelt_retry_setting_is_refused() {
    let error =
        SelfHealingConfig::from_yaml("engine:\n  retry: { initial_dealy: 1s }\n").unwrap_err();
    assert!(
        error.to_string().contains("unknown field `initial_dealy`"),
        "{error}"
    );
}

#[test]
fn every_bad_field_is_reported_at_once() {
    let text = r#"
engine: { interval: 10s, max_affected_percent: 150 }
monitors:
  - { name: cluster, type: helth, probes: [partitions] }
playbooks:
  - matches: "*"
    actions:
      - { type: wait_and_recheck, wait: 30s, monitor: nobody }
      - { type: reset_offsets, group: billing, topics: [], target: sometime }
      - { type: reboot_the_world }
notifiers:
  - { type: webhook, url: "ftp://x" }
  - { type: log, colour: red }
"#;
    let config = SelfHealingConfig::from_yaml(text).unwrap();
    let problems = Registry::with_builtins().validate(&config);
    let expected = [
        "engine: invalid recovery configuration: engine.max_affected_percent must be in (0, 100], got 150",
        "monitors[0] (helth): unknown type",
        "playbooks[0].actions[0] (wait_and_recheck): monitor: no monitor named \"nobody\"",
        "playbooks[0].actions[1] (reset_offsets): topics: at least one topic",
        "playbooks[0].actions[2] (reboot_the_world): unknown type; known: pause_consumer, reset_offsets, restart_consumer, resume_consumer, skip_poison_record, wait_and_recheck",
        "notifiers[0] (webhook): url: must be http(s), got \"ftp://x\"",
        "notifiers[1] (log): unknown field `colour`",
    ];
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    for (problem, expected) in problems.iter().zip(expected) {
        assert!(
            problem.starts_with(expected),
            "{problem:?} should start with {expected:?}"
        );
    }
}

#[test]
fn a_retry_policy_without_any_limit_is_refused() {
    let text = r#"
engine:
  retry: { initial_delay: 1s, multiplier: 1.5, max_delay: 10s, max_attempts: null }
monitors:
  - { type: poison_record }
"#;
    let config = SelfHealingConfig::from_yaml(text).unwrap();
    assert_eq!(config.engine.retry.max_attempts, None);
    let problems = Registry::with_builtins().validate(&config);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with("engine: invalid recovery configuration: engine.retry"),
        "{problems:#?}"
    );
}

#[cfg(feature = "webhook")]
#[test]
fn a_webhook_without_time_to_answer_is_refused() {
    let text = r#"
monitors:
  - { type: poison_record }
notifiers:
  - { type: webhook, url: "https://hooks.example.com/T0", timeout: 0s }
"#;
    let config = SelfHealingConfig::from_yaml(text).unwrap();
    let problems = Registry::with_builtins().validate(&config);
    assert_eq!(
        problems,
        ["notifiers[0] (webhook): timeout: must be positive"]
    );
}

#[cfg(feature = "smtp")]
#[test]
fn an_smtp_login_needs_both_a_username_and_a_password() {
    let text = r#"
monitors:
  - { type: poison_record }
notifiers:
  - { type: smtp, host: smtp.example.com, port: 587, username: kafka-ops, from: "a@example.com", to: ["b@example.com"] }
"#;
    let config = SelfHealingConfig::from_yaml(text).unwrap();
    let problems = Registry::with_builtins().validate(&config);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with("notifiers[0] (smtp): ") && problems[0].contains("password"),
        "{problems:#?}"
    );
}
