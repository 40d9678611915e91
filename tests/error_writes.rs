//! Connector and sync-job error writes the way the Elastic connectors service makes them
//! (`POST /.elastic-connectors/_update/<id>` and friends), through the real binary in front of a
//! recording upstream: one audit line per error change, none for a last-seen update, every byte
//! passed on unchanged, a large body streamed and audited without its text, and the upstream's
//! refusal audited as a failure.

use esgate_test_support::{digest, metric, request, Binary, Client, Reply, Upstream};
use serde_json::Value;

/// The headers the connectors service sends on every request (9.6.0, `compatible-with=8` also
/// against 9.x clusters).
const SERVICE: [(&str, &str); 5] = [
    ("user-agent", "elastic-connectors-9.6.0/service"),
    ("x-elastic-product-origin", "connectors"),
    ("accept", "application/vnd.elasticsearch+json; compatible-with=8"),
    ("content-type", "application/vnd.elasticsearch+json; compatible-with=8"),
    ("x-elastic-client-meta", "es=8.18.0,py=3.11.7,t=8.17.1,ai=3.11.18"),
];
const BASIC: &str = "Basic ZWxhc3RpYzpjaGFuZ2VtZQ=="; // elastic:changeme
const API_KEY: &str = "ApiKey VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="; // VuaCfGcBCdbkQm-e5aOx:…

fn service_request(method: &str, target: &str, auth: &str, body: &[u8]) -> Vec<u8> {
    let mut headers = SERVICE.to_vec();
    headers.push(("authorization", auth));
    request(method, target, &headers, body)
}

fn next_event(bin: &Binary) -> Value {
    let line = bin.next_stdout();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {line}"))
}

/// A client that talks like the connectors service, and the upstream behind esgate.
struct Service {
    client: Client,
    up: Upstream,
}

impl Service {
    /// Sends `body` the service's way and checks that the upstream got exactly those bytes.
    async fn send(&mut self, method: &str, target: &str, auth: &str, body: &[u8]) -> u16 {
        let request = service_request(method, target, auth, body);
        let answer = self.client.exchange(method, &request).await;
        // esgate's health probes (with an admin listener) are not the service's requests.
        let mut seen = self.up.next().await.msg;
        while seen.start_line.starts_with("HEAD / ") {
            seen = self.up.next().await.msg;
        }
        assert_eq!(seen.start_line, format!("{method} {target} HTTP/1.1"));
        assert_eq!(
            digest(&seen.body),
            digest(body),
            "the upstream got other bytes for {target}"
        );
        answer.status()
    }
}

