//! HTTP/1.x on the wire, for both sides of the proxy: buffered connections
//! with timeouts, request and response heads, and message body framing.
//!
//! A head is parsed in place by `httparse` and kept as the bytes received
//! plus the offsets of its parts, so it goes on to the other side as those
//! bytes, with only the hop-by-hop headers left out and the proxy's own
//! added: no header map is built and no header is copied one by one into
//! owned strings. A body is forwarded as it came; its framing
//! (`Content-Length`, chunked, until close; RFC 9112 6) is followed byte by
//! byte so the proxy knows where it ends, and a chunked body can be
//! decoded for an HTTP/1.0 visitor.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Method;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Largest head (request or response line and headers) accepted, as
/// HAProxy's default buffer and nginx's `large_client_header_buffers`
/// (4 x 8 KiB) allow about.
pub const MAX_HEAD: usize = 32 * 1024;

/// Most header lines in one head (nginx and HAProxy allow about 100).
const MAX_HEADERS: usize = 128;

/// Longest chunk-size line (with its extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// Reads of at most this many bytes into an [`Io`] that holds no buffer go
/// to a scratch buffer of the thread's first (see [`Io::fill_with`]).
const SCRATCH_READ: usize = 4096;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_READ].into_boxed_slice());
}

/// A connection and the bytes read from it that are not consumed yet.
pub struct Io<S> {
    pub io: S,
    buf: Vec<u8>,
    start: usize,
    /// How much is read at once.
    chunk: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    /// `chunk`: how many bytes one read asks for.
    pub fn new(io: S, chunk: usize) -> Io<S> {
        Io {
            io,
            buf: Vec::new(),
            start: 0,
            chunk,
        }
    }

