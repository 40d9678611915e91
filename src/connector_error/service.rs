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
use super::verdict::{Intercepted, Rejection, Verdict};
use crate::body::Body;
use crate::elasticsearch::request::{precheck_agreed, Precheck};
use crate::elasticsearch::route::{match_path, ConnectorId, Route};
use crate::elasticsearch::{
    check_body_agreed, check_connector_id, BodyVerdict, DialectSet, Knowledge, SharedKnowledge,
};
use crate::es_error;

/// Settings of the connector-error checks.
#[derive(Debug)]
pub struct GuardConfig {
    /// Largest body (after decompression) read on the intercepted route; larger ones get 413.
    pub max_body_size: usize,
    /// Checks the caller's credentials with the upstream before a local rejection.
    pub auth: Option<AuthCheck>,
    /// Forward every call; record refusals as [`Verdict::WouldReject`] instead of answering them.
    pub report_only: bool,
    /// Put the `error` text of valid calls into [`Intercepted::error_text`] (for auditing).
    pub keep_error_text: bool,
    /// The dialects of the nodes calls may go to: learned by the upstream's version probes, or
    /// pinned. A call is answered locally only when every one of them answers it alike.
    pub knowledge: SharedKnowledge,
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

/// The intercepted route: the checks, then the record of what was done.
async fn guard<S>(
    inner: S,
    config: Arc<GuardConfig>,
    req: Request<Body>,
    connector_id: String,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let knowledge = config.knowledge.load();
    let (mut response, verdict, error_text) = match knowledge {
        // In front of a version esgate does not model it checks nothing, not even the size.
        Knowledge::Unmodelled(version) => {
            tracing::debug!(%version, "connector error passed through: the Elasticsearch version is not modelled");
            let response = ready_call(inner, req).await?;
            (response, Verdict::Unchecked(unchecked::UNMODELLED_VERSION), None)
        }
        Knowledge::Dialects(dialects) => check(inner, &config, dialects, req, &connector_id).await?,
    };
    response.extensions_mut().insert(Intercepted {
        connector_id,
        verdict,
        error_text,
        knowledge,
    });
    Ok(response)
}

/// A response, what was done, and the `error` text of a valid call.
type Checked = (Response<Body>, Verdict, Option<String>);

/// Why a call is forwarded unchecked, beyond the model's own reasons.
pub mod unchecked {
    /// The candidate dialects of the nodes the call may go to would not all answer it alike.
    pub const VERSION_DEPENDENT: &str = "the answer depends on the Elasticsearch version";
    /// A node runs a version esgate does not model (before 8.16, or after 9.x).
    pub const UNMODELLED_VERSION: &str = "the Elasticsearch version is not modelled";
}

/// The checks in Elasticsearch's order (`docs/connector-error.md`, "Order of checks"), for a node
/// speaking any of `dialects`.
async fn check<S>(
    inner: S,
    config: &GuardConfig,
    dialects: DialectSet,
    req: Request<Body>,
    id: &str,
) -> Result<Checked, S::Error>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let (parts, body) = req.into_parts();
    let limit = config.max_body_size;

    // 1. The HTTP layer: size limit and decompression. The limit bounds memory, so it holds in
    // report-only mode too.
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Ok(local(too_large(limit)));
    }
    let raw = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Ok(local(too_large(limit))),
        Err(e) => {
            tracing::debug!(error = %e, "could not read the request body");
            return Ok(local(local_error(
                StatusCode::BAD_REQUEST,
                "esgate_body_read_exception",
                "the request body could not be read",
            )));
        }
    };
    let decoded = match decode_body(parts.headers.get_all(CONTENT_ENCODING), &raw, limit) {
        Decoded::Identity => raw.clone(),
        Decoded::Plain(bytes) => bytes,
        Decoded::TooLarge => return Ok(local(too_large(limit))),
        Decoded::Unknown(why) => return unchecked(inner, parts, raw, why).await,
    };

    // 2.–6. Query string, media types, output format, content type.
    let Some(precheck) = precheck_agreed(&parts, id, !decoded.is_empty(), dialects) else {
        return unchecked(inner, parts, raw, unchecked::VERSION_DEPENDENT).await;
    };
    let plan = match precheck {
        Precheck::Check(plan) => plan,
        Precheck::Respond(response) if config.report_only => {
            let rejection = rejection_of(&response);
            return would_reject(inner, parts, raw, rejection).await;
        }
        Precheck::Respond(response) => return refuse(inner, config, parts, raw, response).await,
        Precheck::Forward(why) => return unchecked(inner, parts, raw, why).await,
    };

    // 9.–11. The body, unknown parameters, the connector id; all after authentication.
    let Some(verdict) = check_body_agreed(&decoded, dialects) else {
        return unchecked(inner, parts, raw, unchecked::VERSION_DEPENDENT).await;
    };
    let literal = match verdict {
        BodyVerdict::Defer(why) => return unchecked(inner, parts, raw, why).await,
        BodyVerdict::Reject(e) => Err(e),
        // Unknown query parameters and the connector id are checked only for a valid body. The
        // id's length is checked by Elasticsearch after authorization: with the credential
        // check on, such a request goes on, since it may well get a 403 there.
        BodyVerdict::Accept { literal } => match plan.unrecognized {
            Some(e) => Err(e),
            None => check_connector_id(id, config.auth.is_none()).map(|()| literal),
        },
    };
    let literal = match literal {
        Ok(literal) => literal,
        Err(error) if config.report_only => {
            return would_reject(inner, parts, raw, Rejection::from_error(&error)).await;
        }
        Err(error) => {
            tracing::debug!(connector_id = %id, error_type = error.top().error_type, "connector error rejected locally");
            return refuse(inner, config, parts, raw, plan.format.respond(&error)).await;
        }
    };
    let error_text = config.keep_error_text.then(|| error_text(&literal)).flatten();
    let canonical = BodyVerdict::canonical_body(&literal);
    let identity = parts.headers.get(CONTENT_ENCODING).is_none();
    let body = if identity && canonical == raw { raw } else { canonical };
    let response = forward(inner, parts, body).await?;
    Ok((response, Verdict::Forwarded, error_text))
}

