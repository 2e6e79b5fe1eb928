//! Idle keep-alive connections to the nodes (nginx's `keepalive` cache in an
//! upstream block), kept per node address.
//!
//! Connections are kept per worker thread (as nginx keeps them per worker
//! process): a connection is registered with the reactor of the thread that
//! opened it, and a request reuses it on that thread without waking another.
//! The warmest connection is reused first (LIFO); each is kept at most the
//! `timeouts.idle` setting, which stays below the nodes' own keep-alive
//! timeout, and at most [`MAX_IDLE_PER_NODE`] per node. A connection the
//! node closed while it sat here is noticed without a system call: the
//! reactor has already marked it readable (end of stream), so a poll of it is
//! ready, while a healthy idle connection is pending. A close that races
//! with the reuse shows up as an error on the first write or read, which the
//! proxy retries on a fresh connection. A node that holds a worker per
//! connection (Apache prefork) and has none free gets a worker back before
//! a thread opens a new connection to it: one idle connection another
//! thread keeps is closed ([`Pool::close_one_elsewhere`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

use crate::clock;
use crate::cluster::node::IdleHold;

/// Idle connections kept per node and worker thread: enough for the
/// busiest moment of an HTTP/2 edge (100 streams on each of many visitor
/// connections become as many requests to the nodes at once). nginx's
/// examples use `keepalive 16` to `64`, which at that concurrency closes
/// and reopens a node connection for most requests; HAProxy keeps every
/// idle connection (`pool-max-conn -1`). Idle connections past
/// `timeouts.idle` are closed, and on nodes where a connection holds a
/// worker the node's limit bounds them (`cluster::limit`).
pub const MAX_IDLE_PER_NODE: usize = 1024;

/// How often idle connections past their time are closed when no request
/// comes to take them.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How often idle connections over their node's limit are closed (see
/// [`Pool::shed`]): a worker such a connection holds may be what another
/// client of the node (another webcluster instance) waits for in the
/// node's accept queue.
const SHED_EVERY: Duration = Duration::from_millis(100);

struct Idle {
    stream: TcpStream,
    since: Instant,
    /// This connection's own limit (below the pool's).
    max_idle: Duration,
    /// Counts the connection against its node's limit while it is here,
    /// where each connection holds a worker (`cluster::limit`); dropped
    /// with it, it may let a queued request go.
    _hold: Option<IdleHold>,
}

impl Idle {
    fn expired(&self, now: Instant, max_idle: Duration) -> bool {
        now.saturating_duration_since(self.since) >= max_idle.min(self.max_idle)
    }
}

/// The idle connections of every node.
pub struct Pool {
    /// Keyed by node address and thread, hashed with foldhash: the keys
    /// come from the config, not from visitors, so SipHash's resistance to
    /// chosen keys buys nothing here, and it cost two hashes of ~300
    /// instructions per request (take and put).
    idle: Mutex<HashMap<(SocketAddr, ThreadId), Vec<Idle>, foldhash::fast::RandomState>>,
    /// Idle connections kept per node and thread ([`MAX_IDLE_PER_NODE`]).
    cap: usize,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool::with_cap(MAX_IDLE_PER_NODE)
    }
}

/// The pool of `addr` on this thread.
fn key(addr: SocketAddr) -> (SocketAddr, ThreadId) {
    (addr, std::thread::current().id())
}

impl Pool {
    /// A pool that keeps at most `cap` idle connections per node and thread.
    pub fn with_cap(cap: usize) -> Pool {
        Pool {
            idle: Mutex::default(),
            cap,
        }
    }

