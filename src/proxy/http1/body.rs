//! Message bodies: following a body through the bytes as they come (its
//! length, or its chunks by the strict grammar of RFC 9112 7.1), decoding
//! it, and chunking it anew for the next hop, so that no chunk-size line,
//! extension or trailer a sender wrote ever reaches the other side.

use super::framing::{Framing, MAX_LENGTH};

/// Longest chunk-size line (with its extensions) accepted.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Most trailer bytes after the last chunk (they are read and dropped).
pub const MAX_TRAILERS: usize = 8 * 1024;
/// Most trailer fields.
const MAX_TRAILER_FIELDS: usize = 32;

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

/// A chunk-size line at the start of `buf`, by the grammar of RFC 9112 7.1
/// `1*HEXDIG *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ) CRLF`
/// read strictly: at most 16 hex digits within [`MAX_LENGTH`], whitespace
/// only around the `;` and `=` of an extension, names and values tokens or
/// quoted strings (so no control byte, no bare CR or LF), a CRLF at the
/// end.
/// `Ok(Some((line length, size)))`, or `Ok(None)` while incomplete.
pub fn chunk_size_line(buf: &[u8]) -> Result<Option<(usize, u64)>, BadChunk> {
    let digits = buf.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits > 16 {
        return Err(BadChunk);
    }
    if digits == buf.len() {
        return Ok(None);
    }
    if digits == 0 {
        return Err(BadChunk);
    }
    let size = buf[..digits].iter().fold(0u64, |n, &b| {
        let d = (b as char).to_digit(16).unwrap_or(0);
        (n << 4) | u64::from(d)
    });
    if size > MAX_LENGTH {
        return Err(BadChunk);
    }
    let mut i = digits;
    loop {
        // Whitespace (BWS) only before a `;`.
        i += bws(&buf[i..]);
        match buf.get(i) {
            None => return incomplete(buf),
            Some(b'\r') if buf[i - 1] != b' ' && buf[i - 1] != b'\t' => break,
            Some(b';') => i += 1,
            Some(_) => return Err(BadChunk),
        }
        // BWS ext-name [ BWS "=" BWS ext-val ]
        i += bws(&buf[i..]);
        let name = token(&buf[i..]);
        if name == 0 {
            return if i >= buf.len() {
                incomplete(buf)
            } else {
                Err(BadChunk)
            };
        }
        i += name;
        let after_name = i;
        i += bws(&buf[i..]);
        match buf.get(i) {
            None => return incomplete(buf),
            Some(b'=') => {
                i += 1;
                i += bws(&buf[i..]);
                let value = match buf.get(i) {
                    None => return incomplete(buf),
                    Some(b'"') => match quoted(&buf[i..])? {
                        Some(n) => n,
                        None => return incomplete(buf),
                    },
                    Some(_) => token(&buf[i..]),
                };
                if value == 0 {
                    return if i >= buf.len() {
                        incomplete(buf)
                    } else {
                        Err(BadChunk)
                    };
                }
                i += value;
            }
            // No value: back to before any whitespace, which must then be
            // followed by another `;`.
            Some(_) => i = after_name,
        }
    }
    // At the CR.
    match buf.get(i + 1) {
        None => incomplete(buf),
        Some(b'\n') if i + 2 <= MAX_CHUNK_LINE => Ok(Some((i + 2, size))),
        Some(_) => Err(BadChunk),
    }
}

/// Spaces and tabs at the start of `buf`.
fn bws(buf: &[u8]) -> usize {
    buf.iter().take_while(|&&b| b == b' ' || b == b'\t').count()
}

/// The length of the token (RFC 9110 5.6.2) at the start of `buf`.
fn token(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|&&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
        .count()
}

