//! The service stack of one client connection, outermost layer first.
//!
//! Every request of a connection goes through this stack; the innermost service forwards to the
//! upstream. The stack is built once per connection from shared parts (cheap `Arc` clones).
//!
//! **Always ready.** No service of this stack applies backpressure: each `poll_ready` returns
//! `Ready(Ok(()))` at once and does no work (limits are answers, such as 429 or 503, never a
//! pending readiness). The connection's service therefore asks for readiness once per request
//! with a no-op waker instead of awaiting it, and checks the answer in debug builds
//! (`src/server/connection.rs`, `ConnectionHandle::call`). A layer added here must keep the
//! rule, or that call must learn to wait.

use std::sync::Arc;

use tower::ServiceBuilder;

use crate::audit::Auditor;
use crate::config::Config;
use crate::connector_error::{Budget, ConnectorErrorGuard, ConnectorErrorLayer};
use crate::metrics::Metrics;
use crate::observe::{Observe, ObserveLayer};
use crate::upstream::{ConnInfo, Upstream, UpstreamService};

/// The shared parts every connection's stack is built from.
#[derive(Clone, Debug)]
pub struct Stack {
    upstream: Upstream,
    connector_error: ConnectorErrorLayer,
    metrics: Arc<Metrics>,
    audit: Option<Auditor>,
}

/// The service of one client connection.
pub type ConnectionService = Observe<ConnectorErrorGuard<UpstreamService>>;

impl Stack {
    /// The parts for this configuration; `audit` when an audit sink is configured.
    pub fn new(config: &Config, metrics: Arc<Metrics>, audit: Option<Auditor>) -> Self {
        let ce = &config.connector_error;
        let upstream = Upstream::build(
            &config.upstream,
            config.server.forwarded_headers,
            metrics.clone(),
            audit.is_some(),
        );
        if let Some(version) = ce.es_version {
            upstream.pin(version);
        }
        let mut connector_error = ConnectorErrorLayer::new()
            .max_body_size(ce.max_body_size)
            .report_only(ce.report_only)
            .error_text_limit(audit.is_some().then_some(config.audit.max_error_length))
            .body_read_timeout(Some(config.server.body_read_timeout).filter(|d| !d.is_zero()))
            // Counted in the metrics registry, which outlives reloads: bodies read under an
            // older configuration still count against the new limit.
            .budget(Budget::new(ce.max_buffered_bytes, metrics.buffers().clone()))
            .knowledge(upstream.knowledge().clone());
        if ce.check_auth {
            connector_error = connector_error.check_auth(ce.auth_cache_ttl);
        }
        // Counted in the registry, which outlives reloads; a reload starts a new canary, so the
        // kinds of call it had turned to forwarding are answered locally again.
        connector_error = connector_error.canary(ce.canary_rate, metrics.canary().clone());
        Stack {
            upstream,
            connector_error,
            metrics,
            audit,
        }
    }

    /// The upstream (nodes and their health).
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The metrics every connection records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The service for one client connection.
    pub fn service(&self, info: ConnInfo) -> ConnectionService {
        ServiceBuilder::new()
            // Times and counts every request; audits the intercepted route (or all requests).
            .layer(ObserveLayer::new(self.metrics.clone(), self.audit.clone(), info))
            // Answers locally what Elasticsearch would refuse on `PUT /_connector/<id>/_error`;
            // every other request passes straight through, unbuffered.
            .layer(self.connector_error.clone())
            .service(self.upstream.connection(info))
    }
}

/// The stack of one connection in process: built from a configuration, asked for readiness and
/// called without a socket (the call is answered locally, so nothing is sent upstream).
#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::Service;

    use super::*;
    use crate::body::Body;

    fn stack() -> Stack {
        // A node nobody listens on: a forwarded call would fail, a local answer does not care.
        let args = ["esgate", "--upstream=http://127.0.0.1:9", "--es-version=9.5.0"];
        let (_, config) = Config::load_with(args, &|_| None).expect("a valid configuration");
        Stack::new(&config, Arc::new(Metrics::new()), None)
    }

    fn info() -> ConnInfo {
        ConnInfo {
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], 40000)),
            scheme: "http",
        }
    }

    #[test]
    fn every_service_of_the_stack_is_always_ready() {
        let mut service = stack().service(info());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let ready: Poll<Result<(), Infallible>> = Service::<Request<Body>>::poll_ready(&mut service, &mut cx);
        assert!(matches!(ready, Poll::Ready(Ok(()))), "the rule of this module");
    }

    #[tokio::test]
    async fn a_refused_connector_error_is_answered_by_the_stack_itself() {
        let stack = stack();
        let mut service = stack.service(info());
        let req = Request::put("/_connector/c1/_error")
            .header("content-type", "application/json")
            .body(Body::full(Bytes::from_static(b"{\"error\":42}")))
            .expect("a request");
        let response = service.call(req).await.unwrap_or_else(|e| match e {});
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = response.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        assert!(String::from_utf8_lossy(&body).contains("x_content_parse_exception"));
        let page = stack.metrics().render(&[], true);
        assert!(page.contains("esgate_local_rejections_total{error_type=\"x_content_parse_exception\"} 1"), "{page}");
    }
}
