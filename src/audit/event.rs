//! One audit event and its JSON line, in Elastic Common Schema field names.
//!
//! The line is built on the audit thread, not on the request's: the request path only moves
//! owned values into an [`Event`]. See the README's "Audit trail" section for the schema.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::redact::{redact_secrets, truncate, Caller};
use crate::connector_error::{Intercepted, Verdict};

/// The ECS version the field names follow.
pub const ECS_VERSION: &str = "8.17.0";

/// What happened to one request, as the audit layer saw it.
#[derive(Clone, Debug)]
pub struct Event {
    /// When the request head arrived.
    pub timestamp: SystemTime,
    /// The request method.
    pub method: http::Method,
    /// The request path, as sent (never credentials: an absolute-form target's user part is not
    /// part of the path).
    pub path: String,
    /// The query string, secrets masked (access-log mode only).
    pub query: Option<String>,
    /// The client's address.
    pub client: SocketAddr,
    /// Who the caller says it is (from `Authorization`, without the secret).
    pub caller: Option<Caller>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// `X-Opaque-Id`.
    pub opaque_id: Option<String>,
    /// `traceparent` (W3C Trace Context).
    pub traceparent: Option<String>,
    /// `Content-Length` of the request, when it had one.
    pub request_bytes: Option<u64>,
    /// The response status.
    pub status: u16,
    /// From request head to response head.
    pub duration: Duration,
    /// What the connector-error layer did, for that route.
    pub intercepted: Option<Intercepted>,
    /// The node that answered and how long it took, when the request was forwarded.
    pub upstream: Option<(Arc<str>, Duration)>,
}

/// How error texts are written.
#[derive(Clone, Copy, Debug)]
pub struct TextPolicy {
    /// The connector error text is cut to this many bytes.
    pub max_error_length: usize,
    /// Mask secrets inside the connector error text.
    pub redact_error_secrets: bool,
}

impl Event {
    /// The event as one JSON object (no trailing newline).
    pub fn to_json(&self, policy: TextPolicy) -> Vec<u8> {
        let mut root = Map::new();
        root.insert("@timestamp".into(), Value::String(rfc3339_millis(self.timestamp)));
        root.insert("ecs".into(), json!({ "version": ECS_VERSION }));
        let (action, kind) = match &self.intercepted {
            Some(_) => ("update-connector-error", "change"),
            None => ("http-request", "access"),
        };
        root.insert(
            "event".into(),
            json!({
                "kind": "event",
                "category": ["web"],
                "type": [kind],
                "action": action,
                "outcome": if self.status < 400 { "success" } else { "failure" },
                "duration": u64::try_from(self.duration.as_nanos()).unwrap_or(u64::MAX),
                "dataset": "esgate.audit",
                "module": "esgate",
            }),
        );

        let mut request = Map::new();
        request.insert("method".into(), Value::String(self.method.as_str().to_owned()));
        if let Some(id) = &self.opaque_id {
            request.insert("id".into(), Value::String(id.clone()));
        }
        if let Some(bytes) = self.request_bytes {
            request.insert("body".into(), json!({ "bytes": bytes }));
        }
        root.insert(
            "http".into(),
            json!({ "request": request, "response": { "status_code": self.status } }),
        );
        let mut url = Map::new();
        url.insert("path".into(), Value::String(self.path.clone()));
        if let Some(query) = &self.query {
            url.insert("query".into(), Value::String(query.clone()));
        }
        root.insert("url".into(), Value::Object(url));
        root.insert(
            "client".into(),
            json!({ "ip": self.client.ip().to_string(), "port": self.client.port() }),
        );
        if let Some(name) = self.caller.as_ref().and_then(|c| c.name.as_ref()) {
            root.insert("user".into(), json!({ "name": name }));
        }
        if let Some(agent) = &self.user_agent {
            root.insert("user_agent".into(), json!({ "original": agent }));
        }
        if let Some((trace, span)) = self.traceparent.as_deref().and_then(parse_traceparent) {
            root.insert("trace".into(), json!({ "id": trace }));
            root.insert("span".into(), json!({ "id": span }));
        }

        let mut esgate = Map::new();
        match &self.intercepted {
            None => {
                esgate.insert("verdict".into(), "passed_through".into());
            }
            Some(record) => {
                let mut connector = Map::new();
                connector.insert("id".into(), Value::String(record.connector_id.clone()));
                if let Some(text) = &record.error_text {
                    let text = if policy.redact_error_secrets {
                        redact_secrets(text)
                    } else {
                        text.as_str().into()
                    };
                    let (kept, cut) = truncate(&text, policy.max_error_length);
                    connector.insert("error".into(), Value::String(kept.to_owned()));
                    connector.insert("error_truncated".into(), Value::Bool(cut));
                    connector.insert("error_length".into(), Value::from(text.len()));
                }
                esgate.insert("connector".into(), Value::Object(connector));
                let verdict = match &record.verdict {
                    Verdict::Forwarded => "forwarded",
                    Verdict::Rejected(_) => "rejected",
                    Verdict::WouldReject(_) => "would_reject",
                    Verdict::Unchecked(why) => {
                        esgate.insert("unchecked_reason".into(), Value::String((*why).to_owned()));
                        "unchecked"
                    }
                };
                esgate.insert("verdict".into(), verdict.into());
                if let Verdict::Rejected(r) | Verdict::WouldReject(r) = &record.verdict {
                    let mut error = Map::new();
                    if let Some(t) = r.error_type {
                        error.insert("type".into(), t.into());
                    }
                    error.insert("message".into(), Value::String(r.reason.clone()));
                    error.insert("code".into(), Value::String(r.status.to_string()));
                    root.insert("error".into(), Value::Object(error));
                }
            }
        }
        if let Some(scheme) = self.caller.as_ref().map(|c| c.scheme) {
            esgate.insert("auth".into(), json!({ "scheme": scheme }));
        }
        if let Some((node, took)) = &self.upstream {
            esgate.insert(
                "upstream".into(),
                json!({
                    "node": &**node,
                    "duration": u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
                }),
            );
        }
        root.insert("esgate".into(), Value::Object(esgate));
        serde_json::to_vec(&Value::Object(root)).unwrap_or_default()
    }
}

