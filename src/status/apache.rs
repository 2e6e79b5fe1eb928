//! Apache `mod_status` machine-readable page (`/server-status?auto`).
//!
//! The page is one `Key: value` per line, in this shape on 2.4:
//!
//! ```text
//! 127.0.0.1                      <- server name, no key (absent on 2.2)
//! ServerVersion: Apache/2.4.71 (Debian)
//! Server Built: 2026-11-12T08:58:41   <- keys may contain spaces
//! ...
//! Total Accesses: 45107          <- Total*, CPU*, *PerSec: ExtendedStatus only
//! CPUUser: .41                   <- floats are printed with %g
//! BusyWorkers: 9
//! IdleWorkers: 66
//! Scoreboard: ____W__W....
//! TLSSessionCacheStatus          <- mod_ssl's block follows; not read
//! CacheType: SHMCB
//! ```
//!
//! Rules: the first line is the server name when it is one word and not a
//! known key; unknown keys and keyless lines are ignored; a known key with a
//! value that is not a number is an error naming the line; when a key
//! repeats, the last one wins. Only `BusyWorkers` is required.
//!
//! Why the last `BusyWorkers`/`IdleWorkers`: before 2.4.58, mpm_event pages
//! printed the pair twice. The first pair comes from the generic scoreboard
//! walk and counts gracefully finishing (`G`) workers as busy; the second
//! comes from event's per-process table, which does not. 2.4.58 kept a
//! single pair that leaves `G` workers out of `BusyWorkers` (they now have
//! `GracefulWorkers`), so the last pair is the one that means the same thing
//! on every version.

use super::{
    bad_value, parse_count as count, truncate_chars, ParseError, ScoreboardCounts, ServerKind,
    StatusPage, StatusReport, MAX_SCOREBOARD_CHARS, MAX_TEXT_CHARS,
};

/// `status_kind = "apache"`.
pub const KIND: ServerKind = ServerKind::new(&Apache);

/// Apache `mod_status` as a [`StatusPage`].
pub struct Apache;

impl StatusPage for Apache {
    fn name(&self) -> &'static str {
        "apache"
    }

    fn recognise(&self, text: &str) -> bool {
        text.lines().any(|l| l.starts_with("BusyWorkers:"))
    }

    fn parse(&self, text: &str) -> Result<StatusReport, ParseError> {
        parse(text)
    }

    fn html_error(&self) -> &'static str {
        "got an HTML page, not ?auto (is the status URL missing ?auto)"
    }

    /// Prefork and worker hold a worker per connection; event does not. A
    /// page that does not name its MPM (2.2) counts as one that does, to be
    /// safe.
    fn worker_per_connection(&self, report: &StatusReport) -> bool {
        !report
            .mpm
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case("event"))
    }
}

/// Parses an Apache `?auto` page (2.4 prefork/worker/event, 2.2).
pub fn parse(body: &str) -> Result<StatusReport, ParseError> {
    let mut page = Page::default();
    for (index, line) in body.lines().enumerate() {
        let number = index + 1;
        let known = match line.split_once(':') {
            Some((key, value)) => page.read(number, key.trim(), value.trim())?,
            None => false,
        };
        if number == 1 && !known && is_host_name(line.trim()) {
            page.report.server_name = text(line.trim());
        }
    }
    page.finish()
}

/// What has been read so far.
struct Page {
    report: StatusReport,
    busy: Option<u32>,
    /// `Uptime:` (ExtendedStatus only); `ServerUptimeSeconds` is preferred.
    extended_uptime: Option<u64>,
    /// Slots in the (whole, uncut) scoreboard line.
    scoreboard_slots: Option<usize>,
    /// A header line only 2.4 prints was seen.
    is_2_4: bool,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            report: StatusReport::new(KIND),
            busy: None,
            extended_uptime: None,
            scoreboard_slots: None,
            is_2_4: false,
        }
    }
}

