//! One GET of a node's status page over an open connection: the request
//! written, the response head parsed and its body de-framed with the
//! proxy's own HTTP/1 code (`proxy::http1`, the same strict framing the
//! visitors' responses get), capped at [`MAX_PAGE_BYTES`]. The connection
//! is given back when the response leaves it reusable (keep-alive, a
//! framed body, nothing after it), so the same code reads a page over the
//! scraper's own connection and over one of the proxy's pooled
//! connections to the node (`status::scraper`, "a page read over a
//! visitor's connection").

use std::time::Duration;

use http::Method;
use tokio::net::TcpStream;

use crate::config::StatusUrl;
use crate::proxy::http1::{framing, Body, Framing, Io, Limits, ResponseHead};
use crate::proxy::upstream::read_response_head;
use crate::status::MAX_PAGE_BYTES;

/// How much one read asks for: a whole Apache `?auto` page (under 1 KiB
/// without the scoreboard's extended lines, a few KiB with them) in one.
const READ_CHUNK: usize = 16 * 1024;

/// Why a page could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// In words, for the status page and the log.
    pub reason: String,
    /// Nothing came back on the connection (it was closed or failed before
    /// any byte of a response): on a reused connection, the node may have
    /// closed it while it was idle, and a new one may do.
    pub before_response: bool,
}

impl Failure {
    fn new(reason: String, before_response: bool) -> Failure {
        Failure {
            reason,
            before_response,
        }
    }
}

/// A page read: its body, and the connection when it may carry another
/// request.
#[derive(Debug)]
pub struct Page {
    pub body: Vec<u8>,
    pub conn: Option<TcpStream>,
}

/// The request for `url`'s page.
pub fn request(url: &StatusUrl) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: webcluster/{}\r\nAccept: text/plain\r\n\r\n",
        url.path_and_query,
        url.host,
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

/// A transport error in words, for the status page and the log
/// (`connection refused` rather than pingora's `ConnectRefused`).
pub fn in_words(e: &pingora::Error) -> String {
    use pingora::ErrorType as E;
    match e.etype() {
        E::ConnectTimedout => "connect timed out".into(),
        E::ConnectRefused => "connection refused".into(),
        E::ConnectionClosed => "connection closed by the node".into(),
        E::ReadTimedout => "read timed out".into(),
        E::InvalidHTTPHeader => "invalid HTTP response".into(),
        _ => e.to_string(),
    }
}

