//! The HTML status page of the admin listener (served at `/`).
//!
//! Owns only rendering: it turns a [`ClusterSnapshot`] into one
//! self-contained HTML document (inline CSS, no scripts, no external assets)
//! that refreshes itself every two seconds. Every piece of text that comes
//! from a node or from the config (names, versions, scoreboards, errors) goes
//! through maud's escaping; the only unescaped output is the static
//! stylesheet (`page.css`, next to this file). The small formatting helpers (bytes, durations,
//! percentages, UTC times) live at the end of this file with their tests.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::cluster::snapshot::{
    AffinitySnapshot, ClusterSnapshot, ContentSyncSnapshot, GroupSnapshot, HistoryPoint,
    NodeSnapshot, NodeState, QueueSnapshot, Totals,
};
use crate::cluster::stats::{HISTORY_POINTS, HISTORY_STEP};

/// Seconds between automatic reloads of the page.
const REFRESH_SECONDS: u32 = 2;

/// Scoreboard letters drawn at most (about five lines of the strip); the
/// rest is counted, not drawn. A trailing run of open slots (`.`) longer
/// than [`OPEN_TAIL_MIN`] is summarised as a count before this cap applies.
const SCOREBOARD_CAP: usize = 160;

/// A trailing run of `.` at least this long is shown as `+N open`.
const OPEN_TAIL_MIN: usize = 8;

/// Characters of the config hash shown on the page (the full hash is in the
/// tooltip and in `/status.json`).
const HASH_SHORT: usize = 12;

/// What each scoreboard letter means (Apache mod_status).
const SCOREBOARD_LEGEND: [(char, &str); 11] = [
    ('_', "waiting for connection"),
    ('S', "starting up"),
    ('R', "reading request"),
    ('W', "sending reply"),
    ('K', "keepalive (read)"),
    ('D', "DNS lookup"),
    ('C', "closing connection"),
    ('L', "logging"),
    ('G', "gracefully finishing"),
    ('I', "idle cleanup of worker"),
    ('.', "open slot with no current process"),
];

/// Render the whole status page.
pub fn render(s: &ClusterSnapshot) -> String {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content=(REFRESH_SECONDS);
                meta name="color-scheme" content="light dark";
                title { "webcluster status" }
                style { (PreEscaped(CSS)) }
            }
            body {
                (header(s))
                main {
                    @if let Some(err) = &s.config.last_reload_error {
                        div.alert role="alert" {
                            strong { "Last config reload failed: " }
                            span.mono { (err) }
                            div.sub {
                                "Still running the configuration loaded "
                                (fmt_utc(s.config.loaded_unix))
                                "."
                            }
                        }
                    }
                    (totals_cards(s))
                    @if s.groups.is_empty() {
                        p.empty { "No groups configured." }
                    }
                    @for g in &s.groups {
                        (group_section(g))
                    }
                    (super::dns::section(&s.dns, s.time_unix))
                    (super::tls::section(&s.tls))
                    (legend())
                }
                footer {
                    "webcluster " (s.version)
                    " · snapshot " (fmt_utc(s.time_unix))
                    " · refreshes every " (REFRESH_SECONDS) " s"
                }
            }
        }
    };
    page.into_string()
}

fn header(s: &ClusterSnapshot) -> Markup {
    html! {
        header.top {
            div {
                h1 { "webcluster status" }
                div.sub {
                    "webcluster " (s.version)
                    " · up " (human_duration(s.uptime_seconds))
                    " · " (fmt_utc(s.time_unix))
                    " · HTTP/2: " (s.visitors.http2_connections) " connections, "
                    (s.visitors.http2_streams) " streams"
                }
            }
            nav {
                a href="/status.json" { "status.json" }
                a href="/server-status?auto" { "server-status?auto" }
                a href="/metrics" { "metrics" }
            }
        }
    }
}

fn totals_cards(s: &ClusterSnapshot) -> Markup {
    let t = &s.totals;
    let c = &s.config;
    let reload_age = s.time_unix - c.loaded_unix;
    html! {
        section.cards aria-label="Cluster totals" {
            div.card {
                div.label { "Nodes up" }
                div.big {
                    (t.nodes_up) span.of { " / " (t.nodes) }
                }
                div.sub { (nodes_note(t)) }
            }
            div.card.wide {
                div.label title="Sums over the nodes with a fresh status" { "Workers" }
                div.big {
                    (t.busy_workers) span.of { " busy" }
                }
                (worker_bar(Some(t.busy_workers), Some(t.idle_workers), Some(t.capacity)))
                div.sub {
                    (t.idle_workers) " idle · " (t.capacity) " capacity"
                }
            }
            div.card {
                div.label { "Requests" }
                div.big { (human_count(t.requests_per_second)) span.of { " req/s" } }
                div.sub title="Sum of the nodes' own Total Accesses counters" {
                    (human_count(t.node_accesses_total as f64)) " served by nodes"
                }
            }
            div.card {
                div.label { "Traffic" }
                div.big { (human_bytes(t.bytes_per_second)) span.of { "/s" } }
                div.sub title="Sum of the nodes' own Total kBytes counters" {
                    (human_bytes(t.node_bytes_total as f64)) " sent by nodes"
                }
            }
            div.card {
                div.label { "In flight" }
                div.big { (t.inflight) }
                div.sub { (human_count(t.proxied_total as f64)) " proxied since start" }
            }
            div.card.wide {
                div.label { "Config" }
                div.big.mono title=(c.hash) { (short_hash(&c.hash)) }
                div.sub.mono.path { (c.path) }
                div.sub {
                    "loaded " (fmt_utc(c.loaded_unix))
                    " (" (human_duration(reload_age)) " ago)"
                }
                div.sub {
                    "reloads: " (c.reloads_ok) " ok · "
                    span.bad[c.reloads_failed > 0] { (c.reloads_failed) " failed" }
                }
            }
        }
    }
}

