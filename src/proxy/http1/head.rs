//! Request and response heads: finding where a head ends as its bytes come
//! (each byte looked at once, however the head is split over reads),
//! parsing it in place with `httparse`, checking its request target and
//! `Host`, and asking `framing` what its body is.

use http::Method;

use super::fields::{ConnectionOption, Fields, Known};
use super::framing::{self, Declared, Framing};
use super::{HeadError, Version};

/// Limits on a head (`[limits]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest head (start line and header lines), in bytes.
    pub max_head: usize,
    /// Most header lines.
    pub max_headers: usize,
}

/// The default head size limit, about what HAProxy's default buffer and
/// nginx's `large_client_header_buffers` (4 x 8 KiB) allow.
pub const DEFAULT_MAX_HEAD: usize = 32 * 1024;
/// The default header count limit (HAProxy's `tune.http.maxhdr` is 101).
pub const DEFAULT_MAX_HEADERS: usize = 100;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head: DEFAULT_MAX_HEAD,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

/// Finds the end of a head in bytes that arrive a read at a time, looking
/// at each byte once: a head sent a byte at a time costs no more than one
/// sent whole (it was parsed again from its start on every read before).
#[derive(Debug, Default, Clone, Copy)]
pub struct HeadEnd {
    scanned: usize,
}

impl HeadEnd {
    /// Where the head at the start of `buf` ends (the length of the head
    /// with its empty line), if it is complete; `buf` is the same bytes as
    /// at the last call, with more after them.
    pub fn find(&mut self, buf: &[u8]) -> Option<usize> {
        // A line feed seen last time may start the end: look again from
        // just before where the last call stopped.
        let mut i = self.scanned.saturating_sub(2).min(buf.len());
        while let Some(p) = buf[i..].iter().position(|&b| b == b'\n') {
            let lf = i + p;
            match buf.get(lf + 1) {
                Some(b'\n') => return Some(lf + 2),
                Some(b'\r') => match buf.get(lf + 2) {
                    Some(b'\n') => return Some(lf + 3),
                    Some(_) => {}
                    None => break,
                },
                Some(_) => {}
                None => break,
            }
            i = lf + 1;
        }
        self.scanned = buf.len();
        None
    }

    /// Start again for the next head.
    pub fn reset(&mut self) {
        self.scanned = 0;
    }
}

/// How many bytes of empty lines (CRLF, or a bare LF) start `buf`: a server
/// ignores them before a request line (RFC 9112 2.2). A CR not followed by
/// a LF is no empty line and is not skipped (nor is a CR at the end, until
/// its LF comes).
pub fn empty_lines(buf: &[u8]) -> usize {
    let mut n = 0;
    loop {
        match &buf[n..] {
            [b'\r', b'\n', ..] => n += 2,
            [b'\n', ..] => n += 1,
            _ => return n,
        }
    }
}

/// The length of a head from what `httparse` made of it.
fn head_len(
    parsed: httparse::Result<usize>,
    buf_len: usize,
    limits: &Limits,
) -> Result<Option<usize>, HeadError> {
    match parsed {
        Ok(httparse::Status::Complete(len)) if len > limits.max_head => Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        Ok(httparse::Status::Partial) if buf_len > limits.max_head => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(_) => Err(HeadError::Malformed),
    }
}

/// Room for this many header lines on the stack; a larger limit parses
/// into a heap array.
const STACK_HEADERS: usize = 128;

/// Run `parse` with an array of `limits.max_headers` headers.
fn with_headers<'b, T>(limits: &Limits, parse: impl FnOnce(&mut [httparse::Header<'b>]) -> T) -> T {
    if limits.max_headers <= STACK_HEADERS {
        let mut headers = [httparse::EMPTY_HEADER; STACK_HEADERS];
        parse(&mut headers[..limits.max_headers])
    } else {
        let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
        parse(&mut headers)
    }
}

/// The form of a request target (RFC 9112 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `/path?query`
    Origin,
    /// `http://authority/path?query`: the authority and the origin-form
    /// part (offsets into the head; an empty path is `/`).
    Absolute {
        authority: (u32, u32),
        rest: (u32, u32),
    },
    /// `*` (OPTIONS only)
    Asterisk,
    /// `host:port` (CONNECT only)
    Authority,
}

