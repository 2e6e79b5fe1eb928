//! The PROXY protocol end to end with real servers: HAProxy in front sends
//! PROXY v2 to webcluster, which reads the visitor's address from it, and
//! webcluster sends PROXY v1 or v2 to a real Apache node with mod_remoteip
//! (`RemoteIPProxyProtocol On`), which then logs the visitor's own address.
//! A trusted source that sends no header, and an untrusted one that sends
//! one, reach no node.
//!
//! Visitors connect from other loopback addresses (127.0.0.7, 127.0.0.9)
//! so that their address differs from the proxies' (127.0.0.1).

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use support::http::{connect_from, RawConn};
use support::process::ServerProcess;
use support::webcluster::{base_config, group_config, Webcluster};
use support::{free_port, loopback, wait_until, ApacheNode, ApacheOpts};

const HAPROXY: &str = "/usr/sbin/haproxy";

/// An Apache node whose second port takes only PROXY protocol connections
/// (the visitors' requests through webcluster), while its first port keeps
/// serving its status page to webcluster's scraper and the harness's
/// readiness check without one: the set-up the README gives operators.
struct ProxiedNode {
    node: ApacheNode,
    proxied: SocketAddr,
    _include: tempfile::TempDir,
}

fn proxied_node() -> ProxiedNode {
    let port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let include = dir.path().join("proxy-protocol.conf");
    fs::write(
        &include,
        format!(
            "Listen 127.0.0.1:{port}\n<VirtualHost 127.0.0.1:{port}>\n    \
             RemoteIPProxyProtocol On\n</VirtualHost>\n"
        ),
    )
    .expect("write the include");
    let node = ApacheNode::start(ApacheOpts {
        extra_directives: vec![
            "LoadModule remoteip_module ${NODE_MODULES}/mod_remoteip.so".to_string(),
            format!("Include {}", include.display()),
        ],
        ..ApacheOpts::event("pp", 8)
    });
    ProxiedNode {
        node,
        proxied: SocketAddr::from(([127, 0, 0, 1], port)),
        _include: dir,
    }
}

/// webcluster trusting PROXY headers from 127.0.0.1 (HAProxy), sending
/// `version` to the node's PROXY port.
fn proxy(node: &ProxiedNode, version: &str) -> Webcluster {
    let status = node.node.status_url();
    let addr = node.proxied;
    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "proxy_protocol_from = [\"127.0.0.1/32\"]")
            + &group_config(
                "web",
                &format!("send_proxy_protocol = \"{version}\""),
                &[("n1", addr, &format!("status_url = \"{status}\""))],
            )
    });
    wc.wait_all_up();
    wc
}

/// HAProxy in TCP mode on a free port, sending PROXY v2 to `backend`.
struct Haproxy {
    listen: SocketAddr,
    _server: ServerProcess,
    _dir: tempfile::TempDir,
}

fn haproxy(backend: SocketAddr) -> Haproxy {
    support::require_installed(HAPROXY, "haproxy");
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().to_path_buf();
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = dir.join("haproxy.cfg");
    fs::write(
        &cfg,
        format!(
            "global\n    maxconn 100\ndefaults\n    mode tcp\n    timeout connect 5s\n    \
             timeout client 30s\n    timeout server 30s\nfrontend fe\n    bind {listen}\n    \
             default_backend be\nbackend be\n    server wc {backend} send-proxy-v2\n"
        ),
    )
    .expect("write haproxy.cfg");
    let mut cmd = Command::new(HAPROXY);
    cmd.arg("-db").arg("-f").arg(&cfg);
    let mut server = ServerProcess::spawn(cmd, &dir).expect("run haproxy");
    support::process::wait_until_ready(&mut server, Duration::from_secs(10), || {
        std::net::TcpStream::connect(listen).is_ok()
    })
    .unwrap_or_else(|e| {
        panic!(
            "haproxy: {e}\n{}",
            fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
        )
    });
    Haproxy {
        listen,
        _server: server,
        _dir: tmp,
    }
}

/// `GET path` from `from` to `addr`: the status and body.
fn get_from(from: u8, addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = connect_from(loopback(from), addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: pp.test\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, raw)
}

/// The access log line of the node for `path`.
fn logged(node: &ApacheNode, path: &str) -> String {
    wait_until("the node logs the request", Duration::from_secs(10), || {
        node.access_log().contains(path)
    });
    node.access_log()
        .lines()
        .find(|l| l.contains(path))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn the_node_logs_the_visitor_address_through_haproxy_and_webcluster() {
    for version in ["v1", "v2"] {
        let node = proxied_node();
        let wc = proxy(&node, version);
        let haproxy = haproxy(wc.listen);
        let front = haproxy.listen;
        let path = format!("/node?via=haproxy-{version}");
        let (status, raw) = get_from(7, front, &path);
        assert_eq!(status, 200, "{raw}");
        // The node's own `%a`: mod_remoteip took it from webcluster's header,
        // which took it from HAProxy's.
        let line = logged(&node.node, &path);
        assert!(line.starts_with("127.0.0.7 "), "{version}: {line}");
        // And webcluster's access to it came with the address too: a second
        // request on its own connection (not pooled: private).
        let path2 = format!("/node?again={version}");
        let (status, raw) = get_from(8, front, &path2);
        assert_eq!(status, 200, "{raw}");
        assert!(
            logged(&node.node, &path2).starts_with("127.0.0.8 "),
            "{}",
            node.node.access_log()
        );
    }
}

#[test]
fn no_header_from_a_trusted_source_and_a_header_from_another_reach_no_node() {
    let node = proxied_node();
    let wc = proxy(&node, "v1");
    // From 127.0.0.1 (trusted): a request without the header is not read
    // as one; the connection is closed without an answer.
    let mut conn = RawConn::connect(wc.listen).expect("connect");
    conn.send(b"GET /node?trusted-no-header HTTP/1.1\r\nHost: pp.test\r\n\r\n")
        .expect("send");
    let rest = conn.read_until_closed().unwrap_or_default();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    // From 127.0.0.9 (not trusted): a PROXY header is no HTTP: 400.
    let mut s = connect_from(loopback(9), wc.listen).expect("connect");
    s.write_all(
        b"PROXY TCP4 203.0.113.5 127.0.0.1 4000 80\r\nGET /node?spoofed HTTP/1.1\r\nHost: pp.test\r\n\r\n",
    )
    .expect("send");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    assert!(raw.starts_with("HTTP/1.1 400 "), "{raw}");
    // A request that does go through, so that the log is known written.
    let haproxy = haproxy(wc.listen);
    let front = haproxy.listen;
    let (status, raw) = get_from(7, front, "/node?after");
    assert_eq!(status, 200, "{raw}");
    logged(&node.node, "/node?after");
    let log = node.node.access_log();
    assert!(
        !log.contains("trusted-no-header")
            && !log.contains("spoofed")
            && !log.contains("203.0.113.5"),
        "{log}"
    );
}