fn nodes_note(t: &Totals) -> String {
    let down = t.nodes.saturating_sub(t.nodes_up);
    if t.nodes == 0 {
        "no nodes".to_string()
    } else if down == 0 {
        "all up".to_string()
    } else {
        format!("{down} not up")
    }
}

fn group_section(g: &GroupSnapshot) -> Markup {
    let t = &g.totals;
    html! {
        section.group {
            div.group-head {
                h2 { (g.name) }
                span.tag title="Balancing method" { (g.balance) }
                span.gstat { strong { (t.nodes_up) " / " (t.nodes) } " up" }
                span.gstat {
                    strong { (t.busy_workers) } " busy · " (t.idle_workers) " idle · "
                    (t.capacity) " cap"
                }
                span.gstat { strong { (human_count(t.requests_per_second)) } " req/s" }
                span.gstat { strong { (human_bytes(t.bytes_per_second)) } "/s" }
                span.gstat { strong { (t.inflight) } " in flight" }
                (queue_stat(&g.queue))
            }
            div.scroll {
                table {
                    colgroup {
                        col.c-node;
                        col.c-uptime;
                        col.c-workers;
                        col.c-sb;
                        col.c-rps;
                        col.c-bps;
                        col.c-cpu;
                        col.c-share;
                        col.c-inflight;
                        col.c-errors;
                        col.c-answers;
                        col.c-rt;
                        col.c-bytes;
                        col.c-hist;
                        col.c-weight;
                        col.c-scrape;
                    }
                    thead {
                        tr {
                            th.first { "Node" }
                            th { "Uptime" }
                            th { "Workers" }
                            th title="Apache scoreboard, one letter per worker slot: see the legend below" {
                                a href="#legend" { "Scoreboard" }
                            }
                            th.num { "Req/s" }
                            th.num { "Bytes/s" }
                            th.num title="Apache CPULoad (percent, may exceed 100) and 1-minute load average" { "CPU" }
                            th.num title="Share of this group's requests sent by this proxy over the last minute" { "Share" }
                            th.num title="Requests this proxy has in flight to the node" { "In flight" }
                            th.num title="Requests that failed at the proxy: connection errors and timeouts to the node" { "Proxy errors" }
                            th.num title="The node's own answers with a 4xx or 5xx status, as the proxy passed them on" { "Node 4xx / 5xx" }
                            th.num title="Response time per request as the proxy measured it (received to answered): median and 99th percentile, bucketed" { "p50 / p99" }
                            th.num title="Request body bytes sent to the node / response body bytes of its answers, since start" { "Bytes in / out" }
                            th title="Last 5 minutes, a point every 5 s: requests per second sent by this proxy (blue) and busy workers (purple)" { "History" }
                            th.num title="Effective weight (after slow start) / configured weight" { "Weight" }
                            th { "Last scrape" }
                        }
                    }
                    tbody {
                        @if g.nodes.is_empty() {
                            tr { td.empty colspan="16" { "No nodes in this group." } }
                        }
                        @for n in &g.nodes {
                            (node_row(n))
                        }
                    }
                }
            }
            (queue_note(&g.queue))
            (sessions_note(&g.affinity))
            (content_sync_note(&g.content_sync))
        }
    }
}

/// In a group's head: requests waiting in its queue, and how long the
/// last ones waited.
fn queue_stat(q: &QueueSnapshot) -> Markup {
    let wait = |s: Option<f64>| s.map_or_else(|| "—".to_string(), human_short_duration);
    html! {
        span.gstat title="Requests waiting in the proxy for a node under its limit (no node had a free worker); the median and 99th percentile wait of the last 1024 that waited" {
            strong { (q.length) } " queued · wait "
            (wait(q.wait_p50_seconds)) " / " (wait(q.wait_p99_seconds))
        }
    }
}

/// Under a group's table: what its queue did since start, once it was used.
fn queue_note(q: &QueueSnapshot) -> Markup {
    if q.queued_total == 0 && q.refused_total == 0 {
        return html! {};
    }
    html! {
        p.gnote {
            strong { "Queue" }
            " (timeout " (human_short_duration(q.timeout_seconds))
            @if q.max_queue > 0 { ", at most " (q.max_queue) }
            "): " (q.queued_total) " requests waited · "
            (q.timeouts_total) " timed out (503) · "
            (q.refused_total) " refused, queue full (503) · "
            (q.abandoned_total) " left by their visitor · at most "
            (q.max_length) " at once"
        }
    }
}

/// Under a group's table: how its sessions were kept (affinity on).
fn sessions_note(a: &AffinitySnapshot) -> Markup {
    if matches!(a.mode.as_str(), "" | "off") {
        return html! {};
    }
    let sw = &a.switches_total;
    html! {
        p.gnote {
            strong { "Sessions" }
            " (" (a.mode) @if a.strict { ", strict" } "): "
            (a.session_requests_total) " requests of sessions · "
            (a.cookies_set_total) " cookies set · moved to another node: "
            (sw.down) " node down, " (sw.saturated) " node full, "
            (sw.draining) " draining"
            @if a.strict { " · " (a.strict_refusals_total) " refused (strict)" }
            @for n in &a.nodes {
                " · " (n.name) ": " (n.session_requests_total) " served, "
                (n.sessions_switched_total) " moved away"
            }
        }
    }
}

/// Under a group's table: 404 retries and writes to primary nodes.
fn content_sync_note(c: &ContentSyncSnapshot) -> Markup {
    if !c.retry_on_404 && c.primaries.is_empty() {
        return html! {};
    }
    html! {
        p.gnote {
            strong { "Content sync" } ": "
            @if c.retry_on_404 {
                (c.retry_on_404_total) " 404 answers retried on another node, "
                (c.retry_on_404_recovered_total) " found there"
            }
            @if c.retry_on_404 && !c.primaries.is_empty() { " · " }
            @if !c.primaries.is_empty() {
                "writes to the primary (" (c.primaries.join(", ")) "): "
                (c.primary_requests_total) " sent, "
                (c.primary_unavailable_total) " refused while it was unusable, "
                (c.primary_fallback_total) " sent elsewhere (fallback)"
            }
        }
    }
}

