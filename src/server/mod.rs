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
//! **Bounded connections.** At most `server.max_connections` client connections are served at
//! once, counted by one semaphore shared by every worker: a worker takes a slot *before* it
//! accepts, so beyond the limit nobody accepts and the kernel's listen backlog
//! (`server.listen_backlog`) holds new clients until a slot frees. The default is derived from the
//! descriptor limit, leaving room for one upstream connection per client and for the admin
//! listener, audit sinks and files ([`derive_max_connections`]). An `accept` that fails (out of
//! descriptors or memory) pauses its loop briefly and never ends it.
//!
//! **Idle connections are cheap.** hyper holds about 16 KiB of buffers for a connection between
//! requests. esgate instead takes a connection back from hyper as soon as it waits for the next
//! request head with nothing received, and waits for the socket to become readable itself; a
//! parked connection holds its socket, its service and a few hundred bytes of task
//! (`connection::serve_client`).
//!
//! **Framing is checked first.** Before a request reaches the service stack, requests whose
//! framing or method a proxy must not pass on (RFC 9112 §3.2, §6.1, §6.3; `CONNECT`) are answered
//! 400 in Elasticsearch's shape and never forwarded ([`crate::hop::framing_error`]).
//!
//! **The admin listener has a thread of its own**, is not counted against the client limit, and
//! keeps a few spare descriptors, so that `/healthz` answers while every client slot is taken and
//! the process is out of descriptors.
//!
//! Shutdown: the admin readiness goes false first, then every worker stops accepting, tells each
//! connection to finish its in-flight request and close, and waits up to the grace period; the
//! audit thread stops last, so that the events of drained requests are written.

use std::convert::Infallible;
use std::fs::File;
use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use arc_swap::ArcSwap;

use crate::admin::{Admin, NodeLine, NodeReport, Readiness};
use crate::audit::{self, AuditThread, Auditor};
use crate::body::Body;
use crate::config::{Config, NodeUrl};
use crate::dev::DevUpstream;
use crate::metrics::Metrics;
use crate::reload::{self, Current, Generation};

mod connection;
use crate::stack::Stack;
use crate::upstream::{ConnInfo, Upstream};
use connection::{serve_client, Checked};

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

/// Descriptors kept out of the client connections' share of the limit: the listeners, the admin
/// listener and its connections, the audit sinks and files, the runtimes' own.
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// The admin listener serves at most this many connections at once (probes and scrapes are few);
/// it is not counted against `server.max_connections`.
const ADMIN_CONNECTIONS: usize = 16;
/// Spare descriptors the admin listener holds, and gives up to accept a probe when the process
/// is out of them.
const ADMIN_SPARE_DESCRIPTORS: usize = 4;
/// An admin connection is closed when a request head takes longer than this (idle keep-alive
/// connections included).
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an accept loop pauses after a failed `accept` (out of descriptors or memory).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A running gateway: its listeners, worker threads and helpers.
#[derive(Debug)]
pub struct Gateway {
    listen_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    max_connections: usize,
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
    /// The admin listener's thread, stopped with the helper thread.
    admin: Option<JoinHandle<()>>,
    /// Stopped last, so that the events of drained requests are written.
    audit: Option<AuditThread>,
}

