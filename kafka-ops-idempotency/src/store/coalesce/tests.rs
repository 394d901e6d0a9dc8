#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::*;

/// A batch runner that records each batch, waits for the gate to let it through, and answers
/// each request with its double; it fails batches containing 13 and panics on 666.
struct Probe {
    batches: Arc<Mutex<Vec<Vec<u32>>>>,
    gate: Arc<Semaphore>,
}

fn probe(max_batch: usize, max_flights: usize, open: bool) -> (Coalescer<u32, u32>, Probe) {
    let probe = Probe {
        batches: Arc::default(),
        gate: Arc::new(Semaphore::new(if open {
            Semaphore::MAX_PERMITS
        } else {
            0
        })),
    };
    let (batches, gate) = (probe.batches.clone(), probe.gate.clone());
    let coalescer = Coalescer::new("probe", max_batch, max_flights, move |batch: Vec<u32>| {
        let (batches, gate) = (batches.clone(), gate.clone());
        Box::pin(async move {
            batches.lock().unwrap().push(batch.clone());
            gate.acquire().await.unwrap().forget();
            assert!(!batch.contains(&666), "the store panicked");
            if batch.contains(&13) {
                return Err(IdempotencyError::store("probe", "unlucky"));
            }
            Ok(batch.into_iter().map(|n| n * 2).collect())
        }) as BatchFuture<u32>
    });
    (coalescer, probe)
}

impl Probe {
    fn sizes(&self) -> Vec<usize> {
        self.batches.lock().unwrap().iter().map(Vec::len).collect()
    }

    /// Waits until `n` batches have been sent.
    async fn sent(&self, n: usize) {
        while self.batches.lock().unwrap().len() < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[tokio::test]
async fn an_idle_coalescer_sends_a_call_at_once_and_alone() {
    let (coalescer, probe) = probe(64, 1, true);
    assert_eq!(coalescer.call(3).await.unwrap(), 6);
    assert_eq!(coalescer.call(4).await.unwrap(), 8);
    assert_eq!(probe.sizes(), vec![1, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_arriving_during_a_round_trip_go_together_in_the_next_in_order() {
    let (coalescer, probe) = probe(4, 1, false);
    let first = tokio::spawn({
        let coalescer = coalescer.clone();
        async move { coalescer.call(0).await }
    });
    probe.sent(1).await;
    // Ten more while the first is on the wire: at most four a batch, in arrival order.
    let mut queued = Vec::new();
    for n in 1..=10 {
        let caller = coalescer.clone();
        queued.push(tokio::spawn(async move { caller.call(n).await }));
        while coalescer.shared.lock().queue.len() < n as usize {
            tokio::task::yield_now().await;
        }
    }
    probe.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    assert_eq!(first.await.unwrap().unwrap(), 0);
    for (n, call) in (1..).zip(queued) {
        assert_eq!(call.await.unwrap().unwrap(), n * 2);
    }
    assert_eq!(probe.sizes(), vec![1, 4, 4, 2]);
    let order: Vec<u32> = probe.batches.lock().unwrap().concat();
    assert_eq!(order, (0..=10).collect::<Vec<_>>());
    assert_eq!(coalescer.shared.lock().flights, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_flights_run_side_by_side_up_to_the_bound() {
    let (coalescer, probe) = probe(64, 2, false);
    let calls: Vec<_> = (0..3)
        .map(|n| {
            let coalescer = coalescer.clone();
            tokio::spawn(async move { coalescer.call(n).await })
        })
        .collect();
    probe.sent(2).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Two flights out; the third call waits for one of them.
    assert_eq!(probe.batches.lock().unwrap().len(), 2);
    probe.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(probe.sizes().iter().sum::<usize>(), 3);
}

#[tokio::test]
async fn a_failed_round_trip_fails_each_of_its_callers_and_the_next_one_runs() {
    let (coalescer, _probe) = probe(64, 1, true);
    let error = coalescer.call(13).await.unwrap_err();
    assert!(matches!(
        error,
        IdempotencyError::Store { store: "probe", .. }
    ));
    assert!(
        std::error::Error::source(&error)
            .unwrap()
            .to_string()
            .contains("unlucky")
    );
    assert_eq!(coalescer.call(1).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_store_strands_no_one() {
    let (coalescer, probe) = probe(1, 1, false);
    let doomed = tokio::spawn({
        let coalescer = coalescer.clone();
        async move { coalescer.call(666).await }
    });
    probe.sent(1).await;
    let next = tokio::spawn({
        let coalescer = coalescer.clone();
        async move { coalescer.call(5).await }
    });
    while coalescer.shared.lock().queue.is_empty() {
        tokio::task::yield_now().await;
    }
    probe.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    assert!(doomed.await.unwrap().is_err(), "its batch was lost");
    assert_eq!(next.await.unwrap().unwrap(), 10);
    assert_eq!(coalescer.shared.lock().flights, 0);
}
