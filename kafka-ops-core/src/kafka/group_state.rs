//! The exact state of a KIP-848 (`group.protocol=consumer`) group.
//!
//! librdkafka 2.12 describes such a group with the ConsumerGroupDescribe API but knows only the
//! classic group states: the broker's "Assigning" and "Reconciling" both come back as
//! `UNKNOWN`, and the text is dropped. Reporting a group that is rebalancing as "unknown" (or
//! as unhealthy) would be wrong, so for those groups we ask the coordinator ourselves: one
//! ConsumerGroupDescribe v0 request on a plaintext connection, read up to the state and the
//! epochs. Where the listener is secured (TLS or SASL), which needs a full client, the state is
//! inferred from the members instead: a member whose current assignment differs from its
//! target is reconciling; when every member already holds its target, the coordinator is
//! computing a new one (assigning).

use std::time::{Duration, Instant};

use crate::class::KafkaCode;
use crate::cluster::{GroupMember, GroupState};
use crate::error::Error;
use crate::kafka::wire::{
    Connection, Cursor, Request, put_compact_len, put_compact_string, put_uvarint, wire_error,
};

/// ConsumerGroupDescribe's API key.
const API_KEY: i16 = 69;

/// Where the state of a consumer-protocol group came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateSource {
    /// The coordinator said so.
    Coordinator,
    /// Inferred from members' assignments (secured listener, or the request failed).
    Members,
}

/// Whether a client configuration talks plaintext to the brokers (the only kind of connection
/// the direct request opens).
pub(crate) fn is_plaintext(security_protocol: Option<&str>) -> bool {
    security_protocol.is_none_or(|p| p.eq_ignore_ascii_case("plaintext"))
}

/// The state of `group`, a consumer-protocol group librdkafka reported as unknown: asked of
/// the coordinator at `host:port` when `plaintext`, otherwise (or when that fails) inferred
/// from `members`.
pub(crate) fn resolve(
    group: &str,
    coordinator: Option<(&str, u16)>,
    plaintext: bool,
    members: &[GroupMember],
    timeout: Duration,
) -> (GroupState, StateSource) {
    if plaintext && let Some((host, port)) = coordinator {
        match describe_state(host, port, group, timeout) {
            Ok(state) => return (state, StateSource::Coordinator),
            Err(error) => {
                tracing::debug!(%error, group, "ConsumerGroupDescribe failed; inferring the state from the members");
            }
        }
    }
    (infer_from_members(members), StateSource::Members)
}

/// Reconciling while a member's current assignment differs from its target; assigning while
/// every member holds its target (a new target is being computed).
pub(crate) fn infer_from_members(members: &[GroupMember]) -> GroupState {
    let differs = members.iter().any(|member| {
        member.target_assignment.as_ref().is_some_and(|target| {
            let mut current = member.assignment.clone();
            let mut target = target.clone();
            current.sort();
            target.sort();
            current != target
        })
    });
    if differs {
        GroupState::Reconciling
    } else {
        GroupState::Assigning
    }
}

/// Maps a state name the broker sends (classic or consumer protocol) to ours.
pub(crate) fn state_from_name(name: &str) -> GroupState {
    match name.to_ascii_lowercase().as_str() {
        "preparingrebalance" => GroupState::PreparingRebalance,
        "completingrebalance" => GroupState::CompletingRebalance,
        "stable" => GroupState::Stable,
        "dead" => GroupState::Dead,
        "empty" => GroupState::Empty,
        "assigning" => GroupState::Assigning,
        "reconciling" => GroupState::Reconciling,
        _ => GroupState::Unknown,
    }
}

const OPERATION: &str = "describe consumer group";

/// One ConsumerGroupDescribe v0 round trip for `group` to the broker at `host:port`.
fn describe_state(
    host: &str,
    port: u16,
    group: &str,
    timeout: Duration,
) -> Result<GroupState, Error> {
    let correlation_id = 1;
    let deadline = crate::kafka::deadline_after(Instant::now(), timeout);
    let mut connection = Connection::open(OPERATION, host, port, deadline)?;
    let body = connection.round_trip(&encode_request(group, correlation_id), deadline)?;
    let answer = decode_response(&body, correlation_id)?;
    if answer.error != 0 {
        return Err(Error::Broker {
            operation: OPERATION,
            code: KafkaCode(i32::from(answer.error)),
            message: answer.message.unwrap_or_default(),
        });
    }
    if answer.group != group {
        return Err(wire_error(
            OPERATION,
            format!("asked for {group}, told about {}", answer.group),
        ));
    }
    Ok(state_from_name(&answer.state))
}

