//! The request queue of a group: requests wait here, in the proxy, when no
//! node they may go to is under its limit (`cluster::limit`), instead of in
//! a full node's kernel backlog.
//!
//! One queue per group, served oldest first (FIFO), like HAProxy's backend
//! queue, while it moves. Once its oldest request has waited half of its
//! `queue_timeout` (a standing queue: more comes than the nodes can take),
//! it is served newest first ("adaptive LIFO", as Facebook's servers do
//! under overload, "Fail at Scale", ACM Queue 13(8), 2015): the requests
//! served are those whose visitors came last and still wait, the oldest
//! wait out `queue_timeout` and get their 503 as they would have after
//! being served last, and when the overload ends the new requests are
//! served at once instead of behind a queue that takes up to
//! `queue_timeout` to drain. Newest first applies to the requests that came
//! within the last sixteenth of their `queue_timeout` (fresh); the rest,
//! left over from the overload, are served oldest first when no fresh
//! request waits, so that the room the nodes have once the overload ends
//! goes to those whose time runs out first and as many of them as it can
//! take are served before their `queue_timeout`. With `queue_order =
//! "fifo"` a standing queue is still served oldest first, as HAProxy's: more
//! of a burst is served in all (each up to `queue_timeout` late), and the
//! visitors after it wait behind its leftovers. A slot is never left free
//! while a request waits; only who waits changes. A request
//!  that may go to any node of the group takes the first
//! node under its limit (primaries, then backups, ranked by the group's
//! balancer); a request pinned to one node (a session's node, a write's
//! primary) waits for that node, as in HAProxy's server queue, without
//! holding back the requests behind it that may go elsewhere.
//!
//! Taking a slot at a node (counting the request in flight there) is done
//! under the queue's lock only, by [`GroupQueue::admit`] for a new request
//! and by [`GroupQueue::dispatch`] for waiting ones; a slot given back
//! (a request to the node ended: [`crate::cluster::node::InflightGuard`]
//! dropped; an idle pooled connection closed) and a scrape that shows room
//! call `dispatch` after the count changed, so a waiting request is never
//! forgotten (the count and the queue are read under the same lock by
//! both sides). `dispatch` hands the slot itself to the waiting request
//! through a one-shot channel: nothing polls, and no second request can
//! take the slot between the wake-up and the request's start. A waiting
//! request whose future is dropped (its visitor left, its `queue_timeout`
//! passed) leaves the queue at once ([`Waiter`]'s `Drop`); a slot handed to
//! it in the same instant goes back and is handed on. The scraper also
//! calls `dispatch` on each of its ticks, for room that comes with time
//! alone (a node back from a hold-back, a stale page's limit of at least
//! one).

use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::clock;
use crate::cluster::node::{InflightGuard, NodeLive};
use crate::cluster::ClusterState;
use crate::config::QueueOrder;

/// How many of the last waits the page's p50 and p99 are taken over.
const RECENT_WAITS: usize = 1024;

/// Which nodes a request may go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Any node of the group but those tried already; `preferred` is the
    /// balancer's choice when the request came, taken when it has room.
    Any {
        preferred: Option<usize>,
        tried: Vec<usize>,
    },
    /// This node only (a session's node, a write's primary).
    Node(usize),
}

/// A slot at a node: the request is counted in flight there until `guard`
/// is dropped.
#[derive(Debug)]
pub struct Grant {
    pub index: usize,
    pub guard: InflightGuard,
}

/// What [`GroupQueue::admit`] decided for a new request.
#[derive(Debug)]
pub enum Admit {
    /// A node has room: go now.
    Go(Grant),
    /// Wait for a slot.
    Wait(Waiter),
    /// The queue is `max_queue` long: answer 503 at once.
    Full,
}

/// One waiting request, in the queue's list.
struct Entry {
    id: u64,
    /// When its wait passes half its `queue_timeout`: from then on, while
    /// it is the oldest, the queue serves newest first. None: never
    /// (`queue_order = "fifo"`).
    standing_at: Option<Instant>,
    /// Until when it is fresh (a sixteenth of its `queue_timeout`): a
    /// standing queue serves the fresh newest first, then the others
    /// oldest first.
    fresh_until: Instant,
    state: Arc<ClusterState>,
    group: usize,
    target: Target,
    tx: oneshot::Sender<Grant>,
}

