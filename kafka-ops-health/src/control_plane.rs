//! How the cluster is controlled, as the cluster itself reports it.
//!
//! In ZooKeeper mode (Kafka before 4.0) one broker is the controller and the metadata names it.
//! In KRaft mode the controllers are a Raft quorum that clients cannot reach: the "controller"
//! a broker puts in its metadata answer is any live broker, chosen at random, so judging it as
//! the controller gives random verdicts. The broker configuration (`process.roles`,
//! `controller.quorum.voters`, read with DescribeConfigs) tells the two apart, names the voters,
//! and says whether nodes are broker and controller at once (combined mode), in which case a
//! voter is up exactly when its broker is listed.

use std::collections::BTreeSet;

use kafka_ops_core::ErrorClass;
use kafka_ops_core::cluster::{ClusterMetadata, ConfigEntries, ConfigQuery};
use serde::{Deserialize, Serialize};

/// Brokers [`ControlPlane::discover`] asks at most.
const BROKERS_ASKED: usize = 3;

/// How the cluster is controlled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
#[non_exhaustive]
pub enum ControlPlane {
    /// The broker configuration could not be read (no DescribeConfigs, no broker listed): the
    /// metadata's controller id is all there is.
    Unknown,
    /// ZooKeeper mode: the metadata names the controller broker.
    #[serde(rename = "zookeeper")]
    ZooKeeper,
    /// KRaft mode.
    #[serde(rename = "kraft")]
    KRaft {
        /// The voters' node ids, from a static `controller.quorum.voters` (`None` for a dynamic
        /// quorum, whose voters clients cannot list).
        voters: Option<Vec<i32>>,
        /// Whether nodes are broker and controller at once (`process.roles=broker,controller`).
        combined: bool,
    },
}

/// The voters of a combined-mode KRaft quorum and which of them are up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorum {
    /// Every voter.
    pub voters: Vec<i32>,
    /// The voters whose broker the metadata lists.
    pub up: Vec<i32>,
}

impl Quorum {
    /// Voters needed for the quorum to elect a leader and commit metadata.
    pub fn majority(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Whether the quorum keeps a majority with `node` stopped as well.
    pub fn survives_stopping(&self, node: i32) -> bool {
        let up_after = self.up.iter().filter(|id| **id != node).count();
        up_after >= self.majority()
    }
}

impl ControlPlane {
    /// Reads a listed broker's configuration to find out: the lowest id first, then the next
    /// when one cannot answer now (stopped by a rolling restart, say), up to three; a refusal
    /// (no DescribeConfigs, not authorized) is not asked of the others.
    pub async fn discover(
        configs: &(impl ConfigQuery + ?Sized),
        metadata: &ClusterMetadata,
    ) -> Self {
        Self::discover_explained(configs, metadata).await.0
    }

    /// [`discover`](Self::discover), with why the plane is [`Unknown`](Self::Unknown) when it
    /// is: what each broker asked answered, or that none is listed.
    pub async fn discover_explained(
        configs: &(impl ConfigQuery + ?Sized),
        metadata: &ClusterMetadata,
    ) -> (Self, Option<String>) {
        let ids: BTreeSet<i32> = metadata.brokers.iter().map(|b| b.id).collect();
        if ids.is_empty() {
            return (ControlPlane::Unknown, Some("no broker is listed".into()));
        }
        let mut failures = Vec::new();
        for broker in ids.into_iter().take(BROKERS_ASKED) {
            match configs.broker_config(broker).await {
                Ok(entries) => {
                    let plane = Self::from_broker_config(&entries);
                    let why = (plane == ControlPlane::Unknown)
                        .then(|| format!("broker {broker} answered no configuration"));
                    return (plane, why);
                }
                // Every broker would refuse alike (no DescribeConfigs, not authorized).
                Err(error) if error.class() != ErrorClass::Transient => {
                    failures.push(error.to_string());
                    break;
                }
                Err(error) => failures.push(error.to_string()),
            }
        }
        let why = failures.join("; ");
        // Debug: a probe asks every interval; the gate carries the reason in its refusal.
        tracing::debug!(failures = %why, "cannot read a broker configuration: the control plane is unknown");
        (ControlPlane::Unknown, Some(why))
    }

    /// Judges a broker's configuration.
    pub fn from_broker_config(entries: &ConfigEntries) -> Self {
        let get = |key: &str| {
            entries
                .get(key)
                .cloned()
                .flatten()
                .filter(|v| !v.trim().is_empty())
        };
        let Some(roles) = get("process.roles") else {
            return if entries.is_empty() {
                ControlPlane::Unknown
            } else {
                ControlPlane::ZooKeeper
            };
        };
        let combined = roles
            .split(',')
            .map(str::trim)
            .any(|role| role.eq_ignore_ascii_case("controller"));
        let voters = get("controller.quorum.voters").map(|voters| parse_voters(&voters));
        ControlPlane::KRaft {
            voters: voters.filter(|v| !v.is_empty()),
            combined,
        }
    }

