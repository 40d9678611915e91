//! Requests whose framing or method a proxy must not pass on (RFC 9112 §3.2, §6.1, §6.3;
//! `CONNECT`), against the real binary: each is answered 400 in Elasticsearch's shape by esgate
//! itself, counted in `/metrics`, and nothing of it reaches the upstream.

use esgate_test_support::{request, within, Binary, Client, Message, Upstream};

/// esgate in front of a recording upstream, with an admin listener.
async fn start() -> (Upstream, Binary) {
    let up = Upstream::ok().await;
    let bin = Binary::start(
        &[&format!("--upstream={}", up.url()), "--admin-listen=127.0.0.1:0"],
        &[],
    );
    (up, bin)
}

/// Sends `raw` on a new connection and reads the answer.
async fn answer(bin: &Binary, raw: &[u8], method: &str) -> (Client, Message) {
    let mut client = Client::connect(bin.addr).await;
    let response = client.exchange(method, raw).await;
    (client, response)
}

/// Asserts a 400 in Elasticsearch's error shape whose reason contains `reason`.
fn assert_bad_request(response: &Message, reason: &str) {
    assert_eq!(
        response.status(),
        400,
        "{}",
        String::from_utf8_lossy(&response.raw_head)
    );
    assert_eq!(response.header("content-type"), Some("application/json"));
    let json = response.json();
    let error_type = "esgate_bad_request_exception";
    assert_eq!(json["status"], 400);
    assert_eq!(json["error"]["type"], error_type);
    assert_eq!(json["error"]["root_cause"][0]["type"], error_type);
    let text = json["error"]["reason"].as_str().unwrap_or_default();
    assert!(text.contains(reason), "reason {text:?} lacks {reason:?}");
    assert_eq!(json["error"]["root_cause"][0]["reason"], json["error"]["reason"]);
    // esgate's own answer: no Elasticsearch product header.
    assert_eq!(response.header("x-elastic-product"), None);
}

/// Asserts that the server closes `client`'s connection (the framing of what follows cannot be
/// trusted).
async fn assert_closed(client: &mut Client) {
    let next = within("the connection to close", client.reader.head()).await;
    assert!(matches!(next, Ok(None) | Err(_)), "connection left open: {next:?}");
}

fn is_health_probe(msg: &Message) -> bool {
    msg.header("user-agent").is_some_and(|ua| ua.contains("(health probe)"))
}

/// The next request a client sent that the upstream received (esgate's health probes skipped).
async fn next_client_request(up: &mut Upstream) -> Message {
    loop {
        let seen = up.next().await;
        if !is_health_probe(&seen.msg) {
            return seen.msg;
        }
    }
}

/// The request lines of every client request the upstream has received.
fn client_requests(up: &Upstream) -> Vec<String> {
    up.log()
        .into_iter()
        .filter(|s| !is_health_probe(&s.msg))
        .map(|s| s.msg.start_line)
        .collect()
}

/// Sends one good request on a new connection and checks that it is the first and only request
/// the upstream has received: nothing of the refused requests before it was forwarded.
async fn assert_nothing_forwarded(up: &mut Upstream, bin: &Binary) {
    let mut client = Client::connect(bin.addr).await;
    let ok = client.exchange("GET", &request("GET", "/_sentinel", &[], b"")).await;
    assert_eq!(ok.status(), 200);
    let seen = next_client_request(up).await;
    assert!(seen.start_line.starts_with("GET /_sentinel "), "{}", seen.start_line);
    let log = client_requests(up);
    assert_eq!(log.len(), 1, "the upstream received {log:?}");
}

/// The value of the sample `series` on the admin listener's `/metrics`.
async fn metric(bin: &Binary, series: &str) -> Option<String> {
    let mut admin = Client::connect(bin.admin.expect("admin listener")).await;
    let page = admin.exchange("GET", &request("GET", "/metrics", &[], b"")).await;
    let text = String::from_utf8_lossy(&page.body).into_owned();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
}

