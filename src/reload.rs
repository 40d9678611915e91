//! The running configuration and its atomic replacement.
//!
//! Everything a new connection or request is built from lives in a [`Generation`]: the service
//! stack (upstream nodes and their connections, the connector-error settings), the HTTP settings
//! and the listener's TLS certificate. A reload builds a new generation and swaps it in with one
//! atomic store. A request takes the generation current when it starts and keeps it to the end,
//! so in-flight requests finish on the configuration they started with; the next request, even on
//! the same keep-alive connection, uses the new one.
//!
//! Some settings cannot change in a running process (the listening sockets, the worker threads,
//! the audit sinks, logging): a reload keeps their running values and names them in a warning
//! ([`keep_fixed`]).

use std::cell::RefCell;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::server::conn::http1;
use tower::Service;

use crate::body::Body;
use crate::config::Config;
use crate::connector_error::ResponseBody;
use crate::stack::{ConnectionService, Stack};
use crate::tls::ServerTls;
use crate::upstream::ConnInfo;

/// One configuration and what is built from it.
#[derive(Debug)]
pub struct Generation {
    /// Increases with each reload.
    pub id: u64,
    /// The configuration, as running.
    pub config: Config,
    /// The service stack.
    pub stack: Stack,
    /// Settings of new client connections.
    pub http: http1::Builder,
    /// The listener's certificate, for new client connections.
    pub tls: Option<ServerTls>,
}

/// The current generation, shared by every worker; swapped by a reload.
pub type Current = Arc<ArcSwap<Generation>>;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Generation {
    /// A generation for `config`.
    pub fn new(config: Config, stack: Stack, http: http1::Builder) -> Self {
        Generation {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            tls: config.server.tls.clone(),
            config,
            stack,
            http,
        }
    }
}

/// Keeps in `new` the running values of the settings a running process cannot change, and returns
/// the keys whose new values were ignored (they take effect after a restart).
pub fn keep_fixed(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut ignored = Vec::new();
    macro_rules! keep {
        ($key:literal, $($field:ident).+) => {
            if new.$($field).+ != old.$($field).+ {
                ignored.push($key);
                new.$($field).+ = old.$($field).+.clone();
            }
        };
    }
    keep!("server.listen", server.listen);
    keep!("server.admin_listen", server.admin_listen);
    keep!("server.workers", server.workers);
    keep!("server.max_connections", server.max_connections);
    keep!("server.listen_backlog", server.listen_backlog);
    keep!("upstream.dev", upstream.dev);
    keep!("upstream.dev_version", upstream.dev_version);
    keep!("audit", audit);
    keep!("log", log);
    // The development upstream's address was chosen at start-up.
    if old.upstream.dev {
        new.upstream.nodes = old.upstream.nodes.clone();
    }
    ignored
}

/// The service of one client connection across reloads: each request goes to the current
/// generation's service for this connection, built once per generation.
///
/// It implements hyper's `Service` (`call(&self)`) directly and is owned by its connection's
/// task, so a request costs no clone of the stack, no lock and no readiness round trip: every
/// service of esgate's stack is always ready (none of them applies backpressure), and `call` still
/// asks once, with a no-op waker, as tower's contract wants.
#[derive(Debug)]
pub struct ConnectionHandle {
    current: Current,
    info: ConnInfo,
    /// This connection's service and the generation it was built from.
    service: RefCell<(u64, ConnectionService)>,
}

impl ConnectionHandle {
    /// The service for a connection accepted under `generation`.
    pub fn new(current: Current, generation: &Generation, info: ConnInfo) -> Self {
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
    pub fn release_upstream(&self) {
        if let Ok(service) = self.service.try_borrow() {
            service.1.get_ref().get_ref().release_idle();
        }
    }
}

impl<B> hyper::service::Service<Request<B>> for ConnectionHandle
where
    B: http_body::Body<Data = bytes::Bytes> + Into<Body> + Send + 'static,
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
            let _always_ready: Poll<Result<(), Infallible>> = Service::<Request<B>>::poll_ready(&mut fresh, &mut cx);
            return fresh.call(req);
        };
        if service.0 != generation.id {
            *service = (generation.id, generation.stack.service(self.info));
        }
        let _always_ready: Poll<Result<(), Infallible>> = Service::<Request<B>>::poll_ready(&mut service.1, &mut cx);
        service.1.call(req)
    }
}
