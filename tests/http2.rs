//! HTTP/2 from visitors (issue 15, item 4), end to end: the real binary
//! with h2c (prior knowledge) on its plain listener, in front of real
//! Apache nodes, driven by curl, nghttp2's `h2load`, and a small raw-frame
//! client (below) for what well-behaved clients never send.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use support::webcluster::{base_config, group_config, Webcluster};
use support::{http_get, wait_until, ApacheNode, ApacheOpts};

const NODE_HEADER: &str = "x-webcluster-node";

/// `/echo`: the request body back.
const ECHO_CGI: &str = r#"#!/bin/sh
tmp=$(mktemp) || exit 1
trap 'rm -f "$tmp"' EXIT
cat > "$tmp"
printf 'Content-Type: application/octet-stream\r\n\r\n'
cat "$tmp"
"#;

fn echo_node(name: &str) -> ApacheNode {
    echo_node_with(name, 16)
}

fn echo_node_with(name: &str, workers: u32) -> ApacheNode {
    ApacheNode::start(ApacheOpts {
        extra_cgis: vec![("echo".to_string(), ECHO_CGI.to_string())],
        ..ApacheOpts::event(name, workers)
    })
}

fn start(tables: &str, group_extra: &str, nodes: &[(&str, SocketAddr, &str)]) -> Webcluster {
    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "") + tables + "\n" + &group_config("web", group_extra, nodes)
    });
    if !group_extra.contains("scrape = false") {
        wc.wait_all_up();
    }
    listening(&wc);
    wc
}

/// Until the proxy's listener takes connections: the harness waits for the
/// admin listener, and pingora starts the proxy service after it.
fn listening(wc: &Webcluster) {
    wait_until(
        "the proxy listener takes connections",
        Duration::from_secs(10),
        || TcpStream::connect(wc.listen).is_ok(),
    );
}

/// A response as curl saw it.
#[derive(Debug)]
struct CurlResponse {
    version: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl CurlResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request with curl over h2c (prior knowledge).
fn curl_h2(addr: SocketAddr, path: &str, args: &[&str]) -> CurlResponse {
    let out = Command::new("curl")
        .args([
            "-s",
            "-S",
            "-i",
            "--http2-prior-knowledge",
            "--max-time",
            "20",
        ])
        .args(args)
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {path} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or("").to_string();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    CurlResponse {
        version,
        status,
        headers,
        body: body.to_string(),
    }
}

/// The length of the node's access log once every request made before
/// is in it: Apache writes a request's line after its response went out,
/// so the last one may still be on its way when the client has its
/// answer. A request made now through the proxy is waited for instead.
fn settled_log_len(node: &ApacheNode, wc: &Webcluster) -> usize {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    get_logged(node, wc, &format!("/node?settled-{n}"));
    node.access_log().len()
}

/// GET `path` through the proxy (200) and wait until the node logged it.
fn get_logged(node: &ApacheNode, wc: &Webcluster, path: &str) {
    let r = http_get(wc.listen, path, &[]).expect("GET through the proxy");
    assert_eq!(r.status, 200, "{r:?}");
    wait_until("the node logs the request", Duration::from_secs(10), || {
        node.access_log().contains(path)
    });
}

/// Since the node's access log was `mark` bytes long, it logged nothing
/// but status scrapes and the one request made now (over HTTP/1.1) through
/// the proxy, which also shows the proxy still serves.
fn assert_node_saw_nothing(node: &ApacheNode, wc: &Webcluster, mark: usize, what: &str) {
    let after = format!(
        "/node?after-{}",
        what.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    );
    get_logged(node, wc, &after);
    let log = node.access_log();
    let log = log.get(mark..).unwrap_or(&log);
    let seen: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("/server-status"))
        .collect();
    assert!(
        seen.len() == 1 && seen[0].contains(&after),
        "{what}: the node saw more than the request made after it:\n{log}"
    );
}

// ---------------------------------------------------------------------------
// A raw HTTP/2 client: frames written by hand, header blocks as HPACK
// literals (RFC 7541 6.2.2, never indexed by the decoder's table), so that
// any name, value or pseudo-header order can be sent.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn hpack_int(out: &mut Vec<u8>, prefix_bits: u8, first: u8, mut v: usize) {
    let max = (1usize << prefix_bits) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literal fields without indexing, as given.
