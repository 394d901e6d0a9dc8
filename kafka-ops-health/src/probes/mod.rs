//! The built-in probes.

pub mod canary;
pub mod cluster;
pub mod dlq;
pub mod lag;
pub mod liveness;

pub use canary::CanaryProbe;
pub use cluster::{
    BrokerConnectivityProbe, ControllerProbe, PartitionsProbe, ReplicationThresholds,
    RequiredTopicsProbe,
};
pub use dlq::{DeadLetterDepthProbe, DeadLetterTopics};
pub use lag::ConsumerLagProbe;
pub use liveness::{ConsumerLivenessProbe, LoopVitals, LoopVitalsSource};
