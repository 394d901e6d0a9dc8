//! YAML configuration for the self-healing engine, with validation that names every bad field,
//! and a plugin registry so monitors, actions and notifiers are named by type in the file.
//!
//! ```yaml
//! engine: { interval: 10s, grace_checks: 3, grace_period: 30s, cooldown: 5m }
//! cluster: { bootstrap: "kafka:9092" }
//! monitors:
//!   - { name: cluster, type: health, probes: [broker_connectivity, partitions], expected_brokers: 3 }
//! playbooks:
//!   - matches: "broker_*"
//!     actions: [{ type: wait_and_recheck, wait: 30s, monitor: cluster }]
//! notifiers: [{ type: log }, { type: webhook, url: "https://hooks.example.com/T000" }]
//! audit: { path: self-healing-audit.jsonl }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kafka_ops_core::dead_letter::{Envelope, TopicNaming};
use kafka_ops_core::handler::ConsumerControl;
use kafka_ops_core::kafka::KafkaCluster;
use kafka_ops_core::kafka::KafkaDeadLetterSink;
use rdkafka::ClientConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::actions::{
    ResetOffsets, RestartConsumer, RestartFuture, SetConsumerPaused, WaitAndRecheck,
};
use crate::audit::AuditTrail;
use crate::engine::{Engine, EngineConfig, Monitor, Playbook, RecoveryAction};
use crate::error::RecoveryError;
use crate::notify::{LogNotifier, Notifier};
use crate::offsets::{MembershipCheck, OffsetOps, ResetTarget};
use crate::poison::{PoisonRecordMonitor, SkipPoisonRecord};

/// Where the cluster is (omitted: the application decides, e.g. an embedded mock cluster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Extra librdkafka settings (SASL, TLS); values are never printed.
    #[serde(default, skip_serializing)]
    pub config: BTreeMap<String, String>,
}

impl ClusterSettings {
    /// The client configuration these settings describe.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = kafka_ops_core::kafka::client_config(&self.bootstrap);
        for (key, value) in &self.config {
            config.set(key, value);
        }
        config
    }
}

/// A monitor, action or notifier as the file names it: its type, an optional name, and the
/// type's own settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentSpec {
    /// The registered type.
    #[serde(rename = "type")]
    pub kind: String,
    /// A name to refer to it by (monitors).
    #[serde(default)]
    pub name: Option<String>,
    /// The type's settings.
    #[serde(flatten)]
    pub params: serde_json::Map<String, Value>,
}

/// Which actions handle which anomalies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaybookSpec {
    /// Anomaly keys: exact, a prefix ending in `*`, or `*`.
    pub matches: String,
    /// Actions in order.
    pub actions: Vec<ComponentSpec>,
}

/// Where the audit trail goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// A JSON-lines file, appended to.
    pub path: PathBuf,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfHealingConfig {
    /// Engine settings.
    #[serde(default)]
    pub engine: EngineConfig,
    /// The cluster.
    #[serde(default)]
    pub cluster: Option<ClusterSettings>,
    /// Monitors.
    #[serde(default)]
    pub monitors: Vec<ComponentSpec>,
    /// Playbooks.
    #[serde(default)]
    pub playbooks: Vec<PlaybookSpec>,
    /// Notifiers.
    #[serde(default)]
    pub notifiers: Vec<ComponentSpec>,
    /// The audit trail.
    #[serde(default)]
    pub audit: Option<AuditSettings>,
}

/// Every problem a configuration has, one per line with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblems(pub Vec<String>);

impl fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, problem) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str("\n")?;
            }
            f.write_str(problem)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigProblems {}

impl SelfHealingConfig {
    /// Parses YAML text; a syntax or type error names its line, column and field.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigProblems> {
        serde_yaml_ng::from_str(text).map_err(|e| ConfigProblems(vec![e.to_string()]))
    }

    /// Reads and parses a file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigProblems> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigProblems(vec![format!("{}: {e}", path.display())]))?;
        Self::from_yaml(&text).map_err(|p| {
            ConfigProblems(
                p.0.into_iter()
                    .map(|m| format!("{}: {m}", path.display()))
                    .collect(),
            )
        })
    }
}

