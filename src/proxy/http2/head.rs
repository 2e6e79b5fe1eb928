//! An HTTP/2 request's head, checked (RFC 9113 8.2, 8.3) and made into the
//! request path's [`RequestHead`].
//!
//! The `h2` crate already refuses as a stream error (PROTOCOL_ERROR): a
//! missing, repeated, unknown or misplaced pseudo-header, `:path` or
//! `:scheme` on CONNECT, a field named `connection`, `keep-alive`,
//! `proxy-connection`, `transfer-encoding` or `upgrade`, `te` other than
//! `trailers`, differing `content-length` values, and DATA that disagrees
//! with `content-length`; its HPACK decoder refuses upper-case field names
//! and CR, LF or NUL in a value. Checked here again (cheap, and the proxy
//! does not rest its framing on another crate's choice), and added:
//! `:scheme` is `http` or `https`; `:path` is origin-form (or `*` for
//! OPTIONS); the authority is valid; a `host` that differs from
//! `:authority` (8.3.1); no `:authority` and not one `host`; a field value
//! with whitespace at either end (8.2.1); more fields than
//! `[limits] max_headers`.
//!
//! What the node gets: the `:authority` as `Host`; `cookie` fields joined
//! with `; ` into one (8.2.3); the body framed by its `content-length`, or
//! chunked when it has none (and not when END_STREAM came with the head).

use http::request::Parts;
use http::Method;

use crate::proxy::http1::{Declared, Framing, Limits, RequestHead, Version};

/// Why a stream's request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed (RFC 9113 8.1.1): a stream error, PROTOCOL_ERROR.
    Malformed(&'static str),
    /// More header fields than allowed: answered 431.
    TooLarge,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Malformed(why) => write!(f, "malformed HTTP/2 request: {why}"),
            Refusal::TooLarge => f.write_str("too many header fields"),
        }
    }
}

