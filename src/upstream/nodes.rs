//! The upstream nodes and their health, like the node pool of the official Elasticsearch clients.
//!
//! Requests go round-robin over the live nodes. A node that refuses a connection (or does not
//! accept one in time) is marked dead and skipped until its back-off has passed; the back-off
//! doubles with each consecutive failure up to a maximum, and a success makes the node live again.
//! When every node is dead, the one that comes back soonest is tried anyway, so a restarted
//! cluster is found again without waiting.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;
use rustls::pki_types::ServerName;

use crate::config::NodeUrl;

/// One upstream node.
#[derive(Debug)]
pub struct Node {
    /// Unique in the process: keys the per-thread idle connections of this node.
    pub(crate) id: u64,
    /// `host:port`, used to connect and as `Host` when rewriting.
    pub(crate) authority: String,
    /// The same, shared with the audit events that name it.
    pub(crate) name: Arc<str>,
    pub(crate) host_header: HeaderValue,
    /// For `https://` nodes, the name their certificate must carry.
    pub(crate) tls: Option<ServerName<'static>>,
    /// Milliseconds since [`Nodes::epoch`] until which the node is skipped; 0 when live.
    dead_until_ms: AtomicU64,
    /// Consecutive connection failures.
    failures: AtomicU32,
    /// The last probe or connection attempt got through (for readiness and metrics). False until
    /// the first one.
    answering: AtomicBool,
}

/// The set of upstream nodes of one gateway.
#[derive(Debug)]
pub struct Nodes {
    nodes: Box<[Node]>,
    epoch: Instant,
    backoff: Duration,
    max_backoff: Duration,
}

static NEXT_NODE_ID: AtomicU64 = AtomicU64::new(1);

