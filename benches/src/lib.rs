//! Shared helpers for the kafka-ops benchmarks live in the bench targets; this crate has no library API.
