//! The built-in development upstream (`--dev`): a tiny in-memory stand-in for Elasticsearch.
//!
//! It listens on a loopback port of its own and esgate forwards to it exactly as to a real node,
//! so the whole stack (connector-error checks, pass-through, upstream client) runs with no
//! Elasticsearch around. It is for trying esgate out and for end-to-end tests, not a fake of
//! Elasticsearch's behaviour beyond these routes:
//!
//! | route | answer |
//! |---|---|
//! | `GET /`, `HEAD /` | cluster info, reporting `upstream.dev_version` (default [`DEFAULT_VERSION`]) |
//! | `GET /_connector` | `{"count":N,"results":[…]}` |
//! | `PUT /_connector/<id>` | create or update; `{"result":"created"|"updated","id":…}` |
//! | `GET /_connector/<id>`, `DELETE /_connector/<id>` | the connector; `{"acknowledged":true}` |
//! | `PUT /_connector/<id>/_error` | `error` and `status` (`error`, or `connected` for null/empty); `{"result":"updated"}` |
//! | `PUT /_connector/<id>/_check_in` | `last_seen` set to now; `{"result":"updated"}` |
//! | `POST /.elastic-connectors/_update/<id>` | `doc` merged into the connector, as the connectors service sets and clears errors; Elasticsearch's write answer (`result`, `_version`, `_seq_no`) |
//! | `GET /.elastic-connectors/_doc/<id>` | the connector as a document (`found`, `_source`) |
//!
//! A missing connector gets Elasticsearch's 404 bodies. Every answer carries
//! `X-elastic-product: Elasticsearch`, as Elasticsearch's own do.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use crate::body::Body;
use crate::connector_error::{decode_body, Decoded};
use crate::es_error::{error_body, json_response};

/// The header every Elasticsearch answer carries and official clients check for.
pub use crate::headers::X_ELASTIC_PRODUCT;
const MAX_BODY: usize = 1024 * 1024;

/// The version the development upstream reports unless told otherwise: the newest modelled.
pub const DEFAULT_VERSION: &str = "9.5.0";

/// In-memory connectors, shared by all connections to the development upstream.
#[derive(Clone, Debug)]
pub struct DevUpstream {
    connectors: Arc<Mutex<BTreeMap<String, Map<String, Value>>>>,
    /// Writes so far: each document write's `_seq_no` and `_version`.
    writes: Arc<std::sync::atomic::AtomicU64>,
    /// `GET /`'s answer.
    info: Arc<str>,
}

impl Default for DevUpstream {
    fn default() -> Self {
        Self::with_version(DEFAULT_VERSION)
    }
}

