//! Configuration reload on the real binary: SIGHUP, and the periodic check of the file's content
//! that catches Kubernetes ConfigMap updates (a swapped `..data` symlink).

use std::path::{Path, PathBuf};

use esgate_test_support::{request, within, Binary, Client, Reply, Upstream};

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("esgate-reload-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn config_text(upstream: &Upstream, max_body: &str, reload_interval: &str) -> String {
    format!(
        "[server]\nreload_interval = \"{reload_interval}\"\n[upstream]\nnodes = [\"{}\"]\n\
         [connector_error]\nmax_body_size = \"{max_body}\"\n",
        upstream.url()
    )
}

fn put_error(body: &[u8]) -> Vec<u8> {
    request(
        "PUT",
        "/_connector/c1/_error",
        &[("Content-Type", "application/json")],
        body,
    )
}

/// A valid body of `n` bytes.
fn body_of(n: usize) -> Vec<u8> {
    format!(r#"{{"error":"{}"}}"#, "x".repeat(n - 12)).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_upstream_and_a_limit_while_a_slow_request_finishes_on_the_old_ones() {
    let (mut old, tx) = Upstream::with_slow_path(r#"{"from":"old"}"#).await;
    let new = Upstream::start(|_| Reply::ok(r#"{"from":"new"}"#)).await;
    let dir = tempdir("sighup");
    let file = dir.join("esgate.toml");
    std::fs::write(&file, config_text(&old, "1KiB", "0")).expect("write");
    let bin = Binary::start(&[&format!("--config={}", file.display())], &[]);

    // A slow request in flight on the old upstream, and a kept-alive connection that has been used.
    let mut slow = Client::connect(bin.addr).await;
    let mut head = old.start_slow(&mut slow, &tx).await;
    let mut kept = Client::connect(bin.addr).await;
    assert_eq!(
        kept.exchange("GET", &request("GET", "/", &[], b"")).await.json()["from"],
        "old"
    );
    assert_eq!(kept.exchange("PUT", &put_error(&body_of(100))).await.status(), 200);

    // New upstream, and a body limit of 64 bytes.
    std::fs::write(&file, config_text(&new, "64", "0")).expect("rewrite");
    bin.signal("HUP");
    bin.wait_log("configuration reloaded");

    // New requests use the new settings, on a new connection and on the kept-alive one.
    let mut fresh = Client::connect(bin.addr).await;
    assert_eq!(
        fresh.exchange("GET", &request("GET", "/", &[], b"")).await.json()["from"],
        "new"
    );
    assert_eq!(
        kept.exchange("GET", &request("GET", "/", &[], b"")).await.json()["from"],
        "new"
    );
    let too_long = kept.exchange("PUT", &put_error(&body_of(100))).await;
    assert_eq!(too_long.status(), 413);
    assert_eq!(too_long.json()["error"]["type"], "esgate_content_too_long_exception");
    assert_eq!(fresh.exchange("PUT", &put_error(&body_of(60))).await.status(), 200);

    // The slow request completes on the old upstream.
    tx.send(b"56789".to_vec()).expect("second half");
    drop(tx);
    within("the rest of the slow body", slow.reader.body(&mut head, false, false))
        .await
        .expect("body");
    assert_eq!(head.body, b"0123456789");
    // Its connection's next request goes to the new upstream.
    assert_eq!(
        slow.exchange("GET", &request("GET", "/", &[], b"")).await.json()["from"],
        "new"
    );

    // An invalid file is refused with a log line naming the key; the running settings stay.
    std::fs::write(&file, config_text(&old, "a lot", "0")).expect("rewrite");
    bin.signal("HUP");
    let refused = bin.wait_log("configuration reload refused");
    assert!(refused.contains("connector_error.max_body_size"), "{refused}");
    assert_eq!(
        fresh.exchange("GET", &request("GET", "/", &[], b"")).await.json()["from"],
        "new"
    );
    assert_eq!(fresh.exchange("PUT", &put_error(&body_of(100))).await.status(), 413);
    let received_new = new.received();
    assert_eq!(
        received_new, 5,
        "every request after the reload went to the new upstream"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Lays out `dir` the way the kubelet mounts a ConfigMap: `esgate.toml -> ..data/esgate.toml`,
/// `..data -> ..<version>`; each update writes a new version directory and swaps `..data`
/// atomically (rename over the old link).
fn configmap_update(dir: &Path, version: &str, text: &str) {
    let versioned = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&versioned).expect("version dir");
    std::fs::write(versioned.join("esgate.toml"), text).expect("write");
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    let link = dir.join("esgate.toml");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/esgate.toml", &link).expect("symlink the file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_update_is_picked_up_without_a_signal() {
    let first = Upstream::start(|_| Reply::ok(r#"{"from":"first"}"#)).await;
    let second = Upstream::start(|_| Reply::ok(r#"{"from":"second"}"#)).await;
    let dir = tempdir("configmap");
    configmap_update(&dir, "v1", &config_text(&first, "1KiB", "100ms"));
    let bin = Binary::start(&[&format!("--config={}", dir.join("esgate.toml").display())], &[]);
    let mut client = Client::connect(bin.addr).await;
    assert_eq!(
        client.exchange("GET", &request("GET", "/", &[], b"")).await.json()["from"],
        "first"
    );

    configmap_update(&dir, "v2", &config_text(&second, "1KiB", "100ms"));
    let line = bin.wait_log("configuration reloaded");
    assert!(line.contains("the configuration file changed"), "{line}");
    assert_eq!(
        client.exchange("GET", &request("GET", "/", &[], b"")).await.json()["from"],
        "second"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_fixed_at_start_up_are_kept_and_named() {
    let up = Upstream::ok().await;
    let dir = tempdir("fixed");
    let file = dir.join("esgate.toml");
    std::fs::write(&file, config_text(&up, "1KiB", "0")).expect("write");
    let bin = Binary::start(&[&format!("--config={}", file.display())], &[]);
    let text = config_text(&up, "1KiB", "0").replace("[server]\n", "[server]\nworkers = 3\n");
    std::fs::write(&file, text).expect("rewrite");
    bin.signal("HUP");
    let warning = bin.wait_log("apply after a restart");
    assert!(warning.contains("server.workers"), "{warning}");
    bin.wait_log("configuration reloaded");
    let mut client = Client::connect(bin.addr).await;
    assert_eq!(
        client.exchange("GET", &request("GET", "/", &[], b"")).await.status(),
        200
    );
    let _ = std::fs::remove_dir_all(&dir);
}