#[derive(Default)]
struct Inner {
    waiters: VecDeque<Entry>,
    next_id: u64,
    /// The last waits (ring), for the page's percentiles.
    waits: Vec<Duration>,
    next_wait: usize,
}

/// A group's queue; carried over reloads by group name, like the nodes'
/// live state, so a request queued before a reload is still served.
#[derive(Default)]
pub struct GroupQueue {
    inner: Mutex<Inner>,
    /// `inner.waiters.len()`, written under the lock: lets [`GroupQueue::dispatch`]
    /// return without the lock when nobody waits (every request's end calls
    /// it). Both sides put a SeqCst fence between their write (this count;
    /// a node's in-flight count) and their read of the other's, so one of
    /// them sees the other: a slot freed as a request starts to wait is
    /// either seen free by it or handed to it.
    waiting: AtomicUsize,
    queued: AtomicU64,
    timeouts: AtomicU64,
    refused: AtomicU64,
    abandoned: AtomicU64,
    max_length: AtomicU64,
}

impl std::fmt::Debug for GroupQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupQueue")
            .field("length", &self.len())
            .finish()
    }
}

/// A request waiting in a queue; dropped, it leaves the queue.
pub struct Waiter {
    queue: Arc<GroupQueue>,
    id: u64,
    rx: oneshot::Receiver<Grant>,
    since: tokio::time::Instant,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter").field("id", &self.id).finish()
    }
}

impl Waiter {
    /// Wait for a slot. Cancellation-safe: dropping the future (or the
    /// waiter) loses nothing, a slot already handed over goes back.
    pub async fn granted(&mut self) -> Grant {
        match (&mut self.rx).await {
            Ok(grant) => grant,
            // The sender is only dropped after a send or by this waiter's
            // own `Drop`: never while the waiter is alive. Should it be, the
            // request waits out its timeout rather than skip the queue.
            Err(_) => std::future::pending().await,
        }
    }

    /// Since when it waits.
    pub fn since(&self) -> tokio::time::Instant {
        self.since
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        {
            let mut inner = self.queue.lock();
            if let Some(at) = inner.waiters.iter().position(|e| e.id == self.id) {
                inner.waiters.remove(at);
                self.queue
                    .waiting
                    .store(inner.waiters.len(), Ordering::SeqCst);
            }
        }
        // A grant sent meanwhile is dropped with `rx`, after the lock: its
        // slot goes back to the node and to the next request (see
        // `InflightGuard`'s `Drop`).
    }
}

/// What the page and the metrics show of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueFigures {
    pub length: u64,
    pub max_length: u64,
    pub queued_total: u64,
    pub timeouts_total: u64,
    pub refused_total: u64,
    pub abandoned_total: u64,
    /// Over the last [`RECENT_WAITS`] requests that waited.
    pub wait_p50: Option<Duration>,
    pub wait_p99: Option<Duration>,
}

/// Room at the nodes as seen in one pass of `dispatch` (each node's room is
/// read once, and again after a slot is taken there).
#[derive(Default)]
struct RoomCache(Vec<(*const NodeLive, bool)>);

impl RoomCache {
    fn room(&mut self, state: &ClusterState, group: usize, index: usize, now: Instant) -> bool {
        let Some(node) = state.groups.get(group).and_then(|g| g.nodes.get(index)) else {
            return false;
        };
        let key = Arc::as_ptr(&node.live);
        if let Some(&(_, room)) = self.0.iter().find(|(k, _)| *k == key) {
            return room;
        }
        let g = &state.groups[group];
        let room = node.live.has_room(&g.config, &node.config, now);
        self.0.push((key, room));
        room
    }

    fn taken(&mut self, live: &Arc<NodeLive>) {
        let key = Arc::as_ptr(live);
        self.0.retain(|(k, _)| *k != key);
    }

    /// Whether no node of the group has room (as far as read so far).
    fn all_full(&mut self, state: &ClusterState, group: usize, now: Instant) -> bool {
        let n = state.groups.get(group).map_or(0, |g| g.nodes.len());
        (0..n).all(|i| !self.room(state, group, i, now))
    }
}

