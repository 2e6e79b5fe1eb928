//! Table tests of the HTTP/1 framing: heads, targets, lengths and chunks,
//! each edge RFC 9112 and the request smuggling literature name.

use super::*;
use http::Method;

fn request(raw: &str) -> Result<RequestHead, HeadError> {
    let mut head = RequestHead::default();
    let n = head
        .parse(raw.as_bytes(), &Limits::default())?
        .expect("complete");
    assert_eq!(n, raw.len());
    Ok(head)
}

#[test]
fn a_request_head_keeps_its_bytes_and_parts() {
    let h = request(
        "POST /a/b?x=1 HTTP/1.1\r\nHost: Example.org\r\nX-One: 1\r\nx-one: 2\r\nContent-Length: 5\r\n\r\n",
    )
    .unwrap();
    assert_eq!(h.method, Method::POST);
    assert_eq!(h.target(), "/a/b?x=1");
    assert_eq!(h.path(), "/a/b");
    assert_eq!(h.host(), Some("Example.org"));
    assert_eq!(h.body, Framing::Length(5));
    let ones: Vec<&[u8]> = h.fields.get_all("x-one").collect();
    assert_eq!(ones, [b"1", b"2"]);
    assert_eq!(h.fields.len(), 4);
    assert_eq!(h.request_line(), "POST /a/b?x=1 HTTP/1.1");
}

#[test]
fn partial_and_bad_heads() {
    let mut h = RequestHead::default();
    assert_eq!(
        h.parse(b"GET / HTTP/1.1\r\nHost: a\r\n", &Limits::default()),
        Ok(None)
    );
    assert_eq!(
        h.parse(b"NOT HTTP\r\n\r\n", &Limits::default()),
        Err(HeadError::Malformed)
    );
    assert_eq!(
        h.parse(b"GET / HTTP/1.1\r\nno colon\r\n\r\n", &Limits::default()),
        Err(HeadError::Malformed)
    );
    let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(DEFAULT_MAX_HEAD));
    assert_eq!(
        h.parse(long.as_bytes(), &Limits::default()),
        Err(HeadError::TooLarge)
    );
    let many: String = (0..DEFAULT_MAX_HEADERS + 1)
        .map(|i| format!("X-{i}: 1\r\n"))
        .collect();
    let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert_eq!(
        h.parse(many.as_bytes(), &Limits::default()),
        Err(HeadError::TooLarge)
    );
}

/// What a request with these header lines (after `Host: a`) is framed as.
fn request_framing(version: &str, headers: &str) -> Result<Framing, HeadError> {
    request(&format!("POST / {version}\r\nHost: a\r\n{headers}\r\n")).map(|h| h.body)
}

