//! The reference consumer's demo workload: orders, some repeated, some in a legacy format.
//!
//! Shared by the reference consumer's embedded mode and the tests that drive it against their
//! own cluster, so both see exactly the same records. Everything is a function of the record's
//! index: runs are repeatable.

use kafka_ops_core::testkit::TestRecord;

/// Shares of the demo workload that are duplicates and legacy (poison) records.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Workload {
    /// Share of records repeating the event 7 before them (same key, value and `event-id`).
    pub duplicate_rate: f64,
    /// Share of records in the legacy pipe-delimited format (`id|customer|amount`), which the
    /// consumer rejects as poison unless it is told to read that format.
    pub legacy_rate: f64,
}

/// The spacing of an evenly spread share: every `every(rate)`-th record (`u64::MAX` for none).
fn every(rate: f64) -> u64 {
    if rate > 0.0 {
        (1.0 / rate).round().max(1.0) as u64
    } else {
        u64::MAX
    }
}

impl Workload {
    /// The event record `i` carries: its own, or for a duplicate the one 7 before it.
    pub fn event(&self, i: u64) -> u64 {
        let spacing = every(self.duplicate_rate);
        if i >= 7 && i % spacing == spacing - 1 {
            i - 7
        } else {
            i
        }
    }

    /// Whether event `event` is written in the legacy format.
    pub fn is_legacy(&self, event: u64) -> bool {
        let spacing = every(self.legacy_rate);
        event % spacing == spacing / 2
    }

    /// Record `i`: keyed by customer, an `event-id` header, a JSON order — or, for a legacy
    /// event, the same order pipe-delimited.
    pub fn record(&self, i: u64) -> TestRecord {
        let event = self.event(i);
        // Customers (the record key, hence the partition) mixed from the event, so no share of
        // the workload lands on one partition.
        let customer = format!(
            "customer-{}",
            (event.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 50
        );
        let amount_cents = 100 + (event * 37) % 9_900;
        let value = if self.is_legacy(event) {
            format!("{event}|{customer}|{amount_cents}")
        } else {
            format!(
                r#"{{"order_id":{event},"customer":"{customer}","amount_cents":{amount_cents}}}"#
            )
        };
        TestRecord::keyed(customer, value)
            .header(EVENT_ID_HEADER, event_id(event))
            .header("content-type", "application/json")
    }
}

/// The header carrying each order's event id, the idempotency key.
pub const EVENT_ID_HEADER: &str = "event-id";

/// The `event-id` header's value for event `event`.
pub fn event_id(event: u64) -> String {
    format!("order-{event}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shares_are_spread_evenly_and_duplicates_repeat_the_whole_record() {
        let workload = Workload {
            duplicate_rate: 0.1,
            legacy_rate: 0.01,
        };
        let records: Vec<TestRecord> = (0..1_000).map(|i| workload.record(i)).collect();
        let duplicates = (0..1_000).filter(|&i| workload.event(i) != i).count();
        assert_eq!(duplicates, 100);
        let legacy = records
            .iter()
            .filter(|r| !r.value.as_ref().unwrap().starts_with(b"{"))
            .count();
        assert_eq!(legacy, 10);
        assert_eq!(records[9], records[2]);
        let legacy_customers: std::collections::BTreeSet<_> = records
            .iter()
            .filter(|r| !r.value.as_ref().unwrap().starts_with(b"{"))
            .map(|r| r.key.clone())
            .collect();
        assert!(legacy_customers.len() >= 8, "{legacy_customers:?}");
        let value = String::from_utf8(records[50].value.clone().unwrap()).unwrap();
        assert!(
            value.starts_with("50|customer-") && value.ends_with("|1950"),
            "{value}"
        );
        let none = Workload {
            duplicate_rate: 0.0,
            legacy_rate: 0.0,
        };
        assert!((0..1_000).all(|i| none.event(i) == i && !none.is_legacy(i)));
    }
}
