//! The connector-error layer in front of a plain hyper 1 service: any request body in, any
//! response body out, no adapter.
//!
//! Run `cargo run --example hyper` and send `PUT localhost:3001/_connector/c1/_error` calls; the
//! inner service stands in for the cluster and echoes what it receives.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use esgate::connector_error::{ConnectorErrorLayer, GuardedBody};
use esgate::elasticsearch::{Knowledge, SharedKnowledge, Version};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tower::ServiceBuilder;

/// The inner service: reads the body it is given (the canonical one on the guarded route) and
/// answers with it.
async fn echo(req: Request<GuardedBody<Incoming>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let text = format!(
        "{} {} {}",
        parts.method,
        parts.uri.path(),
        String::from_utf8_lossy(&body)
    );
    Ok(Response::new(Full::new(Bytes::from(text))))
}

/// Serves every connection of `listener` with the guard in front of [`echo`].
async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let knowledge = Version::parse("9.5.0")
        .map(Knowledge::for_version)
        .unwrap_or(Knowledge::UNKNOWN);
    let layer = ConnectorErrorLayer::new().knowledge(SharedKnowledge::new(knowledge));
    loop {
        let (tcp, _) = listener.accept().await?;
        let service = ServiceBuilder::new().layer(layer.clone()).service_fn(echo);
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
                .await;
            if let Err(e) = served {
                eprintln!("connection: {e}");
            }
        });
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 3001))).await?;
    println!("listening on http://{}", listener.local_addr()?);
    serve(listener).await
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn exchange(addr: std::net::SocketAddr, method_path: &str, body: &str) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "{method_path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.expect("read");
        answer
    }

    #[tokio::test]
    async fn guards_the_route_and_passes_everything_else() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(super::serve(listener));

        let refused = exchange(addr, "PUT /_connector/c1/_error", "{}").await;
        assert!(refused.starts_with("HTTP/1.1 400 "), "{refused}");
        assert!(refused.contains("Required [error]"), "{refused}");

        let canonical = exchange(addr, "PUT /_connector/c1/_error", "{\"error\" : null}").await;
        assert!(
            canonical.ends_with("PUT /_connector/c1/_error {\"error\":null}"),
            "{canonical}"
        );

        // Another route: the body reaches the inner service as it was sent.
        let other = exchange(addr, "POST /idx/_doc", "{\"error\" : 1}").await;
        assert!(other.ends_with("POST /idx/_doc {\"error\" : 1}"), "{other}");
    }
}
