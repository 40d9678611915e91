//! The upstream side: forwards a request to an Elasticsearch node and streams the answer back.
//!
//! [`Upstream`] holds what all client connections share (the nodes, their health, settings);
//! [`Upstream::connection`] makes the [`UpstreamService`] of one client connection, which keeps
//! that connection's upstream connections (see the `pool` module).
//!
//! What is forwarded: method, the raw request target (origin form, byte for byte), every
//! end-to-end header in order, and the body frame by frame. What is removed: hop-by-hop headers
//! ([`crate::hop`]) and `Expect` (esgate answers `100 Continue` to its own client when it starts
//! reading the body). Failures become answers in Elasticsearch's error shape: 502 when no node can
//! be reached, the connection breaks before a response, or the answer's framing is ambiguous; 503
//! when esgate cannot open a connection for a reason of its own (descriptors, memory); 504 when a
//! GET, HEAD or OPTIONS does not get the start of its answer within `response_timeout` (see
//! `timed`); 400 when the client's own request body breaks while it is sent. This is the only
//! place where an error turns into a response, so the service's error type is [`Infallible`].
//!
//! Retries, all on a connection where nothing of the request can have been acted on twice: a
//! request that was not sent at all (connection refused, pooled connection found closed) goes to
//! a new connection or the next node; a request that went out on a *reused* connection which the
//! node closed before any answer (it had closed its keep-alive end as the request crossed) is sent
//! once more on a new connection when its method is idempotent (RFC 9110 §9.2.2) and its body is
//! complete in memory (see the `replay` module). A streamed body is never sent twice.

mod body;
mod health;
pub mod nodes;
mod pool;
mod replay;
mod version;

use crate::elasticsearch::SharedKnowledge;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::header::{HeaderValue, CONTENT_LENGTH, EXPECT, HOST, TE, TRANSFER_ENCODING};
use http::{Method, Request, Response, Uri, Version};
use hyper::client::conn::http1::Builder;
use tokio::sync::oneshot;

pub use self::body::UpstreamBody;
pub(crate) use self::version::parse_root;
use self::nodes::{Learned, Nodes};
use self::pool::{Holder, Idle, Sender};
use self::replay::Replay;
use crate::body::Body;
use crate::config::{Config, EsVersion, UpstreamConfig};
use crate::connect::ConnectError;
use crate::es_error;
use crate::hop::strip_hop_by_hop;
use crate::metrics::{Metrics, UpstreamError};
use crate::redact::redact_secrets;
use crate::tls::ClientTls;

/// The `type` of the error esgate answers when it cannot open an upstream connection for a reason
/// of its own host (503): no file descriptors, memory or local ports left.
pub const UNAVAILABLE_TYPE: &str = "esgate_unavailable_exception";
/// The `type` of the error esgate answers when the client's request body breaks while it is sent
/// upstream (400): malformed chunked encoding, or the client went away mid-body. The same type as
/// esgate's other answers to a request whose framing breaks HTTP/1.1.
pub const BAD_REQUEST_BODY_TYPE: &str = "esgate_bad_request_exception";

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";

/// What esgate knows about a client connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub scheme: &'static str,
}

/// Which node answered a request and how long it took to start its answer; in the response's
/// extensions when [`Upstream::build`] was asked to annotate (the audit trail reads it).
#[derive(Clone, Debug)]
pub struct UpstreamInfo {
    /// The node, `host:port`.
    pub node: Arc<str>,
    /// From the request going upstream to the response head.
    pub elapsed: Duration,
}

/// What all client connections of one gateway share.
#[derive(Debug)]
struct Shared {
    nodes: Nodes,
    client: Builder,
    connect_timeout: Duration,
    response_timeout: Option<Duration>,
    pool_idle_timeout: Duration,
    pool_max_idle_per_node: usize,
    rewrite_host: bool,
    forwarded_headers: bool,
    metrics: Arc<Metrics>,
    annotate: bool,
    tls: Option<ClientTls>,
    /// The dialects of all nodes together, for the connector-error layer.
    knowledge: SharedKnowledge,
    /// `connector_error.es_version` is set: nothing is learned.
    pinned: AtomicBool,
    /// `Authorization` of esgate's own requests (version and health probes), marked sensitive.
    credentials: Option<HeaderValue>,
}

