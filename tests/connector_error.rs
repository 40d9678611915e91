//! The Update connector error API through the whole stack: what Elasticsearch would refuse is
//! answered locally, byte for byte, and never reaches the upstream; valid calls reach it with a
//! canonical body; what esgate cannot judge reaches it unchanged.

use base64::Engine as _;
use esgate_test_support::{gateway, request, Client, Message, Reply, Upstream};
use std::io::Write;

/// The answers below are those of Elasticsearch 9.5 (dialect 9-c-2.21); the recording upstream
/// reports no version, so the gateway is pinned to it.
const NEWEST: &str = "--es-version=9.5.0";

const JSON: (&str, &str) = ("content-type", "application/json");
const UPDATED: &str = r#"{"result":"updated"}"#;

fn upstream_updated() -> impl Fn(&Message) -> Reply + Send + Sync + 'static {
    |_| {
        Reply::full(
            200,
            &[
                ("content-type", "application/json"),
                ("x-elastic-product", "Elasticsearch"),
            ],
            UPDATED.as_bytes(),
        )
    }
}

/// The answer of a local rejection: status, Elasticsearch's headers, and the body.
fn assert_local(resp: &Message, status: u16, body: &str) {
    assert_eq!(resp.status(), status, "body: {}", String::from_utf8_lossy(&resp.body));
    assert_eq!(String::from_utf8_lossy(&resp.body), body);
    assert_eq!(resp.header("x-elastic-product"), Some("Elasticsearch"));
    assert_eq!(
        resp.header("content-length"),
        Some(resp.body.len().to_string().as_str())
    );
}

/// The oracle's sample cases and its answers for the newest dialect (wrapping C, jackson-core
/// 2.22.4 standing for 2.21+), as committed in `tests/oracle/` (no JVM needed).
fn oracle_fixture() -> (String, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle");
    let read =
        |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("tests/oracle/{name}: {e}"));
    (read("cases.txt"), read("expected/c-2.22.4.txt"))
}

/// Every body of the oracle's sample cases, sent over HTTP: rejected ones get the oracle's exact
/// body and never reach the upstream, accepted ones reach it in canonical form.
#[tokio::test]
async fn every_sample_case_over_http() {
    let (cases, expected) = oracle_fixture();
    assert_eq!(
        cases.lines().count(),
        expected.lines().count(),
        "tests/oracle/cases.txt and expected/c-2.22.4.txt differ in length: scripts/oracle --regenerate"
    );
    let mut up = Upstream::start(upstream_updated()).await;
    let gw = gateway(&[&up], &[NEWEST]);
    let mut checked = 0;
    for (case, answer) in cases.lines().zip(expected.lines()) {
        if case.starts_with('#') {
            continue;
        }
        let body = base64::engine::general_purpose::STANDARD
            .decode(case.trim())
            .expect("base64");
        let mut client = Client::connect(gw.listen_addr()).await;
        let resp = client
            .exchange("PUT", &request("PUT", "/_connector/c1/_error", &[JSON], &body))
            .await;
        let before = up.received();
        let unchecked = matches!(
            esgate::elasticsearch::check_body(&body, esgate::elasticsearch::Dialect::NEWEST),
            esgate::elasticsearch::BodyVerdict::Unchecked(_)
        );
        if unchecked {
            // Bodies esgate cannot judge (UTF-16/32) go on as sent.
            assert_eq!(resp.status(), 200, "{case}");
            assert_eq!(up.next().await.msg.body, body, "unchecked: original bytes");
        } else if let Some(err) = answer.strip_prefix("ERR ") {
            assert_local(&resp, 400, err);
            assert_eq!(resp.header("content-type"), Some("application/json"));
            assert_eq!(up.received(), before, "a rejected body reached the upstream: {case}");
        } else {
            assert_eq!(
                resp.status(),
                200,
                "{case} -> {answer}: {}",
                String::from_utf8_lossy(&resp.body)
            );
            let seen = up.next().await.msg;
            match answer.strip_prefix("OK ") {
                Some(literal) => {
                    assert_eq!(String::from_utf8_lossy(&seen.body), format!("{{\"error\":{literal}}}"));
                    assert_eq!(
                        seen.header("content-length"),
                        Some(seen.body.len().to_string().as_str())
                    );
                }
                None => assert_eq!(seen.body, body, "unmodelled: original bytes"),
            }
        }
        checked += 1;
    }
    assert!(checked >= 79, "only {checked} cases");
}

