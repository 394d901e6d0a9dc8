//! The one module with `unsafe`: librdkafka admin calls that rdkafka 0.39 does not wrap.
//!
//! rdkafka 0.39 has no list-offsets, list/describe consumer groups or list-group-offsets; the
//! librdkafka 2.12 C API it bundles has all four. Each function here:
//!
//! - takes a live `&Client` (so the `rd_kafka_t` outlives the call),
//! - owns every C object it creates in an [`Owned`] guard that frees it on every path, including
//!   early returns and panics,
//! - waits for the result on a private queue with a bound, so it **blocks**: callers run it in
//!   `tokio::task::spawn_blocking`, never on an async worker,
//! - copies everything out of the result event into owned Rust values before the event is freed.
//!
//! A queue abandoned after a timeout is safe to destroy: the pending request holds its own
//! reference and frees it when the answer arrives.
//!
//! The `testkit` feature adds helpers for librdkafka's mock cluster (request tracking, the
//! initial rebalance delay) that the safe `MockCluster` wrapper does not expose.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int};
use std::ptr::{self, NonNull};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::bindings as rd;
use rdkafka::client::Client;

use crate::class::KafkaCode;
use crate::cluster::{
    GroupDescription, GroupListing, GroupMember, GroupState, GroupType, PartitionError,
    PartitionResults,
};
use crate::error::Error;
use crate::types::{
    IsolationLevel, ListedOffset, Offset, OffsetSpec, RAW_OFFSET_NONE, Timestamp, TopicPartition,
};

/// Extra time given to the local queue beyond the request timeout, so librdkafka's own timeout
/// (which produces a proper error event) fires before ours.
const QUEUE_GRACE: Duration = Duration::from_secs(2);

/// A C object freed by its destructor when dropped.
struct Owned<T> {
    ptr: NonNull<T>,
    destroy: unsafe extern "C" fn(*mut T),
}

impl<T> Owned<T> {
    /// Takes ownership of `ptr`, or reports `what` as failed when it is null.
    fn new(
        ptr: *mut T,
        destroy: unsafe extern "C" fn(*mut T),
        what: &'static str,
    ) -> Result<Self, Error> {
        NonNull::new(ptr)
            .map(|ptr| Owned { ptr, destroy })
            .ok_or_else(|| Error::Kafka {
                operation: what,
                code: None,
                source: format!("librdkafka returned no {what}").into(),
            })
    }

    fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from the librdkafka constructor matching `destroy`, is non-null, and
        // this guard is its only owner, so it is freed exactly once.
        unsafe { (self.destroy)(self.ptr.as_ptr()) }
    }
}

/// Copies a C string, treating NULL as absent.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string valid for the duration of the call.
unsafe fn opt_string(ptr: *const c_char) -> Option<String> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: non-null and NUL-terminated per this function's contract.
        Some(
            unsafe { CStr::from_ptr(ptr) }
                .to_string_lossy()
                .into_owned(),
        )
    }
}

fn timeout_ms(timeout: Duration) -> c_int {
    c_int::try_from(timeout.as_millis()).unwrap_or(c_int::MAX)
}

fn code_of(err: rd::rd_kafka_resp_err_t) -> KafkaCode {
    KafkaCode(err as i32)
}

fn is_error(err: rd::rd_kafka_resp_err_t) -> bool {
    err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
}

fn describe_code(err: rd::rd_kafka_resp_err_t) -> String {
    // SAFETY: rd_kafka_err2str returns a pointer to a static string for every code.
    unsafe { opt_string(rd::rd_kafka_err2str(err)) }.unwrap_or_else(|| code_of(err).to_string())
}

/// Turns a borrowed `rd_kafka_error_t` into an error message with its code.
///
/// # Safety
/// `error` is NULL or a valid `rd_kafka_error_t` for the duration of the call.
unsafe fn error_parts(error: *const rd::rd_kafka_error_t) -> Option<(KafkaCode, String)> {
    if error.is_null() {
        return None;
    }
    // SAFETY: non-null and valid per this function's contract.
    let code = unsafe { rd::rd_kafka_error_code(error) };
    // SAFETY: as above; the string lives as long as `error`.
    let message = unsafe { opt_string(rd::rd_kafka_error_string(error)) }.unwrap_or_default();
    Some((code_of(code), message))
}

