//! The self-healing engine (runbook 002): monitors on an interval → anomalies that must persist

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::FutureExt;
use kafka_ops_core::handler::panic_message;
use kafka_ops_core::{Clock, SystemClock, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::{AuditRecord, AuditTrail};
use crate::backoff::{Backoff, BackoffPolicy};
use crate::error::RecoveryError;
use crate::notify::{Notification, Notifier};
use kafka_ops_core::{Extent, Severity};

/// One thing a monitor saw: healthy, or an anomaly, under a stable key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// Stable key of what was checked (`consumer_liveness`, `partitions`, `lag:billing`).
    pub key: String,
    /// Whether it is anomalous.
    pub anomalous: bool,
    /// What was seen.
    pub message: String,
    /// How widespread, when the monitor knows.
    pub extent: Option<Extent>,
    /// Facts for actions (a poison record's coordinates, a group name).
    pub details: Value,
}

impl Signal {
    /// A healthy signal.
    pub fn healthy(key: impl Into<String>) -> Self {
        Signal {
            key: key.into(),
            anomalous: false,
            message: String::new(),
            extent: None,
            details: Value::Null,
        }
    }

    /// An anomaly.
    pub fn anomaly(key: impl Into<String>, message: impl Into<String>) -> Self {
        Signal {
            key: key.into(),
            anomalous: true,
            message: message.into(),
            extent: None,
            details: Value::Null,
        }
    }

    /// With its extent.
    pub fn with_extent(mut self, affected: usize, total: usize) -> Self {
        self.extent = Some(Extent { affected, total });
        self
    }

    /// With details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// Watches something and reports signals.
#[async_trait]
pub trait Monitor: Send + Sync {
    /// Its name (used in config and the audit trail), unique among an engine's monitors: the
    /// engine tells anomalies apart by monitor name and signal key, since monitors of one kind
    /// (two health monitors of different groups) report the same keys.
    fn name(&self) -> &str;
    /// Checks once.
    async fn observe(&self) -> Result<Vec<Signal>, RecoveryError>;
}

/// An anomaly the engine acts on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// The signal's key.
    pub key: String,
    /// The monitor that saw it.
    pub monitor: String,
    /// The latest message.
    pub message: String,
    /// Consecutive checks it was seen in.
    pub checks: u32,
    /// When it was first seen in this run of checks.
    pub first_seen: Timestamp,
    /// The latest signal's details.
    pub details: Value,
    /// The latest signal's extent.
    pub extent: Option<Extent>,
}

/// Tries to fix an anomaly. Return `Ok` with what was done when it worked.
#[async_trait]
pub trait RecoveryAction: Send + Sync {
    /// Its name (used in config and the audit trail).
    fn name(&self) -> &str;
    /// Acts once.
    async fn execute(&self, anomaly: &Anomaly) -> Result<String, RecoveryError>;
}

/// Which actions handle which anomalies.
#[derive(Clone)]
pub struct Playbook {
    /// Anomaly keys it handles: exact, a prefix ending in `*`, or `*` for all.
    pub matches: String,
    /// Actions in order; the first that succeeds ends the recovery.
    pub actions: Vec<Arc<dyn RecoveryAction>>,
}

