//! The listeners and their runtime threads, and graceful shutdown.
//!
//! esgate runs one single-threaded tokio runtime per worker thread (one per core by default), each
//! accepting from the same listening socket and driving its connections, and the upstream
//! connections they use, to completion on that thread. A request never changes threads, which
//! keeps its cost to the work itself: no work-stealing queue, no cross-thread wake-ups.
//!
//! Every connection and request is built from the current configuration generation
//! ([`crate::reload`]); [`Gateway::reload`] swaps in a new one. A TLS listener finishes the
//! handshake on the connection's own task, so a slow client never holds the accept loop.
//!
//! Shutdown: the admin readiness goes false first, then every worker stops accepting, tells each
//! connection to finish its in-flight request and close, and waits up to the grace period; the
//! audit thread stops last, so that the events of drained requests are written.

use std::convert::Infallible;
use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use arc_swap::ArcSwap;

use crate::admin::{Admin, Readiness};
use crate::audit::{self, AuditThread, Auditor};
use crate::body::Body;
use crate::config::{Config, NodeUrl};
use crate::dev::DevUpstream;
use crate::metrics::Metrics;
use crate::reload::{self, ConnectionHandle, Current, Generation};
use crate::stack::Stack;
use crate::upstream::{ConnInfo, Upstream};

/// Why the gateway could not start.
#[derive(Debug)]
pub struct StartupError(String);

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartupError {}

fn startup(what: &str, e: impl std::fmt::Display) -> StartupError {
    StartupError(format!("{what}: {e}"))
}

/// A running gateway: its listeners, worker threads and helpers.
#[derive(Debug)]
pub struct Gateway {
    listen_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    current: Current,
    /// Told of each new generation (the health probes follow the upstream).
    generation: watch::Sender<()>,
    metrics: Arc<Metrics>,
    auditor: Option<Auditor>,
    readiness: Readiness,
    shutdown: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    /// Stopped after the workers, so that `/readyz` answers "draining" while they drain.
    aux_shutdown: watch::Sender<bool>,
    aux: Option<JoinHandle<()>>,
    /// Stopped last, so that the events of drained requests are written.
    audit: Option<AuditThread>,
}

impl Gateway {
    /// Binds every listener, starts the development upstream when asked, and starts serving.
    ///
    /// # Errors
    /// A listener that cannot be bound, or a thread or runtime that cannot be created.
    pub fn start(mut config: Config) -> Result<Gateway, StartupError> {
        let listener = bind(config.server.listen, "server.listen")?;
        let listen_addr = listener.local_addr().map_err(|e| startup("server.listen", e))?;
        let admin = config
            .server
            .admin_listen
            .map(|addr| bind(addr, "server.admin_listen"))
            .transpose()?;
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        let dev = if config.upstream.dev {
            let dev = bind(SocketAddr::from(([127, 0, 0, 1], 0)), "upstream.dev")?;
            let addr = dev.local_addr().map_err(|e| startup("upstream.dev", e))?;
            config.upstream.nodes = vec![NodeUrl {
                host: addr.ip().to_string(),
                port: addr.port(),
                tls: false,
            }];
            Some(dev)
        } else {
            None
        };

        let metrics = Arc::new(Metrics::new());
        let (auditor, audit) = audit::start(&config.audit, config.upstream.tls.as_ref(), metrics.clone())
            .map_err(|e| startup("audit.file", e))?
            .unzip();
        let stack = Stack::new(&config, metrics.clone(), auditor.clone());
        warn_insecure(&config);
        let started = Arc::new(Generation::new(config.clone(), stack, http_builder(&config)));
        let current: Current = Arc::new(ArcSwap::new(started));
        let (generation, _) = watch::channel(());
        let readiness = Readiness::new();
        let (shutdown, _) = watch::channel(false);
        let (aux_shutdown, _) = watch::channel(false);
        // Always: the version probes run on it, admin listener or not.
        let aux = {
            let admin = admin.map(|listener| {
                let state = Admin {
                    readiness: readiness.clone(),
                    current: current.clone(),
                    metrics: metrics.clone(),
                };
                (listener, state)
            });
            let dev = dev.map(|listener| (listener, config.upstream.dev_version.clone()));
            let aux = Aux {
                admin,
                dev,
                current: current.clone(),
                generation: generation.subscribe(),
                shutdown: aux_shutdown.subscribe(),
            };
            Some(spawn_thread("esgate-aux", move || run_aux(aux))?)
        };

        let workers = match config.server.workers {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let listener = listener.try_clone().map_err(|e| startup("server.listen", e))?;
            let ctx = Worker {
                current: current.clone(),
                shutdown: shutdown.subscribe(),
            };
            handles.push(spawn_thread(&format!("esgate-worker-{i}"), move || ctx.run(listener))?);
        }
        tracing::info!(
            listen = %listen_addr,
            admin = %admin_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
            upstream = %config.upstream.nodes.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            dev = config.upstream.dev,
            workers,
            audit = audit.is_some(),
            report_only = config.connector_error.report_only,
            es_version = %config.connector_error.es_version.map_or_else(|| "learned".to_owned(), |v| v.to_string()),
            tls = config.server.tls.is_some(),
            "esgate started"
        );
        Ok(Gateway {
            listen_addr,
            admin_addr,
            current,
            generation,
            metrics,
            auditor,
            readiness,
            shutdown,
            workers: handles,
            aux_shutdown,
            aux,
            audit,
        })
    }

