//! Cluster totals in Apache mod_status `?auto` form (served at
//! `/server-status?auto` on the admin listener).
//!
//! Owns only the text format: tools that already read Apache's machine
//! readable status (Munin, Zabbix templates, apache_exporter) can point at
//! the proxy and get the whole cluster as if it were one big Apache. The
//! layout follows a real Apache 2.4 page (see
//! `apache24-event-auto.txt` in the reference samples): a keyless first line
//! with the server name, then `Key: value` lines in Apache's order, then
//! keys of our own (`Cluster*`) at the end, which such tools ignore.
//!
//! `Total Accesses` and `Total kBytes` are counters and never go down:
//! they are the nodes' own counters accumulated while this proxy watched
//! them (each node's positive deltas between scrapes, a restarted node's
//! new value counting as its delta), plus what nodes removed by a reload
//! had accumulated. A node going down or away therefore does not take its
//! requests out of the total (apache_exporter would read a drop as a
//! counter reset and graph a false spike).
//!
//! `ServerVersion` is `webcluster/<version> (cluster of N nodes)`: it does
//! not claim to be an Apache version it is not (the nodes may run several,
//! or nginx). apache_exporter keeps the whole string as the `version` label
//! of `apache_info`, so the configured node count is kept there (it changes
//! only on a reload, so the label does not churn), and reads the number
//! after the `/` into `apache_version` (0.01 for 0.1.0: webcluster's, not
//! an Apache's). No `CPULoad` line: the proxy cannot give one truthfully
//! (apache_exporter then shows `apache_cpuload 0` by its own default).
//!
//! Numbers: integers print plain; fractions print like C's `%g` with six
//! significant digits and no exponent, trailing zeros dropped (`15035.7`,
//! `409.605`, `6158680`). Apache (through APR) drops the leading zero of
//! fractions (`.761456`); we keep it (`0.761456`): every parser that
//! accepts Apache's form accepts this one too, while some (regex-based
//! templates expecting `\d+\.\d+`, JSON-minded converters) reject a bare
//! leading dot.

use std::fmt::Write as _;

use crate::cluster::snapshot::{ClusterSnapshot, NodeState};

/// Significant digits of fractional values, as C's `%g`.
const SIGNIFICANT: i32 = 6;

/// Render the cluster totals as an Apache `?auto` page (ends with a newline).
pub fn render(s: &ClusterSnapshot) -> String {
    let t = &s.totals;
    let uptime = whole_seconds(s.uptime_seconds);
    let scoreboard = cluster_scoreboard(s);

    // In Apache, ReqPerSec and BytesPerSec are lifetime averages (counters
    // divided by uptime). Here they are the cluster's CURRENT rates: the sum
    // of each fresh node's rate from its last two scrapes. That is what an
    // operator graphing these lines wants from a cluster whose nodes restart
    // independently, but it is a different meaning under the same name.
    let rps = non_negative(t.requests_per_second);
    let bps = non_negative(t.bytes_per_second);
    // Same basis as the two lines above, so the three agree as in Apache;
    // with no traffic right now, the average of the accumulated counters;
    // 0 when there is neither (Apache omits the line then).
    let bytes_per_req = if rps > 0.0 {
        bps / rps
    } else if t.accesses_accumulated_total > 0 {
        t.bytes_accumulated_total as f64 / t.accesses_accumulated_total as f64
    } else {
        0.0
    };

    let mut out = String::with_capacity(512 + scoreboard.len());
    // Writing to a String cannot fail.
    let mut line = |key: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(out, "{key}: {value}");
    };
    line(
        "ServerVersion",
        &format!(
            "webcluster/{} (cluster of {} node{})",
            one_line(&s.version),
            t.nodes,
            if t.nodes == 1 { "" } else { "s" }
        ),
    );
    line("ServerMPM", &"cluster");
    line("ServerUptimeSeconds", &uptime);
    line("ServerUptime", &apache_uptime(uptime));
    line("Total Accesses", &t.accesses_accumulated_total);
    line("Total kBytes", &(t.bytes_accumulated_total / 1024));
    line("Uptime", &uptime);
    line("ReqPerSec", &fmt_g(rps));
    line("BytesPerSec", &fmt_g(bps));
    line("BytesPerReq", &fmt_g(bytes_per_req));
    line("BusyWorkers", &t.busy_workers);
    line("IdleWorkers", &t.idle_workers);
    // Apache always prints a Scoreboard; with no fresh Apache node up there
    // is none to show, and an empty value would only confuse parsers, so the
    // line is left out (as Apache leaves out lines it has no data for).
    if !scoreboard.is_empty() {
        line("Scoreboard", &scoreboard);
    }
    line("ClusterNodes", &t.nodes);
    line("ClusterNodesUp", &t.nodes_up);
    format!("webcluster\n{out}")
}

