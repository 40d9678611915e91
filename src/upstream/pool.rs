//! Upstream connections: opened per node, kept by the client connection that used them last, and
//! parked per runtime thread when that client connection ends.
//!
//! A client connection sends its requests one after another (HTTP/1.1), so the upstream
//! connection it used for one request is free for the next: keeping it in the client
//! connection's own state avoids a shared pool lock and a cross-thread hand-off on every request.
//! When the client connection closes, its upstream connections move to a pool owned by the
//! runtime thread (no lock either), where the next client connection on that thread finds them.

use std::cell::RefCell;
use std::fmt;
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::UpstreamBody;
use super::nodes::Node;
use crate::tls::ClientTls;

/// The sending half of one upstream HTTP/1.1 connection.
pub(crate) type Sender = SendRequest<UpstreamBody>;

/// An upstream connection not in use, with the time it became idle.
pub(crate) struct Idle {
    node: u64,
    pub(crate) send: Sender,
    pub(crate) since: Instant,
}

impl Idle {
    pub(crate) fn new(node: u64, send: Sender) -> Self {
        Idle {
            node,
            send,
            since: Instant::now(),
        }
    }

    /// Still open, and young enough that the node has not closed it as idle.
    pub(crate) fn usable(&self, max_idle: Duration) -> bool {
        !self.send.is_closed() && self.since.elapsed() < max_idle
    }
}

thread_local! {
    /// Idle upstream connections of every gateway in this process, parked on this thread.
    static PARKED: RefCell<Vec<Idle>> = const { RefCell::new(Vec::new()) };
}

/// Takes the most recently parked usable connection to `node` on this thread.
pub(crate) fn take_parked(node: u64, max_idle: Duration) -> Option<Sender> {
    PARKED
        .try_with(|parked| {
            let mut parked = parked.try_borrow_mut().ok()?;
            parked.retain(|c| c.usable(max_idle));
            let pos = parked.iter().rposition(|c| c.node == node)?;
            Some(parked.swap_remove(pos).send)
        })
        .ok()
        .flatten()
}

/// Parks an idle connection on this thread, unless `max_per_node` are parked for its node already.
pub(crate) fn park(idle: Idle, max_idle: Duration, max_per_node: usize) {
    let _ = PARKED.try_with(|parked| {
        if let Ok(mut parked) = parked.try_borrow_mut() {
            parked.retain(|c| c.usable(max_idle));
            if parked.iter().filter(|c| c.node == idle.node).count() < max_per_node {
                parked.push(idle);
            }
        }
    });
}

/// Why a connection to a node could not be opened. Nothing of the request was sent.
#[derive(Debug)]
pub(crate) enum ConnectError {
    Io(std::io::Error),
    Timeout(Duration),
    Tls(std::io::Error),
    /// An `https://` node, but no TLS settings (cannot happen with a loaded configuration).
    NoTls,
    Handshake(hyper::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Io(e) => write!(f, "{e}"),
            ConnectError::Timeout(d) => write!(f, "connect timed out after {d:?}"),
            ConnectError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            ConnectError::NoTls => f.write_str("an https:// node, but no TLS settings"),
            ConnectError::Handshake(e) => write!(f, "{e}"),
        }
    }
}

/// Opens a new connection to `node` (TLS for an `https://` node, within the same `timeout`) and
/// drives it on the current runtime thread.
pub(crate) async fn connect(
    node: &Node,
    builder: &Builder,
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<Sender, ConnectError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(node.authority.as_str())).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Err(_) => return Err(ConnectError::Timeout(timeout)),
    };
    // Requests and answers are small and latency-bound: never wait for Nagle.
    let _ = tcp.set_nodelay(true);
    match &node.tls {
        None => handshake(node, builder, tcp).await,
        Some(name) => {
            let connector = tls.ok_or(ConnectError::NoTls)?.connector();
            let stream = match tokio::time::timeout_at(deadline, connector.connect(name.clone(), tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Err(ConnectError::Tls(e)),
                Err(_) => return Err(ConnectError::Timeout(timeout)),
            };
            handshake(node, builder, stream).await
        }
    }
}

async fn handshake<T>(node: &Node, builder: &Builder, io: T) -> Result<Sender, ConnectError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (send, conn) = builder
        .handshake(TokioIo::new(io))
        .await
        .map_err(ConnectError::Handshake)?;
    let authority = node.authority.clone();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(node = %authority, error = %e, "upstream connection ended with an error");
        }
    });
    Ok(send)
}