/// The length of the quoted-string (RFC 9110 5.6.4) at the start of `buf`,
/// `None` while incomplete.
fn quoted(buf: &[u8]) -> Result<Option<usize>, BadChunk> {
    let mut i = 1;
    loop {
        match buf.get(i) {
            None => return Ok(None),
            Some(b'"') => return Ok(Some(i + 1)),
            Some(b'\\') => match buf.get(i + 1) {
                None => return Ok(None),
                Some(&c) if c == b'\t' || (b' '..=b'~').contains(&c) || c >= 0x80 => i += 2,
                Some(_) => return Err(BadChunk),
            },
            Some(&c)
                if c == b'\t'
                    || c == b' '
                    || c == b'!'
                    || (0x23..=0x7e).contains(&c)
                    || c >= 0x80 =>
            {
                i += 1
            }
            Some(_) => return Err(BadChunk),
        }
    }
}

fn incomplete<T>(buf: &[u8]) -> Result<Option<T>, BadChunk> {
    if buf.len() >= MAX_CHUNK_LINE {
        Err(BadChunk)
    } else {
        Ok(None)
    }
}

/// The trailer section at the start of `buf` (after the last chunk):
/// `Ok(Some(length))` with its empty line, `Ok(None)` while incomplete.
/// Bounded by [`MAX_TRAILERS`] bytes and [`MAX_TRAILER_FIELDS`] fields;
/// read strictly, since trailers are dropped anyway: every line ends in
/// CRLF and holds visible ASCII, spaces and tabs only.
fn trailers(buf: &[u8]) -> Result<Option<usize>, BadChunk> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
    match httparse::parse_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete((n, _))) if n <= MAX_TRAILERS => {
            let section = &buf[..n];
            let bare_lf = section
                .iter()
                .enumerate()
                .any(|(i, &b)| b == b'\n' && (i == 0 || section[i - 1] != b'\r'));
            let odd = section
                .iter()
                .any(|&b| b >= 0x7f || (b < b' ' && !matches!(b, b'\t' | b'\r' | b'\n')));
            if bare_lf || odd {
                return Err(BadChunk);
            }
            Ok(Some(n))
        }
        Ok(httparse::Status::Partial) if buf.len() <= MAX_TRAILERS => Ok(None),
        _ => Err(BadChunk),
    }
}

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
                        Chunk::Size => match chunk_size_line(rest)? {
                            None => return Ok(pos),
                            Some((n, 0)) => {
                                pos += n;
                                *chunk = Chunk::Trailers;
                            }
                            Some((n, size)) => {
                                pos += n;
                                *chunk = Chunk::Data(size);
                            }
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
                        Chunk::Trailers => match trailers(rest)? {
                            None => return Ok(pos),
                            Some(n) => {
                                pos += n;
                                *self = Body::Done;
                            }
                        },
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

/// How a body goes on to the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recode {
    /// The bytes as they came (a length, or until close).
    Same,
    /// Decoded, then chunked anew: the chunks' data only, the proxy's own
    /// size lines, no extension, no trailer.
    Rechunk,
    /// Decoded (an HTTP/1.0 visitor, whose body then ends with the
    /// connection).
    Decode,
}

/// Follow a body through `input` as [`Body::advance`] does and append to
/// `out` what the next hop gets, per `recode`. How many bytes of `input`
/// were taken.
pub fn forward(
    body: &mut Body,
    recode: Recode,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<usize, BadChunk> {
    match recode {
        Recode::Same => {
            let n = body.advance(input, None)?;
            out.extend_from_slice(&input[..n]);
            Ok(n)
        }
        Recode::Decode => body.advance(input, Some(out)),
        Recode::Rechunk => {
            let start = out.len();
            let n = body.advance(input, Some(out))?;
            let len = out.len() - start;
            if len > 0 {
                let line = format!("{len:x}\r\n");
                out.splice(start..start, line.bytes());
                out.extend_from_slice(b"\r\n");
            }
            if body.is_done() {
                out.extend_from_slice(b"0\r\n\r\n");
            }
            Ok(n)
        }
    }
}

/// A chunked request body as the node gets it when it is streamed: see
/// [`forward`] with [`Recode::Rechunk`] (a body of any other framing goes
/// as it came).
pub fn forward_body(body: &mut Body, input: &[u8], out: &mut Vec<u8>) -> Result<usize, BadChunk> {
    let recode = if matches!(body, Body::Chunked(_)) {
        Recode::Rechunk
    } else {
        Recode::Same
    };
    forward(body, recode, input, out)
}