/// A POST with the given framing headers and a chunked body that would smuggle a second request
/// to a peer that framed it differently.
fn smuggling_post(te_lines: &str) -> Vec<u8> {
    format!(
        "POST /idx/_doc HTTP/1.1\r\nHost: es.test\r\n{te_lines}Content-Type: application/json\r\n\r\n\
         2\r\n{{}}\r\n0\r\n\r\nGET /_smuggled HTTP/1.1\r\nHost: es.test\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn transfer_encoding_other_than_a_single_chunked_is_refused() {
    let (mut up, bin) = start().await;
    for te in ["identity, chunked", "gzip, chunked"] {
        let (mut client, response) =
            answer(&bin, &smuggling_post(&format!("Transfer-Encoding: {te}\r\n")), "POST").await;
        assert_bad_request(&response, &format!("Transfer-Encoding [{te}] is not supported"));
        assert_eq!(response.header("connection"), Some("close"));
        assert_closed(&mut client).await;
    }
    // Two fields, the last one chunked: hyper takes it as chunked.
    let two = "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n";
    let (mut client, response) = answer(&bin, &smuggling_post(two), "POST").await;
    assert_bad_request(&response, "Transfer-Encoding [gzip, chunked] is not supported");
    assert_closed(&mut client).await;
    assert_nothing_forwarded(&mut up, &bin).await;
    assert_eq!(
        metric(&bin, "esgate_client_errors_total{reason=\"transfer_encoding\"}")
            .await
            .as_deref(),
        Some("3")
    );
}

#[tokio::test]
async fn chunked_applied_twice_is_refused() {
    let (mut up, bin) = start().await;
    let one_field = "Transfer-Encoding: chunked, chunked\r\n";
    let (mut client, response) = answer(&bin, &smuggling_post(one_field), "POST").await;
    assert_bad_request(
        &response,
        "Transfer-Encoding [chunked, chunked] applies [chunked] more than once",
    );
    assert_closed(&mut client).await;
    let two_fields = "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n";
    let (mut client, response) = answer(&bin, &smuggling_post(two_fields), "POST").await;
    assert_bad_request(&response, "applies [chunked] more than once");
    assert_eq!(response.header("connection"), Some("close"));
    assert_closed(&mut client).await;
    assert_nothing_forwarded(&mut up, &bin).await;
    assert_eq!(
        metric(
            &bin,
            "esgate_client_errors_total{reason=\"transfer_encoding_repeated_chunked\"}"
        )
        .await
        .as_deref(),
        Some("2")
    );
}

#[tokio::test]
async fn several_host_fields_are_refused_and_the_connection_goes_on() {
    let (mut up, bin) = start().await;
    // The body, read and discarded, holds what would be a second request.
    let smuggled = b"GET /_smuggled HTTP/1.1\r\nHost: es.test\r\n\r\n";
    let mut raw = format!(
        "POST /idx/_search HTTP/1.1\r\nHost: es.test\r\nHost: other.test\r\nContent-Length: {}\r\n\r\n",
        smuggled.len()
    )
    .into_bytes();
    raw.extend_from_slice(smuggled);
    let (mut client, response) = answer(&bin, &raw, "POST").await;
    assert_bad_request(&response, "request has 2 Host header fields; exactly one is allowed");
    // The framing itself is sound: the body is skipped and the next request is served.
    let ok = client.exchange("GET", &request("GET", "/_sentinel", &[], b"")).await;
    assert_eq!(ok.status(), 200);
    let seen = next_client_request(&mut up).await;
    assert!(seen.start_line.starts_with("GET /_sentinel "), "{}", seen.start_line);
    let log = client_requests(&up);
    assert_eq!(log.len(), 1, "the upstream received {log:?}");
    assert_eq!(
        metric(&bin, "esgate_client_errors_total{reason=\"host_repeated\"}")
            .await
            .as_deref(),
        Some("1")
    );
}

#[tokio::test]
async fn connect_is_refused() {
    let (mut up, bin) = start().await;
    let raw = b"CONNECT es.test:443 HTTP/1.1\r\nHost: es.test:443\r\n\r\n\x16\x03\x01";
    let (mut client, response) = answer(&bin, raw, "CONNECT").await;
    assert_bad_request(&response, "CONNECT is not supported");
    assert_eq!(response.header("connection"), Some("close"));
    assert_closed(&mut client).await;
    let raw = b"CONNECT / HTTP/1.1\r\nHost: es.test\r\n\r\n";
    let (_, response) = answer(&bin, raw, "CONNECT").await;
    assert_bad_request(&response, "CONNECT is not supported");
    assert_nothing_forwarded(&mut up, &bin).await;
    assert_eq!(
        metric(&bin, "esgate_client_errors_total{reason=\"connect\"}")
            .await
            .as_deref(),
        Some("2")
    );
}

/// What hyper refuses itself, while parsing, before any service of esgate sees the request: it
/// answers a bare 400 (no body, not Elasticsearch's shape) and closes. Nothing is forwarded, and
/// esgate counts it as `malformed`.
#[tokio::test]
async fn what_hyper_refuses_itself_gets_a_bare_400_and_is_not_forwarded() {
    let (mut up, bin) = start().await;
    let cases: [&[u8]; 3] = [
        // Transfer-Encoding on HTTP/1.0.
        b"POST /idx/_doc HTTP/1.0\r\nHost: es.test\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        // A last coding that is not chunked.
        b"POST /idx/_doc HTTP/1.1\r\nHost: es.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"POST /idx/_doc HTTP/1.1\r\nHost: es.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
    ];
    for raw in cases {
        let (mut client, response) = answer(&bin, raw, "POST").await;
        assert_eq!(response.status(), 400, "{}", String::from_utf8_lossy(raw));
        assert!(response.body.is_empty(), "hyper's own answer has no body");
        assert_closed(&mut client).await;
    }
    assert_nothing_forwarded(&mut up, &bin).await;
    assert_eq!(
        metric(&bin, "esgate_client_errors_total{reason=\"malformed\"}")
            .await
            .as_deref(),
        Some("3")
    );
}

#[tokio::test]
async fn a_single_chunked_passes() {
    let (mut up, bin) = start().await;
    let raw = b"POST /idx/_doc HTTP/1.1\r\nHost: es.test\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
    let (_, response) = answer(&bin, raw, "POST").await;
    assert_eq!(response.status(), 200);
    let seen = next_client_request(&mut up).await;
    assert_eq!(seen.body, b"{}");
}
