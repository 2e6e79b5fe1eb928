//! How many requests this proxy may have at a node at once (its limit), and
//! whether one more fits: the arithmetic, in one place.
//!
//! A node that counts its workers on its status page (Apache's scoreboard:
//! `BusyWorkers`, `IdleWorkers`, the slots) can take as many requests at
//! once as it has workers, less those held by traffic this proxy does not
//! send (other clients, other webcluster instances, and the worker the
//! status request itself takes, which stays the scraper's). The page says
//! how many workers were busy and how many idle when it was made; this
//! proxy knows how many of them it held then (its requests in flight and, on
//! a node that holds a worker per connection, its idle pooled connections).
//! So
//!
//! ```text
//! others = max(0, busy - status - held_at_scrape)
//! free   = max(0, capacity - busy)
//! limit  = capacity - status            if others == 0  (the node is this proxy's)
//!        = held_at_scrape + free / 2    if others > 0 and free > 0
//!                                          (rounded up while requests wait
//!                                          in this proxy's queue, down if not)
//!        = held_at_scrape - max(1, ceil(held_at_scrape / 8))
//!                                       if others > 0, free == 0 and
//!                                          held_at_scrape > others
//!        = held_at_scrape               if others > 0, free == 0 otherwise
//! capped by max_conns,
//! ```
//!
//! where `status` is the worker the status request itself takes: 1 when
//! the page is read over the scraper's own connection, which stays the
//! scraper's (its kept-open connection holds it between scrapes on a node
//! where a connection holds a worker), since the next status read needs one
//! and a status page that cannot be read holds the node back; lent to
//! visitors, it could be taken by traffic that is not this proxy's for as
//! long as that traffic lasts. It is 0 when the page is read over one of
//! this proxy's own connections to the node (`cluster::lend`: its requests
//! there are short, so one comes back within milliseconds): that worker is
//! one this proxy holds, counted in `held_at_scrape`, and none is set
//! aside. It is kept apart from the subtraction: a page made before this
//! proxy's requests reached the node shows fewer busy workers than this
//! proxy holds, and must not hide it.
//!
//! The limit bounds what this proxy holds *now* (requests in flight, plus
//! idle pooled connections where a connection holds a worker), so a request
//! that ended since the scrape gives its worker back and one that started
//! took one.
//!
//! **Shared nodes.** When others hold workers, they may be clients that
//! come and go or other webcluster instances reading the same page at
//! other moments. Each instance that took all the free workers it saw
//! would overfill the node by as many (and for good: a connection waiting
//! in the node's backlog does not show on its page, so each instance would
//! go on counting it as its own worker). So an instance takes half of the
//! free workers it sees: two instances that read the same free workers
//! together take no more than there are; the next scrape shows what is
//! left, and each takes half again (an instance alone gets all but one
//! within a few scrapes). The odd one is taken while requests wait for it
//! in the queue, so that the last free worker of a node is used (two
//! instances that both want it and read the same page overfill the node by
//! one until the next page, seen full, makes the one holding more give it
//! back). A full page makes an instance that holds more than all the others
//! together give back an eighth of it, at least one (idle connections over
//! the limit are closed): taking free workers in equal halves and giving
//! back in proportion is TCP's additive increase, multiplicative decrease,
//! so instances that want more than there is end up with equal shares,
//! whoever came first, and an overfilled node (a request in its backlog is
//! counted by the instance that sent it, not on the page) loses the extra.
//! While a group's requests wait in its queue, the scraper reads its nodes'
//! pages every 100 ms instead of every `scrape_interval`, so that the
//! shares follow the load within a fraction of a second.
//!
//! **A page gone stale** (not read for `stale_after` intervals: the node's
//! status page times out under load, or was taken away) still bounds the
//! node by the last page read: the node has no more workers than it showed,
//! and nothing newer says that others freed any. Dropping the limit then
//! would send every queued request to the node at once, into its accept
//! backlog, at the moment it is busiest. The limit is at least one while
//! the page is stale, so that a node whose page stopped answering still
//! serves (a share of nothing seen long ago is not a reason to starve it).
//! For a page that does not count workers (nginx `stub_status`), or no page
//! yet, the limit is the configured `max_conns`, or none.

/// What a fresh status page says of a node's workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageWorkers {
    /// Workers the node has (scoreboard slots, or the configured
    /// `max_workers`).
    pub capacity: u32,
    /// Workers busy when the page was made (the status request's own
    /// included).
    pub busy: u32,
    /// Workers of `busy` that are the status request's and kept for the
    /// scraper (0 when the page was read over one of this proxy's own
    /// connections).
    pub status: u32,
    /// What this proxy held of the node when the page was read: requests in
    /// flight, plus idle pooled connections where each holds a worker.
    pub held_at_scrape: u64,
    /// Requests wait in this proxy's queue for the node's group now.
    pub wanting: bool,
    /// The page is older than `stale_after` intervals.
    pub stale: bool,
}

