//! The status parsers against real captures (tests/data/status-samples/):
//! the exact figures of every page, the error paths, and properties that no
//! input (random, truncated or mutated) makes them panic.

use proptest::prelude::*;
use proptest::sample::Index;
use std::time::{Duration, Instant};
use webcluster::status::rates::{self, Sample};
use webcluster::status::{
    apache, nginx, parse, ParseError, ScoreboardCounts, StatusReport, MAX_PAGE_BYTES,
};

const APACHE_SAMPLES: &[&str] = &[
    "apache22-auto-sample.txt",
    "apache24-event-auto-extendedstatus-off.txt",
    "apache24-event-auto-idle.txt",
    "apache24-event-auto-keepalive.txt",
    "apache24-event-auto.txt",
    "apache24-prefork-auto-idle.txt",
    "apache24-prefork-auto.txt",
    "apache24-worker-auto.txt",
    "peer/apache24-event-2.4.23.txt",
    "peer/apache24-event-tls-2.4.23.txt",
    "peer/apache24-prefork-2.4.23.txt",
    "peer/apache24-worker-2.4.23.txt",
];
const NGINX_SAMPLES: &[&str] = &["nginx-stub_status-idle.txt", "nginx-stub_status.txt"];

fn sample(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/data/status-samples/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn all_samples() -> Vec<Vec<u8>> {
    APACHE_SAMPLES
        .iter()
        .chain(NGINX_SAMPLES)
        .map(|n| sample(n))
        .collect()
}

/// Parses a capture, detecting its kind, and checks the hinted parse agrees.
fn read(name: &str) -> StatusReport {
    let body = sample(name);
    let report = parse(None, &body).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        parse(Some(report.kind), &body).as_ref(),
        Ok(&report),
        "{name}"
    );
    report
}

fn counts(pairs: &[(char, u32)]) -> ScoreboardCounts {
    let board: String = pairs
        .iter()
        .flat_map(|&(c, n)| std::iter::repeat_n(c, n as usize))
        .collect();
    ScoreboardCounts::from_scoreboard(&board)
}

/// The header lines every captured 2.4.71 page shares.
fn assert_debian_2_4_71(r: &StatusReport, mpm: &str, restart_time: &str) {
    assert_eq!(r.kind, apache::KIND);
    assert_eq!(r.server_name.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        r.server_version.as_deref(),
        Some("Apache/2.4.71 (Debian) OpenSSL/3.0.19")
    );
    assert_eq!(r.mpm.as_deref(), Some(mpm));
    assert_eq!(r.restart_time.as_deref(), Some(restart_time));
    assert_eq!((r.config_generation, r.mpm_generation), (Some(1), Some(0)));
    assert_eq!(r.scoreboard.as_ref().map(String::len), Some(150));
    assert_eq!(r.scoreboard_capacity, Some(150));
    assert_eq!(r.capacity(Some(64)), Some(150));
    assert_eq!(r.nginx, None);
}

#[test]
fn apache24_event_under_load() {
    let r = read("apache24-event-auto.txt");
    assert_debian_2_4_71(&r, "event", "Friday, 27-Nov-2026 02:39:13 UTC");
    assert_eq!(
        (r.busy_workers, r.idle_workers, r.graceful_workers),
        (9, Some(66), Some(0))
    );
    assert_eq!(
        (r.total_accesses, r.total_kbytes),
        (Some(45107), Some(18043))
    );
    assert_eq!(r.total_bytes(), Some(18043 * 1024));
    assert_eq!(r.uptime_seconds, Some(3));
    assert_eq!(
        (r.cpu_user, r.cpu_system, r.cpu_load),
        (Some(0.41), Some(1.67), Some(69.3333))
    );
    assert_eq!(
        (r.load1, r.load5, r.load15),
        (Some(1.01), Some(0.60), Some(0.27))
    );
    assert_eq!((r.processes, r.stopping), (Some(3), Some(0)));
    assert_eq!(
        [
            r.conns_total,
            r.conns_async_wait_io,
            r.conns_async_writing,
            r.conns_async_keep_alive,
            r.conns_async_closing
        ],
        [Some(0); 5]
    );
    assert_eq!(
        r.scoreboard_counts,
        Some(counts(&[('_', 66), ('W', 9), ('.', 75)]))
    );
    assert!(r
        .scoreboard
        .as_deref()
        .is_some_and(|s| s.starts_with("_____________________W___")));
}

