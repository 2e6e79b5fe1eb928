//! HTTP/1.1 proxy semantics that a user of nginx or HAProxy relies on, end
//! to end through the real binary: request bodies (chunked, large,
//! `Expect: 100-continue`), HEAD, chunked and large responses, connection
//! persistence and closing, pipelining, malformed requests, keep-alive
//! connections to the nodes (reuse, and a pooled connection the node has
//! closed), and the Upgrade tunnel.
//!
//! The nodes are real Apache httpd (event MPM, from the project's template,
//! plus two CGIs defined here: `/echo` answers the request body back and
//! `/chunks` answers in several chunks) and nginx; only the Upgrade test
//! uses a small in-test peer (see `PeerNode`). Everything listens on
//! 127.0.0.1 on ephemeral ports, and every read is bounded by
//! `support::http::TIMEOUT`.

mod support;

use std::io::{BufReader, Cursor, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use support::http::{read_response_bytes, RawConn, Response, TIMEOUT};
use support::webcluster::{base_config, group_config, node, Webcluster};
use support::{
    capture_status, http_get, nginx_accepts, nginx_active_connections, wait_until, ApacheNode,
    ApacheOpts, KeepAliveClient, NginxNode, NginxOpts,
};

/// `/echo`: reads the whole request body first (mod_cgi writes all of it
/// to the script before it reads the script's output, so echoing while
/// reading could deadlock on a large body), then answers it back unchanged.
/// Without a Content-Length from the script, Apache answers chunked.
const ECHO_CGI: &str = r#"#!/bin/sh
tmp=$(mktemp) || exit 1
trap 'rm -f "$tmp"' EXIT
cat > "$tmp"
printf 'Content-Type: application/octet-stream\r\n\r\n'
cat "$tmp"
"#;

/// `/chunks`: five lines, 100 ms apart, so that Apache sends each as its
/// own chunk (checked directly against the node in the test).
const CHUNKS_CGI: &str = r#"#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
i=1
while [ "$i" -le 5 ]; do
    printf 'piece %s of 5\n' "$i"
    sleep 0.1
    i=$((i + 1))
done
"#;

/// What `/chunks` answers.
const CHUNKS_BODY: &str = "piece 1 of 5\npiece 2 of 5\npiece 3 of 5\npiece 4 of 5\npiece 5 of 5\n";

/// The Apache node's name (`/node` answers exactly it).
const NODE: &str = "echo";

/// The connection still carries a request after what came before on it:
/// everything before was framed exactly.
fn assert_connection_goes_on(conn: &mut RawConn) {
    conn.send(b"GET /node HTTP/1.1\r\nHost: test.example\r\nConnection: close\r\n\r\n")
        .expect("send a second request");
    let (resp, _) = conn.response("GET").expect("second response");
    assert_eq!((resp.status, resp.body.trim()), (200, NODE), "{resp:?}");
}

/// An Apache event node that also serves `/echo` and `/chunks`.
fn echo_node() -> ApacheNode {
    ApacheNode::start(ApacheOpts {
        extra_cgis: vec![
            ("echo".to_string(), ECHO_CGI.to_string()),
            ("chunks".to_string(), CHUNKS_CGI.to_string()),
        ],
        ..ApacheOpts::event(NODE, 8)
    })
}

/// The proxy with one group "web" of one node "n1" at `addr`; unless
/// `group_extra` turns scraping off, waits until the scrape says it is up.
fn proxy_for(addr: SocketAddr, group_extra: &str, node_extra: &str) -> Webcluster {
    proxy_with(addr, "", group_extra, node_extra)
}

/// [`proxy_for`] with more top-level tables (`[limits]`, `[buffering]`).
fn proxy_with(addr: SocketAddr, tables: &str, group_extra: &str, node_extra: &str) -> Webcluster {
    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "")
            + tables
            + "\n"
            + &group_config("web", group_extra, &[("n1", addr, node_extra)])
    });
    if !group_extra.contains("scrape = false") {
        wc.wait_all_up();
    }
    wc
}

/// `len` deterministic pseudo-random bytes (all 256 values occur).
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// FNV-1a 64 of `bytes`, to name a body in a failure message.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Panics unless `got == want`, naming lengths, checksums and the first
/// differing byte instead of printing megabytes.
fn assert_same_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let first = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: got {} bytes (fnv {:016x}), want {} bytes (fnv {:016x}); first difference at byte {first}",
            got.len(),
            fnv(got),
            want.len(),
            fnv(want)
        );
    }
}

fn is_chunked(resp: &Response) -> bool {
    resp.header_all("transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"))
}

