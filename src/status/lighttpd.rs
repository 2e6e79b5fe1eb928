//! Example kind, compiled in unit tests only (see CONTRIBUTING.md): lighttpd
//! `mod_status` `?auto`, a handful of `Key: value` lines:
//!
//! ```text
//! Total Accesses: 1234
//! Total kBytes: 5678
//! Uptime: 3600
//! BusyServers: 3
//! IdleServers: 125
//! ```
//!
//! `BusyServers` are the connections being served, `IdleServers` the rest
//! of `server.max-connections`, so busy + idle is the capacity. It shows
//! everything a kind file holds: the name, recognising, parsing into the
//! common report, and a capacity rule of its own; rates come from the
//! common `total_accesses` / `total_kbytes`.

use super::{parse_count, ParseError, ServerKind, StatusPage, StatusReport};

/// `status_kind = "lighttpd"`.
pub const KIND: ServerKind = ServerKind::new(&Lighttpd);

pub struct Lighttpd;

impl StatusPage for Lighttpd {
    fn name(&self) -> &'static str {
        "lighttpd"
    }

    fn recognise(&self, text: &str) -> bool {
        text.lines().any(|l| l.starts_with("BusyServers:"))
    }

    fn parse(&self, text: &str) -> Result<StatusReport, ParseError> {
        let mut report = StatusReport::new(KIND);
        let mut busy = None;
        for (index, line) in text.lines().enumerate() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            let n = index + 1;
            match key {
                "Total Accesses" => report.total_accesses = Some(parse_count(n, key, value)?),
                "Total kBytes" => report.total_kbytes = Some(parse_count(n, key, value)?),
                "Uptime" => report.uptime_seconds = Some(parse_count(n, key, value)?),
                "BusyServers" => busy = Some(parse_count(n, key, value)?),
                "IdleServers" => report.idle_workers = Some(parse_count(n, key, value)?),
                _ => {}
            }
        }
        report.busy_workers = busy.ok_or(ParseError::Missing("BusyServers"))?;
        Ok(report)
    }

    /// Busy + idle is `server.max-connections`.
    fn capacity(&self, report: &StatusReport, configured_max_workers: Option<u32>) -> Option<u32> {
        report
            .idle_workers
            .map(|idle| idle.saturating_add(report.busy_workers))
            .or(configured_max_workers)
            .filter(|&n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use crate::config::StatusKind;
    use crate::status::rates::{self, Sample};
    use crate::status::{parse, ServerKind};

    const PAGE: &str = "Total Accesses: 100\nTotal kBytes: 20\nUptime: 50\nBusyServers: 3\nIdleServers: 125\n";

    #[test]
    fn auto_detects_it_and_the_common_model_works() {
        let r = parse(None, PAGE.as_bytes()).expect("a lighttpd page");
        assert_eq!(r.kind, super::KIND);
        assert_eq!((r.busy_workers, r.capacity(None)), (3, Some(128)));
        let later = PAGE.replace("100", "300").replace("50", "60");
        let now = Instant::now();
        let (a, b) = (
            Sample { at: now, report: r },
            Sample {
                at: now + Duration::from_secs(10),
                report: parse(None, later.as_bytes()).expect("a lighttpd page"),
            },
        );
        assert_eq!(rates::between(&a, &b).map(|r| r.requests_per_second), Some(20.0));
    }

    #[test]
    fn the_config_names_it_and_errors_list_it() {
        assert_eq!(ServerKind::named("lighttpd"), Some(super::KIND));
        let text = |kind: &str| {
            format!(
                "[[group]]\nname = \"web\"\n[[group.node]]\nname = \"a\"\n\
                 address = \"127.0.0.1:1\"\nstatus_kind = \"{kind}\"\n"
            )
        };
        let config = crate::config::parse(&text("lighttpd"), Path::new("<test>")).expect("valid");
        assert_eq!(
            config.groups[0].nodes[0].status_kind,
            StatusKind::Named(super::KIND)
        );
        let err = crate::config::parse(&text("iis"), Path::new("<test>"))
            .expect_err("unknown kind")
            .to_string();
        assert!(
            err.contains("expected \"auto\", \"apache\", \"nginx\" or \"lighttpd\""),
            "{err}"
        );
        // a configured kind that is not the page's is named
        let err = parse(Some(crate::status::nginx::KIND), PAGE.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected an nginx status page, got an lighttpd one (check the node's status kind)"
        );
    }
}
