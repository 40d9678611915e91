//! The upstream side: forwards a request to an Elasticsearch node and streams the answer back.
//!
//! [`Upstream`] holds what all client connections share (the nodes, their health, settings);
//! [`Upstream::connection`] makes the [`UpstreamService`] of one client connection, which keeps
//! that connection's upstream connections (see the `pool` module).
//!
//! What is forwarded: method, the raw request target (origin form, byte for byte), every
//! end-to-end header in order, and the body frame by frame. What is removed: hop-by-hop headers
//! ([`crate::hop`]) and `Expect` (esgate answers `100 Continue` to its own client when it starts
//! reading the body). Upstream failures become answers in Elasticsearch's error shape: 502 when no
//! node can be reached or the connection breaks before a response, 504 when the response does not
//! start within `response_timeout` after the request body was sent. This is the only place where
//! an error turns into a response, so the service's error type is [`Infallible`].

mod body;
mod health;
pub mod nodes;
mod pool;
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

use http::header::{HeaderValue, EXPECT, HOST, TE};
use http::{Request, Response, Uri, Version};
use hyper::client::conn::http1::Builder;
use tokio::sync::oneshot;

pub use self::body::UpstreamBody;
use self::nodes::{Learned, Nodes};
use self::pool::{ConnectError, Idle, Sender};
use crate::audit::redact::redact_secrets;
use crate::body::Body;
use crate::config::{Config, EsVersion, UpstreamConfig};
use crate::es_error;
use crate::hop::strip_hop_by_hop;
use crate::metrics::{Metrics, UpstreamError};
use crate::tls::ClientTls;

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
                local: Mutex::new(Local { slots: Vec::new(), rr }),
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
            pool::park(idle, self.pool_idle_timeout, self.pool_max_idle_per_node);
        }
    }
}

impl ConnState {
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

