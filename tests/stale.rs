//! Upstream connections the node closes, and how many esgate keeps.
//!
//! * A node that closes every keep-alive connection right after its answer (no `Connection:
//!   close`, the socket just closes) races with the next request on that connection: idempotent
//!   requests with complete bodies are sent again on a new connection, so the client never sees
//!   the 502; a streamed POST is never sent twice.
//! * Idle client connections give their upstream connection back after about a second, and parked
//!   connections are closed by `pool_idle_timeout` with no traffic at all.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use esgate_test_support::{self as common, gateway, request, within, Client, Reader, Upstream, LIMIT};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";

/// What a [`Node`] does on each of its connections.
#[derive(Clone, Copy)]
enum Mode {
    /// Answers, then closes the socket (no `Connection: close`), one time in ten a millisecond
    /// later: the next request races the close.
    CloseAfterAnswer,
    /// Answers the first request of a connection; reads the second and closes without answering:
    /// every reused connection is found closed before an answer, deterministically.
    CloseOnSecond,
    /// Ordinary keep-alive.
    KeepAlive,
}

/// A raw HTTP/1.1 node on loopback that counts its connections and the requests it read.
struct Node {
    url: String,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    /// Connections open now (accepted and not yet ended).
    open: Arc<AtomicUsize>,
    /// Start lines of the requests read, esgate's version probes left out.
    seen: Arc<Mutex<Vec<String>>>,
}