fn broker_error(operation: &'static str, code: KafkaCode, message: String) -> Error {
    if code.is_unsupported() {
        Error::Unsupported {
            operation,
            reason: format!("{code}: {message}"),
        }
    } else {
        Error::Broker {
            operation,
            code,
            message,
        }
    }
}

fn c_string(value: &str) -> Result<CString, Error> {
    CString::new(value)
        .map_err(|_| Error::InvalidInput(format!("name contains a NUL byte: {value:?}")))
}

/// Builds a C topic-partition list; `offset_of` gives each element's offset field.
fn partition_list<'a>(
    items: impl ExactSizeIterator<Item = (&'a TopicPartition, i64)>,
) -> Result<Owned<rd::rd_kafka_topic_partition_list_t>, Error> {
    let size = c_int::try_from(items.len()).unwrap_or(c_int::MAX);
    // SAFETY: rd_kafka_topic_partition_list_new allocates a list of the given capacity.
    let raw = unsafe { rd::rd_kafka_topic_partition_list_new(size) };
    let list = Owned::new(
        raw,
        rd::rd_kafka_topic_partition_list_destroy,
        "partition list",
    )?;
    for (tp, offset) in items {
        let topic = c_string(&tp.topic)?;
        // SAFETY: `list` is a valid list; `topic` is NUL-terminated and copied by librdkafka.
        let element = unsafe {
            rd::rd_kafka_topic_partition_list_add(list.as_ptr(), topic.as_ptr(), tp.partition)
        };
        if element.is_null() {
            return Err(Error::InvalidInput(format!(
                "could not add {tp} to a partition list"
            )));
        }
        // SAFETY: `element` points into `list`, which is alive and not aliased elsewhere.
        unsafe { (*element).offset = offset };
    }
    Ok(list)
}

/// Copies the topic-partitions of a C topic-partition list.
///
/// # Safety
/// `list` is NULL or a valid list that stays alive for the duration of the call.
unsafe fn read_partition_list(
    list: *const rd::rd_kafka_topic_partition_list_t,
) -> Vec<TopicPartition> {
    if list.is_null() {
        return Vec::new();
    }
    // SAFETY: `list` is valid per the contract; `cnt` elements are initialized at `elems`.
    let (count, elems) = unsafe { ((*list).cnt, (*list).elems) };
    let count = usize::try_from(count).unwrap_or(0);
    if count == 0 || elems.is_null() {
        return Vec::new();
    }
    // SAFETY: `elems` points to `count` initialized elements owned by `list`.
    let slice = unsafe { std::slice::from_raw_parts(elems, count) };
    slice
        .iter()
        .map(|e| {
            // SAFETY: every element's topic is a NUL-terminated string owned by the list.
            TopicPartition::new(
                unsafe { opt_string(e.topic) }.unwrap_or_default(),
                e.partition,
            )
        })
        .collect()
}

/// Copies an array of pointers returned by a result accessor.
///
/// # Safety
/// `array` is NULL or points to `count` valid pointers.
unsafe fn pointers<'a, T>(array: *const *const T, count: usize) -> &'a [*const T] {
    if array.is_null() || count == 0 {
        &[]
    } else {
        // SAFETY: per the contract, `array` holds `count` pointers valid while the result lives.
        unsafe { std::slice::from_raw_parts(array, count) }
    }
}

/// What an admin request's options set besides its timeout.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct AdminSettings {
    /// The isolation level (ListOffsets).
    pub(crate) isolation: Option<IsolationLevel>,
    /// The broker to send the request to, instead of the one librdkafka would pick.
    pub(crate) broker: Option<i32>,
    /// How long librdkafka keeps the request alive when that is longer than the caller waits
    /// (at most an hour, librdkafka's limit): the caller gives up at its own bound and the
    /// request ends on its own later.
    pub(crate) lifetime: Option<Duration>,
}

/// The longest request timeout librdkafka accepts for an admin request.
pub(crate) const LONGEST_ADMIN_LIFETIME: Duration = Duration::from_secs(3_600);