    /// An idle connection to `addr` that is still open and has been idle for
    /// less than `max_idle`, if there is one.
    pub fn take(&self, addr: SocketAddr, max_idle: Duration) -> Option<TcpStream> {
        let now = clock::now();
        let mut closed = Vec::new();
        let found = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let list = idle.get_mut(&key(addr))?;
            let mut found = None;
            while let Some(mut c) = list.pop() {
                if !c.expired(now, max_idle) && still_open(&mut c.stream) {
                    found = Some(c);
                    break;
                }
                closed.push(c);
            }
            found
        };
        // Closed outside the lock.
        drop(closed);
        found.map(|c| c.stream)
    }

    /// The warmest idle connection to `addr` that another worker thread
    /// keeps, still open and idle for less than `max_idle`: for a node at
    /// its limit (`cluster::limit`), where a new connection would need a
    /// worker that this idle connection holds. It stays registered with
    /// the other thread's reactor, which wakes this thread's task for it.
    pub fn take_elsewhere(&self, addr: SocketAddr, max_idle: Duration) -> Option<TcpStream> {
        let here = std::thread::current().id();
        self.take_where(addr, max_idle, |thread| thread != here)
            .map(|(stream, _, _)| stream)
    }

    /// The warmest idle connection to `addr` on any thread, still open and
    /// idle for less than `max_idle`, with the thread whose reactor has it
    /// and its own idle limit: for a status read over it
    /// (`cluster::lend`), after which it goes back there
    /// ([`Pool::put_held_on`]).
    pub fn take_any(
        &self,
        addr: SocketAddr,
        max_idle: Duration,
    ) -> Option<(TcpStream, ThreadId, Duration)> {
        self.take_where(addr, max_idle, |_| true)
    }

    /// The warmest idle connection to `addr` kept by a thread `on` takes,
    /// still open and idle for less than `max_idle`; the ones found closed
    /// or past their time on the way are closed (outside the lock).
    fn take_where(
        &self,
        addr: SocketAddr,
        max_idle: Duration,
        on: impl Fn(ThreadId) -> bool,
    ) -> Option<(TcpStream, ThreadId, Duration)> {
        let now = clock::now();
        let mut closed = Vec::new();
        let found = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let mut found = None;
            for ((a, thread), list) in idle.iter_mut() {
                if *a != addr || !on(*thread) {
                    continue;
                }
                while let Some(mut c) = list.pop() {
                    if !c.expired(now, max_idle) && still_open(&mut c.stream) {
                        found = Some((c, *thread));
                        break;
                    }
                    closed.push(c);
                }
                if found.is_some() {
                    break;
                }
            }
            found
        };
        drop(closed);
        found.map(|(c, thread)| (c.stream, thread, c.max_idle))
    }

    /// Close the longest idle connection to `addr` that another worker
    /// thread keeps, if there is one. On a node that holds a worker per
    /// connection, that gives the worker back for a new connection from
    /// this thread, which would otherwise wait in the node's backlog.
    pub fn close_one_elsewhere(&self, addr: SocketAddr) -> bool {
        let here = std::thread::current().id();
        let closed = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.iter_mut()
                .filter(|((a, thread), list)| *a == addr && *thread != here && !list.is_empty())
                .min_by_key(|(_, list)| list[0].since)
                .map(|(_, list)| list.remove(0))
        };
        closed.is_some()
    }

    /// Keep `stream` for the next request to `addr`, for `max_idle` at most.
    pub fn put(&self, addr: SocketAddr, stream: TcpStream, max_idle: Duration) {
        self.put_held(addr, stream, max_idle, None);
    }

    /// [`Pool::put`], counting the connection against its node's limit
    /// with `hold` for as long as it is kept.
    pub fn put_held(
        &self,
        addr: SocketAddr,
        stream: TcpStream,
        max_idle: Duration,
        hold: Option<IdleHold>,
    ) {
        self.put_keyed(key(addr), stream, max_idle, hold);
    }

    fn put_keyed(
        &self,
        key: (SocketAddr, ThreadId),
        stream: TcpStream,
        max_idle: Duration,
        hold: Option<IdleHold>,
    ) {
        let evicted = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let list = idle.entry(key).or_default();
            list.push(Idle {
                stream,
                since: clock::now(),
                max_idle,
                _hold: hold,
            });
            (list.len() > self.cap).then(|| list.remove(0))
        };
        drop(evicted);
    }

    /// [`Pool::put_held`] for the worker thread `thread` (a connection
    /// that was lent to the scraper goes back to the thread whose reactor
    /// has it).
    pub fn put_held_on(
        &self,
        thread: ThreadId,
        addr: SocketAddr,
        stream: TcpStream,
        max_idle: Duration,
        hold: Option<IdleHold>,
    ) {
        self.put_keyed((addr, thread), stream, max_idle, hold);
    }

    /// Close `n` idle connections to `addr`, the longest idle first, on any
    /// thread: the node holds a worker for each, and its limit
    /// (`cluster::limit`) fell below what this proxy holds there (a scrape
    /// showed that others took workers). Returns how many were closed.
    pub fn shed(&self, addr: SocketAddr, n: u64) -> u64 {
        let mut closed = Vec::new();
        {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            while (closed.len() as u64) < n {
                let oldest = idle
                    .iter()
                    .filter(|((a, _), list)| *a == addr && !list.is_empty())
                    .min_by_key(|(_, list)| list[0].since)
                    .map(|(k, _)| *k);
                let Some(k) = oldest else { break };
                if let Some(list) = idle.get_mut(&k) {
                    closed.push(list.remove(0));
                }
            }
            idle.retain(|_, list| !list.is_empty());
        }
        let n = closed.len() as u64;
        // Closed outside the lock.
        drop(closed);
        n
    }

    /// Close the connections idle for `max_idle` or longer, and those the
    /// node closed.
    pub fn sweep(&self, max_idle: Duration) {
        let now = clock::now();
        let mut closed = Vec::new();
        {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            for list in idle.values_mut() {
                let mut i = 0;
                while i < list.len() {
                    let c = &mut list[i];
                    if c.expired(now, max_idle) || !still_open(&mut c.stream) {
                        closed.push(list.remove(i));
                    } else {
                        i += 1;
                    }
                }
            }
            idle.retain(|_, list| !list.is_empty());
        }
        drop(closed);
    }

    /// Idle connections kept now, over all nodes.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.values().map(Vec::len).sum()
    }

    /// No idle connection is kept.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether an idle connection can still carry a request: no end of stream,
