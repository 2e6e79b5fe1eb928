//! A request's slot at a node: taken at once when the node (or, for a
//! request that may go anywhere, another node of the group) is under its
//! limit, else after a wait in the group's queue (`cluster::queue`). The
//! wait ends with the slot, with 503 and `Retry-After` when the group's
//! `queue_timeout` passes or its queue is `max_queue` long, or at once when
//! the visitor leaves (the request is then never sent to a node).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pingora::{Error, ErrorType, Result};

use super::choose::{insert_cookie, SessionKey};
use super::{Proxy, RequestCtx};
use crate::cluster::node::InflightGuard;
use crate::cluster::queue::{Admit, Target};

/// Bytes a visitor may send while its request waits (the start of its
/// body, a pipelined request) before the proxy stops reading, and so stops
/// noticing that it left.
const READ_WHILE_QUEUED: usize = 64 * 1024;

/// The `Retry-After` of a 503 for a full queue or a wait that timed out:
/// the group's queue timeout in whole seconds, at least 1.
pub(super) fn retry_after(queue_timeout: Duration) -> u64 {
    queue_timeout.as_secs_f64().ceil().max(1.0) as u64
}

/// The body of the 503.
fn overload_body(group: &str) -> String {
    format!(
        "503 Service Unavailable: every node of this site (group \"{group}\") is busy; try again shortly\n"
    )
}

/// Which nodes this attempt may go to: the chosen one only when something
/// other than load chose it (a write's primary, a session's node), else
/// any node of the group not tried yet.
fn target(ctx: &RequestCtx, chosen: usize) -> Target {
    let pinned = ctx.retried_404 == 0
        && (ctx.primary == Some(chosen)
            || matches!(ctx.session, Some(SessionKey::Hash(_)))
            || (matches!(ctx.session, Some(SessionKey::NodeId(_))) && ctx.set_cookie.is_none()));
    if pinned {
        Target::Node(chosen)
    } else {
        Target::Any {
            preferred: Some(chosen),
            tried: ctx.tried.clone(),
        }
    }
}

impl Proxy {
    /// A slot for the request's next attempt, the balancer having chosen
    /// `chosen`: the node it goes to and the guard that counts it there.
    /// `visitor_gone` resolves when the visitor closes its connection.
    pub(super) async fn slot(
        &self,
        ctx: &mut RequestCtx,
        chosen: usize,
        visitor_gone: impl Future<Output = ()>,
    ) -> Result<(usize, InflightGuard)> {
        let state = Arc::clone(&ctx.state);
        let Some(group) = state.groups.get(ctx.group) else {
            return Error::e_explain(ErrorType::InternalError, "routed to no group");
        };
        let queue = Arc::clone(&group.queue);
        let timeout = group
            .config
            .queue_timeout
            .unwrap_or(state.config.timeouts.connect);
        let name = group.name();
        let grant = match queue.admit(
            &state,
            ctx.group,
            target(ctx, chosen),
            group.config.max_queue,
        ) {
            Admit::Go(grant) => grant,
            Admit::Full => {
                self.metrics.queue_refused.with_label_values(&[name]).inc();
                return Err(self.overloaded(ctx, name, timeout, "the queue is full (max_queue)"));
            }
            Admit::Wait(mut waiter) => {
                let since = waiter.since();
                let outcome = tokio::select! {
                    biased;
                    grant = waiter.granted() => Ok(grant),
                    () = visitor_gone => Err(false),
                    () = tokio::time::sleep(timeout) => Err(true),
                };
                // Leaves the queue now if it is still in it.
                drop(waiter);
                let waited = since.elapsed();
                match outcome {
                    Ok(grant) => {
                        queue.record_wait(waited);
                        self.metrics
                            .queue_wait
                            .with_label_values(&[name])
                            .observe(waited.as_secs_f64());
                        grant
                    }
                    Err(true) => {
                        queue.record_timeout();
                        self.metrics.queue_timeouts.with_label_values(&[name]).inc();
                        return Err(self.overloaded(ctx, name, timeout, "queue_timeout passed"));
                    }
                    Err(false) => {
                        queue.record_abandoned();
                        self.metrics
                            .queue_abandoned
                            .with_label_values(&[name])
                            .inc();
                        return Err(Error::explain(
                            ErrorType::ConnectionClosed,
                            "the visitor left while its request waited in the queue",
                        )
                        .into_down());
                    }
                }
            }
        };
        if grant.index != chosen && ctx.set_cookie.is_some() {
            // A new session goes where there was room: its cookie names
            // that node.
            ctx.set_cookie = Some(insert_cookie(group, grant.index));
        }
        Ok((grant.index, grant.guard))
    }

    /// The 503 for a request the group cannot take now.
    fn overloaded(
        &self,
        ctx: &mut RequestCtx,
        group: &str,
        timeout: Duration,
        why: &str,
    ) -> Box<Error> {
        ctx.error_body = Some(overload_body(group));
        ctx.retry_after = Some(retry_after(timeout));
        Error::explain(
            ErrorType::HTTPStatus(503),
            format!("every node of group \"{group}\" is at its limit: {why}"),
        )
    }
}

/// Resolves when the visitor of an HTTP/1 request closes its connection
/// (see [`visitor_gone`]). An HTTP/2 visitor that resets its stream (or
/// closes its connection) cancels the whole request where it is, this wait
/// included (`Proxy::handle`), so for it this never resolves.
pub(super) async fn visitor_io_gone(io: &mut super::request::VisitorIo) {
    match io.http1() {
        Some(io) => visitor_gone(io).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the visitor closes its connection (or it fails). What it
/// sends meanwhile stays in `io`'s buffer for the request's body or the
/// next request; past [`READ_WHILE_QUEUED`] bytes it stops reading and
/// never resolves.
pub(super) async fn visitor_gone<S>(io: &mut super::http1::Io<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    const LONG: Duration = Duration::from_secs(3600);
    loop {
        if io.unread().len() >= READ_WHILE_QUEUED {
            return std::future::pending().await;
        }
        match io.fill_with(LONG, 4096).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_visitor_that_closes_is_gone_and_what_it_sent_stays() {
        use tokio::io::AsyncWriteExt;
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut io = crate::proxy::http1::Io::new(ours, 1024);
        theirs
            .write_all(b"GET /next HTTP/1.1\r\n")
            .await
            .expect("write");
        // Still there: the wait goes on (and ends with the timeout here).
        let waited = tokio::time::timeout(Duration::from_secs(60), visitor_gone(&mut io)).await;
        assert!(waited.is_err(), "not gone while it is connected");
        assert_eq!(
            io.unread(),
            b"GET /next HTTP/1.1\r\n",
            "what it sent is kept"
        );
        drop(theirs);
        tokio::time::timeout(Duration::from_secs(1), visitor_gone(&mut io))
            .await
            .expect("gone once it closed");
    }

    #[test]
    fn retry_after_is_the_queue_timeout_rounded_up() {
        assert_eq!(retry_after(Duration::from_millis(200)), 1);
        assert_eq!(retry_after(Duration::from_secs(2)), 2);
        assert_eq!(retry_after(Duration::from_millis(2500)), 3);
    }
}