    fn put(&self, index: usize, node: u64, send: Sender) {
        let mut local = self.lock();
        if local.slots.len() <= index {
            local.slots.resize_with(index + 1, || None);
        }
        if let Some(previous) = local.slots[index].replace(Idle::new(node, send)) {
            drop(local);
            pool::park(previous, self.pool_idle_timeout, self.pool_max_idle_per_node);
        }
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
        let this = self.clone();
        Box::pin(async move { Ok(this.forward(req, sent).await) })
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

/// How one attempt to send the request ended without a response.
enum Failure {
    /// Nothing was sent: the request comes back and may go to another node.
    NotSent(Request<UpstreamBody>, String),
    /// Part of the request may have reached the node: answer, do not retry.
    Answered(Response<Body>),
}

impl UpstreamService {
    async fn forward(&self, mut req: Request<UpstreamBody>, mut sent: Option<oneshot::Receiver<()>>) -> Response<Body> {
        let shared = &*self.shared;
        let started = (shared.annotate || tracing::enabled!(tracing::Level::DEBUG)).then(Instant::now);
        // Query strings may carry secrets: logged with them masked.
        let method = tracing::enabled!(tracing::Level::DEBUG).then(|| {
            let query = req.uri().query().map(|q| redact_secrets(q).into_owned());
            (
                req.method().clone(),
                req.uri().path().to_owned(),
                query.unwrap_or_default(),
            )
        });
        let mut last_error = String::from("no upstream node is configured");
        let mut tried = false;
        for index in shared.nodes.plan(self.conn.next_start()) {
            if std::mem::replace(&mut tried, true) {
                shared.metrics.upstream_retry();
            }
            // A stale pooled connection may fail before sending; then one fresh one is tried.
            for fresh in [false, true] {
                let send = match self.checkout(index, fresh).await {
                    Ok(send) => send,
                    Err(e) => {
                        shared.metrics.upstream_error(UpstreamError::Connect);
                        shared.nodes.mark_dead(index);
                        tracing::warn!(node = %shared.nodes.get(index).authority, error = %e, "upstream node unreachable");
                        last_error = format!("{}: {e}", shared.nodes.get(index).authority);
                        break;
                    }
                };
                match self.attempt(index, send, req, &mut sent).await {
                    Ok(mut response) => {
                        let node = shared.nodes.get(index);
                        if let (Some(t0), Some((m, path, query))) = (started, &method) {
                            tracing::debug!(method = %m, path = %path, query = %query, status = response.status().as_u16(), node = %node.authority, elapsed_us = t0.elapsed().as_micros() as u64, "forwarded");
                        }
                        if let (true, Some(t0)) = (shared.annotate, started) {
                            response.extensions_mut().insert(UpstreamInfo {
                                node: node.name.clone(),
                                elapsed: t0.elapsed(),
                            });
                        }
                        return response;
                    }
                    Err(Failure::Answered(response)) => return response,
                    Err(Failure::NotSent(back, why)) => {
                        req = back;
                        last_error = why;
                    }
                }
            }
        }
        es_error::bad_gateway(&format!("no Elasticsearch node could be reached ({last_error})"))
    }

    /// An upstream connection to node `index`: this client connection's own, a parked one,
    /// or a new one (always new when `fresh`).
    async fn checkout(&self, index: usize, fresh: bool) -> Result<Sender, ConnectError> {
        let shared = &*self.shared;
        let node = shared.nodes.get(index);
        if !fresh {
            if let Some(idle) = self.conn.take(index) {
                if idle.usable(shared.pool_idle_timeout) {
                    let mut send = idle.send;
                    if send.ready().await.is_ok() {
                        return Ok(send);
                    }
                }
            }
            while let Some(mut send) = pool::take_parked(node.id, shared.pool_idle_timeout) {
                if send.ready().await.is_ok() {
                    return Ok(send);
                }
            }
        }
        let send = pool::connect(node, &shared.client, shared.connect_timeout, shared.tls.as_ref()).await?;
        shared.nodes.mark_alive(index);
        Ok(send)
    }

    async fn attempt(
        &self,
        index: usize,
        mut send: Sender,
        mut req: Request<UpstreamBody>,
        sent: &mut Option<oneshot::Receiver<()>>,
    ) -> Result<Response<Body>, Failure> {
        let shared = &*self.shared;
        let node = shared.nodes.get(index);
        if shared.rewrite_host {
            req.headers_mut().insert(HOST, node.host_header.clone());
        }
        let response = send.try_send_request(req);
        // The connection is free again as soon as this response has been read; the next request
        // of this client connection cannot start before that.
        self.conn.put(index, node.id, send);
        let result = match shared.response_timeout {
            None => response.await,
            Some(limit) => {
                let deadline = async {
                    if let Some(rx) = sent.as_mut() {
                        let _ = rx.await;
                        // A completed receiver must not be polled again by a later attempt.
                        *sent = None;
                    }
                    tokio::time::sleep(limit).await;
                };
                tokio::select! {
                    biased;
                    result = response => result,
                    () = deadline => {
                        tracing::warn!(node = %node.authority, timeout = ?limit, "upstream response timed out");
                        shared.metrics.upstream_error(UpstreamError::Timeout);
                        return Err(Failure::Answered(es_error::gateway_timeout(&format!(
                            "Elasticsearch node [{}] did not start a response within {limit:?}", node.authority
                        ))));
                    }
                }
            }
        };
        match result {
            Ok(response) => {
                let (mut parts, incoming) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Ok(Response::from_parts(parts, Body::Incoming(incoming)))
            }
            Err(mut e) => match e.take_message() {
                Some(req) => Err(Failure::NotSent(req, format!("{}: {}", node.authority, e.error()))),
                None => {
                    tracing::warn!(node = %node.authority, error = %e.error(), "upstream connection failed before a response");
                    shared.metrics.upstream_error(UpstreamError::Broken);
                    Err(Failure::Answered(es_error::bad_gateway(&format!(
                        "the connection to Elasticsearch node [{}] failed before a response: {}",
                        node.authority,
                        e.error()
                    ))))
                }
            },
        }
    }
}
