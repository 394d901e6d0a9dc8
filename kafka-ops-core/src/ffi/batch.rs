//! Reading many messages per call: librdkafka's batch consume on a consumer's queue, with each
//! message viewed as a [`Record`] in place. rdkafka reads one message per call, which costs more
//! than the record itself on the range reader's hot path.

use std::borrow::Cow;
use std::ffi::c_void;

use super::*;
use crate::record::{Header, Headers, Record, RecordTimestamp};

/// One of a client's queues: a consumer's own queue or one partition's, held for batch reads,
/// or a producer's main queue, for its delivery reports. It must not outlive the client: keep
/// it in a struct field declared before the client, so it is dropped first.
pub(crate) struct ClientQueue {
    queue: Owned<rd::rd_kafka_queue_t>,
}

// SAFETY: librdkafka queues are thread-safe (every operation on them takes the queue's lock);
// the handle is only a reference to one.
unsafe impl Send for ClientQueue {}
// SAFETY: as above.
unsafe impl Sync for ClientQueue {}

impl ClientQueue {
    /// The consumer queue of `client` (a consumer).
    pub(crate) fn consumer_of<C: ClientContext>(client: &Client<C>) -> Result<Self, Error> {
        // SAFETY: `client` is a live handle; the queue returned is a new reference, owned by
        // the guard and destroyed exactly once.
        let queue = unsafe { rd::rd_kafka_queue_get_consumer(client.native_ptr()) };
        Ok(ClientQueue {
            queue: Owned::new(queue, rd::rd_kafka_queue_destroy, "consumer queue")?,
        })
    }

    /// The queue, for calls of this module.
    pub(super) fn as_ptr(&self) -> *mut rd::rd_kafka_queue_t {
        self.queue.as_ptr()
    }

    /// The main queue of `client` (a producer's delivery reports arrive there).
    pub(crate) fn main_of<C: ClientContext>(client: &Client<C>) -> Result<Self, Error> {
        // SAFETY: `client` is a live handle; the queue returned is a new reference, owned by
        // the guard and destroyed exactly once.
        let queue = unsafe { rd::rd_kafka_queue_get_main(client.native_ptr()) };
        Ok(ClientQueue {
            queue: Owned::new(queue, rd::rd_kafka_queue_destroy, "main queue")?,
        })
    }

    /// Another reference to the queue of `partition` of `topic` in `client` (a consumer), for
    /// batch reads of a partition whose queue was split off the consumer queue. Only messages
    /// of that partition arrive there once it is split; before, it forwards to the consumer
    /// queue and reads from it find nothing.
    pub(crate) fn partition_of<C: ClientContext>(
        client: &Client<C>,
        topic: &str,
        partition: i32,
    ) -> Result<Self, Error> {
        let topic = CString::new(topic).map_err(|_| Error::Kafka {
            operation: "partition queue",
            code: None,
            source: format!("topic name {topic:?} holds a NUL byte").into(),
        })?;
        // SAFETY: `client` is a live handle and `topic` a NUL-terminated string that outlives
        // the call; the queue returned (null for a partition the client does not know) is a
        // new reference, owned by the guard and destroyed exactly once.
        let queue = unsafe {
            rd::rd_kafka_queue_get_partition(client.native_ptr(), topic.as_ptr(), partition)
        };
        Ok(ClientQueue {
            queue: Owned::new(queue, rd::rd_kafka_queue_destroy, "partition queue")?,
        })
    }

    /// Keeps the partition's messages in its own queue from now on, so none of them reaches
    /// the consumer queue — also after a later assignment, which forwards a partition's queue
    /// to the consumer queue unless the application has set its forwarding.
    pub(crate) fn stop_forwarding(&self) {
        // SAFETY: the queue is live; a NULL destination only clears the forwarding.
        unsafe { rd::rd_kafka_queue_forward(self.queue.as_ptr(), ptr::null_mut()) };
    }
}

/// What one message of a batch is.
pub(crate) enum Delivery<'a> {
    /// A record, borrowing the message.
    Record(Record<'a>),
    /// An error event, with its code and description.
    Error(KafkaCode, String),
    /// A fetch of `partition` at `offset` fell outside the partition's log and
    /// `auto.offset.reset` is `error`: librdkafka stopped fetching the partition until it is
    /// assigned again.
    OutOfRange {
        /// The partition's topic.
        topic: Cow<'a, str>,
        /// The partition.
        partition: i32,
        /// The offset the fetch asked for.
        offset: i64,
        /// librdkafka's description.
        description: String,
    },
}

/// The messages one [`fill`](Self::fill) read, destroyed by the next fill, [`clear`](Self::clear)
/// or drop: records viewed from them must be gone by then, which their borrow ensures.
pub(crate) struct MessageBatch {
    messages: Vec<*mut rd::rd_kafka_message_t>,
    capacity: usize,
}