impl fmt::Debug for Playbook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Playbook")
            .field("matches", &self.matches)
            .field(
                "actions",
                &self.actions.iter().map(|a| a.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Playbook {
    fn handles(&self, key: &str) -> bool {
        match self.matches.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => self.matches == key,
        }
    }
}

/// The engine's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// How often monitors run.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Consecutive anomalous checks before acting.
    pub grace_checks: u32,
    /// How long an anomaly must last before acting.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// After acting on an anomaly (or escalating it), leave it alone this long. One that clears
    /// and comes back meanwhile goes through its grace period again, and is not acted on before
    /// the cooldown ends.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// Each action's retries.
    pub retry: BackoffPolicy,
    /// More than this share (percent) affected → notify, do not act.
    pub max_affected_percent: f64,
    /// Decide and record, act on nothing.
    pub dry_run: bool,
    /// How long a shutdown waits for running actions.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            interval: Duration::from_secs(30),
            grace_checks: 3,
            grace_period: Duration::from_secs(60),
            cooldown: Duration::from_secs(300),
            retry: BackoffPolicy::runbook(),
            max_affected_percent: 50.0,
            dry_run: false,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl EngineConfig {
    /// Checks the settings are usable.
    pub fn validate(&self) -> Result<(), RecoveryError> {
        if self.interval.is_zero() {
            return Err(RecoveryError::Config(
                "engine.interval must be positive".into(),
            ));
        }
        if self.grace_checks == 0 {
            return Err(RecoveryError::Config(
                "engine.grace_checks must be at least 1".into(),
            ));
        }
        if !(self.max_affected_percent > 0.0 && self.max_affected_percent <= 100.0) {
            return Err(RecoveryError::Config(format!(
                "engine.max_affected_percent must be in (0, 100], got {}",
                self.max_affected_percent
            )));
        }
        // Elsewhere an unlimited schedule may make sense; here a round runs each action's
        // retries to their end, so a failing action would keep the round from ever ending.
        if self.retry.max_attempts.is_none() && self.retry.max_elapsed.is_none() {
            return Err(RecoveryError::Config(
                "engine.retry needs max_attempts or max_elapsed: without a limit a failing action \
                 is retried for ever and is never escalated"
                    .into(),
            ));
        }
        self.retry.validate()
    }
}

/// What happened to an anomaly in one round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum EngineEvent {
    /// First seen, still inside its grace period, or back (after clearing) before the cooldown
    /// of its last action ended.
    Detected {
        /// The anomaly key.
        key: String,
        /// Checks so far.
        checks: u32,
    },
    /// An action fixed it.
    Recovered {
        /// The anomaly key.
        key: String,
        /// The action that worked.
        action: String,
    },
    /// Nothing worked: notifiers were told.
    Escalated {
        /// The anomaly key.
        key: String,
    },
    /// Too widespread to act on automatically: notifiers were told.
    TooWidespread {
        /// The anomaly key.
        key: String,
    },
    /// Dry run: what would have run.
    WouldAct {
        /// The anomaly key.
        key: String,
        /// The actions.
        actions: Vec<String>,
    },
    /// No playbook handles it: notifiers were told.
    Unhandled {
        /// The anomaly key.
        key: String,
    },
    /// It was anomalous and is healthy again.
    Cleared {
        /// The anomaly key.
        key: String,
    },
    /// A monitor could not check.
    MonitorFailed {
        /// The monitor.
        monitor: String,
        /// Why.
        error: String,
    },
}

/// What the engine tracks an anomaly by: the monitor's name and the signal's key. The key alone
/// is not enough: two monitors reporting one key (the same probe over different groups) would
/// clear each other's anomalies.
type TrackingId = (String, String);

/// An anomaly between its first sighting and its clearing, or cleared while its cooldown runs
/// (then `anomaly.checks` is 0 and the next sighting starts a new run of checks).
#[derive(Debug)]
struct Tracked {
    anomaly: Anomaly,
    first_seen_at: Instant,
    cooldown_until: Option<Instant>,
    /// This run of checks was acted on (or escalated): the cooldown leaves it alone.
    acted: bool,
}

/// The self-healing engine (runbook 002): monitors on an interval → anomalies that must persist
/// through a grace period → recovery actions, each retried on the runbook's policy → escalation
/// through notifiers when recovery fails. With per-anomaly cooldowns, a "too widespread" guard,
/// an append-only audit trail, a dry-run mode and a bounded graceful shutdown.
pub struct Engine {
    config: EngineConfig,
    monitors: Vec<Arc<dyn Monitor>>,
    playbooks: Vec<Playbook>,
    notifiers: Vec<Arc<dyn Notifier>>,
    audit: Option<AuditTrail>,
    clock: Arc<dyn Clock>,
    tracked: Mutex<HashMap<TrackingId, Tracked>>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field(
                "monitors",
                &self.monitors.iter().map(|m| m.name()).collect::<Vec<_>>(),
            )
            .field("playbooks", &self.playbooks)
            .field("notifiers", &self.notifiers.len())
            .finish()
    }
}

impl Engine {
    /// An engine with no monitors, playbooks or notifiers yet.
    pub fn new(config: EngineConfig) -> Result<Self, RecoveryError> {
        config.validate()?;
        Ok(Engine {
            config,
            monitors: Vec::new(),
            playbooks: Vec::new(),
            notifiers: Vec::new(),
            audit: None,
            clock: Arc::new(SystemClock),
            tracked: Mutex::new(HashMap::new()),
        })
    }

    /// Adds a monitor.
    pub fn monitor(mut self, monitor: Arc<dyn Monitor>) -> Self {
        self.monitors.push(monitor);
        self
    }

    /// Adds a playbook (tried after those added before).
    pub fn playbook(mut self, playbook: Playbook) -> Self {
        self.playbooks.push(playbook);
        self
    }

