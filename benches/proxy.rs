//! Benchmarks of esgate's per-request work: the pure helpers on the hot path, and a whole
//! round trip through an in-process gateway to a loopback upstream.
//!
//! `cargo bench --bench proxy`; results and the machine they came from are in BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn typical_request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "localhost:9200"),
        (
            "user-agent",
            "elasticsearch-py/9.1.0 (Python/3.11.7; elastic-transport/9.1.0)",
        ),
        ("accept", "application/vnd.elasticsearch+json; compatible-with=9"),
        ("content-type", "application/vnd.elasticsearch+json; compatible-with=9"),
        (
            "authorization",
            "ApiKey VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==",
        ),
        ("x-elastic-client-meta", "es=9.1.0,py=3.11.7,t=9.1.0,ur=2.2.3"),
        ("content-length", "63"),
    ] {
        h.append(k, HeaderValue::from_static(v));
    }
    h
}

fn helpers(c: &mut Criterion) {
    let typical = typical_request_headers();
    c.bench_function("hop/strip_nothing_to_remove", |b| {
        b.iter_batched_ref(
            || typical.clone(),
            |h| esgate::hop::strip_hop_by_hop(black_box(h)),
            criterion::BatchSize::SmallInput,
        )
    });
    let mut with_hops = typical_request_headers();
    with_hops.append("connection", HeaderValue::from_static("keep-alive"));
    with_hops.append("keep-alive", HeaderValue::from_static("timeout=60"));
    c.bench_function("hop/strip_connection_and_keep_alive", |b| {
        b.iter_batched_ref(
            || with_hops.clone(),
            |h| esgate::hop::strip_hop_by_hop(black_box(h)),
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("es_error/bad_gateway_body", |b| {
        b.iter(|| {
            esgate::es_error::error_body(
                StatusCode::BAD_GATEWAY,
                esgate::es_error::BAD_GATEWAY_TYPE,
                black_box("no Elasticsearch node could be reached (127.0.0.1:9200: Connection refused (os error 111))"),
            )
        })
    });
}

/// A connector error body of about `len` bytes: a Java stack trace, escaped as clients send it.
fn stack_trace_body(len: usize) -> Vec<u8> {
    let mut text = String::from("org.postgresql.util.PSQLException: Connection to db:5432 refused.");
    let mut i = 0;
    while text.len() + 12 < len {
        text.push_str(&format!(
            "\\n\\tat org.postgresql.core.v3.ConnectionFactoryImpl.openConnectionImpl(ConnectionFactoryImpl.java:{i})"
        ));
        i += 1;
    }
    text.truncate(len - 12);
    format!("{{\"error\":\"{text}\"}}").into_bytes()
}

fn body_check(c: &mut Criterion) {
    use esgate::elasticsearch::{check_body, BodyVerdict};
    let small = br#"{"error":"connection refused: source database is unreachable"}"#;
    let trace = stack_trace_body(4096);
    let invalid = br#"{"error":{"code":"ECONNREFUSED","host":"db"}}"#;
    for (name, body) in [
        ("62B", &small[..]),
        ("4KiB_stack_trace", &trace[..]),
        ("invalid_object_value", &invalid[..]),
    ] {
        c.bench_function(&format!("check_and_canonicalize/{name}"), |b| {
            b.iter(
                || match check_body(black_box(body), esgate::elasticsearch::Dialect::NEWEST) {
                    BodyVerdict::Accept { literal } => BodyVerdict::canonical_body(&literal).len(),
                    BodyVerdict::Reject(e) => e.to_compact().len(),
                    BodyVerdict::Unchecked(_) => 0,
                },
            )
        });
    }
}

/// An upstream that answers every request with a fixed 445-byte JSON body, like `GET /`.
async fn fixed_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let body = format!("{{\"name\":\"bench\",\"padding\":\"{}\"}}", "x".repeat(445 - 30));
    let response = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-elastic-product: Elasticsearch\r\ncontent-length: {}\r\n\r\n{body}", body.len());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut filled = 0;
                loop {
                    match tcp.read(&mut buf[filled..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => filled += n,
                    }
                    // Requests without a body: each ends with an empty line.
                    while let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.copy_within(end + 4..filled, 0);
                        filled -= end + 4;
                        if tcp.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Reads one response with a Content-Length from `tcp` into `buf`.
async fn read_response(tcp: &mut TcpStream, buf: &mut Vec<u8>) {
    buf.clear();
    loop {
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("content-length");
            if buf.len() >= end + 4 + len {
                return;
            }
        }
    }
}

fn round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let upstream = rt.block_on(fixed_upstream());
    let args = ["esgate", "--listen=127.0.0.1:0", "--workers=1", "--log-level=off"];
    let (_, mut config) = esgate::Config::load_from(args).expect("config");
    config.upstream.nodes = vec![esgate::config::NodeUrl {
        host: "127.0.0.1".into(),
        port: upstream.port(),
        tls: false,
    }];
    let gateway = esgate::Gateway::start(config).expect("gateway");
    let addr = gateway.listen_addr();
    let (mut direct, mut proxied) = rt.block_on(async {
        (
            TcpStream::connect(upstream).await.expect("direct"),
            TcpStream::connect(addr).await.expect("proxied"),
        )
    });
    let request = b"GET / HTTP/1.1\r\nHost: localhost:9200\r\nAccept: application/json\r\n\r\n";
    let mut group = c.benchmark_group("round_trip");
    group.measurement_time(Duration::from_secs(5));
    let mut buf = Vec::with_capacity(4096);
    group.bench_function("get_direct", |b| {
        b.iter(|| {
            rt.block_on(async {
                direct.write_all(request).await.expect("write");
                read_response(&mut direct, &mut buf).await;
            })
        })
    });
    group.bench_function("get_through_esgate", |b| {
        b.iter(|| {
            rt.block_on(async {
                proxied.write_all(request).await.expect("write");
                read_response(&mut proxied, &mut buf).await;
            })
        })
    });
    group.finish();
    drop((direct, proxied));
    gateway.shutdown();
}

/// The audit thread's work per event, and the redaction of an error text.
fn audit(c: &mut Criterion) {
    use esgate::audit::{Event, TextPolicy};
    use esgate::connector_error::{Intercepted, Verdict};
    use esgate::redact::{caller, redact_secrets};
    let event = Event {
        timestamp: std::time::SystemTime::now(),
        method: http::Method::PUT,
        path: "/_connector/my-connector/_error".into(),
        query: None,
        client: "10.1.2.3:45678".parse().expect("addr"),
        caller: Some(caller(b"Basic ZWxhc3RpYzpjaGFuZ2VtZQ==")),
        user_agent: Some("elasticsearch-py/9.5.1 (Python/3.11.7; elastic-transport/9.2.0)".into()),
        opaque_id: Some("sync-job-42".into()),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        request_bytes: Some(71),
        status: 200,
        duration: std::time::Duration::from_micros(812),
        intercepted: Some(Intercepted {
            connector_id: "my-connector".into(),
            verdict: Verdict::Forwarded,
            error_text: Some("Connection refused by upstream host db-1:5432 after 3 tries".into()),
            error_length: "Connection refused by upstream host db-1:5432 after 3 tries".len(),
            knowledge: esgate::elasticsearch::Knowledge::UNKNOWN,
        }),
        upstream: Some((
            std::sync::Arc::from("es-node-1:9200"),
            std::time::Duration::from_micros(640),
        )),
        write: None,
    };
    let policy = TextPolicy {
        max_error_length: 1024,
        redact_error_secrets: true,
    };
    c.bench_function("audit/event_to_json", |b| b.iter(|| black_box(&event).to_json(policy)));
    let text = "sync failed: cannot reach postgres://app:s3cret@db-1:5432/x (password=hunter2); retrying in 30s";
    c.bench_function("audit/redact_secrets", |b| {
        b.iter(|| redact_secrets(black_box(text)).len())
    });
}

criterion_group!(benches, helpers, body_check, audit, round_trip);
criterion_main!(benches);
