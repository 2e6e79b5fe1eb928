//! Reading the nodes' own status pages.
//!
//! `status/` owns everything between the bytes of a status page and the
//! numbers the rest of webcluster works with: the page kinds (Apache
//! `mod_status` `?auto` in [`apache`], nginx `stub_status` in [`nginx`]),
//! the shared [`StatusReport`] they all produce, the errors an operator sees
//! when a page cannot be read ([`ParseError`]), and request/byte rates from
//! two consecutive reports ([`rates`]). The parsers never touch the
//! network; polling the pages is the scraper's job (`scraper.rs`).
//!
//! A page kind is one file implementing [`StatusPage`] (its name, how to
//! recognise, parse and read a page of that kind) and exporting
//! `pub const KIND: ServerKind`; the [`kinds!`] list below registers it, one
//! line per kind. `status_kind = "<name>"`, `"auto"` detection, the status
//! page and the JSON all go by [`KINDS`]. See CONTRIBUTING.md, "Add a
//! status-page kind".
//!
//! [`parse`] is the entry point: it checks the page is plausible text (size,
//! encoding, not HTML), picks the kind and hands over to the kind's parser.

pub mod fetch;
pub mod rates;
pub mod scraper;

use serde::Serialize;
use std::fmt;

/// Declares the kind modules and [`KINDS`], in this order (the order
/// `"auto"` tries them in, and names are listed in messages). One line per
/// kind; attributes such as `#[cfg(test)]` apply to both.
macro_rules! kinds {
    ($($(#[$attr:meta])* $module:ident,)*) => {
        $($(#[$attr])* pub mod $module;)*

        /// Every status-page kind, registered by the `kinds!` list.
        pub static KINDS: &[ServerKind] = &[$($(#[$attr])* $module::KIND,)*];
    };
}

kinds! {
    apache,
    nginx,
    #[cfg(test)]
    lighttpd,
}

/// A page no registered kind recognises is read as Apache's: its parser is
/// the lenient one (unknown lines are skipped) and names the line it misses.
pub const FALLBACK: ServerKind = apache::KIND;

/// Pages bigger than this are refused; the scraper stops reading here too.
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// Longest scoreboard kept in a report (the slot count is measured on the
/// whole line first). Real scoreboards are MaxRequestWorkers long.
pub const MAX_SCOREBOARD_CHARS: usize = 64 * 1024;

/// Longest text field (server name, version, restart time) kept in a report.
pub const MAX_TEXT_CHARS: usize = 256;

/// One kind of status page: everything webcluster knows of a format. The
/// text handed to it has passed the common checks (size, text, not empty,
/// not HTML).
pub trait StatusPage: Sync + 'static {
    /// Lower case: `status_kind = "<name>"` in the config, `server_kind` in
    /// the JSON and the status page. Unique among [`KINDS`].
    fn name(&self) -> &'static str;

    /// Whether the page is positively one of this kind (for `"auto"`, and to
    /// tell an operator the configured kind is wrong). Cheap: every kind
    /// looks at every page read with `"auto"`.
    fn recognise(&self, text: &str) -> bool;

    /// The page, read into the common model; `report.kind` is this kind.
    fn parse(&self, text: &str) -> Result<StatusReport, ParseError>;

    /// The error shown when an HTML page came where this kind was expected
    /// (most often the human-readable variant of the same page).
    fn html_error(&self) -> &'static str {
        "got an HTML page, not a machine-readable status page (is the status URL right)"
    }

    /// Worker capacity of the node: what the page says (the Apache 2.4
    /// scoreboard), else the configured `max_workers`. Zero is unknown.
    fn capacity(&self, report: &StatusReport, configured_max_workers: Option<u32>) -> Option<u32> {
        report
            .scoreboard_capacity
            .or(configured_max_workers)
            .filter(|&n| n > 0)
    }

    /// Signs of a restart between two reports of this kind beyond the common
    /// ones [`rates::restarted`] checks (generations, restart time, uptime,
    /// `total_accesses`, `total_kbytes`): no rate spans a restart. Rates are
    /// computed from `total_accesses` and `total_bytes()`, so a kind that
    /// fills those gives rates.
    fn restarted(&self, _prev: &StatusReport, _cur: &StatusReport) -> bool {
        false
    }

    /// Whether every open connection to the node holds one of its workers
    /// (Apache prefork and worker): then an idle kept-alive connection costs
    /// a worker (see `proxy::pool_for` and `NodeLive::load`).
    fn worker_per_connection(&self, _report: &StatusReport) -> bool {
        false
    }
}

/// Which server software wrote a page: a registered [`StatusPage`], as a
/// small copyable handle compared by name.
#[derive(Clone, Copy)]
pub struct ServerKind(&'static dyn StatusPage);

impl ServerKind {
    /// The handle of a kind (for its file's `KIND` constant).
    pub const fn new(page: &'static dyn StatusPage) -> ServerKind {
        ServerKind(page)
    }

    /// The registered kind with this name.
    pub fn named(name: &str) -> Option<ServerKind> {
        KINDS.iter().copied().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// The kind's own behaviour.
    pub fn page(self) -> &'static dyn StatusPage {
        self.0
    }
}

impl PartialEq for ServerKind {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for ServerKind {}

impl std::hash::Hash for ServerKind {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state)
    }
}

impl fmt::Debug for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerKind({:?})", self.name())
    }
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for ServerKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// One status page, read. Fields a page did not print are `None`.
///
/// The figures are copied as the server printed them and are not checked
/// against each other: they are sampled at slightly different moments and
/// hand-written pages disagree freely (e.g. a 5-slot scoreboard next to
/// 75 busy + idle workers). Use saturating arithmetic when combining them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    pub kind: ServerKind,
    /// Apache's keyless first line (the name the status request was served under).
    pub server_name: Option<String>,
    /// `ServerVersion`.
    pub server_version: Option<String>,
    /// `ServerMPM`: `event`, `prefork` or `worker`.
    pub mpm: Option<String>,
    /// Apache `BusyWorkers` (includes the status request itself);
    /// nginx `Reading + Writing`.
    pub busy_workers: u32,
    /// Apache `IdleWorkers`; nginx has no such figure.
    pub idle_workers: Option<u32>,
    /// The scoreboard as printed, cut at [`MAX_SCOREBOARD_CHARS`].
    pub scoreboard: Option<String>,
    /// Scoreboard slot count, which on Apache 2.4 equals the worker capacity
    /// (MaxRequestWorkers). `None` on 2.2 (its scoreboard is
    /// ServerLimit x ThreadLimit) and on nginx.
    pub scoreboard_capacity: Option<u32>,
    /// Apache `Total Accesses`; nginx `requests`.
    pub total_accesses: Option<u64>,
    /// Apache `Total kBytes`.
    pub total_kbytes: Option<u64>,
    /// `ServerUptimeSeconds`, else `Uptime`.
    pub uptime_seconds: Option<u64>,
    /// `RestartTime` as printed (server's local time zone).
    pub restart_time: Option<String>,
    /// `ParentServerConfigGeneration`: goes up on every graceful restart.
    pub config_generation: Option<u64>,
    /// `ParentServerMPMGeneration`.
    pub mpm_generation: Option<u64>,
    /// `CPULoad` in percent of one CPU (can exceed 100).
    pub cpu_load: Option<f64>,
    /// `CPUUser`, seconds.
    pub cpu_user: Option<f64>,
    /// `CPUSystem`, seconds.
    pub cpu_system: Option<f64>,
    pub load1: Option<f64>,
    pub load5: Option<f64>,
    pub load15: Option<f64>,
    /// `Processes` (event MPM).
    pub processes: Option<u32>,
    /// `Stopping` (event MPM): processes finishing after a graceful restart.
    pub stopping: Option<u32>,
    /// `GracefulWorkers` (2.4.58+).
    pub graceful_workers: Option<u32>,
    /// `ConnsTotal` and the `ConnsAsync*` figures (event MPM; they lag).
    pub conns_total: Option<u32>,
    pub conns_async_writing: Option<u32>,
    pub conns_async_keep_alive: Option<u32>,
    pub conns_async_closing: Option<u32>,
    pub conns_async_wait_io: Option<u32>,
    /// The raw nginx figures.
    pub nginx: Option<NginxCounters>,
    /// Slots per scoreboard state, counted over the whole printed line.
    pub scoreboard_counts: Option<ScoreboardCounts>,
}

impl StatusReport {
    /// A report with nothing in it yet: every optional field `None`, zero busy.
    pub fn new(kind: ServerKind) -> Self {
        StatusReport {
            kind,
            server_name: None,
            server_version: None,
            mpm: None,
            busy_workers: 0,
            idle_workers: None,
            scoreboard: None,
            scoreboard_capacity: None,
            total_accesses: None,
            total_kbytes: None,
            uptime_seconds: None,
            restart_time: None,
            config_generation: None,
            mpm_generation: None,
            cpu_load: None,
            cpu_user: None,
            cpu_system: None,
            load1: None,
            load5: None,
            load15: None,
            processes: None,
            stopping: None,
            graceful_workers: None,
            conns_total: None,
            conns_async_writing: None,
            conns_async_keep_alive: None,
            conns_async_closing: None,
            conns_async_wait_io: None,
            nginx: None,
            scoreboard_counts: None,
        }
    }

    /// Worker capacity: `scoreboard_capacity`, else the configured
    /// `max_workers`, else `None`. Zero counts as unknown.
    ///
    /// It may be smaller than `busy_workers` (see the type's doc): clamp
    /// when dividing.
    pub fn capacity(&self, configured_max_workers: Option<u32>) -> Option<u32> {
        self.kind.page().capacity(self, configured_max_workers)
    }

    /// Total bytes the node served (`Total kBytes` x 1024).
    pub fn total_bytes(&self) -> Option<u64> {
        self.total_kbytes.and_then(|kb| kb.checked_mul(1024))
    }
}

/// nginx `stub_status` figures as printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NginxCounters {
    pub active: u32,
    pub accepts: u64,
    pub handled: u64,
    pub requests: u64,
    pub reading: u32,
    pub writing: u32,
    pub waiting: u32,
}

/// Apache scoreboard slots per state letter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ScoreboardCounts {
    /// `_` waiting for a connection.
    pub waiting: u32,
    /// `S` starting up.
    pub starting: u32,
    /// `R` reading the request.
    pub reading: u32,
    /// `W` sending the reply.
    pub sending: u32,
    /// `K` keep-alive (read).
    pub keepalive: u32,
    /// `D` DNS lookup.
    pub dns_lookup: u32,
    /// `C` closing the connection.
    pub closing: u32,
    /// `L` logging.
    pub logging: u32,
    /// `G` gracefully finishing.
    pub graceful: u32,
    /// `I` idle cleanup of a worker.
    pub idle_cleanup: u32,
    /// `.` open slot with no process.
    pub open: u32,
    /// Any other character.
    pub other: u32,
}

impl ScoreboardCounts {
    /// Counts the state letters of a scoreboard line.
    pub fn from_scoreboard(scoreboard: &str) -> Self {
        let mut counts = ScoreboardCounts::default();
        for c in scoreboard.chars() {
            let slot = match c {
                '_' => &mut counts.waiting,
                'S' => &mut counts.starting,
                'R' => &mut counts.reading,
                'W' => &mut counts.sending,
                'K' => &mut counts.keepalive,
                'D' => &mut counts.dns_lookup,
                'C' => &mut counts.closing,
                'L' => &mut counts.logging,
                'G' => &mut counts.graceful,
                'I' => &mut counts.idle_cleanup,
                '.' => &mut counts.open,
                _ => &mut counts.other,
            };
            *slot = slot.saturating_add(1);
        }
        counts
    }
}

/// Why a page could not be read. The messages are for an operator.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("empty page")]
    Empty,
    #[error("page is {0} bytes, over the 1 MiB limit")]
    TooLarge(usize),
    #[error("not UTF-8/ASCII text (binary data at byte {offset})")]
    NotText { offset: usize },
    #[error("{}", .0.page().html_error())]
    Html(ServerKind),
    #[error(
        "expected an {expected} status page, got an {found} one (check the node's status kind)"
    )]
    WrongKind {
        expected: ServerKind,
        found: ServerKind,
    },
    #[error("missing {0} line")]
    Missing(&'static str),
    #[error("line {line}: expected {expected}")]
    Malformed { line: usize, expected: &'static str },
    /// `why` is e.g. "is not a number", "is negative", "is too large".
    #[error("line {line}: {key}: `{value}` {why}")]
    BadValue {
        line: usize,
        key: String,
        value: String,
        why: &'static str,
    },
}

/// Parses a status page. `hint` is the configured kind; `None` detects it
/// from the content (the first registered kind that recognises it).
pub fn parse(hint: Option<ServerKind>, body: &[u8]) -> Result<StatusReport, ParseError> {
    let text = as_text(body)?;
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let kind = choose_kind(hint, text)?;
    if looks_like_html(text) {
        return Err(ParseError::Html(kind));
    }
    kind.page().parse(text)
}

/// The page as text, if it is of an acceptable size and has no binary bytes.
fn as_text(body: &[u8]) -> Result<&str, ParseError> {
    if body.len() > MAX_PAGE_BYTES {
        return Err(ParseError::TooLarge(body.len()));
    }
    let text = std::str::from_utf8(body);
    let valid = text.as_ref().map_or_else(|e| e.valid_up_to(), |t| t.len());
    let is_binary = |b: &u8| (*b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || *b == 0x7f;
    // The first byte that is not text: a control character or bad UTF-8.
    let offset = body.iter().take(valid).position(is_binary).unwrap_or(valid);
    match text {
        Ok(text) if offset == text.len() => Ok(text),
        _ => Err(ParseError::NotText { offset }),
    }
}

/// The configured kind, unless the page is clearly another one; with no
/// configured kind, the one the page looks like, else [`FALLBACK`].
fn choose_kind(hint: Option<ServerKind>, text: &str) -> Result<ServerKind, ParseError> {
    match hint {
        Some(expected) if expected.page().recognise(text) => Ok(expected),
        Some(expected) => match recognise(text) {
            Some(found) => Err(ParseError::WrongKind { expected, found }),
            None => Ok(expected),
        },
        None => Ok(recognise(text).unwrap_or(FALLBACK)),
    }
}

/// The first registered kind a page positively looks like, if any.
fn recognise(text: &str) -> Option<ServerKind> {
    KINDS.iter().copied().find(|k| k.page().recognise(text))
}

fn looks_like_html(text: &str) -> bool {
    text.trim_start().starts_with('<')
        || text
            .as_bytes()
            .windows(5)
            .any(|w| w.eq_ignore_ascii_case(b"<html"))
}

/// Parses a non-negative whole number. Plain digits are the norm; `%g`-style
/// floats (`12`, `1.5e+06`) are accepted when they denote a whole number.
pub(crate) fn parse_count<T: TryFrom<u64>>(
    line: usize,
    key: &str,
    text: &str,
) -> Result<T, ParseError> {
    let bad = |why| bad_value(line, key, text, why);
    let n = match text.parse::<u64>() {
        Ok(n) => n,
        Err(_) => whole_number(text).map_err(bad)?,
    };
    T::try_from(n).map_err(|_| bad("is too large"))
}

fn whole_number(text: &str) -> Result<u64, &'static str> {
    const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
    let f: f64 = text.parse().map_err(|_| "is not a number")?;
    if !f.is_finite() {
        Err("is not a number")
    } else if f < 0.0 {
        Err("is negative")
    } else if f.fract() != 0.0 {
        Err("is not a whole number")
    } else if f >= TWO_POW_64 {
        Err("is too large")
    } else {
        // In range and whole: the cast is exact.
        Ok(f as u64)
    }
}

/// A [`ParseError::BadValue`], with a bounded copy of the value.
pub(crate) fn bad_value(line: usize, key: &str, value: &str, why: &'static str) -> ParseError {
    ParseError::BadValue {
        line,
        key: key.to_owned(),
        value: excerpt(value),
        why,
    }
}

/// A bounded, printable copy of a bad value for an error message.
fn excerpt(text: &str) -> String {
    const MAX: usize = 40;
    let mut out: String = text
        .chars()
        .take(MAX)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(MAX).is_some() {
        out.push_str("...");
    }
    out
}

/// The first `max` characters of `text`.
pub(crate) fn truncate_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => text.get(..end).unwrap_or(text),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_accept_digits_and_whole_g_floats() {
        assert_eq!(parse_count::<u64>(1, "k", "42"), Ok(42));
        assert_eq!(parse_count::<u64>(1, "k", "1.5e+06"), Ok(1_500_000));
        assert_eq!(parse_count::<u32>(1, "k", "7."), Ok(7));
    }

    #[test]
    fn counts_reject_bad_values_with_line_and_key() {
        let err = |v: &str| {
            parse_count::<u32>(7, "BusyWorkers", v)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(err("abc"), "line 7: BusyWorkers: `abc` is not a number");
        assert_eq!(err("-1"), "line 7: BusyWorkers: `-1` is negative");
        assert_eq!(
            err(".41"),
            "line 7: BusyWorkers: `.41` is not a whole number"
        );
        assert_eq!(
            err("4294967296"),
            "line 7: BusyWorkers: `4294967296` is too large"
        );
        assert_eq!(err("1e30"), "line 7: BusyWorkers: `1e30` is too large");
        assert_eq!(err("nan"), "line 7: BusyWorkers: `nan` is not a number");
        assert_eq!(err(""), "line 7: BusyWorkers: `` is not a number");
    }

    #[test]
    fn error_values_are_bounded_and_escaped() {
        let long = "x".repeat(1000);
        let msg = parse_count::<u32>(1, "k", &long).unwrap_err().to_string();
        assert!(msg.len() < 100, "{msg}");
        let msg = parse_count::<u32>(1, "k", "a\u{1b}b")
            .unwrap_err()
            .to_string();
        assert!(msg.contains(r"a\u{1b}b"), "{msg}");
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("ab", 5), "ab");
        assert_eq!(truncate_chars("", 0), "");
    }

    #[test]
    fn scoreboard_letters_are_counted() {
        let c = ScoreboardCounts::from_scoreboard("_SRWKDCLGI.?");
        let each = [
            c.waiting,
            c.starting,
            c.reading,
            c.sending,
            c.keepalive,
            c.dns_lookup,
            c.closing,
            c.logging,
            c.graceful,
            c.idle_cleanup,
            c.open,
            c.other,
        ];
        assert_eq!(each, [1; 12]);
    }

    #[test]
    fn capacity_prefers_the_scoreboard_then_the_config() {
        let mut r = StatusReport::new(apache::KIND);
        assert_eq!(r.capacity(None), None);
        assert_eq!(r.capacity(Some(0)), None);
        assert_eq!(r.capacity(Some(64)), Some(64));
        r.scoreboard_capacity = Some(150);
        assert_eq!(r.capacity(Some(64)), Some(150));
    }

    #[test]
    fn total_bytes_is_kbytes_times_1024() {
        let mut r = StatusReport::new(apache::KIND);
        assert_eq!(r.total_bytes(), None);
        r.total_kbytes = Some(3);
        assert_eq!(r.total_bytes(), Some(3072));
        r.total_kbytes = Some(u64::MAX);
        assert_eq!(r.total_bytes(), None);
    }

    #[test]
    fn front_door_rejects_unreadable_pages() {
        assert_eq!(parse(None, b""), Err(ParseError::Empty));
        assert_eq!(parse(None, b" \r\n\t"), Err(ParseError::Empty));
        assert_eq!(
            parse(None, b"ok\xff"),
            Err(ParseError::NotText { offset: 2 })
        );
        assert_eq!(
            parse(None, b"BusyWorkers: 1\0"),
            Err(ParseError::NotText { offset: 14 })
        );
        let big = vec![b' '; MAX_PAGE_BYTES + 1];
        assert_eq!(
            parse(None, &big).unwrap_err().to_string(),
            "page is 1048577 bytes, over the 1 MiB limit"
        );
    }

    #[test]
    fn html_pages_are_named_as_such() {
        let page = b"\n  <!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 3.2 Final//EN\">\n<html>";
        assert_eq!(
            parse(None, page).unwrap_err().to_string(),
            "got an HTML page, not ?auto (is the status URL missing ?auto)"
        );
        assert_eq!(
            parse(Some(nginx::KIND), b"x\n<HTML>").unwrap_err(),
            ParseError::Html(nginx::KIND)
        );
    }

    #[test]
    fn kind_is_detected_and_a_mismatch_is_reported() {
        let nginx = b"Active connections: 1 \nserver accepts handled requests\n 1 1 1 \nReading: 0 Writing: 1 Waiting: 0 \n";
        assert_eq!(parse(None, nginx).map(|r| r.kind), Ok(nginx::KIND));
        assert_eq!(
            parse(None, b"BusyWorkers: 1\n").map(|r| r.kind),
            Ok(apache::KIND)
        );
        assert_eq!(
            parse(Some(apache::KIND), nginx),
            Err(ParseError::WrongKind {
                expected: apache::KIND,
                found: nginx::KIND
            })
        );
        assert_eq!(
            parse(Some(nginx::KIND), b"BusyWorkers: 1\n")
                .unwrap_err()
                .to_string(),
            "expected an nginx status page, got an apache one (check the node's status kind)"
        );
    }

    #[test]
    fn server_kind_displays_lowercase() {
        assert_eq!(nginx::KIND.to_string(), "nginx");
        assert_eq!(format!("{:?}", apache::KIND), "ServerKind(\"apache\")");
    }

    #[test]
    fn kinds_are_unique_and_named() {
        for (i, k) in KINDS.iter().enumerate() {
            assert!(KINDS[..i].iter().all(|o| o != k), "{k} is registered twice");
            assert_eq!(ServerKind::named(k.name()), Some(*k));
            assert_eq!(k.name(), k.name().to_ascii_lowercase());
        }
        assert_ne!(ServerKind::named("nginx"), ServerKind::named("apache"));
        assert_eq!(ServerKind::named("auto"), None, "\"auto\" is not a kind");
    }
}