fn header_block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0);
        hpack_int(&mut out, 7, 0, name.len());
        out.extend_from_slice(name);
        hpack_int(&mut out, 7, 0, value.len());
        out.extend_from_slice(value);
    }
    out
}

/// What became of a stream.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// RST_STREAM with this error code.
    Reset(u32),
    /// GOAWAY with this error code (a connection error), before any answer.
    GoAway(u32),
    /// The connection closed before any answer.
    Closed,
    /// A response: its first header block byte (0x88 is `:status: 200`
    /// from the static table), its body, whether END_STREAM ended it.
    Answered {
        first: u8,
        body: Vec<u8>,
        ended: bool,
    },
}

struct RawH2 {
    s: TcpStream,
    /// Acknowledge the proxy's SETTINGS as they come (not when another
    /// thread writes on the same connection).
    ack_settings: bool,
}

impl RawH2 {
    fn connect(addr: SocketAddr) -> RawH2 {
        RawH2::try_connect(addr).unwrap_or_else(|e| panic!("connect to the proxy: {e}"))
    }

    fn try_connect(addr: SocketAddr) -> std::io::Result<RawH2> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        s.write_all(&hello)?;
        Ok(RawH2 {
            s,
            ack_settings: true,
        })
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes)
    }

    /// The next frame: (type, flags, stream, payload); `None` at the end.
    fn read_frame(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        let mut h = [0u8; 9];
        self.s.read_exact(&mut h).ok()?;
        let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        let mut payload = vec![0; len];
        self.s.read_exact(&mut payload).ok()?;
        if h[3] == SETTINGS && h[4] & 1 == 0 && self.ack_settings {
            let _ = self.s.write_all(&frame(SETTINGS, 1, 0, &[]));
        }
        Some((h[3], h[4], stream, payload))
    }

    /// Read until `stream` is answered whole, reset, or the connection
    /// ends.
    fn outcome(&mut self, stream: u32) -> Outcome {
        let mut answer: Option<(u8, Vec<u8>)> = None;
        loop {
            let Some((kind, flags, id, payload)) = self.read_frame() else {
                return match answer {
                    Some((first, body)) => Outcome::Answered {
                        first,
                        body,
                        ended: false,
                    },
                    None => Outcome::Closed,
                };
            };
            let code = || u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
            match kind {
                GOAWAY if answer.is_none() && payload.len() >= 8 => {
                    let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                    if code != 0 {
                        return Outcome::GoAway(code);
                    }
                }
                RST_STREAM if id == stream => return Outcome::Reset(code()),
                HEADERS if id == stream => {
                    let first = payload.first().copied().unwrap_or(0);
                    answer.get_or_insert((first, Vec::new()));
                    if flags & END_STREAM != 0 {
                        let (first, body) = answer.take().unwrap_or_default();
                        return Outcome::Answered {
                            first,
                            body,
                            ended: true,
                        };
                    }
                }
                DATA if id == stream => {
                    if let Some((_, body)) = answer.as_mut() {
                        body.extend_from_slice(&payload);
                    }
                    if flags & END_STREAM != 0 {
                        let (first, body) = answer.take().unwrap_or_default();
                        return Outcome::Answered {
                            first,
                            body,
                            ended: true,
                        };
                    }
                }
                _ => {}
            }
        }
    }
}

/// The pseudo-headers of a request for `path` on `authority`.
fn request<'a>(method: &'a [u8], path: &'a [u8], authority: &'a [u8]) -> Vec<(&'a [u8], &'a [u8])> {
    vec![
        (b":method", method),
        (b":scheme", b"http"),
        (b":authority", authority),
        (b":path", path),
    ]
}

