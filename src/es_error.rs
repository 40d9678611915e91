//! Elasticsearch's error envelope, written byte for byte the way Elasticsearch writes it.
//!
//! Every answer esgate makes itself uses this module, so a client sees one error shape whoever
//! answered: `{"error":{"root_cause":[{"type":T,"reason":R}],"type":T,"reason":R},"status":N}` with
//! `content-type: application/json` (see `docs/connector-error.md`, "Response headers and formats").
//!
//! Strings are escaped as Jackson's UTF-8 generator escapes them, which differs from `serde_json`:
//! characters outside the Basic Multilingual Plane are written as two `\uXXXX` surrogate escapes.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};

use crate::body::Body;

/// `content-type` of every JSON answer esgate writes.
pub const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// The `type` of the error esgate answers when no upstream node could be reached, or the
/// connection broke before a response arrived (502).
pub const BAD_GATEWAY_TYPE: &str = "esgate_bad_gateway_exception";
/// The `type` of the error esgate answers when an intercepted body is over the limit (413).
pub const CONTENT_TOO_LONG_TYPE: &str = "esgate_content_too_long_exception";
/// The `type` of the error esgate answers when the upstream did not start its response in time (504).
pub const GATEWAY_TIMEOUT_TYPE: &str = "esgate_gateway_timeout_exception";
/// The `type` of the error esgate answers to a request it will not forward because its framing or
/// method breaks HTTP/1.1 (400), such as `Transfer-Encoding: identity, chunked` or `CONNECT`.
pub const BAD_REQUEST_TYPE: &str = "esgate_bad_request_exception";

/// Appends `s` to `out` as a JSON string literal, escaped the way Jackson escapes it.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    write_json_wtf8(out, s.as_bytes());
}

/// Appends a JSON string literal for WTF-8 text: UTF-8 that may also hold lone surrogates
/// (encoded as the 3-byte sequences `ED A0 80`..`ED BF BF`), as a Java string can. Jackson's UTF-8
/// generator escapes `"`, `\\` and control characters, writes other BMP characters raw, and writes
/// every UTF-16 surrogate (of a pair, or alone) as a `\uXXXX` escape.
pub fn write_json_wtf8(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut i = 0;
    let mut start = 0;
    while i < s.len() {
        let b = s[i];
        let (len, escape) = match b {
            b'"' => (1, Escape::Short(b"\\\"")),
            b'\\' => (1, Escape::Short(b"\\\\")),
            b'\n' => (1, Escape::Short(b"\\n")),
            b'\r' => (1, Escape::Short(b"\\r")),
            b'\t' => (1, Escape::Short(b"\\t")),
            0x08 => (1, Escape::Short(b"\\b")),
            0x0c => (1, Escape::Short(b"\\f")),
            0x00..=0x1f => (1, Escape::Units([u16::from(b), 0], 1)),
            0x20..=0x7f => {
                i += 1;
                continue;
            }
            0xED if s.get(i + 1).is_some_and(|c| *c >= 0xA0) && i + 2 < s.len() => {
                let unit = 0xD000 | (u16::from(s[i + 1] & 0x3F) << 6) | u16::from(s[i + 2] & 0x3F);
                (3, Escape::Units([unit, 0], 1))
            }
            0xF0..=0xF4 if i + 3 < s.len() => {
                let c = (u32::from(b & 0x07) << 18)
                    | (u32::from(s[i + 1] & 0x3F) << 12)
                    | (u32::from(s[i + 2] & 0x3F) << 6)
                    | u32::from(s[i + 3] & 0x3F);
                let c = c.saturating_sub(0x1_0000);
                let high = 0xD800 | ((c >> 10) & 0x3FF) as u16;
                let low = 0xDC00 | (c & 0x3FF) as u16;
                (4, Escape::Units([high, low], 2))
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&s[start..i]);
        match escape {
            Escape::Short(e) => out.extend_from_slice(e),
            Escape::Units(units, n) => {
                for unit in &units[..n] {
                    push_unicode_escape(out, *unit);
                }
            }
        }
        i += len;
        start = i;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

enum Escape {
    Short(&'static [u8]),
    Units([u16; 2], usize),
}

/// Writes `\uXXXX` with upper-case hex digits, as Jackson does.
pub fn push_unicode_escape(out: &mut Vec<u8>, unit: u16) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[usize::from((unit >> shift) & 0xF)]);
    }
}

/// The compact "detailed" error body with one root cause equal to the error itself.
pub fn error_body(status: StatusCode, error_type: &str, reason: &str) -> Bytes {
    let mut out = Vec::with_capacity(96 + 2 * (error_type.len() + reason.len()));
    out.extend_from_slice(b"{\"error\":{\"root_cause\":[");
    write_type_reason(&mut out, error_type, reason);
    out.extend_from_slice(b"],");
    // The outer error repeats type and reason without the braces of a root-cause entry.
    out.extend_from_slice(b"\"type\":");
    write_json_string(&mut out, error_type);
    out.extend_from_slice(b",\"reason\":");
    write_json_string(&mut out, reason);
    out.extend_from_slice(b"},\"status\":");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b'}');
    Bytes::from(out)
}

