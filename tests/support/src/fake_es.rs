//! A fake Elasticsearch node on loopback for `esgate verify` and the canary: it answers the Update
//! connector error API with esgate's own model for Elasticsearch 9.5.0 (the model the oracle tests
//! hold to jackson-core and Elasticsearch's parse path), and 404 `document_missing_exception` to a
//! valid call. Variants answer one row differently or have every connector, and calls to a
//! `esgate-canary-*` id can be held until the test lets them through.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use esgate::connector_error::ConnectorErrorLayer;
use esgate::elasticsearch::{Knowledge, SharedKnowledge, Version};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::sync::Semaphore;
use tower::{Layer, ServiceExt};

/// How the fake answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fake {
    /// As 9.5.0 does.
    Faithful,
    /// As 9.5.0, but P2 (`{"error":1}`) gets another reason.
    OneRowWrong,
    /// Every connector exists.
    ConnectorExists,
}

/// A running fake node.
#[derive(Debug, Clone)]
pub struct FakeNode {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Calls to `esgate-canary-*` ids received so far.
    pub canary_calls: Arc<AtomicUsize>,
    /// Held calls to canary ids wait for a permit here (when the node holds them).
    pub canary_gate: Arc<Semaphore>,
}

fn json(status: u16, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-elastic-product", "Elasticsearch")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap_or_default()
}

async fn answer(
    fake: Fake,
    node: FakeNode,
    hold: bool,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if req.method() == Method::GET && path == "/" {
        return Ok(json(
            200,
            r#"{"name":"fake","version":{"number":"9.5.0"},"tagline":"You Know, for Search"}"#,
        ));
    }
    if req.method() == Method::GET && path.starts_with("/_connector/") {
        return Ok(match fake {
            Fake::ConnectorExists => json(200, r#"{"id":"x","status":"connected"}"#),
            _ => json(
                404,
                r#"{"error":{"root_cause":[{"type":"resource_not_found_exception","reason":"connector not found"}],"type":"resource_not_found_exception","reason":"connector not found"},"status":404}"#,
            ),
        });
    }
    if path.starts_with("/_connector/esgate-canary-") {
        node.canary_calls.fetch_add(1, Ordering::SeqCst);
        if hold {
            if let Ok(permit) = node.canary_gate.acquire().await {
                permit.forget();
            }
        }
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    if fake == Fake::OneRowWrong && &body[..] == br#"{"error":1}"# {
        return Ok(json(
            400,
            r#"{"error":{"root_cause":[{"type":"x_content_parse_exception","reason":"something else"}],"type":"x_content_parse_exception","reason":"something else"},"status":400}"#,
        ));
    }
    // Elasticsearch's own checks, then the connector lookup: none exists.
    let knowledge = Version::parse("9.5.0")
        .map(Knowledge::for_version)
        .unwrap_or(Knowledge::UNKNOWN);
    let missing = tower::service_fn(|_: Request<_>| async {
        Ok::<_, Infallible>(json(
            404,
            r#"{"error":{"root_cause":[{"type":"document_missing_exception","reason":"document missing"}],"type":"document_missing_exception","reason":"document missing"},"status":404}"#,
        ))
    });
    let model = ConnectorErrorLayer::new()
        .knowledge(SharedKnowledge::new(knowledge))
        .layer(missing);
    let Ok(response) = model.oneshot(Request::from_parts(parts, Full::new(body))).await;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let mut out = Response::from_parts(parts, Full::new(body));
    if out.status() == StatusCode::OK {
        *out.status_mut() = StatusCode::NOT_FOUND;
    }
    Ok(out)
}

impl FakeNode {
    /// Starts a fake node; with `hold`, its answers to canary ids wait for [`FakeNode::canary_gate`].
    pub async fn start(fake: Fake, hold: bool) -> FakeNode {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let node = FakeNode {
            addr: listener.local_addr().expect("addr"),
            canary_calls: Arc::default(),
            canary_gate: Arc::new(Semaphore::new(0)),
        };
        let shared = node.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let node = shared.clone();
                let service = hyper::service::service_fn(move |req| answer(fake, node.clone(), hold, req));
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
                );
            }
        });
        node
    }
}
