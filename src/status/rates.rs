//! Request and byte rates from two consecutive scrapes of one node.
//!
//! Rates are the difference of the node's lifetime counters (`Total
//! Accesses`, `Total kBytes`, nginx `requests`) over the time between the
//! scrapes. Apache's `ReqPerSec` line is not used: it is the average since
//! the server started, not the current rate.
//!
//! A rate is only given when it is honest: both scrapes carry the counter,
//! time went forward, and the node did not restart in between. There is
//! never a negative rate.

use super::StatusReport;
use std::time::{Duration, Instant};

/// How far the node's uptime may lag our own clock between two scrapes
/// (whole-second uptimes, network delays) before we call it a restart.
const UPTIME_SLACK: Duration = Duration::from_secs(5);

/// One scrape: when its response arrived and what it said.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub at: Instant,
    pub report: StatusReport,
}

/// Per-second rates between two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub requests_per_second: f64,
    /// `None` when the pages carry no byte counter (nginx, Apache without
    /// ExtendedStatus).
    pub bytes_per_second: Option<f64>,
}

/// Rates from `prev` to `cur`, or `None` when they cannot be computed
/// honestly: no request counter, no time elapsed, or a restart in between.
pub fn between(prev: &Sample, cur: &Sample) -> Option<Rates> {
    let elapsed = cur.at.checked_duration_since(prev.at)?;
    if elapsed.is_zero()
        || restarted(&prev.report, &cur.report)
        || uptime_lagged(&prev.report, &cur.report, elapsed)
    {
        return None;
    }
    let seconds = elapsed.as_secs_f64();
    let per_second = |before: Option<u64>, after: Option<u64>| {
        let delta = after?.checked_sub(before?)?;
        Some(delta as f64 / seconds)
    };
    Some(Rates {
        requests_per_second: per_second(prev.report.total_accesses, cur.report.total_accesses)?,
        bytes_per_second: per_second(prev.report.total_bytes(), cur.report.total_bytes()),
    })
}

/// Whether the node restarted (or was replaced) between two reports: other
/// software, a generation or the restart time changed (or appeared or
/// vanished), uptime went back, a counter went down, or the kind's own
/// rules ([`super::StatusPage::restarted`]) say so.
///
/// A counter going down is always taken as a restart; on Apache it can also
/// happen when a process slot is recycled, and either way no rate spans it.
/// `RestartTime` is printed in local time, so a daylight-saving switch looks
/// like a restart once: one rate is skipped.
pub fn restarted(prev: &StatusReport, cur: &StatusReport) -> bool {
    prev.kind != cur.kind
        || prev.config_generation != cur.config_generation
        || prev.mpm_generation != cur.mpm_generation
        || prev.restart_time != cur.restart_time
        || went_down(prev.uptime_seconds, cur.uptime_seconds)
        || went_down(prev.total_accesses, cur.total_accesses)
        || went_down(prev.total_kbytes, cur.total_kbytes)
        || cur.kind.page().restarted(prev, cur)
}

/// Whether a counter both reports carry is lower in the second.
pub fn went_down(before: Option<u64>, after: Option<u64>) -> bool {
    matches!((before, after), (Some(before), Some(after)) if after < before)
}

