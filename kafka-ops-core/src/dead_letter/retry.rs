//! The retry tiers' headers (`kafka-ops.retry.*`, UTF-8 decimal text) and the state they
//! carry: where a record read from a tier topic was first consumed, how often it failed, when it
//! is due. Written by the retry-topic layer (`kafka-ops-dlq`); read there and by the envelope,
//! which dead-letters a tier record under its original coordinates.

use crate::{Headers, Timestamp};

/// The prefix of every retry header.
pub const PREFIX: &str = "kafka-ops.retry.";

/// Names of the retry headers.
pub mod names {
    /// `kafka-ops.retry.original-topic`
    pub const ORIGINAL_TOPIC: &str = "kafka-ops.retry.original-topic";
    /// `kafka-ops.retry.original-partition`
    pub const ORIGINAL_PARTITION: &str = "kafka-ops.retry.original-partition";
    /// `kafka-ops.retry.original-offset`
    pub const ORIGINAL_OFFSET: &str = "kafka-ops.retry.original-offset";
    /// `kafka-ops.retry.attempts`
    pub const ATTEMPTS: &str = "kafka-ops.retry.attempts";
    /// `kafka-ops.retry.tier`
    pub const TIER: &str = "kafka-ops.retry.tier";
    /// `kafka-ops.retry.due`
    pub const DUE: &str = "kafka-ops.retry.due";
    /// `kafka-ops.retry.first-failure`
    pub const FIRST_FAILURE: &str = "kafka-ops.retry.first-failure";
    /// `kafka-ops.retry.last-error`
    pub const LAST_ERROR: &str = "kafka-ops.retry.last-error";
}

/// Where a record read from a tier topic was first consumed, and its retry state, as its
/// headers tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryState {
    /// The original topic.
    pub topic: String,
    /// The original partition.
    pub partition: i32,
    /// The original offset.
    pub offset: i64,
    /// Failures so far (every try counts, in place and in the tiers).
    pub attempts: u32,
    /// The tier it was written to (0 is the first).
    pub tier: u32,
    /// When it may be tried again.
    pub due: Timestamp,
    /// When it first failed.
    pub first_failure: Timestamp,
}

/// Why a record's retry headers cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable retry header {header}")]
pub struct BadRetryHeader {
    /// The header.
    pub header: &'static str,
}

impl RetryState {
    /// Reads the retry headers: `Ok(None)` when the record carries none (it was not retried),
    /// an error naming the first header missing or unreadable when it carries some.
    pub fn read(headers: &Headers<'_>) -> Result<Option<RetryState>, BadRetryHeader> {
        if !headers.iter().any(|h| h.key.starts_with(PREFIX)) {
            return Ok(None);
        }
        fn text<'h>(
            headers: &'h Headers<'_>,
            header: &'static str,
        ) -> Result<&'h str, BadRetryHeader> {
            headers
                .get_str(header)
                .ok()
                .flatten()
                .ok_or(BadRetryHeader { header })
        }
        fn number<T: std::str::FromStr>(
            headers: &Headers<'_>,
            header: &'static str,
        ) -> Result<T, BadRetryHeader> {
            text(headers, header)?
                .trim()
                .parse()
                .map_err(|_| BadRetryHeader { header })
        }
        Ok(Some(RetryState {
            topic: text(headers, names::ORIGINAL_TOPIC)?.to_string(),
            partition: number(headers, names::ORIGINAL_PARTITION)?,
            offset: number(headers, names::ORIGINAL_OFFSET)?,
            attempts: number(headers, names::ATTEMPTS)?,
            tier: number(headers, names::TIER)?,
            due: Timestamp::from_millis(number(headers, names::DUE)?),
            first_failure: Timestamp::from_millis(number(headers, names::FIRST_FAILURE)?),
        }))
    }
}
