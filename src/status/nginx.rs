//! nginx `stub_status` page.
//!
//! Always four lines, each ending in a space:
//!
//! ```text
//! Active connections: 9
//! server accepts handled requests
//!  34 34 34
//! Reading: 3 Writing: 1 Waiting: 5
//! ```
//!
//! `Reading + Writing` are the connections being worked on (the status
//! request itself is one of the writers); `Waiting` are idle keep-alives, so
//! they are not busy. nginx prints no capacity. Blank lines are skipped and
//! anything after the fourth line is ignored.

use super::rates::went_down;
use super::{parse_count, NginxCounters, ParseError, ServerKind, StatusPage, StatusReport};

/// `status_kind = "nginx"`.
pub const KIND: ServerKind = ServerKind::new(&Nginx);

/// nginx `stub_status` as a [`StatusPage`].
pub struct Nginx;

impl StatusPage for Nginx {
    fn name(&self) -> &'static str {
        "nginx"
    }

    fn recognise(&self, text: &str) -> bool {
        text.trim_start().starts_with("Active connections:")
    }

    fn parse(&self, text: &str) -> Result<StatusReport, ParseError> {
        parse(text)
    }

    fn html_error(&self) -> &'static str {
        "got an HTML page, not stub_status text (is the status URL right)"
    }

    /// `requests` is `total_accesses` (checked by the common rules); the
    /// connection counters going down are a restart too.
    fn restarted(&self, prev: &StatusReport, cur: &StatusReport) -> bool {
        let counter = |r: &StatusReport, c: fn(&NginxCounters) -> u64| r.nginx.map(|n| c(&n));
        went_down(counter(prev, |n| n.accepts), counter(cur, |n| n.accepts))
            || went_down(counter(prev, |n| n.handled), counter(cur, |n| n.handled))
    }
}

/// Parses a `stub_status` page.
pub fn parse(body: &str) -> Result<StatusReport, ParseError> {
    let mut lines = body
        .lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty());
    let mut next = |what| lines.next().ok_or(ParseError::Missing(what));

    let active = active_connections(next("`Active connections: N`")?)?;
    header(next("`server accepts handled requests`")?)?;
    let [accepts, handled, requests] = totals(next("accepts/handled/requests numbers")?)?;
    let [reading, writing, waiting] = states(next("`Reading: N Writing: N Waiting: N`")?)?;

    let mut report = StatusReport::new(KIND);
    report.busy_workers = reading.saturating_add(writing);
    report.total_accesses = Some(requests);
    report.nginx = Some(NginxCounters {
        active,
        accepts,
        handled,
        requests,
        reading,
        writing,
        waiting,
    });
    Ok(report)
}

type Line<'a> = (usize, &'a str);

fn active_connections((number, line): Line) -> Result<u32, ParseError> {
    const EXPECTED: &str = "`Active connections: N`";
    match line.strip_prefix("Active connections:") {
        Some(value) => parse_count(number, "Active connections", value.trim()),
        None => Err(malformed(number, EXPECTED)),
    }
}

fn header((number, line): Line) -> Result<(), ParseError> {
    const EXPECTED: &str = "`server accepts handled requests`";
    let words = line.split_whitespace();
    if words.eq(["server", "accepts", "handled", "requests"]) {
        Ok(())
    } else {
        Err(malformed(number, EXPECTED))
    }
}

fn totals((number, line): Line) -> Result<[u64; 3], ParseError> {
    const EXPECTED: &str = "three numbers (accepts handled requests)";
    let mut words = line.split_whitespace();
    let mut take = |key| match words.next() {
        Some(word) => parse_count(number, key, word),
        None => Err(malformed(number, EXPECTED)),
    };
    let values = [take("accepts")?, take("handled")?, take("requests")?];
    match words.next() {
        None => Ok(values),
        Some(_) => Err(malformed(number, EXPECTED)),
    }
}

fn states((number, line): Line) -> Result<[u32; 3], ParseError> {
    const EXPECTED: &str = "`Reading: N Writing: N Waiting: N`";
    let mut words = line.split_whitespace();
    let mut take = |label: &str, key| match (words.next(), words.next()) {
        (Some(word), Some(value)) if word == label => parse_count(number, key, value),
        _ => Err(malformed(number, EXPECTED)),
    };
    let values = [
        take("Reading:", "Reading")?,
        take("Writing:", "Writing")?,
        take("Waiting:", "Waiting")?,
    ];
    match words.next() {
        None => Ok(values),
        Some(_) => Err(malformed(number, EXPECTED)),
    }
}

fn malformed(line: usize, expected: &'static str) -> ParseError {
    ParseError::Malformed { line, expected }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "Active connections: 9 \nserver accepts handled requests\n 34 33 32 \nReading: 3 Writing: 1 Waiting: 5 \n";

    #[test]
    fn reads_all_figures() {
        let r = parse(PAGE).unwrap();
        assert_eq!(r.busy_workers, 4);
        assert_eq!(r.idle_workers, None);
        assert_eq!(r.total_accesses, Some(32));
        assert_eq!(r.capacity(None), None);
        assert_eq!(
            r.nginx,
            Some(NginxCounters {
                active: 9,
                accepts: 34,
                handled: 33,
                requests: 32,
                reading: 3,
                writing: 1,
                waiting: 5
            })
        );
    }

    #[test]
    fn errors_name_the_line() {
        let err = |page: &str| parse(page).unwrap_err().to_string();
        assert_eq!(
            err("Active connections: x\n"),
            "line 1: Active connections: `x` is not a number"
        );
        assert_eq!(
            err("Active connections: 1\n"),
            "missing `server accepts handled requests` line"
        );
        assert_eq!(
            err("Active connections: 1\nserver accepts handled requests\n 1 2\n"),
            "line 3: expected three numbers (accepts handled requests)"
        );
        assert_eq!(
            err(&PAGE.replace("Writing: 1", "Writing: -1")),
            "line 4: Writing: `-1` is negative"
        );
        assert_eq!(
            err(&PAGE.replace("Waiting: 5", "Waiting: 5 Extra: 1")),
            "line 4: expected `Reading: N Writing: N Waiting: N`"
        );
        assert_eq!(err("hello\n"), "line 1: expected `Active connections: N`");
    }

    #[test]
    fn blank_lines_and_crlf_are_tolerated() {
        let page = PAGE.replace('\n', "\r\n\r\n");
        assert_eq!(parse(&page).map(|r| r.busy_workers), Ok(4));
    }
}
