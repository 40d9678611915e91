//! What the layer did with an intercepted call, for the audit trail and the metrics.
//!
//! [`ConnectorErrorGuard`](super::ConnectorErrorGuard) puts an [`Intercepted`] into the
//! [`ResponseBody`](super::ResponseBody) of every response to `PUT /_connector/<id>/_error`,
//! whoever wrote it (esgate or the upstream). Layers outside it read it there
//! ([`ResponseBody::intercepted`](super::ResponseBody::intercepted)); nothing of it goes on the
//! wire.

use crate::elasticsearch::Knowledge;
pub use crate::elasticsearch::Rejection;

/// The record of one intercepted call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intercepted {
    /// The percent-decoded connector id.
    pub connector_id: String,
    /// What was done.
    pub verdict: Verdict,
    /// The `error` text the call sets, when the body was checked and valid and the text is
    /// kept (for auditing; `None` for `{"error":null}`, a reset). Only its start is kept: see
    /// [`ConnectorErrorLayer::error_text_limit`](super::ConnectorErrorLayer::error_text_limit).
    pub error_text: Option<String>,
    /// The length in bytes of the whole `error` text, of which `error_text` may hold only the
    /// start (0 without one).
    pub error_length: usize,
    /// The dialects the call was checked for (or the unmodelled version it was passed to).
    pub knowledge: Knowledge,
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
