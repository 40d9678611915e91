//! The client side of the wire: raw HTTP/1.1 requests written byte for byte, messages read and
//! parsed off a stream, the bound on every await, and deterministic bodies.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every await in a test is bounded by this, so a broken proxy fails a test instead of hanging it.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Awaits `f`, failing the test if it takes longer than [`LIMIT`].
pub async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

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

/// The value of the sample `series` on the admin listener's `/metrics` (`None` when absent).
pub async fn metric(admin: std::net::SocketAddr, series: &str) -> Option<u64> {
    let mut c = Client::connect(admin).await;
    let page = c.exchange("GET", &request("GET", "/metrics", &[], b"")).await;
    String::from_utf8_lossy(&page.body)
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
