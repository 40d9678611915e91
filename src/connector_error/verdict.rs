//! What the layer did with an intercepted call, for the audit trail and the metrics.
//!
//! [`ConnectorErrorGuard`](super::ConnectorErrorGuard) puts an [`Intercepted`] into the extensions
//! of every response to `PUT /_connector/<id>/_error`, whoever wrote it (esgate or the upstream).
//! Layers outside it read it there; nothing of it goes on the wire.

use super::error::EsError;

/// The record of one intercepted call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intercepted {
    /// The percent-decoded connector id.
    pub connector_id: String,
    /// What was done.
    pub verdict: Verdict,
    /// The `error` text the call sets, when the body was checked and valid (`None` for
    /// `{"error":null}`, a reset).
    pub error_text: Option<String>,
}

/// What the layer decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: forwarded with the canonical body.
    Forwarded,
    /// Answered locally with this status and error, never forwarded.
    Rejected(Rejection),
    /// Report-only mode: would have been answered locally with this; forwarded unchanged.
    WouldReject(Rejection),
    /// Forwarded unchanged without a verdict, because esgate cannot tell (or write) what
    /// Elasticsearch would answer.
    Unchecked(&'static str),
}

/// A local answer: its status, Elasticsearch error type and reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status (400, 406, 413, …).
    pub status: u16,
    /// The error's `type`; `None` for Elasticsearch's simple format (`{"error":"…","status":N}`).
    pub error_type: Option<&'static str>,
    /// The error's `reason` (lossy UTF-8).
    pub reason: String,
}

impl Rejection {
    /// The rejection for `error` (its top-level exception).
    pub fn from_error(error: &EsError) -> Self {
        let top = error.top();
        Rejection {
            status: error.status,
            error_type: Some(top.error_type),
            reason: String::from_utf8_lossy(&top.reason).into_owned(),
        }
    }

    /// A rejection in the simple format.
    pub fn simple(status: u16, text: &[u8]) -> Self {
        Rejection {
            status,
            error_type: None,
            reason: String::from_utf8_lossy(text).into_owned(),
        }
    }

    /// The label this rejection is counted under: its error type, or `simple_<status>`.
    pub fn label(&self) -> &'static str {
        match (self.error_type, self.status) {
            (Some(t), _) => t,
            (None, 406) => "simple_406",
            (None, 400) => "simple_400",
            (None, _) => "simple",
        }
    }
}