/// A visitor's request head.
#[derive(Debug)]
pub struct RequestHead {
    pub fields: Fields,
    pub method: Method,
    target: (u32, u32),
    form: Form,
    pub version: Version,
    /// The request body's framing.
    pub body: Framing,
    /// What its framing headers said.
    pub declared: Declared,
}

impl Default for RequestHead {
    fn default() -> RequestHead {
        RequestHead {
            fields: Fields::default(),
            method: Method::GET,
            target: (0, 0),
            form: Form::Origin,
            version: Version::Http11,
            body: Framing::Length(0),
            declared: Declared::default(),
        }
    }
}

impl RequestHead {
    /// Parse a request head at the start of `buf` (empty lines before it
    /// are the caller's to skip). `Ok(Some(n))`: parsed, `n` bytes long;
    /// `Ok(None)`: not complete yet.
    pub fn parse(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, HeadError> {
        with_headers(limits, |headers| {
            let mut req = httparse::Request::new(headers);
            let Some(len) = head_len(req.parse(buf), buf.len(), limits)? else {
                return Ok(None);
            };
            let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version)
            else {
                return Err(HeadError::Malformed);
            };
            self.method =
                Method::from_bytes(method.as_bytes()).map_err(|_| HeadError::Malformed)?;
            self.version = Version::from_minor(minor);
            let start = path.as_ptr() as usize - buf.as_ptr() as usize;
            self.target = (start as u32, (start + path.len()) as u32);
            self.form = target_form(path, start, &self.method)?;
            self.fields.fill(&buf[..len], req.headers);
            self.check_host()?;
            let (body, declared) = framing::request(&self.fields, self.version)?;
            self.body = body;
            self.declared = declared;
            Ok(Some(len))
        })
    }