/// The trace id and parent span id of a valid `traceparent` (W3C Trace Context §3.2).
pub fn parse_traceparent(value: &str) -> Option<(&str, &str)> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && span.bytes().any(|b| b != b'0')
        && (version != "00" || parts.next().is_none());
    valid.then_some((trace, span))
}

/// `2026-11-25T19:04:05.123Z`.
pub fn rfc3339_millis(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector_error::Rejection;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123); // a leap day
        assert_eq!(rfc3339_millis(t), "2000-02-29T00:00:00.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_633_445);
        assert_eq!(rfc3339_millis(t), "2026-11-25T19:04:05.000Z");
    }

    #[test]
    fn traceparents() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(ok),
            Some(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"))
        );
        assert_eq!(
            parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            parse_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            parse_traceparent("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(parse_traceparent("garbage"), None);
    }

    fn event(intercepted: Option<Intercepted>) -> Event {
        Event {
            timestamp: UNIX_EPOCH,
            method: http::Method::PUT,
            path: "/_connector/c1/_error".into(),
            query: None,
            client: "127.0.0.1:5000".parse().expect("addr"),
            caller: Some(Caller {
                name: Some("elastic".into()),
                scheme: "basic",
            }),
            user_agent: None,
            opaque_id: Some("op-1".into()),
            traceparent: None,
            request_bytes: Some(20),
            status: 400,
            duration: Duration::from_micros(15),
            intercepted,
            upstream: None,
        }
    }

    const POLICY: TextPolicy = TextPolicy {
        max_error_length: 8,
        redact_error_secrets: true,
    };

    #[test]
    fn a_rejection_names_its_error() {
        let record = Intercepted {
            connector_id: "c1".into(),
            verdict: Verdict::Rejected(Rejection {
                status: 400,
                error_type: Some("x_content_parse_exception"),
                reason: "[1:2] bad".into(),
            }),
            error_text: None,
        };
        let v: Value = serde_json::from_slice(&event(Some(record)).to_json(POLICY)).expect("json");
        assert_eq!(v["event"]["action"], "update-connector-error");
        assert_eq!(v["event"]["outcome"], "failure");
        assert_eq!(v["event"]["duration"], 15_000);
        assert_eq!(v["esgate"]["verdict"], "rejected");
        assert_eq!(v["error"]["type"], "x_content_parse_exception");
        assert_eq!(v["error"]["message"], "[1:2] bad");
        assert_eq!(v["user"]["name"], "elastic");
        assert_eq!(v["http"]["request"]["id"], "op-1");
        assert_eq!(v["esgate"]["connector"]["id"], "c1");
    }

    #[test]
    fn error_texts_are_redacted_then_cut() {
        let record = Intercepted {
            connector_id: "c1".into(),
            verdict: Verdict::Forwarded,
            error_text: Some("pwd=hunter2 and more".into()),
        };
        let mut e = event(Some(record));
        e.status = 200;
        let v: Value = serde_json::from_slice(&e.to_json(POLICY)).expect("json");
        assert_eq!(v["esgate"]["connector"]["error"], "pwd=[RED");
        assert_eq!(v["esgate"]["connector"]["error_truncated"], true);
        assert_eq!(v["event"]["outcome"], "success");
        let open = TextPolicy {
            max_error_length: 100,
            redact_error_secrets: false,
        };
        let v: Value = serde_json::from_slice(&e.to_json(open)).expect("json");
        assert_eq!(v["esgate"]["connector"]["error"], "pwd=hunter2 and more");
    }
}
