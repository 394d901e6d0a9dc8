//! The rolling-restart gate: may this broker be stopped now?
//!
//! [`safe_to_restart`] reads what it needs from the cluster — the metadata, every topic's
//! `min.insync.replicas` and the [control plane](crate::control_plane) — and [`evaluate`]
//! judges it, purely, so every rule is tested exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kafka_ops_core::ErrorClass;
use kafka_ops_core::cluster::{ClusterMetadata, ConfigQuery, MetadataQuery};
use serde::{Deserialize, Serialize};

use crate::control_plane::ControlPlane;
use crate::error::HealthError;
use crate::probes::is_offline;

/// How many partitions a reason lists by name.
const LISTED: usize = 10;

/// Why a broker may not be restarted now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
#[non_exhaustive]
pub enum RestartRefusal {
    /// The metadata does not list the broker (it is down already, or the id is wrong).
    UnknownBroker {
        /// The brokers it does list.
        listed: Vec<i32>,
    },
    /// ZooKeeper mode: the broker is the controller; move the controller first.
    IsController,
    /// ZooKeeper mode (or a cluster whose mode cannot be read): the metadata names no
    /// controller that is a listed broker, so it cannot be ruled out.
    ControllerUnknown,
    /// The brokers' configuration could not be read (DescribeConfigs refused, failed or not
    /// answered), so whether the cluster runs KRaft, and whether the node is a controller voter
    /// the quorum's majority needs, is unknown. The metadata's controller says nothing there
    /// (KRaft brokers name a random live broker). Check the quorum with
    /// `kafka-metadata-quorum describe --status` and pass
    /// [`allow_unverified_quorum`](RestartGateOptions::allow_unverified_quorum); the gate then
    /// judges as in ZooKeeper mode, so it still refuses to stop the broker the metadata names as
    /// controller (in KRaft a random live broker: ask again).
    ControlPlaneUnknown {
        /// Why the configuration could not be read (what the brokers asked answered), when
        /// known.
        cause: Option<String>,
    },
    /// KRaft in combined mode: the node is a controller voter, and without it the voters that
    /// are up would not be a majority.
    QuorumAtRisk {
        /// Every voter.
        voters: Vec<i32>,
        /// The voters up now.
        up: Vec<i32>,
    },
    /// KRaft in combined mode with voters this gate cannot see (a dynamic quorum, formatted
    /// with `--standalone` or `--initial-controllers`, has no `controller.quorum.voters`): the
    /// node may be a voter whose loss costs the quorum its majority. Check the quorum with
    /// `kafka-metadata-quorum describe --status` and pass
    /// [`allow_unverified_quorum`](RestartGateOptions::allow_unverified_quorum).
    QuorumUnverified,
    /// Partitions are under-replicated somewhere in the cluster.
    UnderReplicated {
        /// How many.
        count: usize,
        /// The first few, as `topic/partition`.
        examples: Vec<String>,
    },
    /// Partitions are offline already.
    Offline {
        /// How many.
        count: usize,
        /// The first few.
        examples: Vec<String>,
    },
    /// Partitions whose in-sync replicas other than this broker are too few to carry on
    /// without it.
    NoInSyncReplicaElsewhere {
        /// In-sync replicas needed elsewhere (the highest `min.insync.replicas` among the
        /// partitions listed, at least 1).
        required: usize,
        /// How many partitions fall short.
        count: usize,
        /// The first few.
        examples: Vec<String>,
    },
    /// Partitions whose ISR includes the broker, of topics whose `min.insync.replicas` could
    /// not be read (the cluster refused DescribeConfigs, or answered without it): whether they
    /// keep enough in-sync replicas without the broker is unknown. Pass
    /// [`min_insync_replicas`](RestartGateOptions::min_insync_replicas) to decide.
    MinInsyncReplicasUnknown {
        /// How many partitions.
        count: usize,
        /// The first few.
        examples: Vec<String>,
    },
}