/// Send a request as raw frames on a new connection: its header block
/// (`end`: END_STREAM on it), then DATA frames (the last with END_STREAM).
fn raw_request(addr: SocketAddr, fields: &[(&[u8], &[u8])], end: bool, data: &[&[u8]]) -> Outcome {
    let mut c = RawH2::connect(addr);
    let flags = END_HEADERS | if end { END_STREAM } else { 0 };
    let mut bytes = frame(HEADERS, flags, 1, &header_block(fields));
    for (i, piece) in data.iter().enumerate() {
        let last = i + 1 == data.len();
        bytes.extend(frame(DATA, if last { END_STREAM } else { 0 }, 1, piece));
    }
    c.send(&bytes).expect("send the request");
    c.outcome(1)
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read its status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn metrics(wc: &Webcluster) -> String {
    let r = http_get(wc.admin, "/metrics", &[]).expect("GET /metrics");
    assert_eq!(r.status, 200);
    r.body
}

/// The value of the metric line that starts with `series` (0 if absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------

#[test]
fn get_and_post_go_through_the_request_path_and_the_log_shows_http2() {
    let node = echo_node("n1");
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.log");
    let tables = format!(
        "[access_log]\ntarget = \"{}\"\n\n[[route]]\nhost = \"stream.test\"\ngroup = \"web\"\nrequest_buffering = false\n",
        access.display()
    );
    let wc = start(&tables, "", &[("n1", node.addr(), "")]);

    let r = curl_h2(wc.listen, "/node", &[]);
    assert_eq!((r.version.as_str(), r.status), ("HTTP/2", 200), "{r:?}");
    assert_eq!(r.body.trim(), "n1");
    assert_eq!(r.header(NODE_HEADER), Some("n1"), "{r:?}");
    // No connection-specific field reaches an HTTP/2 visitor.
    for gone in ["connection", "keep-alive", "transfer-encoding"] {
        assert!(r.header(gone).is_none(), "{gone}: {r:?}");
    }

    // A body with its length, buffered (the default).
    let body: String = (0..20_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let file = dir.path().join("body");
    std::fs::write(&file, &body).unwrap();
    let upload = format!("@{}", file.display());
    let r = curl_h2(wc.listen, "/echo", &["--data-binary", &upload]);
    assert_eq!(
        (r.status, r.body.len()),
        (200, body.len()),
        "{:?}",
        r.headers
    );
    assert_eq!(r.body, body);
    // Bodies without a length in DATA frames: buffered (the node gets a
    // length), and streamed on the stream.test route (chunked anew).
    let a = wc.listen.to_string();
    for authority in [a.as_str(), "stream.test"] {
        let fields = request(b"POST", b"/echo", authority.as_bytes());
        let pieces: [&[u8]; 3] = [
            &body.as_bytes()[..7000],
            &body.as_bytes()[7000..14000],
            &body.as_bytes()[14000..],
        ];
        match raw_request(wc.listen, &fields, false, &pieces) {
            Outcome::Answered {
                first: 0x88,
                body: echoed,
                ended: true,
            } => {
                assert!(
                    echoed == body.as_bytes(),
                    "{authority}: {} bytes back",
                    echoed.len()
                )
            }
            other => panic!("{authority}: {other:?}"),
        }
    }

    // The status-path guard: refused, and the node saw nothing.
    let mark = settled_log_len(&node, &wc);
    let r = curl_h2(wc.listen, "/server-status", &[]);
    assert_eq!(r.status, 403, "{r:?}");
    let r = curl_h2(wc.listen, "/server-status?auto", &[]);
    assert_eq!(r.status, 403, "{r:?}");
    assert_node_saw_nothing(&node, &wc, mark, "server-status over h2");

    // Host comes from :authority; cookie fields are joined with "; ".
    let mut fields = request(b"GET", b"/headers", b"site.example:8080");
    fields.push((b"cookie", b"a=1"));
    fields.push((b"cookie", b"b=2"));
    match raw_request(wc.listen, &fields, true, &[]) {
        Outcome::Answered {
            first: 0x88,
            body,
            ended: true,
        } => {
            let body = String::from_utf8_lossy(&body);
            assert!(body.contains("site.example:8080"), "{body}");
            assert!(body.contains("a=1; b=2"), "{body}");
        }
        other => panic!("{other:?}"),
    }

    wait_until(
        "the access log shows the requests",
        Duration::from_secs(5),
        || std::fs::read_to_string(&access).is_ok_and(|l| l.contains("\"GET /headers HTTP/2.0\"")),
    );
    let log = std::fs::read_to_string(&access).unwrap();
    assert!(log.contains("\"GET /node HTTP/2.0\" 200"), "{log}");
    assert!(log.contains("\"POST /echo HTTP/2.0\" 200"), "{log}");
    assert!(log.contains("\"GET /server-status HTTP/2.0\" 403"), "{log}");
    let m = metrics(&wc);
    assert!(
        metric(
            &m,
            "webcluster_requests_by_protocol_total{protocol=\"HTTP/2.0\"}"
        ) >= 6.0,
        "{m}"
    );
}

#[test]
fn malformed_requests_are_refused_and_never_reach_the_node() {
    let node = echo_node("n1");
    let wc = start("", "", &[("n1", node.addr(), "")]);
    let a = wc.listen.to_string();
    let auth = a.as_bytes();
    let get = || request(b"GET", b"/node", auth);
    let with = |extra: &[(&'static [u8], &'static [u8])]| {
        let mut f = get();
        f.extend_from_slice(extra);
        f
    };
    type Case<'a> = (
        &'static str,
        Vec<(&'a [u8], &'a [u8])>,
        bool,
        Vec<&'static [u8]>,
    );
    let post = |len: &'static [u8]| {
        let mut f = request(b"POST", b"/echo", auth);
        f.push((b"content-length", len));
        f
    };
    let cases: Vec<Case> = vec![
        (
            "content-length over the DATA",
            post(b"10"),
            false,
            vec![b"12345"],
        ),
        (
            "content-length under the DATA",
            post(b"3"),
            false,
            vec![b"12345"],
        ),
        (
            "content-length split over DATA",
            post(b"4"),
            false,
            vec![b"12", b"345"],
        ),
        (
            "connection",
            with(&[(b"connection", b"close")]),
            true,
            vec![],
        ),
        (
            "keep-alive",
            with(&[(b"keep-alive", b"timeout=5")]),
            true,
            vec![],
        ),
        (
            "proxy-connection",
            with(&[(b"proxy-connection", b"x")]),
            true,
            vec![],
        ),
        (
            "transfer-encoding",
            with(&[(b"transfer-encoding", b"chunked")]),
            false,
            vec![b"5\r\nhello\r\n0\r\n\r\n"],
        ),
        ("upgrade", with(&[(b"upgrade", b"websocket")]), true, vec![]),
        ("te gzip", with(&[(b"te", b"gzip")]), true, vec![]),
        (
            "CR in a value",
            with(&[(b"x-a", b"1\rX-Injected: 1")]),
            true,
            vec![],
        ),
        (
            "LF in a value",
            with(&[(b"x-a", b"1\nX-Injected: 1")]),
            true,
            vec![],
        ),
        ("NUL in a value", with(&[(b"x-a", b"1\x002")]), true, vec![]),
        ("upper-case name", with(&[(b"X-Upper", b"1")]), true, vec![]),
        (
            "space around a value",
            with(&[(b"x-a", b" 1")]),
            true,
            vec![],
        ),
        (
            "host differs from :authority",
            with(&[(b"host", b"elsewhere.example")]),
            true,
            vec![],
        ),
        (
            "duplicate :path",
            vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", auth),
                (b":path", b"/node"),
                (b":path", b"/other"),
            ],
            true,
            vec![],
        ),
        (
            "missing :method",
            vec![
                (b":scheme", b"http"),
                (b":authority", auth),
                (b":path", b"/node"),
            ],
            true,
            vec![],
        ),
        (
            "missing :path",
            vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", auth),
            ],
            true,
            vec![],
        ),
        (
            "missing :scheme",
            vec![
                (b":method", b"GET"),
                (b":authority", auth),
                (b":path", b"/node"),
            ],
            true,
            vec![],
        ),
        (
            "pseudo-header after a field",
            vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b"x-a", b"1"),
                (b":authority", auth),
                (b":path", b"/node"),
            ],
            true,
            vec![],
        ),
        (
            "unknown pseudo-header",
            vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", auth),
                (b":path", b"/node"),
                (b":foo", b"1"),
            ],
            true,
            vec![],
        ),
        (
            ":status in a request",
            vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", auth),
                (b":path", b"/node"),
                (b":status", b"200"),
            ],
            true,
            vec![],
        ),
        (
            "no :authority nor host",
            vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":path", b"/node"),
            ],
            true,
            vec![],
        ),
        (
            ":path not origin-form",
            vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", auth),
                (b":path", b"node"),
            ],
            true,
            vec![],
        ),
        (
            ":scheme not http",
            vec![
                (b":method", b"GET"),
                (b":scheme", b"ftp"),
                (b":authority", auth),
                (b":path", b"/node"),
            ],
            true,
            vec![],
        ),
    ];
    for (what, fields, end, data) in &cases {
        let mark = settled_log_len(&node, &wc);
        let outcome = raw_request(wc.listen, fields, *end, data);
        eprintln!("{what}: {outcome:?}");
        assert!(
            matches!(outcome, Outcome::Reset(c) | Outcome::GoAway(c) if c != 0),
            "{what}: {outcome:?}"
        );
        assert_node_saw_nothing(&node, &wc, mark, what);
    }
    // A well-formed one on the same raw client is answered (the refusals
    // above are not the client's doing), with and without a body.
    let fine = raw_request(wc.listen, &with(&[(b"te", b"trailers")]), true, &[]);
    assert!(
        matches!(&fine, Outcome::Answered { first: 0x88, ended: true, body } if body.starts_with(b"n1")),
        "{fine:?}"
    );
    let fine = raw_request(wc.listen, &post(b"5"), false, &[b"12", b"345"]);
    assert!(
        matches!(&fine, Outcome::Answered { first: 0x88, ended: true, body } if body == b"12345"),
        "{fine:?}"
    );
}

