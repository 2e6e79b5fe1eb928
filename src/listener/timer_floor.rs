//! A near timer on each worker thread, so that arming a request's timer
//! does not make the thread wake itself.
//!
//! tokio's timer driver remembers, when the thread goes to wait for I/O,
//! the earliest deadline it holds (`next_wake`). Arming a timer that ends
//! before it wakes the driver through its eventfd (a `write` system call),
//! in case the driver is waiting, also on a single-threaded runtime, whose
//! driver cannot be waiting while one of its own tasks runs (tokio issue
//! 5207; a fix, tokio pull request 8383, is not merged). A visitor's
//! connection waits for its next request with a 60–75 s timer and a request
//! waits for the node's answer with a 30 s one: the first request of each
//! turn that went to a node after a wait with none pending wrote to the
//! eventfd (and its event came back at the next wait). Measured with
//! `wrk -c50` and one thread: 0.22 such writes per request, none with this
//! (`benches/load/switches.sh`); the CPU time per request they cost (a
//! system call each, and the event read back) is within that measurement's
//! noise.
//!
//! A timer that is never more than [`PERIOD`] away keeps `next_wake` at
//! most that far, before every timeout the proxy arms per request (the
//! shortest of which, `connect_timeout`, defaults to 2 s): the driver is
//! then woken only when a timer really is due sooner. The cost is this
//! timer's own expiry, a wake-up or two a second per idle worker thread.

use std::time::Duration;

use pingora::server::ShutdownWatch;

/// How far ahead the floor timer is set.
pub(super) const PERIOD: Duration = Duration::from_secs(1);

/// Keeps a timer at most [`PERIOD`] ahead on the calling thread's runtime
/// until the server shuts down.
pub(super) async fn keep(mut shutdown: ShutdownWatch) {
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
            () = tokio::time::sleep(PERIOD) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::Poll;

    /// Write system calls made by this thread so far (`syscw` of
    /// `/proc/thread-self/io`; eventfd writes count).
    fn writes_of_this_thread() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").expect("/proc/thread-self/io");
        io.lines()
            .find_map(|l| l.strip_prefix("syscw: "))
            .and_then(|n| n.trim().parse().ok())
            .expect("syscw in /proc/thread-self/io")
    }

    /// Arms a 30 s timer (a request waiting for its node) 100 times on a
    /// single-threaded runtime, with the runtime polling its I/O between
    /// two, and counts this thread's write system calls meanwhile.
    fn writes_while_arming_timers(floor: bool) -> u64 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (_keep_running, shutdown) = tokio::sync::watch::channel(false);
            if floor {
                tokio::spawn(keep(shutdown));
            }
            // A visitor's connection waiting for its next request.
            let keepalive = tokio::time::sleep(Duration::from_secs(75));
            tokio::pin!(keepalive);
            std::future::poll_fn(|cx| {
                assert!(keepalive.as_mut().poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            // The floor task runs and arms its timer; the driver parks.
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            let before = writes_of_this_thread();
            for _ in 0..100 {
                {
                    let mut wait = std::pin::pin!(tokio::time::sleep(Duration::from_secs(30)));
                    // The first poll arms the timer.
                    std::future::poll_fn(|cx| {
                        assert!(wait.as_mut().poll(cx).is_pending());
                        Poll::Ready(())
                    })
                    .await;
                    // Dropped: the answer came.
                }
                // The runtime looks at its sockets before the next request.
                tokio::task::yield_now().await;
            }
            writes_of_this_thread() - before
        })
    }

    #[test]
    fn with_the_floor_arming_a_request_timer_does_not_wake_the_thread() {
        let without = writes_while_arming_timers(false);
        let with = writes_while_arming_timers(true);
        // Without the floor each timer wakes the driver (if this fails,
        // tokio no longer does, and this module can go).
        assert!(
            without >= 90,
            "tokio woke its own driver {without} times for 100 timers"
        );
        assert!(with <= 5, "{with} writes for 100 timers with the floor");
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_ends_when_the_server_shuts_down() {
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let floor = tokio::spawn(keep(shutdown));
        tokio::time::sleep(PERIOD * 3).await;
        assert!(!floor.is_finished());
        stop.send(true).expect("floor listening");
        tokio::time::timeout(PERIOD, floor)
            .await
            .expect("floor ended")
            .expect("no panic");
    }
}