fn write_type_reason(out: &mut Vec<u8>, error_type: &str, reason: &str) {
    out.extend_from_slice(b"{\"type\":");
    write_json_string(out, error_type);
    out.extend_from_slice(b",\"reason\":");
    write_json_string(out, reason);
    out.push(b'}');
}

/// A complete JSON response with `content-type` and `content-length` set.
pub fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let len = HeaderValue::from(body.len());
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, APPLICATION_JSON);
    headers.insert(CONTENT_LENGTH, len);
    response
}

/// 502 in Elasticsearch's shape: no node could be reached, or the connection broke before a response.
pub fn bad_gateway(reason: &str) -> Response<Body> {
    let status = StatusCode::BAD_GATEWAY;
    json_response(status, error_body(status, BAD_GATEWAY_TYPE, reason))
}

/// 504 in Elasticsearch's shape: the upstream did not start a response within the timeout.
pub fn gateway_timeout(reason: &str) -> Response<Body> {
    let status = StatusCode::GATEWAY_TIMEOUT;
    json_response(status, error_body(status, GATEWAY_TIMEOUT_TYPE, reason))
}

/// 400 in Elasticsearch's shape: a request esgate will not forward (see [`crate::hop::framing_error`]).
pub fn bad_request(reason: &str) -> Response<Body> {
    let status = StatusCode::BAD_REQUEST;
    json_response(status, error_body(status, BAD_REQUEST_TYPE, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = Vec::new();
        write_json_string(&mut out, s);
        String::from_utf8(out).expect("escaping keeps UTF-8")
    }

    #[test]
    fn escapes_like_jackson() {
        assert_eq!(escaped("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(escaped("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(escaped("\u{0}\u{1f}"), r#""\u0000\u001F""#);
        assert_eq!(escaped("é/ü"), "\"é/ü\"");
        assert_eq!(escaped("😀"), r#""\uD83D\uDE00""#);
    }

    #[test]
    fn lone_surrogates_in_wtf8_are_escaped() {
        let mut out = Vec::new();
        write_json_wtf8(&mut out, b"a\xED\xA0\x80b\xED\xBF\xBF");
        assert_eq!(out, br#""a\uD800b\uDFFF""#);
    }

    #[test]
    fn error_body_matches_elasticsearch_layout() {
        let body = error_body(StatusCode::BAD_REQUEST, "parse_exception", "request body is required");
        assert_eq!(
            &body[..],
            br#"{"error":{"root_cause":[{"type":"parse_exception","reason":"request body is required"}],"type":"parse_exception","reason":"request body is required"},"status":400}"#
        );
    }

    #[test]
    fn error_body_is_valid_json() {
        let body = error_body(StatusCode::BAD_GATEWAY, BAD_GATEWAY_TYPE, "x \"y\" \u{1}");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(v["status"], 502);
        assert_eq!(v["error"]["root_cause"][0]["reason"], "x \"y\" \u{1}");
    }
}