impl Gateway {
    /// Binds every listener, starts the development upstream when asked, and starts serving.
    ///
    /// # Errors
    /// A listener that cannot be bound, or a thread or runtime that cannot be created.
    pub fn start(mut config: Config) -> Result<Gateway, StartupError> {
        let backlog = config.server.listen_backlog;
        let listener = bind(config.server.listen, "server.listen", backlog)?;
        let listen_addr = listener.local_addr().map_err(|e| startup("server.listen", e))?;
        let admin = config
            .server
            .admin_listen
            .map(|addr| bind(addr, "server.admin_listen", backlog))
            .transpose()?;
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        let dev = if config.upstream.dev {
            let dev = bind(SocketAddr::from(([127, 0, 0, 1], 0)), "upstream.dev", backlog)?;
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
        let open_files = open_files_limit();
        let max_connections = max_connections(config.server.max_connections, open_files);

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
        // The admin listener on a thread and runtime of its own: nothing else runs there, so that
        // it answers whatever the workers and the helper thread are doing.
        let admin_thread = match admin {
            Some(listener) => {
                let state = Admin {
                    readiness: readiness.clone(),
                    nodes: Arc::new(RunningNodes(current.clone())),
                    metrics: metrics.clone(),
                };
                let shutdown = aux_shutdown.subscribe();
                Some(spawn_thread("esgate-admin", move || {
                    run_admin(listener, state, shutdown)
                })?)
            }
            None => None,
        };
        // Always: the version probes run on it, admin listener or not.
        let aux = {
            let dev = dev.map(|listener| (listener, config.upstream.dev_version.clone()));
            let aux = Aux {
                probe: admin_addr.is_some(),
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
        let slots = Arc::new(Semaphore::new(max_connections));
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let listener = listener.try_clone().map_err(|e| startup("server.listen", e))?;
            let ctx = Worker {
                current: current.clone(),
                shutdown: shutdown.subscribe(),
                slots: slots.clone(),
                metrics: metrics.clone(),
            };
            handles.push(spawn_thread(&format!("esgate-worker-{i}"), move || ctx.run(listener))?);
        }
        tracing::info!(
            listen = %listen_addr,
            admin = %admin_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
            upstream = %config.upstream.nodes.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            dev = config.upstream.dev,
            workers,
            max_connections,
            open_files = %open_files.map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
            listen_backlog = backlog,
            audit = audit.is_some(),
            report_only = config.connector_error.report_only,
            es_version = %config.connector_error.es_version.map_or_else(|| "learned".to_owned(), |v| v.to_string()),
            tls = config.server.tls.is_some(),
            "esgate started"
        );
        Ok(Gateway {
            listen_addr,
            admin_addr,
            max_connections,
            current,
            generation,
            metrics,
            auditor,
            readiness,
            shutdown,
            workers: handles,
            aux_shutdown,
            aux,
            admin: admin_thread,
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

    /// Client connections served at once (`server.max_connections`, or the value derived from the
    /// descriptor limit).
    pub fn max_connections(&self) -> usize {
        self.max_connections
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
        for thread in [self.aux.take(), self.admin.take()].into_iter().flatten() {
            let _ = thread.join();
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

/// Binds `addr` with a listen backlog of `backlog` (std's `bind` fixes it at 128).
fn bind(addr: SocketAddr, key: &str, backlog: u32) -> Result<StdListener, StartupError> {
    let fail = |e: std::io::Error| startup(key, format!("cannot listen on {addr}: {e}"));
    // tokio's `TcpSocket::listen` registers the listener with a reactor; a runtime on a thread of
    // its own lends one whatever the caller runs in, and `into_std` takes the socket back.
    let bound = std::thread::scope(|scope| {
        scope
            .spawn(|| -> std::io::Result<StdListener> {
                let socket = if addr.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                // As std's `bind` does: a restarted esgate can bind while old connections linger.
                #[cfg(unix)]
                socket.set_reuseaddr(true)?;
                socket.bind(addr)?;
                let rt = runtime()?;
                let _context = rt.enter();
                socket.listen(backlog)?.into_std()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the binding thread panicked")))
    });
    let listener = bound.map_err(fail)?;
    listener.set_nonblocking(true).map_err(|e| startup(key, e))?;
    Ok(listener)
}

/// The soft limit on open files ("Max open files" in `/proc/self/limits`); `None` when unknown.
fn open_files_limit() -> Option<u64> {
    parse_open_files_limit(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// The soft "Max open files" limit of a `/proc/<pid>/limits` text (`u64::MAX` for unlimited).
fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.strip_prefix("Max open files")?.split_whitespace().next()?;
    match soft {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// The client connections a descriptor limit allows: each may use one upstream connection as
/// well, and [`RESERVED_DESCRIPTORS`] stay for everything else. At least one. An unknown limit
/// counts as 1024, the usual default.
pub fn derive_max_connections(open_files: Option<u64>) -> usize {
    let open_files = open_files.unwrap_or(1024).min(1 << 24);
    let n = (open_files.saturating_sub(RESERVED_DESCRIPTORS) / 2).max(1);
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// `server.max_connections`, or the value derived from the descriptor limit when it is 0; warns
/// when a configured value is more than the limit allows.
fn max_connections(configured: usize, open_files: Option<u64>) -> usize {
    let derived = derive_max_connections(open_files);
    let n = match configured {
        0 => derived,
        n => {
            if n > derived && open_files.is_some() {
                tracing::warn!(
                    max_connections = n,
                    open_files = open_files.unwrap_or_default(),
                    fits = derived,
                    "server.max_connections is more than the descriptor limit allows; beyond it, accepts and upstream connections will fail"
                );
            }
            n
        }
    };
    n.min(Semaphore::MAX_PERMITS)
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
    // The header-read timeout and its timer are set per connection ([`serve_client`]).
    http.max_header_size(config.server.max_header_size)
        // hyper's read buffer grows with large bodies up to this (its default is about 400 KiB
        // per connection); a head needs at most `max_header_size`.
        .max_buf_size(config.server.max_header_size.max(64 * 1024))
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
    /// Client connections served at once, shared by every worker.
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
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
            // Each connection holds a receiver; the worker waits for them all to be dropped.
            let (open, _) = watch::channel(());
            loop {
                // A slot first: at the limit nobody accepts, and the kernel's backlog holds the
                // clients that arrive meanwhile.
                let slot = tokio::select! {
                    slot = self.slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    _ = self.shutdown.changed() => break,
                };
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((tcp, peer)) => self.serve(tcp, peer, slot, open.subscribe()),
                        Err(e) => {
                            drop(slot);
                            accept_failed("server.listen", &e, Some(&self.metrics)).await;
                        }
                    },
                    _ = self.shutdown.changed() => break,
                }
            }
            drop(listener);
            drain(open, self.current.load().config.server.shutdown_grace).await;
        });
    }

    /// Serves one accepted connection under the current generation's settings.
    fn serve(&self, tcp: TcpStream, peer: SocketAddr, slot: OwnedSemaphorePermit, open: watch::Receiver<()>) {
        let _ = tcp.set_nodelay(true);
        let generation = self.current.load_full();
        let metrics = generation.stack.metrics().clone();
        metrics.connection_opened();
        let current = self.current.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _open = open;
            match generation.tls.clone() {
                None => {
                    let service = Checked::new(&current, &generation, ConnInfo { peer, scheme: "http" });
                    serve_client(tcp, service, &generation, shutdown).await;
                }
                // Boxed: the handshake's and the TLS stream's state would make every plain
                // connection's task as large.
                Some(tls) => {
                    Box::pin(async {
                        // The handshake counts against the header-read timeout: a client that opens a
                        // connection and says nothing is dropped either way.
                        let limit = match generation.config.server.header_read_timeout {
                            d if d.is_zero() => Duration::from_secs(30),
                            d => d,
                        };
                        match tokio::time::timeout(limit, tls.acceptor().accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                let service = Checked::new(&current, &generation, ConnInfo { peer, scheme: "https" });
                                serve_client(stream, service, &generation, shutdown).await;
                            }
                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake with a client failed"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake with a client timed out"),
                        }
                    })
                    .await
                }
            }
            metrics.connection_closed();
        });
    }
}

/// A failed `accept`. Errors of one connection (it was reset before it was accepted) do not
/// stop the loop; any other (out of descriptors or memory: EMFILE, ENFILE, ENOMEM, ENOBUFS)
/// pauses it for [`ACCEPT_BACKOFF`], so that it neither spins nor ends, and is logged at most
/// once a second.
async fn accept_failed(listener: &'static str, e: &std::io::Error, metrics: Option<&Metrics>) {
    if is_per_connection(e) {
        return tracing::debug!(listener, error = %e, "a connection failed before it was accepted");
    }
    if let Some(metrics) = metrics {
        metrics.accept_error();
    }
    warn_throttled(listener, e);
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

/// Errors `accept` returns for one connection only: accept the next one at once.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted
            | ConnectionReset
            | Interrupted
            | WouldBlock
            | HostUnreachable
            | NetworkUnreachable
            | NetworkDown
    )
}

/// Logs an accept error at most once a second, with the number of those not logged since.
fn warn_throttled(listener: &'static str, e: &std::io::Error) {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    /// Milliseconds since `EPOCH` of the last line, plus one (0: none yet).
    static LAST: AtomicU64 = AtomicU64::new(0);
    static QUIET: AtomicU64 = AtomicU64::new(0);
    let now = u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let last = LAST.load(Ordering::Relaxed);
    let due = last == 0 || now.saturating_sub(last) >= 1000;
    if due
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let unlogged = QUIET.swap(0, Ordering::Relaxed);
        tracing::warn!(listener, error = %e, unlogged, "accept failed; pausing the listener briefly");
    } else {
        QUIET.fetch_add(1, Ordering::Relaxed);
    }
}

/// Tells nothing (each connection watches the shutdown channel itself) and waits up to `grace`
/// for every connection to finish.
async fn drain(open: watch::Sender<()>, grace: Duration) {
    let count = open.receiver_count();
    if count > 0 {
        tracing::info!(connections = count, grace = ?grace, "draining");
    }
    if tokio::time::timeout(grace, open.closed()).await.is_err() {
        tracing::warn!(grace = ?grace, "grace period over; closing the remaining connections");
    }
}

// ===== the helper and admin threads =====

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

/// Limits of one of esgate's own listeners (the admin listener).
#[derive(Clone, Copy, Debug)]
struct OwnLimits {
    /// Connections served at once; more wait in the backlog.
    connections: usize,
    /// Spare descriptors held, each given up to accept one connection when the process is out of
    /// them.
    spare: usize,
    /// Time a request head may take, idle keep-alive time included.
    header_timeout: Duration,
}

/// Serves `service` on every connection accepted from `listener` until `shutdown` changes.
async fn serve_simple<F, Fut>(
    listener: StdListener,
    name: &'static str,
    mut shutdown: watch::Receiver<bool>,
    handle: F,
    limits: Option<OwnLimits>,
) where
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
    if let Some(limits) = limits {
        http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    }
    let slots = limits.map(|l| Arc::new(Semaphore::new(l.connections)));
    let mut spare = Vec::new();
    let want_spare = limits.map_or(0, |l| l.spare);
    refill_spare(&mut spare, want_spare);
    loop {
        let slot = match &slots {
            Some(slots) => tokio::select! {
                slot = slots.clone().acquire_owned() => slot.ok(),
                _ = shutdown.changed() => break,
            },
            None => None,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let conn = http.serve_connection(TokioIo::new(tcp), hyper::service::service_fn(handle.clone()));
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        let _slot = slot;
                        let _ = conn.await;
                    });
                    refill_spare(&mut spare, want_spare);
                }
                Err(e) if !is_per_connection(&e) && spare.pop().is_some() => {
                    // Out of descriptors: the spare just closed makes room for this connection.
                    tracing::debug!(listener = name, error = %e, "accept failed; gave up a spare descriptor");
                }
                Err(e) => accept_failed(name, &e, None).await,
            },
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

/// Opens spare descriptors up to `want` (as many as the process can).
fn refill_spare(spare: &mut Vec<File>, want: usize) {
    while spare.len() < want {
        match File::open("/dev/null") {
            Ok(file) => spare.push(file),
            Err(_) => break,
        }
    }
}

/// The admin listener's thread: nothing else runs on its runtime.
fn run_admin(listener: StdListener, state: Admin, shutdown: watch::Receiver<bool>) {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return tracing::error!(error = %e, "cannot start the admin runtime"),
    };
    let limits = OwnLimits {
        connections: ADMIN_CONNECTIONS,
        spare: ADMIN_SPARE_DESCRIPTORS,
        header_timeout: ADMIN_HEADER_TIMEOUT,
    };
    rt.block_on(serve_simple(
        listener,
        "server.admin_listen",
        shutdown,
        move |req| state.clone().handle(req),
        Some(limits),
    ));
}

