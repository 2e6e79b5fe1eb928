//! The request path in process (issue 16): a visitor over
//! `tokio::io::duplex` (HTTP/1 bytes, or the `h2` crate as a client) and
//! scripted nodes on loopback listeners, so that retries, `retry_on_404`,
//! body replay and keep-alive decisions are checked for both protocols in
//! milliseconds, without the binary or a real web server. What only a real
//! node or client shows stays in `tests/`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::pool::Pool;
use super::{ActiveRequests, Arrival, Proxy};
use crate::cluster::Cluster;
use crate::metrics::Metrics;

const WAIT: Duration = Duration::from_secs(10);

/// What a scripted node answers to one request (its head and body), or
/// `None` to close the connection without an answer; after an answer that
/// says `Connection: close` the node closes it.
type Script = fn(&str, &[u8]) -> Option<String>;

/// A node on a loopback listener that answers as its script says and keeps
/// each request it got (head and body).
struct Node {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A request a node got: its head and body.
type Seen = (String, Vec<u8>);

impl Node {
    async fn start(script: Script) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some((head, body)) = read_request(&mut conn, &mut buf).await else {
                            return;
                        };
                        let answer = script(&head, &body);
                        log.lock().unwrap().push((head, body));
                        match answer {
                            Some(a) => {
                                if conn.write_all(a.as_bytes()).await.is_err()
                                    || a.contains("Connection: close")
                                {
                                    return;
                                }
                            }
                            None => return,
                        }
                    }
                });
            }
        });
        Node { addr, seen }
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A closed port: connecting to it fails at once.
async fn dead_address() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// One request head and its `Content-Length` body (what the proxy sends a
/// node, buffered bodies included).
async fn read_request(conn: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<Seen> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut more = [0u8; 8192];
                let n = conn.read(&mut more).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&more[..n]);
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return Some((head, body));
        }
        let mut more = [0u8; 8192];
        let n = conn.read(&mut more).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&more[..n]);
    }
}

