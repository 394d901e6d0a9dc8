//! The one place errors are classified.
//!
//! Every recovery decision in kafka-ops starts from an [`ErrorClass`]: *transient* errors are worth
//! retrying, *permanent* ones will fail the same way again (dead-letter or skip the record), and
//! *fatal* ones mean the client itself is unusable (stop and call a human). [`KafkaCode::class`]
//! classifies librdkafka's local codes and Kafka's protocol codes; handler errors carry their own
//! class in [`HandlerError`](crate::handler::HandlerError).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A boxed error that can cross threads: what user code and foreign crates hand us.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How an error should be treated by retry and recovery logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The same operation may succeed later (timeouts, leader moves, rebalances, brokers down).
    Transient,
    /// The same input will fail the same way (bad data, too large, offset out of range, config).
    Permanent,
    /// The client cannot continue (authentication/authorization, fencing, librdkafka fatal state).
    Fatal,
}

impl ErrorClass {
    /// Whether retrying the same operation can help.
    pub fn is_retryable(self) -> bool {
        self == ErrorClass::Transient
    }

    /// Lower-case name, as used in headers, logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Fatal => "fatal",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A numeric error code from librdkafka (negative, local) or the Kafka protocol (positive).
///
/// The numbers are librdkafka's `rd_kafka_resp_err_t`, which are stable across releases.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KafkaCode(pub i32);

/// (code, name, class) for the codes a consumer operator meets. Anything else is permanent:
/// retrying an error nobody has classified forever is worse than surfacing it.
const CODES: &[(i32, &str, ErrorClass)] = {
    use ErrorClass::{Fatal as F, Permanent as P, Transient as T};
    &[
        (-199, "_BAD_MSG", P),
        (-198, "_BAD_COMPRESSION", P),
        (-197, "_DESTROY", F),
        (-196, "_FAIL", P),
        (-195, "_TRANSPORT", T),
        (-194, "_CRIT_SYS_RESOURCE", F),
        (-193, "_RESOLVE", T),
        (-192, "_MSG_TIMED_OUT", T),
        (-191, "_PARTITION_EOF", T),
        (-190, "_UNKNOWN_PARTITION", P),
        (-189, "_FS", F),
        (-188, "_UNKNOWN_TOPIC", T),
        (-187, "_ALL_BROKERS_DOWN", T),
        (-186, "_INVALID_ARG", P),
        (-185, "_TIMED_OUT", T),
        (-184, "_QUEUE_FULL", T),
        (-183, "_ISR_INSUFF", T),
        (-182, "_NODE_UPDATE", T),
        (-181, "_SSL", F),
        (-180, "_WAIT_COORD", T),
        (-179, "_UNKNOWN_GROUP", P),
        (-178, "_IN_PROGRESS", T),
        (-177, "_PREV_IN_PROGRESS", T),
        (-176, "_EXISTING_SUBSCRIPTION", P),
        (-175, "_ASSIGN_PARTITIONS", T),
        (-174, "_REVOKE_PARTITIONS", T),
        (-173, "_CONFLICT", P),
        // Storing an offset for a partition revoked a moment ago: harmless, the next owner redoes it.
        (-172, "_STATE", T),
        (-171, "_UNKNOWN_PROTOCOL", P),
        (-170, "_NOT_IMPLEMENTED", P),
        (-169, "_AUTHENTICATION", F),
        (-168, "_NO_OFFSET", P),
        (-167, "_OUTDATED", T),
        (-166, "_TIMED_OUT_QUEUE", T),
        (-165, "_UNSUPPORTED_FEATURE", P),
        (-164, "_WAIT_CACHE", T),
        (-163, "_INTR", T),
        (-162, "_KEY_SERIALIZATION", P),
        (-161, "_VALUE_SERIALIZATION", P),
        (-160, "_KEY_DESERIALIZATION", P),
        (-159, "_VALUE_DESERIALIZATION", P),
        (-158, "_PARTIAL", T),
        (-157, "_READ_ONLY", P),
        (-156, "_NOENT", P),
        (-155, "_UNDERFLOW", P),
        (-154, "_INVALID_TYPE", P),
        (-153, "_RETRY", T),
        (-152, "_PURGE_QUEUE", T),
        (-151, "_PURGE_INFLIGHT", T),
        (-150, "_FATAL", F),
        (-149, "_INCONSISTENT", F),
        (-148, "_GAPLESS_GUARANTEE", F),
        (-147, "_MAX_POLL_EXCEEDED", T),
        (-146, "_UNKNOWN_BROKER", T),
        (-145, "_NOT_CONFIGURED", P),
        (-144, "_FENCED", F),
        (-143, "_APPLICATION", P),
        (-142, "_ASSIGNMENT_LOST", T),
        (-141, "_NOOP", T),
        (-140, "_AUTO_OFFSET_RESET", P),
        (-139, "_LOG_TRUNCATION", P),
        (-138, "_INVALID_DIFFERENT_RECORD", P),
        (-137, "_DESTROY_BROKER", T),
        (-1, "UNKNOWN", P),
        (0, "NO_ERROR", T),
        (1, "OFFSET_OUT_OF_RANGE", P),
        (2, "INVALID_MSG", P),
        // Kafka marks it retriable: metadata can lag a topic's creation.
        (3, "UNKNOWN_TOPIC_OR_PART", T),
        (4, "INVALID_MSG_SIZE", P),
        (5, "LEADER_NOT_AVAILABLE", T),
        (6, "NOT_LEADER_FOR_PARTITION", T),
        (7, "REQUEST_TIMED_OUT", T),
        (8, "BROKER_NOT_AVAILABLE", T),
        (9, "REPLICA_NOT_AVAILABLE", T),
        (10, "MSG_SIZE_TOO_LARGE", P),
        (11, "STALE_CTRL_EPOCH", T),
        (12, "OFFSET_METADATA_TOO_LARGE", P),
        (13, "NETWORK_EXCEPTION", T),
        (14, "COORDINATOR_LOAD_IN_PROGRESS", T),
        (15, "COORDINATOR_NOT_AVAILABLE", T),
        (16, "NOT_COORDINATOR", T),
        (17, "TOPIC_EXCEPTION", P),
        (18, "RECORD_LIST_TOO_LARGE", P),
        (19, "NOT_ENOUGH_REPLICAS", T),
        (20, "NOT_ENOUGH_REPLICAS_AFTER_APPEND", T),
        (21, "INVALID_REQUIRED_ACKS", P),
        (22, "ILLEGAL_GENERATION", T),
        (23, "INCONSISTENT_GROUP_PROTOCOL", P),
        (24, "INVALID_GROUP_ID", P),
        (25, "UNKNOWN_MEMBER_ID", T),
        (26, "INVALID_SESSION_TIMEOUT", P),
        (27, "REBALANCE_IN_PROGRESS", T),
        (28, "INVALID_COMMIT_OFFSET_SIZE", P),
        (29, "TOPIC_AUTHORIZATION_FAILED", F),
        (30, "GROUP_AUTHORIZATION_FAILED", F),
        (31, "CLUSTER_AUTHORIZATION_FAILED", F),
        (32, "INVALID_TIMESTAMP", P),
        (33, "UNSUPPORTED_SASL_MECHANISM", F),
        (34, "ILLEGAL_SASL_STATE", F),
        (35, "UNSUPPORTED_VERSION", P),
        (36, "TOPIC_ALREADY_EXISTS", P),
        (37, "INVALID_PARTITIONS", P),
        (38, "INVALID_REPLICATION_FACTOR", P),
        (39, "INVALID_REPLICA_ASSIGNMENT", P),
        (40, "INVALID_CONFIG", P),
        (41, "NOT_CONTROLLER", T),
        (42, "INVALID_REQUEST", P),
        (43, "UNSUPPORTED_FOR_MESSAGE_FORMAT", P),
        (44, "POLICY_VIOLATION", P),
        (45, "OUT_OF_ORDER_SEQUENCE_NUMBER", F),
        (46, "DUPLICATE_SEQUENCE_NUMBER", P),
        (47, "INVALID_PRODUCER_EPOCH", F),
        (48, "INVALID_TXN_STATE", P),
        (49, "INVALID_PRODUCER_ID_MAPPING", F),
        (50, "INVALID_TRANSACTION_TIMEOUT", P),
        (51, "CONCURRENT_TRANSACTIONS", T),
        (52, "TRANSACTION_COORDINATOR_FENCED", F),
        (53, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED", F),
        (54, "SECURITY_DISABLED", F),
        (55, "OPERATION_NOT_ATTEMPTED", T),
        (56, "KAFKA_STORAGE_ERROR", T),
        (57, "LOG_DIR_NOT_FOUND", P),
        (58, "SASL_AUTHENTICATION_FAILED", F),
        (59, "UNKNOWN_PRODUCER_ID", T),
        (60, "REASSIGNMENT_IN_PROGRESS", T),
        (61, "DELEGATION_TOKEN_AUTH_DISABLED", F),
        (62, "DELEGATION_TOKEN_NOT_FOUND", F),
        (63, "DELEGATION_TOKEN_OWNER_MISMATCH", F),
        (64, "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED", F),
        (65, "DELEGATION_TOKEN_AUTHORIZATION_FAILED", F),
        (66, "DELEGATION_TOKEN_EXPIRED", F),
        (67, "INVALID_PRINCIPAL_TYPE", P),
        (68, "NON_EMPTY_GROUP", P),
        (69, "GROUP_ID_NOT_FOUND", P),
        (70, "FETCH_SESSION_ID_NOT_FOUND", T),
        (71, "INVALID_FETCH_SESSION_EPOCH", T),
        (72, "LISTENER_NOT_FOUND", T),
        (73, "TOPIC_DELETION_DISABLED", P),
        (74, "FENCED_LEADER_EPOCH", T),
        (75, "UNKNOWN_LEADER_EPOCH", T),
        (76, "UNSUPPORTED_COMPRESSION_TYPE", P),
        (77, "STALE_BROKER_EPOCH", T),
        (78, "OFFSET_NOT_AVAILABLE", T),
        (79, "MEMBER_ID_REQUIRED", T),
        (80, "PREFERRED_LEADER_NOT_AVAILABLE", T),
        (81, "GROUP_MAX_SIZE_REACHED", P),
        (82, "FENCED_INSTANCE_ID", F),
        (83, "ELIGIBLE_LEADERS_NOT_AVAILABLE", T),
        (84, "ELECTION_NOT_NEEDED", P),
        (85, "NO_REASSIGNMENT_IN_PROGRESS", P),
        (86, "GROUP_SUBSCRIBED_TO_TOPIC", P),
        (87, "INVALID_RECORD", P),
        (88, "UNSTABLE_OFFSET_COMMIT", T),
        (89, "THROTTLING_QUOTA_EXCEEDED", T),
        (90, "PRODUCER_FENCED", F),
        (91, "RESOURCE_NOT_FOUND", P),
        (92, "DUPLICATE_RESOURCE", P),
        (93, "UNACCEPTABLE_CREDENTIAL", F),
        (94, "INCONSISTENT_VOTER_SET", T),
        (95, "INVALID_UPDATE_VERSION", P),
        (96, "FEATURE_UPDATE_FAILED", P),
        (97, "PRINCIPAL_DESERIALIZATION_FAILURE", F),
        (98, "UNKNOWN_TOPIC_ID", T),
        (99, "FENCED_MEMBER_EPOCH", T),
        (100, "UNRELEASED_INSTANCE_ID", T),
        (101, "UNSUPPORTED_ASSIGNOR", P),
        (102, "STALE_MEMBER_EPOCH", T),
        (103, "MISMATCHED_ENDPOINT_TYPE", P),
        (104, "UNSUPPORTED_ENDPOINT_TYPE", P),
        (105, "UNKNOWN_CONTROLLER_ID", T),
        (106, "UNKNOWN_SUBSCRIPTION_ID", P),
        (107, "TELEMETRY_TOO_LARGE", P),
        (108, "INVALID_REGISTRATION", P),
    ]
};

impl KafkaCode {
    /// `_AUTO_OFFSET_RESET` (-140): a fetch fell outside the partition's log and the
    /// consumer's `auto.offset.reset` is `error`.
    pub const AUTO_OFFSET_RESET: KafkaCode = KafkaCode(-140);
    /// `OFFSET_OUT_OF_RANGE` (1).
    pub const OFFSET_OUT_OF_RANGE: KafkaCode = KafkaCode(1);
    /// `UNKNOWN_TOPIC_OR_PART` (3).
    pub const UNKNOWN_TOPIC_OR_PARTITION: KafkaCode = KafkaCode(3);
    /// `LEADER_NOT_AVAILABLE` (5).
    pub const LEADER_NOT_AVAILABLE: KafkaCode = KafkaCode(5);
    /// `NOT_LEADER_FOR_PARTITION` (6).
    pub const NOT_LEADER_FOR_PARTITION: KafkaCode = KafkaCode(6);
    /// `REQUEST_TIMED_OUT` (7).
    pub const REQUEST_TIMED_OUT: KafkaCode = KafkaCode(7);
    /// `MSG_SIZE_TOO_LARGE` (10).
    pub const MESSAGE_TOO_LARGE: KafkaCode = KafkaCode(10);
    /// `COORDINATOR_LOAD_IN_PROGRESS` (14).
    pub const COORDINATOR_LOAD_IN_PROGRESS: KafkaCode = KafkaCode(14);
    /// `COORDINATOR_NOT_AVAILABLE` (15).
    pub const COORDINATOR_NOT_AVAILABLE: KafkaCode = KafkaCode(15);
    /// `NOT_COORDINATOR` (16).
    pub const NOT_COORDINATOR: KafkaCode = KafkaCode(16);
    /// `NOT_ENOUGH_REPLICAS` (19).
    pub const NOT_ENOUGH_REPLICAS: KafkaCode = KafkaCode(19);
    /// `REBALANCE_IN_PROGRESS` (27).
    pub const REBALANCE_IN_PROGRESS: KafkaCode = KafkaCode(27);
    /// `GROUP_AUTHORIZATION_FAILED` (30).
    pub const GROUP_AUTHORIZATION_FAILED: KafkaCode = KafkaCode(30);
    /// `UNSUPPORTED_VERSION` (35).
    pub const UNSUPPORTED_VERSION: KafkaCode = KafkaCode(35);
    /// `SASL_AUTHENTICATION_FAILED` (58).
    pub const SASL_AUTHENTICATION_FAILED: KafkaCode = KafkaCode(58);
    /// librdkafka `_TRANSPORT` (-195): a broker connection failed.
    pub const BROKER_TRANSPORT_FAILURE: KafkaCode = KafkaCode(-195);
    /// librdkafka `_ALL_BROKERS_DOWN` (-187).
    pub const ALL_BROKERS_DOWN: KafkaCode = KafkaCode(-187);
    /// librdkafka `_TIMED_OUT` (-185).
    pub const TIMED_OUT: KafkaCode = KafkaCode(-185);
    /// librdkafka `_STATE` (-172).
    pub const STATE: KafkaCode = KafkaCode(-172);
    /// librdkafka `_UNSUPPORTED_FEATURE` (-165): the broker does not implement the API.
    pub const UNSUPPORTED_FEATURE: KafkaCode = KafkaCode(-165);
    /// librdkafka `_FATAL` (-150).
    pub const FATAL: KafkaCode = KafkaCode(-150);

    fn entry(self) -> Option<&'static (i32, &'static str, ErrorClass)> {
        CODES.iter().find(|(code, _, _)| *code == self.0)
    }

    /// The symbolic name (`NOT_ENOUGH_REPLICAS`, `_TRANSPORT`), or `None` for an unlisted code.
    pub fn name(self) -> Option<&'static str> {
        self.entry().map(|(_, name, _)| *name)
    }

