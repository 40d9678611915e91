//! Test support: a recording upstream on loopback, raw HTTP/1.1 clients, and ways to run esgate
//! in-process or as the real binary.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Every await in a test is bounded by this, so a broken proxy fails a test instead of hanging it.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Awaits `f`, failing the test if it takes longer than [`LIMIT`].
pub async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

// ===== raw HTTP/1.1 messages =====

/// One HTTP/1.1 message head and body as read off the wire.
#[derive(Clone, Debug, Default)]
pub struct Message {
    /// The head exactly as received, including the final CRLF CRLF.
    pub raw_head: Vec<u8>,
    /// Request line or status line.
    pub start_line: String,
    /// Header (name, value) pairs in wire order, names as received.
    pub headers: Vec<(String, String)>,
    /// The body after transfer decoding.
    pub body: Vec<u8>,
    /// Whether the body came chunked.
    pub chunked: bool,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
}

impl Message {
    /// First value of a header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Header names, lower-cased, in wire order.
    pub fn header_names(&self) -> Vec<String> {
        self.headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect()
    }

    /// The status code of a response.
    pub fn status(&self) -> u16 {
        self.start_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A buffered reader of HTTP/1.1 messages from a stream.
pub struct Reader<R> {
    io: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Wraps a stream.
    pub fn new(io: R) -> Self {
        Reader { io, buf: Vec::new() }
    }

    /// The wrapped stream.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.io
    }

    async fn fill(&mut self) -> std::io::Result<bool> {
        self.buf.reserve(64 * 1024);
        let n = self.io.read_buf(&mut self.buf).await?;
        Ok(n > 0)
    }

    /// Reads a message head; `None` on a clean end of stream before any byte.
    pub async fn head(&mut self) -> std::io::Result<Option<Message>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let raw_head: Vec<u8> = self.buf.drain(..end + 4).collect();
                let text = String::from_utf8_lossy(&raw_head).into_owned();
                let mut lines = text.split("\r\n");
                let start_line = lines.next().unwrap_or_default().to_owned();
                let headers = lines
                    .filter(|l| !l.is_empty())
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.to_owned(), v.trim().to_owned()))
                    .collect();
                return Ok(Some(Message {
                    raw_head,
                    start_line,
                    headers,
                    ..Message::default()
                }));
            }
            if !self.fill().await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "eof inside a head",
                    ))
                };
            }
        }
    }

    /// Reads exactly `n` body bytes.
    pub async fn exact(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await? {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "eof inside a body",
                ));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            if !self.fill().await? {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "eof inside a chunk line",
                ));
            }
        }
    }

    /// Reads one chunk of a chunked body: `Some(data)`, or `None` for the last chunk (with trailers).
    pub async fn chunk(&mut self, msg: &mut Message) -> std::io::Result<Option<Vec<u8>>> {
        let size_line = self.line().await?;
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad chunk size {size_line:?}"))
        })?;
        if size == 0 {
            loop {
                let line = self.line().await?;
                if line.is_empty() {
                    return Ok(None);
                }
                if let Some((n, v)) = line.split_once(':') {
                    msg.trailers.push((n.to_owned(), v.trim().to_owned()));
                }
            }
        }
        let data = self.exact(size).await?;
        self.exact(2).await?;
        Ok(Some(data))
    }

    /// Reads the body that `msg`'s head announces. `no_body` for HEAD answers, 1xx, 204 and 304.
    pub async fn body(&mut self, msg: &mut Message, no_body: bool, until_close: bool) -> std::io::Result<()> {
        if no_body {
            return Ok(());
        }
        let chunked = msg
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if chunked {
            msg.chunked = true;
            while let Some(data) = self.chunk(msg).await? {
                msg.body.extend_from_slice(&data);
            }
        } else if let Some(len) = msg.header("content-length") {
            let len: usize = len.parse().map_err(|_| std::io::Error::other("bad content-length"))?;
            msg.body = self.exact(len).await?;
        } else if until_close {
            while self.fill().await? {}
            msg.body = std::mem::take(&mut self.buf);
        }
        Ok(())
    }

    /// Reads a whole request.
    pub async fn request(&mut self) -> std::io::Result<Option<Message>> {
        let Some(mut msg) = self.head().await? else {
            return Ok(None);
        };
        self.body(&mut msg, false, false).await?;
        Ok(Some(msg))
    }

    /// Reads a whole response to a request with `method`, skipping `100 Continue`.
    pub async fn response(&mut self, method: &str) -> std::io::Result<Message> {
        loop {
            let Some(mut msg) = self.head().await? else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed before a response",
                ));
            };
            let status = msg.status();
            if status == 100 {
                continue;
            }
            let no_body = method == "HEAD" || status == 204 || status == 304;
            self.body(&mut msg, no_body, true).await?;
            return Ok(msg);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ===== the recording upstream =====

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

/// True for esgate's own `GET /` version probes (tests/versions.rs looks at them; everyone else
/// sees only the requests their test sends, as before esgate learned versions).
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

// ===== esgate =====