    /// The quorum's voters and which are up, when they are visible: KRaft in combined mode with
    /// static voters.
    pub fn quorum(&self, metadata: &ClusterMetadata) -> Option<Quorum> {
        match self {
            ControlPlane::KRaft {
                voters: Some(voters),
                combined: true,
            } => {
                let listed: BTreeSet<i32> = metadata.brokers.iter().map(|b| b.id).collect();
                Some(Quorum {
                    voters: voters.clone(),
                    up: voters
                        .iter()
                        .copied()
                        .filter(|id| listed.contains(id))
                        .collect(),
                })
            }
            _ => None,
        }
    }
}

/// `1@host:9093,2@host:9093` → `[1, 2]`, sorted; malformed entries are left out.
fn parse_voters(voters: &str) -> Vec<i32> {
    let mut ids: Vec<i32> = voters
        .split(',')
        .filter_map(|voter| voter.trim().split_once('@'))
        .filter_map(|(id, _)| id.trim().parse().ok())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_ops_core::Error;
    use kafka_ops_core::cluster::BrokerInfo;

    fn entries(pairs: &[(&str, &str)]) -> ConfigEntries {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect()
    }

    fn metadata(brokers: &[i32]) -> ClusterMetadata {
        ClusterMetadata {
            brokers: brokers
                .iter()
                .map(|id| BrokerInfo {
                    id: *id,
                    host: "localhost".into(),
                    port: 9092,
                })
                .collect(),
            controller: brokers.first().copied(),
            topics: vec![],
        }
    }

    #[test]
    fn kraft_combined_mode_with_static_voters() {
        let plane = ControlPlane::from_broker_config(&entries(&[
            ("process.roles", "broker,controller"),
            (
                "controller.quorum.voters",
                "3@h:9093, 1@h:9093,2@h:9093,x@h",
            ),
            ("controller.quorum.bootstrap.servers", ""),
        ]));
        assert_eq!(
            plane,
            ControlPlane::KRaft {
                voters: Some(vec![1, 2, 3]),
                combined: true
            }
        );
        let quorum = plane.quorum(&metadata(&[1, 3])).unwrap();
        assert_eq!(quorum.up, [1, 3]);
        assert_eq!(quorum.majority(), 2);
        assert!(quorum.survives_stopping(2));
        assert!(!quorum.survives_stopping(1));
        let whole = plane.quorum(&metadata(&[1, 2, 3])).unwrap();
        assert!(whole.survives_stopping(1));
    }

    #[test]
    fn dedicated_controllers_and_dynamic_quorums_show_no_voters() {
        let dedicated = ControlPlane::from_broker_config(&entries(&[
            ("process.roles", "broker"),
            ("controller.quorum.voters", "10@c:9093,11@c:9093,12@c:9093"),
        ]));
        assert_eq!(dedicated.quorum(&metadata(&[1, 2])), None);
        let dynamic = ControlPlane::from_broker_config(&entries(&[
            ("process.roles", "broker,controller"),
            ("controller.quorum.voters", ""),
            ("controller.quorum.bootstrap.servers", "c:9093"),
        ]));
        assert_eq!(
            dynamic,
            ControlPlane::KRaft {
                voters: None,
                combined: true
            }
        );
        assert_eq!(dynamic.quorum(&metadata(&[1])), None);
    }

    #[tokio::test]
    async fn discovery_asks_the_next_broker_when_one_cannot_answer() {
        use kafka_ops_core::cluster::MockConfigQuery;
        let mut configs = MockConfigQuery::new();
        configs
            .expect_broker_config()
            .withf(|id| *id == 1)
            .times(1)
            .returning(|_| {
                Err(Error::Timeout {
                    operation: "describe broker config",
                    timeout: std::time::Duration::from_secs(1),
                })
            });
        configs
            .expect_broker_config()
            .withf(|id| *id == 2)
            .times(1)
            .returning(|_| Ok(entries(&[("process.roles", "broker,controller")])));
        assert_eq!(
            ControlPlane::discover(&configs, &metadata(&[3, 1, 2])).await,
            ControlPlane::KRaft {
                voters: None,
                combined: true
            }
        );
        // A cluster that cannot describe configurations is asked once.
        let mut unsupported = MockConfigQuery::new();
        unsupported.expect_broker_config().times(1).returning(|_| {
            Err(Error::Unsupported {
                operation: "describe broker config",
                reason: "no DescribeConfigs".into(),
            })
        });
        assert_eq!(
            ControlPlane::discover(&unsupported, &metadata(&[1, 2, 3])).await,
            ControlPlane::Unknown
        );
        // Every broker failing: unknown, after at most three.
        let mut down = MockConfigQuery::new();
        down.expect_broker_config()
            .times(BROKERS_ASKED)
            .returning(|_| {
                Err(Error::Timeout {
                    operation: "describe broker config",
                    timeout: std::time::Duration::from_secs(1),
                })
            });
        assert_eq!(
            ControlPlane::discover(&down, &metadata(&[1, 2, 3, 4, 5])).await,
            ControlPlane::Unknown
        );
    }

    #[test]
    fn zookeeper_mode_and_unknown() {
        let zk = ControlPlane::from_broker_config(&entries(&[
            ("process.roles", ""),
            ("zookeeper.connect", "zk:2181"),
        ]));
        assert_eq!(zk, ControlPlane::ZooKeeper);
        assert_eq!(
            ControlPlane::from_broker_config(&ConfigEntries::new()),
            ControlPlane::Unknown
        );
    }
}