/// What factories may use to build components.
#[derive(Clone, Default)]
pub struct BuildContext {
    /// The cluster client.
    pub cluster: Option<Arc<KafkaCluster>>,
    /// Its configuration (for clients the components make).
    pub client_config: Option<ClientConfig>,
    /// The consumer the engine looks after, for pause/resume.
    pub consumer: Option<Arc<dyn ConsumerControl>>,
    /// How to restart that consumer.
    pub restart: Option<Arc<dyn Fn() -> RestartFuture + Send + Sync>>,
    /// Monitors built so far, by name.
    pub monitors: BTreeMap<String, Arc<dyn Monitor>>,
}

impl fmt::Debug for BuildContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildContext")
            .field("cluster", &self.cluster.is_some())
            .field("consumer", &self.consumer.is_some())
            .field("monitors", &self.monitors.keys().collect::<Vec<_>>())
            .finish()
    }
}

type Params = serde_json::Map<String, Value>;

/// Builds one kind of component from its settings.
pub trait Factory<T: ?Sized>: Send + Sync {
    /// Checks the settings without building anything.
    fn validate(&self, params: &Params) -> Result<(), String>;
    /// Builds the component named `name`.
    fn build(&self, name: &str, params: &Params, ctx: &BuildContext) -> Result<Arc<T>, String>;
}

/// A factory over a typed settings struct: validation is deserialization (unknown and
/// mistyped fields are named) plus the struct's own checks.
struct Typed<P, B> {
    build: B,
    _params: std::marker::PhantomData<fn() -> P>,
}

