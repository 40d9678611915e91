//! Pass-through is exact and streamed: what the client sends is what the upstream receives, and
//! what the upstream answers is what the client gets.

use esgate_test_support::{self as common, digest, gateway, random_bytes, request, within, Client, Reply, Upstream};
use tokio::sync::mpsc;

#[tokio::test]
async fn eight_mib_bodies_arrive_byte_exact_both_ways() {
    let answer = random_bytes(8 << 20, 7);
    let reply = answer.clone();
    let mut up = Upstream::start(move |_| Reply::full(200, &[], &reply)).await;
    let gw = gateway(&[&up], &[]);
    let body = random_bytes(8 << 20, 42);
    let mut client = Client::connect(gw.listen_addr()).await;
    let resp = client
        .exchange(
            "POST",
            &request("POST", "/idx/_bulk", &[("content-type", "application/x-ndjson")], &body),
        )
        .await;
    let seen = up.next().await.msg;
    assert_eq!(seen.body.len(), body.len());
    assert_eq!(digest(&seen.body), digest(&body), "request body changed on the way");
    assert_eq!(seen.header("content-length"), Some("8388608"));
    assert!(!seen.chunked);
    assert_eq!(resp.status(), 200);
    assert_eq!(digest(&resp.body), digest(&answer), "response body changed on the way");
}