impl fmt::Display for RestartRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartRefusal::UnknownBroker { listed } => {
                write!(f, "the broker is not among the listed brokers {listed:?}")
            }
            RestartRefusal::IsController => {
                f.write_str("the broker is the controller; move the controller first")
            }
            RestartRefusal::ControllerUnknown => {
                f.write_str("no known controller, so the broker may be it")
            }
            RestartRefusal::ControlPlaneUnknown { cause } => {
                f.write_str("the brokers' configuration cannot be read")?;
                if let Some(cause) = cause {
                    write!(f, " ({cause})")?;
                }
                f.write_str(
                    ", so the broker may be a KRaft controller voter the quorum's majority needs \
                     (check the quorum, then allow it)",
                )
            }
            RestartRefusal::QuorumAtRisk { voters, up } => write!(
                f,
                "the broker is a KRaft controller voter and only voters {up:?} of {voters:?} are up: \
                 without it the quorum loses its majority"
            ),
            RestartRefusal::QuorumUnverified => f.write_str(
                "KRaft combined mode with controller voters that cannot be read: the broker may \
                 be a voter the quorum's majority needs (check the quorum, then allow it)",
            ),
            RestartRefusal::UnderReplicated { count, examples } => write!(
                f,
                "{count} under-replicated partitions in the cluster: {}",
                examples.join(", ")
            ),
            RestartRefusal::Offline { count, examples } => {
                write!(f, "{count} offline partitions: {}", examples.join(", "))
            }
            RestartRefusal::NoInSyncReplicaElsewhere {
                required,
                count,
                examples,
            } => write!(
                f,
                "{count} partitions would keep fewer than {required} in-sync replicas without it: {}",
                examples.join(", ")
            ),
            RestartRefusal::MinInsyncReplicasUnknown { count, examples } => write!(
                f,
                "the min.insync.replicas of {count} partitions it is in sync for could not be \
                 read (pass it to decide): {}",
                examples.join(", ")
            ),
        }
    }
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartVerdict {
    /// The broker asked about.
    pub broker: i32,
    /// Whether it may be stopped now.
    pub safe: bool,
    /// Every reason it may not (empty when safe).
    pub refusals: Vec<RestartRefusal>,
    /// Partitions it leads.
    pub leads: usize,
    /// Partitions whose in-sync replica set includes it.
    pub in_sync_for: usize,
    /// How the cluster is controlled, as it reported.
    pub control_plane: ControlPlane,
}

/// Options for [`safe_to_restart`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RestartGateOptions {
    /// Overrides every topic's `min.insync.replicas`, which is otherwise read from the topic
    /// configuration (where it cannot be read, the gate refuses with
    /// [`RestartRefusal::MinInsyncReplicasUnknown`] rather than guess).
    pub min_insync_replicas: Option<usize>,
    /// Do not refuse a node whose quorum cannot be seen — KRaft in combined mode without
    /// static voters ([`RestartRefusal::QuorumUnverified`]), or a cluster whose brokers'
    /// configuration cannot be read ([`RestartRefusal::ControlPlaneUnknown`]): the operator
    /// checked it.
    #[serde(default)]
    pub allow_unverified_quorum: bool,
}

fn examples(names: &[String]) -> Vec<String> {
    names.iter().take(LISTED).cloned().collect()
}

/// The maintenance runbook's checklist before stopping `broker`: no under-replicated or offline
/// partitions in the cluster; the control plane keeps working without it (KRaft: the voters
/// left up are a majority; ZooKeeper: it is not the controller); and every partition whose ISR
/// includes it keeps at least its topic's `min.insync.replicas` in-sync replicas elsewhere (so
/// `acks=all` producers are not refused). The verdict lists every reason it refuses.
pub async fn safe_to_restart<C>(
    cluster: &C,
    broker: i32,
    options: RestartGateOptions,
) -> Result<RestartVerdict, HealthError>
where
    C: MetadataQuery + ConfigQuery + ?Sized,
{
    let metadata = cluster.metadata(&[]).await?;
    let (control, unknown_because) = ControlPlane::discover_explained(cluster, &metadata).await;
    let min_insync = if options.min_insync_replicas.is_some() {
        BTreeMap::new()
    } else {
        topic_min_insync_replicas(cluster, &metadata).await
    };
    let mut verdict = evaluate(&metadata, &control, &min_insync, broker, options);
    for refusal in &mut verdict.refusals {
        if let RestartRefusal::ControlPlaneUnknown { cause } = refusal {
            cause.clone_from(&unknown_because);
        }
    }
    Ok(verdict)
}

/// Every topic's `min.insync.replicas`, in one DescribeConfigs request (asked once more after a
/// transient failure: the broker that took it may be the one a rolling restart just stopped);
/// topics the broker cannot answer for are left out (empty when it refuses the request).
pub async fn topic_min_insync_replicas(
    cluster: &(impl ConfigQuery + ?Sized),
    metadata: &ClusterMetadata,
) -> BTreeMap<String, usize> {
    let topics: Vec<String> = metadata
        .topics
        .iter()
        .filter(|t| t.error.is_none())
        .map(|t| t.name.to_string())
        .collect();
    let mut answer = cluster.topic_configs(&topics).await;
    if let Err(error) = &answer
        && error.class() == ErrorClass::Transient
    {
        tracing::debug!(%error, "cannot read topic configurations; asking again");
        answer = cluster.topic_configs(&topics).await;
    }
    match answer {
        Ok(configs) => configs
            .into_iter()
            .filter_map(|(topic, entries)| {
                let value = entries.ok()?.get("min.insync.replicas")?.clone()?;
                Some((topic, value.trim().parse().ok()?))
            })
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "cannot read topic configurations: min.insync.replicas unknown");
            BTreeMap::new()
        }
    }
}