/// The upstream of one gateway: its nodes and how to reach them. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Upstream {
    shared: Arc<Shared>,
}

impl Upstream {
    /// An upstream for the configured nodes.
    pub fn new(config: &Config) -> Self {
        Self::with_nodes(&config.upstream, config.server.forwarded_headers)
    }

    /// An upstream from its own settings (for embedding in other stacks).
    pub fn with_nodes(cfg: &UpstreamConfig, forwarded_headers: bool) -> Self {
        Self::build(cfg, forwarded_headers, Arc::new(Metrics::new()), false)
    }

    /// An upstream that counts its failures and retries in `metrics`, and, with `annotate`, puts
    /// an [`UpstreamInfo`] into each response it receives.
    pub fn build(cfg: &UpstreamConfig, forwarded_headers: bool, metrics: Arc<Metrics>, annotate: bool) -> Self {
        let mut client = Builder::new();
        client.preserve_header_case(cfg.preserve_header_case);
        Upstream {
            shared: Arc::new(Shared {
                nodes: Nodes::new(&cfg.nodes, cfg.dead_node_backoff, cfg.max_dead_node_backoff),
                client,
                connect_timeout: cfg.connect_timeout,
                response_timeout: cfg.response_timeout,
                pool_idle_timeout: cfg.pool_idle_timeout,
                pool_max_idle_per_node: cfg.pool_max_idle_per_node.max(1),
                rewrite_host: cfg.rewrite_host,
                forwarded_headers,
                metrics,
                annotate,
                tls: cfg.tls.clone(),
                knowledge: SharedKnowledge::default(),
                pinned: AtomicBool::new(false),
                credentials: cfg.credentials.as_ref().and_then(|c| c.header()),
            }),
        }
    }

    /// Takes every node to run `version` (`connector_error.es_version`): the knowledge holds it
    /// from now on and no version probe is made.
    pub fn pin(&self, version: EsVersion) {
        let shared = &*self.shared;
        shared.pinned.store(true, std::sync::atomic::Ordering::Relaxed);
        let label: Arc<str> = Arc::from(version.to_string());
        for index in 0..shared.nodes.len() {
            let learned = Learned {
                knowledge: version.knowledge(),
                version: Some(label.clone()),
            };
            shared.nodes.learn(index, learned, &shared.knowledge);
        }
        shared.knowledge.store(version.knowledge());
    }

    /// True when a version is pinned.
    pub fn is_pinned(&self) -> bool {
        self.shared.pinned.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes over what `old` (the upstream of the previous configuration) knows of the nodes both
    /// have: whether they answer and, unless either pins a version, what they run.
    pub fn inherit(&self, old: &Upstream) {
        let nodes = &self.shared.nodes;
        nodes.inherit(old.nodes());
        if !self.is_pinned() && !old.is_pinned() {
            nodes.inherit_versions(old.nodes());
            nodes.publish(&self.shared.knowledge);
        }
    }

    /// What is known of the nodes' dialects, together: the connector-error layer reads it.
    pub fn knowledge(&self) -> &SharedKnowledge {
        &self.shared.knowledge
    }

    /// The nodes and their health.
    pub fn nodes(&self) -> &Nodes {
        &self.shared.nodes
    }

    /// The service for one client connection.
    pub fn connection(&self, info: ConnInfo) -> UpstreamService {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        // Start each connection's round-robin at a different node.
        let rr = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        UpstreamService {
            shared: self.shared.clone(),
            conn: Arc::new(ConnState {
                info,
                local: Mutex::new(Local {
                    slots: Vec::new(),
                    rr,
                    held: false,
                }),
                pool_idle_timeout: self.shared.pool_idle_timeout,
                pool_max_idle_per_node: self.shared.pool_max_idle_per_node,
            }),
        }
    }
}

/// Forwards requests of one client connection. Clones share that connection's state.
///
/// It can also be shared by many client connections: upstream connections then move between
/// them through the per-thread pool, which is correct, only less direct.
#[derive(Clone, Debug)]
pub struct UpstreamService {
    shared: Arc<Shared>,
    conn: Arc<ConnState>,
}

#[derive(Debug)]
struct ConnState {
    info: ConnInfo,
    local: Mutex<Local>,
    pool_idle_timeout: Duration,
    pool_max_idle_per_node: usize,
}

/// Upstream connections this client connection used last, one per node.
struct Local {
    slots: Vec<Option<Idle>>,
    rr: usize,
    /// Registered with this thread's pool timer, which releases the slots after
    /// [`pool::RELEASE_AFTER`] without a request.
    held: bool,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local").field("rr", &self.rr).finish_non_exhaustive()
    }
}

