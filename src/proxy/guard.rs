//! Status-page guard: keeps visitors away from the nodes' own status pages.
//!
//! This module owns one decision: "must this request target be refused (403) before it is
//! proxied?". The nodes allow `/server-status` (Apache mod_status), `/server-info`
//! (mod_info), nginx `stub_status` locations and the like to the proxy's address so that the
//! balancer can poll them; a visitor whose request went through the proxy would look like the
//! proxy to the node and get the page. [`StatusGuard`] refuses every request whose path, as a
//! node could plausibly interpret it, falls under one of the configured protected paths,
//! whatever the method.
//!
//! # Matching rule
//!
//! A target is protected when an interpretation of its path *starts with* a protected path,
//! byte-wise, without segment awareness: `/server-status` protects `/server-status`,
//! `/server-status/`, `/server-status/foo`, `/server-status.html`, `/server-status;x` and also
//! `/server-statusfoo`. Apache 2.4's plain `<Location /server-status>` is segment aware (it
//! would not match `/server-statusfoo`), but nginx's `location /nginx_status` is a plain
//! string prefix, and `<LocationMatch "^/server-status">` / older Apache releases are not
//! segment aware either. A deny list errs on the side of denying. Matching is anchored at the
//! root: `/images/server-status.png` is not protected.
//!
//! # Interpretations
//!
//! [`normalise_path`] is the canonical, most aggressive normalisation (decode until stable,
//! `\` and overlong UTF-8 as separators/dots, `;params` stripped, dot segments resolved,
//! lower case). Matching only that one string is not enough, because *over*-normalising can
//! hide a path that a real server still maps to the status handler:
//!
//! * `/server-status/%252e%252e` decodes (twice) to `/server-status/..` = `/`, but Apache
//!   decodes once and sees `/server-status/%2e%2e`, which is under `<Location /server-status>`.
//! * `/a%2fb/../server-status`: decoding `%2f` into a separator gives `/a/server-status`, but
//!   Apache (default `AllowEncodedSlashes`) keeps `a%2fb` as one segment and resolves to
//!   `/server-status`.
//! * `/a\b/../server-status`: on Linux `\` is an ordinary byte, so the node sees
//!   `/server-status`; treating `\` as a separator gives `/a/server-status`.
//!
//! So [`StatusGuard::is_protected`] tries a small, fixed set of interpretations -- raw;
//! Apache 2.4.49+'s "decode unreserved characters only"; 1..=[`MAX_DECODE_ROUNDS`] rounds of
//! decoding that keep encoded `/` and `\` inside their segment; 1..=[`MAX_DECODE_ROUNDS`]
//! rounds that turn them into separators (nginx, Apache with `AllowEncodedSlashes On`);
//! each with and without Windows rules (`\`, overlong UTF-8, `%uXXXX`) and with and without
//! `;params` stripping -- and refuses when *any* of them matches. While resolving dot segments
//! it also checks every intermediate state, so `/server-status/..;/x` (Apache keeps `..;` as a
//! literal segment) or a server that does not resolve `..` at all cannot slip through.
//! Readings that cannot differ (no `%`, no `\`, no `;`, no byte >= 0xC0) are skipped,
//! identical decodings are walked once, and a reading is only walked when one of its segments
//! starts with the first segment of a protected path, so an ordinary request (`/index.php?x`)
//! costs a few scans and no allocation (well under a microsecond).
//!
//! # Cost
//!
//! Every pass is linear in the target length; there are at most 40 walks (2 Windows modes x
//! 10 decodings x 2 parameter modes), each decoding round is a single scan, and the number of
//! rounds is capped, so pathological input (100k `%25`, thousands of `/..`) stays linear:
//! an adversarial 8 KiB target costs a few hundred microseconds in a release build. The
//! proxy's request-line cap keeps that bounded. Nothing here panics on any input.

/// Maximum number of percent-decoding rounds. Apache and nginx decode once; more rounds
/// catch double-encoding (`%252e`) aimed at anything behind the node that decodes again.
pub const MAX_DECODE_ROUNDS: usize = 4;

