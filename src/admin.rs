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

/// What the admin endpoints need to know of the upstream nodes, whoever holds them (the
/// gateway answers for its running configuration, across reloads).
pub trait NodeReport: Send + Sync + std::fmt::Debug {
    /// True when at least one node answers.
    fn any_answering(&self) -> bool;
    /// Every node, for `/metrics`.
    fn nodes(&self) -> Vec<NodeLine>;
}

/// One node as `/metrics` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLine {
    /// Its name or address.
    pub node: String,
    /// Whether it answers.
    pub up: bool,
    /// The version learned of it, or `unknown`.
    pub version: String,
    /// The dialects esgate takes it to speak.
    pub dialect: String,
}

/// What the admin endpoints look at: readiness, node health and the metrics; nothing else of the
/// running gateway.
#[derive(Clone, Debug)]
pub struct Admin {
    /// Draining or not.
    pub readiness: Readiness,
    /// The upstream nodes: whether they answer, what they run.
    pub nodes: Arc<dyn NodeReport>,
    /// The figures `/metrics` shows.
    pub metrics: Arc<Metrics>,
}

impl Admin {
    /// Not draining and at least one node answers.
    pub fn is_ready(&self) -> bool {
        self.readiness.is_ready() && self.nodes.any_answering()
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
        let lines = self.nodes.nodes();
        let nodes: Vec<NodeState<'_>> = lines
            .iter()
            .map(|l| NodeState {
                node: &l.node,
                up: l.up,
                version: &l.version,
                dialect: &l.dialect,
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

/// The endpoints in process, against a node report made up for the test: no sockets.
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use http::{Request, StatusCode};
    use http_body_util::BodyExt;

    use super::*;

    #[derive(Debug, Default)]
    struct Nodes(AtomicBool);

    impl NodeReport for Nodes {
        fn any_answering(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }

        fn nodes(&self) -> Vec<NodeLine> {
            vec![NodeLine {
                node: "es1:9200".to_owned(),
                up: self.any_answering(),
                version: "9.5.0".to_owned(),
                dialect: "9-c-2.21".to_owned(),
            }]
        }
    }

    async fn get(admin: &Admin, path: &str) -> (StatusCode, String) {
        let req = Request::get(path).body(()).expect("a request");
        let response = admin.clone().handle(req).await.unwrap_or_else(|e| match e {});
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn ready_only_with_a_node_answering_and_not_while_draining() {
        let nodes = Arc::new(Nodes::default());
        let admin = Admin {
            readiness: Readiness::new(),
            nodes: nodes.clone(),
            metrics: Arc::new(Metrics::new()),
        };
        assert_eq!(get(&admin, "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(&admin, "/readyz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"status":"no upstream node answers"}"#.to_owned()
            )
        );
        nodes.0.store(true, Ordering::Relaxed);
        assert_eq!(
            get(&admin, "/readyz").await,
            (StatusCode::OK, r#"{"status":"ready"}"#.to_owned())
        );
        admin.readiness.set_draining();
        assert_eq!(
            get(&admin, "/readyz").await,
            (StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"draining"}"#.to_owned())
        );
        // Liveness is not readiness: a draining process is still alive.
        assert_eq!(get(&admin, "/healthz").await.0, StatusCode::OK);
        assert_eq!(get(&admin, "/nope").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn metrics_name_each_node_with_its_version_and_dialect() {
        let admin = Admin {
            readiness: Readiness::new(),
            nodes: Arc::new(Nodes(AtomicBool::new(true))),
            metrics: Arc::new(Metrics::new()),
        };
        let (status, text) = get(&admin, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains(r#"esgate_upstream_node_up{node="es1:9200"} 1"#), "{text}");
        assert!(
            text.contains(r#"esgate_upstream_node_info{node="es1:9200",version="9.5.0",dialect="9-c-2.21"} 1"#),
            "{text}"
        );
        assert!(text.contains("esgate_ready 1"), "{text}");
    }
}