/// The scoreboards of the nodes that are up (so their status is fresh), in
/// group and node order. Only scoreboard letters pass (printable ASCII, no
/// spaces), so a node cannot break the line format.
///
/// Note: `BusyWorkers`/`IdleWorkers` come from the cluster totals, which sum
/// every node with a fresh status (a draining node with a fresh status
/// included), so the letters here need not add up to those figures, just as
/// they need not on a real Apache.
fn cluster_scoreboard(s: &ClusterSnapshot) -> String {
    s.groups
        .iter()
        .flat_map(|g| &g.nodes)
        .filter(|n| matches!(n.state, NodeState::Up | NodeState::Full))
        .filter_map(|n| n.scoreboard.as_deref())
        .flat_map(str::chars)
        .filter(char::is_ascii_graphic)
        .collect()
}

/// Apache's `ServerUptime` wording: `1 day 2 hours 3 minutes 4 seconds`,
/// zero units left out. Apache prints nothing at all for 0; we print
/// `0 seconds` so that every line has a value.
fn apache_uptime(seconds: u64) -> String {
    let units = [
        (seconds / 86_400, "day"),
        (seconds / 3600 % 24, "hour"),
        (seconds / 60 % 60, "minute"),
        (seconds % 60, "second"),
    ];
    let parts: Vec<String> = units
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n} {unit}{}", if *n == 1 { "" } else { "s" }))
        .collect();
    if parts.is_empty() {
        "0 seconds".to_string()
    } else {
        parts.join(" ")
    }
}

/// `%g`-like: six significant digits, no exponent, no trailing zeros,
/// leading `0.` kept. Non-finite values print as 0.
fn fmt_g(x: f64) -> String {
    if !x.is_finite() || x == 0.0 {
        return "0".to_string();
    }
    let magnitude = x.abs().log10().floor() as i32;
    let decimals = (SIGNIFICANT - 1 - magnitude).clamp(0, 20) as usize;
    let s = format!("{x:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" {
        "0".to_string()
    } else {
        s
    }
}

fn whole_seconds(seconds: f64) -> u64 {
    non_negative(seconds).floor() as u64
}

fn non_negative(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x
    } else {
        0.0
    }
}

