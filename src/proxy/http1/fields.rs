//! The header lines of a head, kept as the bytes received plus the offsets
//! of each name and value (no header map, no copies), each line's name
//! recognised once (`Known`) for the headers the proxy reads or drops, and
//! the reading of list-valued headers.

/// The header names the proxy reads, drops or writes itself, recognised
/// once per line when a head is parsed: the framing, hop-by-hop and
/// forwarded headers are then found by comparing one byte, not by comparing
/// every line's name with each of theirs (the response head was walked
/// once per framing header, once for `Connection`, once more to copy it,
/// with a dozen name comparisons per line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Known {
    /// Any other name.
    Other,
    Host,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    Expect,
    ContentLength,
    TransferEncoding,
    XForwardedFor,
    XRealIp,
    XForwardedProto,
    XForwardedPort,
    XForwardedHost,
    Forwarded,
    /// Read for the access log only.
    Referer,
    UserAgent,
}

impl Known {
    /// The known header `name` is (any case), else `Other`: its length
    /// picks the candidates, each compared in a few word operations
    /// ([`same_name`]).
    #[inline(always)]
    pub fn of(name: &[u8]) -> Known {
        match name.len() {
            2 if same_name(name, b"te") => Known::Te,
            4 if same_name(name, b"host") => Known::Host,
            6 if same_name(name, b"expect") => Known::Expect,
            7 if same_name(name, b"upgrade") => Known::Upgrade,
            7 if same_name(name, b"trailer") => Known::Trailer,
            7 if same_name(name, b"referer") => Known::Referer,
            9 if same_name(name, b"x-real-ip") => Known::XRealIp,
            9 if same_name(name, b"forwarded") => Known::Forwarded,
            10 if same_name(name, b"connection") => Known::Connection,
            10 if same_name(name, b"keep-alive") => Known::KeepAlive,
            10 if same_name(name, b"user-agent") => Known::UserAgent,
            14 if same_name(name, b"content-length") => Known::ContentLength,
            15 if same_name(name, b"x-forwarded-for") => Known::XForwardedFor,
            16 if same_name(name, b"proxy-connection") => Known::ProxyConnection,
            16 if same_name(name, b"x-forwarded-port") => Known::XForwardedPort,
            16 if same_name(name, b"x-forwarded-host") => Known::XForwardedHost,
            17 if same_name(name, b"transfer-encoding") => Known::TransferEncoding,
            17 if same_name(name, b"x-forwarded-proto") => Known::XForwardedProto,
            _ => Known::Other,
        }
    }

    fn bit(self) -> u32 {
        1 << self as u8
    }

    /// A `Connection` header cannot remove it: the message's framing,
    /// `Host`, and the headers the proxy writes itself.
    pub fn never_named(self) -> bool {
        matches!(
            self,
            Known::Host
                | Known::ContentLength
                | Known::TransferEncoding
                | Known::XForwardedFor
                | Known::XForwardedProto
                | Known::XForwardedPort
                | Known::XForwardedHost
                | Known::XRealIp
                | Known::Forwarded
        )
    }

    /// Neither side ever forwards it (RFC 9110 7.6.1), whatever
    /// `Connection` says.
    pub fn always_dropped(self) -> bool {
        matches!(
            self,
            Known::Connection | Known::KeepAlive | Known::ProxyConnection | Known::Trailer
        )
    }
}

/// Whether `name` is `known` (lower case letters and `-`) in any case:
/// each letter of `name` with its case bit set, each `-` as it is, equals
/// `known`'s byte (exactly `eq_ignore_ascii_case` for such a `known`).
/// Without a branch per byte and with the length a constant, the compiler
/// makes it a few word-sized operations.
#[inline(always)]
fn same_name<const L: usize>(name: &[u8], known: &[u8; L]) -> bool {
    let Ok(name) = <&[u8; L]>::try_from(name) else {
        return false;
    };
    let mut diff = 0;
    for i in 0..L {
        let case = if known[i].is_ascii_lowercase() {
            0x20
        } else {
            0
        };
        diff |= (name[i] | case) ^ known[i];
    }
    diff == 0
}

/// A connection option a head's `Connection` lines may give (RFC 9110
/// 7.6.1, 9112 9.3, 9110 7.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnectionOption {
    Close = 1,
    KeepAlive = 2,
    Upgrade = 4,
}

/// In [`Fields`]'s `connection`: the lines name a header to drop with
/// them (what [`connection_named`] gives is not empty).
const NAMES_OTHERS: u8 = 8;

/// One header line: the offsets of its name and value in the head's
/// bytes, and what its name is.
#[derive(Debug, Clone, Copy)]
struct Line {
    at: [u32; 4],
    known: Known,
}

