//! The audit sink that writes events into an Elasticsearch data stream with `_bulk`.
//!
//! Auditing must never slow or block request traffic, so a request only hands its event to
//! [`BulkSink::push`], which never waits: everything else (batching, connections, retries) runs
//! in one task on esgate's audit thread. When Elasticsearch is slow or down, events wait in a
//! bounded buffer; once it is full, new events are dropped and counted rather than held against
//! memory or against the requests that produce them.
//!
//! Delivery is at least once for what is delivered: a batch whose answer never came is sent again,
//! so an event may be indexed twice if Elasticsearch took it and the answer was lost. An answer
//! that came but cannot be understood is not retried, for the same reason.
//!
//! # The bound on memory
//!
//! `buffer` caps the events held anywhere between `push` and Elasticsearch's answer: in the
//! channel, in the sending task's queue and in the batch being sent or retried. A channel's
//! capacity alone cannot give that bound (events leave the channel as soon as the task takes
//! them, long before they are delivered), so an atomic count of held events is reserved in
//! `push` and released when an event is written or dropped. The channel's capacity is `buffer`
//! too, which it never reaches: it only exists so that `push` can use a non-blocking `try_send`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};

use crate::config::NodeUrl;
use crate::connect::{ConnectError, Target};
use crate::metrics::{AuditSink, Metrics};
use crate::tls::ClientTls;

/// The action line of every event: data streams accept `create` only, and an empty body lets
/// Elasticsearch pick the document id.
const ACTION: &[u8] = b"{\"create\":{}}\n";
/// The first retry delay; it doubles per failed attempt up to `max_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The largest answer read. A `_bulk` answer of 500 events with errors is well below 1 MiB; the
/// cap only guards memory against a node (or something in front of it) that sends without end.
const MAX_ANSWER: usize = 16 << 20;
/// The longest item error reason logged, in bytes.
const MAX_REASON: usize = 300;
/// Sent with every request so that Elasticsearch's logs and tasks name the writer.
const AGENT: &str = concat!("esgate/", env!("CARGO_PKG_VERSION"));
/// Stands for "no limit" where a configured duration would overflow an instant.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Where and how the audit events are written.
#[derive(Clone)]
pub struct BulkConfig {
    /// The Elasticsearch node written to (plain HTTP for now).
    pub node: NodeUrl,
    /// The data stream written to, as in `POST /<data_stream>/_bulk`. The default
    /// `logs-esgate.audit-default` matches Elasticsearch's built-in `logs-*-*` template, so the
    /// stream is created on first write with no setup.
    pub data_stream: String,
    /// Sent as `Authorization` (marked sensitive, so that hyper and logs never show it).
    pub authorization: Option<HeaderValue>,
    /// The most events per `_bulk` request (default 500): large enough to amortize the request,
    /// small enough that a retried batch is cheap to send again.
    pub batch_size: usize,
    /// The longest an event waits for its batch to fill (default 1 s), so that a quiet gateway
    /// still writes its trail promptly.
    pub flush_interval: Duration,
    /// The most events held (queued, batched or being retried) while Elasticsearch is slow or
    /// down (default 10 000); more are dropped and counted.
    pub buffer: usize,
    /// TCP connect timeout (default 5 s).
    pub connect_timeout: Duration,
    /// The longest a whole `_bulk` exchange may take, connecting included, to the end of the
    /// answer (default 10 s); past it the batch is retried on a new connection.
    pub request_timeout: Duration,
    /// The retry delay doubles from 250 ms up to this (default 30 s).
    pub max_backoff: Duration,
    /// Once the last [`BulkSink`] clone is dropped, the time left to deliver what is held
    /// (default 5 s); what is still held then is dropped and counted, so that shutdown is bounded.
    pub shutdown_deadline: Duration,
    /// A header added to every `_bulk` request, by which esgate's own audit layer recognizes its
    /// own writes (and does not audit them) should they come back through the gateway.
    pub marker: (HeaderName, HeaderValue),
    /// TLS settings for an `https://` node.
    pub tls: Option<ClientTls>,
}

impl BulkConfig {
    /// A configuration with the documented defaults, for the settings that have none.
    pub fn new(node: NodeUrl, marker: (HeaderName, HeaderValue)) -> Self {
        BulkConfig {
            node,
            data_stream: "logs-esgate.audit-default".to_owned(),
            authorization: None,
            batch_size: 500,
            flush_interval: Duration::from_secs(1),
            buffer: 10_000,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(30),
            shutdown_deadline: Duration::from_secs(5),
            marker,
            tls: None,
        }
    }
}

/// Written by hand so that the credentials never reach a log, whatever their sensitive flag.
impl fmt::Debug for BulkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkConfig")
            .field("node", &self.node)
            .field("data_stream", &self.data_stream)
            .field("authorization", &self.authorization.as_ref().map(|_| "<redacted>"))
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("buffer", &self.buffer)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_backoff", &self.max_backoff)
            .field("shutdown_deadline", &self.shutdown_deadline)
            .field("marker", &self.marker)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Counts of this sink, readable while it runs (the process-wide metrics add up all sinks).
#[derive(Debug, Default)]
pub struct BulkStats {
    /// Events Elasticsearch confirmed.
    pub written: AtomicU64,
    /// Events given up: buffer full, refused by Elasticsearch, answer not understood, or still
    /// held when the shutdown deadline passed.
    pub dropped: AtomicU64,
    /// `_bulk` attempts that did not get a 2xx answer (transport errors and timeouts included).
    pub failed_requests: AtomicU64,
}

/// What the sink handles and its task share.
struct Shared {
    stats: BulkStats,
    metrics: Arc<Metrics>,
    /// Events pushed and not yet written or dropped.
    held: AtomicUsize,
    /// The most `held` may reach.
    buffer: usize,
}

