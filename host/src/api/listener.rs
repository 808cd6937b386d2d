//! The accept loop of the HTTP listeners (scoring and admin): HTTP/1.1
//! connections served by hyper with read timeouts and a connection limit.
//!
//! Why not `axum::serve`: it sets no timer, so hyper has no header read
//! timeout, and it has no body timeout or connection limit: 50 clients
//! trickling bodies at 1 byte/s held every scoring permit for as long as they
//! trickled (issue 13). Here a client that is slow or silent costs one
//! connection slot for a bounded time and nothing else:
//!
//! | what | bound | default |
//! |---|---|---|
//! | connections open at once | [`ConnectionLimits::max_connections`]; beyond it new connections wait in the kernel's accept backlog until a slot frees (not refused: a burst of legitimate clients is delayed, not reset) | 512 |
//! | idle keep-alive | no byte of a next request within [`ConnectionLimits::idle_timeout`] of the connection opening or its last response: closed | 60 s |
//! | request head | from its first byte, the whole head within [`ConnectionLimits::header_read_timeout`]: else closed | 10 s |
//! | request body | the whole body within [`ConnectionLimits::body_read_timeout`] of its head: else the body read fails (`408 body_timeout` on `/v1/score`) and the connection is closed | 30 s |
//!
//! Scoring admission (`--max-inflight`) is taken after the body is read
//! (`score::score`), so a client that is not sending never holds a permit;
//! what bodies can occupy while they are read is bounded by
//! `max_connections × max_body_bytes` (2 GiB with the defaults, the same
//! order as the `max_inflight × max_body_bytes` that admission-first gave).
//!
//! Shutdown: when `stop` is cancelled the loop stops accepting, every
//! connection finishes its in-flight request and closes (idle ones at once),
//! and [`serve`] returns once all are closed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::Service;

/// Limits of every connection of a listener. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once; more wait to be accepted.
    pub max_connections: usize,
    /// Longest a connection may wait for the first byte of a request (after
    /// opening or after its last response).
    pub idle_timeout: Duration,
    /// Longest a request head may take from its first byte.
    pub header_read_timeout: Duration,
    /// Longest a request body may take from the end of its head.
    pub body_read_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 512,
            idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `router` on `listener` under `limits` until `stop` is cancelled,
/// then lets every open connection finish its request and returns.
///
/// # Errors
/// Never in practice: accept errors (out of file descriptors, a connection
/// reset before it was accepted) are logged and retried.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) -> io::Result<()> {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let mut builder = http1::Builder::new();
    // hyper's own header timer starts when the connection starts waiting for
    // a request, so it covers idle + head: the backstop behind the precise
    // per-phase checks of `Phases`.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout + limits.header_read_timeout);
    let builder = Arc::new(builder);
    loop {
        let slot = tokio::select! {
            _ = stop.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the slots semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => no_delay(stream),
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, typically: wait for some to close.
                    tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (builder, router, stop) = (builder.clone(), router.clone(), stop.clone());
        tokio::spawn(async move {
            connection(stream, &builder, router, limits, stop).await;
            drop(slot);
        });
    }
    // Every connection gives its slot back when it closes.
    let _all = slots.acquire_many(max as u32).await;
    Ok(())
}

/// `stream` with Nagle's algorithm off (`TCP_NODELAY`), for every accepted
/// connection of the HTTP and gRPC listeners: a response bigger than one segment (300 candidates are
/// ~33 KB of JSON, 23 segments of 1,460 bytes) would otherwise hold its
/// last, partial segment until the client acknowledged the ones before it,
/// which a client delaying its acknowledgements (40 ms on Linux) turns into
/// a 40 ms stall. Loopback's 64 KiB segments hide it; a network does not.
/// A socket that refuses the option is served as it is.
pub(crate) fn no_delay(stream: TcpStream) -> TcpStream {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
    stream
}