/// Admin options for `op` with a request timeout and `settings`.
fn admin_options<C: ClientContext>(
    client: &Client<C>,
    op: rd::rd_kafka_admin_op_t,
    operation: &'static str,
    timeout: Duration,
    settings: AdminSettings,
) -> Result<Owned<rd::rd_kafka_AdminOptions_t>, Error> {
    // SAFETY: `client` is a live client borrowed for this call.
    let raw = unsafe { rd::rd_kafka_AdminOptions_new(client.native_ptr(), op) };
    let options = Owned::new(raw, rd::rd_kafka_AdminOptions_destroy, "admin options")?;
    // One setter of the options, which writes why it refused into a buffer.
    let set = |what: String,
               setter: &dyn Fn(*mut c_char, usize) -> rd::rd_kafka_resp_err_t|
     -> Result<(), Error> {
        let mut errstr = [0 as c_char; 512];
        let err = setter(errstr.as_mut_ptr(), errstr.len());
        if is_error(err) {
            // SAFETY: librdkafka NUL-terminates `errstr` on error.
            let message = unsafe { opt_string(errstr.as_ptr()) }.unwrap_or_default();
            return Err(Error::Config(format!(
                "{operation}: {what} rejected: {message}"
            )));
        }
        Ok(())
    };
    set("request timeout".into(), &|errstr, len| {
        // SAFETY: `options` is valid; `errstr` is a writable buffer of `len` bytes.
        unsafe {
            rd::rd_kafka_AdminOptions_set_request_timeout(
                options.as_ptr(),
                timeout_ms(timeout),
                errstr,
                len,
            )
        }
    })?;
    if let Some(broker) = settings.broker {
        set(format!("broker {broker}"), &|errstr, len| {
            // SAFETY: `options` is valid; `errstr` is a writable buffer of `len` bytes.
            unsafe { rd::rd_kafka_AdminOptions_set_broker(options.as_ptr(), broker, errstr, len) }
        })?;
    }
    if settings.isolation == Some(IsolationLevel::ReadCommitted) {
        // SAFETY: `options` is valid; a non-null return is an error object we must destroy.
        let error = unsafe {
            rd::rd_kafka_AdminOptions_set_isolation_level(
                options.as_ptr(),
                rd::rd_kafka_IsolationLevel_t::RD_KAFKA_ISOLATION_LEVEL_READ_COMMITTED,
            )
        };
        if !error.is_null() {
            let error = Owned::new(error, rd::rd_kafka_error_destroy, "error")?;
            // SAFETY: `error` is a valid error object until the guard drops.
            let (code, message) =
                unsafe { error_parts(error.as_ptr()) }.unwrap_or((KafkaCode(-1), String::new()));
            return Err(broker_error(operation, code, message));
        }
    }
    Ok(options)
}

/// Checks a result event's type and top-level error.
fn check_event(
    event: &Owned<rd::rd_kafka_event_t>,
    operation: &'static str,
    timeout: Duration,
    expected_event: c_int,
) -> Result<(), Error> {
    // SAFETY: `event` is a valid event until the guard drops.
    let kind = unsafe { rd::rd_kafka_event_type(event.as_ptr()) };
    if kind != expected_event {
        return Err(Error::Kafka {
            operation,
            code: None,
            source: format!("unexpected admin event type {kind}, expected {expected_event}").into(),
        });
    }
    // SAFETY: as above.
    let err = unsafe { rd::rd_kafka_event_error(event.as_ptr()) };
    if is_error(err) {
        // SAFETY: the error string lives as long as the event.
        let message = unsafe { opt_string(rd::rd_kafka_event_error_string(event.as_ptr())) }
            .unwrap_or_else(|| describe_code(err));
        if code_of(err) == KafkaCode::TIMED_OUT {
            return Err(Error::Timeout { operation, timeout });
        }
        return Err(broker_error(operation, code_of(err), message));
    }
    Ok(())
}

/// A result event, or why its request failed.
type EventResult = Result<Owned<rd::rd_kafka_event_t>, Error>;

/// One result per batch of a batched call: its per-partition answers, or why the batch failed.
pub(crate) type BatchResults<T> = Vec<Result<PartitionResults<T>, Error>>;

