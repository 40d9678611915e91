//! The comparison behind `esgate verify`: a fixed suite of calls to the Update connector error
//! API, what esgate answers to each for a given dialect, and whether a node's answer is the same.
//!
//! Elasticsearch parses and checks the body before it looks the connector up, so against an id
//! that does not exist every call is safe: it gets the 400 a real call would get, or, when it is
//! valid, a 404 that changes nothing. esgate's side of each call is the real
//! [`ConnectorErrorGuard`](crate::connector_error::ConnectorErrorGuard), run in process around an
//! inner service that records whether it was reached: what the gateway would answer, byte for
//! byte, not a second model of it.
//!
//! [`run`] sends the suite to every configured node (with esgate's own credentials, paced,
//! nothing else), after checking that the random connector id it uses does not exist, and
//! [`Report`] prints the table, or JSON for machines.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt};

use crate::connector_error::{ConnectorErrorLayer, GuardedBody};
use crate::elasticsearch::{Dialect, DialectSet, Knowledge, SharedKnowledge};

/// One call of the suite.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// Its name in the table (`P2 number`, `406 text/plain`…).
    pub name: &'static str,
    /// The query string, without `?` (empty for none).
    pub query: &'static str,
    /// `Content-Type`, if any.
    pub content_type: Option<&'static str>,
    /// `Accept`, if any.
    pub accept: Option<&'static str>,
    /// The body.
    pub body: &'static [u8],
}

const JSON: Option<&str> = Some("application/json");

const fn case(name: &'static str, body: &'static [u8]) -> Case {
    Case {
        name,
        query: "",
        content_type: JSON,
        accept: None,
        body,
    }
}

