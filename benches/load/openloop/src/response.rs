//! Reading one HTTP/1.x response off a `Connection: close` exchange: when it
//! is complete, its status, and which node answered it.

/// What the response head says, once all of it has arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Where the body starts in the buffer.
    pub body_start: usize,
    /// `Content-Length`, unless the body is chunked (then it ends at EOF,
    /// as the request asked for `Connection: close`).
    pub length: Option<usize>,
    /// The node-naming header's value, if the response has it.
    pub node: Option<String>,
}

/// The bytes do not form an HTTP/1.x response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadResponse;

/// Parses the head from the start of `buf`; `Ok(None)` while it is
/// incomplete.
pub fn parse_head(buf: &[u8], node_header: &str) -> Result<Option<Head>, BadResponse> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let body_start = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(BadResponse),
    };
    let status = resp.code.ok_or(BadResponse)?;
    let mut length = None;
    let mut chunked = false;
    let mut node = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).map_err(|_| BadResponse)?;
            length = Some(text.trim().parse::<usize>().map_err(|_| BadResponse)?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked |= h
                .value
                .to_ascii_lowercase()
                .windows(7)
                .any(|w| w == b"chunked");
        } else if h.name.eq_ignore_ascii_case(node_header) {
            node = Some(String::from_utf8_lossy(h.value).trim().to_owned());
        }
    }
    Ok(Some(Head {
        status,
        body_start,
        length: if chunked { None } else { length },
        node,
    }))
}

impl Head {
    /// Whether `buf` (head included) holds the whole body.
    pub fn complete(&self, buf: &[u8]) -> bool {
        matches!(self.length, Some(len) if buf.len() - self.body_start >= len)
    }

    /// The node that answered: the node header, or else the first word
    /// after "node " in the body's first 200 bytes.
    pub fn node(&self, buf: &[u8]) -> Option<String> {
        if let Some(n) = &self.node {
            return Some(n.clone());
        }
        let body = &buf[self.body_start.min(buf.len())..];
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
        let at = text.find("node ")?;
        text[at + 5..].split_whitespace().next().map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_decides_completeness() {
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Node: n2\r\n\r\nhel";
        let head = parse_head(buf, "x-node").unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.length, Some(5));
        assert!(!head.complete(buf));
        let whole = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Node: n2\r\n\r\nhello";
        assert!(head.complete(whole));
        assert_eq!(head.node(whole).as_deref(), Some("n2"));
    }

    #[test]
    fn partial_head_waits_and_garbage_is_bad() {
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", "x-node"),
            Ok(None)
        );
        assert_eq!(
            parse_head(b"SSH-2.0-OpenSSH\r\n\r\n", "x-node"),
            Err(BadResponse)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "x-node"),
            Err(BadResponse)
        );
    }

    #[test]
    fn chunked_body_ends_at_eof_and_node_comes_from_the_body() {
        let buf = b"HTTP/1.1 502 Bad\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n9\r\nnode n3 x\r\n";
        let head = parse_head(buf, "x-node").unwrap().unwrap();
        assert_eq!(head.status, 502);
        assert_eq!(head.length, None);
        assert!(!head.complete(buf));
        assert_eq!(head.node(buf).as_deref(), Some("n3"));
    }
}
