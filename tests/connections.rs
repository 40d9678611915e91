//! Client connections against the real binary: the connection limit and the listen backlog, a
//! process short of descriptors, the admin listener under load, what an idle connection costs,
//! and requests on connections esgate parks between requests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use esgate_test_support::{self as common, metric, request, within, Binary, Client, Message, Reply, Upstream, LIMIT};

// ===== helpers =====

/// esgate's own health probes, which the recording upstream also sees.
fn is_health_probe(msg: &Message) -> bool {
    msg.header("user-agent").is_some_and(|ua| ua.contains("(health probe)"))
}

/// One admin request's status.
async fn admin_status(admin: SocketAddr, path: &str) -> u16 {
    let mut c = Client::connect(admin).await;
    c.exchange("GET", &request("GET", path, &[], b"")).await.status()
}

/// Polls `/metrics` until `series` reaches `want` (bounded by [`LIMIT`]).
async fn wait_metric(admin: SocketAddr, series: &str, want: u64) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let now = metric(admin, series).await;
        if now == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{series} stayed at {now:?}, not {want}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An upstream that holds every `GET /_hold` until released: its answer head goes out at once,
/// its 2-byte body when [`Holding::release`] is called. Everything else is answered at once.
struct Holding {
    up: Upstream,
    held: Arc<Mutex<Vec<mpsc::UnboundedSender<Vec<u8>>>>>,
    released: Arc<AtomicBool>,
}

impl Holding {
    async fn start() -> Holding {
        let held: Arc<Mutex<Vec<mpsc::UnboundedSender<Vec<u8>>>>> = Arc::default();
        let released = Arc::new(AtomicBool::new(false));
        let (h, r) = (held.clone(), released.clone());
        let up = Upstream::start(move |msg| {
            // Under the lock, so that a request is either held before `release` or answered.
            let mut held = h.lock().expect("held");
            if !msg.start_line.starts_with("GET /_hold ") || r.load(Ordering::SeqCst) {
                return Reply::ok("{}");
            }
            let (tx, rx) = mpsc::unbounded_channel();
            held.push(tx);
            Reply::Stream(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n".to_vec(), rx)
        })
        .await;
        Holding { up, held, released }
    }

    /// Waits until `n` held requests have arrived (bounded by [`LIMIT`]).
    async fn wait_held(&mut self, n: usize) {
        let deadline = Instant::now() + LIMIT;
        let mut seen = 0;
        while seen < n {
            assert!(Instant::now() < deadline, "{seen} held requests arrived, not {n}");
            let msg = self.up.next().await.msg;
            if msg.start_line.starts_with("GET /_hold ") {
                seen += 1;
            }
        }
    }

    /// Held requests so far.
    fn held(&self) -> usize {
        self.held.lock().expect("held").len()
    }

    /// Finishes every held answer; later `/_hold` requests are answered at once.
    fn release(&self) {
        let mut held = self.held.lock().expect("held");
        self.released.store(true, Ordering::SeqCst);
        for tx in held.drain(..) {
            let _ = tx.send(b"{}".to_vec());
        }
    }
}

/// `n` clients, each sending `GET /_hold` on its own connection and reading the answer; the
/// statuses, in no particular order.
fn hold_clients(addr: SocketAddr, n: usize) -> tokio::task::JoinSet<u16> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        set.spawn(async move {
            let mut client = Client::connect(addr).await;
            client.send(&request("GET", "/_hold", &[], b"")).await;
            // Long enough for a client that waits its turn in the backlog.
            match tokio::time::timeout(2 * LIMIT, client.reader.response("GET")).await {
                Ok(Ok(response)) => response.status(),
                Ok(Err(_)) => 0,
                Err(_) => 1,
            }
        });
    }
    set
}

/// Waits for every client of `set`, returning their statuses.
async fn statuses(mut set: tokio::task::JoinSet<u16>) -> Vec<u16> {
    let mut out = Vec::new();
    while let Some(status) = within("every client's answer", set.join_next()).await {
        out.push(status.expect("client task"));
    }
    out
}

