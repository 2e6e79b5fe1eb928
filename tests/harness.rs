//! Tests of the test-support library itself (`tests/support/`): real Apache
//! (prefork and event) and nginx nodes start from the `docker/` templates,
//! serve their names, expose their status pages only to the allowed
//! addresses, report busy workers, and leave no process behind.

mod support;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use support::{
    busy_workers, capture_status, http_get, http_get_from, idle_workers, loopback,
    nginx_active_connections, process::group_members, scoreboard, wait_until, ApacheNode,
    ApacheOpts, KeepAliveClient, NginxNode, NginxOpts,
};

fn check_apache_node(opts: ApacheOpts) {
    let max = opts.max_workers as usize;
    let node = ApacheNode::start(opts);
    let name = node.name().to_string();

    let resp = http_get(node.addr(), "/node", &[]).expect("GET /node");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, name);
    assert_eq!(resp.header("X-Webcluster-Node"), Some(name.as_str()));
    assert!(resp
        .header("Content-Type")
        .unwrap_or("")
        .starts_with("text/plain"));

    let index = http_get(node.addr(), "/", &[]).expect("GET /");
    assert_eq!(index.status, 200);
    assert!(index.body.contains(&name), "index page: {}", index.body);

    let status = http_get(node.addr(), node.status_path(), &[]).expect("GET status");
    assert_eq!(status.status, 200, "status page: {}", status.body);
    assert!(busy_workers(&status.body).is_some(), "{}", status.body);
    assert!(idle_workers(&status.body).is_some(), "{}", status.body);
    let board = scoreboard(&status.body).expect("a Scoreboard line");
    assert_eq!(board.len(), max, "scoreboard {board:?}");
    assert_eq!(
        node.status_url(),
        format!("http://{}/server-status?auto", node.addr())
    );

    let denied = http_get_from(loopback(2), node.addr(), node.status_path(), &[])
        .expect("GET status from 127.0.0.2");
    assert_eq!(denied.status, 403, "status from a non-allowed address");
    // Ordinary pages are still served to that address.
    let other = http_get_from(loopback(2), node.addr(), "/node", &[]).expect("GET /node");
    assert_eq!(other.body, name);
}

#[test]
fn apache_prefork_node_serves_name_and_guarded_status() {
    check_apache_node(ApacheOpts::prefork("prefork-a", 8));
}

#[test]
fn apache_event_node_serves_name_and_guarded_status() {
    check_apache_node(ApacheOpts::event("event-a", 6));
}

#[test]
fn status_allow_list_takes_several_addresses() {
    let node = ApacheNode::start(ApacheOpts {
        allow_status_from: vec!["127.0.0.1".into(), "127.0.0.3".into()],
        ..ApacheOpts::prefork("acl", 2)
    });
    let from = |n: u8| {
        http_get_from(loopback(n), node.addr(), node.status_path(), &[])
            .expect("GET status")
            .status
    };
    assert_eq!(from(1), 200);
    assert_eq!(from(3), 200);
    assert_eq!(from(2), 403);
}

/// Holds 3 workers with `/sleep` and watches BusyWorkers reach 4 (the three
/// sleepers plus the status request itself). The polling is bounded by the
/// sleepers: it stops once they have all answered.
fn check_busy_workers(opts: ApacheOpts) {
    const SLEEPERS: usize = 3;
    let node = ApacheNode::start(opts);
    let addr = node.addr();
    let barrier = Arc::new(Barrier::new(SLEEPERS + 1));
    let sleepers: Vec<_> = (0..SLEEPERS)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                http_get(addr, "/sleep?ms=1500", &[])
            })
        })
        .collect();
    barrier.wait();
    let mut max_busy = 0;
    let mut polls = 0;
    while polls < 500 && !sleepers.iter().all(|t| t.is_finished()) && max_busy < 4 {
        let body = capture_status(addr, node.status_path());
        max_busy = max_busy.max(busy_workers(&body).expect("BusyWorkers"));
        polls += 1;
        thread::sleep(Duration::from_millis(10));
    }
    for t in sleepers {
        let resp = t.join().expect("sleeper thread").expect("GET /sleep");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body.trim(), node.name());
    }
    assert!(
        max_busy >= 4,
        "BusyWorkers reached only {max_busy} while {SLEEPERS} requests slept"
    );
    // Once they are done (and their connections closed) the node is idle
    // again: BusyWorkers drops back to 1, the status request itself.
    wait_until("BusyWorkers back to 1", Duration::from_secs(10), || {
        busy_workers(&capture_status(addr, node.status_path())) == Some(1)
    });
}

