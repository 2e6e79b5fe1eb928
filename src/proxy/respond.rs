//! Local answers: the short plain-text responses the proxy writes itself
//! (403 for a node status page, 502/504 when no node answered, 400 for a
//! request it cannot read), and which status an error ends in.

use pingora::{Error, ErrorSource, ErrorType};

use super::http1::{put_header, put_status_line};

/// Append a short plain-text response to `out`, with a `Retry-After`
/// header when `retry_after` (seconds) is given; `keep`: the visitor's
/// connection stays open after it.
pub fn plain_response_retry(
    out: &mut Vec<u8>,
    code: u16,
    body: &str,
    keep: bool,
    retry_after: Option<u64>,
) {
    put_status_line(out, code, b"");
    if let Some(secs) = retry_after {
        put_header(out, b"Retry-After", secs.to_string().as_bytes());
    }
    put_header(out, b"Content-Type", b"text/plain; charset=utf-8");
    put_header(out, b"Content-Length", body.len().to_string().as_bytes());
    put_header(out, b"Cache-Control", b"no-store");
    if !keep {
        put_header(out, b"Connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

/// Append a `308 Permanent Redirect` to `location` (method and body kept
/// by the visitor on the new request); the length of its body.
pub fn redirect_response(out: &mut Vec<u8>, location: &str, keep: bool) -> usize {
    const BODY: &str = REDIRECT_BODY;
    put_status_line(out, 308, b"");
    put_header(out, b"Location", location.as_bytes());
    put_header(out, b"Content-Type", b"text/plain; charset=utf-8");
    put_header(out, b"Content-Length", BODY.len().to_string().as_bytes());
    if !keep {
        put_header(out, b"Connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(BODY.as_bytes());
    BODY.len()
}

/// The body of a `308 Permanent Redirect`.
pub const REDIRECT_BODY: &str = "308 Permanent Redirect\n";

/// The body of a local answer with this code.
pub fn plain_body(code: u16) -> &'static str {
    match code {
        404 => "404 Not Found\n",
        403 => "403 Forbidden\n",
        405 => "405 Method Not Allowed\n",
        502 => "502 Bad Gateway: no node of this site could be reached\n",
        503 => "503 Service Unavailable\n",
        504 => "504 Gateway Timeout: the site's node did not answer in time\n",
        400 => "400 Bad Request\n",
        413 => "413 Content Too Large\n",
        431 => "431 Request Header Fields Too Large\n",
        501 => "501 Not Implemented: unsupported transfer coding\n",
        _ => "500 Internal Server Error\n",
    }
}

/// A connect, read or write that ran out of time.
pub fn is_timeout(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    )
}

/// The status a failed request is answered with; 0 when the visitor's own
/// connection failed and nothing can be sent. `timed_out`: the last attempt
/// on a node timed out.
pub fn status_for_error(e: &Error, timed_out: bool) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        _ if is_timeout(e) && e.esource() == &ErrorSource::Upstream => 504,
        _ => match e.esource() {
            ErrorSource::Upstream => {
                if timed_out {
                    504
                } else {
                    502
                }
            }
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError
                | ErrorType::ReadError
                | ErrorType::ConnectionClosed
                | ErrorType::ReadTimedout
                | ErrorType::WriteTimedout => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_for_errors() {
        let e = |t: ErrorType, up: bool| {
            let e = Error::explain(t, "x");
            if up {
                e.into_up()
            } else {
                e.into_down()
            }
        };
        assert_eq!(
            status_for_error(&e(ErrorType::HTTPStatus(503), false), false),
            503
        );
        assert_eq!(
            status_for_error(&e(ErrorType::ReadTimedout, true), false),
            504
        );
        assert_eq!(
            status_for_error(&e(ErrorType::ConnectRefused, true), false),
            502
        );
        assert_eq!(
            status_for_error(&e(ErrorType::ConnectRefused, true), true),
            504
        );
        assert_eq!(status_for_error(&e(ErrorType::ReadError, false), false), 0);
        assert_eq!(
            status_for_error(&e(ErrorType::ReadTimedout, false), false),
            0
        );
        assert_eq!(
            status_for_error(&e(ErrorType::InvalidHTTPHeader, false), false),
            400
        );
        assert_eq!(
            status_for_error(&Error::explain(ErrorType::InternalError, "x"), false),
            500
        );
    }
}
