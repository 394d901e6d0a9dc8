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

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::class::KafkaCode;
use crate::cluster::{GroupMember, GroupState};
use crate::error::Error;

/// ConsumerGroupDescribe's API key.
const API_KEY: i16 = 69;
/// The largest response we read (a description of one group with its members).
const MAX_RESPONSE: usize = 16 << 20;

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

fn wire_error(reason: impl Into<String>) -> Error {
    Error::Kafka {
        operation: "describe consumer group",
        code: None,
        source: reason.into().into(),
    }
}

/// One ConsumerGroupDescribe v0 round trip for `group` to the broker at `host:port`.
fn describe_state(
    host: &str,
    port: u16,
    group: &str,
    timeout: Duration,
) -> Result<GroupState, Error> {
    let address = (host, port)
        .to_socket_addrs()
        .map_err(|e| wire_error(format!("resolve {host}:{port}: {e}")))?
        .next()
        .ok_or_else(|| wire_error(format!("{host}:{port} resolves to no address")))?;
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .map_err(|e| wire_error(format!("connect {address}: {e}")))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| wire_error(e.to_string()))?;
    let correlation_id = 1;
    stream
        .write_all(&encode_request(group, correlation_id))
        .map_err(|e| wire_error(format!("send: {e}")))?;
    let mut size = [0u8; 4];
    stream
        .read_exact(&mut size)
        .map_err(|e| wire_error(format!("read: {e}")))?;
    let size = usize::try_from(i32::from_be_bytes(size))
        .ok()
        .filter(|s| *s <= MAX_RESPONSE)
        .ok_or_else(|| wire_error("response size out of range"))?;
    let mut body = vec![0u8; size];
    stream
        .read_exact(&mut body)
        .map_err(|e| wire_error(format!("read: {e}")))?;
    let answer = decode_response(&body, correlation_id)?;
    if answer.error != 0 {
        return Err(Error::Broker {
            operation: "describe consumer group",
            code: KafkaCode(i32::from(answer.error)),
            message: answer.message.unwrap_or_default(),
        });
    }
    if answer.group != group {
        return Err(wire_error(format!(
            "asked for {group}, told about {}",
            answer.group
        )));
    }
    Ok(state_from_name(&answer.state))
}

fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Request header v2 (flexible) and ConsumerGroupDescribe v0 for one group, size-prefixed.
fn encode_request(group: &str, correlation_id: i32) -> Vec<u8> {
    const CLIENT_ID: &str = "kafka-ops";
    let mut message = Vec::with_capacity(64 + group.len());
    message.extend_from_slice(&API_KEY.to_be_bytes());
    message.extend_from_slice(&0i16.to_be_bytes());
    message.extend_from_slice(&correlation_id.to_be_bytes());
    // The client id is a classic (int16-length) string even in flexible headers.
    message.extend_from_slice(&(CLIENT_ID.len() as i16).to_be_bytes());
    message.extend_from_slice(CLIENT_ID.as_bytes());
    put_uvarint(&mut message, 0); // header tagged fields
    put_uvarint(&mut message, 2); // GroupIds: compact array of one
    put_uvarint(&mut message, group.len() as u64 + 1);
    message.extend_from_slice(group.as_bytes());
    message.push(0); // IncludeAuthorizedOperations = false
    put_uvarint(&mut message, 0); // body tagged fields
    let mut framed = Vec::with_capacity(4 + message.len());
    framed.extend_from_slice(&(message.len() as i32).to_be_bytes());
    framed.extend_from_slice(&message);
    framed
}

/// What we read of the first group of a response.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    error: i16,
    message: Option<String>,
    group: String,
    state: String,
}

struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.bytes.len() < n {
            return Err(wire_error("truncated response"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn i16(&mut self) -> Result<i16, Error> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, Error> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn uvarint(&mut self) -> Result<u64, Error> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(wire_error("varint too long"))
    }

    fn skip_tagged_fields(&mut self) -> Result<(), Error> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let size = usize::try_from(self.uvarint()?).map_err(|_| wire_error("tag size"))?;
            self.take(size)?;
        }
        Ok(())
    }

    /// A compact nullable string (length + 1, 0 for null).
    fn compact_string(&mut self) -> Result<Option<String>, Error> {
        match self.uvarint()? {
            0 => Ok(None),
            n => {
                let len = usize::try_from(n - 1).map_err(|_| wire_error("string size"))?;
                let bytes = self.take(len)?;
                String::from_utf8(bytes.to_vec())
                    .map(Some)
                    .map_err(|_| wire_error("string is not UTF-8"))
            }
        }
    }
}

/// Response header v1 (flexible), then ConsumerGroupDescribe v0 up to the first group's state.
fn decode_response(body: &[u8], correlation_id: i32) -> Result<Answer, Error> {
    let mut cursor = Cursor { bytes: body };
    if cursor.i32()? != correlation_id {
        return Err(wire_error("correlation id mismatch"));
    }
    cursor.skip_tagged_fields()?;
    let _throttle_ms = cursor.i32()?;
    if cursor.uvarint()? < 2 {
        return Err(wire_error("the response describes no group"));
    }
    let error = cursor.i16()?;
    let message = cursor.compact_string()?;
    let group = cursor.compact_string()?.unwrap_or_default();
    let state = cursor.compact_string()?.unwrap_or_default();
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
    fn the_request_is_framed_as_kafka_expects() {
        let framed = encode_request("billing", 9);
        let size = i32::from_be_bytes([framed[0], framed[1], framed[2], framed[3]]);
        assert_eq!(size as usize, framed.len() - 4);
        assert_eq!(&framed[4..6], &69i16.to_be_bytes());
        assert_eq!(&framed[6..8], &0i16.to_be_bytes());
        assert_eq!(&framed[8..12], &9i32.to_be_bytes());
        assert_eq!(&framed[12..14], &9i16.to_be_bytes());
        assert_eq!(&framed[14..23], b"kafka-ops");
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
