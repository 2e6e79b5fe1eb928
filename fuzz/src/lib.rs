//! The checks of webcluster's fuzz targets, one function a target.
//!
//! Each `fuzz_targets/<name>.rs` calls the function `<name>` of this file, and
//! `tests/fuzz_corpus.rs` of the main crate includes this same file (with
//! `#[path]`) to replay every file of `fuzz/corpus/<name>/` and
//! `fuzz/regressions/<name>/` through it on the stable toolchain. A check
//! panics when it finds a bug; it only uses the `webcluster` library and
//! hyper (the strict reference of [`h1_differential`]).

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Method;
use webcluster::proxy::http1::{self, Body, Framing, HeadError, RequestHead, ResponseHead};

/// A target's check: panics on a bug.
pub type Check = fn(&[u8]);

/// Every check, by target name (the corpus test walks this list).
pub const TARGETS: &[(&str, Check)] = &[
    ("request_head", request_head),
    ("chunked_body", chunked_body),
    ("response_head", response_head),
    ("status_apache", status_apache),
    ("status_nginx", status_nginx),
    ("config", config),
    ("h1_differential", h1_differential),
];

/// A request head at the start of `buf` as webcluster's reader takes it
/// (`read_head` in src/proxy/downstream.rs): empty lines before it
/// skipped, then parsed with the default limits. `Ok(Some(n))`: `n` bytes
/// with the skipped ones.
fn parse_request(head: &mut RequestHead, buf: &[u8]) -> Result<Option<usize>, HeadError> {
    let skip = http1::empty_lines(buf);
    let parsed = head.parse(&buf[skip..], &http1::Limits::default())?;
    Ok(parsed.map(|n| skip + n))
}

fn parse_response(head: &mut ResponseHead, buf: &[u8]) -> Result<Option<usize>, HeadError> {
    head.parse(buf, &http1::Limits::default())
}

/// The number of header lines webcluster allows in a head by default
/// (hyper gets the same limit in [`h1_differential`]).
const MAX_HEADERS: usize = http1::DEFAULT_MAX_HEADERS;

/// A request head: parsing never panics, a parsed head is self-contained
/// (its own bytes parse the same, a shorter prefix is incomplete), and the
/// accessors work on whatever was accepted.
pub fn request_head(data: &[u8]) {
    let mut head = RequestHead::default();
    let Ok(Some(n)) = parse_request(&mut head, data) else {
        return;
    };
    assert!(n <= data.len(), "head length {n} > input {}", data.len());
    assert!(
        !matches!(head.body, Framing::UntilClose),
        "a request body never runs until close"
    );
    let (target, path, host) = (head.target(), head.path(), head.host());
    assert!(!target.is_empty(), "empty request target accepted");
    let _ = (
        head.wants_keepalive(),
        head.expects_continue(),
        head.is_websocket_upgrade(),
        head.request_line(),
    );
    if target.starts_with('/') {
        assert!(target.starts_with(path), "path {path:?} not in {target:?}");
    }

    // The same bytes, alone: the same head.
    let mut again = RequestHead::default();
    assert_eq!(parse_request(&mut again, &data[..n]), Ok(Some(n)));
    assert_eq!(again.method, head.method);
    assert_eq!(again.target(), target);
    assert_eq!(again.host(), host);
    assert_eq!(again.body, head.body);
    assert_eq!(again.version, head.version);
    // A prefix of it: not complete yet (a few prefixes, picked by the data).
    for cut in [n - 1, n / 2, usize::from(data[0]) % n] {
        let mut partial = RequestHead::default();
        assert_eq!(
            parse_request(&mut partial, &data[..cut]),
            Ok(None),
            "the first {cut} bytes of a {n}-byte head"
        );
    }
}

