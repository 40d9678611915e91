//! Opening an HTTP/1.1 client connection to a node: TCP within a deadline, TLS for `https://`,
//! hyper's handshake, and the connection's task on the current runtime thread. The one place that
//! knows the transport: the upstream pool, its probes and the audit trail's `_bulk` sink use it.

use std::fmt;
use std::time::Duration;

use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::tls::ClientTls;
use crate::BoxError;

/// Where to connect: `host:port`, and the name to check the certificate against for TLS.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target<'a> {
    /// `host:port`, resolved by the system.
    pub(crate) authority: &'a str,
    /// For an `https://` node: the name its certificate must carry.
    pub(crate) server_name: Option<&'a ServerName<'static>>,
    /// The TLS settings (needed when `server_name` is set).
    pub(crate) tls: Option<&'a ClientTls>,
}

/// Opens a connection to `target` within `timeout` (TCP and TLS together), handshakes with
/// `builder`, and spawns the connection's task; `what` names it in the debug line of its end.
pub(crate) async fn connect<B>(
    target: Target<'_>,
    builder: &Builder,
    timeout: Duration,
    what: &'static str,
) -> Result<SendRequest<B>, ConnectError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(target.authority)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Err(_) => return Err(ConnectError::Timeout(timeout)),
    };
    // Requests and answers are small and latency-bound: never wait for Nagle.
    let _ = tcp.set_nodelay(true);
    match target.server_name {
        None => handshake(target.authority, builder, tcp, what).await,
        Some(name) => {
            let connector = target.tls.ok_or(ConnectError::NoTls)?.connector();
            let stream = match tokio::time::timeout_at(deadline, connector.connect(name.clone(), tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Err(ConnectError::Tls(e)),
                Err(_) => return Err(ConnectError::Timeout(timeout)),
            };
            handshake(target.authority, builder, stream, what).await
        }
    }
}

async fn handshake<T, B>(
    authority: &str,
    builder: &Builder,
    io: T,
    what: &'static str,
) -> Result<SendRequest<B>, ConnectError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (send, conn) = builder
        .handshake(TokioIo::new(io))
        .await
        .map_err(ConnectError::Handshake)?;
    let authority = authority.to_owned();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(node = %authority, connection = what, error = %e, "connection ended with an error");
        }
    });
    Ok(send)
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

impl ConnectError {
    /// True when the connection failed for a reason of esgate's own host (no descriptors, memory,
    /// buffers or local ports left): nothing to hold against the node. The one test for requests,
    /// health probes and version probes alike.
    pub(crate) fn is_local(&self) -> bool {
        match self {
            ConnectError::Io(io) => is_local_io(io),
            _ => false,
        }
    }
}

fn is_local_io(e: &std::io::Error) -> bool {
    if e.kind() == std::io::ErrorKind::OutOfMemory {
        return true;
    }
    // EMFILE, ENFILE and ENOMEM share their numbers on Linux and the BSDs; ENOBUFS and
    // EADDRNOTAVAIL do not.
    const SHARED: [i32; 3] = [24, 23, 12];
    #[cfg(target_os = "linux")]
    const OWN: [i32; 2] = [105, 99];
    #[cfg(not(target_os = "linux"))]
    const OWN: [i32; 2] = [55, 49];
    e.raw_os_error()
        .is_some_and(|n| SHARED.contains(&n) || OWN.contains(&n))
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
