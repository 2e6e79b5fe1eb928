//! The header lines of a head, kept as the bytes received plus the offsets
//! of each name and value (no header map, no copies), and the reading of
//! list-valued headers.

/// The header lines of a head, as byte ranges of the head's own copy.
#[derive(Debug, Default)]
pub struct Fields {
    raw: Vec<u8>,
    lines: Vec<[u32; 4]>,
}

impl Fields {
    pub(super) fn fill(&mut self, head: &[u8], headers: &[httparse::Header<'_>]) {
        self.raw.clear();
        self.raw.extend_from_slice(head);
        self.lines.clear();
        self.lines.reserve_exact(headers.len());
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

    /// Start anew with `prefix` (a request target) as the first raw
    /// bytes, and no lines: its range.
    pub(super) fn start(&mut self, prefix: &[u8]) -> (u32, u32) {
        self.raw.clear();
        self.lines.clear();
        self.raw.extend_from_slice(prefix);
        (0, prefix.len() as u32)
    }

    /// Room for `bytes` more bytes of names and values and `lines` more
    /// lines.
    pub(super) fn reserve(&mut self, bytes: usize, lines: usize) {
        self.raw.reserve(bytes);
        self.lines.reserve(lines);
    }

    /// Add a header line after the others.
    pub(super) fn push(&mut self, name: &[u8], value: &[u8]) {
        let at = |raw: &Vec<u8>| raw.len() as u32;
        let name_at = at(&self.raw);
        self.raw.extend_from_slice(name);
        let value_at = at(&self.raw);
        self.raw.extend_from_slice(value);
        self.lines
            .push([name_at, value_at, value_at, at(&self.raw)]);
    }

    pub(super) fn slice(&self, from: u32, to: u32) -> &[u8] {
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

    /// The non-empty elements of the comma-separated list header `name`.
    pub fn tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .map(trim_ows)
            .filter(|t| !t.is_empty())
    }

    /// The bytes the lines take (names and values, without separators):
    /// with room per line, what a copy of the head needs.
    pub fn byte_len(&self) -> usize {
        self.raw.len()
    }

    /// How many header lines the head has.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// `v` without the optional whitespace (SP and HTAB only, RFC 9110 5.6.3)
/// around it. Other bytes (vertical tab, form feed) are not whitespace to
/// HTTP and stay, so that `\x0bchunked` is not read as `chunked`.
pub fn trim_ows(v: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !is_ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &v[start..end]
}

/// The names of the headers a `Connection` header lists (to be dropped
/// with it, RFC 9110 7.6.1), except those no sender may have dropped: the
/// message's framing, `Host`, and the headers the proxy writes itself.
pub fn connection_named(fields: &Fields) -> impl Iterator<Item = &[u8]> {
    fields
        .tokens("connection")
        .filter(|t| !NEVER_NAMED.iter().any(|n| t.eq_ignore_ascii_case(n)))
}

/// The names a head's `Connection` header lists ([`connection_named`]),
/// read once for the whole head instead of once per header line (a head's
/// lines times its lines otherwise: thousands of instructions for a
/// `Connection: keep-alive` head of ten lines). Up to [`NAMED_INLINE`] are
/// kept; a head that lists more is read again per line, as before.
pub struct ConnectionNamed<'a> {
    fields: &'a Fields,
    names: [&'a [u8]; NAMED_INLINE],
    len: usize,
    more: bool,
}

/// The names a [`ConnectionNamed`] keeps without reading the head again.
pub const NAMED_INLINE: usize = 4;

impl<'a> ConnectionNamed<'a> {
    pub fn of(fields: &'a Fields) -> ConnectionNamed<'a> {
        let mut named = ConnectionNamed {
            fields,
            names: [&[]; NAMED_INLINE],
            len: 0,
            more: false,
        };
        for name in connection_named(fields) {
            if named.len == NAMED_INLINE {
                named.more = true;
                break;
            }
            named.names[named.len] = name;
            named.len += 1;
        }
        named
    }

    /// Whether the `Connection` header names `name` (any case).
    pub fn contains(&self, name: &[u8]) -> bool {
        if self.more {
            return named_in(name, connection_named(self.fields));
        }
        named_in(name, self.names[..self.len].iter().copied())
    }
}

/// Headers that a `Connection` header cannot remove.
const NEVER_NAMED: [&[u8]; 9] = [
    b"host",
    b"content-length",
    b"transfer-encoding",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-port",
    b"x-forwarded-host",
    b"x-real-ip",
    b"forwarded",
];

/// Whether `name` is one of `names` (any case).
pub fn named_in<'a>(name: &[u8], mut names: impl Iterator<Item = &'a [u8]>) -> bool {
    names.any(|n| n.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_names_are_read_once_and_all_of_them_count() {
        let mut head = crate::proxy::http1::ResponseHead::default();
        let text =
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-A\r\nconnection: x-b,, Host\r\n\r\n";
        head.parse(text.as_bytes(), &crate::proxy::http1::Limits::default())
            .unwrap()
            .unwrap();
        let named = ConnectionNamed::of(&head.fields);
        for name in [&b"keep-alive"[..], b"x-a", b"X-B"] {
            assert!(named.contains(name));
        }
        assert!(!named.contains(b"host"));
        assert!(!named.contains(b"x-c"));
        // More names than kept inline: each is still found.
        let text = "HTTP/1.1 200 OK\r\nConnection: a, b, c, d, e, f\r\n\r\n";
        head.parse(text.as_bytes(), &crate::proxy::http1::Limits::default())
            .unwrap()
            .unwrap();
        let named = ConnectionNamed::of(&head.fields);
        for name in [&b"a"[..], b"d", b"E", b"f"] {
            assert!(named.contains(name));
        }
        assert!(!named.contains(b"g"));
    }

    #[test]
    fn optional_whitespace_is_space_and_tab_only() {
        assert_eq!(trim_ows(b" \tchunked \t"), b"chunked");
        assert_eq!(trim_ows(b"\x0bchunked"), b"\x0bchunked");
        assert_eq!(trim_ows(b"  "), b"");
        assert_eq!(trim_ows(b""), b"");
    }
}
