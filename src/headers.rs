//! The names of the non-standard headers esgate reads or writes, defined once. Standard ones come
//! from [`http::header`].

use http::header::{HeaderName, HeaderValue};

/// `X-Opaque-Id`: the client's request id, echoed by Elasticsearch on its answers and kept in
/// the audit trail.
pub const X_OPAQUE_ID: HeaderName = HeaderName::from_static("x-opaque-id");
/// `X-elastic-product`, on every answer Elasticsearch's REST layer gives but 401 and 403.
pub const X_ELASTIC_PRODUCT: HeaderName = HeaderName::from_static("x-elastic-product");
/// Its value.
pub const ELASTICSEARCH: HeaderValue = HeaderValue::from_static("Elasticsearch");
/// `X-elastic-product-origin`: which Elastic product sent a request.
pub const X_ELASTIC_PRODUCT_ORIGIN: HeaderName = HeaderName::from_static("x-elastic-product-origin");
/// W3C trace context.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// W3C trace context, vendor part.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// Elasticsearch's run-as user: part of who the caller is.
pub const ES_SECURITY_RUNAS_USER: HeaderName = HeaderName::from_static("es-security-runas-user");
/// Elasticsearch's secondary credentials: part of who the caller is.
pub const ES_SECONDARY_AUTHORIZATION: HeaderName = HeaderName::from_static("es-secondary-authorization");
/// `Keep-Alive` (RFC 9112 §9.6 hop-by-hop, not in [`http::header`]).
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// `Proxy-Connection`, a hop-by-hop header of old clients.
pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