#[test]
fn apache24_event_idle_and_keepalive() {
    let idle = read("apache24-event-auto-idle.txt");
    assert_debian_2_4_71(&idle, "event", "Friday, 27-Nov-2026 02:39:13 UTC");
    assert_eq!((idle.busy_workers, idle.idle_workers), (1, Some(74)));
    assert_eq!(
        (idle.total_accesses, idle.total_kbytes, idle.uptime_seconds),
        (Some(198802), Some(79252), Some(9))
    );
    assert_eq!(
        (idle.cpu_load, idle.conns_total, idle.processes),
        (Some(107.667), Some(68), Some(3))
    );
    assert_eq!(
        idle.scoreboard_counts,
        Some(counts(&[('_', 74), ('W', 1), ('.', 75)]))
    );

    let ka = read("apache24-event-auto-keepalive.txt");
    assert_debian_2_4_71(&ka, "event", "Friday, 27-Nov-2026 02:39:13 UTC");
    assert_eq!((ka.busy_workers, ka.idle_workers), (4, Some(71)));
    assert_eq!(
        (ka.total_accesses, ka.total_kbytes, ka.uptime_seconds),
        (Some(198811), Some(79256), Some(16))
    );
    assert_eq!(
        (ka.cpu_load, ka.conns_total, ka.conns_async_keep_alive),
        (Some(60.625), Some(0), Some(0))
    );
    assert_eq!(
        ka.scoreboard_counts,
        Some(counts(&[('_', 71), ('R', 3), ('W', 1), ('.', 75)]))
    );
}

#[test]
fn apache24_event_without_extended_status() {
    let r = read("apache24-event-auto-extendedstatus-off.txt");
    assert_debian_2_4_71(&r, "event", "Friday, 27-Nov-2026 02:40:27 UTC");
    assert_eq!((r.busy_workers, r.idle_workers), (1, Some(49)));
    assert_eq!(
        (r.total_accesses, r.total_kbytes, r.total_bytes()),
        (None, None, None)
    );
    assert_eq!((r.cpu_load, r.cpu_user, r.cpu_system), (None, None, None));
    assert_eq!(r.uptime_seconds, Some(2), "from ServerUptimeSeconds");
    assert_eq!(
        (r.load1, r.processes, r.conns_total),
        (Some(3.07), Some(2), Some(0))
    );
    assert_eq!(
        r.scoreboard_counts,
        Some(counts(&[('_', 49), ('W', 1), ('.', 100)]))
    );
}

#[test]
fn apache24_prefork() {
    let busy = read("apache24-prefork-auto.txt");
    assert_debian_2_4_71(&busy, "prefork", "Friday, 27-Nov-2026 02:40:04 UTC");
    assert_eq!((busy.busy_workers, busy.idle_workers), (9, Some(0)));
    assert_eq!(
        (busy.total_accesses, busy.total_kbytes, busy.uptime_seconds),
        (Some(67), Some(97), Some(5))
    );
    assert_eq!(
        (busy.cpu_user, busy.cpu_system, busy.cpu_load),
        (Some(0.01), Some(0.0), Some(0.2))
    );
    assert_eq!(
        (busy.processes, busy.stopping, busy.conns_total),
        (None, None, None)
    );
    assert_eq!(
        busy.scoreboard.as_deref().map(|s| &s[..12]),
        Some("KKKKKKRRSWR.")
    );
    assert_eq!(
        busy.scoreboard_counts,
        Some(counts(&[
            ('K', 6),
            ('R', 3),
            ('S', 1),
            ('W', 1),
            ('.', 139)
        ]))
    );

    let idle = read("apache24-prefork-auto-idle.txt");
    assert_debian_2_4_71(&idle, "prefork", "Friday, 27-Nov-2026 02:40:04 UTC");
    assert_eq!((idle.busy_workers, idle.idle_workers), (1, Some(4)));
    assert_eq!(
        (idle.total_accesses, idle.total_kbytes, idle.uptime_seconds),
        (Some(60), Some(94), Some(2))
    );
    assert_eq!(idle.cpu_load, Some(0.5));
    assert_eq!(
        idle.scoreboard_counts,
        Some(counts(&[('_', 4), ('W', 1), ('.', 145)]))
    );
}