/// Fields that RFC 9113 8.2.2 forbids in HTTP/2.
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Check an HTTP/2 request's head and fill `head` with it. `end_of_stream`:
/// END_STREAM came with the head (no body). Whether the body is framed as
/// chunked (no `content-length`).
pub fn request_head(
    req: &Parts,
    end_of_stream: bool,
    limits: &Limits,
    head: &mut RequestHead,
) -> Result<bool, Refusal> {
    use Refusal::Malformed;
    if let Some(scheme) = req.uri.scheme_str() {
        if scheme != "http" && scheme != "https" {
            return Err(Malformed(":scheme is neither http nor https"));
        }
    }
    if req.headers.len() > limits.max_headers {
        return Err(Refusal::TooLarge);
    }
    let mut content_length = None;
    let mut cookies: Option<Vec<u8>> = None;
    let mut host = None;
    let mut hosts = 0;
    let mut fields: Vec<(&[u8], &[u8])> = Vec::with_capacity(req.headers.len());
    for (name, value) in &req.headers {
        let (n, v) = (name.as_str(), value.as_bytes());
        if n.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(Malformed("an upper-case field name"));
        }
        if v.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(Malformed("CR, LF or NUL in a field value"));
        }
        if matches!(v.first(), Some(b' ' | b'\t')) || matches!(v.last(), Some(b' ' | b'\t')) {
            return Err(Malformed("whitespace around a field value"));
        }
        if CONNECTION_SPECIFIC.contains(&n) {
            return Err(Malformed("a connection-specific field"));
        }
        match n {
            "te" if v != b"trailers" => return Err(Malformed("te other than trailers")),
            // Dropped for the node (hop-by-hop).
            "te" => {}
            "content-length" => {
                let n = std::str::from_utf8(v)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or(Malformed("content-length is not a number"))?;
                if content_length.is_some_and(|c| c != n) {
                    return Err(Malformed("differing content-length values"));
                }
                content_length = Some(n);
            }
            "cookie" => match &mut cookies {
                Some(c) => {
                    c.extend_from_slice(b"; ");
                    c.extend_from_slice(v);
                }
                None => cookies = Some(v.to_vec()),
            },
            "host" => {
                hosts += 1;
                host = Some(v);
            }
            _ => fields.push((name.as_str().as_bytes(), v)),
        }
    }
    let authority = match (req.uri.authority(), host) {
        (Some(a), Some(h)) if a.as_str().as_bytes() != h => {
            return Err(Malformed("host differs from :authority"))
        }
        (Some(a), _) => a.as_str().as_bytes(),
        (None, Some(h)) if hosts == 1 => h,
        _ => return Err(Malformed("no :authority and not one host")),
    };
    if let Some(c) = &cookies {
        fields.push((b"cookie", c));
    }
    let framing = match (end_of_stream, content_length) {
        (true, Some(n)) if n > 0 => return Err(Malformed("content-length without DATA")),
        (true, c) => (
            Framing::Length(0),
            Declared {
                content_length: c,
                chunked: false,
            },
        ),
        (false, Some(n)) => (
            Framing::Length(n),
            Declared {
                content_length: Some(n),
                chunked: false,
            },
        ),
        (false, None) => (
            Framing::Chunked,
            Declared {
                content_length: None,
                chunked: true,
            },
        ),
    };
    let chunked = framing.0 == Framing::Chunked;
    let target = if req.method == Method::CONNECT {
        authority
    } else {
        match req.uri.path_and_query() {
            Some(p) => p.as_str().as_bytes(),
            None => return Err(Malformed("no :path")),
        }
    };
    head.from_parts(
        req.method.clone(),
        target,
        authority,
        &fields,
        Version::Http2,
        framing,
    )
    .map_err(|_| Malformed("a bad :path or :authority"))?;
    Ok(chunked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn check(
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        end: bool,
    ) -> Result<(RequestHead, bool), Refusal> {
        let mut head = RequestHead::default();
        let limits = Limits {
            max_head: 32 * 1024,
            max_headers: 8,
        };
        request_head(&parts(method, uri, headers), end, &limits, &mut head)
            .map(|chunked| (head, chunked))
    }

    #[test]
    fn a_request_becomes_the_head_the_request_path_reads() {
        let (head, chunked) = check(
            "GET",
            "https://example.org/a/b?c=d",
            &[
                ("cookie", "a=1"),
                ("user-agent", "t"),
                ("cookie", "b=2"),
                ("te", "trailers"),
            ],
            true,
        )
        .unwrap();
        assert!(!chunked);
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.target(), "/a/b?c=d");
        assert_eq!(head.path(), "/a/b");
        assert_eq!(head.host(), Some("example.org"));
        assert_eq!(head.version, Version::Http2);
        assert_eq!(head.body, Framing::Length(0));
        assert_eq!(head.fields.get_str("cookie"), Some("a=1; b=2"));
        assert_eq!(head.fields.get_all("cookie").count(), 1);
        assert_eq!(head.fields.get_str("user-agent"), Some("t"));
        assert!(head.fields.get("te").is_none());
        assert_eq!(head.request_line(), "GET /a/b?c=d HTTP/2.0");
        assert!(head.wants_keepalive());
        assert!(!head.expects_continue());
        let (head, _) = check("PUT", "http://a/x", &[("expect", "100-continue")], false).unwrap();
        assert!(head.expects_continue());
        assert!(!head.is_websocket_upgrade());
    }

    #[test]
    fn the_body_is_framed_by_its_length_or_chunked() {
        let (head, chunked) =
            check("POST", "http://a/x", &[("content-length", "12")], false).unwrap();
        assert_eq!((head.body, chunked), (Framing::Length(12), false));
        assert!(head.fields.get("content-length").is_none());
        let (head, chunked) = check("POST", "http://a/x", &[], false).unwrap();
        assert_eq!((head.body, chunked), (Framing::Chunked, true));
        let (head, _) = check("POST", "http://a/x", &[("content-length", "0")], true).unwrap();
        assert_eq!(head.body, Framing::Length(0));
        assert_eq!(head.declared.content_length, Some(0));
    }

    #[test]
    fn host_stands_for_a_missing_authority() {
        let (head, _) = check("GET", "/x", &[("host", "b.example:8080")], true).unwrap();
        assert_eq!(head.host(), Some("b.example:8080"));
        let (head, _) = check("GET", "http://a/x", &[("host", "a")], true).unwrap();
        assert_eq!(head.fields.get_all("host").count(), 1);
    }

    #[test]
    fn malformed_requests_are_refused() {
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], bool);
        let bad: &[Case] = &[
            ("GET", "ftp://a/x", &[], true),
            ("GET", "/x", &[], true),
            ("GET", "/x", &[("host", "a"), ("host", "b")], true),
            ("GET", "http://a/x", &[("host", "b")], true),
            ("GET", "http://a/x", &[("connection", "close")], true),
            ("GET", "http://a/x", &[("keep-alive", "1")], true),
            ("GET", "http://a/x", &[("proxy-connection", "x")], true),
            (
                "GET",
                "http://a/x",
                &[("transfer-encoding", "chunked")],
                false,
            ),
            ("GET", "http://a/x", &[("upgrade", "websocket")], true),
            ("GET", "http://a/x", &[("te", "gzip")], true),
            ("GET", "http://a/x", &[("x", " padded")], true),
            ("GET", "http://a/x", &[("x", "padded\t")], true),
            (
                "POST",
                "http://a/x",
                &[("content-length", "5"), ("content-length", "6")],
                false,
            ),
            ("POST", "http://a/x", &[("content-length", "+5")], false),
            ("POST", "http://a/x", &[("content-length", "5")], true),
            ("GET", "http://user@a/x", &[], true),
        ];
        for (method, uri, headers, end) in bad {
            let r = check(method, uri, headers, *end);
            assert!(
                matches!(r, Err(Refusal::Malformed(_))),
                "{method} {uri} {headers:?}: {:?}",
                r.map(|(h, _)| h.request_line())
            );
        }
        let many: Vec<(String, String)> = (0..9).map(|i| (format!("x-{i}"), "1".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(
            check("GET", "http://a/x", &many, true).err(),
            Some(Refusal::TooLarge)
        );
    }

    #[test]
    fn asterisk_is_for_options_only() {
        let (head, _) = check("OPTIONS", "*", &[("host", "a")], true).unwrap();
        assert_eq!(head.target(), "*");
    }
}