/// The sizes of the chunks of a chunked body on the wire (`wire` starts at
/// the first chunk-size line); stops at the last chunk or at the end.
fn chunk_sizes(wire: &[u8]) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut rest = wire;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let line = String::from_utf8_lossy(&rest[..eol]);
        let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        if size == 0 {
            break;
        }
        sizes.push(size);
        let next = eol + 2 + size + 2;
        if next > rest.len() {
            break;
        }
        rest = &rest[next..];
    }
    sizes
}

// ---------------------------------------------------------------- bodies

#[test]
fn chunked_request_body_reaches_the_node_intact() {
    let apache = echo_node();
    let wc = proxy_for(apache.addr(), "", "");
    // Several chunks of different sizes, one with a chunk extension, one
    // that looks like the end of a chunked body, one binary and large.
    let chunks: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        b", ".to_vec(),
        b"0\r\n\r\nthis is still the body\r\n".to_vec(),
        payload(200_000, 1),
        vec![0, 255, b'\r', b'\n', 0x7f],
    ];
    let want: Vec<u8> = chunks.concat();
    let mut conn = RawConn::connect(wc.listen).expect("connect to the proxy");
    conn.send(
        b"POST /echo HTTP/1.1\r\nHost: test.example\r\nTransfer-Encoding: chunked\r\n\
          Content-Type: application/octet-stream\r\n\r\n",
    )
    .expect("send the head");
    // One write per chunk: the proxy sees the body arrive in pieces.
    for (i, chunk) in chunks.iter().enumerate() {
        let ext = if i == 1 { ";name=value" } else { "" };
        let mut wire = format!("{:x}{ext}\r\n", chunk.len()).into_bytes();
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
        conn.send(&wire).expect("send a chunk");
    }
    conn.send(b"0\r\n\r\n").expect("send the last chunk");
    let (resp, body) = conn.response("POST").expect("response to the chunked POST");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_same_bytes("chunked request body echoed by the node", &body, &want);
    // The proxy consumed exactly the chunked body: the same connection
    // serves the next request.
    assert_connection_goes_on(&mut conn);
}

#[test]
fn expect_100_continue_gets_an_interim_response_before_the_body() {
    let apache = echo_node();
    let wc = proxy_for(apache.addr(), "", "");
    let body = payload(100_000, 2);
    let mut conn = RawConn::connect(wc.listen).expect("connect to the proxy");
    conn.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: test.example\r\nContent-Length: {}\r\n\
             Expect: 100-continue\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .expect("send the head only");
    // The client holds the body back until told to go on (this read is
    // bounded by the client's read timeout).
    let (status_line, _) = conn
        .head()
        .expect("an interim response while the body is held back");
    assert!(
        status_line.starts_with("HTTP/1.1 100"),
        "first response line: {status_line:?}"
    );
    conn.send(&body).expect("send the body");
    let (resp, echoed) = conn.response("POST").expect("final response");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_same_bytes("body sent after 100 Continue", &echoed, &body);
}

