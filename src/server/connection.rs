//! One client connection: hyper's HTTP/1.1 server run in rounds, with the connection parked
//! between requests; the framing check of every request head; and the connection's service across
//! configuration reloads ([`ConnectionHandle`]). This is where a request enters esgate's stack
//! (README, "Request path").

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
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
    /// When the latest header-read timer is due, and when the wait it began (if it is a wait
    /// between requests) has lasted [`PARK_AFTER`]: what the connection's [`Clock`] is set to.
    ///
    /// A lock, because hyper wants its timer `Sync`; it is this connection's alone and never
    /// contended. Two atomics holding nanoseconds from a base `Instant` measured 160 instructions a
    /// request more (the conversions to and from `Instant` cost more than the lock).
    due: Mutex<Due>,
    /// Set by the connection's [`Clock`] once the latest header-read timer is due; hyper's
    /// [`HeadSleep`] reads it.
    head_expired: AtomicBool,
}

/// The deadlines of the latest header-read timer ([`RoundState::due`]).
#[derive(Debug, Default, Clone, Copy)]
struct Due {
    head: Option<Instant>,
    park: Option<Instant>,
}

impl RoundState {
    /// hyper has answered a request and waits for the next head: nothing is in flight, and its
    /// buffers can be given up.
    fn between_requests(&self) -> bool {
        self.heads.load(Ordering::Relaxed) >= 2 && self.head_timers.load(Ordering::Relaxed) > 0
    }

    fn due(&self) -> Due {
        *self.due.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_due(&self, due: Due) {
        *self.due.lock().unwrap_or_else(PoisonError::into_inner) = due;
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
/// timers to know when hyper waits for a head ([`RoundState::between_requests`]), and one tokio
/// timer per round, the [`Clock`], stands behind them and the wait before parking. The timeout
/// runs from the moment the connection went idle, across the parked wait and the next round, as
/// it did when hyper kept the connection.
pub(super) async fn serve_client<T: ClientStream>(
    io: T,
    service: Checked,
    generation: &Generation,
    shutdown: watch::Receiver<bool>,
) {
    let mut stop = Stop::new(shutdown);
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
                () = stop.stopped() => false,
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
            timeout: header_timeout.unwrap_or(NO_HEADER_TIMEOUT),
        })
        .header_read_timeout(header_timeout.unwrap_or(NO_HEADER_TIMEOUT));
        let client = ClientIo {
            io,
            leftover,
            state: state.clone(),
        };
        let mut conn = Box::pin(http.serve_connection(TokioIo::new(client), service));
        let mut draining = false;
        let mut clock = Clock::default();
        let result = poll_fn(|cx| {
            if !draining && stop.poll_stop(cx).is_ready() {
                // Finish the request in flight (its answer says `connection: close`), or close at
                // once when idle.
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            poll_round(conn.as_mut(), &state, draining, &mut clock, cx)
        })
        .await;
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

/// The one timer of a client connection: hyper's header-read timeout and the wait of
/// [`PARK_AFTER`] before parking, whichever is due first.
///
/// One tokio timer, armed once and moved on. A busy connection moves it to a later deadline on
/// every request, which tokio does in place (its entry is re-filed only when the old deadline
/// comes); each of hyper's header-read timers used to register a timer of its own when it was
/// first polled and take it out of tokio's wheel when the head arrived, about 590 instructions a
/// request (BENCHMARKS.md, "One timer per connection").
#[derive(Default)]
struct Clock {
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The deadline `sleep` is set to.
    at: Option<Instant>,
    /// The waker `sleep` was last polled with.
    waker: Option<Waker>,
}

impl Clock {
    /// Ready once `due` has passed.
    fn poll_due(&mut self, due: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if self.at != Some(due) {
                    let waiting = !sleep.is_elapsed();
                    sleep.as_mut().reset(due.into());
                    self.at = Some(due);
                    // A timer moved before it fired keeps the waker it was polled with, and tokio
                    // wakes that at once if the new deadline has passed: no poll is needed.
                    if waiting && self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        return Poll::Pending;
                    }
                }
                sleep
            }
            None => {
                self.at = Some(due);
                self.sleep.insert(Box::pin(tokio::time::sleep_until(due.into())))
            }
        };
        let poll = sleep.as_mut().poll(cx);
        if poll.is_pending() && !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
        poll
    }
}

/// Polls one round: hyper's connection, then the connection's [`Clock`] for what hyper waits
/// for. An expired header-read timeout is handed to hyper's [`HeadSleep`]; the connection is
/// parked when hyper has waited between requests for [`PARK_AFTER`].
fn poll_round<T: ClientStream>(
    mut conn: Pin<&mut ClientConnection<T>>,
    state: &RoundState,
    draining: bool,
    clock: &mut Clock,
    cx: &mut Context<'_>,
) -> Poll<hyper::Result<()>> {
    loop {
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        // hyper waits for a head (or is busy with a request, and then no timer is due).
        if state.head_timers.load(Ordering::Relaxed) == 0 {
            return Poll::Pending;
        }
        let due = state.due();
        // An expiry handed to hyper is not waited for again: hyper acts on it when it next reads.
        let head = due.head.filter(|_| !state.head_expired.load(Ordering::Relaxed));
        let park = due
            .park
            .filter(|_| !draining && !state.parking.load(Ordering::Relaxed) && state.between_requests());
        let next = match (head, park) {
            (Some(head), Some(park)) => head.min(park),
            (head, park) => match head.or(park) {
                Some(next) => next,
                None => return Poll::Pending,
            },
        };
        std::task::ready!(clock.poll_due(next, cx));
        if park == Some(next) {
            // hyper is idle: this closes it without a byte written, and the socket stays open
            // ([`ClientIo`] skips the shutdown).
            state.parking.store(true, Ordering::Relaxed);
            conn.as_mut().graceful_shutdown();
        } else {
            // hyper's next poll of its header-read timer finds it expired.
            state.head_expired.store(true, Ordering::Relaxed);
        }
    }
}

