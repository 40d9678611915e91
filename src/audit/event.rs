//! One audit event and its JSON line, in Elastic Common Schema field names.
//!
//! The line is built on the audit thread, not on the request's: the request path only moves
//! owned values into an [`Event`]. See the README's "Audit trail" section for the schema.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::io::Write;

use crate::connector_error::{Intercepted, Verdict};
use crate::elasticsearch::Knowledge;
use crate::elasticsearch::writes::{ErrorChange, Subject, WritePath};
use crate::es_error::write_json_string;
use crate::redact::{redact_secrets, truncate, Caller};

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
    /// A write of a connector's or sync job's document that changes its error or status
    /// (`_update`, `_doc`, the Set sync job error API), as read along its body.
    pub write: Option<WriteRecord>,
}

/// A document write that changes an error, for its audit event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRecord {
    /// Connector or sync job.
    pub subject: Subject,
    /// The document id.
    pub id: String,
    /// Through the Connector API or the index.
    pub path: WritePath,
    /// What it does to the error.
    pub change: ErrorChange,
    /// The status it sets, if any.
    pub status: Option<String>,
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
    /// The event as one JSON object (no trailing newline). Written straight into the buffer,
    /// field by field in a fixed order: an order readers can rely on, and no tree of maps built
    /// and dropped per event.
    pub fn to_json(&self, policy: TextPolicy) -> Vec<u8> {
        let mut out = Vec::with_capacity(768);
        let mut root = Obj::open(&mut out);
        root.str("@timestamp", &rfc3339_millis(self.timestamp));
        root.obj("ecs", |o| o.str("version", ECS_VERSION));
        let (action, kind) = match (&self.intercepted, &self.write) {
            (Some(_), _) => ("update-connector-error", "change"),
            (None, Some(write)) => (write.subject.action(), "change"),
            (None, None) => ("http-request", "access"),
        };
        root.obj("event", |o| {
            o.str("kind", "event");
            o.raw("category", "[\"web\"]");
            o.raw("type", &format!("[\"{kind}\"]"));
            o.str("action", action);
            o.str("outcome", if self.status < 400 { "success" } else { "failure" });
            o.num("duration", nanos(self.duration));
            o.str("dataset", "esgate.audit");
            o.str("module", "esgate");
        });
        root.obj("http", |o| {
            o.obj("request", |r| {
                r.str("method", self.method.as_str());
                if let Some(id) = &self.opaque_id {
                    r.str("id", id);
                }
                if let Some(bytes) = self.request_bytes {
                    r.obj("body", |b| b.num("bytes", bytes));
                }
            });
            o.obj("response", |r| r.num("status_code", u64::from(self.status)));
        });
        root.obj("url", |o| {
            o.str("path", &self.path);
            if let Some(query) = &self.query {
                o.str("query", query);
            }
        });
        root.obj("client", |o| {
            o.str("ip", &self.client.ip().to_string());
            o.num("port", u64::from(self.client.port()));
        });
        if let Some(name) = self.caller.as_ref().and_then(|c| c.name.as_ref()) {
            root.obj("user", |o| o.str("name", name));
        }
        if let Some(agent) = &self.user_agent {
            root.obj("user_agent", |o| o.str("original", agent));
        }
        if let Some((trace, span)) = self.traceparent.as_deref().and_then(parse_traceparent) {
            root.obj("trace", |o| o.str("id", trace));
            root.obj("span", |o| o.str("id", span));
        }
        let rejection = match self.intercepted.as_ref().map(|r| &r.verdict) {
            Some(Verdict::Rejected(r) | Verdict::WouldReject(r)) => Some(r),
            _ => None,
        };
        if let Some(r) = rejection {
            root.obj("error", |o| {
                if let Some(t) = r.error_type {
                    o.str("type", t);
                }
                o.str("message", &r.reason);
                o.str("code", &r.status.to_string());
            });
        }
        root.obj("esgate", |o| {
            match &self.intercepted {
                None => {
                    o.str("verdict", "passed_through");
                    if let Some(write) = &self.write {
                        write_record(o, write, policy);
                    }
                }
                Some(record) => {
                    o.str("write_path", WritePath::ConnectorApi.label());
                    o.obj("connector", |c| {
                        c.str("id", &record.connector_id);
                        if let Some(text) = &record.error_text {
                            // The guard keeps only the start of a long text.
                            error_fields(c, text, record.error_length, policy);
                        }
                    });
                    let verdict = match &record.verdict {
                        Verdict::Forwarded => "forwarded",
                        Verdict::Rejected(_) => "rejected",
                        Verdict::WouldReject(_) => "would_reject",
                        Verdict::Unchecked(why) => {
                            match record.knowledge {
                                // The reason names the version the call was passed to.
                                Knowledge::Unmodelled(version) => o.str(
                                    "unchecked_reason",
                                    &format!("{why}: Elasticsearch {version} (esgate models 8.16 to 9.x)"),
                                ),
                                Knowledge::Dialects(_) => o.str("unchecked_reason", why),
                            }
                            "unchecked"
                        }
                    };
                    o.str("verdict", verdict);
                    // The dialects the call was checked for: those that agreed on a local answer.
                    if let Knowledge::Dialects(dialects) = record.knowledge {
                        o.str("es_dialect", &dialects.to_string());
                    }
                }
            }
            if let Some(scheme) = self.caller.as_ref().map(|c| c.scheme) {
                o.obj("auth", |a| a.str("scheme", scheme));
            }
            if let Some((node, took)) = &self.upstream {
                o.obj("upstream", |u| {
                    u.str("node", node);
                    u.num("duration", nanos(*took));
                });
            }
        });
        root.close();
        out
    }
}