/// A body followed through its input in pieces: the outcome does not depend
/// on how the input was split, `advance` never takes more than it is given,
/// a finished body stays finished, and [`http1::forward_body`]'s re-chunked
/// copy of a chunked body reads back as the same data.
///
/// The first byte picks the framing (mostly chunked) and, with the second,
/// the sizes of the pieces; the rest is the body.
pub fn chunked_body(data: &[u8]) {
    let [mode, seed, input @ ..] = data else {
        return;
    };
    let framing = match mode % 8 {
        0 => Framing::Length(u64::from(*seed)),
        1 => Framing::UntilClose,
        _ => Framing::Chunked,
    };
    let whole = follow(framing, input, &[input.len().max(1)]);
    let sizes: Vec<usize> = [*mode >> 3, *seed, seed.rotate_left(3), 1]
        .iter()
        .map(|&s| usize::from(s) % 13 + 1)
        .collect();
    let pieces = follow(framing, input, &sizes);
    assert_eq!(
        whole, pieces,
        "{framing:?}: one piece and pieces of {sizes:?} differ"
    );
    let one = follow(framing, input, &[1]);
    assert_eq!(whole, one, "{framing:?}: one piece and single bytes differ");

    // What a node gets of a chunked body reads back as the same data.
    if framing == Framing::Chunked {
        let mut body = Body::new(framing);
        let mut out = Vec::new();
        let Ok(taken) = http1::forward_body(&mut body, input, &mut out) else {
            return;
        };
        assert_eq!(taken, whole.taken);
        let mut again = Body::new(Framing::Chunked);
        let mut data = Vec::new();
        let n = again
            .advance(&out, Some(&mut data))
            .expect("forward_body's output is a valid chunked body");
        assert_eq!(
            n,
            out.len(),
            "forward_body's output has bytes past the body"
        );
        assert_eq!(data, whole.data, "forward_body changed the data");
        assert_eq!(again.is_done(), body.is_done());
    }
}

/// What following a body through an input gave.
#[derive(Debug, PartialEq, Eq)]
struct Followed {
    /// Bytes of the input that belong to the body (0 when it failed).
    taken: usize,
    data: Vec<u8>,
    done: bool,
    failed: bool,
}

/// Follow a body through `input` given in pieces of `sizes` (cycled), as a
/// reader does: the bytes a call leaves are given again, with more, to the
/// next call.
fn follow(framing: Framing, input: &[u8], sizes: &[usize]) -> Followed {
    let mut body = Body::new(framing);
    let mut data = Vec::new();
    let (mut taken, mut have) = (0, 0);
    let mut sizes = sizes.iter().cycle();
    loop {
        let at_end = have == input.len();
        have = (have + sizes.next().copied().unwrap_or(1)).min(input.len());
        let pending = &input[taken..have];
        let before = data.len();
        let n = match body.advance(pending, Some(&mut data)) {
            Ok(n) => n,
            // How far a failing call got is not told: not compared.
            Err(_) => {
                return Followed {
                    taken: 0,
                    data,
                    done: false,
                    failed: true,
                }
            }
        };
        assert!(n <= pending.len(), "took {n} of {} bytes", pending.len());
        assert!(data.len() - before <= n, "more data than bytes taken");
        taken += n;
        if body.is_done() {
            assert_eq!(body.advance(b"more", Some(&mut data)), Ok(0));
            assert!(body.is_done(), "a finished body is finished no more");
            break;
        }
        if at_end {
            break;
        }
    }
    let done = body.is_done() || (taken == input.len() && body.end_of_stream());
    Followed {
        taken,
        data,
        done,
        failed: false,
    }
}

/// A response head: parsing never panics; a parsed head has a status and a
/// framing for any request method, and reads the same alone.
pub fn response_head(data: &[u8]) {
    let mut head = ResponseHead::default();
    let Ok(Some(n)) = parse_response(&mut head, data) else {
        return;
    };
    assert!(n <= data.len());
    let _ = (head.reason(), head.keeps_connection());
    for method in [Method::GET, Method::HEAD, Method::POST] {
        if let Ok(framing) = head.framing(&method) {
            if method == Method::HEAD || head.status == 204 || head.status == 304 {
                assert_eq!(framing, Framing::Length(0));
            }
            let _ = Body::new(framing).is_done();
        }
    }
    let mut again = ResponseHead::default();
    assert_eq!(parse_response(&mut again, &data[..n]), Ok(Some(n)));
    assert_eq!(again.status, head.status);
    assert_eq!(again.reason(), head.reason());
}

/// An Apache `?auto` page: never panics, whatever the bytes.
pub fn status_apache(data: &[u8]) {
    use webcluster::status;
    if let Ok(report) = status::parse(Some(status::apache::KIND), data) {
        let _ = (
            report.capacity(None),
            report.capacity(Some(1)),
            report.total_bytes(),
        );
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = status::apache::parse(text);
        let _ = status::ScoreboardCounts::from_scoreboard(text);
    }
    let _ = status::parse(None, data);
}

