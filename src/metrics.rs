//! Prometheus metrics: a registry of fixed arrays of atomics, rendered as the text exposition
//! format 0.0.4.
//!
//! Why it is built this way:
//!
//! * **The request path never locks or allocates.** Every per-request figure (the requests
//!   counter, the duration histogram, the in-flight gauge, connection counts, upstream errors and
//!   retries, audit counts) is one `fetch_add` with [`Ordering::Relaxed`] on an [`AtomicU64`] or
//!   [`AtomicI64`] whose place is known before the first request: a slot in an array sized at
//!   compile time, indexed by closed enums. No map is looked up, no key is built, no lock is held;
//!   the worker threads only ever contend on cache lines, never on a mutex. Counters need no
//!   ordering with other memory, so `Relaxed` is enough; a scrape may see one figure a moment
//!   ahead of another, which Prometheus tolerates.
//! * **Cardinality cannot grow from client input.** Every label set is bounded by the code, not
//!   by what clients send: `route` is a [`Route`], `method` is one of seven standard methods or
//!   `OTHER` (a client inventing methods does not create series), `code` is one of the statuses
//!   100..=599 or `other`, `kind` and `sink` are enums. The `error_type` and `reason` labels take
//!   `&'static str` values, so only strings written into esgate's code can appear; as a second
//!   fence, at most [`MAX_DYNAMIC_VALUES`] distinct values are kept per family and any further one
//!   is counted under `other`. Those families are recorded on rare paths (a local rejection, a
//!   report-only verdict, an unchecked call), so they sit behind a [`Mutex`] over a small vector
//!   instead of a fixed array: they never lie on the pass-through path.
//! * **Rendering does the work.** Only a scrape walks the arrays (about eight thousand request
//!   slots, skipping zeros), turns the non-cumulative histogram buckets into cumulative ones,
//!   escapes label values and formats numbers. Histogram `_count` is the sum of the same bucket
//!   reads as the `+Inf` bucket, so the two always agree within one scrape.
//!
//! Status codes outside 100..=599 (hyper allows up to 999) are counted under `code="other"` rather
//! than clamped, so a figure is never attributed to a status that was not sent.

pub use crate::connector_error::BufferCounters;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http::Method;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// At most this many distinct values are kept for each of the `error_type` and `reason` labels;
/// further values are counted under `other`.
pub const MAX_DYNAMIC_VALUES: usize = 64;

/// The label value that stands for everything past [`MAX_DYNAMIC_VALUES`].
const OTHER_VALUE: &str = "other";

/// Route class label `route`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// An Update-connector-error call, checked by esgate (`connector_error`).
    ConnectorError,
    /// Any other request, forwarded unchanged (`passthrough`).
    PassThrough,
}

impl Route {
    const ALL: [Route; 2] = [Route::ConnectorError, Route::PassThrough];

    fn index(self) -> usize {
        match self {
            Route::ConnectorError => 0,
            Route::PassThrough => 1,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Route::ConnectorError => "connector_error",
            Route::PassThrough => "passthrough",
        }
    }
}

/// Upstream failure label `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamError {
    /// No connection to the node could be made (`connect`).
    Connect,
    /// The node did not answer in time (`timeout`).
    Timeout,
    /// The connection failed after the request had started (`broken`).
    Broken,
}

impl UpstreamError {
    const ALL: [UpstreamError; 3] = [UpstreamError::Connect, UpstreamError::Timeout, UpstreamError::Broken];

    fn index(self) -> usize {
        match self {
            UpstreamError::Connect => 0,
            UpstreamError::Timeout => 1,
            UpstreamError::Broken => 2,
        }
    }

    fn label(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Broken => "broken",
        }
    }
}

/// Audit sink label `sink`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditSink {
    /// The audit queue (`queue`).
    Queue,
    /// The stream sink (`stream`).
    Stream,
    /// The Elasticsearch sink (`elasticsearch`).
    Elasticsearch,
}

impl AuditSink {
    const ALL: [AuditSink; 3] = [AuditSink::Queue, AuditSink::Stream, AuditSink::Elasticsearch];

    fn index(self) -> usize {
        match self {
            AuditSink::Queue => 0,
            AuditSink::Stream => 1,
            AuditSink::Elasticsearch => 2,
        }
    }

    fn label(self) -> &'static str {
        match self {
            AuditSink::Queue => "queue",
            AuditSink::Stream => "stream",
            AuditSink::Elasticsearch => "elasticsearch",
        }
    }
}

