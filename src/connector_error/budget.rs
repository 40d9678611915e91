//! The budget over every intercepted body held at once (`connector_error.max_buffered_bytes`).
//!
//! One shared atomic counts the bytes of all buffers the guard holds: the raw body, the decoded
//! body when it came encoded, and a canonical body when one is built. A buffer takes a
//! [`Reservation`] before it allocates (from `Content-Length` up front, or as it grows) and gives
//! it back when dropped, so the count follows the memory without a lock. A reservation that
//! would pass the limit fails with [`Tripped`], answered as Elasticsearch's in-flight-requests
//! circuit breaker answers: 429 `circuit_breaking_exception` with `bytes_wanted`, `bytes_limit`
//! and `durability` beside the type and reason.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};

use super::verdict::Rejection;
use crate::body::Body;
use crate::elasticsearch::{EsError, Field};
use crate::es_error::json_response;

/// The breaker's name in the reason, in the place of Elasticsearch's `in_flight_requests`.
pub(super) const BREAKER: &str = "esgate_buffered_bodies";
/// What the breaker guards, as Elasticsearch names it for HTTP requests.
pub(super) const LABEL: &str = "<http_request>";
/// The error type of a trip.
pub(super) const CIRCUIT_BREAKING_TYPE: &str = "circuit_breaking_exception";

/// The limit and the shared count. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Budget {
    counters: Arc<BufferCounters>,
    limit: u64,
}

impl Budget {
    /// A budget of `limit` bytes counted in `counters` (shared across reloads through the
    /// metrics registry, so that requests of an older configuration still count).
    pub(crate) fn new(limit: usize, counters: Arc<BufferCounters>) -> Self {
        Budget {
            counters,
            limit: limit as u64,
        }
    }

    /// A budget with counters of its own (tests, stacks without metrics).
    pub fn unshared(limit: usize) -> Self {
        Self::new(limit, Arc::default())
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held now, by every reservation on the counters.
    pub fn held(&self) -> u64 {
        self.counters.held.load(Ordering::Relaxed)
    }

    /// Calls refused so far.
    pub fn trips(&self) -> u64 {
        self.counters.trips.load(Ordering::Relaxed)
    }

    /// A reservation of `bytes`, or the trip that refuses it (counted).
    pub(crate) fn reserve(&self, bytes: usize) -> Result<Reservation, Tripped> {
        let mut reservation = Reservation {
            counters: self.counters.clone(),
            limit: self.limit,
            bytes: 0,
        };
        reservation.grow(bytes)?;
        Ok(reservation)
    }
}

/// Bytes taken from a [`Budget`]; given back on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    counters: Arc<BufferCounters>,
    limit: u64,
    bytes: u64,
}

