//! The service stack of one client connection, outermost layer first.
//!
//! Every request of a connection goes through this stack; the innermost service forwards to the
//! upstream. The stack is built once per connection from shared parts (cheap `Arc` clones).

use tower::ServiceBuilder;

use crate::config::Config;
use crate::connector_error::{AuthCheck, ConnectorErrorGuard, ConnectorErrorLayer, GuardConfig};
use crate::upstream::{ConnInfo, Upstream, UpstreamService};

/// The shared parts every connection's stack is built from.
#[derive(Clone, Debug)]
pub struct Stack {
    upstream: Upstream,
    connector_error: ConnectorErrorLayer,
}

impl Stack {
    /// The parts for this configuration.
    pub fn new(config: &Config) -> Self {
        let ce = &config.connector_error;
        let guard = GuardConfig {
            max_body_size: ce.max_body_size,
            auth: ce.check_auth.then(|| AuthCheck::new(ce.auth_cache_ttl)),
        };
        Stack {
            upstream: Upstream::new(config),
            connector_error: ConnectorErrorLayer::new(guard),
        }
    }

    /// The upstream (nodes and their health).
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The service for one client connection.
    pub fn service(&self, info: ConnInfo) -> ConnectorErrorGuard<UpstreamService> {
        ServiceBuilder::new()
            // Answers locally what Elasticsearch would refuse on `PUT /_connector/<id>/_error`;
            // every other request passes straight through, unbuffered.
            .layer(self.connector_error.clone())
            .service(self.upstream.connection(info))
    }
}
