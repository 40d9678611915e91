//! esgate: a streaming reverse proxy for Elasticsearch.
//!
//! Every request passes to the upstream cluster unchanged and streamed, and every answer comes back
//! the same way. The library holds the pieces the `esgate` binary is built from, so that they can
//! be used in other tower stacks:
//!
//! * [`upstream`]: the upstream service (node pool, connections, 502/504 answers);
//! * [`server::Gateway`]: listeners, worker threads, graceful shutdown and reload;
//! * [`reload`]: the running configuration and its atomic swap;
//! * [`tls`]: certificates and trust for the nodes and the listener;
//! * [`config`]: flags, environment and file;
//! * [`elasticsearch`]: the pure model of the Update connector error API and its dialects;
//! * [`connector_error`]: the tower layer that applies it;
//! * [`es_error`]: Elasticsearch's error envelope;
//! * [`observe`]: the outermost layer, which feeds [`metrics`] and the [`audit`] trail;
//! * [`metrics`]: the Prometheus metrics registry;
//! * [`redact`]: what may be said of a caller or a secret in logs and the audit trail;
//! * [`admin`]: health, readiness and metrics on a port of their own;
//! * [`dev`]: the built-in development upstream.
#![warn(missing_docs, rust_2018_idioms, missing_debug_implementations)]
#![deny(unsafe_code)]
#![deny(unreachable_pub)]

// The layer and the model: always built.
pub mod body;
pub mod connector_error;
pub mod elasticsearch;
pub mod es_error;
pub mod headers;
pub mod hop;
mod memory;

/// Items of the `server` feature (default): the gateway around the layer.
macro_rules! server {
    ($($item:item)*) => { $( #[cfg(feature = "server")] $item )* };
}

server! {
    pub mod admin;
    pub mod audit;
    pub mod config;
    mod connect;
    pub mod dev;
    pub mod metrics;
    pub mod observe;
    pub mod redact;
    pub mod reload;
    pub mod server;
    pub mod stack;
    pub mod tls;
    pub mod upstream;
    pub mod verify;
}

/// The error type of bodies and boxed failures.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub use body::Body;
server! {
    pub use config::Config;
    pub use server::Gateway;
}
