//! The canary: a sampled local rejection also sent to a node, to compare its answer with esgate's.
//!
//! Opt-in (`connector_error.canary_rate`, a fraction of local rejections; off in report-only
//! mode). The client's answer never waits for it: the copy goes to the inner service on a task of
//! its own, with a random connector id that does not exist (Elasticsearch checks the body before it
//! looks the connector up, so a refused call gets the same 400 and a valid one a harmless 404) and
//! the caller's own credentials. A node that answers differently (status, `Content-Type` or body)
//! turns that kind of call (the rejection's error type) to forwarding until the next reload or
//! restart, and the two bodies are logged. At most [`MAX_IN_FLIGHT`] copies are in flight.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Copies in flight at most; a rejection sampled beyond it is not copied.
pub(crate) const MAX_IN_FLIGHT: usize = 4;

/// The canary's counts, read by the metrics registry.
#[derive(Debug, Default)]
pub struct CanaryCounters {
    /// The node answered as esgate did.
    pub matched: AtomicU64,
    /// The node answered otherwise.
    pub mismatched: AtomicU64,
    /// No answer to compare (the node unreachable, the copy failed).
    pub errors: AtomicU64,
}

/// The sampling, the bound and the kinds of call turned to forwarding.
#[derive(Debug)]
pub(crate) struct Canary {
    rate: f64,
    calls: AtomicU64,
    in_flight: AtomicUsize,
    /// Set once any kind is disabled: the common case reads one atomic, no lock.
    any_disabled: AtomicBool,
    disabled: Mutex<HashSet<&'static str>>,
    keys: std::collections::hash_map::RandomState,
    pub(crate) counters: Arc<CanaryCounters>,
}

/// A copy in flight; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct Permit(Arc<Canary>);

impl Permit {
    /// The canary the copy belongs to.
    pub(crate) fn canary(&self) -> Arc<Canary> {
        self.0.clone()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Canary {
    pub(crate) fn new(rate: f64, counters: Arc<CanaryCounters>) -> Self {
        Canary {
            rate,
            calls: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            any_disabled: AtomicBool::new(false),
            disabled: Mutex::new(HashSet::new()),
            keys: std::collections::hash_map::RandomState::new(),
            counters,
        }
    }

    /// Whether calls of `kind` are forwarded since a canary found them answered differently.
    pub(crate) fn disabled(&self, kind: &str) -> bool {
        self.any_disabled.load(Ordering::Relaxed)
            && self
                .disabled
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(kind)
    }

    /// Forward calls of `kind` from now on.
    pub(crate) fn disable(&self, kind: &'static str) {
        self.disabled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(kind);
        self.any_disabled.store(true, Ordering::Relaxed);
    }

    /// A place for a copy of this rejection, when it is sampled (every 1/rate-th rejection,
    /// evenly) and fewer than [`MAX_IN_FLIGHT`] are in flight.
    pub(crate) fn sample(self: &Arc<Self>) -> Option<Permit> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) as f64;
        if ((n + 1.0) * self.rate).floor() <= (n * self.rate).floor() {
            return None;
        }
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Permit(self.clone()))
    }

    /// A connector id that does not exist: `esgate-canary-<random>`.
    pub(crate) fn random_id(&self) -> String {
        let n = self.calls.load(Ordering::Relaxed);
        format!("esgate-canary-{:016x}", self.keys.hash_one(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_follows_the_rate_and_the_bound() {
        let canary = Arc::new(Canary::new(0.25, Arc::default()));
        let sampled: Vec<Permit> = (0..8).filter_map(|_| canary.sample()).collect();
        assert_eq!(sampled.len(), 2);
        let all = Arc::new(Canary::new(1.0, Arc::default()));
        let held: Vec<Permit> = (0..10).filter_map(|_| all.sample()).collect();
        assert_eq!(held.len(), MAX_IN_FLIGHT);
        drop(held);
        assert!(all.sample().is_some());
        assert!(Arc::new(Canary::new(0.0, Arc::default())).sample().is_none());
    }

    #[test]
    fn a_disabled_kind_stays_disabled() {
        let canary = Canary::new(1.0, Arc::default());
        assert!(!canary.disabled("x_content_parse_exception"));
        canary.disable("x_content_parse_exception");
        assert!(canary.disabled("x_content_parse_exception"));
        assert!(!canary.disabled("parse_exception"));
        assert_ne!(canary.random_id(), "");
    }
}