/// The binary started through `prlimit`, with a soft and hard descriptor limit of `nofile`.
struct Limited {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    startup: String,
}

impl Limited {
    fn start(nofile: u32, args: &[&str]) -> Limited {
        let mut child = Command::new("prlimit")
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_esgate"))
            .args(["--listen=127.0.0.1:0", "--admin-listen=127.0.0.1:0"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn prlimit esgate");
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        // Read to the end, so that a chatty process never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let startup = loop {
            match rx.recv_timeout(LIMIT) {
                Ok(line) if line.contains("esgate started") => break line,
                Ok(_) => continue,
                Err(e) => {
                    let _ = child.kill();
                    panic!("esgate did not start under prlimit: {e}");
                }
            }
        };
        let field = |name: &str| {
            startup
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|v| v.trim_matches('"').parse::<SocketAddr>().ok())
                .expect("address in the start-up line")
        };
        Limited {
            addr: field("listen="),
            admin: field("admin="),
            startup,
            child,
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

// ===== the connection limit =====

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn beyond_max_connections_clients_wait_in_the_backlog_and_are_served_in_turn() {
    let mut up = Holding::start().await;
    let bin = Binary::start(
        &[
            &format!("--upstream={}", up.up.url()),
            "--admin-listen=127.0.0.1:0",
            "--max-connections=50",
            "--workers=2",
        ],
        &[],
    );
    assert!(
        bin.startup.iter().any(|l| l.contains("max_connections=50")),
        "{:?}",
        bin.startup
    );
    let admin = bin.admin.expect("admin");
    let clients = hold_clients(bin.addr, 100);

    // 50 are served at once; the other 50 connected (the kernel's backlog holds them) and wait.
    up.wait_held(50).await;
    for _ in 0..5 {
        // The admin listener answers while every client slot is taken.
        assert_eq!(admin_status(admin, "/healthz").await, 200);
        assert_eq!(metric(admin, "esgate_connections_open").await, Some(50));
        assert_eq!(metric(admin, "esgate_connections_total").await, Some(50));
        assert_eq!(up.held(), 50);
    }

    // As slots free, the waiting clients are accepted and served; none gets an error.
    up.release();
    let statuses = statuses(clients).await;
    assert_eq!(statuses.len(), 100);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(admin_status(admin, "/healthz").await, 200);
    assert_eq!(metric(admin, "esgate_connections_total").await, Some(100));
    assert_eq!(metric(admin, "esgate_accept_errors_total").await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_few_descriptors_the_limit_is_derived_and_the_process_stays_healthy() {
    let mut up = Holding::start().await;
    let mut bin = Limited::start(128, &[&format!("--upstream={}", up.up.url()), "--workers=2"]);
    // (128 - 64) / 2: every client may take an upstream connection as well.
    assert!(bin.startup.contains("max_connections=32"), "{}", bin.startup);
    assert!(bin.startup.contains("open_files=128"), "{}", bin.startup);

    let clients = hold_clients(bin.addr, 300);
    up.wait_held(32).await;
    for path in ["/healthz", "/readyz", "/healthz", "/readyz"] {
        assert_eq!(admin_status(bin.admin, path).await, 200, "{path} with every slot taken");
    }
    assert_eq!(metric(bin.admin, "esgate_connections_open").await, Some(32));

    up.release();
    let statuses = statuses(clients).await;
    assert_eq!(statuses.len(), 300);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(bin.alive());
    assert_eq!(admin_status(bin.admin, "/healthz").await, 200);
    // The node was never marked dead.
    assert_eq!(admin_status(bin.admin, "/readyz").await, 200);
    assert_eq!(metric(bin.admin, "esgate_accept_errors_total").await, Some(0));
}

/// Descriptors open in process `pid`.
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc fd").count()
}

/// The limit set too high for the descriptors: `accept` fails with EMFILE. The accept loops
/// pause and go on (they neither spin nor stop), the admin listener answers from its spare
/// descriptors, and once descriptors free up every waiting client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn out_of_descriptors_accepting_pauses_and_goes_on() {
    const HELD: usize = 20;
    let mut up = Holding::start().await;
    let bin = Binary::start(
        &[
            &format!("--upstream={}", up.up.url()),
            "--admin-listen=127.0.0.1:0",
            "--workers=2",
            "--max-connections=1000",
        ],
        &[],
    );
    let admin = bin.admin.expect("admin");
    let pid = bin.child.id();
    // Clients held with their upstream connections: two descriptors each, kept until released.
    let held = hold_clients(bin.addr, HELD);
    up.wait_held(HELD).await;
    // Now leave the process a handful of descriptors only.
    let limit = open_descriptors(pid) + 6;
    let status = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:{limit}")])
        .status()
        .expect("prlimit");
    assert!(status.success());

    // More clients than descriptors: accept fails once they are gone.
    let waiting = hold_clients(bin.addr, 100);
    let deadline = Instant::now() + LIMIT;
    while metric(admin, "esgate_accept_errors_total").await.unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "accept never failed");
        // The admin listener keeps answering meanwhile.
        assert_eq!(admin_status(admin, "/healthz").await, 200);
    }
    // Out of descriptors: the admin listener answers from its spares.
    for _ in 0..5 {
        assert_eq!(admin_status(admin, "/healthz").await, 200);
    }
    // A failed accept pauses its loop (50 ms): a couple of failures per period and worker, not
    // a spin.
    let errors = metric(admin, "esgate_accept_errors_total").await.unwrap_or(0);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let more = metric(admin, "esgate_accept_errors_total").await.unwrap_or(0) - errors;
    let periods = u64::try_from(started.elapsed().as_millis() / 50 + 1).unwrap_or(u64::MAX);
    assert!(more <= 4 * periods, "{more} accept errors in {:?}", started.elapsed());

    // Descriptors come back as the held clients finish; every waiting client is then answered:
    // served, or refused (503) for a local limit while connecting upstream.
    up.release();
    let first = statuses(held).await;
    assert!(first.iter().all(|s| *s == 200), "{first:?}");
    let rest = statuses(waiting).await;
    assert_eq!(rest.len(), 100);
    assert!(rest.iter().all(|s| matches!(s, 200 | 503)), "{rest:?}");
    assert_eq!(admin_status(admin, "/healthz").await, 200);
    // Served again.
    let mut client = Client::connect(bin.addr).await;
    let ok = client.exchange("GET", &request("GET", "/_hold", &[], b"")).await;
    assert_eq!(ok.status(), 200);
    drop(bin);
}

// ===== idle connections =====

/// `n` connections that send nothing.
async fn silent(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(within("connect", TcpStream::connect(addr)).await.expect("connect"));
    }
    out
}