#[test]
fn affinity_retries_and_retry_on_404_work_over_http2() {
    let nodes: Vec<ApacheNode> = ["a", "b", "c"].iter().map(|n| echo_node(n)).collect();
    let upload = nodes[1].dir().join("htdocs/upload");
    std::fs::create_dir_all(&upload).unwrap();
    std::fs::write(upload.join("new.txt"), "fresh upload\n").unwrap();
    support::set_mode(&upload, 0o755);
    support::set_mode(&upload.join("new.txt"), 0o644);
    let routes = "[[route]]\npath = \"/upload/\"\ngroup = \"web\"\nretry_on_404 = true\n";
    let list: Vec<(&str, SocketAddr, &str)> =
        nodes.iter().map(|n| (n.name(), n.addr(), "")).collect();
    let wc = start(routes, "affinity = \"cookie\"", &list);

    // Sessions stay on their node.
    for s in 0..4 {
        let cookie = format!("cookie: PHPSESSID=h2session{s}");
        let seen: Vec<String> = (0..5)
            .map(|_| {
                let r = curl_h2(wc.listen, "/node", &["-H", &cookie]);
                assert_eq!(r.status, 200, "{r:?}");
                r.header(NODE_HEADER).unwrap_or("-").to_string()
            })
            .collect();
        assert!(seen.iter().all(|n| *n == seen[0]), "{seen:?}");
    }

    // retry_on_404: the file is on b only; every request gets it.
    for _ in 0..12 {
        let r = curl_h2(wc.listen, "/upload/new.txt", &[]);
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "fresh upload\n"),
            "{r:?}"
        );
        assert_eq!(r.header(NODE_HEADER), Some("b"));
    }
    let m = metrics(&wc);
    assert!(
        metric(&m, "webcluster_retry_on_404_total{group=\"web\"}") >= 1.0,
        "{m}"
    );
}

