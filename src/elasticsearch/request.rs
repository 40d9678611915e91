//! The checks of a matched `PUT /_connector/<id>/_error` that come before its body is parsed, in
//! Elasticsearch's order (`docs/connector-error.md`, "Order of checks"):
//!
//! 2. building the `RestRequest`: query-string decoding (400 `bad_parameter_exception`), then the
//!    `Accept`/`Content-Type` media types and versions (400 `media_type_header_exception`);
//! 3. building the channel: `pretty`, then `human` must be booleans (400
//!    `illegal_argument_exception`);
//! 4. `error_trace` (not a boolean: a simple 400; `true`: a stack trace esgate cannot write);
//! 6. a body with content needs a JSON-family `Content-Type` (406, simple format).
//!
//! Each answer is rendered the way the channel of its step renders it. When Elasticsearch fails a
//! step it rebuilds the request without the failing part (no parameters after a query-string
//! error, no failed headers after a media-type error), and that rebuilt request decides the output
//! format, `?pretty` and the `Accept` parameters echoed in `content-type`. Some combinations make
//! the rebuild itself throw, with an answer nobody has pinned down: those are forwarded, as is
//! anything esgate cannot write (non-JSON output, non-JSON bodies, stack traces).

use http::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use http::request::Parts;
use http::Response;

use super::dialect::{DialectSet, Major};
use super::error::EsError;
use super::error::Rejection;
use super::media::{header_values, negotiate, BodyType, Negotiated, Negotiation};
use super::params::{decode_query, illegal_argument, unrecognized};
use super::render::{detailed_body, response, simple_body, X_OPAQUE_ID};
use super::route::decode_component;
use crate::body::Body;

/// What to do with a matched request before its body is parsed.
#[derive(Debug)]
pub enum Precheck {
    /// Parse the body; then apply the plan.
    Check(Plan),
    /// Answer this, as Elasticsearch would.
    Respond(Response<Body>),
    /// Forward the request unchanged: esgate cannot tell or write Elasticsearch's answer.
    Unchecked(&'static str),
}

/// How to go on after a valid precheck.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// How every later answer (body errors, step 10, connector id) is written.
    pub format: ResponseFormat,
    /// Step 10: the unrecognized-parameter error, to answer only when the body is valid.
    pub unrecognized: Option<EsError>,
}

/// How the channel writes answers: JSON, pretty or not, with this `content-type`, echoing
/// `X-Opaque-Id`. Each answer carries its [`Rejection`] in its extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseFormat {
    /// `?pretty`.
    pub pretty: bool,
    /// `application/json`, or the vendor type, with the `Accept` parameters.
    pub content_type: HeaderValue,
    /// The request's first `X-Opaque-Id`.
    pub opaque_id: Option<HeaderValue>,
}

impl ResponseFormat {
    /// `error` in the detailed format.
    pub fn respond(&self, error: &EsError) -> Response<Body> {
        let body = detailed_body(error, self.pretty);
        let mut answer = response(error.status, body, &self.content_type, self.opaque_id.as_ref());
        answer.extensions_mut().insert(Rejection::from_error(error));
        answer
    }

    /// `{"error":"<text>","status":N}` (406s, and errors raised outside a handler).
    pub fn respond_simple(&self, status: u16, text: &[u8]) -> Response<Body> {
        let mut answer = response(
            status,
            simple_body(text, status, self.pretty),
            &self.content_type,
            self.opaque_id.as_ref(),
        );
        answer.extensions_mut().insert(Rejection::simple(status, text));
        answer
    }
}

/// Headers Elasticsearch copies into its thread context and refuses with two different values.
/// Where exactly that refusal happens (and how it is rendered) differs between versions: forward.
const SINGLE_VALUED: [HeaderName; 4] = [
    X_OPAQUE_ID,
    crate::headers::X_ELASTIC_PRODUCT_ORIGIN,
    crate::headers::TRACEPARENT,
    crate::headers::TRACESTATE,
];