#[test]
fn apache24_worker() {
    let r = read("apache24-worker-auto.txt");
    assert_debian_2_4_71(&r, "worker", "Friday, 27-Nov-2026 02:40:19 UTC");
    assert_eq!((r.busy_workers, r.idle_workers), (1, Some(49)));
    assert_eq!(
        (r.total_accesses, r.total_kbytes, r.uptime_seconds),
        (Some(10), Some(3), Some(2))
    );
    assert_eq!(r.cpu_load, None, "no CPULoad line when no CPU was used");
    assert_eq!((r.cpu_user, r.load1), (Some(0.0), Some(3.17)));
    assert_eq!(
        r.scoreboard_counts,
        Some(counts(&[('_', 49), ('W', 1), ('.', 100)]))
    );
}

#[test]
fn apache22_has_no_header_and_no_capacity() {
    let r = read("apache22-auto-sample.txt");
    assert_eq!(
        (&r.server_name, &r.server_version, &r.mpm),
        (&None, &None, &None)
    );
    assert_eq!((r.busy_workers, r.idle_workers), (2, Some(8)));
    assert_eq!(
        (r.total_accesses, r.total_kbytes),
        (Some(302311), Some(1677830))
    );
    assert_eq!((r.uptime_seconds, r.cpu_load), (Some(45683), Some(27.4052)));
    assert_eq!(r.scoreboard.as_ref().map(String::len), Some(256));
    assert_eq!(
        r.scoreboard_capacity, None,
        "2.2 prints ServerLimit x ThreadLimit slots"
    );
    assert_eq!((r.capacity(None), r.capacity(Some(150))), (None, Some(150)));
    assert_eq!(
        r.scoreboard_counts,
        Some(counts(&[('_', 8), ('W', 1), ('K', 1), ('.', 246)]))
    );
}

#[test]
fn peer_event_figures_disagree_and_are_kept_as_printed() {
    let r = read("peer/apache24-event-2.4.23.txt");
    assert_eq!(r.server_name.as_deref(), Some("localhost"));
    assert_eq!(r.server_version.as_deref(), Some("Apache/2.4.23 (Unix)"));
    assert_eq!((r.busy_workers, r.idle_workers), (1, Some(74)));
    assert_eq!(
        r.scoreboard_capacity,
        Some(5),
        "5 slots printed, though busy + idle = 75"
    );
    assert_eq!(
        (r.total_accesses, r.total_kbytes, r.uptime_seconds),
        (Some(131), Some(138), Some(445))
    );
    assert_eq!(
        (r.cpu_user, r.cpu_system, r.cpu_load),
        (Some(0.25), Some(0.15), Some(0.0898876))
    );
    assert_eq!((r.load1, r.load15), (Some(0.02), Some(0.0)));
    assert_eq!(
        (r.processes, r.stopping, r.conns_total),
        (Some(5), Some(0), Some(0))
    );
    assert_eq!((r.graceful_workers, r.conns_async_wait_io), (None, None));
    assert_eq!(
        r.restart_time.as_deref(),
        Some("Friday, 29-Jul-2016 13:58:49 UTC")
    );
    assert_eq!(r.scoreboard_counts, Some(counts(&[('_', 4), ('W', 1)])));

    let tls = read("peer/apache24-event-tls-2.4.23.txt");
    assert_eq!(tls, r, "the TLS cache block adds nothing");
}