/// Written by hand so that nothing is asked of the metrics type.
impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("stats", &self.stats)
            .field("held", &self.held)
            .field("buffer", &self.buffer)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn written(&self, n: usize) {
        if n > 0 {
            self.stats.written.fetch_add(n as u64, Ordering::Relaxed);
            self.metrics.audit_written(AuditSink::Elasticsearch, n as u64);
            self.release(n);
        }
    }

    /// Counts `n` held events as dropped and frees their room.
    fn dropped(&self, n: usize) {
        if n > 0 {
            self.count_dropped(n);
            self.release(n);
        }
    }

    fn count_dropped(&self, n: usize) {
        self.stats.dropped.fetch_add(n as u64, Ordering::Relaxed);
        self.metrics.audit_dropped(AuditSink::Elasticsearch, n as u64);
    }

    fn release(&self, n: usize) {
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| Some(h.saturating_sub(n)));
    }
}

/// The handle requests push their audit events to; cheap to clone, so that every worker thread
/// can hold its own.
#[derive(Clone, Debug)]
pub struct BulkSink {
    tx: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
}

impl BulkSink {
    /// Starts the sending task on the current tokio runtime (a current-thread runtime on esgate's
    /// audit thread).
    ///
    /// The task ends once every clone of the sink is dropped and what was left is delivered or
    /// dropped (within `shutdown_deadline`); awaiting the handle is how shutdown waits for it.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub fn spawn(config: BulkConfig, metrics: Arc<Metrics>) -> (BulkSink, JoinHandle<()>) {
        // tokio refuses a zero capacity; `held` keeps the real bound, zero included.
        let (tx, rx) = mpsc::channel(config.buffer.max(1));
        let shared = Arc::new(Shared {
            stats: BulkStats::default(),
            metrics,
            held: AtomicUsize::new(0),
            buffer: config.buffer,
        });
        let template = Template::new(&config);
        if let Err(problem) = &template {
            tracing::error!(%problem, "audit events cannot be written to Elasticsearch; they will be dropped");
        }
        let worker = Worker {
            shared: Arc::clone(&shared),
            inbox: Inbox {
                rx,
                queue: VecDeque::new(),
                deadline: None,
                shutdown_deadline: config.shutdown_deadline,
            },
            template,
            link: Link {
                node: config.node,
                tls: config.tls,
                conn: None,
                connect_timeout: config.connect_timeout,
                request_timeout: config.request_timeout,
            },
            batch_size: config.batch_size.max(1),
            flush_interval: config.flush_interval,
            max_backoff: config.max_backoff,
            delay: FIRST_BACKOFF.min(config.max_backoff),
            failures: Streak::default(),
            rejections: Streak::default(),
            item_drops: Streak::default(),
        };
        (BulkSink { tx, shared }, tokio::spawn(worker.run()))
    }

    /// Queues one event: a complete JSON object, no trailing newline. Never waits: when the buffer
    /// is full (or the task is gone) the event is dropped and counted.
    ///
    /// Raw newlines in the event (pretty-printed JSON) become spaces on the way out, as ndjson
    /// would otherwise split the event and spoil its whole batch.
    pub fn push(&self, event: Bytes) {
        let shared = &*self.shared;
        let reserved = shared.held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
            (h < shared.buffer).then_some(h + 1)
        });
        if reserved.is_err() {
            shared.count_dropped(1);
        } else if self.tx.try_send(event).is_err() {
            shared.dropped(1);
        }
    }

    /// This sink's counts.
    pub fn stats(&self) -> &BulkStats {
        &self.shared.stats
    }
}

/// Opens a connection to `node` (TLS for `https://`), as the upstream does
/// ([`crate::connect`]).
async fn connect(
    node: &NodeUrl,
    tls: Option<&ClientTls>,
    connect_timeout: Duration,
) -> Result<SendRequest<Full<Bytes>>, ConnectError> {
    let server_name = if node.tls {
        Some(crate::tls::server_name(&node.host).ok_or(ConnectError::NoTls)?)
    } else {
        None
    };
    let authority = node.authority();
    let target = Target {
        authority: &authority,
        server_name: server_name.as_ref(),
        tls,
    };
    crate::connect::connect(
        target,
        &hyper::client::conn::http1::Builder::new(),
        connect_timeout,
        "audit",
    )
    .await
}

/// The parts of a `_bulk` request that are the same for every batch, built once.
#[derive(Debug)]
struct Template {
    uri: Uri,
    headers: HeaderMap,
}

impl Template {
    /// Fails when the configuration cannot make a valid request; every batch would fail alike.
    fn new(config: &BulkConfig) -> Result<Template, String> {
        let name = &config.data_stream;
        // Elasticsearch's own rules for index names, plus what would escape the path segment.
        let bad = |c: char| !c.is_ascii_graphic() || "\\/*?\"<>|,#:%".contains(c);
        if name.is_empty() || name.contains(bad) {
            return Err(format!("{name:?} is not a valid data stream name"));
        }
        let uri = format!("/{name}/_bulk")
            .parse()
            .map_err(|e| format!("data stream {name:?}: {e}"))?;
        let authority = config.node.authority();
        let host =
            HeaderValue::from_str(&authority).map_err(|_| format!("{authority:?} is not a valid Host header"))?;
        let mut headers = HeaderMap::with_capacity(6);
        headers.insert(HOST, host);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        headers.insert(USER_AGENT, HeaderValue::from_static(AGENT));
        if let Some(auth) = &config.authorization {
            let mut auth = auth.clone();
            auth.set_sensitive(true);
            headers.insert(AUTHORIZATION, auth);
        }
        headers.insert(config.marker.0.clone(), config.marker.1.clone());
        Ok(Template { uri, headers })
    }

