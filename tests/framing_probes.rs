//! HTTP/1 framing probes: the proxy's message framing, checked from both
//! sides of the real binary against in-test peers that see every byte.
//!
//! This file owns:
//!
//! * the request probe tables (RFC 9112 §§2-7, smuggler's
//!   Transfer-Encoding mutations, HTTP Garden findings, hyper's h1 decoder
//!   cases, the head and body limits). Every probe says what must happen:
//!   **refuse** (the visitor gets the given 4xx/5xx, the connection is
//!   closed, no `100 Continue` was sent, and the node received zero bytes)
//!   or **forward** (the node received exactly one request, nothing more,
//!   whose head holds exactly one framing header (`Content-Length` or
//!   `Transfer-Encoding: chunked`, counted case-insensitively over all
//!   lines; a request without a body may have none) and whose body, decoded
//!   by it, is the body the probe meant). A few probes where RFC 9112 lets a
//!   recipient choose are **either**: refused, or forwarded as above.
//!   Each table runs once as whole writes, and all its probes up to 4 KiB
//!   run again written 5 bytes at a time, each followed on the same
//!   connection by a pipelined `GET /after` that must reach the node as sent
//!   after a forwarded probe and never after a refused one;
//! * an [`Origin`] of three kinds, on 127.0.0.1 and an ephemeral port:
//!   `Strict` records every byte per connection and parses requests by the
//!   exact grammar; `Lenient` reads framing as some legacy servers do (any
//!   `Transfer-Encoding` means chunked, the first `Content-Length` wins, an
//!   empty one is 0), for the smuggling test; `Scripted` answers raw,
//!   possibly malformed, responses, for the response-direction table;
//! * the smuggling test: each ambiguous probe is followed on the same
//!   visitor connection by `GET /second`, and hides `GET /server-status` in
//!   its body; the lenient node must never parse a request the proxy did not
//!   forward as its own;
//! * the response-direction table: malformed framing from a node gives the
//!   visitor a 502 and nothing of the bad body (a chunk that goes bad after
//!   a good one: a 502 or a response cut short, never a complete one);
//!   valid framing reaches the visitor with one framing header written by
//!   the proxy (no chunk extensions, no trailers). Passive health checks
//!   are off and each scripted response must have been asked for, so no 502
//!   comes from a node marked down.
//!
//! A probe table runs in full and its test fails listing every probe whose
//! outcome differs, with the bytes sent and what happened. Every read is
//! bounded ([`VISIT_LIMIT`], the origin's idle limit), every loop is bounded
//! in count, and nothing asserts on timing.

mod support;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use support::webcluster::{base_config, group_config, Webcluster};

/// How long one visit (send a probe, read the answer, wait for the close)
/// may take at most.
const VISIT_LIMIT: Duration = Duration::from_secs(4);

/// How long an origin connection may stay idle before the origin drops it.
const ORIGIN_IDLE: Duration = Duration::from_secs(60);

/// How long an origin keeps accepting connections.
const ORIGIN_LIFETIME: Duration = Duration::from_secs(300);

/// What the strict origin answers to every request it could parse.
const OK_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Origin: strict\r\n\r\nok";

/// The request hidden in the body of every smuggling probe.
const HIDDEN: &[u8] = b"GET /server-status HTTP/1.1\r\nHost: probe.example\r\n\r\n";

/// The default `[limits] max_request_body` (nginx's `client_max_body_size`).
const MAX_BODY: usize = 1024 * 1024;

// ---------------------------------------------------------------- strict parsing

/// One HTTP/1 message parsed by the exact grammar.
#[derive(Debug, Clone)]
struct Message {
    /// The request or status line.
    start: String,
    /// Header fields as received (value OWS-trimmed).
    fields: Vec<(String, String)>,
    /// How many `Content-Length` / `Transfer-Encoding` lines the head has.
    framing: usize,
    /// The decoded body.
    body: Vec<u8>,
    /// Bytes the message took on the wire.
    len: usize,
}

impl Message {
    fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// The request-target of a request line.
    fn target(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or("")
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

enum Parsed {
    Partial,
    Bad(String),
    Done(Message),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte no field value may hold (CTLs other than HTAB, and DEL).
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Parses one message at the start of `buf` by the exact RFC 9112 grammar
/// (CRLF only, token names, no CTLs in values, at most one framing header,
/// chunk-size lines of 1-16 hex digits without extensions, no trailers: what
/// the proxy writes itself). `eof`: the peer has closed, so a response
/// without framing ends here.
fn parse_strict(buf: &[u8], side: Side, eof: bool) -> Parsed {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > 256 * 1024 {
            Parsed::Bad("no end of head within 256 KiB".into())
        } else if eof && !buf.is_empty() {
            Parsed::Bad("closed within a head".into())
        } else {
            Parsed::Partial
        };
    };
    let head = &buf[..end];
    let mut lines = Vec::new();
    let mut rest = head;
    loop {
        match find(rest, b"\r\n") {
            Some(i) => {
                lines.push(&rest[..i]);
                rest = &rest[i + 2..];
            }
            None => {
                lines.push(rest);
                break;
            }
        }
    }
    for line in &lines {
        if line.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return Parsed::Bad(format!("bare CR, LF or NUL in {:?}", show(line)));
        }
    }
    let start = String::from_utf8_lossy(lines[0]).into_owned();
    let mut fields = Vec::new();
    let mut framing = 0;
    let mut length = None;
    let mut chunked = false;
    for line in &lines[1..] {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Parsed::Bad(format!("field line without a colon: {:?}", show(line)));
        };
        let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Parsed::Bad(format!("bad field name in {:?}", show(line)));
        }
        if value.iter().any(|&b| is_ctl(b)) {
            return Parsed::Bad(format!("CTL in the value of {:?}", show(line)));
        }
        let name = String::from_utf8_lossy(name).into_owned();
        let value = String::from_utf8_lossy(value).into_owned();
        if name.eq_ignore_ascii_case("content-length") {
            framing += 1;
            if value.is_empty() || value.len() > 19 || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Parsed::Bad(format!("Content-Length {value:?}"));
            }
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            framing += 1;
            if !value.eq_ignore_ascii_case("chunked") {
                return Parsed::Bad(format!("Transfer-Encoding {value:?}"));
            }
            chunked = true;
        }
        fields.push((name, value));
    }
    if framing > 1 {
        return Parsed::Bad(format!("{framing} framing header lines"));
    }
    let mut msg = Message {
        start,
        fields,
        framing,
        body: Vec::new(),
        len: end + 4,
    };
    let body_at = end + 4;
    if side == Side::Response {
        let status = msg.status();
        if (100..200).contains(&status) || status == 204 || status == 304 {
            return Parsed::Done(msg);
        }
    }
    if chunked {
        let mut pos = body_at;
        loop {
            let Some(eol) = find(&buf[pos..], b"\r\n") else {
                return incomplete(eof, "closed within a chunk-size line");
            };
            let line = &buf[pos..pos + eol];
            if line.is_empty() || line.len() > 16 || !line.iter().all(u8::is_ascii_hexdigit) {
                return Parsed::Bad(format!("chunk-size line {:?}", show(line)));
            }
            let size = usize::from_str_radix(std::str::from_utf8(line).unwrap_or("x"), 16)
                .unwrap_or(usize::MAX);
            pos += eol + 2;
            if size == 0 {
                if buf.len() < pos + 2 {
                    return incomplete(eof, "closed before the end of a chunked body");
                }
                if &buf[pos..pos + 2] != b"\r\n" {
                    return Parsed::Bad(format!("trailer section {:?}", show(&buf[pos..])));
                }
                msg.len = pos + 2;
                return Parsed::Done(msg);
            }
            if size > 64 * 1024 * 1024 {
                return Parsed::Bad(format!("chunk of {size} bytes"));
            }
            if buf.len() < pos + size + 2 {
                return incomplete(eof, "closed within a chunk");
            }
            msg.body.extend_from_slice(&buf[pos..pos + size]);
            if &buf[pos + size..pos + size + 2] != b"\r\n" {
                return Parsed::Bad("no CRLF after chunk data".into());
            }
            pos += size + 2;
        }
    }
    match length {
        Some(n) => {
            if buf.len() < body_at + n {
                return incomplete(eof, "closed within a Content-Length body");
            }
            msg.body = buf[body_at..body_at + n].to_vec();
            msg.len = body_at + n;
            Parsed::Done(msg)
        }
        None if side == Side::Request => Parsed::Done(msg),
        None if eof => {
            msg.body = buf[body_at..].to_vec();
            msg.len = buf.len();
            Parsed::Done(msg)
        }
        None => Parsed::Partial,
    }
}

fn incomplete(eof: bool, what: &str) -> Parsed {
    if eof {
        Parsed::Bad(what.into())
    } else {
        Parsed::Partial
    }
}

/// `bytes` escaped and cut to a readable length, for failure messages.
fn show(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes.iter().take(400) {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(char::from(b)),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > 400 {
        s.push_str(&format!("...({} bytes)", bytes.len()));
    }
    s
}

// ---------------------------------------------------------------- the origin

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Strict,
    Lenient,
    Scripted,
}