/// GET `url`'s page over `conn`, each read and write bounded by `timeout`
/// (the caller bounds the whole).
pub async fn get(conn: TcpStream, url: &StatusUrl, timeout: Duration) -> Result<Page, Failure> {
    let mut io = Io::new(conn, READ_CHUNK);
    io.write_all(&request(url), timeout)
        .await
        .map_err(|e| Failure::new(format!("sending the request failed: {e}"), true))?;
    let mut head = ResponseHead::default();
    if let Err(e) = read_response_head(&mut io, &mut head, &Limits::default(), timeout).await {
        let before = io.unread().is_empty();
        return Err(Failure::new(
            format!("reading the response failed: {}", in_words(&e)),
            before,
        ));
    }
    if head.status != 200 {
        let hint = match head.status {
            401 | 403 => " (does the node allow the proxy's address to read it?)",
            404 => " (is mod_status / stub_status enabled at this path?)",
            _ => "",
        };
        return Err(Failure::new(
            format!("HTTP {} from the status page{hint}", head.status),
            false,
        ));
    }
    let (framing, _) = framing::response(&head.fields, head.version, head.status, &Method::GET)
        .map_err(|e| Failure::new(format!("invalid HTTP response: {e}"), false))?;
    let mut body = Body::new(framing);
    let mut page = Vec::new();
    loop {
        if !io.unread().is_empty() {
            let used = body
                .advance(io.unread(), Some(&mut page))
                .map_err(|_| Failure::new("invalid HTTP response: bad chunk".into(), false))?;
            io.consume(used);
            if page.len() > MAX_PAGE_BYTES {
                return Err(Failure::new(
                    format!("status page over {MAX_PAGE_BYTES} bytes"),
                    false,
                ));
            }
        }
        if body.is_done() {
            break;
        }
        let read = io
            .fill(timeout)
            .await
            .map_err(|e| Failure::new(format!("reading the page failed: {e}"), false))?;
        if read == 0 {
            if body.end_of_stream() {
                break;
            }
            return Err(Failure::new(
                "reading the page failed: connection closed by the node".into(),
                false,
            ));
        }
    }
    let reusable =
        head.keeps_connection() && framing != Framing::UntilClose && io.unread().is_empty();
    Ok(Page {
        body: page,
        conn: reusable.then(|| io.into_inner()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn url(address: std::net::SocketAddr) -> StatusUrl {
        StatusUrl {
            url: format!("http://{address}/server-status?auto"),
            address,
            host: "localhost".into(),
            path_and_query: "/server-status?auto".into(),
        }
    }

    /// A node that answers one request with `answer` (then closes when
    /// `close`), and what it received.
    async fn node(
        answer: &'static [u8],
        close: bool,
    ) -> (StatusUrl, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut got = vec![0; 4096];
            let n = s.read(&mut got).await.expect("read");
            got.truncate(n);
            s.write_all(answer).await.expect("write");
            if !close {
                // Hold the connection open until the reader is done.
                let _ = s.read(&mut [0; 1]).await;
            }
            got
        });
        (url(address), task)
    }

    async fn fetch(answer: &'static [u8], close: bool) -> (Result<Page, Failure>, Vec<u8>) {
        let (url, task) = node(answer, close).await;
        let conn = TcpStream::connect(url.address).await.expect("connect");
        let page = get(conn, &url, Duration::from_secs(5)).await;
        // The connection closed lets the node's task end.
        let page = page.map(|p| Page {
            body: p.body,
            conn: None,
        });
        (page, task.await.expect("node"))
    }

    #[tokio::test]
    async fn the_request_names_the_page_and_its_host() {
        let (page, got) = fetch(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nTotal", false).await;
        assert_eq!(page.expect("page").body, b"Total");
        let got = String::from_utf8(got).expect("text");
        assert!(
            got.starts_with("GET /server-status?auto HTTP/1.1\r\nHost: localhost\r\n"),
            "{got}"
        );
    }

    #[tokio::test]
    async fn framings() {
        // (answer, the node closes after it, body, connection reusable)
        let table: &[(&'static [u8], bool, &[u8], bool)] = &[
            (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false, b"abc", true),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                false,
                b"abcde",
                true,
            ),
            (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc", true, b"abc", false),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc", false, b"abc", false),
            (b"HTTP/1.0 200 OK\r\n\r\nabc", true, b"abc", false),
        ];
        for (answer, close, want, reusable) in table {
            let (url, task) = node(answer, *close).await;
            let conn = TcpStream::connect(url.address).await.expect("connect");
            let page = get(conn, &url, Duration::from_secs(5)).await.expect("page");
            assert_eq!(page.body, *want, "{}", String::from_utf8_lossy(answer));
            assert_eq!(
                page.conn.is_some(),
                *reusable,
                "{}",
                String::from_utf8_lossy(answer)
            );
            drop(page);
            task.await.expect("node");
        }
    }

    #[tokio::test]
    async fn refusals() {
        // (answer, the node closes after it, the reason has, before any response)
        let table: &[(&'static [u8], bool, &str, bool)] = &[
            (
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
                false,
                "HTTP 403",
                false,
            ),
            (
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                false,
                "mod_status",
                false,
            ),
            (b"", true, "closed", true),
            (b"garbage\r\n\r\n", true, "invalid HTTP response", false),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
                true,
                "invalid HTTP response",
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
                true,
                "bad chunk",
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
                true,
                "closed",
                false,
            ),
        ];
        for (answer, close, has, before) in table {
            let (page, _) = fetch(answer, *close).await;
            let e = page.expect_err(&String::from_utf8_lossy(answer));
            assert!(
                e.reason.contains(has),
                "{}: {e:?}",
                String::from_utf8_lossy(answer)
            );
            assert_eq!(
                e.before_response,
                *before,
                "{}: {e:?}",
                String::from_utf8_lossy(answer)
            );
        }
    }

    #[tokio::test]
    async fn a_page_over_the_cap_is_refused() {
        let (url, task) = {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let address = listener.local_addr().expect("addr");
            let task = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut got = [0; 4096];
                let _ = s.read(&mut got).await;
                let big = MAX_PAGE_BYTES + 10;
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {big}\r\n\r\n").as_bytes(),
                    )
                    .await;
                let _ = s.write_all(&vec![b'x'; big]).await;
            });
            (url(address), task)
        };
        let conn = TcpStream::connect(url.address).await.expect("connect");
        let e = get(conn, &url, Duration::from_secs(5))
            .await
            .expect_err("too big");
        assert!(e.reason.contains("over"), "{e:?}");
        task.abort();
    }
}