fn node_row(n: &NodeSnapshot) -> Markup {
    let (word, class) = state_word(n.state);
    let server = server_line(n);
    // Figures from a status that is no longer fresh are the last known
    // ones: greyed and dated, so none reads as current.
    let old = !n.status_fresh && n.busy_workers.is_some();
    let row_class = if old {
        format!("row {class} old")
    } else {
        format!("row {class}")
    };
    let st = &n.stats;
    html! {
        tr class=(row_class) data-node=(n.name) data-state=(word) {
            td.first {
                div.node-head {
                    span class=(format!("pill {class}")) { span.dot {} (word) }
                    strong.name { (n.name) }
                    @if n.backup { span.tag { "backup" } }
                    (crate::admin::api::badges(n))
                }
                div.sub.since {
                    (word) " for " (human_duration(st.state_seconds))
                    @if st.times_down > 0 {
                        " · down " (st.times_down) "×, "
                        (human_duration(st.downtime_seconds)) " in all"
                    }
                }
                div.sub.mono title=(format!("status: {}", n.status_url)) { (n.address) }
                @if let Some(server) = server {
                    div.sub.server title=(server) { (server) }
                }
                @if let Some(reason) = &n.down_reason {
                    div.reason { (reason) }
                }
            }
            td.nowrap.fig {
                @match n.node_uptime_seconds {
                    Some(up) => (human_duration(up as f64)),
                    None => span.muted { "—" },
                }
            }
            td.workers.fig title=(format!("balancer's estimate now: {:.1} busy", finite(n.estimated_busy))) {
                (worker_bar(n.busy_workers.map(u64::from), n.idle_workers.map(u64::from), n.capacity.map(u64::from)))
                @if n.busy_workers.is_some() || n.idle_workers.is_some() {
                    div.sub.nowrap { (worker_text(n)) }
                }
                @if let Some(limit) = n.limit {
                    div.sub.nowrap title="How many requests this proxy may have at the node at once: its free workers by its status page (less those others hold), at most max_conns; more wait in the group's queue. A stale page keeps the limit it gave (at least 1)." {
                        "limit " (limit) @if n.idle_pooled > 0 { " · " (n.idle_pooled) " idle conn." }
                    }
                }
                @if old {
                    div.sub.asof {
                        "as of "
                        (n.last_scrape_age_seconds.map_or("an unknown time".to_string(), human_age))
                    }
                }
            }
            td.fig { (scoreboard(n.scoreboard.as_deref())) }
            td.num.fig { (opt(n.requests_per_second.map(human_count))) }
            td.num.fig { (opt(n.bytes_per_second.map(|b| format!("{}/s", human_bytes(b))))) }
            td.num.fig {
                (opt(n.cpu_load.map(fmt_percent)))
                @if let Some(l) = n.load1 {
                    div.sub { "load " (format!("{:.2}", finite(l))) }
                }
            }
            td.num { (fmt_percent(n.share_last_minute * 100.0)) }
            td.num {
                (n.inflight)
                div.sub title="Most requests in flight to the node at once since start" {
                    "peak " (st.peak_inflight)
                }
                div.sub title="Requests this proxy sent to the node since start" {
                    (human_count(n.proxied_total as f64)) " total"
                }
            }
            td.num.proxy-errors {
                span.bad[n.errors_total > 0] { (n.errors_total) }
            }
            td.num.node-errors {
                span.warnc[st.responses_4xx_total > 0] { (human_count(st.responses_4xx_total as f64)) }
                span.muted { " / " }
                span.bad[st.responses_5xx_total > 0] { (human_count(st.responses_5xx_total as f64)) }
            }
            td.num.rt {
                (opt(st.response_time_p50_seconds.map(human_short_duration)))
                div.sub { (opt(st.response_time_p99_seconds.map(human_short_duration))) }
            }
            td.num.bytes {
                (human_bytes(st.request_body_bytes_total as f64))
                div.sub { (human_bytes(st.response_body_bytes_total as f64)) }
            }
            td.hist { (sparklines(&st.history)) }
            td.num { (weight_text(n)) }
            td.scrape {
                (scrape_age(n))
                // Not repeated when the down reason (first column) says it.
                @if let Some(err) = n.last_scrape_error.as_ref().filter(|e| {
                    !n.down_reason.as_deref().is_some_and(|r| r.contains(e.as_str()))
                }) {
                    div.reason { (err) }
                }
            }
        }
    }
}

/// The word and CSS class of a state: the word is always shown, so the
/// page reads the same without colour.
fn state_word(state: NodeState) -> (&'static str, &'static str) {
    match state {
        NodeState::Up => ("up", "st-up"),
        NodeState::Full => ("full", "st-full"),
        NodeState::Down => ("down", "st-down"),
        NodeState::Draining => ("draining", "st-draining"),
        NodeState::Stale => ("stale", "st-stale"),
        NodeState::Unknown => ("unknown", "st-unknown"),
    }
}

/// `event · Apache/2.4.71 (Debian)`: MPM first (it is short and the
/// version may be cut off on screen), then the version, or the kind when the
/// version is not known; None when nothing is known yet.
fn server_line(n: &NodeSnapshot) -> Option<String> {
    let version = n
        .server_version
        .as_deref()
        .filter(|v| !v.is_empty())
        .or(n.server_kind.as_deref());
    let parts: Vec<&str> = [n.mpm.as_deref(), version]
        .into_iter()
        .flatten()
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        None
    } else {
        Some(parts.join(" · "))
    }
}

fn worker_text(n: &NodeSnapshot) -> String {
    let num = |v: Option<u32>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
    match (n.busy_workers, n.idle_workers, n.capacity) {
        (None, None, None) => "—".to_string(),
        (busy, idle, cap) => format!("{} busy · {} idle / {}", num(busy), num(idle), num(cap)),
    }
}