/// Control characters (a newline would start a bogus key) become spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::sample;
    use std::collections::HashMap;

    /// Parse the way apache_exporter does: first line is the name, then
    /// `Key: value` lines.
    fn parse(text: &str) -> (String, Vec<(String, String)>) {
        assert!(text.ends_with('\n'), "ends with a newline");
        let mut lines = text.lines();
        let name = lines.next().expect("first line").to_string();
        let pairs = lines
            .map(|l| {
                let (k, v) = l
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("not `Key: value`: {l:?}"));
                assert!(!k.is_empty() && !v.is_empty(), "empty key or value: {l:?}");
                assert_eq!(v.trim(), v, "stray whitespace: {l:?}");
                (k.to_string(), v.to_string())
            })
            .collect();
        (name, pairs)
    }

    fn map(text: &str) -> HashMap<String, String> {
        let (_, pairs) = parse(text);
        let n = pairs.len();
        let m: HashMap<_, _> = pairs.into_iter().collect();
        assert_eq!(m.len(), n, "duplicate keys");
        m
    }

    fn num(m: &HashMap<String, String>, key: &str) -> f64 {
        m.get(key)
            .unwrap_or_else(|| panic!("missing {key}"))
            .parse()
            .unwrap_or_else(|e| panic!("{key}: {e}"))
    }

    #[test]
    fn format_mirrors_apache() {
        let s = sample::snapshot();
        let text = render(&s);
        let (name, pairs) = parse(&text);
        assert_eq!(name, "webcluster");
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "ServerVersion",
                "ServerMPM",
                "ServerUptimeSeconds",
                "ServerUptime",
                "Total Accesses",
                "Total kBytes",
                "Uptime",
                "ReqPerSec",
                "BytesPerSec",
                "BytesPerReq",
                "BusyWorkers",
                "IdleWorkers",
                "Scoreboard",
                "ClusterNodes",
                "ClusterNodesUp",
            ]
        );
        let m = map(&text);
        assert_eq!(m["ServerVersion"], "webcluster/0.1.0 (cluster of 6 nodes)");
        assert_eq!(m["ServerMPM"], "cluster");
        assert_eq!(m["ServerUptimeSeconds"], "93784");
        assert_eq!(m["Uptime"], "93784");
        assert_eq!(m["ServerUptime"], "1 day 2 hours 3 minutes 4 seconds");
    }

    /// The sample's fresh nodes (web-1, web-2, web-4) summed by hand in
    /// `sample.rs`: the expected figures are written out, not recomputed.
    #[test]
    fn totals_are_cluster_sums() {
        let s = sample::snapshot();
        let m = map(&render(&s));
        assert_eq!(m["BusyWorkers"], "19");
        assert_eq!(m["IdleWorkers"], "115");
        // accumulated, down nodes and a removed one included (sample.rs)
        assert_eq!(m["Total Accesses"], "1045561");
        assert_eq!(m["Total kBytes"], "19643"); // 20 114 432 / 1024
        assert!((num(&m, "ReqPerSec") - 15_054.1).abs() < 0.05, "{m:?}");
        assert!((num(&m, "BytesPerSec") - 6_180_081.6).abs() < 0.5, "{m:?}");
        // 6 180 081.6 / 15 054.1
        assert!((num(&m, "BytesPerReq") - 410.5248).abs() < 0.001, "{m:?}");
        assert_eq!(m["ClusterNodes"], "6");
        assert_eq!(m["ClusterNodesUp"], "2");
    }

    #[test]
    fn scoreboard_is_up_nodes_in_order() {
        let s = sample::snapshot();
        let m = map(&render(&s));
        let expect: String = s
            .groups
            .iter()
            .flat_map(|g| &g.nodes)
            .filter(|n| matches!(n.state, NodeState::Up | NodeState::Full))
            .filter_map(|n| n.scoreboard.clone())
            .collect();
        assert_eq!(m["Scoreboard"], expect);
        // web-1 (150 slots) then web-2 (150 slots); the draining web-4 is left out.
        assert_eq!(m["Scoreboard"].len(), 300);
        assert!(m["Scoreboard"][150..].starts_with("KKKKKKRRSWR"));
    }

    #[test]
    fn hostile_node_text_cannot_break_lines() {
        let mut s = sample::snapshot();
        s.groups[0].nodes[0].scoreboard = Some("_W\nBusyWorkers: 999\r\n_ K".to_string());
        s.version = "1.0\nServerMPM: evil".to_string();
        let text = render(&s);
        let m = map(&text); // panics on malformed or duplicate lines
        assert_eq!(m["BusyWorkers"], "19");
        assert!(m["Scoreboard"].starts_with("_WBusyWorkers:999_K"));
        assert_eq!(
            m["ServerVersion"],
            "webcluster/1.0 ServerMPM: evil (cluster of 6 nodes)"
        );
    }

    #[test]
    fn empty_cluster() {
        let mut s = sample::snapshot();
        s.groups.clear();
        s.totals = Default::default();
        s.uptime_seconds = 0.0;
        let text = render(&s);
        let m = map(&text);
        assert_eq!(m["BytesPerReq"], "0");
        assert_eq!(m["ReqPerSec"], "0");
        assert_eq!(m["ServerUptime"], "0 seconds");
        assert_eq!(m["ClusterNodes"], "0");
        assert!(!m.contains_key("Scoreboard"));
    }

    #[test]
    fn bytes_per_req_falls_back_to_counters_when_idle() {
        let mut s = sample::snapshot();
        s.totals.requests_per_second = 0.0;
        s.totals.bytes_per_second = 0.0;
        s.totals.accesses_accumulated_total = 4;
        s.totals.bytes_accumulated_total = 4098;
        let m = map(&render(&s));
        assert_eq!(m["BytesPerReq"], "1024.5");
        s.totals.requests_per_second = f64::NAN;
        s.totals.bytes_per_second = -1.0;
        s.uptime_seconds = f64::INFINITY;
        let m = map(&render(&s));
        assert_eq!(m["ReqPerSec"], "0");
        assert_eq!(m["BytesPerSec"], "0");
        assert_eq!(m["Uptime"], "0");
    }

    #[test]
    fn g_format() {
        assert_eq!(fmt_g(0.0), "0");
        assert_eq!(fmt_g(-0.0), "0");
        assert_eq!(fmt_g(30.0), "30");
        assert_eq!(fmt_g(15_035.7), "15035.7");
        assert_eq!(fmt_g(15_035.666_7), "15035.7");
        assert_eq!(fmt_g(6_158_680.0), "6158680");
        assert_eq!(fmt_g(9_017_120.4), "9017120");
        assert_eq!(fmt_g(409.604_9), "409.605");
        assert_eq!(fmt_g(1_604.266_6), "1604.27");
        assert_eq!(fmt_g(0.761_456), "0.761456");
        assert_eq!(fmt_g(0.5), "0.5");
        assert_eq!(fmt_g(69.333_333), "69.3333");
        assert_eq!(fmt_g(9.999_999_6), "10");
        assert_eq!(fmt_g(0.000_012_345_67), "0.0000123457");
        assert_eq!(fmt_g(f64::NAN), "0");
        assert_eq!(fmt_g(f64::INFINITY), "0");
        assert_eq!(fmt_g(-2.5), "-2.5");
    }

    #[test]
    fn uptime_words() {
        assert_eq!(apache_uptime(0), "0 seconds");
        assert_eq!(apache_uptime(1), "1 second");
        assert_eq!(apache_uptime(3), "3 seconds");
        assert_eq!(apache_uptime(60), "1 minute");
        assert_eq!(apache_uptime(3600 + 2), "1 hour 2 seconds");
        assert_eq!(
            apache_uptime(2 * 86_400 + 3 * 3600 + 4 * 60 + 5),
            "2 days 3 hours 4 minutes 5 seconds"
        );
    }
}