#[test]
fn large_request_body_with_content_length_arrives_intact() {
    let apache = echo_node();
    // Over the default 1 MiB limit (nginx's): raised for this test.
    let wc = proxy_with(
        apache.addr(),
        "[limits]\nmax_request_body = \"2m\"\n",
        "",
        "",
    );
    let body = payload((1 << 20) + 3, 3);
    let mut request = format!(
        "POST /echo HTTP/1.1\r\nHost: test.example\r\nContent-Length: {}\r\n\
         Content-Type: application/octet-stream\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let mut conn = RawConn::connect(wc.listen).expect("connect to the proxy");
    conn.send(&request).expect("send the request");
    let (resp, echoed) = conn.response("POST").expect("response to the large POST");
    assert_eq!(resp.status, 200, "{resp:?}");
    // The node's answer has no length: it comes back chunked, 1 MiB of it.
    assert!(is_chunked(&resp), "{:?}", resp.headers);
    assert_same_bytes("1 MiB request body echoed by the node", &echoed, &body);
    // Both bodies were framed exactly: the connection goes on.
    assert_connection_goes_on(&mut conn);
}

// ---------------------------------------------------------------- responses

#[test]
fn head_has_the_headers_and_no_body_and_the_connection_goes_on() {
    let apache = echo_node();
    let wc = proxy_for(apache.addr(), "", "");
    let get = http_get(wc.listen, "/", &[]).expect("GET /");
    assert_eq!(get.status, 200, "{get:?}");
    assert!(!get.body.is_empty());
    let mut conn = RawConn::connect(wc.listen).expect("connect to the proxy");
    // A static file (Content-Length) and a CGI (no length): neither HEAD
    // answer may carry a body, not even an empty last chunk.
    conn.send(b"HEAD / HTTP/1.1\r\nHost: test.example\r\n\r\n")
        .expect("send HEAD /");
    let (head, body) = conn.response("HEAD").expect("HEAD / response");
    assert_eq!(head.status, 200, "{head:?}");
    assert!(body.is_empty());
    let len = get.body.len().to_string();
    assert_eq!(
        head.header("content-length"),
        Some(len.as_str()),
        "{head:?}"
    );
    assert_eq!(
        head.header("content-type"),
        get.header("content-type"),
        "{head:?}"
    );
    assert!(
        conn.nothing_pending(Duration::from_millis(300)),
        "bytes after the HEAD / response"
    );
    conn.send(b"HEAD /chunks HTTP/1.1\r\nHost: test.example\r\n\r\n")
        .expect("send HEAD /chunks");
    let (head, _) = conn.response("HEAD").expect("HEAD /chunks response");
    assert_eq!(head.status, 200, "{head:?}");
    assert!(
        conn.nothing_pending(Duration::from_millis(500)),
        "bytes after the HEAD /chunks response"
    );
    // The same connection then serves a GET, with its body.
    conn.send(b"GET / HTTP/1.1\r\nHost: test.example\r\nConnection: close\r\n\r\n")
        .expect("send GET /");
    let (resp, body) = conn.response("GET").expect("GET / after HEAD");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_same_bytes("GET / after HEAD", &body, get.body.as_bytes());
}

#[test]
fn chunked_response_from_the_node_arrives_intact_and_chunked() {
    let apache = echo_node();
    let wc = proxy_for(apache.addr(), "", "");
    // The fixture: the node itself answers /chunks in several chunks.
    let mut direct = RawConn::connect(apache.addr()).expect("connect to the node");
    direct
        .send(b"GET /chunks HTTP/1.1\r\nHost: test.example\r\nConnection: close\r\n\r\n")
        .expect("send to the node");
    let (status_line, fields) = direct.head().expect("the node's response head");
    assert!(status_line.contains(" 200"), "{status_line}");
    assert!(
        fields
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")),
        "the node must answer /chunks chunked: {fields:?}"
    );
    let wire = direct.read_until_closed().expect("the node's body");
    let sizes = chunk_sizes(&wire);
    assert!(
        sizes.len() >= 2,
        "the node must send several chunks: {sizes:?} in {:?}",
        String::from_utf8_lossy(&wire)
    );

    // Through the proxy, twice on one connection: a response of unknown
    // length reaches an HTTP/1.1 client chunked (streamed, not buffered
    // into a Content-Length, never delimited by closing the connection).
    let mut conn = RawConn::connect(wc.listen).expect("connect to the proxy");
    for close in [false, true] {
        let connection = if close { "Connection: close\r\n" } else { "" };
        conn.send(
            format!("GET /chunks HTTP/1.1\r\nHost: test.example\r\n{connection}\r\n").as_bytes(),
        )
        .expect("send GET /chunks");
        let (resp, body) = conn.response("GET").expect("GET /chunks through the proxy");
        assert_eq!(resp.status, 200, "{resp:?}");
        assert!(is_chunked(&resp), "{:?}", resp.headers);
        assert_eq!(resp.header("content-length"), None, "{:?}", resp.headers);
        assert_same_bytes("chunked response", &body, CHUNKS_BODY.as_bytes());
    }
}

#[test]
fn large_static_response_arrives_byte_exact() {
    let apache = echo_node();
    let wc = proxy_for(apache.addr(), "", "");
    let content = payload(1_500_007, 4);
    let file = apache.dir().join("htdocs/big.bin");
    std::fs::write(&file, &content).expect("write htdocs/big.bin");
    support::set_mode(&file, 0o644);
    let mut conn = RawConn::connect(wc.listen).expect("connect to the proxy");
    for close in [false, true] {
        let connection = if close { "Connection: close\r\n" } else { "" };
        conn.send(
            format!("GET /big.bin HTTP/1.1\r\nHost: test.example\r\n{connection}\r\n").as_bytes(),
        )
        .expect("send GET /big.bin");
        let (resp, body) = conn
            .response("GET")
            .expect("GET /big.bin through the proxy");
        assert_eq!(resp.status, 200, "{resp:?}");
        let len = content.len().to_string();
        assert_eq!(
            resp.header("content-length"),
            Some(len.as_str()),
            "{:?}",
            resp.headers
        );
        assert_same_bytes("1.5 MB static file", &body, &content);
    }
}

// ---------------------------------------------------------------- connections

/// Sends `request` on a fresh connection and reads until the proxy closes
/// it: the one response in it (with its raw body), and the bytes after it.
/// Panics when the connection is still open after `TIMEOUT`.
fn exchange_until_closed(addr: SocketAddr, request: &str) -> (Response, Vec<u8>, Vec<u8>) {
    let mut conn = RawConn::connect(addr).expect("connect to the proxy");
    conn.send(request.as_bytes()).expect("send the request");
    let wire = conn
        .read_until_closed()
        .unwrap_or_else(|e| panic!("{request:?}: the proxy must close the connection: {e}"));
    let mut reader = BufReader::new(Cursor::new(wire.clone()));
    let (resp, body) = read_response_bytes(&mut reader, "GET")
        .unwrap_or_else(|e| panic!("{request:?}: {e}: {:?}", String::from_utf8_lossy(&wire)));
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).expect("read the rest");
    (resp, body, rest)
}

