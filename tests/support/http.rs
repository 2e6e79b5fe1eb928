//! A tiny blocking HTTP/1.1 client for tests, over `std::net::TcpStream`.
//!
//! * [`http_get`] / [`http_request`]: one request on a fresh connection
//!   (`Connection: close`), body read by Content-Length, chunked coding or EOF.
//! * [`http_get_from`]: the same from a chosen local address (e.g. 127.0.0.2),
//!   so tests can present several client IPs on loopback.
//! * [`KeepAliveClient`]: several requests on one connection.
//!
//! Every socket has connect/read/write timeouts ([`TIMEOUT`]), so a hung
//! server makes a test fail with an error instead of hanging it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// Connect, read and write timeout of every client socket.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Largest header block / chunk-size line accepted, to stay bounded on garbage.
const MAX_LINE: usize = 64 * 1024;

/// A parsed HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Header fields in the order received, names as sent by the server.
    pub headers: Vec<(String, String)>,
    /// The (de-chunked) body, decoded lossily as UTF-8.
    pub body: String,
}

impl Response {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Value of `name` in a `/headers` echo body (`Name: value` lines, as
    /// printed by the test nodes' `/headers` endpoint), case-insensitive.
    pub fn echoed(&self, name: &str) -> Option<&str> {
        self.body.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim_start_matches(' '))
        })
    }
}

/// Opens a TCP connection to `addr` with the standard timeouts.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    configure(&stream)?;
    Ok(stream)
}

/// Opens a TCP connection to `addr` whose local end is bound to `local_ip`
/// (any port), e.g. 127.0.0.2 to be a different client on loopback.
pub fn connect_from(local_ip: IpAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::new(local_ip, 0).into())?;
    socket.connect_timeout(&addr.into(), TIMEOUT)?;
    let stream: TcpStream = socket.into();
    configure(&stream)?;
    Ok(stream)
}

fn configure(stream: &TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    stream.set_nodelay(true)
}

/// `GET path` on a fresh connection (`Connection: close`). `headers` are sent
/// as given; a `Host` header is added unless one is among them.
pub fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
    http_request(addr, "GET", path, headers, b"")
}

/// [`http_get`] from the local address `local_ip` (see [`connect_from`]).
pub fn http_get_from(
    local_ip: IpAddr,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<Response> {
    let stream = connect_from(local_ip, addr)?;
    one_shot(stream, addr, "GET", path, headers, b"")
}

/// Any method on a fresh connection (`Connection: close`), with an optional
/// body (a Content-Length is sent when the body is non-empty or the method is
/// POST/PUT/PATCH).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let stream = connect(addr)?;
    one_shot(stream, addr, method, path, headers, body)
}

fn one_shot(
    stream: TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let mut writer = stream.try_clone()?;
    write_request(&mut writer, addr, method, path, headers, body, true)?;
    let mut reader = BufReader::new(stream);
    read_response(&mut reader, method)
}

/// The body of `GET path` from `addr` (a status page, typically), whatever the
/// status code. Panics on an I/O error, naming the address and path.
pub fn capture_status(addr: SocketAddr, path: &str) -> String {
    match http_get(addr, path, &[]) {
        Ok(resp) => resp.body,
        Err(e) => panic!("GET http://{addr}{path} failed: {e}"),
    }
}

/// Several requests on one HTTP/1.1 connection (keep-alive).
#[derive(Debug)]
pub struct KeepAliveClient {
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
}

impl KeepAliveClient {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        Ok(Self {
            reader: BufReader::new(connect(addr)?),
            addr,
        })
    }

    /// Connects to `addr` from the local address `local_ip`.
    pub fn connect_from(local_ip: IpAddr, addr: SocketAddr) -> io::Result<Self> {
        Ok(Self {
            reader: BufReader::new(connect_from(local_ip, addr)?),
            addr,
        })
    }

    /// The local address of the connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.reader.get_ref().local_addr()
    }

    /// `GET path` on this connection.
    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
        self.request("GET", path, headers, b"")
    }

    /// Any request on this connection. No `Connection` header is added (HTTP/1.1
    /// keeps the connection open by default); pass `("Connection", "close")` to
    /// end it. An error of kind `UnexpectedEof` means the server closed it.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let addr = self.addr;
        write_request(
            self.reader.get_mut(),
            addr,
            method,
            path,
            headers,
            body,
            false,
        )?;
        read_response(&mut self.reader, method)
    }

    /// True when the server has closed the connection (EOF is readable now).
    /// Waits at most `wait` for it.
    pub fn is_closed_by_peer(&mut self, wait: Duration) -> bool {
        let stream = self.reader.get_ref();
        if stream
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .is_err()
        {
            return true;
        }
        let closed = match self.reader.fill_buf() {
            Ok(buf) => buf.is_empty(),
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        };
        let _ = self.reader.get_ref().set_read_timeout(Some(TIMEOUT));
        closed
    }
}

