//! Node events in the log at the default level, one line each with the
//! reason and how long the previous state lasted, as a real Apache node is
//! stopped, started again, frozen, thawed and filled: up, down, back up,
//! slow start begun and ended, full and free again. Written to a file, the
//! log has no terminal colour codes.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::webcluster::{base_config, group_config, Webcluster};
use support::{http_get, ApacheNode, ApacheOpts};

/// Wait until the log has a line with every one of `parts` after the first
/// `from` bytes; that line, and where the log ended then.
fn wait_line(wc: &Webcluster, from: usize, parts: &[&str]) -> (String, usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = wc.log();
        let tail = log.get(from..).unwrap_or("");
        if let Some(line) = tail.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return (line.to_owned(), log.len());
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {parts:?} after byte {from}:\n{tail}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn node_state_changes_are_logged_with_reason_and_duration() {
    let mut node = ApacheNode::start(ApacheOpts::prefork("ev1", 4));
    let addr = node.addr();
    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "")
            + &group_config(
                "web",
                "fall = 2\nrise = 2\nslow_start = \"1s\"",
                &[("ev1", addr, "")],
            )
    });
    let (line, at) = wait_line(&wc, 0, &["INFO", "node web/ev1 is up (first status read)"]);
    assert!(!line.contains('\x1b'), "{line:?}");

    // Stopped: down after its time up, with the reason.
    node.stop();
    let (line, at) = wait_line(&wc, at, &["WARN", "node web/ev1 is down after", "up:"]);
    assert!(line.contains("2 status checks failed in a row"), "{line}");

    // Started again: back up after its time down, slow start, its end.
    node.restart();
    let (line, at) = wait_line(&wc, at, &["INFO", "node web/ev1 is back up after"]);
    assert!(
        line.contains("down (2 good status checks); slow start over 1s"),
        "{line}"
    );
    let (_, at) = wait_line(&wc, at, &["INFO", "node web/ev1 ended its slow start"]);

    // Frozen (the kernel still accepts): down when its status stops
    // answering; thawed, back.
    node.freeze();
    let (line, at) = wait_line(&wc, at, &["WARN", "node web/ev1 is down after"]);
    assert!(line.contains("no answer within"), "{line}");
    node.thaw();
    let (_, at) = wait_line(&wc, at, &["INFO", "node web/ev1 is back up after"]);

    // Every worker held: full; released: idle workers again.
    let holders: Vec<_> = (0..4)
        .map(|_| thread::spawn(move || http_get(addr, "/sleep?ms=3000", &[])))
        .collect();
    let (line, at) = wait_line(&wc, at, &["WARN", "node web/ev1 is full:"]);
    assert!(line.contains("of 4 workers busy, none idle"), "{line}");
    for h in holders {
        let _ = h.join();
    }
    wait_line(&wc, at, &["INFO", "node web/ev1 has idle workers again"]);
    assert!(!wc.log().contains('\x1b'), "{}", wc.log());
}