/// Arguments for an in-process gateway: loopback port 0, one worker, the given extra flags.
pub fn config(extra: &[&str]) -> esgate::Config {
    let mut args = vec!["esgate", "--listen=127.0.0.1:0", "--workers=1"];
    args.extend_from_slice(extra);
    match esgate::Config::load_from(args) {
        Ok((_, config)) => config,
        Err(e) => panic!("test configuration rejected: {e:?}"),
    }
}

/// Starts esgate in this process in front of `upstreams`.
pub fn gateway(upstreams: &[&Upstream], extra: &[&str]) -> esgate::Gateway {
    let flags: Vec<String> = upstreams.iter().map(|u| format!("--upstream={}", u.url())).collect();
    let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    esgate::Gateway::start(config(&all)).expect("gateway starts")
}

/// A raw client connection.
pub struct Client {
    /// The connection, wrapped for reading responses.
    pub reader: Reader<TcpStream>,
}

impl Client {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Client {
        let tcp = within("connect", TcpStream::connect(addr))
            .await
            .expect("connect to esgate");
        Client {
            reader: Reader::new(tcp),
        }
    }

    /// Writes raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).await.expect("write to esgate");
    }

    /// Reads a response to a request with `method`.
    pub async fn response(&mut self, method: &str) -> Message {
        within("a response", self.reader.response(method))
            .await
            .expect("read a response")
    }

    /// Sends a request (raw bytes) and reads its response.
    pub async fn exchange(&mut self, method: &str, request: &[u8]) -> Message {
        self.send(request).await;
        self.response(method).await
    }
}

/// A minimal request: `METHOD target HTTP/1.1`, Host, the extra headers, and the body with
/// `Content-Length` when there is one.
pub fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: es.test\r\n").into_bytes();
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    if !body.is_empty() {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Deterministic pseudo-random bytes (xorshift), so a failure can be replayed.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// FNV-1a digest, to report large bodies in assertion messages.
pub fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

// ===== the real binary =====

/// The lines `stream` gives, on a channel (read by a thread of their own).
fn lines(stream: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The esgate binary, running.
pub struct Binary {
    /// The process.
    pub child: Child,
    /// Its client listener.
    pub addr: SocketAddr,
    /// Its admin listener, if any.
    pub admin: Option<SocketAddr>,
    /// Log lines (stderr) after the start-up line arrive here.
    pub log: std::sync::mpsc::Receiver<String>,
    /// Lines written to stdout (audit events) arrive here.
    pub stdout: std::sync::mpsc::Receiver<String>,
    /// The log lines up to and including the start-up line.
    pub startup: Vec<String>,
    /// stdout when it is held unread (see [`Binary::start_holding_stdout`]).
    held: Option<std::process::ChildStdout>,
}

impl Binary {
    /// Starts the binary with `args` (and `--listen=127.0.0.1:0` unless given) and waits for its
    /// start-up line.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Binary {
        Self::spawn(args, env, true)
    }

    /// As [`Binary::start`], but nobody reads stdout: once the pipe is full, writes to it block.
    pub fn start_holding_stdout(args: &[&str], env: &[(&str, &str)]) -> Binary {
        Self::spawn(args, env, false)
    }

    fn spawn(args: &[&str], env: &[(&str, &str)], read_stdout: bool) -> Binary {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_esgate"));
        if !args.iter().any(|a| a.starts_with("--listen")) {
            cmd.arg("--listen=127.0.0.1:0");
        }
        cmd.args(args).envs(env.iter().copied()).env_remove("RUST_LOG");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn esgate");
        let log = lines(child.stderr.take().expect("stderr"));
        let (stdout, held) = match child.stdout.take() {
            Some(out) if read_stdout => (lines(out), None),
            out => (std::sync::mpsc::channel().1, out),
        };
        let mut startup = Vec::new();
        let started = loop {
            match log.recv_timeout(LIMIT) {
                Ok(line) if line.contains("esgate started") => {
                    startup.push(line.clone());
                    break line;
                }
                Ok(line) => startup.push(line),
                Err(e) => {
                    let _ = child.kill();
                    panic!("esgate did not start: {e}");
                }
            }
        };
        let field = |name: &str| {
            started
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|v| v.trim_matches('"').parse::<SocketAddr>().ok())
        };
        let addr = field("listen=").expect("listen address in the start-up line");
        let admin = field("admin=");
        Binary {
            child,
            addr,
            admin,
            log,
            stdout,
            startup,
            held,
        }
    }

    /// Sends `signal` (`HUP`, `TERM`, …).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// The next line on stdout.
    pub fn next_stdout(&self) -> String {
        self.stdout
            .recv_timeout(LIMIT)
            .unwrap_or_else(|e| panic!("no line on stdout: {e}"))
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Waits for a log line containing `text`.
    pub fn wait_log(&self, text: &str) -> String {
        loop {
            match self.log.recv_timeout(LIMIT) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => continue,
                Err(e) => panic!("no log line containing {text:?}: {e}"),
            }
        }
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait(mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("esgate did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