    fn request(&self, body: Bytes) -> Request<Full<Bytes>> {
        let length = HeaderValue::from(body.len());
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req.headers_mut().insert(CONTENT_LENGTH, length);
        req
    }
}

/// The `_bulk` body of `events`: an action line and the event, each on its own line.
fn bulk_body<'a>(events: impl Iterator<Item = &'a Bytes> + Clone) -> Bytes {
    let size = events.clone().map(|e| ACTION.len() + e.len() + 1).sum();
    let mut body = BytesMut::with_capacity(size);
    for event in events {
        body.put_slice(ACTION);
        if event.contains(&b'\n') {
            // A raw newline in JSON can only be white space (strings escape theirs), but in ndjson
            // it would end the line and break the whole request: make it a space.
            body.extend(event.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
        } else {
            body.put_slice(event);
        }
        body.put_u8(b'\n');
    }
    body.freeze()
}

/// An answer: its status, and its body unless that could not be read whole.
struct Answer {
    status: StatusCode,
    body: Result<Bytes, String>,
}

/// Why an attempt got no answer. Nothing here holds event contents, so it can be logged.
#[derive(Debug)]
enum Failure {
    Connect(ConnectError),
    Http(hyper::Error),
    Timeout(Duration),
    /// The sinks are gone and the shutdown deadline passed first.
    Shutdown,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "cannot connect: {e}"),
            Failure::Http(e) => write!(f, "{e}"),
            Failure::Timeout(d) => write!(f, "no complete answer within {d:?}"),
            Failure::Shutdown => write!(f, "the shutdown deadline passed"),
        }
    }
}

/// One exchange on one connection. `Err(_, false)`: the request was not sent at all.
async fn round_trip(
    send: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<Answer, (hyper::Error, bool)> {
    if let Err(e) = send.ready().await {
        return Err((e, false));
    }
    let response = match send.try_send_request(req).await {
        Ok(response) => response,
        Err(mut e) => {
            let sent = e.take_message().is_none();
            return Err((e.into_error(), sent));
        }
    };
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| e.to_string());
    Ok(Answer { status, body })
}

/// The connection to the node, kept open between batches.
struct Link {
    node: NodeUrl,
    tls: Option<ClientTls>,
    conn: Option<SendRequest<Full<Bytes>>>,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl Link {
    /// Sends `body`, on the open connection if there is one.
    async fn exchange(&mut self, template: &Template, body: &Bytes) -> Result<Answer, Failure> {
        let request_timeout = self.request_timeout;
        let end = later(Instant::now(), request_timeout);
        loop {
            let (mut send, reused) = match self.conn.take().filter(|c| !c.is_closed()) {
                Some(send) => (send, true),
                None => {
                    let connect_timeout = self.connect_timeout.min(end.saturating_duration_since(Instant::now()));
                    (
                        connect(&self.node, self.tls.as_ref(), connect_timeout)
                            .await
                            .map_err(Failure::Connect)?,
                        false,
                    )
                }
            };
            match timeout_at(end, round_trip(&mut send, template.request(body.clone()))).await {
                Err(_) => return Err(Failure::Timeout(request_timeout)),
                // The node closed the idle connection just before it was used: nothing was
                // sent, so a new connection can take the request at once, without back-off.
                Ok(Err((_, false))) if reused => continue,
                Ok(Err((e, _))) => return Err(Failure::Http(e)),
                Ok(Ok(answer)) => {
                    if answer.status.is_success() && answer.body.is_ok() {
                        self.conn = Some(send);
                    }
                    return Ok(answer);
                }
            }
        }
    }
}

/// What Elasticsearch did with one event of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item {
    Written,
    /// 429 or 5xx: the node was too busy or broken, the event may well go in later.
    Retry,
    Dropped,
}

/// A 2xx `_bulk` answer, read.
#[derive(Debug, PartialEq, Eq)]
struct Report {
    items: Vec<Item>,
    /// Status, error type and reason of the first dropped event, for the log.
    first_error: Option<(u64, String, String)>,
}

/// Reads the answer to a batch of `n` events. An item that is missing or has no status was not
/// confirmed, so it counts as dropped.
fn read_report(body: &[u8], n: usize) -> Result<Report, &'static str> {
    let answer: Value = serde_json::from_slice(body).map_err(|_| "not JSON")?;
    match answer.get("errors").and_then(Value::as_bool) {
        None => Err("no `errors` flag"),
        Some(false) => Ok(Report {
            items: vec![Item::Written; n],
            first_error: None,
        }),
        Some(true) => {
            let items = answer
                .get("items")
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice);
            let mut report = Report {
                items: Vec::with_capacity(n),
                first_error: None,
            };
            for i in 0..n {
                // `{"create": {...}}`; the action name is not checked, only its result.
                let result = items.get(i).and_then(Value::as_object).and_then(|o| o.values().next());
                let status = result.and_then(|r| r.get("status")).and_then(Value::as_u64);
                let item = match status {
                    Some(200..=299) => Item::Written,
                    Some(429 | 500..) => Item::Retry,
                    _ => Item::Dropped,
                };
                if item == Item::Dropped && report.first_error.is_none() {
                    let error = result.and_then(|r| r.get("error"));
                    let text = |key: &str| error.and_then(|e| e.get(key)).and_then(Value::as_str).unwrap_or("");
                    report.first_error = Some((status.unwrap_or(0), text("type").to_owned(), reason(text("reason"))));
                }
                report.items.push(item);
            }
            Ok(report)
        }
    }
}