/// Runs `requests` admin requests at once on a private queue and waits (bounded) for all their
/// result events. `start(i, options, queue)` issues request `i`; each result is matched back to
/// its request by the options' opaque, so answers may arrive in any order. A request that fails
/// or does not answer in time fails alone.
#[allow(clippy::too_many_arguments)]
fn run_admin_many<C: ClientContext>(
    client: &Client<C>,
    op: rd::rd_kafka_admin_op_t,
    operation: &'static str,
    timeout: Duration,
    settings: AdminSettings,
    expected_event: c_int,
    requests: usize,
    mut start: impl FnMut(
        usize,
        *const rd::rd_kafka_AdminOptions_t,
        *mut rd::rd_kafka_queue_t,
    ) -> Result<(), Error>,
) -> Result<Vec<EventResult>, Error> {
    let lifetime = settings
        .lifetime
        .map_or(timeout, |lifetime| lifetime.max(timeout))
        .min(LONGEST_ADMIN_LIFETIME);
    let options = admin_options(client, op, operation, lifetime, settings)?;
    // SAFETY: `client` is live; the queue is owned by the guard.
    let raw = unsafe { rd::rd_kafka_queue_new(client.native_ptr()) };
    let queue = Owned::new(raw, rd::rd_kafka_queue_destroy, "queue")?;
    let wait = timeout + QUEUE_GRACE;
    let mut results: Vec<Option<EventResult>> = (0..requests).map(|_| None).collect();
    let mut pending = 0usize;
    for (index, slot) in results.iter_mut().enumerate() {
        // The opaque carries the request's index; librdkafka copies the options at each call,
        // so the next call reuses them with another index.
        // SAFETY: `options` is valid; the opaque is an integer, never dereferenced.
        unsafe {
            rd::rd_kafka_AdminOptions_set_opaque(options.as_ptr(), index as *mut std::ffi::c_void)
        };
        match start(index, options.as_ptr(), queue.as_ptr()) {
            Ok(()) => pending += 1,
            Err(error) => *slot = Some(Err(error)),
        }
    }
    let deadline = std::time::Instant::now() + wait;
    while pending > 0 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        // SAFETY: `queue` is valid; the returned event (if any) is owned by us.
        let raw = unsafe { rd::rd_kafka_queue_poll(queue.as_ptr(), timeout_ms(left)) };
        if raw.is_null() {
            continue;
        }
        let event = Owned::new(raw, rd::rd_kafka_event_destroy, "event")?;
        // SAFETY: `event` is valid; its opaque is the integer index set above.
        let index = unsafe { rd::rd_kafka_event_opaque(event.as_ptr()) } as usize;
        let Some(slot) = results.get_mut(index).filter(|slot| slot.is_none()) else {
            continue;
        };
        *slot = Some(check_event(&event, operation, timeout, expected_event).map(|()| event));
        pending -= 1;
    }
    // A queue abandoned with requests still pending is safe: each request holds its own
    // reference and frees it when its answer arrives.
    Ok(results
        .into_iter()
        .map(|slot| {
            slot.unwrap_or(Err(Error::Timeout {
                operation,
                timeout: wait,
            }))
        })
        .collect())
}

/// Runs one admin request and waits for its result event.
fn run_admin<C: ClientContext>(
    client: &Client<C>,
    op: rd::rd_kafka_admin_op_t,
    operation: &'static str,
    timeout: Duration,
    settings: AdminSettings,
    expected_event: c_int,
    start: impl FnOnce(*const rd::rd_kafka_AdminOptions_t, *mut rd::rd_kafka_queue_t),
) -> Result<Owned<rd::rd_kafka_event_t>, Error> {
    let mut start = Some(start);
    let mut results = run_admin_many(
        client,
        op,
        operation,
        timeout,
        settings,
        expected_event,
        1,
        |_, options, queue| {
            if let Some(start) = start.take() {
                start(options, queue);
            }
            Ok(())
        },
    )?;
    results
        .pop()
        .unwrap_or(Err(Error::Timeout { operation, timeout }))
}

