//! The access log: combined log format plus the node that answered and the
//! upstream time, written by a dedicated thread so a slow disk never blocks
//! a request (lines are dropped, and counted, if it falls far behind). The
//! thread writes every 20 ms what came meanwhile (as nginx's
//! `access_log ... buffer= flush=`), so a request costs no system call.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread;

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
    pub request_line: &'a str,
    pub status: u16,
    pub body_bytes: usize,
    pub referer: &'a str,
    pub user_agent: &'a str,
    /// `group/node`, or `-` when no node answered.
    pub node: &'a str,
    /// Seconds the node took, if one was reached.
    pub upstream_seconds: Option<f64>,
    pub total_seconds: f64,
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
pub fn format_line(e: &Entry<'_>, at: OffsetDateTime) -> String {
    let ts = at
        .format(format_description!(
            "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] [offset_hour sign:mandatory][offset_minute]"
        ))
        .unwrap_or_default();
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            escape(s)
        }
    };
    let upstream = e
        .upstream_seconds
        .map_or("-".to_string(), |s| format!("{s:.3}"));
    format!(
        "{} - - [{ts}] \"{}\" {} {} \"{}\" \"{}\" node={} upstream_time={upstream} request_time={:.3}\n",
        e.client,
        escape(e.request_line),
        e.status,
        e.body_bytes,
        dash(e.referer),
        dash(e.user_agent),
        e.node,
        e.total_seconds,
    )
}

/// Escape quotes, backslashes and control bytes as nginx does (`\xHH`).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_format_with_node_and_times() {
        let at = OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap();
        let line = format_line(
            &Entry {
                client: "127.0.0.1",
                request_line: "GET /a\"b HTTP/1.1",
                status: 200,
                body_bytes: 512,
                referer: "",
                user_agent: "curl/8.0",
                node: "web/web1",
                upstream_seconds: Some(0.0021),
                total_seconds: 0.0032,
            },
            at,
        );
        assert_eq!(
            line,
            "127.0.0.1 - - [18/Nov/2026:11:06:40 +0000] \"GET /a\\\"b HTTP/1.1\" 200 512 \"-\" \"curl/8.0\" node=web/web1 upstream_time=0.002 request_time=0.003\n"
        );
    }
}
