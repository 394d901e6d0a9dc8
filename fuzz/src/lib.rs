//! Turns fuzzer bytes into records, so every target reads the same shapes.
//!
//! Layout: one flags byte (bit 0: key present, bit 1: value present), then length-prefixed
//! chunks (one length byte each): the key, the value, then header name/value pairs until the
//! bytes run out (a value chunk of length 255 stands for a null header value).

use kafka_ops_core::{Offset, OwnedRecord, Record};

/// Reads length-prefixed chunks.
struct Chunks<'a>(&'a [u8]);

impl<'a> Chunks<'a> {
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&len, rest) = self.0.split_first()?;
        let take = usize::from(len).min(rest.len());
        let (chunk, rest) = if len == 255 {
            (&rest[..0], rest)
        } else {
            rest.split_at(take)
        };
        self.0 = rest;
        Some((len, chunk))
    }
}

/// A record from arbitrary bytes: any key, value and headers, none of them checked.
pub fn record(data: &[u8]) -> OwnedRecord {
    let mut record = Record::new("fuzz", 0, Offset::new(7).unwrap_or(Offset::ZERO));
    let Some((&flags, rest)) = data.split_first() else {
        return record;
    };
    let mut chunks = Chunks(rest);
    if flags & 1 == 1 {
        record.key = chunks.next().map(|(_, k)| k.to_vec().into());
    }
    if flags & 2 == 2 {
        record.value = chunks.next().map(|(_, v)| v.to_vec().into());
    }
    while let (Some((_, name)), Some((len, value))) = (chunks.next(), chunks.next()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let value = (len != 255).then(|| value.to_vec());
        record.headers.push(name, value);
    }
    record
}
