//! The little of Kafka's wire protocol the adapter speaks itself, on plaintext connections only:
//! flexible (v2) request headers, size framing, and a cursor over a response body. Used where
//! librdkafka cannot ask what we need (see `group_state` and `cluster::offset_fetch`);
//! everything else goes through librdkafka.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::Error;

/// The client id our own requests carry.
const CLIENT_ID: &str = "kafka-ops";
/// The largest response read; a broker's answer above it is refused, not allocated.
const MAX_RESPONSE: usize = 64 << 20;

/// A wire-level failure of `operation` (no broker error code: the broker said nothing usable).
pub(crate) fn wire_error(operation: &'static str, reason: impl Into<String>) -> Error {
    Error::Kafka {
        operation,
        code: None,
        source: reason.into().into(),
    }
}

/// Appends `value` as an unsigned varint.
pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a compact (flexible-version) string: its length plus one, then its bytes.
pub(crate) fn put_compact_string(out: &mut Vec<u8>, value: &str) {
    put_uvarint(out, value.len() as u64 + 1);
    out.extend_from_slice(value.as_bytes());
}

/// Appends a compact array's length (count plus one).
pub(crate) fn put_compact_len(out: &mut Vec<u8>, count: usize) {
    put_uvarint(out, count as u64 + 1);
}

/// A message under construction: four bytes kept for its size, then request header v2 (the
/// flexible one). [`finish`](Self::finish) fills in the size.
pub(crate) struct Request {
    bytes: Vec<u8>,
}

impl Request {
    /// Starts a request of `api_key` at `version`.
    pub(crate) fn new(api_key: i16, version: i16, correlation_id: i32, capacity: usize) -> Self {
        let mut bytes = Vec::with_capacity(32 + capacity);
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&api_key.to_be_bytes());
        bytes.extend_from_slice(&version.to_be_bytes());
        bytes.extend_from_slice(&correlation_id.to_be_bytes());
        // The client id is a classic (int16-length) string even in flexible headers.
        bytes.extend_from_slice(&(CLIENT_ID.len() as i16).to_be_bytes());
        bytes.extend_from_slice(CLIENT_ID.as_bytes());
        put_uvarint(&mut bytes, 0); // header tagged fields
        Request { bytes }
    }

    /// The body, to append to.
    pub(crate) fn body(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// The size-prefixed message.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        let size = i32::try_from(self.bytes.len() - 4).unwrap_or(i32::MAX);
        self.bytes[..4].copy_from_slice(&size.to_be_bytes());
        self.bytes
    }
}

/// One plaintext connection to a broker, for requests sent one after the other. Every step
/// (name resolution, connecting, each write and read) is bounded by the caller's deadline, not
/// by a timeout per system call: a broker that answers a byte at a time cannot hold a call
/// past it.
pub(crate) struct Connection {
    stream: TcpStream,
    operation: &'static str,
}

impl Connection {
    /// Connects to `host:port` (each address it resolves to in turn) by `deadline`.
    pub(crate) fn open(
        operation: &'static str,
        host: &str,
        port: u16,
        deadline: Instant,
    ) -> Result<Self, Error> {
        let mut last = None;
        let addresses = resolve(operation, host, port, deadline)?;
        for (tried, address) in addresses.iter().enumerate() {
            // Each address gets its share of what is left, so one that swallows the connect
            // does not leave the others untried.
            let share = u32::try_from(addresses.len() - tried).unwrap_or(u32::MAX);
            let left = time_left(operation, deadline)? / share;
            match TcpStream::connect_timeout(address, left.max(Duration::from_millis(1))) {
                Ok(stream) => {
                    stream
                        .set_nodelay(true)
                        .map_err(|e| wire_error(operation, e.to_string()))?;
                    return Ok(Connection { stream, operation });
                }
                Err(error) => last = Some(format!("connect {address}: {error}")),
            }
        }
        Err(wire_error(
            operation,
            last.unwrap_or_else(|| format!("{host}:{port} resolves to no address")),
        ))
    }