    /// Reopens the audit file (SIGHUP, after log rotation moved it away).
    pub fn reopen_audit(&self) {
        if let Some(audit) = &self.audit {
            audit.reopen();
        }
    }

    /// The address clients connect to (the bound port when `server.listen` had port 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// The admin listener's address, if any.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The current upstream (nodes and their health).
    pub fn upstream(&self) -> Upstream {
        self.current.load().stack.upstream().clone()
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The running configuration.
    pub fn config(&self) -> Config {
        self.current.load().config.clone()
    }

    /// Swaps in `config` for every request that starts from now on; in-flight requests finish on
    /// the configuration they started with. Settings a running process cannot change keep their
    /// running values; their keys are returned (they apply after a restart).
    pub fn reload(&self, mut config: Config) -> Vec<&'static str> {
        let old = self.current.load_full();
        let ignored = reload::keep_fixed(&old.config, &mut config);
        let stack = Stack::new(&config, self.metrics.clone(), self.auditor.clone());
        stack.upstream().inherit(old.stack.upstream());
        warn_insecure(&config);
        let http = http_builder(&config);
        self.current.store(Arc::new(Generation::new(config, stack, http)));
        self.generation.send_replace(());
        ignored
    }

    /// Stops accepting, lets in-flight requests finish within the grace period, and returns
    /// when every worker has stopped. Blocks the calling thread.
    pub fn shutdown(mut self) {
        self.readiness.set_draining();
        tracing::info!("readiness off, stopping the listeners");
        let _ = self.shutdown.send(true);
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        let _ = self.aux_shutdown.send(true);
        if let Some(aux) = self.aux.take() {
            let _ = aux.join();
        }
        if let Some(audit) = self.audit.take() {
            audit.stop();
        }
        tracing::info!("esgate stopped");
    }
}

impl Drop for Gateway {
    /// A gateway dropped without [`Gateway::shutdown`] stops in the background.
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        let _ = self.aux_shutdown.send(true);
    }
}

fn bind(addr: SocketAddr, key: &str) -> Result<StdListener, StartupError> {
    let listener = StdListener::bind(addr).map_err(|e| startup(key, format!("cannot listen on {addr}: {e}")))?;
    listener.set_nonblocking(true).map_err(|e| startup(key, e))?;
    Ok(listener)
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StartupError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|e| startup("thread", e))
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

fn warn_insecure(config: &Config) {
    if config.upstream.tls_insecure {
        tracing::warn!("upstream.tls_insecure is on: the certificates of https:// nodes are not verified; use it for development only");
    }
}

fn http_builder(config: &Config) -> http1::Builder {
    let mut http = http1::Builder::new();
    let header_timeout = config.server.header_read_timeout;
    http.timer(TokioTimer::new())
        .header_read_timeout((!header_timeout.is_zero()).then_some(header_timeout))
        .max_header_size(config.server.max_header_size)
        .keep_alive(true)
        // Answers pass through as the node wrote them; Elasticsearch sends no Date header.
        .auto_date_header(false)
        .preserve_header_case(config.upstream.preserve_header_case);
    http
}

/// What one worker thread needs.
struct Worker {
    current: Current,
    shutdown: watch::Receiver<bool>,
}