/// One request of the REST-level table.
struct Case {
    name: &'static str,
    target: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
    status: u16,
    response: &'static str,
    content_type: &'static str,
}

const P4_BODY: &str = r#"{"error":{"root_cause":[{"type":"x_content_parse_exception","reason":"[1:10] [connector_update_error_request] error doesn't support values of type: START_OBJECT"}],"type":"x_content_parse_exception","reason":"[1:10] [connector_update_error_request] error doesn't support values of type: START_OBJECT"},"status":400}"#;

const P4_PRETTY: &str = "{\n  \"error\" : {\n    \"root_cause\" : [\n      {\n        \"type\" : \"x_content_parse_exception\",\n        \"reason\" : \"[1:10] [connector_update_error_request] error doesn't support values of type: START_OBJECT\"\n      }\n    ],\n    \"type\" : \"x_content_parse_exception\",\n    \"reason\" : \"[1:10] [connector_update_error_request] error doesn't support values of type: START_OBJECT\"\n  },\n  \"status\" : 400\n}\n";

const TABLE: &[Case] = &[
    Case {
        name: "worked example",
        target: "/_connector/my-connector/_error",
        headers: &[JSON],
        body: r#"{"error":{"a":1}}"#,
        status: 400,
        response: P4_BODY,
        content_type: "application/json",
    },
    Case {
        name: "pretty",
        target: "/_connector/my-connector/_error?pretty",
        headers: &[JSON],
        body: r#"{"error":{"a":1}}"#,
        status: 400,
        response: P4_PRETTY,
        content_type: "application/json",
    },
    Case {
        name: "P0 missing body, no content type",
        target: "/_connector/c1/_error",
        headers: &[],
        body: "",
        status: 400,
        response: r#"{"error":{"root_cause":[{"type":"parse_exception","reason":"request body is required"}],"type":"parse_exception","reason":"request body is required"},"status":400}"#,
        content_type: "application/json",
    },
    Case {
        name: "P0 empty body with text/plain (the type is checked only with content)",
        target: "/_connector/c1/_error",
        headers: &[("content-type", "text/plain")],
        body: "",
        status: 400,
        response: r#"{"error":{"root_cause":[{"type":"parse_exception","reason":"request body is required"}],"type":"parse_exception","reason":"request body is required"},"status":400}"#,
        content_type: "application/json",
    },
    Case {
        name: "V1 empty connector id",
        target: "/_connector//_error",
        headers: &[JSON],
        body: r#"{"error":"x"}"#,
        status: 400,
        response: r#"{"error":{"root_cause":[{"type":"action_request_validation_exception","reason":"Validation Failed: 1: [connector_id] cannot be [null] or [\"\"].;"}],"type":"action_request_validation_exception","reason":"Validation Failed: 1: [connector_id] cannot be [null] or [\"\"].;"},"status":400}"#,
        content_type: "application/json",
    },
    Case {
        name: "a malformed body beats an empty id",
        target: "/_connector//_error",
        headers: &[JSON],
        body: r#"{"error":{"a":1}}"#,
        status: 400,
        response: P4_BODY,
        content_type: "application/json",
    },
    Case {
        name: "text/plain with a body: 406",
        target: "/_connector/c1/_error",
        headers: &[("content-type", "text/plain")],
        body: r#"{"error":"x"}"#,
        status: 406,
        response: r#"{"error":"Content-Type header [text/plain] is not supported","status":406}"#,
        content_type: "application/json",
    },
    Case {
        name: "no content type with a body: 406",
        target: "/_connector/c1/_error",
        headers: &[],
        body: r#"{"error":"x"}"#,
        status: 406,
        response: r#"{"error":"Content-Type header is missing","status":406}"#,
        content_type: "application/json",
    },
    Case {
        name: "unparsable content type: 400 before anything else",
        target: "/_connector/c1/_error",
        headers: &[("content-type", "foo")],
        body: r#"{"error":{"a":1}}"#,
        status: 400,
        response: r#"{"error":{"root_cause":[{"type":"media_type_header_exception","reason":"Invalid media-type value on headers [Content-Type]"}],"type":"media_type_header_exception","reason":"Invalid media-type value on headers [Content-Type]","caused_by":{"type":"illegal_argument_exception","reason":"invalid media-type [foo]"}},"status":400}"#,
        content_type: "application/json",
    },
    Case {
        name: "compatible-with on Accept only, body present",
        target: "/_connector/c1/_error",
        headers: &[("accept", "application/vnd.elasticsearch+json;compatible-with=9"), JSON],
        body: r#"{"error":"x"}"#,
        status: 400,
        response: r#"{"error":{"root_cause":[{"type":"media_type_header_exception","reason":"Invalid media-type value on headers [Accept, Content-Type]"}],"type":"media_type_header_exception","reason":"Invalid media-type value on headers [Accept, Content-Type]","caused_by":{"type":"status_exception","reason":"A compatible version is required on both Content-Type and Accept headers if either one has requested a compatible version. Accept=application/vnd.elasticsearch+json;compatible-with=9, Content-Type=application/json"}},"status":400}"#,
        content_type: "application/json",
    },
    Case {
        name: "compatible-with echoed in the content type",
        target: "/_connector/c1/_error",
        headers: &[
            ("accept", "application/vnd.elasticsearch+json; compatible-with=9"),
            ("content-type", "application/vnd.elasticsearch+json; compatible-with=9"),
        ],
        body: r#"{"error":{"a":1}}"#,
        status: 400,
        response: P4_BODY,
        content_type: "application/vnd.elasticsearch+json;compatible-with=9",
    },
    Case {
        name: "unknown query parameter after a valid body",
        target: "/_connector/c1/_error?foo=1",
        headers: &[JSON],
        body: r#"{"error":"x"}"#,
        status: 400,
        response: r#"{"error":{"root_cause":[{"type":"illegal_argument_exception","reason":"request [/_connector/c1/_error] contains unrecognized parameter: [foo]"}],"type":"illegal_argument_exception","reason":"request [/_connector/c1/_error] contains unrecognized parameter: [foo]"},"status":400}"#,
        content_type: "application/json",
    },
    Case {
        name: "did you mean",
        target: "/_connector/c1/_error?prety",
        headers: &[JSON],
        body: r#"{"error":"x"}"#,
        status: 400,
        response: r#"{"error":{"root_cause":[{"type":"illegal_argument_exception","reason":"request [/_connector/c1/_error] contains unrecognized parameter: [prety] -> did you mean [pretty]?"}],"type":"illegal_argument_exception","reason":"request [/_connector/c1/_error] contains unrecognized parameter: [prety] -> did you mean [pretty]?"},"status":400}"#,
        content_type: "application/json",
    },
    Case {
        name: "a malformed body beats an unknown parameter",
        target: "/_connector/c1/_error?foo=1",
        headers: &[JSON],
        body: r#"{"error":{"a":1}}"#,
        status: 400,
        response: P4_BODY,
        content_type: "application/json",
    },
    Case {
        name: "a non-boolean pretty",
        target: "/_connector/c1/_error?pretty=yes",
        headers: &[JSON],
        body: r#"{"error":"x"}"#,
        status: 400,
        response: r#"{"error":{"root_cause":[{"type":"illegal_argument_exception","reason":"Failed to parse value [yes] as only [true] or [false] are allowed."}],"type":"illegal_argument_exception","reason":"Failed to parse value [yes] as only [true] or [false] are allowed."},"status":400}"#,
        content_type: "application/json",
    },
];