    /// Sends `request` (as [`Request::finish`] made it) and returns the response body after
    /// its size (the correlation id first), all of it by `deadline`.
    pub(crate) fn round_trip(
        &mut self,
        request: &[u8],
        deadline: Instant,
    ) -> Result<Vec<u8>, Error> {
        let operation = self.operation;
        let mut sent = 0;
        while sent < request.len() {
            self.stream
                .set_write_timeout(Some(time_left(operation, deadline)?))
                .map_err(|e| wire_error(operation, e.to_string()))?;
            match self.stream.write(&request[sent..]) {
                Ok(0) => return Err(wire_error(operation, "send: connection closed")),
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(wire_error(operation, format!("send: {e}"))),
            }
        }
        let mut size = [0u8; 4];
        self.read_by(&mut size, deadline)?;
        let size = usize::try_from(i32::from_be_bytes(size))
            .ok()
            .filter(|s| *s <= MAX_RESPONSE)
            .ok_or_else(|| wire_error(operation, "response size out of range"))?;
        let mut body = vec![0u8; size];
        self.read_by(&mut body, deadline)?;
        Ok(body)
    }

    /// Fills `buffer` from the connection by `deadline`.
    fn read_by(&mut self, buffer: &mut [u8], deadline: Instant) -> Result<(), Error> {
        let operation = self.operation;
        let mut filled = 0;
        while filled < buffer.len() {
            self.stream
                .set_read_timeout(Some(time_left(operation, deadline)?))
                .map_err(|e| wire_error(operation, e.to_string()))?;
            match self.stream.read(&mut buffer[filled..]) {
                Ok(0) => return Err(wire_error(operation, "read: connection closed")),
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(wire_error(operation, format!("read: {e}"))),
            }
        }
        Ok(())
    }
}

/// What is left until `deadline`, or an error once it has passed.
fn time_left(operation: &'static str, deadline: Instant) -> Result<Duration, Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(wire_error(operation, "no time left"));
    }
    Ok(left)
}

/// The addresses of `host:port`: an IP address as it is, a name resolved on a thread of its
/// own so a slow resolver cannot hold the caller past `deadline`.
fn resolve(
    operation: &'static str,
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<Vec<SocketAddr>, Error> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let left = time_left(operation, deadline)?;
    let (answer, answered) = mpsc::channel();
    let name = host.to_string();
    std::thread::Builder::new()
        .name("kafka-ops-resolve".into())
        .spawn(move || {
            let _ = answer.send((name.as_str(), port).to_socket_addrs().map(Vec::from_iter));
        })
        .map_err(|e| wire_error(operation, format!("resolve {host}: {e}")))?;
    match answered.recv_timeout(left) {
        Ok(Ok(addresses)) => Ok(addresses),
        Ok(Err(e)) => Err(wire_error(operation, format!("resolve {host}:{port}: {e}"))),
        Err(_) => Err(wire_error(
            operation,
            format!("resolve {host}: no answer in time"),
        )),
    }
}

/// Reads a response body front to back; every read checks the bytes are there.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    operation: &'static str,
}

impl<'a> Cursor<'a> {
    /// A cursor over `bytes`, reporting failures as `operation`'s.
    pub(crate) fn new(operation: &'static str, bytes: &'a [u8]) -> Self {
        Cursor { bytes, operation }
    }

    /// A failure of this cursor's operation.
    pub(crate) fn error(&self, reason: impl Into<String>) -> Error {
        wire_error(self.operation, reason)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.bytes.len() < n {
            return Err(self.error("truncated response"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    /// A big-endian `i16`.
    pub(crate) fn i16(&mut self) -> Result<i16, Error> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    /// A big-endian `i32`.
    pub(crate) fn i32(&mut self) -> Result<i32, Error> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A big-endian `i64`.
    pub(crate) fn i64(&mut self) -> Result<i64, Error> {
        let b = self.take(8)?;
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(b);
        Ok(i64::from_be_bytes(bytes))
    }

    /// An unsigned varint.
    pub(crate) fn uvarint(&mut self) -> Result<u64, Error> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error("varint too long"))
    }

    /// Skips a tagged-field section (none of which we read).
    pub(crate) fn skip_tagged_fields(&mut self) -> Result<(), Error> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let size = usize::try_from(self.uvarint()?).map_err(|_| self.error("tag size"))?;
            self.take(size)?;
        }
        Ok(())
    }