impl DevUpstream {
    /// An empty development upstream that reports [`DEFAULT_VERSION`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty development upstream whose `GET /` reports `version` (`9.2.1`).
    pub fn with_version(version: &str) -> Self {
        DevUpstream {
            connectors: Arc::default(),
            writes: Arc::default(),
            info: Arc::from(cluster_info(version).to_string()),
        }
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                return Ok(product(error(
                    StatusCode::BAD_REQUEST,
                    "parse_exception",
                    &format!("could not read the body: {e}"),
                )))
            }
        };
        // Like Elasticsearch, take gzip/deflate bodies (clients with compression on send them).
        let body = match decode_body(parts.headers.get_all(CONTENT_ENCODING), &body, MAX_BODY) {
            Decoded::Plain(plain) => plain,
            _ => body,
        };
        let raw_path = parts.uri.path();
        let segments: Vec<&str> = raw_path.trim_start_matches('/').split('/').collect();
        let segments: Vec<&str> = match segments.iter().rposition(|s| !s.is_empty()) {
            Some(last) => segments[..=last].to_vec(),
            None => Vec::new(),
        };
        let method = &parts.method;
        let response = match (method, segments.as_slice()) {
            (&Method::GET | &Method::HEAD, []) => json_response(StatusCode::OK, Bytes::from(self.info.to_string())),
            (&Method::GET, ["_connector"]) => self.list(),
            (_, ["_connector", id]) => {
                let id = percent_decode(id);
                match *method {
                    Method::PUT => self.put(&id, &body),
                    Method::GET => self.get(&id),
                    Method::DELETE => self.delete(&id),
                    _ => no_handler(&parts.uri, method),
                }
            }
            (&Method::PUT, ["_connector", id, "_error"]) => self.update_error(&percent_decode(id), &body),
            (&Method::PUT, ["_connector", id, "_check_in"]) => self.check_in(&percent_decode(id)),
            (&Method::POST, [index, "_update", id]) if is_connectors_index(index) => {
                self.update_doc(&percent_decode(id), &body)
            }
            (&Method::GET, [index, "_doc", id]) if is_connectors_index(index) => self.get_doc(&percent_decode(id)),
            _ => no_handler(&parts.uri, method),
        };
        Ok(product(response))
    }

    fn store(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Map<String, Value>>> {
        self.connectors.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn list(&self) -> Response<Body> {
        let store = self.store();
        let results: Vec<Value> = store.values().cloned().map(Value::Object).collect();
        ok(json!({ "count": results.len(), "results": results }))
    }

    fn put(&self, id: &str, body: &Bytes) -> Response<Body> {
        let fields = match parse_object(body) {
            Ok(fields) => fields,
            Err(response) => return *response,
        };
        let mut store = self.store();
        let created = !store.contains_key(id);
        let doc = store.entry(id.to_owned()).or_insert_with(|| new_connector(id));
        for key in [
            "index_name",
            "name",
            "description",
            "service_type",
            "is_native",
            "language",
        ] {
            if let Some(v) = fields.get(key) {
                doc.insert(key.to_owned(), v.clone());
            }
        }
        let (status, result) = if created {
            (StatusCode::CREATED, "created")
        } else {
            (StatusCode::OK, "updated")
        };
        respond(status, json!({ "result": result, "id": id }))
    }

    fn get(&self, id: &str) -> Response<Body> {
        match self.store().get(id) {
            Some(doc) => ok(Value::Object(doc.clone())),
            None => not_found(id),
        }
    }

    fn delete(&self, id: &str) -> Response<Body> {
        match self.store().remove(id) {
            Some(_) => ok(json!({ "acknowledged": true })),
            None => not_found(id),
        }
    }

    fn update_error(&self, id: &str, body: &Bytes) -> Response<Body> {
        let fields = match parse_object(body) {
            Ok(fields) => fields,
            Err(response) => return *response,
        };
        let value = fields.get("error").cloned().unwrap_or(Value::Null);
        let mut store = self.store();
        let Some(doc) = store.get_mut(id) else {
            return document_missing(id);
        };
        let status = match &value {
            Value::String(s) if !s.is_empty() => "error",
            _ => "connected",
        };
        let unchanged = doc.get("error") == Some(&value) && doc.get("status") == Some(&json!(status));
        doc.insert("error".into(), value);
        doc.insert("status".into(), json!(status));
        ok(json!({ "result": if unchanged { "noop" } else { "updated" } }))
    }
}

impl DevUpstream {
    /// The next `_seq_no` (and `_version`, kept as one counter here).
    fn next_write(&self) -> u64 {
        self.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn check_in(&self, id: &str) -> Response<Body> {
        let mut store = self.store();
        let Some(doc) = store.get_mut(id) else {
            return not_found(id);
        };
        let now = crate::audit::event::rfc3339_millis(std::time::SystemTime::now());
        doc.insert("last_seen".into(), json!(now));
        ok(json!({ "result": "updated" }))
    }

    /// `_update` with a partial `doc`, merged key by key (objects recursively), as Elasticsearch
    /// does; `noop` when nothing changes.
    fn update_doc(&self, id: &str, body: &Bytes) -> Response<Body> {
        let fields = match parse_object(body) {
            Ok(fields) => fields,
            Err(response) => return *response,
        };
        let Some(Value::Object(partial)) = fields.get("doc") else {
            return error(
                StatusCode::BAD_REQUEST,
                "action_request_validation_exception",
                "Validation Failed: 1: script or doc is missing;",
            );
        };
        let mut store = self.store();
        let Some(doc) = store.get_mut(id) else {
            return document_missing(id);
        };
        let before = doc.clone();
        merge(doc, partial);
        let result = if *doc == before { "noop" } else { "updated" };
        let seq = self.next_write();
        ok(json!({
            "_index": CONNECTORS_INDEX,
            "_id": id,
            "_version": seq + 1,
            "result": result,
            "_shards": { "total": 2, "successful": 1, "failed": 0 },
            "_seq_no": seq,
            "_primary_term": 1
        }))
    }

    fn get_doc(&self, id: &str) -> Response<Body> {
        let store = self.store();
        match store.get(id) {
            Some(doc) => {
                let seq = self.writes.load(std::sync::atomic::Ordering::Relaxed);
                ok(json!({
                    "_index": CONNECTORS_INDEX,
                    "_id": id,
                    "_version": seq.max(1),
                    "_seq_no": seq.saturating_sub(1),
                    "_primary_term": 1,
                    "found": true,
                    "_source": Value::Object(doc.clone())
                }))
            }
            None => respond(
                StatusCode::NOT_FOUND,
                json!({ "_index": CONNECTORS_INDEX, "_id": id, "found": false }),
            ),
        }
    }
}

/// The connector index behind the `.elastic-connectors` alias.
const CONNECTORS_INDEX: &str = ".elastic-connectors-v1";

fn is_connectors_index(index: &str) -> bool {
    matches!(percent_decode(index).as_str(), ".elastic-connectors" | CONNECTORS_INDEX)
}

/// Merges `partial` into `doc` as `_update` does: objects key by key, anything else replaced.
fn merge(doc: &mut Map<String, Value>, partial: &Map<String, Value>) {
    for (key, value) in partial {
        match (doc.get_mut(key), value) {
            (Some(Value::Object(inner)), Value::Object(part)) => merge(inner, part),
            _ => {
                doc.insert(key.clone(), value.clone());
            }
        }
    }
}

fn new_connector(id: &str) -> Map<String, Value> {
    let mut doc = Map::new();
    doc.insert("id".into(), json!(id));
    for key in ["index_name", "name", "description", "service_type", "language", "error"] {
        doc.insert(key.into(), Value::Null);
    }
    doc.insert("is_native".into(), json!(false));
    doc.insert("deleted".into(), json!(false));
    doc.insert("status".into(), json!("created"));
    doc
}

/// The body as a JSON object, or the 400 answer (type and reason) for a body that is not one.
fn parse_object(body: &Bytes) -> Result<Map<String, Value>, Box<Response<Body>>> {
    let bad = |error_type: &'static str, reason: &str| Box::new(error(StatusCode::BAD_REQUEST, error_type, reason));
    if body.is_empty() {
        return Err(bad("parse_exception", "request body is required"));
    }
    // Elasticsearch keeps a lone surrogate (`\uD800`); `serde_json` refuses one, so the
    // development upstream stores U+FFFD in its place.
    let parsed = serde_json::from_slice::<Value>(body)
        .or_else(|e| serde_json::from_slice::<Value>(&replace_lone_surrogates(body)).map_err(|_| e));
    match parsed {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(bad("x_content_parse_exception", "expected an object")),
        Err(e) => Err(bad("x_content_parse_exception", &e.to_string())),
    }
}

/// `body` with every `\uXXXX` escape of a surrogate that is not half of a pair replaced by
/// `\uFFFD`.
fn replace_lone_surrogates(body: &[u8]) -> Vec<u8> {
    let unit = |at: usize| -> Option<u16> {
        let hex = body.get(at..at + 6)?.strip_prefix(b"\\u")?;
        u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    };
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        match unit(i) {
            Some(0xD800..=0xDBFF) if unit(i + 6).is_some_and(|low| (0xDC00..=0xDFFF).contains(&low)) => {
                out.extend_from_slice(&body[i..i + 12]);
                i += 12;
            }
            Some(0xD800..=0xDFFF) => {
                out.extend_from_slice(b"\\uFFFD");
                i += 6;
            }
            _ if body[i] == b'\\' => {
                // Any other escape, `\\` included, is copied whole so its second byte is not
                // taken for the start of another.
                out.extend_from_slice(&body[i..(i + 2).min(body.len())]);
                i += 2;
            }
            _ => {
                out.push(body[i]);
                i += 1;
            }
        }
    }
    out
}

/// `GET /` as Elasticsearch answers it, for a node of `version`.
fn cluster_info(version: &str) -> Value {
    let major = crate::elasticsearch::Version::parse(version).map_or(9, |v| v.major);
    // What releases of that major report (the Lucene line, the oldest wire and index versions).
    let (lucene, wire, index) = match major {
        0..=8 => ("9.12.0", "7.17.0", "7.0.0"),
        _ => ("10.3.1", "8.19.0", "8.0.0"),
    };
    json!({
        "name": "esgate-dev",
        "cluster_name": "esgate-dev",
        "cluster_uuid": "ZXNnYXRlLWRldi0wMDAx",
        "version": {
            "number": version,
            "build_flavor": "default",
            "build_type": "esgate-dev",
            "lucene_version": lucene,
            "minimum_wire_compatibility_version": wire,
            "minimum_index_compatibility_version": index
        },
        "tagline": "You Know, for Search"
    })
}

fn ok(value: Value) -> Response<Body> {
    respond(StatusCode::OK, value)
}

fn respond(status: StatusCode, value: Value) -> Response<Body> {
    json_response(status, Bytes::from(value.to_string()))
}

fn error(status: StatusCode, error_type: &'static str, reason: &str) -> Response<Body> {
    json_response(status, error_body(status, error_type, reason))
}

fn not_found(id: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "resource_not_found_exception",
        &format!("connector [{id}] not found"),
    )
}