#[test]
fn request_framing_table() {
    use Framing::{Chunked, Length};
    use HeadError::{Ambiguous, Malformed, UnknownCoding};
    let cases: &[(&str, Result<Framing, HeadError>)] = &[
        ("", Ok(Length(0))),
        ("Content-Length: 10\r\n", Ok(Length(10))),
        ("Content-Length: 0\r\n", Ok(Length(0))),
        ("Content-Length:  10 \r\n", Ok(Length(10))),
        ("Content-Length: 010\r\n", Ok(Length(10))),
        // Equal duplicates collapse (RFC 9112 6.3.5); never forwarded as
        // received, since the proxy writes its own.
        (
            "Content-Length: 10\r\nContent-Length: 10\r\n",
            Ok(Length(10)),
        ),
        ("Content-Length: 5, 5\r\n", Err(Ambiguous)),
        ("Content-Length: 5,5\r\n", Err(Ambiguous)),
        (
            "Content-Length: 10\r\nContent-Length: 11\r\n",
            Err(Ambiguous),
        ),
        ("Content-Length: 5, 6\r\n", Err(Ambiguous)),
        ("Content-Length: ,5\r\n", Err(Ambiguous)),
        ("Content-Length: 5,\r\n", Err(Ambiguous)),
        ("Content-Length: 5,,5\r\n", Err(Ambiguous)),
        ("Content-Length:\r\n", Err(Ambiguous)),
        ("Content-Length: \r\nContent-Length: 5\r\n", Err(Ambiguous)),
        ("Content-Length: -1\r\n", Err(Ambiguous)),
        ("Content-Length: +5\r\n", Err(Ambiguous)),
        ("Content-Length: 0x5\r\n", Err(Ambiguous)),
        ("Content-Length: 1e3\r\n", Err(Ambiguous)),
        ("Content-Length: 5 5\r\n", Err(Ambiguous)),
        (
            "Content-Length: 9223372036854775807\r\n",
            Ok(Length(i64::MAX as u64)),
        ),
        ("Content-Length: 9223372036854775808\r\n", Err(Ambiguous)),
        ("Content-Length: 18446744073709551616\r\n", Err(Ambiguous)),
        ("Transfer-Encoding: chunked\r\n", Ok(Chunked)),
        ("Transfer-Encoding: CHUNKED\r\n", Ok(Chunked)),
        ("Transfer-Encoding:  chunked \t\r\n", Ok(Chunked)),
        ("Transfer-Encoding: gzip, chunked\r\n", Err(Ambiguous)),
        ("Transfer-Encoding: identity, chunked\r\n", Err(Ambiguous)),
        ("Transfer-Encoding: chunked, chunked\r\n", Err(Ambiguous)),
        ("Transfer-Encoding: ,chunked\r\n", Err(Ambiguous)),
        ("Transfer-Encoding: , chunked ,\r\n", Err(Ambiguous)),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            Err(Ambiguous),
        ),
        (
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            Err(Ambiguous),
        ),
        ("Transfer-Encoding:\r\n", Err(Ambiguous)),
        ("Transfer-Encoding: ,\r\n", Err(Ambiguous)),
        (
            "Transfer-Encoding:\r\nContent-Length: 5\r\n",
            Err(Ambiguous),
        ),
        ("Transfer-Encoding: gzip\r\n", Err(UnknownCoding)),
        ("Transfer-Encoding: identity\r\n", Err(UnknownCoding)),
        ("Transfer-Encoding: chunked;q=1\r\n", Err(UnknownCoding)),
        ("Transfer-Encoding: chunkedx\r\n", Err(UnknownCoding)),
        ("Transfer-Encoding: \"chunked\"\r\n", Err(UnknownCoding)),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            Err(Ambiguous),
        ),
        (
            "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
            Err(Ambiguous),
        ),
        // Header syntax no reader may disagree on: refused by the parser.
        ("Transfer-Encoding : chunked\r\n", Err(Malformed)),
        (" Transfer-Encoding: chunked\r\n", Err(Malformed)),
        ("Transfer-Encoding: x\r\n chunked\r\n", Err(Malformed)),
        ("Content-Length: 5\0\r\n", Err(Malformed)),
    ];
    for (headers, want) in cases {
        assert_eq!(
            request_framing("HTTP/1.1", headers),
            *want,
            "HTTP/1.1 with {headers:?}"
        );
    }
    // HTTP/1.0 has no transfer codings (RFC 9112 6.1): any is refused.
    assert_eq!(
        request_framing("HTTP/1.0", "Transfer-Encoding: chunked\r\n"),
        Err(Ambiguous)
    );
    assert_eq!(
        request_framing("HTTP/1.0", "Content-Length: 3\r\n"),
        Ok(Length(3))
    );
}