    /// A head from the parts of a request that did not come as HTTP/1
    /// text (an HTTP/2 stream, RFC 9113 8.3.1), checked as a parsed head
    /// is: `target` is the `:path` (origin-form, or `*` for OPTIONS; for
    /// CONNECT the authority), `authority` becomes the `Host` line (the
    /// first), `fields` are the other header lines (the caller has refused
    /// the connection-specific ones), `body` and `declared` the body's
    /// framing as the caller decided it.
    pub fn from_parts<'f>(
        &mut self,
        method: Method,
        target: &[u8],
        authority: &[u8],
        fields: &[(&'f [u8], &'f [u8])],
        version: Version,
        (body, declared): (Framing, Declared),
    ) -> Result<(), HeadError> {
        let visible = |v: &[u8]| v.iter().all(|&b| (0x21..0x7f).contains(&b));
        if !visible(target) || !valid_authority(authority) {
            return Err(HeadError::Malformed);
        }
        let Ok(target_str) = std::str::from_utf8(target) else {
            return Err(HeadError::Malformed);
        };
        self.form = if method == Method::CONNECT {
            Form::Authority
        } else if target.first() == Some(&b'/') || target == b"*" {
            target_form(target_str, 0, &method)?
        } else {
            return Err(HeadError::Malformed);
        };
        // One allocation each for the bytes and the lines (they would
        // otherwise grow a few times per head).
        let bytes = fields.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>();
        self.fields
            .reserve(target.len() + 4 + authority.len() + bytes, 1 + fields.len());
        self.target = self.fields.start(target);
        self.fields.push(b"host", authority);
        for (name, value) in fields {
            self.fields.push(name, value);
        }
        self.method = method;
        self.version = version;
        self.body = body;
        self.declared = declared;
        Ok(())
    }

    /// One `Host`, a valid authority without userinfo; required on
    /// HTTP/1.1 unless the target names the host (RFC 9112 3.2).
    fn check_host(&self) -> Result<(), HeadError> {
        let mut hosts = self.fields.all(Known::Host);
        let host = hosts.next();
        if hosts.next().is_some() {
            return Err(HeadError::Ambiguous);
        }
        match host {
            None if self.version == Version::Http11
                && !matches!(self.form, Form::Absolute { .. }) =>
            {
                Err(HeadError::Malformed)
            }
            None => Ok(()),
            Some(h) if h.is_empty() && self.version == Version::Http10 => Ok(()),
            Some(h) if valid_authority(h) => Ok(()),
            Some(_) => Err(HeadError::Malformed),
        }
    }

    /// The request target as received (origin-form `/path?query`, or
    /// absolute-form, or `*`).
    pub fn target(&self) -> &str {
        let raw = self.fields.slice(self.target.0, self.target.1);
        // httparse accepts only visible ASCII in a target.
        std::str::from_utf8(raw).unwrap_or("/")
    }

    /// The target as the node gets it: origin-form (an absolute-form
    /// target's path and query, with the `/` its path may lack), or `*`.
    pub fn origin_target(&self) -> std::borrow::Cow<'_, str> {
        match self.form {
            Form::Absolute { rest, .. } => {
                let rest = std::str::from_utf8(self.fields.slice(rest.0, rest.1)).unwrap_or("");
                if rest.starts_with('/') {
                    rest.into()
                } else {
                    format!("/{rest}").into()
                }
            }
            _ => self.target().into(),
        }
    }

    /// The authority of an absolute-form target, which replaces `Host`
    /// (RFC 9112 3.2.2; nginx does the same).
    pub fn target_authority(&self) -> Option<&str> {
        match self.form {
            Form::Absolute { authority, .. } => {
                std::str::from_utf8(self.fields.slice(authority.0, authority.1)).ok()
            }
            _ => None,
        }
    }

    /// The path of the target, without the query.
    pub fn path(&self) -> &str {
        let target = match self.form {
            Form::Absolute { rest, .. } => {
                std::str::from_utf8(self.fields.slice(rest.0, rest.1)).unwrap_or("")
            }
            _ => self.target(),
        };
        match target.split('?').next() {
            Some(path) if !path.is_empty() => path,
            _ => "/",
        }
    }

    /// The host the request is for: the authority of an absolute-form
    /// target, else its `Host` header.
    pub fn host(&self) -> Option<&str> {
        self.target_authority().or_else(|| {
            self.fields
                .first(Known::Host)
                .and_then(|h| std::str::from_utf8(h).ok())
                .filter(|h| !h.is_empty())
        })
    }

    /// HTTP/1.1 keeps the connection unless the visitor says `close`;
    /// HTTP/1.0 only when it says `keep-alive`.
    pub fn wants_keepalive(&self) -> bool {
        match self.version {
            Version::Http2 => true,
            Version::Http11 => !self.fields.connection_has(ConnectionOption::Close),
            Version::Http10 => self.fields.connection_has(ConnectionOption::KeepAlive),
        }
    }

    /// `Expect: 100-continue` on an HTTP/1.1 or HTTP/2 request.
    pub fn expects_continue(&self) -> bool {
        matches!(self.version, Version::Http11 | Version::Http2)
            && self.fields.has_token_of(Known::Expect, "100-continue")
    }

    /// `GET` with `Connection: upgrade` and `Upgrade: websocket` over
    /// HTTP/1.1.
    pub fn is_websocket_upgrade(&self) -> bool {
        self.version == Version::Http11
            && self.method == Method::GET
            && self.fields.connection_has(ConnectionOption::Upgrade)
            && self.fields.has_token_of(Known::Upgrade, "websocket")
    }

    /// The request line as a log shows it.
    pub fn request_line(&self) -> String {
        format!(
            "{} {} {}",
            self.method,
            self.target(),
            self.version.as_str()
        )
    }
}