impl Drop for ConnState {
    fn drop(&mut self) {
        let local = self.local.get_mut().unwrap_or_else(PoisonError::into_inner);
        for idle in local.slots.drain(..).flatten() {
            pool::park(idle, self.pool_max_idle_per_node);
        }
    }
}

impl Holder for ConnState {
    fn release(&self, now: Instant) -> bool {
        let mut local = self.lock();
        let mut holding = false;
        for slot in local.slots.iter_mut() {
            let Some(idle) = slot else { continue };
            if idle.send.is_closed() {
                *slot = None;
            } else if !idle.send.is_ready() {
                // Its answer is still being read (or relayed): busy, not idle.
                idle.since = now;
                holding = true;
            } else if now.saturating_duration_since(idle.since) >= pool::RELEASE_AFTER {
                if let Some(idle) = slot.take() {
                    pool::park(idle, self.pool_max_idle_per_node);
                }
            } else {
                holding = true;
            }
        }
        local.held = holding;
        holding
    }
}

impl ConnState {
    /// Gives every upstream connection not answering back to this thread's pool: the client
    /// connection is parked and may not send again for a long time.
    fn release_all(&self) {
        let mut local = self.lock();
        for slot in local.slots.iter_mut() {
            if slot
                .as_ref()
                .is_some_and(|idle| idle.send.is_ready() || idle.send.is_closed())
            {
                if let Some(idle) = slot.take() {
                    pool::park(idle, self.pool_max_idle_per_node);
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_start(&self) -> usize {
        let mut local = self.lock();
        local.rr = local.rr.wrapping_add(1);
        local.rr
    }

    fn take(&self, index: usize) -> Option<Idle> {
        self.lock().slots.get_mut(index).and_then(Option::take)
    }

    /// Keeps `send` as slot `index`'s connection, in use since `since`.
    fn put(self: &Arc<Self>, index: usize, node: u64, send: Sender, since: Instant) {
        let mut local = self.lock();
        if local.slots.len() <= index {
            local.slots.resize_with(index + 1, || None);
        }
        let previous = local.slots[index].replace(Idle::new(node, send, self.pool_idle_timeout, since));
        let register = !std::mem::replace(&mut local.held, true);
        drop(local);
        if let Some(previous) = previous {
            pool::park(previous, self.pool_max_idle_per_node);
        }
        if register {
            let weak: std::sync::Weak<dyn Holder> = Arc::downgrade(self) as std::sync::Weak<ConnState>;
            pool::hold(weak);
        }
    }

    /// Closes the connection of slot `index` (its framing or state cannot be trusted).
    fn discard(&self, index: usize) {
        let idle = self.lock().slots.get_mut(index).and_then(Option::take);
        drop(idle);
    }
}

impl UpstreamService {
    /// Gives this client connection's idle upstream connections back to the thread's pool at
    /// once (rather than after `pool::RELEASE_AFTER`): called when the client connection is
    /// parked, so that a burst of clients that then fall idle holds upstream connections only
    /// while their requests run.
    pub fn release_idle(&self) {
        self.conn.release_all();
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl<B> tower::Service<Request<B>> for UpstreamService
where
    B: Into<Body>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> BoxFuture {
        let (mut parts, body) = req.into_parts();
        prepare_request(&mut parts, &self.shared, &self.conn.info);
        let (body, sent) = UpstreamBody::new(body.into());
        let req = Request::from_parts(parts, body);
        Box::pin(self.clone().forward(req, sent))
    }
}

/// Turns the client's request head into the one sent upstream.
fn prepare_request(parts: &mut http::request::Parts, shared: &Shared, info: &ConnInfo) {
    // Absolute-form targets (`GET http://host/path`) go upstream in origin form. An origin-form
    // target, the usual case, is left exactly as received.
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let origin = parts.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
        parts.uri = Uri::try_from(origin).unwrap_or_else(|_| Uri::from_static("/"));
    }
    // HTTP/1.1 upstream whatever the client spoke: keeps the upstream connection reusable.
    parts.version = Version::HTTP_11;
    // `TE: trailers` says the client takes trailer fields; esgate passes them, so the next hop may
    // send them too. Any other TE value concerns only the client's own connection.
    let trailers = accepts_trailers(&parts.headers);
    strip_hop_by_hop(&mut parts.headers);
    if trailers {
        parts.headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    parts.headers.remove(EXPECT);
    if shared.forwarded_headers {
        append_list(&mut parts.headers, X_FORWARDED_FOR, &info.peer.ip().to_string());
        append_list(&mut parts.headers, X_FORWARDED_PROTO, info.scheme);
    }
}

/// True when a `TE` header lists `trailers`.
fn accepts_trailers(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
}

/// Appends `value` to a comma-separated header, creating it when absent.
fn append_list(headers: &mut http::HeaderMap, name: &'static str, value: &str) {
    let joined = match headers.get(name).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => format!("{existing}, {value}"),
        _ => value.to_owned(),
    };
    if let Ok(v) = HeaderValue::try_from(joined) {
        headers.insert(name, v);
    }
}

/// A request hyper could not send, maybe with the request given back.
type TrySendError = hyper::client::conn::TrySendError<Request<UpstreamBody>>;

/// How one attempt to send the request ended without a response.
enum Failure {
    /// Nothing was sent: the request comes back and may go to another node.
    NotSent(Request<UpstreamBody>, String),
    /// Sent on a reused connection that the node closed before answering; the copy kept is now
    /// the next request, to be sent once more on a new connection.
    Stale(String),
    /// Part of the request may have reached the node: answer, do not retry.
    Answered(Response<Body>),
}

/// An upstream connection ready for a request.
struct CheckedOut {
    send: Sender,
    /// Used before: the node may close it as the request crosses it.
    reused: bool,
    /// A moment at or before it was handed over, when the node's idle timer had not started
    /// again: its idle time counts from there once it is put back.
    at: Instant,
}

/// The one slot of [`UpstreamService::forward`]: what goes out next.
enum Next {
    /// The client's request, or one a node gave back unsent.
    Send(Request<UpstreamBody>),
    /// The copy of a request sent on a reused connection, kept until its answer starts.
    Copy(Replay),
}

/// Why no node answered, for the final error.
enum NoAnswer {
    /// No node was tried: none is configured. A variant rather than a message, so that no
    /// request allocates the text of an answer it almost never gives.
    NoNode,
    /// A node could not be reached or broke the connection: 502.
    Node(String),
    /// esgate could not open a connection for a reason of its own: 503.
    Local(String),
}

impl UpstreamService {
    /// Sends `req` to the nodes in turn until one answers, and makes the answer when none does.
    ///
    /// The future is allocated for every request, so its size is watched (see the `size` tests):
    /// one slot, `next`, holds whichever request goes next (the client's, one a node gave back
    /// unsent, the copy kept to send again), the connect future is boxed, and the attempt's work
    /// before and after its one wait is done by plain functions ([`Self::send`], [`Self::settle`]).
    fn forward(
        self,
        req: Request<UpstreamBody>,
        mut sent: Option<oneshot::Receiver<()>>,
    ) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send {
        // Query strings may carry secrets: logged with them masked. Boxed: only with debug logs.
        let logged = tracing::enabled!(tracing::Level::DEBUG).then(|| Box::new(Logged::of(&req)));
        let mut next = Some(Next::Send(req));
        async move {
            let shared = &*self.shared;
            let started = (shared.annotate || tracing::enabled!(tracing::Level::DEBUG)).then(Instant::now);
            let mut last = NoAnswer::NoNode;
            let mut tried = false;
            for index in shared.nodes.plan(self.conn.next_start()) {
                if std::mem::replace(&mut tried, true) {
                    shared.metrics.upstream_retry();
                }
                // A stale pooled connection may fail before sending (or, for a replayable request,
                // before answering); then one fresh connection is tried.
                let mut fresh = false;
                loop {
                    let checked_out = match self.checkout(index, fresh).await {
                        Ok(checked_out) => checked_out,
                        Err(e) if e.is_local() => {
                            // Says nothing of the node: it stays live. Another node may still have
                            // a parked connection to offer.
                            shared.metrics.upstream_local_error();
                            let node = &shared.nodes.get(index).authority;
                            tracing::warn!(%node, error = %e, "cannot open an upstream connection (a local limit, not the node)");
                            last = NoAnswer::Local(format!("{node}: {e}"));
                            break;
                        }
                        Err(e) => {
                            shared.metrics.upstream_error(UpstreamError::Connect);
                            shared.nodes.mark_dead(index);
                            tracing::warn!(node = %shared.nodes.get(index).authority, error = %e, "upstream node unreachable");
                            if !matches!(last, NoAnswer::Local(_)) {
                                last = NoAnswer::Node(format!("{}: {e}", shared.nodes.get(index).authority));
                            }
                            break;
                        }
                    };
                    // Every path below that continues puts a request back first. `req` is only
                    // ever moved, never borrowed here: a borrowed local keeps its place in the
                    // future across the wait, and this one is 280 bytes.
                    let Some(Next::Send(req)) = next.take() else { break };
                    let (response, limit) = self.send(index, checked_out, req, &mut next);
                    let result = match limit {
                        None => response.await,
                        Some(limit) => {
                            let deadline = async {
                                if let Some(rx) = sent.as_mut() {
                                    let _ = rx.await;
                                    // A completed receiver must not be polled again by a later attempt.
                                    sent = None;
                                }
                                tokio::time::sleep(limit).await;
                            };
                            tokio::select! {
                                biased;
                                result = response => result,
                                () = deadline => return Ok(self.timed_out(index, limit)),
                            }
                        }
                    };
                    match self.settle(index, result, &mut next) {
                        Ok(mut response) => {
                            let node = shared.nodes.get(index);
                            if let (Some(t0), Some(logged)) = (started, &logged) {
                                let Logged { method, path, query } = &**logged;
                                tracing::debug!(%method, %path, %query, status = response.status().as_u16(), node = %node.authority, elapsed_us = t0.elapsed().as_micros() as u64, "forwarded");
                            }
                            if let (true, Some(t0)) = (shared.annotate, started) {
                                response.extensions_mut().insert(UpstreamInfo {
                                    node: node.name.clone(),
                                    elapsed: t0.elapsed(),
                                });
                            }
                            return Ok(response);
                        }
                        Err(Failure::Answered(response)) => return Ok(response),
                        Err(Failure::NotSent(back, why)) => {
                            next = Some(Next::Send(back));
                            if !matches!(last, NoAnswer::Local(_)) {
                                last = NoAnswer::Node(why);
                            }
                            if std::mem::replace(&mut fresh, true) {
                                break;
                            }
                        }
                        Err(Failure::Stale(why)) => {
                            // Only ever from a reused connection; the next one is new, so at most once.
                            shared.metrics.upstream_replay();
                            tracing::debug!(node = %shared.nodes.get(index).authority, error = %why, "reused upstream connection closed before an answer; sending the request again on a new one");
                            fresh = true;
                        }
                    }
                }
            }
            Ok(match last {
                NoAnswer::NoNode => {
                    es_error::bad_gateway("no Elasticsearch node could be reached (no upstream node is configured)")
                }
                NoAnswer::Node(why) => es_error::bad_gateway(&format!("no Elasticsearch node could be reached ({why})")),
                NoAnswer::Local(why) => {
                    let reason = format!("esgate cannot open a connection to Elasticsearch now ({why})");
                    es_error::service_unavailable(UNAVAILABLE_TYPE, &reason)
                }
            })
        }
    }

    /// An upstream connection to node `index`: this client connection's own, a parked one,
    /// or a new one (always new when `fresh`).
    async fn checkout(&self, index: usize, fresh: bool) -> Result<CheckedOut, ConnectError> {
        let shared = &*self.shared;
        let node = shared.nodes.get(index);
        if !fresh {
            if let Some(idle) = self.conn.take(index) {
                // The one reading of the clock for a request on the connection in hand.
                let at = Instant::now();
                if idle.usable_at(at) {
                    let mut send = idle.send;
                    if send.ready().await.is_ok() {
                        return Ok(CheckedOut { send, reused: true, at });
                    }
                }
            }
            while let Some(mut send) = pool::take_parked(node.id) {
                if send.ready().await.is_ok() {
                    let at = Instant::now();
                    return Ok(CheckedOut { send, reused: true, at });
                }
            }
        }
        // Boxed: the connect future (TCP, TLS, their deadline) is 2.6 KB, and only a new
        // connection needs it. Inline, every request's future would carry it.
        let connect = Box::pin(pool::connect(node, &shared.client, shared.connect_timeout, shared.tls.as_ref()));
        let send = connect.await?;
        shared.nodes.mark_alive(index);
        Ok(CheckedOut {
            send,
            reused: false,
            at: Instant::now(),
        })
    }

    /// Sends `req` on a connection to node `index`, and leaves in `next` the copy that may be
    /// sent again should that connection, when reused, turn out closed before any answer. With
    /// the answer's future, the time it is given to start (see [`timed`]).
    fn send(
        &self,
        index: usize,
        CheckedOut { mut send, reused, at }: CheckedOut,
        mut req: Request<UpstreamBody>,
        next: &mut Option<Next>,
    ) -> (
        impl Future<Output = Result<Response<hyper::body::Incoming>, TrySendError>>,
        Option<Duration>,
    ) {
        let shared = &*self.shared;
        let node = shared.nodes.get(index);
        let limit = timed(req.method(), shared.response_timeout);
        if shared.rewrite_host {
            req.headers_mut().insert(HOST, node.host_header.clone());
        }
        // Only a reused connection can have been closed by the node as the request crossed it.
        *next = if reused { Replay::of(&req).map(Next::Copy) } else { None };
        let response = send.try_send_request(req);
        // The connection is free again as soon as this response has been read; the next request
        // of this client connection cannot start before that.
        self.conn.put(index, node.id, send, at);
        (response, limit)
    }

    /// The 504 for a read that node `index` did not start to answer within `limit`.
    fn timed_out(&self, index: usize, limit: Duration) -> Response<Body> {
        let node = self.shared.nodes.get(index);
        tracing::warn!(node = %node.authority, timeout = ?limit, "upstream response timed out");
        self.shared.metrics.upstream_error(UpstreamError::Timeout);
        es_error::gateway_timeout(&format!(
            "Elasticsearch node [{}] did not start a response within {limit:?}",
            node.authority
        ))
    }

    /// What the outcome of sending a request to node `index` means: its answer, or how it failed.
    /// A stale connection's copy, when `next` holds one, becomes the request to send next.
    #[allow(
        clippy::result_large_err,
        reason = "a request given back unsent rides in the error, matched at once by the caller"
    )]
    fn settle(
        &self,
        index: usize,
        result: Result<Response<hyper::body::Incoming>, TrySendError>,
        next: &mut Option<Next>,
    ) -> Result<Response<Body>, Failure> {
        let shared = &*self.shared;
        let node = shared.nodes.get(index);
        match result {
            Ok(response) => {
                let (mut parts, incoming) = response.into_parts();
                if ambiguous_framing(&parts.headers) {
                    // hyper reads such a body as chunked and keeps `Content-Length`; relayed, the
                    // length would cut the body short without a word. Nor can the connection be
                    // trusted for another request.
                    drop(incoming);
                    self.conn.discard(index);
                    shared.metrics.upstream_bad_framing();
                    tracing::warn!(node = %node.authority, "upstream answer with both Content-Length and Transfer-Encoding refused");
                    return Err(Failure::Answered(es_error::bad_gateway(&format!(
                        "Elasticsearch node [{}] sent an answer with both Content-Length and Transfer-Encoding",
                        node.authority
                    ))));
                }
                strip_hop_by_hop(&mut parts.headers);
                Ok(Response::from_parts(parts, Body::Incoming(incoming)))
            }
            Err(mut e) => match e.take_message() {
                Some(req) => Err(Failure::NotSent(req, format!("{}: {}", node.authority, e.error()))),
                None => {
                    let e = e.into_error();
                    if e.is_user() {
                        // The request body esgate was streaming failed: the client's doing (a
                        // malformed chunked body, or it went away mid-body), not the node's.
                        self.conn.discard(index);
                        shared.metrics.client_body_error();
                        let cause = std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string);
                        tracing::debug!(node = %node.authority, error = %cause, "client request body failed while sent upstream");
                        let reason = format!("the request body could not be read: {cause}");
                        return Err(Failure::Answered(es_error::client_error(
                            BAD_REQUEST_BODY_TYPE,
                            &reason,
                        )));
                    }
                    if closed_before_answer(&e) {
                        if let Some(Next::Copy(copy)) = next.take() {
                            if let Some(again) = copy.into_request() {
                                *next = Some(Next::Send(again));
                                return Err(Failure::Stale(format!("{}: {e}", node.authority)));
                            }
                        }
                    }
                    tracing::warn!(node = %node.authority, error = %e, "upstream connection failed before a response");
                    shared.metrics.upstream_error(UpstreamError::Broken);
                    Err(Failure::Answered(es_error::bad_gateway(&format!(
                        "the connection to Elasticsearch node [{}] failed before a response: {e}",
                        node.authority
                    ))))
                }
            },
        }
    }
}

/// The request line of a forwarded request, for the debug log.
struct Logged {
    method: Method,
    path: String,
    query: String,
}

impl Logged {
    fn of(req: &Request<UpstreamBody>) -> Self {
        Logged {
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            query: req.uri().query().map(|q| redact_secrets(q).into_owned()).unwrap_or_default(),
        }
    }
}

/// The response timeout that applies to a request with `method`: only to GET, HEAD and OPTIONS.
///
/// The official clients retry a 504 (the Node.js client four times at once, elasticsearch-py and
/// the connectors service too), but not their own timeouts. A 504 from esgate on a write would make
/// them send the write again while the node may still be applying the first one: a duplicate
/// document, a bulk applied twice. So writes (and every other method) are never cut off by esgate;
/// they wait for the node, and the client's own timeout decides, exactly as without esgate. A read
/// sent twice is harmless, so `response_timeout` may turn a silent node into a 504 for those.
fn timed(method: &Method, limit: Option<Duration>) -> Option<Duration> {
    limit.filter(|_| matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS))
}