/// One upstream node's state for rendering.
#[derive(Clone, Copy, Debug)]
pub struct NodeState<'a> {
    /// The node's name or address, the `node` label.
    pub node: &'a str,
    /// Whether the node is up; rendered as 1 or 0.
    pub up: bool,
    /// The Elasticsearch version learned of it (`9.2.1`, `serverless`, `9.x`), or `unknown`.
    pub version: &'a str,
    /// The dialects esgate takes it to speak, joined with `,`, or `unmodelled`.
    pub dialect: &'a str,
}

/// The `method` label values; the last one takes every method not listed before it.
const METHODS: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER"];

fn method_index(method: &Method) -> usize {
    // Methods are case-sensitive: `get` is not `GET`, and goes to OTHER like any unknown one.
    match method.as_str() {
        "GET" => 0,
        "HEAD" => 1,
        "POST" => 2,
        "PUT" => 3,
        "DELETE" => 4,
        "PATCH" => 5,
        "OPTIONS" => 6,
        _ => 7,
    }
}

const FIRST_CODE: u16 = 100;
const LAST_CODE: u16 = 599;
/// Slots per (route, method): one per status 100..=599, then one for `other`.
const CODES: usize = (LAST_CODE - FIRST_CODE) as usize + 2;
const OTHER_CODE: usize = CODES - 1;

fn code_index(status: u16) -> usize {
    if (FIRST_CODE..=LAST_CODE).contains(&status) {
        usize::from(status - FIRST_CODE)
    } else {
        OTHER_CODE
    }
}

/// `esgate_requests_total` counts, indexed `[route][method][code]`.
struct RequestCounts(Box<[[[AtomicU64; CODES]; METHODS.len()]; Route::ALL.len()]>);

impl Default for RequestCounts {
    fn default() -> Self {
        RequestCounts(Box::new(
            [const { [const { [const { AtomicU64::new(0) }; CODES] }; METHODS.len()] }; Route::ALL.len()],
        ))
    }
}

impl fmt::Debug for RequestCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: u64 = self
            .0
            .iter()
            .flatten()
            .flatten()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        f.debug_struct("RequestCounts").field("total", &total).finish()
    }
}

/// Upper bounds of the finite histogram buckets, in nanoseconds, with their `le` labels.
const BUCKETS: [(u64, &str); 16] = [
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5"),
    (10_000_000_000, "10"),
    (30_000_000_000, "30"),
    (60_000_000_000, "60"),
];