#[tokio::test]
async fn rest_level_rows_are_answered_locally() {
    let up = Upstream::start(upstream_updated()).await;
    let gw = gateway(&[&up], &[NEWEST]);
    for case in TABLE {
        let mut client = Client::connect(gw.listen_addr()).await;
        let mut headers = case.headers.to_vec();
        headers.push(("x-opaque-id", "op-42"));
        let resp = client
            .exchange("PUT", &request("PUT", case.target, &headers, case.body.as_bytes()))
            .await;
        assert_eq!(
            resp.status(),
            case.status,
            "{}: {}",
            case.name,
            String::from_utf8_lossy(&resp.body)
        );
        assert_eq!(String::from_utf8_lossy(&resp.body), case.response, "{}", case.name);
        assert_eq!(resp.header("x-elastic-product"), Some("Elasticsearch"), "{}", case.name);
        assert_eq!(resp.header("content-type"), Some(case.content_type), "{}", case.name);
        assert_eq!(resp.header("x-opaque-id"), Some("op-42"), "{}", case.name);
        assert_eq!(up.received(), 0, "{} reached the upstream", case.name);
    }
}

#[tokio::test]
async fn valid_calls_are_forwarded_canonical_and_the_answer_comes_back() {
    let mut up = Upstream::start(upstream_updated()).await;
    let gw = gateway(&[&up], &[NEWEST]);
    let mut client = Client::connect(gw.listen_addr()).await;
    let cases: &[(&[u8], &str)] = &[
        (
            br#"{"error":"connection refused"}"#,
            r#"{"error":"connection refused"}"#,
        ),
        (b"/* c */ { \"error\" : null } trailing", r#"{"error":null}"#),
        (br#"{"error":"\u00e9\ud800"}"#, "{\"error\":\"\u{e9}\\uD800\"}"),
        (b"\xEF\xBB\xBF{\"error\":\"\"}", r#"{"error":""}"#),
    ];
    for (body, canonical) in cases {
        let resp = client
            .exchange(
                "PUT",
                &request("PUT", "/_connector/c%2F1/_error?pretty&filter_path=x", &[JSON], body),
            )
            .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.body, UPDATED.as_bytes());
        let seen = up.next().await.msg;
        assert_eq!(
            seen.start_line, "PUT /_connector/c%2F1/_error?pretty&filter_path=x HTTP/1.1",
            "the target stays byte-exact"
        );
        assert_eq!(String::from_utf8_lossy(&seen.body), *canonical);
        assert_eq!(
            seen.header("content-length"),
            Some(canonical.len().to_string().as_str())
        );
        assert_eq!(seen.header("content-type"), Some("application/json"));
    }
}

#[tokio::test]
async fn gzip_bodies_are_decoded_checked_and_forwarded_plain() {
    let mut up = Upstream::start(upstream_updated()).await;
    let gw = gateway(&[&up], &[NEWEST]);
    let mut client = Client::connect(gw.listen_addr()).await;
    let gzip = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("gzip")
    };
    let headers = [JSON, ("content-encoding", "gzip")];
    let ok = client
        .exchange(
            "PUT",
            &request(
                "PUT",
                "/_connector/c1/_error",
                &headers,
                &gzip(br#"{"error":"zipped"}"#),
            ),
        )
        .await;
    assert_eq!(ok.status(), 200);
    let seen = up.next().await.msg;
    assert_eq!(seen.body, br#"{"error":"zipped"}"#);
    assert_eq!(seen.header("content-encoding"), None);
    let bad = client
        .exchange(
            "PUT",
            &request("PUT", "/_connector/c1/_error", &headers, &gzip(br#"{"error":{"a":1}}"#)),
        )
        .await;
    assert_local(&bad, 400, P4_BODY);
    assert_eq!(up.received(), 1);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_without_reaching_the_upstream() {
    let up = Upstream::start(upstream_updated()).await;
    let gw = gateway(&[&up], &[NEWEST, "--max-error-body-size=1KiB"]);
    let big = format!("{{\"error\":\"{}\"}}", "x".repeat(2000));
    let mut client = Client::connect(gw.listen_addr()).await;
    let resp = client
        .exchange("PUT", &request("PUT", "/_connector/c1/_error", &[JSON], big.as_bytes()))
        .await;
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.json()["error"]["type"], "esgate_content_too_long_exception");
    // Chunked, so the length is known only while reading: still 413.
    let mut client = Client::connect(gw.listen_addr()).await;
    client.send(b"PUT /_connector/c1/_error HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").await;
    for _ in 0..3 {
        client
            .send(format!("{:x}\r\n{}\r\n", 500, "y".repeat(500)).as_bytes())
            .await;
    }
    assert_eq!(client.response("PUT").await.status(), 413);
    // A small gzip body that expands past the limit.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&vec![b' '; 100_000]).expect("write");
    let bomb = e.finish().expect("gzip");
    let mut client = Client::connect(gw.listen_addr()).await;
    let resp = client
        .exchange(
            "PUT",
            &request(
                "PUT",
                "/_connector/c1/_error",
                &[JSON, ("content-encoding", "gzip")],
                &bomb,
            ),
        )
        .await;
    assert_eq!(resp.status(), 413);
    assert_eq!(up.received(), 0);
}

#[tokio::test]
async fn what_esgate_cannot_judge_goes_on_unchanged() {
    let mut up = Upstream::start(upstream_updated()).await;
    let gw = gateway(&[&up], &[NEWEST]);
    let bad = br#"{"error":{"a":1}}"#;
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("/_connector/c1/_error?error_trace=true", &[JSON]),
        ("/_connector/c1/_error?format=yaml", &[JSON]),
        ("/_connector/c1/_error", &[JSON, ("accept", "application/yaml")]),
        ("/_connector/c1/_error", &[("content-type", "application/yaml")]),
        ("/_connector/c1/_error", &[JSON, ("content-encoding", "br")]),
        ("/_connector/%ZZ/_error", &[JSON]),
    ];
    for (target, headers) in cases {
        let mut client = Client::connect(gw.listen_addr()).await;
        let resp = client.exchange("PUT", &request("PUT", target, headers, bad)).await;
        assert_eq!(resp.status(), 200, "{target} {headers:?}");
        let seen = up.next().await.msg;
        assert_eq!(seen.body, bad, "{target} {headers:?}: forwarded as sent");
        assert_eq!(seen.start_line, format!("PUT {target} HTTP/1.1"));
    }
}

#[tokio::test]
async fn other_methods_and_routes_pass_through_untouched() {
    let mut up = Upstream::start(upstream_updated()).await;
    let gw = gateway(&[&up], &[NEWEST]);
    let mut client = Client::connect(gw.listen_addr()).await;
    let bad = br#"{"error":{"a":1}}"#;
    for (method, target) in [
        ("POST", "/_connector/c1/_error"),
        ("GET", "/_connector/c1/_error"),
        ("PUT", "/_connector/c1"),
        ("PUT", "/_connector/_error"),
        ("PUT", "/_connector/c1/_error/extra"),
        ("PUT", "/%5Fconnector/c1/_error"),
        ("PUT", "/_connector/_sync_job/x/_error"),
    ] {
        let resp = client.exchange(method, &request(method, target, &[JSON], bad)).await;
        assert_eq!(resp.status(), 200, "{method} {target}");
        let seen = up.next().await.msg;
        assert_eq!(seen.start_line, format!("{method} {target} HTTP/1.1"));
        assert_eq!(seen.body, bad);
    }
}

#[tokio::test]
async fn trailing_slashes_route_like_elasticsearch() {
    let up = Upstream::start(upstream_updated()).await;
    let gw = gateway(&[&up], &[NEWEST]);
    let mut client = Client::connect(gw.listen_addr()).await;
    for target in ["/_connector/c1/_error/", "/_connector/c1/_error//"] {
        let resp = client
            .exchange("PUT", &request("PUT", target, &[JSON], br#"{"error":{"a":1}}"#))
            .await;
        assert_local(&resp, 400, P4_BODY);
    }
    assert_eq!(up.received(), 0);
}

#[tokio::test]
async fn with_the_credential_check_an_unauthenticated_caller_gets_the_upstream_401() {
    let mut up = Upstream::start(|req| {
        let auth = req.header("authorization").unwrap_or("");
        if req.start_line.starts_with("GET /_security/_authenticate") && auth != "ApiKey good" {
            Reply::full(
                401,
                &[("content-type", "application/json"), ("www-authenticate", "ApiKey")],
                br#"{"error":{"root_cause":[{"type":"security_exception","reason":"unable to authenticate"}],"type":"security_exception","reason":"unable to authenticate"},"status":401}"#,
            )
        } else {
            Reply::ok(r#"{"username":"connector"}"#)
        }
    })
    .await;
    let gw = gateway(&[&up], &[NEWEST, "--check-auth", "--auth-cache-ttl=60s"]);
    let bad = br#"{"error":{"a":1}}"#;
    let mut client = Client::connect(gw.listen_addr()).await;
    let refused = client
        .exchange(
            "PUT",
            &request(
                "PUT",
                "/_connector/c1/_error",
                &[JSON, ("authorization", "ApiKey bad")],
                bad,
            ),
        )
        .await;
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.header("www-authenticate"), Some("ApiKey"));
    assert_eq!(refused.json()["error"]["type"], "security_exception");
    let asked = up.next().await.msg;
    assert_eq!(asked.start_line, "GET /_security/_authenticate HTTP/1.1");
    assert_eq!(asked.header("authorization"), Some("ApiKey bad"));
    for _ in 0..2 {
        let ok = client
            .exchange(
                "PUT",
                &request(
                    "PUT",
                    "/_connector/c1/_error",
                    &[JSON, ("authorization", "ApiKey good")],
                    bad,
                ),
            )
            .await;
        assert_local(&ok, 400, P4_BODY);
    }
    // One question for the good key: the second answer came from the cache.
    assert_eq!(up.next().await.msg.header("authorization"), Some("ApiKey good"));
    assert_eq!(up.received(), 2, "the PUT itself never reached the upstream");
}

#[tokio::test]
async fn an_absolute_form_target_is_checked_as_it_is_forwarded() {
    let mut up = Upstream::start(upstream_updated()).await;
    let gw = gateway(&[&up], &[NEWEST]);
    let mut client = Client::connect(gw.listen_addr()).await;
    // The node would receive `PUT /_connector/c1/_error`: the same checks apply.
    let resp = client
        .exchange(
            "PUT",
            &request(
                "PUT",
                "http://any.example/_connector/c1/_error",
                &[JSON],
                br#"{"error": 42}"#,
            ),
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert!(String::from_utf8_lossy(&resp.body).contains("error doesn't support values of type: VALUE_NUMBER"));
    assert_eq!(up.received(), 0, "the invalid body reached the upstream");
    let resp = client
        .exchange(
            "PUT",
            &request(
                "PUT",
                "http://any.example/_connector/c1/_error",
                &[JSON],
                br#"{"error":"x"}"#,
            ),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let seen = up.next().await.msg;
    assert_eq!(seen.start_line, "PUT /_connector/c1/_error HTTP/1.1");
    assert_eq!(seen.body, br#"{"error":"x"}"#);
}