#[test]
fn peer_prefork_and_worker() {
    for (name, mpm) in [
        ("peer/apache24-prefork-2.4.23.txt", "prefork"),
        ("peer/apache24-worker-2.4.23.txt", "worker"),
    ] {
        let r = read(name);
        assert_eq!(r.mpm.as_deref(), Some(mpm), "{name}");
        assert_eq!(
            r.server_version.as_deref(),
            Some("Apache/2.4.23 (Unix) OpenSSL/1.0.2h")
        );
        assert_eq!(
            r.restart_time.as_deref(),
            Some("Thursday, 08-Sep-2016 15:08:07 CEST")
        );
        assert_eq!(
            (r.busy_workers, r.idle_workers, r.scoreboard_capacity),
            (2, Some(48), Some(150))
        );
        assert_eq!(
            (r.total_accesses, r.total_kbytes, r.uptime_seconds),
            (Some(10), Some(38), Some(85))
        );
        assert_eq!((r.cpu_load, r.load15), (Some(0.0588235), Some(0.05)));
        assert_eq!(
            r.scoreboard_counts,
            Some(counts(&[('_', 48), ('R', 1), ('K', 1), ('.', 100)]))
        );
    }
}

#[test]
fn nginx_stub_status() {
    let r = read("nginx-stub_status.txt");
    assert_eq!(r.kind, nginx::KIND);
    assert_eq!((r.busy_workers, r.idle_workers), (4, None));
    assert_eq!(
        (r.total_accesses, r.total_kbytes, r.total_bytes()),
        (Some(34), None, None)
    );
    assert_eq!(
        (
            r.scoreboard_capacity,
            r.capacity(None),
            r.capacity(Some(512))
        ),
        (None, None, Some(512))
    );
    let n = r.nginx.unwrap();
    assert_eq!(
        (n.active, n.accepts, n.handled, n.requests),
        (9, 34, 34, 34)
    );
    assert_eq!((n.reading, n.writing, n.waiting), (3, 1, 5));

    let idle = read("nginx-stub_status-idle.txt");
    assert_eq!((idle.busy_workers, idle.total_accesses), (1, Some(35)));
    let n = idle.nginx.unwrap();
    assert_eq!(
        (n.active, n.accepts, n.handled, n.requests),
        (1, 35, 35, 35)
    );
    assert_eq!((n.reading, n.writing, n.waiting), (0, 1, 0));
}

#[test]
fn duplicated_busy_idle_pair_takes_the_last() {
    // mpm_event before 2.4.58: generic pair first, event's per-process pair second.
    let page = b"localhost\nServerVersion: Apache/2.4.52 (Ubuntu)\nServerMPM: event\n\
                 BusyWorkers: 12\nIdleWorkers: 38\nProcesses: 2\nStopping: 1\n\
                 BusyWorkers: 10\nIdleWorkers: 40\nConnsTotal: 14\nScoreboard: GGWW__\n";
    let r = parse(None, page).unwrap();
    assert_eq!((r.busy_workers, r.idle_workers), (10, Some(40)));
    assert_eq!(
        (r.stopping, r.conns_total, r.scoreboard_capacity),
        (Some(1), Some(14), Some(6))
    );
}

#[test]
fn garbled_values_are_errors_naming_line_and_key() {
    let page = String::from_utf8(sample("apache24-event-auto.txt")).unwrap();
    let err = |page: String| parse(None, page.as_bytes()).unwrap_err().to_string();
    assert_eq!(
        err(page.replace("BusyWorkers: 9", "BusyWorkers: abc")),
        "line 27: BusyWorkers: `abc` is not a number"
    );
    assert_eq!(
        err(page.replace("IdleWorkers: 66", "IdleWorkers: -3")),
        "line 29: IdleWorkers: `-3` is negative"
    );
    assert_eq!(
        err(page.replace("Total Accesses: 45107", "Total Accesses: 4.5")),
        "line 14: Total Accesses: `4.5` is not a whole number"
    );
    assert_eq!(
        err(page.replace("BusyWorkers: 9\n", "")),
        "missing BusyWorkers line"
    );
    let nginx = String::from_utf8(sample("nginx-stub_status.txt")).unwrap();
    assert_eq!(
        err(nginx.replace("34 34 34", "34 x 34")),
        "line 3: handled: `x` is not a number"
    );
}