/// Parameters that reach the error renderer (`ElasticsearchException` reads them from the request)
/// and change the body: forward.
const RENDERING_PARAMS: [&str; 2] = ["rest.exception.stacktrace.skip", "rest.exception.cause.skip"];

/// [`precheck`] for a node of any of `dialects`: the outcome when every compatibility window
/// among them gives the same one (the same answer, byte for byte, or the same plan), `None` when
/// they differ.
pub fn precheck_agreed(parts: &Parts, id: &str, has_content: bool, dialects: DialectSet) -> Option<Precheck> {
    if let Some(plan) = common_shape(parts, has_content, dialects) {
        return Some(Precheck::Check(plan));
    }
    // The window is asked only by a `compatible-with` parameter; without one, every major answers
    // alike and one check is enough.
    let asks_version = [ACCEPT, CONTENT_TYPE].iter().any(|name| {
        parts.headers.get_all(name).iter().any(|v| {
            v.as_bytes()
                .windows(b"compatible-with".len())
                .any(|w| w.eq_ignore_ascii_case(b"compatible-with"))
        })
    });
    let mut majors = [Major::V9, Major::V8]
        .into_iter()
        .filter(|m| dialects.iter().any(|d| d.major() == *m));
    if !asks_version {
        return majors.next().map(|major| precheck(parts, id, has_content, major));
    }
    let mut agreed: Option<Precheck> = None;
    for major in majors {
        let outcome = precheck(parts, id, has_content, major);
        match &agreed {
            None => agreed = Some(outcome),
            Some(first) if first.same_as(&outcome) => {}
            Some(_) => return None,
        }
    }
    agreed
}

/// The media types the official clients and most callers send, as exact header bytes: plain JSON,
/// and the versioned type with `compatible-with=7`, `8` or `9` (elasticsearch-py, the Node.js
/// client, the connectors service).
const JSON: &[u8] = b"application/json";
const VENDOR_JSON: &[u8] = b"application/vnd.elasticsearch+json; compatible-with=";

/// The `content-type` of answers to such requests (made at compile time).
const JSON_TYPE: HeaderValue = HeaderValue::from_static("application/json");
const VENDOR_TYPES: [HeaderValue; 3] = [
    HeaderValue::from_static("application/vnd.elasticsearch+json;compatible-with=7"),
    HeaderValue::from_static("application/vnd.elasticsearch+json;compatible-with=8"),
    HeaderValue::from_static("application/vnd.elasticsearch+json;compatible-with=9"),
];

/// A header value of [`JSON`], or of [`VENDOR_JSON`] with its one-digit version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Common {
    Json,
    Vendor(u8),
}

impl Common {
    /// `value` when it is a common one; `Some(None)` when there is none.
    fn of(value: Option<&HeaderValue>) -> Option<Option<Common>> {
        let Some(value) = value else {
            return Some(None);
        };
        match value.as_bytes() {
            JSON => Some(Some(Common::Json)),
            v => match v.strip_prefix(VENDOR_JSON) {
                Some(&[digit @ b'7'..=b'9']) => Some(Some(Common::Vendor(digit - b'0'))),
                _ => None,
            },
        }
    }
}