/// A horizontal bar: busy, then idle, then the open rest of the capacity.
/// With no capacity the bar spans busy + idle.
fn worker_bar(busy: Option<u64>, idle: Option<u64>, capacity: Option<u64>) -> Markup {
    let b = busy.unwrap_or(0);
    let i = idle.unwrap_or(0);
    let total = capacity.filter(|c| *c > 0).unwrap_or(b + i);
    if busy.is_none() && idle.is_none() {
        return html! { span.muted { "—" } };
    }
    let busy_pct = width_percent(b, total);
    let idle_pct = width_percent(i, total).min(100.0 - busy_pct);
    let heat = if busy_pct >= 90.0 {
        "hot"
    } else if busy_pct >= 70.0 {
        "warm"
    } else {
        "ok"
    };
    html! {
        div.bar role="img" aria-label=(format!("{b} busy, {i} idle of {total}")) {
            span class=(format!("busy {heat}")) style=(format!("width:{busy_pct:.1}%")) {}
            span.idle style=(format!("width:{idle_pct:.1}%")) {}
        }
    }
}

/// `part` as a percentage of `total`, clamped to 0..=100 (0 when total is 0).
fn width_percent(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (part as f64 * 100.0 / total as f64).clamp(0.0, 100.0)
    }
}

/// The scoreboard as runs of coloured letters: the trailing open slots
/// counted rather than drawn, the rest capped at [`SCOREBOARD_CAP`]. The
/// tooltip has the count of every letter.
fn scoreboard(sb: Option<&str>) -> Markup {
    let Some(sb) = sb.filter(|s| !s.is_empty()) else {
        return html! { span.muted { "—" } };
    };
    let (body, open_tail) = split_open_tail(sb);
    let body_len = body.chars().count();
    let shown: String = body.chars().take(SCOREBOARD_CAP).collect();
    let cut = body_len.saturating_sub(SCOREBOARD_CAP);
    html! {
        div.sb title=(scoreboard_counts(sb)) {
            @for (c, len) in char_runs(&shown) {
                span class=(sb_class(c)) { (c.to_string().repeat(len)) }
            }
            @if cut > 0 {
                " " span.more { "+" (cut) " more" }
            }
            @if open_tail > 0 {
                " " span.more { "+" (open_tail) " open" }
            }
        }
        div.sub.sbcount { (scoreboard_summary(sb)) }
    }
}

/// `9 W · 66 _ · 75 .`: each letter's count, in legend order (others last).
fn scoreboard_summary(sb: &str) -> String {
    let mut parts: Vec<String> = SCOREBOARD_LEGEND
        .iter()
        .map(|(c, _)| (c, sb.chars().filter(|x| x == c).count()))
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| format!("{n} {c}"))
        .collect();
    let other = sb
        .chars()
        .filter(|x| !SCOREBOARD_LEGEND.iter().any(|(c, _)| c == x))
        .count();
    if other > 0 {
        parts.push(format!("{other} other"));
    }
    parts.join(" · ")
}

/// `("__W", 75)` for `__W` followed by 75 dots; the tail is only split off
/// when it is at least [`OPEN_TAIL_MIN`] long.
fn split_open_tail(sb: &str) -> (&str, usize) {
    let body = sb.trim_end_matches('.');
    let tail = sb.len() - body.len(); // '.' is one byte
    if tail >= OPEN_TAIL_MIN {
        (body, tail)
    } else {
        (sb, 0)
    }
}

/// Split into runs of the same character: `__WW_` -> `[('_',2),('W',2),('_',1)]`.
fn char_runs(s: &str) -> Vec<(char, usize)> {
    let mut runs: Vec<(char, usize)> = Vec::new();
    for c in s.chars() {
        match runs.last_mut() {
            Some((last, len)) if *last == c => *len += 1,
            _ => runs.push((c, 1)),
        }
    }
    runs
}

/// `W sending reply: 9 · _ waiting for connection: 66 · ...` for the tooltip,
/// in legend order; letters not in the legend are counted last.
fn scoreboard_counts(sb: &str) -> String {
    let mut parts = Vec::new();
    for (c, what) in SCOREBOARD_LEGEND {
        let n = sb.chars().filter(|x| *x == c).count();
        if n > 0 {
            parts.push(format!("{c} {what}: {n}"));
        }
    }
    let other = sb
        .chars()
        .filter(|x| !SCOREBOARD_LEGEND.iter().any(|(c, _)| c == x))
        .count();
    if other > 0 {
        parts.push(format!("other: {other}"));
    }
    parts.join(" · ")
}

fn sb_class(c: char) -> &'static str {
    match c {
        'W' => "sb-w",
        'K' => "sb-k",
        'R' => "sb-r",
        '_' => "sb-wait",
        '.' => "sb-open",
        _ => "sb-other",
    }
}

fn weight_text(n: &NodeSnapshot) -> Markup {
    let eff = finite(n.effective_weight);
    let conf = f64::from(n.weight);
    if (eff - conf).abs() < 0.005 {
        html! { (n.weight) }
    } else {
        html! {
            (trim_number(eff, 2)) span.muted { " / " (n.weight) }
            div.sub { "slow start" }
        }
    }
}

fn scrape_age(n: &NodeSnapshot) -> Markup {
    let failures = if n.scrape_failures_total > 0 {
        Some(format!(
            "{} of {} failed",
            n.scrape_failures_total, n.scrapes_total
        ))
    } else {
        None
    };
    html! {
        @match n.last_scrape_age_seconds {
            Some(age) => span.nowrap.age { (human_age(age)) },
            None => span.muted {
                @if n.state == NodeState::Unknown { "not yet" } @else { "never" }
            },
        }
        @if let Some(d) = n.last_scrape_duration_seconds {
            div.sub.nowrap { "took " (human_short_duration(d)) }
        }
        @if let Some(f) = failures {
            div.sub.nowrap { (f) }
        }
    }
}