/// The server's shutdown signal as one client connection watches it.
///
/// It is polled on every wake-up of the connection's task, several times a request. tokio's
/// waiting future takes a lock on each poll to compare wakers; here it is polled only when the
/// signal changed or the task's waker is not the one it holds, and otherwise a poll is one load
/// of the channel's version. The signal only ever goes from false to true (or the channel closes),
/// so a change seen here is the stop, and the wake-up that a send makes always comes after it.
struct Stop {
    signal: watch::Receiver<bool>,
    /// Waits for `true` on a receiver of its own; polled with the waker in `waker`.
    wait: Pin<Box<dyn Future<Output = ()> + Send>>,
    waker: Option<Waker>,
    stopped: bool,
}

impl Stop {
    fn new(signal: watch::Receiver<bool>) -> Self {
        let mut waiting = signal.clone();
        Stop {
            signal,
            wait: Box::pin(async move {
                let _ = waiting.wait_for(|stop| *stop).await;
            }),
            waker: None,
            stopped: false,
        }
    }

    /// Ready once the server stops (for good: every later poll is ready too).
    fn poll_stop(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.stopped {
            return Poll::Ready(());
        }
        let quiet = matches!(self.signal.has_changed(), Ok(false));
        if quiet && self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        match self.wait.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.stopped = true;
                Poll::Ready(())
            }
            Poll::Pending => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn stopped(&mut self) -> impl Future<Output = ()> + '_ {
        poll_fn(|cx| self.poll_stop(cx))
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

/// hyper's timer for one round: each header-read timer is a deadline for the connection's
/// [`Clock`], counted in [`RoundState`]; the first head of a round keeps the deadline that started
/// when the connection went idle.
struct HeadTimer {
    state: Arc<RoundState>,
    deadline: Option<Instant>,
    /// The header-read timeout hyper adds to the time it starts to wait for a head.
    timeout: Duration,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let deadline = Instant::now()
            .checked_add(duration)
            .unwrap_or_else(|| Instant::now() + NO_HEADER_TIMEOUT);
        self.sleep_until(deadline)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let state = &self.state;
        let first = state.heads.fetch_add(1, Ordering::Relaxed) == 0;
        // hyper started to wait for this head `timeout` before `deadline`; after the first head
        // of a round, that is when the connection went idle.
        let park = (!first)
            .then(|| deadline.checked_sub(self.timeout))
            .flatten()
            .and_then(|idle| idle.checked_add(PARK_AFTER));
        let head = match self.deadline {
            Some(idle) if first => deadline.min(idle),
            _ => deadline,
        };
        state.set_due(Due { head: Some(head), park });
        state.head_expired.store(false, Ordering::Relaxed);
        state.head_timers.fetch_add(1, Ordering::Relaxed);
        Box::pin(HeadSleep(state.clone()))
    }
}

/// One header-read timer, as hyper holds it: expired when the connection's [`Clock`] says so.
///
/// It registers no waker of its own. hyper polls it only from within [`poll_round`], which polls
/// the connection's clock next, in the same task, whenever a header-read timer is alive: the
/// clock's wake-up is the task's.
struct HeadSleep(Arc<RoundState>);

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0.head_expired.load(Ordering::Relaxed) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl hyper::rt::Sleep for HeadSleep {}

/// Counts a header-read timer out when it is dropped.
impl Drop for HeadSleep {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Count {
        fn woken(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// A waker and its count.
    fn counted() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        (count, waker)
    }

    #[test]
    fn the_stop_signal_wakes_the_connection_and_stays_ready() {
        let (tx, rx) = watch::channel(false);
        let mut stop = Stop::new(rx);
        let (count, waker) = counted();
        let mut cx = Context::from_waker(&waker);
        assert!(stop.poll_stop(&mut cx).is_pending());
        // Polls in between take the quick path and change nothing.
        assert!(stop.poll_stop(&mut cx).is_pending());
        assert!(stop.poll_stop(&mut cx).is_pending());
        tx.send(true).expect("a receiver is alive");
        assert_eq!(count.woken(), 1, "the send wakes the task that polled");
        assert!(stop.poll_stop(&mut cx).is_ready());
        assert!(stop.poll_stop(&mut cx).is_ready(), "stopped for good");
    }

    #[test]
    fn a_new_waker_is_registered_before_the_quick_path_is_taken() {
        let (tx, rx) = watch::channel(false);
        let mut stop = Stop::new(rx);
        let ((_, first), (second, latest)) = (counted(), counted());
        assert!(stop.poll_stop(&mut Context::from_waker(&first)).is_pending());
        assert!(stop.poll_stop(&mut Context::from_waker(&latest)).is_pending());
        tx.send(true).expect("a receiver is alive");
        assert_eq!(second.woken(), 1, "the latest waker is woken");
        assert!(stop.poll_stop(&mut Context::from_waker(&latest)).is_ready());
    }

    #[test]
    fn a_closed_signal_stops_the_connection() {
        let (tx, rx) = watch::channel(false);
        let mut stop = Stop::new(rx);
        let (_, waker) = counted();
        let mut cx = Context::from_waker(&waker);
        assert!(stop.poll_stop(&mut cx).is_pending());
        drop(tx);
        assert!(stop.poll_stop(&mut cx).is_ready());
    }
}
