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

/// A frozen node (SIGSTOP: the kernel still accepts its connections, nothing
/// answers) is held back as soon as its requests stop being answered, and
/// gets no new request after that while the other node serves everyone;
/// thawed, it is taken back and the requests it held are answered.
#[test]
fn a_frozen_node_is_held_back_and_gets_no_new_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use support::webcluster::node as node_status;

    let n1 = ApacheNode::start(ApacheOpts::event("fz1", 16));
    let n2 = ApacheNode::start(ApacheOpts::event("fz2", 16));
    let (a1, a2) = (n1.addr(), n2.addr());
    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "")
            + &group_config(
                "web",
                "fall = 3\nrise = 2",
                &[("fz1", a1, ""), ("fz2", a2, "")],
            )
    });
    wc.wait_all_up();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let listen = wc.listen;
    // Four visitors, one request after another, 4,000 requests at most.
    let visitors: Vec<_> = (0..4)
        .map(|_| {
            let (stop, answered, failed) = (
                Arc::clone(&stop),
                Arc::clone(&answered),
                Arc::clone(&failed),
            );
            thread::spawn(move || {
                for _ in 0..1000 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    match http_get(listen, "/node", &[]) {
                        Ok(r) if r.status == 200 => answered.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let wait_answered = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while answered.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < deadline, "only {answered:?} answered");
            thread::sleep(Duration::from_millis(20));
        }
    };
    wait_answered(200);
    let at_freeze = node_status(&wc.status(), "fz1")["proxied_total"]
        .as_u64()
        .expect("proxied_total");
    n1.freeze();
    let (line, _) = wait_line(&wc, 0, &["WARN", "node web/fz1 is held back:"]);
    let held = node_status(&wc.status(), "fz1")["proxied_total"]
        .as_u64()
        .expect("proxied_total");
    eprintln!(
        "fz1 got {} request(s) between its freeze and being held back: {line}",
        held - at_freeze
    );
    let before = answered.load(Ordering::Relaxed);
    wait_answered(before + 300);
    let after = node_status(&wc.status(), "fz1")["proxied_total"]
        .as_u64()
        .expect("proxied_total");
    assert_eq!(
        after,
        held,
        "a held-back node got {} new request(s) ({line})",
        after - held
    );
    n1.thaw();
    wait_line(&wc, 0, &["node web/fz1", "no longer held back"]);
    stop.store(true, Ordering::Relaxed);
    for v in visitors {
        let _ = v.join();
    }
    // The requests the frozen node held were answered once it thawed.
    assert_eq!(failed.load(Ordering::Relaxed), 0);
}
