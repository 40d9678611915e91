//! esgate answers `PUT /_connector/<id>/_error` as the node's own Elasticsearch version would:
//! it learns each node's version by itself (`GET /`, or the compatibility check), follows
//! upgrades without a restart, shows what it learned on `/metrics`, and forwards what the
//! candidate dialects do not all answer alike.
//!
//! Every test runs the real binary in front of a small loopback node written here, which answers
//! `GET /` with the version it is told, as Elasticsearch does, and records every request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use esgate::elasticsearch::{Knowledge, Version};
use esgate_test_support::{request, Binary, Client, Message, Reader, LIMIT};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// What the node answers, changeable while it runs.
#[derive(Clone, Debug)]
struct NodeState {
    version: String,
    /// `Some(header)`: every request needs exactly this `Authorization`, else 401, as a secured
    /// cluster's header validator answers before any other check.
    secured: Option<String>,
    /// The credentials hold the `monitor` privilege: without it `GET /` is 403 (the
    /// compatibility check, which comes before authorization, still answers).
    monitor: bool,
}

/// A loopback stand-in for one Elasticsearch node: `GET /` and its compatibility check, `HEAD /`,
/// and `{}` for anything else. Records every request.
struct Node {
    addr: SocketAddr,
    state: Arc<Mutex<NodeState>>,
    seen: Arc<Mutex<Vec<Message>>>,
}

