//! The Elasticsearch model of the Update connector error API: pure functions from a request (and
//! a [`Dialect`]) to the answer Elasticsearch gives.
//!
//! Nothing here does I/O or knows about tower; [`crate::connector_error`] wires it to HTTP. The
//! pieces follow Elasticsearch's own order of work:
//!
//! * [`route`]: which raw paths are the route, and the connector id in them;
//! * [`params`] and [`media`]: the query string and the `Accept`/`Content-Type` headers, the
//!   compatibility window of the dialect's major included;
//! * [`request`]: the checks before the body, in Elasticsearch's order, and the answer format;
//! * [`jackson`]: a Jackson-compatible tokenizer that reads the body the way Elasticsearch's
//!   `connector_update_error_request` parser does, with the dialect's wrapping and Jackson texts;
//! * [`body`]: the body verdict and the connector-id rules;
//! * [`error`] and [`render`]: Elasticsearch's exception chains and their JSON formats;
//! * [`dialect`]: which Elasticsearch versions answer alike, and the one table of their
//!   differences;
//! * [`suggest`] and [`java`]: "did you mean" and Java's string rules.
//!
//! The behaviour reference, with the source of each fact, is `docs/connector-error.md` and
//! `docs/dialects.md`.

pub mod body;
pub mod dialect;
pub mod error;
pub mod jackson;
pub mod java;
pub mod json;
pub mod media;
pub mod params;
pub mod render;
pub mod request;
pub mod route;
pub mod suggest;
#[cfg(feature = "server")]
pub mod writes;

pub use body::{check_body, check_body_agreed, check_connector_id, BodyVerdict};
pub use dialect::{Dialect, DialectSet, Knowledge, SharedKnowledge, Version};
pub use error::{Cause, EsError, Field, Rejection};
pub use request::{precheck, precheck_agreed, Plan, Precheck, ResponseFormat};
pub use route::{match_path, ConnectorId, Route};