#[test]
fn a_dead_node_is_retried_over_http2() {
    let node = echo_node("live");
    let dead = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let wc = start(
        "",
        "balance = \"round_robin\"\nscrape = false",
        &[("dead", dead, ""), ("live", node.addr(), "")],
    );
    for _ in 0..10 {
        let r = curl_h2(wc.listen, "/node", &[]);
        assert_eq!((r.status, r.body.trim()), (200, "live"), "{r:?}");
    }
    let m = metrics(&wc);
    assert!(
        metric(&m, "webcluster_retries_total{group=\"web\"}") >= 1.0,
        "{m}"
    );
}

fn h2load(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("h2load")
        .args(args)
        .arg(format!("http://{addr}/node"))
        .output()
        .expect("run h2load (Debian nghttp2-client)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn concurrent_streams_and_h2load_all_succeed() {
    // Workers for the 100 requests at once, and its status page besides.
    let node = echo_node_with("n1", 150);
    let wc = start("", "", &[("n1", node.addr(), "")]);
    // 100 streams at once on one connection.
    let out = h2load(wc.listen, &["-n", "300", "-c", "1", "-m", "100"]);
    assert!(out.contains("status codes: 300 2xx"), "{out}");
    let out = h2load(wc.listen, &["-n", "2000", "-c", "10", "-m", "10"]);
    assert!(out.contains("status codes: 2000 2xx"), "{out}");
    assert!(out.contains("2000 succeeded, 0 failed"), "{out}");
}

/// Streams opened and made to end in a reset at once, `per_stream(id)`
/// (the frames after the stream's HEADERS) each, in batches of `batch_len` that
/// each end with a PING whose ACK says the proxy read them, 20,000 at most
/// in all and 60 s at most, reconnecting when the proxy ends a connection,
/// while
/// another client is served: the proxy keeps answering it, its memory
/// stays bounded, and the node sees a small part of the flood at most.
fn flood_is_bounded(what: &str, batch_len: u32, per_stream: fn(u32) -> Vec<u8>) {
    let node = echo_node("n1");
    let wc = start("", "", &[("n1", node.addr(), "")]);
    let rss_before = rss_kib(wc.pid());
    let listen = wc.listen;
    let a = listen.to_string();
    let block = header_block(&request(b"GET", b"/node?flood", a.as_bytes()));
    let flooder = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut sent, mut connections, mut ended, mut refused) = (0u32, 0u32, 0u32, Vec::new());
        while sent < 20_000 && Instant::now() < deadline && refused.len() < 10 {
            // A connection the proxy closes while the preface is sent, or
            // a full accept queue, is no answer about the proxy: the
            // client after the flood is.
            let mut c = match RawH2::try_connect(listen) {
                Ok(c) => c,
                Err(e) => {
                    refused.push(e.to_string());
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            connections += 1;
            // What the proxy sends is read (so that it never waits on this
            // client), and each PING's ACK told to the writer: a batch
            // counts once the proxy has read all of it, not once the
            // kernel's buffers took it.
            let mut reader = RawH2 {
                s: c.s.try_clone().unwrap(),
                ack_settings: false,
            };
            let (acks, acked) = std::sync::mpsc::channel();
            let drain = std::thread::spawn(move || {
                while let Some((kind, flags, _, _)) = reader.read_frame() {
                    if kind == PING && flags & 1 == 1 && acks.send(()).is_err() {
                        return;
                    }
                }
            });
            let mut id = 1u32;
            while sent < 20_000 && Instant::now() < deadline {
                let mut batch = Vec::new();
                for _ in 0..batch_len {
                    batch.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
                    batch.extend(per_stream(id));
                    id += 2;
                }
                batch.extend(frame(PING, 0, 0, &[0; 8]));
                if c.send(&batch).is_err() {
                    break;
                }
                sent += batch_len;
                // Acknowledged: the proxy read it all and serves on; or the
                // proxy ended the connection (its reader stopped).
                if acked.recv_timeout(Duration::from_secs(10)).is_err() {
                    ended += 1;
                    break;
                }
            }
            let _ = c.s.shutdown(std::net::Shutdown::Both);
            let _ = drain.join();
        }
        (sent, connections, ended, refused)
    });
    // Meanwhile another client is answered.
    for _ in 0..5 {
        let r = curl_h2(wc.listen, "/node", &[]);
        assert_eq!(r.status, 200, "{what}: {r:?}");
    }
    let (sent, connections, ended, refused) = flooder.join().expect("the flood thread");
    assert!(
        sent >= 1000,
        "{what}: only {sent} streams sent ({refused:?})"
    );
    let r = curl_h2(wc.listen, "/node", &[]);
    assert_eq!(r.status, 200, "{what}: {r:?}");
    let rss_after = rss_kib(wc.pid());
    assert!(
        rss_after < rss_before + 200 * 1024,
        "{what}: VmRSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    wait_until(
        "the node logged the later request",
        Duration::from_secs(5),
        || {
            node.access_log()
                .lines()
                .filter(|l| l.contains("GET /node HTTP"))
                .count()
                >= 6
        },
    );
    let flood_seen = node
        .access_log()
        .lines()
        .filter(|l| l.contains("/node?flood"))
        .count();
    eprintln!(
        "{what}: {sent} streams written on {connections} connections, {ended} ended by the proxy \
         ({} failed to open); \
         the node saw {flood_seen}; \
         VmRSS {rss_before} -> {rss_after} KiB",
        refused.len()
    );
    assert!(ended > 0, "{what}: the proxy ended no connection");
    assert!(
        flood_seen * 10 < sent as usize,
        "{what}: the node saw {flood_seen} of {sent} reset streams ({connections} connections)"
    );
}

