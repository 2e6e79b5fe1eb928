//! A lock-free count of events over the last minute, in one-second slots.
//!
//! Used for each node's share of this proxy's requests over the last minute:
//! the proxy adds on every request (one relaxed atomic add in the common
//! case), the admin side sums on render.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::clock;

const SLOTS: usize = 60;

#[derive(Debug)]
pub struct RecentCounter {
    origin: Instant,
    /// Each slot packs (second << 32) | count, so a slot from an older
    /// minute is recognised and restarted instead of summed.
    slots: [AtomicU64; SLOTS],
}

impl Default for RecentCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl RecentCounter {
    pub fn new() -> RecentCounter {
        RecentCounter {
            origin: clock::now(),
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.duration_since(self.origin).as_secs() & 0xffff_ffff
    }

    pub fn add(&self, n: u32) {
        self.add_at(clock::now(), n)
    }

    fn add_at(&self, now: Instant, n: u32) {
        let sec = self.second(now);
        let slot = &self.slots[(sec % SLOTS as u64) as usize];
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            let next = if cur >> 32 == sec {
                cur.saturating_add(u64::from(n))
                    .min((sec << 32) | 0xffff_ffff)
            } else {
                (sec << 32) | u64::from(n)
            };
            match slot.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Events in the last 60 seconds (the current second included).
    pub fn sum(&self) -> u64 {
        self.sum_at(clock::now())
    }

    fn sum_at(&self, now: Instant) -> u64 {
        let sec = self.second(now);
        self.slots
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|v| sec.wrapping_sub(v >> 32) < SLOTS as u64)
            .map(|v| v & 0xffff_ffff)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counts_within_a_minute_and_forgets_older() {
        let c = RecentCounter::new();
        let t0 = c.origin;
        c.add_at(t0, 3);
        c.add_at(t0 + Duration::from_secs(10), 2);
        assert_eq!(c.sum_at(t0 + Duration::from_secs(10)), 5);
        assert_eq!(c.sum_at(t0 + Duration::from_secs(59)), 5);
        // second 0 has left the window, second 10 has not
        assert_eq!(c.sum_at(t0 + Duration::from_secs(61)), 2);
        // the slot of second 0 is reused by second 60 and restarts
        c.add_at(t0 + Duration::from_secs(60), 1);
        assert_eq!(c.sum_at(t0 + Duration::from_secs(60)), 3);
        assert_eq!(c.sum_at(t0 + Duration::from_secs(200)), 0);
    }
}
