//! Answers as Elasticsearch writes them, byte for byte (`docs/connector-error.md`,
//! "Response headers and formats").
//!
//! Two body formats: the detailed one (`{"error":{"root_cause":[…],"type":…,"reason":…,
//! "caused_by":…},"status":N}`) and the simple one (`{"error":"<text>","status":N}`), each compact
//! or, with `?pretty`, laid out by Jackson's `DefaultPrettyPrinter` as `XContentBuilder` sets it up:
//! two-space indentation for objects and arrays, `" : "` between name and value, and a final line
//! feed. Headers come in the order `DefaultRestChannel` adds them: `X-Opaque-Id`, the thread
//! context's `X-elastic-product`, `content-type`, `content-length`.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};

use super::error::{Cause, EsError, Field};
use super::json::write_json_wtf8;
use crate::body::Body;

pub use crate::headers::{ELASTICSEARCH, X_ELASTIC_PRODUCT, X_OPAQUE_ID};

/// The detailed error body, compact or pretty.
pub fn detailed_body(error: &EsError, pretty: bool) -> Vec<u8> {
    if !pretty {
        return error.to_compact();
    }
    let mut out = Vec::with_capacity(512);
    write(&mut out, &detailed_tree(error), Some(0));
    out.push(b'\n');
    out
}

/// The simple error body, `{"error":"<text>","status":N}`, compact or pretty. `text` is WTF-8.
pub fn simple_body(text: &[u8], status: u16, pretty: bool) -> Vec<u8> {
    let tree = Json::Object(vec![("error", Json::Str(text)), ("status", Json::Number(status))]);
    let mut out = Vec::with_capacity(text.len() + 32);
    write(&mut out, &tree, pretty.then_some(0));
    if pretty {
        out.push(b'\n');
    }
    out
}

