//! The audit trail: one JSON line per Update-connector-error call (or per request, in
//! access-log mode), saying who set which connector error, when, from where, and what happened.
//!
//! Writing never slows traffic. The request path hands an owned [`Event`] to a bounded queue with
//! `try_send`; when the queue is full the event is dropped and counted
//! (`esgate_audit_events_dropped_total{sink="queue"}`), and the request goes on. One audit thread
//! turns events into lines and writes them to the configured sinks: stdout, a file (reopened on
//! SIGHUP, for log rotation) and Elasticsearch itself ([`elasticsearch`], batched `_bulk` into a
//! data stream). Secrets never reach a line ([`crate::redact`]).
//!
//! The Elasticsearch sink talks to its node directly, not through the gateway. Its requests also
//! carry a header with a token made at start-up ([`Auditor::is_own_write`]), so that even when the
//! sink is pointed at esgate itself, its writes are never audited in a loop.

pub mod elasticsearch;
pub mod event;
pub mod read_along;

mod writer;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method, Request};
use tokio::sync::mpsc;

pub use self::event::{Event, TextPolicy, WriteRecord};
pub use self::writer::{start, AuditThread};
use crate::elasticsearch::writes::{error_write, ErrorWrite};
use crate::metrics::{AuditSink, Metrics};

/// The header that marks esgate's own audit writes.
pub const OWN_WRITE_HEADER: HeaderName = HeaderName::from_static("x-esgate-audit-writer");

/// The request side of the audit trail. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Auditor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: mpsc::Sender<Event>,
    all_requests: bool,
    max_inspected_body: usize,
    own_write: HeaderValue,
    metrics: Arc<Metrics>,
}

impl Auditor {
    fn new(queue: mpsc::Sender<Event>, all_requests: bool, max_inspected_body: usize, metrics: Arc<Metrics>) -> Self {
        // Unguessable by clients, so that they cannot hide their own requests from the trail.
        let token = RandomState::new().hash_one(std::process::id()) ^ RandomState::new().hash_one(0u8);
        let own_write = HeaderValue::try_from(format!("{token:016x}")).unwrap_or(HeaderValue::from_static("esgate"));
        Auditor {
            inner: Arc::new(Inner {
                queue,
                all_requests,
                max_inspected_body,
                own_write,
                metrics,
            }),
        }
    }

    /// The marker header of esgate's own audit writes.
    pub fn own_write_marker(&self) -> (HeaderName, HeaderValue) {
        (OWN_WRITE_HEADER, self.inner.own_write.clone())
    }

    /// True for a request that is one of esgate's own audit writes.
    pub fn is_own_write<B>(&self, req: &Request<B>) -> bool {
        req.headers().get(OWN_WRITE_HEADER) == Some(&self.inner.own_write)
    }

    /// Whether `req` may need an event: every request in access-log mode, otherwise only what may
    /// be an Update-connector-error call (the layer's record decides at the response).
    pub fn wants<B>(&self, req: &Request<B>) -> bool {
        let path = req.uri().path();
        let candidate = self.inner.all_requests
            || (req.method() == Method::PUT && path.starts_with("/_connector/"))
            || (req.method() == Method::POST || req.method() == Method::PUT) && path.starts_with("/.")
            || path.starts_with("/%");
        candidate && !self.is_own_write(req)
    }

    /// The write of a connector's or sync job's error that `req` is, if any (never for one of
    /// esgate's own writes).
    pub fn error_write<B>(&self, req: &Request<B>) -> Option<ErrorWrite> {
        let write = error_write(req.method(), req.uri().path())?;
        (!self.is_own_write(req)).then_some(write)
    }

    /// Bytes of a document write read along for its event (`audit.max_inspected_body`).
    pub fn max_inspected_body(&self) -> usize {
        self.inner.max_inspected_body
    }

    /// Whether events are written for every request.
    pub fn all_requests(&self) -> bool {
        self.inner.all_requests
    }

    /// Queues `event`; never waits. Counts it as queued, or as dropped when the queue is full.
    pub fn record(&self, event: Event) {
        match self.inner.queue.try_send(event) {
            Ok(()) => self.inner.metrics.audit_written(AuditSink::Queue, 1),
            Err(_) => self.inner.metrics.audit_dropped(AuditSink::Queue, 1),
        }
    }
}