    /// The bytes read and not consumed yet.
    pub fn unread(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Mark `n` bytes of [`Io::unread`] as used.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Give the read buffer's memory back while nothing is buffered (an
    /// idle connection then holds none).
    pub fn release(&mut self) {
        if self.start == self.buf.len() {
            self.buf = Vec::new();
            self.start = 0;
        }
    }

    /// Read more bytes after the unread ones; 0 at end of stream. An
    /// `io::ErrorKind::TimedOut` error when nothing came in `timeout`.
    pub async fn fill(&mut self, timeout: Duration) -> io::Result<usize> {
        self.fill_with(timeout, self.chunk).await
    }

    /// [`Io::fill`], asking for `want` bytes at most.
    ///
    /// An `Io` that holds no buffer (new, or [`Io::release`]d while idle)
    /// and asks for at most [`SCRATCH_READ`] bytes reads into the thread's
    /// scratch buffer and keeps a copy of what came: a keep-alive
    /// connection waiting for its next request then holds no buffer of its
    /// own (as nginx frees its buffer between requests).
    pub async fn fill_with(&mut self, timeout: Duration, want: usize) -> io::Result<usize> {
        if self.buf.capacity() == 0 && want <= SCRATCH_READ {
            let (io, buf) = (&mut self.io, &mut self.buf);
            let read = std::future::poll_fn(|cx| poll_read_via_scratch(io, cx, want, buf));
            return timed_out(tokio::time::timeout(timeout, read).await);
        }
        if self.buf.capacity() - self.buf.len() < want / 2 {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            self.buf.reserve(want);
        }
        timed_out(tokio::time::timeout(timeout, self.io.read_buf(&mut self.buf)).await)
    }

    /// Write all of `data`; `io::ErrorKind::TimedOut` when that takes
    /// longer than `timeout`.
    pub async fn write_all(&mut self, data: &[u8], timeout: Duration) -> io::Result<()> {
        let write = async {
            self.io.write_all(data).await?;
            self.io.flush().await
        };
        timed_out(tokio::time::timeout(timeout, write).await)
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    pub fn into_inner(self) -> S {
        self.io
    }
}

/// What `tokio::time::timeout` gave, with running out of time as an
/// `io::ErrorKind::TimedOut` error.
///
/// Applied to the awaited result rather than wrapping the future in an
/// `async fn`: that would keep the future it was given in its state beside
/// the `Timeout` holding it, in every waiting connection's future.
fn timed_out<T>(r: Result<io::Result<T>, tokio::time::error::Elapsed>) -> io::Result<T> {
    r.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// One read of at most `want` bytes into the thread's scratch buffer; what
/// came is appended to `buf` (with room for `want`). Nothing is borrowed
/// across a wait: a pending read has written nothing.
fn poll_read_via_scratch<S: AsyncRead + Unpin>(
    io: &mut S,
    cx: &mut Context<'_>,
    want: usize,
    buf: &mut Vec<u8>,
) -> Poll<io::Result<usize>> {
    SCRATCH.with_borrow_mut(|scratch| {
        let mut read = ReadBuf::new(&mut scratch[..want]);
        match Pin::new(io).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                let got = read.filled();
                if !got.is_empty() {
                    buf.reserve(want);
                    buf.extend_from_slice(got);
                }
                Poll::Ready(Ok(got.len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// An [`Io`] error as a pingora error of the right kind (a timeout or not,
/// reading or writing); its side (visitor or node) is the caller's to set.
pub fn io_error(e: io::Error, write: bool, what: &'static str) -> Box<pingora::Error> {
    use pingora::ErrorType;
    let etype = match (e.kind(), write) {
        (io::ErrorKind::TimedOut, false) => ErrorType::ReadTimedout,
        (io::ErrorKind::TimedOut, true) => ErrorType::WriteTimedout,
        (_, false) => ErrorType::ReadError,
        (_, true) => ErrorType::WriteError,
    };
    pingora::Error::because(etype, what, e)
}

/// Why a head could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x, or a malformed line.
    Malformed,
    /// Longer than [`MAX_HEAD`] or with more than the allowed header lines.
    TooLarge,
    /// A framing the proxy refuses to guess about (both `Content-Length`
    /// and `Transfer-Encoding`, conflicting lengths, several `Host`s).
    Ambiguous,
    /// A transfer coding other than chunked last.
    UnknownCoding,
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeadError::Malformed => "malformed HTTP head",
            HeadError::TooLarge => "HTTP head too large",
            HeadError::Ambiguous => "ambiguous message framing",
            HeadError::UnknownCoding => "unsupported transfer coding",
        })
    }
}

impl std::error::Error for HeadError {}

/// HTTP/1.0 or HTTP/1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    fn from_minor(minor: u8) -> Version {
        if minor == 0 {
            Version::Http10
        } else {
            Version::Http11
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// The header lines of a head, as byte ranges of the head's own copy.
#[derive(Debug, Default)]
pub struct Fields {
    raw: Vec<u8>,
    lines: Vec<[u32; 4]>,
}

impl Fields {
    fn fill(&mut self, head: &[u8], headers: &[httparse::Header<'_>]) {
        self.raw.clear();
        self.raw.extend_from_slice(head);
        self.lines.clear();
        let base = head.as_ptr() as usize;
        for h in headers {
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            self.lines.push([
                name as u32,
                (name + h.name.len()) as u32,
                value as u32,
                (value + h.value.len()) as u32,
            ]);
        }
    }

    fn slice(&self, from: u32, to: u32) -> &[u8] {
        &self.raw[from as usize..to as usize]
    }

    /// Every header line, as (name, value), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.lines
            .iter()
            .map(|l| (self.slice(l[0], l[1]), self.slice(l[2], l[3])))
    }

    /// The values of every line named `name` (ASCII lower case).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first value of `name`, when it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The values of `name` as UTF-8 strings (others are skipped).
    pub fn get_all_str<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.get_all(name)
            .filter_map(|v| std::str::from_utf8(v).ok())
    }

    /// Whether the comma-separated list header `name` has `token` (any
    /// case).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.tokens(name)
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// The elements of the comma-separated list header `name`.
    pub fn tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .map(|t| t.trim_ascii())
            .filter(|t| !t.is_empty())
    }

    /// The header lines of the head, as received (for logs and tests).
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (0: no body).
    Length(u64),
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// The body framing of a message with these headers (RFC 9112 6.3), for
/// one that may have a body. `request`: a request (which never runs until
/// close).
fn framing(fields: &Fields, request: bool) -> Result<Framing, HeadError> {
    let mut codings = fields.tokens("transfer-encoding").peekable();
    if codings.peek().is_some() {
        let chunked_last = codings
            .last()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        if request && fields.get("content-length").is_some() {
            // Request smuggling's usual shape: refused, as nginx does.
            return Err(HeadError::Ambiguous);
        }
        return match (chunked_last, request) {
            (true, _) => Ok(Framing::Chunked),
            (false, true) => Err(HeadError::UnknownCoding),
            (false, false) => Ok(Framing::UntilClose),
        };
    }
    let mut length = None;
    for v in fields.tokens("content-length") {
        let n = parse_length(v).ok_or(HeadError::Ambiguous)?;
        if length.is_some_and(|l| l != n) {
            return Err(HeadError::Ambiguous);
        }
        length = Some(n);
    }
    Ok(match length {
        Some(n) => Framing::Length(n),
        None if request => Framing::Length(0),
        None => Framing::UntilClose,
    })
}

fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Skip the empty lines a client may send before a request line (RFC 9112
/// 2.2). How many bytes they take.
fn leading_empty_lines(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

/// The length of a head from what `httparse` made of `buf_len` bytes:
/// `None` while it is not complete and may still fit in [`MAX_HEAD`].
fn head_len(parsed: httparse::Result<usize>, buf_len: usize) -> Result<Option<usize>, HeadError> {
    match parsed {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        Ok(httparse::Status::Partial) if buf_len > MAX_HEAD => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(_) => Err(HeadError::Malformed),
    }
}

/// A visitor's request head.
#[derive(Debug)]
pub struct RequestHead {
    pub fields: Fields,
    pub method: Method,
    target: (u32, u32),
    pub version: Version,
    /// The request body's framing.
    pub body: Framing,
}

impl Default for RequestHead {
    fn default() -> RequestHead {
        RequestHead {
            fields: Fields::default(),
            method: Method::GET,
            target: (0, 0),
            version: Version::Http11,
            body: Framing::Length(0),
        }
    }
}

impl RequestHead {
    /// Parse a request head at the start of `buf`. `Ok(Some(n))`: parsed,
    /// `n` bytes long (after any leading empty lines); `Ok(None)`: not
    /// complete yet.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<usize>, HeadError> {
        let skip = leading_empty_lines(buf);
        let buf = &buf[skip..];
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let Some(len) = head_len(req.parse(buf), buf.len())? else {
            return Ok(None);
        };
        let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
            return Err(HeadError::Malformed);
        };
        self.method = Method::from_bytes(method.as_bytes()).map_err(|_| HeadError::Malformed)?;
        self.version = Version::from_minor(minor);
        let start = path.as_ptr() as usize - buf.as_ptr() as usize;
        self.target = (start as u32, (start + path.len()) as u32);
        self.fields.fill(&buf[..len], req.headers);
        if self.fields.get_all("host").nth(1).is_some() {
            return Err(HeadError::Ambiguous);
        }
        self.body = framing(&self.fields, true)?;
        Ok(Some(skip + len))
    }

    /// The request target as received (origin-form `/path?query`, or
    /// absolute-form, or `*`).
    pub fn target(&self) -> &str {
        let raw = self.fields.slice(self.target.0, self.target.1);
        // httparse accepts only visible ASCII in a target.
        std::str::from_utf8(raw).unwrap_or("/")
    }

    /// The path of the target, without the query.
    pub fn path(&self) -> &str {
        let target = self.target();
        let path = match target.find("://") {
            Some(scheme_end) if !target.starts_with('/') => {
                let rest = &target[scheme_end + 3..];
                rest.find('/').map_or("/", |i| &rest[i..])
            }
            _ => target,
        };
        path.split('?').next().unwrap_or(path)
    }

    /// The host the request is for: its `Host` header, else the authority of
    /// an absolute-form target.
    pub fn host(&self) -> Option<&str> {
        if let Some(host) = self.fields.get_str("host") {
            return Some(host);
        }
        let target = self.target();
        let rest = &target[target.find("://")? + 3..];
        let authority = rest.split(['/', '?']).next()?;
        let authority = authority.rsplit('@').next()?;
        (!authority.is_empty()).then_some(authority)
    }

    /// HTTP/1.1 keeps the connection unless the visitor says `close`;
    /// HTTP/1.0 only when it says `keep-alive`.
    pub fn wants_keepalive(&self) -> bool {
        match self.version {
            Version::Http11 => !self.fields.has_token("connection", "close"),
            Version::Http10 => self.fields.has_token("connection", "keep-alive"),
        }
    }

    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub fn expects_continue(&self) -> bool {
        self.version == Version::Http11 && self.fields.has_token("expect", "100-continue")
    }

    /// `GET` with `Connection: upgrade` and `Upgrade: websocket` over
    /// HTTP/1.1.
    pub fn is_websocket_upgrade(&self) -> bool {
        self.version == Version::Http11
            && self.method == Method::GET
            && self.fields.has_token("connection", "upgrade")
            && self.fields.has_token("upgrade", "websocket")
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
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<usize>, HeadError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let Some(len) = head_len(resp.parse(buf), buf.len())? else {
            return Ok(None);
        };
        let (Some(code), Some(minor)) = (resp.code, resp.version) else {
            return Err(HeadError::Malformed);
        };
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
    }

    /// The reason phrase as the node sent it.
    pub fn reason(&self) -> &[u8] {
        self.fields.slice(self.reason.0, self.reason.1)
    }

    /// The body framing of this response to a request with `method`.
    pub fn framing(&self, method: &Method) -> Result<Framing, HeadError> {
        if *method == Method::HEAD
            || (100..200).contains(&self.status)
            || self.status == 204
            || self.status == 304
        {
            return Ok(Framing::Length(0));
        }
        framing(&self.fields, false)
    }

    /// Whether the node keeps the connection open after this response.
    pub fn keeps_connection(&self) -> bool {
        match self.version {
            Version::Http11 => !self.fields.has_token("connection", "close"),
            Version::Http10 => self.fields.has_token("connection", "keep-alive"),
        }
    }
}

/// Where a message body is: how much of it is still to come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// The position in a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// At a chunk-size line.
    Size,
    /// In a chunk's data, this many bytes left.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// At the trailer section after the last chunk.
    Trailers,
}

/// A body that cannot be followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunk;

impl std::fmt::Display for BadChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed chunked body")
    }
}

impl std::error::Error for BadChunk {}

impl Body {
    pub fn new(framing: Framing) -> Body {
        match framing {
            Framing::Length(0) => Body::Done,
            Framing::Length(n) => Body::Length(n),
            Framing::Chunked => Body::Chunked(Chunk::Size),
            Framing::UntilClose => Body::UntilClose,
        }
    }