#[test]
fn whole_number_g_floats_are_accepted() {
    let page = b"BusyWorkers: 3\nTotal Accesses: 1.5e+06\nTotal kBytes: 20.\n";
    let r = parse(None, page).unwrap();
    assert_eq!(
        (r.total_accesses, r.total_kbytes),
        (Some(1_500_000), Some(20))
    );
}

#[test]
fn html_empty_huge_and_binary_pages_are_refused() {
    let html = b"<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 3.2 Final//EN\">\n<html><head>\n<title>Apache Status</title>";
    assert_eq!(
        parse(None, html).unwrap_err().to_string(),
        "got an HTML page, not ?auto (is the status URL missing ?auto)"
    );
    assert_eq!(
        parse(Some(apache::KIND), b"Welcome\n<HTML>hi</HTML>"),
        Err(ParseError::Html(apache::KIND))
    );
    assert_eq!(parse(None, b""), Err(ParseError::Empty));
    assert_eq!(
        parse(Some(nginx::KIND), b"\n\n  \n"),
        Err(ParseError::Empty)
    );

    let mut huge = sample("apache24-event-auto.txt");
    huge.resize(2_000_000, b'\n');
    assert_eq!(
        parse(None, &huge).unwrap_err().to_string(),
        "page is 2000000 bytes, over the 1 MiB limit"
    );
    let mut limit = sample("apache24-event-auto.txt");
    limit.resize(MAX_PAGE_BYTES, b'\n');
    assert_eq!(
        parse(None, &limit).map(|r| r.busy_workers),
        Ok(9),
        "exactly the limit is fine"
    );

    assert!(matches!(
        parse(None, &[0x1f, 0x8b, 0x08, 0x00]),
        Err(ParseError::NotText { offset: 0 })
    ));
    assert!(matches!(
        parse(None, b"BusyWorkers: 1\n\xc3\x28"),
        Err(ParseError::NotText { offset: 15 })
    ));
    assert_eq!(
        parse(None, b"\xff\xfe").unwrap_err().to_string(),
        "not UTF-8/ASCII text (binary data at byte 0)"
    );
}

#[test]
fn a_page_of_the_other_kind_is_named() {
    let err = parse(Some(nginx::KIND), &sample("apache24-worker-auto.txt")).unwrap_err();
    assert_eq!(
        err,
        ParseError::WrongKind {
            expected: nginx::KIND,
            found: apache::KIND
        }
    );
    let err = parse(Some(apache::KIND), &sample("nginx-stub_status.txt")).unwrap_err();
    assert_eq!(
        err,
        ParseError::WrongKind {
            expected: apache::KIND,
            found: nginx::KIND
        }
    );
}

#[test]
fn every_prefix_and_suffix_of_every_sample_parses_or_errs() {
    for body in all_samples() {
        for cut in 0..=body.len() {
            for hint in [None, Some(apache::KIND), Some(nginx::KIND)] {
                let _ = parse(hint, &body[..cut]);
                let _ = parse(hint, &body[cut..]);
            }
        }
    }
}

