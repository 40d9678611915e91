//! Readiness probes: is at least one node answering?
//!
//! Every `health_check_interval`, each node gets `HEAD /` on a fresh connection. Any HTTP answer
//! counts, 401 included (a secured cluster answers, it just wants credentials); a refused or
//! silent connection does not, and marks the node dead for the request path too. Traffic updates
//! the same state between probes (a successful connection marks its node as answering).

use std::time::Duration;

use http::header::{HOST, USER_AGENT};
use http::{HeaderValue, Method, Request};

use super::body::UpstreamBody;
use super::{pool, Upstream};
use crate::body::Body;

impl Upstream {
    /// Probes every node once, all at the same time, and records the results.
    pub async fn probe_all(&self) {
        let nodes = &self.shared.nodes;
        let probes = (0..nodes.len()).map(|index| async move {
            let answering = self.probe(index).await;
            if answering != nodes.is_answering(index) {
                let node = &nodes.get(index).authority;
                if answering {
                    tracing::info!(%node, "upstream node answers");
                } else {
                    tracing::warn!(%node, "upstream node does not answer its health probe");
                }
            }
            nodes.probed(index, answering);
        });
        futures_join_all(probes).await;
    }

    /// Probes every node now, then every `interval`, until `shutdown` changes.
    pub async fn run_probes(&self, interval: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            self.probe_all().await;
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One `HEAD /` on a new connection to node `index`; true for any HTTP answer in time.
    async fn probe(&self, index: usize) -> bool {
        let shared = &*self.shared;
        let node = shared.nodes.get(index);
        let limit = shared.connect_timeout
            + shared
                .response_timeout
                .unwrap_or(shared.connect_timeout)
                .min(Duration::from_secs(10));
        let attempt = async {
            let mut send = pool::connect(node, &shared.client, shared.connect_timeout, shared.tls.as_ref())
                .await
                .ok()?;
            let mut req = Request::new(UpstreamBody::new(Body::Empty).0);
            *req.method_mut() = Method::HEAD;
            req.headers_mut().insert(HOST, node.host_header.clone());
            req.headers_mut().insert(
                USER_AGENT,
                HeaderValue::from_static(concat!("esgate/", env!("CARGO_PKG_VERSION"), " (health probe)")),
            );
            send.send_request(req).await.ok()
        };
        matches!(tokio::time::timeout(limit, attempt).await, Ok(Some(_)))
    }
}

/// Runs all `futures` concurrently on the current task and waits for every one.
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}
