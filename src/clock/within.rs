//! Deadlines on the request path: an operation bounded by a deadline
//! ([`within`]), timed by one timer per connection's task rather than one
//! per wait.
//!
//! `tokio::time::timeout` makes a timer per call: it reads the clock and
//! takes the runtime's handle as it is called, puts the timer in the
//! runtime's wheel (under the wheel's lock) when the operation first
//! waits, and takes it out (under the lock again) when dropped. A proxied
//! request waits twice (for the visitor's next request, for the node's
//! response): about 900 of the 22,600 instructions of a small request and
//! two of its clock reads (callgrind; benches/README.md, "Seventeenth
//! session").
//!
//! Here a clocked task ([`super::clocked`]) keeps one tokio `Sleep` for
//! all its waits, armed lazily, as nginx and HAProxy keep one timer per
//! connection:
//! - a wait whose deadline is at or after the armed one leaves the timer
//!   as it is: the usual case, as each wait starts after the one before
//!   and the timeouts are seconds long, and it costs no lock, no clock
//!   read and no handle;
//! - a wait whose deadline is sooner moves the timer sooner;
//! - when the timer fires before a waiting operation's deadline (it was
//!   armed for an earlier wait), that operation re-arms it for its own.
//!
//! A connection's task is then woken for nothing at most once per timeout
//! period, and never later than any of its deadlines.
//!
//! The timer wakes the task, not a part of it: operations waiting at once
//! in one task must all be polled whenever the task is (sequential
//! awaits, `select!`, `join!`: what the request path uses), not by a
//! combinator that polls only the part whose own waker was woken
//! (`FuturesUnordered`). Outside a clocked task, a `within` keeps a timer
//! of its own, allocated when it first waits.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::time::Sleep;

thread_local! {
    /// The timer of the clocked task being polled on this thread.
    static TASK_TIMER: Cell<Option<NonNull<Option<Sleep>>>> = const { Cell::new(None) };
}

/// The time an operation was given ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// An `io::ErrorKind::TimedOut` error (as tokio's own `Elapsed`), for
/// reads and writes bounded by [`within`].
impl From<Elapsed> for std::io::Error {
    fn from(_: Elapsed) -> std::io::Error {
        std::io::ErrorKind::TimedOut.into()
    }
}

/// `op`, or [`Elapsed`] when it has not finished `timeout` after it
/// first had to wait. `op` is polled first: one that is ready at once
/// (the usual write, a read of bytes already there) costs no deadline and
/// no timer. The time is counted from that first poll, by [`super::now`]:
/// a read or write that waits at once starts its time where it was made.
pub fn within<F: Future>(timeout: Duration, op: F) -> Within<F> {
    Within {
        op,
        timeout,
        deadline: None,
        own: None,
    }
}

pin_project_lite::pin_project! {
    /// See [`within`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Within<F> {
        #[pin]
        op: F,
        timeout: Duration,
        // Set at the first poll that waits.
        deadline: Option<Instant>,
        // The timer outside a clocked task (see the module's doc).
        own: Option<Pin<Box<Sleep>>>,
    }
}

/// The deadline `timeout` after [`super::now`] (far in the future when
/// that overflows, as tokio's own).
fn after(timeout: Duration) -> Instant {
    let now = super::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(86400 * 365 * 30))
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.op.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        let timeout = *this.timeout;
        let deadline = *this.deadline.get_or_insert_with(|| after(timeout));
        let deadline = tokio::time::Instant::from_std(deadline);
        let fired = match TASK_TIMER.get() {
            // SAFETY: the pointer is to the pinned timer of the clocked
            // task whose poll runs now on this thread (set by `Enter`,
            // taken back when that poll ends); nothing else reaches it
            // during this call, and it is not moved out of.
            Some(timer) => poll_task_timer(
                unsafe { Pin::new_unchecked(&mut *timer.as_ptr()) },
                deadline,
                cx,
            ),
            None => this
                .own
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)))
                .as_mut()
                .poll(cx),
        };
        fired.map(|()| Err(Elapsed))
    }
}

/// Ready when `deadline` has passed; otherwise the task's timer is armed
/// no later than `deadline` and will wake the task.
fn poll_task_timer(
    mut timer: Pin<&mut Option<Sleep>>,
    deadline: tokio::time::Instant,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let Some(mut sleep) = timer.as_mut().as_pin_mut() else {
        // The task's first wait.
        timer.set(Some(tokio::time::sleep_until(deadline)));
        return timer.as_pin_mut().map_or(Poll::Pending, |s| s.poll(cx));
    };
    if sleep.deadline() > deadline {
        sleep.as_mut().reset(deadline);
    }
    match sleep.as_mut().poll(cx) {
        // Fired for an earlier deadline: armed again for this one.
        Poll::Ready(()) if sleep.deadline() < deadline => {
            sleep.as_mut().reset(deadline);
            sleep.poll(cx)
        }
        r => r,
    }
}