impl Reservation {
    /// The bytes this reservation holds.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        usize::try_from(self.bytes).unwrap_or(usize::MAX)
    }

    /// Takes `more` bytes, or fails without taking any: quietly (no trip counted), so that a
    /// caller may try a smaller amount.
    pub(crate) fn try_grow(&mut self, more: usize) -> Result<(), Tripped> {
        let more = more as u64;
        let limit = self.limit;
        match self
            .counters
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(more).filter(|total| *total <= limit)
            }) {
            Ok(_) => {
                self.bytes += more;
                Ok(())
            }
            Err(held) => Err(Tripped {
                wanted: held.saturating_add(more),
                limit,
            }),
        }
    }

    /// As [`Reservation::try_grow`], counting a refusal as a trip of the breaker.
    pub(crate) fn grow(&mut self, more: usize) -> Result<(), Tripped> {
        self.try_grow(more).inspect_err(|_| {
            self.counters.trips.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// Gives back what is held beyond `bytes`.
    pub(crate) fn shrink_to(&mut self, bytes: usize) {
        let bytes = bytes as u64;
        if bytes < self.bytes {
            self.counters.held.fetch_sub(self.bytes - bytes, Ordering::Relaxed);
            self.bytes = bytes;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.counters.held.fetch_sub(self.bytes, Ordering::Relaxed);
            crate::memory::note_freed(self.bytes as usize);
        }
    }
}

/// A buffer and the reservation that pays for it, as the owner of [`Bytes`]: the bytes are
/// given back to the budget when the last `Bytes` of it is dropped (once it has been sent
/// upstream, for a forwarded body).
#[derive(Debug)]
pub(crate) struct Held {
    data: Vec<u8>,
    /// Kept for its `Drop`, which gives the bytes back.
    #[cfg_attr(not(test), allow(dead_code))]
    reservation: Reservation,
}

impl Held {
    /// `data`, paid for by `reservation`; the reservation is cut to the buffer's capacity when
    /// it holds more.
    pub(crate) fn new(data: Vec<u8>, mut reservation: Reservation) -> Self {
        reservation.shrink_to(data.capacity());
        Held { data, reservation }
    }

    /// The bytes, keeping the reservation until the last clone is dropped.
    pub(crate) fn into_bytes(self) -> Bytes {
        if self.data.is_empty() {
            return Bytes::new();
        }
        Bytes::from_owner(self)
    }

    /// Bytes reserved for it.
    #[cfg(test)]
    pub(crate) fn reserved(&self) -> usize {
        self.reservation.bytes()
    }
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// A reservation that would pass the limit: `wanted` is what the held bytes would have become.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tripped {
    /// The bytes that would be held with this reservation.
    pub wanted: u64,
    /// The limit.
    pub limit: u64,
}

impl Tripped {
    /// The reason, in `ChildMemoryCircuitBreaker`'s words.
    pub(crate) fn reason(&self) -> String {
        format!(
            "[{BREAKER}] Data too large, data for [{LABEL}] would be [{}/{}], which is larger than the limit of [{}/{}]",
            self.wanted,
            byte_size(self.wanted),
            self.limit,
            byte_size(self.limit)
        )
    }

    /// 429 as Elasticsearch writes a `CircuitBreakingException`: the breaker's fields after
    /// type and reason, in the root cause and the error alike; durability `TRANSIENT` (the
    /// call may succeed once other bodies are gone).
    pub(crate) fn response(&self) -> Response<Body> {
        let status = StatusCode::TOO_MANY_REQUESTS;
        let reason = self.reason();
        let error = EsError::new(status.as_u16(), CIRCUIT_BREAKING_TYPE, reason.as_str()).with_fields(vec![
            ("bytes_wanted", Field::Number(self.wanted)),
            ("bytes_limit", Field::Number(self.limit)),
            ("durability", Field::Text("TRANSIENT")),
        ]);
        let mut response = json_response(status, Bytes::from(error.to_compact()));
        response.extensions_mut().insert(Rejection {
            status: status.as_u16(),
            error_type: Some(CIRCUIT_BREAKING_TYPE),
            reason,
        });
        response
    }
}

/// A byte count as Elasticsearch's `ByteSizeValue.toString()` writes it: the largest unit it
/// reaches, one decimal cut (not rounded) and dropped when zero: `512b`, `1kb`, `1.9mb`.
pub(super) fn byte_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (1 << 50, "pb"),
        (1 << 40, "tb"),
        (1 << 30, "gb"),
        (1 << 20, "mb"),
        (1 << 10, "kb"),
    ];
    let Some((size, suffix)) = UNITS.iter().find(|(size, _)| bytes >= *size) else {
        return format!("{bytes}b");
    };
    // `Strings.format1Decimals` on `String.valueOf(double)`.
    let text = (bytes as f64 / *size as f64).to_string();
    match text.split_once('.') {
        Some((whole, fraction)) => match fraction.chars().next() {
            Some(d) if d != '0' => format!("{whole}.{d}{suffix}"),
            _ => format!("{whole}{suffix}"),
        },
        None => format!("{text}{suffix}"),
    }
}

