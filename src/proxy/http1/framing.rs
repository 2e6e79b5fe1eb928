//! The one place that decides how long a message body is (RFC 9112 6), for
//! a visitor's request and a node's response alike, and refuses every
//! message whose length is not certain.
//!
//! Request smuggling lives in the gap between two readers of the same
//! bytes. The proxy closes it from both sides: what it accepts is only what
//! every reader reads the same way (exactly one `Transfer-Encoding:
//! chunked`, or one plain decimal `Content-Length`, equal duplicates
//! collapsed), and the next hop never gets the framing lines received, only
//! the one the proxy writes from this decision (`Outgoing`).

use http::Method;

use super::fields::{trim_ows, Fields, Known};
use super::{HeadError, Version};

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (0: no body).
    Length(u64),
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// The largest `Content-Length` or chunk size accepted: 2^63-1, what every
/// implementation can hold in a signed 64-bit length.
pub const MAX_LENGTH: u64 = i64::MAX as u64;

/// What a message's framing headers say, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Declared {
    /// The one `Content-Length` value (equal duplicates collapsed).
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: chunked`, alone.
    pub chunked: bool,
}

/// Read and check the framing headers: one `Transfer-Encoding` line whose
/// only coding is `chunked`, and one `Content-Length` line of one plain
/// decimal number; with `duplicates`, several such lines of the same number
/// are taken as one (RFC 9112 6.3 lets a recipient; HAProxy does it for
/// requests; nginx refuses them from its upstreams, as the proxy does).
pub fn declared(fields: &Fields, duplicates: bool) -> Result<Declared, HeadError> {
    let mut out = Declared::default();
    if fields.all(Known::TransferEncoding).nth(1).is_some() {
        // On two lines it is a list (`chunked, chunked`, `gzip, chunked`):
        // refused as a list is.
        return Err(HeadError::Ambiguous);
    }
    if let Some(value) = fields.first(Known::TransferEncoding) {
        let codings = || value.split(|&b| b == b',').map(trim_ows);
        let chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
        let count = codings().count();
        if count == 1 && codings().all(chunked) {
            out.chunked = true;
        } else if count > 1 || codings().any(|c| c.is_empty() || chunked(c)) {
            // Empty, or a list (`gzip, chunked`, `chunked, chunked`,
            // `,chunked`): a 400, since readers disagree on where it ends.
            return Err(HeadError::Ambiguous);
        } else {
            // One coding the proxy does not know (`gzip`, `identity`).
            return Err(HeadError::UnknownCoding);
        }
    }
    let mut lines = 0;
    for value in fields.all(Known::ContentLength) {
        lines += 1;
        // One plain number per line: a list (`5, 5`, `5,`) is refused, as
        // nginx and hyper refuse it.
        let n = parse_decimal(trim_ows(value)).ok_or(HeadError::Ambiguous)?;
        if out.content_length.is_some_and(|l| l != n) || (lines > 1 && !duplicates) {
            return Err(HeadError::Ambiguous);
        }
        out.content_length = Some(n);
    }
    Ok(out)
}

/// One plain decimal number (1*DIGIT) within [`MAX_LENGTH`]; no sign, no
/// space, no other base.
pub fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    (n <= MAX_LENGTH).then_some(n)
}

/// The body framing of a visitor's request (RFC 9112 6.1–6.3): a request
/// without framing headers has no body and never runs until close;
/// `Transfer-Encoding` with a `Content-Length`, or on HTTP/1.0 (which has
/// no transfer codings), is refused.
pub fn request(fields: &Fields, version: Version) -> Result<(Framing, Declared), HeadError> {
    let d = declared(fields, true)?;
    let framing = if d.chunked {
        if d.content_length.is_some() || version == Version::Http10 {
            return Err(HeadError::Ambiguous);
        }
        Framing::Chunked
    } else {
        Framing::Length(d.content_length.unwrap_or(0))
    };
    Ok((framing, d))
}

/// The body framing of a node's response with `status` to a request with
/// `method` (RFC 9112 6.3). The framing headers are checked even where they
/// frame nothing (HEAD, 1xx, 204, 304), since the declared length may go on
/// to the visitor; both `Transfer-Encoding` and `Content-Length` is refused
/// (nginx does the same), as is `Transfer-Encoding` from an HTTP/1.0 node.
pub fn response(
    fields: &Fields,
    version: Version,
    status: u16,
    method: &Method,
) -> Result<(Framing, Declared), HeadError> {
    let d = declared(fields, false)?;
    if d.chunked && (d.content_length.is_some() || version == Version::Http10) {
        return Err(HeadError::Ambiguous);
    }
    let framing = if *method == Method::HEAD
        || (100..200).contains(&status)
        || status == 204
        || status == 304
    {
        Framing::Length(0)
    } else if d.chunked {
        Framing::Chunked
    } else if let Some(n) = d.content_length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok((framing, d))
}

/// The one framing header the next hop gets, written by the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outgoing {
    /// None (a request without a body, a response that runs until close or
    /// may not have a length: 1xx, 204).
    None,
    /// `Content-Length: N`.
    Length(u64),
    /// `Transfer-Encoding: chunked` (the body is chunked anew).
    Chunked,
}

impl Outgoing {
    /// Append the header line, if any.
    pub fn put(self, out: &mut Vec<u8>) {
        match self {
            Outgoing::None => {}
            Outgoing::Length(n) => {
                out.extend_from_slice(b"Content-Length: ");
                out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Outgoing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        }
    }
}
