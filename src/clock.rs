//! What time it is on the request path: one reading of the monotonic clock
//! per poll of a connection's task, shared by everything that asks during
//! that poll.
//!
//! A proxied request asked the clock about 13 times (when it arrived, for
//! the pick, the pool's idle times, the node's wait list and usual
//! response time, when the head went out and came back, the access log),
//! each a `clock_gettime` of about 20 ns in the vDSO: 2.5% of the proxy's
//! CPU time for small responses (perf; benches/README.md, "Sixteenth
//! session"). Everything one poll of a connection's task does runs without
//! waiting, within microseconds, so it can all use one reading: a
//! connection's task runs inside [`clocked`], and [`now`] reads the clock
//! at its first call in each poll and gives that reading to the later
//! ones. nginx and HAProxy keep their time the same way, but once per
//! turn of their event loop, which serves many connections in a row.
//!
//! Outside a clocked poll (the scraper, the admin side, the sweepers)
//! [`now`] is `Instant::now()`. Durations across polls (a node's response
//! time, a request's) are exact to within one poll's work; a deadline set
//! during a poll starts at most that much early.
//!
//! The clock is tokio's (`tokio::time::Instant::now`): the same reading as
//! `Instant::now()` in a build, and the runtime's paused clock in tests
//! that pause it, so that deadlines set from [`now`] and tokio's timers
//! agree there too. A clocked task also keeps one timer for all its
//! deadlines ([`within`]).

use std::cell::Cell;
use std::future::Future;
use std::task::Context;
use std::time::{Duration, Instant};

mod within;

pub use within::{within, Elapsed, Within};

/// This thread's clock while a clocked poll runs.
#[derive(Clone, Copy)]
enum State {
    /// No clocked poll runs: every call reads the clock.
    Off,
    /// A clocked poll runs and has not asked yet.
    Unread,
    /// A clocked poll runs and read this.
    Read(Instant),
}

thread_local! {
    static STATE: Cell<State> = const { Cell::new(State::Off) };
}

/// Now: inside a clocked poll, the reading of its first call.
#[inline]
pub fn now() -> Instant {
    STATE.with(|s| match s.get() {
        State::Read(t) => t,
        State::Unread => {
            let t = read();
            s.set(State::Read(t));
            t
        }
        State::Off => read(),
    })
}

/// The clock itself (see the module's doc).
#[inline]
fn read() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// How long ago `earlier` was, by [`now`] (zero if it is later).
#[inline]
pub fn since(earlier: Instant) -> Duration {
    now().saturating_duration_since(earlier)
}

/// `fut`, with each of its polls clocked and one timer for its deadlines
/// (see the module's doc).
pub fn clocked<F: Future>(fut: F) -> Clocked<F> {
    Clocked { fut, timer: None }
}

pin_project_lite::pin_project! {
    /// A future whose polls are clocked ([`clocked`]). A struct rather
    /// than an `async fn`, which would keep both its argument and the
    /// pinned copy it polls in its state: every connection's task would
    /// hold its future twice (+250 bytes per idle connection, measured).
    pub struct Clocked<F> {
        #[pin]
        fut: F,
        // The timer of every `within` the task polls.
        #[pin]
        timer: Option<tokio::time::Sleep>,
    }
}

impl<F: Future> Future for Clocked<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> std::task::Poll<F::Output> {
        let this = self.project();
        let _poll = Poll::enter();
        let _timer = within::Enter::new(this.timer);
        this.fut.poll(cx)
    }
}

/// One clocked poll: the thread's clock state before it comes back when it
/// ends (also on a panic, and for nested ones).
struct Poll(State);

impl Poll {
    fn enter() -> Poll {
        Poll(STATE.with(|s| s.replace(State::Unread)))
    }
}

impl Drop for Poll {
    fn drop(&mut self) {
        STATE.with(|s| s.set(self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls that go back to the runtime in between: a clocked task sees
    /// one time per poll, a new one in the next poll; outside it, the
    /// clock moves on every call.
    #[tokio::test]
    async fn one_reading_per_poll_and_none_kept_outside() {
        let (first, again, after_yield) = clocked(async {
            let first = now();
            std::thread::sleep(Duration::from_millis(2));
            let again = now();
            tokio::task::yield_now().await;
            (first, again, now())
        })
        .await;
        assert_eq!(first, again, "one poll, one reading");
        assert!(
            after_yield >= first + Duration::from_millis(2),
            "a new poll reads again"
        );

        let outside = now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(now() >= outside + Duration::from_millis(2));
        assert!(since(outside) >= Duration::from_millis(2));
    }

    /// A clocked poll inside another (a task polled by a task) has its own
    /// reading, and the outer one gets its own back.
    #[tokio::test]
    async fn nested_polls_restore_the_outer_reading() {
        clocked(async {
            let outer = now();
            std::thread::sleep(Duration::from_millis(2));
            let inner = clocked(async { now() }).await;
            assert!(inner >= outer + Duration::from_millis(2));
            assert_eq!(now(), outer);
        })
        .await;
        STATE.with(|s| assert!(matches!(s.get(), State::Off)));
    }

    /// Clocking a task's future costs it the task's timer and no more:
    /// a connection's task does not hold its future twice (as an
    /// `async fn` wrapper would).
    #[test]
    fn a_clocked_future_is_its_future_and_a_timer() {
        let fut = async {
            let buf = [7u8; 256];
            tokio::task::yield_now().await;
            buf.iter().map(|&b| usize::from(b)).sum::<usize>()
        };
        let alone = std::mem::size_of_val(&fut);
        assert!(alone >= 256);
        assert_eq!(
            std::mem::size_of_val(&clocked(fut)),
            alone + std::mem::size_of::<Option<tokio::time::Sleep>>()
        );
    }

    /// A poll that panics leaves the thread's clock as it found it.
    #[test]
    fn a_panicking_poll_leaves_the_clock_off() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(clocked(async {
                now();
                panic!("in a clocked poll");
            }))
        }));
        assert!(r.is_err());
        STATE.with(|s| assert!(matches!(s.get(), State::Off)));
    }
}
