//! The upstream nodes and their health, like the node pool of the official Elasticsearch clients.
//!
//! Requests go round-robin over the live nodes. A node that refuses a connection (or does not
//! accept one in time) is marked dead and skipped until its back-off has passed; the back-off
//! doubles with each consecutive failure up to a maximum, and a success makes the node live again.
//! When every node is dead, the one that comes back soonest is tried anyway, so a restarted
//! cluster is found again without waiting.
//!
//! Each node also keeps what is known of its Elasticsearch version ([`Learned`], from the version
//! probes of the `version` module); after every change the union over all nodes, dead ones
//! included (a request may be retried to any of them), goes into the [`SharedKnowledge`] the
//! connector-error layer reads.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::HeaderValue;
use rustls::pki_types::ServerName;
use tokio::sync::Notify;

use crate::config::NodeUrl;
use crate::elasticsearch::{Knowledge, SharedKnowledge};

/// What is known of one node's Elasticsearch version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Learned {
    /// The dialects it may speak.
    pub knowledge: Knowledge,
    /// The version as learned, for metrics and logs: `9.2.1`, `serverless`, `9.x` when only the
    /// major is known; `None` when nothing is.
    pub version: Option<Arc<str>>,
}

impl Learned {
    /// Nothing known: every modelled dialect.
    pub const UNKNOWN: Learned = Learned {
        knowledge: Knowledge::UNKNOWN,
        version: None,
    };

    /// The `version` label: the version text, or `unknown`.
    pub fn version_label(&self) -> &str {
        self.version.as_deref().unwrap_or("unknown")
    }

    /// The `dialect` label: the dialects joined with `,`, or `unmodelled`.
    pub fn dialect_label(&self) -> String {
        match self.knowledge {
            Knowledge::Dialects(set) => set.to_string(),
            Knowledge::Unmodelled(_) => "unmodelled".to_owned(),
        }
    }
}

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
    /// What is known of its version. Never read on the request path.
    learned: Mutex<Learned>,
    /// A version probe got an HTTP answer from it at least once.
    version_reached: AtomicBool,
    /// It came back (from dead, or answered for the first time with no version probe through):
    /// its version is to be checked again.
    recheck: AtomicBool,
}

