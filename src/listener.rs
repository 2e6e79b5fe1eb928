//! The proxy's listening sockets and accept loop: a pingora service that
//! takes the place of pingora's own listening service for the visitor
//! listeners (the admin listener keeps pingora's).
//!
//! pingora's listening service runs one accept loop and spawns each
//! connection on a thread drawn at random, with the socket registered on
//! the reactor of the thread that accepted it. With `threads = 2` half the
//! connections are then served by one thread while their readiness comes
//! from the other thread's reactor: every read or write that waits costs a
//! wake-up across threads (and waits for that other thread to reach its
//! reactor), and the random draw leaves the threads unevenly loaded. Each
//! connection's task also carries pingora's handshake state and a 60 s
//! handshake timer, and its stream a socket digest and buffers the proxy
//! does not use: about 2.5 KiB of an idle keep-alive connection.
//!
//! Here one accept loop per address hands each connection to the worker
//! thread that serves the fewest connections (as HAProxy balances
//! connections between its threads), and the socket is registered on that
//! thread's reactor only; the task holds the app's future and a small
//! stream ([`Accepted`]: the tokio socket and the visitor's address; a TLS
//! listener's connections get pingora's TCP stream, which pingora's TLS
//! acceptor takes). The
//! listening sockets go through pingora's table of inherited sockets under
//! the same names as pingora's listeners, so a graceful upgrade (SIGQUIT,
//! `-u`) hands them over to and from either kind of process. Each worker
//! thread also keeps a near timer ([`timer_floor`]), so that arming a
//! request's timeouts does not make it wake itself.
//! `benches/README.md` has the measurements.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::{ListenFds, ShutdownWatch};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;

use crate::config::CpuAffinity;

mod affinity;
mod timer_floor;

/// The listen backlog (pingora's own for its listeners).
const BACKLOG: i32 = 65535;

/// How long the accept loop pauses after a resource error (out of file
/// descriptors or memory), which accept would return again at once.
const PAUSE_AFTER_RESOURCE_ERROR: Duration = Duration::from_millis(100);

/// The visitor listeners of one pingora service.
pub struct Listening<A> {
    name: String,
    addrs: Vec<String>,
    /// How many of `addrs` (the last ones) are TLS listeners.
    tls: usize,
    app: Option<Arc<A>>,
    threads: usize,
    cpu_affinity: CpuAffinity,
}

impl<A> Listening<A> {
    /// `threads`: the worker threads of the service (the server's
    /// `threads`), on the CPUs `cpu_affinity` gives them; `plain`, `tls`:
    /// where to listen, as `ip:port`. The app gets a TLS listener's
    /// connections as pingora's TCP stream (which its TLS acceptor takes),
    /// the others as an [`Accepted`].
    pub fn new(
        name: &str,
        app: A,
        plain: Vec<String>,
        tls: Vec<String>,
        threads: usize,
        cpu_affinity: CpuAffinity,
    ) -> Listening<A> {
        let n_tls = tls.len();
        Listening {
            name: name.to_owned(),
            addrs: plain.into_iter().chain(tls).collect(),
            tls: n_tls,
            app: Some(Arc::new(app)),
            threads: threads.max(1),
            cpu_affinity,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> pingora::services::Service for Listening<A> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let Some(app) = self.app.take() else {
            tracing::error!("{}: started twice", self.name);
            return;
        };
        let workers = Arc::new(Workers::discover(self.threads).await);
        workers.pin(&self.cpu_affinity).await;
        for w in &workers.workers {
            w.handle.spawn(timer_floor::keep(shutdown.clone()));
        }
        let mut loops = Vec::new();
        let first_tls = self.addrs.len() - self.tls;
        for (i, addr) in self.addrs.iter().enumerate() {
            let listener = match listen(addr, fds.as_ref()) {
                Ok(l) => l,
                Err(e) => {
                    // A proxy that cannot take visitors must not look alive
                    // (pingora's own listening service panics here).
                    tracing::error!("cannot listen on {addr}: {e}");
                    std::process::exit(1);
                }
            };
            loops.push(tokio::spawn(accept_loop(
                addr.clone(),
                i >= first_tls,
                listener,
                Arc::clone(&app),
                Arc::clone(&workers),
                shutdown.clone(),
            )));
        }
        for l in loops {
            let _ = l.await;
        }
        app.cleanup().await;
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(self.addrs.clone())
    }
}

/// The listening socket for `addr`: the one inherited from the old process
/// in a graceful upgrade, else a new one (added to the table so that it is
/// handed on at the next upgrade).
fn listen(addr: &str, fds: Option<&ListenFds>) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let inherited = fds.and_then(|t| t.lock().get(addr).copied());
    let socket = match inherited {
        // SAFETY: the table holds listening sockets the old process handed
        // over for this address; nothing else in this process uses the fd
        // (pingora's own listeners take it over the same way).
        Some(fd) => unsafe { Socket::from_raw_fd(fd) },
        None => {
            let sockaddr: SocketAddr = addr
                .parse()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e}")))?;
            let socket = Socket::new(Domain::for_address(sockaddr), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            socket.bind(&sockaddr.into())?;
            socket
        }
    };
    // Also on an inherited socket: Linux then takes the new backlog.
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    if inherited.is_none() {
        if let Some(table) = fds {
            table.lock().add(addr.to_owned(), socket.as_raw_fd());
        }
    }
    TcpListener::from_std(std::net::TcpListener::from(socket))
}