impl Page {
    /// Stores one `key: value` line; `Ok(false)` if the key is not one we read.
    fn read(&mut self, line: usize, key: &str, value: &str) -> Result<bool, ParseError> {
        let r = &mut self.report;
        match key {
            "ServerVersion" => r.server_version = text(value),
            "ServerMPM" => r.mpm = text(value),
            "RestartTime" => r.restart_time = text(value),
            "ParentServerConfigGeneration" => r.config_generation = Some(count(line, key, value)?),
            "ParentServerMPMGeneration" => r.mpm_generation = Some(count(line, key, value)?),
            "ServerUptimeSeconds" => r.uptime_seconds = Some(count(line, key, value)?),
            "Uptime" => self.extended_uptime = Some(count(line, key, value)?),
            "Total Accesses" => r.total_accesses = Some(count(line, key, value)?),
            "Total kBytes" => r.total_kbytes = Some(count(line, key, value)?),
            "CPULoad" => r.cpu_load = float(line, key, value)?,
            "CPUUser" => r.cpu_user = float(line, key, value)?,
            "CPUSystem" => r.cpu_system = float(line, key, value)?,
            "Load1" => r.load1 = float(line, key, value)?,
            "Load5" => r.load5 = float(line, key, value)?,
            "Load15" => r.load15 = float(line, key, value)?,
            "BusyWorkers" => self.busy = Some(count(line, key, value)?),
            "IdleWorkers" => r.idle_workers = Some(count(line, key, value)?),
            "GracefulWorkers" => r.graceful_workers = Some(count(line, key, value)?),
            "Processes" => r.processes = Some(count(line, key, value)?),
            "Stopping" => r.stopping = Some(count(line, key, value)?),
            "ConnsTotal" => r.conns_total = Some(count(line, key, value)?),
            "ConnsAsyncWriting" => r.conns_async_writing = Some(count(line, key, value)?),
            "ConnsAsyncKeepAlive" => r.conns_async_keep_alive = Some(count(line, key, value)?),
            "ConnsAsyncClosing" => r.conns_async_closing = Some(count(line, key, value)?),
            "ConnsAsyncWaitIO" => r.conns_async_wait_io = Some(count(line, key, value)?),
            "Scoreboard" => self.read_scoreboard(value),
            _ => return Ok(false),
        }
        if matches!(key, "ServerVersion" | "ServerMPM" | "ServerUptimeSeconds") {
            self.is_2_4 = true;
        }
        Ok(true)
    }

    fn read_scoreboard(&mut self, value: &str) {
        self.scoreboard_slots = Some(value.chars().count());
        self.report.scoreboard_counts = Some(ScoreboardCounts::from_scoreboard(value));
        self.report.scoreboard = Some(truncate_chars(value, MAX_SCOREBOARD_CHARS).to_owned());
    }

    fn finish(mut self) -> Result<StatusReport, ParseError> {
        let r = &mut self.report;
        r.busy_workers = self.busy.ok_or(ParseError::Missing("BusyWorkers"))?;
        r.uptime_seconds = r.uptime_seconds.or(self.extended_uptime);
        if self.is_2_4 {
            // On 2.2 the line is ServerLimit x ThreadLimit long: not a capacity.
            r.scoreboard_capacity = self
                .scoreboard_slots
                .and_then(|n| u32::try_from(n).ok())
                .filter(|&n| n > 0);
        }
        Ok(self.report)
    }
}

/// A `%g` float; `inf`/`nan` (CPULoad right after a start) read as unknown.
fn float(line: usize, key: &str, value: &str) -> Result<Option<f64>, ParseError> {
    match value.parse::<f64>() {
        Ok(f) => Ok(Some(f).filter(|f| f.is_finite())),
        Err(_) => Err(bad_value(line, key, value, "is not a number")),
    }
}

/// The keyless first line is a host name or address: one word (`::1` too).
fn is_host_name(line: &str) -> bool {
    !line.is_empty() && !line.contains(char::is_whitespace)
}

