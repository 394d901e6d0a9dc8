//! [`GroupQuery`] on librdkafka: list and describe groups (with the KIP-848 states librdkafka
//! cannot name) and read their committed offsets.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Inner, KafkaCluster, coordinator, metadata_of, unique};
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
    let deadline = crate::kafka::deadline_after(Instant::now(), inner.timeout);
    let mut answers: BTreeMap<String, ffi::DescribedGroup> = BTreeMap::new();
    let mut asking: Vec<String> = unique(groups.iter().cloned());
    // Groups whose worked-out coordinator said it is not theirs: asked through a lookup next.
    let mut look_up: HashSet<String> = HashSet::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let described = describe_at_coordinators(inner, &asking, &look_up, remaining)?;
        asking.clear();
        for group in described {
            let error = group.description.error.as_ref();
            if error.is_some_and(is_coordinator_moving) {
                asking.push(group.description.group.clone());
            }
            if error.is_some_and(|e| e.code == Some(KafkaCode::NOT_COORDINATOR)) {
                look_up.insert(group.description.group.clone());
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

/// One round of describing `groups`, each asked of its coordinator by broker id (see
/// [`coordinator`](super::coordinator)). A group whose coordinator has no leader now, or whose
/// coordinator does not answer, comes back with `COORDINATOR_NOT_AVAILABLE`, which the caller
/// retries. Groups in `look_up` (their worked-out coordinator said it is not theirs: a
/// coordinator moving, or a broker that places groups otherwise), and on a cluster whose
/// metadata shows no `__consumer_offsets` (librdkafka's mock, or a client not allowed to see
/// it) or that gives no metadata in time, groups never described or whose coordinator moved,
/// are left to librdkafka's lookup,
/// kept alive long enough not to crash (see `describe_consumer_groups`). Elsewhere on such a
/// cluster a group's coordinator is the one its last description named. The round's requests
/// share one bound. Where the lookups answered within [`DESCRIBE_UNSUPPORTED_FOR`] that the
/// cluster cannot describe groups, every group comes back unsupported without asking.
fn describe_at_coordinators(
    inner: &Inner<'_>,
    groups: &[String],
    look_up: &HashSet<String>,
    remaining: Duration,
) -> Result<Vec<ffi::DescribedGroup>, Error> {
    // A cluster that said it cannot describe groups is not asked again for a while, not even
    // for the metadata (on a large cluster that answer alone costs milliseconds of both sides'
    // CPU).
    if describe_known_unsupported(inner) {
        return Ok(groups.iter().map(|group| unsupported(group)).collect());
    }
    let round_ends =
        crate::kafka::deadline_after(Instant::now(), remaining.max(Duration::from_millis(100)));
    let bound = || {
        round_ends
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100))
    };
    let client = inner.admin.inner();
    // Without the metadata in time (a broker down), the groups are asked as where
    // `__consumer_offsets` cannot be seen.
    let computed = match coordinator::coordinators(inner, groups) {
        Ok(computed) => computed,
        Err(error) => {
            tracing::debug!(%error, "no metadata to work the groups' coordinators out");
            None
        }
    };
    let mut by_broker: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut lookup = Vec::new();
    let mut described = Vec::with_capacity(groups.len());
    match &computed {
        Some(coordinators) => {
            for group in groups {
                if look_up.contains(group) {
                    lookup.push(group.clone());
                    continue;
                }
                match coordinators.get(group).copied().flatten() {
                    Some(broker) => by_broker.entry(broker).or_default().push(group.clone()),
                    None => described.push(not_available(
                        group,
                        "its coordinator partition has no leader",
                    )),
                }
            }
        }
        None => {
            let learned = inner
                .coordinators
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for group in groups {
                match learned.get(group) {
                    Some(broker) => by_broker.entry(*broker).or_default().push(group.clone()),
                    None => lookup.push(group.clone()),
                }
            }
        }
    }
    if !lookup.is_empty() {
        let answers = ffi::describe_consumer_groups(client, &lookup, None, bound())?;
        // A cluster that cannot describe groups (librdkafka's mock, which also hides
        // `__consumer_offsets`) is not asked again for a while: each ask would be one more
        // coordinator lookup. Where coordinators can be worked out, the brokers are asked.
        if computed.is_none()
            && answers.iter().all(|a| {
                a.description
                    .error
                    .as_ref()
                    .is_some_and(|e| e.code == Some(KafkaCode::UNSUPPORTED_FEATURE))
            })
        {
            *inner
                .describe_unsupported
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        }
        described.extend(answers);
    }
    for (broker, groups) in by_broker {
        match ffi::describe_consumer_groups(client, &groups, Some(broker), bound()) {
            Ok(answers) => described.extend(answers),
            Err(error) => {
                tracing::debug!(broker, %error, "coordinator did not answer a describe");
                let reason = format!("coordinator {broker}: {error}");
                described.extend(groups.iter().map(|group| not_available(group, &reason)));
            }
        }
    }
    if computed.is_none() {
        learn_coordinators(inner, &described);
    }
    Ok(described)
}

