//! The connector-error layer in an axum application: `Router::layer` takes it as it is.
//!
//! Run `cargo run --example axum`, then
//! `curl -XPUT localhost:3000/_connector/c1/_error -H 'content-type: application/json' -d '{"error":42}'`:
//! the layer answers 400 as Elasticsearch would; `-d '{"error":"disk full"}'` reaches the handler,
//! which sees the canonical body.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::routing::{get, put};
use axum::Router;
use esgate::connector_error::ConnectorErrorLayer;
use esgate::elasticsearch::{Knowledge, SharedKnowledge, Version};

/// The application: a stand-in for the cluster's Update connector error API, behind the layer.
fn app() -> Router {
    // Answer as Elasticsearch 9.5 answers (an esgate upstream learns this from the cluster).
    let knowledge = Version::parse("9.5.0")
        .map(Knowledge::for_version)
        .unwrap_or(Knowledge::UNKNOWN);
    Router::new()
        .route(
            "/_connector/{id}/_error",
            put(|body: Bytes| async move { format!("stored {}", String::from_utf8_lossy(&body)) }),
        )
        .route("/", get(|| async { "hello" }))
        .layer(
            ConnectorErrorLayer::new()
                .max_body_size(1 << 20)
                .knowledge(SharedKnowledge::new(knowledge)),
        )
}

async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, app()).await
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], 3000));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    serve(listener).await
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends one request on a new connection and reads the answer until the server closes.
    async fn exchange(addr: std::net::SocketAddr, body: &str) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "PUT /_connector/c1/_error HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.expect("read");
        answer
    }

    #[tokio::test]
    async fn refuses_like_elasticsearch_and_forwards_the_canonical_body() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(super::serve(listener));

        let refused = exchange(addr, r#"{"error":42}"#).await;
        assert!(refused.starts_with("HTTP/1.1 400 "), "{refused}");
        assert!(refused.contains("x_content_parse_exception"), "{refused}");
        assert!(!refused.contains("stored"), "{refused}");

        let stored = exchange(addr, r#"{ "error" : "disk full" }"#).await;
        assert!(stored.starts_with("HTTP/1.1 200 "), "{stored}");
        assert!(stored.ends_with(r#"stored {"error":"disk full"}"#), "{stored}");
    }
}