/// The plan of the common request shape, found without parsing anything: no query string, a body
/// with content, and `Content-Type` (with `Accept` alike or absent) one of the [`Common`] values,
/// whose version every candidate node accepts. [`precheck`] makes the same plan of it, slowly:
/// `common_shape_is_what_precheck_says` proves it for every value, window and dialect set.
/// `None`: any other request, which takes the full replay.
fn common_shape(parts: &Parts, has_content: bool, dialects: DialectSet) -> Option<Plan> {
    if !has_content || parts.uri.query().is_some() || dialects.is_empty() {
        return None;
    }
    let headers = &parts.headers;
    // No header with two values: none of the single-valued ones has two different values, and
    // `Accept` and `Content-Type` have one each at most.
    if headers.len() != headers.keys_len() {
        return None;
    }
    // One pass over the few headers there are, rather than a hashed lookup for each name.
    let (mut content_type, mut accept, mut opaque_id) = (None, None, None);
    for (name, value) in headers {
        if name == CONTENT_TYPE {
            content_type = Some(value);
        } else if name == ACCEPT {
            accept = Some(value);
        } else if name == X_OPAQUE_ID {
            opaque_id = Some(value);
        }
    }
    let content_type = Common::of(content_type)??;
    let accept = Common::of(accept)?;
    let content_type_value = match (accept, content_type) {
        (None | Some(Common::Json), Common::Json) => JSON_TYPE,
        (Some(Common::Vendor(a)), Common::Vendor(c)) if a == c => {
            let in_window = |m: Major| (m.minimum()..=m.current()).contains(&(a as i8));
            if !dialects.iter().all(|d| in_window(d.major())) {
                return None;
            }
            VENDOR_TYPES[usize::from(a - 7)].clone()
        }
        _ => return None,
    };
    Some(Plan {
        format: ResponseFormat {
            pretty: false,
            content_type: content_type_value,
            opaque_id: opaque_id.cloned(),
        },
        unrecognized: None,
    })
}

impl Precheck {
    /// True when both would make Elasticsearch's answer the same.
    fn same_as(&self, other: &Precheck) -> bool {
        match (self, other) {
            (Precheck::Check(a), Precheck::Check(b)) => a == b,
            (Precheck::Respond(a), Precheck::Respond(b)) => {
                a.status() == b.status()
                    && a.headers() == b.headers()
                    && matches!((full_bytes(a.body()), full_bytes(b.body())), (Some(x), Some(y)) if x == y)
            }
            (Precheck::Unchecked(_), Precheck::Unchecked(_)) => true,
            _ => false,
        }
    }
}

/// The bytes of a body esgate wrote itself.
fn full_bytes(body: &Body) -> Option<&[u8]> {
    match body {
        Body::Empty => Some(&[]),
        Body::Full(bytes) => Some(bytes),
        _ => None,
    }
}

