//! An upgraded connection (WebSocket): after the node's `101 Switching
//! Protocols` went to the visitor, bytes are copied both ways until each
//! side has finished sending. The connection closes when nothing moved
//! either way for the node read timeout, as nginx's `proxy_read_timeout`
//! ends an idle WebSocket.

use std::time::Duration;

use pingora::protocols::Stream;
use pingora::{Error, ErrorType, OrErr, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::http1::Io;

const COPY_BUFFER: usize = 16 * 1024;

/// Copy both ways until both directions have ended, or nothing moved for
/// `idle`.
pub async fn run(visitor: &mut Io<Stream>, node: &mut Io<TcpStream>, idle: Duration) -> Result<()> {
    // What each side sent right after the handshake.
    let early = visitor.unread().len();
    if early > 0 {
        let bytes = visitor.unread().to_vec();
        visitor.consume(early);
        node.write_all(&bytes, idle)
            .await
            .or_err(ErrorType::WriteError, "to the node")
            .map_err(|e| e.into_up())?;
    }
    let early = node.unread().len();
    if early > 0 {
        let bytes = node.unread().to_vec();
        node.consume(early);
        visitor
            .write_all(&bytes, idle)
            .await
            .or_err(ErrorType::WriteError, "to the visitor")
            .map_err(|e| e.into_down())?;
    }
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
                let len = read.or_err(ErrorType::ReadError, "from the visitor").map_err(|e| e.into_down())?;
                if len == 0 {
                    visitor_done = true;
                    let _ = n.shutdown().await;
                } else {
                    n.write_all(&from_visitor[..len]).await
                        .or_err(ErrorType::WriteError, "to the node").map_err(|e| e.into_up())?;
                }
            }
            read = n.read(&mut from_node), if !node_done => {
                let len = read.or_err(ErrorType::ReadError, "from the node").map_err(|e| e.into_up())?;
                if len == 0 {
                    node_done = true;
                    let _ = v.shutdown().await;
                } else {
                    v.write_all(&from_node[..len]).await
                        .or_err(ErrorType::WriteError, "to the visitor").map_err(|e| e.into_down())?;
                    v.flush().await.or_err(ErrorType::WriteError, "to the visitor").map_err(|e| e.into_down())?;
                }
            }
            () = &mut deadline => {
                return Err(Error::explain(ErrorType::ReadTimedout, "upgraded connection idle").into_up());
            }
        }
        deadline.as_mut().reset(tokio::time::Instant::now() + idle);
    }
    Ok(())
}
