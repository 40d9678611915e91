//! Upstream failures answer in Elasticsearch's error shape, and the gateway stays up.

use std::sync::Arc;
use std::time::Duration;

use esgate_test_support::{self as common, gateway, request, within, Client, Reply, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
        .exchange("GET", &request("GET", "/idx/_search", &[], b"{}"))
        .await;
    assert_es_error(&resp, 504, "esgate_gateway_timeout_exception");
    assert_eq!(up.next().await.msg.body, b"{}", "the request did reach the node");
}

#[test]
fn there_is_no_response_timeout_by_default() {
    assert_eq!(common::config(&[]).upstream.response_timeout, None);
}

/// A write is never cut off by esgate's timeout: a 504 would make the official clients send it
/// again (the Node.js client at once, four times in all) while the node may still apply it.
#[tokio::test]
async fn a_slow_write_is_not_answered_504() {
    let release = Arc::new(tokio::sync::Notify::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<String>();
    let node_release = release.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (release, seen_tx) = (node_release.clone(), seen_tx.clone());
            tokio::spawn(async move {
                let mut reader = common::Reader::new(tcp);
                while let Ok(Some(msg)) = reader.request().await {
                    if common::is_version_probe(&msg) {
                        return;
                    }
                    let _ = seen_tx.send(msg.start_line.clone());
                    if msg.start_line.starts_with("GET ") {
                        // A silent node for reads.
                        let _ = reader.get_mut().read(&mut [0u8; 1]).await;
                        return;
                    }
                    // Writes are answered once the test says so.
                    release.notified().await;
                    let answer = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}";
                    if reader.get_mut().write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let gw = esgate::Gateway::start(common::config(&[
        &format!("--upstream={url}"),
        "--response-timeout=300ms",
    ]))
    .expect("start");
    let mut writer = Client::connect(gw.listen_addr()).await;
    writer
        .send(&request("POST", "/idx/_bulk", &[], b"{\"index\":{}}\n{}\n"))
        .await;
    let line = within("the node to get the bulk", seen.recv()).await.expect("seen");
    assert!(line.starts_with("POST /idx/_bulk "), "{line}");
    // A read sent after the write, with the same timeout, times out first: by then the write has
    // waited longer than the timeout too.
    let mut reader = Client::connect(gw.listen_addr()).await;
    let resp = reader.exchange("GET", &request("GET", "/idx/_search", &[], b"")).await;
    assert_es_error(&resp, 504, "esgate_gateway_timeout_exception");
    release.notify_one();
    let resp = writer.response("POST").await;
    assert_eq!(resp.status(), 201, "{}", String::from_utf8_lossy(&resp.body));
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
    // Every connection is served: esgate's version probe may connect too, before or after.
    tokio::spawn(async move {
        while let Ok((tcp, _)) = tokio_listener.accept().await {
            tokio::spawn(async move {
                let mut reader = common::Reader::new(tcp);
                while let Ok(Some(_)) = reader.request().await {
                    let _ = reader
                        .get_mut()
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                }
            });
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

#[tokio::test]
async fn an_answer_with_both_content_length_and_transfer_encoding_gives_502() {
    let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\na\r\n{\"a\":1234}\r\n0\r\n\r\n";
    let mut up = Upstream::start(move |_| Reply::Raw(answer.to_vec())).await;
    let gw = gateway(&[&up], &[]);
    let mut client = Client::connect(gw.listen_addr()).await;
    let resp = client.exchange("GET", &request("GET", "/idx/_doc/1", &[], b"")).await;
    assert_es_error(&resp, 502, "esgate_bad_gateway_exception");
    up.next().await;
    let page = gw.metrics().render(&[], true);
    assert!(page.contains("esgate_upstream_bad_framing_total 1\n"), "{page}");
    // The connection is not reused after such an answer.
    let resp = client.exchange("GET", &request("GET", "/idx/_doc/1", &[], b"")).await;
    assert_eq!(resp.status(), 502);
    up.next().await;
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn a_clients_malformed_chunked_body_gives_400_and_no_upstream_error() {
    let up = Upstream::ok().await;
    let gw = gateway(&[&up], &[]);
    let mut client = Client::connect(gw.listen_addr()).await;
    // A valid first chunk, then a chunk size that is not hexadecimal.
    let bad = b"POST /idx/_doc HTTP/1.1\r\nHost: es.test\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n7\r\n{\"a\":1}\r\nzz\r\n";
    let resp = client.exchange("POST", bad).await;
    assert_es_error(&resp, 400, "esgate_bad_request_exception");
    let page = gw.metrics().render(&[], true);
    for kind in ["connect", "timeout", "broken"] {
        let series = format!("esgate_upstream_errors_total{{kind=\"{kind}\"}} 0\n");
        assert!(page.contains(&series), "{series} in {page}");
    }
    assert!(page.contains("esgate_client_body_errors_total 1\n"), "{page}");
    assert!(gw.upstream().nodes().is_alive(0));
    // Other clients are served as before.
    let mut other = Client::connect(gw.listen_addr()).await;
    let resp = other.exchange("GET", &request("GET", "/", &[], b"")).await;
    assert_eq!(resp.status(), 200);
}

/// The numbers of the descriptors `pid` has open.
fn open_fds(pid: u32) -> Vec<u32> {
    let mut fds: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    fds.sort_unstable();
    fds
}

/// The lowest descriptor number `pid` does not use: the next one it would get.
fn lowest_free_fd(pid: u32) -> u32 {
    let fds = open_fds(pid);
    (0..).find(|n| fds.binary_search(n).is_err()).unwrap_or(0)
}

/// Sets the soft `RLIMIT_NOFILE` of `pid` (the hard limit unchanged). False when prlimit fails.
fn set_nofile(pid: u32, soft: u64) -> bool {
    std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={soft}:"))
        .status()
        .is_ok_and(|s| s.success())
}

/// Polls `cond` every 20 ms until it holds (true) or [`common::LIMIT`] passes (false).
async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + common::LIMIT;
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

#[tokio::test]
async fn running_out_of_descriptors_answers_503_and_leaves_the_node_live() {
    if !std::path::Path::new("/proc/self/fd").exists() {
        return eprintln!("skipped: no /proc");
    }
    // Every answer closes its connection, so each request needs a new descriptor upstream.
    let up = Upstream::start(|_| Reply::full(200, &[("connection", "close")], b"{}")).await;
    let bin = common::Binary::start(
        &[
            &format!("--upstream={}", up.url()),
            "--admin-listen=127.0.0.1:0",
            "--workers=1",
            "--health-check-interval=1h",
            "--version-check-interval=0",
        ],
        &[],
    );
    let pid = bin.child.id();
    let admin = bin.admin.expect("admin listener");
    let readyz = || async move {
        let mut c = Client::connect(admin).await;
        c.exchange("GET", &request("GET", "/readyz", &[], b"")).await
    };
    let mut ready = false;
    for _ in 0..100 {
        if readyz().await.status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "esgate never became ready");
    let mut client = Client::connect(bin.addr).await;
    let resp = client.exchange("GET", &request("GET", "/", &[], b"")).await;
    assert_eq!(resp.status(), 200);
    // Settled: the upstream connection of that request is closed.
    let mut last = (open_fds(pid), 0);
    assert!(
        eventually(|| {
            let now = open_fds(pid);
            if now == last.0 {
                last.1 += 1;
            } else {
                last = (now, 0);
            }
            last.1 >= 10
        })
        .await
    );
    let free = lowest_free_fd(pid);
    let original = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let soft: u64 = original
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(1024);
    // Room for one more descriptor, which a second client connection takes.
    if !set_nofile(pid, u64::from(free) + 1) {
        return eprintln!("skipped: prlimit cannot change esgate's descriptor limit here");
    }
    let filler = Client::connect(bin.addr).await;
    assert!(
        eventually(|| open_fds(pid).contains(&free)).await,
        "esgate did not accept the second connection"
    );
    let resp = client.exchange("GET", &request("GET", "/", &[], b"")).await;
    assert_es_error(&resp, 503, "esgate_unavailable_exception");
    let reason = resp.json()["error"]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("os error 24"), "{reason}");
    // Descriptors free up: the second client leaves. The node was never marked dead, so esgate
    // is ready before any request got through again.
    drop(filler);
    assert!(eventually(|| !open_fds(pid).contains(&free)).await);
    let ready = readyz().await;
    assert_eq!(
        ready.status(),
        200,
        "the node was marked dead: {}",
        String::from_utf8_lossy(&ready.body)
    );
    assert!(eventually(|| !open_fds(pid).contains(&free)).await);
    let resp = client.exchange("GET", &request("GET", "/", &[], b"")).await;
    assert_eq!(resp.status(), 200, "{}", String::from_utf8_lossy(&resp.body));
    assert!(set_nofile(pid, soft));
    let mut admin_client = Client::connect(admin).await;
    let metrics = admin_client
        .exchange("GET", &request("GET", "/metrics", &[], b""))
        .await;
    let page = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(page.contains("esgate_upstream_local_errors_total 1\n"), "{page}");
    assert!(
        page.contains("esgate_upstream_errors_total{kind=\"connect\"} 0\n"),
        "{page}"
    );
}