/// One route's duration histogram. Buckets are stored non-cumulative (each observation adds to
/// exactly one slot; the last slot is above the largest bound) and made cumulative when rendered.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let slot = BUCKETS
            .iter()
            .position(|&(bound, _)| nanos <= bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// A family whose label values are `&'static str`s from esgate's code, bounded by
/// [`MAX_DYNAMIC_VALUES`]. Recorded on rare paths only.
#[derive(Debug, Default)]
struct StaticLabelCounts(Mutex<Vec<(&'static str, u64)>>);

impl StaticLabelCounts {
    fn add(&self, value: &'static str) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Past the cap, new values fold into `other` (which may itself be a 65th entry).
        let value = if counts.len() >= MAX_DYNAMIC_VALUES && !counts.iter().any(|&(v, _)| v == value) {
            OTHER_VALUE
        } else {
            value
        };
        match counts.iter_mut().find(|(v, _)| *v == value) {
            Some((_, n)) => *n += 1,
            None => counts.push((value, 1)),
        }
    }

    /// The counts, sorted by label value for a stable exposition.
    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
        counts.sort_unstable_by_key(|&(v, _)| v);
        counts
    }
}

/// The gateway's metrics. One instance is shared (behind an `Arc`) by every worker thread; every
/// recording method takes `&self`.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: RequestCounts,
    durations: [Histogram; Route::ALL.len()],
    in_flight: AtomicI64,
    connections_open: AtomicI64,
    connections_total: AtomicU64,
    local_rejections: StaticLabelCounts,
    would_reject: StaticLabelCounts,
    unchecked: StaticLabelCounts,
    client_errors: StaticLabelCounts,
    accept_errors: AtomicU64,
    upstream_errors: [AtomicU64; UpstreamError::ALL.len()],
    upstream_retries: AtomicU64,
    upstream_replays: AtomicU64,
    /// Writes of a connector's or sync job's error, by path (Connector API, index) and outcome.
    error_writes: [[AtomicU64; 2]; 2],
    upstream_local_errors: AtomicU64,
    upstream_bad_framing: AtomicU64,
    client_body_errors: AtomicU64,
    audit_written: [AtomicU64; AuditSink::ALL.len()],
    audit_dropped: [AtomicU64; AuditSink::ALL.len()],
    buffers: std::sync::Arc<BufferCounters>,
    canary: std::sync::Arc<crate::connector_error::CanaryCounters>,
}

impl Metrics {
    /// The counters of buffered intercepted bodies, for the connector-error budget.
    pub fn buffers(&self) -> &std::sync::Arc<BufferCounters> {
        &self.buffers
    }

    /// The canary's counts, for the connector-error layer.
    pub fn canary(&self) -> &std::sync::Arc<crate::connector_error::CanaryCounters> {
        &self.canary
    }

    /// All figures at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// A client connection was accepted (open connections + 1, connections counter + 1).
    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A client connection ended (open connections - 1).
    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// A request entered the gateway (in-flight + 1).
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request ended before its response head (the client went away): in-flight - 1 only.
    pub fn request_abandoned(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// A request's response head was sent: in-flight - 1, requests counter, duration histogram.
    ///
    /// `elapsed` runs from the request head received to the response head sent.
    pub fn request_finished(&self, route: Route, method: &Method, status: u16, elapsed: Duration) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.requests.0[route.index()][method_index(method)][code_index(status)].fetch_add(1, Ordering::Relaxed);
        self.durations[route.index()].observe(elapsed);
    }

    /// An Update-connector-error call answered locally with this Elasticsearch error type.
    pub fn local_rejection(&self, error_type: &'static str) {
        self.local_rejections.add(error_type);
    }

    /// Report-only mode: a call that would have been rejected with this type, forwarded.
    pub fn would_reject(&self, error_type: &'static str) {
        self.would_reject.add(error_type);
    }

    /// An intercepted call forwarded without a verdict, for this reason.
    pub fn unchecked(&self, reason: &'static str) {
        self.unchecked.add(reason);
    }

    /// A client request answered 400 by the listener itself, for this reason (its framing or method,
    /// see [`crate::hop::framing_error`]; `malformed` for what hyper refused while parsing).
    pub fn client_error(&self, reason: &'static str) {
        self.client_errors.add(reason);
    }

    /// `accept` on the client listener failed (descriptors or memory exhausted, mostly).
    pub fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A request to an upstream node failed this way.
    pub fn upstream_error(&self, kind: UpstreamError) {
        self.upstream_errors[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A request retried on another node (nothing of it had been sent).
    pub fn upstream_retry(&self) {
        self.upstream_retries.fetch_add(1, Ordering::Relaxed);
    }

    /// A request sent once more on a new connection: the reused one was closed by the node before
    /// any answer (idempotent methods with a complete body only).
    pub fn upstream_replay(&self) {
        self.upstream_replays.fetch_add(1, Ordering::Relaxed);
    }

    /// A write of a connector's or sync job's error was answered (`success`: below 400).
    pub fn error_write(&self, path: crate::elasticsearch::writes::WritePath, success: bool) {
        let p = usize::from(path == crate::elasticsearch::writes::WritePath::Index);
        self.error_writes[p][usize::from(!success)].fetch_add(1, Ordering::Relaxed);
    }

    /// An upstream connection esgate could not open for a reason of its own host (descriptors,
    /// memory, local ports): not a node failure.
    pub fn upstream_local_error(&self) {
        self.upstream_local_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// An upstream answer refused for ambiguous framing (`Content-Length` with `Transfer-Encoding`).
    pub fn upstream_bad_framing(&self) {
        self.upstream_bad_framing.fetch_add(1, Ordering::Relaxed);
    }

    /// A client's request body failed (malformed chunked encoding, client gone) while it was being
    /// sent upstream: the client's error, not the node's.
    pub fn client_body_error(&self) {
        self.client_body_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` audit events were written to this sink.
    pub fn audit_written(&self, sink: AuditSink, n: u64) {
        self.audit_written[sink.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// `n` audit events were dropped by this sink (full queue, failed write).
    pub fn audit_dropped(&self, sink: AuditSink, n: u64) {
        self.audit_dropped[sink.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4) of everything, plus the given node states
    /// and readiness.
    pub fn render(&self, nodes: &[NodeState<'_>], ready: bool) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail.
        let _ = self.render_into(&mut out, nodes, ready);
        out
    }

    fn render_into(&self, out: &mut String, nodes: &[NodeState<'_>], ready: bool) -> fmt::Result {
        header(
            out,
            "esgate_requests_total",
            "counter",
            "Requests answered, by route, method and status code.",
        )?;
        for route in Route::ALL {
            for (m, per_method) in self.requests.0[route.index()].iter().enumerate() {
                for (c, count) in per_method.iter().enumerate() {
                    let n = count.load(Ordering::Relaxed);
                    if n == 0 {
                        continue;
                    }
                    write!(
                        out,
                        "esgate_requests_total{{route=\"{}\",method=\"{}\",code=\"",
                        route.label(),
                        METHODS[m]
                    )?;
                    if c == OTHER_CODE {
                        out.push_str("other");
                    } else {
                        write!(out, "{}", c + usize::from(FIRST_CODE))?;
                    }
                    writeln!(out, "\"}} {n}")?;
                }
            }
        }

        let name = "esgate_request_duration_seconds";
        header(
            out,
            name,
            "histogram",
            "Time from request head received to response head sent, by route.",
        )?;
        for route in Route::ALL {
            let histogram = &self.durations[route.index()];
            let r = route.label();
            let mut cumulative = 0u64;
            for (slot, count) in histogram.buckets.iter().enumerate() {
                cumulative += count.load(Ordering::Relaxed);
                let le = BUCKETS.get(slot).map_or("+Inf", |&(_, le)| le);
                writeln!(out, "{name}_bucket{{route=\"{r}\",le=\"{le}\"}} {cumulative}")?;
            }
            let micros = histogram.sum_micros.load(Ordering::Relaxed);
            writeln!(
                out,
                "{name}_sum{{route=\"{r}\"}} {}.{:06}",
                micros / 1_000_000,
                micros % 1_000_000
            )?;
            writeln!(out, "{name}_count{{route=\"{r}\"}} {cumulative}")?;
        }

        gauge(
            out,
            "esgate_requests_in_flight",
            "Requests received whose response head is not yet sent.",
            &self.in_flight,
        )?;
        gauge(
            out,
            "esgate_connections_open",
            "Client connections currently open.",
            &self.connections_open,
        )?;
        header(
            out,
            "esgate_connections_total",
            "counter",
            "Client connections accepted.",
        )?;
        writeln!(
            out,
            "esgate_connections_total {}",
            self.connections_total.load(Ordering::Relaxed)
        )?;

        labelled_counts(
            out,
            "esgate_local_rejections_total",
            "Update-connector-error calls answered locally, by Elasticsearch error type.",
            "error_type",
            &self.local_rejections,
        )?;
        labelled_counts(
            out,
            "esgate_would_reject_total",
            "Report-only mode: calls that would have been rejected, forwarded, by error type.",
            "error_type",
            &self.would_reject,
        )?;
        labelled_counts(
            out,
            "esgate_unchecked_total",
            "Intercepted calls forwarded without a verdict, by reason.",
            "reason",
            &self.unchecked,
        )?;
        labelled_counts(
            out,
            "esgate_client_errors_total",
            "Client requests answered 400 by the listener itself (framing, CONNECT) or refused by the HTTP parser, by reason.",
            "reason",
            &self.client_errors,
        )?;
        header(
            out,
            "esgate_accept_errors_total",
            "counter",
            "Failed accepts on the client listener (descriptors or memory exhausted).",
        )?;
        writeln!(
            out,
            "esgate_accept_errors_total {}",
            self.accept_errors.load(Ordering::Relaxed)
        )?;

        gauge_u64(
            out,
            "esgate_buffered_body_bytes",
            "Bytes of intercepted request bodies held in memory now (raw, decoded and canonical).",
            &self.buffers.held,
        )?;
        header(
            out,
            "esgate_circuit_breaker_trips_total",
            "counter",
            "Intercepted calls answered 429 because their bodies would pass connector_error.max_buffered_bytes.",
        )?;
        writeln!(
            out,
            "esgate_circuit_breaker_trips_total {}",
            self.buffers.trips.load(Ordering::Relaxed)
        )?;

        header(
            out,
            "esgate_upstream_errors_total",
            "counter",
            "Failed requests to upstream nodes, by kind.",
        )?;
        for kind in UpstreamError::ALL {
            let n = self.upstream_errors[kind.index()].load(Ordering::Relaxed);
            writeln!(out, "esgate_upstream_errors_total{{kind=\"{}\"}} {n}", kind.label())?;
        }
        header(
            out,
            "esgate_canary_total",
            "counter",
            "Local rejections also sent to a node with a random connector id: answered alike (match), otherwise (mismatch), or not at all (error).",
        )?;
        for (result, counter) in [
            ("match", &self.canary.matched),
            ("mismatch", &self.canary.mismatched),
            ("error", &self.canary.errors),
        ] {
            writeln!(out, "esgate_canary_total{{result=\"{result}\"}} {}", counter.load(Ordering::Relaxed))?;
        }
        header(
            out,
            "esgate_error_writes_total",
            "counter",
            "Writes of a connector's or sync job's error answered, by path (connector_api: the Connector API; index: _update/_doc on the connector indices) and outcome.",
        )?;
        for (p, path) in ["connector_api", "index"].into_iter().enumerate() {
            for (o, outcome) in ["success", "failure"].into_iter().enumerate() {
                let n = self.error_writes[p][o].load(Ordering::Relaxed);
                writeln!(out, "esgate_error_writes_total{{path=\"{path}\",outcome=\"{outcome}\"}} {n}")?;
            }
        }
        header(
            out,
            "esgate_upstream_retries_total",
            "counter",
            "Requests retried on another upstream node.",
        )?;
        writeln!(
            out,
            "esgate_upstream_retries_total {}",
            self.upstream_retries.load(Ordering::Relaxed)
        )?;
        for (name, help, counter) in [
            (
                "esgate_upstream_replays_total",
                "Requests sent once more on a new connection because the node had closed the reused one before any answer (idempotent, complete bodies only).",
                &self.upstream_replays,
            ),
            (
                "esgate_upstream_local_errors_total",
                "Upstream connections esgate could not open for a reason of its own (descriptors, memory, local ports); answered 503, the node not marked dead.",
                &self.upstream_local_errors,
            ),
            (
                "esgate_upstream_bad_framing_total",
                "Upstream answers refused (502) for carrying both Content-Length and Transfer-Encoding.",
                &self.upstream_bad_framing,
            ),
            (
                "esgate_client_body_errors_total",
                "Request bodies that failed on the client's side (malformed chunked encoding, client gone) while sent upstream; answered 400.",
                &self.client_body_errors,
            ),
        ] {
            header(out, name, "counter", help)?;
            writeln!(out, "{name} {}", counter.load(Ordering::Relaxed))?;
        }

        header(
            out,
            "esgate_upstream_node_up",
            "gauge",
            "Whether an upstream node is up (1) or down (0).",
        )?;
        for node in nodes {
            out.push_str("esgate_upstream_node_up{node=\"");
            escape_label_value(out, node.node);
            writeln!(out, "\"}} {}", u8::from(node.up))?;
        }
        header(
            out,
            "esgate_upstream_node_info",
            "gauge",
            "The Elasticsearch version learned of each upstream node and the dialects esgate takes it to speak; always 1.",
        )?;
        for node in nodes {
            out.push_str("esgate_upstream_node_info{node=\"");
            escape_label_value(out, node.node);
            out.push_str("\",version=\"");
            escape_label_value(out, node.version);
            out.push_str("\",dialect=\"");
            escape_label_value(out, node.dialect);
            out.push_str("\"} 1\n");
        }
        header(
            out,
            "esgate_ready",
            "gauge",
            "Whether esgate accepts traffic (1) or is draining (0).",
        )?;
        writeln!(out, "esgate_ready {}", u8::from(ready))?;

        for (name, help, counts) in [
            (
                "esgate_audit_events_total",
                "Audit events queued (sink=queue) or written (stream, elasticsearch), by sink.",
                &self.audit_written,
            ),
            (
                "esgate_audit_events_dropped_total",
                "Audit events dropped, by sink.",
                &self.audit_dropped,
            ),
        ] {
            header(out, name, "counter", help)?;
            for sink in AuditSink::ALL {
                let n = counts[sink.index()].load(Ordering::Relaxed);
                writeln!(out, "{name}{{sink=\"{}\"}} {n}", sink.label())?;
            }
        }
        Ok(())
    }
}

/// The `# HELP` and `# TYPE` lines of a family. Help texts here hold no backslash or newline.
fn header(out: &mut String, name: &str, kind: &str, help: &str) -> fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

fn gauge(out: &mut String, name: &str, help: &str, value: &AtomicI64) -> fmt::Result {
    header(out, name, "gauge", help)?;
    writeln!(out, "{name} {}", value.load(Ordering::Relaxed))
}

fn gauge_u64(out: &mut String, name: &str, help: &str, value: &AtomicU64) -> fmt::Result {
    header(out, name, "gauge", help)?;
    writeln!(out, "{name} {}", value.load(Ordering::Relaxed))
}

fn labelled_counts(out: &mut String, name: &str, help: &str, label: &str, counts: &StaticLabelCounts) -> fmt::Result {
    header(out, name, "counter", help)?;
    for (value, n) in counts.snapshot() {
        write!(out, "{name}{{{label}=\"")?;
        escape_label_value(out, value);
        writeln!(out, "\"}} {n}")?;
    }
    Ok(())
}

/// Appends `value` escaped as the text format wants label values: `\` as `\\`, `"` as `\"`, line
/// feed as `\n`.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line that starts with `series ` (name and labels exactly).
    fn sample(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn counters_move_as_recorded() {
        let m = Metrics::new();
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        // Four in, three out: one still in flight.
        for _ in 0..4 {
            m.request_started();
        }
        m.request_finished(Route::PassThrough, &Method::GET, 200, ms(1));
        m.request_finished(Route::PassThrough, &Method::GET, 200, ms(2));
        m.request_finished(Route::ConnectorError, &Method::PUT, 400, ms(3));
        m.upstream_error(UpstreamError::Timeout);
        m.upstream_error(UpstreamError::Timeout);
        m.upstream_retry();
        m.upstream_replay();
        m.client_body_error();
        m.client_body_error();
        m.audit_written(AuditSink::Stream, 5);
        m.audit_dropped(AuditSink::Queue, 2);
        m.local_rejection("x_content_parse_exception");
        m.local_rejection("x_content_parse_exception");
        m.would_reject("illegal_argument_exception");
        m.unchecked("body_too_large");
        m.client_error("connect");
        m.accept_error();
        let text = m.render(&[], true);

        let expect = [
            (
                "esgate_requests_total{route=\"passthrough\",method=\"GET\",code=\"200\"}",
                "2",
            ),
            (
                "esgate_requests_total{route=\"connector_error\",method=\"PUT\",code=\"400\"}",
                "1",
            ),
            ("esgate_requests_in_flight", "1"),
            ("esgate_connections_open", "1"),
            ("esgate_connections_total", "2"),
            ("esgate_upstream_errors_total{kind=\"timeout\"}", "2"),
            ("esgate_upstream_errors_total{kind=\"connect\"}", "0"),
            ("esgate_upstream_retries_total", "1"),
            ("esgate_client_errors_total{reason=\"connect\"}", "1"),
            ("esgate_accept_errors_total", "1"),
            ("esgate_upstream_replays_total", "1"),
            ("esgate_client_body_errors_total", "2"),
            ("esgate_upstream_local_errors_total", "0"),
            ("esgate_audit_events_total{sink=\"stream\"}", "5"),
            ("esgate_audit_events_total{sink=\"queue\"}", "0"),
            ("esgate_audit_events_dropped_total{sink=\"queue\"}", "2"),
            (
                "esgate_local_rejections_total{error_type=\"x_content_parse_exception\"}",
                "2",
            ),
            (
                "esgate_would_reject_total{error_type=\"illegal_argument_exception\"}",
                "1",
            ),
            ("esgate_unchecked_total{reason=\"body_too_large\"}", "1"),
            ("esgate_ready", "1"),
        ];
        for (series, value) in expect {
            assert_eq!(sample(&text, series).as_deref(), Some(value), "{series} in\n{text}");
        }
        // Only non-zero request samples are written.
        assert_eq!(
            text.lines().filter(|l| l.starts_with("esgate_requests_total{")).count(),
            2
        );
    }

    #[test]
    fn every_family_is_present_when_nothing_was_recorded() {
        let text = Metrics::new().render(&[], false);
        for (name, kind) in [
            ("esgate_requests_total", "counter"),
            ("esgate_request_duration_seconds", "histogram"),
            ("esgate_requests_in_flight", "gauge"),
            ("esgate_connections_open", "gauge"),
            ("esgate_connections_total", "counter"),
            ("esgate_local_rejections_total", "counter"),
            ("esgate_would_reject_total", "counter"),
            ("esgate_unchecked_total", "counter"),
            ("esgate_client_errors_total", "counter"),
            ("esgate_accept_errors_total", "counter"),
            ("esgate_upstream_errors_total", "counter"),
            ("esgate_upstream_retries_total", "counter"),
            ("esgate_upstream_replays_total", "counter"),
            ("esgate_upstream_local_errors_total", "counter"),
            ("esgate_upstream_bad_framing_total", "counter"),
            ("esgate_client_body_errors_total", "counter"),
            ("esgate_upstream_node_up", "gauge"),
            ("esgate_upstream_node_info", "gauge"),
            ("esgate_ready", "gauge"),
            ("esgate_audit_events_total", "counter"),
            ("esgate_audit_events_dropped_total", "counter"),
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name}");
        }
        for route in ["connector_error", "passthrough"] {
            let count = format!("esgate_request_duration_seconds_count{{route=\"{route}\"}}");
            assert_eq!(sample(&text, &count).as_deref(), Some("0"));
        }
        for kind in ["connect", "timeout", "broken"] {
            let series = format!("esgate_upstream_errors_total{{kind=\"{kind}\"}}");
            assert_eq!(sample(&text, &series).as_deref(), Some("0"));
        }
        assert_eq!(sample(&text, "esgate_ready").as_deref(), Some("0"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn unknown_methods_go_to_other() {
        let m = Metrics::new();
        for method in [&b"PURGE"[..], b"get", b"X-ANYTHING"] {
            let method = Method::from_bytes(method).expect("valid token");
            m.request_started();
            m.request_finished(Route::PassThrough, &method, 204, ms(1));
        }
        m.request_started();
        m.request_finished(Route::PassThrough, &Method::TRACE, 204, ms(1));
        let text = m.render(&[], true);
        let other = "esgate_requests_total{route=\"passthrough\",method=\"OTHER\",code=\"204\"}";
        assert_eq!(sample(&text, other).as_deref(), Some("4"));
        for name in ["PURGE", "get", "X-ANYTHING", "TRACE"] {
            assert!(!text.contains(&format!("method=\"{name}\"")), "{name} made a series");
        }
    }

    #[test]
    fn status_codes_outside_100_to_599_count_as_other() {
        let m = Metrics::new();
        for status in [100, 599, 600, 999, 0] {
            m.request_started();
            m.request_finished(Route::ConnectorError, &Method::POST, status, ms(1));
        }
        let text = m.render(&[], true);
        let series =
            |code: &str| format!("esgate_requests_total{{route=\"connector_error\",method=\"POST\",code=\"{code}\"}}");
        assert_eq!(sample(&text, &series("100")).as_deref(), Some("1"));
        assert_eq!(sample(&text, &series("599")).as_deref(), Some("1"));
        assert_eq!(sample(&text, &series("other")).as_deref(), Some("3"));
        assert_eq!(sample(&text, "esgate_requests_in_flight").as_deref(), Some("0"));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_matches() {
        let m = Metrics::new();
        let observations = [
            Duration::from_micros(300),
            Duration::from_micros(500), // exactly on a bound: counted in le="0.0005"
            Duration::from_nanos(500_001),
            ms(3),
            ms(45_000),
            ms(100_000), // above every finite bound
        ];
        for d in observations {
            m.request_started();
            m.request_finished(Route::ConnectorError, &Method::PUT, 200, d);
        }
        m.request_started();
        m.request_finished(Route::PassThrough, &Method::GET, 200, ms(7));
        let text = m.render(&[], true);

        let bucket = |le: &str| {
            let series = format!("esgate_request_duration_seconds_bucket{{route=\"connector_error\",le=\"{le}\"}}");
            sample(&text, &series).and_then(|v| v.parse::<u64>().ok())
        };
        assert_eq!(bucket("0.0005"), Some(2));
        assert_eq!(bucket("0.001"), Some(3));
        assert_eq!(bucket("0.0025"), Some(3));
        assert_eq!(bucket("0.005"), Some(4));
        assert_eq!(bucket("30"), Some(4));
        assert_eq!(bucket("60"), Some(5));
        assert_eq!(bucket("+Inf"), Some(6));
        // Non-decreasing over every bound, in the order written.
        let values: Vec<u64> = text
            .lines()
            .filter(|l| l.starts_with("esgate_request_duration_seconds_bucket{route=\"connector_error\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        assert_eq!(values.len(), BUCKETS.len() + 1);
        assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");

        let count = "esgate_request_duration_seconds_count{route=\"connector_error\"}";
        assert_eq!(sample(&text, count).as_deref(), Some("6"));
        // 0.0003 + 0.0005 + 0.0005 (sub-microsecond part dropped) + 0.003 + 45 + 100
        let sum = "esgate_request_duration_seconds_sum{route=\"connector_error\"}";
        assert_eq!(sample(&text, sum).as_deref(), Some("145.004300"));

        let other = |s: &str| {
            sample(
                &text,
                &format!("esgate_request_duration_seconds_{s}{{route=\"passthrough\"}}"),
            )
        };
        assert_eq!(other("count").as_deref(), Some("1"));
        assert_eq!(other("sum").as_deref(), Some("0.007000"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        escape_label_value(&mut out, "a\"b\\c\nd");
        assert_eq!(out, r#"a\"b\\c\nd"#);

        let m = Metrics::new();
        m.unchecked("quote\"here");
        let nodes = [
            NodeState {
                node: "http://es-1:9200",
                up: true,
                version: "9.2.1",
                dialect: "9-c-2.17",
            },
            NodeState {
                node: "evil\"} 1\nesgate_ready 0\\",
                up: false,
                version: "unknown",
                dialect: "8-b-2.17,9-c-2.21",
            },
        ];
        let text = m.render(&nodes, true);
        assert_eq!(
            sample(&text, "esgate_upstream_node_up{node=\"http://es-1:9200\"}").as_deref(),
            Some("1")
        );
        let evil = r#"esgate_upstream_node_up{node="evil\"} 1\nesgate_ready 0\\"}"#;
        assert_eq!(sample(&text, evil).as_deref(), Some("0"));
        assert_eq!(
            sample(
                &text,
                "esgate_upstream_node_info{node=\"http://es-1:9200\",version=\"9.2.1\",dialect=\"9-c-2.17\"}"
            )
            .as_deref(),
            Some("1")
        );
        let evil_info = r#"esgate_upstream_node_info{node="evil\"} 1\nesgate_ready 0\\",version="unknown",dialect="8-b-2.17,9-c-2.21"}"#;
        assert_eq!(sample(&text, evil_info).as_deref(), Some("1"));
        assert_eq!(
            sample(&text, r#"esgate_unchecked_total{reason="quote\"here"}"#).as_deref(),
            Some("1")
        );
        // The injected line did not become a sample of its own.
        assert_eq!(text.lines().filter(|l| l.starts_with("esgate_ready ")).count(), 1);
    }

    #[test]
    fn rejection_values_are_capped() {
        let m = Metrics::new();
        let values: Vec<&'static str> = (0..MAX_DYNAMIC_VALUES + 6)
            .map(|i| &*Box::leak(format!("type_{i:03}").into_boxed_str()))
            .collect();
        for value in &values {
            m.local_rejection(value);
        }
        // A value kept before the cap still counts under its own name afterwards.
        m.local_rejection(values[0]);
        // One past the cap goes to `other` every time.
        m.local_rejection(values[MAX_DYNAMIC_VALUES + 1]);
        let text = m.render(&[], true);

        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("esgate_local_rejections_total{"))
            .collect();
        assert_eq!(lines.len(), MAX_DYNAMIC_VALUES + 1, "{lines:#?}");
        assert_eq!(
            sample(&text, "esgate_local_rejections_total{error_type=\"type_000\"}").as_deref(),
            Some("2")
        );
        let last_kept = format!(
            "esgate_local_rejections_total{{error_type=\"type_{:03}\"}}",
            MAX_DYNAMIC_VALUES - 1
        );
        assert_eq!(sample(&text, &last_kept).as_deref(), Some("1"));
        let first_dropped = format!("esgate_local_rejections_total{{error_type=\"type_{MAX_DYNAMIC_VALUES:03}\"}}");
        assert_eq!(sample(&text, &first_dropped), None);
        assert_eq!(
            sample(&text, "esgate_local_rejections_total{error_type=\"other\"}").as_deref(),
            Some("7")
        );
        // The cap is per family.
        m.would_reject("fresh");
        let text = m.render(&[], true);
        assert_eq!(
            sample(&text, "esgate_would_reject_total{error_type=\"fresh\"}").as_deref(),
            Some("1")
        );
    }
}
