//! [`ConnectorErrorLayer`]: applies [`ConnectorErrorGuard`] in a tower stack, and holds its
//! settings.

use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::auth::AuthCheck;
use super::budget::Budget;
use super::canary::{Canary, CanaryCounters};
use super::service::{ConnectorErrorGuard, GuardConfig};
use crate::elasticsearch::SharedKnowledge;

/// Wraps services with [`ConnectorErrorGuard`]. Cheap to clone: the settings are shared.
///
/// Built with [`ConnectorErrorLayer::new`] and the setters below; the defaults are those of the
/// esgate binary (`config/esgate.toml`):
///
/// ```
/// use std::time::Duration;
/// use esgate::connector_error::ConnectorErrorLayer;
///
/// let layer = ConnectorErrorLayer::new()
///     .max_body_size(1 << 20)
///     .body_read_timeout(Some(Duration::from_secs(10)))
///     .report_only(true);
/// # let _ = layer;
/// ```
#[derive(Clone, Debug, Default)]
pub struct ConnectorErrorLayer {
    config: Arc<GuardConfig>,
}

impl ConnectorErrorLayer {
    /// A layer with the default settings: 100 MiB bodies at most, 30 s without progress, a
    /// 48 MiB budget of its own, enforcing, no credential check, nothing known of the cluster's
    /// version (so only what every modelled version answers alike is answered locally).
    pub fn new() -> Self {
        Self::default()
    }

    fn config(&mut self) -> &mut GuardConfig {
        Arc::make_mut(&mut self.config)
    }

    /// Largest body (after decompression) read on the intercepted route; a larger one gets 413
    /// (`connector_error.max_body_size`).
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.config().max_body_size = bytes;
        self
    }

    /// Forwards every call and records what would have been refused as
    /// [`Verdict::WouldReject`](super::Verdict::WouldReject), instead of answering it
    /// (`connector_error.report_only`). The size, time and budget limits still apply.
    pub fn report_only(mut self, on: bool) -> Self {
        self.config().report_only = on;
        self
    }

    /// Before answering a rejection locally, checks the caller's credentials with the cluster,
    /// as a secured Elasticsearch authenticates before it reads a body
    /// (`connector_error.check_auth`); results are kept for `ttl` under a keyed hash of the
    /// credential headers.
    ///
    /// The check goes through the *inner* service: a `GET /_security/_authenticate` with an
    /// empty body and only the caller's `Authorization`, `es-security-runas-user`,
    /// `es-secondary-authorization` and `Host` headers. Its 401 (body read up to 64 KiB) is
    /// relayed to the caller; a 5xx or a failure lets the call go on to the cluster unchecked.
    pub fn check_auth(mut self, ttl: Duration) -> Self {
        self.config().auth = Some(Arc::new(AuthCheck::new(ttl)));
        self
    }

    /// Keeps the start of the `error` text of valid calls in [`Intercepted`](super::Intercepted)
    /// (for auditing): `Some(bytes)` of it, cut at a character boundary. Off by default.
    pub fn error_text_limit(mut self, bytes: Option<usize>) -> Self {
        self.config().error_text_limit = bytes;
        self
    }

    /// Longest wait for the next part of an intercepted body, then 408
    /// (`server.body_read_timeout`); `None`: no limit.
    pub fn body_read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config().body_read_timeout = timeout;
        self
    }

    /// The budget over the bytes of all intercepted bodies held at once
    /// (`connector_error.max_buffered_bytes`); a call that would pass it gets 429. Share one
    /// [`Budget`] between layers to bound them together.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.config().budget = budget;
        self
    }

    /// What is known of the dialects of the nodes the calls go to (for instance
    /// `SharedKnowledge::new(Knowledge::for_version(..))`, or the one an esgate upstream learns).
    pub fn knowledge(mut self, knowledge: SharedKnowledge) -> Self {
        self.config().knowledge = knowledge;
        self
    }
}

impl ConnectorErrorLayer {
    /// Sends a `rate` (0 to 1) of the calls refused locally also to the node, in the background,
    /// with a random connector id and the caller's credentials, counting in `counters` whether
    /// the node answered alike; a kind of call answered otherwise is forwarded from then on
    /// (`connector_error.canary_rate`; see `canary.rs`). Never in report-only mode.
    pub fn canary(mut self, rate: f64, counters: Arc<CanaryCounters>) -> Self {
        let config = self.config();
        config.canary = (rate > 0.0 && !config.report_only).then(|| Arc::new(Canary::new(rate, counters)));
        self
    }
}

impl<S> Layer<S> for ConnectorErrorLayer {
    type Service = ConnectorErrorGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConnectorErrorGuard::new(inner, self.config.clone())
    }
}