/// The node's uptime grew clearly less than the time between the scrapes:
/// it restarted after the first one, even if its counters are higher now.
fn uptime_lagged(prev: &StatusReport, cur: &StatusReport, elapsed: Duration) -> bool {
    match (prev.uptime_seconds, cur.uptime_seconds) {
        (Some(before), Some(after)) => {
            let grew = Duration::from_secs(after.saturating_sub(before));
            grew.saturating_add(UPTIME_SLACK) < elapsed
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(accesses: u64, kbytes: u64, uptime: u64) -> StatusReport {
        let mut r = StatusReport::new(crate::status::apache::KIND);
        r.total_accesses = Some(accesses);
        r.total_kbytes = Some(kbytes);
        r.uptime_seconds = Some(uptime);
        r.config_generation = Some(1);
        r
    }

    fn pair(prev: StatusReport, cur: StatusReport, secs: u64) -> (Sample, Sample) {
        let at = Instant::now();
        let cur_at = at + Duration::from_secs(secs);
        (
            Sample { at, report: prev },
            Sample {
                at: cur_at,
                report: cur,
            },
        )
    }

    #[test]
    fn rates_are_counter_differences_over_time() {
        let (a, b) = pair(report(100, 10, 50), report(300, 30, 60), 10);
        let rates = between(&a, &b).unwrap();
        assert_eq!(rates.requests_per_second, 20.0);
        assert_eq!(rates.bytes_per_second, Some(2048.0));
    }

    #[test]
    fn no_rate_without_time_or_counters() {
        let (a, b) = pair(report(1, 1, 5), report(2, 2, 5), 0);
        assert_eq!(between(&a, &b), None);
        assert_eq!(between(&b, &a), None, "time went backwards");
        let mut no_counter = report(2, 2, 6);
        no_counter.total_accesses = None;
        let (a, b) = pair(report(1, 1, 5), no_counter, 1);
        assert_eq!(between(&a, &b), None);
    }

    #[test]
    fn bytes_are_optional() {
        let mut prev = report(1, 1, 5);
        prev.total_kbytes = None;
        let (a, b) = pair(prev, report(11, 2, 6), 1);
        assert_eq!(
            between(&a, &b),
            Some(Rates {
                requests_per_second: 10.0,
                bytes_per_second: None
            })
        );
    }

    #[test]
    fn restarts_give_no_rate() {
        let base = report(100, 10, 50);
        let mut regenerated = report(200, 20, 60);
        regenerated.config_generation = Some(2);
        let mut new_restart_time = report(200, 20, 60);
        new_restart_time.restart_time = Some("later".into());
        let mut earlier = base.clone();
        earlier.restart_time = Some("earlier".into());
        let mut no_generation = base.clone();
        no_generation.config_generation = None;
        let cases = [
            ("generation appeared", no_generation, report(200, 20, 60)),
            ("uptime went back", base.clone(), report(200, 20, 3)),
            ("accesses went down", base.clone(), report(50, 20, 60)),
            ("kbytes went down", base.clone(), report(200, 5, 60)),
            ("generation changed", base.clone(), regenerated),
            ("restart time changed", earlier, new_restart_time),
        ];
        for (why, prev, cur) in cases {
            assert!(restarted(&prev, &cur), "{why}");
            let (a, b) = pair(prev, cur, 10);
            assert_eq!(between(&a, &b), None, "{why}");
        }
    }

    #[test]
    fn uptime_lagging_the_clock_is_a_restart() {
        // 100 s between scrapes but the node only aged 30 s: it restarted.
        let (a, b) = pair(report(100, 10, 50), report(5000, 500, 80), 100);
        assert!(!restarted(&a.report, &b.report));
        assert_eq!(between(&a, &b), None);
        // Whole-second rounding is not a restart.
        let (a, b) = pair(report(100, 10, 50), report(200, 20, 59), 10);
        assert!(between(&a, &b).is_some());
    }

    #[test]
    fn nginx_counters_going_down_is_a_restart() {
        let nginx = |requests| {
            crate::status::nginx::parse(&format!(
                "Active connections: 1\nserver accepts handled requests\n 9 9 {requests}\nReading: 0 Writing: 1 Waiting: 0\n"
            ))
            .unwrap()
        };
        assert!(!restarted(&nginx(10), &nginx(12)));
        assert!(restarted(&nginx(12), &nginx(10)));
        let (a, b) = pair(nginx(10), nginx(40), 3);
        assert_eq!(between(&a, &b).map(|r| r.requests_per_second), Some(10.0));
    }
}
