//! An upgraded connection (WebSocket): after the node's `101 Switching
//! Protocols` went to the visitor, bytes are copied both ways until each
//! side has finished sending. The connection closes when nothing moved
//! either way for the node read timeout, as nginx's `proxy_read_timeout`
//! ends an idle WebSocket.

use std::io;
use std::time::Duration;

use pingora::protocols::Stream;
use pingora::{Error, ErrorType, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::http1::Io;

const COPY_BUFFER: usize = 16 * 1024;

/// Which way bytes go, and so which side an error is blamed on.
#[derive(Clone, Copy)]
enum Way {
    ToNode,
    ToVisitor,
}

impl Way {
    fn read_error(self, e: io::Error) -> Box<Error> {
        match self {
            Way::ToNode => Error::because(ErrorType::ReadError, "from the visitor", e).into_down(),
            Way::ToVisitor => Error::because(ErrorType::ReadError, "from the node", e).into_up(),
        }
    }

    fn write_error(self, e: io::Error) -> Box<Error> {
        match self {
            Way::ToNode => Error::because(ErrorType::WriteError, "to the node", e).into_up(),
            Way::ToVisitor => {
                Error::because(ErrorType::WriteError, "to the visitor", e).into_down()
            }
        }
    }
}

/// Copy both ways until both directions have ended, or nothing moved for
/// `idle`.
pub async fn run(visitor: &mut Io<Stream>, node: &mut Io<TcpStream>, idle: Duration) -> Result<()> {
    // What each side sent right after the handshake.
    pass_early(visitor, node, idle, Way::ToNode).await?;
    pass_early(node, visitor, idle, Way::ToVisitor).await?;
    let (v, n) = (&mut visitor.io, &mut node.io);
    let mut from_visitor = vec![0u8; COPY_BUFFER];
    let mut from_node = vec![0u8; COPY_BUFFER];
    let mut visitor_done = false;
    let mut node_done = false;
    let deadline = tokio::time::sleep(idle);
    tokio::pin!(deadline);
    while !(visitor_done && node_done) {
        tokio::select! {
            read = v.read(&mut from_visitor), if !visitor_done => {
                visitor_done = relay(read, &from_visitor, n, Way::ToNode).await?;
            }
            read = n.read(&mut from_node), if !node_done => {
                node_done = relay(read, &from_node, v, Way::ToVisitor).await?;
            }
            () = &mut deadline => {
                return Err(Error::explain(ErrorType::ReadTimedout, "upgraded connection idle").into_up());
            }
        }
        deadline.as_mut().reset(tokio::time::Instant::now() + idle);
    }
    Ok(())
}

/// The bytes `from` had buffered beyond the handshake, to `to`.
async fn pass_early<A, B>(from: &mut Io<A>, to: &mut Io<B>, idle: Duration, way: Way) -> Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let early = from.unread().len();
    if early > 0 {
        to.write_all(from.unread(), idle)
            .await
            .map_err(|e| way.write_error(e))?;
        from.consume(early);
    }
    Ok(())
}

/// What one read brought, on to the other side; at the end of the stream,
/// the other side's writing ends too. Whether the reading side is done.
async fn relay<W: AsyncWrite + Unpin>(
    read: io::Result<usize>,
    buf: &[u8],
    to: &mut W,
    way: Way,
) -> Result<bool> {
    let len = read.map_err(|e| way.read_error(e))?;
    if len == 0 {
        let _ = to.shutdown().await;
        return Ok(true);
    }
    to.write_all(&buf[..len])
        .await
        .map_err(|e| way.write_error(e))?;
    to.flush().await.map_err(|e| way.write_error(e))?;
    Ok(false)
}