    pub fn is_done(&self) -> bool {
        *self == Body::Done
    }

    /// Follow the body through `input` (the bytes received next): how many
    /// of them belong to it. The body's data (without chunk framing) is
    /// appended to `data` when one is given. Fewer bytes than `input` has
    /// are taken when the body ends, or when a chunk-size line or the
    /// trailers are not complete yet (more input is then needed).
    pub fn advance(
        &mut self,
        input: &[u8],
        mut data: Option<&mut Vec<u8>>,
    ) -> Result<usize, BadChunk> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self {
                Body::Done => return Ok(pos),
                Body::UntilClose => {
                    if let Some(d) = data.as_deref_mut() {
                        d.extend_from_slice(rest);
                    }
                    return Ok(input.len());
                }
                Body::Length(left) => {
                    let n = rest.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    if let Some(d) = data.as_deref_mut() {
                        d.extend_from_slice(&rest[..n]);
                    }
                    *left -= n as u64;
                    if *left == 0 {
                        *self = Body::Done;
                    }
                    return Ok(pos + n);
                }
                Body::Chunked(chunk) => {
                    if rest.is_empty() {
                        return Ok(pos);
                    }
                    match *chunk {
                        Chunk::Size => match httparse::parse_chunk_size(rest) {
                            Ok(httparse::Status::Complete((n, 0))) => {
                                pos += n;
                                *chunk = Chunk::Trailers;
                            }
                            Ok(httparse::Status::Complete((n, size))) => {
                                pos += n;
                                *chunk = Chunk::Data(size);
                            }
                            Ok(httparse::Status::Partial) if rest.len() <= MAX_CHUNK_LINE => {
                                return Ok(pos)
                            }
                            _ => return Err(BadChunk),
                        },
                        Chunk::Data(left) => {
                            let n = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                            if let Some(d) = data.as_deref_mut() {
                                d.extend_from_slice(&rest[..n]);
                            }
                            pos += n;
                            let left = left - n as u64;
                            *chunk = if left == 0 {
                                Chunk::DataEnd
                            } else {
                                Chunk::Data(left)
                            };
                        }
                        Chunk::DataEnd => {
                            if rest.len() < 2 {
                                return if rest == b"\r" {
                                    Ok(pos)
                                } else {
                                    Err(BadChunk)
                                };
                            }
                            if &rest[..2] != b"\r\n" {
                                return Err(BadChunk);
                            }
                            pos += 2;
                            *chunk = Chunk::Size;
                        }
                        Chunk::Trailers => {
                            let mut headers = [httparse::EMPTY_HEADER; 32];
                            match httparse::parse_headers(rest, &mut headers) {
                                Ok(httparse::Status::Complete((n, _))) => {
                                    pos += n;
                                    *self = Body::Done;
                                }
                                Ok(httparse::Status::Partial) if rest.len() <= MAX_HEAD => {
                                    return Ok(pos)
                                }
                                _ => return Err(BadChunk),
                            }
                        }
                    }
                }
            }
        }
    }

    /// The sender closed its connection here: whether that ends the body
    /// (it does only for a body that runs until close).
    pub fn end_of_stream(&mut self) -> bool {
        match self {
            Body::UntilClose | Body::Done => {
                *self = Body::Done;
                true
            }
            _ => false,
        }
    }
}