#[test]
fn prefork_sleep_requests_show_as_busy_workers() {
    check_busy_workers(ApacheOpts::prefork("busy-prefork", 8));
}

#[test]
fn event_sleep_requests_show_as_busy_workers() {
    check_busy_workers(ApacheOpts::event("busy-event", 8));
}

#[test]
fn headers_endpoint_echoes_request_headers_and_client_address() {
    let node = ApacheNode::start(ApacheOpts::event("echo", 4));
    let resp = http_get_from(
        loopback(2),
        node.addr(),
        "/headers",
        &[
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Real-IP", "203.0.113.7"),
        ],
    )
    .expect("GET /headers");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.echoed("X-Forwarded-For"),
        Some("203.0.113.7"),
        "{}",
        resp.body
    );
    assert_eq!(
        resp.echoed("X-Real-Ip"),
        Some("203.0.113.7"),
        "{}",
        resp.body
    );
    assert_eq!(resp.echoed("Connection"), Some("close"), "{}", resp.body);
    assert_eq!(
        resp.echoed("REMOTE_ADDR"),
        Some("127.0.0.2"),
        "{}",
        resp.body
    );
    assert_eq!(resp.echoed("NODE_NAME"), Some("echo"), "{}", resp.body);
    let host = format!("{}", node.addr());
    assert_eq!(resp.echoed("Host"), Some(host.as_str()), "{}", resp.body);
}

#[test]
fn keep_alive_client_reuses_one_connection() {
    let node = ApacheNode::start(ApacheOpts::prefork("keepalive", 2));
    let mut client = KeepAliveClient::connect(node.addr()).expect("connect");
    let local = client.local_addr().expect("local addr");
    for _ in 0..3 {
        // Static file: Content-Length.
        let resp = client.get("/node", &[]).expect("GET /node");
        assert_eq!(resp.body, "keepalive");
        // CGI output: chunked, or with a Content-Length when Apache had the
        // whole output before sending the headers.
        let resp = client.get("/headers", &[]).expect("GET /headers");
        assert!(
            resp.header("Transfer-Encoding") == Some("chunked")
                || resp.header("Content-Length").is_some(),
            "{:?}",
            resp.headers
        );
        assert_eq!(resp.echoed("NODE_NAME"), Some("keepalive"));
    }
    assert_eq!(client.local_addr().expect("local addr"), local);
    // All 6 requests were logged with this connection's client port (the log
    // line is written just after the response: wait for it, bounded).
    let port = local.port().to_string();
    wait_until(
        "6 requests logged on one connection",
        Duration::from_secs(10),
        || {
            node.access_log()
                .lines()
                .filter(|l| l.split_whitespace().nth(1) == Some(port.as_str()))
                .count()
                == 6
        },
    );
    let resp = client
        .get("/node", &[("Connection", "close")])
        .expect("last GET");
    assert_eq!(resp.status, 200);
    assert!(client.is_closed_by_peer(Duration::from_secs(5)));
}

#[test]
fn status_code_endpoint_answers_the_asked_status() {
    let node = ApacheNode::start(ApacheOpts::prefork("codes", 2));
    let resp = http_get(node.addr(), "/status-code?code=503", &[]).expect("GET");
    assert_eq!(resp.status, 503);
    assert_eq!(resp.body.trim(), "codes");
    let missing = http_get(node.addr(), "/no-such-page", &[]).expect("GET");
    assert_eq!(missing.status, 404);
}

