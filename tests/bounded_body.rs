//! The memory an intercepted body may hold, measured on the real binary: one buffer per body
//! (a trickle costs what it sends), the body deadline (408), the budget over all bodies (429 as
//! Elasticsearch's in-flight-requests breaker answers), a decompression bomb, and the lingering
//! close that lets a client still writing its body read an early answer.
//!
//! Memory is read from `/proc/<pid>/status` of the child (`VmRSS`, `VmHWM`). Every wait is
//! bounded; no sleep stands for an assertion (the sleeps only pace the clients).

use std::time::{Duration, Instant};

use esgate_test_support::{within, Binary, Client, Message, Reader, Upstream};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const ES: &str = "--es-version=9.5.0";
const MIB: u64 = 1024 * 1024;

/// `VmRSS` and `VmHWM` of `pid`, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn head(content_length: u64, extra: &str) -> Vec<u8> {
    format!(
        "PUT /_connector/c1/_error HTTP/1.1\r\nHost: es.test\r\nContent-Type: application/json\r\n{extra}Content-Length: {content_length}\r\n\r\n"
    )
    .into_bytes()
}

/// A valid body of exactly `len` bytes.
fn valid_body(len: usize) -> Vec<u8> {
    let mut body = b"{\"error\":\"".to_vec();
    body.resize(len - 2, b'x');
    body.extend_from_slice(b"\"}");
    body
}