/// The task timer's slot set for one clocked poll; the one before comes
/// back when it ends (also on a panic, and for nested polls).
pub(super) struct Enter(Option<NonNull<Option<Sleep>>>);

impl Enter {
    pub(super) fn new(timer: Pin<&mut Option<Sleep>>) -> Enter {
        // SAFETY: only the pointer is kept, and only while this poll runs
        // (see `Within::poll`); the timer stays pinned where it is.
        let slot = NonNull::from(unsafe { timer.get_unchecked_mut() });
        Enter(TASK_TIMER.replace(Some(slot)))
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        TASK_TIMER.set(self.0);
    }
}

#[cfg(test)]
mod tests {
    use std::future::pending;
    use std::task::Waker;

    use tokio::time::Instant as TokioInstant;

    use super::*;
    use crate::clock::clocked;

    /// `op` bounded by `timeout`, and when it ended on tokio's (paused)
    /// clock, counted from `start`.
    async fn timed<F: Future>(
        start: TokioInstant,
        timeout: u64,
        op: F,
    ) -> (Result<F::Output, Elapsed>, Duration) {
        let r = within(Duration::from_secs(timeout), op).await;
        (r, start.elapsed())
    }

    /// In one clocked task: a wait that ends before its deadline leaves
    /// the timer armed; a later wait with a later deadline still runs to
    /// its own deadline (the early firing re-arms it), and one with a
    /// sooner deadline moves the timer sooner.
    #[tokio::test(start_paused = true)]
    async fn each_wait_ends_at_its_own_deadline_on_one_timer() {
        clocked(async {
            let start = TokioInstant::now();
            let sleep = |s| tokio::time::sleep(Duration::from_secs(s));
            let (r, at) = timed(start, 10, sleep(1)).await;
            assert_eq!((r, at), (Ok(()), Duration::from_secs(1)));
            // The timer is armed for 10 s; this wait's deadline is 31 s.
            let (r, at) = timed(start, 30, pending::<()>()).await;
            assert_eq!((r, at), (Err(Elapsed), Duration::from_secs(31)));
            // Fired and re-armed: a 5 s deadline after a 30 s one.
            let (r, at) = timed(start, 30, sleep(2)).await;
            assert_eq!((r, at), (Ok(()), Duration::from_secs(33)));
            let (r, at) = timed(start, 5, pending::<()>()).await;
            assert_eq!((r, at), (Err(Elapsed), Duration::from_secs(38)));
        })
        .await;
    }

    /// Two waits at once in one task (`join!`), the later one polled
    /// first: each ends at its own deadline.
    #[tokio::test(start_paused = true)]
    async fn waits_at_once_share_the_timer() {
        clocked(async {
            let start = TokioInstant::now();
            let (late, soon) = tokio::join!(
                timed(start, 20, pending::<()>()),
                timed(start, 5, pending::<()>())
            );
            assert_eq!(late, (Err(Elapsed), Duration::from_secs(20)));
            assert_eq!(soon, (Err(Elapsed), Duration::from_secs(5)));
        })
        .await;
    }

    /// Outside a clocked task a wait has a timer of its own.
    #[tokio::test(start_paused = true)]
    async fn outside_a_clocked_task_a_wait_times_itself() {
        let start = TokioInstant::now();
        let (r, at) = timed(start, 7, pending::<()>()).await;
        assert_eq!((r, at), (Err(Elapsed), Duration::from_secs(7)));
        let (r, at) = timed(start, 7, async { 1 }).await;
        assert_eq!((r, at), (Ok(1), Duration::from_secs(7)));
    }

    /// An operation ready at its first poll sets no timer: the task's
    /// slot stays empty (the usual write, and a read of bytes there).
    #[tokio::test]
    async fn a_ready_operation_arms_nothing() {
        let mut task = std::pin::pin!(clocked(async {
            within(Duration::from_secs(1), async { 2 }).await
        }));
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(task.as_mut().poll(&mut cx), Poll::Ready(Ok(2)));
        assert!(task.timer.is_none());
        TASK_TIMER.with(|t| assert!(t.get().is_none()));
    }
}