/// Rapid reset (CVE-2023-44487): HEADERS then RST_STREAM(CANCEL).
#[test]
fn a_rapid_reset_flood_is_bounded() {
    flood_is_bounded("rapid reset", 100, |id| {
        frame(RST_STREAM, 0, id, &8u32.to_be_bytes())
    });
}

/// Rapid reset in small batches, each read before the next is sent: the
/// streams are accepted, so each reset drops a request of the proxy's own.
#[test]
fn a_paced_rapid_reset_flood_is_bounded() {
    flood_is_bounded("paced rapid reset", 5, |id| {
        frame(RST_STREAM, 0, id, &8u32.to_be_bytes())
    });
}

/// MadeYouReset (CVE-2025-8671): HEADERS then a frame that makes the
/// server reset the stream itself (WINDOW_UPDATE with a zero increment, a
/// stream error, RFC 9113 6.9).
#[test]
fn a_made_you_reset_flood_is_bounded() {
    flood_is_bounded("MadeYouReset", 100, |id| {
        frame(8, 0, id, &0u32.to_be_bytes())
    });
}

/// SIGTERM while a slow stream is open: the visitor gets GOAWAY and the
/// stream's whole response.
#[test]
fn sigterm_sends_goaway_and_lets_an_open_stream_finish() {
    goaway_lets_an_open_stream_finish(nix::sys::signal::Signal::SIGTERM);
}