#[test]
fn http10_clients_that_do_not_ask_keep_alive_are_answered_then_closed() {
    let apache = echo_node();
    let wc = proxy_for(apache.addr(), "", "");
    for request in [
        "GET /node HTTP/1.0\r\nHost: test.example\r\nConnection: close\r\n\r\n",
        // HTTP/1.0 without `Connection: keep-alive` closes too.
        "GET /node HTTP/1.0\r\nHost: test.example\r\n\r\n",
    ] {
        let (resp, body, rest) = exchange_until_closed(wc.listen, request);
        assert_eq!(resp.status, 200, "{request:?}: {resp:?}");
        assert_same_bytes("/node", &body, NODE.as_bytes());
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    }
}

#[test]
fn http10_client_gets_a_chunked_node_response_unchunked() {
    let apache = echo_node();
    let wc = proxy_for(apache.addr(), "", "");
    // /chunks comes from the node chunked; `Connection: close` so that only
    // the framing is tested here.
    let (resp, body, rest) = exchange_until_closed(
        wc.listen,
        "GET /chunks HTTP/1.0\r\nHost: test.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(
        !is_chunked(&resp),
        "chunked answer to an HTTP/1.0 client: {:?}",
        resp.headers
    );
    assert_same_bytes("/chunks", &body, CHUNKS_BODY.as_bytes());
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

#[test]
fn http11_connection_close_is_answered_then_closed() {
    let apache = echo_node();
    let wc = proxy_for(apache.addr(), "", "");
    let resp = answered_then_closed(
        wc.listen,
        b"GET /node HTTP/1.1\r\nHost: test.example\r\nConnection: close\r\n\r\n",
        "GET",
    );
    assert_eq!((resp.status, resp.body.trim()), (200, NODE), "{resp:?}");
}

/// Send `raw` on a new connection to `listen`: the one response to it, the
/// connection then closed with nothing after that response.
fn answered_then_closed(listen: SocketAddr, raw: &[u8], method: &str) -> Response {
    let shown = String::from_utf8_lossy(&raw[..raw.len().min(120)]).into_owned();
    let mut conn = RawConn::connect(listen).expect("connect to the proxy");
    conn.send(raw).expect("send the request");
    let (resp, _) = conn
        .response(method)
        .unwrap_or_else(|e| panic!("{shown:?}: no response: {e}"));
    let rest = conn
        .read_until_closed()
        .unwrap_or_else(|e| panic!("{shown:?}: the connection must be closed: {e}"));
    assert!(
        rest.is_empty(),
        "{shown:?}: bytes after the response: {:?}",
        String::from_utf8_lossy(&rest)
    );
    resp
}

#[test]
fn http11_keeps_the_connection_open_by_default() {
    let apache = echo_node();
    let wc = proxy_for(apache.addr(), "", "");
    let mut client = KeepAliveClient::connect(wc.listen).expect("connect to the proxy");
    for i in 0..3 {
        let r = client
            .get("/node", &[])
            .expect("request on the kept connection");
        assert_eq!((r.status, r.body.trim()), (200, NODE), "request {i}: {r:?}");
        let connection = r.header("connection").unwrap_or("").to_ascii_lowercase();
        assert!(!connection.contains("close"), "request {i}: {r:?}");
        assert!(
            !client.is_closed_by_peer(Duration::from_millis(200)),
            "the proxy closed the connection after request {i}"
        );
    }
}

#[test]
fn http10_client_asking_keep_alive_keeps_the_connection() {
    let apache = echo_node();
    let wc = proxy_for(apache.addr(), "", "");
    let mut conn = RawConn::connect(wc.listen).expect("connect to the proxy");
    for i in 0..2 {
        conn.send(b"GET /node HTTP/1.0\r\nHost: test.example\r\nConnection: keep-alive\r\n\r\n")
            .expect("send an HTTP/1.0 keep-alive request");
        let (resp, _) = conn.response("GET").expect("response");
        assert_eq!(
            (resp.status, resp.body.trim()),
            (200, NODE),
            "{i}: {resp:?}"
        );
        assert!(!is_chunked(&resp), "{i}: {resp:?}");
        assert!(
            resp.header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")),
            "{i}: {resp:?}"
        );
    }
}

/// Three requests (the second with a body) in one write, the last with
/// `Connection: close`.
const PIPELINED: &[u8] = b"GET /headers?n=1 HTTP/1.1\r\nHost: test.example\r\n\r\n\
    POST /echo HTTP/1.1\r\nHost: test.example\r\nContent-Length: 11\r\n\r\npipelined!\n\
    GET /headers?n=3 HTTP/1.1\r\nHost: test.example\r\nConnection: close\r\n\r\n";

/// Checks response `i` (0-based) to [`PIPELINED`].
fn check_pipelined(i: usize, resp: &Response, body: &[u8]) {
    assert_eq!(resp.status, 200, "response {i}: {resp:?}");
    match i {
        0 => assert_eq!(resp.echoed("REQUEST_URI"), Some("/headers?n=1"), "{resp:?}"),
        1 => assert_same_bytes("pipelined POST body", body, b"pipelined!\n"),
        _ => assert_eq!(resp.echoed("REQUEST_URI"), Some("/headers?n=3"), "{resp:?}"),
    }
}

#[test]
fn pipelined_requests_never_get_a_wrong_or_garbled_answer() {
    // What the current proxy guarantees: the first request is answered;
    // every further response is the right one, in order, or the connection
    // is closed cleanly between responses (RFC 9112 9.3.2 lets a server
    // close, and the client then retries the unanswered requests).
    let apache = echo_node();
    let wc = proxy_for(apache.addr(), "", "");
    let mut conn = RawConn::connect(wc.listen).expect("connect to the proxy");
    conn.send(PIPELINED).expect("send three requests at once");
    let (first, body) = conn.response("GET").expect("first response");
    check_pipelined(0, &first, &body);
    // The last request says `Connection: close`: the proxy closes either way.
    let wire = conn
        .read_until_closed()
        .expect("the connection is closed after the first response or the last");
    if wire.is_empty() {
        return; // closed cleanly right after the first response
    }
    let mut reader = BufReader::new(Cursor::new(wire));
    for (i, method) in [(1, "POST"), (2, "GET")] {
        let (resp, body) = read_response_bytes(&mut reader, method)
            .unwrap_or_else(|e| panic!("response {i}: not a complete response: {e}"));
        check_pipelined(i, &resp, &body);
    }
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).expect("read the rest");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let apache = echo_node();
    let wc = proxy_for(apache.addr(), "", "");
    let mut conn = RawConn::connect(wc.listen).expect("connect to the proxy");
    conn.send(PIPELINED).expect("send three requests at once");
    for (i, method) in ["GET", "POST", "GET"].into_iter().enumerate() {
        let (resp, body) = conn
            .response(method)
            .unwrap_or_else(|e| panic!("response {i}: {e}"));
        check_pipelined(i, &resp, &body);
    }
    let rest = conn
        .read_until_closed()
        .expect("closed after the last request's `Connection: close`");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

/// Since its access log was `log_mark` bytes long, the node saw nothing but
/// the proxy's status scrapes and one request made now through the proxy:
/// whatever was refused in between never reached
/// it (its access log would show it, also where Apache would answer it
/// 400 itself, so a status alone would not tell). Also shows that the proxy
/// still serves well-formed requests.
fn assert_node_saw_nothing(apache: &ApacheNode, wc: &Webcluster, log_mark: usize) {
    const AFTER: &str = "/node?after-the-refusals";
    let r = http_get(wc.listen, AFTER, &[]).expect("GET after the refusals");
    assert_eq!((r.status, r.body.trim()), (200, NODE), "{r:?}");
    wait_until(
        "the node logs the request made after the refusals",
        Duration::from_secs(10),
        || apache.access_log().contains(AFTER),
    );
    let log = apache.access_log();
    let log = log.get(log_mark..).unwrap_or(&log);
    let seen: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("/server-status"))
        .collect();
    assert!(
        seen.len() == 1 && seen[0].contains(&format!("\"GET {AFTER} HTTP/1.1\"")),
        "the node saw more than the request made after the refusals:\n{log}"
    );
}