/// Keeps the coordinator each description named, and forgets it for a group whose coordinator
/// moved or does not answer.
fn learn_coordinators(inner: &Inner<'_>, described: &[ffi::DescribedGroup]) {
    let mut learned = inner
        .coordinators
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for group in described {
        let description = &group.description;
        match (&description.error, description.coordinator) {
            (None, Some(broker)) => {
                if learned.len() >= LEARNED_COORDINATORS
                    && !learned.contains_key(&description.group)
                {
                    learned.clear();
                }
                learned.insert(description.group.clone(), broker);
            }
            // The next round looks it up (a lookup is kept alive for an hour, see
            // `describe_consumer_groups`, so a coordinator down for less cannot crash it).
            (Some(error), _) if is_coordinator_moving(error) => {
                learned.remove(&description.group);
            }
            _ => {}
        }
    }
}

/// Groups whose coordinator is kept from their last description.
const LEARNED_COORDINATORS: usize = 4_096;

/// How long a cluster's "cannot describe groups" answer is taken as given before it is asked
/// again (a broker upgraded meanwhile then gets asked within this long).
const DESCRIBE_UNSUPPORTED_FOR: Duration = Duration::from_secs(600);

/// The cluster answered within [`DESCRIBE_UNSUPPORTED_FOR`] that it cannot describe groups.
fn describe_known_unsupported(inner: &Inner<'_>) -> bool {
    inner
        .describe_unsupported
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_some_and(|since| since.elapsed() < DESCRIBE_UNSUPPORTED_FOR)
}

/// A description that says only that the cluster cannot describe groups.
fn unsupported(group: &str) -> ffi::DescribedGroup {
    let mut described = not_available(group, "the cluster cannot describe groups");
    if let Some(error) = described.description.error.as_mut() {
        error.code = Some(KafkaCode::UNSUPPORTED_FEATURE);
    }
    described
}

/// A description that says only that `group`'s coordinator cannot be asked now.
fn not_available(group: &str, reason: &str) -> ffi::DescribedGroup {
    ffi::DescribedGroup {
        description: GroupDescription {
            group: group.to_string(),
            state: GroupState::Unknown,
            group_type: GroupType::Unknown,
            assignor: String::new(),
            coordinator: None,
            members: Vec::new(),
            error: Some(PartitionError {
                code: Some(KafkaCode::COORDINATOR_NOT_AVAILABLE),
                reason: reason.to_string(),
            }),
        },
        coordinator_address: None,
    }
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
            // The group's commits on every partition of every topic: librdkafka's way of asking
            // a coordinator for "all" is its admin API, which must not be used (see
            // `RangeReader::committed_offsets`).
            let partitions = metadata_of(inner, &[])?.user_partitions();
            let answers = inner.committed(&groups, &partitions);
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