/// Steps 2 to 6 for a `PUT` that matched the route with connector id `id`. `has_content`: the
/// decoded body is not empty (the caller reads it first); `major`: the compatibility window of
/// the node that answers.
pub fn precheck(parts: &Parts, id: &str, has_content: bool, major: Major) -> Precheck {
    // An absolute-form target (`PUT http://host/_connector/…`) is checked as the origin-form
    // target it is forwarded as: what the node receives is what is checked.
    let headers = &parts.headers;
    if SINGLE_VALUED.iter().any(|name| has_distinct_values(headers, name)) {
        return Precheck::Unchecked("two different values of a single-valued header");
    }
    let opaque_id = headers.get(X_OPAQUE_ID).cloned();
    let accept = header_values(headers, &ACCEPT);
    let content_type = header_values(headers, &CONTENT_TYPE);

    // 2. The query string. After a decode error Elasticsearch builds the request without
    // parameters; if the headers fail then, that second failure escapes its handling.
    let params = match decode_query(parts.uri.query()) {
        Ok(params) => params,
        Err(error) => {
            return match negotiate(&accept, &content_type, has_content, major) {
                Negotiation::Accepted(rest) => respond(&rest, None, false, opaque_id, |f| f.respond(&error)),
                _ => Precheck::Unchecked("a query string and a media-type header that both fail"),
            }
        }
    };
    if RENDERING_PARAMS.iter().any(|p| params.contains(p)) {
        return Precheck::Unchecked("a parameter that changes how errors are rendered");
    }

    // 2. The media types. The channel is built on the request without the failed headers but
    // with the parameters; a bad `pretty`/`human` makes Elasticsearch rebuild it from the original
    // request, whose headers fail again, unhandled. The error renderer reads `error_trace`.
    let negotiated = match negotiate(&accept, &content_type, has_content, major) {
        Negotiation::Accepted(negotiated) => negotiated,
        Negotiation::Unchecked(why) => return Precheck::Unchecked(why),
        Negotiation::Rejected { error, rest } => {
            let (Ok(pretty), Ok(_)) = (params.boolean("pretty"), params.boolean("human")) else {
                return Precheck::Unchecked("a media-type error and a pretty or human that is no boolean");
            };
            if params.boolean("error_trace") != Ok(false) {
                return Precheck::Unchecked("a media-type error with error_trace set");
            }
            return respond(&rest, params.get("format"), pretty, opaque_id, |f| f.respond(&error));
        }
    };

    // 3. The channel: `pretty`, then `human`. On failure the channel is rebuilt without
    // parameters, so the answer is compact and `format` is ignored.
    let pretty = match params
        .boolean("pretty")
        .and_then(|pretty| params.boolean("human").map(|_| pretty))
    {
        Ok(pretty) => pretty,
        Err(message) => {
            return respond(&negotiated, None, false, opaque_id, |f| {
                f.respond(&illegal_argument(message))
            });
        }
    };
    let format = response_format(&negotiated, params.get("format"), pretty, opaque_id);

    // 4. `error_trace`, checked by the controller before routing; its failure is a simple 400.
    match params.boolean("error_trace") {
        Ok(false) => {}
        Ok(true) => return Precheck::Unchecked("error_trace=true: the answer would carry a Java stack trace"),
        Err(message) => {
            return match format {
                Ok(format) => Precheck::Respond(format.respond_simple(400, message.as_bytes())),
                Err(why) => Precheck::Unchecked(why),
            }
        }
    }
    let format = match format {
        Ok(format) => format,
        Err(why) => return Precheck::Unchecked(why),
    };

    // 6. A body with content needs a Content-Type Elasticsearch reads, and esgate reads JSON only.
    if has_content {
        match negotiated.check_body() {
            BodyType::Json => {}
            BodyType::NonJson => return Precheck::Unchecked("a YAML, CBOR or SMILE body"),
            BodyType::NotAcceptable(text) => return Precheck::Respond(format.respond_simple(406, text.as_bytes())),
        }
    }

    // 10. Prepared here, answered by the caller only after a valid body.
    let unconsumed = params.unconsumed();
    let unrecognized = if unconsumed.is_empty() {
        None
    } else {
        let path =
            decode_component(parts.uri.path().as_bytes(), false).unwrap_or_else(|_| format!("/_connector/{id}/_error"));
        unrecognized(&path, &unconsumed)
    };
    Precheck::Check(Plan { format, unrecognized })
}

/// The channel's format for `negotiated`, `format` and `pretty`; `Err` when esgate cannot write
/// it (YAML, CBOR, SMILE).
fn response_format(
    negotiated: &Negotiated,
    format: Option<&str>,
    pretty: bool,
    opaque_id: Option<HeaderValue>,
) -> Result<ResponseFormat, &'static str> {
    let output = negotiated.output(format);
    if !output.is_json() {
        return Err("a YAML, CBOR or SMILE answer");
    }
    if !negotiated.accept_params_in_fixed_order() {
        return Err("two or more Accept parameters, which Elasticsearch echoes in no fixed order");
    }
    // Netty writes header strings back one byte per char.
    let value = negotiated.response_content_type(output);
    let bytes: Option<Vec<u8>> = value.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
    let content_type = bytes
        .and_then(|b| HeaderValue::from_bytes(&b).ok())
        .ok_or("a response content-type that is no header value")?;
    Ok(ResponseFormat {
        pretty,
        content_type,
        opaque_id,
    })
}

fn respond(
    negotiated: &Negotiated,
    format: Option<&str>,
    pretty: bool,
    opaque_id: Option<HeaderValue>,
    answer: impl FnOnce(&ResponseFormat) -> Response<Body>,
) -> Precheck {
    match response_format(negotiated, format, pretty, opaque_id) {
        Ok(format) => Precheck::Respond(answer(&format)),
        Err(why) => Precheck::Unchecked(why),
    }
}

