//! A node's status page read over one of the proxy's own connections to it
//! instead of the scraper's: the hand-over between the request path and the
//! scraper.
//!
//! On a node that holds a worker per connection (Apache prefork and
//! worker), the scraper's kept-open connection holds one worker for itself
//! between reads, so visitors get one worker fewer than the node has (one
//! in sixteen on the benchmark's nodes: issue 17's overload goodput). When
//! this proxy already holds connections to the node and its requests there
//! are short, the scraper instead reads the page over one of them: an idle
//! pooled one when there is one, else the next one a request gives back,
//! which the request path hands over here ([`LendSlot::lend`]) instead of
//! pooling it. The read takes that connection's worker for a fraction of a
//! millisecond per page rather than a worker for good, and the node's limit
//! leaves no worker aside (`cluster::limit`, `status`). While the page is
//! read the connection counts as a request in flight ([`Lent::guard`]), so
//! that no queued request is sent to a worker it holds; it goes back to the
//! pool after the read, and the guard's drop hands the slot on.
//!
//! Only the scraper asks, one read at a time per node; a request that ends
//! while nobody asks pays one relaxed atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::cluster::node::InflightGuard;

/// A connection handed to the scraper for one status read.
#[derive(Debug)]
pub struct Lent {
    pub stream: TcpStream,
    /// The worker thread whose pool it goes back to (its reactor has it).
    pub thread: ThreadId,
    /// How long it may stay idle in the pool afterwards.
    pub max_idle: Duration,
    /// Counts it in flight at the node while the page is read.
    pub guard: InflightGuard,
}

/// Where a request that ends gives its connection to the scraper, when
/// the scraper waits for one.
#[derive(Debug, Default)]
pub struct LendSlot {
    /// The scraper waits for a connection: read before taking the lock.
    wanted: AtomicBool,
    waiter: Mutex<Option<oneshot::Sender<Lent>>>,
    /// A connection to the node went back to the pool since the scraper
    /// last looked ([`LendSlot::pooled_since`]).
    pooled: AtomicBool,
}

impl LendSlot {
    /// Wait for the next connection a request gives back (replaces an
    /// earlier wait).
    pub fn ask(&self) -> oneshot::Receiver<Lent> {
        let (tx, rx) = oneshot::channel();
        *self.waiter.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        self.wanted.store(true, Ordering::Release);
        rx
    }

    /// Stop waiting (a connection handed over meanwhile stays in the
    /// receiver, which the caller drops or reads).
    pub fn cancel(&self) {
        self.wanted.store(false, Ordering::Release);
        self.waiter.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Whether the scraper waits for a connection now.
    pub fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Acquire)
    }

    /// Hand `lent` to the waiting scraper; back when nobody waits any more.
    pub fn lend(&self, lent: Lent) -> Result<(), Lent> {
        let waiter = {
            let mut w = self.waiter.lock().unwrap_or_else(|p| p.into_inner());
            self.wanted.store(false, Ordering::Release);
            w.take()
        };
        match waiter {
            Some(tx) => tx.send(lent),
            None => Err(lent),
        }
    }

    /// A connection to the node goes back to the pool.
    pub fn note_pooled(&self) {
        if !self.pooled.load(Ordering::Relaxed) {
            self.pooled.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a connection went back to the pool since the last call.
    pub fn pooled_since(&self) -> bool {
        self.pooled.swap(false, Ordering::Relaxed)
    }
}
