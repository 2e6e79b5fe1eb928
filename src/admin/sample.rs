//! A hand-built snapshot shared by the admin tests (page, `?auto`,
//! metrics): two groups, six nodes, one in each state, one with hostile
//! text.
//!
//! Its totals are written out as the numbers they must be (the sums of
//! the fresh nodes' figures, worked out by hand in the comments), not
//! recomputed: the tests check what is rendered from them against literal
//! numbers.

use crate::cluster::snapshot::*;

pub(crate) const HOSTILE_NAME: &str = "<script>alert('name')</script>";
pub(crate) const HOSTILE_ERROR: &str = "connect refused <img src=x onerror=alert(1)> & \"quoted\"";

fn node(name: &str, address: &str, state: NodeState) -> NodeSnapshot {
    NodeSnapshot {
        name: name.to_string(),
        address: address.to_string(),
        status_url: format!("http://{address}/server-status?auto"),
        state,
        backup: false,
        weight: 10,
        effective_weight: 10.0,
        server_kind: None,
        server_version: None,
        mpm: None,
        node_uptime_seconds: None,
        busy_workers: None,
        idle_workers: None,
        capacity: None,
        limit: None,
        idle_pooled: 0,
        estimated_busy: 0.0,
        scoreboard: None,
        node_accesses_total: None,
        node_bytes_total: None,
        requests_per_second: None,
        bytes_per_second: None,
        cpu_load: None,
        load1: None,
        inflight: 0,
        proxied_total: 0,
        share_last_minute: 0.0,
        errors_total: 0,
        scrapes_total: 0,
        scrape_failures_total: 0,
        last_scrape_age_seconds: None,
        last_scrape_duration_seconds: None,
        last_scrape_error: None,
        down_reason: None,
        status_fresh: false,
        stats: StatsSnapshot::default(),
        operator_state: Default::default(),
        operator_weight: None,
    }
}

#[allow(clippy::too_many_arguments)]
fn apache(
    mut n: NodeSnapshot,
    mpm: &str,
    busy: u32,
    idle: u32,
    scoreboard: String,
    accesses: u64,
    bytes: u64,
    rps: f64,
    bps: f64,
) -> NodeSnapshot {
    n.server_kind = Some("apache".into());
    n.server_version = Some("Apache/2.4.71 (Debian) OpenSSL/3.0.19".into());
    n.mpm = Some(mpm.into());
    n.capacity = Some(scoreboard.chars().count() as u32);
    n.busy_workers = Some(busy);
    n.idle_workers = Some(idle);
    n.estimated_busy = f64::from(busy) - 1.0 + n.inflight as f64;
    // The workers not held by others, the status request's kept.
    n.limit = Some((scoreboard.chars().count() as u32).saturating_sub(busy) + n.inflight as u32);
    n.scoreboard = Some(scoreboard);
    n.node_accesses_total = Some(accesses);
    n.node_bytes_total = Some(bytes);
    n.requests_per_second = Some(rps);
    n.bytes_per_second = Some(bps);
    n.status_fresh = true;
    n.stats.accesses_accumulated_total = accesses;
    n.stats.bytes_accumulated_total = bytes;
    n
}