/// `n` connections that each send one request answered by esgate itself (a connector error
/// refused locally, so no upstream connection is involved) and then idle.
async fn after_one_request(addr: SocketAddr, n: usize) -> Vec<Client> {
    let body = b"{";
    let req = request(
        "PUT",
        "/_connector/c1/_error",
        &[("content-type", "application/json")],
        body,
    );
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut client = Client::connect(addr).await;
        let response = client.exchange("PUT", &req).await;
        assert_eq!(response.status(), 400, "{}", String::from_utf8_lossy(&response.body));
        out.push(client);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_connection_costs_at_most_8_kib() {
    const N: usize = 1000;
    let up = Upstream::ok().await;
    let bin = Binary::start(
        &[
            &format!("--upstream={}", up.url()),
            "--admin-listen=127.0.0.1:0",
            "--workers=1",
            "--es-version=9.2.0",
        ],
        &[],
    );
    let admin = bin.admin.expect("admin");
    let pid = bin.child.id();
    // Warm up every path once, so that what is built once is in the baseline.
    drop(silent(bin.addr, 50).await);
    drop(after_one_request(bin.addr, 50).await);
    wait_metric(admin, "esgate_connections_open", 0).await;

    let before = rss_kib(pid);
    let quiet = silent(bin.addr, N).await;
    wait_metric(admin, "esgate_connections_open", N as u64).await;
    let mid = rss_kib(pid);
    let used = after_one_request(bin.addr, N).await;
    wait_metric(admin, "esgate_connections_open", 2 * N as u64).await;
    let after = rss_kib(pid);

    let silent_kib = (mid - before) as f64 / N as f64;
    let used_kib = (after - mid) as f64 / N as f64;
    eprintln!("idle connection: {silent_kib:.2} KiB sending nothing, {used_kib:.2} KiB after one request");
    assert!(
        silent_kib <= 8.0,
        "{silent_kib:.2} KiB per connection that sent nothing"
    );
    assert!(
        used_kib <= 8.0,
        "{used_kib:.2} KiB per connection idle after one request"
    );
    drop((quiet, used));
}

/// `n` connections that each send one forwarded `GET /`, `WAVE` at a time, and then idle.
async fn after_one_forwarded_get(addr: SocketAddr, n: usize) -> Vec<Client> {
    const WAVE: usize = 10;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..WAVE.min(n - out.len()) {
            tasks.spawn(async move {
                let mut client = Client::connect(addr).await;
                let response = client.exchange("GET", &request("GET", "/", &[], b"")).await;
                assert_eq!(response.status(), 200);
                client
            });
        }
        while let Some(client) = tasks.join_next().await {
            out.push(client.expect("client"));
        }
    }
    out
}

