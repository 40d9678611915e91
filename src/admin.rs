//! The admin listener: health, readiness and metrics on a port of their own, so that no
//! Elasticsearch path is ever shadowed by them.
//!
//! * `GET /healthz`: 200 while the process runs.
//! * `GET /readyz`: 200 when at least one upstream node answers and esgate is not draining; 503
//!   otherwise. On SIGTERM readiness goes false first, so that a load balancer or Kubernetes
//!   stops sending before the listener closes.
//! * `GET /metrics`: Prometheus text format ([`crate::metrics`]).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};

use crate::body::Body;
use crate::es_error::json_response;
use crate::metrics::{self, Metrics, NodeState};
use crate::reload::Current;

/// The draining latch shared between the gateway and its admin endpoints.
#[derive(Clone, Debug)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Not draining.
    pub fn new() -> Self {
        Readiness(Arc::new(AtomicBool::new(true)))
    }

    /// Marks the gateway as draining.
    pub fn set_draining(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// True until draining starts.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

/// What the admin endpoints look at.
#[derive(Clone, Debug)]
pub struct Admin {
    /// Draining or not.
    pub readiness: Readiness,
    /// The running configuration: its nodes, and whether they answer.
    pub current: Current,
    /// The figures `/metrics` shows.
    pub metrics: Arc<Metrics>,
}

impl Admin {
    /// Not draining and at least one node answers.
    pub fn is_ready(&self) -> bool {
        self.readiness.is_ready() && self.current.load().stack.upstream().nodes().any_answering()
    }

    /// Answers one admin request.
    pub async fn handle<B>(self, req: Request<B>) -> Result<Response<Body>, Infallible> {
        let get = matches!(*req.method(), Method::GET | Method::HEAD);
        let response = match (get, req.uri().path()) {
            (true, "/healthz") => status(StatusCode::OK, "ok"),
            (true, "/readyz") if !self.readiness.is_ready() => status(StatusCode::SERVICE_UNAVAILABLE, "draining"),
            (true, "/readyz") if self.is_ready() => status(StatusCode::OK, "ready"),
            (true, "/readyz") => status(StatusCode::SERVICE_UNAVAILABLE, "no upstream node answers"),
            (true, "/metrics") => self.metrics_page(),
            _ => status(StatusCode::NOT_FOUND, "not found"),
        };
        Ok(response)
    }

    fn metrics_page(&self) -> Response<Body> {
        let current = self.current.load();
        let upstream = current.stack.upstream();
        let labels: Vec<(String, String)> = (0..upstream.nodes().len())
            .map(|index| {
                let learned = upstream.nodes().learned(index);
                (learned.version_label().to_owned(), learned.dialect_label())
            })
            .collect();
        let nodes: Vec<NodeState<'_>> = upstream
            .nodes()
            .states()
            .zip(&labels)
            .map(|((node, up), (version, dialect))| NodeState {
                node,
                up,
                version,
                dialect,
            })
            .collect();
        let text = self.metrics.render(&nodes, self.is_ready());
        let mut response = Response::new(Body::full(Bytes::from(text)));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE));
        response
    }
}

fn status(code: StatusCode, text: &'static str) -> Response<Body> {
    let body = format!("{{\"status\":\"{text}\"}}");
    json_response(code, Bytes::from(body))
}
