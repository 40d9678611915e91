//! [`ConnectorErrorGuard`]: the tower service that wires the pure checks to HTTP.
//!
//! Requests that are not `PUT /_connector/<id>/_error` go to the inner service untouched and
//! unbuffered: the route is matched synchronously on the method and raw path, and the inner
//! service's own future is returned. Matched requests have their body read (with a limit),
//! decoded, and checked in Elasticsearch's order; the answer is either a local response or the
//! inner service called with a canonical body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use pin_project_lite::pin_project;
use tower::Service;

use super::auth::{AuthCheck, Outcome};
use super::decode::{decode_body, Decoded};
use super::request::{precheck, Precheck};
use super::route::{match_path, ConnectorId, Route};
use super::validate::{check_body, check_connector_id, BodyVerdict};
use crate::body::Body;
use crate::es_error;

/// Settings of the connector-error checks.
#[derive(Debug)]
pub struct GuardConfig {
    /// Largest body (after decompression) read on the intercepted route; larger ones get 413.
    pub max_body_size: usize,
    /// Checks the caller's credentials with the upstream before a local rejection.
    pub auth: Option<AuthCheck>,
}

/// Intercepts the Update connector error API in front of `S`. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct ConnectorErrorGuard<S> {
    inner: S,
    config: Arc<GuardConfig>,
}

impl<S> ConnectorErrorGuard<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, config: Arc<GuardConfig>) -> Self {
        ConnectorErrorGuard { inner, config }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

type BoxFuture<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

pin_project! {
    /// The future of [`ConnectorErrorGuard`]: the inner service's own future for pass-through
    /// requests, a boxed one for the intercepted route.
    // The fields are the futures the variants name.
    #[allow(missing_docs)]
    #[project = ResponseFutureProj]
    pub enum ResponseFuture<F, E> {
        /// Not the intercepted route.
        PassThrough {
            #[pin]
            future: F,
        },
        /// The intercepted route.
        Guarded {
            future: BoxFuture<E>,
        },
    }
}

impl<F, E> Future for ResponseFuture<F, E>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::PassThrough { future } => future.poll(cx),
            ResponseFutureProj::Guarded { future } => future.as_mut().poll(cx),
        }
    }
}

impl<S, B> Service<Request<B>> for ConnectorErrorGuard<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Into<Body>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let req = req.map(Into::into);
        if req.method() == Method::PUT {
            if let Route::UpdateError(ConnectorId::Decoded(id)) = match_path(req.uri().path()) {
                // The ready service goes into the future; a fresh clone stays for the next call.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let config = self.config.clone();
                return ResponseFuture::Guarded {
                    future: Box::pin(guard(inner, config, req, id)),
                };
            }
        }
        ResponseFuture::PassThrough {
            future: self.inner.call(req),
        }
    }
}

/// The intercepted route, in Elasticsearch's order of checks (`es-connector-error.md` §2).
async fn guard<S>(
    mut inner: S,
    config: Arc<GuardConfig>,
    req: Request<Body>,
    id: String,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let (parts, body) = req.into_parts();
    let limit = config.max_body_size;

    // 1. The HTTP layer: size limit and decompression.
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Ok(too_large(limit));
    }
    let raw = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Ok(too_large(limit)),
        Err(e) => {
            tracing::debug!(error = %e, "could not read the request body");
            return Ok(es_error::json_response(
                StatusCode::BAD_REQUEST,
                es_error::error_body(
                    StatusCode::BAD_REQUEST,
                    "esgate_body_read_exception",
                    "the request body could not be read",
                ),
            ));
        }
    };
    let decoded = match decode_body(parts.headers.get_all(CONTENT_ENCODING), &raw, limit) {
        Decoded::Identity => raw.clone(),
        Decoded::Plain(bytes) => bytes,
        Decoded::TooLarge => return Ok(too_large(limit)),
        Decoded::Unknown(why) => return forward_original(inner, parts, raw, why).await,
    };

    // 2.–6. Query string, media types, output format, content type.
    let plan = match precheck(&parts, &id, !decoded.is_empty()) {
        Precheck::Check(plan) => plan,
        Precheck::Respond(response) => return Ok(response),
        Precheck::Forward(why) => return forward_original(inner, parts, raw, why).await,
    };

    // 9.–11. The body, unknown parameters, the connector id; all after authentication.
    let literal = match check_body(&decoded) {
        BodyVerdict::Defer(why) => return forward_original(inner, parts, raw, why).await,
        BodyVerdict::Reject(e) => Err(e),
        // Unknown query parameters and the connector id are checked only for a valid body. The
        // id's length is checked by Elasticsearch after authorization: with the credential
        // check on, such a request goes on, since it may well get a 403 there.
        BodyVerdict::Accept { literal } => match plan.unrecognized {
            Some(e) => Err(e),
            None => check_connector_id(&id, config.auth.is_none()).map(|()| literal),
        },
    };
    let literal = match literal {
        Ok(literal) => literal,
        Err(error) => {
            if let Some(auth) = &config.auth {
                match auth.check(&mut inner, &parts).await? {
                    Outcome::Authenticated => {}
                    Outcome::Refused(response) => return Ok(response),
                    Outcome::Unknown => {
                        return forward_original(inner, parts, raw, "credentials could not be checked").await
                    }
                }
            }
            tracing::debug!(connector_id = %id, error_type = error.top().error_type, "connector error rejected locally");
            return Ok(plan.format.respond(&error));
        }
    };
    let canonical = BodyVerdict::canonical_body(&literal);
    let identity = parts.headers.get(CONTENT_ENCODING).is_none();
    let body = if identity && canonical == raw { raw } else { canonical };
    forward(inner, parts, body).await
}

/// Forwards with `body` as the whole body: a fresh `Content-Length`, no encodings left over.
async fn forward<S>(mut inner: S, mut parts: http::request::Parts, body: Bytes) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    parts.headers.remove(CONTENT_ENCODING);
    parts.headers.remove(TRANSFER_ENCODING);
    parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
    inner.call(Request::from_parts(parts, Body::full(body))).await
}

/// Forwards the request as the client sent it (the body was read, so it goes as a buffer).
async fn forward_original<S>(
    mut inner: S,
    parts: http::request::Parts,
    raw: Bytes,
    why: &'static str,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    tracing::debug!(reason = why, "connector error passed through unchecked");
    std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
    inner.call(Request::from_parts(parts, Body::full(raw))).await
}

/// 413 in Elasticsearch's shape.
fn too_large(limit: usize) -> Response<Body> {
    let status = StatusCode::PAYLOAD_TOO_LARGE;
    es_error::json_response(
        status,
        es_error::error_body(
            status,
            es_error::CONTENT_TOO_LONG_TYPE,
            &format!("the request body is larger than the limit of [{limit}] bytes of the Update connector error API"),
        ),
    )
}