fn write_request(
    w: &mut impl Write,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) -> io::Result<()> {
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !has("host") {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if close && !has("connection") {
        req.push_str("Connection: close\r\n");
    }
    let wants_length = !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH");
    if wants_length && !has("content-length") && !has("transfer-encoding") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    w.write_all(&bytes)?;
    w.flush()
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut buf = Vec::new();
    let n = r.take(MAX_LINE as u64).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a complete response",
        ));
    }
    if buf.last() != Some(&b'\n') {
        return Err(invalid("line too long or truncated"));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| invalid("non-UTF-8 header line"))
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Reads one response (skipping interim 1xx responses) from `r`.
pub fn read_response(r: &mut impl BufRead, method: &str) -> io::Result<Response> {
    read_response_bytes(r, method).map(|(resp, _)| resp)
}

/// [`read_response`], also returning the (de-chunked) body as raw bytes,
/// for binary bodies that `Response::body` (lossy UTF-8) would alter.
pub fn read_response_bytes(r: &mut impl BufRead, method: &str) -> io::Result<(Response, Vec<u8>)> {
    loop {
        let status_line = read_line(r)?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(invalid(&format!("bad status line: {status_line:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(&format!("bad status line: {status_line:?}")))?;
        let mut headers = Vec::new();
        let mut total = 0usize;
        loop {
            let line = read_line(r)?;
            if line.is_empty() {
                break;
            }
            total += line.len();
            if total > MAX_LINE {
                return Err(invalid("header block too large"));
            }
            let (n, v) = line
                .split_once(':')
                .ok_or_else(|| invalid(&format!("bad header line: {line:?}")))?;
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let mut resp = Response {
            status,
            headers,
            body: String::new(),
        };
        let no_body = method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&status)
            || status == 204
            || status == 304;
        let mut raw = Vec::new();
        if !no_body {
            raw = read_body(r, &resp)?;
            resp.body = String::from_utf8_lossy(&raw).into_owned();
        }
        return Ok((resp, raw));
    }
}

fn read_body(r: &mut impl BufRead, resp: &Response) -> io::Result<Vec<u8>> {
    let chunked = resp
        .header_all("transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut body = Vec::new();
        loop {
            let line = read_line(r)?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| invalid(&format!("bad chunk size line: {line:?}")))?;
            if size == 0 {
                // Trailer fields, then the final empty line.
                while !read_line(r)?.is_empty() {}
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            if !read_line(r)?.is_empty() {
                return Err(invalid("chunk not followed by CRLF"));
            }
        }
    }
    if let Some(len) = resp.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| invalid(&format!("bad Content-Length: {len:?}")))?;
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        return Ok(body);
    }
    let mut body = Vec::new();
    r.read_to_end(&mut body)?;
    Ok(body)
}

/// One raw client connection for protocol tests: the test writes exactly the
/// bytes it wants (several requests in one write, a request head without
/// its body, garbage) and reads what comes back. Every read and write is
/// bounded by [`TIMEOUT`].
#[derive(Debug)]
pub struct RawConn {
    reader: BufReader<TcpStream>,
}

impl RawConn {
    /// Connects to `addr` (with the standard timeouts).
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        Ok(Self {
            reader: BufReader::new(connect(addr)?),
        })
    }

    /// Writes `bytes` in one `write_all`.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let stream = self.reader.get_mut();
        stream.write_all(bytes)?;
        stream.flush()
    }

    /// Reads one complete response to a `method` request (interim 1xx
    /// responses other than 101 are skipped), with its raw body.
    pub fn response(&mut self, method: &str) -> io::Result<(Response, Vec<u8>)> {
        read_response_bytes(&mut self.reader, method)
    }

    /// Reads one response head (status line and fields, up to the empty
    /// line), whatever its status, 1xx included; no body is read.
    pub fn head(&mut self) -> io::Result<(String, Vec<(String, String)>)> {
        let status_line = read_line(&mut self.reader)?;
        let mut fields = Vec::new();
        loop {
            let line = read_line(&mut self.reader)?;
            if line.is_empty() {
                return Ok((status_line, fields));
            }
            let (n, v) = line
                .split_once(':')
                .ok_or_else(|| invalid(&format!("bad header line: {line:?}")))?;
            fields.push((n.trim().to_string(), v.trim().to_string()));
        }
    }

    /// Reads exactly `n` bytes.
    pub fn read_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; n];
        self.reader.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// Reads until the peer closes the connection (EOF, or a reset after
    /// its last byte) and returns what came before. An error means the
    /// connection was still open after [`TIMEOUT`] (or another I/O error).
    pub fn read_until_closed(&mut self) -> io::Result<Vec<u8>> {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => Ok(rest),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(rest),
            Err(e) => Err(e),
        }
    }

    /// True when nothing is readable within `wait`: no stray bytes (and no
    /// EOF) follow what was read so far.
    pub fn nothing_pending(&mut self, wait: Duration) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        let stream = self.reader.get_ref();
        if stream.set_read_timeout(Some(wait)).is_err() {
            return false;
        }
        let quiet = match self.reader.fill_buf() {
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        };
        let _ = self.reader.get_ref().set_read_timeout(Some(TIMEOUT));
        quiet
    }
}