fn ok(body: &str) -> Option<String> {
    Some(format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// A proxy for one group "web" of `nodes` (round robin, no scraping) with
/// `extra` config after it.
fn proxy(nodes: &[SocketAddr], extra: &str) -> Arc<Proxy> {
    let mut text = String::from(
        "[server]\nlisten = [\"127.0.0.1:1\"]\n[admin]\nenabled = false\n\
         [[group]]\nname = \"web\"\nbalance = \"round_robin\"\nscrape = false\n",
    );
    for (i, addr) in nodes.iter().enumerate() {
        text.push_str(&format!(
            "  [[group.node]]\n  name = \"n{i}\"\n  address = \"{addr}\"\n"
        ));
    }
    text.push_str(extra);
    let config = crate::config::parse(&text, Path::new("test.toml")).expect("a valid config");
    Arc::new(Proxy::new(
        Arc::new(Cluster::new(config)),
        Arc::new(Metrics::new()),
        None,
        Arc::new(ActiveRequests::default()),
        Arc::new(Pool::default()),
    ))
}

/// The stop signal a connection watches; never sent here.
fn running() -> (
    tokio::sync::watch::Sender<bool>,
    tokio::sync::watch::Receiver<bool>,
) {
    tokio::sync::watch::channel(false)
}

/// Send `request` as an HTTP/1 visitor and read what comes back until the
/// proxy closes the connection or a response to a request with
/// `Connection: close` ended.
async fn http1(proxy: &Arc<Proxy>, request: &[u8]) -> String {
    http1_within(proxy, request, WAIT).await
}

/// [`http1`], waiting `wait` at most for the end.
async fn http1_within(proxy: &Arc<Proxy>, request: &[u8], wait: Duration) -> String {
    let (mut client, server) = tokio::io::duplex(256 * 1024);
    let (_stop, watch) = running();
    let p = Arc::clone(proxy);
    let served =
        tokio::spawn(async move { p.serve(Box::new(server), Arrival::default(), &watch).await });
    client.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(wait, client.read_to_end(&mut out))
        .await
        .expect("the proxy closes the connection")
        .unwrap();
    served.await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// One request as an HTTP/2 visitor (the `h2` crate as the client): the
/// status and body.
async fn http2(proxy: &Arc<Proxy>, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let (head, got) = http2_response(proxy, method, path, body)
        .await
        .expect("a response head");
    (head.status.as_u16(), got.expect("a whole body"))
}

/// What an HTTP/2 visitor got: the response head (or the stream's error
/// before it), and the body (or the stream's error in it).
type H2Response = Result<(http::response::Parts, Result<Vec<u8>, h2::Error>), h2::Error>;

/// [`http2`], with the response head and the stream's errors.
async fn http2_response(proxy: &Arc<Proxy>, method: &str, path: &str, body: &[u8]) -> H2Response {
    let (client, server) = tokio::io::duplex(256 * 1024);
    let (_stop, watch) = running();
    let p = Arc::clone(proxy);
    tokio::spawn(async move {
        p.serve_h2(Box::new(server), Arrival::default(), &watch)
            .await
    });
    let (mut h2, conn) = h2::client::handshake(client).await.expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://site.test{path}"))
        .body(())
        .unwrap();
    let (resp, mut send) = h2.send_request(req, body.is_empty()).unwrap();
    if !body.is_empty() {
        send.send_data(Bytes::copy_from_slice(body), true).unwrap();
    }
    let resp = tokio::time::timeout(WAIT, resp).await.unwrap()?;
    let (head, mut recv) = resp.into_parts();
    let mut out = Vec::new();
    while let Some(data) = tokio::time::timeout(WAIT, recv.data()).await.unwrap() {
        match data {
            Ok(data) => {
                let _ = recv.flow_control().release_capacity(data.len());
                out.extend_from_slice(&data);
            }
            Err(e) => return Ok((head, Err(e))),
        }
    }
    Ok((head, Ok(out)))
}

#[tokio::test]
async fn a_dead_node_is_retried_for_both_protocols() {
    let live = Node::start(|_, _| ok("live")).await;
    let p = proxy(&[dead_address().await, live.addr], "");
    for _ in 0..2 {
        let r = http1(
            &p,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.ends_with("live"), "{r}");
        assert_eq!(http2(&p, "GET", "/", b"").await, (200, b"live".to_vec()));
    }
}

#[tokio::test]
async fn a_404_is_retried_on_another_node_for_both_protocols() {
    let missing =
        Node::start(|_, _| Some("HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope".into()))
            .await;
    let has = Node::start(|_, _| ok("found")).await;
    let p = proxy(
        &[missing.addr, has.addr],
        "[[route]]\npath = \"/\"\ngroup = \"web\"\nretry_on_404 = true\n",
    );
    for _ in 0..2 {
        let r = http1(
            &p,
            b"GET /f HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("found"), "{r}");
        assert_eq!(http2(&p, "GET", "/f", b"").await, (200, b"found".to_vec()));
    }
    // A write is not retried on 404.
    assert_eq!(http2(&p, "POST", "/f", b"x").await.0, 404);
}

#[tokio::test]
async fn a_body_is_sent_again_to_the_next_node_for_both_protocols() {
    // The first node takes the request and closes without an answer.
    let drops = Node::start(|_, _| None).await;
    let echo = Node::start(|_, body| ok(&String::from_utf8_lossy(body))).await;
    let p = proxy(&[drops.addr, echo.addr], "");
    let body = "x".repeat(100_000);
    let r = http1(
        &p,
        format!(
            "PUT /u HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 200") && r.ends_with(&body),
        "{}",
        &r[..60]
    );
    let (status, back) = http2(&p, "PUT", "/u", body.as_bytes()).await;
    assert_eq!((status, back.len()), (200, body.len()));
    // Both nodes got the whole body each time, with one framing header.
    for (head, got) in drops.requests().iter().chain(echo.requests().iter()) {
        assert_eq!(got.len(), body.len(), "{head}");
        assert_eq!(head.matches("Content-Length").count(), 1, "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("transfer-encoding"),
            "{head}"
        );
    }
    assert_eq!(echo.requests().len(), 2);
}

#[tokio::test]
async fn keep_alive_follows_the_visitor_and_the_node() {
    let node = Node::start(|head, _| {
        if head.contains("/closing") {
            Some("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end".into())
        } else {
            ok("one")
        }
    })
    .await;
    let p = proxy(&[node.addr], "");
    // Two requests on one connection, the second asks to close.
    let r = http1(
        &p,
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.matches("HTTP/1.1 200").count(), 2, "{r}");
    assert!(r.trim_end().ends_with("one"), "{r}");
    assert_eq!(r.matches("Connection: close").count(), 1, "{r}");
    // A body that runs until the node closes reaches an HTTP/1.1 visitor
    // chunked (its connection could go on), an HTTP/1.0 one as it came,
    // and an HTTP/2 one in DATA frames.
    let r = http1(
        &p,
        b"GET /closing HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.contains("Transfer-Encoding: chunked"), "{r}");
    let r = http1(&p, b"GET /closing HTTP/1.0\r\nHost: a\r\n\r\n").await;
    assert!(!r.contains("chunked") && r.ends_with("to the end"), "{r}");
    assert_eq!(
        http2(&p, "GET", "/closing", b"").await,
        (200, b"to the end".to_vec())
    );
    // The node got the HTTP/2 request with Host from :authority.
    let last = node.requests().pop().unwrap().0;
    assert!(
        last.contains("Host: site.test\r\n") || last.contains("host: site.test\r\n"),
        "{last}"
    );
}

#[tokio::test]
async fn local_answers_reach_http2_visitors_and_head_has_no_body() {
    let node = Node::start(|_, _| ok("page")).await;
    let p = proxy(&[node.addr], "");
    assert_eq!(
        http2(&p, "GET", "/server-status", b"").await,
        (403, b"403 Forbidden\n".to_vec())
    );
    assert_eq!(
        http2(&p, "HEAD", "/server-status", b"").await,
        (403, Vec::new())
    );
    assert_eq!(http2(&p, "CONNECT", "", b"").await.0, 405);
    assert!(node.requests().is_empty(), "{:?}", node.requests());
    assert_eq!(http2(&p, "HEAD", "/", b"").await, (200, Vec::new()));
    assert_eq!(node.requests().len(), 1);
}

/// An HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A header block of literal fields (HPACK, no indexing; short strings).
fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in fields {
        out.push(0);
        out.push(n.len() as u8);
        out.extend_from_slice(n.as_bytes());
        out.push(v.len() as u8);
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// Streams the visitor resets beyond its completed ones end the connection
/// (`http2::MAX_GLITCHES`) with ENHANCE_YOUR_CALM, and none of the reset
/// requests reaches a node: each is dropped when its reset comes.
#[tokio::test]
async fn a_connection_that_keeps_resetting_its_streams_is_ended() {
    let node = Node::start(|_, _| ok("page")).await;
    let p = proxy(&[node.addr], "");
    let (mut client, server) = tokio::io::duplex(1024 * 1024);
    let (_stop, watch) = running();
    let pp = Arc::clone(&p);
    let served = tokio::spawn(async move {
        pp.serve_h2(Box::new(server), Arrival::default(), &watch)
            .await
    });
    let block = header_block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "site.test"),
        (":path", "/"),
    ]);
    let mut hello = super::http2::PREFACE.to_vec();
    hello.extend(frame(4, 0, 0, &[]));
    client.write_all(&hello).await.unwrap();
    let (mut read, mut write) = tokio::io::split(client);
    let reader = tokio::spawn(async move {
        let mut all = Vec::new();
        let _ = tokio::time::timeout(WAIT, read.read_to_end(&mut all)).await;
        all
    });
    // One stream at a time, reset once the proxy has it: 1,000 at most.
    let mut sent = 0;
    for id in (1..2000u32).step_by(2) {
        let mut pair = frame(1, 4, id, &block);
        pair.extend(frame(3, 0, id, &8u32.to_be_bytes()));
        if write.write_all(&pair).await.is_err() {
            break;
        }
        sent += 1;
        tokio::task::yield_now().await;
    }
    tokio::time::timeout(WAIT, served).await.unwrap().unwrap();
    let all = reader.await.unwrap();
    // A GOAWAY (type 7) with ENHANCE_YOUR_CALM (0xb) came.
    let mut goaway = None;
    let mut at = 0;
    while at + 9 <= all.len() {
        let len = (usize::from(all[at]) << 16)
            | (usize::from(all[at + 1]) << 8)
            | usize::from(all[at + 2]);
        if all[at + 3] == 7 && at + 9 + 8 <= all.len() {
            let p = &all[at + 9..];
            goaway = Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
        }
        at += 9 + len;
    }
    assert_eq!(goaway, Some(0xb), "after {sent} reset streams");
    assert!(sent < 1000, "the connection took {sent} reset streams");
    assert!(
        node.requests().len() < sent / 2,
        "{} of {sent}",
        node.requests().len()
    );
}

#[tokio::test]
async fn an_http2_response_has_no_connection_fields_and_a_cut_body_resets_the_stream() {
    let node = Node::start(|head, _| {
        if head.contains("/cut") {
            Some(
                "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\nonly ten b"
                    .into(),
            )
        } else {
            Some(
                "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n\
                 X-Hop: 1\r\nUpgrade: h2c\r\nTrailer: X-Sum\r\nX-Kept: 2\r\n\
                 Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n"
                    .into(),
            )
        }
    })
    .await;
    let p = proxy(&[node.addr], "[buffering]\nresponses = false\n");
    let (head, body) = http2_response(&p, "GET", "/", b"").await.unwrap();
    assert_eq!(body.unwrap(), b"abc");
    for gone in [
        "connection",
        "keep-alive",
        "x-hop",
        "upgrade",
        "trailer",
        "transfer-encoding",
        "content-length",
        "x-sum",
    ] {
        assert!(head.headers.get(gone).is_none(), "{gone}: {head:?}");
    }
    assert_eq!(head.headers.get("x-kept").unwrap(), "2");
    // The node closes before the length it gave: the stream is reset, not
    // ended as if whole (the reset may overtake the head in the client).
    let e = match http2_response(&p, "GET", "/cut", b"").await {
        Err(e) => e,
        Ok((head, body)) => {
            assert_eq!(head.headers.get("content-length").unwrap(), "100");
            body.expect_err("a cut body ended as if whole")
        }
    };
    assert_eq!(e.reason(), Some(h2::Reason::INTERNAL_ERROR), "{e}");
}

// Timeouts, with tokio's paused clock (it moves on whenever every task
// waits): minutes of the visitor's silence take no time. Only visitors over
// `duplex` here; no node is reached (the request body is buffered first).

/// A request body that stops coming: after `client_read` the HTTP/1
/// connection closes unanswered, the HTTP/2 stream is reset; no node is
/// asked either way.
#[tokio::test(start_paused = true)]
async fn a_body_that_stops_coming_ends_at_client_read_for_both_protocols() {
    let p = proxy(
        &[dead_address().await],
        "[timeouts]\nclient_read = \"30s\"\n",
    );
    let started = tokio::time::Instant::now();
    let r = http1_within(
        &p,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc",
        Duration::from_secs(300),
    )
    .await;
    assert_eq!(r, "");
    assert!(started.elapsed() >= Duration::from_secs(30));

    let (client, server) = tokio::io::duplex(64 * 1024);
    let (_stop, watch) = running();
    let pp = Arc::clone(&p);
    tokio::spawn(async move {
        pp.serve_h2(Box::new(server), Arrival::default(), &watch)
            .await
    });
    let (mut h2, conn) = h2::client::handshake(client).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("POST")
        .uri("http://site.test/")
        .header("content-length", "10")
        .body(())
        .unwrap();
    let started = tokio::time::Instant::now();
    let (resp, mut send) = h2.send_request(req, false).unwrap();
    send.send_data(Bytes::from_static(b"abc"), false).unwrap();
    let e = tokio::time::timeout(Duration::from_secs(300), resp)
        .await
        .expect("an end before 300 s")
        .expect_err("an answer to a body that never came");
    assert!(e.is_reset(), "{e}");
    assert!(started.elapsed() >= Duration::from_secs(30));
}

/// A visitor that connects and sends nothing: HTTP/1 is closed after
/// `client_read`; an HTTP/2 connection without a stream gets GOAWAY after
/// `client_keepalive` and is closed.
#[tokio::test(start_paused = true)]
async fn silent_visitors_are_let_go() {
    let p = proxy(
        &[dead_address().await],
        "[timeouts]\nclient_read = \"20s\"\nclient_keepalive = \"40s\"\n",
    );
    let started = tokio::time::Instant::now();
    assert_eq!(http1_within(&p, b"", Duration::from_secs(300)).await, "");
    assert!(started.elapsed() >= Duration::from_secs(20));

    let (client, server) = tokio::io::duplex(64 * 1024);
    let (_stop, watch) = running();
    let pp = Arc::clone(&p);
    let served = tokio::spawn(async move {
        pp.serve_h2(Box::new(server), Arrival::default(), &watch)
            .await
    });
    let (_h2, conn) = h2::client::handshake(client).await.unwrap();
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(600), conn)
        .await
        .expect("the connection ends")
        .expect("with GOAWAY, not an error");
    assert!(
        started.elapsed() >= Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    served.await.unwrap();
}

#[tokio::test]
async fn the_https_redirect_reaches_http2_visitors() {
    let node = Node::start(|_, _| ok("page")).await;
    let p = proxy(
        &[node.addr],
        "[[route]]\npath = \"/\"\ngroup = \"web\"\nhttps_redirect = true\n",
    );
    let (head, body) = http2_response(&p, "GET", "/a?b=c", b"")
        .await
        .expect("a response");
    assert_eq!(head.status, 308);
    assert_eq!(
        head.headers.get("location").unwrap(),
        "https://site.test/a?b=c"
    );
    assert_eq!(
        body.unwrap(),
        crate::proxy::respond::REDIRECT_BODY.as_bytes()
    );
    assert_eq!(http2(&p, "HEAD", "/a", b"").await, (308, Vec::new()));
    assert!(node.requests().is_empty());
}

/// One response on a connection that stays open: its head and its
/// `Content-Length` body.
async fn read_response(client: &mut tokio::io::DuplexStream) -> String {
    let mut got = Vec::new();
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if got.len() >= end + 4 + len {
                return String::from_utf8_lossy(&got).into_owned();
            }
        }
        let mut more = [0u8; 4096];
        let n = client.read(&mut more).await.unwrap();
        assert!(n > 0, "closed before the response ended: {got:?}");
        got.extend_from_slice(&more[..n]);
    }
}

/// Between two requests an HTTP/1 connection holds only a small future
/// (the request's own state is made when its first bytes come): an idle
/// keep-alive connection is closed after `client_keepalive` (not at
/// `client_read`), at once when the server starts to stop, and a request
/// whose head comes in pieces after a wait is answered, its head bounded
/// by `client_read` from its first byte.
/// Wait (on the paused clock, at most 300 s) until the proxy closes the
/// connection; nothing more may come on it.
async fn closed_unanswered(client: &mut tokio::io::DuplexStream) {
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(300), client.read_to_end(&mut rest))
        .await
        .expect("closed")
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_waits_for_its_next_request_until_keepalive_or_stop() {
    const STATUS: &[u8] = b"GET /server-status HTTP/1.1\r\nHost: a\r\n\r\n";
    let p = proxy(
        &[dead_address().await],
        "[timeouts]\nclient_read = \"10s\"\nclient_keepalive = \"30s\"\n",
    );
    let connect = |watch: tokio::sync::watch::Receiver<bool>| {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let p = Arc::clone(&p);
        let served =
            tokio::spawn(
                async move { p.serve(Box::new(server), Arrival::default(), &watch).await },
            );
        (client, served)
    };

    // Quiet after its answer (a local 403 that keeps the connection):
    // closed after client_keepalive.
    let (_stop, watch) = running();
    let (mut client, served) = connect(watch);
    client.write_all(STATUS).await.unwrap();
    assert!(read_response(&mut client).await.starts_with("HTTP/1.1 403"));
    let started = tokio::time::Instant::now();
    closed_unanswered(&mut client).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(30), "{waited:?}");
    assert!(served.await.unwrap().is_none());

    // The next request's head in two pieces, the first 20 s after the
    // last answer (within client_keepalive), the second 8 s later (within
    // client_read of the head's first byte).
    let (_stop, watch) = running();
    let (mut client, served) = connect(watch);
    client.write_all(STATUS).await.unwrap();
    read_response(&mut client).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    client.write_all(b"GET /server-st").await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    client.write_all(&STATUS[14..]).await.unwrap();
    assert!(read_response(&mut client).await.starts_with("HTTP/1.1 403"));
    // A head that does not end within client_read of its first byte:
    // closed unanswered.
    client.write_all(b"GET /server-st").await.unwrap();
    let started = tokio::time::Instant::now();
    closed_unanswered(&mut client).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(30),
        "{waited:?}"
    );
    served.await.unwrap();

    // The server starts to stop while the connection is idle: closed at
    // once, before client_keepalive.
    let (stop, watch) = running();
    let (mut client, served) = connect(watch);
    client.write_all(STATUS).await.unwrap();
    read_response(&mut client).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let started = tokio::time::Instant::now();
    stop.send(true).unwrap();
    closed_unanswered(&mut client).await;
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    served.await.unwrap();
}

/// What every idle HTTP/1 connection holds besides its task and socket:
/// the future `process_new` boxes for a plain connection. Kept small (a
/// protocol or phase added to `serve` inline would make every idle
/// connection carry its largest state; benches/README.md, "Idle
/// connections at 1.0x HAProxy's memory": 432 bytes, in a debug build as
/// in the release build).
#[tokio::test]
async fn an_idle_connection_holds_a_small_future() {
    let p = proxy(&[dead_address().await], "");
    let (_client, server) = tokio::io::duplex(1024);
    let (_stop, watch) = running();
    let connection = pingora::apps::ServerApp::process_new(&p, Box::new(server), &watch);
    let size = std::mem::size_of_val(&*connection);
    assert!(size <= 512, "{size} bytes");
}