fn legend() -> Markup {
    html! {
        section.legend id="legend" {
            h3 { "Scoreboard letters" }
            ul {
                @for (c, what) in SCOREBOARD_LEGEND {
                    li {
                        code class=(format!("key {}", sb_class(c))) { (c) }
                        " " (what)
                    }
                }
            }
            p.sub {
                "Workers: busy / idle / capacity as each node reports them (nginx has no capacity); "
                "limit: how many requests this proxy may have at the node at once (its free workers, at most max_conns); "
                "more wait in the group's queue (queued, with the median / 99th percentile wait). "
                "States: up = healthy with a fresh status; full = up, but its last status had no idle worker; stale = usable but its status page "
                "stopped answering (balanced by in-flight counts); draining = no new requests; "
                "down = failed health checks, held back (stopped answering) or in maintenance; unknown = not checked yet."
            }
        }
    }
}

/// Two inline SVG lines over the node's history: requests per second
/// (blue) and busy workers (purple), each scaled to its own maximum; a
/// point with no fresh status leaves a gap in the worker line.
fn sparklines(history: &[HistoryPoint]) -> Markup {
    const W: f64 = 120.0;
    const H: f64 = 28.0;
    if history.len() < 2 {
        return html! { span.muted { "—" } };
    }
    let step = W / (HISTORY_POINTS.max(history.len()) - 1) as f64;
    let x0 = W - step * (history.len() - 1) as f64;
    let rps: Vec<f64> = history
        .iter()
        .map(|p| finite(p.requests_per_second).max(0.0))
        .collect();
    let busy: Vec<Option<f64>> = history
        .iter()
        .map(|p| p.busy_workers.map(f64::from))
        .collect();
    let max_rps = rps.iter().copied().fold(0.0, f64::max);
    let max_busy = busy.iter().flatten().copied().fold(0.0, f64::max);
    let y = |v: f64, max: f64| {
        if max > 0.0 {
            H - 1.0 - v / max * (H - 2.0)
        } else {
            H - 1.0
        }
    };
    let rps_points: String = rps
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1} ", x0 + step * i as f64, y(*v, max_rps)))
        .collect();
    // The busy line in runs of consecutive known points.
    let mut runs: Vec<String> = Vec::new();
    let mut run = String::new();
    for (i, v) in busy.iter().enumerate() {
        match v {
            Some(v) => run.push_str(&format!(
                "{:.1},{:.1} ",
                x0 + step * i as f64,
                y(*v, max_busy)
            )),
            None if !run.is_empty() => runs.push(std::mem::take(&mut run)),
            None => {}
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    let label = format!(
        "last {} s: up to {} req/s, up to {} busy workers",
        history.len() as u64 * HISTORY_STEP.as_secs(),
        human_count(max_rps),
        max_busy
    );
    html! {
        svg.spark width=(W) height=(H) viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(label) {
            title { (label) }
            polyline.rps points=(rps_points.trim_end()) {}
            @for r in &runs {
                polyline.busyl points=(r.trim_end()) {}
            }
        }
        div.sub.nowrap { (human_count(max_rps)) " req/s · " (max_busy) " busy max" }
    }
}

fn opt(v: Option<String>) -> Markup {
    match v {
        Some(v) => html! { (v) },
        None => html! { span.muted { "—" } },
    }
}

// ---- formatting helpers ---------------------------------------------------

/// NaN and infinities become 0 so that nothing odd reaches the page.
fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// Decimal (SI) byte sizes: `512 B`, `1.2 kB`, `34.5 MB`, `123 GB`.
fn human_bytes(bytes: f64) -> String {
    si(bytes, "B", true)
}

/// Counts and rates with SI suffixes: `0.4`, `12.3`, `456`, `1.2k`, `3.4M`.
fn human_count(n: f64) -> String {
    si(n, "", false)
}

/// Shared by [`human_bytes`] and [`human_count`]: one decimal below 100,
/// none from 100 on; plain integers below 1000 for bytes.
fn si(value: f64, unit: &str, bytes: bool) -> String {
    const PREFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    let v = finite(value).max(0.0);
    let sep = if unit.is_empty() { "" } else { " " };
    if v < 1000.0 {
        return if bytes || v >= 100.0 || v == v.trunc() {
            format!("{v:.0}{sep}{unit}")
        } else {
            format!("{v:.1}{sep}{unit}")
        };
    }
    let mut scaled = v;
    let mut i = 0;
    while scaled >= 999.95 && i + 1 < PREFIXES.len() {
        scaled /= 1000.0;
        i += 1;
    }
    let p = PREFIXES[i];
    if scaled >= 99.95 {
        format!("{scaled:.0}{sep}{p}{unit}")
    } else {
        format!("{scaled:.1}{sep}{p}{unit}")
    }
}

/// The two largest units: `45s`, `5m 2s`, `2h 0m`, `3d 4h`.
fn human_duration(seconds: f64) -> String {
    let s = finite(seconds).max(0.0) as u64;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    }
}

/// Sub-second precision for short spans: `12 ms`, `0.4 s`, `3.2 s`, `42 s`.
fn human_short_duration(seconds: f64) -> String {
    let s = finite(seconds).max(0.0);
    if s < 0.1 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 10.0 {
        format!("{s:.1} s")
    } else if s < 60.0 {
        format!("{s:.0} s")
    } else {
        human_duration(s)
    }
}

/// `0.4 s ago`, `12 s ago`, `5m 2s ago`.
fn human_age(seconds: f64) -> String {
    let s = finite(seconds).max(0.0);
    if s < 0.1 {
        // Milliseconds look jittery on a page refreshing every 2 s.
        format!("{s:.1} s ago")
    } else {
        format!("{} ago", human_short_duration(s))
    }
}

/// A value that is already in percent: `0%`, `0.5%`, `42.1%`, `107%`.
fn fmt_percent(percent: f64) -> String {
    let p = finite(percent).max(0.0);
    if p == 0.0 {
        "0%".to_string()
    } else if p < 100.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.0}%")
    }
}

/// At most `decimals` decimals, trailing zeros dropped: `3.20` -> `3.2`.
fn trim_number(x: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, finite(x));
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn short_hash(hash: &str) -> String {
    hash.chars().take(HASH_SHORT).collect()
}

