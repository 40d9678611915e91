//! The service stack of one client connection, outermost layer first.
//!
//! Every request of the connection goes through this stack; the innermost service forwards to the
//! upstream. Layers that need the whole stack (the connector-error checks) are added here.

use crate::upstream::{ConnInfo, Upstream, UpstreamService};

/// The service for one client connection.
pub fn service(upstream: &Upstream, info: ConnInfo) -> UpstreamService {
    upstream.connection(info)
}
