//! The audit trail, end to end: the real binary, a recording upstream, and the lines it writes to
//! stdout, a file and a recording Elasticsearch `_bulk` endpoint.

use std::net::{SocketAddr, TcpListener as StdListener};

use esgate_test_support::{self as common, request, Binary, Client, Message, Reply, Upstream};
use serde_json::Value;

const VALID: &[u8] = br#"{"error":"Connection refused"}"#;
const INVALID: &[u8] = br#"{"error":"x","status":1}"#;

/// The next audit line on stdout, parsed.
fn next_event(bin: &Binary) -> Value {
    let line = bin.next_stdout();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {line}"))
}

fn put_error(id: &str, body: &[u8], headers: &[(&str, &str)]) -> Vec<u8> {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request("PUT", &format!("/_connector/{id}/_error"), &all, body)
}

/// Fields every event has.
fn assert_common(e: &Value, status: u16) {
    assert!(
        e["@timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
        "{e}"
    );
    assert_eq!(e["http"]["response"]["status_code"], status, "{e}");
    assert_eq!(e["client"]["ip"], "127.0.0.1", "{e}");
    assert!(e["event"]["duration"].as_u64().is_some(), "{e}");
    assert_eq!(e["url"]["path"].as_str().map(|p| p.starts_with('/')), Some(true), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_rejected_and_unchecked_calls_each_get_one_line() {
    let mut up = Upstream::start(|_| Reply::ok(r#"{"result":"updated"}"#)).await;
    let bin = Binary::start(&[&format!("--upstream={}", up.url()), "--audit-stdout"], &[]);
    let mut client = Client::connect(bin.addr).await;
    let basic = "Basic ZWxhc3RpYzpjaGFuZ2VtZQ=="; // elastic:changeme
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    // Forwarded.
    let answer = client
        .exchange(
            "PUT",
            &put_error(
                "conn-1",
                VALID,
                &[
                    ("Authorization", basic),
                    ("X-Opaque-Id", "op-7"),
                    ("traceparent", trace),
                ],
            ),
        )
        .await;
    assert_eq!(answer.status(), 200);
    assert_eq!(up.next().await.msg.body, VALID);
    let e = next_event(&bin);
    assert_common(&e, 200);
    assert_eq!(e["event"]["action"], "update-connector-error");
    assert_eq!(e["event"]["outcome"], "success");
    assert_eq!(e["http"]["request"]["method"], "PUT");
    assert_eq!(e["url"]["path"], "/_connector/conn-1/_error");
    assert_eq!(e["user"]["name"], "elastic");
    assert_eq!(e["esgate"]["auth"]["scheme"], "basic");
    assert_eq!(e["http"]["request"]["id"], "op-7");
    assert_eq!(e["trace"]["id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(e["span"]["id"], "00f067aa0ba902b7");
    assert_eq!(e["esgate"]["verdict"], "forwarded");
    assert_eq!(e["esgate"]["connector"]["id"], "conn-1");
    assert_eq!(e["esgate"]["connector"]["error"], "Connection refused");
    assert_eq!(e["esgate"]["connector"]["error_truncated"], false);
    assert_eq!(e["esgate"]["upstream"]["node"], up.addr.to_string());
    assert!(e["esgate"]["upstream"]["duration"].as_u64().is_some());
    assert!(e.get("error").is_none(), "{e}");

    // Rejected locally: nothing reaches the upstream.
    let answer = client.exchange("PUT", &put_error("conn-1", INVALID, &[])).await;
    assert_eq!(answer.status(), 400);
    let e = next_event(&bin);
    assert_common(&e, 400);
    assert_eq!(e["event"]["outcome"], "failure");
    assert_eq!(e["esgate"]["verdict"], "rejected");
    assert_eq!(e["error"]["type"], answer.json()["error"]["type"]);
    assert_eq!(e["error"]["message"], answer.json()["error"]["reason"]);
    assert_eq!(e["error"]["code"], "400");
    assert!(e.get("user").is_none(), "{e}");
    assert!(e["esgate"].get("upstream").is_none(), "{e}");

    // Passed through unchecked (esgate cannot write a stack trace): forwarded unchanged.
    let target = "/_connector/conn-1/_error?error_trace=true";
    let answer = client
        .exchange(
            "PUT",
            &request("PUT", target, &[("Content-Type", "application/json")], INVALID),
        )
        .await;
    assert_eq!(answer.status(), 200);
    assert_eq!(up.next().await.msg.body, INVALID);
    let e = next_event(&bin);
    assert_common(&e, 200);
    assert_eq!(e["esgate"]["verdict"], "unchecked");
    assert!(
        e["esgate"]["unchecked_reason"]
            .as_str()
            .is_some_and(|r| r.contains("error_trace")),
        "{e}"
    );

    // Other routes are not audited (no access-log mode): the next line is the next call's.
    let answer = client
        .exchange("GET", &request("GET", "/_cluster/health", &[], b""))
        .await;
    assert_eq!(answer.status(), 200);
    client.exchange("PUT", &put_error("conn-2", VALID, &[])).await;
    assert_eq!(next_event(&bin)["esgate"]["connector"]["id"], "conn-2");
    assert_eq!(up.received(), 4, "three calls forwarded, and the GET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_mode_audits_every_request() {
    let up = Upstream::ok().await;
    let bin = Binary::start(
        &[
            &format!("--upstream={}", up.url()),
            "--audit-stdout",
            "--audit-all-requests",
        ],
        &[],
    );
    let mut client = Client::connect(bin.addr).await;
    client
        .exchange(
            "GET",
            &request("GET", "/idx/_search?q=a&size=1", &[("User-Agent", "t/1")], b""),
        )
        .await;
    let e = next_event(&bin);
    assert_common(&e, 200);
    assert_eq!(e["event"]["action"], "http-request");
    assert_eq!(e["esgate"]["verdict"], "passed_through");
    assert_eq!(e["url"]["path"], "/idx/_search");
    assert_eq!(e["url"]["query"], "q=a&size=1");
    assert_eq!(e["user_agent"]["original"], "t/1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_only_forwards_an_invalid_body_and_audits_would_reject() {
    let mut up = Upstream::start(|_| Reply::ok(r#"{"result":"noop"}"#)).await;
    let bin = Binary::start(
        &[&format!("--upstream={}", up.url()), "--audit-stdout", "--report-only"],
        &[],
    );
    let mut client = Client::connect(bin.addr).await;
    let answer = client.exchange("PUT", &put_error("c9", INVALID, &[])).await;
    assert_eq!(answer.status(), 200, "the upstream answers, not esgate");
    assert_eq!(answer.json()["result"], "noop");
    assert_eq!(up.next().await.msg.body, INVALID, "forwarded unchanged");
    let e = next_event(&bin);
    assert_eq!(e["esgate"]["verdict"], "would_reject");
    assert_eq!(e["error"]["type"], "x_content_parse_exception", "{e}");
    assert!(
        e["error"]["message"].as_str().is_some_and(|m| m.contains("status")),
        "{e}"
    );
    assert_eq!(e["http"]["response"]["status_code"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_the_audit_file_after_rotation() {
    let up = Upstream::ok().await;
    let dir = tempdir("sighup");
    let path = dir.join("audit.jsonl");
    let rotated = dir.join("audit.jsonl.1");
    let bin = Binary::start(
        &[
            &format!("--upstream={}", up.url()),
            &format!("--audit-file={}", path.display()),
        ],
        &[],
    );
    let mut client = Client::connect(bin.addr).await;
    client.exchange("PUT", &put_error("before", VALID, &[])).await;
    wait_for_lines(&path, 1);
    std::fs::rename(&path, &rotated).expect("rotate");
    bin.signal("HUP");
    bin.wait_log("audit file reopened");
    client.exchange("PUT", &put_error("after", VALID, &[])).await;
    let new = wait_for_lines(&path, 1);
    let old = wait_for_lines(&rotated, 1);
    assert!(new[0].contains(r#""id":"after""#), "{new:?}");
    assert!(old[0].contains(r#""id":"before""#), "{old:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_events_and_never_holds_a_request() {
    let up = Upstream::ok().await;
    // Nobody reads stdout: the audit thread blocks once the pipe is full, the queue of 4 fills.
    let bin = Binary::start_holding_stdout(
        &[
            &format!("--upstream={}", up.url()),
            "--audit-stdout",
            "--audit-queue-size=4",
            "--admin-listen=127.0.0.1:0",
        ],
        &[],
    );
    let mut client = Client::connect(bin.addr).await;
    let long = format!(r#"{{"error":"{}"}}"#, "e".repeat(900));
    for i in 0..300 {
        let answer = client
            .exchange("PUT", &put_error(&format!("c{i}"), long.as_bytes(), &[]))
            .await;
        assert_eq!(answer.status(), 200);
    }
    let metrics = scrape(bin.admin.expect("admin")).await;
    let dropped = sample(&metrics, r#"esgate_audit_events_dropped_total{sink="queue"}"#);
    let queued = sample(&metrics, r#"esgate_audit_events_total{sink="queue"}"#);
    assert!(dropped > 0.0, "{metrics}");
    assert_eq!(
        queued + dropped,
        300.0,
        "every event is either queued or dropped: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_output() {
    let up = Upstream::ok().await;
    let es = Upstream::start(|_| Reply::ok(r#"{"errors":false,"items":[]}"#)).await;
    let dir = tempdir("secrets");
    let file = dir.join("audit.jsonl");
    let bin = Binary::start(
        &[
            &format!("--upstream={}", up.url()),
            "--audit-stdout",
            &format!("--audit-file={}", file.display()),
            "--audit-all-requests",
            "--audit-redact-error-secrets",
            &format!("--audit-elasticsearch-url={}", es.url()),
            "--audit-elasticsearch-flush-interval=20ms",
            "--log-level=trace",
        ],
        &[("ESGATE_AUDIT_ELASTICSEARCH_API_KEY", "QVVESVRJRDpBVURJVFNFQ1JFVA==")],
    );
    // Each secret, and the encodings a client sends it in.
    let secrets = [
        "basicpassw0rd",
        "c29tZXVzZXI6YmFzaWNwYXNzdzByZA==", // someuser:basicpassw0rd
        "bearertok3n.abc",
        "apikeys3cret",
        "a2V5aWQ6YXBpa2V5czNjcmV0", // keyid:apikeys3cret
        "urlpassw0rd",
        "querys3cret",
        "cookies3cret",
        "proxys3cret",
        "dbpassw0rd",
        "QVVESVRJRDpBVURJVFNFQ1JFVA==", // the audit writer's own key
    ];
    let mut client = Client::connect(bin.addr).await;
    let requests: Vec<Vec<u8>> = vec![
        put_error(
            "s1",
            VALID,
            &[("Authorization", "Basic c29tZXVzZXI6YmFzaWNwYXNzdzByZA==")],
        ),
        put_error("s2", VALID, &[("Authorization", "Bearer bearertok3n.abc")]),
        put_error("s3", VALID, &[("Authorization", "ApiKey a2V5aWQ6YXBpa2V5czNjcmV0")]),
        put_error(
            "s4",
            INVALID,
            &[
                ("Cookie", "sid=cookies3cret"),
                ("Proxy-Authorization", "Basic proxys3cret"),
            ],
        ),
        put_error(
            "s5",
            br#"{"error":"cannot reach postgres://app:dbpassw0rd@db:5432/x"}"#,
            &[],
        ),
        request("GET", "http://u:urlpassw0rd@es.test/_search", &[], b""),
        request("GET", "/_search?api_key=querys3cret&q=1", &[], b""),
    ];
    for req in &requests {
        let method = if req.starts_with(b"PUT") { "PUT" } else { "GET" };
        client.exchange(method, req).await;
    }
    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut events = Vec::new();
    for _ in 0..requests.len() {
        let line = bin.next_stdout();
        events.push(serde_json::from_str::<Value>(&line).expect("json"));
        outputs.push(("stdout".into(), line));
    }
    // The users are named, without their secrets.
    assert_eq!(events[0]["user"]["name"], "someuser");
    assert!(events[1].get("user").is_none());
    assert_eq!(events[2]["user"]["name"], "keyid");
    assert!(events[4]["esgate"]["connector"]["error"]
        .as_str()
        .is_some_and(|t| t.contains("postgres://app:[REDACTED]@db")));

    bin.terminate();
    let bin_log: Vec<String> = {
        let mut lines = Vec::new();
        while let Ok(line) = bin.log.recv_timeout(common::LIMIT) {
            let done = line.contains("esgate stopped");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    };
    assert!(bin_log.iter().any(|l| l.contains("esgate stopped")), "{bin_log:?}");
    outputs.extend(bin_log.into_iter().map(|l| ("stderr".to_owned(), l)));
    let file_text = std::fs::read_to_string(&file).expect("audit file");
    assert_eq!(file_text.lines().count(), requests.len());
    outputs.push(("file".into(), file_text));
    let bulk: Vec<Message> = es_requests(&es);
    let bulk_events: usize = bulk
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).lines().count() / 2)
        .sum();
    assert_eq!(bulk_events, requests.len(), "every event reached the _bulk endpoint");
    for m in &bulk {
        assert_eq!(m.header("authorization"), Some("ApiKey QVVESVRJRDpBVURJVFNFQ1JFVA=="));
        outputs.push(("_bulk".into(), String::from_utf8_lossy(&m.body).into_owned()));
    }
    for (where_, text) in &outputs {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret:?} appears in {where_}: {text}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_elasticsearch_sink_buffers_while_down_then_delivers_and_counts_drops() {
    let up = Upstream::ok().await;
    // A port with nothing listening yet.
    let port = {
        let l = StdListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let es_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let bin = Binary::start(
        &[
            &format!("--upstream={}", up.url()),
            &format!("--audit-elasticsearch-url=http://{es_addr}"),
            "--audit-elasticsearch-batch-size=2",
            "--audit-elasticsearch-buffer=6",
            "--audit-elasticsearch-flush-interval=20ms",
            "--admin-listen=127.0.0.1:0",
        ],
        &[],
    );
    let admin = bin.admin.expect("admin");
    let mut client = Client::connect(bin.addr).await;
    // Traffic is unaffected: every call gets the upstream's answer.
    for i in 0..20 {
        let answer = client.exchange("PUT", &put_error(&format!("d{i}"), VALID, &[])).await;
        assert_eq!(answer.status(), 200);
    }
    let dropped = wait_for_metric(
        admin,
        r#"esgate_audit_events_dropped_total{sink="elasticsearch"}"#,
        14.0,
    )
    .await;
    assert_eq!(dropped, 14.0, "20 events, 6 buffered");

    // Elasticsearch comes up on that port: the buffered events arrive, in order.
    let es = Upstream::start_on(es_addr, |_| Reply::ok(r#"{"errors":false,"items":[]}"#)).await;
    let written = wait_for_metric(admin, r#"esgate_audit_events_total{sink="elasticsearch"}"#, 6.0).await;
    assert_eq!(written, 6.0);
    let ids: Vec<String> = es_requests(&es)
        .iter()
        .flat_map(|m| {
            String::from_utf8_lossy(&m.body)
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter_map(|v| v["esgate"]["connector"]["id"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(ids, ["d0", "d1", "d2", "d3", "d4", "d5"]);
    for m in es_requests(&es) {
        assert!(
            m.start_line.starts_with("POST /logs-esgate.audit-default/_bulk "),
            "{}",
            m.start_line
        );
    }
}

// ===== helpers =====

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("esgate-audit-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The lines of `path`, once it has at least `n` (polled, bounded by the test limit).
fn wait_for_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + common::LIMIT;
    loop {
        let lines: Vec<String> = std::fs::read_to_string(path)
            .map(|t| t.lines().map(str::to_owned).collect())
            .unwrap_or_default();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never had {n} lines",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Every request the recording Elasticsearch got so far.
fn es_requests(es: &Upstream) -> Vec<Message> {
    es.log().into_iter().map(|s| s.msg).collect()
}

async fn scrape(admin: SocketAddr) -> String {
    let mut client = Client::connect(admin).await;
    let page = client.exchange("GET", &request("GET", "/metrics", &[], b"")).await;
    String::from_utf8_lossy(&page.body).into_owned()
}

/// The value of one sample line (`name{labels} value`), 0 when absent.
fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Scrapes until `series` reaches `at_least` (bounded by the test limit); returns its value.
async fn wait_for_metric(admin: SocketAddr, series: &str, at_least: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + common::LIMIT;
    loop {
        let value = sample(&scrape(admin).await, series);
        if value >= at_least || tokio::time::Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_writes_sent_through_esgate_itself_are_not_audited() {
    // The audit sink points at esgate's own listener, in access-log mode: a loop unless esgate
    // recognizes its own writes.
    let up = Upstream::start(|msg| {
        if msg.start_line.contains("/_bulk") {
            Reply::ok(r#"{"errors":false,"items":[]}"#)
        } else {
            Reply::ok("{}")
        }
    })
    .await;
    let port = {
        let l = StdListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let bin = Binary::start(
        &[
            &format!("--listen=127.0.0.1:{port}"),
            &format!("--upstream={}", up.url()),
            "--audit-stdout",
            "--audit-all-requests",
            &format!("--audit-elasticsearch-url=http://127.0.0.1:{port}"),
            "--audit-elasticsearch-flush-interval=10ms",
        ],
        &[],
    );
    let mut client = Client::connect(bin.addr).await;
    client.exchange("GET", &request("GET", "/first", &[], b"")).await;
    assert_eq!(next_event(&bin)["url"]["path"], "/first");
    // The event went to _bulk through esgate and on to the upstream, marked as an audit write.
    let deadline = std::time::Instant::now() + common::LIMIT;
    let bulk = loop {
        if let Some(seen) = up.log().into_iter().find(|s| s.msg.start_line.contains("/_bulk")) {
            break seen.msg;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no _bulk request reached the upstream"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(bulk.header("x-esgate-audit-writer").is_some());
    assert!(String::from_utf8_lossy(&bulk.body).contains(r#""path":"/first""#));
    // The _bulk request itself got no event: the next line is the next client request's.
    client.exchange("GET", &request("GET", "/second", &[], b"")).await;
    assert_eq!(next_event(&bin)["url"]["path"], "/second");
}
