//! [`GroupQuery`] on librdkafka: list and describe groups (with the KIP-848 states librdkafka
//! cannot name) and read their committed offsets.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Inner, KafkaCluster, unique};
use crate::class::KafkaCode;
use crate::cluster::{
    GroupDescription, GroupListing, GroupOffsetMap, GroupQuery, GroupState, GroupType,
    PartitionError, PartitionResults, PerGroup,
};
use crate::error::Error;
use crate::ffi;
use crate::kafka::group_state;
use crate::types::Offset;

/// Per-group errors that go away on their own: the coordinator is moving or loading (after a
/// broker restart, for instance). librdkafka returns them as they are; they are retried here
/// within the request bound.
fn is_coordinator_moving(error: &PartitionError) -> bool {
    error.code.is_some_and(|code| {
        [
            KafkaCode::NOT_COORDINATOR,
            KafkaCode::COORDINATOR_NOT_AVAILABLE,
            KafkaCode::COORDINATOR_LOAD_IN_PROGRESS,
        ]
        .contains(&code)
    })
}

/// Describes `groups`, retrying groups whose coordinator is moving, and gives KIP-848 groups
/// the state librdkafka cannot name (see [`group_state`](crate::kafka::group_state)).
fn describe_groups(inner: &Inner<'_>, groups: &[String]) -> Result<Vec<GroupDescription>, Error> {
    let deadline = Instant::now() + inner.timeout;
    let mut answers: BTreeMap<String, ffi::DescribedGroup> = BTreeMap::new();
    let mut asking: Vec<String> = unique(groups.iter().cloned());
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let described = ffi::describe_consumer_groups(
            inner.admin.inner(),
            &asking,
            remaining.max(Duration::from_millis(100)),
        )?;
        asking.clear();
        for group in described {
            let retry = group
                .description
                .error
                .as_ref()
                .is_some_and(is_coordinator_moving);
            if retry {
                asking.push(group.description.group.clone());
            }
            answers.insert(group.description.group.clone(), group);
        }
        if asking.is_empty() || Instant::now() + Duration::from_millis(200) >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let plaintext = group_state::is_plaintext(inner.config.get("security.protocol"));
    Ok(groups
        .iter()
        .filter_map(|name| answers.remove(name))
        .map(|described| {
            let mut description = described.description;
            if description.state == GroupState::Unknown
                && description.group_type == GroupType::Consumer
                && description.error.is_none()
            {
                let coordinator = described
                    .coordinator_address
                    .as_ref()
                    .map(|(host, port)| (host.as_str(), *port));
                let (state, source) = group_state::resolve(
                    &description.group,
                    coordinator,
                    plaintext,
                    &description.members,
                    inner.timeout.min(Duration::from_secs(5)),
                );
                tracing::debug!(group = %description.group, %state, ?source, "consumer-protocol group state");
                description.state = state;
            }
            description
        })
        .collect())
}

#[async_trait]
impl GroupQuery for KafkaCluster {
    async fn list_groups(&self) -> Result<Vec<GroupListing>, Error> {
        self.blocking(|inner| {
            let (listings, errors) = ffi::list_consumer_groups(inner.admin.inner(), inner.timeout)?;
            // A listing with errors from some brokers misses their groups: report, never guess.
            if let Some((code, message)) = errors.into_iter().next() {
                return Err(if code == KafkaCode::UNSUPPORTED_FEATURE {
                    Error::Unsupported {
                        operation: "list consumer groups",
                        reason: message,
                    }
                } else {
                    Error::Broker {
                        operation: "list consumer groups",
                        code,
                        message,
                    }
                });
            }
            let mut listings = listings;
            listings.sort_by(|a, b| a.group.cmp(&b.group));
            // librdkafka lists KIP-848 groups that are assigning or reconciling as unknown:
            // describe those to name their state.
            let unnamed: Vec<String> = listings
                .iter()
                .filter(|l| l.state == GroupState::Unknown && l.group_type == GroupType::Consumer)
                .map(|l| l.group.clone())
                .collect();
            if !unnamed.is_empty() {
                let states: HashMap<String, GroupState> = describe_groups(inner, &unnamed)?
                    .into_iter()
                    .map(|d| (d.group, d.state))
                    .collect();
                for listing in &mut listings {
                    if let Some(state) = states.get(&listing.group) {
                        listing.state = *state;
                    }
                }
            }
            Ok(listings)
        })
        .await
    }

    async fn describe_groups(&self, groups: &[String]) -> Result<Vec<GroupDescription>, Error> {
        let groups = groups.to_vec();
        self.blocking(move |inner| describe_groups(inner, &groups))
            .await
    }

    async fn group_offsets(&self, group: &str) -> Result<GroupOffsetMap, Error> {
        let mut answers = self.groups_offsets(&[group.to_string()]).await?;
        answers
            .pop()
            .map_or_else(|| Ok(GroupOffsetMap::new()), |(_, answer)| answer)
    }

    async fn groups_offsets(&self, groups: &[String]) -> Result<PerGroup<GroupOffsetMap>, Error> {
        let groups = unique(groups.iter().cloned());
        self.blocking(move |inner| {
            let requests: Vec<ffi::GroupOffsetsRequest<'_>> =
                groups.iter().map(|group| (group.as_str(), None)).collect();
            let answers =
                ffi::list_consumer_group_offsets(inner.admin.inner(), &requests, inner.timeout)?;
            Ok(groups
                .into_iter()
                .zip(answers)
                .map(|(group, answer)| (group, answer.map(only_committed)))
                .collect())
        })
        .await
    }
}

/// The partitions with a committed offset or an error (never-committed ones are left out).
fn only_committed(answers: PartitionResults<Option<Offset>>) -> GroupOffsetMap {
    answers
        .into_iter()
        .filter_map(|(tp, answer)| match answer {
            Ok(Some(offset)) => Some((tp, Ok(offset))),
            Ok(None) => None,
            Err(e) => Some((tp, Err(e))),
        })
        .collect()
}
