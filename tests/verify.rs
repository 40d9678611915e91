//! `esgate verify` against fake Elasticsearch nodes on loopback (`tests/support/src/fake_es.rs`):
//! one answering as 9.5.0 does, one answering a single row differently, one that already has
//! every connector.

use std::net::SocketAddr;
use std::process::Command;

use esgate_test_support::{binary_path, Fake, FakeNode};
use serde_json::Value;

async fn start(fake: Fake) -> SocketAddr {
    FakeNode::start(fake, false).await.addr
}

/// Runs `esgate verify --json` against `addr`: the report and the exit code.
async fn verify(addr: SocketAddr) -> (Value, Option<i32>) {
    let output = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(binary_path());
        // The developer's shell stays out of it.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ESGATE_") {
                cmd.env_remove(name);
            }
        }
        cmd.args(["verify", "--json", &format!("--upstream=http://{addr}")])
            .output()
    })
    .await
    .expect("join")
    .expect("esgate verify runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    (report, output.status.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answering_as_elasticsearch_does_passes() {
    let (report, code) = verify(start(Fake::Faithful).await).await;
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["passed"], true);
    let node = &report["nodes"][0];
    assert_eq!(node["version"], "9.5.0");
    let rows = node["rows"].as_array().expect("rows");
    assert!(rows.len() >= 30, "{report}");
    assert!(rows.iter().all(|r| r["match"] == true), "{report}");
    let consistent: Vec<&str> = node["consistent_dialects"]
        .as_array()
        .expect("dialects")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(consistent.contains(&"9-c-2.21"), "{report}");
    assert!(report["connector_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("esgate-verify-")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_wrong_row_is_named_and_no_dialect_fits() {
    let (report, code) = verify(start(Fake::OneRowWrong).await).await;
    assert_eq!(code, Some(1), "{report}");
    let node = &report["nodes"][0];
    let wrong: Vec<&str> = node["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["match"] == false)
        .filter_map(|r| r["case"].as_str())
        .collect();
    assert_eq!(wrong, vec!["P2 number"], "{report}");
    assert_eq!(
        node["consistent_dialects"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_with_the_random_id_stops_it_before_any_call() {
    let (report, code) = verify(start(Fake::ConnectorExists).await).await;
    assert_eq!(code, Some(1), "{report}");
    let node = &report["nodes"][0];
    assert!(
        node["error"].as_str().is_some_and(|e| e.contains("may exist")),
        "{report}"
    );
    assert_eq!(node["rows"].as_array().map(Vec::len), Some(0));
}
