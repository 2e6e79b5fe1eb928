//! Buffered I/O for both sides of the proxy: a connection and the bytes read
//! from it that are not consumed yet, each read and write bounded by a
//! timeout, and a keep-alive connection that holds no buffer while it waits.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::clock;

/// Reads of at most this many bytes into an [`Io`] that holds no buffer go
/// to a scratch buffer of the thread's first (see [`Io::fill_with`]).
const SCRATCH_READ: usize = 4096;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_READ].into_boxed_slice());
}

/// A connection and the bytes read from it that are not consumed yet.
pub struct Io<S> {
    pub io: S,
    buf: Vec<u8>,
    start: usize,
    /// How much is read at once.
    chunk: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    /// `chunk`: how many bytes one read asks for.
    pub fn new(io: S, chunk: usize) -> Io<S> {
        Io {
            io,
            buf: Vec::new(),
            start: 0,
            chunk,
        }
    }

    /// The bytes read and not consumed yet.
    pub fn unread(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Mark `n` bytes of [`Io::unread`] as used.
    pub fn consume(&mut self, n: usize) {
        consume(&mut self.buf, &mut self.start, n);
    }

    /// Give the read buffer's memory back while nothing is buffered (an
    /// idle connection then holds none).
    pub fn release(&mut self) {
        if self.start == self.buf.len() {
            self.buf = Vec::new();
            self.start = 0;
        }
    }

    /// Read more bytes after the unread ones; 0 at end of stream. An
    /// `io::ErrorKind::TimedOut` error when nothing came in `timeout`.
    /// (Not an `async fn` itself: a waiting connection holds one future
    /// less.)
    pub fn fill(
        &mut self,
        timeout: Duration,
    ) -> impl std::future::Future<Output = io::Result<usize>> + '_ {
        let want = self.chunk;
        self.fill_with(timeout, want)
    }

    /// [`Io::fill`] for a connection waiting for its next message, with the
    /// deadline's result as it is (`Err`: nothing came in `timeout`): the
    /// smallest future that waits, one read into the thread's scratch
    /// buffer (see [`Io::fill_with`]) and its deadline (an idle keep-alive
    /// connection holds this future, where `Io::fill`'s has room for both
    /// of its kinds of read).
    pub fn wait(
        &mut self,
        timeout: Duration,
    ) -> clock::Within<impl std::future::Future<Output = io::Result<usize>> + '_> {
        // One reference held, not one per field.
        let read = std::future::poll_fn(move |cx| {
            let want = self.chunk.min(SCRATCH_READ);
            poll_read_via_scratch(&mut self.io, cx, want, &mut self.buf)
        });
        clock::within(timeout, read)
    }

    /// [`Io::fill`], asking for `want` bytes at most.
    ///
    /// An `Io` that holds no buffer (new, or [`Io::release`]d while idle)
    /// and asks for at most [`SCRATCH_READ`] bytes reads into the thread's
    /// scratch buffer and keeps a copy of what came: a keep-alive
    /// connection waiting for its next request then holds no buffer of its
    /// own (as nginx frees its buffer between requests).
    pub async fn fill_with(&mut self, timeout: Duration, want: usize) -> io::Result<usize> {
        if self.buf.capacity() == 0 && want <= SCRATCH_READ {
            let (io, buf) = (&mut self.io, &mut self.buf);
            let read = std::future::poll_fn(|cx| poll_read_via_scratch(io, cx, want, buf));
            return bounded(read, timeout).await;
        }
        if self.buf.capacity() - self.buf.len() < want / 2 {
            if self.buf.is_empty() {
                // Nothing to keep: a new buffer rather than a reallocation,
                // which would copy the whole old one (16 KiB of spent bytes
                // per response when the body reads grow the head's buffer).
                self.buf = Vec::with_capacity(want);
            } else {
                if self.start > 0 {
                    self.buf.drain(..self.start);
                    self.start = 0;
                }
                self.buf.reserve(want);
            }
        }
        bounded(self.io.read_buf(&mut self.buf), timeout).await
    }

    /// Write all of `data`; `io::ErrorKind::TimedOut` when that takes
    /// longer than `timeout`.
    pub async fn write_all(&mut self, data: &[u8], timeout: Duration) -> io::Result<()> {
        let write = async {
            self.io.write_all(data).await?;
            self.io.flush().await
        };
        bounded(write, timeout).await
    }

    /// One write of some of `data` (as much as the stream takes now),
    /// bounded by `timeout`. Cancel-safe: a write either took its bytes and
    /// said how many, or took none.
    pub async fn write_some(&mut self, data: &[u8], timeout: Duration) -> io::Result<usize> {
        match bounded(self.io.write(data), timeout).await {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            r => r,
        }
    }

    /// Send what the stream holds in its own write buffer.
    pub async fn flush(&mut self, timeout: Duration) -> io::Result<()> {
        bounded(self.io.flush(), timeout).await
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    pub fn into_inner(self) -> S {
        self.io
    }

    /// The connection and the bytes read from it that are not consumed
    /// yet (to hand both to another protocol's reader).
    pub fn into_parts(mut self) -> (S, Vec<u8>) {
        self.buf.drain(..self.start);
        (self.io, self.buf)
    }
}