impl Worker {
    fn run(mut self, listener: StdListener) {
        let rt = match runtime() {
            Ok(rt) => rt,
            Err(e) => return tracing::error!(error = %e, "cannot start a worker runtime"),
        };
        rt.block_on(async move {
            let listener = match TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => return tracing::error!(error = %e, "cannot register the listener"),
            };
            let graceful = GracefulShutdown::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((tcp, peer)) => self.serve(tcp, peer, &graceful),
                        Err(e) => accept_error(e).await,
                    },
                    _ = self.shutdown.changed() => break,
                }
            }
            drop(listener);
            drain(graceful, self.current.load().config.server.shutdown_grace).await;
        });
    }

    /// Serves one accepted connection under the current generation's settings.
    fn serve(&self, tcp: TcpStream, peer: SocketAddr, graceful: &GracefulShutdown) {
        let _ = tcp.set_nodelay(true);
        let generation = self.current.load_full();
        let metrics = generation.stack.metrics().clone();
        metrics.connection_opened();
        let watcher = graceful.watcher();
        let current = self.current.clone();
        tokio::spawn(async move {
            let result = match generation.tls.clone() {
                None => {
                    let service = ConnectionHandle::new(current, &generation, ConnInfo { peer, scheme: "http" });
                    let conn = generation.http.serve_connection(TokioIo::new(tcp), service);
                    watcher.watch(conn).await
                }
                Some(tls) => {
                    // The handshake counts against the header-read timeout: a client that opens a
                    // connection and says nothing is dropped either way.
                    let limit = match generation.config.server.header_read_timeout {
                        d if d.is_zero() => Duration::from_secs(30),
                        d => d,
                    };
                    match tokio::time::timeout(limit, tls.acceptor().accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let service =
                                ConnectionHandle::new(current, &generation, ConnInfo { peer, scheme: "https" });
                            let conn = generation.http.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(conn).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake with a client failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake with a client timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "client connection ended with an error");
            }
            metrics.connection_closed();
        });
    }
}

/// Accept errors are mostly resource exhaustion (EMFILE): log, pause briefly so the loop does
/// not spin, and go on.
async fn accept_error(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn drain(graceful: GracefulShutdown, grace: Duration) {
    let open = graceful.count();
    if open > 0 {
        tracing::info!(connections = open, grace = ?grace, "draining");
    }
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(grace = ?grace, "grace period over; closing the remaining connections");
    }
}

/// Probes the current generation's nodes; starts over on the new ones after a reload.
async fn probe_current(current: Current, mut generation: watch::Receiver<()>, shutdown: watch::Receiver<bool>) {
    loop {
        let running = current.load_full();
        let interval = running.config.upstream.health_check_interval;
        tokio::select! {
            () = running.stack.upstream().run_probes(interval, shutdown.clone()) => return,
            changed = generation.changed() => if changed.is_err() { return },
        }
    }
}

/// Learns the versions of the current generation's nodes; starts over on the new ones after a
/// reload (which keeps what was known of the nodes both generations have).
async fn learn_current(current: Current, mut generation: watch::Receiver<()>, shutdown: watch::Receiver<bool>) {
    loop {
        let running = current.load_full();
        let interval = running.config.upstream.version_check_interval;
        tokio::select! {
            () = running.stack.upstream().run_version_checks(interval, shutdown.clone()) => return,
            changed = generation.changed() => if changed.is_err() { return },
        }
    }
}

/// Serves `service` on every connection accepted from `listener` until `shutdown` changes.
async fn serve_simple<F, Fut>(listener: StdListener, mut shutdown: watch::Receiver<bool>, handle: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return tracing::error!(error = %e, "cannot register a listener"),
    };
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    // Elasticsearch sends no Date header; neither do esgate's own listeners.
    http.auto_date_header(false);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let conn = http.serve_connection(TokioIo::new(tcp), hyper::service::service_fn(handle.clone()));
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move { let _ = conn.await; });
                }
                Err(e) => accept_error(e).await,
            },
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

/// What the helper thread runs.
struct Aux {
    /// The admin listener and what its endpoints look at.
    admin: Option<(StdListener, Admin)>,
    /// The development upstream's listener and the version it reports.
    dev: Option<(StdListener, String)>,
    current: Current,
    /// Told of each new generation.
    generation: watch::Receiver<()>,
    shutdown: watch::Receiver<bool>,
}

/// The helper thread: the version probes, the admin endpoints with the upstream health probes,
/// and the development upstream. Nothing here is on a client request's path.
fn run_aux(aux: Aux) {
    let Aux {
        admin,
        dev,
        current,
        generation,
        shutdown,
    } = aux;
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return tracing::error!(error = %e, "cannot start the helper runtime"),
    };
    rt.block_on(async move {
        let versions = Some(tokio::spawn(learn_current(
            current.clone(),
            generation.clone(),
            shutdown.clone(),
        )));
        let probes = admin
            .as_ref()
            .map(|_| tokio::spawn(probe_current(current.clone(), generation.clone(), shutdown.clone())));
        let admin = admin.map(|(listener, state)| {
            tokio::spawn(serve_simple(listener, shutdown.clone(), move |req| {
                state.clone().handle(req)
            }))
        });
        let dev = dev.map(|(l, version)| {
            let upstream = DevUpstream::with_version(&version);
            tokio::spawn(serve_simple(l, shutdown.clone(), move |req| {
                let upstream = upstream.clone();
                async move { upstream.handle(req).await }
            }))
        });
        for task in [admin, dev, probes, versions].into_iter().flatten() {
            let _ = task.await;
        }
    });
}