    /// Adds a notifier.
    pub fn notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifiers.push(notifier);
        self
    }

    /// Records every decision in `audit`.
    pub fn audit(mut self, audit: AuditTrail) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Times grace periods, cooldowns and records with `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn record(&self, record: AuditRecord) {
        if let Some(audit) = &self.audit
            && let Err(error) = audit.append(&record)
        {
            tracing::error!(error = %error.describe(), "could not write the audit trail");
        }
    }

    fn audit_record(&self, anomaly: &Anomaly, decision: &str) -> AuditRecord {
        AuditRecord {
            time: self.clock.wall(),
            anomaly: anomaly.key.clone(),
            monitor: anomaly.monitor.clone(),
            message: anomaly.message.clone(),
            decision: decision.to_string(),
            action: None,
            attempt: None,
            result: None,
            dry_run: self.config.dry_run,
        }
    }

    async fn notify(&self, level: Severity, anomaly: &Anomaly, text: String) {
        let notification = Notification {
            level,
            title: format!("kafka-ops: {} ({})", anomaly.key, anomaly.monitor),
            text,
            anomaly: anomaly.key.clone(),
            monitor: anomaly.monitor.clone(),
            time: self.clock.wall(),
        };
        for notifier in &self.notifiers {
            if let Err(error) = unwound(notifier.notify(&notification)).await {
                tracing::error!(notifier = notifier.name(), %error, "notification failed");
                let mut record = self.audit_record(anomaly, "notification failed");
                record.action = Some(notifier.name().to_string());
                record.result = Some(error);
                self.record(record);
            }
        }
    }

    /// One round: runs every monitor, tracks anomalies, and acts on those past their grace
    /// period. Returns what happened.
    pub async fn tick(&self) -> Vec<EngineEvent> {
        let mut events = Vec::new();
        let mut due = Vec::new();
        let now = self.clock.now();
        for monitor in &self.monitors {
            let signals = match unwound(monitor.observe()).await {
                Ok(signals) => signals,
                Err(error) => {
                    tracing::warn!(monitor = monitor.name(), %error, "monitor failed");
                    events.push(EngineEvent::MonitorFailed {
                        monitor: monitor.name().to_string(),
                        error,
                    });
                    continue;
                }
            };
            let mut tracked = self.tracked.lock().unwrap_or_else(PoisonError::into_inner);
            for signal in signals {
                let id = (monitor.name().to_string(), signal.key.clone());
                if !signal.anomalous {
                    let Some(entry) = tracked.get_mut(&id) else {
                        continue;
                    };
                    if entry.anomaly.checks > 0 {
                        events.push(EngineEvent::Cleared {
                            key: signal.key.clone(),
                        });
                        self.record(self.audit_record(&entry.anomaly, "cleared"));
                    }
                    if entry.cooldown_until.is_some_and(|until| now < until) {
                        // Kept for its cooldown, which still holds off acting again too soon;
                        // its run of checks is over, so a return starts its grace anew.
                        entry.anomaly.checks = 0;
                        entry.acted = false;
                    } else {
                        tracked.remove(&id);
                    }
                    continue;
                }
                let entry = tracked.entry(id.clone()).or_insert_with(|| Tracked {
                    anomaly: Anomaly {
                        key: signal.key.clone(),
                        monitor: monitor.name().to_string(),
                        message: signal.message.clone(),
                        checks: 0,
                        first_seen: self.clock.wall(),
                        details: Value::Null,
                        extent: None,
                    },
                    first_seen_at: now,
                    cooldown_until: None,
                    acted: false,
                });
                if entry.anomaly.checks == 0 {
                    // Back after it cleared during its cooldown: a new run of checks.
                    entry.anomaly.first_seen = self.clock.wall();
                    entry.first_seen_at = now;
                }
                entry.anomaly.checks += 1;
                entry.anomaly.message = signal.message.clone();
                entry.anomaly.details = signal.details.clone();
                entry.anomaly.extent = signal.extent;
                let cooling = entry.cooldown_until.is_some_and(|until| now < until);
                if cooling && entry.acted {
                    continue;
                }
                let lasted = now.saturating_duration_since(entry.first_seen_at);
                if cooling
                    || entry.anomaly.checks < self.config.grace_checks
                    || lasted < self.config.grace_period
                {
                    if entry.anomaly.checks == 1 {
                        self.record(self.audit_record(&entry.anomaly, "detected"));
                    }
                    events.push(EngineEvent::Detected {
                        key: signal.key.clone(),
                        checks: entry.anomaly.checks,
                    });
                    continue;
                }
                // Acted on now: no other round touches it until the cooldown ends, which is
                // set again once the handling is over.
                entry.cooldown_until = Some(now + self.config.cooldown);
                entry.acted = true;
                due.push((id, entry.anomaly.clone()));
            }
        }
        for (id, anomaly) in due {
            events.push(self.handle(&anomaly).await);
            // The cooldown runs from the end of the handling: its retries, waits and slow
            // actions can outlast the cooldown, and the next round would act again at once.
            let ended = self.clock.now();
            let mut tracked = self.tracked.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = tracked.get_mut(&id) {
                entry.cooldown_until = Some(ended + self.config.cooldown);
            }
        }
        events
    }

    async fn handle(&self, anomaly: &Anomaly) -> EngineEvent {
        if let Some(extent) = anomaly.extent
            && extent.total > 0
            && extent.affected as f64 * 100.0 / extent.total as f64
                > self.config.max_affected_percent
        {
            self.record(self.audit_record(anomaly, "too widespread: notify, do not act"));
            self.notify(
                Severity::Critical,
                anomaly,
                format!(
                    "{} ({} of {} affected): too widespread to recover automatically; a person must look",
                    anomaly.message, extent.affected, extent.total
                ),
            )
            .await;
            return EngineEvent::TooWidespread {
                key: anomaly.key.clone(),
            };
        }
        let Some(playbook) = self.playbooks.iter().find(|p| p.handles(&anomaly.key)) else {
            self.record(self.audit_record(anomaly, "no playbook: notify"));
            self.notify(
                Severity::Warning,
                anomaly,
                format!("{}: no recovery playbook handles it", anomaly.message),
            )
            .await;
            return EngineEvent::Unhandled {
                key: anomaly.key.clone(),
            };
        };
        let names: Vec<String> = playbook
            .actions
            .iter()
            .map(|a| a.name().to_string())
            .collect();
        if self.config.dry_run {
            self.record(
                self.audit_record(anomaly, &format!("dry run: would run {}", names.join(", "))),
            );
            return EngineEvent::WouldAct {
                key: anomaly.key.clone(),
                actions: names,
            };
        }
        let mut last_error = None;
        for action in &playbook.actions {
            let mut backoff =
                Backoff::new(self.config.retry, self.clock.clone(), fastrand::u64(..));
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                let result = unwound(action.execute(anomaly)).await;
                let mut record = self.audit_record(anomaly, "act");
                record.action = Some(action.name().to_string());
                record.attempt = Some(attempt);
                record.result = Some(match &result {
                    Ok(done) => format!("ok: {done}"),
                    Err(error) => format!("failed: {error}"),
                });
                self.record(record);
                match result {
                    Ok(done) => {
                        tracing::info!(anomaly = %anomaly.key, monitor = %anomaly.monitor, action = action.name(), attempt, %done, "recovered");
                        metrics::counter!("kafka_ops_recoveries_total", "result" => "recovered")
                            .increment(1);
                        return EngineEvent::Recovered {
                            key: anomaly.key.clone(),
                            action: action.name().to_string(),
                        };
                    }
                    Err(error) => {
                        tracing::warn!(anomaly = %anomaly.key, monitor = %anomaly.monitor, action = action.name(), attempt, %error, "recovery attempt failed");
                        last_error = Some(error);
                        match backoff.next_delay() {
                            Some(delay) => tokio::time::sleep(delay).await,
                            None => break,
                        }
                    }
                }
            }
        }
        metrics::counter!("kafka_ops_recoveries_total", "result" => "escalated").increment(1);
        self.record(self.audit_record(anomaly, "escalate"));
        self.notify(
            Severity::Critical,
            anomaly,
            format!(
                "{}: automatic recovery failed after {} ({}); escalating{}",
                anomaly.message,
                names.join(", "),
                match self.config.retry.max_attempts {
                    Some(n) => format!("{} attempts each", n + 1),
                    None => "retries exhausted".into(),
                },
                last_error.map_or_else(String::new, |e| format!(". Last error: {e}"))
            ),
        )
        .await;
        EngineEvent::Escalated {
            key: anomaly.key.clone(),
        }
    }

    /// Runs rounds every interval until `shutdown` resolves; a round running then may finish
    /// within the shutdown timeout (its actions and notifications included), then the engine
    /// stops. `on_events` sees each round's events as they happen.
    pub async fn run(
        &self,
        shutdown: impl std::future::Future<Output = ()>,
        mut on_events: impl FnMut(&[EngineEvent]) + Send,
    ) {
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = ticker.tick() => {}
            }
            let round = self.tick();
            tokio::pin!(round);
            let events = tokio::select! {
                events = &mut round => events,
                _ = &mut shutdown => {
                    tracing::info!(timeout = ?self.config.shutdown_timeout, "shutting down; letting the running round finish");
                    match tokio::time::timeout(self.config.shutdown_timeout, &mut round).await {
                        Ok(events) => on_events(&events),
                        Err(_) => tracing::warn!("the running round did not finish within the shutdown timeout"),
                    }
                    break;
                }
            };
            on_events(&events);
        }
    }
}

/// Runs a monitor's, action's or notifier's call, its error or panic described: a panic in a
/// plug-in is that call's failure, not the end of the engine's task (which would stop every
/// monitor with it).
async fn unwound<T>(call: impl Future<Output = Result<T, RecoveryError>>) -> Result<T, String> {
    match AssertUnwindSafe(call).catch_unwind().await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.describe()),
        Err(panic) => Err(format!("panicked: {}", panic_message(panic.as_ref()))),
    }
}

#[cfg(test)]
mod tests;