/// Unix seconds as `2026-11-27 02:39:17 UTC`.
fn fmt_utc(unix: f64) -> String {
    let t = finite(unix).floor() as i64;
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    // Both are small by construction.
    (y, m as u32, d as u32)
}

// ---- stylesheet -----------------------------------------------------------

/// The page's stylesheet, `page.css` next to this file (inlined: the page
/// loads nothing else).
const CSS: &str = include_str!("page.css");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::sample;

    #[test]
    fn page_shows_every_node_and_state() {
        let s = sample::snapshot();
        let html = render(&s);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<title>webcluster status</title>"));
        for name in ["web-1", "web-2", "web-4", "static-1", "static-2"] {
            assert!(html.contains(name), "missing node {name}");
        }
        for word in ["up", "down", "draining", "stale", "unknown"] {
            assert!(
                html.contains(&format!("<span class=\"dot\"></span>{word}</span>")),
                "missing state word {word}"
            );
        }
        for group in ["web", "static", "busyness", "round_robin"] {
            assert!(html.contains(&format!(">{group}<")), "missing {group}");
        }
        assert!(html.contains(">backup<"));
        assert!(html.contains("10.0.0.11:80"));
        assert!(html.contains("[2001:db8::22]:80"));
    }

    #[test]
    fn scrape_error_is_not_repeated_by_the_down_reason() {
        let mut s = sample::snapshot();
        let n = &mut s.groups[0].nodes[0];
        n.state = NodeState::Down;
        n.last_scrape_error = Some("cannot connect to 10.0.0.11:80: refused".to_string());
        n.down_reason =
            Some("3 status checks failed in a row: cannot connect to 10.0.0.11:80: refused".into());
        let html = render(&s);
        assert_eq!(html.matches("cannot connect to 10.0.0.11:80").count(), 1);
        // a different error is still shown next to the reason
        s.groups[0].nodes[0].last_scrape_error = Some("HTTP 403 from the status page".into());
        let html = render(&s);
        assert!(html.contains("HTTP 403 from the status page"));
        assert!(html.contains("3 status checks failed in a row"));
    }

    #[test]
    fn hostile_text_is_escaped() {
        let s = sample::snapshot();
        let html = render(&s);
        assert!(!html.contains("<script"), "unescaped script tag");
        assert!(!html.contains("<img"), "unescaped img tag");
        assert!(!html.contains("<b>timeout"), "unescaped down reason");
        assert!(!html.contains("<in [[group"), "unescaped reload error");
        assert!(html.contains("&lt;script&gt;alert('name')&lt;/script&gt;"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt; &amp; &quot;quoted&quot;"));
    }

    #[test]
    fn hostile_scoreboard_and_version_are_escaped() {
        let mut s = sample::snapshot();
        let n = &mut s.groups[0].nodes[0];
        n.scoreboard = Some("__W<script>x</script>".to_string());
        n.server_version = Some("Apache\"><script>".to_string());
        s.version = "<i>1</i>".to_string();
        s.groups[1].name = "<h1>g</h1>".to_string();
        let html = render(&s);
        assert!(!html.contains("<script"));
        assert!(!html.contains("<i>1"));
        assert!(!html.contains("<h1>g"));
    }

    #[test]
    fn page_is_self_contained_and_refreshes() {
        let html = render(&sample::snapshot());
        assert!(html.contains(r#"<meta http-equiv="refresh" content="2">"#));
        assert!(html.contains(r#"name="viewport""#));
        assert!(html.contains("<style>"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("<link"));
        assert!(!html.contains("src=\""), "no external images or scripts");
        assert!(!html.contains("href=\"http"), "no external links");
        assert!(!html.contains("url("), "no external CSS resources");
        for link in ["/status.json", "/server-status?auto", "/metrics"] {
            assert!(html.contains(&format!("href=\"{link}\"")), "missing {link}");
        }
    }

    #[test]
    fn totals_and_config_are_shown() {
        let s = sample::snapshot();
        let html = render(&s);
        assert!(html.contains("9f2c4e1ab37d"), "short hash");
        assert!(
            !html.contains(">9f2c4e1ab37d55e0"),
            "hash must be shortened in text"
        );
        assert!(html.contains("/etc/webcluster/webcluster.toml"));
        assert!(html.contains("Last config reload failed"));
        assert!(html.contains("1 failed"));
        assert!(html.contains("up 1d 2h"), "process uptime");
        // Node-level figures.
        assert!(html.contains("3d 4h"), "node uptime");
        assert!(html.contains("6.2 MB/s"));
        assert!(html.contains("15.0k"));
        assert!(html.contains("62.0%"), "share");
        assert!(html.contains("69.3%"), "cpu");
        assert!(html.contains("0.4 s ago"));
        assert!(html.contains("3.25"), "effective weight");
        assert!(html.contains("slow start"));
        assert!(html.contains("timed out after 2 s"));
    }

    /// The totals the page shows are the snapshot's, written out here as
    /// the numbers they must be (sums over the fresh nodes of the sample,
    /// worked out in `sample.rs`), not recomputed from the nodes.
    #[test]
    fn cluster_and_group_totals_show_the_expected_numbers() {
        let html = render(&sample::snapshot());
        let section = |start: &str, end: &str| {
            let a = html
                .find(start)
                .unwrap_or_else(|| panic!("{start} missing"));
            let b = a + html[a..].find(end).expect("end of the section");
            html[a..b].to_string()
        };
        let cards = section(r#"<section class="cards""#, "</section>");
        for text in [
            r#"<div class="big">2<span class="of"> / 6</span></div>"#,
            r#"<div class="sub">4 not up</div>"#,
            r#"<div class="big">19<span class="of"> busy</span></div>"#,
            r#"aria-label="19 busy, 115 idle of 450""#,
            "115 idle · 450 capacity",
            r#"<div class="big">15.1k<span class="of"> req/s</span></div>"#,
            "45.2k served by nodes",
            r#"<div class="big">6.2 MB<span class="of">/s</span></div>"#,
            "18.6 MB sent by nodes",
            r#"<div class="big">10</div>"#,
            "1.3M proxied since start",
        ] {
            assert!(cards.contains(text), "{text:?} missing from {cards}");
        }
        let web = section("<h2>web</h2>", "</div>");
        for text in [
            "<strong>2 / 4</strong> up",
            "<strong>19</strong> busy · 115 idle · 450 cap",
            "<strong>15.1k</strong> req/s",
            "<strong>6.2 MB</strong>/s",
            "<strong>7</strong> in flight",
        ] {
            assert!(web.contains(text), "{text:?} missing from {web}");
        }
        let stat = section("<h2>static</h2>", "</div>");
        for text in [
            "<strong>0 / 2</strong> up",
            "<strong>0</strong> busy · 0 idle · 0 cap",
            "<strong>3</strong> in flight",
        ] {
            assert!(stat.contains(text), "{text:?} missing from {stat}");
        }
    }

    #[test]
    fn session_and_content_sync_counters_are_shown_when_used() {
        use crate::cluster::snapshot::{AffinityNodeSnapshot, SwitchCounts};
        let mut s = sample::snapshot();
        let page = render(&s);
        assert!(!page.contains("Sessions"), "no affinity, no sessions line");
        assert!(!page.contains("Content sync"));
        let g = &mut s.groups[0];
        g.affinity = AffinitySnapshot {
            mode: "cookie".into(),
            strict: true,
            cookies: vec!["PHPSESSID".into()],
            session_requests_total: 4321,
            cookies_set_total: 17,
            switches_total: SwitchCounts {
                down: 3,
                saturated: 5,
                draining: 7,
            },
            strict_refusals_total: 2,
            nodes: vec![AffinityNodeSnapshot {
                name: "web-1".into(),
                id: "a1".into(),
                session_requests_total: 4000,
                sessions_switched_total: 9,
            }],
        };
        g.content_sync.retry_on_404 = true;
        g.content_sync.retry_on_404_total = 11;
        g.content_sync.retry_on_404_recovered_total = 10;
        g.content_sync.primaries = vec!["web-1".into()];
        g.content_sync.primary_requests_total = 250;
        g.content_sync.primary_unavailable_total = 1;
        let page = render(&s);
        for text in [
            "Sessions",
            "(cookie, strict)",
            "4321 requests of sessions",
            "17 cookies set",
            "3 node down, 5 node full, 7 draining",
            "2 refused (strict)",
            "web-1: 4000 served, 9 moved away",
            "11 404 answers retried on another node, 10 found there",
            "writes to the primary (web-1): 250 sent, 1 refused",
        ] {
            assert!(page.contains(text), "{text:?} missing");
        }
    }

    #[test]
    fn the_queue_and_each_node_limit_are_shown() {
        let s = sample::snapshot();
        let page = render(&s);
        // The sample's web group: 3 waiting, waits of 12 and 180 ms.
        for text in [
            "3</strong> queued · wait 12 ms / 0.2 s",
            "Queue",
            "412 requests waited",
            "2 timed out (503)",
            "0 refused, queue full (503)",
            "1 left by their visitor",
            "at most 12 at once",
        ] {
            assert!(page.contains(text), "{text:?} missing");
        }
        let limits = s.groups[0].nodes.iter().filter_map(|n| n.limit);
        for limit in limits {
            assert!(page.contains(&format!("limit {limit}")), "limit {limit}");
        }
        // The static group never queued: no note, and no wait figures.
        assert!(page.contains("0</strong> queued · wait — / —"));
    }

    #[test]
    fn no_reload_error_no_alert() {
        let mut s = sample::snapshot();
        s.config.last_reload_error = None;
        let html = render(&s);
        assert!(!html.contains("Last config reload failed"));
    }

    #[test]
    fn empty_cluster_renders() {
        let mut s = sample::snapshot();
        s.groups.clear();
        s.totals = Totals::default();
        let html = render(&s);
        assert!(html.contains("No groups configured."));
        assert!(html.contains("no nodes"));
        let mut s = sample::snapshot();
        s.groups[1].nodes.clear();
        assert!(render(&s).contains("No nodes in this group."));
    }

    #[test]
    fn odd_numbers_do_not_break_the_page() {
        let mut s = sample::snapshot();
        let n = &mut s.groups[0].nodes[0];
        n.requests_per_second = Some(f64::NAN);
        n.bytes_per_second = Some(f64::INFINITY);
        n.cpu_load = Some(-3.0);
        n.effective_weight = f64::NAN;
        n.busy_workers = Some(500); // more than capacity
        n.last_scrape_age_seconds = Some(-1.0);
        s.time_unix = f64::NAN;
        let html = render(&s);
        assert!(!html.contains("NaN"));
        assert!(
            !html.contains(">inf") && !html.contains("inf "),
            "infinity leaked"
        );
        assert!(html.contains("width:100.0%"));
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(0.0), "0 B");
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(999.0), "999 B");
        assert_eq!(human_bytes(1000.0), "1.0 kB");
        assert_eq!(human_bytes(1234.0), "1.2 kB");
        assert_eq!(human_bytes(3_400_000.0), "3.4 MB");
        assert_eq!(human_bytes(99_940.0), "99.9 kB");
        assert_eq!(human_bytes(123_456_789.0), "123 MB");
        assert_eq!(human_bytes(999_999.0), "1.0 MB");
        assert_eq!(human_bytes(2.5e12), "2.5 TB");
        assert_eq!(human_bytes(f64::NAN), "0 B");
        assert_eq!(human_bytes(-5.0), "0 B");
    }

    #[test]
    fn counts_are_human() {
        assert_eq!(human_count(0.0), "0");
        assert_eq!(human_count(0.44), "0.4");
        assert_eq!(human_count(13.4), "13.4");
        assert_eq!(human_count(7.0), "7");
        assert_eq!(human_count(456.7), "457");
        assert_eq!(human_count(15_035.7), "15.0k");
        assert_eq!(human_count(1_234_567.0), "1.2M");
        assert_eq!(human_count(f64::INFINITY), "0");
    }

    #[test]
    fn durations_are_human() {
        assert_eq!(human_duration(0.0), "0s");
        assert_eq!(human_duration(45.9), "45s");
        assert_eq!(human_duration(302.0), "5m 2s");
        assert_eq!(human_duration(7200.0), "2h 0m");
        assert_eq!(
            human_duration(3.0 * 86_400.0 + 4.0 * 3600.0 + 17.0),
            "3d 4h"
        );
        assert_eq!(human_duration(-4.0), "0s");
        assert_eq!(human_short_duration(0.003), "3 ms");
        assert_eq!(human_short_duration(0.4), "0.4 s");
        assert_eq!(human_short_duration(42.4), "42 s");
        assert_eq!(human_short_duration(75.0), "1m 15s");
        assert_eq!(human_age(0.4), "0.4 s ago");
        assert_eq!(human_age(0.04), "0.0 s ago");
        assert_eq!(human_age(12.7), "13 s ago");
        assert_eq!(human_age(302.0), "5m 2s ago");
    }

    #[test]
    fn percentages() {
        assert_eq!(fmt_percent(0.0), "0%");
        assert_eq!(fmt_percent(0.5), "0.5%");
        assert_eq!(fmt_percent(62.0), "62.0%");
        assert_eq!(fmt_percent(107.667), "108%");
        assert_eq!(fmt_percent(f64::NAN), "0%");
        assert_eq!(width_percent(1, 4), 25.0);
        assert_eq!(width_percent(5, 0), 0.0);
        assert_eq!(width_percent(9, 3), 100.0);
        assert_eq!(trim_number(3.25, 2), "3.25");
        assert_eq!(trim_number(3.2, 2), "3.2");
        assert_eq!(trim_number(3.0, 2), "3");
    }

    #[test]
    fn utc_times() {
        assert_eq!(fmt_utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_utc(951_782_400.0), "2000-02-29 00:00:00 UTC");
        assert_eq!(fmt_utc(1_795_747_157.9), "2026-11-27 02:39:17 UTC");
        assert_eq!(fmt_utc(-1.0), "1969-12-31 23:59:59 UTC");
    }

    #[test]
    fn scoreboard_runs_counts_and_cap() {
        assert_eq!(char_runs("__WW_"), vec![('_', 2), ('W', 2), ('_', 1)]);
        assert_eq!(char_runs(""), vec![]);
        let counts = scoreboard_counts("_W_K.?");
        assert_eq!(
            counts,
            "_ waiting for connection: 2 · W sending reply: 1 · K keepalive (read): 1 · \
             . open slot with no current process: 1 · other: 1"
        );
        let long = "_".repeat(SCOREBOARD_CAP + 25);
        let html = scoreboard(Some(&long)).into_string();
        assert!(html.contains("+25 more"));
        assert!(scoreboard(None).into_string().contains('—'));
        let short = scoreboard(Some("_W_")).into_string();
        assert!(short.contains(r#"<span class="sb-w">W</span>"#));
    }

    #[test]
    fn open_tail_is_counted_not_drawn() {
        let sb = format!("__W{}", ".".repeat(75));
        assert_eq!(split_open_tail(&sb), ("__W", 75));
        assert_eq!(split_open_tail("_W...."), ("_W....", 0));
        assert_eq!(split_open_tail("........"), ("", 8));
        let html = scoreboard(Some(&sb)).into_string();
        assert!(html.contains("+75 open"));
        assert!(!html.contains("...."));
    }

    #[test]
    fn short_hash_is_char_safe() {
        assert_eq!(short_hash("abc"), "abc");
        assert_eq!(short_hash("ääääääääääääää"), "ää".repeat(6));
    }

    /// Writes the sample page to the path in `WEBCLUSTER_PAGE_PREVIEW`, to
    /// look at it in a browser: `WEBCLUSTER_PAGE_PREVIEW=/tmp/page.html cargo
    /// test page_preview`.
    #[test]
    fn page_preview() {
        if let Some(path) = std::env::var_os("WEBCLUSTER_PAGE_PREVIEW") {
            std::fs::write(path, render(&sample::snapshot())).expect("write preview");
        }
    }
}

#[cfg(test)]
mod act_tests {
    //! What issue #18 asks of the page: full as a state of its own, old
    //! figures dated, errors split, times, bytes, history.
    use super::*;
    use crate::admin::sample;

    fn row<'a>(page: &'a str, node: &str) -> &'a str {
        let start = page
            .find(&format!("data-node=\"{node}\""))
            .unwrap_or_else(|| panic!("row of {node}"));
        let end = page[start..]
            .find("</tr>")
            .map_or(page.len(), |e| start + e);
        &page[start..end]
    }

    #[test]
    fn full_stale_and_down_rows_say_so() {
        let page = render(&sample::snapshot());
        let web2 = row(&page, "web-2");
        assert!(web2.contains("data-state=\"full\""), "{web2}");
        assert!(web2.contains("pill st-full"));
        assert!(!web2.contains("as of"));
        let static1 = row(&page, "static-1");
        assert!(static1.contains("as of 13 s ago"), "{static1}");
        assert!(page.contains("class=\"row st-stale old\""));
        let web1 = row(&page, "web-1");
        assert!(web1.contains("up for 3h"), "{web1}");
        assert!(web1.contains("down 1×"));
        assert!(web1.contains("peak 57"));
        assert!(web1.contains("<svg class=\"spark\""));
        assert!(web1.contains(">5 ms<"), "{web1}");
        assert!(web1.contains("18.0 GB"), "{web1}");
    }

    #[test]
    fn errors_are_split() {
        let page = render(&sample::snapshot());
        assert!(page.contains("Proxy errors") && page.contains("Node 4xx / 5xx"));
        let web1 = row(&page, "web-1");
        let node = &web1[web1.find("node-errors").expect("node errors cell")..];
        assert!(node.contains(">321<") && node.contains(">4<"), "{node}");
    }
}
