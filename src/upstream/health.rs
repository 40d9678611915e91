//! Readiness probes: is at least one node answering?
//!
//! Every `health_check_interval`, each node gets `HEAD /` on a fresh connection, with esgate's
//! own credentials when configured. Any HTTP answer counts, 401 included (a secured cluster
//! answers, it just wants credentials); a refused or silent connection does not, and marks the
//! node dead for the request path too. A connection esgate cannot open for a reason of its own
//! (no descriptors or memory left) says nothing of the node and changes nothing. Traffic updates
//! the same state between probes (a successful connection marks its node as answering).

use std::time::Duration;

use http::header::{AUTHORIZATION, HOST, USER_AGENT};
use http::{HeaderValue, Method, Request};

use super::body::UpstreamBody;
use super::{pool, Upstream};
use crate::body::Body;

impl Upstream {
    /// Probes every node once, all at the same time, and records the results.
    pub async fn probe_all(&self) {
        let nodes = &self.shared.nodes;
        let probes = (0..nodes.len()).map(|index| async move {
            let node = &nodes.get(index).authority;
            let answering = match self.probe(index).await {
                Ok(answering) => answering,
                Err(error) => {
                    return tracing::warn!(%node, %error, "health probe could not open a connection (a local limit, not the node)");
                }
            };
            if answering != nodes.is_answering(index) {
                if answering {
                    tracing::info!(%node, "upstream node answers");
                } else {
                    tracing::warn!(%node, "upstream node does not answer its health probe");
                }
            }
            nodes.probed(index, answering);
        });
        join_all(probes).await;
    }

    /// Probes every node now, then every `interval`, until `shutdown` changes.
    pub async fn run_probes(&self, interval: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = self.probe_all() => {}
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// The longest a probe of one node may take: connecting, then the answer.
    pub(crate) fn probe_limit(&self) -> Duration {
        let shared = &*self.shared;
        shared.connect_timeout
            + shared
                .response_timeout
                .unwrap_or(shared.connect_timeout)
                .min(Duration::from_secs(10))
    }

    /// One `HEAD /` on a new connection to node `index`: true for any HTTP answer in time; an
    /// error when the connection could not be opened for a local reason.
    async fn probe(&self, index: usize) -> Result<bool, String> {
        let shared = &*self.shared;
        let node = shared.nodes.get(index);
        let attempt = async {
            let mut send = match pool::connect(node, &shared.client, shared.connect_timeout, shared.tls.as_ref()).await
            {
                Ok(send) => send,
                Err(e) if e.is_local() => return Err(e.to_string()),
                Err(_) => return Ok(false),
            };
            let mut req = Request::new(UpstreamBody::new(Body::Empty).0);
            *req.method_mut() = Method::HEAD;
            req.headers_mut().insert(HOST, node.host_header.clone());
            req.headers_mut().insert(
                USER_AGENT,
                HeaderValue::from_static(concat!("esgate/", env!("CARGO_PKG_VERSION"), " (health probe)")),
            );
            if let Some(credentials) = &shared.credentials {
                req.headers_mut().insert(AUTHORIZATION, credentials.clone());
            }
            Ok(send.send_request(req).await.is_ok())
        };
        tokio::time::timeout(self.probe_limit(), attempt)
            .await
            .unwrap_or(Ok(false))
    }
}

/// A future being joined, and its output once it has one.
type Joined<F> = (std::pin::Pin<Box<F>>, Option<<F as std::future::Future>::Output>);

/// Runs all `futures` concurrently on the current task and returns their outputs, in order.
pub(crate) async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set: Vec<Joined<F>> = futures.map(|f| (Box::pin(f), None)).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        // A future that is done is never polled again.
        for (future, output) in set.iter_mut().filter(|(_, output)| output.is_none()) {
            match future.as_mut().poll(cx) {
                std::task::Poll::Ready(v) => *output = Some(v),
                std::task::Poll::Pending => pending = true,
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    set.into_iter().filter_map(|(_, output)| output).collect()
}