/// A reload (SIGHUP) while a slow stream is open: the same.
#[test]
fn a_reload_sends_goaway_and_lets_an_open_stream_finish() {
    goaway_lets_an_open_stream_finish(nix::sys::signal::Signal::SIGHUP);
}

fn goaway_lets_an_open_stream_finish(signal: nix::sys::signal::Signal) {
    let node = echo_node("n1");
    let wc = start("", "", &[("n1", node.addr(), "")]);
    let a = wc.listen.to_string();
    let mut c = RawH2::connect(wc.listen);
    let fields = request(b"GET", b"/sleep?ms=2000", a.as_bytes());
    c.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &header_block(&fields),
    ))
    .expect("send the request");
    wait_until(
        "the request is with the node",
        Duration::from_secs(10),
        || support::webcluster::node(&wc.status(), "n1")["inflight"] == 1,
    );
    wc.signal(signal);
    let mut goaway = false;
    let mut answer = None;
    while let Some((kind, flags, id, payload)) = c.read_frame() {
        match kind {
            GOAWAY => {
                let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                assert_eq!(code, 0, "GOAWAY with an error");
                goaway = true;
            }
            RST_STREAM => panic!("stream {id} reset"),
            HEADERS if id == 1 => answer = Some(payload[0]),
            DATA if id == 1 && flags & END_STREAM != 0 => break,
            _ => {}
        }
    }
    assert!(goaway, "no GOAWAY");
    assert_eq!(answer, Some(0x88), "no 200 for the open stream");
}