/// The form of `target` (at offset `start` of the head), refusing what no
/// origin server should see: an authority-form target outside CONNECT, `*`
/// outside OPTIONS, an absolute-form target that is not `http(s)://`, has
/// no host or carries userinfo, anything else.
fn target_form(target: &str, start: usize, method: &Method) -> Result<Form, HeadError> {
    if target.starts_with('/') {
        return Ok(Form::Origin);
    }
    if target == "*" {
        return if *method == Method::OPTIONS {
            Ok(Form::Asterisk)
        } else {
            Err(HeadError::Malformed)
        };
    }
    if *method == Method::CONNECT {
        return if valid_authority(target.as_bytes()) {
            Ok(Form::Authority)
        } else {
            Err(HeadError::Malformed)
        };
    }
    let Some(scheme_end) = target.find("://") else {
        return Err(HeadError::Malformed);
    };
    let scheme = &target[..scheme_end];
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(HeadError::Malformed);
    }
    let auth_start = scheme_end + 3;
    let auth_len = target[auth_start..]
        .find(['/', '?'])
        .unwrap_or(target.len() - auth_start);
    let authority = &target[auth_start..auth_start + auth_len];
    if authority.is_empty() || !valid_authority(authority.as_bytes()) {
        return Err(HeadError::Malformed);
    }
    let rest = auth_start + auth_len;
    let at = |i: usize| (start + i) as u32;
    Ok(Form::Absolute {
        authority: (at(auth_start), at(rest)),
        rest: (at(rest), at(target.len())),
    })
}

/// `host[:port]` as RFC 3986 allows it in `Host` and a target's authority:
/// a registered name or an IPv4 address of unreserved, sub-delim and
/// percent characters, or a bracketed IP literal, then an optional port of
/// digits; no userinfo, no whitespace, no path.
pub fn valid_authority(v: &[u8]) -> bool {
    if v.is_empty() {
        return false;
    }
    let (host, port) = if v[0] == b'[' {
        let Some(close) = v.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &v[1..close];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        (&v[..=close], &v[close + 1..])
    } else {
        match v.iter().position(|&b| b == b':') {
            Some(colon) => (&v[..colon], &v[colon..]),
            None => (v, &v[v.len()..]),
        }
    };
    if host.is_empty() {
        // `:80`: no host at all (RFC 9110 4.2.1); indexing it panicked.
        return false;
    }
    let host_ok = host[0] == b'['
        || host.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                )
        });
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    host_ok && port_ok
}

/// A node's response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub fields: Fields,
    pub status: u16,
    reason: (u32, u32),
    pub version: Version,
}

impl Default for ResponseHead {
    fn default() -> ResponseHead {
        ResponseHead {
            fields: Fields::default(),
            status: 0,
            reason: (0, 0),
            version: Version::Http11,
        }
    }
}

impl ResponseHead {
    /// Parse a response head at the start of `buf`, as
    /// [`RequestHead::parse`].
    pub fn parse(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, HeadError> {
        with_headers(limits, |headers| {
            let mut resp = httparse::Response::new(headers);
            let Some(len) = head_len(resp.parse(buf), buf.len(), limits)? else {
                return Ok(None);
            };
            let (Some(code), Some(minor)) = (resp.code, resp.version) else {
                return Err(HeadError::Malformed);
            };
            if !(100..=599).contains(&code) {
                return Err(HeadError::Malformed);
            }
            self.status = code;
            self.version = Version::from_minor(minor);
            let reason = resp.reason.unwrap_or("");
            let start = if reason.is_empty() {
                0
            } else {
                reason.as_ptr() as usize - buf.as_ptr() as usize
            };
            self.reason = (start as u32, (start + reason.len()) as u32);
            self.fields.fill(&buf[..len], resp.headers);
            Ok(Some(len))
        })
    }

    /// The reason phrase as the node sent it.
    pub fn reason(&self) -> &[u8] {
        self.fields.slice(self.reason.0, self.reason.1)
    }

    /// The body framing of this response to a request with `method`, and
    /// what its framing headers said.
    pub fn framing_declared(&self, method: &Method) -> Result<(Framing, Declared), HeadError> {
        framing::response(&self.fields, self.version, self.status, method)
    }

    /// The body framing of this response to a request with `method`.
    pub fn framing(&self, method: &Method) -> Result<Framing, HeadError> {
        self.framing_declared(method).map(|(f, _)| f)
    }

    /// Whether the node keeps the connection open after this response.
    pub fn keeps_connection(&self) -> bool {
        match self.version {
            Version::Http11 | Version::Http2 => {
                !self.fields.connection_has(ConnectionOption::Close)
            }
            Version::Http10 => self.fields.connection_has(ConnectionOption::KeepAlive),
        }
    }
}