#[test]
fn garbage_request_gets_400_and_the_connection_closed() {
    let apache = echo_node();
    let wc = proxy_for(apache.addr(), "", "");
    let log_mark = apache.access_log().len();
    let cases: [&[u8]; 3] = [
        b"THIS IS NOT HTTP\r\n\r\n",
        b"\x00\x01\x02 garbage\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: test.example\r\nthis header has no colon\r\n\r\n",
    ];
    for raw in cases {
        let resp = answered_then_closed(wc.listen, raw, "GET");
        assert_eq!(
            resp.status,
            400,
            "{:?}: {resp:?}",
            String::from_utf8_lossy(raw)
        );
    }
    // None reached the node, and the proxy still serves well-formed requests.
    assert_node_saw_nothing(&apache, &wc, log_mark);
}

/// A head sent a byte at a time cannot hold a connection past
/// `client_read`, counted from its first byte (as nginx's
/// `client_header_timeout`), though no single gap reaches it.
#[test]
fn a_trickled_head_is_cut_off_at_the_read_timeout() {
    let apache = echo_node();
    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "")
            + "[timeouts]\nclient_read = \"1s\"\n\n"
            + &group_config("web", "", &[("n1", apache.addr(), "")])
    });
    wc.wait_all_up();
    let log_mark = apache.access_log().len();
    let head = format!(
        "GET /node HTTP/1.1\r\nHost: test.example\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(64)
    );
    let mut conn = RawConn::connect(wc.listen).expect("connect to the proxy");
    // 40 bytes, 100 ms apart: 4 s, four times the timeout, and the head is
    // still not complete. Once the proxy has closed the connection, a send
    // fails (the closed socket answers with a reset); with a timeout per
    // read only, none would.
    let mut cut = false;
    for b in &head.as_bytes()[..40] {
        if conn.send(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        cut,
        "the proxy kept a trickled head's connection open for 4 s"
    );
    // Not a byte of it reached the node.
    assert_node_saw_nothing(&apache, &wc, log_mark);
}

