//! Node events in the log at the default level, one line each with the
//! reason and how long the previous state lasted, as a real Apache node is
//! stopped, started again, frozen, thawed and filled: up, down, back up,
//! slow start begun and ended, full and free again. Written to a file, the
//! log has no terminal colour codes.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::webcluster::{base_config, group_config, Webcluster};
use support::{http_get, wait_until, ApacheNode, ApacheOpts};

/// Wait until the log has a line with every one of `parts` after the first
/// `from` bytes; that line, and where the log ended then.
fn wait_line(wc: &Webcluster, from: usize, parts: &[&str]) -> (String, usize) {
    wait_any_line(wc, from, &[parts])
}

/// The first log line after byte `from` that has all the parts of one of
/// `choices`.
fn wait_any_line(wc: &Webcluster, from: usize, choices: &[&[&str]]) -> (String, usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = wc.log();
        let tail = log.get(from..).unwrap_or("");
        if let Some(line) = tail.lines().find(|l| {
            choices
                .iter()
                .any(|parts| parts.iter().all(|p| l.contains(p)))
        }) {
            return (line.to_owned(), log.len());
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {choices:?} after byte {from}:\n{tail}"
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
    // Twelve visitors, one request after another, until the node is held
    // back. A frozen node keeps every request it gets until it is held
    // back (about 300 ms): at a fraction of a millisecond a request, any
    // of them may be stuck there by then, so the requests that show the
    // node gets no more come from new visitors afterwards.
    let visitors: Vec<_> = (0..12)
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
    wait_until("200 requests answered", Duration::from_secs(20), || {
        answered.load(Ordering::Relaxed) >= 200
    });
    let at_freeze = node_status(&wc.status(), "fz1")["proxied_total"]
        .as_u64()
        .expect("proxied_total");
    n1.freeze();
    let (line, _) = wait_line(&wc, 0, &["WARN", "node web/fz1 is held back:"]);
    stop.store(true, Ordering::Relaxed);
    let held = node_status(&wc.status(), "fz1")["proxied_total"]
        .as_u64()
        .expect("proxied_total");
    eprintln!(
        "fz1 got {} request(s) between its freeze and being held back: {line}",
        held - at_freeze
    );
    // 300 new requests, four visitors at a time: all answered, by the
    // other node.
    let fresh: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                (0..75)
                    .map(|_| http_get(listen, "/node", &[]).map(|r| (r.status, r.body)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for v in fresh {
        for r in v.join().expect("visitor") {
            let (status, body) = r.expect("a new request is answered");
            assert_eq!((status, body.trim()), (200, "fz2"), "{line}");
        }
    }
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
    // Held back, the node may also have failed enough status reads to be
    // marked down meanwhile (fall = 3 at 200 ms); either way it comes back.
    wait_any_line(
        &wc,
        0,
        &[
            &["node web/fz1", "no longer held back"],
            &["node web/fz1", "is back up"],
        ],
    );
    for v in visitors {
        let _ = v.join();
    }
    // The requests the frozen node held were answered once it thawed.
    assert_eq!(failed.load(Ordering::Relaxed), 0);
}
