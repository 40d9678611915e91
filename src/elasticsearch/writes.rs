//! Which requests change a connector's or a sync job's error, and what they change it to.
//!
//! The Elastic connectors service never calls the Update connector error API: it writes the
//! connector document itself, `POST /.elastic-connectors/_update/<id>` with
//! `{"doc":{"status":"error","error":"…"}}`, and ends sync jobs with
//! `POST /.elastic-connectors-sync-jobs/_update/<job_id>`. For the audit trail these are the same
//! event as `PUT /_connector/<id>/_error`. The paths are matched as Elasticsearch routes them
//! (literal segments exact, the index and id segments percent-decoded: see [`super::route`]).
//!
//! Covered: `_update`, `_doc` and `_create` on the connector and sync-job indices (their aliases
//! `.elastic-connectors` and `.elastic-connectors-sync-jobs`, and the `-v1` indices behind them),
//! the Update connector error API and the Set sync job error API. Not covered, because what
//! they write cannot be read from the request alone: `_bulk` (many documents, any index), scripted
//! updates (the script computes the fields), and other aliases a cluster may define.

use http::Method;

use super::java::java_split;
use super::route::decode_component;

/// Whose error a write changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// A connector (`.elastic-connectors`, `/_connector/<id>/_error`).
    Connector,
    /// A sync job (`.elastic-connectors-sync-jobs`, `/_connector/_sync_job/<id>/_error`).
    SyncJob,
}

impl Subject {
    /// The audit event's `event.action`.
    pub fn action(self) -> &'static str {
        match self {
            Subject::Connector => "update-connector-error",
            Subject::SyncJob => "update-sync-job-error",
        }
    }
}

/// How the write reaches the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WritePath {
    /// The Connector API (`/_connector/...`).
    ConnectorApi,
    /// The document API on the index (`_update`, `_doc`, `_create`).
    Index,
}

impl WritePath {
    /// The audit event's `esgate.write_path`, and the metrics label.
    pub fn label(self) -> &'static str {
        match self {
            WritePath::ConnectorApi => "connector_api",
            WritePath::Index => "index",
        }
    }
}

/// Where the fields sit in the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// `_update`: in the `doc` object.
    Update,
    /// `_doc`, `_create` and the error APIs: at the top level.
    Document,
}

/// A request that may change an error: whose, which id, by which path, in which form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorWrite {
    /// Connector or sync job.
    pub subject: Subject,
    /// The decoded document id.
    pub id: String,
    /// Connector API or index.
    pub path: WritePath,
    /// Where the body holds the fields.
    pub form: Form,
}

const CONNECTORS: [&str; 2] = [".elastic-connectors", ".elastic-connectors-v1"];
const SYNC_JOBS: [&str; 2] = [".elastic-connectors-sync-jobs", ".elastic-connectors-sync-jobs-v1"];

/// Recognises a write of a connector's or a sync job's error from its method and raw path.
/// Cheap for every other request: one byte comparison decides most of them.
pub fn error_write(method: &Method, raw_path: &str) -> Option<ErrorWrite> {
    let bytes = raw_path.as_bytes();
    // Every covered path starts with `/.` or `/%2E` (an index) or `/_connector/`.
    if !(bytes.starts_with(b"/.") || bytes.starts_with(b"/%") || bytes.starts_with(b"/_connector/")) {
        return None;
    }
    let segments = java_split(bytes, b'/');
    let segments = match segments.split_first() {
        Some(([], rest)) => rest,
        _ => &segments[..],
    };
    let decoded = |s: &[u8]| decode_component(s, false).ok();
    match segments {
        [connector, job, id, error]
            if *connector == b"_connector" && *job == b"_sync_job" && *error == b"_error" && method == Method::PUT =>
        {
            Some(ErrorWrite {
                subject: Subject::SyncJob,
                id: decoded(id)?,
                path: WritePath::ConnectorApi,
                form: Form::Document,
            })
        }
        [connector, id, error] if *connector == b"_connector" && *error == b"_error" && method == Method::PUT => {
            Some(ErrorWrite {
                subject: Subject::Connector,
                id: decoded(id)?,
                path: WritePath::ConnectorApi,
                form: Form::Document,
            })
        }
        [index, endpoint, id] => {
            let form = match (*endpoint, method) {
                (b"_update", &Method::POST) => Form::Update,
                (b"_doc" | b"_create", &Method::PUT | &Method::POST) => Form::Document,
                _ => return None,
            };
            let index = decoded(index)?;
            let subject = if CONNECTORS.contains(&index.as_str()) {
                Subject::Connector
            } else if SYNC_JOBS.contains(&index.as_str()) {
                Subject::SyncJob
            } else {
                return None;
            };
            Some(ErrorWrite {
                subject,
                id: decoded(id)?,
                path: WritePath::Index,
                form,
            })
        }
        _ => None,
    }
}