/// Requests whose body framing could be read two ways (the shapes of
/// request smuggling) or that are too large to read are refused before any
/// node sees them, and the connection is closed.
#[test]
fn ambiguous_or_oversized_requests_are_refused_and_the_connection_closed() {
    let apache = echo_node();
    let wc = proxy_for(apache.addr(), "", "");
    let log_mark = apache.access_log().len();
    let big_header = format!(
        "GET /node?refused HTTP/1.1\r\nHost: test.example\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    let cases: [(&[u8], u16); 8] = [
        (
            b"POST /echo HTTP/1.1\r\nHost: test.example\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: test.example\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
            400,
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: test.example\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            400,
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: test.example\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: test.example\r\nContent-Length: 2097152\r\n\r\nabc",
            413,
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: test.example\r\nExpect: 100-continue\r\n\
              Content-Length: 2097152\r\n\r\n",
            413,
        ),
        (
            b"GET /node?refused HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
            400,
        ),
        (big_header.as_bytes(), 431),
    ];
    for (raw, status) in cases {
        let resp = answered_then_closed(wc.listen, raw, "POST");
        let shown = String::from_utf8_lossy(&raw[..raw.len().min(120)]);
        assert_eq!(resp.status, status, "{shown:?}: {resp:?}");
    }
    // None reached the node.
    assert_node_saw_nothing(&apache, &wc, log_mark);
}

/// A chunked request body reaches the node chunked anew: chunk extensions
/// and trailers, which a node might read another way than the proxy did,
/// are not passed on.
#[test]
fn chunk_extensions_and_trailers_do_not_reach_the_node() {
    let peer = PeerNode::start(record_chunked_body);
    // Streamed (request buffering off): chunked anew as it comes.
    let wc = proxy_with(
        peer.addr,
        "[buffering]\nrequests = false\n",
        "scrape = false",
        "",
    );
    let mut conn = RawConn::connect(wc.listen).expect("connect to the proxy");
    conn.send(
        b"POST /x HTTP/1.1\r\nHost: test.example\r\nTransfer-Encoding: chunked\r\n\
          Connection: close\r\n\r\n\
          5;name=\"x\"\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
    )
    .expect("send a chunked request");
    let (resp, _) = conn.response("POST").expect("a response");
    assert_eq!(resp.status, 200, "{resp:?}");
    let seen = peer.heads.recv_timeout(TIMEOUT).expect("the node's record");
    let body = seen.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(
        !body.contains(';') && !body.contains("X-Trailer"),
        "{seen:?}"
    );
    // Chunked anew however the reads split it: the same data.
    let mut data = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size, 16).expect("a bare chunk size");
        if size == 0 {
            assert_eq!(after, "\r\n", "{seen:?}");
            break;
        }
        data.push_str(&after[..size]);
        rest = after[size..]
            .strip_prefix("\r\n")
            .expect("CRLF after a chunk");
    }
    assert_eq!(data, "hello world", "{seen:?}");
}

