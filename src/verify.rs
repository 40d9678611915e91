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
//! Sending the suite to a node, the command line and its output are not here yet.

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
        ..case("", br#"{"error":1}"#)
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
        ..case("", br#"{"error":1}"#)
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
    let reached = Arc::new(AtomicBool::new(false));
    let seen = reached.clone();
    let inner = tower::service_fn(move |_: Request<GuardedBody<Full<Bytes>>>| {
        seen.store(true, Ordering::Relaxed);
        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))) }
    });
    let knowledge = SharedKnowledge::new(Knowledge::Dialects(DialectSet::of(&[dialect])));
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