/// A slot at the node the request was given (the balancer's choice, or
/// its own node) if it has room now; nothing else is looked at.
fn grant_chosen(
    state: &ClusterState,
    group: usize,
    target: &Target,
    now: Instant,
) -> Option<Grant> {
    let index = match target {
        Target::Node(i) => *i,
        Target::Any { preferred, .. } => (*preferred)?,
    };
    let g = state.groups.get(group)?;
    let node = g.nodes.get(index)?;
    node.live
        .has_room(&g.config, &node.config, now)
        .then(|| Grant {
            index,
            guard: node.live.begin_request(),
        })
}

/// A slot for `target` if a node it may go to has room now.
fn try_grant(
    state: &ClusterState,
    group: usize,
    target: &Target,
    cache: &mut RoomCache,
    now: Instant,
) -> Option<Grant> {
    let g = state.groups.get(group)?;
    let index = match target {
        Target::Node(i) => cache.room(state, group, *i, now).then_some(*i)?,
        Target::Any { preferred, tried } => {
            match preferred.filter(|&p| cache.room(state, group, p, now)) {
                Some(p) => p,
                None => {
                    let excluded: Vec<usize> = (0..g.nodes.len())
                        .filter(|&i| tried.contains(&i) || !cache.room(state, group, i, now))
                        .collect();
                    if excluded.len() == g.nodes.len() {
                        return None;
                    }
                    g.pick(&excluded, now)?
                }
            }
        }
    };
    let live = &g.nodes.get(index)?.live;
    cache.taken(live);
    Some(Grant {
        index,
        guard: live.begin_request(),
    })
}

/// The order `dispatch` visits the waiters in: the fresh ones (from
/// `fresh`, the index of the oldest of them, to the back) back to front,
/// then the others front to back; oldest first is all of them front to back
/// (`fresh == len`). Each visited entry is either passed over (`skip`) or
/// removed.
struct Order {
    /// The next index to visit: one past it while going back to front.
    at: usize,
    /// The first index not to visit front to back.
    end: usize,
    /// Going back to front (through the fresh ones) now.
    back: bool,
}

impl Order {
    fn new(len: usize, fresh: usize) -> Order {
        match fresh < len {
            true => Order {
                at: len,
                end: fresh,
                back: true,
            },
            false => Order {
                at: 0,
                end: len,
                back: false,
            },
        }
    }

    fn next(&mut self) -> Option<usize> {
        if self.back {
            if self.at > self.end {
                return Some(self.at - 1);
            }
            // The fresh ones are done: the others, oldest first.
            self.back = false;
            self.at = 0;
        }
        (self.at < self.end).then_some(self.at)
    }

    /// The entry stays: go on past it.
    fn skip(&mut self) {
        match self.back {
            true => self.at -= 1,
            false => self.at += 1,
        }
    }

    /// The entry was taken out of the list.
    fn removed(&mut self) {
        match self.back {
            // The ones before it keep their indexes.
            true => self.at -= 1,
            // The ones after it moved down by one: the same index next.
            false => self.end -= 1,
        }
    }
}

