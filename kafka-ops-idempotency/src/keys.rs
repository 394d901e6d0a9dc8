//! Where a record's idempotency key comes from.

use std::fmt;
use std::sync::Arc;

use kafka_ops_core::Record;
use xxhash_rust::xxh3::xxh3_128;

use crate::error::IdempotencyError;

/// Extracts a record's idempotency key (without the namespace; the layer adds it).
pub trait KeyExtractor: Send + Sync + fmt::Debug {
    /// The key, or why there is none.
    fn extract(&self, record: &Record<'_>) -> Result<String, IdempotencyError>;
}

/// A header's value (`idempotency-key`, `event-id`), which must be non-empty UTF-8.
#[derive(Debug, Clone)]
pub struct HeaderKey(pub String);

impl KeyExtractor for HeaderKey {
    fn extract(&self, record: &Record<'_>) -> Result<String, IdempotencyError> {
        match record.headers.get(&self.0) {
            None => Err(IdempotencyError::MissingKey(format!(
                "header {:?} absent",
                self.0
            ))),
            Some(None) => Err(IdempotencyError::MissingKey(format!(
                "header {:?} is null",
                self.0
            ))),
            Some(Some(bytes)) => match std::str::from_utf8(bytes) {
                Ok("") => Err(IdempotencyError::InvalidKey(format!(
                    "header {:?} is empty",
                    self.0
                ))),
                Ok(text) => Ok(text.to_string()),
                Err(_) => Err(IdempotencyError::InvalidKey(format!(
                    "header {:?} is not UTF-8",
                    self.0
                ))),
            },
        }
    }
}

/// The record key, as UTF-8 text, or hex when `allow_binary` is set.
#[derive(Debug, Clone, Default)]
pub struct RecordKey {
    /// Accept non-UTF-8 keys, hex-encoded.
    pub allow_binary: bool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl KeyExtractor for RecordKey {
    fn extract(&self, record: &Record<'_>) -> Result<String, IdempotencyError> {
        match record.key() {
            None => Err(IdempotencyError::MissingKey("the record has no key".into())),
            Some([]) => Err(IdempotencyError::InvalidKey(
                "the record key is empty".into(),
            )),
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => Ok(text.to_string()),
                Err(_) if self.allow_binary => Ok(format!("0x{}", hex(bytes))),
                Err(_) => Err(IdempotencyError::InvalidKey(
                    "the record key is not UTF-8".into(),
                )),
            },
        }
    }
}

/// A 128-bit hash of the whole payload (records with identical values are duplicates).
#[derive(Debug, Clone, Default)]
pub struct PayloadHash;

impl KeyExtractor for PayloadHash {
    fn extract(&self, record: &Record<'_>) -> Result<String, IdempotencyError> {
        match record.value() {
            None => Err(IdempotencyError::MissingKey(
                "a tombstone has no payload to hash".into(),
            )),
            Some([]) => Err(IdempotencyError::InvalidKey("the payload is empty".into())),
            Some(value) => Ok(format!("{:032x}", xxh3_128(value))),
        }
    }
}

/// A field of a JSON payload, by JSON pointer (`/event/id`): strings as they are, numbers as
/// written.
#[derive(Debug, Clone)]
pub struct JsonField(pub String);

impl KeyExtractor for JsonField {
    fn extract(&self, record: &Record<'_>) -> Result<String, IdempotencyError> {
        let value = record.value().ok_or_else(|| {
            IdempotencyError::MissingKey("a tombstone has no JSON payload".into())
        })?;
        let json: serde_json::Value = serde_json::from_slice(value)
            .map_err(|e| IdempotencyError::InvalidKey(format!("the payload is not JSON: {e}")))?;
        match json.pointer(&self.0) {
            None | Some(serde_json::Value::Null) => Err(IdempotencyError::MissingKey(format!(
                "no JSON field at {}",
                self.0
            ))),
            Some(serde_json::Value::String(s)) if s.is_empty() => Err(
                IdempotencyError::InvalidKey(format!("JSON field {} is empty", self.0)),
            ),
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
            Some(other) => Err(IdempotencyError::InvalidKey(format!(
                "JSON field {} is not a string or number: {other}",
                self.0
            ))),
        }
    }
}

/// The record's coordinates: each offset is processed once (redeliveries of the same record
/// are duplicates; a replayed copy at a new offset is not).
#[derive(Debug, Clone, Default)]
pub struct Coordinates;

impl KeyExtractor for Coordinates {
    fn extract(&self, record: &Record<'_>) -> Result<String, IdempotencyError> {
        Ok(format!(
            "{}/{}@{}",
            record.topic, record.partition, record.offset
        ))
    }
}

/// Several extractors' keys joined with `|` (`tenant` header + JSON `/order/id`); fails when
/// any part is missing. A `|` or `\` inside a part is escaped with a `\`, so different parts
/// never join into the same key (`a|b` + `c` is `a\|b|c`, `a` + `b|c` is `a|b\|c`); keys whose
/// parts hold neither are joined as they are.
#[derive(Debug, Clone)]
pub struct Composite(pub Vec<Arc<dyn KeyExtractor>>);

impl KeyExtractor for Composite {
    fn extract(&self, record: &Record<'_>) -> Result<String, IdempotencyError> {
        if self.0.is_empty() {
            return Err(IdempotencyError::Config(
                "a composite key needs parts".into(),
            ));
        }
        let mut key = String::new();
        for (index, extractor) in self.0.iter().enumerate() {
            if index > 0 {
                key.push('|');
            }
            let part = extractor.extract(record)?;
            if part.contains(['|', '\\']) {
                for c in part.chars() {
                    if c == '|' || c == '\\' {
                        key.push('\\');
                    }
                    key.push(c);
                }
            } else {
                key.push_str(&part);
            }
        }
        Ok(key)
    }
}

/// What to do when a record has no usable key.
#[derive(Debug, Clone)]
pub enum MissingKey {
    /// Fail the record (it takes the error path: retry, dead-letter).
    Error,
    /// Try another extractor.
    FallBack(Arc<dyn KeyExtractor>),
    /// Process it without the guard (logged and counted).
    PassThrough,
}

/// An extractor and its missing-key policy, and the namespace keys live in.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    /// The extractor.
    pub extractor: Arc<dyn KeyExtractor>,
    /// When it finds nothing.
    pub on_missing: MissingKey,
    /// Keys are stored as `<namespace>:<key>` so services sharing a store do not collide
    /// (the consumer group, or a chosen scope).
    pub namespace: String,
}

