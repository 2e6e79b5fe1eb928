//! The access log: combined log format plus the node that answered and the
//! upstream time, written by a dedicated thread so a slow disk never blocks
//! a request (lines are dropped, and counted, if it falls far behind). The
//! thread writes every 20 ms what came meanwhile (as nginx's
//! `access_log ... buffer= flush=`), so a request costs no system call.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use time::macros::format_description;
use time::OffsetDateTime;

/// Lines buffered before new ones are dropped: what [`WRITE_EVERY`] brings
/// at 800,000 requests a second.
const QUEUE: usize = 16 * 1024;

/// How often the writer thread writes the lines queued meanwhile.
const WRITE_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// One request's log fields.
#[derive(Debug)]
pub struct Entry<'a> {
    pub client: &'a str,
    /// The request line: method, target and protocol (`HTTP/1.1`).
    pub method: &'a str,
    pub target: &'a str,
    pub version: &'a str,
    pub status: u16,
    pub body_bytes: usize,
    pub referer: &'a str,
    pub user_agent: &'a str,
    /// The group and the node that answered (`group/node`), if one did.
    pub node: Option<(&'a str, &'a str)>,
    /// How long the node took, if one was reached.
    pub upstream_time: Option<Duration>,
    pub total_time: Duration,
}

#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: SyncSender<String>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Log to standard output.
    pub fn stdout() -> AccessLog {
        Self::spawn(Box::new(io::stdout()))
    }

    /// Append to a file (created if missing).
    pub fn file(path: &Path) -> io::Result<AccessLog> {
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self::spawn(Box::new(f)))
    }

    fn spawn(out: Box<dyn Write + Send>) -> AccessLog {
        let (tx, rx) = sync_channel(QUEUE);
        let _ = thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, out));
        AccessLog {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn log(&self, e: &Entry<'_>) {
        match self.tx.try_send(format_line(e, OffsetDateTime::now_utc())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The writer's loop: every [`WRITE_EVERY`] it writes what was queued
/// meanwhile and flushes once. It never blocks waiting for a line: a sender
/// then only queues its line (no wake-up of this thread, no system call per
/// request, which on a machine with as many cores as worker threads took
/// the workers' CPU and lengthened their tail latency). Ends once every
/// sender is gone and the queue is written.
fn write_lines(rx: Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    loop {
        thread::sleep(WRITE_EVERY);
        let ended = loop {
            match rx.try_recv() {
                Ok(line) => {
                    let _ = out.write_all(line.as_bytes());
                }
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        let _ = out.flush();
        if ended {
            return;
        }
    }
}

/// `127.0.0.1 - - [27/Nov/2026:03:25:48 +0000] "GET / HTTP/1.1" 200 512 "-" "curl/8" node=web/web1 upstream_time=0.002 request_time=0.003`
///
/// Written field by field into one string (no string per field, no
/// `format!` of the whole line), with the time stamp formatted once per
/// second: about a fifth of the instructions of formatting it all anew
/// (`benches/README.md`, eighth session).
pub fn format_line(e: &Entry<'_>, at: OffsetDateTime) -> String {
    let mut line = String::with_capacity(
        160 + e.client.len()
            + e.target.len()
            + e.referer.len()
            + e.user_agent.len()
            + e.node.map_or(0, |(g, n)| g.len() + n.len()),
    );
    line.push_str(e.client);
    line.push_str(" - - [");
    push_timestamp(&mut line, at);
    line.push_str("] \"");
    push_escaped(&mut line, e.method);
    line.push(' ');
    push_escaped(&mut line, e.target);
    line.push(' ');
    push_escaped(&mut line, e.version);
    line.push_str("\" ");
    line.push_str(itoa::Buffer::new().format(e.status));
    line.push(' ');
    line.push_str(itoa::Buffer::new().format(e.body_bytes));
    line.push_str(" \"");
    push_or_dash(&mut line, e.referer);
    line.push_str("\" \"");
    push_or_dash(&mut line, e.user_agent);
    line.push_str("\" node=");
    match e.node {
        Some((group, node)) => {
            line.push_str(group);
            line.push('/');
            line.push_str(node);
        }
        None => line.push('-'),
    }
    line.push_str(" upstream_time=");
    match e.upstream_time {
        Some(d) => push_seconds(&mut line, d),
        None => line.push('-'),
    }
    line.push_str(" request_time=");
    push_seconds(&mut line, e.total_time);
    line.push('\n');
    line
}

/// Seconds with three decimals, rounded to the nearest millisecond (half
/// up), as nginx's `$request_time`: in whole numbers (formatting an `f64`
/// took a twentieth of a logged request's instructions).
fn push_seconds(line: &mut String, d: Duration) {
    // Seconds and milliseconds apart: no 128-bit division (`as_nanos`),
    // which is a library call.
    let mut secs = d.as_secs();
    let mut frac = (d.subsec_nanos() + 500_000) / 1_000_000;
    if frac == 1000 {
        secs = secs.saturating_add(1);
        frac = 0;
    }
    line.push_str(itoa::Buffer::new().format(secs));
    line.push('.');
    if frac < 100 {
        line.push('0');
    }
    if frac < 10 {
        line.push('0');
    }
    line.push_str(itoa::Buffer::new().format(frac));
}

/// `[day]/[month]/[year]:[hour]:[minute]:[second] [offset]`, formatted
/// when the second (or the offset) changes and copied otherwise.
fn push_timestamp(line: &mut String, at: OffsetDateTime) {
    thread_local! {
        static LAST: RefCell<(i64, i32, String)> = const { RefCell::new((i64::MIN, 0, String::new())) };
    }
    let key = (at.unix_timestamp(), at.offset().whole_seconds());
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if (last.0, last.1) != key {
            let stamp = at
                .format(format_description!(
                    "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] [offset_hour sign:mandatory][offset_minute]"
                ))
                .unwrap_or_default();
            *last = (key.0, key.1, stamp);
        }
        line.push_str(&last.2);
    });
}

fn push_or_dash(line: &mut String, s: &str) {
    if s.is_empty() {
        line.push('-');
    } else {
        push_escaped(line, s);
    }
}

/// The bytes copied as they are: printable ASCII but the quote and the
/// backslash. A table: one load per byte instead of three comparisons.
const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        t[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    t
};

/// Escape quotes, backslashes and control characters as nginx does
/// (`\xHH`); most fields have none and are copied whole.
fn push_escaped(line: &mut String, s: &str) {
    if s.bytes().all(|b| PLAIN[usize::from(b)]) {
        line.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                line.push('\\');
                line.push(c);
            }
            c if c.is_control() => {
                let _ = write!(line, "\\x{:02X}", c as u32);
            }
            c => line.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_format_with_node_and_times() {
        let at = OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap();
        let line = format_line(
            &Entry {
                client: "127.0.0.1",
                method: "GET",
                target: "/a\"b",
                version: "HTTP/1.1",
                status: 200,
                body_bytes: 512,
                referer: "",
                user_agent: "curl/8.0",
                node: Some(("web", "web1")),
                upstream_time: Some(Duration::from_micros(2_100)),
                total_time: Duration::from_micros(3_200),
            },
            at,
        );
        assert_eq!(
            line,
            "127.0.0.1 - - [18/Nov/2026:11:06:40 +0000] \"GET /a\\\"b HTTP/1.1\" 200 512 \"-\" \"curl/8.0\" node=web/web1 upstream_time=0.002 request_time=0.003\n"
        );
    }

    /// The escaping before fields were written in place: each field through
    /// this, then `format!`.
    fn escape_as_before(s: &str) -> String {
        let mut out = String::new();
        for c in s.chars() {
            match c {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                c if c.is_control() => out.push_str(&format!("\\x{:02X}", c as u32)),
                c => out.push(c),
            }
        }
        out
    }

    #[test]
    fn fields_are_escaped_as_before() {
        for s in [
            "plain /path?q=1",
            "quote\"and\\back",
            "tab\tnul\0del\x7f",
            "c1 \u{85} and \u{9f}, not \u{a0}",
            "ünïcode ✓",
            "",
        ] {
            let mut line = String::new();
            push_escaped(&mut line, s);
            assert_eq!(line, escape_as_before(s), "{s:?}");
        }
    }

    #[test]
    fn seconds_have_three_decimals_rounded_to_the_millisecond() {
        for (d, want) in [
            (Duration::ZERO, "0.000"),
            (Duration::from_nanos(499_999), "0.000"),
            (Duration::from_nanos(500_000), "0.001"),
            (Duration::from_micros(9_400), "0.009"),
            (Duration::from_micros(10_000), "0.010"),
            (Duration::from_micros(99_600), "0.100"),
            (Duration::from_micros(999_500), "1.000"),
            (Duration::from_millis(61_234), "61.234"),
            (Duration::from_secs(u64::MAX), "18446744073709551615.000"),
        ] {
            let mut line = String::new();
            push_seconds(&mut line, d);
            assert_eq!(line, want, "{d:?}");
            // What formatting the seconds as an f64 gave (away from ties).
            if d < Duration::from_secs(1 << 20) {
                assert_eq!(format!("{:.3}", d.as_secs_f64()), want, "{d:?}");
            }
        }
    }

    #[test]
    fn no_node_no_dash_fields_and_each_second_its_stamp() {
        let entry = Entry {
            client: "::1",
            method: "GET",
            target: "/",
            version: "HTTP/2.0",
            status: 502,
            body_bytes: 0,
            referer: "http://a/\"x\"",
            user_agent: "",
            node: None,
            upstream_time: None,
            total_time: Duration::from_micros(1_234_400),
        };
        let at = OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap();
        assert_eq!(
            format_line(&entry, at),
            "::1 - - [18/Nov/2026:11:06:40 +0000] \"GET / HTTP/2.0\" 502 0 \"http://a/\\\"x\\\"\" \"-\" node=- upstream_time=- request_time=1.234\n"
        );
        // The next second, and the same second at another offset: each
        // with its own time stamp, not the one formatted before.
        let next = format_line(&entry, at + time::Duration::seconds(1));
        assert!(next.contains("[18/Nov/2026:11:06:41 +0000]"), "{next}");
        let offset = time::UtcOffset::from_hms(2, 0, 0).unwrap();
        let east = format_line(&entry, at.to_offset(offset));
        assert!(east.contains("[18/Nov/2026:13:06:40 +0200]"), "{east}");
        assert!(format_line(&entry, at).contains("[18/Nov/2026:11:06:40 +0000]"));
    }
}