/// Polls `probe` until `done` holds for its value, for at most 10 s; returns the last value.
async fn until<T: Copy>(mut probe: impl FnMut() -> T, done: impl Fn(T) -> bool) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = probe();
        if done(value) || Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A burst of clients that each send one forwarded request, ten at a time, then fall idle: the
/// upstream connections their requests needed go back to the pool (at most
/// `pool_max_idle_per_node` stay open) and the heap they used is given back, so that each idle
/// client connection costs at most 8 KiB again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_burst_idle_clients_hold_no_upstream_connection_and_8_kib_each() {
    const N: usize = 1000;
    const POOL: usize = 8;
    let up = Upstream::ok().await;
    let bin = Binary::start(
        &[
            &format!("--upstream={}", up.url()),
            "--admin-listen=127.0.0.1:0",
            "--workers=1",
            "--es-version=9.2.0",
            &format!("--pool-max-idle-per-node={POOL}"),
        ],
        &[],
    );
    let admin = bin.admin.expect("admin");
    let pid = bin.child.id();
    drop(after_one_forwarded_get(bin.addr, 50).await);
    wait_metric(admin, "esgate_connections_open", 0).await;
    let fds_before = until(|| open_descriptors(pid), |n| n <= 64);
    let fds_before = fds_before.await;
    let before = rss_kib(pid);

    let clients = after_one_forwarded_get(bin.addr, N).await;
    wait_metric(admin, "esgate_connections_open", N as u64).await;
    let fds = until(|| open_descriptors(pid), |n| n <= fds_before + N + POOL).await;
    assert!(
        fds <= fds_before + N + POOL,
        "{fds} descriptors for {N} idle clients ({fds_before} before): upstream connections kept"
    );
    let per_kib = |rss: u64| rss.saturating_sub(before) as f64 / N as f64;
    let rss = until(|| rss_kib(pid), |rss| per_kib(rss) <= 8.0).await;
    eprintln!(
        "after a burst: {:.2} KiB per idle client connection, {} descriptors",
        per_kib(rss),
        fds
    );
    assert!(
        per_kib(rss) <= 8.0,
        "{:.2} KiB per idle client connection",
        per_kib(rss)
    );
    drop(clients);
}

