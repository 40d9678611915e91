//! The admin listener: health endpoints on a port of their own, so that no Elasticsearch path is
//! ever shadowed by them.
//!
//! * `GET /healthz`: 200 while the process runs.
//! * `GET /readyz`: 200 while esgate accepts traffic, 503 once it is draining, so that a load
//!   balancer or Kubernetes stops sending before the listener closes.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};

use crate::body::Body;
use crate::es_error::json_response;

/// Readiness shared between the gateway and its admin endpoints.
#[derive(Clone, Debug)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Ready from the start.
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

/// Answers one admin request.
pub async fn handle<B>(readiness: Readiness, req: Request<B>) -> Result<Response<Body>, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => status(StatusCode::OK, "ok"),
        (&Method::GET | &Method::HEAD, "/readyz") if readiness.is_ready() => status(StatusCode::OK, "ready"),
        (&Method::GET | &Method::HEAD, "/readyz") => status(StatusCode::SERVICE_UNAVAILABLE, "draining"),
        _ => status(StatusCode::NOT_FOUND, "not found"),
    };
    Ok(response)
}

fn status(code: StatusCode, text: &'static str) -> Response<Body> {
    let body = format!("{{\"status\":\"{text}\"}}");
    json_response(code, Bytes::from(body))
}