    /// Whether the broker does not serve the request at all (`_UNSUPPORTED_FEATURE`: no such
    /// API; `UNSUPPORTED_VERSION`: none of the client's versions of it), as opposed to failing
    /// this one.
    pub fn is_unsupported(self) -> bool {
        self == KafkaCode::UNSUPPORTED_FEATURE || self == KafkaCode::UNSUPPORTED_VERSION
    }

    /// How an error with this code should be treated. Unlisted codes are permanent.
    pub fn class(self) -> ErrorClass {
        self.entry()
            .map(|(_, _, class)| *class)
            .unwrap_or(ErrorClass::Permanent)
    }
}

impl fmt::Debug for KafkaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for KafkaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "code {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_api_or_version_the_broker_lacks_is_unsupported() {
        assert!(KafkaCode::UNSUPPORTED_FEATURE.is_unsupported());
        assert!(KafkaCode::UNSUPPORTED_VERSION.is_unsupported());
        assert!(!KafkaCode::TIMED_OUT.is_unsupported());
        assert!(!KafkaCode::GROUP_AUTHORIZATION_FAILED.is_unsupported());
    }

    #[test]
    fn runbook_codes_are_classified() {
        use ErrorClass::*;
        let cases = [
            (KafkaCode::NOT_ENOUGH_REPLICAS, Transient),
            (KafkaCode::OFFSET_OUT_OF_RANGE, Permanent),
            (KafkaCode::REQUEST_TIMED_OUT, Transient),
            (KafkaCode::UNKNOWN_TOPIC_OR_PARTITION, Transient),
            (KafkaCode::BROKER_TRANSPORT_FAILURE, Transient),
            (KafkaCode::ALL_BROKERS_DOWN, Transient),
            (KafkaCode::COORDINATOR_NOT_AVAILABLE, Transient),
            (KafkaCode::REBALANCE_IN_PROGRESS, Transient),
            (KafkaCode::MESSAGE_TOO_LARGE, Permanent),
            (KafkaCode::SASL_AUTHENTICATION_FAILED, Fatal),
            (KafkaCode::GROUP_AUTHORIZATION_FAILED, Fatal),
            (KafkaCode::FATAL, Fatal),
            (KafkaCode::STATE, Transient),
            (KafkaCode(9999), Permanent),
        ];
        for (code, class) in cases {
            assert_eq!(code.class(), class, "{code}");
        }
    }

    #[test]
    fn codes_are_unique_and_display_their_names() {
        let mut seen = std::collections::HashSet::new();
        for (code, name, _) in CODES {
            assert!(seen.insert(*code), "duplicate code {code}");
            assert!(!name.is_empty());
        }
        assert_eq!(
            KafkaCode::NOT_ENOUGH_REPLICAS.to_string(),
            "NOT_ENOUGH_REPLICAS (19)"
        );
        assert_eq!(KafkaCode(4242).to_string(), "code 4242");
    }

    #[test]
    fn error_class_parses_and_prints() {
        for class in [
            ErrorClass::Transient,
            ErrorClass::Permanent,
            ErrorClass::Fatal,
        ] {
            assert_eq!(class.as_str().parse::<ErrorClass>().unwrap(), class);
        }
        assert!("sometimes".parse::<ErrorClass>().is_err());
        assert!(ErrorClass::Transient.is_retryable());
        assert!(!ErrorClass::Fatal.is_retryable());
    }
}