/// The configured protected paths, pre-normalised (lower case, no trailing slash, starting
/// with "/").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusGuard {
    /// Normalised protected paths; none is a prefix of another.
    paths: Vec<Vec<u8>>,
    /// First segment of every protected path (deduplicated), for the prefilter: a reading
    /// can only match if one of its segments starts with one of these.
    heads: Vec<Vec<u8>>,
    /// Length of the longest entry of `paths`.
    max_len: usize,
    /// A protected path is `/`: every target is protected.
    protect_all: bool,
}

impl StatusGuard {
    /// Build a guard from configured paths. Each entry is normalised with [`normalise_path`]
    /// (`"Server-Status/"` becomes `"/server-status"`). Blank entries are ignored; an entry
    /// that normalises to `"/"` protects every path. Entries made redundant by a shorter
    /// protected prefix are dropped.
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(paths: I) -> StatusGuard {
        let mut all: Vec<Vec<u8>> = paths
            .into_iter()
            .filter_map(|p| {
                let p = p.as_ref().trim();
                (!p.is_empty()).then(|| normalise_path(p.as_bytes()))
            })
            .collect();
        all.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
        let mut kept: Vec<Vec<u8>> = Vec::with_capacity(all.len());
        for p in all {
            if !kept.iter().any(|k| p.starts_with(k) || k == b"/") {
                kept.push(p);
            }
        }
        let mut heads: Vec<Vec<u8>> = Vec::with_capacity(kept.len());
        for p in &kept {
            let rest = p.get(1..).unwrap_or_default();
            let head = rest
                .split(|&b| b == b'/')
                .next()
                .unwrap_or_default()
                .to_vec();
            if !heads.contains(&head) {
                heads.push(head);
            }
        }
        StatusGuard {
            max_len: kept.iter().map(Vec::len).max().unwrap_or(0),
            protect_all: kept.iter().any(|p| p == b"/"),
            paths: kept,
            heads,
        }
    }

    /// The normalised protected paths (lower case, starting with `/`, no trailing slash
    /// except for `/` itself).
    pub fn paths(&self) -> impl Iterator<Item = &[u8]> {
        self.paths.iter().map(Vec::as_slice)
    }

    /// True when the request target (path + optional query, as received: e.g.
    /// `b"/server-status?auto"`, or absolute-form `"http://host/server-status"`) must be
    /// refused.
    pub fn is_protected(&self, request_target: &[u8]) -> bool {
        if self.protect_all {
            return true;
        }
        if self.paths.is_empty() {
            return false;
        }
        let (primary, alternative) = target_paths(request_target);
        self.any_interpretation(primary) || alternative.is_some_and(|p| self.any_interpretation(p))
    }

    /// True when the (already normalised) path starts with a protected path.
    fn matches(&self, normalised: &[u8]) -> bool {
        self.protect_all || self.paths.iter().any(|p| normalised.starts_with(p))
    }

    /// Try every interpretation of `path` (see the module docs); true on the first match.
    fn any_interpretation(&self, path: &[u8]) -> bool {
        // Windows readings (`\` separator, `%uXXXX`, overlong UTF-8) can only differ from
        // the others when one of these shows up in the raw path or in a decoding of it.
        let windows_marks = |s: &[u8]| {
            s.iter().any(|&b| b == b'\\' || b >= 0xC0)
                || s.windows(2).any(|w| w[0] == b'%' && (w[1] | 0x20) == b'u')
        };
        let mut windows_differs = windows_marks(path);
        for windows in [false, true] {
            if windows && !windows_differs {
                break;
            }
            if self.reading_hits(path, windows) {
                return true;
            }
            // Nothing to decode: every decoded reading would equal the raw one.
            let decodable = path.contains(&b'%') || (windows && path.iter().any(|&b| b >= 0xC0));
            if !decodable {
                continue;
            }
            // Decoded readings already walked, to skip duplicates (at most 9 per mode).
            let mut seen: Vec<Vec<u8>> = Vec::new();
            let mut consider = |decoded: &[u8], windows_differs: &mut bool| {
                *windows_differs |= windows_marks(decoded);
                if seen.iter().any(|s| s == decoded) {
                    return false;
                }
                seen.push(decoded.to_vec());
                self.reading_hits(decoded, windows)
            };
            let mut once = Vec::with_capacity(path.len());
            if decode_round(path, Decode::Unreserved, windows, &mut once)
                && consider(&once, &mut windows_differs)
            {
                return true;
            }
            for mode in [Decode::KeepSeparators, Decode::Full] {
                let mut current = path.to_vec();
                for _ in 0..MAX_DECODE_ROUNDS {
                    let mut next = Vec::with_capacity(current.len());
                    if !decode_round(&current, mode, windows, &mut next) {
                        break;
                    }
                    if consider(&next, &mut windows_differs) {
                        return true;
                    }
                    current = next;
                }
            }
        }
        false
    }

