//! An upgraded connection (WebSocket): after the node's `101 Switching
//! Protocols` went to the visitor, bytes are copied both ways until each
//! side has finished sending. The read timeouts of both sides still apply,
//! as nginx's `proxy_read_timeout` does to a WebSocket.

use pingora::protocols::http::v1::client::HttpSession as NodeSession;
use pingora::protocols::http::ServerSession;
use pingora::Result;

/// Copy both ways until both directions have ended.
pub async fn run(visitor: &mut ServerSession, node: &mut NodeSession) -> Result<()> {
    node.maybe_upgrade_body_writer();
    let mut from_visitor_done = false;
    let mut from_node_done = false;
    while !(from_visitor_done && from_node_done) {
        tokio::select! {
            read = visitor.read_request_body(), if !from_visitor_done => {
                match read.map_err(|e| e.into_down())? {
                    Some(bytes) => {
                        node.write_body(&bytes).await.map_err(|e| e.into_up())?;
                    }
                    None => {
                        from_visitor_done = true;
                        node.finish_body().await.map_err(|e| e.into_up())?;
                    }
                }
            }
            read = node.read_body_bytes(), if !from_node_done => {
                match read.map_err(|e| e.into_up())? {
                    Some(bytes) => {
                        visitor
                            .write_response_body(bytes, false)
                            .await
                            .map_err(|e| e.into_down())?;
                    }
                    None => {
                        from_node_done = true;
                        visitor.finish_body().await.map_err(|e| e.into_down())?;
                    }
                }
            }
        }
    }
    Ok(())
}