#[test]
fn hosts_and_targets() {
    use HeadError::{Ambiguous, Malformed};
    let parse = |raw: &str| {
        request(raw).map(|h| (h.host().map(str::to_owned), h.origin_target().into_owned()))
    };
    let ok = |host: &str, target: &str| Ok((Some(host.to_owned()), target.to_owned()));
    type Parsed = Result<(Option<String>, String), HeadError>;
    let cases: &[(&str, Parsed)] = &[
        (
            "GET /x?q HTTP/1.1\r\nHost: a.example\r\n\r\n",
            ok("a.example", "/x?q"),
        ),
        (
            "GET /x HTTP/1.1\r\nHost: a.example:8080\r\n\r\n",
            ok("a.example:8080", "/x"),
        ),
        (
            "GET /x HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
            ok("[::1]:80", "/x"),
        ),
        // The absolute form names the host; it is forwarded in origin form.
        (
            "GET http://Example.org:8080/x/y?q HTTP/1.1\r\n\r\n",
            ok("Example.org:8080", "/x/y?q"),
        ),
        (
            "GET http://other.example/abs HTTP/1.1\r\nHost: x\r\n\r\n",
            ok("other.example", "/abs"),
        ),
        (
            "GET HTTP://example.org HTTP/1.1\r\nHost: other\r\n\r\n",
            ok("example.org", "/"),
        ),
        (
            "GET https://example.org?q=1 HTTP/1.1\r\nHost: example.org\r\n\r\n",
            ok("example.org", "/?q=1"),
        ),
        ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", ok("a", "*")),
        ("GET /x HTTP/1.0\r\n\r\n", Ok((None, "/x".to_owned()))),
        // Refused: no Host on HTTP/1.1, two, or a bad one.
        ("GET /x HTTP/1.1\r\n\r\n", Err(Malformed)),
        (
            "GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            Err(Ambiguous),
        ),
        (
            "GET /x HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
            Err(Ambiguous),
        ),
        ("GET /x HTTP/1.1\r\nHost:\r\n\r\n", Err(Malformed)),
        ("GET /x HTTP/1.1\r\nHost: a b\r\n\r\n", Err(Malformed)),
        ("GET /x HTTP/1.1\r\nHost: user@a\r\n\r\n", Err(Malformed)),
        ("GET /x HTTP/1.1\r\nHost: a/b\r\n\r\n", Err(Malformed)),
        ("GET /x HTTP/1.1\r\nHost: a:80x\r\n\r\n", Err(Malformed)),
        // Refused targets: userinfo, no host, another scheme, authority
        // form outside CONNECT, `*` outside OPTIONS, no slash.
        (
            "GET http://user:pw@a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
            Err(Malformed),
        ),
        ("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", Err(Malformed)),
        (
            "GET ftp://a.example/ HTTP/1.1\r\nHost: a\r\n\r\n",
            Err(Malformed),
        ),
        (
            "GET a.example:80 HTTP/1.1\r\nHost: a\r\n\r\n",
            Err(Malformed),
        ),
        ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", Err(Malformed)),
        ("GET x HTTP/1.1\r\nHost: a\r\n\r\n", Err(Malformed)),
    ];
    for (raw, want) in cases {
        assert_eq!(parse(raw), *want, "{raw:?}");
    }
    let h = request("CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n").unwrap();
    assert_eq!(h.method, Method::CONNECT);
}

#[test]
fn the_end_of_a_head_is_found_once_however_it_is_split() {
    let head = b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\nBODY";
    let end = head.len() - 4;
    for step in 1..head.len() {
        let mut finder = HeadEnd::default();
        let mut found = None;
        for len in (step..=head.len()).step_by(step).chain([head.len()]) {
            if let Some(n) = finder.find(&head[..len]) {
                found = Some(n);
                break;
            }
        }
        assert_eq!(found, Some(end), "reads of {step}");
    }
    // Bare LF line ends (RFC 9112 2.2 lets a recipient take them).
    assert_eq!(
        HeadEnd::default().find(b"GET / HTTP/1.1\nHost: a\n\nX"),
        Some(24)
    );
    assert_eq!(
        HeadEnd::default().find(b"GET / HTTP/1.1\r\nHost: a\r\n"),
        None
    );
}