/// A key decision for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyDecision {
    /// Guard the record with this namespaced key.
    Guard(String),
    /// Process it unguarded.
    Unguarded(String),
}

impl KeyPolicy {
    /// A policy failing records without a key.
    pub fn new(namespace: impl Into<String>, extractor: impl KeyExtractor + 'static) -> Self {
        KeyPolicy {
            extractor: Arc::new(extractor),
            on_missing: MissingKey::Error,
            namespace: namespace.into(),
        }
    }

    /// Another missing-key policy.
    pub fn on_missing(mut self, on_missing: MissingKey) -> Self {
        self.on_missing = on_missing;
        self
    }

    /// The decision for `record`.
    pub fn decide(&self, record: &Record<'_>) -> Result<KeyDecision, IdempotencyError> {
        let key = match (self.extractor.extract(record), &self.on_missing) {
            (Ok(key), _) => key,
            (Err(error), MissingKey::Error) => return Err(error),
            (Err(_), MissingKey::FallBack(other)) => other.extract(record)?,
            (Err(error), MissingKey::PassThrough) => {
                return Ok(KeyDecision::Unguarded(error.to_string()));
            }
        };
        // Sized once, without the formatting machinery: this runs for every record.
        let mut guarded = String::with_capacity(self.namespace.len() + 1 + key.len());
        guarded.push_str(&self.namespace);
        guarded.push(':');
        guarded.push_str(&key);
        Ok(KeyDecision::Guard(guarded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_ops_core::Offset;

    fn record() -> Record<'static> {
        Record::new("orders", 2, Offset::new(41).unwrap())
    }

    #[test]
    fn headers_keys_payloads_fields_coordinates_and_composites() {
        let r = record()
            .with_key(b"customer-7".to_vec())
            .with_value(br#"{"event":{"id":"e-1","seq":12}}"#.to_vec())
            .with_header("event-id", b"evt-9".to_vec());
        assert_eq!(HeaderKey("event-id".into()).extract(&r).unwrap(), "evt-9");
        assert_eq!(RecordKey::default().extract(&r).unwrap(), "customer-7");
        assert_eq!(JsonField("/event/id".into()).extract(&r).unwrap(), "e-1");
        assert_eq!(JsonField("/event/seq".into()).extract(&r).unwrap(), "12");
        assert_eq!(Coordinates.extract(&r).unwrap(), "orders/2@41");
        assert_eq!(PayloadHash.extract(&r).unwrap().len(), 32);
        let composite = Composite(vec![
            Arc::new(RecordKey::default()),
            Arc::new(JsonField("/event/id".into())),
        ]);
        assert_eq!(composite.extract(&r).unwrap(), "customer-7|e-1");
    }

    #[test]
    fn composite_parts_never_join_into_the_same_key() {
        let composite = Composite(vec![
            Arc::new(HeaderKey("tenant".into())),
            Arc::new(HeaderKey("order".into())),
        ]);
        let key = |tenant: &str, order: &str| {
            let r = record()
                .with_header("tenant", tenant.as_bytes().to_vec())
                .with_header("order", order.as_bytes().to_vec());
            composite.extract(&r).unwrap()
        };
        assert_eq!(key("a|b", "c"), r"a\|b|c");
        assert_eq!(key("a", "b|c"), r"a|b\|c");
        assert_eq!(key(r"a\", "|c"), r"a\\|\|c");
        assert_eq!(key(r"a\|", "c"), r"a\\\||c");
        assert_eq!(key("acme", "o-1"), "acme|o-1");
    }

    #[test]
    fn bad_input_gets_a_typed_error() {
        let bare = record();
        assert!(matches!(
            HeaderKey("event-id".into()).extract(&bare),
            Err(IdempotencyError::MissingKey(_))
        ));
        let binary = record()
            .with_key(vec![0xff, 0xfe])
            .with_header("event-id", vec![0xc3, 0x28]);
        assert!(matches!(
            HeaderKey("event-id".into()).extract(&binary),
            Err(IdempotencyError::InvalidKey(_))
        ));
        assert!(matches!(
            RecordKey::default().extract(&binary),
            Err(IdempotencyError::InvalidKey(_))
        ));
        assert_eq!(
            RecordKey { allow_binary: true }.extract(&binary).unwrap(),
            "0xfffe"
        );
        let tombstone = record().with_key(b"k".to_vec());
        assert!(tombstone.is_tombstone());
        assert!(matches!(
            PayloadHash.extract(&tombstone),
            Err(IdempotencyError::MissingKey(_))
        ));
        assert!(matches!(
            JsonField("/id".into()).extract(&tombstone),
            Err(IdempotencyError::MissingKey(_))
        ));
        let empty = record().with_value(Vec::new());
        assert!(matches!(
            PayloadHash.extract(&empty),
            Err(IdempotencyError::InvalidKey(_))
        ));
        let not_json = record().with_value(b"<xml/>".to_vec());
        assert!(matches!(
            JsonField("/id".into()).extract(&not_json),
            Err(IdempotencyError::InvalidKey(_))
        ));
        let object = record().with_value(br#"{"id":{"a":1}}"#.to_vec());
        assert!(matches!(
            JsonField("/id".into()).extract(&object),
            Err(IdempotencyError::InvalidKey(_))
        ));
    }

    #[test]
    fn policies_namespace_and_handle_missing_keys() {
        let keyed = record().with_header("event-id", b"e1".to_vec());
        let bare = record();
        let strict = KeyPolicy::new("billing", HeaderKey("event-id".into()));
        assert_eq!(
            strict.decide(&keyed).unwrap(),
            KeyDecision::Guard("billing:e1".into())
        );
        assert!(strict.decide(&bare).is_err());
        let fallback = strict
            .clone()
            .on_missing(MissingKey::FallBack(Arc::new(Coordinates)));
        assert_eq!(
            fallback.decide(&bare).unwrap(),
            KeyDecision::Guard("billing:orders/2@41".into())
        );
        let lenient = strict.on_missing(MissingKey::PassThrough);
        assert!(matches!(
            lenient.decide(&bare).unwrap(),
            KeyDecision::Unguarded(_)
        ));
    }
}