/// `error`, `error_truncated` and `error_length` of an error text: secrets masked (when the
/// policy says so), then cut. `length` is the length of the whole text, of which `text` may be
/// only the start.
fn error_fields(c: &mut Obj<'_>, text: &str, length: usize, policy: TextPolicy) {
    let cut_before = length > text.len();
    let text = if policy.redact_error_secrets {
        redact_secrets(text)
    } else {
        text.into()
    };
    let (kept, cut) = truncate(&text, policy.max_error_length);
    c.str("error", kept);
    c.bool("error_truncated", cut || cut_before);
    let length = if cut_before { length } else { text.len() };
    c.num("error_length", length as u64);
}

/// `esgate.write_path` and `esgate.connector` or `esgate.sync_job` of a document write.
fn write_record(o: &mut Obj<'_>, write: &WriteRecord, policy: TextPolicy) {
    o.str("write_path", write.path.label());
    let name = match write.subject {
        Subject::Connector => "connector",
        Subject::SyncJob => "sync_job",
    };
    o.obj(name, |c| {
        c.str("id", &write.id);
        match &write.change {
            ErrorChange::Set(text) => error_fields(c, text, text.len(), policy),
            ErrorChange::Reset => c.raw("error", "null"),
            ErrorChange::StatusOnly | ErrorChange::Untouched => {}
            ErrorChange::Unread(why) => {
                c.bool("error_inspected", false);
                c.str("error_not_inspected", why);
            }
        }
        if let Some(status) = &write.status {
            c.str("status", status);
        }
    });
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A JSON object being written: keys are esgate's own (plain ASCII), values are escaped.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, first: true }
    }

    fn close(self) {
        self.out.push(b'}');
    }

    fn key(&mut self, key: &str) {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        write_json_string(self.out, value);
    }

    fn num(&mut self, key: &str, value: u64) {
        self.key(key);
        let _ = write!(self.out, "{value}");
    }

    fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.out.extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// A value that is already JSON.
    fn raw(&mut self, key: &str, json: &str) {
        self.key(key);
        self.out.extend_from_slice(json.as_bytes());
    }

    fn obj(&mut self, key: &str, fill: impl FnOnce(&mut Obj<'_>)) {
        self.key(key);
        let mut inner = Obj::open(self.out);
        fill(&mut inner);
        inner.close();
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
    use serde_json::Value;

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
            write: None,
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
            error_length: 0,
            knowledge: crate::elasticsearch::Knowledge::UNKNOWN,
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
            error_length: 20,
            knowledge: crate::elasticsearch::Knowledge::UNKNOWN,
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
