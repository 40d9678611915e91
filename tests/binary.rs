//! The real `esgate` binary: configuration errors, the development upstream, and shutdown.

use std::process::Command;

use esgate_test_support::{self as common, request, within, Binary, Client, Reply, Upstream};

fn run_expecting_failure(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_esgate"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run esgate");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_bad_flag_value_stops_start_up_naming_the_key() {
    let (code, err) = run_expecting_failure(&["--listen", "not-an-address"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("server.listen") && err.contains("--listen"), "{err}");
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let (code, err) = run_expecting_failure(&[], &[("ESGATE_RESPONSE_TIMEOUT", "soon")]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("upstream.response_timeout") && err.contains("ESGATE_RESPONSE_TIMEOUT"),
        "{err}"
    );
}

#[test]
fn a_bad_file_value_and_an_unknown_key_are_named() {
    let dir = std::env::temp_dir().join(format!("esgate-binary-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[upstream]\nnodes = [\"ftp://es:9200\"]\n").expect("write");
    let (code, err) = run_expecting_failure(&["--config", &file.display().to_string()], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("upstream.nodes") && err.contains("bad.toml"), "{err}");
    std::fs::write(&file, "[server]\nlisten_adress = \"127.0.0.1:1\"\n").expect("write");
    let (code, err) = run_expecting_failure(&["--config", &file.display().to_string()], &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("server.listen_adress") && err.contains("unknown key"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_example_config_file_is_valid() {
    let out = Command::new(env!("CARGO_BIN_EXE_esgate"))
        .args([
            "--check-config",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/esgate.toml"),
        ])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn flags_win_over_the_environment() {
    let up = Upstream::ok().await;
    let bin = Binary::start(
        &[&format!("--upstream={}", up.url())],
        &[("ESGATE_UPSTREAM", "http://127.0.0.1:1")],
    );
    let mut client = Client::connect(bin.addr).await;
    assert_eq!(
        client.exchange("GET", &request("GET", "/", &[], b"")).await.status(),
        200
    );
}

#[tokio::test]
async fn dev_upstream_serves_connectors() {
    let bin = Binary::start(&["--dev", "--admin-listen=127.0.0.1:0"], &[]);
    let mut client = Client::connect(bin.addr).await;
    let info = client.exchange("GET", &request("GET", "/", &[], b"")).await;
    assert_eq!(info.status(), 200);
    assert_eq!(info.header("x-elastic-product"), Some("Elasticsearch"));
    assert_eq!(
        info.json()["version"]["number"].as_str().map(|v| v.starts_with("9.")),
        Some(true)
    );

    let json = [("content-type", "application/json")];
    let missing = client
        .exchange(
            "PUT",
            &request("PUT", "/_connector/c1/_error", &json, b"{\"error\":\"x\"}"),
        )
        .await;
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json()["error"]["type"], "document_missing_exception");

    let put = client
        .exchange(
            "PUT",
            &request("PUT", "/_connector/c1", &json, b"{\"index_name\":\"i\",\"name\":\"n\"}"),
        )
        .await;
    assert_eq!(put.json()["result"], "created");
    let err = client
        .exchange(
            "PUT",
            &request("PUT", "/_connector/c1/_error", &json, b"{\"error\":\"db down\"}"),
        )
        .await;
    assert_eq!((err.status(), err.json()["result"].clone()), (200, "updated".into()));
    let got = client
        .exchange("GET", &request("GET", "/_connector/c1", &[], b""))
        .await
        .json();
    assert_eq!(
        (got["status"].clone(), got["error"].clone()),
        ("error".into(), "db down".into())
    );
    client
        .exchange(
            "PUT",
            &request("PUT", "/_connector/c1/_error", &json, b"{\"error\":null}"),
        )
        .await;
    let got = client
        .exchange("GET", &request("GET", "/_connector/c1", &[], b""))
        .await
        .json();
    assert_eq!(got["status"], "connected");
    let list = client
        .exchange("GET", &request("GET", "/_connector", &[], b""))
        .await
        .json();
    assert_eq!(list["count"], 1);
    let del = client
        .exchange("DELETE", &request("DELETE", "/_connector/c1", &[], b""))
        .await;
    assert_eq!(del.json()["acknowledged"], true);
    let gone = client
        .exchange("GET", &request("GET", "/_connector/c1", &[], b""))
        .await;
    assert_eq!(gone.json()["error"]["type"], "resource_not_found_exception");

    let admin = bin.admin.expect("admin listener");
    let mut admin_client = Client::connect(admin).await;
    assert_eq!(
        admin_client
            .exchange("GET", &request("GET", "/healthz", &[], b""))
            .await
            .status(),
        200
    );
    assert_eq!(
        admin_client
            .exchange("GET", &request("GET", "/readyz", &[], b""))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn sigterm_lets_a_slow_response_finish_then_exits_zero() {
    let (mut up, tx) = Upstream::with_slow_path("{}").await;
    let bin = Binary::start(
        &[&format!("--upstream={}", up.url()), "--admin-listen=127.0.0.1:0"],
        &[],
    );
    let mut client = Client::connect(bin.addr).await;
    let mut head = up.start_slow(&mut client, &tx).await;
    assert_eq!(head.status(), 200);

    bin.terminate();
    bin.wait_log("readiness off");
    // Readiness goes false first, so load balancers stop sending.
    let mut admin = Client::connect(bin.admin.expect("admin")).await;
    assert_eq!(
        admin
            .exchange("GET", &request("GET", "/readyz", &[], b""))
            .await
            .status(),
        503
    );
    tx.send(b"56789".to_vec()).expect("second half");
    drop(tx);
    within("the rest of the body", client.reader.body(&mut head, false, false))
        .await
        .expect("body");
    assert_eq!(head.body, b"0123456789");
    assert_eq!(
        tokio::task::spawn_blocking(move || bin.wait()).await.expect("join"),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_whether_an_upstream_node_answers() {
    // A port with nothing listening yet.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let bin = Binary::start(
        &[
            &format!("--upstream=http://{addr}"),
            "--admin-listen=127.0.0.1:0",
            "--health-check-interval=50ms",
        ],
        &[],
    );
    let admin = bin.admin.expect("admin");
    let readyz = || async move {
        let mut c = Client::connect(admin).await;
        c.exchange("GET", &request("GET", "/readyz", &[], b"")).await
    };
    let down = readyz().await;
    assert_eq!(down.status(), 503);
    assert_eq!(down.json()["status"], "no upstream node answers");

    // The node comes up: the next probe finds it (probes run every 50ms; bounded wait).
    let mut up = Upstream::start_on(addr, |_| Reply::full(401, &[], b"")).await;
    let deadline = std::time::Instant::now() + common::LIMIT;
    while readyz().await.status() != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let probe = up.next().await.msg;
    assert!(probe.start_line.starts_with("HEAD / "), "{}", probe.start_line);
    assert!(probe.header("user-agent").is_some_and(|ua| ua.contains("health probe")));
}