#[test]
fn stopping_a_node_leaves_no_process_and_restart_reuses_the_port() {
    for mpm_opts in [
        ApacheOpts::prefork("stop-p", 3),
        ApacheOpts::event("stop-e", 3),
    ] {
        let mut node = ApacheNode::start(mpm_opts);
        let addr = node.addr();
        let pid = node.pid().expect("running");
        assert!(group_members(pid).len() >= 2, "master and children");
        // A request in flight while stopping must not keep anything alive.
        let sleeper = thread::spawn(move || http_get(addr, "/sleep?ms=2000", &[]));
        let deadline = Instant::now() + Duration::from_secs(10);
        while busy_workers(&capture_status(addr, "/server-status?auto")) < Some(2)
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(10));
        }
        node.stop();
        assert!(!node.is_running());
        assert_eq!(
            group_members(pid),
            Vec::<u32>::new(),
            "processes left behind"
        );
        let _ = sleeper.join().expect("sleeper thread");
        assert!(
            http_get(addr, "/node", &[]).is_err(),
            "stopped node still answers"
        );

        node.restart();
        assert_eq!(node.addr(), addr);
        let resp = http_get(addr, "/node", &[]).expect("GET after restart");
        assert_eq!(resp.body, node.name());
        let pid = node.pid().expect("running");
        drop(node);
        assert_eq!(
            group_members(pid),
            Vec::<u32>::new(),
            "processes left by drop"
        );
    }
}

#[test]
fn nginx_node_serves_name_and_guarded_stub_status() {
    let mut node = NginxNode::start(NginxOpts::named("nginx-a"));
    let resp = http_get(node.addr(), "/node", &[]).expect("GET /node");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, "nginx-a");
    assert_eq!(resp.header("X-Webcluster-Node"), Some("nginx-a"));
    let index = http_get(node.addr(), "/", &[]).expect("GET /");
    assert!(index.body.contains("nginx-a"));

    let status = http_get(node.addr(), node.status_path(), &[]).expect("GET status");
    assert_eq!(status.status, 200, "{}", status.body);
    assert!(
        nginx_active_connections(&status.body).is_some_and(|n| n >= 1),
        "{}",
        status.body
    );
    assert!(status.body.contains("Reading:"), "{}", status.body);
    let denied =
        http_get_from(loopback(2), node.addr(), node.status_path(), &[]).expect("GET status");
    assert_eq!(denied.status, 403);

    let echo = http_get_from(
        loopback(2),
        node.addr(),
        "/headers",
        &[("X-Forwarded-For", "192.0.2.1")],
    )
    .expect("GET /headers");
    assert_eq!(echo.echoed("X-Forwarded-For"), Some("192.0.2.1"));
    assert_eq!(echo.echoed("REMOTE_ADDR"), Some("127.0.0.2"));

    let pid = node.pid().expect("running");
    node.stop();
    assert_eq!(
        group_members(pid),
        Vec::<u32>::new(),
        "nginx processes left behind"
    );
}

#[test]
fn client_parses_chunked_length_and_close_delimited_bodies() {
    use std::io::{BufReader, Cursor};
    let wire = "HTTP/1.1 100 Continue\r\n\r\n\
                HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n\
                5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: x\r\n\r\n\
                HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope\
                HTTP/1.1 204 No Content\r\n\r\n\
                HTTP/1.0 200 OK\r\n\r\nuntil the end";
    let mut r = BufReader::new(Cursor::new(wire.as_bytes().to_vec()));
    let a = support::http::read_response(&mut r, "GET").expect("chunked");
    assert_eq!((a.status, a.body.as_str()), (200, "hello, world"));
    assert_eq!(a.header("x-a"), Some("1"));
    let b = support::http::read_response(&mut r, "GET").expect("content-length");
    assert_eq!((b.status, b.body.as_str()), (404, "nope"));
    let c = support::http::read_response(&mut r, "GET").expect("no body");
    assert_eq!((c.status, c.body.as_str()), (204, ""));
    let d = support::http::read_response(&mut r, "GET").expect("close-delimited");
    assert_eq!((d.status, d.body.as_str()), (200, "until the end"));
    let eof = support::http::read_response(&mut r, "GET").expect_err("EOF");
    assert_eq!(eof.kind(), std::io::ErrorKind::UnexpectedEof);
}