/// The header lines of a head, as byte ranges of the head's own copy.
#[derive(Debug, Default)]
pub struct Fields {
    raw: Vec<u8>,
    lines: Vec<Line>,
    /// The `Known` names among the lines, one bit each.
    seen: u32,
    /// What the `Connection` lines say, read once per head: the
    /// [`ConnectionOption`]s given, and [`NAMES_OTHERS`].
    connection: u8,
}

impl Fields {
    pub(super) fn fill(&mut self, head: &[u8], headers: &[httparse::Header<'_>]) {
        self.raw.clear();
        self.raw.extend_from_slice(head);
        self.lines.clear();
        self.lines.reserve_exact(headers.len());
        self.seen = 0;
        let base = head.as_ptr() as usize;
        for h in headers {
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            let known = Known::of(h.name.as_bytes());
            self.seen |= known.bit();
            self.lines.push(Line {
                at: [
                    name as u32,
                    (name + h.name.len()) as u32,
                    value as u32,
                    (value + h.value.len()) as u32,
                ],
                known,
            });
        }
        self.connection = self.read_connection();
    }

    /// What the `Connection` lines say (see `connection`).
    fn read_connection(&self) -> u8 {
        let mut says = 0;
        for value in self.all(Known::Connection) {
            // The usual line is one token and no space (`keep-alive`,
            // `close`): told at once, without splitting it.
            let single = connection_token(value);
            if single != UNKNOWN_TOKEN {
                says |= single;
                continue;
            }
            for token in value.split(|&b| b == b',').map(trim_ows) {
                says |= match connection_token(token) {
                    UNKNOWN_TOKEN if names_others(token) => NAMES_OTHERS,
                    UNKNOWN_TOKEN => 0,
                    known => known,
                };
            }
        }
        says
    }

    /// Whether the `Connection` lines give `option` (any case).
    pub fn connection_has(&self, option: ConnectionOption) -> bool {
        self.connection & option as u8 != 0
    }

    /// Start anew with `prefix` (a request target) as the first raw
    /// bytes, and no lines: its range.
    pub(super) fn start(&mut self, prefix: &[u8]) -> (u32, u32) {
        self.raw.clear();
        self.lines.clear();
        self.seen = 0;
        self.connection = 0;
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
        let known = Known::of(name);
        self.seen |= known.bit();
        self.lines.push(Line {
            at: [name_at, value_at, value_at, at(&self.raw)],
            known,
        });
        if known == Known::Connection {
            self.connection = self.read_connection();
        }
    }

    pub(super) fn slice(&self, from: u32, to: u32) -> &[u8] {
        &self.raw[from as usize..to as usize]
    }

    /// Every header line, as (name, value), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter_known().map(|(_, n, v)| (n, v))
    }

    /// Every header line, as (what its name is, name, value), in order.
    pub fn iter_known(&self) -> impl Iterator<Item = (Known, &[u8], &[u8])> {
        self.lines.iter().map(|l| {
            let [n0, n1, v0, v1] = l.at;
            (l.known, self.slice(n0, n1), self.slice(v0, v1))
        })
    }

    /// Append the lines `keep` keeps (told what each line's name is, and
    /// the name), each as `name: value\r\n`: the bytes `put_header`
    /// writes. A run of kept lines that are already in that form in the
    /// head (one space after the colon, CRLF: as nginx, Apache and every
    /// common client write them) is copied as one slice rather than four
    /// per line.
    pub fn put_lines(&self, out: &mut Vec<u8>, mut keep: impl FnMut(Known, &[u8]) -> bool) {
        let raw = &self.raw[..];
        let mut run = 0..0;
        for l in &self.lines {
            let [n0, n1, v0, v1] = l.at.map(|a| a as usize);
            if !keep(l.known, &raw[n0..n1]) {
                continue;
            }
            let as_written =
                raw.get(n1..v0) == Some(&b": "[..]) && raw.get(v1..v1 + 2) == Some(&b"\r\n"[..]);
            if as_written && !run.is_empty() && run.end == n0 {
                run.end = v1 + 2;
                continue;
            }
            out.extend_from_slice(&raw[run]);
            if as_written {
                run = n0..v1 + 2;
            } else {
                run = 0..0;
                super::put_header(out, &raw[n0..n1], &raw[v0..v1]);
            }
        }
        out.extend_from_slice(&raw[run]);
    }

    /// Whether a line is named `known`.
    pub fn has(&self, known: Known) -> bool {
        self.seen & known.bit() != 0
    }