/// Everything an origin saw.
#[derive(Default)]
struct Record {
    /// Every byte received, per connection (in accept order).
    raw: Vec<Vec<u8>>,
    /// Every byte received, all connections, in arrival order.
    all: Vec<u8>,
    /// Total bytes received.
    bytes: usize,
    /// Strict: the requests parsed, in order.
    requests: Vec<Message>,
    /// Lenient: the request lines parsed, in order.
    lines: Vec<String>,
    /// Strict: what could not be parsed (the connection was then closed).
    errors: Vec<String>,
    /// The last time something was accepted or received.
    last: Option<Instant>,
}

/// Where a [`Record`] stood, to take what came after.
#[derive(Clone, Copy)]
struct Mark {
    bytes: usize,
    requests: usize,
    lines: usize,
    errors: usize,
    conns: usize,
}

/// An in-test node (see the module doc). Stops accepting when dropped;
/// its connection threads end at the peer's close, on `stop`, or idle.
struct Origin {
    addr: SocketAddr,
    rec: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
}

/// What a connection thread of an origin needs.
#[derive(Clone)]
struct Conn {
    id: usize,
    rec: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
    script: Arc<Vec<Vec<u8>>>,
}

fn lock(rec: &Mutex<Record>) -> MutexGuard<'_, Record> {
    rec.lock().unwrap_or_else(|e| e.into_inner())
}

