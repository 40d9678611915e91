//! `esgate verify` against fake Elasticsearch nodes on loopback. A fake node answers the Update
//! connector error API with esgate's own model for Elasticsearch 9.5.0 (the model the oracle tests
//! hold to jackson-core and Elasticsearch's parse path), and 404 `document_missing_exception` to
//! a valid call; one variant answers a single row differently, another already has every
//! connector.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;

use bytes::Bytes;
use esgate::connector_error::ConnectorErrorLayer;
use esgate::elasticsearch::{Knowledge, SharedKnowledge, Version};
use esgate_test_support::binary_path;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;
use tower::{Layer, ServiceExt};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fake {
    /// Answers as 9.5.0 does.
    Faithful,
    /// As 9.5.0, but P2 (`{"error":1}`) gets another reason.
    OneRowWrong,
    /// Every connector exists.
    ConnectorExists,
}

fn json(status: u16, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-elastic-product", "Elasticsearch")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap_or_default()
}

async fn answer(fake: Fake, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
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
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    if fake == Fake::OneRowWrong && &body[..] == br#"{"error":1}"# {
        return Ok(json(
            400,
            r#"{"error":{"root_cause":[{"type":"x_content_parse_exception","reason":"something else"}],"type":"x_content_parse_exception","reason":"something else"},"status":400}"#,
        ));
    }
    // Elasticsearch's own checks, then the connector lookup: none exists.
    let knowledge = Knowledge::for_version(Version::parse("9.5.0").expect("a version"));
    let missing = tower::service_fn(|_: Request<_>| async {
        Ok::<_, Infallible>(json(
            404,
            r#"{"error":{"root_cause":[{"type":"document_missing_exception","reason":"document missing"}],"type":"document_missing_exception","reason":"document missing"},"status":404}"#,
        ))
    });
    let node = ConnectorErrorLayer::new()
        .knowledge(SharedKnowledge::new(knowledge))
        .layer(missing);
    let Ok(response) = node.oneshot(Request::from_parts(parts, Full::new(body))).await;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let mut out = Response::from_parts(parts, Full::new(body));
    if out.status() == StatusCode::OK {
        *out.status_mut() = StatusCode::NOT_FOUND;
    }
    Ok(out)
}

async fn start(fake: Fake) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = hyper::service::service_fn(move |req| answer(fake, req));
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
            );
        }
    });
    addr
}

/// Runs `esgate verify --json` against `addr`: the report and the exit code.
async fn verify(addr: SocketAddr) -> (Value, Option<i32>) {
    let output = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(binary_path());
        // The developer's shell stays out of it.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ESGATE_") {
                cmd.env_remove(name);
            }
        }
        cmd.args(["verify", "--json", &format!("--upstream=http://{addr}")])
            .output()
    })
    .await
    .expect("join")
    .expect("esgate verify runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    (report, output.status.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answering_as_elasticsearch_does_passes() {
    let (report, code) = verify(start(Fake::Faithful).await).await;
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["passed"], true);
    let node = &report["nodes"][0];
    assert_eq!(node["version"], "9.5.0");
    let rows = node["rows"].as_array().expect("rows");
    assert!(rows.len() >= 30, "{report}");
    assert!(rows.iter().all(|r| r["match"] == true), "{report}");
    let consistent: Vec<&str> = node["consistent_dialects"]
        .as_array()
        .expect("dialects")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(consistent.contains(&"9-c-2.21"), "{report}");
    assert!(report["connector_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("esgate-verify-")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_wrong_row_is_named_and_no_dialect_fits() {
    let (report, code) = verify(start(Fake::OneRowWrong).await).await;
    assert_eq!(code, Some(1), "{report}");
    let node = &report["nodes"][0];
    let wrong: Vec<&str> = node["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["match"] == false)
        .filter_map(|r| r["case"].as_str())
        .collect();
    assert_eq!(wrong, vec!["P2 number"], "{report}");
    assert_eq!(
        node["consistent_dialects"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_with_the_random_id_stops_it_before_any_call() {
    let (report, code) = verify(start(Fake::ConnectorExists).await).await;
    assert_eq!(code, Some(1), "{report}");
    let node = &report["nodes"][0];
    assert!(
        node["error"].as_str().is_some_and(|e| e.contains("may exist")),
        "{report}"
    );
    assert_eq!(node["rows"].as_array().map(Vec::len), Some(0));
}