/// The intercepted bodies esgate holds: the bytes held now (gauge) and the calls refused because
/// they would pass the budget (counter). Shared with the connector-error budget, which counts into
/// it directly, so one figure holds across configuration reloads.
#[derive(Debug, Default)]
pub struct BufferCounters {
    /// Bytes of intercepted bodies held at this moment (raw, decoded and canonical buffers).
    pub held: std::sync::atomic::AtomicU64,
    /// Calls answered 429 because their bodies would pass `connector_error.max_buffered_bytes`.
    pub trips: std::sync::atomic::AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn reservations_count_until_dropped() {
        let budget = Budget::unshared(100);
        let a = budget.reserve(60).expect("fits");
        assert_eq!(budget.held(), 60);
        let refused = budget.reserve(41).expect_err("over the limit");
        assert_eq!(
            refused,
            Tripped {
                wanted: 101,
                limit: 100
            }
        );
        assert_eq!(budget.held(), 60, "a refusal takes nothing");
        assert_eq!(budget.trips(), 1);
        let b = budget.reserve(40).expect("exactly the limit");
        assert_eq!(budget.held(), 100);
        drop(a);
        assert_eq!(budget.held(), 40);
        drop(b);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn growth_and_shrinking() {
        let budget = Budget::unshared(10);
        let mut r = budget.reserve(0).expect("nothing");
        r.grow(4).expect("fits");
        assert!(r.try_grow(7).is_err());
        assert_eq!(budget.trips(), 0, "a quiet attempt is no trip");
        assert!(r.grow(7).is_err());
        assert_eq!(budget.trips(), 1);
        r.grow(6).expect("fits");
        assert_eq!((r.bytes(), budget.held()), (10, 10));
        r.shrink_to(3);
        r.shrink_to(5);
        assert_eq!((r.bytes(), budget.held()), (3, 3));
        drop(r);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn budgets_on_the_same_counters_share_them() {
        let counters = Arc::new(BufferCounters::default());
        let old = Budget::new(100, counters.clone());
        let new = Budget::new(50, counters);
        let held = old.reserve(40).expect("fits");
        assert!(new.reserve(11).is_err());
        drop(held);
        assert!(new.reserve(50).is_ok());
    }

    #[test]
    fn concurrent_reservations_never_pass_the_limit() {
        let budget = Budget::unshared(1000);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        if let Ok(r) = budget.reserve(300) {
                            assert!(budget.held() <= 1000);
                            drop(r);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn held_bytes_give_back_their_reservation_with_the_last_clone() {
        let budget = Budget::unshared(1 << 20);
        let mut data = Vec::with_capacity(100);
        data.extend_from_slice(b"hello");
        let held = Held::new(data, budget.reserve(200).expect("fits"));
        assert_eq!(held.reserved(), 100, "cut to the capacity");
        let bytes = held.into_bytes();
        let clone = bytes.slice(1..3);
        drop(bytes);
        assert_eq!(&clone[..], b"el");
        assert_eq!(budget.held(), 100);
        drop(clone);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn sizes_are_written_like_byte_size_value() {
        assert_eq!(byte_size(0), "0b");
        assert_eq!(byte_size(582), "582b");
        assert_eq!(byte_size(1024), "1kb");
        assert_eq!(byte_size(3516), "3.4kb");
        assert_eq!(byte_size(1 << 20), "1mb");
        assert_eq!(byte_size(2 << 20), "2mb");
        assert_eq!(byte_size(48 << 20), "48mb");
        assert_eq!(byte_size(123_848_638), "118.1mb");
        assert_eq!(byte_size(123_273_216), "117.5mb");
        assert_eq!(byte_size(2_087_772_160), "1.9gb");
        assert_eq!(byte_size(20_401_094_656), "19gb");
    }

    #[tokio::test]
    async fn a_trip_answers_like_the_in_flight_requests_breaker() {
        let trip = Tripped {
            wanted: 2 << 20,
            limit: 1 << 20,
        };
        let response = trip.response();
        assert_eq!(response.status(), 429);
        let rejection = response.extensions().get::<Rejection>().cloned().expect("rejection");
        assert_eq!(rejection.error_type, Some(CIRCUIT_BREAKING_TYPE));
        let body = response.into_body().collect().await.expect("body").to_bytes();
        let reason = "[esgate_buffered_bodies] Data too large, data for [<http_request>] would be [2097152/2mb], which is larger than the limit of [1048576/1mb]";
        let cause = format!(
            r#"{{"type":"circuit_breaking_exception","reason":"{reason}","bytes_wanted":2097152,"bytes_limit":1048576,"durability":"TRANSIENT"}}"#
        );
        let expected = format!(r#"{{"error":{{"root_cause":[{cause}],{},"status":429}}"#, &cause[1..]);
        assert_eq!(std::str::from_utf8(&body).expect("utf-8"), expected);
    }
}
