//! HTTP/1.x on the wire, for both sides of the proxy, split by seam as
//! hyper's `proto/h1` is: buffered I/O with timeouts (`io`), header lines
//! (`fields`), heads (`head`), the one decision of a body's length
//! (`framing`), and bodies (`body`).
//!
//! A head is parsed in place by `httparse` and kept as the bytes received
//! plus the offsets of its parts, so its header lines go on to the other
//! side as those bytes, minus the hop-by-hop ones and the framing lines,
//! plus the proxy's own: no header map is built. Each line's name is
//! recognised once, as the head is parsed, when it is one the proxy reads
//! or drops (`fields::Known`), and the `Connection` options are read then. The framing the next hop
//! gets is always one header the proxy wrote from its own decision, and a
//! chunked body is chunked anew (RFC 9112 6, 7; see `framing`).

mod body;
mod fields;
pub mod framing;
mod head;
mod io;

pub use body::{chunk_size_line, forward, forward_body, BadChunk, Body, Chunk, Recode};
pub use fields::{
    connection_named, named_in, trim_ows, ConnectionNamed, ConnectionOption, Fields, Known,
};
pub use framing::{Declared, Framing, Outgoing};
pub use head::{
    empty_lines, valid_authority, HeadEnd, Limits, RequestHead, ResponseHead, DEFAULT_MAX_HEAD,
    DEFAULT_MAX_HEADERS,
};
pub use io::{consume, io_error, Io};

/// Why a head could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x, a malformed line, a bad target or `Host`.
    Malformed,
    /// Longer than the head limit or with more header lines than allowed.
    TooLarge,
    /// A framing the proxy refuses to guess about (a `Transfer-Encoding`
    /// list, `Content-Length` with `Transfer-Encoding`, lengths that are
    /// not one plain number, several `Host`s).
    Ambiguous,
    /// A transfer coding other than chunked.
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

/// The visitor's protocol version: HTTP/1.0, HTTP/1.1, or HTTP/2 (a
/// request that came as an HTTP/2 stream, see `proxy::http2`; nodes are
/// always spoken to in HTTP/1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
    Http2,
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
            Version::Http2 => "HTTP/2.0",
        }
    }
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

#[cfg(test)]
mod tests;