/// Accept until the server stops, handing each connection to a worker.
async fn accept_loop<A: ServerApp + Send + Sync + 'static>(
    addr: String,
    tls: bool,
    listener: TcpListener,
    app: Arc<A>,
    workers: Arc<Workers>,
    mut shutdown: ShutdownWatch,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            changed = shutdown.changed() => match changed {
                Ok(()) if !*shutdown.borrow() => continue,
                _ => {
                    // The line pingora's listeners log (tests and users
                    // watch for it): the socket closes now.
                    tracing::info!("Shutting down {addr}");
                    break;
                }
            },
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                // As pingora's listeners do: heads and small answers go out
                // at once.
                let _ = tcp.set_nodelay(true);
                workers.dispatch(tcp, peer, tls, &app, &shutdown);
            }
            Err(e) => {
                tracing::warn!("accept on {addr} failed: {e}");
                if is_resource_error(&e) {
                    tokio::time::sleep(PAUSE_AFTER_RESOURCE_ERROR).await;
                }
            }
        }
    }
}

fn is_resource_error(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// The worker threads of the service, each with the connections it serves.
struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    handle: Handle,
    thread: std::thread::ThreadId,
    /// Connections this worker serves now. Padded to a cache line of its
    /// own: each worker writes its own count as its connections end.
    conns: Padded,
}

#[repr(align(128))]
struct Padded(AtomicUsize);

impl Workers {
    /// One handle per worker thread. pingora's no-steal runtime only hands
    /// out the handle of a random thread (`current_handle`), so handles are
    /// drawn until every thread has been seen (a few draws; bounded).
    async fn discover(threads: usize) -> Workers {
        let mut found: Vec<(std::thread::ThreadId, Handle)> = Vec::with_capacity(threads);
        for _ in 0..threads * 64 {
            if found.len() == threads {
                break;
            }
            let handle = pingora_runtime::current_handle();
            let Ok(thread) = handle.spawn(async { std::thread::current().id() }).await else {
                continue;
            };
            if found.iter().all(|(t, _)| *t != thread) {
                found.push((thread, handle));
            }
        }
        if found.len() < threads {
            tracing::debug!("{} of {threads} worker threads seen", found.len());
        }
        if found.is_empty() {
            found.push((std::thread::current().id(), Handle::current()));
        }
        Workers {
            workers: found
                .into_iter()
                .map(|(thread, handle)| Worker {
                    handle,
                    thread,
                    conns: Padded(AtomicUsize::new(0)),
                })
                .collect(),
        }
    }

    /// Put each worker thread on its CPU (see [`affinity`]); one that
    /// cannot be is logged and left where it is.
    async fn pin(&self, cpu_affinity: &CpuAffinity) {
        let cpus = affinity::plan(cpu_affinity, self.workers.len(), &affinity::allowed());
        for (i, (w, cpu)) in self.workers.iter().zip(cpus).enumerate() {
            let Some(cpu) = cpu else { continue };
            match w
                .handle
                .spawn(async move { affinity::pin_this_thread(cpu) })
                .await
            {
                Ok(Ok(())) => tracing::info!("proxy worker thread {i} runs on CPU {cpu}"),
                Ok(Err(e)) => {
                    tracing::warn!("proxy worker thread {i}: cannot run it on CPU {cpu}: {e}")
                }
                Err(e) => tracing::warn!("proxy worker thread {i}: not pinned: {e}"),
            }
        }
    }

