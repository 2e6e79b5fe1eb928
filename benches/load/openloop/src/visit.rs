//! One visitor: a new TCP connection, one `GET` with `Connection: close`,
//! the whole response read, then closed; bounded by a deadline counted from
//! the visitor's intended arrival time.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::response::{self, BadResponse};

/// How one visit ended.
#[derive(Debug, Clone)]
pub struct Record {
    /// How late the generator started the visit (its own delay; part of
    /// the latency).
    pub lag: Duration,
    /// From the intended arrival time to the end of the visit.
    pub latency: Duration,
    pub status: Option<u16>,
    pub node: Option<String>,
    /// `None` when a whole response arrived; "timeout", or what went wrong.
    pub error: Option<String>,
}

/// What every visitor sends, and to where.
pub struct Target {
    pub addr: SocketAddr,
    pub request: Vec<u8>,
    pub node_header: String,
    pub timeout: Duration,
}

/// Runs one visit that was due at `intended`.
pub async fn visit(target: &Target, intended: Instant) -> Record {
    let started = Instant::now();
    let deadline = intended + target.timeout;
    let outcome = tokio::time::timeout_at(deadline.into(), exchange(target)).await;
    let latency = Instant::now().saturating_duration_since(intended);
    let lag = started.saturating_duration_since(intended);
    let (status, node, error) = match outcome {
        Ok(Ok((status, node))) => (Some(status), node, None),
        Ok(Err(failure)) => (None, None, Some(failure.name())),
        Err(_) => (None, None, Some("timeout".to_owned())),
    };
    Record {
        lag,
        latency,
        status,
        node,
        error,
    }
}

/// Why a visit got no whole response.
#[derive(Debug)]
enum Failure {
    Io(io::ErrorKind),
    BadResponse,
    /// The connection ended before the whole response came.
    ClosedEarly,
}

impl Failure {
    fn name(&self) -> String {
        match self {
            Failure::Io(kind) => format!("{kind:?}"),
            Failure::BadResponse => "BadResponse".to_owned(),
            Failure::ClosedEarly => "ClosedEarly".to_owned(),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e.kind())
    }
}

impl From<BadResponse> for Failure {
    fn from(_: BadResponse) -> Self {
        Failure::BadResponse
    }
}

/// Connect, send, read to the end: the status and the node that answered.
async fn exchange(target: &Target) -> Result<(u16, Option<String>), Failure> {
    let mut stream = TcpStream::connect(target.addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(&target.request).await?;
    let mut buf = Vec::with_capacity(4096);
    let mut head = None;
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(buf.capacity());
        }
        let n = stream.read_buf(&mut buf).await?;
        if head.is_none() {
            head = response::parse_head(&buf, &target.node_header)?;
        }
        match &head {
            Some(h) if h.complete(&buf) => return Ok((h.status, h.node(&buf))),
            // No Content-Length (or chunked): the body ends at EOF.
            Some(h) if n == 0 && h.length.is_none() => return Ok((h.status, h.node(&buf))),
            _ if n == 0 => return Err(Failure::ClosedEarly),
            _ => {}
        }
    }
}