/// Records a request's head and raw chunked body (up to its last chunk and
/// the empty line after it), then answers 200.
fn record_chunked_body(mut stream: TcpStream, seen: &mpsc::Sender<String>) {
    let Some(mut raw) = read_head(&mut stream) else {
        return;
    };
    let mut byte = [0u8; 1];
    while !raw.ends_with("\r\n0\r\n\r\n") && raw.len() < 64 * 1024 {
        if !matches!(stream.read(&mut byte), Ok(1)) {
            break;
        }
        raw.push(char::from(byte[0]));
    }
    let _ = seen.send(raw);
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

#[test]
fn connect_method_is_refused_and_never_reaches_the_node() {
    let apache = echo_node();
    let wc = proxy_for(apache.addr(), "", "");
    let log_mark = apache.access_log().len();
    let resp = answered_then_closed(
        wc.listen,
        b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n",
        "CONNECT",
    );
    assert_eq!(resp.status, 405, "{resp:?}");
    // The node never saw the CONNECT.
    assert_node_saw_nothing(&apache, &wc, log_mark);
}

// ---------------------------------------------------------------- upstream keep-alive

/// nginx's `accepts` counter, read directly from its stub_status (this
/// read is itself one accepted connection).
fn accepts(nginx: &NginxNode) -> u64 {
    let page = capture_status(nginx.addr(), nginx.status_path());
    nginx_accepts(&page).unwrap_or_else(|| panic!("no accepts counter in:\n{page}"))
}

#[test]
fn upstream_connections_to_nginx_are_reused() {
    const REQUESTS: u64 = 30;
    let nginx = NginxNode::start(NginxOpts::named("ngx"));
    let node_keys = format!(
        "status_url = \"{}\"\n  status_kind = \"nginx\"\n  max_workers = 512",
        nginx.status_url()
    );
    // (mode, group keys): "on" forces pooling; the default "auto" pools to
    // nginx (not one worker per connection); "off" is the control that
    // shows the counter sees every new connection.
    for (mode, keys) in [
        ("on", "upstream_keepalive = \"on\""),
        ("auto", ""),
        ("off", "upstream_keepalive = \"off\""),
    ] {
        let wc = proxy_for(nginx.addr(), keys, &node_keys);
        let before = accepts(&nginx);
        for i in 0..REQUESTS {
            let r = http_get(wc.listen, "/node", &[]).expect("GET /node through the proxy");
            assert_eq!(
                (r.status, r.body.as_str()),
                (200, "ngx"),
                "{mode} #{i}: {r:?}"
            );
        }
        // Minus the status read that takes `after`.
        let delta = accepts(&nginx) - before - 1;
        eprintln!(
            "upstream_keepalive = {mode}: {REQUESTS} requests, {delta} new connections to nginx"
        );
        if mode == "off" {
            assert!(
                delta >= REQUESTS,
                "{mode}: {delta} connections for {REQUESTS} requests"
            );
        } else {
            // Not 0: the proxy's own status reads (every 200 ms, a new
            // connection each) count in `accepts` too, more of them the
            // slower the machine; without reuse it would be 30 or more.
            assert!(
                delta < REQUESTS / 2,
                "{mode}: {delta} new connections to nginx for {REQUESTS} sequential requests"
            );
        }
        drop(wc);
    }
}

#[test]
fn pooled_connection_closed_by_the_node_is_not_a_502() {
    let nginx = NginxNode::start(NginxOpts {
        keepalive_timeout_secs: 1,
        ..NginxOpts::named("ngx-short")
    });
    let conf = std::fs::read_to_string(nginx.dir().join("nginx.conf")).expect("nginx.conf");
    assert!(conf.contains("keepalive_timeout 1s;"), "{conf}");
    // No scraping: the only connections to nginx are the proxy's pooled
    // ones and this test's status reads. The proxy keeps idle connections
    // 4 s (timeouts.idle), longer than nginx's 1 s.
    let wc = proxy_for(
        nginx.addr(),
        "upstream_keepalive = \"on\"\nscrape = false",
        "",
    );
    for round in 0..3 {
        let r = http_get(wc.listen, "/node", &[]).expect("GET /node through the proxy");
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "ngx-short"),
            "round {round}: {r:?}"
        );
        // Past nginx's keepalive_timeout: it has closed the idle pooled
        // connection when its only connection left is this status read.
        wait_until(
            "nginx closes the proxy's idle connection",
            Duration::from_secs(10),
            || {
                let page = capture_status(nginx.addr(), nginx.status_path());
                nginx_active_connections(&page) == Some(1)
            },
        );
    }
    let r = http_get(wc.listen, "/node", &[]).expect("GET /node through the proxy");
    assert_eq!((r.status, r.body.as_str()), (200, "ngx-short"), "{r:?}");
    // Not held against the node either.
    let s = wc.status();
    let n = node(&s, "n1");
    assert_eq!(n["errors_total"], 0, "{n:#}");
    assert!(!wc.log().contains("answered 502"), "{}", wc.log());
}

#[test]
fn keep_alive_race_with_the_only_node_is_retried_on_a_new_connection() {
    // One node, which closes every reused connection unanswered: each
    // request after the first goes out on a pooled connection that dies, so
    // it must be sent again on a new connection to the same node (RFC 9112
    // 9.3.1; nginx does the same), not answered 502 because the group has
    // no other node.
    let peer = PeerNode::start(serve_one_then_drop_the_next);
    let wc = proxy_for(peer.addr, "upstream_keepalive = \"on\"\nscrape = false", "");
    for i in 0..4 {
        let r = http_get(wc.listen, "/x", &[]).expect("GET /x through the proxy");
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "first on its connection"),
            "request {i}: {r:?}"
        );
    }
    // The race did happen: the node read more requests than it answered.
    let heads: Vec<String> = peer.heads.try_iter().collect();
    assert!(heads.len() > 4, "{} request heads: {heads:?}", heads.len());
    let s = wc.status();
    let n = node(&s, "n1");
    assert_eq!(n["errors_total"], 0, "{n:#}");
}