impl Node {
    async fn start(version: &str, secured: Option<&str>) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve(listener, version, secured)
    }

    fn serve(listener: TcpListener, version: &str, secured: Option<&str>) -> Node {
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(NodeState {
            version: version.to_owned(),
            secured: secured.map(str::to_owned),
            monitor: true,
        }));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (st, sn) = (state.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (state, seen) = (st.clone(), sn.clone());
                tokio::spawn(async move {
                    let mut reader = Reader::new(tcp);
                    while let Ok(Some(msg)) = reader.request().await {
                        let current = state.lock().expect("state").clone();
                        let answer = answer(&msg, &current);
                        seen.lock().expect("seen").push(msg);
                        if reader.get_mut().write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Node { addr, state, seen }
    }

    fn without_monitor(self) -> Node {
        self.state.lock().expect("state").monitor = false;
        self
    }

    fn set_version(&self, version: &str) {
        self.state.lock().expect("state").version = version.to_owned();
    }

    fn seen(&self) -> Vec<Message> {
        self.seen.lock().expect("seen").clone()
    }

    fn upstream_flag(&self) -> String {
        format!("--upstream=http://{}", self.addr)
    }
}

fn response(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\nx-elastic-product: Elasticsearch\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn answer(msg: &Message, state: &NodeState) -> Vec<u8> {
    let major: u8 = state
        .version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(9);
    let get_root = msg.start_line.starts_with("GET / ");
    if msg.start_line.starts_with("HEAD / ") {
        return b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec();
    }
    if let Some(wanted) = &state.secured {
        if msg.header("authorization") != Some(wanted.as_str()) {
            let body = r#"{"error":{"root_cause":[{"type":"security_exception","reason":"missing authentication credentials for REST request [/]"}],"type":"security_exception","reason":"missing authentication credentials for REST request [/]"},"status":401}"#;
            return response(401, body);
        }
    }
    if get_root && msg.header("accept").is_some_and(|a| a.contains("compatible-with=99")) {
        // The compatibility check runs once the request is authenticated, before authorization.
        let reason = format!(
            "Accept version must be either version {major} or {}, but found 99. Accept=application/vnd.elasticsearch+json;compatible-with=99",
            major - 1
        );
        let body = serde_json::json!({
            "error": {
                "root_cause": [{"type": "media_type_header_exception", "reason": "Invalid media-type value on headers [Accept]"}],
                "type": "media_type_header_exception",
                "reason": "Invalid media-type value on headers [Accept]",
                "caused_by": {"type": "status_exception", "reason": reason}
            },
            "status": 400
        });
        return response(400, &body.to_string());
    }
    if get_root && !state.monitor {
        let body = r#"{"error":{"root_cause":[{"type":"security_exception","reason":"action [cluster:monitor/main] is unauthorized for user [esgate_probe]"}],"type":"security_exception","reason":"action [cluster:monitor/main] is unauthorized for user [esgate_probe]"},"status":403}"#;
        return response(403, body);
    }
    if get_root {
        let body = serde_json::json!({
            "name": "node-1",
            "cluster_name": "test",
            "cluster_uuid": "dGVzdC1jbHVzdGVyLTAx",
            "version": {
                "number": state.version,
                "build_flavor": "default",
                "build_type": "docker",
                "lucene_version": "10.3.1",
                "minimum_wire_compatibility_version": "8.19.0",
                "minimum_index_compatibility_version": "8.0.0"
            },
            "tagline": "You Know, for Search"
        });
        return response(200, &body.to_string());
    }
    response(200, "{}")
}

/// The `dialect` label esgate shows for `knowledge`.
fn dialect(knowledge: Knowledge) -> String {
    match knowledge {
        Knowledge::Dialects(set) => set.to_string(),
        Knowledge::Unmodelled(_) => "unmodelled".to_owned(),
    }
}

fn of_version(version: &str) -> String {
    dialect(Knowledge::for_version(Version::parse(version).expect("version")))
}

fn info_line(node: &Node, version: &str, dialect: &str) -> String {
    format!(
        "esgate_upstream_node_info{{node=\"{}\",version=\"{version}\",dialect=\"{dialect}\"}} 1",
        node.addr
    )
}

async fn metrics(bin: &Binary) -> String {
    let mut client = Client::connect(bin.admin.expect("an admin listener")).await;
    let page = client.exchange("GET", &request("GET", "/metrics", &[], b"")).await;
    assert_eq!(page.status(), 200);
    String::from_utf8_lossy(&page.body).into_owned()
}

/// Polls `/metrics` until it has `line`, failing after [`LIMIT`].
async fn wait_metrics(bin: &Binary, line: &str) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let page = metrics(bin).await;
        if page.lines().any(|l| l == line) {
            return page;
        }
        assert!(Instant::now() < deadline, "no {line:?} on /metrics:\n{page}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn admin_flag() -> &'static str {
    "--admin-listen=127.0.0.1:0"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_version_is_learned_at_start_up() {
    let node = Node::start("9.2.1", None).await;
    let bin = Binary::start(&[&node.upstream_flag(), admin_flag()], &[]);
    assert_eq!(of_version("9.2.1"), "9-c-2.17");
    wait_metrics(&bin, &info_line(&node, "9.2.1", "9-c-2.17")).await;
    let probe = node
        .seen()
        .into_iter()
        .find(|m| m.start_line.starts_with("GET / "))
        .expect("a GET /");
    assert!(probe
        .header("user-agent")
        .is_some_and(|ua| ua.contains("version probe")));
    assert_eq!(probe.header("authorization"), None, "no credentials configured");
    let line = learned_line(&bin);
    assert!(line.contains("9.2.1") && line.contains("9-c-2.17"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_version_is_learned_without_an_admin_listener() {
    // No admin listener: the version probes run all the same (seen by the node, and in the log).
    let node = Node::start("9.2.1", None).await;
    let bin = Binary::start(&[&node.upstream_flag()], &[]);
    let line = learned_line(&bin);
    assert!(line.contains("9.2.1"), "{line}");
    assert!(node.seen().iter().any(|m| m.start_line.starts_with("GET / ")));
}

/// A secured node and esgate without credentials, once esgate's version probe has got as far as
/// the compatibility check (which the node refuses with 401, as a secured cluster does).
async fn secured_without_credentials() -> (Node, Binary) {
    let node = Node::start("9.2.1", Some("Basic c29tZW9uZTplbHNl")).await;
    let bin = Binary::start(&[&node.upstream_flag(), admin_flag()], &[]);
    let deadline = Instant::now() + LIMIT;
    while !node
        .seen()
        .iter()
        .any(|m| m.header("accept").is_some_and(|a| a.contains("compatible-with=99")))
    {
        assert!(Instant::now() < deadline, "no compatibility check within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (node, bin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secured_node_without_credentials_leaves_every_dialect_possible() {
    // A secured cluster authenticates before its compatibility check: without credentials
    // nothing is learned, and every modelled dialect stays a candidate.
    let (node, bin) = secured_without_credentials().await;
    let page = metrics(&bin).await;
    let unknown = info_line(&node, "unknown", &dialect(Knowledge::UNKNOWN));
    assert!(page.contains(&unknown), "{unknown} not in\n{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_without_the_monitor_privilege_still_tell_the_major() {
    let basic = format!("Basic {}", base64_encode(b"esgate_probe:pw"));
    let node = Node::start("9.2.1", Some(&basic)).await.without_monitor();
    let bin = Binary::start(
        &[&node.upstream_flag(), admin_flag(), "--upstream-username=esgate_probe"],
        &[("ESGATE_UPSTREAM_PASSWORD", "pw")],
    );
    let nine = dialect(Knowledge::for_major(9));
    assert!(nine.split(',').all(|d| d.starts_with("9-")), "{nine}");
    wait_metrics(&bin, &info_line(&node, "9.x", &nine)).await;
    let compat = node
        .seen()
        .into_iter()
        .find(|m| m.header("accept").is_some_and(|a| a.contains("compatible-with=99")))
        .expect("the compatibility check");
    assert!(compat.start_line.starts_with("GET / "), "{}", compat.start_line);
    assert_eq!(compat.header("authorization"), Some(basic.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_is_picked_up_without_a_restart() {
    let node = Node::start("9.4.2", None).await;
    let bin = Binary::start(
        &[&node.upstream_flag(), admin_flag(), "--version-check-interval=200ms"],
        &[],
    );
    wait_metrics(&bin, &info_line(&node, "9.4.2", &of_version("9.4.2"))).await;
    node.set_version("9.5.0");
    wait_metrics(&bin, &info_line(&node, "9.5.0", &of_version("9.5.0"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_version_is_used_and_nothing_is_asked() {
    let node = Node::start("9.2.1", None).await;
    let bin = Binary::start(
        &[
            &node.upstream_flag(),
            admin_flag(),
            "--es-version=8.18.0",
            "--health-check-interval=50ms",
            "--version-check-interval=50ms",
        ],
        &[],
    );
    let page = wait_metrics(&bin, &info_line(&node, "8.18.0", &of_version("8.18.0"))).await;
    assert!(page.contains("esgate_upstream_node_info{"), "{page}");
    // Several health probes later, still no GET /.
    let deadline = Instant::now() + LIMIT;
    while node
        .seen()
        .iter()
        .filter(|m| m.start_line.starts_with("HEAD / "))
        .count()
        < 4
    {
        assert!(Instant::now() < deadline, "no health probes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gets: Vec<String> = node
        .seen()
        .into_iter()
        .map(|m| m.start_line)
        .filter(|l| l.starts_with("GET "))
        .collect();
    assert!(gets.is_empty(), "{gets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_comes_up_later_is_learned_once_it_answers() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    // No periodic check: only the start-up probe (which finds nothing) and the node's coming up.
    let bin = Binary::start(
        &[
            &format!("--upstream=http://{addr}"),
            admin_flag(),
            "--version-check-interval=0",
        ],
        &[],
    );
    let unknown = format!(
        "esgate_upstream_node_info{{node=\"{addr}\",version=\"unknown\",dialect=\"{}\"}} 1",
        dialect(Knowledge::UNKNOWN)
    );
    wait_metrics(&bin, &unknown).await;
    let node = Node::serve(TcpListener::bind(addr).await.expect("rebind"), "9.5.0", None);
    // A request that goes through: the node answers, so its version is asked.
    let mut client = Client::connect(bin.addr).await;
    let deadline = Instant::now() + LIMIT;
    while client
        .exchange("GET", &request("GET", "/idx/_count", &[], b""))
        .await
        .status()
        != 200
    {
        assert!(Instant::now() < deadline, "the node never answered through esgate");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_metrics(&bin, &info_line(&node, "9.5.0", &of_version("9.5.0"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esgate_sends_its_own_credentials_and_never_logs_them() {
    let password = "pw-Zq7-never-in-logs";
    let basic = format!("Basic {}", base64_encode(format!("esgate_probe:{password}").as_bytes()));
    let node = Node::start("9.2.1", Some(&basic)).await;
    let bin = Binary::start(
        &[
            &node.upstream_flag(),
            admin_flag(),
            "--upstream-username=esgate_probe",
            "--health-check-interval=50ms",
            "--log-level=trace",
        ],
        &[("ESGATE_UPSTREAM_PASSWORD", password)],
    );
    wait_metrics(&bin, &info_line(&node, "9.2.1", &of_version("9.2.1"))).await;
    let seen = node.seen();
    let get = seen
        .iter()
        .find(|m| {
            m.start_line.starts_with("GET / ")
                && m.header("accept") != Some("application/vnd.elasticsearch+json;compatible-with=99")
        })
        .expect("GET /");
    assert_eq!(get.header("authorization"), Some(basic.as_str()));
    let deadline = Instant::now() + LIMIT;
    while !node.seen().iter().any(|m| m.start_line.starts_with("HEAD / ")) {
        assert!(Instant::now() < deadline, "no health probe");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let head = node
        .seen()
        .into_iter()
        .find(|m| m.start_line.starts_with("HEAD / "))
        .expect("HEAD /");
    assert_eq!(head.header("authorization"), Some(basic.as_str()));

    bin.terminate();
    let mut log = bin.startup.join("\n");
    let deadline = Instant::now() + LIMIT;
    loop {
        match bin.log.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                log.push('\n');
                log.push_str(&line);
                if line.contains("esgate stopped") {
                    break;
                }
            }
            Err(_) => assert!(Instant::now() < deadline, "esgate did not stop"),
        }
    }
    let encoded = basic.trim_start_matches("Basic ");
    assert!(!log.contains(password), "the password is in the log:\n{log}");
    assert!(!log.contains(encoded), "the Basic credentials are in the log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_is_sent_as_such() {
    let key = "a2V5LWlkOnNlY3JldC1rZXktdmFsdWU=";
    let node = Node::start("8.18.0", Some(&format!("ApiKey {key}"))).await;
    let bin = Binary::start(
        &[&node.upstream_flag(), admin_flag()],
        &[("ESGATE_UPSTREAM_API_KEY", key)],
    );
    wait_metrics(&bin, &info_line(&node, "8.18.0", &of_version("8.18.0"))).await;
    assert!(!bin.startup.join("\n").contains(key));
}

#[test]
fn check_config_never_shows_the_credentials() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_esgate"))
        .args([
            "--check-config",
            "--upstream-username=esgate_probe",
            "--es-version=9.2.1",
        ])
        .env("ESGATE_UPSTREAM_PASSWORD", "pw-Zq7-never-shown")
        .env_remove("ESGATE_UPSTREAM_API_KEY")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("esgate_probe"), "{text}");
    assert!(text.contains("[redacted]"), "{text}");
    assert!(!text.contains("pw-Zq7-never-shown"), "{text}");
    let both = std::process::Command::new(env!("CARGO_BIN_EXE_esgate"))
        .args(["--check-config", "--upstream-username=u", "--upstream-api-key=k"])
        .env("ESGATE_UPSTREAM_PASSWORD", "p")
        .output()
        .expect("run");
    assert_eq!(both.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&both.stderr).contains("upstream.api_key"));
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_esgate"))
        .args(["--check-config", "--es-version=ninety"])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("connector_error.es_version"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_development_upstream_reports_its_version() {
    let bin = Binary::start(&["--dev", admin_flag(), "--dev-version=9.2.1"], &[]);
    let mut client = Client::connect(bin.addr).await;
    let root = client.exchange("GET", &request("GET", "/", &[], b"")).await;
    assert_eq!(root.status(), 200);
    assert_eq!(root.header("x-elastic-product"), Some("Elasticsearch"));
    assert_eq!(root.json()["version"]["number"], "9.2.1");
    assert_eq!(root.json()["tagline"], "You Know, for Search");
    let head = client.exchange("HEAD", &request("HEAD", "/", &[], b"")).await;
    assert_eq!(head.status(), 200);
    let page = metrics(&bin).await;
    let deadline = Instant::now() + LIMIT;
    let mut page = page;
    while !page.contains("version=\"9.2.1\"") {
        assert!(
            Instant::now() < deadline,
            "the dev node's version was not learned:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
        page = metrics(&bin).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_can_pin_and_unpin_the_version() {
    let node = Node::start("9.2.1", None).await;
    let dir = std::env::temp_dir().join(format!("esgate-versions-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("esgate.toml");
    let nodes = format!("[upstream]\nnodes = [\"http://{}\"]\n", node.addr);
    std::fs::write(&file, &nodes).expect("write");
    let config = format!("--config={}", file.display());
    let bin = Binary::start(&[&config, admin_flag(), "--reload-interval=0"], &[]);
    wait_metrics(&bin, &info_line(&node, "9.2.1", &of_version("9.2.1"))).await;

    std::fs::write(&file, format!("{nodes}[connector_error]\nes_version = \"8.18.0\"\n")).expect("write");
    bin.signal("HUP");
    wait_metrics(&bin, &info_line(&node, "8.18.0", &of_version("8.18.0"))).await;

    // Unpinned again: the node is asked anew.
    std::fs::write(&file, &nodes).expect("write");
    bin.signal("HUP");
    wait_metrics(&bin, &info_line(&node, "9.2.1", &of_version("9.2.1"))).await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The log line saying a node's version was learned (it may come before the start-up line).
fn learned_line(bin: &Binary) -> String {
    const TEXT: &str = "upstream node's Elasticsearch version learned";
    match bin.startup.iter().find(|l| l.contains(TEXT)) {
        Some(line) => line.clone(),
        None => bin.wait_log(TEXT),
    }
}

// ----- answers per dialect

const ROUTE: &str = "/_connector/c1/_error";

/// Sends `PUT /_connector/c1/_error` with these headers (JSON by default) and body.
async fn put_error(bin: &Binary, headers: &[(&str, &str)], body: &[u8]) -> Message {
    let json = [("content-type", "application/json")];
    let headers = if headers.is_empty() { &json[..] } else { headers };
    let mut client = Client::connect(bin.addr).await;
    client.exchange("PUT", &request("PUT", ROUTE, headers, body)).await
}

/// The bodies of the `PUT`s the node received.
fn puts_seen(node: &Node) -> Vec<Vec<u8>> {
    node.seen()
        .into_iter()
        .filter(|m| m.start_line.starts_with("PUT "))
        .map(|m| m.body)
        .collect()
}

/// Asserts that `answer` is esgate's own 400 and that its reason holds `text`.
fn local_400(node: &Node, answer: &Message, text: &str) {
    let body = String::from_utf8_lossy(&answer.body);
    assert_eq!(answer.status(), 400, "{body}");
    assert!(body.contains(text), "{text:?} not in {body}");
    assert!(puts_seen(node).is_empty(), "the node received a call esgate answered");
}

/// Starts esgate in front of a node of `version` and waits until the version is learned.
async fn learned(version: &str, args: &[&str]) -> (Node, Binary) {
    let node = Node::start(version, None).await;
    let upstream = node.upstream_flag();
    let mut all = vec![upstream.as_str(), admin_flag()];
    all.extend_from_slice(args);
    let bin = Binary::start(&all, &[]);
    wait_metrics(&bin, &info_line(&node, version, &of_version(version))).await;
    (node, bin)
}

const VND7: &str = "application/vnd.elasticsearch+json; compatible-with=7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compatible_with_7_is_forwarded_to_an_8x_node_and_refused_for_a_9x_one() {
    let seven = [("accept", VND7), ("content-type", VND7)];
    let (node, bin) = learned("8.18.0", &[]).await;
    let answer = put_error(&bin, &seven, br#"{"error":"disk full"}"#).await;
    assert_eq!(answer.status(), 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(puts_seen(&node), [br#"{"error":"disk full"}"#.to_vec()]);

    let (node, bin) = learned("9.2.1", &[]).await;
    let answer = put_error(&bin, &seven, br#"{"error":"disk full"}"#).await;
    local_400(
        &node,
        &answer,
        "Accept version must be either version 9 or 8, but found 7",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_surrogate_is_forwarded_to_9_2_and_refused_by_9_5() {
    let body = b"{\"error\":\"a\xED\xA0\x80b\"}";
    let (node, bin) = learned("9.2.1", &[]).await;
    let answer = put_error(&bin, &[], body).await;
    assert_eq!(answer.status(), 200);
    // Forwarded as Elasticsearch reads it: a lone surrogate, written as its escape.
    assert_eq!(puts_seen(&node), [br#"{"error":"a\uD800b"}"#.to_vec()]);

    let (node, bin) = learned("9.5.0", &[]).await;
    let answer = put_error(&bin, &[], body).await;
    local_400(
        &node,
        &answer,
        "[1:15] Invalid UTF-8: Illegal surrogate character 0xd800",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jackson_and_wrapping_texts_are_the_nodes_own() {
    // P13: jackson-core 2.17 locates an unrecognized token where reading stopped, 2.21 at its start.
    let (node, bin) = learned("9.2.1", &[]).await;
    local_400(
        &node,
        &put_error(&bin, &[], b"not json").await,
        "[1:5] Unrecognized token 'not'",
    );
    // P17: before elastic/elasticsearch#123439 an end of input in nextFieldName keeps Jackson's text.
    let open = br#"{"error":"x""#;
    let answer = put_error(&bin, &[], open).await;
    local_400(
        &node,
        &answer,
        r#""type":"x_content_e_o_f_exception","reason":"[1:13] Unexpected end of file""#,
    );

    let (node, bin) = learned("9.5.0", &[]).await;
    local_400(
        &node,
        &put_error(&bin, &[], b"not json").await,
        "[1:1] Unrecognized token 'not'",
    );

    let (node, bin) = learned("8.18.0", &[]).await;
    let answer = put_error(&bin, &[], open).await;
    local_400(
        &node,
        &answer,
        r#""type":"x_content_parse_exception","reason":"[1:13] Unexpected end-of-input: expected close marker for Object"#,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_only_the_major_known_what_depends_on_the_version_is_forwarded() {
    let basic = format!("Basic {}", base64_encode(b"esgate_probe:pw"));
    let node = Node::start("9.2.1", Some(&basic)).await.without_monitor();
    let bin = Binary::start(
        &[
            &node.upstream_flag(),
            admin_flag(),
            "--upstream-username=esgate_probe",
            "--audit-stdout",
        ],
        &[("ESGATE_UPSTREAM_PASSWORD", "pw")],
    );
    wait_metrics(&bin, &info_line(&node, "9.x", &dialect(Knowledge::for_major(9)))).await;
    let auth = [("content-type", "application/json"), ("authorization", basic.as_str())];

    // P13 differs between 9.x releases: the node answers it.
    let answer = put_error(&bin, &auth, b"not json").await;
    assert_eq!(answer.status(), 200);
    assert_eq!(puts_seen(&node), [b"not json".to_vec()]);
    let line = bin.next_stdout();
    assert!(line.contains(r#""verdict":"unchecked""#), "{line}");
    assert!(
        line.contains("the answer depends on the Elasticsearch version"),
        "{line}"
    );

    // Every 9.x answers these alike: esgate does.
    for (body, text) in [
        (
            &br#"{"error":1}"#[..],
            "error doesn't support values of type: VALUE_NUMBER",
        ),
        (b"{}", "Required [error]"),
    ] {
        let answer = put_error(&bin, &auth, body).await;
        assert_eq!(answer.status(), 400, "{}", String::from_utf8_lossy(&answer.body));
        assert!(String::from_utf8_lossy(&answer.body).contains(text));
        let line = bin.next_stdout();
        assert!(line.contains(r#""verdict":"rejected""#), "{line}");
        assert!(
            line.contains(&format!(r#""es_dialect":"{}""#, dialect(Knowledge::for_major(9)))),
            "{line}"
        );
    }
    let seven = [
        ("accept", VND7),
        ("content-type", VND7),
        ("authorization", basic.as_str()),
    ];
    let answer = put_error(&bin, &seven, br#"{"error":"x"}"#).await;
    assert_eq!(answer.status(), 400);
    assert_eq!(
        puts_seen(&node).len(),
        1,
        "only the version-dependent call reached the node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nothing_known_only_what_every_dialect_answers_alike_is_answered() {
    let (node, bin) = secured_without_credentials().await;
    let answer = put_error(&bin, &[], br#"{"error":1}"#).await;
    assert_eq!(answer.status(), 400);
    // An 8.x node accepts compatible-with=7, a 9.x one refuses it: the node decides.
    let seven = [("accept", VND7), ("content-type", VND7)];
    let answer = put_error(&bin, &seven, br#"{"error":"x"}"#).await;
    assert_eq!(answer.status(), 401, "the node's own answer");
    assert_eq!(puts_seen(&node).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_changes_the_answers_without_a_restart() {
    let (node, bin) = learned("9.4.2", &["--version-check-interval=200ms"]).await;
    local_400(
        &node,
        &put_error(&bin, &[], b"not json").await,
        "[1:5] Unrecognized token 'not'",
    );
    node.set_version("9.5.0");
    wait_metrics(&bin, &info_line(&node, "9.5.0", &of_version("9.5.0"))).await;
    local_400(
        &node,
        &put_error(&bin, &[], b"not json").await,
        "[1:1] Unrecognized token 'not'",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_version_wins_over_what_the_node_says() {
    let node = Node::start("9.5.0", None).await;
    let bin = Binary::start(&[&node.upstream_flag(), "--es-version=9.2.0"], &[]);
    local_400(
        &node,
        &put_error(&bin, &[], b"not json").await,
        "[1:5] Unrecognized token 'not'",
    );
    let answer = put_error(&bin, &[], b"{\"error\":\"a\xED\xA0\x80b\"}").await;
    assert_eq!(answer.status(), 200);
    assert_eq!(puts_seen(&node).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_front_of_an_unmodelled_version_nothing_is_checked() {
    let node = Node::start("8.15.3", None).await;
    let bin = Binary::start(&[&node.upstream_flag(), admin_flag(), "--audit-stdout"], &[]);
    wait_metrics(&bin, &info_line(&node, "8.15.3", "unmodelled")).await;
    let answer = put_error(&bin, &[], br#"{"error":1}"#).await;
    assert_eq!(answer.status(), 200, "the node's own answer");
    assert_eq!(puts_seen(&node), [br#"{"error":1}"#.to_vec()]);
    let line = bin.next_stdout();
    assert!(line.contains(r#""verdict":"unchecked""#), "{line}");
    assert!(
        line.contains("Elasticsearch 8.15.3"),
        "the reason names the version: {line}"
    );
}