/// The suite: every row family esgate answers locally (P0 to P21, the media-type and
/// compatibility answers, parameters, `pretty`), the calls that tell dialects apart, and valid
/// calls, which a node must answer with its 404.
pub const SUITE: &[Case] = &[
    case("P0 empty body", b""),
    case("P1 no error field", b"{}"),
    case("P2 number", br#"{"error":1}"#),
    case("P3 boolean", br#"{"error":true}"#),
    case("P4 object", br#"{"error":{"a":1}}"#),
    case("P5 array", br#"{"error":["a"]}"#),
    case("P6 unknown field", br#"{"foo":"bar"}"#),
    case("P7 misspelt field", br#"{"erro":"x"}"#),
    case("P8 extra field", br#"{"error":"x","foo":1}"#),
    case("P9 not an object", b"[]"),
    case("P10 whitespace", b"   "),
    case("P11 duplicate field", br#"{"error":"a","error":"b"}"#),
    case("P12 missing value", br#"{"error": }"#),
    case("P13 not json", b"not json"),
    case("P14 unquoted name", br#"{error:"x"}"#),
    case("P15 trailing comma", br#"{"error":"x",}"#),
    case("P16 missing comma", br#"{"error":"x" "foo":1}"#),
    case("P17 end in value", br#"{"error":"x""#),
    case("P18 end after name", br#"{"error":"#),
    case("P19 end after brace", b"{"),
    case("P20 bad escape", br#"{"error":"\q"}"#),
    case("P21 bad literal", br#"{"error": nul}"#),
    case("surrogate raw", b"{\"error\":\"\xED\xB2\x80\"}"),
    case("RS hint", b"\x1e{\"error\":\"x\"}"),
    Case {
        name: "406 text/plain",
        content_type: Some("text/plain"),
        ..case("", br#"{"error":"x"}"#)
    },
    Case {
        name: "compat 7",
        content_type: Some("application/vnd.elasticsearch+json;compatible-with=7"),
        accept: Some("application/vnd.elasticsearch+json;compatible-with=7"),
        ..case("", br#"{"error":"x"}"#)
    },
    Case {
        name: "compat 8",
        content_type: Some("application/vnd.elasticsearch+json;compatible-with=8"),
        accept: Some("application/vnd.elasticsearch+json;compatible-with=8"),
        ..case("", br#"{"error":true}"#)
    },
    Case {
        name: "unknown parameter",
        query: "foo=bar",
        ..case("", br#"{"error":"x"}"#)
    },
    Case {
        name: "misspelt parameter",
        query: "prety=true",
        ..case("", br#"{"error":"x"}"#)
    },
    Case {
        name: "pretty",
        query: "pretty",
        ..case("", br#"{"foo":"bar"}"#)
    },
    case("valid text", br#"{"error":"esgate verify"}"#),
    case("valid reset", br#"{"error":null}"#),
];

/// An answer, as far as it is compared: status, `Content-Type` and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// The body, byte for byte.
    pub body: Bytes,
}

/// What esgate does with a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// Answers it itself with this.
    Local(Answer),
    /// Forwards it: Elasticsearch answers (for a connector that does not exist, its 404).
    Forwarded,
}

/// The request of `case` for connector `id`.
pub fn request(case: &Case, id: &str) -> Request<Full<Bytes>> {
    let uri = match case.query {
        "" => format!("/_connector/{id}/_error"),
        q => format!("/_connector/{id}/_error?{q}"),
    };
    let mut req = Request::builder().method(Method::PUT).uri(uri);
    if let Some(ct) = case.content_type {
        req = req.header("content-type", ct);
    }
    if let Some(accept) = case.accept {
        req = req.header("accept", accept);
    }
    req.header("content-length", case.body.len())
        .body(Full::new(Bytes::from_static(case.body)))
        .unwrap_or_default()
}

/// What esgate answers to `case` for connector `id` in front of a node speaking `dialect`: the
/// guard itself, in process.
pub async fn expected(case: &Case, id: &str, dialect: Dialect) -> Expected {
    expected_with(case, id, Knowledge::Dialects(DialectSet::of(&[dialect]))).await
}

/// As [`expected`], for what esgate knows of a node (several candidate dialects: esgate answers
/// locally only what they all answer alike).
pub async fn expected_with(case: &Case, id: &str, knowledge: Knowledge) -> Expected {
    let reached = Arc::new(AtomicBool::new(false));
    let seen = reached.clone();
    let inner = tower::service_fn(move |_: Request<GuardedBody<Full<Bytes>>>| {
        seen.store(true, Ordering::Relaxed);
        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))) }
    });
    let knowledge = SharedKnowledge::new(knowledge);
    let guard = ConnectorErrorLayer::new().knowledge(knowledge).layer(inner);
    let Ok(response) = guard.oneshot(request(case, id)).await;
    if reached.load(Ordering::Relaxed) {
        return Expected::Forwarded;
    }
    let (parts, body) = response.into_parts();
    Expected::Local(Answer {
        status: parts.status.as_u16(),
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        body: body.collect().await.map(|c| c.to_bytes()).unwrap_or_default(),
    })
}

/// Whether a node's answer agrees with what esgate does: the same status, type and bytes for a
/// local answer; for a forwarded call, anything but a 400 (a 400 is an answer esgate could have
/// given and did not: it forwards what it is unsure of, which costs a round trip, not a wrong
/// answer).
pub fn agrees(expected: &Expected, node: &Answer) -> bool {
    match expected {
        Expected::Local(answer) => answer == node,
        Expected::Forwarded => node.status != 400,
    }
}

/// The dialects whose answers agree with every one of `answers` (one per case of [`SUITE`]).
pub async fn consistent_dialects(id: &str, answers: &[Answer]) -> Vec<Dialect> {
    let mut out = Vec::new();
    for dialect in Dialect::ALL {
        let mut all = true;
        for (case, node) in SUITE.iter().zip(answers) {
            if !agrees(&expected(case, id, dialect).await, node) {
                all = false;
                break;
            }
        }
        if all {
            out.push(dialect);
        }
    }
    out
}

/// One call's line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The case's name.
    pub case: &'static str,
    /// What esgate does: `400 x_content_parse_exception`, or `forward`.
    pub esgate: String,
    /// What the node answered: status and error type.
    pub elasticsearch: String,
    /// Whether they agree.
    pub matched: bool,
}

/// What one node made of the suite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeOutcome {
    /// `host:port`.
    pub node: String,
    /// The version its `GET /` reported.
    pub version: Option<String>,
    /// The dialects esgate chose for that version.
    pub chosen: String,
    /// One row per call (empty when the node could not be verified).
    pub rows: Vec<Row>,
    /// The dialects consistent with every answer.
    pub consistent: Vec<Dialect>,
    /// Why the node could not be verified (unreachable, or the connector id exists).
    pub error: Option<String>,
}

impl NodeOutcome {
    /// Every call matched.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.rows.iter().all(|r| r.matched)
    }
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The connector id used (random; checked not to exist).
    pub connector_id: String,
    /// One outcome per node.
    pub nodes: Vec<NodeOutcome>,
}

impl Report {
    /// Every node passed.
    pub fn passed(&self) -> bool {
        !self.nodes.is_empty() && self.nodes.iter().all(NodeOutcome::passed)
    }

    /// The table, one per node, and a summary line.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for node in &self.nodes {
            let _ = writeln!(
                out,
                "node {} (Elasticsearch {}; esgate answers as {})",
                node.node,
                node.version.as_deref().unwrap_or("unknown"),
                node.chosen
            );
            if let Some(error) = &node.error {
                let _ = writeln!(out, "  not verified: {error}\n");
                continue;
            }
            let _ = writeln!(out, "| case | esgate | Elasticsearch | match |\n|---|---|---|---|");
            for row in &node.rows {
                let mark = if row.matched { "yes" } else { "**NO**" };
                let _ = writeln!(out, "| {} | {} | {} | {mark} |", row.case, row.esgate, row.elasticsearch);
            }
            let names: Vec<&str> = node.consistent.iter().map(|d| d.name()).collect();
            let _ = writeln!(out, "dialects consistent with every answer: {}\n", if names.is_empty() { "none".to_owned() } else { names.join(", ") });
        }
        let calls: usize = self.nodes.iter().map(|n| n.rows.len()).sum();
        let matched: usize = self.nodes.iter().map(|n| n.rows.iter().filter(|r| r.matched).count()).sum();
        let _ = writeln!(
            out,
            "esgate verify: {matched} of {calls} calls matched on {} node(s){}",
            self.nodes.len(),
            if self.passed() { "" } else { ": NOT VERIFIED" }
        );
        out
    }

    /// The same as JSON.
    pub fn json(&self) -> String {
        let nodes: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "node": n.node,
                    "version": n.version,
                    "chosen": n.chosen,
                    "error": n.error,
                    "passed": n.passed(),
                    "consistent_dialects": n.consistent.iter().map(|d| d.name()).collect::<Vec<_>>(),
                    "rows": n.rows.iter().map(|r| serde_json::json!({
                        "case": r.case, "esgate": r.esgate, "elasticsearch": r.elasticsearch, "match": r.matched
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::json!({ "connector_id": self.connector_id, "passed": self.passed(), "nodes": nodes }).to_string()
    }
}

/// `400 x_content_parse_exception`, from an answer.
fn summary(answer: &Answer) -> String {
    let error_type = serde_json::from_slice::<serde_json::Value>(&answer.body).ok().and_then(|v| {
        let e = v.get("error")?;
        Some(e.get("type").and_then(|t| t.as_str()).unwrap_or("simple").to_owned())
    });
    match error_type {
        Some(t) => format!("{} {t}", answer.status),
        None => answer.status.to_string(),
    }
}

/// Sends the suite to every node of `config` with esgate's own credentials, `pace` between calls.
pub async fn run(config: &crate::config::Config, pace: std::time::Duration) -> Report {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
    let id = format!("esgate-verify-{random:016x}");
    let mut nodes = Vec::new();
    for url in &config.upstream.nodes {
        nodes.push(verify_node(config, url, &id, pace).await);
    }
    Report { connector_id: id, nodes }
}

async fn verify_node(config: &crate::config::Config, url: &crate::config::NodeUrl, id: &str, pace: std::time::Duration) -> NodeOutcome {
    let authority = url.authority();
    let mut outcome = NodeOutcome {
        node: authority.clone(),
        version: None,
        chosen: String::new(),
        rows: Vec::new(),
        consistent: Vec::new(),
        error: None,
    };
    let mut node = Node::new(config, url);
    let root = match node.send(Method::GET, "/", None, None, b"").await {
        Ok(answer) => answer,
        Err(e) => {
            outcome.error = Some(e);
            return outcome;
        }
    };
    let learned = crate::upstream::parse_root(&root.body);
    let knowledge = learned.as_ref().map_or(Knowledge::UNKNOWN, |l| l.knowledge);
    outcome.version = learned.and_then(|l| l.version.map(|v| v.to_string()));
    outcome.chosen = match knowledge {
        Knowledge::Dialects(set) => set.to_string(),
        Knowledge::Unmodelled(v) => format!("nothing (Elasticsearch {v} is not modelled)"),
    };
    match node.send(Method::GET, &format!("/_connector/{id}"), None, None, b"").await {
        Ok(answer) if answer.status == 404 => {}
        Ok(answer) => {
            outcome.error = Some(format!(
                "GET /_connector/{id} answered {}: the connector may exist, so nothing was sent",
                answer.status
            ));
            return outcome;
        }
        Err(e) => {
            outcome.error = Some(e);
            return outcome;
        }
    }
    let mut answers = Vec::new();
    for case in SUITE {
        tokio::time::sleep(pace).await;
        let req = request(case, id);
        let target = req.uri().to_string();
        let answer = match node.send(Method::PUT, &target, case.content_type, case.accept, case.body).await {
            Ok(answer) => answer,
            Err(e) => {
                outcome.error = Some(format!("{}: {e}", case.name));
                return outcome;
            }
        };
        let expected = expected_with(case, id, knowledge).await;
        outcome.rows.push(Row {
            case: case.name,
            esgate: match &expected {
                Expected::Local(a) => summary(a),
                Expected::Forwarded => "forward".to_owned(),
            },
            elasticsearch: summary(&answer),
            matched: agrees(&expected, &answer),
        });
        answers.push(answer);
    }
    outcome.consistent = consistent_dialects(id, &answers).await;
    outcome
}

/// One node's connection, reopened when it closes.
struct Node {
    authority: String,
    server_name: Option<rustls::pki_types::ServerName<'static>>,
    tls: Option<crate::tls::ClientTls>,
    auth: Option<http::HeaderValue>,
    timeout: std::time::Duration,
    send: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Node {
    fn new(config: &crate::config::Config, url: &crate::config::NodeUrl) -> Self {
        Node {
            authority: url.authority(),
            server_name: url.tls.then(|| crate::tls::server_name(&url.host)).flatten(),
            tls: config.upstream.tls.clone(),
            auth: config.upstream.credentials.as_ref().and_then(|c| c.header()),
            timeout: config.upstream.connect_timeout,
            send: None,
        }
    }

    async fn send(
        &mut self,
        method: Method,
        target: &str,
        content_type: Option<&str>,
        accept: Option<&str>,
        body: &'static [u8],
    ) -> Result<Answer, String> {
        let mut send = match self.send.take().filter(|s| !s.is_closed()) {
            Some(send) => send,
            None => {
                let target = crate::connect::Target {
                    authority: &self.authority,
                    server_name: self.server_name.as_ref(),
                    tls: self.tls.as_ref(),
                };
                crate::connect::connect(target, &hyper::client::conn::http1::Builder::new(), self.timeout, "verify")
                    .await
                    .map_err(|e| format!("cannot connect to {}: {e}", self.authority))?
            }
        };
        let mut req = Request::builder().method(method).uri(target).header("host", &self.authority);
        if let Some(auth) = &self.auth {
            req = req.header("authorization", auth.clone());
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(accept) = accept {
            req = req.header("accept", accept);
        }
        let req = req
            .header("content-length", body.len())
            .body(Full::new(Bytes::from_static(body)))
            .map_err(|e| e.to_string())?;
        send.ready().await.map_err(|e| e.to_string())?;
        let answer = tokio::time::timeout(std::time::Duration::from_secs(30), send.send_request(req))
            .await
            .map_err(|_| format!("{} did not answer within 30 s", self.authority))?
            .map_err(|e| e.to_string())?;
        let (parts, body) = answer.into_parts();
        let body = body.collect().await.map(|c| c.to_bytes()).map_err(|e| e.to_string())?;
        self.send = Some(send);
        Ok(Answer {
            status: parts.status.as_u16(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node that answers as esgate would for `dialect`, with its 404 for valid calls.
    async fn node(dialect: Dialect, id: &str) -> Vec<Answer> {
        let mut out = Vec::new();
        for case in SUITE {
            out.push(match expected(case, id, dialect).await {
                Expected::Local(answer) => answer,
                Expected::Forwarded => Answer {
                    status: 404,
                    content_type: Some("application/json".to_owned()),
                    body: Bytes::from_static(b"{}"),
                },
            });
        }
        out
    }

    #[tokio::test]
    async fn the_suite_has_local_answers_and_valid_calls() {
        let newest = *Dialect::ALL.last().expect("dialects");
        let mut local = 0;
        for case in SUITE {
            match expected(case, "esgate-verify-1", newest).await {
                Expected::Local(answer) => {
                    local += 1;
                    assert!(answer.status >= 400, "{}: {answer:?}", case.name);
                }
                Expected::Forwarded => assert!(case.name.starts_with("valid"), "{} is forwarded", case.name),
            }
        }
        assert_eq!(local, SUITE.len() - 2);
    }

    #[tokio::test]
    async fn a_node_answering_as_a_dialect_is_consistent_with_it_and_one_wrong_row_is_found() {
        let id = "esgate-verify-2";
        let newest = *Dialect::ALL.last().expect("dialects");
        let answers = node(newest, id).await;
        let consistent = consistent_dialects(id, &answers).await;
        assert!(consistent.contains(&newest), "{consistent:?}");
        // The surrogate and the compatibility window tell the newest dialect from the 8.x ones.
        assert!(consistent.len() < Dialect::ALL.len(), "{consistent:?}");

        // One row wrong: no dialect agrees with every answer, and that row is the one that differs.
        let mut wrong = answers.clone();
        let p2 = SUITE.iter().position(|c| c.name.starts_with("P2 ")).expect("P2");
        wrong[p2].body = Bytes::from_static(b"{\"error\":\"something else\"}");
        assert!(consistent_dialects(id, &wrong).await.is_empty());
        let expected_p2 = expected(&SUITE[p2], id, newest).await;
        assert!(!agrees(&expected_p2, &wrong[p2]));
        assert!(agrees(&expected_p2, &answers[p2]));
    }
}