/// Answers `response` locally. With the credential check on, the caller's credentials are
/// checked first: a secured cluster authenticates every request before any of these checks
/// (`docs/connector-error.md`, "Order of checks"), so a caller it would refuse gets its 401.
async fn refuse<S>(
    mut inner: S,
    config: &GuardConfig,
    parts: http::request::Parts,
    raw: Bytes,
    response: Response<Body>,
) -> Result<Checked, S::Error>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    if let Some(auth) = &config.auth {
        match auth.check(&mut inner, &parts).await? {
            Outcome::Authenticated => {}
            Outcome::Refused(response) => {
                let rejection = Rejection {
                    status: response.status().as_u16(),
                    error_type: None,
                    reason: "the credentials were refused by Elasticsearch".to_owned(),
                };
                return Ok((response, Verdict::Rejected(rejection), None));
            }
            Outcome::Unknown => return unchecked(inner, parts, raw, "credentials could not be checked").await,
        }
    }
    Ok(local(response))
}

/// The `error` text of an accepted body: `None` for `null`. The literal is Jackson-escaped JSON;
/// a lone surrogate (which `str` cannot hold) keeps its escape.
fn error_text(literal: &[u8]) -> Option<String> {
    if literal == b"null" {
        return None;
    }
    serde_json::from_slice::<String>(literal)
        .ok()
        .or_else(|| Some(String::from_utf8_lossy(literal.get(1..literal.len().saturating_sub(1))?).into_owned()))
}

/// A local answer and its record.
fn local(response: Response<Body>) -> Checked {
    let rejection = rejection_of(&response);
    (response, Verdict::Rejected(rejection), None)
}

/// The [`Rejection`] a local answer carries.
fn rejection_of(response: &Response<Body>) -> Rejection {
    response
        .extensions()
        .get::<Rejection>()
        .cloned()
        .unwrap_or_else(|| Rejection::simple(response.status().as_u16(), b""))
}

/// Report-only: forwards the call unchanged, recording what esgate would have answered.
async fn would_reject<S>(
    mut inner: S,
    parts: http::request::Parts,
    raw: Bytes,
    rejection: Rejection,
) -> Result<Checked, S::Error>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    tracing::debug!(error_type = rejection.label(), "report-only: would reject; forwarded");
    std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
    let response = inner.call(Request::from_parts(parts, Body::full(raw))).await?;
    Ok((response, Verdict::WouldReject(rejection), None))
}

/// Calls `inner` with `req` once it is ready.
async fn ready_call<S>(mut inner: S, req: Request<Body>) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
    inner.call(req).await
}

/// Forwards the call unchanged: esgate cannot tell what Elasticsearch would answer.
async fn unchecked<S>(inner: S, parts: http::request::Parts, raw: Bytes, why: &'static str) -> Result<Checked, S::Error>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    let response = forward_original(inner, parts, raw, why).await?;
    Ok((response, Verdict::Unchecked(why), None))
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
    local_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        es_error::CONTENT_TOO_LONG_TYPE,
        &format!("the request body is larger than the limit of [{limit}] bytes of the Update connector error API"),
    )
}

/// An esgate error in Elasticsearch's shape, with its [`Rejection`].
fn local_error(status: StatusCode, error_type: &'static str, reason: &str) -> Response<Body> {
    let mut response = es_error::json_response(status, es_error::error_body(status, error_type, reason));
    response.extensions_mut().insert(Rejection {
        status: status.as_u16(),
        error_type: Some(error_type),
        reason: reason.to_owned(),
    });
    response
}