/// Settings that check themselves beyond their types.
pub trait CheckedParams: DeserializeOwned {
    /// Semantic checks.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

fn parse<P: DeserializeOwned>(params: &Params) -> Result<P, String> {
    serde_json::from_value(Value::Object(params.clone())).map_err(|e| e.to_string())
}

impl<T: ?Sized, P: CheckedParams, B> Factory<T> for Typed<P, B>
where
    B: Fn(&str, P, &BuildContext) -> Result<Arc<T>, String> + Send + Sync,
{
    fn validate(&self, params: &Params) -> Result<(), String> {
        parse::<P>(params)?.check()
    }
    fn build(&self, name: &str, params: &Params, ctx: &BuildContext) -> Result<Arc<T>, String> {
        let params: P = parse(params)?;
        params.check()?;
        (self.build)(name, params, ctx)
    }
}

fn typed<T: ?Sized + 'static, P: CheckedParams + 'static>(
    build: impl Fn(&str, P, &BuildContext) -> Result<Arc<T>, String> + Send + Sync + 'static,
) -> Box<dyn Factory<T>> {
    Box::new(Typed {
        build,
        _params: std::marker::PhantomData,
    })
}

/// Named factories for monitors, actions and notifiers.
pub struct Registry {
    monitors: BTreeMap<String, Box<dyn Factory<dyn Monitor>>>,
    actions: BTreeMap<String, Box<dyn Factory<dyn RecoveryAction>>>,
    notifiers: BTreeMap<String, Box<dyn Factory<dyn Notifier>>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("monitors", &self.monitors.keys().collect::<Vec<_>>())
            .field("actions", &self.actions.keys().collect::<Vec<_>>())
            .field("notifiers", &self.notifiers.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}
impl CheckedParams for NoParams {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitParams {
    #[serde(with = "humantime_serde")]
    wait: Duration,
    monitor: String,
}
impl CheckedParams for WaitParams {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetParams {
    group: String,
    topics: Vec<String>,
    target: String,
    #[serde(default)]
    allow_unverified_membership: bool,
}
impl CheckedParams for ResetParams {
    fn check(&self) -> Result<(), String> {
        if self.topics.is_empty() {
            return Err("topics: at least one topic".into());
        }
        self.target
            .parse::<ResetTarget>()
            .map(|_| ())
            .map_err(|e| format!("target: {e}"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SkipPoisonParams {
    /// The dead-letter topic is the source topic plus this (`.dlq`), or…
    #[serde(default)]
    dlq_suffix: Option<String>,
    /// …this one topic for every source.
    #[serde(default)]
    dlq_topic: Option<String>,
    /// Start the consumer again once the record is skipped (it needs the application's restart
    /// hook).
    #[serde(default = "yes")]
    restart: bool,
}
fn yes() -> bool {
    true
}
impl CheckedParams for SkipPoisonParams {
    fn check(&self) -> Result<(), String> {
        match (&self.dlq_suffix, &self.dlq_topic) {
            (Some(_), Some(_)) => Err("dlq_suffix and dlq_topic: give one, not both".into()),
            (Some(suffix), None) if suffix.is_empty() => {
                Err("dlq_suffix: must not be empty (the source topic itself)".into())
            }
            (None, Some(topic)) if topic.trim().is_empty() => {
                Err("dlq_topic: must not be empty".into())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(feature = "webhook")]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookParams {
    url: String,
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    timeout: Duration,
}
#[cfg(feature = "webhook")]
fn default_webhook_timeout() -> Duration {
    Duration::from_secs(10)
}
#[cfg(feature = "webhook")]
impl CheckedParams for WebhookParams {
    fn check(&self) -> Result<(), String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!("url: must be http(s), got {:?}", self.url));
        }
        if self.timeout.is_zero() {
            return Err("timeout: must be positive".into());
        }
        Ok(())
    }
}

#[cfg(feature = "smtp")]
impl CheckedParams for crate::notify::SmtpSettings {
    fn check(&self) -> Result<(), String> {
        crate::notify::SmtpNotifier::new(self)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn need<T: Clone>(value: &Option<T>, what: &str) -> Result<T, String> {
    value
        .clone()
        .ok_or_else(|| format!("needs {what}, which this application does not provide"))
}

impl Default for Registry {
    fn default() -> Self {
        Self::with_builtins()
    }
}

impl Registry {
    /// A registry without any type.
    pub fn empty() -> Self {
        Registry {
            monitors: BTreeMap::new(),
            actions: BTreeMap::new(),
            notifiers: BTreeMap::new(),
        }
    }

    /// The built-in types: monitors `poison_record`, `health` (feature `health`); actions
    /// `wait_and_recheck`, `reset_offsets`, `pause_consumer`, `resume_consumer`,
    /// `restart_consumer`, `skip_poison_record`; notifiers `log`, `webhook` (feature `webhook`),
    /// `smtp` (feature
    /// `smtp`).
    pub fn with_builtins() -> Self {
        let mut registry = Self::empty();
        #[cfg(feature = "health")]
        registry.register_monitor("health", health::factory());
        registry.register_monitor(
            "poison_record",
            typed(|name, _: NoParams, ctx| {
                let consumer = need(&ctx.consumer, "a consumer handle")?;
                Ok(Arc::new(PoisonRecordMonitor::new(name, consumer)) as Arc<dyn Monitor>)
            }),
        );
        registry.register_action(
            "skip_poison_record",
            typed(|_, p: SkipPoisonParams, ctx| {
                let config = need(&ctx.client_config, "a cluster")?;
                let sink = KafkaDeadLetterSink::new(&config).map_err(|e| e.to_string())?;
                let mut envelope = Envelope::new("", "kafka-ops-self-healing");
                envelope.naming = match (p.dlq_suffix, p.dlq_topic) {
                    (_, Some(topic)) => TopicNaming::Fixed(topic),
                    (Some(suffix), None) => TopicNaming::Suffix(suffix),
                    (None, None) => TopicNaming::dlq(),
                };
                let mut action =
                    SkipPoisonRecord::new(config, Arc::new(sink)).with_envelope(envelope);
                if p.restart {
                    action = action.then_restart(need(&ctx.restart, "a consumer restart hook")?);
                }
                Ok(Arc::new(action) as Arc<dyn RecoveryAction>)
            }),
        );
        registry.register_action(
            "wait_and_recheck",
            typed(|_, p: WaitParams, ctx| {
                let monitor = ctx
                    .monitors
                    .get(&p.monitor)
                    .cloned()
                    .ok_or_else(|| format!("monitor: no monitor named {:?}", p.monitor))?;
                Ok(Arc::new(WaitAndRecheck::new(p.wait, monitor)) as Arc<dyn RecoveryAction>)
            }),
        );
        registry.register_action(
            "reset_offsets",
            typed(|_, p: ResetParams, ctx| {
                let cluster = need(&ctx.cluster, "a cluster")?;
                let config = need(&ctx.client_config, "a cluster")?;
                let target = p.target.parse::<ResetTarget>().map_err(|e| e.to_string())?;
                let check = if p.allow_unverified_membership {
                    MembershipCheck::SkipWhenUnsupported
                } else {
                    MembershipCheck::Required
                };
                Ok(Arc::new(ResetOffsets::new(
                    OffsetOps::new(cluster, config),
                    p.group,
                    p.topics,
                    target,
                    check,
                )) as Arc<dyn RecoveryAction>)
            }),
        );
        registry.register_action(
            "pause_consumer",
            typed(|_, _: NoParams, ctx| {
                Ok(Arc::new(SetConsumerPaused::pause(need(
                    &ctx.consumer,
                    "a consumer handle",
                )?)) as Arc<dyn RecoveryAction>)
            }),
        );
        registry.register_action(
            "resume_consumer",
            typed(|_, _: NoParams, ctx| {
                Ok(Arc::new(SetConsumerPaused::resume(need(
                    &ctx.consumer,
                    "a consumer handle",
                )?)) as Arc<dyn RecoveryAction>)
            }),
        );
        registry.register_action(
            "restart_consumer",
            typed(|_, _: NoParams, ctx| {
                let restart = need(&ctx.restart, "a consumer restart hook")?;
                Ok(Arc::new(RestartConsumer::new(move || restart())) as Arc<dyn RecoveryAction>)
            }),
        );
        registry.register_notifier(
            "log",
            typed(|_, _: NoParams, _| Ok(Arc::new(LogNotifier) as Arc<dyn Notifier>)),
        );
        #[cfg(feature = "webhook")]
        registry.register_notifier(
            "webhook",
            typed(|_, p: WebhookParams, _| {
                crate::notify::WebhookNotifier::new(p.url, p.timeout)
                    .map(|n| Arc::new(n) as Arc<dyn Notifier>)
                    .map_err(|e| e.to_string())
            }),
        );
        #[cfg(feature = "smtp")]
        registry.register_notifier(
            "smtp",
            typed(|_, p: crate::notify::SmtpSettings, _| {
                crate::notify::SmtpNotifier::new(&p)
                    .map(|n| Arc::new(n) as Arc<dyn Notifier>)
                    .map_err(|e| e.to_string())
            }),
        );
        registry
    }

    /// Registers a monitor type.
    pub fn register_monitor(&mut self, kind: &str, factory: Box<dyn Factory<dyn Monitor>>) {
        self.monitors.insert(kind.to_string(), factory);
    }

    /// Registers an action type.
    pub fn register_action(&mut self, kind: &str, factory: Box<dyn Factory<dyn RecoveryAction>>) {
        self.actions.insert(kind.to_string(), factory);
    }

    /// Registers a notifier type.
    pub fn register_notifier(&mut self, kind: &str, factory: Box<dyn Factory<dyn Notifier>>) {
        self.notifiers.insert(kind.to_string(), factory);
    }

    /// Every problem in `config`, each with where it is; empty when it is usable.
    pub fn validate(&self, config: &SelfHealingConfig) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = config.engine.validate() {
            problems.push(format!("engine: {e}"));
        }
        if let Some(cluster) = &config.cluster
            && cluster.bootstrap.trim().is_empty()
        {
            problems.push("cluster.bootstrap: must not be empty".into());
        }
        if config.monitors.is_empty() {
            problems.push("monitors: at least one monitor".into());
        }
        let mut names = Vec::new();
        for (n, spec) in config.monitors.iter().enumerate() {
            let at = format!("monitors[{n}] ({})", spec.kind);
            match self.monitors.get(&spec.kind) {
                None => problems.push(format!(
                    "{at}: unknown type; known: {}",
                    known(&self.monitors)
                )),
                Some(factory) => {
                    if let Err(e) = factory.validate(&spec.params) {
                        problems.push(format!("{at}: {e}"));
                    }
                }
            }
            let name = spec.name.clone().unwrap_or_else(|| spec.kind.clone());
            if names.contains(&name) {
                problems.push(format!("{at}: the name {name:?} is used twice"));
            }
            names.push(name);
        }
        for (n, playbook) in config.playbooks.iter().enumerate() {
            if playbook.actions.is_empty() {
                problems.push(format!("playbooks[{n}].actions: at least one action"));
            }
            for (m, spec) in playbook.actions.iter().enumerate() {
                let at = format!("playbooks[{n}].actions[{m}] ({})", spec.kind);
                match self.actions.get(&spec.kind) {
                    None => problems.push(format!(
                        "{at}: unknown type; known: {}",
                        known(&self.actions)
                    )),
                    Some(factory) => {
                        if let Err(e) = factory.validate(&spec.params) {
                            problems.push(format!("{at}: {e}"));
                        }
                    }
                }
                if let Some(Value::String(monitor)) = spec.params.get("monitor")
                    && !names.contains(monitor)
                {
                    problems.push(format!("{at}: monitor: no monitor named {monitor:?}"));
                }
            }
        }
        for (n, spec) in config.notifiers.iter().enumerate() {
            let at = format!("notifiers[{n}] ({})", spec.kind);
            match self.notifiers.get(&spec.kind) {
                None => problems.push(format!(
                    "{at}: unknown type; known: {}",
                    known(&self.notifiers)
                )),
                Some(factory) => {
                    if let Err(e) = factory.validate(&spec.params) {
                        problems.push(format!("{at}: {e}"));
                    }
                }
            }
        }
        problems
    }

    /// Builds the engine `config` describes (validating it first).
    pub fn build(
        &self,
        config: &SelfHealingConfig,
        mut ctx: BuildContext,
    ) -> Result<Engine, RecoveryError> {
        let problems = self.validate(config);
        if !problems.is_empty() {
            return Err(RecoveryError::Config(ConfigProblems(problems).to_string()));
        }
        let fail = |at: String, e: String| RecoveryError::Config(format!("{at}: {e}"));
        let mut engine = Engine::new(config.engine)?;
        for (n, spec) in config.monitors.iter().enumerate() {
            let name = spec.name.clone().unwrap_or_else(|| spec.kind.clone());
            let factory = &self.monitors[&spec.kind];
            let monitor = factory
                .build(&name, &spec.params, &ctx)
                .map_err(|e| fail(format!("monitors[{n}] ({})", spec.kind), e))?;
            ctx.monitors.insert(name, monitor.clone());
            engine = engine.monitor(monitor);
        }
        for (n, playbook) in config.playbooks.iter().enumerate() {
            let mut actions = Vec::new();
            for (m, spec) in playbook.actions.iter().enumerate() {
                let action = self.actions[&spec.kind]
                    .build(&spec.kind, &spec.params, &ctx)
                    .map_err(|e| fail(format!("playbooks[{n}].actions[{m}] ({})", spec.kind), e))?;
                actions.push(action);
            }
            engine = engine.playbook(Playbook {
                matches: playbook.matches.clone(),
                actions,
            });
        }
        for (n, spec) in config.notifiers.iter().enumerate() {
            let notifier = self.notifiers[&spec.kind]
                .build(&spec.kind, &spec.params, &ctx)
                .map_err(|e| fail(format!("notifiers[{n}] ({})", spec.kind), e))?;
            engine = engine.notifier(notifier);
        }
        if let Some(audit) = &config.audit {
            engine = engine.audit(AuditTrail::open(&audit.path)?);
        }
        Ok(engine)
    }
}

fn known<T: ?Sized>(map: &BTreeMap<String, Box<dyn Factory<T>>>) -> String {
    map.keys().cloned().collect::<Vec<_>>().join(", ")
}

#[cfg(feature = "health")]
mod health;

#[cfg(test)]
mod tests;