/// An nginx `stub_status` page: never panics, whatever the bytes.
pub fn status_nginx(data: &[u8]) {
    use webcluster::status;
    if let Ok(report) = status::parse(Some(status::nginx::KIND), data) {
        let _ = (report.capacity(None), report.total_bytes());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = status::nginx::parse(text);
    }
}

/// Config text: validation never panics, and its error messages (which
/// quote the file at the fault) are made without panicking either.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match webcluster::config::parse(text, Path::new("fuzz.toml")) {
        Ok(config) => {
            let _ = config.summary();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// The check that replays the open findings of `target`
/// (`fuzz/findings/<target>/`): the target's own, but for
/// [`h1_differential`], which leaves the open findings out.
pub fn strict_check(target: &str) -> Option<Check> {
    match target {
        "h1_differential" => Some(h1_differential_strict),
        _ => TARGETS.iter().find(|(t, _)| *t == target).map(|(_, c)| *c),
    }
}

/// Inputs longer than this are skipped by [`h1_differential`]: hyper
/// refuses chunk extensions and trailers over 16 KiB in a body, which
/// webcluster allows up to its head limit.
const DIFFERENTIAL_MAX_INPUT: usize = 8 * 1024;

/// One request as a server read it.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    method: Method,
    body: Vec<u8>,
}

/// webcluster's framing against hyper's strict HTTP/1 server, on the same
/// bytes sent as requests on one connection.
///
/// webcluster reads requests one after the other (`RequestHead::parse`,
/// then `Body::advance` to the end of the body) while it accepts them; the
/// bytes go to a hyper 1.x server whose service reads each body whole. The
/// check fails when webcluster accepted a request (head parsed, body
/// complete) that hyper refused, or when both read it but with another
/// method or other body data. hyper refusing or framing what webcluster
/// refuses is fine (one direction only).
///
/// Legitimate differences, left out:
/// - The request target goes to hyper as `/`: hyper parses it into a
///   `http::Uri`, stricter than webcluster (which forwards the target as
///   httparse read it); the target does not frame a message.
/// - `CONNECT` ends the comparison before that request (webcluster answers it
///   405 and closes: what follows is not HTTP to it), and a request with an
///   `Upgrade` header ends it after that request (a tunnel may follow).
/// - A `Content-Length` list of one repeated value (`5, 5`): webcluster
///   takes the value, as RFC 9110 8.6 allows; hyper refuses any list. When
///   hyper refuses a request with a comma in a `Content-Length` line, that
///   is not counted.
/// - hyper may close a connection earlier (its keep-alive decision); a
///   request it never read because it closed cleanly is not compared.
/// - The open findings, see [`open_finding`].
/// - Inputs over [`DIFFERENTIAL_MAX_INPUT`] bytes (hyper's 16 KiB limits on
///   chunk extensions and trailers); hyper gets webcluster's header count
///   limit.
pub fn h1_differential(data: &[u8]) {
    differential(data, true);
}

/// [`h1_differential`] without leaving out the open findings
/// ([`open_finding`]): what `fuzz/findings/h1_differential/` is replayed with.
pub fn h1_differential_strict(data: &[u8]) {
    differential(data, false);
}

fn differential(data: &[u8], skip_open_findings: bool) {
    if data.len() > DIFFERENTIAL_MAX_INPUT {
        return;
    }
    let (ours, to_hyper) = webcluster_reads(data);
    if ours.is_empty() {
        return;
    }
    let (theirs, refused) = hyper_reads(to_hyper);
    for (i, ours) in ours.iter().enumerate() {
        let req = &ours.seen;
        match theirs.get(i) {
            Some(Some(seen)) => assert!(
                seen == req,
                "request #{i}: webcluster read {req:?}, hyper read {seen:?}"
            ),
            // hyper closed the connection by its own choice before it.
            None if refused.is_none() => return,
            _ if ours.length_list => return,
            _ if skip_open_findings && ours.open_finding.is_some() => return,
            _ => panic!(
                "request #{i}: webcluster accepted {req:?}, hyper refused it: {} ({})",
                refused.as_deref().unwrap_or("error reading the body"),
                ours.open_finding.unwrap_or("a new finding"),
            ),
        }
    }
}

