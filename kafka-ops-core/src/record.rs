//! A record as handlers see it: coordinates, key, value, headers and timestamp.
//!
//! [`Record`] borrows when it can (a message still owned by the consumer) and owns when it must
//! (a record handed to another task): the same type and the same handler code serve both, and
//! [`Record::into_owned`] turns one into the other.

use std::borrow::Cow;
use std::fmt;
use std::str::Utf8Error;

use serde::{Deserialize, Serialize};

use crate::types::{Offset, Timestamp, TopicPartition};

/// A record whose bytes are owned: what crosses task boundaries.
pub type OwnedRecord = Record<'static>;

/// When and how a record's timestamp was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "type", content = "millis")]
pub enum RecordTimestamp {
    /// The record carries no timestamp.
    #[default]
    NotAvailable,
    /// Set by the producer.
    CreateTime(Timestamp),
    /// Set by the broker when it appended the record.
    LogAppendTime(Timestamp),
}

impl RecordTimestamp {
    /// The time, whichever kind it is.
    pub fn time(self) -> Option<Timestamp> {
        match self {
            RecordTimestamp::NotAvailable => None,
            RecordTimestamp::CreateTime(t) | RecordTimestamp::LogAppendTime(t) => Some(t),
        }
    }
}

/// One record header. Kafka allows a header without a value and repeated keys.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Header<'a> {
    /// The header name.
    pub key: Cow<'a, str>,
    /// The header bytes; `None` for a header sent with a null value.
    pub value: Option<Cow<'a, [u8]>>,
}

impl Header<'_> {
    /// This header with owned bytes.
    pub fn into_owned(self) -> Header<'static> {
        Header {
            key: Cow::Owned(self.key.into_owned()),
            value: self.value.map(|v| Cow::Owned(v.into_owned())),
        }
    }
}

impl fmt::Debug for Header<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            None => write!(f, "{}=<null>", self.key),
            Some(v) => match std::str::from_utf8(v) {
                Ok(s) => write!(f, "{}={s:?}", self.key),
                Err(_) => write!(f, "{}=<{} bytes>", self.key, v.len()),
            },
        }
    }
}

/// A record's headers, in wire order. Lookups by name return the **last** occurrence, which is
/// how Kafka clients treat a header that was set again.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Headers<'a>(Vec<Header<'a>>);

impl<'a> Headers<'a> {
    /// No headers.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// Room for `n` headers.
    pub fn with_capacity(n: usize) -> Self {
        Headers(Vec::with_capacity(n))
    }

    /// Appends a header (keeping any earlier one with the same name).
    pub fn push(&mut self, key: impl Into<Cow<'a, str>>, value: Option<impl Into<Cow<'a, [u8]>>>) {
        self.0.push(Header {
            key: key.into(),
            value: value.map(Into::into),
        });
    }

    /// Replaces every header named `key` with a single one at the end.
    pub fn set(&mut self, key: impl Into<Cow<'a, str>>, value: impl Into<Cow<'a, [u8]>>) {
        let key = key.into();
        self.remove(&key);
        self.0.push(Header {
            key,
            value: Some(value.into()),
        });
    }

    /// Removes every header named `key`; returns how many were removed.
    pub fn remove(&mut self, key: &str) -> usize {
        let before = self.0.len();
        self.0.retain(|h| h.key != key);
        before - self.0.len()
    }

    /// Removes every header whose name satisfies `predicate`; returns how many were removed.
    pub fn remove_where(&mut self, mut predicate: impl FnMut(&str) -> bool) -> usize {
        let before = self.0.len();
        self.0.retain(|h| !predicate(&h.key));
        before - self.0.len()
    }

    /// The last header named `key`: `None` when absent, `Some(None)` when present with a null value.
    pub fn get(&self, key: &str) -> Option<Option<&[u8]>> {
        self.0
            .iter()
            .rev()
            .find(|h| h.key == key)
            .map(|h| h.value.as_deref())
    }

    /// The last non-null value of `key`.
    pub fn get_bytes(&self, key: &str) -> Option<&[u8]> {
        self.get(key).flatten()
    }