impl Nodes {
    /// A live set of nodes. `backoff` and `max_backoff` bound the time a dead node is skipped.
    pub fn new(urls: &[NodeUrl], backoff: Duration, max_backoff: Duration) -> Self {
        let nodes = urls
            .iter()
            .map(|url| {
                let authority = url.authority();
                Node {
                    id: NEXT_NODE_ID.fetch_add(1, Ordering::Relaxed),
                    host_header: HeaderValue::from_str(&authority)
                        .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
                    name: Arc::from(authority.as_str()),
                    tls: url.tls.then(|| crate::tls::server_name(&url.host)).flatten(),
                    authority,
                    dead_until_ms: AtomicU64::new(0),
                    failures: AtomicU32::new(0),
                    answering: AtomicBool::new(false),
                }
            })
            .collect();
        Nodes {
            nodes,
            epoch: Instant::now(),
            backoff,
            max_backoff,
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub(crate) fn get(&self, index: usize) -> &Node {
        &self.nodes[index]
    }

    /// The order in which to try nodes for one request: live nodes starting at `start`
    /// (round-robin), then the dead ones, soonest back first. Each node appears once.
    pub fn plan(&self, start: usize) -> Plan {
        let n = self.nodes.len();
        let now = self.now_ms();
        let mut plan = Plan {
            order: [0; Plan::MAX],
            len: 0,
            next: 0,
        };
        let mut dead: [(u64, usize); Plan::MAX] = [(0, 0); Plan::MAX];
        let mut dead_len = 0;
        for k in 0..n.min(Plan::MAX) {
            let i = (start + k) % n;
            let until = self.nodes[i].dead_until_ms.load(Ordering::Relaxed);
            if until <= now {
                plan.order[plan.len] = i;
                plan.len += 1;
            } else {
                dead[dead_len] = (until, i);
                dead_len += 1;
            }
        }
        dead[..dead_len].sort_unstable();
        for (_, i) in &dead[..dead_len] {
            plan.order[plan.len] = *i;
            plan.len += 1;
        }
        plan
    }

    /// Records a failed connection attempt: the node is skipped for the back-off period.
    pub fn mark_dead(&self, index: usize) {
        let node = &self.nodes[index];
        let failures = node.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let delay = backoff_delay(self.backoff, self.max_backoff, failures);
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        node.dead_until_ms.store(until.max(1), Ordering::Relaxed);
        node.answering.store(false, Ordering::Relaxed);
    }

    /// Records a successful connection: the node is live again.
    pub fn mark_alive(&self, index: usize) {
        let node = &self.nodes[index];
        // Read first so the common case (already live) writes no shared cache line.
        if node.failures.load(Ordering::Relaxed) != 0 {
            node.failures.store(0, Ordering::Relaxed);
            node.dead_until_ms.store(0, Ordering::Relaxed);
        }
        if !node.answering.load(Ordering::Relaxed) {
            node.answering.store(true, Ordering::Relaxed);
        }
    }

    /// Records a health probe's result: `answering` is whether the node answered over HTTP.
    pub fn probed(&self, index: usize, answering: bool) {
        if answering {
            self.mark_alive(index);
        } else {
            self.mark_dead(index);
        }
    }

    /// Takes over what `old` knows of the nodes both sets have (same `host:port`), so that a
    /// reload does not make a healthy gateway look unready until its next probe.
    pub fn inherit(&self, old: &Nodes) {
        for node in self.nodes.iter() {
            if let Some(previous) = old.nodes.iter().find(|o| o.name == node.name) {
                node.answering
                    .store(previous.answering.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    }

    /// Whether the node answered the last probe or connection attempt.
    pub fn is_answering(&self, index: usize) -> bool {
        self.nodes[index].answering.load(Ordering::Relaxed)
    }

    /// True when at least one node answers.
    pub fn any_answering(&self) -> bool {
        self.nodes.iter().any(|n| n.answering.load(Ordering::Relaxed))
    }

    /// Each node's `host:port` and whether it answers.
    pub fn states(&self) -> impl Iterator<Item = (&str, bool)> + '_ {
        self.nodes
            .iter()
            .map(|n| (&*n.name, n.answering.load(Ordering::Relaxed)))
    }

    /// True when the node is not being skipped.
    pub fn is_alive(&self, index: usize) -> bool {
        self.nodes[index].dead_until_ms.load(Ordering::Relaxed) <= self.now_ms()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// `backoff * 2^(failures-1)`, at most `max`.
fn backoff_delay(backoff: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.saturating_sub(1).min(31)).unwrap_or(u32::MAX);
    backoff.saturating_mul(factor).min(max)
}

/// The nodes to try for one request, in order. A fixed array: no allocation per request.
#[derive(Debug)]
pub struct Plan {
    order: [usize; Plan::MAX],
    len: usize,
    next: usize,
}

impl Plan {
    /// Nodes beyond this many are never tried for one request (they still get requests in turn).
    pub const MAX: usize = 16;
}

impl Iterator for Plan {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let i = *self.order[..self.len].get(self.next)?;
        self.next += 1;
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: u16) -> Nodes {
        let urls: Vec<_> = (0..n)
            .map(|p| NodeUrl {
                host: "127.0.0.1".into(),
                port: 9200 + p,
                tls: false,
            })
            .collect();
        Nodes::new(&urls, Duration::from_secs(60), Duration::from_secs(600))
    }

    #[test]
    fn round_robin_over_live_nodes() {
        let n = nodes(3);
        assert_eq!(n.plan(0).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(n.plan(4).collect::<Vec<_>>(), [1, 2, 0]);
    }

    #[test]
    fn dead_nodes_go_last_soonest_back_first() {
        let n = nodes(3);
        n.mark_dead(0);
        n.mark_dead(0);
        n.mark_dead(1);
        assert!(!n.is_alive(0));
        assert_eq!(n.plan(0).collect::<Vec<_>>(), [2, 1, 0]);
        n.mark_alive(0);
        assert!(n.is_alive(0));
        assert_eq!(n.plan(0).collect::<Vec<_>>(), [0, 2, 1]);
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let s = Duration::from_secs(1);
        let max = Duration::from_secs(30);
        assert_eq!(backoff_delay(s, max, 1), s);
        assert_eq!(backoff_delay(s, max, 3), Duration::from_secs(4));
        assert_eq!(backoff_delay(s, max, 10), max);
        assert_eq!(backoff_delay(s, max, u32::MAX), max);
    }

    #[test]
    fn a_reload_keeps_what_is_known_of_the_same_nodes() {
        let old = nodes(2);
        old.probed(0, true);
        old.probed(1, false);
        let new = nodes(3);
        assert!(!new.any_answering(), "nothing is known of new nodes");
        new.inherit(&old);
        assert!(new.is_answering(0));
        assert!(!new.is_answering(1));
        assert!(!new.is_answering(2));
    }

    #[test]
    fn many_nodes_are_capped_per_request() {
        let n = nodes(20);
        assert_eq!(n.plan(5).count(), Plan::MAX);
    }
}