/// A request webcluster read whole.
struct Read {
    seen: Seen,
    /// Its head has a comma in a `Content-Length` line.
    length_list: bool,
    /// The open finding (reported, not fixed yet) its head is a case of.
    open_finding: Option<&'static str>,
}

/// The open finding of the differential target whose shape this head has,
/// if any: hyper refuses these heads, webcluster accepts them. Each has its
/// input in `fuzz/findings/h1_differential/`; they are left out of fuzzing
/// runs so that these go on to find other things. Remove a line once its
/// finding is fixed (and move its input to `fuzz/regressions/`).
fn open_finding(_head: &RequestHead, _head_bytes: &[u8]) -> Option<&'static str> {
    None
}

/// The requests webcluster reads from `data`, and the bytes for hyper (with
/// the targets of those requests made `/`).
fn webcluster_reads(data: &[u8]) -> (Vec<Read>, Vec<u8>) {
    let mut reads = Vec::new();
    let mut to_hyper = Vec::with_capacity(data.len());
    let mut pos = 0;
    loop {
        let rest = &data[pos..];
        let mut head = RequestHead::default();
        let Ok(Some(n)) = parse_request(&mut head, rest) else {
            break;
        };
        if head.method == Method::CONNECT {
            break;
        }
        let mut body = Body::new(head.body);
        let mut decoded = Vec::new();
        let Ok(taken) = body.advance(&rest[n..], Some(&mut decoded)) else {
            break;
        };
        if !body.is_done() {
            break;
        }
        let Some(head_bytes) = with_target_slash(&rest[..n], &head) else {
            break;
        };
        to_hyper.extend_from_slice(&head_bytes);
        to_hyper.extend_from_slice(&rest[n..n + taken]);
        reads.push(Read {
            seen: Seen {
                method: head.method.clone(),
                body: decoded,
            },
            length_list: head
                .fields
                .get_all("content-length")
                .any(|v| v.contains(&b',')),
            open_finding: open_finding(&head, &rest[..n]),
        });
        pos += n + taken;
        if !head.wants_keepalive() || head.fields.get("upgrade").is_some() {
            break;
        }
    }
    to_hyper.extend_from_slice(&data[pos..]);
    (reads, to_hyper)
}

/// `head_bytes` (a parsed request head, after any empty lines) with its
/// request target replaced by `/`.
fn with_target_slash(head_bytes: &[u8], head: &RequestHead) -> Option<Vec<u8>> {
    // httparse takes exactly one space after the method and none in the
    // target.
    let line = head_bytes.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let start = line + head.method.as_str().len() + 1;
    let len = head_bytes[start..].iter().position(|&b| b == b' ')?;
    let mut out = Vec::with_capacity(head_bytes.len());
    out.extend_from_slice(&head_bytes[..start]);
    out.push(b'/');
    out.extend_from_slice(&head_bytes[start + len..]);
    Some(out)
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread tokio runtime");
}

/// The requests hyper's server reads from `input` (`None`: the head was
/// read, the body refused), and how the connection ended when it was not
/// cleanly.
fn hyper_reads(input: Vec<u8>) -> (Vec<Option<Seen>>, Option<String>) {
    use http_body_util::BodyExt;
    use hyper::body::Incoming;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let record = Arc::clone(&record);
        async move {
            let method = req.method().clone();
            let body = req.into_body().collect().await.ok();
            record.lock().unwrap().push(body.map(|b| Seen {
                method,
                body: b.to_bytes().to_vec(),
            }));
            Ok::<_, Infallible>(hyper::Response::new(http_body_util::Empty::<Bytes>::new()))
        }
    });
    let ended = RUNTIME.with(|rt| {
        rt.block_on(async move {
            let (client, server) = tokio::io::duplex(64 * 1024);
            let conn = hyper::server::conn::http1::Builder::new()
                .max_headers(MAX_HEADERS)
                .half_close(true)
                .header_read_timeout(None)
                .serve_connection(hyper_util::rt::TokioIo::new(server), service);
            let visitor = async move {
                let (mut rd, mut wr) = tokio::io::split(client);
                let send = async move {
                    let _ = wr.write_all(&input).await;
                    let _ = wr.shutdown().await;
                };
                let mut answers = Vec::new();
                let _ = tokio::join!(send, rd.read_to_end(&mut answers));
            };
            tokio::join!(conn, visitor).0
        })
    });
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    (seen, ended.err().map(|e| e.to_string()))
}
