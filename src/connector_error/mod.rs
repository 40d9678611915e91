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
//! is the HTTP side of it, one concern per module (all private, re-exported here): `service`
//! (the guard: the agreement rule over the candidate dialects, forwarding), `body` (the body
//! types it hands on), `read` (the body read into one buffer, with a deadline; lingering after an
//! early answer), `budget` (the bytes of all bodies held at once, and the 429 past it), `layer`
//! (the settings), `decode` (gzip/deflate), `auth` (the optional credential check) and `verdict`
//! (the record of what was done). Every response to the route carries an [`Intercepted`] record
//! in its body ([`ResponseBody::intercepted`]: what was done and why), which the audit trail and
//! metrics read. With `report_only`, calls that would be refused are forwarded unchanged and
//! recorded as [`Verdict::WouldReject`]. Reference: `docs/connector-error.md` and
//! `docs/dialects.md`.
//!
//! # Bodies
//!
//! [`ConnectorErrorGuard`] is a service for any `Unpin` request body with
//! [`Bytes`](bytes::Bytes) frames (hyper's `Incoming`, `Full`, the boxed bodies of
//! `http-body-util` all are; pin any other one with `Box::pin`). `Unpin`, so that the body of an
//! intercepted call is read where it lies and handed to a draining task when it is refused,
//! without an allocation per call to pin it. The inner service receives a [`GuardedBody`]: the caller's own body, untouched and
//! unbuffered, for every request but the intercepted route, the bytes esgate read for that one.
//! It may answer any body with `Bytes` frames; the guard answers [`ResponseBody`]: the inner
//! service's body, or one esgate wrote.
//!
//! # Example
//!
//! ```
//! use esgate::connector_error::{ConnectorErrorLayer, GuardedBody};
//! use http_body_util::Full;
//! use tower::ServiceBuilder;
//!
//! let layer = ConnectorErrorLayer::new().max_body_size(1 << 20);
//! let stack = ServiceBuilder::new().layer(layer).service(tower::service_fn(
//!     |_req: http::Request<GuardedBody<Full<bytes::Bytes>>>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::from("{}"))))
//!     },
//! ));
//! # let _ = stack;
//! ```

mod auth;
mod body;
mod budget;
mod canary;
mod decode;
mod layer;
mod read;
mod service;
mod verdict;

pub use body::{GuardedBody, ResponseBody};
pub use budget::{Budget, BufferCounters};
pub use canary::CanaryCounters;
#[cfg(feature = "server")]
pub(crate) use decode::{decode_body, Decoded};
pub use layer::ConnectorErrorLayer;
pub use service::{unchecked, AnyBody, ConnectorErrorGuard, Inner, ResponseFuture, REQUEST_TIMEOUT_TYPE};
pub use verdict::{Intercepted, Rejection, Verdict};