    /// Serve `tcp` on the worker with the fewest connections, its socket
    /// registered with that worker's reactor.
    fn dispatch<A: ServerApp + Send + Sync + 'static>(
        self: &Arc<Workers>,
        tcp: TcpStream,
        peer: SocketAddr,
        tls: bool,
        app: &Arc<A>,
        shutdown: &ShutdownWatch,
    ) {
        let index = self.least_loaded();
        let worker = &self.workers[index];
        worker.conns.0.fetch_add(1, Ordering::Relaxed);
        let here = std::thread::current().id() == worker.thread;
        // A socket is served by the reactor it was registered with: moved to
        // another thread, it is registered anew there.
        let socket = if here {
            Socket::Registered(tcp)
        } else {
            match tcp.into_std() {
                Ok(s) => Socket::Moved(s),
                Err(e) => {
                    worker.conns.0.fetch_sub(1, Ordering::Relaxed);
                    tracing::debug!("accepted connection lost: {e}");
                    return;
                }
            }
        };
        let serving = Serving {
            workers: Arc::clone(self),
            index,
        };
        let app = Arc::clone(app);
        let shutdown = shutdown.clone();
        // Clocked: the request path reads the clock once per poll
        // (`crate::clock`).
        worker.handle.spawn(crate::clock::clocked(async move {
            let _serving = serving;
            let tcp = match socket {
                Socket::Registered(tcp) => tcp,
                Socket::Moved(s) => match TcpStream::from_std(s) {
                    Ok(tcp) => tcp,
                    Err(e) => {
                        tracing::debug!("accepted connection lost: {e}");
                        return;
                    }
                },
            };
            let mut stream: Stream = if tls {
                // pingora's TLS acceptor takes its own TCP stream.
                let mut l4 = pingora::protocols::l4::stream::Stream::from(tcp);
                l4.set_socket_digest(accepted_digest(&l4, peer));
                Box::new(l4)
            } else {
                Box::new(Accepted { tcp, peer })
            };
            // The app's future comes boxed (`ServerApp::process_new`):
            // tokio's task cell is 128-byte aligned, and this small task
            // plus the box cost less with mimalloc than a task holding the
            // connection's future inline (benches/README.md, "Where the
            // bytes of an idle connection go"). As pingora's loop: an app
            // may hand the stream back.
            while let Some(s) = app.process_new(stream, &shutdown).await {
                stream = s;
            }
        }));
    }

    fn least_loaded(&self) -> usize {
        let mut best = 0;
        let mut fewest = usize::MAX;
        for (i, w) in self.workers.iter().enumerate() {
            let n = w.conns.0.load(Ordering::Relaxed);
            if n < fewest {
                best = i;
                fewest = n;
            }
        }
        best
    }
}

enum Socket {
    Registered(TcpStream),
    Moved(std::net::TcpStream),
}

/// A connection being served: counted on its worker until it ends.
struct Serving {
    workers: Arc<Workers>,
    index: usize,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.workers.workers[self.index]
            .conns
            .0
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// An accepted visitor connection as the app gets it: the socket and the
/// visitor's address (from `accept`, so no `getpeername` later).
#[derive(Debug)]
pub struct Accepted {
    tcp: TcpStream,
    peer: SocketAddr,
}

impl AsyncRead for Accepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Accepted {
    async fn shutdown(&mut self) {
        let _ = AsyncWriteExt::shutdown(&mut self.tcp).await;
    }
}

impl UniqueID for Accepted {
    fn id(&self) -> UniqueIDType {
        self.tcp.as_raw_fd()
    }
}

impl Ssl for Accepted {}

impl Peek for Accepted {}

impl GetTimingDigest for Accepted {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for Accepted {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for Accepted {
    /// Made when asked (for the visitor's address and the listener's when
    /// the connection starts, and when a PROXY protocol header needs them),
    /// not kept: an idle connection does not hold it.
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(Arc::new(digest(self.tcp.as_raw_fd(), self.peer)))
    }
}

/// A socket digest with the visitor's address from `accept` (the local one
/// is read when asked).
fn digest(fd: std::os::fd::RawFd, peer: SocketAddr) -> SocketDigest {
    let digest = SocketDigest::from_raw_fd(fd);
    let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(peer)));
    digest
}