    /// Walk one decoded reading with and (if it has a `;`) without `;params` stripping.
    fn reading_hits(&self, decoded: &[u8], windows: bool) -> bool {
        if !self.could_match(decoded, windows) {
            return false;
        }
        resolve(decoded, windows, false, Some(self)).1
            || (decoded.contains(&b';') && resolve(decoded, windows, true, Some(self)).1)
    }

    /// Prefilter: a walk of `decoded` can only match if some segment starts (ignoring ASCII
    /// case) with the first segment of a protected path. Stripping `;params` only shortens
    /// a segment, so this holds for both walks.
    fn could_match(&self, decoded: &[u8], windows: bool) -> bool {
        let head_at = |i: usize| {
            self.heads.iter().any(|head| {
                decoded
                    .get(i..i + head.len())
                    .is_some_and(|w| w.eq_ignore_ascii_case(head))
            })
        };
        head_at(0)
            || decoded
                .iter()
                .enumerate()
                .any(|(i, &b)| (b == b'/' || (windows && b == b'\\')) && head_at(i + 1))
    }
}

/// Normalise a request path as a web server would resolve it, as aggressively as any of them
/// would:
///
/// * strip the query (`?`) and fragment (`#`), take the path of an absolute-form URI
///   (`http://host:port/path`, also `scheme:path`); anything not starting with `/` (`*`,
///   `server-status`) is treated as relative to the root;
/// * percent-decode repeatedly until stable, at most [`MAX_DECODE_ROUNDS`] rounds
///   (`%252F` -> `%2F` -> `/`). Apache and nginx decode once; decoding more often errs on the
///   safe side for a deny list (a double-encoded `%252e%252e` that reaches a component which
///   decodes again must still be recognised), and [`StatusGuard::is_protected`] additionally
///   checks the single-decoding readings so that over-decoding cannot hide a path either;
/// * IIS-style `%uXXXX` (ASCII only) and overlong UTF-8 (`%c0%ae` = `.`, `%c0%af` = `/`,
///   `%c1%9c` = `\`) are decoded to ASCII;
/// * `\` is a separator (Windows), repeated slashes collapse, `;params` are cut from each
///   segment (Tomcat/Jetty `;jsessionid=`, so `..;` is `..`), `.` and `..` are resolved
///   (never above the root), the trailing slash is dropped (except for the root), ASCII is
///   lower-cased.
///
/// Works on bytes: invalid UTF-8 (or a NUL) after decoding is kept as is. The result always
/// starts with `/`.
pub fn normalise_path(target: &[u8]) -> Vec<u8> {
    let (path, _) = target_paths(target);
    let mut current = path.to_vec();
    for _ in 0..MAX_DECODE_ROUNDS {
        let mut next = Vec::with_capacity(current.len());
        if !decode_round(&current, Decode::Full, true, &mut next) {
            break;
        }
        current = next;
    }
    resolve(&current, true, true, None).0
}

/// Extract the path of a request target: the primary reading and, for a target starting with
/// `//`, the alternative reading as a network-path reference (`//host/path` -> `/path`).
/// Origin servers treat `//x/y` as a path, but denying either reading is the safe side.
fn target_paths(target: &[u8]) -> (&[u8], Option<&[u8]>) {
    let target = target.trim_ascii();
    let end = target
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(target.len());
    let target = &target[..end];
    if target.first() == Some(&b'/') {
        let alternative = target.strip_prefix(b"//").map(skip_authority);
        return (target, alternative);
    }
    if let Some(colon) = scheme_end(target) {
        let rest = &target[colon + 1..];
        return match rest.strip_prefix(b"//") {
            Some(authority_and_path) => (skip_authority(authority_and_path), None),
            None => (rest, None),
        };
    }
    (target, None)
}