#[test]
fn keep_alive_by_version() {
    let keep = |raw: &str| request(raw).unwrap().wants_keepalive();
    assert!(keep("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(!keep(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n"
    ));
    assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
    assert!(keep("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
}

#[test]
fn expect_and_websocket() {
    let h = request("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n").unwrap();
    assert!(h.expects_continue());
    let h = request("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").unwrap();
    assert!(!h.expects_continue());
    let h = request(
        "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .unwrap();
    assert!(h.is_websocket_upgrade());
    let h = request("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        .unwrap();
    assert!(!h.is_websocket_upgrade());
}

fn response(raw: &str) -> ResponseHead {
    let mut head = ResponseHead::default();
    let n = head
        .parse(raw.as_bytes(), &Limits::default())
        .unwrap()
        .expect("complete");
    assert_eq!(n, raw.len());
    head
}

#[test]
fn response_framing_table() {
    use Framing::{Chunked, Length, UntilClose};
    use HeadError::{Ambiguous, UnknownCoding};
    let get = Method::GET;
    let cases: &[(&str, &Method, Result<Framing, HeadError>)] = &[
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
            &get,
            Ok(Length(12)),
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
            &Method::HEAD,
            Ok(Length(0)),
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &get,
            Ok(Chunked),
        ),
        ("HTTP/1.0 200 OK\r\n\r\n", &get, Ok(UntilClose)),
        ("HTTP/1.1 200 OK\r\n\r\n", &get, Ok(UntilClose)),
        (
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n",
            &get,
            Ok(Length(0)),
        ),
        (
            "HTTP/1.1 204 \r\nConnection: close\r\n\r\n",
            &get,
            Ok(Length(0)),
        ),
        // From a node, equal duplicates are refused too (nginx does).
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            &get,
            Err(Ambiguous),
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
            &get,
            Err(Ambiguous),
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            &get,
            Err(Ambiguous),
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
            &get,
            Err(Ambiguous),
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            &get,
            Err(Ambiguous),
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            &get,
            Err(Ambiguous),
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            &get,
            Err(Ambiguous),
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            &get,
            Err(Ambiguous),
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            &get,
            Err(Ambiguous),
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            &get,
            Err(UnknownCoding),
        ),
        (
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &get,
            Err(Ambiguous),
        ),
        // Checked even where they frame nothing: the length may go on.
        (
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 1, 2\r\n\r\n",
            &get,
            Err(Ambiguous),
        ),
    ];
    for (raw, method, want) in cases {
        assert_eq!(response(raw).framing(method), *want, "{raw:?} to {method}");
    }
    let r = response("HTTP/1.1 204 \r\nConnection: close\r\n\r\n");
    assert!(!r.keeps_connection());
    assert_eq!(r.reason(), b"");
    assert_eq!(response("HTTP/1.1 200 Fine\r\n\r\n").reason(), b"Fine");
    let mut r = ResponseHead::default();
    assert_eq!(
        r.parse(b"HTTP/1.1 099 X\r\n\r\n", &Limits::default()),
        Err(HeadError::Malformed)
    );
    assert_eq!(
        r.parse(b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", &Limits::default()),
        Err(HeadError::Malformed),
        "obs-fold"
    );
}

/// Feed `input` as reads of `step` bytes would bring it, the bytes not
/// taken kept for the next read.
fn follow(framing: Framing, input: &[u8], step: usize) -> Result<(usize, Vec<u8>), BadChunk> {
    let mut body = Body::new(framing);
    let mut data = Vec::new();
    let mut taken = 0;
    for end in (step..input.len()).step_by(step).chain([input.len()]) {
        taken += body.advance(&input[taken..end], Some(&mut data))?;
        if body.is_done() {
            break;
        }
    }
    assert!(body.is_done(), "{framing:?} not done after {input:?}");
    Ok((taken, data))
}

#[test]
fn chunked_bodies_end_where_they_end_in_any_pieces() {
    let body = b"5;ext=1\r\nhello\r\n0A\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\nGET /next";
    let end = body.len() - b"GET /next".len();
    for step in [1, 2, 3, 7, 64] {
        let (taken, data) = follow(Framing::Chunked, body, step).unwrap();
        assert_eq!(taken, end, "step {step}");
        assert_eq!(data, b"hello0123456789");
    }
    let (taken, data) = follow(Framing::Chunked, b"0\r\n\r\n", 1).unwrap();
    assert_eq!((taken, data.len()), (5, 0));
}

#[test]
fn chunk_size_lines_table() {
    type Line = Result<Option<(usize, u64)>, BadChunk>;
    let cases: &[(&[u8], Line)] = &[
        (b"5\r\n", Ok(Some((3, 5)))),
        (b"0\r\n", Ok(Some((3, 0)))),
        (b"000\r\n", Ok(Some((5, 0)))),
        (b"a\r\n", Ok(Some((3, 10)))),
        (b"Ff\r\n", Ok(Some((4, 255)))),
        (b"5;ext=1\r\n", Ok(Some((9, 5)))),
        (b"5 ;ext\r\n", Ok(Some((8, 5)))),
        (b"5;name=\"quoted value\"\r\n", Ok(Some((23, 5)))),
        (b"5 ; a = b\r\n", Ok(Some((11, 5)))),
        (b"5;a;b=c\r\n", Ok(Some((9, 5)))),
        (b"5;a=\"q\\\"x\"\r\n", Ok(Some((12, 5)))),
        (b"7fffffffffffffff\r\n", Ok(Some((18, i64::MAX as u64)))),
        (b"5", Ok(None)),
        (b"5;ext", Ok(None)),
        (b"5\r", Ok(None)),
        // Refused: no digits, whitespace not before `;`, bare LF or CR,
        // control bytes, overflow, a sign or prefix.
        (b"\r\n", Err(BadChunk)),
        (b";x\r\n", Err(BadChunk)),
        (b"   \r\n", Err(BadChunk)),
        (b" 5\r\n", Err(BadChunk)),
        (b"5 \r\n", Err(BadChunk)),
        (b"5\t\r\n", Err(BadChunk)),
        (b"5\n", Err(BadChunk)),
        (b"5;a\nb\r\n", Err(BadChunk)),
        (b"5;a\rb\r\n", Err(BadChunk)),
        (b"5;a\x00\r\n", Err(BadChunk)),
        (b"5;a\x7f\r\n", Err(BadChunk)),
        (b"5;\r\n", Err(BadChunk)),
        (b"5\r\r\n", Err(BadChunk)),
        (b"0x5\r\n", Err(BadChunk)),
        (b"+5\r\n", Err(BadChunk)),
        (b"-5\r\n", Err(BadChunk)),
        (b"8000000000000000\r\n", Err(BadChunk)),
        (b"ffffffffffffffff\r\n", Err(BadChunk)),
        (b"10000000000000000\r\n", Err(BadChunk)),
        (b"1000000000000000000000000000000000001\r\n", Err(BadChunk)),
        (b"5g\r\n", Err(BadChunk)),
        (b"5;=x\r\n", Err(BadChunk)),
        (b"5;a=b c\r\n", Err(BadChunk)),
        (b"5;a=\r\n", Err(BadChunk)),
        (b"5;a \r\n", Err(BadChunk)),
        (b"5;a=\"x\r\n", Err(BadChunk)),
        (b"5;a@b\r\n", Err(BadChunk)),
    ];
    for (line, want) in cases {
        assert_eq!(
            chunk_size_line(line),
            *want,
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
    let long = [b'1'; body::MAX_CHUNK_LINE + 1];
    assert_eq!(chunk_size_line(&long), Err(BadChunk));
    let mut long_ext = b"5;".to_vec();
    long_ext.extend(std::iter::repeat_n(b'x', body::MAX_CHUNK_LINE));
    assert_eq!(chunk_size_line(&long_ext), Err(BadChunk));
}

#[test]
fn empty_lines_before_a_request_line() {
    assert_eq!(empty_lines(b"\r\n\nGET"), 3);
    assert_eq!(empty_lines(b"\r\n\r\n"), 4);
    assert_eq!(empty_lines(b"GET"), 0);
    // A bare CR is no empty line (it stays, and the head is refused).
    assert_eq!(empty_lines(b"\r\n\rGET"), 2);
    assert_eq!(empty_lines(b"\rGET"), 0);
    // A CR at the end waits for its LF.
    assert_eq!(empty_lines(b"\n\r"), 1);
}

#[test]
fn malformed_chunked_bodies_are_errors() {
    for bad in [
        &b"zz\r\n"[..],
        b"5\r\nhelloXX",
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
        b"5\r\nhello\r\n\r\n",
        b"5\r\nhello\r\n;x\r\n",
        // Trailers are dropped, and read strictly: CRLF line ends, visible
        // ASCII.
        b"0\r\nX-Trailer: 1\n\r\n",
        b"0\r\nX-Trailer: \xff\r\n\r\n",
        b"0\r\n\n",
    ] {
        let mut body = Body::new(Framing::Chunked);
        assert_eq!(body.advance(bad, None), Err(BadChunk), "{bad:?}");
    }
    // Trailers are bounded.
    let mut many = b"0\r\n".to_vec();
    for i in 0..40 {
        many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(
        Body::new(Framing::Chunked).advance(&many, None),
        Err(BadChunk)
    );
    let mut big = b"0\r\nX: ".to_vec();
    big.extend(std::iter::repeat_n(b'v', body::MAX_TRAILERS));
    assert_eq!(
        Body::new(Framing::Chunked).advance(&big, None),
        Err(BadChunk)
    );
}

#[test]
fn a_chunked_request_body_is_chunked_anew() {
    let input = b"5;ext=\"x\"\r\nhello\r\n000\r\nX-Trailer: y\r\n\r\nNEXT";
    let mut out = Vec::new();
    let mut body = Body::new(Framing::Chunked);
    let mut taken = 0;
    // Reads of 3 bytes at a time, with what was not taken kept.
    for end in (3..input.len()).step_by(3).chain([input.len()]) {
        taken += forward_body(&mut body, &input[taken..end], &mut out).unwrap();
        if body.is_done() {
            break;
        }
    }
    assert!(body.is_done());
    assert_eq!(&input[taken..], b"NEXT");
    // Chunked anew as the reads came, without the extension and the
    // trailer.
    assert_eq!(
        String::from_utf8_lossy(&out),
        "1\r\nh\r\n3\r\nell\r\n1\r\no\r\n0\r\n\r\n"
    );
    let (n, data) = follow(Framing::Chunked, &out, 64).unwrap();
    assert_eq!((n, data.as_slice()), (out.len(), &b"hello"[..]));
    let mut out = Vec::new();
    let mut body = Body::new(Framing::Length(3));
    assert_eq!(forward_body(&mut body, b"abcdef", &mut out), Ok(3));
    assert_eq!(out, b"abc");
}

#[test]
fn length_and_until_close() {
    let mut b = Body::new(Framing::Length(4));
    assert_eq!(b.advance(b"abcdef", None), Ok(4));
    assert!(b.is_done());
    let mut b = Body::new(Framing::Length(4));
    assert_eq!(b.advance(b"ab", None), Ok(2));
    assert!(!b.end_of_stream());
    let mut b = Body::new(Framing::UntilClose);
    assert_eq!(b.advance(b"abc", None), Ok(3));
    assert!(b.end_of_stream());
    assert!(Body::new(Framing::Length(0)).is_done());
}

#[test]
fn status_lines() {
    let mut out = Vec::new();
    put_status_line(&mut out, 204, b"");
    put_status_line(&mut out, 599, b"");
    put_status_line(&mut out, 200, b"Fine");
    assert_eq!(
        out,
        b"HTTP/1.1 204 No Content\r\nHTTP/1.1 599 Unknown\r\nHTTP/1.1 200 Fine\r\n"
    );
}

mod properties {
    use super::super::*;
    use http::Method;
    use proptest::prelude::*;

    /// A chunked body of `chunks`, with an extension on some chunk-size
    /// lines and a trailer when asked.
    fn encode(chunks: &[Vec<u8>], ext: bool, trailer: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, c) in chunks.iter().filter(|c| !c.is_empty()).enumerate() {
            out.extend_from_slice(format!("{:x}", c.len()).as_bytes());
            if ext && i % 2 == 0 {
                out.extend_from_slice(b";name=\"v\"");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        if trailer {
            out.extend_from_slice(b"X-Sum: 1\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// Feed `input` in reads of the given sizes (the rest in one),
    /// keeping what was not taken: (taken, data, done).
    fn feed(input: &[u8], reads: &[usize], rechunk: bool) -> (usize, Vec<u8>, bool) {
        let mut body = Body::new(Framing::Chunked);
        let mut data = Vec::new();
        let mut taken = 0;
        let mut end = 0;
        for &r in reads.iter().chain([&input.len()]) {
            end = (end + r).min(input.len());
            let n = if rechunk {
                forward_body(&mut body, &input[taken..end], &mut data)
            } else {
                body.advance(&input[taken..end], Some(&mut data))
            };
            match n {
                Ok(n) => taken += n,
                Err(_) => return (taken, data, false),
            }
            if body.is_done() {
                break;
            }
        }
        (taken, data, body.is_done())
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600),
                                       reads in proptest::collection::vec(1usize..64, 0..16)) {
            let mut req = RequestHead::default();
            if let Ok(Some(n)) = req.parse(&bytes, &Limits::default()) {
                prop_assert!(n <= bytes.len());
                let _ = (req.path(), req.host(), req.request_line());
            }
            let mut resp = ResponseHead::default();
            if let Ok(Some(n)) = resp.parse(&bytes, &Limits::default()) {
                prop_assert!(n <= bytes.len());
                let _ = resp.framing(&Method::GET);
            }
            let (taken, _, _) = feed(&bytes, &reads, false);
            prop_assert!(taken <= bytes.len());
        }

        #[test]
        fn chunked_bodies_are_followed_to_their_end_however_they_are_read(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            ext in any::<bool>(),
            trailer in any::<bool>(),
            next in proptest::collection::vec(any::<u8>(), 0..40),
            reads in proptest::collection::vec(1usize..200, 0..24),
        ) {
            let body = encode(&chunks, ext, trailer);
            let mut input = body.clone();
            input.extend_from_slice(&next);
            let (taken, data, done) = feed(&input, &reads, false);
            prop_assert!(done);
            prop_assert_eq!(taken, body.len());
            prop_assert_eq!(data, chunks.concat());
            // Chunked anew for a node, it reads back as the same data.
            let (taken, wire, done) = feed(&input, &reads, true);
            prop_assert!(done);
            prop_assert_eq!(taken, body.len());
            let (n, data, done) = feed(&wire, &[], false);
            prop_assert!(done);
            prop_assert_eq!(n, wire.len());
            prop_assert_eq!(data, chunks.concat());
        }
    }
}
