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

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::server::conn::http1;
use tower::Service;

use crate::body::Body;
use crate::config::Config;
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
    keep!("upstream.dev", upstream.dev);
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
#[derive(Clone, Debug)]
pub struct ReloadingService {
    current: Current,
    info: ConnInfo,
    /// This connection's service for the generation it was built from. Shared: hyper clones
    /// the service for each request.
    slot: Arc<Mutex<(u64, ConnectionService)>>,
    /// The service made ready by `poll_ready`, for `call`.
    ready: Option<ConnectionService>,
}

impl ReloadingService {
    /// The service for a connection accepted under `generation`.
    pub fn new(current: Current, generation: &Generation, info: ConnInfo) -> Self {
        let service = generation.stack.service(info);
        ReloadingService {
            current,
            info,
            slot: Arc::new(Mutex::new((generation.id, service))),
            ready: None,
        }
    }

    /// This connection's service for the current generation.
    fn service(&self) -> ConnectionService {
        let generation = self.current.load();
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.0 != generation.id {
            *slot = (generation.id, generation.stack.service(self.info));
        }
        slot.1.clone()
    }
}

impl<B> Service<Request<B>> for ReloadingService
where
    B: Into<Body> + Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = <ConnectionService as Service<Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        let service = match &mut self.ready {
            Some(service) => service,
            None => self.ready.insert(self.service()),
        };
        Service::<Request<B>>::poll_ready(service, cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Called after `poll_ready`, as tower requires; the stack's services are always ready,
        // so a call without it is served by a fresh one all the same.
        let mut service = self.ready.take().unwrap_or_else(|| self.service());
        service.call(req)
    }
}