#[test]
fn truncated_pages_are_errors_until_busy_workers_is_read() {
    let body = sample("apache24-event-auto.txt");
    let busy_end = body
        .windows(14)
        .position(|w| w == b"BusyWorkers: 9")
        .unwrap()
        + 14;
    for cut in 0..busy_end {
        assert!(
            parse(Some(apache::KIND), &body[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    assert_eq!(
        parse(None, &body[..busy_end]).map(|r| r.busy_workers),
        Ok(9)
    );
}

#[test]
fn rates_between_real_captures() {
    let at = Instant::now();
    let sample_at = |name: &str, secs: u64| Sample {
        at: at + Duration::from_secs(secs),
        report: read(name),
    };
    // Same server: CurrentTime 02:39:17, 02:39:23, 02:39:29.
    let load = sample_at("apache24-event-auto.txt", 0);
    let idle = sample_at("apache24-event-auto-idle.txt", 6);
    let keepalive = sample_at("apache24-event-auto-keepalive.txt", 12);

    let r = rates::between(&load, &idle).unwrap();
    assert_eq!(r.requests_per_second, (198802.0 - 45107.0) / 6.0);
    assert_eq!(r.bytes_per_second, Some((79252.0 - 18043.0) * 1024.0 / 6.0));
    let r = rates::between(&idle, &keepalive).unwrap();
    assert_eq!(r.requests_per_second, 9.0 / 6.0);

    // A different server (prefork, restarted later) is not a continuation.
    let prefork = sample_at("apache24-prefork-auto.txt", 60);
    assert!(rates::restarted(&keepalive.report, &prefork.report));
    assert_eq!(rates::between(&keepalive, &prefork), None);
    // Without ExtendedStatus there is no counter.
    let off = sample_at("apache24-event-auto-extendedstatus-off.txt", 70);
    assert_eq!(
        rates::between(
            &off,
            &Sample {
                at: off.at + Duration::from_secs(1),
                ..off.clone()
            }
        ),
        None
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        for hint in [None, Some(apache::KIND), Some(nginx::KIND)] {
            let _ = parse(hint, &body);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(body in "(?s).{0,600}") {
        let _ = parse(None, body.as_bytes());
        let _ = webcluster::status::apache::parse(&body);
        let _ = webcluster::status::nginx::parse(&body);
    }

    #[test]
    fn mutated_samples_never_panic(
        which in 0..APACHE_SAMPLES.len() + NGINX_SAMPLES.len(),
        edits in proptest::collection::vec((any::<Index>(), any::<u8>()), 0..16),
        cut in any::<Index>(),
    ) {
        let mut body = all_samples().swap_remove(which);
        for (at, byte) in edits {
            let at = at.index(body.len());
            body[at] = byte;
        }
        body.truncate(cut.index(body.len() + 1));
        for hint in [None, Some(apache::KIND), Some(nginx::KIND)] {
            let _ = parse(hint, &body);
        }
    }

    #[test]
    fn written_figures_are_read_back(busy in any::<u32>(), idle in any::<u32>(), accesses in any::<u64>(), slots in 1usize..400) {
        let page = format!(
            "host\nServerMPM: event\nTotal Accesses: {accesses}\nBusyWorkers: {busy}\nIdleWorkers: {idle}\nScoreboard: {}\n",
            "_".repeat(slots)
        );
        let r = parse(None, page.as_bytes()).unwrap();
        prop_assert_eq!((r.busy_workers, r.idle_workers, r.total_accesses), (busy, Some(idle), Some(accesses)));
        prop_assert_eq!(r.scoreboard_capacity, Some(slots as u32));
    }

    #[test]
    fn rates_are_never_negative(
        a in any::<(u64, u64, u64)>(), b in any::<(u64, u64, u64)>(), millis in 0u64..100_000,
    ) {
        let report = |(accesses, kbytes, uptime): (u64, u64, u64)| {
            let mut r = StatusReport::new(apache::KIND);
            (r.total_accesses, r.total_kbytes, r.uptime_seconds) = (Some(accesses), Some(kbytes), Some(uptime));
            r
        };
        let at = Instant::now();
        // Extremes (u64::MAX, 0) are likelier than uniform draws would make them.
        let (a, b) = if millis % 7 == 0 { ((a.0, a.1, 0), (b.0, b.1, u64::MAX)) } else { (a, b) };
        let prev = Sample { at, report: report(a) };
        let cur = Sample { at: at + Duration::from_millis(millis), report: report(b) };
        if let Some(r) = rates::between(&prev, &cur) {
            prop_assert!(r.requests_per_second >= 0.0 && r.requests_per_second.is_finite());
            prop_assert!(r.bytes_per_second.is_none_or(|b| b >= 0.0 && b.is_finite()));
        }
    }
}