/// The nodes of the running configuration, as the admin listener reports them.
#[derive(Debug)]
struct RunningNodes(Current);

impl NodeReport for RunningNodes {
    fn any_answering(&self) -> bool {
        self.0.load().stack.upstream().nodes().any_answering()
    }

    fn nodes(&self) -> Vec<NodeLine> {
        let current = self.0.load();
        let nodes = current.stack.upstream().nodes();
        nodes
            .states()
            .enumerate()
            .map(|(index, (node, up))| {
                let learned = nodes.learned(index);
                NodeLine {
                    node: node.to_owned(),
                    up,
                    version: learned.version_label().to_owned(),
                    dialect: learned.dialect_label(),
                }
            })
            .collect()
    }
}

/// What the helper thread runs.
struct Aux {
    /// Whether the upstream health probes run (they feed the admin listener's `/readyz`).
    probe: bool,
    /// The development upstream's listener and the version it reports.
    dev: Option<(StdListener, String)>,
    current: Current,
    /// Told of each new generation.
    generation: watch::Receiver<()>,
    shutdown: watch::Receiver<bool>,
}

/// The helper thread: the version probes, the upstream health probes (with an admin listener),
/// and the development upstream. Nothing here is on a client request's path.
fn run_aux(aux: Aux) {
    let Aux {
        probe,
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
        let memory = Some(tokio::spawn(crate::memory::give_back(shutdown.clone())));
        let versions = Some(tokio::spawn(learn_current(
            current.clone(),
            generation.clone(),
            shutdown.clone(),
        )));
        let probes = probe.then(|| tokio::spawn(probe_current(current.clone(), generation.clone(), shutdown.clone())));
        let dev = dev.map(|(l, version)| {
            let upstream = DevUpstream::with_version(&version);
            tokio::spawn(serve_simple(
                l,
                "upstream.dev",
                shutdown.clone(),
                move |req| {
                    let upstream = upstream.clone();
                    async move { upstream.handle(req).await }
                },
                None,
            ))
        });
        for task in [dev, probes, versions, memory].into_iter().flatten() {
            let _ = task.await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max open files            1024                 524288               files     \n\
Max locked memory         8388608              8388608              bytes     \n";

    #[test]
    fn reads_the_soft_open_files_limit() {
        assert_eq!(parse_open_files_limit(LIMITS), Some(1024));
        let unlimited = LIMITS.replace("1024                 524288", "unlimited            unlimited");
        assert_eq!(parse_open_files_limit(&unlimited), Some(u64::MAX));
        assert_eq!(
            parse_open_files_limit("Max cpu time unlimited unlimited seconds\n"),
            None
        );
        assert_eq!(parse_open_files_limit(""), None);
    }

    #[test]
    fn this_process_has_a_limit() {
        // Linux: the test process's own limit is readable.
        if cfg!(target_os = "linux") {
            assert!(open_files_limit().is_some_and(|n| n > 0));
        }
    }

    #[test]
    fn max_connections_leave_room_for_upstream_and_own_descriptors() {
        assert_eq!(derive_max_connections(Some(1024)), 480);
        assert_eq!(derive_max_connections(Some(128)), 32);
        assert_eq!(derive_max_connections(Some(256)), 96);
        // Too few descriptors still serve one client at a time.
        assert_eq!(derive_max_connections(Some(10)), 1);
        assert_eq!(derive_max_connections(None), 480);
        // Unlimited is bounded.
        assert_eq!(derive_max_connections(Some(u64::MAX)), ((1 << 24) - 64) / 2);
        // A configured value wins.
        assert_eq!(max_connections(7, Some(1024)), 7);
        assert_eq!(max_connections(0, Some(1024)), 480);
        assert_eq!(max_connections(usize::MAX, None), Semaphore::MAX_PERMITS);
    }

    #[test]
    fn connection_errors_do_not_pause_accepting() {
        use std::io::{Error, ErrorKind};
        assert!(is_per_connection(&Error::from(ErrorKind::ConnectionAborted)));
        assert!(!is_per_connection(&Error::from(ErrorKind::OutOfMemory)));
        // EMFILE, as Linux numbers it.
        assert!(!is_per_connection(&Error::from_raw_os_error(24)));
    }

    #[test]
    fn binds_with_the_backlog_asked_for() {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)), "test", 4096).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = std::net::TcpStream::connect(addr).expect("connect");
        listener.set_nonblocking(false).expect("blocking");
        let (_, peer) = listener.accept().expect("accept");
        assert_eq!(peer, client.local_addr().expect("local"));
    }
}