// ===== requests on parked connections =====

/// esgate in front of an upstream that echoes the request path in its body.
async fn echo() -> (Upstream, Binary) {
    let up = Upstream::start(|msg| {
        let path = msg.start_line.split(' ').nth(1).unwrap_or("").to_owned();
        Reply::ok(&format!("{{\"path\":\"{path}\"}}"))
    })
    .await;
    let bin = Binary::start(&[&format!("--upstream={}", up.url())], &[]);
    (up, bin)
}

#[tokio::test]
async fn keep_alive_requests_one_after_another_on_one_connection() {
    let (_up, bin) = echo().await;
    let mut client = Client::connect(bin.addr).await;
    for i in 0..200 {
        let path = format!("/r{i}");
        let response = client.exchange("GET", &request("GET", &path, &[], b"")).await;
        assert_eq!(response.json()["path"], path.as_str());
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (_up, bin) = echo().await;
    let mut client = Client::connect(bin.addr).await;
    let mut burst = Vec::new();
    for i in 0..5 {
        burst.extend_from_slice(&request("GET", &format!("/p{i}"), &[], b""));
    }
    // The last one cut in the middle of its head: the rest follows in a second write.
    let tail = request("POST", "/p5", &[], b"{\"a\":1}");
    let (first, second) = tail.split_at(10);
    burst.extend_from_slice(first);
    client.send(&burst).await;
    for i in 0..5 {
        assert_eq!(client.response("GET").await.json()["path"], format!("/p{i}"));
    }
    client.send(second).await;
    assert_eq!(client.response("POST").await.json()["path"], "/p5");
}

#[tokio::test]
async fn a_head_sent_in_pieces_after_an_idle_pause() {
    let (_up, bin) = echo().await;
    let mut client = Client::connect(bin.addr).await;
    let response = client.exchange("GET", &request("GET", "/first", &[], b"")).await;
    assert_eq!(response.json()["path"], "/first");
    let next = request("POST", "/second", &[("x-a", "1")], b"{\"b\":2}");
    for piece in next.chunks(7) {
        client.send(piece).await;
        // Pacing only: each piece on the wire on its own.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(client.response("POST").await.json()["path"], "/second");
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_header_read_timeout() {
    let up = Upstream::ok().await;
    let bin = Binary::start(
        &[&format!("--upstream={}", up.url()), "--header-read-timeout=300ms"],
        &[],
    );
    let mut client = Client::connect(bin.addr).await;
    assert_eq!(
        client.exchange("GET", &request("GET", "/", &[], b"")).await.status(),
        200
    );
    // Idle, then part of a head: the timeout runs from the moment the connection went idle.
    let started = Instant::now();
    client.reader.get_mut().write_all(b"GET / HT").await.expect("write");
    let end = within("the connection to close", client.reader.head()).await;
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");

    // A connection that never sends a byte is closed too.
    let mut silent = Client::connect(bin.addr).await;
    let end = within("the silent connection to close", silent.reader.head()).await;
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}

#[tokio::test]
async fn a_streamed_body_then_another_request_on_the_same_connection() {
    let (mut up, bin) = echo().await;
    let mut client = Client::connect(bin.addr).await;
    let mut raw = b"POST /_bulk HTTP/1.1\r\nHost: es.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let chunk = common::random_bytes(64 * 1024, 7);
    for _ in 0..16 {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(&chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    client.send(&raw).await;
    assert_eq!(client.response("POST").await.json()["path"], "/_bulk");
    let seen = loop {
        let seen = up.next().await.msg;
        if !is_health_probe(&seen) {
            break seen;
        }
    };
    assert_eq!(seen.body.len(), 16 * 64 * 1024);
    let response = client.exchange("GET", &request("GET", "/after", &[], b"")).await;
    assert_eq!(response.json()["path"], "/after");
}