/// The set of upstream nodes of one gateway.
#[derive(Debug)]
pub struct Nodes {
    nodes: Box<[Node]>,
    epoch: Instant,
    backoff: Duration,
    max_backoff: Duration,
    /// Woken when a node comes back (see [`Node::recheck`]).
    revived: Notify,
    /// Serialises the updates of [`Learned`] and of the union, so the last store wins consistently.
    learning: Mutex<()>,
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
                    learned: Mutex::new(Learned::UNKNOWN),
                    version_reached: AtomicBool::new(false),
                    recheck: AtomicBool::new(false),
                }
            })
            .collect();
        Nodes {
            nodes,
            epoch: Instant::now(),
            backoff,
            max_backoff,
            revived: Notify::new(),
            learning: Mutex::new(()),
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
        // Read only when a node was ever marked dead: healthy clusters plan without the clock.
        let mut now = None;
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
            if until == 0 || until <= *now.get_or_insert_with(|| self.now_ms()) {
                plan.order[usize::from(plan.len)] = i as u32;
                plan.len += 1;
            } else {
                dead[dead_len] = (until, i);
                dead_len += 1;
            }
        }
        dead[..dead_len].sort_unstable();
        for (_, i) in &dead[..dead_len] {
            plan.order[usize::from(plan.len)] = *i as u32;
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
        let mut revived = false;
        if node.failures.load(Ordering::Relaxed) != 0 {
            node.failures.store(0, Ordering::Relaxed);
            node.dead_until_ms.store(0, Ordering::Relaxed);
            revived = true;
        }
        if !node.answering.load(Ordering::Relaxed) {
            node.answering.store(true, Ordering::Relaxed);
            // Answering for the first time: worth a version check only if none got through yet.
            revived |= !node.version_reached.load(Ordering::Relaxed);
        }
        if revived {
            // Rare (a transition), and only a flag and a wake-up: the version probe runs elsewhere.
            node.recheck.store(true, Ordering::Relaxed);
            self.revived.notify_one();
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

    /// Takes over what `old` knows of the versions of the nodes both sets have (same `host:port`),
    /// so that a reload does not forget them until the next version probe. The union is not
    /// recomputed here: see [`Nodes::publish`].
    pub fn inherit_versions(&self, old: &Nodes) {
        for node in self.nodes.iter() {
            if let Some(previous) = old.nodes.iter().find(|o| o.name == node.name) {
                *lock(&node.learned) = lock(&previous.learned).clone();
                node.version_reached
                    .store(previous.version_reached.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    }

    /// What is known of node `index`'s version.
    pub fn learned(&self, index: usize) -> Learned {
        lock(&self.nodes[index].learned).clone()
    }

    /// Records what a version probe (or a pin) says of node `index`, and stores the new union
    /// over all nodes in `into`. Returns true when what is known of the node changed.
    pub fn learn(&self, index: usize, learned: Learned, into: &SharedKnowledge) -> bool {
        let _serial = lock(&self.learning);
        let changed = {
            let mut current = lock(&self.nodes[index].learned);
            let changed = *current != learned;
            *current = learned;
            changed
        };
        into.store(self.union());
        changed
    }

    /// Stores the union over all nodes in `into`.
    pub fn publish(&self, into: &SharedKnowledge) {
        let _serial = lock(&self.learning);
        into.store(self.union());
    }

    /// What holds for a call that may go to any node: the union of every node's knowledge.
    pub fn union(&self) -> Knowledge {
        let mut known = self.nodes.iter().map(|n| lock(&n.learned).knowledge);
        match known.next() {
            None => Knowledge::UNKNOWN,
            Some(first) => known.fold(first, Knowledge::union),
        }
    }

    /// A version probe got an HTTP answer from node `index`.
    pub(crate) fn version_reached(&self, index: usize) {
        self.nodes[index].version_reached.store(true, Ordering::Relaxed);
    }

    /// Clears and returns node `index`'s "check its version again" flag.
    pub(crate) fn take_recheck(&self, index: usize) -> bool {
        self.nodes[index].recheck.swap(false, Ordering::Relaxed)
    }

    /// Resolves when a node came back since the last call (see [`Nodes::take_recheck`]).
    pub(crate) async fn revived(&self) {
        self.revived.notified().await;
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `backoff * 2^(failures-1)`, at most `max`.
fn backoff_delay(backoff: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.saturating_sub(1).min(31)).unwrap_or(u32::MAX);
    backoff.saturating_mul(factor).min(max)
}

/// The nodes to try for one request, in order. A fixed array: no allocation per request.
#[derive(Debug)]
pub struct Plan {
    /// Node indices (each a configured URL, so far below `u32::MAX`): 4 bytes each rather than 8,
    /// since the plan lives in every request's future.
    order: [u32; Plan::MAX],
    len: u8,
    next: u8,
}

impl Plan {
    /// Nodes beyond this many are never tried for one request (they still get requests in turn).
    pub const MAX: usize = 16;
}

impl Iterator for Plan {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let i = *self.order[..usize::from(self.len)].get(usize::from(self.next))?;
        self.next += 1;
        Some(i as usize)
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
    fn the_shared_knowledge_is_the_union_over_every_node() {
        use crate::elasticsearch::{Dialect, DialectSet, Version};
        let n = nodes(3);
        let shared = SharedKnowledge::default();
        let at = |v: &str| Learned {
            knowledge: Knowledge::for_version(Version::parse(v).expect("version")),
            version: Some(Arc::from(v)),
        };
        assert!(n.learn(0, at("9.2.1"), &shared));
        // Two nodes are still unknown: every dialect.
        assert_eq!(shared.load(), Knowledge::UNKNOWN);
        n.learn(1, at("9.2.4"), &shared);
        n.learn(2, at("9.5.0"), &shared);
        assert_eq!(shared.load().to_string(), "9-c-2.17,9-c-2.21");
        // Dead nodes count too: nothing here depends on health.
        n.mark_dead(2);
        n.publish(&shared);
        assert_eq!(shared.load().to_string(), "9-c-2.17,9-c-2.21");
        // A rolling upgrade moves the last 9.2 node: the union follows.
        n.learn(0, at("9.5.0"), &shared);
        n.learn(1, at("9.5.0"), &shared);
        assert_eq!(shared.load(), Knowledge::Dialects(DialectSet::one(Dialect::Es9C21)));
        assert!(!n.learn(1, at("9.5.0"), &shared), "the same again is no change");
        // One unmodelled node makes the whole set unmodelled.
        n.learn(2, at("8.15.0"), &shared);
        assert!(matches!(shared.load(), Knowledge::Unmodelled(_)));
        assert_eq!(n.learned(2).dialect_label(), "unmodelled");
        assert_eq!(n.learned(2).version_label(), "8.15.0");
    }

    #[test]
    fn a_reload_keeps_learned_versions() {
        use crate::elasticsearch::Version;
        let old = nodes(2);
        let shared = SharedKnowledge::default();
        let learned = Learned {
            knowledge: Knowledge::for_version(Version::new(9, 2, 1)),
            version: Some(Arc::from("9.2.1")),
        };
        old.learn(0, learned.clone(), &shared);
        let new = nodes(1);
        new.inherit_versions(&old);
        assert_eq!(new.learned(0), learned);
        let fresh = SharedKnowledge::default();
        new.publish(&fresh);
        assert_eq!(fresh.load().to_string(), "9-c-2.17");
    }

    #[test]
    fn a_node_back_from_dead_asks_for_a_version_check() {
        let n = nodes(1);
        n.version_reached(0);
        n.mark_alive(0);
        assert!(!n.take_recheck(0), "first answer, version already probed");
        n.mark_dead(0);
        n.mark_alive(0);
        assert!(n.take_recheck(0));
        assert!(!n.take_recheck(0), "taken once");
        let m = nodes(1);
        m.mark_alive(0);
        assert!(m.take_recheck(0), "answers, but no version probe got through yet");
    }

    #[test]
    fn many_nodes_are_capped_per_request() {
        let n = nodes(20);
        assert_eq!(n.plan(5).count(), Plan::MAX);
    }
}
