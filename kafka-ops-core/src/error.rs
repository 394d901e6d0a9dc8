//! The crate's error type.

use std::time::Duration;

use crate::class::{BoxError, ErrorClass, KafkaCode};
use crate::handler::HandlerError;
use crate::types::{InvalidOffset, TopicPartition};

/// Everything that can go wrong in kafka-ops-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Kafka client call failed.
    #[error("{operation} failed: {source}")]
    Kafka {
        /// What was being done ("fetch metadata", "commit offsets", ...).
        operation: &'static str,
        /// The librdkafka / protocol code, when there is one.
        code: Option<KafkaCode>,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// A broker answered an admin request with an error code.
    #[error("{operation} failed with {code}: {message}")]
    Broker {
        /// What was being done.
        operation: &'static str,
        /// The error code.
        code: KafkaCode,
        /// The broker's or librdkafka's message.
        message: String,
    },
    /// An operation did not finish in time (the cluster may be unreachable).
    #[error("{operation} did not complete within {}", humantime::format_duration(*.timeout))]
    Timeout {
        /// What was being done.
        operation: &'static str,
        /// The bound that expired.
        timeout: Duration,
    },
    /// The broker does not implement an API this operation needs.
    #[error("the broker cannot serve {operation}: {reason}")]
    Unsupported {
        /// What was being done.
        operation: &'static str,
        /// Why it cannot be done.
        reason: String,
    },
    /// A raw offset that is neither a position nor "no offset".
    #[error("invalid offset {raw}: expected a non-negative position or -1001 (none)")]
    InvalidOffset {
        /// The raw value received.
        raw: i64,
    },
    /// An input that breaks an invariant (for example an out-of-order time-lag sample).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Bad configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A record handler failed and nothing in the handler stack recovered it.
    #[error("handler failed on {partition} at offset {offset}: {source}")]
    Handler {
        /// Where the record came from.
        partition: TopicPartition,
        /// The record's offset.
        offset: i64,
        /// The handler's error.
        #[source]
        source: HandlerError,
    },
    /// A background task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(#[source] BoxError),
    /// A record cannot be made small enough to write (a dead letter whose key or headers alone
    /// exceed the producer's limit).
    #[error(
        "record for {topic}/{partition}@{offset} is {size} bytes after truncation, over the {limit}-byte limit"
    )]
    Oversize {
        /// Source topic.
        topic: String,
        /// Source partition.
        partition: i32,
        /// Source offset.
        offset: i64,
        /// Its size after every truncation.
        size: usize,
        /// The producer's limit.
        limit: usize,
    },
    /// Records that should be there could not be read: nothing came for `waited` while
    /// `partitions` partitions of the ranges asked were unfinished.
    #[error("no records from {topic} for {waited:?} while {partitions} partitions were unread")]
    Stalled {
        /// The topic read (the first of them).
        topic: String,
        /// Partitions not read to their end.
        partitions: usize,
        /// How long it waited.
        waited: Duration,
    },
    /// The broker did not acknowledge a record written to `topic` (after the producer's own
    /// retries): it may not be stored.
    #[error("record to {topic} was not acknowledged")]
    NotAcknowledged {
        /// Target topic.
        topic: String,
        /// Why.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// The message with every cause behind it, outermost first, joined by `: ` — for reports
    /// that keep only a line of text (`Display` shows the outermost message alone); see
    /// [`describe_chain`].
    ///
    /// ```
    /// use kafka_ops_core::{Error, KafkaCode};
    /// let error = Error::NotAcknowledged {
    ///     topic: "orders".into(),
    ///     source: Box::new(Error::Broker {
    ///         operation: "produce",
    ///         code: KafkaCode::MESSAGE_TOO_LARGE,
    ///         message: "too large".into(),
    ///     }),
    /// };
    /// assert!(error.describe().starts_with("record to orders was not acknowledged: "));
    /// assert!(error.describe().contains("too large"));
    /// ```
    pub fn describe(&self) -> String {
        describe_chain(self)
    }

    /// How callers should treat this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Kafka {
                code: Some(code), ..
            } => code.class(),
            Error::Kafka { code: None, .. } => ErrorClass::Transient,
            Error::Broker { code, .. } => code.class(),
            Error::Timeout { .. } => ErrorClass::Transient,
            Error::Unsupported { .. } => ErrorClass::Permanent,
            Error::InvalidOffset { .. } | Error::InvalidInput(_) => ErrorClass::Permanent,
            Error::Config(_) => ErrorClass::Fatal,
            Error::Handler { source, .. } => source.class(),
            Error::Task(_) => ErrorClass::Fatal,
            Error::Oversize { .. } => ErrorClass::Permanent,
            Error::Stalled { .. } => ErrorClass::Transient,
            Error::NotAcknowledged { source, .. } => source
                .downcast_ref::<Error>()
                .map_or(ErrorClass::Transient, Error::class),
        }
    }

    /// The Kafka error code behind this error, if any.
    pub fn code(&self) -> Option<KafkaCode> {
        match self {
            Error::Kafka { code, .. } => *code,
            Error::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl std::str::FromStr for ErrorClass {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "transient" => Ok(ErrorClass::Transient),
            "permanent" => Ok(ErrorClass::Permanent),
            "fatal" => Ok(ErrorClass::Fatal),
            other => Err(Error::Config(format!(
                "unknown error class {other:?} (expected transient, permanent or fatal)"
            ))),
        }
    }
}

impl From<InvalidOffset> for Error {
    fn from(error: InvalidOffset) -> Self {
        Error::InvalidOffset { raw: error.raw() }
    }
}

impl From<Error> for HandlerError {
    fn from(error: Error) -> Self {
        let class = error.class();
        HandlerError::new(class, error)
    }
}

/// `error`'s message followed by each of its causes' (outermost first, joined by `: `), leaving
/// out a cause whose message the text already holds (an error that quotes its source).
///
/// ```
/// let outer = kafka_ops_core::Error::NotAcknowledged {
///     topic: "orders".into(),
///     source: Box::new(std::io::Error::other("disk full")),
/// };
/// assert_eq!(
///     kafka_ops_core::describe_chain(&outer),
///     "record to orders was not acknowledged: disk full"
/// );
/// ```
pub fn describe_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let message = error.to_string();
        if !message.is_empty() && !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = error.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class::KafkaCode;

    #[test]
    fn core_errors_convert_to_handler_errors_with_their_class() {
        let e: HandlerError = Error::Config("bad".into()).into();
        assert_eq!(e.class(), ErrorClass::Fatal);
        let e: Error = crate::types::Offset::new(-3).unwrap_err().into();
        assert!(matches!(e, Error::InvalidOffset { raw: -3 }));
        assert_eq!(e.class(), ErrorClass::Permanent);
    }

    #[test]
    fn errors_carry_their_class() {
        let timeout = Error::Timeout {
            operation: "fetch metadata",
            timeout: Duration::from_secs(5),
        };
        assert_eq!(timeout.class(), ErrorClass::Transient);
        assert_eq!(
            timeout.to_string(),
            "fetch metadata did not complete within 5s"
        );
        let broker = Error::Broker {
            operation: "list offsets",
            code: KafkaCode::GROUP_AUTHORIZATION_FAILED,
            message: "denied".into(),
        };
        assert_eq!(broker.class(), ErrorClass::Fatal);
        assert_eq!(broker.code(), Some(KafkaCode::GROUP_AUTHORIZATION_FAILED));
    }
}