/// True when hyper says the connection ended before an answer started: EOF where the answer
/// should be (`is_incomplete_message`), the connection task gone (`is_canceled`), or the node's
/// reset of a connection it had closed (a read or write on it failed with a reset or broken pipe).
fn closed_before_answer(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_canceled() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            );
        }
        source = cause.source();
    }
    false
}

/// An answer framed two ways (RFC 9112 §6.3: "ought to be handled as an error"); a proxy relaying
/// it is how bodies get cut short or requests smuggled.
fn ambiguous_framing(headers: &http::HeaderMap) -> bool {
    headers.contains_key(CONTENT_LENGTH) && headers.contains_key(TRANSFER_ENCODING)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_are_timed() {
        let limit = Some(Duration::from_secs(1));
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert_eq!(timed(&method, limit), limit, "{method}");
        }
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert_eq!(timed(&method, limit), None, "{method}");
        }
        assert_eq!(timed(&Method::GET, None), None);
    }

    #[test]
    fn both_lengths_are_ambiguous() {
        let mut headers = http::HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(!ambiguous_framing(&headers));
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        assert!(ambiguous_framing(&headers));
        headers.remove(CONTENT_LENGTH);
        assert!(!ambiguous_framing(&headers));
    }
}

#[cfg(test)]
mod size {
    use super::*;

    fn size_of_val<F>(_: &F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The forward future is boxed for every request that goes upstream: kept within glibc's
    /// per-thread cache (chunks up to 1,032 bytes), its allocation is a list pop, and its copy
    /// into the box short. It was 3,560 bytes with the connect future inline, the client's
    /// request held twice and a borrowed copy of it kept across the wait.
    #[test]
    fn the_future_of_a_forwarded_request_is_small() {
        let (_, config) = crate::config::Config::load_with(["esgate"], &|_| None).expect("defaults");
        let service = Upstream::new(&config).connection(ConnInfo {
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
            scheme: "http",
        });
        let forward = service.forward(Request::new(UpstreamBody::new(Body::Empty).0), None);
        let size = size_of_val(&forward);
        assert!(size <= 1_000, "{size} bytes");
    }
}
