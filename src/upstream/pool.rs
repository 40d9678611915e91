//! Upstream connections: opened per node, kept by the client connection that used them last for
//! a short while, and parked per runtime thread otherwise.
//!
//! A client connection sends its requests one after another (HTTP/1.1), so the upstream
//! connection it used for one request is free for the next: keeping it in the client
//! connection's own state avoids a shared pool lock and a cross-thread hand-off on every request.
//! A client connection that goes [`RELEASE_AFTER`] without a request gives its upstream
//! connections back to a pool owned by the runtime thread (no lock either), where the next
//! request of any client connection on that thread finds them; so does a client connection that
//! closes. The number of upstream connections thus follows the number of requests in flight, not
//! the number of connected clients.
//!
//! A timer task per runtime thread (started when the thread first holds a connection, ended when
//! it holds none) does both the release and the pruning: every [`TICK`] it closes the parked
//! connections that would be older than `pool_idle_timeout` before the next tick, with or without
//! traffic, so no idle connection outlives that timeout.

use std::cell::RefCell;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{Builder, SendRequest};

use super::body::UpstreamBody;
use super::nodes::Node;
use crate::connect::{ConnectError, Target};
use crate::tls::ClientTls;

/// How long a client connection keeps its upstream connection without sending a request.
///
/// The requests of a busy client (a bulk loop, a scroll, search pages) follow each other within
/// milliseconds: for them the connection stays in hand and the hot path takes no pool. A client
/// that is done, or waits for something else (a connectors service between two syncs, a pooled
/// client connection of an application at rest), gives its connection back within about a second,
/// so 5,000 idle clients hold no upstream connection at all, only the pool does (bounded by
/// `pool_max_idle_per_node`). This is not `pool_idle_timeout`: that one bounds how long the
/// *node* sees a connection idle (tens of seconds, below the idle timeouts of load balancers);
/// reusing it here would keep one connection per client for 50 s, the problem this solves.
pub(crate) const RELEASE_AFTER: Duration = Duration::from_secs(1);

/// How often the per-thread timer releases and prunes.
pub(crate) const TICK: Duration = Duration::from_millis(250);

/// The sending half of one upstream HTTP/1.1 connection.
pub(crate) type Sender = SendRequest<UpstreamBody>;

/// An upstream connection not in use, with the last time it was known to be in use.
pub(crate) struct Idle {
    node: u64,
    pub(crate) send: Sender,
    /// When the connection was last seen busy (its request sent, or a timer tick found its answer
    /// still running): the node's idle timer started at or after this.
    pub(crate) since: Instant,
    /// `pool_idle_timeout` of its gateway.
    max_idle: Duration,
}

impl Idle {
    /// A connection last seen busy at `since`.
    pub(crate) fn new(node: u64, send: Sender, max_idle: Duration, since: Instant) -> Self {
        Idle {
            node,
            send,
            since,
            max_idle,
        }
    }

    /// Still open, and young enough at `at` that the node has not closed it as idle.
    pub(crate) fn usable_at(&self, at: Instant) -> bool {
        !self.send.is_closed() && at.saturating_duration_since(self.since) < self.max_idle
    }

    /// Still open, and young enough that the node has not closed it as idle.
    pub(crate) fn usable(&self) -> bool {
        self.usable_at(Instant::now())
    }
}

/// A client connection's upstream connections, as the per-thread timer sees them.
pub(crate) trait Holder: Send + Sync {
    /// Gives back (with [`park`]) or closes the connections idle since [`RELEASE_AFTER`] or
    /// longer, and marks those still answering as busy at `now`. Returns true while it still
    /// holds any connection.
    fn release(&self, now: Instant) -> bool;
}

thread_local! {
    /// Idle upstream connections of every gateway in this process, parked on this thread.
    static PARKED: RefCell<Vec<Idle>> = const { RefCell::new(Vec::new()) };
    /// Client connections of this thread that hold upstream connections.
    static HOLDERS: RefCell<Vec<Weak<dyn Holder>>> = const { RefCell::new(Vec::new()) };
    /// Alive while this thread's timer task runs.
    static TIMER: RefCell<Weak<()>> = const { RefCell::new(Weak::new()) };
}