// ---------------------------------------------------------------- upgrade

/// A minimal in-test node for what no Debian package does on purpose: a
/// WebSocket echo (no package offers an easy one) and a node that closes a
/// keep-alive connection just as it is reused (the race real servers hit
/// now and then). It accepts on 127.0.0.1 (ephemeral port) and serves each
/// connection on its own thread with `serve`; each request head it read is
/// sent to `heads`. Stopped when dropped.
struct PeerNode {
    addr: SocketAddr,
    heads: mpsc::Receiver<String>,
    stop: Arc<AtomicBool>,
}

/// What the peer sends right after its 101, before the client says anything.
const GREETING: &[u8] = b"hello from the node\n";

impl PeerNode {
    fn start(serve: fn(TcpStream, &mpsc::Sender<String>)) -> PeerNode {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind the peer node");
        let addr = listener.local_addr().expect("peer address");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, heads) = mpsc::channel();
        let stopping = Arc::clone(&stop);
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stopping.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let tx = tx.clone();
                        std::thread::spawn(move || serve(stream, &tx));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => return,
                }
            }
        });
        PeerNode { addr, heads, stop }
    }
}

impl Drop for PeerNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One request head from `stream`, blocking up to `TIMEOUT` per byte; None
/// at the end of the stream, on an error or past 16 KiB.
fn read_head(stream: &mut TcpStream) -> Option<String> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(TIMEOUT));
    let _ = stream.set_write_timeout(Some(TIMEOUT));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || !matches!(stream.read(&mut byte), Ok(1)) {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// The keep-alive race: answers the first request of a connection and
/// keeps it open, then closes it on reading the next one, unanswered.
fn serve_one_then_drop_the_next(mut stream: TcpStream, heads: &mpsc::Sender<String>) {
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    let _ = heads.send(head);
    let body = "first on its connection";
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(answer.as_bytes()).is_err() {
        return;
    }
    if let Some(head) = read_head(&mut stream) {
        let _ = heads.send(head);
    }
    // Dropped: closed without an answer.
}

fn serve_upgrade(mut stream: TcpStream, heads: &mpsc::Sender<String>) {
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    let upgrade = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "upgrade:websocket");
    let _ = heads.send(head);
    if !upgrade {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    }
    let mut answer =
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
            .to_vec();
    answer.extend_from_slice(GREETING);
    if stream.write_all(&answer).is_err() {
        return;
    }
    let mut buf = [0u8; 16 * 1024];
    // Bounded: every read waits at most TIMEOUT, and at most this many.
    for _ in 0..10_000 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

#[test]
fn websocket_upgrade_is_tunnelled_both_ways() {
    let peer = PeerNode::start(serve_upgrade);
    let wc = proxy_for(peer.addr, "scrape = false", "");
    let mut conn = RawConn::connect(wc.listen).expect("connect to the proxy");
    conn.send(
        b"GET /chat HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("send the upgrade request");
    let (status_line, fields) = conn.head().expect("the upgrade response head");
    assert!(
        status_line.starts_with("HTTP/1.1 101"),
        "{status_line:?} {fields:?}"
    );
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    assert_eq!(field("upgrade").as_deref(), Some("websocket"), "{fields:?}");
    assert!(
        field("connection").is_some_and(|v| v.contains("upgrade")),
        "{fields:?}"
    );
    // The node asked for the upgrade saw it, with the hop-by-hop fields
    // that make it one.
    let head = peer
        .heads
        .recv_timeout(TIMEOUT)
        .expect("the node got the request")
        .to_ascii_lowercase();
    assert!(head.starts_with("get /chat http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(
        head.lines()
            .any(|l| l.starts_with("connection:") && l.contains("upgrade")),
        "{head}"
    );
    assert!(
        head.contains("\r\nsec-websocket-key: dghlihnhbxbszsbub25jzq==\r\n"),
        "{head}"
    );
    // Node to client, unprompted.
    let greeting = conn
        .read_exact(GREETING.len())
        .expect("the node's greeting");
    assert_same_bytes("greeting from the node", &greeting, GREETING);
    // Client to node and back, small and large.
    for (i, msg) in [b"ping 1".to_vec(), payload(300_000, 5)].iter().enumerate() {
        conn.send(msg).expect("send through the tunnel");
        let back = conn.read_exact(msg.len()).expect("the echo");
        assert_same_bytes(&format!("echo {i}"), &back, msg);
    }
}