    /// The values of every line named `name` (any case). A
    /// [`Known`] name is found by its mark, and not looked for at all when
    /// no line has it.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        let known = Known::of(name.as_bytes());
        self.values(known, (known == Known::Other).then_some(name.as_bytes()))
    }

    /// The values of every line named `known`, in order (none looked for
    /// when no line has it).
    pub fn all(&self, known: Known) -> impl Iterator<Item = &[u8]> {
        self.values(known, None)
    }

    /// The values of the lines named `known` and, when given, `name` (any
    /// case): the lines are walked only when one of them is `known`.
    fn values<'a>(
        &'a self,
        known: Known,
        name: Option<&'a [u8]>,
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        let lines = if self.has(known) {
            &self.lines[..]
        } else {
            &[][..]
        };
        lines
            .iter()
            .filter(move |l| {
                l.known == known
                    && name.is_none_or(|n| self.slice(l.at[0], l.at[1]).eq_ignore_ascii_case(n))
            })
            .map(move |l| self.slice(l.at[2], l.at[3]))
    }

    /// The first value of `known`.
    pub fn first(&self, known: Known) -> Option<&[u8]> {
        self.all(known).next()
    }

    /// The non-empty elements of the comma-separated list header `known`.
    pub fn tokens_of(&self, known: Known) -> impl Iterator<Item = &[u8]> {
        self.all(known)
            .flat_map(|v| v.split(|&b| b == b','))
            .map(trim_ows)
            .filter(|t| !t.is_empty())
    }

    /// Whether the comma-separated list header `known` has `token` (any
    /// case).
    pub fn has_token_of(&self, known: Known, token: &str) -> bool {
        self.tokens_of(known)
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// The first value of `name` (any case); a [`Known`] name by its mark,
    /// as [`Fields::get_all`].
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        match Known::of(name.as_bytes()) {
            Known::Other => self
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                .map(|(_, v)| v),
            known => self.first(known),
        }
    }

    /// The first value of `name`, when it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first value of `known`, when it is UTF-8 ([`Fields::get_str`]
    /// for a name recognised already: the lines are not read by name).
    pub fn first_str(&self, known: Known) -> Option<&str> {
        self.first(known).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The values of `name` as UTF-8 strings (others are skipped).
    pub fn get_all_str<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.get_all(name)
            .filter_map(|v| std::str::from_utf8(v).ok())
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
/// with it, RFC 9110 7.6.1), except those no sender may have dropped
/// ([`Known::never_named`]: the message's framing, `Host`, and the headers
/// the proxy writes itself) and those dropped anyway
/// ([`Known::always_dropped`]: `Connection: keep-alive` names nothing else
/// to drop).
pub fn connection_named(fields: &Fields) -> impl Iterator<Item = &[u8]> {
    fields
        .tokens_of(Known::Connection)
        .filter(|t| names_others(t))
}

/// What a `Connection` token says when it is `keep-alive` (a name that is
/// dropped anyway), `close` or `upgrade` (names [`connection_named`] gives
/// too), or empty; else [`UNKNOWN_TOKEN`].
fn connection_token(token: &[u8]) -> u8 {
    match token.len() {
        0 => 0,
        10 if same_name(token, b"keep-alive") => ConnectionOption::KeepAlive as u8,
        5 if same_name(token, b"close") => ConnectionOption::Close as u8 | NAMES_OTHERS,
        7 if same_name(token, b"upgrade") => ConnectionOption::Upgrade as u8 | NAMES_OTHERS,
        _ => UNKNOWN_TOKEN,
    }
}

/// What [`connection_token`] gives for any other token.
const UNKNOWN_TOKEN: u8 = 0x80;

/// Whether a `Connection` token is one [`connection_named`] gives.
fn names_others(token: &[u8]) -> bool {
    let known = Known::of(token);
    !known.never_named() && !known.always_dropped()
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
        if fields.connection & NAMES_OTHERS == 0 {
            return named;
        }
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

    /// Whether the `Connection` header names `name` (any case; not a name
    /// [`connection_named`] leaves out).
    #[inline(always)]
    pub fn contains(&self, name: &[u8]) -> bool {
        (self.len > 0 || self.more) && self.lists(name)
    }

    fn lists(&self, name: &[u8]) -> bool {
        if self.more {
            return named_in(name, connection_named(self.fields));
        }
        named_in(name, self.names[..self.len].iter().copied())
    }
}

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
        for name in [&b"x-a"[..], b"X-B"] {
            assert!(named.contains(name));
        }
        // Never removed by `Connection`, or removed anyway: left out.
        assert!(!named.contains(b"host"));
        assert!(!named.contains(b"keep-alive"));
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
    fn known_names_are_found_by_their_mark_in_any_case() {
        for (name, known) in [
            (&b"Host"[..], Known::Host),
            (b"CONTENT-LENGTH", Known::ContentLength),
            (b"Transfer-Encoding", Known::TransferEncoding),
            (b"x-forwarded-proto", Known::XForwardedProto),
            (b"X-Forwarded-Port", Known::XForwardedPort),
            (b"proxy-connection", Known::ProxyConnection),
            (b"TE", Known::Te),
            (b"Content-Type", Known::Other),
            (b"User-Agent", Known::UserAgent),
            (b"REFERER", Known::Referer),
            (b"Referrer", Known::Other),
            (b"Hos", Known::Other),
            (b"", Known::Other),
        ] {
            assert_eq!(Known::of(name), known, "{}", String::from_utf8_lossy(name));
        }
        let mut head = crate::proxy::http1::ResponseHead::default();
        let text = "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nX-Other: a\r\nCONTENT-LENGTH: 3\r\nx-other: b\r\n\r\n";
        head.parse(text.as_bytes(), &crate::proxy::http1::Limits::default())
            .unwrap()
            .unwrap();
        let f = &head.fields;
        assert_eq!(
            f.get_all("content-length").collect::<Vec<_>>(),
            [b"3", b"3"]
        );
        assert_eq!(f.get_all("x-other").collect::<Vec<_>>(), [b"a", b"b"]);
        assert!(f.has(Known::ContentLength));
        assert!(!f.has(Known::TransferEncoding));
        assert_eq!(f.get_all("transfer-encoding").count(), 0);
        let kinds: Vec<Known> = f.iter_known().map(|(k, _, _)| k).collect();
        assert_eq!(
            kinds,
            [
                Known::ContentLength,
                Known::Other,
                Known::ContentLength,
                Known::Other
            ]
        );
    }

    #[test]
    fn lines_are_put_as_put_header_writes_them_whatever_their_form() {
        let mut head = crate::proxy::http1::ResponseHead::default();
        let text = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC:3\r\nD:  4 \r\nE: 5\nF: \r\n\
                    Connection: keep-alive\r\nG: 7\r\nH: 8\r\n\r\n";
        head.parse(text.as_bytes(), &crate::proxy::http1::Limits::default())
            .unwrap()
            .unwrap();
        let f = &head.fields;
        for drop in [&[][..], &[&b"B"[..]], &[b"A", b"H"], &[b"C", b"E", b"G"]] {
            let keep =
                |known: Known, name: &[u8]| known != Known::Connection && !drop.contains(&name);
            let mut expected = Vec::new();
            for (known, name, value) in f.iter_known() {
                if keep(known, name) {
                    crate::proxy::http1::put_header(&mut expected, name, value);
                }
            }
            let mut out = Vec::new();
            f.put_lines(&mut out, keep);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&expected),
                "dropping {drop:?}"
            );
        }
    }

    #[test]
    fn connection_options_are_read_once_from_every_connection_line() {
        use ConnectionOption::{Close, KeepAlive, Upgrade};
        let mut head = crate::proxy::http1::ResponseHead::default();
        for (lines, options, named) in [
            ("Connection: Keep-Alive\r\n", &[KeepAlive][..], &[][..]),
            (
                "Connection: x-a ,\tclose\r\n",
                &[Close],
                &[&b"x-a"[..], b"close"],
            ),
            (
                "connection: UPGRADE\r\nX: 1\r\nConnection: keep-alive, Te\r\n",
                &[Upgrade, KeepAlive],
                &[b"UPGRADE", b"Te"],
            ),
            ("Connection: closed, Host\r\n", &[], &[b"closed"]),
            ("X-Connection: close\r\n", &[], &[]),
        ] {
            let text = format!("HTTP/1.1 200 OK\r\n{lines}\r\n");
            head.parse(text.as_bytes(), &crate::proxy::http1::Limits::default())
                .unwrap()
                .unwrap();
            for option in [Close, KeepAlive, Upgrade] {
                assert_eq!(
                    head.fields.connection_has(option),
                    options.contains(&option),
                    "{lines:?} {option:?}"
                );
            }
            let listed: Vec<&[u8]> = connection_named(&head.fields).collect();
            assert_eq!(listed, named, "{lines:?}");
            let of = ConnectionNamed::of(&head.fields);
            for name in named {
                assert!(of.contains(name), "{lines:?}");
            }
            assert!(!of.contains(b"x-b"));
        }
    }

    #[test]
    fn optional_whitespace_is_space_and_tab_only() {
        assert_eq!(trim_ows(b" \tchunked \t"), b"chunked");
        assert_eq!(trim_ows(b"\x0bchunked"), b"\x0bchunked");
        assert_eq!(trim_ows(b"  "), b"");
        assert_eq!(trim_ows(b""), b"");
    }
}