impl GroupQueue {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain data; a panic elsewhere cannot leave it worse than stale.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests waiting now.
    pub fn len(&self) -> usize {
        self.lock().waiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Requests waiting now, without the lock (as last written under it).
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A new request of group `group` of `state` (the state the request
    /// runs with): a slot now, a place in the queue, or `Full` when
    /// `max_queue` requests wait already (0: no limit).
    pub fn admit(
        self: &Arc<Self>,
        state: &Arc<ClusterState>,
        group: usize,
        target: Target,
        max_queue: u32,
    ) -> Admit {
        let now = clock::now();
        let mut cache = RoomCache::default();
        let mut handed = Vec::new();
        let admitted = {
            let mut inner = self.lock();
            if inner.waiters.is_empty() {
                // The usual case: the chosen node has room.
                if let Some(grant) = grant_chosen(state, group, &target, now) {
                    return Admit::Go(grant);
                }
                if let Some(grant) = try_grant(state, group, &target, &mut cache, now) {
                    return Admit::Go(grant);
                }
            }
            if max_queue > 0 && inner.waiters.len() >= max_queue as usize {
                // Older requests first: room may have come for them.
                self.dispatch_locked(&mut inner, &mut cache, &mut handed, now);
                if inner.waiters.len() >= max_queue as usize {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    drop(inner);
                    drop(handed);
                    return Admit::Full;
                }
            }
            let id = inner.next_id;
            inner.next_id += 1;
            let (tx, rx) = oneshot::channel();
            let config = state.groups.get(group).map(|g| &g.config);
            let timeout = config
                .and_then(|c| c.queue_timeout)
                .unwrap_or(state.config.timeouts.connect);
            let fifo = config.is_some_and(|c| c.queue_order == QueueOrder::Fifo);
            inner.waiters.push_back(Entry {
                id,
                standing_at: (!fifo).then(|| now + timeout / 2),
                fresh_until: now + timeout / 16,
                state: Arc::clone(state),
                group,
                target,
                tx,
            });
            let len = inner.waiters.len();
            self.waiting.store(len, Ordering::SeqCst);
            // Before the nodes' in-flight counts are read (see `waiting`).
            fence(Ordering::SeqCst);
            self.max_length.fetch_max(len as u64, Ordering::Relaxed);
            // Oldest first: the new request gets a slot only if every older
            // one that could take it has one.
            self.dispatch_locked(&mut inner, &mut cache, &mut handed, now);
            let mut waiter = Waiter {
                queue: Arc::clone(self),
                id,
                rx,
                since: tokio::time::Instant::now(),
            };
            // It got one at once (the older ones could not take it): it
            // did not wait.
            let now_granted = match inner.waiters.iter().any(|e| e.id == id) {
                true => None,
                false => waiter.rx.try_recv().ok(),
            };
            match now_granted {
                Some(grant) => (Admit::Go(grant), Some(waiter)),
                None => (Admit::Wait(waiter), None),
            }
        };
        // A waiter that got its slot at once is dropped after the lock (its
        // `Drop` takes it).
        let (admitted, spare) = admitted;
        drop(spare);
        drop(handed);
        if matches!(admitted, Admit::Wait(_)) {
            self.queued.fetch_add(1, Ordering::Relaxed);
        }
        admitted
    }

    /// Hand the free slots to the waiting requests, oldest first. Called
    /// whenever room may have come: a request to a node of the group
    /// ended, an idle connection closed, a scrape, the scraper's tick.
    pub fn dispatch(&self) {
        // After the caller's change of an in-flight count (see `waiting`).
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut handed = Vec::new();
        {
            let mut inner = self.lock();
            if inner.waiters.is_empty() {
                return;
            }
            let mut cache = RoomCache::default();
            self.dispatch_locked(&mut inner, &mut cache, &mut handed, clock::now());
        }
        // Grants whose waiter had gone give their slot back here, outside
        // the lock (their `Drop` dispatches again).
        drop(handed);
    }

    fn dispatch_locked(
        &self,
        inner: &mut Inner,
        cache: &mut RoomCache,
        handed: &mut Vec<Grant>,
        now: Instant,
    ) {
        // Waiters of a state whose nodes all lack room are passed over
        // without a look at each (a long queue under overload).
        let mut full: Vec<*const ClusterState> = Vec::new();
        // A standing queue (its oldest waited half its timeout): the fresh
        // newest first, then the others oldest first. Going from the back,
        // a removal leaves the indexes still to visit as they are.
        let len = inner.waiters.len();
        let standing = inner
            .waiters
            .front()
            .and_then(|e| e.standing_at)
            .is_some_and(|at| now >= at);
        let fresh = match standing {
            // In arrival order, so the fresh ones are the last (found by
            // halving: a standing queue may be long).
            true => inner.waiters.partition_point(|e| now >= e.fresh_until),
            false => len,
        };
        let mut order = Order::new(len, fresh);
        while let Some(i) = order.next() {
            let Some(e) = inner.waiters.get(i) else {
                break;
            };
            let key = Arc::as_ptr(&e.state);
            if full.contains(&key) {
                order.skip();
                continue;
            }
            let Some(grant) = try_grant(&e.state, e.group, &e.target, cache, now) else {
                if cache.all_full(&e.state, e.group, now) {
                    full.push(key);
                }
                order.skip();
                continue;
            };
            let Some(e) = inner.waiters.remove(i) else {
                break;
            };
            order.removed();
            self.waiting.store(inner.waiters.len(), Ordering::SeqCst);
            if let Err(grant) = e.tx.send(grant) {
                // Its waiter is being dropped (it waits for this lock):
                // the slot goes back after the lock.
                handed.push(grant);
            }
        }
    }

    /// A request waited `waited` and got a slot.
    pub fn record_wait(&self, waited: Duration) {
        let mut inner = self.lock();
        if inner.waits.len() < RECENT_WAITS {
            inner.waits.push(waited);
        } else {
            let at = inner.next_wait;
            inner.waits[at] = waited;
        }
        inner.next_wait = (inner.next_wait + 1) % RECENT_WAITS;
    }

    /// A request waited its `queue_timeout` out.
    pub fn record_timeout(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// A request's visitor left while it waited.
    pub fn record_abandoned(&self) {
        self.abandoned.fetch_add(1, Ordering::Relaxed);
    }

    pub fn figures(&self) -> QueueFigures {
        let (length, mut waits) = {
            let inner = self.lock();
            (inner.waiters.len() as u64, inner.waits.clone())
        };
        waits.sort_unstable();
        let pct = |p: f64| {
            let n = waits.len();
            (n > 0).then(|| waits[((n as f64 * p).ceil() as usize).clamp(1, n) - 1])
        };
        QueueFigures {
            length,
            max_length: self.max_length.load(Ordering::Relaxed),
            queued_total: self.queued.load(Ordering::Relaxed),
            timeouts_total: self.timeouts.load(Ordering::Relaxed),
            refused_total: self.refused.load(Ordering::Relaxed),
            abandoned_total: self.abandoned.load(Ordering::Relaxed),
            wait_p50: pct(0.5),
            wait_p99: pct(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Cluster;
    use std::path::Path;

    /// A cluster of `nodes` nodes that each take `max_conns` requests at
    /// once (no status page: the configured limit).
    fn cluster(nodes: usize, max_conns: u32, max_queue: u32) -> Cluster {
        let mut text = format!(
            "[[group]]\nname = \"web\"\nscrape = false\nbalance = \"round_robin\"\nmax_queue = {max_queue}\n"
        );
        for i in 0..nodes {
            text.push_str(&format!(
                "[[group.node]]\nname = \"n{i}\"\naddress = \"127.0.0.1:{}\"\nmax_conns = {max_conns}\n",
                9000 + i
            ));
        }
        Cluster::new(crate::config::parse(&text, Path::new("t.toml")).expect("valid"))
    }

    fn any() -> Target {
        Target::Any {
            preferred: None,
            tried: Vec::new(),
        }
    }

    fn go(a: Admit) -> Grant {
        match a {
            Admit::Go(g) => g,
            other => panic!("expected a slot now, got {other:?}"),
        }
    }

    fn wait(a: Admit) -> Waiter {
        match a {
            Admit::Wait(w) => w,
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    /// The grant already handed to `w`, if any (without waiting).
    fn handed(w: &mut Waiter) -> Option<Grant> {
        w.rx.try_recv().ok()
    }

    #[test]
    fn waiting_requests_are_served_oldest_first_as_slots_free() {
        let c = cluster(1, 1, 0);
        let state = c.state();
        let q = Arc::clone(&state.groups[0].queue);
        let first = go(q.admit(&state, 0, any(), 0));
        let mut b = wait(q.admit(&state, 0, any(), 0));
        let mut c2 = wait(q.admit(&state, 0, any(), 0));
        assert_eq!(q.len(), 2);
        drop(first);
        let gb = handed(&mut b).expect("the oldest goes");
        assert!(handed(&mut c2).is_none(), "the next still waits");
        assert_eq!(state.groups[0].nodes[0].live.inflight(), 1);
        drop(gb);
        assert!(handed(&mut c2).is_some());
        assert!(q.is_empty());
    }

    /// A queue that stands, served in `order`: one node of one slot,
    /// `queue_timeout` 1.6 s (standing once the oldest has waited 800 ms; a
    /// request is fresh for 100 ms), the slot taken (`first`), two requests
    /// that have waited 850 ms (`old`, `middle`) and a fresh one (`new`).
    struct Standing {
        _cluster: Cluster,
        state: Arc<ClusterState>,
        q: Arc<GroupQueue>,
        first: Grant,
        old: Waiter,
        middle: Waiter,
        new: Waiter,
    }

    fn standing(order: QueueOrder) -> Standing {
        let mut cfg = (*cluster(1, 1, 0).state().config).clone();
        cfg.groups[0].queue_timeout = Some(Duration::from_millis(1600));
        cfg.groups[0].queue_order = order;
        let c = Cluster::new(cfg);
        let state = c.state();
        let q = Arc::clone(&state.groups[0].queue);
        let first = go(q.admit(&state, 0, any(), 0));
        let old = wait(q.admit(&state, 0, any(), 0));
        let middle = wait(q.admit(&state, 0, any(), 0));
        std::thread::sleep(Duration::from_millis(850));
        let new = wait(q.admit(&state, 0, any(), 0));
        Standing {
            _cluster: c,
            state,
            q,
            first,
            old,
            middle,
            new,
        }
    }

    #[test]
    fn a_standing_queue_is_served_newest_first_until_it_moves_again() {
        let mut s = standing(QueueOrder::Adaptive);
        drop(s.first);
        let got = handed(&mut s.new).expect("the fresh newest goes first");
        assert!(handed(&mut s.old).is_none() && handed(&mut s.middle).is_none());
        let mut fresh = [(); 3].map(|_| wait(s.q.admit(&s.state, 0, any(), 0)));
        drop(got);
        let got = handed(&mut fresh[2]).expect("the newest of the fresh");
        drop(got);
        let got = handed(&mut fresh[1]).expect("then the next newest fresh");
        assert!(handed(&mut fresh[0]).is_none() && handed(&mut s.old).is_none());
        drop(got);
        let got = handed(&mut fresh[0]).expect("then the last fresh one");
        drop(got);
        // No fresh one left: the others go oldest first (the oldest is the
        // first to run out of time).
        let got = handed(&mut s.old).expect("then the oldest");
        assert!(handed(&mut s.middle).is_none());
        drop(got);
        let got = handed(&mut s.middle).expect("then the next oldest");
        // What is left waited less than half the timeout, so the queue is
        // served oldest first again.
        let mut a = wait(s.q.admit(&s.state, 0, any(), 0));
        let mut b = wait(s.q.admit(&s.state, 0, any(), 0));
        drop(got);
        let got = handed(&mut a).expect("oldest first again");
        assert!(handed(&mut b).is_none());
        drop(got);
    }

    #[test]
    fn a_fifo_queue_is_served_oldest_first_even_when_it_stands() {
        // As above, with `queue_order = "fifo"`: past half the timeout the
        // oldest still goes first.
        let mut s = standing(QueueOrder::Fifo);
        drop(s.first);
        let got = handed(&mut s.old).expect("the oldest goes first");
        assert!(handed(&mut s.middle).is_none() && handed(&mut s.new).is_none());
        drop(got);
        let got = handed(&mut s.middle).expect("then the next oldest");
        assert!(handed(&mut s.new).is_none());
        drop(got);
        let got = handed(&mut s.new).expect("then the newest");
        drop(got);
    }

    #[test]
    fn a_new_request_does_not_pass_the_ones_waiting() {
        let c = cluster(1, 1, 0);
        let state = c.state();
        let q = Arc::clone(&state.groups[0].queue);
        let first = go(q.admit(&state, 0, any(), 0));
        let mut waiting = wait(q.admit(&state, 0, any(), 0));
        // The slot frees and a new request comes in the same instant (its
        // admit runs before the waiting one is woken): the older gets it.
        let live = Arc::clone(&state.groups[0].nodes[0].live);
        live.uncount_for_test(1);
        let mut newer = wait(q.admit(&state, 0, any(), 0));
        let got = handed(&mut waiting).expect("the older one got the slot");
        assert!(handed(&mut newer).is_none());
        drop(got);
        drop(first);
        live.uncount_for_test(-1);
    }

    #[test]
    fn a_pinned_request_waits_for_its_node_and_lets_others_pass() {
        let c = cluster(2, 1, 0);
        let state = c.state();
        let q = Arc::clone(&state.groups[0].queue);
        let on0 = go(q.admit(&state, 0, Target::Node(0), 0));
        let on1 = go(q.admit(&state, 0, Target::Node(1), 0));
        let mut pinned = wait(q.admit(&state, 0, Target::Node(0), 0));
        let mut free = wait(q.admit(&state, 0, any(), 0));
        drop(on1);
        assert!(handed(&mut pinned).is_none(), "node 0 is still full");
        let g = handed(&mut free).expect("a request for any node takes node 1");
        assert_eq!(g.index, 1);
        drop(on0);
        assert_eq!(handed(&mut pinned).expect("its node freed").index, 0);
    }

    #[test]
    fn a_request_with_room_goes_at_once_past_waiters_that_cannot_take_it() {
        let c = cluster(2, 1, 0);
        let state = c.state();
        let q = Arc::clone(&state.groups[0].queue);
        let on0 = go(q.admit(&state, 0, Target::Node(0), 0));
        let _pinned = wait(q.admit(&state, 0, Target::Node(0), 0));
        // Node 1 has room; the waiter ahead may only go to node 0.
        let free = go(q.admit(&state, 0, any(), 0));
        assert_eq!(free.index, 1);
        assert_eq!(q.figures().queued_total, 1, "only the pinned one waited");
        assert_eq!(q.len(), 1);
        drop((on0, free));
    }

    #[test]
    fn a_request_that_may_go_anywhere_takes_a_node_with_room() {
        let c = cluster(3, 1, 0);
        let state = c.state();
        let q = Arc::clone(&state.groups[0].queue);
        let a = go(q.admit(&state, 0, Target::Node(1), 0));
        // The balancer preferred the full node 1: another goes.
        let b = go(q.admit(
            &state,
            0,
            Target::Any {
                preferred: Some(1),
                tried: vec![0],
            },
            0,
        ));
        assert_eq!(b.index, 2, "not the full one, not the one tried");
        drop((a, b));
    }

    #[test]
    fn a_waiter_that_leaves_is_never_served_and_its_slot_goes_on() {
        let c = cluster(1, 1, 0);
        let state = c.state();
        let q = Arc::clone(&state.groups[0].queue);
        let first = go(q.admit(&state, 0, any(), 0));
        let gone = wait(q.admit(&state, 0, any(), 0));
        let mut next = wait(q.admit(&state, 0, any(), 0));
        drop(gone);
        assert_eq!(q.len(), 1, "it left the queue at once");
        drop(first);
        let next_grant = handed(&mut next).expect("served");
        // A slot handed to a waiter that then leaves without taking it goes
        // back to the node and on to the next.
        let late = wait(q.admit(&state, 0, any(), 0));
        let mut after = wait(q.admit(&state, 0, any(), 0));
        drop(next_grant);
        drop(late);
        let g = handed(&mut after).expect("the slot went on");
        assert_eq!(state.groups[0].nodes[0].live.inflight(), 1);
        drop(g);
        assert_eq!(state.groups[0].nodes[0].live.inflight(), 0);
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let c = cluster(1, 1, 2);
        let state = c.state();
        let q = Arc::clone(&state.groups[0].queue);
        let _first = go(q.admit(&state, 0, any(), 2));
        let _a = wait(q.admit(&state, 0, any(), 2));
        let _b = wait(q.admit(&state, 0, any(), 2));
        assert!(matches!(q.admit(&state, 0, any(), 2), Admit::Full));
        assert_eq!(q.figures().refused_total, 1);
        assert_eq!(q.figures().length, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_that_times_out_leaves_the_queue_and_one_granted_later_is_served() {
        let c = cluster(1, 1, 0);
        let state = c.state();
        let q = Arc::clone(&state.groups[0].queue);
        let first = go(q.admit(&state, 0, any(), 0));
        let mut w = wait(q.admit(&state, 0, any(), 0));
        let timed_out = tokio::time::timeout(Duration::from_secs(2), w.granted()).await;
        assert!(timed_out.is_err());
        drop(w);
        assert!(q.is_empty());
        let mut w = wait(q.admit(&state, 0, any(), 0));
        let release = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            drop(first);
        };
        let (grant, ()) = tokio::join!(
            tokio::time::timeout(Duration::from_secs(2), w.granted()),
            release
        );
        let grant = grant.expect("granted before the timeout");
        assert_eq!(grant.index, 0);
        q.record_wait(w.since().elapsed());
        let f = q.figures();
        assert_eq!(f.wait_p50, Some(Duration::from_millis(500)));
    }

    #[test]
    fn percentiles_are_over_the_recorded_waits() {
        let q = GroupQueue::default();
        assert_eq!(q.figures().wait_p50, None);
        for ms in 1..=100 {
            q.record_wait(Duration::from_millis(ms));
        }
        let f = q.figures();
        assert_eq!(f.wait_p50, Some(Duration::from_millis(50)));
        assert_eq!(f.wait_p99, Some(Duration::from_millis(99)));
    }
}
