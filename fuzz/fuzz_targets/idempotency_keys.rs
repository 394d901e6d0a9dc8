//! Every key extractor, and each missing-key policy, on any record: a key or a typed error,
//! never a panic.
#![no_main]

use std::sync::Arc;

use kafka_ops_idempotency::keys::{
    Composite, Coordinates, HeaderKey, JsonField, KeyExtractor, KeyPolicy, MissingKey, PayloadHash,
    RecordKey,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let record = kafka_ops_fuzz::record(data);
    let extractors: Vec<Arc<dyn KeyExtractor>> = vec![
        Arc::new(HeaderKey("idempotency-key".into())),
        Arc::new(RecordKey::default()),
        Arc::new(RecordKey { allow_binary: true }),
        Arc::new(PayloadHash),
        Arc::new(JsonField("/event/id".into())),
        Arc::new(JsonField("/id".into())),
        Arc::new(Coordinates),
    ];
    for extractor in &extractors {
        let _ = extractor.extract(&record);
    }
    let _ = Composite(extractors.clone()).extract(&record);
    for on_missing in [
        MissingKey::Error,
        MissingKey::PassThrough,
        MissingKey::FallBack(Arc::new(PayloadHash)),
    ] {
        let policy = KeyPolicy::new("billing", HeaderKey("event-id".into())).on_missing(on_missing);
        let _ = policy.decide(&record);
    }
});