/// The gate's rules over what [`safe_to_restart`] read (see there).
pub fn evaluate(
    metadata: &ClusterMetadata,
    control: &ControlPlane,
    min_insync_replicas: &BTreeMap<String, usize>,
    broker: i32,
    options: RestartGateOptions,
) -> RestartVerdict {
    let brokers: BTreeSet<i32> = metadata.brokers.iter().map(|b| b.id).collect();
    let mut refusals = Vec::new();
    if !brokers.contains(&broker) {
        refusals.push(RestartRefusal::UnknownBroker {
            listed: brokers.iter().copied().collect(),
        });
    }
    match control {
        // The metadata's controller is a random live broker in KRaft: only the quorum counts.
        ControlPlane::KRaft { combined, .. } => match control.quorum(metadata) {
            Some(quorum)
                if quorum.voters.contains(&broker) && !quorum.survives_stopping(broker) =>
            {
                refusals.push(RestartRefusal::QuorumAtRisk {
                    voters: quorum.voters,
                    up: quorum.up,
                });
            }
            // Brokers alone (controllers elsewhere) are not voters.
            None if *combined && !options.allow_unverified_quorum => {
                refusals.push(RestartRefusal::QuorumUnverified);
            }
            Some(_) | None => {}
        },
        // Unread, the node may be a KRaft voter, and the metadata's controller (random in
        // KRaft) would only be a guess.
        ControlPlane::Unknown if !options.allow_unverified_quorum => {
            refusals.push(RestartRefusal::ControlPlaneUnknown { cause: None });
        }
        ControlPlane::ZooKeeper | ControlPlane::Unknown => match metadata.controller {
            Some(id) if id == broker => refusals.push(RestartRefusal::IsController),
            Some(id) if brokers.contains(&id) => {}
            _ => refusals.push(RestartRefusal::ControllerUnknown),
        },
    }
    let (mut under, mut offline, mut short) = (Vec::new(), Vec::new(), Vec::new());
    let mut unknown = Vec::new();
    let (mut leads, mut in_sync_for, mut required_max) = (0, 0, 1);
    for topic in metadata.topics.iter().filter(|t| t.error.is_none()) {
        let required = options
            .min_insync_replicas
            .or_else(|| min_insync_replicas.get(&*topic.name).copied())
            .map(|required| required.max(1));
        for partition in &topic.partitions {
            let name = format!("{}/{}", topic.name, partition.id);
            if is_offline(partition, &brokers) {
                offline.push(name.clone());
            } else if partition.is_under_replicated() {
                under.push(name.clone());
            }
            if partition.leader == Some(broker) {
                leads += 1;
            }
            if partition.isr.contains(&broker) {
                in_sync_for += 1;
                let elsewhere = partition.isr.iter().filter(|id| **id != broker).count();
                match required {
                    // Any topic needs one in-sync replica left to stay online.
                    None if elsewhere == 0 => short.push(name),
                    None => unknown.push(name),
                    Some(required) if elsewhere < required => {
                        short.push(name);
                        required_max = required_max.max(required);
                    }
                    Some(_) => {}
                }
            }
        }
    }
    if !under.is_empty() {
        refusals.push(RestartRefusal::UnderReplicated {
            count: under.len(),
            examples: examples(&under),
        });
    }
    if !offline.is_empty() {
        refusals.push(RestartRefusal::Offline {
            count: offline.len(),
            examples: examples(&offline),
        });
    }
    if !short.is_empty() {
        refusals.push(RestartRefusal::NoInSyncReplicaElsewhere {
            required: required_max,
            count: short.len(),
            examples: examples(&short),
        });
    }
    if !unknown.is_empty() {
        refusals.push(RestartRefusal::MinInsyncReplicasUnknown {
            count: unknown.len(),
            examples: examples(&unknown),
        });
    }
    RestartVerdict {
        broker,
        safe: refusals.is_empty(),
        refusals,
        leads,
        in_sync_for,
        control_plane: control.clone(),
    }
}

#[cfg(test)]
mod tests;