/// Elasticsearch's answer when the connectors index exists but not the connector (`docs/connector-error.md`, "Route").
fn document_missing(id: &str) -> Response<Body> {
    let reason = format!("[{id}]: document missing");
    let cause = json!({
        "type": "document_missing_exception",
        "reason": reason,
        "index_uuid": "ZXNnYXRlZGV2aW5kZXgx",
        "shard": "0",
        "index": ".elastic-connectors-v1"
    });
    let mut outer = cause.clone();
    let body = json!({ "error": { "root_cause": [cause], "type": "document_missing_exception", "reason": reason,
        "index_uuid": outer["index_uuid"].take(), "shard": outer["shard"].take(), "index": outer["index"].take() }, "status": 404 });
    respond(StatusCode::NOT_FOUND, body)
}

fn no_handler(uri: &http::Uri, method: &Method) -> Response<Body> {
    let body = json!({ "error": format!("no handler found for uri [{uri}] and method [{method}]") });
    respond(StatusCode::BAD_REQUEST, body)
}

fn product(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert(X_ELASTIC_PRODUCT, crate::headers::ELASTICSEARCH);
    headers
        .entry(CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("application/json"));
    response
}

/// Decodes `%XX` escapes; anything malformed is kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{cluster_info, parse_object, percent_decode};
    use bytes::Bytes;

    #[test]
    fn lone_surrogates_are_stored_as_replacement_characters() {
        let body = br#"{"error":"a\uDCB2b \uD83D\uDE00 \\uD800 \uD800"}"#;
        let fields = parse_object(&Bytes::from_static(body)).expect("parsed");
        assert_eq!(fields["error"], "a\u{FFFD}b \u{1F600} \\uD800 \u{FFFD}");
    }

    #[test]
    fn cluster_info_reports_the_version() {
        let info = cluster_info("9.2.1");
        assert_eq!(info["version"]["number"], "9.2.1");
        assert_eq!(info["version"]["build_flavor"], "default");
        assert_eq!(info["tagline"], "You Know, for Search");
        assert_eq!(
            cluster_info("8.18.0")["version"]["minimum_wire_compatibility_version"],
            "7.17.0"
        );
    }

    #[test]
    fn decodes_escapes_and_keeps_bad_ones() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("%ZZ%4"), "%ZZ%4");
        assert_eq!(percent_decode("%41"), "A");
    }
}