impl MessageBatch {
    /// A batch of at most `capacity` messages.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        MessageBatch {
            messages: Vec::with_capacity(capacity.max(1)),
            capacity: capacity.max(1),
        }
    }

    /// Reads up to the batch's capacity from `queue`, waiting up to `timeout` for the first;
    /// returns how many were read. The queue must belong to a consumer that outlives this
    /// batch's messages.
    pub(crate) fn fill(&mut self, queue: &ClientQueue, timeout: Duration) -> usize {
        self.fill_at_most(queue, timeout, self.capacity)
    }

    /// [`fill`](Self::fill), reading at most `limit` messages (and never more than the
    /// batch's capacity).
    pub(crate) fn fill_at_most(
        &mut self,
        queue: &ClientQueue,
        timeout: Duration,
        limit: usize,
    ) -> usize {
        self.clear();
        let limit = limit.min(self.capacity);
        if limit == 0 {
            return 0;
        }
        // SAFETY: the buffer has room for `capacity` pointers, at least `limit`; librdkafka
        // writes at most `limit` and returns how many (or -1, nothing written). Each message written is owned
        // by this batch until `clear` destroys it.
        let read = unsafe {
            rd::rd_kafka_consume_batch_queue(
                queue.queue.as_ptr(),
                timeout_ms(timeout),
                self.messages.as_mut_ptr(),
                limit,
            )
        };
        let read = usize::try_from(read).unwrap_or(0).min(limit);
        // SAFETY: the first `read` slots were initialised by librdkafka just above.
        unsafe { self.messages.set_len(read) };
        read
    }

    /// The messages read by the last fill.
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    /// The `index`th message.
    pub(crate) fn get(&self, index: usize) -> Option<Delivery<'_>> {
        let message = *self.messages.get(index)?;
        // SAFETY: the pointer is a live message owned by this batch, not destroyed before
        // `clear`, which needs `&mut self` and so outlives every view returned here.
        let m = unsafe { &*message };
        if m.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET
            && !m.rkt.is_null()
        {
            return Some(Delivery::OutOfRange {
                // SAFETY: the message is live while `self` is borrowed.
                topic: unsafe { topic_of(m) },
                partition: m.partition,
                offset: m.offset,
                description: describe_code(m.err),
            });
        }
        if is_error(m.err) {
            return Some(Delivery::Error(code_of(m.err), describe_code(m.err)));
        }
        // SAFETY: the message is live while `self` is borrowed.
        let topic = unsafe { topic_of(m) };
        let Ok(offset) = Offset::new(m.offset) else {
            return Some(Delivery::Error(
                KafkaCode(-1),
                format!("message with invalid offset {}", m.offset),
            ));
        };
        let mut record = Record::new(topic, m.partition, offset);
        // SAFETY: payload and key point to `len` and `key_len` bytes owned by the message.
        record.value = unsafe { bytes(m.payload, m.len) }.map(Cow::Borrowed);
        // SAFETY: as above.
        record.key = unsafe { bytes(m.key, m.key_len) }.map(Cow::Borrowed);
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the message is live; `kind` is a valid out-pointer.
        let millis = unsafe { rd::rd_kafka_message_timestamp(message, &mut kind) };
        record.timestamp = match kind {
            rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_CREATE_TIME => {
                RecordTimestamp::CreateTime(Timestamp::from_millis(millis))
            }
            rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => {
                RecordTimestamp::LogAppendTime(Timestamp::from_millis(millis))
            }
            _ => RecordTimestamp::NotAvailable,
        };
        record.headers = self.headers_of(message);
        Some(Delivery::Record(record))
    }

    /// The headers of `message`, one of this batch's live messages, borrowing it.
    fn headers_of(&self, message: *mut rd::rd_kafka_message_t) -> Headers<'_> {
        let mut list: *mut rd::rd_kafka_headers_t = ptr::null_mut();
        // SAFETY: the message is live while `self` is borrowed; `list` is a valid out-pointer
        // and, when set, points to headers the message owns.
        let found = unsafe { rd::rd_kafka_message_headers(message, &mut list) };
        if is_error(found) || list.is_null() {
            return Headers::new();
        }
        // SAFETY: `list` is the message's header list, live as long as the message.
        let count = unsafe { rd::rd_kafka_header_cnt(list) };
        (0..count)
            .filter_map(|index| {
                let mut name: *const c_char = ptr::null();
                let mut value: *const c_void = ptr::null();
                let mut size = 0usize;
                // SAFETY: `index` is below the count; the out-pointers are valid; what they
                // receive points into the message's header list.
                let got = unsafe {
                    rd::rd_kafka_header_get_all(list, index, &mut name, &mut value, &mut size)
                };
                if is_error(got) || name.is_null() {
                    return None;
                }
                // SAFETY: header names are NUL-terminated strings owned by the header list.
                let name = unsafe { CStr::from_ptr(name) };
                let key = name.to_str().map_or_else(
                    |_| Cow::Owned(name.to_string_lossy().into_owned()),
                    Cow::Borrowed,
                );
                // SAFETY: `value` is null (a null header) or points to `size` bytes of the list.
                let value = unsafe { bytes(value.cast_mut(), size) }.map(Cow::Borrowed);
                Some(Header { key, value })
            })
            .collect()
    }

    /// Destroys the messages read.
    pub(crate) fn clear(&mut self) {
        for message in self.messages.drain(..) {
            // SAFETY: each pointer is a message this batch owns, destroyed once here.
            unsafe { rd::rd_kafka_message_destroy(message) };
        }
    }
}

impl Drop for MessageBatch {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The topic name of `message`, borrowed from its topic handle (empty when it has none).
///
/// # Safety
/// `message` is a live message; its topic handle, when set, lives as long as the message.
pub(super) unsafe fn topic_of(message: &rd::rd_kafka_message_t) -> Cow<'_, str> {
    if message.rkt.is_null() {
        return Cow::Borrowed("");
    }
    // SAFETY: per this function's contract, the handle and its name outlive the borrow.
    unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(message.rkt)) }.to_string_lossy()
}

/// `len` bytes at `ptr`, or `None` for a null pointer.
///
/// # Safety
/// `ptr` is null or points to `len` readable bytes that outlive `'a`.
unsafe fn bytes<'a>(ptr: *mut c_void, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: per this function's contract.
        Some(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
    }
}