/// What a write does to the error, as far as the body read along says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorChange {
    /// It sets the error to this text.
    Set(String),
    /// It sets the error to `null`.
    Reset,
    /// It changes the status but not the error.
    StatusOnly,
    /// It touches neither the error nor the status (a last-seen update, sync counters).
    Untouched,
    /// The body could not be read for this reason (too large, not JSON, cut short): audited
    /// without the text.
    Unread(&'static str),
}

/// The error and status a body writes, leniently: any JSON object with the fields where `form`
/// puts them. `status` is the new status when the body sets one.
pub fn inspect(form: Form, body: &[u8]) -> (ErrorChange, Option<String>) {
    let Ok(serde_json::Value::Object(top)) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (ErrorChange::Unread("the body is not a JSON object"), None);
    };
    let fields = match form {
        Form::Document => &top,
        Form::Update => match top.get("doc") {
            Some(serde_json::Value::Object(doc)) => doc,
            // A scripted update or an upsert only: what it writes is not in the request.
            _ => return (ErrorChange::Untouched, None),
        },
    };
    let status = fields.get("status").and_then(|s| s.as_str()).map(str::to_owned);
    let change = match fields.get("error") {
        Some(serde_json::Value::Null) => ErrorChange::Reset,
        Some(serde_json::Value::String(text)) => ErrorChange::Set(text.clone()),
        Some(other) => ErrorChange::Set(other.to_string()),
        None if status.is_some() => ErrorChange::StatusOnly,
        None => ErrorChange::Untouched,
    };
    (change, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(method: Method, path: &str) -> Option<(Subject, String, WritePath, Form)> {
        error_write(&method, path).map(|w| (w.subject, w.id, w.path, w.form))
    }

    #[test]
    fn the_connectors_service_writes_are_recognised() {
        use Form::*;
        use Subject::*;
        use WritePath::*;
        let c1 = || "c1".to_owned();
        assert_eq!(
            write(Method::POST, "/.elastic-connectors/_update/c1"),
            Some((Connector, c1(), Index, Update))
        );
        assert_eq!(
            write(Method::POST, "/.elastic-connectors-sync-jobs/_update/c1"),
            Some((SyncJob, c1(), Index, Update))
        );
        assert_eq!(
            write(Method::PUT, "/.elastic-connectors-v1/_doc/c1"),
            Some((Connector, c1(), Index, Document))
        );
        assert_eq!(
            write(Method::PUT, "/%2Eelastic-connectors/_create/c1"),
            Some((Connector, c1(), Index, Document))
        );
        assert_eq!(
            write(Method::PUT, "/_connector/c1/_error"),
            Some((Connector, c1(), ConnectorApi, Document))
        );
        assert_eq!(
            write(Method::PUT, "/_connector/_sync_job/j%201/_error"),
            Some((SyncJob, "j 1".to_owned(), ConnectorApi, Document))
        );
    }

    #[test]
    fn other_requests_are_not() {
        assert_eq!(write(Method::GET, "/.elastic-connectors/_doc/c1"), None);
        assert_eq!(write(Method::PUT, "/.elastic-connectors/_update/c1"), None);
        assert_eq!(write(Method::POST, "/.elastic-connectors/_search"), None);
        assert_eq!(write(Method::POST, "/.elastic-connectors/_bulk"), None);
        assert_eq!(write(Method::POST, "/my-index/_update/c1"), None);
        assert_eq!(write(Method::POST, "/.elastic-connectors/%5Fupdate/c1"), None);
        assert_eq!(write(Method::PUT, "/_connector/c1/_check_in"), None);
        assert_eq!(write(Method::GET, "/"), None);
    }

    #[test]
    fn bodies_are_read_leniently() {
        let update = |b: &str| inspect(Form::Update, b.as_bytes());
        assert_eq!(
            update(r#"{"doc":{"status":"error","error":"disk full"}}"#),
            (ErrorChange::Set("disk full".to_owned()), Some("error".to_owned()))
        );
        assert_eq!(
            update(r#"{"doc":{"status":"connected","error":null}}"#),
            (ErrorChange::Reset, Some("connected".to_owned()))
        );
        assert_eq!(
            update(r#"{"doc":{"last_seen":"2026-12-02T05:00:00Z"}}"#),
            (ErrorChange::Untouched, None)
        );
        assert_eq!(
            update(r#"{"script":{"source":"ctx._source.error = null"}}"#),
            (ErrorChange::Untouched, None)
        );
        assert_eq!(update(r#"{"doc":{"status":"configured"}}"#).0, ErrorChange::StatusOnly);
        assert!(matches!(update("{\"doc\":").0, ErrorChange::Unread(_)));
        assert_eq!(
            inspect(Form::Document, br#"{"error":"x","status":"error"}"#).0,
            ErrorChange::Set("x".to_owned())
        );
    }
}