/// The answers of one ListOffsets result event.
fn read_list_offsets(event: &Owned<rd::rd_kafka_event_t>) -> PartitionResults<ListedOffset> {
    // SAFETY: `event` is a ListOffsets result event (type checked in run_admin_many).
    let result = unsafe { rd::rd_kafka_event_ListOffsets_result(event.as_ptr()) };
    let mut count = 0usize;
    // SAFETY: `result` is valid while `event` lives; `count` receives the array length.
    let infos = unsafe { rd::rd_kafka_ListOffsets_result_infos(result, &mut count) };
    // SAFETY: `infos` holds `count` pointers valid while `event` lives.
    let infos = unsafe { pointers(infos, count) };
    let mut out = Vec::with_capacity(count);
    for info in infos {
        // SAFETY: each info is valid while `event` lives; the partition pointer too.
        let (partition, timestamp) = unsafe {
            (
                rd::rd_kafka_ListOffsetsResultInfo_topic_partition(*info),
                rd::rd_kafka_ListOffsetsResultInfo_timestamp(*info),
            )
        };
        if partition.is_null() {
            continue;
        }
        // SAFETY: `partition` is a valid element owned by the result.
        let (topic, number, offset, err) = unsafe {
            (
                opt_string((*partition).topic),
                (*partition).partition,
                (*partition).offset,
                (*partition).err,
            )
        };
        let tp = TopicPartition::new(topic.unwrap_or_default(), number);
        let answer = if is_error(err) {
            Err(PartitionError {
                code: Some(code_of(err)),
                reason: describe_code(err),
            })
        } else if offset == RAW_OFFSET_NONE {
            // librdkafka fills each partition's answer in as "invalid, no error" before asking
            // the leaders, and a leader's request that fails or times out leaves its partitions
            // so: a broker's "no such offset" is -1, never this.
            Err(PartitionError {
                code: None,
                reason: "no answer from the partition's leader (its request failed or timed out)"
                    .into(),
            })
        } else {
            Ok(ListedOffset {
                offset: Offset::new(offset).ok(),
                timestamp: (timestamp >= 0).then(|| Timestamp::from_millis(timestamp)),
            })
        };
        out.push((tp, answer));
    }
    out
}

/// `ListOffsets` for several batches of partitions at once (librdkafka sends each batch as one
/// request per partition leader). Each batch gets its own result, so a batch whose leader is down
/// fails without failing the others.
pub(crate) fn list_offsets<C: ClientContext>(
    client: &Client<C>,
    batches: &[Vec<(TopicPartition, OffsetSpec)>],
    isolation: IsolationLevel,
    timeout: Duration,
) -> Result<BatchResults<ListedOffset>, Error> {
    let events = run_admin_many(
        client,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTOFFSETS,
        "list offsets",
        timeout,
        AdminSettings {
            isolation: Some(isolation),
            ..AdminSettings::default()
        },
        rd::RD_KAFKA_EVENT_LISTOFFSETS_RESULT,
        batches.len(),
        |index, options, queue| {
            let list = partition_list(batches[index].iter().map(|(tp, spec)| {
                let raw = match spec {
                    OffsetSpec::Earliest => {
                        rd::rd_kafka_OffsetSpec_t::RD_KAFKA_OFFSET_SPEC_EARLIEST as i64
                    }
                    OffsetSpec::Latest => {
                        rd::rd_kafka_OffsetSpec_t::RD_KAFKA_OFFSET_SPEC_LATEST as i64
                    }
                    OffsetSpec::MaxTimestamp => {
                        rd::rd_kafka_OffsetSpec_t::RD_KAFKA_OFFSET_SPEC_MAX_TIMESTAMP as i64
                    }
                    OffsetSpec::AtTime(t) => t.as_millis().max(0),
                };
                (tp, raw)
            }))?;
            // SAFETY: all pointers are live for the call; librdkafka copies the list and options.
            unsafe { rd::rd_kafka_ListOffsets(client.native_ptr(), list.as_ptr(), options, queue) };
            Ok(())
        },
    )?;
    Ok(events
        .into_iter()
        .map(|event| event.map(|event| read_list_offsets(&event)))
        .collect())
}

/// The controller broker id from a metadata request; `None` when unknown within `timeout`.
pub(crate) fn controller_id<C: ClientContext>(
    client: &Client<C>,
    timeout: Duration,
) -> Option<i32> {
    // SAFETY: `client` is live; the call blocks up to `timeout` and returns an id or -1.
    let id = unsafe { rd::rd_kafka_controllerid(client.native_ptr(), timeout_ms(timeout)) };
    (id >= 0).then_some(id)
}

mod batch;
mod configs;
mod delivery;
mod groups;
#[cfg(feature = "testkit")]
pub(crate) mod mock;

pub(crate) use batch::{ClientQueue, Delivery, MessageBatch};
pub(crate) use configs::{ConfigAnswer, ConfigResource, describe_configs};
pub(crate) use delivery::serve_delivery_reports;
pub(crate) use groups::{DescribedGroup, describe_consumer_groups, list_consumer_groups};
