//! Optional credential check for secured clusters.
//!
//! Elasticsearch authenticates a request before it reads the body, so on a secured cluster an
//! unauthenticated caller with a malformed body gets 401, not 400. With this check on, esgate asks
//! the upstream (`GET /_security/_authenticate`, with the caller's credentials) before answering
//! a rejection locally, and relays the upstream's 401 when there is one. Results are cached for a
//! short time under a keyed hash of the credential headers: the secrets themselves are never kept.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, AUTHORIZATION, HOST};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use tower::Service;

use super::body::GuardedBody;
use crate::body::Body;
use crate::BoxError;

/// Headers that carry who the caller is.
const CREDENTIAL_HEADERS: [HeaderName; 3] = [
    AUTHORIZATION,
    crate::headers::ES_SECURITY_RUNAS_USER,
    crate::headers::ES_SECONDARY_AUTHORIZATION,
];

/// Cached results at most; older ones are dropped first when full.
const MAX_ENTRIES: usize = 4096;

/// What the check found.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The upstream accepts the credentials (or does not authenticate at all).
    Authenticated,
    /// The upstream refused them: relay this answer.
    Refused(Response<Body>),
    /// The upstream could not tell (unreachable, 5xx): let the request go on.
    Unchecked,
}

#[derive(Clone, Debug)]
enum Cached {
    Authenticated,
    Refused(Arc<(StatusCode, HeaderMap, Bytes)>),
}

/// The credential check and its cache.
#[derive(Debug)]
pub(crate) struct AuthCheck {
    ttl: Duration,
    keys: RandomState,
    cache: Mutex<HashMap<u64, (Instant, Cached)>>,
}

impl AuthCheck {
    /// A check whose results are kept for `ttl`.
    pub(crate) fn new(ttl: Duration) -> Self {
        AuthCheck {
            ttl,
            keys: RandomState::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn digest(&self, headers: &HeaderMap) -> u64 {
        let mut h = self.keys.build_hasher();
        for name in &CREDENTIAL_HEADERS {
            for value in headers.get_all(name) {
                h.write(name.as_str().as_bytes());
                h.write_u8(0);
                h.write(value.as_bytes());
                h.write_u8(0);
            }
        }
        h.finish()
    }

    /// Checks the credentials of the request whose head is `parts` with the upstream `inner`.
    pub(crate) async fn check<S, B, ResB>(
        &self,
        inner: &mut S,
        parts: &http::request::Parts,
    ) -> Result<Outcome, S::Error>
    where
        S: Service<Request<GuardedBody<B>>, Response = Response<ResB>>,
        ResB: http_body::Body<Data = Bytes>,
        ResB::Error: Into<BoxError>,
    {
        let key = self.digest(&parts.headers);
        if let Some(cached) = self.lookup(key) {
            return Ok(outcome(cached));
        }
        let mut request = Request::new(GuardedBody::buffered(Bytes::new()));
        *request.method_mut() = Method::GET;
        *request.uri_mut() = http::Uri::from_static("/_security/_authenticate");
        for name in CREDENTIAL_HEADERS.iter().chain([&HOST]) {
            for value in parts.headers.get_all(name) {
                request.headers_mut().append(name.clone(), value.clone());
            }
        }
        std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
        let response = inner.call(request).await?;
        let status = response.status();
        let cached = if status == StatusCode::UNAUTHORIZED {
            let (head, body) = response.into_parts();
            let body = match Limited::new(body, 64 * 1024).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => return Ok(Outcome::Unchecked),
            };
            Cached::Refused(Arc::new((head.status, head.headers, body)))
        } else if status.is_server_error() {
            return Ok(Outcome::Unchecked);
        } else {
            // 2xx, or another 4xx: the cluster does not refuse these credentials.
            Cached::Authenticated
        };
        self.store(key, cached.clone());
        Ok(outcome(cached))
    }

    fn lookup(&self, key: u64) -> Option<Cached> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .get(&key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, c)| c.clone())
    }

    fn store(&self, key: u64, cached: Cached) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), cached));
    }
}

fn outcome(cached: Cached) -> Outcome {
    match cached {
        Cached::Authenticated => Outcome::Authenticated,
        Cached::Refused(answer) => {
            let (status, headers, body) = &*answer;
            let mut response = Response::new(Body::full(body.clone()));
            *response.status_mut() = *status;
            *response.headers_mut() = headers.clone();
            Outcome::Refused(response)
        }
    }
}