/// Skip a URI authority: everything up to the first `/` (or `\`, which WHATWG parsers treat
/// as `/`). The result is the path, possibly empty.
fn skip_authority(s: &[u8]) -> &[u8] {
    let end = s
        .iter()
        .position(|&b| b == b'/' || b == b'\\')
        .unwrap_or(s.len());
    &s[end..]
}

/// Index of the `:` ending a URI scheme (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"`).
fn scheme_end(s: &[u8]) -> Option<usize> {
    if !s.first()?.is_ascii_alphabetic() {
        return None;
    }
    for (i, &b) in s.iter().enumerate().skip(1) {
        match b {
            b':' => return Some(i),
            b'+' | b'-' | b'.' => {}
            _ if b.is_ascii_alphanumeric() => {}
            _ => return None,
        }
    }
    None
}

/// What one decoding round decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decode {
    /// Only unreserved characters (`ALPHA DIGIT - . _ ~`): Apache 2.4.49+ resolves dot
    /// segments after this step, before decoding the rest.
    Unreserved,
    /// Everything except `/` and `\`, which stay encoded inside their segment (Apache's
    /// default `AllowEncodedSlashes Off`/`NoDecode`).
    KeepSeparators,
    /// Everything (nginx, Apache with `AllowEncodedSlashes On`).
    Full,
}

impl Decode {
    fn allows(self, byte: u8) -> bool {
        match self {
            Decode::Unreserved => byte.is_ascii_alphanumeric() || b"-._~".contains(&byte),
            Decode::KeepSeparators => byte != b'/' && byte != b'\\',
            Decode::Full => true,
        }
    }
}

/// One percent-decoding round of `input` into `out` (which should be empty). With `windows`,
/// `%uXXXX` escapes of ASCII characters are decoded and overlong UTF-8 encodings of ASCII
/// characters are mapped to the character (except in [`Decode::Unreserved`] mode). Returns
/// whether anything was decoded.
fn decode_round(input: &[u8], mode: Decode, windows: bool, out: &mut Vec<u8>) -> bool {
    let mut changed = false;
    let mut rest = input;
    while let Some(percent) = rest.iter().position(|&b| b == b'%') {
        out.extend_from_slice(&rest[..percent]);
        rest = &rest[percent..];
        match parse_escape(rest, windows) {
            Some((value, len)) if mode.allows(value) => {
                out.push(value);
                rest = &rest[len..];
                changed = true;
            }
            _ => {
                out.push(b'%');
                rest = &rest[1..];
            }
        }
    }
    out.extend_from_slice(rest);
    if windows && mode != Decode::Unreserved && out.iter().any(|&b| b >= 0xC0) {
        changed |= map_overlong(out, mode);
    }
    changed
}

/// Parse `%XX` (or, with `windows`, `%uXXXX` below 0x80) at the start of `s`.
fn parse_escape(s: &[u8], windows: bool) -> Option<(u8, usize)> {
    match *s {
        [b'%', h, l, ..] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
            Some(((hex(h) << 4) | hex(l), 3))
        }
        [b'%', b'u' | b'U', a, b, c, d, ..] if windows => {
            let digits = [a, b, c, d];
            if !digits.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let value = digits
                .iter()
                .fold(0u32, |acc, &h| (acc << 4) | u32::from(hex(h)));
            u8::try_from(value)
                .ok()
                .filter(u8::is_ascii)
                .map(|v| (v, 6))
        }
        _ => None,
    }
}

/// Value of an ASCII hex digit (0 for anything else; callers check first).
fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// Replace, in place, overlong UTF-8 encodings of ASCII characters (`C0 AE` = `.`,
/// `E0 80 AF` = `/`, ...) by the character. In [`Decode::KeepSeparators`] mode, encodings of
/// `/` and `\` are left alone. Returns whether anything was replaced.
fn map_overlong(buf: &mut Vec<u8>, mode: Decode) -> bool {
    let mut changed = false;
    let (mut read, mut write) = (0, 0);
    while read < buf.len() {
        if let Some((ascii, len)) = overlong_ascii(&buf[read..]) {
            if mode.allows(ascii) {
                buf[write] = ascii;
                write += 1;
                read += len;
                changed = true;
                continue;
            }
        }
        buf[write] = buf[read];
        write += 1;
        read += 1;
    }
    buf.truncate(write);
    changed
}

