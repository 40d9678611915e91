//! The running configuration and its atomic replacement.
//!
//! Everything a new connection or request is built from lives in a [`Generation`]: the service
//! stack (upstream nodes and their connections, the connector-error settings), the HTTP settings
//! and the listener's TLS certificate. A reload builds a new generation and swaps it in with one
//! atomic store. A request takes the generation current when it starts and keeps it to the end,
//! so in-flight requests finish on the configuration they started with; the next request, even on
//! the same keep-alive connection, uses the new one.
//!
//! Some settings cannot change in a running process (the listening sockets, the worker threads,
//! the audit sinks, logging): a reload keeps their running values and names them in a warning
//! ([`keep_fixed`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper::server::conn::http1;

use crate::config::Config;
use crate::stack::Stack;
use crate::tls::ServerTls;

/// One configuration and what is built from it.
#[derive(Debug)]
pub struct Generation {
    /// Increases with each reload.
    pub id: u64,
    /// The configuration, as running.
    pub config: Config,
    /// The service stack.
    pub stack: Stack,
    /// Settings of new client connections.
    pub http: http1::Builder,
    /// The listener's certificate, for new client connections.
    pub tls: Option<ServerTls>,
}

/// The current generation, shared by every worker; swapped by a reload.
pub type Current = Arc<ArcSwap<Generation>>;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Generation {
    /// A generation for `config`.
    pub fn new(config: Config, stack: Stack, http: http1::Builder) -> Self {
        Generation {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            tls: config.server.tls.clone(),
            config,
            stack,
            http,
        }
    }
}

/// Keeps in `new` the running values of the settings a running process cannot change, and returns
/// the keys whose new values were ignored (they take effect after a restart).
pub fn keep_fixed(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut ignored = Vec::new();
    macro_rules! keep {
        ($key:literal, $($field:ident).+) => {
            if new.$($field).+ != old.$($field).+ {
                ignored.push($key);
                new.$($field).+ = old.$($field).+.clone();
            }
        };
    }
    keep!("server.listen", server.listen);
    keep!("server.admin_listen", server.admin_listen);
    keep!("server.workers", server.workers);
    keep!("server.max_connections", server.max_connections);
    keep!("server.listen_backlog", server.listen_backlog);
    keep!("upstream.dev", upstream.dev);
    keep!("upstream.dev_version", upstream.dev_version);
    keep!("audit", audit);
    keep!("log", log);
    // The development upstream's address was chosen at start-up.
    if old.upstream.dev {
        new.upstream.nodes = old.upstream.nodes.clone();
    }
    ignored
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        let argv = std::iter::once("esgate").chain(args.iter().copied());
        Config::load_with(argv, &|_| None).map(|(_, c)| c).expect("a valid configuration")
    }

    #[test]
    fn what_a_running_process_cannot_change_is_kept_and_named() {
        let old = config(&["--listen=127.0.0.1:9000", "--workers=2", "--upstream=http://10.0.0.1:9200"]);
        let mut new = config(&[
            "--listen=127.0.0.1:9001",
            "--workers=4",
            "--upstream=http://10.0.0.2:9200",
            "--max-error-body-size=1MiB",
        ]);
        let ignored = keep_fixed(&old, &mut new);
        assert_eq!(ignored, vec!["server.listen", "server.workers"]);
        assert_eq!(new.server.listen, old.server.listen);
        assert_eq!(new.server.workers, 2);
        // What can change does.
        assert_eq!(new.upstream.nodes[0].host, "10.0.0.2");
        assert_eq!(new.connector_error.max_body_size, 1 << 20);
    }

    #[test]
    fn the_same_configuration_ignores_nothing() {
        let old = config(&["--dev"]);
        let mut new = old.clone();
        assert!(keep_fixed(&old, &mut new).is_empty());
    }
}