impl Node {
    async fn start(mode: Mode) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, o, s) = (accepted.clone(), open.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let (o, s) = (o.clone(), s.clone());
                tokio::spawn(async move {
                    serve(tcp, mode, &s).await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Node {
            url,
            accepted,
            open,
            seen,
        }
    }

    fn flag(&self) -> String {
        format!("--upstream={}", self.url)
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until at most `n` connections are open; returns how many are.
    async fn wait_open_at_most(&self, n: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let open = self.open();
            if open <= n || Instant::now() > deadline {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn serve(tcp: tokio::net::TcpStream, mode: Mode, seen: &Mutex<Vec<String>>) {
    let mut reader = Reader::new(tcp);
    let mut answered = 0;
    while let Ok(Some(msg)) = reader.request().await {
        if common::is_version_probe(&msg) {
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}")
                .await;
            return;
        }
        if let Ok(mut s) = seen.lock() {
            s.push(msg.start_line.clone());
        }
        if matches!(mode, Mode::CloseOnSecond) && answered == 1 {
            return;
        }
        if reader.get_mut().write_all(ANSWER).await.is_err() {
            return;
        }
        answered += 1;
        if matches!(mode, Mode::CloseAfterAnswer) {
            static CLOSES: AtomicUsize = AtomicUsize::new(0);
            if CLOSES.fetch_add(1, Ordering::Relaxed) % 10 == 0 {
                // One close in ten comes a moment later, as the next request crosses it (without
                // this, on loopback, esgate mostly sees the close first and the race is rare).
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            return;
        }
    }
}

/// `esgate_…` sample from the gateway's metrics page.
fn sample(gw: &esgate::Gateway, series: &str) -> u64 {
    let page = gw.metrics().render(&[], true);
    page.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{page}"))
}

const PIN: &str = "--es-version=9.5.0";

fn put_error(i: usize) -> Vec<u8> {
    let body = format!("{{\"error\":\"failure {i}\"}}");
    request(
        "PUT",
        "/_connector/c1/_error",
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_closing_after_every_answer_costs_no_502() {
    let node = Node::start(Mode::CloseAfterAnswer).await;
    let gw = esgate::Gateway::start(common::config(&[&node.flag(), PIN])).expect("start");
    let addr = gw.listen_addr();
    // A few clients at once, as in production: the close races the next request of any of them.
    const CLIENTS: usize = 4;
    let started = Instant::now();
    let runs = (0..CLIENTS).map(|c| {
        tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            let (mut gets, mut puts, mut failed) = (0usize, 0usize, Vec::new());
            while gets < 10_000 / CLIENTS && started.elapsed() < Duration::from_secs(15) {
                let resp = client.exchange("GET", &request("GET", "/idx/_doc/1", &[], b"")).await;
                if resp.status() != 200 {
                    failed.push(resp.status());
                }
                gets += 1;
            }
            for i in 0..500 / CLIENTS {
                let resp = client.exchange("PUT", &put_error(c * 1000 + i)).await;
                if resp.status() != 200 {
                    failed.push(resp.status());
                }
                puts += 1;
            }
            (gets, puts, failed)
        })
    });
    let (mut gets, mut puts, mut failed) = (0, 0, Vec::new());
    for run in runs.collect::<Vec<_>>() {
        let (g, p, f) = within("a client's requests", run).await.expect("client task");
        gets += g;
        puts += p;
        failed.extend(f);
    }
    let replays = sample(&gw, "esgate_upstream_replays_total");
    eprintln!(
        "{gets} GETs and {puts} intercepted PUTs in {:?}: {} failed, {replays} replayed, {} connections",
        started.elapsed(),
        failed.len(),
        node.accepted.load(Ordering::SeqCst)
    );
    assert!(gets >= 2_000, "only {gets} GETs in 15 s");
    assert_eq!(puts, 500);
    assert!(failed.is_empty(), "non-200 answers: {failed:?}");
    assert_eq!(sample(&gw, "esgate_upstream_errors_total{kind=\"broken\"}"), 0);
}

#[tokio::test]
async fn a_reused_connection_closed_before_the_answer_is_replayed_only_when_harmless() {
    let node = Node::start(Mode::CloseOnSecond).await;
    let gw = esgate::Gateway::start(common::config(&[&node.flag(), PIN])).expect("start");
    let mut client = Client::connect(gw.listen_addr()).await;

    // GET, then GET on the same (reused) connection: the node reads it and closes; esgate sends it
    // again on a new connection.
    for _ in 0..4 {
        let resp = client.exchange("GET", &request("GET", "/idx/_doc/1", &[], b"")).await;
        assert_eq!(resp.status(), 200);
    }
    assert!(sample(&gw, "esgate_upstream_replays_total") >= 1);

    // The intercepted route forwards a complete body with PUT: replayed too.
    for i in 0..4 {
        let resp = client.exchange("PUT", &put_error(i)).await;
        assert_eq!(resp.status(), 200, "{}", String::from_utf8_lossy(&resp.body));
    }

    // A streamed POST on a reused connection: never sent twice, the client gets the 502.
    let resp = client.exchange("GET", &request("GET", "/idx/_doc/1", &[], b"")).await;
    assert_eq!(resp.status(), 200);
    let replays_before = sample(&gw, "esgate_upstream_replays_total");
    let post = b"POST /idx/_doc HTTP/1.1\r\nHost: es.test\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n7\r\n{\"a\":1}\r\n0\r\n\r\n";
    let resp = client.exchange("POST", post).await;
    assert_eq!(resp.status(), 502, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.json()["error"]["type"], "esgate_bad_gateway_exception");
    let posts = node.seen().iter().filter(|l| l.starts_with("POST /idx/_doc ")).count();
    assert_eq!(posts, 1, "the node saw the streamed POST {posts} times");
    assert_eq!(sample(&gw, "esgate_upstream_replays_total"), replays_before);

    // Nor a POST with a Content-Length body (streamed too).
    let resp = client.exchange("GET", &request("GET", "/idx/_doc/1", &[], b"")).await;
    assert_eq!(resp.status(), 200);
    let resp = client
        .exchange("POST", &request("POST", "/idx/_update/1", &[], b"{\"doc\":{}}"))
        .await;
    assert_eq!(resp.status(), 502);
    let updates = node
        .seen()
        .iter()
        .filter(|l| l.starts_with("POST /idx/_update/1 "))
        .count();
    assert_eq!(updates, 1);
}

#[tokio::test]
async fn idle_clients_give_their_upstream_connections_back() {
    let node = Node::start(Mode::KeepAlive).await;
    let gw = esgate::Gateway::start(common::config(&[&node.flag(), "--pool-max-idle-per-node=4"])).expect("start");
    let mut clients = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let mut client = Client::connect(gw.listen_addr()).await;
        let resp = client.exchange("GET", &request("GET", "/", &[], b"")).await;
        assert_eq!(resp.status(), 200);
        clients.push(client);
    }
    let peak = node.accepted.load(Ordering::SeqCst);
    // The clients stay connected and say nothing; within a couple of seconds their upstream
    // connections are back in the pool, which keeps four.
    let open = node.wait_open_at_most(4, LIMIT).await;
    eprintln!("1000 idle clients: {peak} upstream connections opened, {open} open after the idle release");
    assert!(
        open <= 4,
        "{open} upstream connections still open for 1000 idle clients"
    );
    // An idle client's next request takes a parked connection (or opens one).
    for client in clients.iter_mut().take(10) {
        let resp = client.exchange("GET", &request("GET", "/", &[], b"")).await;
        assert_eq!(resp.status(), 200);
    }
    assert!(!gw.metrics().render(&[], true).contains("code=\"502\""));
}

#[tokio::test]
async fn parked_connections_are_closed_by_the_idle_timeout_without_traffic() {
    let node = Node::start(Mode::KeepAlive).await;
    let gw = esgate::Gateway::start(common::config(&[&node.flag(), "--pool-idle-timeout=1s"])).expect("start");
    {
        let mut clients = Vec::new();
        for _ in 0..8 {
            let mut client = Client::connect(gw.listen_addr()).await;
            let resp = client.exchange("GET", &request("GET", "/", &[], b"")).await;
            assert_eq!(resp.status(), 200);
            clients.push(client);
        }
        // The clients leave: their connections are parked.
    }
    let started = Instant::now();
    let open = node.wait_open_at_most(0, LIMIT).await;
    assert_eq!(open, 0, "parked connections outlived pool_idle_timeout with no traffic");
    eprintln!("parked connections closed after {:?}", started.elapsed());
    // The gateway still serves.
    let mut client = Client::connect(gw.listen_addr()).await;
    let resp = within(
        "a request after the pool emptied",
        client.exchange("GET", &request("GET", "/", &[], b"")),
    )
    .await;
    assert_eq!(resp.status(), 200);
}

/// The recording upstream of the other tests still sees one request per request here.
#[tokio::test]
async fn an_ordinary_node_sees_each_request_once() {
    let mut up = Upstream::ok().await;
    let gw = gateway(&[&up], &[]);
    let mut client = Client::connect(gw.listen_addr()).await;
    for _ in 0..20 {
        let resp = client.exchange("GET", &request("GET", "/", &[], b"")).await;
        assert_eq!(resp.status(), 200);
        up.next().await;
    }
    assert_eq!(up.received(), 20);
    assert_eq!(up.connections(), 1);
}
