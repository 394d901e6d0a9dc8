//! Built-in recovery actions.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kafka_ops_core::handler::ConsumerControl;

use crate::engine::{Anomaly, Monitor, RecoveryAction};
use crate::error::RecoveryError;
use crate::offsets::{MembershipCheck, OffsetOps, ResetTarget};

fn failed(action: &str, reason: impl Into<String>) -> RecoveryError {
    RecoveryError::ActionFailed {
        action: action.to_string(),
        reason: reason.into(),
    }
}

/// A future a restart hook returns.
pub type RestartFuture = Pin<Box<dyn Future<Output = Result<(), RecoveryError>> + Send>>;

/// Restarts a consumer through a hook the application provides (stop the driver, build a new
/// one, start it).
pub struct RestartConsumer {
    restart: Arc<dyn Fn() -> RestartFuture + Send + Sync>,
}

impl fmt::Debug for RestartConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RestartConsumer")
    }
}

impl RestartConsumer {
    /// An action calling `restart`.
    pub fn new(restart: impl Fn() -> RestartFuture + Send + Sync + 'static) -> Self {
        RestartConsumer {
            restart: Arc::new(restart),
        }
    }
}

#[async_trait]
impl RecoveryAction for RestartConsumer {
    fn name(&self) -> &str {
        "restart_consumer"
    }
    async fn execute(&self, _anomaly: &Anomaly) -> Result<String, RecoveryError> {
        (self.restart)().await?;
        Ok("consumer restarted".into())
    }
}

/// Pauses (or resumes) a consumer's fetching through its handle.
pub struct SetConsumerPaused {
    control: Arc<dyn ConsumerControl>,
    pause: bool,
}

impl fmt::Debug for SetConsumerPaused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetConsumerPaused")
            .field("pause", &self.pause)
            .finish()
    }
}

impl SetConsumerPaused {
    /// Pauses `control`'s consumer.
    pub fn pause(control: Arc<dyn ConsumerControl>) -> Self {
        SetConsumerPaused {
            control,
            pause: true,
        }
    }

    /// Resumes `control`'s consumer.
    pub fn resume(control: Arc<dyn ConsumerControl>) -> Self {
        SetConsumerPaused {
            control,
            pause: false,
        }
    }
}

#[async_trait]
impl RecoveryAction for SetConsumerPaused {
    fn name(&self) -> &str {
        if self.pause {
            "pause_consumer"
        } else {
            "resume_consumer"
        }
    }
    async fn execute(&self, _anomaly: &Anomaly) -> Result<String, RecoveryError> {
        if self.pause {
            self.control.pause();
        } else {
            self.control.resume();
        }
        // The poll loop applies it on its next turn; give it a moment and check.
        for _ in 0..50 {
            if self.control.is_paused() == self.pause {
                return Ok(if self.pause {
                    "consumer paused"
                } else {
                    "consumer resumed"
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(failed(
            self.name(),
            "the consumer did not apply it within 1 s",
        ))
    }
}

/// Resets a group's offsets (the group must be idle).
#[derive(Debug)]
pub struct ResetOffsets {
    ops: OffsetOps,
    group: String,
    topics: Vec<String>,
    target: ResetTarget,
    check: MembershipCheck,
}

impl ResetOffsets {
    /// Resets `group` on `topics` to `target`.
    pub fn new(
        ops: OffsetOps,
        group: impl Into<String>,
        topics: Vec<String>,
        target: ResetTarget,
        check: MembershipCheck,
    ) -> Self {
        ResetOffsets {
            ops,
            group: group.into(),
            topics,
            target,
            check,
        }
    }
}

#[async_trait]
impl RecoveryAction for ResetOffsets {
    fn name(&self) -> &str {
        "reset_offsets"
    }
    async fn execute(&self, _anomaly: &Anomaly) -> Result<String, RecoveryError> {
        let plan = self
            .ops
            .plan_reset(&self.group, &self.topics, &[], self.target)
            .await?;
        self.ops.apply(&plan, self.check).await?;
        Ok(format!(
            "{} reset to {} on {} partitions",
            self.group,
            self.target,
            plan.changes.len()
        ))
    }
}

/// Waits, then asks the monitor again: succeeds when the monitor reports the anomaly's key
/// healthy (runbook: "wait and re-check" before doing anything drastic). A monitor that does
/// not report the key at all (a catch-all playbook re-running a monitor that does not watch
/// this anomaly) proves nothing, so that fails too.
pub struct WaitAndRecheck {
    wait: Duration,
    monitor: Arc<dyn Monitor>,
}

impl fmt::Debug for WaitAndRecheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitAndRecheck")
            .field("wait", &self.wait)
            .finish()
    }
}

impl WaitAndRecheck {
    /// Waits `wait`, then re-runs `monitor`.
    pub fn new(wait: Duration, monitor: Arc<dyn Monitor>) -> Self {
        WaitAndRecheck { wait, monitor }
    }
}

#[async_trait]
impl RecoveryAction for WaitAndRecheck {
    fn name(&self) -> &str {
        "wait_and_recheck"
    }
    async fn execute(&self, anomaly: &Anomaly) -> Result<String, RecoveryError> {
        tokio::time::sleep(self.wait).await;
        let signals = self.monitor.observe().await?;
        match signals.iter().find(|s| s.key == anomaly.key) {
            Some(signal) if signal.anomalous => Err(failed(
                self.name(),
                format!("still anomalous: {}", signal.message),
            )),
            Some(_) => Ok(format!("gone after {:?}", self.wait)),
            None => Err(failed(
                self.name(),
                format!(
                    "monitor {} does not report {}",
                    self.monitor.name(),
                    anomaly.key
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Signal;
    use kafka_ops_core::Timestamp;

    /// A monitor reporting fixed signals.
    struct Fixed(Vec<Signal>);

    #[async_trait]
    impl Monitor for Fixed {
        fn name(&self) -> &str {
            "cluster"
        }
        async fn observe(&self) -> Result<Vec<Signal>, RecoveryError> {
            Ok(self.0.clone())
        }
    }

    fn anomaly(key: &str) -> Anomaly {
        Anomaly {
            key: key.into(),
            monitor: "billing".into(),
            message: "stopped".into(),
            checks: 3,
            first_seen: Timestamp::from_millis(0),
            details: serde_json::Value::Null,
            extent: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_recheck_succeeds_only_when_the_monitor_reports_the_key_healthy() {
        let recheck =
            |signals| WaitAndRecheck::new(Duration::from_secs(30), Arc::new(Fixed(signals)));
        let done = recheck(vec![Signal::healthy("poison_record")])
            .execute(&anomaly("poison_record"))
            .await
            .unwrap();
        assert_eq!(done, "gone after 30s");
        let still = recheck(vec![Signal::anomaly("poison_record", "stuck at 5")])
            .execute(&anomaly("poison_record"))
            .await
            .unwrap_err();
        assert!(
            still.to_string().contains("still anomalous: stuck at 5"),
            "{still}"
        );
        // A catch-all playbook re-running a monitor that does not watch this anomaly: its
        // silence is no sign the anomaly is gone.
        let unknown = recheck(vec![Signal::healthy("broker_connectivity")])
            .execute(&anomaly("poison_record"))
            .await
            .unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "wait_and_recheck: monitor cluster does not report poison_record"
        );
    }
}
