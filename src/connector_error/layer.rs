//! [`ConnectorErrorLayer`]: applies [`ConnectorErrorGuard`] in a tower stack.

use std::sync::Arc;

use tower::Layer;

use super::service::{ConnectorErrorGuard, GuardConfig};

/// Wraps services with [`ConnectorErrorGuard`]. Cheap to clone: the settings are shared.
#[derive(Clone, Debug)]
pub struct ConnectorErrorLayer {
    config: Arc<GuardConfig>,
}

impl ConnectorErrorLayer {
    /// A layer with these settings.
    pub fn new(config: GuardConfig) -> Self {
        ConnectorErrorLayer {
            config: Arc::new(config),
        }
    }
}

impl<S> Layer<S> for ConnectorErrorLayer {
    type Service = ConnectorErrorGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConnectorErrorGuard::new(inner, self.config.clone())
    }
}
