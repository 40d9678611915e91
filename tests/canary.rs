//! The canary (`connector_error.canary_rate`) in the real binary, in front of fake Elasticsearch
//! nodes (`tests/support/src/fake_es.rs`): it counts a node that answers alike, detects one that
//! does not and forwards that kind of call from then on, and the client's answer does not wait
//! for it.

use std::sync::atomic::Ordering;
use std::time::Instant;

use esgate_test_support::{metric, request, Binary, Client, Fake, FakeNode, LIMIT};

const P2: &[u8] = br#"{"error":1}"#;

fn put(body: &[u8]) -> Vec<u8> {
    request(
        "PUT",
        "/_connector/c1/_error",
        &[
            ("content-type", "application/json"),
            ("authorization", "Basic ZWxhc3RpYzpjaGFuZ2VtZQ=="),
        ],
        body,
    )
}

fn start(node: &FakeNode) -> Binary {
    Binary::start(
        &[
            &format!("--upstream=http://{}", node.addr),
            "--es-version=9.5.0",
            "--canary-rate=1",
            "--admin-listen=127.0.0.1:0",
        ],
        &[],
    )
}

/// Polls `/metrics` until `series` reaches `want` (bounded by [`LIMIT`]).
async fn wait_metric(admin: std::net::SocketAddr, series: &str, want: u64) {
    let deadline = Instant::now() + LIMIT;
    while metric(admin, series).await != Some(want) {
        assert!(Instant::now() < deadline, "{series} never reached {want}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_answer_does_not_wait_for_the_canary_which_then_matches() {
    let node = FakeNode::start(Fake::Faithful, true).await;
    let bin = start(&node);
    let admin = bin.admin.expect("admin");
    let mut client = Client::connect(bin.addr).await;
    let answer = client.exchange("PUT", &put(P2)).await;
    assert_eq!(answer.status(), 400);
    assert_eq!(answer.json()["error"]["type"], "x_content_parse_exception");
    // The canary's copy reached the node and is held there: the client has its answer already.
    let deadline = Instant::now() + LIMIT;
    while node.canary_calls.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no canary call");
        tokio::task::yield_now().await;
    }
    assert_eq!(metric(admin, r#"esgate_canary_total{result="match"}"#).await, Some(0));
    node.canary_gate.add_permits(1);
    wait_metric(admin, r#"esgate_canary_total{result="match"}"#, 1).await;
    assert_eq!(
        metric(admin, r#"esgate_canary_total{result="mismatch"}"#).await,
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_answers_otherwise_turns_that_kind_of_call_to_forwarding() {
    let node = FakeNode::start(Fake::OneRowWrong, false).await;
    let bin = start(&node);
    let admin = bin.admin.expect("admin");
    let mut client = Client::connect(bin.addr).await;
    // Answered locally, as 9.5.0 would; the canary finds the node disagreeing.
    let first = client.exchange("PUT", &put(P2)).await;
    assert_eq!(first.status(), 400);
    assert!(!String::from_utf8_lossy(&first.body).contains("something else"));
    wait_metric(admin, r#"esgate_canary_total{result="mismatch"}"#, 1).await;
    // From now on that kind of call goes to the node, which answers it its own way.
    let second = client.exchange("PUT", &put(P2)).await;
    assert_eq!(second.status(), 400);
    assert!(
        String::from_utf8_lossy(&second.body).contains("something else"),
        "{second:?}"
    );
    let unchecked = metric(
        admin,
        r#"esgate_unchecked_total{reason="a canary found the node answering this kind of call differently"}"#,
    )
    .await;
    assert_eq!(unchecked, Some(1));
}