/// Takes the most recently parked usable connection to `node` on this thread.
pub(crate) fn take_parked(node: u64) -> Option<Sender> {
    PARKED
        .try_with(|parked| {
            let mut parked = parked.try_borrow_mut().ok()?;
            parked.retain(Idle::usable);
            let pos = parked.iter().rposition(|c| c.node == node)?;
            Some(parked.swap_remove(pos).send)
        })
        .ok()
        .flatten()
}

/// Parks an idle connection on this thread, unless `max_per_node` are parked for its node already
/// (then it is closed).
pub(crate) fn park(idle: Idle, max_per_node: usize) {
    let parked_one = PARKED
        .try_with(|parked| match parked.try_borrow_mut() {
            Ok(mut parked) => {
                parked.retain(Idle::usable);
                let room = parked.iter().filter(|c| c.node == idle.node).count() < max_per_node;
                if room && idle.usable() {
                    parked.push(idle);
                    true
                } else {
                    false
                }
            }
            Err(_) => false,
        })
        .unwrap_or(false);
    if parked_one {
        ensure_timer();
    }
}

/// Registers a client connection that now holds an upstream connection, for the timer to release.
pub(crate) fn hold(holder: Weak<dyn Holder>) {
    let _ = HOLDERS.try_with(|holders| {
        if let Ok(mut holders) = holders.try_borrow_mut() {
            holders.push(holder);
        }
    });
    ensure_timer();
}

/// Starts this thread's timer task unless it runs (nothing without a tokio runtime: then parked
/// connections are pruned when the pool is used, and client connections keep theirs).
fn ensure_timer() {
    let _ = TIMER.try_with(|timer| {
        if timer.borrow().strong_count() > 0 {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let alive = Arc::new(());
        *timer.borrow_mut() = Arc::downgrade(&alive);
        // esgate's workers are current-thread runtimes: the task runs on this thread, next to the
        // thread-local pool and holders it looks after.
        runtime.spawn(async move {
            let _alive = alive;
            let mut ticks = tokio::time::interval(TICK);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if !tick(Instant::now()) {
                    break;
                }
            }
        });
    });
}

/// One round of the timer: releases idle connections of client connections, closes parked ones
/// that would outlive their idle timeout before the next round. False when nothing is left to
/// look after.
fn tick(now: Instant) -> bool {
    // Taken out, so that releasing (which parks) and registering never meet a borrowed list.
    let mut holders = HOLDERS
        .try_with(|h| std::mem::take(&mut *h.borrow_mut()))
        .unwrap_or_default();
    holders.retain(|holder| holder.upgrade().is_some_and(|h| h.release(now)));
    let holding = HOLDERS
        .try_with(|h| {
            let mut h = h.borrow_mut();
            // Registered during the round: kept too.
            holders.append(&mut h);
            *h = holders;
            !h.is_empty()
        })
        .unwrap_or(false);
    let parked = PARKED
        .try_with(|parked| {
            let Ok(mut parked) = parked.try_borrow_mut() else {
                return true;
            };
            parked.retain(|c| c.usable_at(now + TICK));
            !parked.is_empty()
        })
        .unwrap_or(false);
    holding || parked
}

/// Opens a new connection to `node` (TLS for an `https://` node, within the same `timeout`) and
/// drives it on the current runtime thread.
pub(crate) async fn connect(
    node: &Node,
    builder: &Builder,
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<Sender, ConnectError> {
    let target = Target {
        authority: &node.authority,
        server_name: node.tls.as_ref(),
        tls,
    };
    crate::connect::connect(target, builder, timeout, "upstream").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_limits_are_not_the_nodes_fault() {
        for errno in [24, 23, 12] {
            assert!(
                ConnectError::Io(std::io::Error::from_raw_os_error(errno)).is_local(),
                "{errno}"
            );
        }
        let refused = ConnectError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(!refused.is_local());
        assert!(!ConnectError::Timeout(Duration::from_secs(1)).is_local());
    }
}