    /// The last non-null value of `key` as UTF-8; `Err` when it is not valid UTF-8.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>, Utf8Error> {
        self.get_bytes(key).map(std::str::from_utf8).transpose()
    }

    /// Every value of `key`, in order.
    pub fn get_all<'s>(&'s self, key: &'s str) -> impl Iterator<Item = Option<&'s [u8]>> + 's {
        self.0
            .iter()
            .filter(move |h| h.key == key)
            .map(|h| h.value.as_deref())
    }

    /// All headers in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Header<'a>> {
        self.0.iter()
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Total bytes of names and values, as they count towards a record's size.
    pub fn encoded_len(&self) -> usize {
        self.0
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
            .sum()
    }

    /// These headers with owned bytes.
    pub fn into_owned(self) -> Headers<'static> {
        Headers(self.0.into_iter().map(Header::into_owned).collect())
    }
}

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl<'a> FromIterator<Header<'a>> for Headers<'a> {
    fn from_iter<T: IntoIterator<Item = Header<'a>>>(iter: T) -> Self {
        Headers(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for Headers<'a> {
    type Item = Header<'a>;
    type IntoIter = std::vec::IntoIter<Header<'a>>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'s, 'a> IntoIterator for &'s Headers<'a> {
    type Item = &'s Header<'a>;
    type IntoIter = std::slice::Iter<'s, Header<'a>>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A Kafka record, borrowed or owned.
///
/// ```
/// use kafka_ops_core::{Offset, Record};
///
/// let record = Record::new("orders", 0, Offset::new(41).unwrap())
///     .with_key(b"customer-7".as_slice())
///     .with_value(br#"{"total": 12}"#.as_slice())
///     .with_header("event-id", b"e-1".as_slice());
/// assert_eq!(record.key_str().unwrap(), Some("customer-7"));
/// assert_eq!(record.headers.get_str("event-id").unwrap(), Some("e-1"));
/// let owned = record.into_owned(); // 'static: can move to another task
/// assert!(!owned.is_tombstone());
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record<'a> {
    /// The topic it was read from.
    pub topic: Cow<'a, str>,
    /// The partition it was read from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: Offset,
    /// The key; `None` for a null key.
    pub key: Option<Cow<'a, [u8]>>,
    /// The value; `None` for a tombstone.
    pub value: Option<Cow<'a, [u8]>>,
    /// Its headers.
    pub headers: Headers<'a>,
    /// Its timestamp.
    pub timestamp: RecordTimestamp,
}