pub(crate) fn snapshot() -> ClusterSnapshot {
    // web-1: event, busy, healthy.
    let mut web1 = node("web-1", "10.0.0.11:80", NodeState::Up);
    web1.inflight = 4;
    web1 = apache(
        web1,
        "event",
        9,
        66,
        format!(
            "{}{}",
            "_____________________W____________________________W_W_______W_W__W____WW_W_",
            ".".repeat(75)
        ),
        45_107,
        18_043 * 1024,
        15_035.7,
        6_158_680.0,
    );
    web1.node_uptime_seconds = Some(3 * 86_400 + 4 * 3600 + 17);
    web1.cpu_load = Some(69.3333);
    web1.load1 = Some(1.01);
    web1.proxied_total = 1_234_567;
    web1.share_last_minute = 0.62;
    web1.errors_total = 0;
    web1.scrapes_total = 4210;
    web1.last_scrape_age_seconds = Some(0.4);
    web1.last_scrape_duration_seconds = Some(0.003);
    web1.stats.responses_4xx_total = 321;
    web1.stats.responses_5xx_total = 4;
    web1.stats.request_body_bytes_total = 5_000_000;
    web1.stats.response_body_bytes_total = 18_000_000_000;
    web1.stats.peak_inflight = 57;
    web1.stats.response_time_p50_seconds = Some(0.005);
    web1.stats.response_time_p99_seconds = Some(0.2);
    web1.stats.state_seconds = 3.0 * 3600.0 + 5.0;
    web1.stats.times_down = 1;
    web1.stats.downtime_seconds = 42.0;
    web1.stats.history = (0..60)
        .map(|i| HistoryPoint {
            requests_per_second: 14_000.0 + f64::from(i % 7) * 300.0,
            busy_workers: Some(5 + i % 6),
        })
        .collect();

    // web-2: prefork with keep-alive and reading slots, slow start, full
    // (no idle worker).
    let mut web2 = node("web-2", "10.0.0.12:80", NodeState::Full);
    web2.inflight = 2;
    web2 = apache(
        web2,
        "prefork",
        9,
        0,
        format!("KKKKKKRRSWR{}", ".".repeat(139)),
        67,
        97 * 1024,
        13.4,
        19_865.6,
    );
    web2.node_uptime_seconds = Some(5 * 60 + 2);
    web2.cpu_load = Some(0.2);
    web2.load1 = Some(3.38);
    web2.effective_weight = 3.25;
    web2.proxied_total = 812;
    web2.share_last_minute = 0.38;
    web2.scrapes_total = 150;
    web2.scrape_failures_total = 2;
    web2.last_scrape_age_seconds = Some(1.2);
    web2.last_scrape_duration_seconds = Some(0.012);

    // web-3: hostile name and error, down, backup.
    let mut web3 = node(HOSTILE_NAME, "10.0.0.13:80", NodeState::Down);
    web3.backup = true;
    web3.errors_total = 17;
    web3.scrapes_total = 99;
    web3.scrape_failures_total = 99;
    web3.last_scrape_error = Some(HOSTILE_ERROR.to_string());
    web3.down_reason = Some("3 failed health checks (fall = 3): <b>timeout</b>".to_string());
    web3.stats.accesses_accumulated_total = 500;
    web3.stats.bytes_accumulated_total = 512_000;
    web3.stats.times_down = 2;
    web3.stats.state_seconds = 75.0;
    web3.stats.downtime_seconds = 95.0;

    // web-4: draining, still reporting.
    let mut web4 = node("web-4", "10.0.0.14:8080", NodeState::Draining);
    web4.inflight = 1;
    web4 = apache(
        web4,
        "worker",
        1,
        49,
        format!("{}W{}{}", "_".repeat(31), "_".repeat(18), ".".repeat(100)),
        10,
        3 * 1024,
        5.0,
        1536.0,
    );
    web4.node_uptime_seconds = Some(2 * 3600 + 59);
    web4.weight = 5;
    web4.effective_weight = 5.0;
    web4.last_scrape_age_seconds = Some(0.9);
    web4.last_scrape_duration_seconds = Some(0.002);
    web4.scrapes_total = 300;
    // ... drained by the operator, who also set its weight.
    web4.operator_state = crate::cluster::operator::OperatorState::Drain;
    web4.operator_weight = Some(2);

    // static-1: nginx, stale (its status page stopped answering).
    let mut static1 = node("static-1", "10.0.1.21:80", NodeState::Stale);
    static1.server_kind = Some("nginx".into());
    static1.busy_workers = Some(3);
    static1.idle_workers = Some(12);
    static1.node_accesses_total = Some(998_877);
    static1.requests_per_second = Some(120.5);
    static1.inflight = 3;
    static1.estimated_busy = 3.0;
    static1.proxied_total = 55_000;
    static1.share_last_minute = 1.0;
    static1.errors_total = 2;
    static1.scrapes_total = 800;
    static1.scrape_failures_total = 6;
    static1.last_scrape_age_seconds = Some(12.7);
    static1.last_scrape_duration_seconds = Some(2.0);
    static1.last_scrape_error = Some("timed out after 2 s".to_string());
    static1.stats.accesses_accumulated_total = 998_877;
    static1.stats.history = (0..12)
        .map(|i| HistoryPoint {
            requests_per_second: f64::from(i) * 10.0,
            busy_workers: (i < 10).then_some(3),
        })
        .collect();

    // static-2: just added, not checked yet.
    let static2 = node("static-2", "[2001:db8::22]:80", NodeState::Unknown);

    // Counts (nodes, nodes_up, inflight, proxied_total) cover every node;
    // the load figures only the fresh ones (up or draining): web-1, web-2
    // and web-4. static-1 is stale and static-2 unknown: no load figures.
    let web_totals = Totals {
        nodes: 4,
        nodes_up: 2,                   // web-1, web-2 (full is up)
        busy_workers: 19,              // 9 + 9 + 1
        idle_workers: 115,             // 66 + 0 + 49
        capacity: 450,                 // 150 + 150 + 150
        node_accesses_total: 45_184,   // 45 107 + 67 + 10
        node_bytes_total: 18_578_432,  // (18 043 + 97 + 3) x 1024
        requests_per_second: 15_054.1, // 15 035.7 + 13.4 + 5.0
        bytes_per_second: 6_180_081.6, // 6 158 680 + 19 865.6 + 1536
        inflight: 7,                   // 4 + 2 + 0 + 1
        proxied_total: 1_235_379,      // 1 234 567 + 812
        // every node, down ones included: 45 107 + 67 + 500 + 10
        accesses_accumulated_total: 45_684,
        bytes_accumulated_total: 19_090_432, // 18 578 432 + 512 000
    };
    let static_totals = Totals {
        nodes: 2,
        inflight: 3,
        proxied_total: 55_000,
        accesses_accumulated_total: 998_877,
        ..Totals::default()
    };
    let cluster_totals = Totals {
        nodes: 6,
        nodes_up: 2,
        busy_workers: 19,
        idle_workers: 115,
        capacity: 450,
        node_accesses_total: 45_184,
        node_bytes_total: 18_578_432,
        requests_per_second: 15_054.1,
        bytes_per_second: 6_180_081.6,
        inflight: 10,
        proxied_total: 1_290_379,
        // the groups' plus 1 000 requests and 1 024 000 bytes of a node
        // removed by a reload
        accesses_accumulated_total: 1_045_561,
        bytes_accumulated_total: 20_114_432,
    };
    let web_nodes = vec![web1, web2, web3, web4];
    let static_nodes = vec![static1, static2];

    ClusterSnapshot {
        version: "0.1.0".to_string(),
        time_unix: 1_795_747_157.25,
        uptime_seconds: 93_784.6,
        config: ConfigInfo {
            path: "/etc/webcluster/webcluster.toml".to_string(),
            hash: "9f2c4e1ab37d55e0c0ffee1234567890abcdef".to_string(),
            loaded_unix: 1_795_746_857.0,
            reloads_ok: 3,
            reloads_failed: 1,
            last_reload_error: Some(
                "line 12: unknown key `wieght` <in [[group.node]]>".to_string(),
            ),
        },
        totals: cluster_totals,
        groups: vec![
            GroupSnapshot {
                name: "web".to_string(),
                balance: "busyness".to_string(),
                totals: web_totals,
                nodes: web_nodes,
                affinity: Default::default(),
                content_sync: Default::default(),
                queue: crate::cluster::snapshot::QueueSnapshot {
                    length: 3,
                    max_length: 12,
                    timeout_seconds: 2.0,
                    max_queue: 100,
                    queued_total: 412,
                    timeouts_total: 2,
                    refused_total: 0,
                    abandoned_total: 1,
                    wait_p50_seconds: Some(0.012),
                    wait_p99_seconds: Some(0.180),
                },
            },
            GroupSnapshot {
                name: "static".to_string(),
                balance: "round_robin".to_string(),
                totals: static_totals,
                nodes: static_nodes,
                queue: Default::default(),
                affinity: Default::default(),
                content_sync: Default::default(),
            },
        ],
        visitors: VisitorsSnapshot {
            http2_connections: 3,
            http2_streams: 5,
        },
        dns: Vec::new(),
        tls: Vec::new(),
    }
}
