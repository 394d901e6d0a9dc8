//! The built-in probes.

mod canary;
mod cluster;
mod dlq;
mod lag;
mod liveness;

pub use canary::{CanaryProbe, RUN_HEADER, SEQUENCE_HEADER};
pub use cluster::{
    BrokerConnectivityProbe, ControllerProbe, PartitionsProbe, ReplicationThresholds,
    RequiredTopicsProbe, is_offline,
};
pub use dlq::{DeadLetterDepthProbe, DeadLetterTopics};
pub use lag::ConsumerLagProbe;
pub use liveness::{ConsumerLivenessProbe, LoopVitals, LoopVitalsSource};
