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