/// One figure of the admin listener's `/metrics`.
async fn metric(admin: std::net::SocketAddr, name: &str) -> u64 {
    let mut client = Client::connect(admin).await;
    let page = client
        .exchange(
            "GET",
            b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        )
        .await;
    let text = String::from_utf8_lossy(&page.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics"))
}

/// Polls `/metrics` until `name` satisfies `ok` (bounded by the common limit).
async fn metric_until(admin: std::net::SocketAddr, name: &str, ok: impl Fn(u64) -> bool) -> u64 {
    within(&format!("{name} to reach the expected value"), async {
        loop {
            let v = metric(admin, name).await;
            if ok(v) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Update-connector-error calls the upstream received (health probes not counted).
fn puts(up: &Upstream) -> usize {
    up.log().iter().filter(|s| s.msg.start_line.starts_with("PUT ")).count()
}

fn start(up: &Upstream, extra: &[&str]) -> Binary {
    let upstream = format!("--upstream={}", up.url());
    let mut args = vec![upstream.as_str(), ES, "--admin-listen=127.0.0.1:0"];
    args.extend_from_slice(extra);
    Binary::start(&args, &[])
}

/// A forwarded call, so that the process has touched what one costs before it is measured.
async fn warm_up(bin: &Binary) {
    let mut client = Client::connect(bin.addr).await;
    let body = valid_body(64);
    let mut req = head(body.len() as u64, "");
    req.extend_from_slice(&body);
    assert_eq!(client.exchange("PUT", &req).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trickle_costs_what_it_sends_and_stalled_bodies_get_408() {
    const CONNECTIONS: usize = 200;
    let up = Upstream::ok().await;
    let bin = start(&up, &["--body-read-timeout=1s", "--workers=2"]);
    warm_up(&bin).await;
    let pid = bin.child.id();
    let (before, _) = memory(pid);

    // Every connection sends one byte every 50 ms for 2 s (progress: no timeout), then stops.
    let trickle_for = Duration::from_secs(2);
    let mut tasks = Vec::new();
    let addr = bin.addr;
    let started = Instant::now();
    for _ in 0..CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let mut tcp = within("connect", TcpStream::connect(addr)).await.expect("connect");
            tcp.set_nodelay(true).expect("nodelay");
            tcp.write_all(&head(10_000, "")).await.expect("head");
            let mut ticks = tokio::time::interval(Duration::from_millis(50));
            while started.elapsed() < trickle_for {
                ticks.tick().await;
                tcp.write_all(b" ").await.expect("a byte");
            }
            let stopped = Instant::now();
            let mut reader = Reader::new(tcp);
            let answer: Message = within("the 408", reader.response("PUT")).await.expect("response");
            (answer, stopped.elapsed())
        }));
    }
    // The resident size while every connection holds a partial body.
    let mut peak = 0;
    while started.elapsed() < trickle_for {
        peak = peak.max(memory(pid).0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for task in tasks {
        let (answer, waited) = task.await.expect("client");
        assert_eq!(answer.status(), 408, "{}", String::from_utf8_lossy(&answer.body));
        let json = answer.json();
        assert_eq!(json["error"]["type"], "esgate_request_timeout_exception");
        assert_eq!(json["status"], 408);
        assert!(
            json["error"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("server.body_read_timeout")),
            "{json}"
        );
        // Not before the deadline after the last byte.
        assert!(waited >= Duration::from_millis(900), "408 after {waited:?}");
    }
    let growth = peak.saturating_sub(before);
    eprintln!(
        "trickle: {CONNECTIONS} connections, RSS before {} KiB, peak while trickling {} KiB, growth {} KiB",
        before / 1024,
        peak / 1024,
        growth / 1024
    );
    assert!(growth < 16 * MIB, "RSS grew by {} KiB", growth / 1024);
    let admin = bin.admin.expect("admin");
    assert_eq!(metric(admin, "esgate_buffered_body_bytes").await, 0);

    // The connections are gone: the heap they used goes back to the system (within 10 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = memory(pid).0;
    while after > before + growth / 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = memory(pid).0;
    }
    eprintln!("trickle: RSS after the connections closed {} KiB", after / 1024);
    assert!(
        after <= before + growth / 4,
        "RSS {} KiB after the trickles ended, {} KiB before them, peak {} KiB",
        after / 1024,
        before / 1024,
        peak / 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_gets_408_and_its_memory_back() {
    let up = Upstream::ok().await;
    let bin = start(&up, &["--body-read-timeout=1s"]);
    let admin = bin.admin.expect("admin");
    let mut client = Client::connect(bin.addr).await;
    client.send(&head(MIB, "")).await;
    client.send(&valid_body(MIB as usize)[..512 * 1024]).await;
    // Reserved from Content-Length while the body is being read.
    let held = metric_until(admin, "esgate_buffered_body_bytes", |v| v >= MIB).await;
    assert_eq!(held, MIB);
    let answer = client.response("PUT").await;
    assert_eq!(answer.status(), 408);
    assert_eq!(answer.json()["error"]["type"], "esgate_request_timeout_exception");
    // Freed before the answer was written.
    assert_eq!(metric(admin, "esgate_buffered_body_bytes").await, 0);
    assert_eq!(puts(&up), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_answers_like_the_in_flight_requests_breaker() {
    let up = Upstream::ok().await;
    let bin = start(&up, &["--max-buffered-bytes=1MiB"]);
    let admin = bin.admin.expect("admin");

    // Over the budget from its Content-Length alone: answered before a byte of the body.
    let mut client = Client::connect(bin.addr).await;
    client.send(&head(2 * MIB, "")).await;
    let answer = client.response("PUT").await;
    assert_eq!(answer.status(), 429);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let reason = "[esgate_buffered_bodies] Data too large, data for [<http_request>] would be [2097152/2mb], which is larger than the limit of [1048576/1mb]";
    let cause = serde_json::json!({
        "type": "circuit_breaking_exception",
        "reason": reason,
        "bytes_wanted": 2097152,
        "bytes_limit": 1048576,
        "durability": "TRANSIENT",
    });
    let mut error = cause.clone();
    error["root_cause"] = serde_json::json!([cause]);
    assert_eq!(answer.json(), serde_json::json!({"error": error, "status": 429}));
    // Elasticsearch's field order: root_cause, type, reason, then the breaker's fields.
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    assert!(
        text.starts_with(r#"{"error":{"root_cause":[{"type":"circuit_breaking_exception","reason":"#),
        "{text}"
    );
    assert!(text.ends_with(r#""bytes_wanted":2097152,"bytes_limit":1048576,"durability":"TRANSIENT"},"status":429}"#));

    // Two bodies of 700 KiB at once: the second one does not fit.
    let size = 700 * 1024;
    let body = valid_body(size);
    let mut first = Client::connect(bin.addr).await;
    first.send(&head(size as u64, "")).await;
    first.send(&body[..1000]).await;
    metric_until(admin, "esgate_buffered_body_bytes", |v| v == size as u64).await;
    let mut second = Client::connect(bin.addr).await;
    let mut req = head(size as u64, "");
    req.extend_from_slice(&body);
    let refused = second.exchange("PUT", &req).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.json()["error"]["bytes_wanted"], 2 * size);
    first.send(&body[1000..]).await;
    assert_eq!(first.response("PUT").await.status(), 200);
    assert_eq!(puts(&up), 1);
    assert_eq!(metric(admin, "esgate_circuit_breaker_trips_total").await, 2);
    metric_until(admin, "esgate_buffered_body_bytes", |v| v == 0).await;
}

/// A gzip stream of `chunks` MiB of spaces, made without compressing it all: one MiB is
/// compressed once with a sync flush (blocks of back-references to the byte before) and
/// repeated, then a final empty block and the trailer.
fn gzip_bomb(chunks: usize) -> Vec<u8> {
    use flate2::{Compress, Compression, Crc, FlushCompress};
    let mib = vec![b' '; MIB as usize];
    let mut deflate = Compress::new(Compression::best(), false);
    let mut block = Vec::with_capacity(64 * 1024);
    deflate
        .compress_vec(&mib, &mut block, FlushCompress::Sync)
        .expect("compress");
    assert_eq!(deflate.total_in(), MIB, "one call takes the whole MiB");
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut crc = Crc::new();
    for _ in 0..chunks {
        out.extend_from_slice(&block);
        crc.update(&mib);
    }
    // A final fixed-Huffman block with no data: BFINAL=1, BTYPE=01, end-of-block.
    out.extend_from_slice(&[0x03, 0x00]);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&((chunks as u64 * MIB) as u32).to_le_bytes());
    out
}

#[test]
fn the_bomb_is_valid_gzip() {
    use std::io::Read;
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&gzip_bomb(3)[..])
        .read_to_end(&mut plain)
        .expect("decodes");
    assert_eq!(plain.len() as u64, 3 * MIB);
    assert!(plain.iter().all(|b| *b == b' '));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_stays_within_the_budget() {
    let up = Upstream::ok().await;
    // The defaults: 100mb per body, 48mb over all bodies.
    let bin = start(&up, &[]);
    warm_up(&bin).await;
    let pid = bin.child.id();
    let (before, hwm_before) = memory(pid);
    let bomb = gzip_bomb(90);
    assert!(bomb.len() < 200 * 1024, "{} bytes", bomb.len());
    let mut client = Client::connect(bin.addr).await;
    let mut req = head(bomb.len() as u64, "Content-Encoding: gzip\r\n");
    req.extend_from_slice(&bomb);
    let answer = client.exchange("PUT", &req).await;
    let (after, hwm) = memory(pid);
    eprintln!(
        "gzip bomb ({} bytes, 90 MiB decoded): status {}, RSS before {} KiB (HWM {} KiB), HWM {} KiB, RSS after {} KiB",
        bomb.len(),
        answer.status(),
        before / 1024,
        hwm_before / 1024,
        hwm / 1024,
        after / 1024
    );
    assert!(matches!(answer.status(), 413 | 429), "{}", answer.status());
    assert!(hwm < 96 * MIB, "VmHWM {} KiB", hwm / 1024);
    assert_eq!(puts(&up), 1, "only the warm-up call");
    let admin = bin.admin.expect("admin");
    assert_eq!(metric(admin, "esgate_buffered_body_bytes").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_still_writing_reads_the_early_413() {
    let up = Upstream::ok().await;
    let bin = start(&up, &["--max-error-body-size=1MiB"]);
    let size = 8 * MIB as usize;
    let tcp = within("connect", TcpStream::connect(bin.addr)).await.expect("connect");
    let (read, mut write) = tcp.into_split();
    // The writer sends the whole 8 MiB body while the answer comes: esgate answers 413 from
    // Content-Length, then reads and drops the rest instead of resetting the connection.
    let writer = tokio::spawn(async move {
        write.write_all(&head(size as u64, "")).await?;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..size / chunk.len() {
            write.write_all(&chunk).await?;
        }
        write.flush().await?;
        Ok::<_, std::io::Error>(write)
    });
    let mut reader = Reader::new(read);
    let answer = within("the 413", reader.response("PUT"))
        .await
        .expect("the 413, not a reset");
    assert_eq!(answer.status(), 413);
    assert_eq!(answer.json()["error"]["type"], "esgate_content_too_long_exception");
    let mut write = within("the writer", writer)
        .await
        .expect("writer task")
        .expect("the whole body written without a reset");
    // The body was drained to its end: the connection is still good for another request.
    let body = valid_body(64);
    let mut req = head(body.len() as u64, "");
    req.extend_from_slice(&body);
    write.write_all(&req).await.expect("a second request");
    let next = within("the second answer", reader.response("PUT"))
        .await
        .expect("response");
    assert_eq!(next.status(), 200);
    assert_eq!(puts(&up), 1);
}