/// A text field, bounded; empty means absent.
fn text(value: &str) -> Option<String> {
    Some(truncate_chars(value, MAX_TEXT_CHARS).to_owned()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_2_2_page_without_server_name() {
        let r = parse("BusyWorkers: 2\nIdleWorkers: 8\nScoreboard: _W__\n").unwrap();
        assert_eq!(r.server_name, None);
        assert_eq!((r.busy_workers, r.idle_workers), (2, Some(8)));
        assert_eq!(r.scoreboard.as_deref(), Some("_W__"));
        assert_eq!(r.scoreboard_capacity, None);
    }

    #[test]
    fn keyless_first_line_is_the_server_name_even_with_colons() {
        let r = parse("::1\nServerMPM: event\nBusyWorkers: 1\nScoreboard: _W.\n").unwrap();
        assert_eq!(r.server_name.as_deref(), Some("::1"));
        assert_eq!(r.scoreboard_capacity, Some(3));
    }

    #[test]
    fn a_first_line_that_is_not_a_host_name_is_not_taken_as_one() {
        let r = parse("Server Built: Jul 29 2016\nBusyWorkers: 1\n").unwrap();
        assert_eq!(r.server_name, None);
    }

    #[test]
    fn last_busy_idle_pair_wins() {
        let page = "host\nServerMPM: event\nBusyWorkers: 7\nIdleWorkers: 43\n\
                    Processes: 2\nStopping: 0\nBusyWorkers: 5\nIdleWorkers: 45\n";
        let r = parse(page).unwrap();
        assert_eq!((r.busy_workers, r.idle_workers), (5, Some(45)));
    }

    #[test]
    fn g_floats_and_non_finite_values() {
        let r = parse("BusyWorkers: 1\nCPUUser: .41\nCPULoad: inf\nLoad1: -nan\n").unwrap();
        assert_eq!(r.cpu_user, Some(0.41));
        assert_eq!((r.cpu_load, r.load1), (None, None));
    }

    #[test]
    fn uptime_prefers_server_uptime_seconds() {
        let r = parse("BusyWorkers: 1\nUptime: 9\nServerUptimeSeconds: 8\n").unwrap();
        assert_eq!(r.uptime_seconds, Some(8));
        let r = parse("BusyWorkers: 1\nUptime: 9\n").unwrap();
        assert_eq!(r.uptime_seconds, Some(9));
    }

    #[test]
    fn errors_name_line_and_key() {
        let err = |page: &str| parse(page).unwrap_err().to_string();
        assert_eq!(err("host\nIdleWorkers: 3\n"), "missing BusyWorkers line");
        assert_eq!(
            err("host\nBusyWorkers: abc\n"),
            "line 2: BusyWorkers: `abc` is not a number"
        );
        assert_eq!(
            err("BusyWorkers: 1\nTotal kBytes: -5\n"),
            "line 2: Total kBytes: `-5` is negative"
        );
        assert_eq!(
            err("BusyWorkers: 1\nLoad5: high\n"),
            "line 2: Load5: `high` is not a number"
        );
    }

    #[test]
    fn unknown_keys_and_crlf_are_fine() {
        let r =
            parse("h\r\nFutureKey: ???\r\nTLSSessionCacheStatus\r\nBusyWorkers: 3\r\n").unwrap();
        assert_eq!(r.server_name.as_deref(), Some("h"));
        assert_eq!(r.busy_workers, 3);
    }

    #[test]
    fn long_scoreboard_is_cut_but_fully_counted() {
        let board = ".".repeat(MAX_SCOREBOARD_CHARS + 10);
        let r = parse(&format!(
            "ServerMPM: worker\nBusyWorkers: 1\nScoreboard: {board}\n"
        ))
        .unwrap();
        assert_eq!(r.scoreboard.map(|s| s.len()), Some(MAX_SCOREBOARD_CHARS));
        assert_eq!(
            r.scoreboard_capacity,
            Some(MAX_SCOREBOARD_CHARS as u32 + 10)
        );
        assert_eq!(
            r.scoreboard_counts.map(|c| c.open),
            Some(MAX_SCOREBOARD_CHARS as u32 + 10)
        );
    }
}