/// Follow a request body through `input` as [`Body::advance`] does, and
/// append to `out` what the node gets: the bytes as they came, or for a
/// chunked body its data chunked anew, without extensions or trailers, so
/// the node cannot read the framing in another way than the proxy did
/// (request smuggling). How many bytes of `input` were taken.
pub fn forward_body(body: &mut Body, input: &[u8], out: &mut Vec<u8>) -> Result<usize, BadChunk> {
    if !matches!(body, Body::Chunked(_)) {
        let n = body.advance(input, None)?;
        out.extend_from_slice(&input[..n]);
        return Ok(n);
    }
    let mut data = Vec::new();
    let n = body.advance(input, Some(&mut data))?;
    if !data.is_empty() {
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(&data);
        out.extend_from_slice(b"\r\n");
    }
    if body.is_done() {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    Ok(n)
}

/// Append `name: value\r\n`.
pub fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Append a status line.
pub fn put_status_line(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let code = status.min(999);
    out.extend_from_slice(&[
        b'0' + (code / 100) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]);
    out.push(b' ');
    if reason.is_empty() {
        let canonical = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Unknown");
        out.extend_from_slice(canonical.as_bytes());
    } else {
        out.extend_from_slice(reason);
    }
    out.extend_from_slice(b"\r\n");
}

/// The names of the headers a `Connection` header lists (to be dropped
/// with it, RFC 9110 7.6.1), except the body's framing, which is never
/// dropped on a sender's say-so.
pub fn connection_named(fields: &Fields) -> impl Iterator<Item = &[u8]> {
    fields.tokens("connection").filter(|t| {
        !t.eq_ignore_ascii_case(b"transfer-encoding") && !t.eq_ignore_ascii_case(b"content-length")
    })
}

/// Whether `name` is one of `names` (any case).
pub fn named_in<'a>(name: &[u8], mut names: impl Iterator<Item = &'a [u8]>) -> bool {
    names.any(|n| n.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_idle_io_holds_no_buffer_while_it_waits() {
        const WAIT: Duration = Duration::from_secs(5);
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let mut io = Io::new(near, 1024);

        // Waiting: the read is pending and no buffer is taken.
        let pending = tokio::time::timeout(Duration::from_millis(20), io.fill(WAIT)).await;
        assert!(pending.is_err(), "nothing was sent");
        assert_eq!(io.buf.capacity(), 0);

        far.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(io.fill(WAIT).await.unwrap(), 16);
        assert_eq!(io.unread(), b"GET / HTTP/1.1\r\n");
        assert!(io.buf.capacity() >= 1024, "room for the rest of the head");

        // The rest goes after it, read straight into the buffer.
        far.write_all(b"Host: a\r\n\r\n").await.unwrap();
        assert_eq!(io.fill(WAIT).await.unwrap(), 11);
        assert_eq!(io.unread(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");

        io.consume(io.unread().len());
        io.release();
        assert_eq!(io.buf.capacity(), 0);

        // A large read does not go through the scratch buffer.
        let big = vec![b'x'; 20_000];
        far.write_all(&big).await.unwrap();
        let n = io.fill_with(WAIT, 64 * 1024).await.unwrap();
        assert!(n > SCRATCH_READ, "{n}");
        assert!(io.unread().iter().all(|&b| b == b'x'));

        drop(far);
        io.consume(io.unread().len());
        io.release();
        while io.fill(WAIT).await.unwrap() > 0 {
            io.consume(io.unread().len());
            io.release();
        }
    }

    fn request(raw: &str) -> Result<RequestHead, HeadError> {
        let mut head = RequestHead::default();
        let n = head.parse(raw.as_bytes())?.expect("complete");
        assert_eq!(n, raw.len());
        Ok(head)
    }

    #[test]
    fn a_request_head_keeps_its_bytes_and_parts() {
        let h = request(
            "\r\nPOST /a/b?x=1 HTTP/1.1\r\nHost: Example.org\r\nX-One: 1\r\nx-one: 2\r\nContent-Length: 5\r\n\r\n",
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
        assert_eq!(h.parse(b"GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        assert_eq!(h.parse(b"NOT HTTP\r\n\r\n"), Err(HeadError::Malformed));
        assert_eq!(
            h.parse(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"),
            Err(HeadError::Malformed)
        );
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(h.parse(long.as_bytes()), Err(HeadError::TooLarge));
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: 1\r\n"))
            .collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(h.parse(many.as_bytes()), Err(HeadError::TooLarge));
    }

    #[test]
    fn request_framing_refuses_what_could_smuggle() {
        let framing = |headers: &str| {
            request(&format!("POST / HTTP/1.1\r\nHost: a\r\n{headers}\r\n")).map(|h| h.body)
        };
        assert_eq!(framing(""), Ok(Framing::Length(0)));
        assert_eq!(framing("Content-Length: 10\r\n"), Ok(Framing::Length(10)));
        assert_eq!(
            framing("Content-Length: 10\r\nContent-Length: 10\r\n"),
            Ok(Framing::Length(10))
        );
        assert_eq!(
            framing("Content-Length: 10\r\nContent-Length: 11\r\n"),
            Err(HeadError::Ambiguous)
        );
        assert_eq!(framing("Content-Length: -1\r\n"), Err(HeadError::Ambiguous));
        assert_eq!(
            framing("Content-Length: 1e3\r\n"),
            Err(HeadError::Ambiguous)
        );
        assert_eq!(
            framing("Transfer-Encoding: gzip, chunked\r\n"),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            framing("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"),
            Err(HeadError::Ambiguous)
        );
        assert_eq!(
            framing("Transfer-Encoding: gzip\r\n"),
            Err(HeadError::UnknownCoding)
        );
        assert_eq!(
            request("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").map(|h| h.body),
            Err(HeadError::Ambiguous)
        );
    }

    #[test]
    fn absolute_form_targets() {
        let h = request("GET http://Example.org:8080/x/y?q HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(h.path(), "/x/y");
        assert_eq!(h.host(), Some("Example.org:8080"));
        let h = request("GET http://example.org HTTP/1.1\r\nHost: other\r\n\r\n").unwrap();
        assert_eq!(h.path(), "/");
        assert_eq!(h.host(), Some("other"));
        let h = request("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(h.path(), "*");
    }

    #[test]
    fn keep_alive_by_version() {
        let keep = |raw: &str| request(raw).unwrap().wants_keepalive();
        assert!(keep("GET / HTTP/1.1\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
        assert!(keep("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn expect_and_websocket() {
        let h = request("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n").unwrap();
        assert!(h.expects_continue());
        let h = request("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").unwrap();
        assert!(!h.expects_continue());
        let h = request(
            "GET /ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap();
        assert!(h.is_websocket_upgrade());
        let h = request("GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n").unwrap();
        assert!(!h.is_websocket_upgrade());
    }

    fn response(raw: &str) -> ResponseHead {
        let mut head = ResponseHead::default();
        let n = head.parse(raw.as_bytes()).unwrap().expect("complete");
        assert_eq!(n, raw.len());
        head
    }

    #[test]
    fn response_framing() {
        let get = Method::GET;
        let r = response("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(r.framing(&get), Ok(Framing::Length(12)));
        assert_eq!(r.framing(&Method::HEAD), Ok(Framing::Length(0)));
        assert_eq!(r.reason(), b"OK");
        let r = response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(r.framing(&get), Ok(Framing::Chunked));
        let r = response("HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!(r.framing(&get), Ok(Framing::UntilClose));
        assert!(!r.keeps_connection());
        let r = response("HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(r.framing(&get), Ok(Framing::Length(0)));
        let r = response("HTTP/1.1 204 \r\nConnection: close\r\n\r\n");
        assert_eq!(r.framing(&get), Ok(Framing::Length(0)));
        assert!(!r.keeps_connection());
        assert_eq!(r.reason(), b"");
        let r = response("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n");
        assert_eq!(r.framing(&get), Err(HeadError::Ambiguous));
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
    fn malformed_chunks_are_errors() {
        for bad in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
        ] {
            let mut body = Body::new(Framing::Chunked);
            assert_eq!(body.advance(bad, None), Err(BadChunk), "{bad:?}");
        }
        let long = [b'1'; MAX_CHUNK_LINE + 1];
        assert_eq!(
            Body::new(Framing::Chunked).advance(&long, None),
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
                if let Ok(Some(n)) = req.parse(&bytes) {
                    prop_assert!(n <= bytes.len());
                    let _ = (req.path(), req.host(), req.request_line());
                }
                let mut resp = ResponseHead::default();
                if let Ok(Some(n)) = resp.parse(&bytes) {
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
}
