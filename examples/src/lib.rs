//! Code shared by the kafka-ops reference apps.
//!
//! The `kafka-ops` command-line tool lives in [`cli`] as a library, so its commands run
//! in-process in tests with exactly the code the binary runs; `kafka-ops/main.rs` only forwards
//! the process arguments. Its long-running `exporter` command is built from [`exporter`], whose
//! pieces (polling, bounded history, the Prometheus text) are tested on their own. [`table`]
//! prints aligned columns like the Kafka tools do. [`orders`] is the reference consumer's demo
//! workload, shared with the tests that drive it.

pub mod cli;
pub mod exporter;
pub mod orders;
pub mod table;