/// An accept error about one connection (the peer gave up before it was
/// accepted): the next accept is fine.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection until it closes, a phase overruns its limit, or a
/// graceful shutdown finishes it.
async fn connection(
    stream: TcpStream,
    builder: &http1::Builder,
    router: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) {
    let phases = Arc::new(Phases::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        phases: phases.clone(),
    });
    let service = {
        let phases = phases.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            phases.head_read();
            let req = req.map(|body| TimedBody::new(body, limits.body_read_timeout));
            let mut router = router.clone();
            let phases = phases.clone();
            async move {
                let response = router.call(req).await;
                phases.responded();
                response
            }
        })
    };
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            overrun = phases.overrun(&limits) => {
                tracing::debug!(phase = overrun, "client too slow; connection closed");
                return;
            }
        }
    }
}

/// Where a connection is between requests, shared by its socket (which sees
/// bytes arrive) and its service (which sees heads parsed and responses
/// produced). Times are milliseconds since `start`.
struct Phases {
    start: Instant,
    /// No request is being served: the next bytes are a request head.
    awaiting_head: AtomicBool,
    /// When the connection became idle (opened, or its last response).
    idle_since: AtomicU64,
    /// When the first byte of the awaited head arrived; `NONE` before.
    head_started: AtomicU64,
}

const NONE: u64 = u64::MAX;

impl Phases {
    fn new() -> Self {
        Phases {
            start: Instant::now(),
            awaiting_head: AtomicBool::new(true),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NONE),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Bytes arrived on the socket.
    fn bytes_read(&self) {
        if self.awaiting_head.load(Ordering::Relaxed)
            && self.head_started.load(Ordering::Relaxed) == NONE
        {
            self.head_started.store(self.now(), Ordering::Relaxed);
        }
    }

    /// hyper parsed a head and called the service.
    fn head_read(&self) {
        self.awaiting_head.store(false, Ordering::Relaxed);
        self.head_started.store(NONE, Ordering::Relaxed);
    }

    /// The service answered: the connection waits for the next request.
    fn responded(&self) {
        self.idle_since.store(self.now(), Ordering::Relaxed);
        self.head_started.store(NONE, Ordering::Relaxed);
        self.awaiting_head.store(true, Ordering::Relaxed);
    }

    /// Resolves, naming the phase, once the connection has been idle or in
    /// a request head for longer than its limit. Checked at the deadline the
    /// current phase implies, and at least every quarter of a limit.
    async fn overrun(&self, limits: &ConnectionLimits) -> &'static str {
        let ms = |d: Duration| d.as_millis() as u64;
        let poll = (limits.header_read_timeout.min(limits.idle_timeout) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        loop {
            let now = self.now();
            let mut wait = ms(poll);
            if self.awaiting_head.load(Ordering::Relaxed) {
                let head = self.head_started.load(Ordering::Relaxed);
                let (since, limit, phase) = if head == NONE {
                    (
                        self.idle_since.load(Ordering::Relaxed),
                        ms(limits.idle_timeout),
                        "idle",
                    )
                } else {
                    (head, ms(limits.header_read_timeout), "request head")
                };
                let deadline = since.saturating_add(limit);
                if now >= deadline {
                    return phase;
                }
                wait = wait.min(deadline - now);
            }
            tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
        }
    }
}

/// A connection's socket, telling its [`Phases`] when bytes arrive.
struct Watched {
    inner: TcpStream,
    phases: Arc<Phases>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.phases.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The error a request body read fails with once its deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0} ms")]
pub struct BodyReadTimeout(pub u64);

/// A request body that fails with [`BodyReadTimeout`] when it is not
/// complete within its timeout of the request head.
struct TimedBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl TimedBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        TimedBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyReadTimeout(
                    self.timeout.as_millis() as u64,
                ))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `e` (or what caused it) is a [`BodyReadTimeout`].
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if e.is::<BodyReadTimeout>() {
            return true;
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn accepted_connections_do_not_wait_for_nagle() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        assert!(
            !stream.nodelay().unwrap(),
            "accepted sockets start with Nagle on"
        );
        assert!(super::no_delay(stream).nodelay().unwrap());
    }
}
