//! One client connection: hyper's HTTP/1.1 server run in rounds, with the connection parked
//! between requests; the framing check of every request head; and the connection's service across
//! configuration reloads ([`ConnectionHandle`]). This is where a request enters esgate's stack
//! (README, "Request path").

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::header::{HeaderValue, CONNECTION};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tower::Service;

use crate::body::Body;
use crate::connector_error::ResponseBody;
use crate::metrics::Metrics;
use crate::reload::{Current, Generation};
use crate::stack::ConnectionService;
use crate::upstream::ConnInfo;

/// The header-read timer when `server.header_read_timeout` is 0 (no limit): esgate still needs
/// hyper's timer to know when a connection waits for its next request.
const NO_HEADER_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long a connection waits between requests before it is parked. A busy keep-alive client
/// sends its next request within microseconds, so parking after every answer would rebuild hyper's
/// state for each request; an idle one is parked a few milliseconds later.
const PARK_AFTER: Duration = Duration::from_millis(5);

/// A client stream: plain TCP or TLS over TCP.
pub(super) trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket underneath, to wait on while the connection is parked.
    fn socket(&self) -> &TcpStream;
}

impl ClientStream for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    fn socket(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// What one client connection's esgate side and hyper side share.
#[derive(Debug, Default)]
struct RoundState {
    /// hyper's header-read timers alive: hyper is waiting for a request head.
    head_timers: AtomicUsize,
    /// Header-read timers started in this round: the second one means a request was answered and
    /// hyper waits for the next.
    heads: AtomicUsize,
    /// Set while esgate takes the connection back from hyper: the socket stays open.
    parking: AtomicBool,
}

impl RoundState {
    /// hyper has answered a request and waits for the next head: nothing is in flight, and its
    /// buffers can be given up.
    fn between_requests(&self) -> bool {
        self.heads.load(Ordering::Relaxed) >= 2 && self.head_timers.load(Ordering::Relaxed) > 0
    }
}

/// Serves one client connection in rounds: hyper serves requests until it waits for the next
/// request head with nothing received; then esgate takes the socket and the service back
/// ([`http1::Connection::into_parts`], with whatever hyper had read of a next head), drops hyper's
/// buffers, and waits for the socket to become readable before handing it to a new hyper
/// connection. An idle connection then holds no hyper state at all.
///
/// hyper's only use of its timer on a server connection is the header-read timeout, started when
/// it begins to read a head and dropped when the head is complete; [`HeadTimer`] follows those
/// timers to know when hyper waits for a head ([`RoundState::between_requests`]). The timeout
/// runs from the moment the connection went idle, across the parked wait and the next round, as
/// it did when hyper kept the connection.
pub(super) async fn serve_client<T: ClientStream>(
    io: T,
    service: Checked,
    generation: &Generation,
    mut shutdown: watch::Receiver<bool>,
) {
    let header_timeout = Some(generation.config.server.header_read_timeout).filter(|d| !d.is_zero());
    let state = Arc::new(RoundState::default());
    let (mut io, mut service, mut leftover) = (io, service, Bytes::new());
    let mut fresh = true;
    loop {
        let deadline = header_timeout.map(|t| Instant::now() + t);
        if leftover.is_empty() {
            let mut peek = [0u8; 1];
            let readable = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => false,
                // `peek` on a new connection: tokio takes a just-accepted socket to be readable
                // before any event says so. Once hyper's read has found it empty, readiness is
                // reliable (a rare false one costs a round that parks after its request).
                ready = async {
                    if fresh {
                        io.socket().peek(&mut peek).await.map(drop)
                    } else {
                        io.socket().readable().await
                    }
                } => ready.is_ok(),
                () = sleep_until(deadline) => false,
            };
            if !readable {
                return;
            }
        }
        state.heads.store(0, Ordering::Relaxed);
        state.parking.store(false, Ordering::Relaxed);
        let mut http = generation.http.clone();
        http.timer(HeadTimer {
            state: state.clone(),
            deadline,
        })
        .header_read_timeout(header_timeout.unwrap_or(NO_HEADER_TIMEOUT));
        let client = ClientIo {
            io,
            leftover,
            state: state.clone(),
        };
        let mut conn = Box::pin(http.serve_connection(TokioIo::new(client), service));
        let mut draining = false;
        let mut park_timer = ParkTimer::default();
        let result = loop {
            tokio::select! {
                result = poll_fn(|cx| poll_round(conn.as_mut(), &state, draining, &mut park_timer, cx)) => break result,
                _ = shutdown.wait_for(|stop| *stop), if !draining => {
                    // Finish the request in flight (its answer says `connection: close`), or
                    // close at once when idle.
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
        };
        match result {
            Ok(()) if state.parking.load(Ordering::Relaxed) && !draining => {
                fresh = false;
                let parts = Pin::into_inner(conn).into_parts();
                let client = parts.io.into_inner();
                io = client.io;
                service = parts.service;
                service.inner.release_upstream();
                crate::memory::note_freed(crate::memory::CONNECTION_BUFFERS);
                // A fresh, exact-size copy: hyper's read buffer is not kept alive by it.
                leftover = match (parts.read_buf.is_empty(), client.leftover.is_empty()) {
                    (true, true) => Bytes::new(),
                    _ => Bytes::from([&parts.read_buf[..], &client.leftover[..]].concat()),
                };
            }
            Ok(()) => return crate::memory::note_freed(crate::memory::CONNECTION_BUFFERS),
            Err(e) => {
                crate::memory::note_freed(crate::memory::CONNECTION_BUFFERS);
                if e.is_parse() {
                    // hyper answered it itself (a bare 400, 414 or 431) and closed.
                    generation.stack.metrics().client_error("malformed");
                }
                return tracing::debug!(error = %e, "client connection ended with an error");
            }
        }
    }
}

type ClientConnection<T> = http1::Connection<TokioIo<ClientIo<T>>, Checked>;

/// The wait of [`PARK_AFTER`] before a connection is parked: one timer per round, re-armed each
/// time hyper falls idle, so a busy connection costs a timer reset per request, not a rebuild.
#[derive(Default)]
struct ParkTimer {
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

impl ParkTimer {
    /// Ready once hyper has been idle for [`PARK_AFTER`] since it was armed.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = tokio::time::Instant::now() + PARK_AFTER;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            sleep.as_mut().reset(deadline);
            self.armed = true;
        }
        sleep.as_mut().poll(cx)
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

/// Polls one round; parks the connection when hyper has waited between requests for
/// [`PARK_AFTER`].
fn poll_round<T: ClientStream>(
    mut conn: Pin<&mut ClientConnection<T>>,
    state: &RoundState,
    draining: bool,
    park_timer: &mut ParkTimer,
    cx: &mut Context<'_>,
) -> Poll<hyper::Result<()>> {
    loop {
        match conn.as_mut().poll(cx) {
            Poll::Ready(result) => return Poll::Ready(result),
            Poll::Pending if !draining && !state.parking.load(Ordering::Relaxed) && state.between_requests() => {
                if park_timer.poll_idle(cx).is_pending() {
                    return Poll::Pending;
                }
                park_timer.disarm();
                // hyper is idle: this closes it without a byte written, and the socket stays
                // open ([`ClientIo`] skips the shutdown).
                state.parking.store(true, Ordering::Relaxed);
                conn.as_mut().graceful_shutdown();
            }
            Poll::Pending => {
                park_timer.disarm();
                return Poll::Pending;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// The client stream as hyper sees it: first the bytes of a head hyper had read when the
/// connection was parked, then the stream; shutdown skipped while parking.
struct ClientIo<T> {
    io: T,
    leftover: Bytes,
    state: Arc<RoundState>,
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if !this.leftover.is_empty() && buf.remaining() > 0 {
            let n = this.leftover.len().min(buf.remaining());
            buf.put_slice(&this.leftover[..n]);
            this.leftover.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.state.parking.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// hyper's timer for one round: tokio's, counted in [`RoundState`]; the first head of a round
/// keeps the deadline that started when the connection went idle.
struct HeadTimer {
    state: Arc<RoundState>,
    deadline: Option<Instant>,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let deadline = Instant::now()
            .checked_add(duration)
            .unwrap_or_else(|| Instant::now() + NO_HEADER_TIMEOUT);
        self.sleep_until(deadline)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let first = self.state.heads.fetch_add(1, Ordering::Relaxed) == 0;
        let deadline = match self.deadline {
            Some(idle) if first => deadline.min(idle),
            _ => deadline,
        };
        self.state.head_timers.fetch_add(1, Ordering::Relaxed);
        Box::pin(HeadSleep {
            sleep: tokio::time::sleep_until(deadline.into()),
            _alive: TimerAlive(self.state.clone()),
        })
    }
}

pin_project! {
    /// One header-read timer.
    struct HeadSleep {
        #[pin]
        sleep: tokio::time::Sleep,
        _alive: TimerAlive,
    }
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().sleep.poll(cx)
    }
}

impl hyper::rt::Sleep for HeadSleep {}

/// Counts a header-read timer out when it is dropped.
struct TimerAlive(Arc<RoundState>);

impl Drop for TimerAlive {
    fn drop(&mut self) {
        self.0.head_timers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The service of one client connection: the framing checks, then the stack.
pub(super) struct Checked {
    inner: ConnectionHandle,
    metrics: Arc<Metrics>,
}

impl Checked {
    pub(super) fn new(current: &Current, generation: &Generation, info: ConnInfo) -> Self {
        Checked {
            inner: ConnectionHandle::new(current.clone(), generation, info),
            metrics: generation.stack.metrics().clone(),
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for Checked {
    type Response = Response<ResponseBody<Body>>;
    type Error = Infallible;
    type Future = CheckedFuture<<ConnectionHandle as hyper::service::Service<Request<Incoming>>>::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let Some(error) = crate::hop::framing_error(req.method(), req.version(), req.headers()) else {
            return CheckedFuture::Forward {
                inner: self.inner.call(req),
            };
        };
        self.metrics.client_error(error.label);
        tracing::debug!(method = %req.method(), reason = %error.reason, "request refused before forwarding");
        let mut response = crate::es_error::bad_request(&error.reason);
        if error.close {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        CheckedFuture::Answer {
            response: Some(response),
        }
    }
}

pin_project! {
    /// The stack's future, or esgate's own answer.
    #[project = CheckedProj]
    pub(super) enum CheckedFuture<F> {
        Forward { #[pin] inner: F },
        Answer { response: Option<Response<Body>> },
    }
}

impl<F> Future for CheckedFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody<Body>>, Infallible>>,
{
    type Output = Result<Response<ResponseBody<Body>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            // hyper writes the guard's body type as it is: no conversion on the request path.
            CheckedProj::Forward { inner } => inner.poll(cx),
            CheckedProj::Answer { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or_default()
                .map(ResponseBody::original))),
        }
    }
}

// ===== the stack of the connection, across reloads =====

/// The service of one client connection across reloads: each request goes to the current
/// generation's service for this connection, built once per generation.
///
/// It implements hyper's `Service` (`call(&self)`) directly and is owned by its connection's
/// task, so a request costs no clone of the stack, no lock and no readiness round trip: every
/// service of esgate's stack is always ready (none of them applies backpressure), and `call` still
/// asks once, with a no-op waker, as tower's contract wants.
#[derive(Debug)]
pub(super) struct ConnectionHandle {
    current: Current,
    info: ConnInfo,
    /// This connection's service and the generation it was built from.
    service: RefCell<(u64, ConnectionService)>,
}

impl ConnectionHandle {
    /// The service for a connection accepted under `generation`.
    fn new(current: Current, generation: &Generation, info: ConnInfo) -> Self {
        let service = generation.stack.service(info);
        ConnectionHandle {
            current,
            info,
            service: RefCell::new((generation.id, service)),
        }
    }
}

impl ConnectionHandle {
    /// Gives the connection's idle upstream connections back to the thread's pool (the client
    /// connection is parked).
    fn release_upstream(&self) {
        if let Ok(service) = self.service.try_borrow() {
            service.1.get_ref().get_ref().release_idle();
        }
    }
}

impl<B> hyper::service::Service<Request<B>> for ConnectionHandle
where
    B: http_body::Body<Data = bytes::Bytes> + Into<Body> + Unpin + Send + 'static,
    B::Error: Into<crate::BoxError>,
{
    type Response = Response<ResponseBody<Body>>;
    type Error = Infallible;
    type Future = <ConnectionService as Service<Request<B>>>::Future;

    fn call(&self, req: Request<B>) -> Self::Future {
        let generation = self.current.load();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // `call` never runs inside another `call`; should it ever, a fresh service serves.
        let Ok(mut service) = self.service.try_borrow_mut() else {
            let mut fresh = generation.stack.service(self.info);
            let ready: Poll<Result<(), Infallible>> = Service::<Request<B>>::poll_ready(&mut fresh, &mut cx);
            debug_assert!(ready.is_ready(), "the stack is always ready (src/stack.rs)");
            return fresh.call(req);
        };
        if service.0 != generation.id {
            *service = (generation.id, generation.stack.service(self.info));
        }
        // Readiness is asked, not awaited: see "Always ready" in src/stack.rs.
        let ready: Poll<Result<(), Infallible>> = Service::<Request<B>>::poll_ready(&mut service.1, &mut cx);
        debug_assert!(ready.is_ready(), "the stack is always ready (src/stack.rs)");
        service.1.call(req)
    }
}