/// A stream reset by the visitor while its request is with a node: the
/// request is dropped at once (the node's connection closed), not left
/// running until the node answers.
#[test]
fn a_reset_stream_drops_its_request_at_the_node() {
    let node = echo_node("n1");
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.log");
    let tables = format!("[access_log]\ntarget = \"{}\"\n", access.display());
    let wc = start(&tables, "", &[("n1", node.addr(), "")]);
    let a = wc.listen.to_string();
    let mut c = RawH2::connect(wc.listen);
    let fields = request(b"GET", b"/sleep?ms=30000", a.as_bytes());
    c.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &header_block(&fields),
    ))
    .expect("send the request");
    let inflight = || support::webcluster::node(&wc.status(), "n1")["inflight"].clone();
    wait_until(
        "the request is with the node",
        Duration::from_secs(10),
        || inflight() == 1,
    );
    c.send(&frame(RST_STREAM, 0, 1, &8u32.to_be_bytes()))
        .expect("send RST_STREAM");
    // The node would answer in 30 s: well before, the proxy has let go.
    wait_until(
        "the proxy dropped the request",
        Duration::from_secs(10),
        || inflight() == 0,
    );
    // Logged as nginx logs a request its client gave up: 499.
    wait_until(
        "the access log shows the 499",
        Duration::from_secs(5),
        || {
            std::fs::read_to_string(&access)
                .is_ok_and(|l| l.contains("\"GET /sleep?ms=30000 HTTP/2.0\" 499"))
        },
    );
    let m = metrics(&wc);
    assert_eq!(metric(&m, "webcluster_http2_streams "), 0.0, "{m}");
    assert_eq!(metric(&m, "webcluster_http2_connections "), 1.0, "{m}");
    let visitors = &wc.status()["visitors"];
    assert_eq!(visitors["http2_connections"], 1, "{visitors}");
    assert_eq!(visitors["http2_streams"], 0, "{visitors}");
    let page = http_get(wc.admin, "/", &[]).expect("the status page");
    assert!(
        page.body.contains("HTTP/2: 1 connections, 0 streams"),
        "{}",
        page.body
    );
    // The connection goes on serving.
    let fields = request(b"GET", b"/node", a.as_bytes());
    c.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        3,
        &header_block(&fields),
    ))
    .expect("send another request");
    assert!(
        matches!(
            c.outcome(3),
            Outcome::Answered {
                first: 0x88,
                ended: true,
                ..
            }
        ),
        "the connection no longer serves"
    );
}

/// `[server] h2c = false`: the preface is an HTTP/1 request like any other,
/// refused as malformed.
#[test]
fn h2c_can_be_turned_off() {
    let node = echo_node("n1");
    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "h2c = false") + &group_config("web", "", &[("n1", node.addr(), "")])
    });
    listening(&wc);
    let mut c = RawH2::connect(wc.listen);
    let mut answer = String::new();
    let _ = c.s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
}

/// A connection with no stream for `client_keepalive` gets GOAWAY and is
/// closed; one with a stream open is not.
#[test]
fn an_idle_connection_gets_goaway_and_is_closed() {
    let node = echo_node("n1");
    let wc = start(
        "[timeouts]\nclient_keepalive = \"1s\"\n",
        "",
        &[("n1", node.addr(), "")],
    );
    let a = wc.listen.to_string();
    // A stream longer than the keep-alive timeout still ends whole.
    let mut c = RawH2::connect(wc.listen);
    let fields = request(b"GET", b"/sleep?ms=1500", a.as_bytes());
    c.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &header_block(&fields),
    ))
    .expect("send the request");
    assert!(
        matches!(
            c.outcome(1),
            Outcome::Answered {
                first: 0x88,
                ended: true,
                ..
            }
        ),
        "the slow stream did not end whole"
    );
    // Then nothing: GOAWAY (NO_ERROR) and the end of the connection.
    let mut goaway = None;
    while let Some((kind, _, _, payload)) = c.read_frame() {
        if kind == GOAWAY {
            goaway = Some(u32::from_be_bytes([
                payload[4], payload[5], payload[6], payload[7],
            ]));
        }
    }
    assert_eq!(goaway, Some(0), "no GOAWAY before the close");
    assert!(
        matches!(c.s.read(&mut [0u8; 1]), Ok(0)),
        "the connection was not closed"
    );
}