/// `op` bounded by `timeout` ([`clock::within`]: counted from its first
/// poll, on the clocked task's timer; none when `op` finishes at that
/// poll), running out of time as an `io::ErrorKind::TimedOut` error. A
/// future of its own rather than an `async fn`, which would keep `op`
/// twice in its state.
fn bounded<T, F: std::future::Future<Output = io::Result<T>>>(
    op: F,
    timeout: Duration,
) -> Bounded<F> {
    Bounded {
        op: clock::within(timeout, op),
    }
}

pin_project_lite::pin_project! {
    /// See [`bounded`].
    struct Bounded<F> {
        #[pin]
        op: clock::Within<F>,
    }
}

impl<T, F: std::future::Future<Output = io::Result<T>>> std::future::Future for Bounded<F> {
    type Output = io::Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        self.project()
            .op
            .poll(cx)
            .map(|r| r.unwrap_or_else(|elapsed| Err(elapsed.into())))
    }
}

/// One read of at most `want` bytes into the thread's scratch buffer; what
/// came is appended to `buf` (with room for `want`). Nothing is borrowed
/// across a wait: a pending read has written nothing.
fn poll_read_via_scratch<S: AsyncRead + Unpin>(
    io: &mut S,
    cx: &mut Context<'_>,
    want: usize,
    buf: &mut Vec<u8>,
) -> Poll<io::Result<usize>> {
    SCRATCH.with_borrow_mut(|scratch| {
        let mut read = ReadBuf::new(&mut scratch[..want]);
        match Pin::new(io).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                let got = read.filled();
                if !got.is_empty() {
                    buf.reserve(want);
                    buf.extend_from_slice(got);
                }
                Poll::Ready(Ok(got.len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// An [`Io`] error as a pingora error of the right kind (a timeout or not,
/// reading or writing); its side (visitor or node) is the caller's to set.
pub fn io_error(e: io::Error, write: bool, what: &'static str) -> Box<pingora::Error> {
    use pingora::ErrorType;
    let etype = match (e.kind(), write) {
        (io::ErrorKind::TimedOut, false) => ErrorType::ReadTimedout,
        (io::ErrorKind::TimedOut, true) => ErrorType::WriteTimedout,
        (_, false) => ErrorType::ReadError,
        (_, true) => ErrorType::WriteError,
    };
    pingora::Error::because(etype, what, e)
}

/// Mark `n` bytes of a read buffer's unread part (`buf[*start..]`) as used;
/// once all is used, the buffer is emptied (its memory kept) and `start`
/// goes back to 0. Shared by [`Io`] and HTTP/2's stream body.
pub fn consume(buf: &mut Vec<u8>, start: &mut usize, n: usize) {
    *start = (*start + n).min(buf.len());
    if *start == buf.len() {
        buf.clear();
        *start = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_is_bounded_whether_or_not_it_finishes_at_once() {
        let (near, mut far) = tokio::io::duplex(16);
        let mut io = Io::new(near, 1024);
        // Taken at once (room in the pipe): written, no timer needed.
        io.write_all(b"0123456789", Duration::from_secs(5))
            .await
            .unwrap();
        let mut got = [0; 10];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"0123456789");
        // More than the peer takes, and it reads nothing: the timer ends it.
        let err = io
            .write_all(&[b'x'; 64], Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let err = io
            .write_some(b"y", Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn an_idle_io_holds_no_buffer_while_it_waits() {
        const WAIT: Duration = Duration::from_secs(5);
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let mut io = Io::new(near, 1024);

        // Waiting: the read is pending and no buffer is taken.
        let pending = tokio::time::timeout(Duration::from_millis(20), io.fill(WAIT)).await;
        assert!(pending.is_err(), "nothing was sent");
        assert_eq!(io.buf.capacity(), 0);

        far.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(io.fill(WAIT).await.unwrap(), 16);
        assert_eq!(io.unread(), b"GET / HTTP/1.1\r\n");
        assert!(io.buf.capacity() >= 1024, "room for the rest of the head");

        // The rest goes after it, read straight into the buffer.
        far.write_all(b"Host: a\r\n\r\n").await.unwrap();
        assert_eq!(io.fill(WAIT).await.unwrap(), 11);
        assert_eq!(io.unread(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");

        io.consume(io.unread().len());
        io.release();
        assert_eq!(io.buf.capacity(), 0);

        // A large read does not go through the scratch buffer.
        let big = vec![b'x'; 20_000];
        far.write_all(&big).await.unwrap();
        let n = io.fill_with(WAIT, 64 * 1024).await.unwrap();
        assert!(n > SCRATCH_READ, "{n}");
        assert!(io.unread().iter().all(|&b| b == b'x'));

        drop(far);
        io.consume(io.unread().len());
        io.release();
        while io.fill(WAIT).await.unwrap() > 0 {
            io.consume(io.unread().len());
            io.release();
        }
    }
}