impl<'a> Record<'a> {
    /// A record with no key, value, headers or timestamp.
    pub fn new(topic: impl Into<Cow<'a, str>>, partition: i32, offset: Offset) -> Self {
        Record {
            topic: topic.into(),
            partition,
            offset,
            key: None,
            value: None,
            headers: Headers::new(),
            timestamp: RecordTimestamp::NotAvailable,
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Cow<'a, [u8]>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the value.
    pub fn with_value(mut self, value: impl Into<Cow<'a, [u8]>>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Appends a header.
    pub fn with_header(
        mut self,
        key: impl Into<Cow<'a, str>>,
        value: impl Into<Cow<'a, [u8]>>,
    ) -> Self {
        self.headers.push(key, Some(value));
        self
    }

    /// Sets the timestamp.
    pub fn with_timestamp(mut self, timestamp: RecordTimestamp) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// The record's topic and partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic.as_ref(), self.partition)
    }

    /// Whether the value is null: a deletion marker on compacted topics.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// The key bytes, if any.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The value bytes, if any.
    pub fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }

    /// The key as UTF-8; `Err` when it is not valid UTF-8.
    pub fn key_str(&self) -> Result<Option<&str>, Utf8Error> {
        self.key().map(std::str::from_utf8).transpose()
    }

    /// The value as UTF-8; `Err` when it is not valid UTF-8.
    pub fn value_str(&self) -> Result<Option<&str>, Utf8Error> {
        self.value().map(std::str::from_utf8).transpose()
    }

    /// Approximate size on the wire: key + value + headers.
    pub fn encoded_len(&self) -> usize {
        self.key.as_ref().map_or(0, |k| k.len())
            + self.value.as_ref().map_or(0, |v| v.len())
            + self.headers.encoded_len()
    }

    /// This record with owned bytes, so it can outlive the message it was read from.
    pub fn into_owned(mut self) -> OwnedRecord {
        let topic = Cow::Owned(std::mem::take(&mut self.topic).into_owned());
        self.into_owned_in(topic)
    }

    /// [`into_owned`](Self::into_owned) with the topic name given (a shared, interned one saves
    /// an allocation per record).
    pub(crate) fn into_owned_in(self, topic: Cow<'static, str>) -> OwnedRecord {
        self.into_owned_with(topic, |name| Cow::Owned(name.to_string()))
    }

    /// [`into_owned_in`](Self::into_owned_in) with each header's name from `header_name`
    /// (shared, interned names save an allocation per header).
    pub(crate) fn into_owned_with(
        self,
        topic: Cow<'static, str>,
        mut header_name: impl FnMut(&str) -> Cow<'static, str>,
    ) -> OwnedRecord {
        Record {
            topic,
            partition: self.partition,
            offset: self.offset,
            key: self.key.map(|k| Cow::Owned(k.into_owned())),
            value: self.value.map(|v| Cow::Owned(v.into_owned())),
            headers: Headers(
                self.headers
                    .0
                    .into_iter()
                    .map(|header| Header {
                        key: header_name(&header.key),
                        value: header.value.map(|v| Cow::Owned(v.into_owned())),
                    })
                    .collect(),
            ),
            timestamp: self.timestamp,
        }
    }
}

impl fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values can hold personal data: show sizes, not contents.
        f.debug_struct("Record")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("key_len", &self.key.as_ref().map(|k| k.len()))
            .field("value_len", &self.value.as_ref().map(|v| v.len()))
            .field("headers", &self.headers.len())
            .field("timestamp", &self.timestamp)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record<'static> {
        Record::new("t", 2, Offset::new(9).unwrap())
    }

    #[test]
    fn header_lookup_takes_the_last_occurrence() {
        let mut h = Headers::new();
        h.push("a", Some(b"1".as_slice()));
        h.push("a", Some(b"2".as_slice()));
        h.push("n", None::<&[u8]>);
        assert_eq!(h.get_bytes("a"), Some(b"2".as_slice()));
        assert_eq!(h.get("n"), Some(None));
        assert_eq!(h.get("missing"), None);
        assert_eq!(h.get_all("a").count(), 2);
        h.set("a", b"3".as_slice());
        assert_eq!(
            h.get_all("a").collect::<Vec<_>>(),
            vec![Some(b"3".as_slice())]
        );
        assert_eq!(h.remove("a"), 1);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn non_utf8_is_an_error_not_a_panic() {
        let r = record()
            .with_key(vec![0xff, 0xfe])
            .with_value(vec![0xc3])
            .with_header("h", vec![0x80]);
        assert!(r.key_str().is_err());
        assert!(r.value_str().is_err());
        assert!(r.headers.get_str("h").is_err());
        assert_eq!(format!("{:?}", r.headers), "[h=<1 bytes>]");
    }

    #[test]
    fn tombstones_and_null_keys_are_explicit() {
        let r = record();
        assert!(r.is_tombstone());
        assert_eq!(r.key(), None);
        assert_eq!(r.key_str().unwrap(), None);
        assert_eq!(r.encoded_len(), 0);
    }

    #[test]
    fn into_owned_keeps_everything() {
        let key = b"k".to_vec();
        let borrowed = Record::new("t", 1, Offset::ZERO)
            .with_key(key.as_slice())
            .with_value(b"v".as_slice())
            .with_header("x", b"y".as_slice())
            .with_timestamp(RecordTimestamp::CreateTime(Timestamp::from_millis(5)));
        let owned: OwnedRecord = borrowed.clone().into_owned();
        assert_eq!(owned, borrowed);
        assert_eq!(owned.encoded_len(), 4);
        assert_eq!(owned.timestamp.time(), Some(Timestamp::from_millis(5)));
        assert_eq!(owned.topic_partition(), TopicPartition::new("t", 1));
    }

    #[test]
    fn debug_does_not_print_values() {
        let r = record().with_value(b"secret-card-number".as_slice());
        let shown = format!("{r:?}");
        assert!(!shown.contains("secret"));
        assert!(shown.contains("value_len: Some(18)"));
    }
}
