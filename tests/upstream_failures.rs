//! Upstream failures answer in Elasticsearch's error shape, and the gateway stays up.

mod common;

use common::{gateway, request, Client, Reply, Upstream};

/// A loopback port with nothing listening on it.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}")
}

fn assert_es_error(resp: &common::Message, status: u16, error_type: &str) {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let v = resp.json();
    assert_eq!(v["status"], status);
    assert_eq!(v["error"]["type"], error_type);
    assert_eq!(v["error"]["root_cause"][0]["type"], error_type);
    assert!(v["error"]["reason"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(
        resp.header("x-elastic-product"),
        None,
        "esgate does not pretend to be Elasticsearch here"
    );
}

#[tokio::test]
async fn upstream_down_gives_502() {
    let url = closed_port();
    let gw = esgate::Gateway::start(common::config(&[&format!("--upstream={url}")])).expect("start");
    let mut client = Client::connect(gw.listen_addr()).await;
    let resp = client.exchange("GET", &request("GET", "/", &[], b"")).await;
    assert_es_error(&resp, 502, "esgate_bad_gateway_exception");
    // The connection stays usable.
    let again = client.exchange("GET", &request("GET", "/", &[], b"")).await;
    assert_eq!(again.status(), 502);
}

#[tokio::test]
async fn silent_upstream_gives_504_after_the_response_timeout() {
    let mut up = Upstream::start(|_| Reply::Hang).await;
    let gw = gateway(&[&up], &["--response-timeout=300ms"]);
    let mut client = Client::connect(gw.listen_addr()).await;
    let resp = client
        .exchange("POST", &request("POST", "/idx/_search", &[], b"{}"))
        .await;
    assert_es_error(&resp, 504, "esgate_gateway_timeout_exception");
    assert_eq!(up.next().await.msg.body, b"{}", "the request did reach the node");
}

#[tokio::test]
async fn connection_closed_before_a_response_gives_502_without_retry() {
    let mut up = Upstream::start(|_| Reply::Close).await;
    let mut other = Upstream::ok().await;
    let gw = gateway(&[&up, &other], &[]);
    let mut client = Client::connect(gw.listen_addr()).await;
    // Round-robin may start at either node; send until the closing node has been hit once.
    let mut saw_502 = false;
    for _ in 0..2 {
        let resp = client
            .exchange("POST", &request("POST", "/idx/_doc", &[], b"{\"a\":1}"))
            .await;
        if resp.status() == 502 {
            assert_es_error(&resp, 502, "esgate_bad_gateway_exception");
            saw_502 = true;
        } else {
            assert_eq!(resp.status(), 200);
            other.next().await;
        }
    }
    assert!(saw_502);
    up.next().await;
    // The request that reached the closing node was not sent again to the other one.
    assert_eq!(other.received(), 1);
}

#[tokio::test]
async fn a_dead_node_is_skipped_and_requests_go_to_the_live_one() {
    let mut live = Upstream::ok().await;
    let dead = closed_port();
    let gw = esgate::Gateway::start(common::config(&[
        &format!("--upstream={dead}"),
        &format!("--upstream={}", live.url()),
        "--dead-node-backoff=60s",
        "--max-dead-node-backoff=60s",
    ]))
    .expect("start");
    let mut client = Client::connect(gw.listen_addr()).await;
    for _ in 0..10 {
        let resp = client.exchange("GET", &request("GET", "/", &[], b"")).await;
        assert_eq!(resp.status(), 200, "a refused connection is retried on the other node");
        live.next().await;
    }
    assert!(!gw.upstream().nodes().is_alive(0), "the refusing node is marked dead");
    assert!(gw.upstream().nodes().is_alive(1));
    // Only the first request met the dead node: one connect error, one retry on the live node.
    let page = gw.metrics().render(&[], true);
    assert!(
        page.contains("esgate_upstream_errors_total{kind=\"connect\"} 1\n"),
        "{page}"
    );
    assert!(page.contains("esgate_upstream_retries_total 1\n"), "{page}");
    assert!(
        page.contains("esgate_requests_total{route=\"passthrough\",method=\"GET\",code=\"200\"} 10\n"),
        "{page}"
    );
}

#[tokio::test]
async fn a_node_that_comes_back_is_used_again() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let gw = esgate::Gateway::start(common::config(&[&format!("--upstream=http://{addr}")])).expect("start");
    let mut client = Client::connect(gw.listen_addr()).await;
    assert_eq!(
        client.exchange("GET", &request("GET", "/", &[], b"")).await.status(),
        502
    );
    // The only node is dead; when every node is dead the soonest back is tried anyway.
    let tokio_listener = tokio::net::TcpListener::bind(addr).await.expect("rebind the same port");
    tokio::spawn(async move {
        if let Ok((tcp, _)) = tokio_listener.accept().await {
            let mut reader = common::Reader::new(tcp);
            while let Ok(Some(_)) = reader.request().await {
                use tokio::io::AsyncWriteExt;
                let _ = reader
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            }
        }
    });
    let resp = client.exchange("GET", &request("GET", "/", &[], b"")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body, b"ok");
    assert!(gw.upstream().nodes().is_alive(0));
}

#[tokio::test]
async fn an_upstream_that_closed_an_idle_connection_is_reconnected_transparently() {
    // The first answer asks to close the connection; the next request must get a fresh one.
    let mut up = Upstream::start(|_| Reply::full(200, &[("connection", "close")], b"{}")).await;
    let gw = gateway(&[&up], &[]);
    let mut client = Client::connect(gw.listen_addr()).await;
    for _ in 0..3 {
        assert_eq!(
            client.exchange("GET", &request("GET", "/", &[], b"")).await.status(),
            200
        );
        up.next().await;
    }
    assert_eq!(up.connections(), 3);
}