fn has_distinct_values(headers: &HeaderMap, name: &HeaderName) -> bool {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    values.any(|v| Some(v) != first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Request, StatusCode};

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().method(Method::PUT).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request").into_parts().0
    }

    const JSON: (&str, &str) = ("content-type", "application/json");
    const PATH: &str = "/_connector/my-connector/_error";

    fn run(uri: &str, headers: &[(&str, &str)], has_content: bool) -> Precheck {
        precheck(&parts(uri, headers), "my-connector", has_content, Major::V9)
    }

    /// The shortcut and the full replay agree wherever the shortcut answers, and it answers for
    /// what the official clients send.
    #[test]
    fn common_shape_is_what_precheck_says() {
        use crate::elasticsearch::dialect::Dialect;
        let values = [
            None,
            Some("application/json"),
            Some("application/vnd.elasticsearch+json; compatible-with=7"),
            Some("application/vnd.elasticsearch+json; compatible-with=8"),
            Some("application/vnd.elasticsearch+json; compatible-with=9"),
            Some("application/vnd.elasticsearch+json; compatible-with=6"),
            Some("application/vnd.elasticsearch+json;compatible-with=8"),
            Some("Application/JSON"),
            Some("application/json; charset=UTF-8"),
        ];
        let mut sets: Vec<DialectSet> = Dialect::ALL.iter().map(|d| DialectSet::one(*d)).collect();
        sets.extend([
            DialectSet::EMPTY,
            DialectSet::ALL,
            DialectSet::of_major(Major::V8),
            DialectSet::of_major(Major::V9),
        ]);
        let mut shortcuts = 0;
        for uri in [PATH, "/_connector/my-connector/_error?pretty"] {
            for accept in values {
                for content_type in values {
                    for opaque in [None, Some("op-1")] {
                        let mut headers = Vec::new();
                        headers.extend(accept.map(|v| ("accept", v)));
                        headers.extend(content_type.map(|v| ("content-type", v)));
                        headers.extend(opaque.map(|v| ("x-opaque-id", v)));
                        let parts = parts(uri, &headers);
                        for has_content in [true, false] {
                            for dialects in &sets {
                                let Some(plan) = common_shape(&parts, has_content, *dialects) else {
                                    continue;
                                };
                                shortcuts += 1;
                                let slow = (Major::V9, Major::V8);
                                let majors = [slow.0, slow.1]
                                    .into_iter()
                                    .filter(|m| dialects.iter().any(|d| d.major() == *m));
                                for major in majors {
                                    match precheck(&parts, "my-connector", has_content, major) {
                                        Precheck::Check(full) => assert_eq!(full, plan, "{headers:?} {major:?}"),
                                        other => panic!(
                                            "{headers:?} {major:?}: the shortcut planned, precheck said {other:?}"
                                        ),
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        // What the clients send: plain JSON, and the versioned type in both headers.
        let sent = |headers: &[(&str, &str)], dialects| common_shape(&parts(PATH, headers), true, dialects).is_some();
        let v8 = "application/vnd.elasticsearch+json; compatible-with=8";
        assert!(sent(&[JSON], DialectSet::ALL));
        assert!(sent(&[("accept", v8), ("content-type", v8)], DialectSet::ALL));
        assert!(
            !sent(&[("content-type", v8)], DialectSet::ALL),
            "a version on one header only is refused"
        );
        // Plain JSON and compatible-with=8 for all 12 sets, 7 and 9 for the sets of one major
        // (5 + 1 and 4 + 1 of them), each with and without X-Opaque-Id.
        assert_eq!(shortcuts, 2 * (2 * 12 + 12 + 6 + 5), "{shortcuts}");
    }

    #[test]
    fn the_compatibility_window_is_asked_only_when_a_version_is() {
        use crate::elasticsearch::dialect::Dialect::*;
        let set = DialectSet::of;
        let agreed =
            |headers: &[(&str, &str)], dialects| precheck_agreed(&parts(PATH, headers), "my-connector", true, dialects);
        let v7 = "application/vnd.elasticsearch+json; compatible-with=7";
        let seven = [("accept", v7), ("content-type", v7)];
        assert!(matches!(agreed(&seven, set(&[Es8B17])), Some(Precheck::Check(_))));
        assert!(matches!(agreed(&seven, set(&[Es9C21])), Some(Precheck::Respond(_))));
        assert!(agreed(&seven, set(&[Es8B17, Es9C21])).is_none());
        // compatible-with=8 is in both windows; no version at all asks neither.
        let v8 = "application/vnd.elasticsearch+json; compatible-with=8";
        assert!(matches!(
            agreed(&[("accept", v8), ("content-type", v8)], DialectSet::ALL),
            Some(Precheck::Check(_))
        ));
        assert!(matches!(agreed(&[JSON], DialectSet::ALL), Some(Precheck::Check(_))));
        // 10 is refused by both, in words that name each window.
        let v10 = "application/vnd.elasticsearch+json; compatible-with=10";
        assert!(agreed(&[("accept", v10), ("content-type", v10)], DialectSet::ALL).is_none());
    }

    fn answer(p: Precheck) -> (StatusCode, Vec<(String, String)>, String) {
        match p {
            Precheck::Respond(r) => {
                let headers = r
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                let body = match r.body() {
                    Body::Full(b) => String::from_utf8_lossy(b).into_owned(),
                    _ => String::new(),
                };
                (r.status(), headers, body)
            }
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn plan(p: Precheck) -> Plan {
        match p {
            Precheck::Check(plan) => plan,
            other => panic!("expected a plan, got {other:?}"),
        }
    }

    fn forwarded(p: Precheck) -> bool {
        matches!(p, Precheck::Unchecked(_))
    }

    #[test]
    fn a_plain_request_goes_on() {
        let p = plan(run(PATH, &[JSON], true));
        assert_eq!(p.unrecognized, None);
        assert_eq!(
            p.format,
            ResponseFormat {
                pretty: false,
                content_type: HeaderValue::from_static("application/json"),
                opaque_id: None
            }
        );
        // No body: the Content-Type is not checked (row P0), even text/plain.
        let p = plan(run(PATH, &[("content-type", "text/plain")], false));
        assert_eq!(p.format.content_type, "application/json");
    }

    #[test]
    fn the_plan_renders_body_errors() {
        let p = plan(run(&format!("{PATH}?pretty"), &[JSON, ("x-opaque-id", "abc")], true));
        let e = EsError::bad_request("parse_exception", "request body is required");
        let (status, headers, body) = answer(Precheck::Respond(p.format.respond(&e)));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            "{\n  \"error\" : {\n    \"root_cause\" : [\n      {\n        \"type\" : \"parse_exception\",\n        \"reason\" : \"request body is required\"\n      }\n    ],\n    \"type\" : \"parse_exception\",\n    \"reason\" : \"request body is required\"\n  },\n  \"status\" : 400\n}\n"
        );
        assert_eq!(
            headers,
            [
                ("x-opaque-id".to_owned(), "abc".to_owned()),
                ("x-elastic-product".to_owned(), "Elasticsearch".to_owned()),
                ("content-type".to_owned(), "application/json".to_owned()),
                ("content-length".to_owned(), body.len().to_string()),
            ]
        );
    }

    #[test]
    fn unrecognized_parameters_wait_for_the_body() {
        let p = plan(run(&format!("{PATH}/?prety&source=x&pretty=false"), &[JSON], true));
        let e = p.unrecognized.expect("step 10");
        assert_eq!(
            String::from_utf8_lossy(&e.top().reason),
            "request [/_connector/my-connector/_error/] contains unrecognized parameters: [prety] -> did you mean [pretty]?, [source]"
        );
        // The path is decoded for the message.
        let p = plan(run("/_connector/a%2Fb/_error?x", &[JSON], true));
        let e = p.unrecognized.expect("step 10");
        assert_eq!(
            String::from_utf8_lossy(&e.top().reason),
            "request [/_connector/a/b/_error] contains unrecognized parameter: [x]"
        );
    }

    #[test]
    fn query_decode_errors() {
        let (status, headers, body) = answer(run(&format!("{PATH}?pretty&a=%"), &[JSON], true));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // Without parameters: compact even with ?pretty.
        assert_eq!(
            body,
            r#"{"error":{"root_cause":[{"type":"bad_parameter_exception","reason":"java.lang.IllegalArgumentException: unterminated escape sequence at end of string: %"}],"type":"bad_parameter_exception","reason":"java.lang.IllegalArgumentException: unterminated escape sequence at end of string: %","caused_by":{"type":"illegal_argument_exception","reason":"unterminated escape sequence at end of string: %"}},"status":400}"#
        );
        assert_eq!(headers[0], ("x-elastic-product".to_owned(), "Elasticsearch".to_owned()));
        // The headers still pick the format.
        assert!(forwarded(run(
            &format!("{PATH}?a=%"),
            &[("accept", "application/yaml")],
            true
        )));
        // A header that fails as well: not handled by Elasticsearch either.
        assert!(forwarded(run(
            &format!("{PATH}?a=%"),
            &[("content-type", "nonsense")],
            true
        )));
    }

    #[test]
    fn media_type_errors() {
        let (status, _, body) = answer(run(PATH, &[("content-type", "application/json; charset")], true));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            r#"{"error":{"root_cause":[{"type":"media_type_header_exception","reason":"Invalid media-type value on headers [Content-Type]"}],"type":"media_type_header_exception","reason":"Invalid media-type value on headers [Content-Type]","caused_by":{"type":"illegal_argument_exception","reason":"invalid parameters for header [application/json; charset]"}},"status":400}"#
        );
        // Before routing and before the body: also without content.
        let (status, _, _) = answer(run(PATH, &[("content-type", "")], false));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // The parameters still apply.
        let (_, _, body) = answer(run(&format!("{PATH}?pretty"), &[("accept", "x")], true));
        assert!(body.starts_with("{\n  \"error\" : {\n"));
        assert!(body.ends_with("\"status\" : 400\n}\n"));
        // The Accept that failed is gone; a valid Accept's parameters stay.
        let vnd = "application/vnd.elasticsearch+json;compatible-with=9";
        let (_, headers, _) = answer(run(PATH, &[("accept", vnd), ("content-type", "a/b;c")], false));
        assert_eq!(headers[1], ("content-type".to_owned(), vnd.to_owned()));
        // Compatibility errors drop both headers: JSON.
        let (_, headers, body) = answer(run(PATH, &[("accept", vnd), JSON], true));
        assert_eq!(headers[1], ("content-type".to_owned(), "application/json".to_owned()));
        assert!(body.contains(r#""caused_by":{"type":"status_exception","reason":"A compatible version is required on both Content-Type and Accept headers if either one has requested a compatible version. Accept=application/vnd.elasticsearch+json;compatible-with=9, Content-Type=application/json"}"#));
        // What Elasticsearch does not handle, or esgate cannot write.
        assert!(forwarded(run(&format!("{PATH}?pretty=x"), &[("accept", "x")], true)));
        assert!(forwarded(run(&format!("{PATH}?error_trace"), &[("accept", "x")], true)));
        assert!(forwarded(run(
            PATH,
            &[("accept", "x"), ("content-type", "application/yaml")],
            true
        )));
        assert!(forwarded(run(
            PATH,
            &[("accept", "application/json;compatible-with=abc")],
            true
        )));
    }

    #[test]
    fn channel_parameters() {
        let (status, headers, body) = answer(run(&format!("{PATH}?pretty=yes&format=yaml"), &[JSON], true));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            r#"{"error":{"root_cause":[{"type":"illegal_argument_exception","reason":"Failed to parse value [yes] as only [true] or [false] are allowed."}],"type":"illegal_argument_exception","reason":"Failed to parse value [yes] as only [true] or [false] are allowed."},"status":400}"#
        );
        assert_eq!(headers[1].1, "application/json");
        // pretty is parsed before human.
        let (_, _, body) = answer(run(&format!("{PATH}?human=b&pretty=a"), &[JSON], true));
        assert!(body.contains("Failed to parse value [a]"));
        let (_, _, body) = answer(run(&format!("{PATH}?human=b&pretty"), &[JSON], true));
        assert!(body.contains("Failed to parse value [b]"));
        assert!(forwarded(run(
            &format!("{PATH}?human=b"),
            &[JSON, ("accept", "application/cbor")],
            true
        )));
    }

    #[test]
    fn error_trace() {
        assert!(forwarded(run(&format!("{PATH}?error_trace"), &[JSON], true)));
        assert!(forwarded(run(&format!("{PATH}?error_trace=true"), &[JSON], true)));
        assert!(!forwarded(run(&format!("{PATH}?error_trace=false"), &[JSON], true)));
        let (status, _, body) = answer(run(&format!("{PATH}?error_trace=maybe&pretty"), &[JSON], true));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            "{\n  \"error\" : \"Failed to parse value [maybe] as only [true] or [false] are allowed.\",\n  \"status\" : 400\n}\n"
        );
    }

    #[test]
    fn output_formats() {
        assert!(forwarded(run(&format!("{PATH}?format=yaml"), &[JSON], true)));
        assert!(forwarded(run(PATH, &[JSON, ("accept", "application/smile")], true)));
        assert!(forwarded(run(PATH, &[("content-type", "application/cbor")], false)));
        let vnd = "application/vnd.elasticsearch+json; compatible-with=8";
        let p = plan(run(PATH, &[("accept", vnd), ("content-type", vnd)], true));
        assert_eq!(
            p.format.content_type,
            "application/vnd.elasticsearch+json;compatible-with=8"
        );
        let p = plan(run(
            &format!("{PATH}?format=json"),
            &[("accept", vnd), ("content-type", vnd)],
            true,
        ));
        assert_eq!(p.format.content_type, "application/json;compatible-with=8");
        assert!(forwarded(run(
            &format!("{PATH}?rest.exception.cause.skip=true"),
            &[JSON],
            true
        )));
    }

    #[test]
    fn content_type_406() {
        let (status, headers, body) = answer(run(PATH, &[], true));
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
        assert_eq!(body, r#"{"error":"Content-Type header is missing","status":406}"#);
        assert_eq!(headers[0], ("x-elastic-product".to_owned(), "Elasticsearch".to_owned()));
        let (status, _, body) = answer(run(PATH, &[("content-type", "text/plain; charset=UTF-8")], true));
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
        assert_eq!(
            body,
            r#"{"error":"Content-Type header [text/plain; charset=UTF-8] is not supported","status":406}"#
        );
        let (_, _, body) = answer(run(&format!("{PATH}?pretty"), &[("content-type", "*/*")], true));
        assert_eq!(
            body,
            "{\n  \"error\" : \"Content-Type header [*/*] is not supported\",\n  \"status\" : 406\n}\n"
        );
        assert!(forwarded(run(PATH, &[("content-type", "application/yaml")], true)));
        // 406 comes after the channel's parameters.
        let (status, _, _) = answer(run(&format!("{PATH}?human=x"), &[], true));
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn absolute_form_targets_are_checked_as_they_are_forwarded() {
        assert!(matches!(
            run("http://es:9200/_connector/my-connector/_error", &[JSON], true),
            Precheck::Check(_)
        ));
        let (status, _, _) = answer(run("http://any/_connector/my-connector/_error?pretty=x", &[JSON], true));
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn single_valued_headers() {
        assert!(forwarded(run(
            PATH,
            &[JSON, ("x-opaque-id", "a"), ("x-opaque-id", "b")],
            true
        )));
        let p = plan(run(PATH, &[JSON, ("x-opaque-id", "a"), ("x-opaque-id", "a")], true));
        assert_eq!(p.format.opaque_id, Some(HeaderValue::from_static("a")));
    }
}
