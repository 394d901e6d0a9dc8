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
use crate::types::{IsolationLevel, ListedOffset, Offset, OffsetSpec, Timestamp, TopicPartition};

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
    if code == KafkaCode::UNSUPPORTED_FEATURE || code == KafkaCode::UNSUPPORTED_VERSION {
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

/// One element of a C topic-partition list, copied out.
struct RawPartition {
    tp: TopicPartition,
    offset: i64,
    err: rd::rd_kafka_resp_err_t,
}

/// Copies the elements of a C topic-partition list.
///
/// # Safety
/// `list` is NULL or a valid list that stays alive for the duration of the call.
unsafe fn read_partition_list(
    list: *const rd::rd_kafka_topic_partition_list_t,
) -> Vec<RawPartition> {
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
        .map(|e| RawPartition {
            // SAFETY: every element's topic is a NUL-terminated string owned by the list.
            tp: TopicPartition::new(
                unsafe { opt_string(e.topic) }.unwrap_or_default(),
                e.partition,
            ),
            offset: e.offset,
            err: e.err,
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

/// Admin options for `op` with a request timeout and, optionally, an isolation level.
fn admin_options<C: ClientContext>(
    client: &Client<C>,
    op: rd::rd_kafka_admin_op_t,
    operation: &'static str,
    timeout: Duration,
    isolation: Option<IsolationLevel>,
) -> Result<Owned<rd::rd_kafka_AdminOptions_t>, Error> {
    // SAFETY: `client` is a live client borrowed for this call.
    let raw = unsafe { rd::rd_kafka_AdminOptions_new(client.native_ptr(), op) };
    let options = Owned::new(raw, rd::rd_kafka_AdminOptions_destroy, "admin options")?;
    let mut errstr = [0 as c_char; 512];
    // SAFETY: `options` is valid; `errstr` is a writable buffer of the given size.
    let err = unsafe {
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options.as_ptr(),
            timeout_ms(timeout),
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if is_error(err) {
        // SAFETY: librdkafka NUL-terminates `errstr` on error.
        let message = unsafe { opt_string(errstr.as_ptr()) }.unwrap_or_default();
        return Err(Error::Config(format!(
            "{operation}: request timeout rejected: {message}"
        )));
    }
    if isolation == Some(IsolationLevel::ReadCommitted) {
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
    isolation: Option<IsolationLevel>,
    expected_event: c_int,
    requests: usize,
    mut start: impl FnMut(
        usize,
        *const rd::rd_kafka_AdminOptions_t,
        *mut rd::rd_kafka_queue_t,
    ) -> Result<(), Error>,
) -> Result<Vec<EventResult>, Error> {
    let options = admin_options(client, op, operation, timeout, isolation)?;
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
    isolation: Option<IsolationLevel>,
    expected_event: c_int,
    start: impl FnOnce(*const rd::rd_kafka_AdminOptions_t, *mut rd::rd_kafka_queue_t),
) -> Result<Owned<rd::rd_kafka_event_t>, Error> {
    let mut start = Some(start);
    let mut results = run_admin_many(
        client,
        op,
        operation,
        timeout,
        isolation,
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
        Some(isolation),
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

fn group_state(state: rd::rd_kafka_consumer_group_state_t) -> GroupState {
    use rd::rd_kafka_consumer_group_state_t as S;
    match state {
        S::RD_KAFKA_CONSUMER_GROUP_STATE_PREPARING_REBALANCE => GroupState::PreparingRebalance,
        S::RD_KAFKA_CONSUMER_GROUP_STATE_COMPLETING_REBALANCE => GroupState::CompletingRebalance,
        S::RD_KAFKA_CONSUMER_GROUP_STATE_STABLE => GroupState::Stable,
        S::RD_KAFKA_CONSUMER_GROUP_STATE_DEAD => GroupState::Dead,
        S::RD_KAFKA_CONSUMER_GROUP_STATE_EMPTY => GroupState::Empty,
        _ => GroupState::Unknown,
    }
}

fn group_type(group_type: rd::rd_kafka_consumer_group_type_t) -> GroupType {
    use rd::rd_kafka_consumer_group_type_t as T;
    match group_type {
        T::RD_KAFKA_CONSUMER_GROUP_TYPE_CLASSIC => GroupType::Classic,
        T::RD_KAFKA_CONSUMER_GROUP_TYPE_CONSUMER => GroupType::Consumer,
        _ => GroupType::Unknown,
    }
}

/// Group listings, and the errors of brokers that could not list theirs.
pub(crate) type GroupListings = (Vec<GroupListing>, Vec<(KafkaCode, String)>);

/// `ListGroups`, sent to every broker. Errors from some brokers are returned beside the listings.
pub(crate) fn list_consumer_groups<C: ClientContext>(
    client: &Client<C>,
    timeout: Duration,
) -> Result<GroupListings, Error> {
    let event = run_admin(
        client,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPS,
        "list consumer groups",
        timeout,
        None,
        rd::RD_KAFKA_EVENT_LISTCONSUMERGROUPS_RESULT,
        |options, queue| {
            // SAFETY: all pointers are live for the call.
            unsafe { rd::rd_kafka_ListConsumerGroups(client.native_ptr(), options, queue) }
        },
    )?;
    // SAFETY: `event` is a ListConsumerGroups result event.
    let result = unsafe { rd::rd_kafka_event_ListConsumerGroups_result(event.as_ptr()) };
    let mut count = 0usize;
    // SAFETY: `result` is valid while `event` lives.
    let valid = unsafe { rd::rd_kafka_ListConsumerGroups_result_valid(result, &mut count) };
    // SAFETY: `valid` holds `count` pointers valid while `event` lives.
    let valid = unsafe { pointers(valid, count) };
    let mut listings = Vec::with_capacity(valid.len());
    for listing in valid {
        // SAFETY: each listing is valid while `event` lives.
        let (group, state, simple, kind) = unsafe {
            (
                opt_string(rd::rd_kafka_ConsumerGroupListing_group_id(*listing)),
                rd::rd_kafka_ConsumerGroupListing_state(*listing),
                rd::rd_kafka_ConsumerGroupListing_is_simple_consumer_group(*listing),
                rd::rd_kafka_ConsumerGroupListing_type(*listing),
            )
        };
        listings.push(GroupListing {
            group: group.unwrap_or_default(),
            state: group_state(state),
            is_simple: simple != 0,
            group_type: group_type(kind),
        });
    }
    let mut count = 0usize;
    // SAFETY: as above.
    let errors = unsafe { rd::rd_kafka_ListConsumerGroups_result_errors(result, &mut count) };
    // SAFETY: `errors` holds `count` pointers valid while `event` lives.
    let errors = unsafe { pointers(errors, count) }
        .iter()
        // SAFETY: each error is valid while `event` lives.
        .filter_map(|e| unsafe { error_parts(*e) })
        .collect();
    Ok((listings, errors))
}

/// A group description with its coordinator's advertised address.
pub(crate) struct DescribedGroup {
    pub(crate) description: GroupDescription,
    pub(crate) coordinator_address: Option<(String, u16)>,
}

/// `DescribeGroups` (or ConsumerGroupDescribe, which librdkafka tries first) for the named
/// groups.
pub(crate) fn describe_consumer_groups<C: ClientContext>(
    client: &Client<C>,
    groups: &[String],
    timeout: Duration,
) -> Result<Vec<DescribedGroup>, Error> {
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<CString> = groups
        .iter()
        .map(|g| c_string(g))
        .collect::<Result<_, _>>()?;
    let mut pointers_to_names: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let event = run_admin(
        client,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS,
        "describe consumer groups",
        timeout,
        None,
        rd::RD_KAFKA_EVENT_DESCRIBECONSUMERGROUPS_RESULT,
        |options, queue| {
            // SAFETY: `pointers_to_names` holds `len` NUL-terminated strings kept alive by `names`;
            // librdkafka copies them.
            unsafe {
                rd::rd_kafka_DescribeConsumerGroups(
                    client.native_ptr(),
                    pointers_to_names.as_mut_ptr(),
                    pointers_to_names.len(),
                    options,
                    queue,
                )
            }
        },
    )?;
    // SAFETY: `event` is a DescribeConsumerGroups result event.
    let result = unsafe { rd::rd_kafka_event_DescribeConsumerGroups_result(event.as_ptr()) };
    let mut count = 0usize;
    // SAFETY: `result` is valid while `event` lives.
    let descriptions =
        unsafe { rd::rd_kafka_DescribeConsumerGroups_result_groups(result, &mut count) };
    // SAFETY: `descriptions` holds `count` pointers valid while `event` lives.
    let descriptions = unsafe { pointers(descriptions, count) };
    let mut out = Vec::with_capacity(descriptions.len());
    for description in descriptions {
        let description = *description;
        // SAFETY: `description` and everything reachable from it live as long as `event`.
        let parsed = unsafe {
            let coordinator = rd::rd_kafka_ConsumerGroupDescription_coordinator(description);
            let member_count = rd::rd_kafka_ConsumerGroupDescription_member_count(description);
            let mut members = Vec::with_capacity(member_count);
            for index in 0..member_count {
                let member = rd::rd_kafka_ConsumerGroupDescription_member(description, index);
                if member.is_null() {
                    continue;
                }
                let assignment = rd::rd_kafka_MemberDescription_assignment(member);
                let partitions = if assignment.is_null() {
                    ptr::null()
                } else {
                    rd::rd_kafka_MemberAssignment_partitions(assignment)
                };
                let target = rd::rd_kafka_MemberDescription_target_assignment(member);
                let target = (!target.is_null()).then(|| {
                    read_partition_list(rd::rd_kafka_MemberAssignment_partitions(target))
                        .into_iter()
                        .map(|p| p.tp)
                        .collect()
                });
                members.push(GroupMember {
                    member_id: opt_string(rd::rd_kafka_MemberDescription_consumer_id(member))
                        .unwrap_or_default(),
                    client_id: opt_string(rd::rd_kafka_MemberDescription_client_id(member))
                        .unwrap_or_default(),
                    host: opt_string(rd::rd_kafka_MemberDescription_host(member))
                        .unwrap_or_default(),
                    instance_id: opt_string(rd::rd_kafka_MemberDescription_group_instance_id(
                        member,
                    )),
                    assignment: read_partition_list(partitions)
                        .into_iter()
                        .map(|p| p.tp)
                        .collect(),
                    target_assignment: target,
                });
            }
            let coordinator_address = (!coordinator.is_null())
                .then(|| {
                    let host = opt_string(rd::rd_kafka_Node_host(coordinator))?;
                    let port = rd::rd_kafka_Node_port(coordinator);
                    Some((host, port))
                })
                .flatten();
            let description = GroupDescription {
                group: opt_string(rd::rd_kafka_ConsumerGroupDescription_group_id(description))
                    .unwrap_or_default(),
                state: group_state(rd::rd_kafka_ConsumerGroupDescription_state(description)),
                group_type: group_type(rd::rd_kafka_ConsumerGroupDescription_type(description)),
                assignor: opt_string(rd::rd_kafka_ConsumerGroupDescription_partition_assignor(
                    description,
                ))
                .unwrap_or_default(),
                coordinator: (!coordinator.is_null()).then(|| rd::rd_kafka_Node_id(coordinator)),
                members,
                error: error_parts(rd::rd_kafka_ConsumerGroupDescription_error(description)).map(
                    |(code, reason)| PartitionError {
                        code: Some(code),
                        reason,
                    },
                ),
            };
            DescribedGroup {
                description,
                coordinator_address,
            }
        };
        out.push(parsed);
    }
    Ok(out)
}

/// The committed offsets in one ListConsumerGroupOffsets result event.
fn read_group_offsets(
    event: &Owned<rd::rd_kafka_event_t>,
) -> Result<PartitionResults<Option<Offset>>, Error> {
    // SAFETY: `event` is a ListConsumerGroupOffsets result event (type checked).
    let result = unsafe { rd::rd_kafka_event_ListConsumerGroupOffsets_result(event.as_ptr()) };
    let mut count = 0usize;
    // SAFETY: `result` is valid while `event` lives.
    let groups = unsafe { rd::rd_kafka_ListConsumerGroupOffsets_result_groups(result, &mut count) };
    // SAFETY: `groups` holds `count` pointers valid while `event` lives.
    let groups = unsafe { pointers(groups, count) };
    let mut out = Vec::new();
    for group_result in groups {
        // SAFETY: each group result is valid while `event` lives.
        let error = unsafe { error_parts(rd::rd_kafka_group_result_error(*group_result)) };
        if let Some((code, message)) = error {
            return Err(broker_error("list consumer group offsets", code, message));
        }
        // SAFETY: as above; the list is owned by the group result.
        let partitions =
            unsafe { read_partition_list(rd::rd_kafka_group_result_partitions(*group_result)) };
        for raw in partitions {
            let answer = if is_error(raw.err) {
                Err(PartitionError {
                    code: Some(code_of(raw.err)),
                    reason: describe_code(raw.err),
                })
            } else {
                // Negative offsets here (-1001, or -1 from some brokers) all mean "never committed".
                Ok(Offset::new(raw.offset).ok())
            };
            out.push((raw.tp, answer));
        }
    }
    Ok(out)
}

/// `OffsetFetch` through the admin API: a group's committed offsets for each batch of
/// partitions (batches are sent at once, each answered on its own), or for every partition the
/// group committed when `batches` is `None` (a broker that cannot answer "all" returns an empty
/// list).
pub(crate) fn list_consumer_group_offsets<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    batches: Option<&[Vec<TopicPartition>]>,
    timeout: Duration,
) -> Result<BatchResults<Option<Offset>>, Error> {
    let group_name = c_string(group)?;
    let requests = batches.map_or(1, <[Vec<TopicPartition>]>::len);
    let events = run_admin_many(
        client,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS,
        "list consumer group offsets",
        timeout,
        None,
        rd::RD_KAFKA_EVENT_LISTCONSUMERGROUPOFFSETS_RESULT,
        requests,
        |index, options, queue| {
            let list = match batches {
                Some(batches) => Some(partition_list(
                    batches[index]
                        .iter()
                        .map(|tp| (tp, crate::types::RAW_OFFSET_NONE)),
                )?),
                None => None,
            };
            let list_ptr = list
                .as_ref()
                .map_or(ptr::null(), |l| l.as_ptr().cast_const());
            // SAFETY: `group_name` is NUL-terminated; `list_ptr` is NULL or a valid list; both
            // are copied into the request object.
            let raw =
                unsafe { rd::rd_kafka_ListConsumerGroupOffsets_new(group_name.as_ptr(), list_ptr) };
            let request = Owned::new(
                raw,
                rd::rd_kafka_ListConsumerGroupOffsets_destroy,
                "list group offsets request",
            )?;
            let mut requests = [request.as_ptr()];
            // SAFETY: `requests` holds exactly one valid request object (librdkafka requires
            // one); librdkafka copies it before returning.
            unsafe {
                rd::rd_kafka_ListConsumerGroupOffsets(
                    client.native_ptr(),
                    requests.as_mut_ptr(),
                    1,
                    options,
                    queue,
                )
            };
            Ok(())
        },
    )?;
    Ok(events
        .into_iter()
        .map(|event| event.and_then(|event| read_group_offsets(&event)))
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

#[cfg(feature = "testkit")]
pub(crate) mod mock {
    //! Helpers for librdkafka's mock cluster that rdkafka's safe wrapper does not expose.

    use super::*;

    fn cluster<C: ClientContext>(client: &Client<C>) -> Option<*mut rd::rd_kafka_mock_cluster_t> {
        // SAFETY: `client` is live; the returned pointer is owned by the client and valid while
        // it lives (callers only use it within the borrow).
        let raw = unsafe { rd::rd_kafka_handle_mock_cluster(client.native_ptr()) };
        (!raw.is_null()).then_some(raw)
    }

    /// Sets the delay before a new group's first rebalance (the mock's default is ~3 s).
    pub(crate) fn set_initial_rebalance_delay<C: ClientContext>(
        client: &Client<C>,
        delay: Duration,
    ) -> bool {
        let Some(mock) = cluster(client) else {
            return false;
        };
        // SAFETY: `mock` is a live mock cluster owned by `client`.
        unsafe { rd::rd_kafka_mock_group_initial_rebalance_delay_ms(mock, timeout_ms(delay)) };
        true
    }

    /// Starts recording every request the mock brokers receive.
    pub(crate) fn start_request_tracking<C: ClientContext>(client: &Client<C>) -> bool {
        let Some(mock) = cluster(client) else {
            return false;
        };
        // SAFETY: as above.
        unsafe { rd::rd_kafka_mock_start_request_tracking(mock) };
        true
    }

    /// Forgets the requests recorded so far.
    pub(crate) fn clear_requests<C: ClientContext>(client: &Client<C>) {
        if let Some(mock) = cluster(client) {
            // SAFETY: as above.
            unsafe { rd::rd_kafka_mock_clear_requests(mock) };
        }
    }

    /// The requests recorded since tracking started: (broker id, API key) in arrival order.
    pub(crate) fn requests<C: ClientContext>(client: &Client<C>) -> Vec<(i32, i16)> {
        let Some(mock) = cluster(client) else {
            return Vec::new();
        };
        let mut count = 0usize;
        // SAFETY: `mock` is live; the returned array and its elements are ours to free.
        let array = unsafe { rd::rd_kafka_mock_get_requests(mock, &mut count) };
        if array.is_null() {
            return Vec::new();
        }
        // SAFETY: `array` holds `count` valid request pointers.
        let requests = unsafe { std::slice::from_raw_parts(array, count) };
        let out = requests
            .iter()
            // SAFETY: each request is valid until the array is destroyed below.
            .map(|r| unsafe {
                (
                    rd::rd_kafka_mock_request_id(*r),
                    rd::rd_kafka_mock_request_api_key(*r),
                )
            })
            .collect();
        // SAFETY: frees every element and the array itself, exactly once.
        unsafe { rd::rd_kafka_mock_request_destroy_array(array, count) };
        out
    }
}