/// A complete answer: `status`, the headers in Elasticsearch's order, `body`.
pub fn response(
    status: u16,
    body: Vec<u8>,
    content_type: &HeaderValue,
    opaque_id: Option<&HeaderValue>,
) -> Response<Body> {
    let length = HeaderValue::from(body.len());
    let mut response = Response::new(Body::full(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let headers = response.headers_mut();
    if let Some(id) = opaque_id {
        headers.insert(X_OPAQUE_ID, id.clone());
    }
    headers.insert(X_ELASTIC_PRODUCT, ELASTICSEARCH);
    headers.insert(CONTENT_TYPE, content_type.clone());
    headers.insert(CONTENT_LENGTH, length);
    response
}

/// A JSON value, just what the error formats need.
enum Json<'a> {
    Str(&'a [u8]),
    Number(u16),
    Big(u64),
    Object(Vec<(&'static str, Json<'a>)>),
    Array(Vec<Json<'a>>),
}

fn detailed_tree(error: &EsError) -> Json<'_> {
    let root = error.chain.get(error.root.min(error.chain.len().saturating_sub(1)));
    let root_cause = root.map(|c| Json::Object(fields(c))).into_iter().collect();
    let mut inner = vec![("root_cause", Json::Array(root_cause))];
    inner.extend(chain(&error.chain));
    Json::Object(vec![
        ("error", Json::Object(inner)),
        ("status", Json::Number(error.status)),
    ])
}

fn fields(cause: &Cause) -> Vec<(&'static str, Json<'_>)> {
    let mut out = vec![
        ("type", Json::Str(cause.error_type.as_bytes())),
        ("reason", Json::Str(&cause.reason)),
    ];
    out.extend(cause.fields.iter().map(|(name, value)| {
        let value = match value {
            Field::Number(n) => Json::Big(*n),
            Field::Text(t) => Json::Str(t.as_bytes()),
        };
        (*name, value)
    }));
    out
}

/// The fields of the first exception of `chain`, its cause nested as `caused_by`.
fn chain(chain: &[Cause]) -> Vec<(&'static str, Json<'_>)> {
    let Some((first, rest)) = chain.split_first() else {
        return Vec::new();
    };
    let mut out = fields(first);
    if !rest.is_empty() {
        out.push(("caused_by", Json::Object(self::chain(rest))));
    }
    out
}

/// Writes `value`; `indent` is the nesting level when pretty, `None` when compact.
fn write(out: &mut Vec<u8>, value: &Json<'_>, indent: Option<usize>) {
    let newline = |out: &mut Vec<u8>, level: usize| {
        out.push(b'\n');
        out.extend(std::iter::repeat_n(b' ', 2 * level));
    };
    let inner = indent.map(|level| level + 1);
    match value {
        Json::Str(s) => write_json_wtf8(out, s),
        Json::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Json::Big(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Json::Object(entries) => {
            out.push(b'{');
            for (i, (name, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if let Some(level) = inner {
                    newline(out, level);
                }
                write_json_wtf8(out, name.as_bytes());
                out.extend_from_slice(if indent.is_some() { b" : " } else { b":" });
                write(out, v, inner);
            }
            match indent {
                Some(_) if entries.is_empty() => out.push(b' '),
                Some(level) => newline(out, level),
                None => {}
            }
            out.push(b'}');
        }
        Json::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if let Some(level) = inner {
                    newline(out, level);
                }
                write(out, v, inner);
            }
            match indent {
                Some(_) if items.is_empty() => out.push(b' '),
                Some(level) => newline(out, level),
                None => {}
            }
            out.push(b']');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START_OBJECT: &str =
        "[1:10] [connector_update_error_request] error doesn't support values of type: START_OBJECT";

    fn body_of(response: &Response<Body>) -> &[u8] {
        match response.body() {
            Body::Full(bytes) => bytes,
            _ => b"",
        }
    }

    #[test]
    fn compact_detailed_is_the_worked_example() {
        // The worked example of docs/connector-error.md: content-length 315.
        let e = EsError::bad_request("x_content_parse_exception", START_OBJECT);
        let body = detailed_body(&e, false);
        assert_eq!(
            String::from_utf8_lossy(&body),
            r#"{"error":{"root_cause":[{"type":"x_content_parse_exception","reason":"[1:10] [connector_update_error_request] error doesn't support values of type: START_OBJECT"}],"type":"x_content_parse_exception","reason":"[1:10] [connector_update_error_request] error doesn't support values of type: START_OBJECT"},"status":400}"#
        );
        assert_eq!(body.len(), 315);
    }

    #[test]
    fn pretty_detailed_is_the_worked_example() {
        let e = EsError::bad_request("x_content_parse_exception", START_OBJECT);
        let expected = format!(
            "{{\n  \"error\" : {{\n    \"root_cause\" : [\n      {{\n        \"type\" : \"x_content_parse_exception\",\n        \"reason\" : \"{START_OBJECT}\"\n      }}\n    ],\n    \"type\" : \"x_content_parse_exception\",\n    \"reason\" : \"{START_OBJECT}\"\n  }},\n  \"status\" : 400\n}}\n"
        );
        assert_eq!(String::from_utf8_lossy(&detailed_body(&e, true)), expected);
    }

    #[test]
    fn pretty_nests_caused_by_and_escapes_like_jackson() {
        let e = EsError::bad_request("x_content_parse_exception", "[1:10] failed")
            .caused_by("x_content_e_o_f_exception", "[1:12] Unexpected end of file")
            .caused_by("json_e_o_f_exception", "line\n \"q\" \u{1} 😀")
            .with_root(1);
        let expected = concat!(
            "{\n",
            "  \"error\" : {\n",
            "    \"root_cause\" : [\n",
            "      {\n",
            "        \"type\" : \"x_content_e_o_f_exception\",\n",
            "        \"reason\" : \"[1:12] Unexpected end of file\"\n",
            "      }\n",
            "    ],\n",
            "    \"type\" : \"x_content_parse_exception\",\n",
            "    \"reason\" : \"[1:10] failed\",\n",
            "    \"caused_by\" : {\n",
            "      \"type\" : \"x_content_e_o_f_exception\",\n",
            "      \"reason\" : \"[1:12] Unexpected end of file\",\n",
            "      \"caused_by\" : {\n",
            "        \"type\" : \"json_e_o_f_exception\",\n",
            "        \"reason\" : \"line\\n \\\"q\\\" \\u0001 \\uD83D\\uDE00\"\n",
            "      }\n",
            "    }\n",
            "  },\n",
            "  \"status\" : 400\n",
            "}\n",
        );
        assert_eq!(String::from_utf8_lossy(&detailed_body(&e, true)), expected);
        // The tree written compact is `to_compact`.
        let mut compact = Vec::new();
        write(&mut compact, &detailed_tree(&e), None);
        assert_eq!(compact, e.to_compact());
    }

    #[test]
    fn simple_bodies() {
        assert_eq!(
            simple_body(b"Content-Type header is missing", 406, false),
            br#"{"error":"Content-Type header is missing","status":406}"#
        );
        assert_eq!(
            String::from_utf8_lossy(&simple_body(
                b"Content-Type header [text/plain] is not supported",
                406,
                true
            )),
            "{\n  \"error\" : \"Content-Type header [text/plain] is not supported\",\n  \"status\" : 406\n}\n"
        );
        assert_eq!(
            simple_body("a\"é".as_bytes(), 400, false),
            "{\"error\":\"a\\\"é\",\"status\":400}".as_bytes()
        );
    }

    #[test]
    fn empty_containers_like_jackson() {
        let mut out = Vec::new();
        write(
            &mut out,
            &Json::Object(vec![("a", Json::Array(vec![])), ("b", Json::Object(vec![]))]),
            Some(0),
        );
        assert_eq!(String::from_utf8_lossy(&out), "{\n  \"a\" : [ ],\n  \"b\" : { }\n}");
    }

    #[test]
    fn headers_in_elasticsearch_order() {
        let body = simple_body(b"x", 406, false);
        let len = body.len();
        let id = HeaderValue::from_static("my-id");
        let ct = HeaderValue::from_static("application/vnd.elasticsearch+json;compatible-with=9");
        let r = response(406, body, &ct, Some(&id));
        assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);
        let names: Vec<&str> = r.headers().keys().map(http::HeaderName::as_str).collect();
        assert_eq!(
            names,
            ["x-opaque-id", "x-elastic-product", "content-type", "content-length"]
        );
        assert_eq!(r.headers()[X_OPAQUE_ID], "my-id");
        assert_eq!(r.headers()[X_ELASTIC_PRODUCT], "Elasticsearch");
        assert_eq!(
            r.headers()[CONTENT_TYPE],
            "application/vnd.elasticsearch+json;compatible-with=9"
        );
        assert_eq!(r.headers()[CONTENT_LENGTH], len.to_string().as_str());
        assert_eq!(body_of(&r), br#"{"error":"x","status":406}"#);
        let r = response(400, b"{}".to_vec(), &ct, None);
        let names: Vec<&str> = r.headers().keys().map(http::HeaderName::as_str).collect();
        assert_eq!(names, ["x-elastic-product", "content-type", "content-length"]);
    }
}