/// Request header v2 (flexible) and ConsumerGroupDescribe v0 for one group, size-prefixed.
fn encode_request(group: &str, correlation_id: i32) -> Vec<u8> {
    let mut request = Request::new(API_KEY, 0, correlation_id, 16 + group.len());
    let body = request.body();
    put_compact_len(body, 1); // GroupIds
    put_compact_string(body, group);
    body.push(0); // IncludeAuthorizedOperations = false
    put_uvarint(body, 0); // body tagged fields
    request.finish()
}

/// What we read of the first group of a response.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    error: i16,
    message: Option<String>,
    group: String,
    state: String,
}

/// Response header v1 (flexible), then ConsumerGroupDescribe v0 up to the first group's state.
fn decode_response(body: &[u8], correlation_id: i32) -> Result<Answer, Error> {
    let mut cursor = Cursor::new(OPERATION, body);
    cursor.response_header(correlation_id)?;
    let _throttle_ms = cursor.i32()?;
    if cursor.compact_len(1)?.unwrap_or(0) == 0 {
        return Err(cursor.error("the response describes no group"));
    }
    let error = cursor.i16()?;
    let message = cursor.compact_string()?.map(str::to_string);
    let group = cursor.compact_string()?.unwrap_or_default().to_string();
    let state = cursor.compact_string()?.unwrap_or_default().to_string();
    Ok(Answer {
        error,
        message,
        group,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::TopicPartition;

    fn response(correlation_id: i32, error: i16, group: &str, state: &str) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&correlation_id.to_be_bytes());
        put_uvarint(&mut body, 0);
        body.extend_from_slice(&0i32.to_be_bytes());
        put_uvarint(&mut body, 2);
        body.extend_from_slice(&error.to_be_bytes());
        put_uvarint(&mut body, 0); // null message
        put_uvarint(&mut body, group.len() as u64 + 1);
        body.extend_from_slice(group.as_bytes());
        put_uvarint(&mut body, state.len() as u64 + 1);
        body.extend_from_slice(state.as_bytes());
        body.extend_from_slice(&7i32.to_be_bytes()); // epochs and the rest are not read
        body
    }

    #[test]
    fn the_request_is_consumer_group_describe_v0_for_one_group() {
        // The header's framing is `wire`'s (tested there): only the key, version and body here.
        let framed = encode_request("billing", 9);
        assert_eq!(&framed[4..8], &[0, 69, 0, 0]);
        // header tags, array of one, "billing" (7 + 1), no authorized operations, body tags
        assert_eq!(&framed[23..], b"\x00\x02\x08billing\x00\x00");
    }

    #[test]
    fn the_state_is_read_from_the_response() {
        let answer = decode_response(&response(3, 0, "billing", "Reconciling"), 3).unwrap();
        assert_eq!(answer.state, "Reconciling");
        assert_eq!(answer.group, "billing");
        assert_eq!(state_from_name(&answer.state), GroupState::Reconciling);
        assert_eq!(state_from_name("Assigning"), GroupState::Assigning);
        assert_eq!(state_from_name("STABLE"), GroupState::Stable);
        assert_eq!(state_from_name("Shiny"), GroupState::Unknown);
        assert!(decode_response(&response(3, 0, "billing", "Stable"), 4).is_err());
        let truncated = response(3, 0, "billing", "Stable");
        assert!(decode_response(&truncated[..truncated.len() - 8], 3).is_err());
        assert_eq!(
            decode_response(&response(3, 69, "b", "Dead"), 3)
                .unwrap()
                .error,
            69
        );
    }

    #[test]
    fn states_are_inferred_from_assignments_when_the_coordinator_cannot_be_asked() {
        let tp = |p| TopicPartition::new("t", p);
        let member =
            |assignment: Vec<TopicPartition>, target: Option<Vec<TopicPartition>>| GroupMember {
                member_id: "m".into(),
                client_id: "c".into(),
                host: "h".into(),
                instance_id: None,
                assignment,
                target_assignment: target,
            };
        let settled = member(vec![tp(1), tp(0)], Some(vec![tp(0), tp(1)]));
        let moving = member(vec![tp(0), tp(1)], Some(vec![tp(0)]));
        assert_eq!(
            infer_from_members(std::slice::from_ref(&settled)),
            GroupState::Assigning
        );
        assert_eq!(
            infer_from_members(&[settled, moving]),
            GroupState::Reconciling
        );
        let (state, source) = resolve("g", None, true, &[], Duration::from_secs(1));
        assert_eq!(
            (state, source),
            (GroupState::Assigning, StateSource::Members)
        );
        assert!(is_plaintext(None));
        assert!(is_plaintext(Some("PLAINTEXT")));
        assert!(!is_plaintext(Some("sasl_ssl")));
    }
}