/// An item error reason fit for the log: Elasticsearch quotes the refused value after
/// "Preview of field's value", and that value is part of an audit event, which logs must not hold.
fn reason(text: &str) -> String {
    let text = text
        .find("Preview of field's value")
        .map_or(text, |i| &text[..i])
        .trim_end();
    let mut end = text.len().min(MAX_REASON);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The `error.type` of an Elasticsearch error answer, when it is one.
fn error_type(body: &Result<Bytes, String>) -> String {
    let answer = body.as_ref().ok().and_then(|b| serde_json::from_slice::<Value>(b).ok());
    let kind = answer
        .as_ref()
        .and_then(|a| a.pointer("/error/type"))
        .and_then(Value::as_str);
    kind.unwrap_or("").to_owned()
}

/// Consecutive occurrences of one kind of trouble, so that a long outage logs a line per ten
/// attempts instead of one per batch.
#[derive(Debug, Default)]
struct Streak(u64);

impl Streak {
    /// Counts one more; true for the first of a streak and every tenth after.
    fn hit(&mut self) -> bool {
        self.0 += 1;
        self.0 == 1 || self.0 % 10 == 0
    }

    /// Ends the streak; returns its length.
    fn end(&mut self) -> u64 {
        std::mem::take(&mut self.0)
    }
}

/// An event held by the task, with when it arrived (its batch is sent `flush_interval` later).
struct Held {
    since: Instant,
    event: Bytes,
}

/// The events held by the task and the channel they come from, apart from the rest of the
/// task's state so that they can be taken in while a request is under way.
struct Inbox {
    rx: mpsc::Receiver<Bytes>,
    /// Events in arrival order; the next batch is its front, and stays there until settled.
    queue: VecDeque<Held>,
    /// Set when every sink is gone: the end of delivery.
    deadline: Option<Instant>,
    shutdown_deadline: Duration,
}

impl Inbox {
    fn take(&mut self, received: Option<Bytes>) {
        match received {
            Some(event) => self.queue.push_back(Held {
                since: Instant::now(),
                event,
            }),
            None if self.deadline.is_none() => self.deadline = Some(later(Instant::now(), self.shutdown_deadline)),
            None => {}
        }
    }

    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// The sending task's state.
struct Worker {
    shared: Arc<Shared>,
    inbox: Inbox,
    template: Result<Template, String>,
    link: Link,
    batch_size: usize,
    flush_interval: Duration,
    max_backoff: Duration,
    /// The next retry delay.
    delay: Duration,
    failures: Streak,
    rejections: Streak,
    item_drops: Streak,
}

impl Worker {
    async fn run(mut self) {
        while self.fill().await {
            let n = self.inbox.queue.len().min(self.batch_size);
            let retry = self.attempt(n).await;
            if self.inbox.past_deadline() {
                break;
            }
            if retry {
                self.back_off().await;
            } else {
                self.delay = FIRST_BACKOFF.min(self.max_backoff);
            }
            if self.inbox.past_deadline() {
                break;
            }
        }
        // `Drop` counts whatever is left.
    }

    /// Waits until a batch is due: full, `flush_interval` after its first event, or shutting down.
    /// False when there is nothing left to do.
    async fn fill(&mut self) -> bool {
        loop {
            if self.inbox.deadline.is_some() {
                return !self.inbox.queue.is_empty();
            }
            if self.inbox.queue.len() >= self.batch_size {
                return true;
            }
            let received = match self.inbox.queue.front() {
                None => self.inbox.rx.recv().await,
                Some(first) => match timeout_at(later(first.since, self.flush_interval), self.inbox.rx.recv()).await {
                    Ok(received) => received,
                    Err(_) => return true,
                },
            };
            self.inbox.take(received);
        }
    }

    /// Sleeps the retry delay, still taking in events (they are counted in `held` already).
    async fn back_off(&mut self) {
        let until = later(Instant::now(), self.delay);
        self.delay = self.delay.saturating_mul(2).min(self.max_backoff);
        loop {
            if let Some(deadline) = self.inbox.deadline {
                tokio::time::sleep_until(until.min(deadline)).await;
                return;
            }
            match timeout_at(until, self.inbox.rx.recv()).await {
                Ok(received) => self.inbox.take(received),
                Err(_) => return,
            }
        }
    }

    /// Sends the first `n` queued events and settles them. True when some are to be retried.
    async fn attempt(&mut self, n: usize) -> bool {
        let template = match &self.template {
            Ok(template) => template,
            Err(_) => {
                self.settle(n, |_| Item::Dropped);
                return false;
            }
        };
        let body = bulk_body(self.inbox.queue.iter().take(n).map(|h| &h.event));
        // Events pushed meanwhile are taken in, so that the end of the sinks is seen at once and
        // the shutdown deadline cuts even this request short.
        let answer = {
            let exchange = self.link.exchange(template, &body);
            tokio::pin!(exchange);
            loop {
                let deadline = self.inbox.deadline;
                tokio::select! {
                    answer = &mut exchange => break answer,
                    received = self.inbox.rx.recv(), if deadline.is_none() => self.inbox.take(received),
                    () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                        break Err(Failure::Shutdown);
                    }
                }
            }
        };
        let status = match &answer {
            Ok(answer) => answer.status,
            Err(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        if !status.is_success() {
            self.shared.stats.failed_requests.fetch_add(1, Ordering::Relaxed);
        }
        match answer {
            Ok(Answer { status, body }) if status.is_success() => self.delivered(n, body),
            Ok(Answer { status, .. }) if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() => {
                self.failed(n, &format!("HTTP {status}"));
                true
            }
            Err(failure) => {
                self.failed(n, &failure.to_string());
                true
            }
            Ok(Answer { status, body }) => {
                let streak = self.rejections.hit();
                self.failures.end();
                if streak {
                    tracing::error!(
                        node = %self.link.node,
                        status = status.as_u16(),
                        error_type = %error_type(&body),
                        events = n,
                        batches_in_a_row = self.rejections.0,
                        "Elasticsearch refused the audit _bulk request; the batch is dropped, as retrying would only \
                         fill the buffer (check the audit node, data stream and credentials)"
                    );
                }
                self.settle(n, |_| Item::Dropped);
                false
            }
        }
    }

    /// A whole batch got no usable answer: it stays at the front of the queue for the next try.
    fn failed(&mut self, n: usize, why: &str) {
        if self.failures.hit() {
            tracing::warn!(
                node = %self.link.node,
                error = %why,
                events = n,
                held = self.inbox.queue.len(),
                attempts_in_a_row = self.failures.0,
                retry_in = ?self.delay,
                "audit _bulk request failed; the batch will be retried"
            );
        }
    }

    /// A 2xx answer: settles each event by its item status. True when some are to be retried.
    fn delivered(&mut self, n: usize, body: Result<Bytes, String>) -> bool {
        self.rejections.end();
        let report = body
            .as_deref()
            .map_err(|_| "body unreadable")
            .and_then(|b| read_report(b, n));
        let report = match report {
            Ok(report) => report,
            Err(why) => {
                self.failures.end();
                tracing::error!(
                    node = %self.link.node,
                    problem = why,
                    events = n,
                    "answer to the audit _bulk request not understood; the batch is dropped, not retried, so that \
                     it is not indexed twice"
                );
                self.settle(n, |_| Item::Dropped);
                return false;
            }
        };
        let (written, dropped, retried) = self.settle(n, |i| report.items.get(i).copied().unwrap_or(Item::Dropped));
        match report.first_error {
            Some((status, error_type, reason)) if self.item_drops.hit() => tracing::warn!(
                node = %self.link.node,
                written,
                dropped,
                retried,
                status,
                %error_type,
                %reason,
                "Elasticsearch refused audit events; they are dropped"
            ),
            Some(_) => {}
            None => {
                self.item_drops.end();
            }
        }
        if retried > 0 {
            self.failed(retried, "Elasticsearch asked to retry some events (429/5xx items)");
            return true;
        }
        let failed = self.failures.end();
        if failed > 0 {
            tracing::info!(node = %self.link.node, failed_attempts = failed, "audit events are written again");
        }
        false
    }

    /// Takes the first `n` events off the queue, counts them by `verdict(index)`, and puts those
    /// to retry back at the front in their order. Returns written, dropped and retried counts.
    fn settle(&mut self, n: usize, verdict: impl Fn(usize) -> Item) -> (usize, usize, usize) {
        let batch: Vec<Held> = self.inbox.queue.drain(..n.min(self.inbox.queue.len())).collect();
        let (mut written, mut dropped) = (0, 0);
        let mut retry = Vec::new();
        for (i, held) in batch.into_iter().enumerate() {
            match verdict(i) {
                Item::Written => written += 1,
                Item::Dropped => dropped += 1,
                Item::Retry => retry.push(held),
            }
        }
        self.shared.written(written);
        self.shared.dropped(dropped);
        let retried = retry.len();
        for held in retry.into_iter().rev() {
            self.inbox.queue.push_front(held);
        }
        (written, dropped, retried)
    }
}

impl Drop for Worker {
    /// Whatever is still held when the task ends (shutdown deadline passed, task aborted, runtime
    /// gone) is counted as dropped, so that the counts always add up.
    fn drop(&mut self) {
        self.inbox.rx.close();
        let mut left = self.inbox.queue.len();
        self.inbox.queue.clear();
        while self.inbox.rx.try_recv().is_ok() {
            left += 1;
        }
        if left > 0 {
            self.shared.dropped(left);
            tracing::warn!(
                node = %self.link.node,
                dropped = left,
                "audit sink stopped before these events were delivered; they are dropped"
            );
        }
    }
}

/// `at + d`, or far in the future when that would overflow.
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d).unwrap_or_else(|| at + FAR)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;

    use hyper::body::Incoming;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::Response;
    use tokio::net::TcpListener;
    use tokio::time::timeout;

    use super::*;

    /// The longest any test waits for anything.
    const WAIT: Duration = Duration::from_secs(5);

    /// One request as the fake Elasticsearch saw it.
    #[derive(Debug)]
    struct Seen {
        method: Method,
        path: String,
        headers: HeaderMap,
        body: Bytes,
        peer: SocketAddr,
    }

    impl Seen {
        /// The events of a `_bulk` body, checking each action line on the way.
        fn events(&self) -> Vec<Value> {
            let text = std::str::from_utf8(&self.body).expect("body is UTF-8");
            assert!(text.ends_with('\n'), "ndjson ends with a newline: {text:?}");
            let lines: Vec<&str> = text.trim_end_matches('\n').split('\n').collect();
            assert_eq!(lines.len() % 2, 0, "action and event lines in pairs: {text:?}");
            lines
                .chunks(2)
                .map(|pair| {
                    assert_eq!(pair[0], r#"{"create":{}}"#);
                    serde_json::from_str(pair[1]).expect("event line is JSON")
                })
                .collect()
        }

        /// The `n` field of each event.
        fn numbers(&self) -> Vec<u64> {
            self.events()
                .iter()
                .map(|e| e["n"].as_u64().expect("event has a number"))
                .collect()
        }
    }

    /// How the fake Elasticsearch answers one request.
    enum Reply {
        Json(u16, String),
        /// An answer whose body never ends.
        Hang,
    }

    /// Chooses the reply from the request's index (from 0) and the request.
    type Script = Arc<dyn Fn(usize, &Seen) -> Reply + Send + Sync>;

    fn ok() -> Reply {
        Reply::Json(200, r#"{"errors":false,"took":1,"items":[]}"#.to_owned())
    }

    fn always_ok() -> Script {
        Arc::new(|_, _| ok())
    }

    /// A fake Elasticsearch on `listener`: every request goes to the returned channel.
    fn serve(listener: TcpListener, script: Script) -> mpsc::UnboundedReceiver<Seen> {
        let (tx, rx) = mpsc::unbounded_channel();
        let count = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((tcp, peer)) = listener.accept().await {
                let (tx, script, count) = (tx.clone(), Arc::clone(&script), Arc::clone(&count));
                let service = service_fn(move |req: Request<Incoming>| {
                    let (tx, script, count) = (tx.clone(), Arc::clone(&script), Arc::clone(&count));
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let seen = Seen {
                            method: parts.method,
                            path: parts.uri.to_string(),
                            headers: parts.headers,
                            body,
                            peer,
                        };
                        let reply = script(count.fetch_add(1, Ordering::SeqCst), &seen);
                        let _ = tx.send(seen);
                        let (status, body) = match reply {
                            Reply::Json(status, body) => (status, body),
                            Reply::Hang => std::future::pending().await,
                        };
                        let mut response = Response::new(Full::new(Bytes::from(body)));
                        *response.status_mut() = StatusCode::from_u16(status).expect("valid status");
                        response
                            .headers_mut()
                            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tcp), service));
            }
        });
        rx
    }

    async fn es(script: Script) -> (NodeUrl, mpsc::UnboundedReceiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let port = listener.local_addr().expect("local address").port();
        (node(port), serve(listener, script))
    }

    fn node(port: u16) -> NodeUrl {
        NodeUrl {
            host: "127.0.0.1".to_owned(),
            port,
            tls: false,
        }
    }

    /// A loopback port nothing listens on (free an instant ago).
    async fn dead_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        listener.local_addr().expect("local address").port()
    }

    /// A configuration with test-sized timers.
    fn config(node: NodeUrl) -> BulkConfig {
        let mut config = BulkConfig::new(
            node,
            (
                HeaderName::from_static("x-esgate-audit"),
                HeaderValue::from_static("self"),
            ),
        );
        config.flush_interval = Duration::from_millis(10);
        config.max_backoff = Duration::from_millis(20);
        config.connect_timeout = Duration::from_secs(2);
        config.request_timeout = Duration::from_secs(2);
        config.shutdown_deadline = Duration::from_secs(3);
        config
    }

    fn start(config: BulkConfig) -> (BulkSink, JoinHandle<()>, Arc<Shared>) {
        let (sink, task) = BulkSink::spawn(config, Arc::new(Metrics::new()));
        let shared = Arc::clone(&sink.shared);
        (sink, task, shared)
    }

    fn event(n: u64) -> Bytes {
        Bytes::from(format!(r#"{{"n":{n},"event":{{"action":"audit"}}}}"#))
    }

    async fn next(requests: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
        timeout(WAIT, requests.recv())
            .await
            .expect("a request within the wait")
            .expect("server still running")
    }

    /// Drops the sink and waits for its task; returns every request not yet taken.
    async fn finish(sink: BulkSink, task: JoinHandle<()>, requests: &mut mpsc::UnboundedReceiver<Seen>) -> Vec<Seen> {
        drop(sink);
        timeout(WAIT, task)
            .await
            .expect("task ends within the wait")
            .expect("task did not panic");
        let mut rest = Vec::new();
        while let Ok(seen) = requests.try_recv() {
            rest.push(seen);
        }
        rest
    }

    async fn eventually(what: &str, condition: impl Fn() -> bool) {
        let wait = async {
            while !condition() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        assert!(timeout(WAIT, wait).await.is_ok(), "timed out waiting for {what}");
    }

    fn counts(shared: &Shared) -> (u64, u64, u64) {
        let s = &shared.stats;
        (
            s.written.load(Ordering::Relaxed),
            s.dropped.load(Ordering::Relaxed),
            s.failed_requests.load(Ordering::Relaxed),
        )
    }

    #[tokio::test]
    async fn events_arrive_as_ndjson_bulk_with_headers() {
        let (node, mut requests) = es(always_ok()).await;
        let authority = node.authority();
        let mut config = config(node);
        config.data_stream = "logs-esgate.audit-test".to_owned();
        config.authorization = Some(HeaderValue::from_static("ApiKey c2VjcmV0"));
        let (sink, task, shared) = start(config);
        let pushed = [
            r#"{"n":0,"user":{"name":"élodie"},"text":"line\nbreak \"quoted\""}"#,
            "{\n  \"n\": 1,\n  \"pretty\": [1, 2]\n}",
            r#"{"n":2}"#,
        ];
        for e in pushed {
            sink.push(Bytes::from(e));
        }
        let seen = next(&mut requests).await;
        assert_eq!(seen.method, Method::POST);
        assert_eq!(seen.path, "/logs-esgate.audit-test/_bulk");
        let header = |name: &str| seen.headers.get(name).map(|v| v.to_str().expect("ASCII header"));
        assert_eq!(header("content-type"), Some("application/x-ndjson"));
        assert_eq!(header("authorization"), Some("ApiKey c2VjcmV0"));
        assert_eq!(header("x-esgate-audit"), Some("self"));
        assert_eq!(header("host"), Some(authority.as_str()));
        assert_eq!(header("user-agent"), Some(AGENT));
        assert!(AGENT.starts_with("esgate/"));
        assert_eq!(header("content-length"), Some(seen.body.len().to_string().as_str()));
        let want: Vec<Value> = pushed
            .iter()
            .map(|e| serde_json::from_str(e).expect("test event is JSON"))
            .collect();
        assert_eq!(seen.events(), want);
        assert!(finish(sink, task, &mut requests).await.is_empty());
        assert_eq!(counts(&shared), (3, 0, 0));
    }

    #[tokio::test]
    async fn batches_fill_up_to_the_size_and_flush_on_time_on_one_connection() {
        let (node, mut requests) = es(always_ok()).await;
        let mut config = config(node);
        config.batch_size = 3;
        let (sink, task, shared) = start(config);
        for n in 0..7 {
            sink.push(event(n));
        }
        // The last batch of one is sent by the flush timer: the sink is still alive.
        let batches = [
            next(&mut requests).await,
            next(&mut requests).await,
            next(&mut requests).await,
        ];
        let numbers: Vec<Vec<u64>> = batches.iter().map(Seen::numbers).collect();
        assert_eq!(numbers, [vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
        assert!(
            batches.iter().all(|b| b.peer == batches[0].peer),
            "one connection reused"
        );
        assert!(finish(sink, task, &mut requests).await.is_empty());
        assert_eq!(counts(&shared), (7, 0, 0));
    }

    #[tokio::test]
    async fn a_503_is_retried_and_the_batch_delivered_once() {
        let script: Script = Arc::new(|i, _| {
            if i == 0 {
                Reply::Json(503, r#"{"error":{"type":"unavailable"},"status":503}"#.to_owned())
            } else {
                ok()
            }
        });
        let (node, mut requests) = es(script).await;
        let (sink, task, shared) = start(config(node));
        for n in 0..3 {
            sink.push(event(n));
        }
        let first = next(&mut requests).await;
        let second = next(&mut requests).await;
        assert_eq!(first.numbers(), [0, 1, 2]);
        assert_eq!(second.body, first.body);
        assert!(finish(sink, task, &mut requests).await.is_empty());
        assert_eq!(counts(&shared), (3, 0, 1));
    }

    #[tokio::test]
    async fn item_level_429_and_503_are_retried_and_400_dropped() {
        let script: Script = Arc::new(|i, _| {
            if i == 0 {
                Reply::Json(
                    200,
                    r#"{"errors":true,"items":[
                        {"create":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"busy"}}},
                        {"create":{"status":400,"error":{"type":"document_parsing_exception","reason":"bad"}}},
                        {"create":{"status":503,"error":{"type":"unavailable_shards_exception","reason":"wait"}}},
                        {"create":{"status":201,"result":"created"}}]}"#
                        .to_owned(),
                )
            } else {
                ok()
            }
        });
        let (node, mut requests) = es(script).await;
        let mut config = config(node);
        config.batch_size = 4;
        let (sink, task, shared) = start(config);
        for n in 0..4 {
            sink.push(event(n));
        }
        assert_eq!(next(&mut requests).await.numbers(), [0, 1, 2, 3]);
        // Both to retry, in their order; nothing else.
        assert_eq!(next(&mut requests).await.numbers(), [0, 2]);
        assert!(finish(sink, task, &mut requests).await.is_empty());
        assert_eq!(counts(&shared), (3, 1, 0));
    }

    #[tokio::test]
    async fn es_down_fills_the_buffer_then_delivers_it_in_order() {
        let port = dead_port().await;
        let mut config = config(node(port));
        config.buffer = 10;
        config.batch_size = 4;
        let (sink, task, shared) = start(config);
        // On this thread, with the task not yet run: push must return without waiting.
        for n in 0..25 {
            sink.push(event(n));
        }
        assert_eq!(counts(&shared), (0, 15, 0));
        eventually("failed attempts", || counts(&shared).2 >= 2).await;
        // The task holds a batch under retry and the rest: the buffer is still full.
        for n in 100..105 {
            sink.push(event(n));
        }
        assert_eq!(counts(&shared).1, 20);
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the same port");
        let mut requests = serve(listener, always_ok());
        let mut numbers = Vec::new();
        while numbers.len() < 10 {
            numbers.extend(next(&mut requests).await.numbers());
        }
        assert_eq!(numbers, (0..10).collect::<Vec<_>>());
        assert!(finish(sink, task, &mut requests).await.is_empty());
        let (written, dropped, _) = counts(&shared);
        assert_eq!((written, dropped), (10, 20));
    }

    #[tokio::test]
    async fn a_401_drops_the_batch_and_the_next_one_goes_on() {
        let script: Script = Arc::new(|i, _| {
            if i == 0 {
                Reply::Json(
                    401,
                    r#"{"error":{"type":"security_exception"},"status":401}"#.to_owned(),
                )
            } else {
                ok()
            }
        });
        let (node, mut requests) = es(script).await;
        let mut config = config(node);
        config.batch_size = 2;
        let (sink, task, shared) = start(config);
        sink.push(event(0));
        sink.push(event(1));
        assert_eq!(next(&mut requests).await.numbers(), [0, 1]);
        sink.push(event(2));
        assert_eq!(next(&mut requests).await.numbers(), [2]);
        assert!(finish(sink, task, &mut requests).await.is_empty());
        assert_eq!(counts(&shared), (1, 2, 1));
    }

    #[tokio::test]
    async fn dropping_the_sink_flushes_what_is_left() {
        let (node, mut requests) = es(always_ok()).await;
        let mut config = config(node);
        config.batch_size = 100;
        config.flush_interval = Duration::from_secs(3600);
        let (sink, task, shared) = start(config);
        let clone = sink.clone();
        for n in 0..5 {
            clone.push(event(n));
        }
        drop(clone);
        let rest = finish(sink, task, &mut requests).await;
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].numbers(), [0, 1, 2, 3, 4]);
        assert_eq!(counts(&shared), (5, 0, 0));
    }

    #[tokio::test]
    async fn shutdown_gives_up_at_the_deadline_and_counts_the_rest() {
        let mut config = config(node(dead_port().await));
        config.shutdown_deadline = Duration::from_millis(100);
        let (sink, task, shared) = start(config);
        for n in 0..3 {
            sink.push(event(n));
        }
        let (_tx, mut none) = mpsc::unbounded_channel();
        assert!(finish(sink, task, &mut none).await.is_empty());
        let (written, dropped, failed) = counts(&shared);
        assert_eq!((written, dropped), (0, 3));
        assert!(failed >= 1);
        assert_eq!(shared.held.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn the_shutdown_deadline_cuts_a_request_under_way() {
        let (node, mut requests) = es(Arc::new(|_, _| Reply::Hang)).await;
        let mut config = config(node);
        // Far beyond the test's wait: only the shutdown deadline can end the task in time.
        config.request_timeout = Duration::from_secs(3600);
        config.shutdown_deadline = Duration::from_millis(100);
        let (sink, task, shared) = start(config);
        sink.push(event(0));
        assert_eq!(next(&mut requests).await.numbers(), [0]);
        sink.push(event(1));
        assert!(finish(sink, task, &mut requests).await.is_empty());
        assert_eq!(counts(&shared), (0, 2, 1));
    }

    #[tokio::test]
    async fn strange_answers_are_survived_and_counted() {
        let huge = format!(r#"{{"errors":false,"pad":"{}"}}"#, " ".repeat(MAX_ANSWER));
        let script: Script = Arc::new(move |i, _| match i {
            0 => Reply::Json(200, "<html>not json</html>".to_owned()),
            1 => Reply::Json(200, huge.clone()),
            2 => Reply::Json(500, "\u{0}garbage".to_owned()),
            3 => Reply::Json(200, r#"{"errors":true}"#.to_owned()),
            4 => Reply::Json(
                200,
                r#"{"errors":true,"items":[{"create":{"status":"x"}}, 7]}"#.to_owned(),
            ),
            5 => Reply::Json(200, "[1,2]".to_owned()),
            _ => ok(),
        });
        let (node, mut requests) = es(script).await;
        let mut config = config(node);
        config.batch_size = 1;
        let (sink, task, shared) = start(config);
        for n in 0..7 {
            sink.push(event(n));
        }
        let numbers: Vec<Vec<u64>> = finish(sink, task, &mut requests)
            .await
            .iter()
            .map(Seen::numbers)
            .collect();
        // 2 is retried after the 500, then meets the other strange answers with 3 and 4.
        assert_eq!(numbers, [[0], [1], [2], [2], [3], [4], [5], [6]]);
        assert_eq!(counts(&shared), (2, 5, 1));
    }

    #[tokio::test]
    async fn an_answer_that_never_comes_is_a_timeout_and_retried() {
        let script: Script = Arc::new(|i, _| if i == 0 { Reply::Hang } else { ok() });
        let (node, mut requests) = es(script).await;
        let mut config = config(node);
        config.request_timeout = Duration::from_millis(100);
        let (sink, task, shared) = start(config);
        sink.push(event(0));
        assert_eq!(next(&mut requests).await.numbers(), [0]);
        assert_eq!(next(&mut requests).await.numbers(), [0]);
        assert!(finish(sink, task, &mut requests).await.is_empty());
        assert_eq!(counts(&shared), (1, 0, 1));
    }

    #[tokio::test]
    async fn an_invalid_data_stream_drops_events_without_sending() {
        let (node, mut requests) = es(always_ok()).await;
        let mut config = config(node);
        config.data_stream = "logs/../_security".to_owned();
        let (sink, task, shared) = start(config);
        sink.push(event(0));
        sink.push(event(1));
        assert!(finish(sink, task, &mut requests).await.is_empty());
        assert_eq!(counts(&shared), (0, 2, 0));
    }

    #[tokio::test]
    async fn a_zero_buffer_drops_everything_without_panicking() {
        let (node, mut requests) = es(always_ok()).await;
        let mut config = config(node);
        config.buffer = 0;
        config.batch_size = 0;
        let (sink, task, shared) = start(config);
        sink.push(event(0));
        assert!(finish(sink, task, &mut requests).await.is_empty());
        assert_eq!(counts(&shared), (0, 1, 0));
    }

    #[test]
    fn config_debug_hides_the_credentials() {
        let mut config = config(node(9200));
        config.authorization = Some(HeaderValue::from_static("Basic c2VjcmV0OnNlY3JldA=="));
        let shown = format!("{config:?}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn item_reasons_lose_the_quoted_values() {
        let text = "failed to parse field [user.id] of type [long] in document with id 'x'. \
                    Preview of field's value: 'secret-value'";
        assert_eq!(
            reason(text),
            "failed to parse field [user.id] of type [long] in document with id 'x'."
        );
        let long = "é".repeat(MAX_REASON);
        let cut = reason(&long);
        assert!(cut.len() <= MAX_REASON && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn metrics_hear_of_written_and_dropped_events() {
        // Only through the public stub API: both calls must reach it without panicking, and the
        // sink's own counts move with them.
        let shared = Shared {
            stats: BulkStats::default(),
            metrics: Arc::new(Metrics::new()),
            held: AtomicUsize::new(3),
            buffer: 3,
        };
        shared.written(2);
        shared.dropped(1);
        assert_eq!(counts(&shared), (2, 1, 0));
        assert_eq!(shared.held.load(Ordering::Relaxed), 0);
    }
}