/// The connector document the service writes.
const CONN_1: &str = "/.elastic-connectors/_update/conn-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_error_change_of_the_connectors_service_gets_one_line() {
    let up = Upstream::start(|msg| {
        if msg.start_line.contains("/_update/missing") {
            let body = br#"{"error":{"root_cause":[{"type":"document_missing_exception","reason":"[missing]: document missing"}],"type":"document_missing_exception","reason":"[missing]: document missing"},"status":404}"#;
            Reply::full(400, &[("content-type", "application/json"), ("x-elastic-product", "Elasticsearch")], body)
        } else {
            Reply::ok(r#"{"result":"updated"}"#)
        }
    })
    .await;
    let bin = Binary::start(
        &[
            &format!("--upstream={}", up.url()),
            "--audit-stdout",
            "--admin-listen=127.0.0.1:0",
        ],
        &[],
    );
    let mut svc = Service {
        client: Client::connect(bin.addr).await,
        up,
    };

    // A connector fails.
    let set = br#"{"doc":{"status":"error","error":"Could not connect to db.internal:5432"}}"#;
    assert_eq!(svc.send("POST", CONN_1, BASIC, set).await, 200);
    let e = next_event(&bin);
    assert_eq!(e["event"]["action"], "update-connector-error", "{e}");
    assert_eq!(e["event"]["outcome"], "success");
    assert_eq!(e["http"]["response"]["status_code"], 200);
    assert_eq!(e["user"]["name"], "elastic");
    assert_eq!(e["esgate"]["write_path"], "index");
    assert_eq!(e["esgate"]["verdict"], "passed_through");
    assert_eq!(e["esgate"]["connector"]["id"], "conn-1");
    assert_eq!(
        e["esgate"]["connector"]["error"], "Could not connect to db.internal:5432",
        "{e}"
    );
    assert_eq!(e["esgate"]["connector"]["status"], "error");

    // It is healthy again, with an API key.
    let reset = br#"{"doc":{"status":"connected","error":null}}"#;
    assert_eq!(svc.send("POST", CONN_1, API_KEY, reset).await, 200);
    let e = next_event(&bin);
    assert_eq!(e["event"]["action"], "update-connector-error");
    assert_eq!(e["user"]["name"], "VuaCfGcBCdbkQm-e5aOx");
    assert_eq!(e["esgate"]["auth"]["scheme"], "api_key");
    assert!(e["esgate"]["connector"]["error"].is_null(), "{e}");
    assert_eq!(e["esgate"]["connector"]["status"], "connected");

    // A heartbeat-like update of the connector document: no line. The next line is the sync job's.
    let seen_only = br#"{"doc":{"last_seen":"2026-12-02T05:00:00.000000+00:00"}}"#;
    assert_eq!(svc.send("POST", CONN_1, BASIC, seen_only).await, 200);

    // A sync job ends with an error (the start carries if_seq_no / if_primary_term).
    let job = br#"{"doc":{"status":"error","error":"Sync failed: timeout","completed_at":"2026-12-02T05:01:00+00:00","indexed_document_count":10}}"#;
    let target = "/.elastic-connectors-sync-jobs/_update/job-7?if_seq_no=12&if_primary_term=1";
    assert_eq!(svc.send("POST", target, BASIC, job).await, 200);
    let e = next_event(&bin);
    assert_eq!(e["event"]["action"], "update-sync-job-error", "{e}");
    assert_eq!(e["esgate"]["write_path"], "index");
    assert_eq!(e["esgate"]["sync_job"]["id"], "job-7");
    assert_eq!(e["esgate"]["sync_job"]["error"], "Sync failed: timeout");

    // The Set sync job error API.
    let api = br#"{"error":"cancelled by the user"}"#;
    assert_eq!(
        svc.send("PUT", "/_connector/_sync_job/job-8/_error", BASIC, api).await,
        200
    );
    let e = next_event(&bin);
    assert_eq!(e["event"]["action"], "update-sync-job-error");
    assert_eq!(e["esgate"]["write_path"], "connector_api");
    assert_eq!(e["esgate"]["sync_job"]["error"], "cancelled by the user");

    // The cluster refuses: audited as a failure with its status.
    assert_eq!(
        svc.send("POST", "/.elastic-connectors/_update/missing", BASIC, set)
            .await,
        400
    );
    let e = next_event(&bin);
    assert_eq!(e["event"]["outcome"], "failure", "{e}");
    assert_eq!(e["http"]["response"]["status_code"], 400);
    assert_eq!(e["esgate"]["connector"]["id"], "missing");

    let admin = bin.admin.expect("admin");
    assert_eq!(
        metric(admin, r#"esgate_error_writes_total{path="index",outcome="success"}"#).await,
        Some(3)
    );
    assert_eq!(
        metric(admin, r#"esgate_error_writes_total{path="index",outcome="failure"}"#).await,
        Some(1)
    );
    assert_eq!(
        metric(
            admin,
            r#"esgate_error_writes_total{path="connector_api",outcome="success"}"#
        )
        .await,
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_write_is_streamed_whole_and_audited_without_its_text() {
    let up = Upstream::start(|_| Reply::ok(r#"{"result":"updated"}"#)).await;
    let bin = Binary::start(&[&format!("--upstream={}", up.url()), "--audit-stdout"], &[]);
    let mut svc = Service {
        client: Client::connect(bin.addr).await,
        up,
    };
    let text = "x".repeat(1 << 20);
    let body = format!(r#"{{"doc":{{"status":"error","error":"{text}"}}}}"#);
    let status = svc
        .send("POST", "/.elastic-connectors/_update/conn-2", BASIC, body.as_bytes())
        .await;
    assert_eq!(status, 200);
    let e = next_event(&bin);
    assert_eq!(e["event"]["action"], "update-connector-error", "{e}");
    assert_eq!(e["esgate"]["connector"]["id"], "conn-2");
    assert_eq!(e["esgate"]["connector"]["error_inspected"], false);
    assert!(
        e["esgate"]["connector"]["error_not_inspected"]
            .as_str()
            .is_some_and(|why| why.contains("audit.max_inspected_body")),
        "{e}"
    );
    assert!(e["esgate"]["connector"].get("error").is_none(), "{e}");
}

/// The walk-through of the README: the development upstream answers the connectors service's
/// writes as Elasticsearch does, and the audit trail sees the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_development_upstream_takes_an_error_set_the_connectors_service_way() {
    let bin = Binary::start(&["--dev", "--audit-stdout"], &[]);
    let mut client = Client::connect(bin.addr).await;
    let json = [("content-type", "application/json")];
    let created = client
        .exchange(
            "PUT",
            &request("PUT", "/_connector/c1", &json, br#"{"index_name":"search-docs"}"#),
        )
        .await;
    assert_eq!(created.status(), 201);
    let body = br#"{"doc":{"status":"error","error":"Sync failed"}}"#;
    let updated = client
        .exchange(
            "POST",
            &service_request("POST", "/.elastic-connectors/_update/c1", BASIC, body),
        )
        .await;
    assert_eq!(updated.status(), 200, "{}", String::from_utf8_lossy(&updated.body));
    let answer = updated.json();
    assert_eq!(answer["result"], "updated");
    assert_eq!(answer["_id"], "c1");
    let e = next_event(&bin);
    assert_eq!(e["event"]["action"], "update-connector-error", "{e}");
    assert_eq!(e["esgate"]["connector"]["error"], "Sync failed");

    let doc = client
        .exchange("GET", &request("GET", "/.elastic-connectors/_doc/c1", &[], b""))
        .await;
    assert_eq!(doc.status(), 200);
    let doc = doc.json();
    assert_eq!(doc["found"], true);
    assert_eq!(doc["_source"]["error"], "Sync failed");
    assert_eq!(doc["_source"]["status"], "error");
    assert_eq!(doc["_source"]["index_name"], "search-docs");

    let check_in = client
        .exchange("PUT", &request("PUT", "/_connector/c1/_check_in", &[], b""))
        .await;
    assert_eq!(check_in.status(), 200);
    let connector = client
        .exchange("GET", &request("GET", "/_connector/c1", &[], b""))
        .await
        .json();
    assert!(
        connector["last_seen"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{connector}"
    );

    // The same write again changes nothing: Elasticsearch's noop.
    let again = client
        .exchange(
            "POST",
            &service_request("POST", "/.elastic-connectors/_update/c1", BASIC, body),
        )
        .await;
    assert_eq!(again.json()["result"], "noop");
    let missing = client
        .exchange(
            "POST",
            &service_request("POST", "/.elastic-connectors/_update/nobody", BASIC, body),
        )
        .await;
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json()["error"]["type"], "document_missing_exception");
}