fn accepted_digest(l4: &pingora::protocols::l4::stream::Stream, peer: SocketAddr) -> SocketDigest {
    digest(l4.as_raw_fd(), peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::AsyncReadExt;

    /// Records which thread served each connection and echoes one byte.
    struct Recorder {
        served: Mutex<Vec<std::thread::ThreadId>>,
    }

    #[async_trait]
    impl ServerApp for Recorder {
        async fn process_new(
            self: &Arc<Self>,
            mut stream: Stream,
            _shutdown: &ShutdownWatch,
        ) -> Option<Stream> {
            let mut byte = [0u8; 1];
            // The read completes only if the socket is registered with the
            // reactor of the thread that polls it.
            if stream.read_exact(&mut byte).await.is_ok() {
                // Recorded before the answer: the client reads the record
                // once it has the byte back.
                self.served
                    .lock()
                    .unwrap()
                    .push(std::thread::current().id());
                let _ = stream.write_all(&byte).await;
            }
            None
        }
    }

    /// Two single-threaded runtimes on threads of their own, as pingora's
    /// no-steal runtime runs a service with `threads = 2`.
    fn worker_threads(n: usize) -> (Vec<Worker>, Vec<tokio::sync::oneshot::Sender<()>>) {
        let mut workers = Vec::new();
        let mut stops = Vec::new();
        for _ in 0..n {
            let (tx, rx) = std::sync::mpsc::channel();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                tx.send((rt.handle().clone(), std::thread::current().id()))
                    .unwrap();
                let _ = rt.block_on(stopped);
            });
            let (handle, thread) = rx.recv().unwrap();
            workers.push(Worker {
                handle,
                thread,
                conns: Padded(AtomicUsize::new(0)),
            });
            stops.push(stop);
        }
        (workers, stops)
    }

    #[tokio::test]
    async fn connections_go_to_the_least_loaded_thread_and_are_served_there() {
        let (workers, _stops) = worker_threads(2);
        let threads: Vec<_> = workers.iter().map(|w| w.thread).collect();
        let workers = Arc::new(Workers { workers });
        let app = Arc::new(Recorder {
            served: Mutex::new(Vec::new()),
        });
        let (_shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();

        // Ten connections held open: five on each thread.
        let mut clients = Vec::new();
        for _ in 0..10 {
            let client = TcpStream::connect(addr).await.unwrap();
            let (tcp, peer) = listener.accept().await.unwrap();
            workers.dispatch(tcp, peer, false, &app, &shutdown);
            clients.push(client);
        }
        let counts: Vec<usize> = workers
            .workers
            .iter()
            .map(|w| w.conns.0.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts, vec![5, 5]);

        // Each is served (read and written) on the thread it went to.
        for c in &mut clients {
            c.write_all(b"x").await.unwrap();
            let mut byte = [0u8; 1];
            c.read_exact(&mut byte).await.unwrap();
            assert_eq!(&byte, b"x");
        }
        let served = app.served.lock().unwrap().clone();
        assert_eq!(served.len(), 10);
        for t in &threads {
            assert_eq!(served.iter().filter(|s| *s == t).count(), 5);
        }

        // Ended connections are counted off: the next one goes where they
        // ended.
        drop(clients);
        for _ in 0..200 {
            if workers
                .workers
                .iter()
                .all(|w| w.conns.0.load(Ordering::Relaxed) == 0)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left: Vec<usize> = workers
            .workers
            .iter()
            .map(|w| w.conns.0.load(Ordering::Relaxed))
            .collect();
        assert_eq!(left, vec![0, 0]);
    }

    #[tokio::test]
    async fn the_stream_gives_the_visitor_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (tcp, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let stream: Stream = Box::new(Accepted { tcp, peer });
        let digest = stream.get_socket_digest().expect("a digest");
        assert_eq!(
            digest.peer_addr().and_then(|a| a.as_inet().copied()),
            Some(peer)
        );
        assert_eq!(
            digest.local_addr().and_then(|a| a.as_inet().copied()),
            Some(addr)
        );
    }
}