/// no error and no unexpected bytes from the node are waiting on it.
fn still_open(stream: &mut TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    matches!(Pin::new(stream).poll_read(&mut cx, &mut buf), Poll::Pending)
}

/// Closes expired idle connections in the background, and those over
/// their node's limit.
pub struct Sweeper {
    pool: std::sync::Arc<Pool>,
    max_idle: Box<dyn Fn() -> Duration + Send + Sync>,
    over_limit: Box<dyn Fn() -> Vec<(SocketAddr, u64)> + Send + Sync>,
}

impl Sweeper {
    /// `max_idle` is read on every sweep (it follows config reloads);
    /// `over_limit` says, for each node address, how many idle connections
    /// to it are over its limit now.
    pub fn new(
        pool: std::sync::Arc<Pool>,
        max_idle: impl Fn() -> Duration + Send + Sync + 'static,
        over_limit: impl Fn() -> Vec<(SocketAddr, u64)> + Send + Sync + 'static,
    ) -> Sweeper {
        Sweeper {
            pool,
            max_idle: Box::new(max_idle),
            over_limit: Box::new(over_limit),
        }
    }
}

#[async_trait]
impl BackgroundService for Sweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(SHED_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sweep = clock::now();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {
                    for (addr, n) in (self.over_limit)() {
                        self.pool.shed(addr, n);
                    }
                    if clock::since(last_sweep) >= SWEEP_EVERY {
                        last_sweep = clock::now();
                        self.pool.sweep((self.max_idle)());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (TcpStream, TcpStream, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server, addr)
    }

    const LONG: Duration = Duration::from_secs(60);

    /// Let the reactor see what the peer did.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn reuses_an_open_connection_and_drops_a_closed_one() {
        let pool = Pool::default();
        let (a, _a_peer, addr) = pair().await;
        pool.put(addr, a, LONG);
        assert_eq!(pool.len(), 1);
        settle().await;
        assert!(pool.take(addr, Duration::from_secs(60)).is_some());
        assert!(pool.is_empty());

        let (b, b_peer, addr) = pair().await;
        pool.put(addr, b, LONG);
        drop(b_peer);
        settle().await;
        assert!(pool.take(addr, Duration::from_secs(60)).is_none());
        assert!(pool.is_empty());
    }

    #[tokio::test]
    async fn shedding_closes_the_longest_idle_connections_of_one_node() {
        let pool = Pool::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut peers = Vec::new();
        for _ in 0..3 {
            let c = TcpStream::connect(addr).await.unwrap();
            peers.push(listener.accept().await.unwrap().0);
            pool.put(addr, c, LONG);
        }
        let (other, _other_peer, other_addr) = pair().await;
        pool.put(other_addr, other, LONG);
        assert_eq!(pool.shed(addr, 2), 2);
        assert_eq!(pool.len(), 2);
        // The two closed are the first two kept: their peers see the end.
        for (i, peer) in peers.iter_mut().enumerate() {
            let mut buf = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_millis(200), peer.read(&mut buf)).await;
            assert_eq!(matches!(read, Ok(Ok(0))), i < 2, "peer {i}: {read:?}");
        }
        // No more than there are; other nodes untouched.
        assert_eq!(pool.shed(addr, 5), 1);
        assert_eq!(pool.shed(addr, 1), 0);
        assert_eq!(pool.len(), 1);
    }

    #[tokio::test]
    async fn drops_a_connection_with_unexpected_bytes() {
        let pool = Pool::default();
        let (a, mut a_peer, addr) = pair().await;
        pool.put(addr, a, LONG);
        a_peer
            .write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
            .await
            .unwrap();
        settle().await;
        assert!(pool.take(addr, Duration::from_secs(60)).is_none());
    }

    #[tokio::test]
    async fn expired_connections_are_not_reused_and_are_swept() {
        let pool = Pool::default();
        let (a, _a_peer, addr) = pair().await;
        pool.put(addr, a, LONG);
        assert!(pool.take(addr, Duration::ZERO).is_none());
        let (b, _b_peer, addr) = pair().await;
        pool.put(addr, b, LONG);
        pool.sweep(Duration::from_secs(60));
        assert_eq!(pool.len(), 1);
        pool.sweep(Duration::ZERO);
        assert!(pool.is_empty());
    }

    #[tokio::test]
    async fn a_connection_kept_briefly_expires_before_the_pool_limit() {
        let pool = Pool::default();
        let (a, _a_peer, addr) = pair().await;
        pool.put(addr, a, Duration::ZERO);
        assert!(pool.take(addr, LONG).is_none());
        let (b, _b_peer, addr) = pair().await;
        pool.put(addr, b, Duration::ZERO);
        pool.sweep(LONG);
        assert!(pool.is_empty());
    }

    #[tokio::test]
    async fn keeps_at_most_the_cap_per_node_and_reuses_the_newest() {
        const CAP: usize = 16;
        let pool = Pool::with_cap(CAP);
        let mut peers = Vec::new();
        let mut addr = None;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = listener.local_addr().unwrap();
        for _ in 0..CAP + 3 {
            let c = TcpStream::connect(a).await.unwrap();
            let (s, _) = listener.accept().await.unwrap();
            peers.push(s);
            pool.put(a, c, LONG);
            addr = Some(a);
        }
        assert_eq!(pool.len(), CAP);
        let taken = pool.take(addr.unwrap(), Duration::from_secs(60)).unwrap();
        // The newest connection was taken: closing it ends the newest peer's
        // stream.
        drop(taken);
        let mut byte = [0u8; 1];
        let newest = peers.last_mut().unwrap();
        let read = tokio::time::timeout(Duration::from_secs(5), newest.read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(0))), "{read:?}");
    }

    #[tokio::test]
    async fn closes_an_idle_connection_kept_by_another_thread_only() {
        let pool = Pool::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mine = TcpStream::connect(addr).await.unwrap();
        let (_mine_peer, _) = listener.accept().await.unwrap();
        let theirs = TcpStream::connect(addr).await.unwrap();
        let (mut theirs_peer, _) = listener.accept().await.unwrap();

        pool.put(addr, mine, LONG);
        assert!(
            !pool.close_one_elsewhere(addr),
            "only this thread's is kept"
        );
        std::thread::scope(|s| {
            s.spawn(|| pool.put(addr, theirs, LONG));
        });
        assert!(pool.close_one_elsewhere(addr));
        let mut byte = [0u8; 1];
        assert_eq!(theirs_peer.read(&mut byte).await.unwrap(), 0, "closed");
        assert!(!pool.close_one_elsewhere(addr), "none left elsewhere");
        assert!(pool.take(addr, LONG).is_some(), "this thread's is kept");
    }
}
