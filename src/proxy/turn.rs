//! When a worker thread is busy, the responses of one turn of its event
//! loop go to their visitors together: a response the proxy holds whole is
//! sent after the other requests that became ready in the same turn have
//! run, not in between them.
//!
//! Why: each send to a sleeping client wakes it. Sent one at a time, with a
//! request's parsing and routing between two sends, each response wakes the
//! client (or the load generator) for itself, and on a machine with fewer
//! cores than busy processes the woken process takes the proxy's core each
//! time. Measured on 2 cores with `wrk -c50` and one thread: 0.17–0.22
//! context switches per request for webcluster (0.10–0.13 with this)
//! against HAProxy's 0.04–0.09, which receives everything a turn brought,
//! then sends (its tasklets), so a client finds many responses at each
//! wake-up (`benches/README.md`, "Eleventh session").
//!
//! Only when the thread is busy, which this module tells by the requests it
//! carries at once ([`InFlight`]): with a few visitors a deferred send only
//! waits for an extra look at the sockets (`tokio::task::yield_now` defers
//! the task until the runtime has polled its I/O driver), which cost a
//! quarter of the throughput at 4 connections when it was unconditional.
//! A response still being received (a large body, streamed) is never held.

use std::cell::Cell;

/// Requests a thread carries at once from which it counts as busy.
const BUSY: u32 = 8;

thread_local! {
    /// Requests in flight on this thread (each request runs on the thread
    /// that accepted its connection: the runtimes do not steal work).
    static IN_FLIGHT: Cell<u32> = const { Cell::new(0) };
}

/// Counts a request in flight on this thread while it lives.
#[derive(Debug)]
pub(super) struct InFlight(());

impl InFlight {
    pub(super) fn enter() -> InFlight {
        IN_FLIGHT.with(|n| n.set(n.get().saturating_add(1)));
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// Whether this thread carries enough requests at once to be busy.
fn busy() -> bool {
    IN_FLIGHT.with(Cell::get) >= BUSY
}

/// Before a response held whole goes to its visitor: on a busy thread,
/// lets the other requests that are ready run first.
pub(super) async fn before_whole_response() {
    if busy() {
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_is_busy_from_eight_requests_in_flight() {
        let mut held: Vec<InFlight> = (0..BUSY - 1).map(|_| InFlight::enter()).collect();
        assert!(!busy());
        held.push(InFlight::enter());
        assert!(busy());
        held.pop();
        assert!(!busy());
        drop(held);
        assert_eq!(IN_FLIGHT.with(Cell::get), 0);
    }

    #[test]
    fn each_thread_counts_its_own() {
        let _held: Vec<InFlight> = (0..BUSY).map(|_| InFlight::enter()).collect();
        assert!(busy());
        let other = std::thread::spawn(busy).join().expect("thread");
        assert!(!other);
    }

    #[tokio::test]
    async fn an_idle_thread_sends_at_once_and_a_busy_one_lets_others_run() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let ran = Arc::new(AtomicBool::new(false));
        let other = {
            let ran = Arc::clone(&ran);
            tokio::spawn(async move { ran.store(true, Ordering::SeqCst) })
        };
        // Idle: no yield, the other task has not run yet.
        before_whole_response().await;
        assert!(!ran.load(Ordering::SeqCst));
        let _held: Vec<InFlight> = (0..BUSY).map(|_| InFlight::enter()).collect();
        before_whole_response().await;
        assert!(ran.load(Ordering::SeqCst), "the ready task ran first");
        other.await.expect("task");
    }
}