    /// A compact array's element count; `None` for a null array. The count is checked against
    /// the bytes left (each element takes at least `min_element` bytes), so a corrupt count
    /// cannot make the caller reserve memory for elements that are not there.
    pub(crate) fn compact_len(&mut self, min_element: usize) -> Result<Option<usize>, Error> {
        match self.uvarint()? {
            0 => Ok(None),
            n => {
                let count = usize::try_from(n - 1).map_err(|_| self.error("array size"))?;
                if count.saturating_mul(min_element.max(1)) > self.bytes.len() {
                    return Err(self.error("array longer than the response"));
                }
                Ok(Some(count))
            }
        }
    }

    /// A compact nullable string's bytes (`None` for null), borrowed from the response.
    pub(crate) fn compact_bytes(&mut self) -> Result<Option<&'a [u8]>, Error> {
        match self.uvarint()? {
            0 => Ok(None),
            n => {
                let len = usize::try_from(n - 1).map_err(|_| self.error("string size"))?;
                self.take(len).map(Some)
            }
        }
    }

    /// A compact nullable string (length + 1, 0 for null) that must be UTF-8.
    pub(crate) fn compact_string(&mut self) -> Result<Option<&'a str>, Error> {
        match self.compact_bytes()? {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(bytes)
                .map(Some)
                .map_err(|_| self.error("string is not UTF-8")),
        }
    }

    /// Reads the response header v1 (flexible): the correlation id, which must be `expected`,
    /// and tagged fields.
    pub(crate) fn response_header(&mut self, expected: i32) -> Result<(), Error> {
        if self.i32()? != expected {
            return Err(self.error("correlation id mismatch"));
        }
        self.skip_tagged_fields()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_framed_with_its_size_and_a_flexible_header() {
        let mut request = Request::new(69, 0, 9, 0);
        put_compact_len(request.body(), 1);
        put_compact_string(request.body(), "billing");
        let framed = request.finish();
        let size = i32::from_be_bytes([framed[0], framed[1], framed[2], framed[3]]);
        assert_eq!(size as usize, framed.len() - 4);
        assert_eq!(&framed[4..6], &69i16.to_be_bytes());
        assert_eq!(&framed[6..8], &0i16.to_be_bytes());
        assert_eq!(&framed[8..12], &9i32.to_be_bytes());
        assert_eq!(&framed[12..14], &9i16.to_be_bytes());
        assert_eq!(&framed[14..23], b"kafka-ops");
        assert_eq!(&framed[23..], b"\x00\x02\x08billing");
    }

    #[test]
    fn varints_and_strings_read_back() {
        let mut bytes = Vec::new();
        for value in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            put_uvarint(&mut bytes, value);
        }
        put_compact_string(&mut bytes, "é");
        put_uvarint(&mut bytes, 0);
        let mut cursor = Cursor::new("test", &bytes);
        for value in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(cursor.uvarint().unwrap(), value);
        }
        assert_eq!(cursor.compact_string().unwrap(), Some("é"));
        assert_eq!(cursor.compact_string().unwrap(), None);
        assert!(cursor.i16().is_err(), "nothing is left");
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic_or_an_allocation() {
        // A count of a billion elements with four bytes left.
        let mut bytes = Vec::new();
        put_uvarint(&mut bytes, 1_000_000_001);
        bytes.extend_from_slice(&[0; 4]);
        assert!(Cursor::new("test", &bytes).compact_len(4).is_err());
        assert!(Cursor::new("test", &[0xff; 11]).uvarint().is_err());
        assert!(
            Cursor::new("test", &[3, 0xff, 0xfe])
                .compact_string()
                .is_err()
        );
        assert!(Cursor::new("test", &[9, b'a']).compact_string().is_err());
        assert!(
            Cursor::new("test", &[0, 0, 0, 7, 0])
                .response_header(8)
                .is_err()
        );
        assert!(
            Cursor::new("test", &[0, 0, 0, 7, 0])
                .response_header(7)
                .is_ok()
        );
    }
}