/// The limit of concurrent requests from this proxy to a node: None when
/// there is none.
pub fn limit(page: Option<PageWorkers>, max_conns: Option<u32>) -> Option<u32> {
    let from_page = page.map(|p| {
        let held = u32::try_from(p.held_at_scrape).unwrap_or(u32::MAX);
        let others = others(&p);
        let own = p.capacity.saturating_sub(p.status);
        if others == 0 {
            return own;
        }
        // Shared: half of the free workers (the odd one too while
        // requests wait for it); when there are none, an eighth back while
        // holding more than all the others together.
        let free = p.capacity.saturating_sub(p.busy);
        let shared = match free {
            0 if held > others => held.saturating_sub(held.div_ceil(8).max(1)),
            0 => held,
            _ if p.wanting => held.saturating_add(free.div_ceil(2)),
            _ => held.saturating_add(free / 2),
        };
        shared.min(own)
    });
    // A stale page keeps its limit, but never shuts the node out.
    let from_page = match (from_page, page) {
        (Some(l), Some(p)) if p.stale => Some(l.max(1)),
        (l, _) => l,
    };
    match (from_page, max_conns) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether the limit of `page` depends on its `wanting` (others hold
/// workers and some are free: the odd one is taken only while requests
/// wait), so that it is found out only then.
pub fn depends_on_wanting(p: &PageWorkers) -> bool {
    others(p) > 0 && p.capacity > p.busy
}

/// Workers the page shows busy with traffic that is not this proxy's
/// (the status request's aside).
fn others(p: &PageWorkers) -> u32 {
    let held = u32::try_from(p.held_at_scrape).unwrap_or(u32::MAX);
    p.busy.saturating_sub(p.status).saturating_sub(held)
}

/// Whether one more request fits under `limit`, with `inflight` requests at
/// the node now and `idle` pooled connections to it that each hold a worker
/// (0 where a connection holds none). A request reuses an idle connection
/// when there is one, so it then takes no further worker: what this proxy
/// holds (`inflight + idle`) stays the same.
pub fn has_room(limit: Option<u32>, inflight: u64, idle: u64) -> bool {
    match limit {
        None => true,
        Some(l) => {
            let l = u64::from(l);
            inflight < l && (idle > 0 || inflight + idle < l)
        }
    }
}

/// Whether what this proxy holds of a node (`inflight + idle`) is within
/// `limit`: with the status read's own connection counted in `inflight`,
/// whether the node has room for it; with the scraper's worker set aside
/// by the limit, whether that worker is free for the scraper's own
/// connection.
pub fn within(limit: Option<u32>, inflight: u64, idle: u64) -> bool {
    limit.is_none_or(|l| inflight + idle <= u64::from(l))
}

/// Whether a connection to a node that holds a worker per connection may be
/// kept idle in the pool after its request: what this proxy then holds
/// (`inflight` other requests, `idle` connections already pooled, and this
/// one) stays within the limit, so a kept connection never holds a worker
/// that a request would have to wait for.
pub fn may_keep_idle(limit: Option<u32>, inflight: u64, idle: u64) -> bool {
    match limit {
        None => true,
        Some(l) => inflight + idle < u64::from(l),
    }
}

/// How many pooled connections to close so that what this proxy holds
/// (`inflight + idle`) is back within `limit` (a scrape showed fewer free
/// workers than before).
pub fn idle_over(limit: Option<u32>, inflight: u64, idle: u64) -> u64 {
    match limit {
        None => 0,
        Some(l) => (inflight + idle).saturating_sub(u64::from(l)).min(idle),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page with the status request's worker among the `busy`.
    fn page(capacity: u32, busy: u32, held_at_scrape: u64) -> Option<PageWorkers> {
        Some(PageWorkers {
            capacity,
            busy: busy + 1,
            status: 1,
            held_at_scrape,
            wanting: false,
            stale: false,
        })
    }

    /// The page with requests waiting in this proxy's queue.
    fn wanting(page: Option<PageWorkers>) -> Option<PageWorkers> {
        page.map(|p| PageWorkers { wanting: true, ..p })
    }

    /// The page gone stale.
    fn stale(page: Option<PageWorkers>) -> Option<PageWorkers> {
        page.map(|p| PageWorkers { stale: true, ..p })
    }

    #[test]
    fn the_limit_is_the_workers_not_held_by_others_capped_by_max_conns() {
        // (page, max_conns, limit)
        let table = [
            // an idle node of 8: all but the status request's
            (page(8, 0, 0), None, Some(7)),
            // 5 busy besides the status request, all of them this proxy's
            (page(8, 5, 5), None, Some(7)),
            // 5 busy, 2 of them this proxy's: 3 held by others, 2 free
            // (the status request's worker aside): half of those
            (page(8, 5, 2), None, Some(3)),
            (page(16, 8, 0), None, Some(3)),
            (page(16, 4, 2), None, Some(7)),
            // one free worker shared: not taken (another instance that
            // read the same page would take it too)
            (page(8, 6, 3), None, Some(3)),
            // hidden load on every other worker: none
            (page(8, 7, 0), None, Some(0)),
            // full, shared: one back (the node may be overfilled: a
            // connection in its backlog is not on its page)
            (page(16, 15, 9), None, Some(7)),
            (page(32, 31, 16), None, Some(14)),
            // ... unless it holds no more than the others together: it
            // keeps what it has (hidden load takes 14 of 16 here)
            (page(16, 15, 1), None, Some(1)),
            (page(16, 15, 7), None, Some(7)),
            // while requests wait here, the odd free worker is taken too
            (wanting(page(8, 6, 3)), None, Some(4)),
            (wanting(page(16, 4, 2)), None, Some(8)),
            // a 3-worker node, two instances (each scraper holds one):
            // the one with requests waiting gets the last worker
            (wanting(page(3, 1, 0)), None, Some(1)),
            (page(3, 1, 0), None, Some(0)),
            // the page was made before this proxy's requests got there:
            // the status request's worker still counts
            (page(8, 1, 4), None, Some(7)),
            (page(3, 0, 2), None, Some(2)),
            // more busy than slots (a graceful restart): none, no underflow
            (page(8, 12, 0), None, Some(0)),
            // max_conns caps it
            (page(8, 0, 0), Some(3), Some(3)),
            (page(8, 4, 0), Some(3), Some(1)),
            // a stale page keeps its limit (not none: the queue would
            // empty into the node's backlog) ...
            (stale(page(8, 0, 0)), None, Some(7)),
            (stale(page(16, 4, 2)), None, Some(7)),
            (stale(page(8, 4, 0)), Some(3), Some(1)),
            // ... but leaves at least one request to a node it shut out
            (stale(page(8, 7, 0)), None, Some(1)),
            (stale(page(8, 12, 0)), None, Some(1)),
            // no page (nginx, not scraped yet): max_conns or none
            (None, Some(10), Some(10)),
            (None, None, None),
            // a held count beyond u32 saturates
            (page(4, 2, u64::MAX), None, Some(3)),
        ];
        for (i, (page, max, want)) in table.into_iter().enumerate() {
            assert_eq!(
                limit(page, max),
                want,
                "row {i}: {page:?} max_conns {max:?}"
            );
            // Where the limit does not depend on whether requests wait,
            // it is the same either way.
            if let Some(p) = page.filter(|p| !depends_on_wanting(p)) {
                let flipped = PageWorkers {
                    wanting: !p.wanting,
                    ..p
                };
                assert_eq!(limit(Some(flipped), max), want, "row {i}, flipped");
            }
        }
    }

    #[test]
    fn room_counts_idle_connections_that_a_request_would_reuse() {
        // (limit, inflight, idle, room)
        let table = [
            (None, 1000, 1000, true),
            (Some(0), 0, 0, false),
            (Some(4), 3, 0, true),
            (Some(4), 4, 0, false),
            // 2 in flight and 2 idle hold all 4 workers, but the request
            // takes an idle connection: no new worker
            (Some(4), 2, 2, true),
            // 4 in flight: at the limit whatever the pool holds
            (Some(4), 4, 1, false),
            // no idle connection to take, and 3 + 1 held already
            (Some(4), 3, 1, true),
            (Some(4), 1, 0, true),
        ];
        for (i, (l, inflight, idle, want)) in table.into_iter().enumerate() {
            assert_eq!(has_room(l, inflight, idle), want, "row {i}");
        }
    }

    #[test]
    fn what_is_held_is_within_the_limit_up_to_it() {
        // (limit, inflight, idle, within)
        let table = [
            (None, 1000, 1000, true),
            (Some(0), 0, 0, true),
            (Some(0), 1, 0, false),
            (Some(4), 2, 2, true),
            (Some(4), 4, 0, true),
            (Some(4), 3, 2, false),
            (Some(4), 0, 5, false),
        ];
        for (i, (l, inflight, idle, want)) in table.into_iter().enumerate() {
            assert_eq!(within(l, inflight, idle), want, "row {i}");
        }
    }

    #[test]
    fn a_connection_is_kept_idle_only_within_the_limit() {
        // (limit, other requests in flight, idle, keep)
        let table = [
            (None, 50, 50, true),
            (Some(4), 0, 0, true),
            (Some(4), 2, 1, true),
            (Some(4), 3, 0, true),
            (Some(4), 3, 1, false),
            (Some(4), 4, 0, false),
            (Some(0), 0, 0, false),
        ];
        for (i, (l, inflight, idle, want)) in table.into_iter().enumerate() {
            assert_eq!(may_keep_idle(l, inflight, idle), want, "row {i}");
        }
    }

    #[test]
    fn idle_connections_over_a_lowered_limit_are_closed() {
        assert_eq!(idle_over(None, 9, 9), 0);
        assert_eq!(idle_over(Some(4), 2, 2), 0);
        assert_eq!(idle_over(Some(3), 2, 2), 1);
        // in-flight requests over the limit are not closed: only the idle
        assert_eq!(idle_over(Some(1), 4, 2), 2);
    }
}
