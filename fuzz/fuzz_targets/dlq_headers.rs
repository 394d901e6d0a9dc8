//! Dead-letter and retry headers from any bytes: parsed into a (partial) model, stripped,
//! re-encoded and parsed again — never a panic, and kafka-ops' own encoding reads back.
#![no_main]

use kafka_ops_core::dead_letter::headers::{self, Format};
use kafka_ops_core::dead_letter::retry::RetryState;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let record = kafka_ops_fuzz::record(data);
    let info = headers::parse(&record.headers);
    let _ = RetryState::read(&record.headers);
    let mut stripped = record.headers.clone();
    headers::strip_provenance(&mut stripped, info.format.unwrap_or(Format::Unknown));
    let _ = headers::parse(&stripped);
    let _ = kafka_ops_dlq::inspect::fingerprint(info.error_message.as_deref().unwrap_or(""));
});
