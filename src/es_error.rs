//! Elasticsearch's error envelope, written byte for byte the way Elasticsearch writes it.
//!
//! Every answer esgate makes itself uses this module, so a client sees one error shape whoever
//! answered: `{"error":{"root_cause":[{"type":T,"reason":R}],"type":T,"reason":R},"status":N}` with
//! `content-type: application/json` (see `docs/connector-error.md`, "Response headers and formats").
//!
//! The one writer of the envelope is [`EsError::to_compact`] (the model's own error type); this
//! module adds the response around it and names esgate's own answers (502, 503, 504, 400). Strings
//! are escaped as Jackson escapes them ([`crate::elasticsearch::json`]).

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};

use crate::body::Body;
pub use crate::elasticsearch::json::{push_unicode_escape, write_json_string, write_json_wtf8};
use crate::elasticsearch::EsError;

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

/// The compact "detailed" error body of a single exception, its own root cause: the writer is
/// [`EsError::to_compact`], the one for every error esgate answers.
pub fn error_body(status: StatusCode, error_type: &'static str, reason: &str) -> Bytes {
    Bytes::from(EsError::new(status.as_u16(), error_type, reason).to_compact())
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

/// 503 in Elasticsearch's shape: esgate cannot open a connection for a reason of its own host.
pub fn service_unavailable(error_type: &'static str, reason: &str) -> Response<Body> {
    let status = StatusCode::SERVICE_UNAVAILABLE;
    json_response(status, error_body(status, error_type, reason))
}

/// 400 in Elasticsearch's shape for an esgate error of type `error_type`.
pub fn client_error(error_type: &'static str, reason: &str) -> Response<Body> {
    let status = StatusCode::BAD_REQUEST;
    json_response(status, error_body(status, error_type, reason))
}

/// 400 in Elasticsearch's shape: a request esgate will not forward (see [`crate::hop::framing_error`]).
pub fn bad_request(reason: &str) -> Response<Body> {
    let status = StatusCode::BAD_REQUEST;
    json_response(status, error_body(status, BAD_REQUEST_TYPE, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

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
