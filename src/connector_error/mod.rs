//! The connector-error layer: `PUT /_connector/<connector_id>/_error`, checked locally.
//!
//! [`ConnectorErrorLayer`] intercepts the Update connector error API. Every request that
//! Elasticsearch itself would refuse (no connector id, missing or malformed body, wrong field type,
//! unknown field, bad media type, unknown query parameter…) is answered here, byte for byte as
//! Elasticsearch answers it, and never reaches the upstream. A valid call goes on with a canonical
//! body, `{"error":"…"}` or `{"error":null}`, and the upstream's answer comes back unchanged.
//! Everything else, other methods and routes included, passes through untouched and unbuffered.
//!
//! Where esgate cannot reproduce Elasticsearch's answer exactly (`error_trace=true`, non-JSON
//! output or body formats, encodings it does not decode, UTF-16/32 bodies), the request is
//! forwarded unchanged and Elasticsearch answers.
//!
//! The Elasticsearch model the layer applies is pure and lives in [`crate::elasticsearch`]; here
//! are the HTTP side of it: [`service`] (the guard: the agreement rule over the candidate
//! dialects, forwarding), [`read`] (the body read into one buffer, with a deadline; lingering
//! after an early answer), [`budget`] (the bytes of all bodies held at once, and the 429 past
//! it), [`layer`], [`decode`] (gzip/deflate), [`auth`] (the optional credential check) and
//! [`verdict`] (the record of what was done). Every response to the route carries an [`Intercepted`] record in its extensions (what
//! was done and why), which the audit trail and metrics read. With `report_only`, calls that would
//! be refused are forwarded unchanged and recorded as [`Verdict::WouldReject`]. Reference:
//! `docs/connector-error.md` and `docs/dialects.md`.
//!
//! # Example
//!
//! ```
//! use esgate::connector_error::{ConnectorErrorLayer, GuardConfig};
//! use tower::ServiceBuilder;
//!
//! let layer = ConnectorErrorLayer::new(GuardConfig {
//!     max_body_size: 1 << 20,
//!     auth: None,
//!     report_only: false,
//!     error_text_limit: None,
//!     body_read_timeout: Some(std::time::Duration::from_secs(30)),
//!     budget: esgate::connector_error::Budget::unshared(48 << 20),
//!     knowledge: esgate::elasticsearch::SharedKnowledge::default(),
//! });
//! let stack = ServiceBuilder::new().layer(layer).service(tower::service_fn(
//!     |_req: http::Request<esgate::Body>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(esgate::Body::Empty))
//!     },
//! ));
//! # let _ = stack;
//! ```

pub mod auth;
pub mod budget;
pub mod decode;
pub mod layer;
pub mod read;
pub mod service;
pub mod verdict;

pub use auth::AuthCheck;
pub use budget::Budget;
pub use layer::ConnectorErrorLayer;
pub use service::{ConnectorErrorGuard, GuardConfig};
pub use verdict::{Intercepted, Rejection, Verdict};
