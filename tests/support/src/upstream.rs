//! The recording upstream: an HTTP/1.1 server on loopback that records every request byte for
//! byte and answers as the test says.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::wire::{request, within, Client, Message, Reader};

/// What the upstream does with one request.
pub enum Reply {
    /// Write these bytes (a whole response).
    Raw(Vec<u8>),
    /// Write a head, then each chunk received on the channel as it arrives; the channel closing
    /// ends the response.
    Stream(Vec<u8>, mpsc::UnboundedReceiver<Vec<u8>>),
    /// Never answer; keep the connection open.
    Hang,
    /// Close the connection without answering.
    Close,
}

impl Reply {
    /// A complete response with `Content-Length`.
    pub fn ok(body: &str) -> Reply {
        Reply::full(200, &[("content-type", "application/json")], body.as_bytes())
    }

    /// A complete response with the given status, headers and body (`Content-Length` added).
    pub fn full(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut out = format!("HTTP/1.1 {status} X\r\n").into_bytes();
        for (n, v) in headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
        Reply::Raw(out)
    }
}

type Handler = Arc<dyn Fn(&Message) -> Reply + Send + Sync>;

/// A request the upstream received, with the connection it came on.
#[derive(Clone, Debug)]
pub struct Seen {
    /// 0 for the first connection accepted, 1 for the next…
    pub conn: usize,
    /// The request.
    pub msg: Message,
}

/// An HTTP/1.1 server on loopback that records every request byte for byte.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    connections: Arc<AtomicUsize>,
    log: Arc<Mutex<VecDeque<Seen>>>,
}

impl Upstream {
    /// Starts an upstream that answers every request with `handler`.
    pub async fn start(handler: impl Fn(&Message) -> Reply + Send + Sync + 'static) -> Upstream {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), handler).await
    }

    /// As [`Upstream::start`], on a given address.
    pub async fn start_on(addr: SocketAddr, handler: impl Fn(&Message) -> Reply + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind(addr).await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let (tx, seen) = mpsc::unbounded_channel();
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Handler = Arc::new(handler);
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let counter = connections.clone();
        let log2 = log.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (counter, tx, handler, log) = (counter.clone(), tx.clone(), handler.clone(), log2.clone());
                tokio::spawn(serve(tcp, counter, tx, handler, log));
            }
        });
        Upstream {
            addr,
            seen,
            connections,
            log,
        }
    }

    /// An upstream whose first `GET /_slow` gets a 10-byte answer streamed from the returned
    /// channel (the head at once, the body as it is sent); everything else (health probes
    /// included) gets `other`.
    pub async fn with_slow_path(other: &'static str) -> (Upstream, mpsc::UnboundedSender<Vec<u8>>) {
        let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let rx = Mutex::new(Some(rx));
        let up = Upstream::start(move |msg| {
            let slow = msg.start_line.starts_with("GET /_slow ");
            match rx.lock().ok().and_then(|mut r| if slow { r.take() } else { None }) {
                Some(rx) => Reply::Stream(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n".to_vec(), rx),
                None => Reply::ok(other),
            }
        })
        .await;
        (up, tx)
    }

    /// Sends `GET /_slow` on `client`, waits until this upstream has it, sends the first half of
    /// the body on `tx`, and returns the response head the client got.
    pub async fn start_slow(&mut self, client: &mut Client, tx: &mpsc::UnboundedSender<Vec<u8>>) -> Message {
        client.send(&request("GET", "/_slow", &[], b"")).await;
        while !self.next().await.msg.start_line.starts_with("GET /_slow ") {}
        tx.send(b"01234".to_vec()).expect("first half");
        within("the slow head", client.reader.head())
            .await
            .expect("read")
            .expect("head")
    }

    /// An upstream that answers `{"ok":true}` to everything.
    pub async fn ok() -> Upstream {
        Upstream::start(|_| Reply::ok("{\"ok\":true}")).await
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next request received.
    pub async fn next(&mut self) -> Seen {
        within("the upstream to receive a request", self.seen.recv())
            .await
            .expect("upstream stopped")
    }

    /// Connections accepted so far (those of esgate's version probes not counted).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Every request received so far, in order (without consuming them from [`Upstream::next`]).
    pub fn log(&self) -> Vec<Seen> {
        self.log.lock().map(|l| l.iter().cloned().collect()).unwrap_or_default()
    }

    /// Requests received so far (without consuming them from [`Upstream::next`]).
    pub fn received(&self) -> usize {
        self.log.lock().map(|l| l.len()).unwrap_or(0)
    }
}

/// True for esgate's own `GET /` version probes. [`Upstream`] answers them itself and records
/// none, so a test sees only the requests it sends; hand-written upstreams use this to do the same.
pub fn is_version_probe(msg: &Message) -> bool {
    msg.header("user-agent")
        .is_some_and(|ua| ua.contains("(version probe)"))
}

async fn serve(
    tcp: TcpStream,
    counter: Arc<AtomicUsize>,
    tx: mpsc::UnboundedSender<Seen>,
    handler: Handler,
    log: Arc<Mutex<VecDeque<Seen>>>,
) {
    let mut reader = Reader::new(tcp);
    // Counted at the head of its first request that is not a version probe.
    let mut conn = None;
    while let Ok(Some(mut msg)) = reader.head().await {
        if is_version_probe(&msg) {
            // Answered without the handler and unrecorded: the version stays unknown.
            if reader.body(&mut msg, false, false).await.is_err() {
                return;
            }
            let answer = b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}";
            if reader.get_mut().write_all(answer).await.is_err() {
                return;
            }
            continue;
        }
        let conn = *conn.get_or_insert_with(|| counter.fetch_add(1, Ordering::SeqCst));
        if reader.body(&mut msg, false, false).await.is_err() {
            return;
        }
        let reply = handler(&msg);
        let seen = Seen { conn, msg };
        if let Ok(mut l) = log.lock() {
            l.push_back(seen.clone());
        }
        let _ = tx.send(seen);
        let io = reader.get_mut();
        match reply {
            Reply::Raw(bytes) => {
                if io.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::Stream(head, mut chunks) => {
                if io.write_all(&head).await.is_err() {
                    return;
                }
                while let Some(chunk) = chunks.recv().await {
                    if io.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            }
            Reply::Hang => {
                let _ = reader.get_mut().read(&mut [0u8; 1]).await;
                return;
            }
            Reply::Close => return,
        }
    }
}