impl Origin {
    /// `script`: the raw responses a `Scripted` origin answers to
    /// `GET /r/<index>`.
    fn start(kind: Kind, script: Vec<Vec<u8>>) -> Origin {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind the origin");
        let addr = listener.local_addr().expect("origin address");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let rec = Arc::new(Mutex::new(Record::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (rec2, stop2, script) = (Arc::clone(&rec), Arc::clone(&stop), Arc::new(script));
        std::thread::spawn(move || {
            let deadline = Instant::now() + ORIGIN_LIFETIME;
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let id = {
                            let mut r = lock(&rec2);
                            r.raw.push(Vec::new());
                            r.last = Some(Instant::now());
                            r.raw.len() - 1
                        };
                        let conn = Conn {
                            id,
                            rec: Arc::clone(&rec2),
                            stop: Arc::clone(&stop2),
                            script: Arc::clone(&script),
                        };
                        std::thread::spawn(move || {
                            let _ = stream.set_nonblocking(false);
                            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                            let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
                            match kind {
                                Kind::Strict => serve_strict(stream, &conn),
                                Kind::Lenient => serve_lenient(stream, &conn),
                                Kind::Scripted => serve_scripted(stream, &conn),
                            }
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => return,
                }
            }
        });
        Origin { addr, rec, stop }
    }

    fn mark(&self) -> Mark {
        let r = lock(&self.rec);
        Mark {
            bytes: r.bytes,
            requests: r.requests.len(),
            lines: r.lines.len(),
            errors: r.errors.len(),
            conns: r.raw.len(),
        }
    }

    /// Until nothing has arrived for 150 ms (after 100 ms at least, so that
    /// bytes the proxy wrote before answering are read), 5 s at most. Not a
    /// timing assertion: it only lets what is in flight land.
    fn settle(&self) {
        std::thread::sleep(Duration::from_millis(100));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let last = lock(&self.rec).last;
            if last.is_none_or(|t| t.elapsed() >= Duration::from_millis(150)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The bytes received since `m`, all connections, in arrival order.
    fn bytes_since(&self, m: &Mark) -> Vec<u8> {
        lock(&self.rec).all[m.bytes..].to_vec()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads what is there (blocking up to 200 ms at a time); records it.
/// `None` at the end of the stream, on an error, on `stop` or past
/// [`ORIGIN_IDLE`].
fn read_some(s: &mut TcpStream, conn: &Conn, buf: &mut Vec<u8>) -> Option<usize> {
    let mut tmp = vec![0u8; 64 * 1024];
    let idle_since = Instant::now();
    loop {
        match s.read(&mut tmp) {
            Ok(0) => return None,
            Ok(n) => {
                let mut r = lock(&conn.rec);
                r.raw[conn.id].extend_from_slice(&tmp[..n]);
                r.all.extend_from_slice(&tmp[..n]);
                r.bytes += n;
                r.last = Some(Instant::now());
                buf.extend_from_slice(&tmp[..n]);
                return Some(n);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if conn.stop.load(Ordering::Relaxed) || idle_since.elapsed() > ORIGIN_IDLE {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
}

/// Parses requests strictly and answers [`OK_RESPONSE`] to each; on a
/// request it cannot parse, records why and closes.
fn serve_strict(mut s: TcpStream, conn: &Conn) {
    let mut buf = Vec::new();
    let mut pos = 0;
    while read_some(&mut s, conn, &mut buf).is_some() {
        loop {
            match parse_strict(&buf[pos..], Side::Request, false) {
                Parsed::Partial => break,
                Parsed::Bad(why) => {
                    lock(&conn.rec)
                        .errors
                        .push(format!("{why}; bytes: {:?}", show(&buf[pos..])));
                    let _ = s.write_all(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nX-Origin: strict-refused\r\nConnection: close\r\n\r\n",
                    );
                    return;
                }
                Parsed::Done(msg) => {
                    pos += msg.len;
                    lock(&conn.rec).requests.push(msg);
                    if s.write_all(OK_RESPONSE).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// A byte reader over an origin connection, for the lenient parser.
struct Wire<'a> {
    s: TcpStream,
    conn: &'a Conn,
    buf: Vec<u8>,
    pos: usize,
}

impl Wire<'_> {
    /// One line, ended by LF (a CR before it dropped); None at the end.
    fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let mut line = self.buf[self.pos..self.pos + i].to_vec();
                self.pos += i + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Some(line);
            }
            if self.buf.len() - self.pos > 64 * 1024 {
                return None;
            }
            read_some(&mut self.s, self.conn, &mut self.buf)?;
        }
    }

    fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() - self.pos < n {
            read_some(&mut self.s, self.conn, &mut self.buf)?;
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Some(out)
    }
}

/// Leading hex digits of `line` (after whitespace), wrapping on overflow,
/// the rest ignored: how a careless chunk parser reads a size.
fn lenient_hex(line: &[u8]) -> usize {
    let mut n: usize = 0;
    for &b in trim_ows(line) {
        let Some(d) = char::from(b).to_digit(16) else {
            break;
        };
        n = n.wrapping_mul(16).wrapping_add(d as usize);
    }
    n
}

/// Reads requests as some legacy servers do: LF ends a line, names are
/// trimmed, any `Transfer-Encoding` means chunked (sizes by
/// [`lenient_hex`]), else the first `Content-Length` (leading digits; empty
/// or none is 0). Records each request line and answers 200 to each.
fn serve_lenient(s: TcpStream, conn: &Conn) {
    let mut w = Wire {
        s,
        conn,
        buf: Vec::new(),
        pos: 0,
    };
    for _ in 0..1000 {
        let Some(mut line) = w.line() else { return };
        let mut skipped = 0;
        while line.is_empty() && skipped < 8 {
            let Some(next) = w.line() else { return };
            line = next;
            skipped += 1;
        }
        lock(&conn.rec)
            .lines
            .push(String::from_utf8_lossy(&line).into_owned());
        let mut te = false;
        let mut cl: Option<usize> = None;
        for _ in 0..1000 {
            let Some(field) = w.line() else { return };
            if field.is_empty() {
                break;
            }
            let Some(colon) = field.iter().position(|&b| b == b':') else {
                continue;
            };
            let name = String::from_utf8_lossy(&field[..colon])
                .trim_matches(|c: char| c.is_ascii_whitespace() || c.is_ascii_control())
                .to_ascii_lowercase();
            let value = trim_ows(&field[colon + 1..]);
            if name == "transfer-encoding" {
                te = true;
            } else if name == "content-length" && cl.is_none() {
                let digits: String = value
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .map(|&b| char::from(b))
                    .collect();
                cl = Some(digits.parse().unwrap_or(0));
            }
        }
        if te {
            for _ in 0..10_000 {
                let Some(size_line) = w.line() else { return };
                let size = lenient_hex(&size_line);
                if size == 0 {
                    for _ in 0..100 {
                        match w.line() {
                            Some(t) if t.is_empty() => break,
                            Some(_) => {}
                            None => return,
                        }
                    }
                    break;
                }
                if size > 4 * MAX_BODY || w.take(size).is_none() || w.line().is_none() {
                    return;
                }
            }
        } else if let Some(n) = cl {
            if n > 4 * MAX_BODY || w.take(n).is_none() {
                return;
            }
        }
        if w.s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Origin: lenient\r\n\r\nok")
            .is_err()
        {
            return;
        }
    }
}

/// Reads one request head, answers the raw response `/r/<index>` names,
/// then closes (after reading what the proxy still sends, bounded).
fn serve_scripted(mut s: TcpStream, conn: &Conn) {
    let mut buf = Vec::new();
    while find(&buf, b"\r\n\r\n").is_none() {
        if buf.len() > 64 * 1024 || read_some(&mut s, conn, &mut buf).is_none() {
            return;
        }
    }
    let line = String::from_utf8_lossy(&buf[..find(&buf, b"\r\n").unwrap_or(0)]).into_owned();
    lock(&conn.rec).lines.push(line.clone());
    let index = line
        .split(' ')
        .nth(1)
        .and_then(|t| t.strip_prefix("/r/"))
        .and_then(|i| i.parse::<usize>().ok());
    let Some(response) = index.and_then(|i| conn.script.get(i)) else {
        let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let _ = s.write_all(response);
    let _ = s.shutdown(Shutdown::Write);
    let mut rest = Vec::new();
    for _ in 0..50 {
        if read_some(&mut s, conn, &mut rest).is_none() {
            break;
        }
    }
}

// ---------------------------------------------------------------- the visitor

/// What a visitor saw on one connection.
#[derive(Debug, Default)]
struct Visit {
    /// Status codes of interim (1xx) responses.
    interim: Vec<u16>,
    /// Final responses, in order.
    responses: Vec<Message>,
    /// Whether the proxy closed the connection (within [`VISIT_LIMIT`]).
    closed: bool,
    /// Everything received.
    raw: Vec<u8>,
    /// Why reading stopped early (an unparsable response, a read error).
    error: Option<String>,
}

impl Visit {
    fn status(&self) -> Option<u16> {
        self.responses.first().map(Message::status)
    }

    fn describe(&self) -> String {
        format!(
            "visitor got {:?} (interim {:?}), closed: {}, error: {:?}, raw: {:?}",
            self.responses
                .iter()
                .map(|r| r.start.as_str())
                .collect::<Vec<_>>(),
            self.interim,
            self.closed,
            self.error,
            show(&self.raw)
        )
    }
}

/// Sends `bytes` (from another thread, so a proxy that answers before
/// reading everything does not block it) on a new connection to `addr`
/// and reads responses until `want` final ones came and the last is a
/// 2xx/3xx, or the proxy closes, or [`VISIT_LIMIT`] passes. After a
/// 4xx/5xx it waits for the close.
fn visit(addr: SocketAddr, bytes: &[u8], want: usize) -> Visit {
    visit_in(addr, bytes, want, None)
}

/// [`visit`], writing `bytes` in pieces of `piece` bytes 1 ms apart when
/// given, so that the proxy reads them in many parts.
fn visit_in(addr: SocketAddr, bytes: &[u8], want: usize, piece: Option<usize>) -> Visit {
    let mut v = Visit::default();
    let stream = match TcpStream::connect_timeout(&addr, VISIT_LIMIT) {
        Ok(s) => s,
        Err(e) => {
            v.error = Some(format!("connect: {e}"));
            return v;
        }
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = stream.set_write_timeout(Some(VISIT_LIMIT));
    let _ = stream.set_nodelay(true);
    let writer = stream.try_clone().map(|mut w| {
        let bytes = bytes.to_vec();
        std::thread::spawn(move || match piece {
            None => {
                let _ = w.write_all(&bytes);
            }
            Some(n) => {
                for part in bytes.chunks(n) {
                    if w.write_all(part).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    });
    let deadline = Instant::now() + VISIT_LIMIT;
    let mut reader = stream;
    let mut tmp = [0u8; 16 * 1024];
    let mut pos = 0;
    let mut done = false;
    while Instant::now() < deadline && !v.closed {
        match reader.read(&mut tmp) {
            Ok(0) => v.closed = true,
            Ok(n) => v.raw.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => v.closed = true,
            Err(e) => {
                v.error = Some(format!("read: {e}"));
                break;
            }
        }
        while !done {
            match parse_strict(&v.raw[pos..], Side::Response, v.closed) {
                Parsed::Partial => break,
                Parsed::Bad(why) => {
                    if pos < v.raw.len() {
                        v.error = Some(format!("unparsable response: {why}"));
                    }
                    done = true;
                }
                Parsed::Done(msg) => {
                    pos += msg.len;
                    let status = msg.status();
                    if (100..200).contains(&status) {
                        v.interim.push(status);
                        continue;
                    }
                    v.responses.push(msg);
                    if status >= 400 {
                        // Refused: only the close may follow.
                        done = true;
                    } else if v.responses.len() >= want {
                        done = true;
                    }
                }
            }
        }
        if done && v.status().is_some_and(|s| s < 400) && v.responses.len() >= want {
            break;
        }
        if v.error.is_some() {
            break;
        }
    }
    if let Ok(handle) = writer {
        let _ = reader.shutdown(Shutdown::Both);
        let _ = handle.join();
    }
    v
}

// ---------------------------------------------------------------- probes

/// What a probe must lead to.
#[derive(Debug, Clone)]
enum Want {
    /// One of these statuses, the connection closed, no `100 Continue`,
    /// and zero bytes at the node.
    Refuse(&'static [u16]),
    /// Exactly one request at the node, as described by [`Fwd`].
    Forward(Fwd),
    /// RFC 9112 lets the recipient choose: a refusal (any 4xx/5xx, closed,
    /// nothing at the node) or this forward.
    Either(Fwd),
}

/// A forwarded request: its decoded body and, optionally, its target, its
/// `Host`, and headers that must have reached the node.
#[derive(Debug, Clone, Default)]
struct Fwd {
    body: Vec<u8>,
    target: Option<&'static str>,
    host: Option<&'static str>,
    present: &'static [&'static str],
}

struct Probe {
    name: String,
    raw: Vec<u8>,
    want: Want,
}

const BAD: &[u16] = &[400];
/// An unknown or refused transfer coding: 400, or 501 (RFC 9112 6.1).
const BAD_TE: &[u16] = &[400, 501];
/// A refusal of a request RFC 9112 lets the proxy refuse (not a 5xx that
/// would say the node failed).
const EITHER_REFUSAL: &[u16] = &[400, 413, 431, 501, 505];
/// A length beyond any limit: malformed (400) or too large (413).
const TOO_BIG: &[u16] = &[400, 413];

fn fwd(body: &[u8]) -> Want {
    Want::Forward(Fwd {
        body: body.to_vec(),
        ..Fwd::default()
    })
}

fn either(body: &[u8]) -> Want {
    Want::Either(Fwd {
        body: body.to_vec(),
        ..Fwd::default()
    })
}

fn probe(name: impl Into<String>, raw: Vec<u8>, want: Want) -> Probe {
    Probe {
        name: name.into(),
        raw,
        want,
    }
}

/// `POST /probe HTTP/1.1`, `Host`, then `fields` (each ending in CRLF),
/// the empty line and `body`.
fn post(fields: &[u8], body: &[u8]) -> Vec<u8> {
    post_v("1.1", fields, body)
}

fn post_v(version: &str, fields: &[u8], body: &[u8]) -> Vec<u8> {
    let mut raw = format!("POST /probe HTTP/{version}\r\nHost: probe.example\r\n").into_bytes();
    raw.extend_from_slice(fields);
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(body);
    raw
}

/// A `Transfer-Encoding: chunked` POST with `body` on the wire.
fn chunked(body: &[u8]) -> Vec<u8> {
    post(b"Transfer-Encoding: chunked\r\n", body)
}

/// A GET with `fields` after `Host`, no body.
fn get(fields: &[u8]) -> Vec<u8> {
    let mut raw = b"GET /probe HTTP/1.1\r\nHost: probe.example\r\n".to_vec();
    raw.extend_from_slice(fields);
    raw.extend_from_slice(b"\r\n");
    raw
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const HELLO_CHUNKED: &[u8] = b"5\r\nhello\r\n0\r\n\r\n";

/// Transfer-Encoding values and lines: RFC 9112 6.1 and 6.3, smuggler's
/// mutation families, HTTP Garden.
fn transfer_encoding_probes() -> Vec<Probe> {
    let mut v = vec![
        probe("TE chunked", chunked(HELLO_CHUNKED), fwd(b"hello")),
        probe(
            "TE CHUNKED",
            post(b"Transfer-Encoding: CHUNKED\r\n", HELLO_CHUNKED),
            fwd(b"hello"),
        ),
        probe(
            "te Chunked",
            post(b"transfer-encoding: Chunked\r\n", HELLO_CHUNKED),
            fwd(b"hello"),
        ),
        probe(
            "TRANSFER-ENCODING",
            post(b"TRANSFER-ENCODING: chunked\r\n", HELLO_CHUNKED),
            fwd(b"hello"),
        ),
        probe(
            "TE no space",
            post(b"Transfer-Encoding:chunked\r\n", HELLO_CHUNKED),
            fwd(b"hello"),
        ),
        probe(
            "TE OWS spaces",
            post(b"Transfer-Encoding:   chunked   \r\n", HELLO_CHUNKED),
            fwd(b"hello"),
        ),
        probe(
            "TE OWS tabs",
            post(b"Transfer-Encoding:\tchunked\t\r\n", HELLO_CHUNKED),
            fwd(b"hello"),
        ),
        probe(
            "TE on GET",
            cat(&[
                b"GET /probe HTTP/1.1\r\nHost: probe.example\r\nTransfer-Encoding: chunked\r\n\r\n",
                HELLO_CHUNKED,
            ]),
            fwd(b"hello"),
        ),
    ];
    // Values other than exactly `chunked`.
    let refused: &[&[u8]] = &[
        b"",
        b"identity",
        b"gzip",
        b"deflate",
        b"compress",
        b"identity, chunked",
        b"gzip, chunked",
        b"chunked, chunked",
        b"chunked,chunked",
        b",chunked",
        b", chunked ,",
        b"chunked,",
        b"chunked, identity",
        b"chunked, gzip",
        b"chunked;",
        b"chunked;q=1",
        b"chunked ;",
        b"chunkedx",
        b"xchunked",
        b"chunk",
        b"chunke d",
        b"\"chunked\"",
        b"'chunked'",
        b"chunked\x0b",
        b"\x0bchunked",
        b"\x0cchunked",
        b"chunked\x0c",
        b"chunked\x00",
        b"chu\x00nked",
        b"\xffchunked",
        b"ch\xc3\xbcnked",
    ];
    for value in refused {
        let fields = cat(&[b"Transfer-Encoding: ", value, b"\r\n"]);
        v.push(probe(
            format!("TE {:?}", show(value)),
            post(&fields, HELLO_CHUNKED),
            Want::Refuse(BAD_TE),
        ));
    }
    // Lines, names and their neighbours.
    let lines: &[(&str, &[u8])] = &[
        (
            "TE on two lines",
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "TE gzip then chunked lines",
            b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "TE chunked then identity lines",
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        ),
        (
            "TE chunked then empty line value",
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding:\r\n",
        ),
        ("TE space before colon", b"Transfer-Encoding : chunked\r\n"),
        ("TE tab before colon", b"Transfer-Encoding\t: chunked\r\n"),
        ("TE VT before name", b"\x0bTransfer-Encoding: chunked\r\n"),
        ("TE FF before name", b"\x0cTransfer-Encoding: chunked\r\n"),
        ("TE NUL in name", b"Transfer-Enc\x00oding: chunked\r\n"),
        ("TE obs-fold value", b"Transfer-Encoding:\r\n chunked\r\n"),
        (
            "TE folded onto X-Pad",
            b"X-Pad: x\r\n Transfer-Encoding: chunked\r\n",
        ),
        (
            "TE folded with tab",
            b"X-Pad: x\r\n\tTransfer-Encoding: chunked\r\n",
        ),
        ("TE bare CR in value", b"Transfer-Encoding: chun\rked\r\n"),
        ("TE CR before CRLF", b"Transfer-Encoding: chunked\r\r\n"),
        (
            "TE and CL 5",
            b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ),
        (
            "CL 5 and TE",
            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "TE and CL 0",
            b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
        ),
        (
            "TE and CL 15",
            b"Transfer-Encoding: chunked\r\nContent-Length: 15\r\n",
        ),
    ];
    for (name, fields) in lines {
        v.push(probe(
            *name,
            post(fields, HELLO_CHUNKED),
            Want::Refuse(BAD_TE),
        ));
    }
    v.push(probe(
        "TE on HTTP/1.0",
        post_v("1.0", b"Transfer-Encoding: chunked\r\n", HELLO_CHUNKED),
        Want::Refuse(BAD),
    ));
    v.push(probe(
        "TE and CL on HTTP/1.0",
        post_v(
            "1.0",
            b"Transfer-Encoding: chunked\r\nContent-Length: 15\r\n",
            HELLO_CHUNKED,
        ),
        Want::Refuse(BAD),
    ));
    // `Transfer_Encoding` is another field (a valid token): framed by CL.
    v.push(probe(
        "Transfer_Encoding is not TE",
        post(
            b"Transfer_Encoding: chunked\r\nContent-Length: 5\r\n",
            b"hello",
        ),
        fwd(b"hello"),
    ));
    v
}

/// Content-Length values and lines: RFC 9112 6.3, 8.6 of RFC 9110.
fn content_length_probes() -> Vec<Probe> {
    let mut v = vec![
        probe(
            "CL 5",
            post(b"Content-Length: 5\r\n", b"hello"),
            fwd(b"hello"),
        ),
        probe(
            "CL no space",
            post(b"Content-Length:5\r\n", b"hello"),
            fwd(b"hello"),
        ),
        probe(
            "CL OWS",
            post(b"Content-Length: \t5 \t\r\n", b"hello"),
            fwd(b"hello"),
        ),
        probe(
            "cl lower",
            post(b"content-length: 5\r\n", b"hello"),
            fwd(b"hello"),
        ),
        probe(
            "CL 05",
            post(b"Content-Length: 05\r\n", b"hello"),
            fwd(b"hello"),
        ),
        probe("CL 0", post(b"Content-Length: 0\r\n", b""), fwd(b"")),
        probe("POST no body", post(b"", b""), fwd(b"")),
        probe(
            "CL on GET",
            cat(&[
                b"GET /probe HTTP/1.1\r\nHost: probe.example\r\nContent-Length: 5\r\n\r\n",
                b"hello",
            ]),
            fwd(b"hello"),
        ),
        probe(
            "CL on HTTP/1.0",
            post_v("1.0", b"Content-Length: 5\r\n", b"hello"),
            fwd(b"hello"),
        ),
        probe(
            "CL equal lines",
            post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
            either(b"hello"),
        ),
        probe(
            "CL 22 digits of 5",
            post(b"Content-Length: 0000000000000000000005\r\n", b"hello"),
            either(b"hello"),
        ),
        probe(
            "CL binary body",
            post(b"Content-Length: 8\r\n", b"\x00\r\n\r\n\xff0\n"),
            fwd(b"\x00\r\n\r\n\xff0\n"),
        ),
    ];
    let refused: &[&[u8]] = &[
        b"",
        b" ",
        b"5, 5",
        b"5,5",
        b",5",
        b"5,",
        b"5,,5",
        b"5, 6",
        b"+5",
        b"-5",
        b"0x5",
        b"5.0",
        b"5 5",
        b"5a",
        b"1e1",
        b"\"5\"",
        b"5\x00",
        b"\x0b5",
        b"5\x0c",
        b"\xef\xbc\x95",
    ];
    for value in refused {
        let fields = cat(&[b"Content-Length: ", value, b"\r\n"]);
        v.push(probe(
            format!("CL {:?}", show(value)),
            post(&fields, b"hello"),
            Want::Refuse(BAD),
        ));
    }
    let huge: &[&[u8]] = &[
        b"9223372036854775808",
        b"18446744073709551621",
        b"99999999999999999999999999",
    ];
    for value in huge {
        let fields = cat(&[b"Content-Length: ", value, b"\r\n"]);
        v.push(probe(
            format!("CL {}", show(value)),
            post(&fields, b"hello"),
            Want::Refuse(TOO_BIG),
        ));
    }
    let lines: &[(&str, &[u8])] = &[
        ("CL 5 then 6", b"Content-Length: 5\r\nContent-Length: 6\r\n"),
        ("CL 6 then 5", b"Content-Length: 6\r\nContent-Length: 5\r\n"),
        (
            "CL 5 then empty",
            b"Content-Length: 5\r\nContent-Length:\r\n",
        ),
        (
            "CL empty then 5",
            b"Content-Length:\r\nContent-Length: 5\r\n",
        ),
        ("CL space before colon", b"Content-Length : 5\r\n"),
        ("CL VT before name", b"\x0bContent-Length: 5\r\n"),
        ("CL obs-fold value", b"Content-Length:\r\n 5\r\n"),
        (
            "CL folded onto X-Pad",
            b"X-Pad: x\r\n Content-Length: 5\r\n",
        ),
    ];
    for (name, fields) in lines {
        v.push(probe(*name, post(fields, b"hello"), Want::Refuse(BAD)));
    }
    v
}

/// Chunked bodies: RFC 9112 7.1, hyper's h1 decoder tests, HTTP Garden.
fn chunked_body_probes() -> Vec<Probe> {
    let good: &[(&str, &[u8], &[u8])] = &[
        ("two chunks", b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", b"hello"),
        (
            "uppercase hex",
            b"A\r\n0123456789\r\n0\r\n\r\n",
            b"0123456789",
        ),
        (
            "lowercase hex",
            b"a\r\n0123456789\r\n0\r\n\r\n",
            b"0123456789",
        ),
        ("leading zeros", b"0005\r\nhello\r\n0\r\n\r\n", b"hello"),
        (
            "16 hex digits",
            b"0000000000000005\r\nhello\r\n000\r\n\r\n",
            b"hello",
        ),
        ("extension", b"5;ext=1\r\nhello\r\n0\r\n\r\n", b"hello"),
        ("bare extension", b"5;ext\r\nhello\r\n0\r\n\r\n", b"hello"),
        (
            "quoted extension",
            b"5;ext=\"a; b\"\r\nhello\r\n0\r\n\r\n",
            b"hello",
        ),
        (
            "two extensions",
            b"5;a=1;b=2\r\nhello\r\n0\r\n\r\n",
            b"hello",
        ),
        (
            "extension on last",
            b"5\r\nhello\r\n0;end\r\n\r\n",
            b"hello",
        ),
        (
            "trailer",
            b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n",
            b"hello",
        ),
        ("empty body", b"0\r\n\r\n", b""),
        (
            "data like a last chunk",
            b"7\r\n0\r\n\r\nab\r\n0\r\n\r\n",
            b"0\r\n\r\nab",
        ),
        (
            "binary data",
            b"4\r\n\x00\xff\r\n\r\n0\r\n\r\n",
            b"\x00\xff\r\n",
        ),
    ];
    let mut v: Vec<Probe> = good
        .iter()
        .map(|(name, body, data)| probe(format!("chunked: {name}"), chunked(body), fwd(data)))
        .collect();
    // Where RFC 9112 allows both readings.
    v.push(probe(
        "chunked: BWS before extension",
        chunked(b"5 ;a=b\r\nhello\r\n0\r\n\r\n"),
        either(b"hello"),
    ));
    v.push(probe(
        "chunked: Content-Length in trailer",
        chunked(b"5\r\nhello\r\n0\r\nContent-Length: 100\r\n\r\n"),
        either(b"hello"),
    ));
    // RFC 9112 2.2: a recipient MAY take a bare LF to end a field line,
    // trailer fields included.
    v.push(probe(
        "chunked: trailer ended by LF",
        chunked(b"5\r\nhello\r\n0\r\nX-T: a\n\r\n"),
        either(b"hello"),
    ));
    v.push(probe(
        "chunked: Transfer-Encoding in trailer",
        chunked(b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        either(b"hello"),
    ));
    let bad: &[(&str, &[u8])] = &[
        ("empty size line", b"\r\n5\r\nhello\r\n0\r\n\r\n"),
        ("extension without size", b";x\r\nhello\r\n0\r\n\r\n"),
        ("spaces only", b"  \r\nhello\r\n0\r\n\r\n"),
        ("leading space", b" 5\r\nhello\r\n0\r\n\r\n"),
        ("trailing space", b"5 \r\nhello\r\n0\r\n\r\n"),
        ("trailing tab", b"5\t\r\nhello\r\n0\r\n\r\n"),
        ("space inside size", b"0 5\r\nhello\r\n0\r\n\r\n"),
        ("non-hex", b"g\r\nhello\r\n0\r\n\r\n"),
        ("0x prefix", b"0x5\r\nhello\r\n0\r\n\r\n"),
        ("plus sign", b"+5\r\nhello\r\n0\r\n\r\n"),
        ("minus sign", b"-5\r\nhello\r\n0\r\n\r\n"),
        ("17 hex digits", b"00000000000000005\r\nhello\r\n0\r\n\r\n"),
        (
            "2^64 + 5 wraps to 5",
            b"10000000000000005\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "Garden overflow",
            b"1000000000000000000000000000000000005\r\nhello\r\n0\r\n\r\n",
        ),
        ("empty extension name", b"5;\r\nhello\r\n0\r\n\r\n"),
        ("extension without name", b"5;=x\r\nhello\r\n0\r\n\r\n"),
        ("space in extension value", b"5;a=b c\r\nhello\r\n0\r\n\r\n"),
        ("NUL in extension", b"5;a\x00b\r\nhello\r\n0\r\n\r\n"),
        ("CTL in extension", b"5;a=\x01\r\nhello\r\n0\r\n\r\n"),
        ("DEL in extension", b"5;a=\x7f\r\nhello\r\n0\r\n\r\n"),
        ("bare LF in extension", b"5;a\nb\r\nhello\r\n0\r\n\r\n"),
        ("bare CR in extension", b"5;a\rb\r\nhello\r\n0\r\n\r\n"),
        ("size line ended by LF", b"5\nhello\r\n0\r\n\r\n"),
        ("size line ended by CR", b"5\rhello\r\n0\r\n\r\n"),
        ("no CRLF after data", b"5\r\nhello0\r\n\r\n"),
        ("bytes after data", b"5\r\nhelloXX\r\n0\r\n\r\n"),
        ("LF only after data", b"5\r\nhello\n0\r\n\r\n"),
        ("CR only after data", b"5\r\nhello\r0\r\n\r\n"),
        ("size too small", b"3\r\nhello\r\n0\r\n\r\n"),
        ("last chunk ended by LF", b"5\r\nhello\r\n0\n\r\n"),
        (
            "trailer name with space",
            b"5\r\nhello\r\n0\r\nBad Name: x\r\n\r\n",
        ),
        ("trailer without name", b"5\r\nhello\r\n0\r\n: x\r\n\r\n"),
        ("trailer without colon", b"5\r\nhello\r\n0\r\nX\r\n\r\n"),
        (
            "trailer obs-fold",
            b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n",
        ),
        ("NUL in trailer", b"5\r\nhello\r\n0\r\nX-T: a\x00b\r\n\r\n"),
    ];
    for (name, body) in bad {
        v.push(probe(
            format!("chunked: {name}"),
            chunked(body),
            Want::Refuse(BAD),
        ));
    }
    v.push(probe(
        "chunked: size of 2^64 - 1",
        chunked(b"ffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        Want::Refuse(TOO_BIG),
    ));
    v
}

/// Request lines, targets, Host, field lines: RFC 9112 2-3 and 5.
fn head_probes() -> Vec<Probe> {
    let mut v = vec![
        probe(
            "GET origin-form",
            get(b""),
            Want::Forward(Fwd {
                target: Some("/probe"),
                host: Some("probe.example"),
                ..Fwd::default()
            }),
        ),
        probe(
            "HTTP/1.0 without Host",
            b"GET /probe HTTP/1.0\r\n\r\n".to_vec(),
            Want::Forward(Fwd {
                target: Some("/probe"),
                ..Fwd::default()
            }),
        ),
        probe(
            "absolute-form",
            b"GET http://other.example/abs HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Want::Forward(Fwd {
                target: Some("/abs"),
                host: Some("other.example"),
                ..Fwd::default()
            }),
        ),
        probe(
            "absolute-form with port and query",
            b"GET http://other.example:8080/abs?q=1 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Want::Forward(Fwd {
                target: Some("/abs?q=1"),
                host: Some("other.example:8080"),
                ..Fwd::default()
            }),
        ),
        probe(
            "absolute-form without path",
            b"GET http://other.example HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Want::Forward(Fwd {
                target: Some("/"),
                host: Some("other.example"),
                ..Fwd::default()
            }),
        ),
        probe(
            "absolute-form POST with body",
            cat(&[
                b"POST http://other.example/abs HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
                b"hello",
            ]),
            Want::Forward(Fwd {
                body: b"hello".to_vec(),
                target: Some("/abs"),
                host: Some("other.example"),
                ..Fwd::default()
            }),
        ),
        probe(
            "Connection names framing headers",
            post(
                b"Connection: Host, Content-Length, Transfer-Encoding, X-Forwarded-For\r\n\
                  Content-Length: 5\r\n",
                b"hello",
            ),
            Want::Forward(Fwd {
                body: b"hello".to_vec(),
                host: Some("probe.example"),
                present: &["host"],
                ..Fwd::default()
            }),
        ),
        probe(
            "Connection names TE of a chunked body",
            post(
                b"Connection: Transfer-Encoding, Host\r\nTransfer-Encoding: chunked\r\n",
                HELLO_CHUNKED,
            ),
            Want::Forward(Fwd {
                body: b"hello".to_vec(),
                host: Some("probe.example"),
                present: &["host"],
                ..Fwd::default()
            }),
        ),
        probe(
            "Expect 100-continue with a small body",
            post(b"Expect: 100-continue\r\nContent-Length: 5\r\n", b"hello"),
            fwd(b"hello"),
        ),
        probe(
            "empty line before the request line",
            cat(&[b"\r\n", &get(b"")]),
            either(b""),
        ),
        probe(
            "LF-only head",
            b"GET /probe HTTP/1.1\nHost: probe.example\n\n".to_vec(),
            either(b""),
        ),
        probe(
            "OPTIONS asterisk",
            b"OPTIONS * HTTP/1.1\r\nHost: probe.example\r\n\r\n".to_vec(),
            either(b""),
        ),
    ];
    let bad: &[(&str, &[u8], &[u16])] = &[
        ("HTTP/1.1 without Host", b"GET /probe HTTP/1.1\r\n\r\n", BAD),
        (
            "two Host lines",
            b"GET /probe HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
            BAD,
        ),
        (
            "two equal Host lines",
            b"GET /probe HTTP/1.1\r\nHost: a.example\r\nhost: a.example\r\n\r\n",
            BAD,
        ),
        (
            "Host listed",
            b"GET /probe HTTP/1.1\r\nHost: a.example, b.example\r\n\r\n",
            BAD,
        ),
        (
            "absolute-form with userinfo",
            b"GET http://user:pass@other.example/abs HTTP/1.1\r\nHost: x\r\n\r\n",
            BAD,
        ),
        (
            "absolute-form with user",
            b"GET http://user@other.example/abs HTTP/1.1\r\nHost: x\r\n\r\n",
            BAD,
        ),
        (
            "authority-form GET",
            b"GET other.example:80 HTTP/1.1\r\nHost: other.example:80\r\n\r\n",
            BAD,
        ),
        (
            "authority-form POST",
            b"POST other.example:443 HTTP/1.1\r\nHost: other.example\r\nContent-Length: 0\r\n\r\n",
            BAD,
        ),
        (
            "obs-fold",
            b"GET /probe HTTP/1.1\r\nHost: probe.example\r\nX-Folded: a\r\n b\r\n\r\n",
            BAD,
        ),
        (
            "obs-fold with tab",
            b"GET /probe HTTP/1.1\r\nHost: probe.example\r\nX-Folded: a\r\n\tb\r\n\r\n",
            BAD,
        ),
        (
            "whitespace before the first field",
            b"GET /probe HTTP/1.1\r\n Host: probe.example\r\n\r\n",
            BAD,
        ),
        (
            "space before colon",
            b"GET /probe HTTP/1.1\r\nHost: probe.example\r\nX-Name : v\r\n\r\n",
            BAD,
        ),
        (
            "tab before colon",
            b"GET /probe HTTP/1.1\r\nHost: probe.example\r\nX-Name\t: v\r\n\r\n",
            BAD,
        ),
        (
            "Host with space before colon",
            b"GET /probe HTTP/1.1\r\nHost : probe.example\r\n\r\n",
            BAD,
        ),
        (
            "empty field name",
            b"GET /probe HTTP/1.1\r\nHost: probe.example\r\n: v\r\n\r\n",
            BAD,
        ),
        (
            "field name not a token",
            b"GET /probe HTTP/1.1\r\nHost: probe.example\r\nX(a): v\r\n\r\n",
            BAD,
        ),
        (
            "NUL in field value",
            b"GET /probe HTTP/1.1\r\nHost: probe.example\r\nX-A: a\x00b\r\n\r\n",
            BAD,
        ),
        (
            "bare CR in field value",
            b"GET /probe HTTP/1.1\r\nHost: probe.example\r\nX-A: a\rb\r\n\r\n",
            BAD,
        ),
        (
            "CR CR LF",
            b"GET /probe HTTP/1.1\r\nHost: probe.example\r\nX-A: a\r\r\n\r\n",
            BAD,
        ),
        (
            "DEL in field value",
            b"GET /probe HTTP/1.1\r\nHost: probe.example\r\nX-A: a\x7fb\r\n\r\n",
            BAD,
        ),
        (
            "NUL in Host",
            b"GET /probe HTTP/1.1\r\nHost: probe\x00.example\r\n\r\n",
            BAD,
        ),
        (
            "two spaces in the request line",
            b"GET  /probe HTTP/1.1\r\nHost: probe.example\r\n\r\n",
            BAD,
        ),
        (
            "space in the target",
            b"GET /a b HTTP/1.1\r\nHost: probe.example\r\n\r\n",
            BAD,
        ),
        (
            "NUL in the target",
            b"GET /a\x00 HTTP/1.1\r\nHost: probe.example\r\n\r\n",
            BAD,
        ),
        (
            "lowercase version",
            b"GET /probe http/1.1\r\nHost: probe.example\r\n\r\n",
            BAD,
        ),
        (
            "HTTP/2.0 on an HTTP/1 connection",
            b"GET /probe HTTP/2.0\r\nHost: probe.example\r\n\r\n",
            &[400, 505],
        ),
        (
            "bare CR in the request line",
            b"GET /probe\rX HTTP/1.1\r\nHost: probe.example\r\n\r\n",
            BAD,
        ),
    ];
    for (name, raw, codes) in bad {
        v.push(probe(*name, raw.to_vec(), Want::Refuse(codes)));
    }
    v
}

/// Head and body limits: 32 KiB and 100 lines of head, 1 MiB of body.
fn limit_probes() -> Vec<Probe> {
    let mut v = Vec::new();
    let big = format!("X-Big: {}\r\n", "a".repeat(33 * 1024));
    v.push(probe(
        "head over 32 KiB",
        get(big.as_bytes()),
        Want::Refuse(&[431]),
    ));
    let lines = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|i| format!("X-Line-{i}: v\r\n").into_bytes())
            .collect()
    };
    // Host is one of the lines.
    v.push(probe(
        "100 header lines",
        get(&lines(99)),
        Want::Forward(Fwd::default()),
    ));
    v.push(probe(
        "101 header lines",
        get(&lines(100)),
        Want::Refuse(&[431]),
    ));
    let max: Vec<u8> = (0..MAX_BODY).map(|i| b"0123456789abcdef"[i % 16]).collect();
    v.push(probe(
        "CL body of exactly max_request_body",
        post(format!("Content-Length: {MAX_BODY}\r\n").as_bytes(), &max),
        fwd(&max),
    ));
    v.push(probe(
        "CL over max_request_body, head only",
        post(
            format!("Content-Length: {}\r\n", MAX_BODY + 1).as_bytes(),
            b"",
        ),
        Want::Refuse(&[413]),
    ));
    v.push(probe(
        "Expect 100-continue with a CL over max_request_body",
        post(
            format!(
                "Expect: 100-continue\r\nContent-Length: {}\r\n",
                2 * MAX_BODY
            )
            .as_bytes(),
            b"",
        ),
        Want::Refuse(&[413]),
    ));
    // 64 KiB chunks, one byte past the limit in all.
    let mut wire = Vec::new();
    let mut left = MAX_BODY + 1;
    while left > 0 {
        let n = left.min(64 * 1024);
        wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        wire.extend(std::iter::repeat_n(b'z', n));
        wire.extend_from_slice(b"\r\n");
        left -= n;
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    v.push(probe(
        "chunked body over max_request_body",
        chunked(&wire),
        Want::Refuse(&[413]),
    ));
    v
}

/// Checks one probe's outcome against its [`Want`]; `Err` says what
/// differs.
fn check_probe(
    p: &Probe,
    v: &Visit,
    seen: &[Message],
    errors: &[String],
    bytes: &[u8],
    follow: bool,
) -> Result<(), String> {
    let refused = v.status().is_some_and(|s| s >= 400);
    let fwd = match &p.want {
        Want::Refuse(codes) => return check_refusal(codes, v, bytes),
        Want::Either(_) if refused => return check_refusal(EITHER_REFUSAL, v, bytes),
        Want::Either(f) | Want::Forward(f) => f,
    };
    if v.status() != Some(200) {
        return Err(format!("want forward: {}", v.describe()));
    }
    if !errors.is_empty() {
        return Err(format!("the node could not parse what it got: {errors:?}"));
    }
    let (seen, bytes) = if follow {
        let statuses: Vec<u16> = v.responses.iter().map(Message::status).collect();
        if statuses != [200, 200] {
            return Err(format!(
                "want 200 to the probe and to {:?} after it: {}",
                show(FOLLOW),
                v.describe()
            ));
        }
        let [first, after] = seen else {
            return Err(format!(
                "want the probe and {:?} at the node, it parsed {}: {:?}",
                show(FOLLOW),
                seen.len(),
                show(bytes)
            ));
        };
        if after.target() != "/after" || bytes.len() != first.len + after.len {
            return Err(format!(
                "the request after the probe did not arrive as sent: {:?}",
                show(bytes)
            ));
        }
        (&seen[..1], &bytes[..first.len])
    } else {
        (seen, bytes)
    };
    let [req] = seen else {
        return Err(format!(
            "want one request at the node, it parsed {}: {:?}",
            seen.len(),
            show(bytes)
        ));
    };
    if req.len != bytes.len() {
        return Err(format!(
            "the node got {} bytes after its one request: {:?}",
            bytes.len() - req.len,
            show(&bytes[req.len.min(bytes.len())..])
        ));
    }
    if req.framing == 0 && !fwd.body.is_empty() {
        return Err(format!("no framing header for a body: {:?}", show(bytes)));
    }
    if req.body != fwd.body {
        return Err(format!(
            "the node decoded the body {:?}, want {:?}; it got {:?}",
            show(&req.body),
            show(&fwd.body),
            show(bytes)
        ));
    }
    if let Some(t) = fwd.target {
        if req.target() != t {
            return Err(format!(
                "target {:?}, want {t:?}: {:?}",
                req.target(),
                show(bytes)
            ));
        }
    }
    if let Some(h) = fwd.host {
        if req.all("host") != [h] {
            return Err(format!(
                "Host {:?}, want [{h:?}]: {:?}",
                req.all("host"),
                show(bytes)
            ));
        }
    }
    for name in fwd.present {
        if req.all(name).is_empty() {
            return Err(format!("{name} did not reach the node: {:?}", show(bytes)));
        }
    }
    Ok(())
}

/// A refusal with one of `codes`, closed, no `100 Continue`, and nothing
/// at the node.
fn check_refusal(codes: &[u16], v: &Visit, bytes: &[u8]) -> Result<(), String> {
    let mut wrong = Vec::new();
    if !v.status().is_some_and(|s| codes.contains(&s)) {
        wrong.push(format!("want refusal {codes:?}"));
    }
    if !v.closed {
        wrong.push("connection not closed".to_string());
    }
    if !v.interim.is_empty() {
        wrong.push(format!("interim responses {:?}", v.interim));
    }
    if !bytes.is_empty() {
        wrong.push(format!(
            "the node got {} bytes: {:?}",
            bytes.len(),
            show(bytes)
        ));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{}; {}", wrong.join("; "), v.describe()))
    }
}

/// Webcluster with one group of one node at `node`, scraping off and
/// passive health checks off (a node marked down would turn every later
/// probe into a 502 that says nothing about framing).
fn proxy_for(node: SocketAddr, group_extra: &str) -> Webcluster {
    Webcluster::start(|l, a| {
        base_config(l, a, "")
            + &group_config(
                "web",
                &format!("scrape = false\nmax_fails = 0\n{group_extra}"),
                &[("n1", node, "")],
            )
    })
}

/// Runs every probe of `probes` through a fresh proxy to a strict origin;
/// fails listing every probe whose outcome differs from its [`Want`].
fn run_probes(table: &str, probes: Vec<Probe>) {
    run_probes_in(table, probes, Mode::default());
}

/// How a table is sent.
#[derive(Clone, Copy, Default)]
struct Mode {
    /// Write each probe in pieces of this many bytes.
    split: Option<usize>,
    /// Pipeline [`FOLLOW`] after each probe on the same connection (not
    /// after an HTTP/1.0 one, whose connection ends with its response).
    follow: bool,
}

/// Sent after a probe on the same connection: it must reach the node as
/// sent when the probe was forwarded, and never when it was refused.
const FOLLOW: &[u8] = b"GET /after HTTP/1.1\r\nHost: probe.example\r\n\r\n";

/// How many origin + proxy pairs share a table: each probe mostly waits for
/// the origin to settle, so a few lanes side by side cut the wall time
/// without adding CPU work.
const LANES: usize = 4;

fn run_probes_in(table: &str, probes: Vec<Probe>, mode: Mode) {
    let lane_len = probes.len().div_ceil(LANES).max(1);
    let failures: Vec<String> = std::thread::scope(|scope| {
        let lanes: Vec<_> = probes
            .chunks(lane_len)
            .map(|lane| scope.spawn(move || run_lane(lane, mode)))
            .collect();
        lanes
            .into_iter()
            .flat_map(|l| l.join().expect("probe lane"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{table}: {} of {} probes failed:\n{}",
        failures.len(),
        probes.len(),
        failures.join("\n")
    );
}

/// The probes of one lane, in order, through a proxy and origin of its own;
/// the description of each probe whose outcome differs from its [`Want`].
fn run_lane(probes: &[Probe], mode: Mode) -> Vec<String> {
    let origin = Origin::start(Kind::Strict, Vec::new());
    let wc = proxy_for(origin.addr, "");
    let mut failures = Vec::new();
    // Each probe starts where the last one settled.
    origin.settle();
    for p in probes {
        let follow = mode.follow && find(&p.raw, b"HTTP/1.0\r\n").is_none();
        let raw = if follow {
            cat(&[&p.raw, FOLLOW])
        } else {
            p.raw.clone()
        };
        let before = origin.mark();
        let v = visit_in(wc.listen, &raw, 1 + usize::from(follow), mode.split);
        origin.settle();
        let after = origin.mark();
        let (seen, errors) = {
            let r = lock(&origin.rec);
            (
                r.requests[before.requests..after.requests].to_vec(),
                r.errors[before.errors..after.errors].to_vec(),
            )
        };
        let bytes = origin.bytes_since(&before);
        debug_assert_eq!(bytes.len(), after.bytes - before.bytes);
        if let Err(why) = check_probe(p, &v, &seen, &errors, &bytes, follow) {
            failures.push(format!(
                "[{}] want {}\n    sent: {:?}\n    {why}",
                p.name,
                match &p.want {
                    Want::Refuse(c) => format!("refuse {c:?}"),
                    Want::Forward(_) => "forward".to_string(),
                    Want::Either(_) => "refuse or forward".to_string(),
                },
                show(&raw)
            ));
        }
    }
    failures
}

#[test]
fn the_request_tables_hold_over_100_probes() {
    let n = transfer_encoding_probes().len()
        + content_length_probes().len()
        + chunked_body_probes().len()
        + head_probes().len()
        + limit_probes().len();
    assert!(n >= 100, "{n} probes");
}

/// Every request probe of at most 4 KiB again, written 5 bytes at a time
/// and followed by another request on the same connection: the outcome
/// does not depend on how the proxy's reads cut the bytes, and a forwarded
/// probe ends exactly where the next request begins.
#[test]
fn request_probes_in_5_byte_writes_with_a_request_after_each() {
    let probes: Vec<Probe> = [
        transfer_encoding_probes(),
        content_length_probes(),
        chunked_body_probes(),
        head_probes(),
        limit_probes(),
    ]
    .into_iter()
    .flatten()
    .filter(|p| p.raw.len() <= 4096)
    .collect();
    run_probes_in(
        "split and followed",
        probes,
        Mode {
            split: Some(5),
            follow: true,
        },
    );
}

#[test]
fn transfer_encoding_probes_are_refused_or_forwarded_with_one_framing() {
    run_probes("Transfer-Encoding", transfer_encoding_probes());
}

#[test]
fn content_length_probes_are_refused_or_forwarded_with_one_framing() {
    run_probes("Content-Length", content_length_probes());
}

#[test]
fn chunked_body_probes_are_refused_or_forwarded_with_one_framing() {
    run_probes("chunked bodies", chunked_body_probes());
}

#[test]
fn head_probes_are_refused_or_forwarded_with_one_framing() {
    run_probes("heads", head_probes());
}

#[test]
fn limit_probes_are_refused_or_forwarded_with_one_framing() {
    run_probes("limits", limit_probes());
}

// ---------------------------------------------------------------- smuggling

/// Probes a lenient reader could split differently than the proxy: each
/// hides [`HIDDEN`] where the lenient origin would read a next request.
fn smuggling_probes() -> Vec<(String, Vec<u8>)> {
    let te_body = cat(&[b"0\r\n\r\n", HIDDEN]);
    let cl_te = |te_line: &[u8]| {
        let fields = cat(&[
            format!("Content-Length: {}\r\n", te_body.len()).as_bytes(),
            te_line,
        ]);
        post(&fields, &te_body)
    };
    let mut v: Vec<(String, Vec<u8>)> = Vec::new();
    // CL.TE: the proxy reads Content-Length, the origin reads chunked.
    let te_lines: &[&[u8]] = &[
        b"Transfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: xchunked\r\n",
        b"Transfer-Encoding: chunkedx\r\n",
        b"Transfer-Encoding: identity\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Transfer-Encoding:\r\n",
        b"Transfer-Encoding: \x0bchunked\r\n",
        b"Transfer-Encoding : chunked\r\n",
        b"\x0bTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: \"chunked\"\r\n",
        b"Transfer-Encoding: chunked, identity\r\n",
        b"X-Pad: x\r\n Transfer-Encoding: chunked\r\n",
        b"X-Pad: x\nTransfer-Encoding: chunked\r\n",
    ];
    for line in te_lines {
        v.push((format!("CL.TE with {:?}", show(line)), cl_te(line)));
    }
    v.push((
        "CL.TE on HTTP/1.0".into(),
        post_v(
            "1.0",
            format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n",
                te_body.len()
            )
            .as_bytes(),
            &te_body,
        ),
    ));
    // The first Content-Length is 0 (or empty) to the origin.
    for first in [&b"0"[..], b"", b"0, 0", b"00"] {
        let fields = cat(&[
            b"Content-Length: ",
            first,
            b"\r\n",
            format!("Content-Length: {}\r\n", HIDDEN.len()).as_bytes(),
        ]);
        v.push((
            format!("CL {:?} then CL {}", show(first), HIDDEN.len()),
            post(&fields, HIDDEN),
        ));
    }
    v.push((
        format!("CL 0, {}", HIDDEN.len()),
        post(
            format!("Content-Length: 0, {}\r\n", HIDDEN.len()).as_bytes(),
            HIDDEN,
        ),
    ));
    // Chunk sizes the lenient origin reads as 5 (wrapping) or 0.
    let wrapped = cat(&[b"10000000000000005\r\nhello\r\n0\r\n\r\n", HIDDEN]);
    v.push(("chunk size 2^64 + 5".into(), chunked(&wrapped)));
    let x_size = cat(&[b"0x5\r\nhello\r\n0\r\n\r\n", HIDDEN]);
    v.push(("chunk size 0x5".into(), chunked(&x_size)));
    // The lenient origin ends the size line at the bare LF: size 0 and the
    // hidden request right after; a reader of CRLF lines sees an extension.
    let lf_ext = cat(&[b"0;a\n\r\n", HIDDEN, b"\r\n5\r\nhello\r\n0\r\n\r\n"]);
    v.push(("bare LF in a chunk extension".into(), chunked(&lf_ext)));
    v
}

#[test]
fn lenient_origin_is_smuggled_to_directly_so_the_test_has_teeth() {
    let origin = Origin::start(Kind::Lenient, Vec::new());
    let raw = cat(&[
        &smuggling_probes()[0].1,
        b"GET /second HTTP/1.1\r\nHost: probe.example\r\n\r\n",
    ]);
    let v = visit(origin.addr, &raw, 3);
    origin.settle();
    let lines = lock(&origin.rec).lines.clone();
    assert!(
        lines.iter().any(|l| l.contains("/server-status")),
        "the lenient origin did not see the hidden request: {lines:?}, {}",
        v.describe()
    );
}

#[test]
fn a_lenient_origin_never_parses_a_request_the_proxy_did_not_forward() {
    let origin = Origin::start(Kind::Lenient, Vec::new());
    let wc = proxy_for(origin.addr, "upstream_keepalive = \"on\"");
    let probes = smuggling_probes();
    let mut failures = Vec::new();
    for (name, raw) in &probes {
        origin.settle();
        let before = origin.mark();
        let bytes = cat(&[raw, b"GET /second HTTP/1.1\r\nHost: probe.example\r\n\r\n"]);
        let v = visit(wc.listen, &bytes, 2);
        origin.settle();
        let after = origin.mark();
        let lines = lock(&origin.rec).lines[before.lines..after.lines].to_vec();
        let forwarded = v
            .responses
            .iter()
            .filter(|r| r.all("x-origin") == ["lenient"])
            .count();
        let stray = lines
            .iter()
            .filter(|l| !l.starts_with("POST /probe ") && !l.starts_with("GET /second "))
            .count();
        if lines.len() != forwarded || stray > 0 || lines.len() > 2 {
            failures.push(format!(
                "[{name}]\n    sent: {:?}\n    the origin parsed {:?} ({} new connections); the visitor got {forwarded} answers from it; {}",
                show(&bytes),
                lines,
                after.conns - before.conns,
                v.describe()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} smuggling probes reached the lenient origin as another request:\n{}",
        failures.len(),
        probes.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------- responses

/// A raw response head (status 200) with `fields`, then `body`.
fn response(fields: &[u8], body: &[u8]) -> Vec<u8> {
    cat(&[b"HTTP/1.1 200 OK\r\n", fields, b"\r\n", body])
}

/// The marker in every bad body: none of it may reach the visitor.
const MARK: &[u8] = b"SMUGGLE!";

fn malformed_responses() -> Vec<(&'static str, Vec<u8>)> {
    let chunk_mark = cat(&[b"8\r\n", MARK, b"\r\n0\r\n\r\n"]);
    let te = |value: &[u8]| response(&cat(&[b"Transfer-Encoding: ", value, b"\r\n"]), &chunk_mark);
    let bad_chunk = |line: &[u8]| {
        response(
            b"Transfer-Encoding: chunked\r\n",
            &cat(&[line, b"\r\n", MARK, b"\r\n0\r\n\r\n"]),
        )
    };
    vec![
        (
            "CL on two equal lines",
            response(b"Content-Length: 8\r\nContent-Length: 8\r\n", MARK),
        ),
        (
            "CL on two different lines",
            response(b"Content-Length: 8\r\nContent-Length: 7\r\n", MARK),
        ),
        ("CL listed", response(b"Content-Length: 8, 8\r\n", MARK)),
        ("CL empty", response(b"Content-Length:\r\n", MARK)),
        ("CL +8", response(b"Content-Length: +8\r\n", MARK)),
        ("CL 0x8", response(b"Content-Length: 0x8\r\n", MARK)),
        (
            "TE on two lines",
            response(
                b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                &chunk_mark,
            ),
        ),
        ("TE gzip, chunked", te(b"gzip, chunked")),
        ("TE chunked, chunked", te(b"chunked, chunked")),
        ("TE identity", te(b"identity")),
        ("TE chunkedx", te(b"chunkedx")),
        ("TE empty", te(b"")),
        (
            "CL and TE",
            response(
                b"Content-Length: 18\r\nTransfer-Encoding: chunked\r\n",
                &chunk_mark,
            ),
        ),
        (
            "TE and CL",
            response(
                b"Transfer-Encoding: chunked\r\nContent-Length: 18\r\n",
                &chunk_mark,
            ),
        ),
        ("chunk size with a space inside", bad_chunk(b"0 8")),
        ("chunk size with a trailing space", bad_chunk(b"8 ")),
        ("CTL in a chunk extension", bad_chunk(b"8;a=\x01")),
        ("NUL in a chunk extension", bad_chunk(b"8;a\x00")),
        ("bare LF in a chunk extension", bad_chunk(b"8;a\nb")),
        (
            "empty chunk-size line",
            response(
                b"Transfer-Encoding: chunked\r\n",
                &cat(&[b"\r\n8\r\n", MARK, b"\r\n0\r\n\r\n"]),
            ),
        ),
        ("non-hex chunk size", bad_chunk(b"8g")),
        ("0x chunk size", bad_chunk(b"0x8")),
        (
            "chunk size overflow",
            bad_chunk(b"10000000000000000000000000000000008"),
        ),
        ("17 hex digits", bad_chunk(b"00000000000000008")),
        ("bare CR in a chunk extension", bad_chunk(b"8;a\rb")),
        (
            "chunk-size line ended by LF",
            response(
                b"Transfer-Encoding: chunked\r\n",
                &cat(&[b"8\n", MARK, b"\r\n0\r\n\r\n"]),
            ),
        ),
    ]
}

/// A GET of `/r/<i>` through `wc` to the scripted `origin`, `Connection:
/// close`; `Err` when the origin never got it (whatever the visitor got
/// then says nothing about the scripted response).
fn get_scripted(wc: &Webcluster, origin: &Origin, i: usize) -> Result<Visit, String> {
    let raw = format!("GET /r/{i} HTTP/1.1\r\nHost: probe.example\r\nConnection: close\r\n\r\n");
    let before = origin.mark();
    let v = visit(wc.listen, raw.as_bytes(), 1);
    origin.settle();
    let lines = lock(&origin.rec).lines[before.lines..].to_vec();
    if lines != [format!("GET /r/{i} HTTP/1.1")] {
        return Err(format!(
            "the node got {lines:?}, not this request; {}",
            v.describe()
        ));
    }
    Ok(v)
}

/// Chunked responses that go bad after a good first chunk: the proxy may
/// have sent the head by then, so a 502 or a response cut short (closed
/// before its last chunk) will do, but never a complete response and never
/// any byte of the bad chunk.
fn late_malformed_responses() -> Vec<(&'static str, Vec<u8>)> {
    let late = |line: &[u8]| {
        response(
            b"Transfer-Encoding: chunked\r\n",
            &cat(&[b"5\r\nhello\r\n", line, b"\r\n", MARK, b"\r\n0\r\n\r\n"]),
        )
    };
    vec![
        ("second size line with a space inside", late(b"0 8")),
        ("second size line empty", late(b"")),
        ("bare LF in the second extension", late(b"8;a\nb")),
        ("second size overflowing", late(b"10000000000000008")),
        (
            "no CRLF after the second chunk",
            response(
                b"Transfer-Encoding: chunked\r\n",
                &cat(&[b"5\r\nhello\r\n8\r\n", MARK, b"XX0\r\n\r\n"]),
            ),
        ),
    ]
}

#[test]
fn malformed_framing_from_a_node_after_a_good_chunk_never_completes_a_response() {
    let cases = late_malformed_responses();
    let origin = Origin::start(
        Kind::Scripted,
        cases.iter().map(|(_, r)| r.clone()).collect(),
    );
    let wc = proxy_for(origin.addr, "upstream_keepalive = \"off\"");
    let mut failures = Vec::new();
    for (i, (name, raw)) in cases.iter().enumerate() {
        let v = match get_scripted(&wc, &origin, i) {
            Ok(v) => v,
            Err(why) => {
                failures.push(format!("[{name}]\n    {why}"));
                continue;
            }
        };
        let cut_short = v.responses.is_empty()
            && v.closed
            && v.error
                .as_deref()
                .is_some_and(|e| e.contains("closed within"));
        if !(v.status() == Some(502) || cut_short) || find(&v.raw, MARK).is_some() {
            failures.push(format!(
                "[{name}]\n    node sent: {:?}\n    want 502 or a response cut short, without {:?}; {}",
                show(raw),
                show(MARK),
                v.describe()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} late malformed responses were completed or leaked:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn malformed_framing_from_a_node_gives_the_visitor_a_502_and_none_of_the_body() {
    let cases = malformed_responses();
    let origin = Origin::start(
        Kind::Scripted,
        cases.iter().map(|(_, r)| r.clone()).collect(),
    );
    let wc = proxy_for(origin.addr, "upstream_keepalive = \"off\"");
    let mut failures = Vec::new();
    for (i, (name, raw)) in cases.iter().enumerate() {
        let v = match get_scripted(&wc, &origin, i) {
            Ok(v) => v,
            Err(why) => {
                failures.push(format!("[{name}]\n    {why}"));
                continue;
            }
        };
        if v.status() != Some(502) || find(&v.raw, MARK).is_some() {
            failures.push(format!(
                "[{name}]\n    node sent: {:?}\n    want 502 without {:?}; {}",
                show(raw),
                show(MARK),
                v.describe()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} malformed responses were not turned into a clean 502:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn valid_framing_from_a_node_reaches_the_visitor_with_one_framing_header() {
    let cases: Vec<(&str, Vec<u8>, &[u8])> = vec![
        (
            "Content-Length",
            response(b"Content-Length: 5\r\n", b"hello"),
            b"hello",
        ),
        (
            "chunked with extensions and a trailer",
            response(
                b"Transfer-Encoding: chunked\r\n",
                b"5;ext=1\r\nhello\r\n6;x=\"y\"\r\n world\r\n0;last\r\nX-Trailer: t\r\n\r\n",
            ),
            b"hello world",
        ),
        (
            "chunked in CHUNKED",
            response(
                b"Transfer-Encoding: CHUNKED\r\n",
                b"5\r\nhello\r\n0\r\n\r\n",
            ),
            b"hello",
        ),
        (
            "chunked with leading zeros",
            response(
                b"Transfer-Encoding: chunked\r\n",
                b"005\r\nhello\r\n0000\r\n\r\n",
            ),
            b"hello",
        ),
        (
            "delimited by the close",
            response(b"Connection: close\r\n", b"hello"),
            b"hello",
        ),
        (
            "body holding CRLF and a last chunk",
            response(b"Content-Length: 7\r\n", b"0\r\n\r\nab"),
            b"0\r\n\r\nab",
        ),
    ];
    let origin = Origin::start(
        Kind::Scripted,
        cases.iter().map(|(_, r, _)| r.clone()).collect(),
    );
    let wc = proxy_for(origin.addr, "upstream_keepalive = \"off\"");
    let mut failures = Vec::new();
    for (i, (name, raw, want)) in cases.iter().enumerate() {
        let v = match get_scripted(&wc, &origin, i) {
            Ok(v) => v,
            Err(why) => {
                failures.push(format!("[{name}]\n    {why}"));
                continue;
            }
        };
        let ok = match v.responses.first() {
            Some(r) => {
                r.status() == 200
                    && r.framing == 1
                    && r.body == *want
                    && v.error.is_none()
                    && find(&v.raw, b"ext=").is_none()
                    && find(&v.raw, b"X-Trailer").is_none()
            }
            None => false,
        };
        if !ok {
            failures.push(format!(
                "[{name}]\n    node sent: {:?}\n    want 200, one framing header, body {:?}, no extension or trailer; {}",
                show(raw),
                show(want),
                v.describe()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} valid responses did not arrive as they should:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