/// An overlong (2- to 6-byte) UTF-8 encoding of an ASCII character at the start of `s`.
fn overlong_ascii(s: &[u8]) -> Option<(u8, usize)> {
    let lead = *s.first()?;
    let (len, bits) = match lead {
        0xC0..=0xDF => (2, lead & 0x1F),
        0xE0..=0xEF => (3, lead & 0x0F),
        0xF0..=0xF7 => (4, lead & 0x07),
        0xF8..=0xFB => (5, lead & 0x03),
        0xFC..=0xFD => (6, lead & 0x01),
        _ => return None,
    };
    let mut code_point = u32::from(bits);
    for &b in s.get(1..len)? {
        if b & 0xC0 != 0x80 {
            return None;
        }
        code_point = (code_point << 6) | u32::from(b & 0x3F);
    }
    u8::try_from(code_point)
        .ok()
        .filter(u8::is_ascii)
        .map(|ascii| (ascii, len))
}

/// Resolve a decoded path: split on `/` (and `\` with `windows`), optionally cut `;params`,
/// drop empty and `.` segments, pop on `..` (never above the root), lower-case ASCII.
///
/// Returns the resolved path (always starting with `/`) and, when a guard is given, whether
/// the path matched a protected path at any point of the walk (an intermediate state counts:
/// a server that keeps a later `..` literal would stay under the protected path). The walk
/// stops at the first match.
fn resolve(
    decoded: &[u8],
    windows: bool,
    strip_params: bool,
    guard: Option<&StatusGuard>,
) -> (Vec<u8>, bool) {
    let mut out: Vec<u8> = Vec::with_capacity(decoded.len() + 1);
    // Start offset (of the '/') of every segment in `out`.
    let mut starts: Vec<usize> = Vec::new();
    let segments = decoded.split(|&b| b == b'/' || (windows && b == b'\\'));
    for segment in segments {
        let segment = match (strip_params, segment.iter().position(|&b| b == b';')) {
            (true, Some(semicolon)) => &segment[..semicolon],
            _ => segment,
        };
        match segment {
            b"" | b"." => {}
            b".." => {
                if let Some(start) = starts.pop() {
                    out.truncate(start);
                }
            }
            _ => {
                let before = out.len();
                starts.push(before);
                out.push(b'/');
                out.extend(segment.iter().map(u8::to_ascii_lowercase));
                // Only a push that changes the first `max_len` bytes can create a match:
                // longer states share their prefix with an earlier, already checked one.
                if let Some(guard) = guard {
                    if before < guard.max_len && guard.matches(&out) {
                        return (out, true);
                    }
                }
            }
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    let hit = guard.is_some_and(|g| g.matches(&out));
    (out, hit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> StatusGuard {
        StatusGuard::new(["/server-status", "/server-info", "/nginx_status"])
    }

    /// Request targets that must be refused.
    const DENIED: &[&str] = &[
        // plain, query, fragment, trailing slash, case
        "/server-status",
        "/server-status?auto",
        "/server-status?auto&refresh=5",
        "/server-status#top",
        "/server-status/",
        "/SERVER-STATUS",
        "/Server-Status?auto",
        "/SeRvEr-StAtUs/",
        " /server-status ",
        // beyond the path: sub-paths, suffixes (prefix rule)
        "/server-status/foo",
        "/server-status.html",
        "/server-statusfoo",
        "/server-status;x",
        "/server-status;jsessionid=ABC123",
        "/server-status%3Fauto",
        "/server-status%3fauto",
        "/server-status%23x",
        "/server-status%00",
        "/server-status%00.png",
        "/server-status%20",
        "/server-status%2f",
        "/server-status\\",
        // slashes and dot segments
        "//server-status",
        "///server-status//",
        "/./server-status",
        "/.//./server-status/.",
        "/foo/../server-status",
        "/foo/bar/../../server-status",
        "/../server-status",
        "/../../../../server-status",
        "/index.php/../server-status",
        // percent-encoding
        "/%73erver-status",
        "/%53ERVER-STATUS",
        "/server%2dstatus",
        "/server%2Dstatus",
        "/%73%65%72%76%65%72%2d%73%74%61%74%75%73",
        "/%2fserver-status",
        "/%2e/server-status",
        "/%2E%2E/server-status",
        "/.%2e/server-status",
        "/%2e./server-status",
        "/foo/%2e%2e/server-status",
        "/foo/%2e%2e%2fserver-status",
        "/foo%2f..%2fserver-status",
        // double and deeper encoding
        "/server%252dstatus",
        "/%252fserver-status",
        "/%252e%252e/server-status",
        "/foo/%252e%252e/server-status",
        "/foo/%25252e%25252e/server-status",
        "/%2573erver-status",
        // Windows / IIS
        "\\server-status",
        "/foo\\..\\server-status",
        "/foo%5c..%5cserver-status",
        "/foo%255c..%255cserver-status",
        "/%c1%9cserver-status",
        "/foo/%c0%ae%c0%ae/server-status",
        "/foo%c0%af..%c0%afserver-status",
        "/foo/%e0%80%ae%e0%80%ae/server-status",
        "/foo/%u002e%u002e/server-status",
        "/%u0073erver-status",
        // Tomcat/Jetty path parameters
        "/;x/server-status",
        "/foo/..;/server-status",
        "/foo;x/..;y/server-status",
        "/foo/..%3b/server-status",
        // readings that over-normalising would hide
        "/server-status/%252e%252e",
        "/server-status/%2e%2e%2f",
        "/server-status/..;/x",
        "/a%2fb/../server-status",
        "/a%2fb/%2e%2e/server-status",
        "/a\\b/../server-status",
        "/foo/../server-status/%2f..%2f..",
        // absolute form and other target forms
        "http://example.com/server-status",
        "http://example.com:8080/server-status?auto",
        "HTTPS://EXAMPLE.COM/Server-Status",
        "http://example.com//./server-status/",
        "http://user@example.com/%73erver-status",
        "http://example.com\\server-status",
        "http:/server-status",
        "server-status",
        "//evil.example/server-status",
        // the other protected paths
        "/server-info",
        "/server-info?config",
        "/SERVER-INFO/",
        "/%73erver-info",
        "/foo/../server-info",
        "//server-info;x",
        "/server%2Dinfo",
        "http://node1/server-info",
        "/nginx_status",
        "/NGINX_STATUS",
        "/nginx%5fstatus",
        "/nginx%255Fstatus",
        "/./nginx_status/",
        "/a/b/../../nginx_status",
        "/nginx_status.php",
        "http://h:81/nginx_status?x",
    ];

    /// Request targets that must pass.
    const ALLOWED: &[&str] = &[
        "/",
        "",
        "*",
        "/index.php",
        "/index.php?page=server-status",
        "/?q=/server-status",
        "/search?q=%2Fserver-status",
        "/#/server-status",
        "/status",
        "/server",
        "/server-stat",
        "/serverstatus",
        "/server_status",
        "/server/status",
        "/info",
        "/nginx",
        "/nginx-status",
        "/nginxstatus",
        "/images/server-status.png",
        "/blog/server-status-explained",
        "/foo/server-status",
        "/docs/nginx_status",
        "/a/b/c/",
        "/%7Euser/",
        "/caf%C3%A9",
        "/a;b/c",
        "/a%2fb",
        "http://example.com/",
        "http://example.com/index.html",
        "http://server-status/",
        "http://example.com/foo/server-status",
        "example.com:443",
        "/wiki/server-status",
    ];

    #[test]
    fn denied_targets_are_protected() {
        let g = guard();
        let missed: Vec<&str> = DENIED
            .iter()
            .copied()
            .filter(|t| !g.is_protected(t.as_bytes()))
            .collect();
        assert!(missed.is_empty(), "not protected: {missed:?}");
        assert!(DENIED.len() >= 40);
    }

    #[test]
    fn normal_targets_pass() {
        let g = guard();
        let blocked: Vec<&str> = ALLOWED
            .iter()
            .copied()
            .filter(|t| g.is_protected(t.as_bytes()))
            .collect();
        assert!(blocked.is_empty(), "wrongly protected: {blocked:?}");
    }

    #[test]
    fn normalise_path_table() {
        let cases: &[(&str, &str)] = &[
            ("", "/"),
            ("/", "/"),
            ("*", "/*"),
            ("/a/b/", "/a/b"),
            ("//a///b//", "/a/b"),
            ("/a/./b/../c", "/a/c"),
            ("/../../a", "/a"),
            ("/a/..", "/"),
            ("/A/B?x=1#f", "/a/b"),
            ("/a%2fb", "/a/b"),
            ("/%252F", "/"),
            ("/%25252e%25252e/x", "/x"),
            ("/a\\b\\..\\c", "/a/c"),
            ("/a;jsessionid=1/b;x", "/a/b"),
            ("/a/..;/b", "/b"),
            ("/%c0%ae%c0%ae/x", "/x"),
            ("/a%c0%afb", "/a/b"),
            ("/%u0041", "/a"),
            ("/server-status%3Fauto", "/server-status?auto"),
            ("/server-status%00", "/server-status\0"),
            ("/%zz%2", "/%zz%2"),
            ("/%ff%fe", "/\u{ff}\u{fe}"),
            ("http://Host:80/A/b/", "/a/b"),
            ("http://host", "/"),
            ("http://host?x", "/"),
            ("http:/a", "/a"),
            ("server-status", "/server-status"),
            ("//server-status", "/server-status"),
        ];
        for &(input, expected) in cases {
            let expected: Vec<u8> = if expected.chars().any(|c| c > '\u{7f}') {
                // Characters U+0080..=U+00FF stand for raw bytes in this table.
                expected.chars().map(|c| c as u32 as u8).collect()
            } else {
                expected.as_bytes().to_vec()
            };
            assert_eq!(
                normalise_path(input.as_bytes()),
                expected,
                "normalise_path({input:?})"
            );
        }
    }

    #[test]
    fn configured_paths_are_normalised() {
        let g = StatusGuard::new(["Server-Status/", "  ", "", "/server-status/sub", "/x/"]);
        let paths: Vec<&[u8]> = g.paths().collect();
        assert_eq!(paths, vec![&b"/x"[..], &b"/server-status"[..]]);
        assert!(g.is_protected(b"/x"));
        assert!(g.is_protected(b"/server-status/sub"));
        assert!(!g.is_protected(b"/y"));
    }

    #[test]
    fn multi_segment_protected_path() {
        let g = StatusGuard::new(["/status/nginx"]);
        assert!(g.is_protected(b"/status/nginx"));
        assert!(g.is_protected(b"/status//nginx/"));
        assert!(g.is_protected(b"/status%2fnginx"));
        assert!(g.is_protected(b"/status/..;/../nginx"));
        assert!(g.is_protected(b"/status/x/../nginx"));
        assert!(!g.is_protected(b"/status"));
        assert!(!g.is_protected(b"/status/other"));
        assert!(!g.is_protected(b"/nginx"));
    }

    #[test]
    fn empty_and_root_configurations() {
        let none = StatusGuard::new(Vec::<String>::new());
        assert!(!none.is_protected(b"/server-status"));
        assert_eq!(none, StatusGuard::default());
        let blank = StatusGuard::new([" "]);
        assert!(!blank.is_protected(b"/server-status"));
        let root = StatusGuard::new(["/"]);
        assert!(root.is_protected(b"/"));
        assert!(root.is_protected(b"/anything"));
        assert!(root.is_protected(b"*"));
    }

    /// Deterministic 64-bit LCG (Knuth's MMIX constants); no extra dependencies.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next()).unwrap_or(0) % n.max(1)
        }
    }

    /// Invariants of the canonical normalisation.
    fn check_normalised(input: &[u8], out: &[u8]) {
        assert_eq!(out.first(), Some(&b'/'), "{input:?} -> {out:?}");
        assert!(out == b"/" || out.last() != Some(&b'/'), "{input:?}");
        for segment in out[1..].split(|&b| b == b'/') {
            if out != b"/" {
                assert!(!segment.is_empty(), "empty segment: {input:?} -> {out:?}");
            }
            assert!(segment != b"." && segment != b"..", "{input:?} -> {out:?}");
            assert!(!segment.contains(&b';'), "{input:?} -> {out:?}");
            assert!(!segment.contains(&b'\\'), "{input:?} -> {out:?}");
            assert!(!segment.iter().any(u8::is_ascii_uppercase), "{input:?}");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let g = guard();
        let mut rng = Lcg(0x5eed);
        for _ in 0..20_000 {
            let len = rng.below(64);
            let input: Vec<u8> = (0..len).map(|_| (rng.next() & 0xFF) as u8).collect();
            let out = normalise_path(&input);
            check_normalised(&input, &out);
            let protected = g.is_protected(&input);
            if g.matches(&out) {
                assert!(protected, "canonical match not protected: {input:?}");
            }
        }
    }

    /// Brute-force reference for [`StatusGuard::is_protected`]: every reading, no prefilter,
    /// no deduplication, no skipping of Windows readings.
    fn reference_is_protected(g: &StatusGuard, target: &[u8]) -> bool {
        if g.protect_all {
            return true;
        }
        let (primary, alternative) = target_paths(target);
        let mut hit = false;
        for path in std::iter::once(primary).chain(alternative) {
            for windows in [false, true] {
                let mut readings = vec![path.to_vec()];
                let mut once = Vec::new();
                decode_round(path, Decode::Unreserved, windows, &mut once);
                readings.push(once);
                for mode in [Decode::KeepSeparators, Decode::Full] {
                    let mut current = path.to_vec();
                    for _ in 0..MAX_DECODE_ROUNDS {
                        let mut next = Vec::new();
                        decode_round(&current, mode, windows, &mut next);
                        readings.push(next.clone());
                        current = next;
                    }
                }
                for reading in &readings {
                    for strip in [false, true] {
                        hit |= resolve(reading, windows, strip, Some(g)).1;
                    }
                }
            }
        }
        hit
    }

    #[test]
    fn random_token_soup_never_panics() {
        const TOKENS: &[&str] = &[
            "/",
            "//",
            ".",
            "..",
            "%2e",
            "%2E",
            "%2f",
            "%2F",
            "%25",
            "%5c",
            "\\",
            ";",
            ";x=1",
            "%3b",
            "%c0",
            "%ae",
            "%af",
            "%c0%ae",
            "%c0%af",
            "%u002e",
            "%u",
            "%",
            "%0",
            "%00",
            "server-status",
            "SERVER",
            "-status",
            "nginx_status",
            "server-info",
            "?",
            "#",
            "http://",
            "h:1",
            "a",
            "%73",
            "%252e",
            "\u{e9}",
            "\0",
            " ",
        ];
        let g = guard();
        let mut rng = Lcg(42);
        let mut hits = 0usize;
        for _ in 0..20_000 {
            let mut input = Vec::new();
            for _ in 0..rng.below(12) {
                input.extend_from_slice(TOKENS[rng.below(TOKENS.len())].as_bytes());
            }
            let out = normalise_path(&input);
            check_normalised(&input, &out);
            let protected = g.is_protected(&input);
            if g.matches(&out) {
                assert!(protected, "canonical match not protected: {input:?}");
            }
            assert_eq!(
                protected,
                reference_is_protected(&g, &input),
                "shortcut disagrees with reference: {:?}",
                String::from_utf8_lossy(&input)
            );
            hits += usize::from(protected);
        }
        // The soup must exercise both outcomes.
        assert!(hits > 1_000 && hits < 19_000, "hits = {hits}");
    }

    #[test]
    fn pathological_inputs_stay_cheap() {
        let g = guard();
        let mut deep = b"/".to_vec();
        deep.extend(std::iter::repeat_n(b"%25".as_slice(), 100_000).flatten());
        deep.extend_from_slice(b"2e");
        let _ = normalise_path(&deep);
        assert!(!g.is_protected(&deep));

        let mut dots = Vec::new();
        for _ in 0..20_000 {
            dots.extend_from_slice(b"/a/..");
        }
        dots.extend_from_slice(b"/server-status");
        assert!(g.is_protected(&dots));
        assert_eq!(normalise_path(&dots), b"/server-status");

        let mut mixed = Vec::new();
        for _ in 0..10_000 {
            mixed.extend_from_slice(b"/%252e%c0%ae;\\%2f%u002e");
        }
        let _ = normalise_path(&mixed);
        let _ = g.is_protected(&mixed);

        let slashes = vec![b'/'; 100_000];
        assert_eq!(normalise_path(&slashes), b"/");
        assert!(!g.is_protected(&slashes));
    }
}