#[tokio::test]
async fn chunked_request_body_is_streamed_through() {
    let mut up = Upstream::ok().await;
    let gw = gateway(&[&up], &[]);
    let mut client = Client::connect(gw.listen_addr()).await;
    client
        .send(b"POST /_bulk HTTP/1.1\r\nHost: es.test\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-ndjson\r\n\r\n")
        .await;
    client.send(b"5\r\nhello\r\n").await;
    // The upstream gets the request before the client has finished the body: it is not buffered.
    let head = common::within("the forwarded head", async {
        loop {
            if up.received() > 0 || up.connections() > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    });
    head.await;
    client.send(b"6\r\n world\r\n0\r\n\r\n").await;
    let resp = client.response("POST").await;
    let seen = up.next().await.msg;
    assert_eq!(resp.status(), 200);
    assert_eq!(seen.body, b"hello world");
    assert!(seen.chunked, "a body of unknown length goes on chunked");
    assert_eq!(seen.header("content-type"), Some("application/x-ndjson"));
}

#[tokio::test]
async fn slow_response_reaches_the_client_chunk_by_chunk() {
    let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let rx = std::sync::Mutex::new(Some(rx));
    let up = Upstream::start(move |_| {
        let rx = rx.lock().ok().and_then(|mut r| r.take()).expect("one streamed request");
        Reply::Stream(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec(), rx)
    })
    .await;
    let gw = gateway(&[&up], &[]);
    let mut client = Client::connect(gw.listen_addr()).await;
    client.send(&request("GET", "/_search?scroll=1m", &[], b"")).await;
    let mut head = within("the head", client.reader.head())
        .await
        .expect("read")
        .expect("a head");
    assert_eq!(head.status(), 200);
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    for part in ["first", "second", "third"] {
        tx.send(format!("{:x}\r\n{part}\r\n", part.len()).into_bytes())
            .expect("send chunk");
        // Each chunk must arrive while the upstream still holds the rest back.
        let got = within("a chunk", client.reader.chunk(&mut head)).await.expect("chunk");
        assert_eq!(got.as_deref(), Some(part.as_bytes()));
    }
    tx.send(b"0\r\n\r\n".to_vec()).expect("send end");
    assert_eq!(
        within("the end", client.reader.chunk(&mut head)).await.expect("end"),
        None
    );
}

#[tokio::test]
async fn head_204_and_304_have_no_body_and_keep_their_headers() {
    let up = Upstream::start(|req| match req.start_line.split(' ').nth(1) {
        Some("/") => {
            Reply::Raw(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 445\r\n\r\n".to_vec())
        }
        Some("/no-content") => Reply::Raw(b"HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n".to_vec()),
        _ => Reply::Raw(b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\n\r\n".to_vec()),
    })
    .await;
    let gw = gateway(&[&up], &[]);
    let mut client = Client::connect(gw.listen_addr()).await;
    let head = client.exchange("HEAD", &request("HEAD", "/", &[], b"")).await;
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.header("content-length"),
        Some("445"),
        "HEAD keeps the length of the body it would send"
    );
    assert!(head.body.is_empty());
    let nc = client.exchange("GET", &request("GET", "/no-content", &[], b"")).await;
    assert_eq!(nc.status(), 204);
    assert_eq!(nc.header("x-a"), Some("1"));
    let nm = client
        .exchange("GET", &request("GET", "/cached", &[("if-none-match", "\"v1\"")], b""))
        .await;
    assert_eq!(nm.status(), 304);
    assert_eq!(nm.header("etag"), Some("\"v1\""));
    // The connection is still in step: one more exchange works.
    assert_eq!(
        client
            .exchange("GET", &request("GET", "/no-content", &[], b""))
            .await
            .status(),
        204
    );
}

#[tokio::test]
async fn hop_by_hop_headers_go_end_to_end_headers_stay_in_order() {
    let mut up = Upstream::start(|_| {
        Reply::Raw(
            b"HTTP/1.1 200 OK\r\nx-b: 1\r\nConnection: keep-alive, x-secret-hop\r\nx-secret-hop: no\r\nKeep-Alive: timeout=5\r\nx-a: 2\r\nwarning: 299 Elasticsearch \"deprecated\"\r\ncontent-length: 2\r\n\r\n{}"
                .to_vec(),
        )
    })
    .await;
    let gw = gateway(&[&up], &[]);
    let mut client = Client::connect(gw.listen_addr()).await;
    let raw = b"GET /idx/_doc/1 HTTP/1.1\r\nHost: es.test:9200\r\nX-Opaque-Id: op-1\r\nConnection: keep-alive, X-Hop\r\nX-Hop: drop me\r\nAuthorization: ApiKey abc==\r\nKeep-Alive: 300\r\nProxy-Connection: keep-alive\r\nTE: gzip\r\nUpgrade: websocket\r\nAccept: application/json\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n";
    let resp = client.exchange("GET", raw).await;
    let seen = up.next().await.msg;
    assert_eq!(seen.start_line, "GET /idx/_doc/1 HTTP/1.1");
    assert_eq!(
        seen.header_names(),
        ["host", "x-opaque-id", "authorization", "accept", "traceparent"]
    );
    assert_eq!(
        seen.header("host"),
        Some("es.test:9200"),
        "Host is forwarded unchanged by default"
    );
    assert_eq!(seen.header("authorization"), Some("ApiKey abc=="));
    assert_eq!(resp.header_names(), ["x-b", "x-a", "warning", "content-length"]);
    assert_eq!(resp.body, b"{}");
}

#[tokio::test]
async fn odd_paths_and_query_strings_are_forwarded_byte_for_byte() {
    let mut up = Upstream::ok().await;
    let gw = gateway(&[&up], &[]);
    let mut client = Client::connect(gw.listen_addr()).await;
    let targets = [
        "/_connector/a%2Fb/_error",
        "//double//slashes//",
        "/idx/_search?q=a&q=b&&empty=&flag&x=%2F%20+%zz",
        "/%5Fconnector/x/_error/",
        "/idx/_doc/%F0%9F%98%80?routing=%E2%82%AC",
        "/?",
        "/a;b=c/..%2F../",
    ];
    for target in targets {
        let resp = client.exchange("GET", &request("GET", target, &[], b"")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(up.next().await.msg.start_line, format!("GET {target} HTTP/1.1"));
    }
}

#[tokio::test]
async fn content_length_zero_is_kept() {
    let mut up = Upstream::ok().await;
    let gw = gateway(&[&up], &[]);
    let mut client = Client::connect(gw.listen_addr()).await;
    let resp = client
        .exchange(
            "POST",
            b"POST /idx/_refresh HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
    assert_eq!(resp.status(), 200);
    let seen = up.next().await.msg;
    assert_eq!(seen.header("content-length"), Some("0"));
    assert!(seen.body.is_empty());
}

#[tokio::test]
async fn expect_100_continue_works() {
    let mut up = Upstream::ok().await;
    let gw = gateway(&[&up], &[]);
    let mut client = Client::connect(gw.listen_addr()).await;
    client
        .send(b"PUT /idx/_doc/1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let interim = within("100 Continue", client.reader.head())
        .await
        .expect("read")
        .expect("head");
    assert_eq!(interim.status(), 100);
    client.send(b"{\"a\":1}").await;
    let resp = client.response("PUT").await;
    assert_eq!(resp.status(), 200);
    let seen = up.next().await.msg;
    assert_eq!(seen.body, b"{\"a\":1}");
    assert_eq!(seen.header("expect"), None, "esgate answered the expectation itself");
}

#[tokio::test]
async fn a_hundred_requests_on_one_connection_reuse_one_upstream_connection() {
    let mut up = Upstream::ok().await;
    let gw = gateway(&[&up], &[]);
    let mut client = Client::connect(gw.listen_addr()).await;
    for i in 0..100 {
        let body = format!("{{\"n\":{i}}}");
        let resp = client
            .exchange("POST", &request("POST", "/idx/_search", &[], body.as_bytes()))
            .await;
        assert_eq!(resp.status(), 200);
        let seen = up.next().await;
        assert_eq!(seen.msg.body, body.as_bytes());
        assert_eq!(seen.conn, 0);
    }
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn upstream_connections_outlive_short_client_connections() {
    let mut up = Upstream::ok().await;
    let gw = gateway(&[&up], &[]);
    for _ in 0..20 {
        let mut client = Client::connect(gw.listen_addr()).await;
        let resp = client
            .exchange("GET", &request("GET", "/", &[("connection", "close")], b""))
            .await;
        assert_eq!(resp.status(), 200);
        up.next().await;
    }
    assert_eq!(
        up.connections(),
        1,
        "each client connection found the parked upstream connection"
    );
}

#[tokio::test]
async fn forwarded_headers_and_host_rewrite_when_enabled() {
    let mut up = Upstream::ok().await;
    let gw = gateway(&[&up], &["--forwarded-headers", "--rewrite-host"]);
    let mut client = Client::connect(gw.listen_addr()).await;
    let resp = client
        .exchange("GET", &request("GET", "/", &[("x-forwarded-for", "10.1.2.3")], b""))
        .await;
    assert_eq!(resp.status(), 200);
    let seen = up.next().await.msg;
    assert_eq!(seen.header("x-forwarded-for"), Some("10.1.2.3, 127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("host"), Some(up.addr.to_string().as_str()));
}

#[tokio::test]
async fn absolute_form_targets_go_upstream_in_origin_form() {
    let mut up = Upstream::ok().await;
    let gw = gateway(&[&up], &[]);
    let mut client = Client::connect(gw.listen_addr()).await;
    let resp = client
        .exchange(
            "GET",
            b"GET http://es.test:9200/idx/_count?q=x HTTP/1.1\r\nHost: es.test:9200\r\n\r\n",
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(up.next().await.msg.start_line, "GET /idx/_count?q=x HTTP/1.1");
}

#[tokio::test]
async fn garbage_on_one_connection_does_not_hurt_the_next() {
    let mut up = Upstream::ok().await;
    let gw = gateway(&[&up], &[]);
    let mut bad = Client::connect(gw.listen_addr()).await;
    bad.send(b"\x00\x01GARBAGE \xff\xfe\r\n\r\n").await;
    let resp = bad.response("GET").await;
    assert_eq!(resp.status(), 400, "hyper answers a malformed request with 400");
    let mut good = Client::connect(gw.listen_addr()).await;
    assert_eq!(good.exchange("GET", &request("GET", "/", &[], b"")).await.status(), 200);
    assert_eq!(up.next().await.msg.start_line, "GET / HTTP/1.1");
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let up = Upstream::ok().await;
    let gw = gateway(&[&up], &["--max-header-size=2KiB"]);
    let mut client = Client::connect(gw.listen_addr()).await;
    let big = "x".repeat(4096);
    let resp = client
        .exchange("GET", &request("GET", "/", &[("x-big", &big)], b""))
        .await;
    assert_eq!(resp.status(), 431);
    assert_eq!(up.received(), 0);
}

#[tokio::test]
async fn trailers_pass_through_both_ways() {
    let mut up = Upstream::start(|_| {
        Reply::Raw(
            b"HTTP/1.1 200 OK\r\ntrailer: x-checksum\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-checksum: abc\r\n\r\n"
                .to_vec(),
        )
    })
    .await;
    let gw = gateway(&[&up], &[]);
    let mut client = Client::connect(gw.listen_addr()).await;
    let resp = client
        .exchange(
            "POST",
            b"POST /_bulk HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nTrailer: x-request-digest\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-request-digest: 123\r\n\r\n",
        )
        .await;
    let seen = up.next().await.msg;
    assert_eq!(seen.body, b"abc");
    assert_eq!(seen.trailers, [("x-request-digest".to_owned(), "123".to_owned())]);
    assert_eq!(
        seen.header("te"),
        Some("trailers"),
        "the client's acceptance of trailers goes on"
    );
    assert_eq!(resp.body, b"ok");
    assert_eq!(resp.trailers, [("x-checksum".to_owned(), "abc".to_owned())]);
}
