//! [`ConnectorErrorGuard`]: the tower service that wires the pure checks to HTTP.
//!
//! Requests that are not `PUT /_connector/<id>/_error` go to the inner service untouched and
//! unbuffered: the route is matched synchronously on the method and raw path, and the inner
//! service's own future is returned. Matched requests have their body read into one buffer (with
//! a size limit, a deadline without progress, and a budget over all requests), decoded, and
//! checked in Elasticsearch's order; the answer is either a local response or the inner service
//! called with a canonical body: the very bytes received when they already are canonical.
//!
//! Memory: a body costs one buffer of its size (plus its decoded form when it came encoded, plus
//! a canonical body only when it differs), each paid for in the [`Budget`]. Bodies above
//! [`INLINE_CHECK_BYTES`] are decoded and checked on tokio's blocking pool, so a large one does
//! not stall the other connections of its worker thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use http::{Method, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::Service;

use super::auth::{AuthCheck, Outcome};
use super::body::{GuardedBody, ResponseBody};
use super::budget::{Budget, Held};
use super::canary::{Canary, Permit};
use super::decode::{decode_budgeted, Decoded};
use super::read::{linger, read_body, ReadError};
use super::verdict::{Intercepted, Rejection, Verdict};
use crate::body::Body;
use crate::elasticsearch::jackson::canonical_literal;
use crate::elasticsearch::request::{precheck_agreed, Precheck};
use crate::elasticsearch::route::{match_path, ConnectorId, Route};
use crate::elasticsearch::{
    check_body_agreed, check_connector_id, BodyVerdict, DialectSet, Knowledge, SharedKnowledge,
};
use crate::es_error;
use crate::BoxError;

/// Bodies up to this size (as received) are checked on the worker thread; larger ones, and
/// encoded ones above [`INLINE_ENCODED_BYTES`], on the blocking pool.
pub(super) const INLINE_CHECK_BYTES: usize = 256 * 1024;
/// Encoded bodies up to this size are decoded and checked inline (a small one may expand a lot).
pub(super) const INLINE_ENCODED_BYTES: usize = 4 * 1024;
/// Bytes of error text kept beyond the audit's own cut, so that secret redaction (run on the
/// kept text) still sees what follows the cut, such as the `@` closing a URL's credentials.
pub(super) const REDACTION_CONTEXT: usize = 4 * 1024;

/// The `type` of the error esgate answers when an intercepted body stopped arriving (408).
pub const REQUEST_TIMEOUT_TYPE: &str = "esgate_request_timeout_exception";

/// Settings of the connector-error checks, set through [`ConnectorErrorLayer`]'s builder.
///
/// [`ConnectorErrorLayer`]: super::ConnectorErrorLayer
#[derive(Clone, Debug)]
pub(crate) struct GuardConfig {
    /// Largest body (after decompression) read on the intercepted route; larger ones get 413.
    pub(crate) max_body_size: usize,
    /// Checks the caller's credentials with the upstream before a local rejection.
    pub(crate) auth: Option<Arc<AuthCheck>>,
    /// Forward every call; record refusals as [`Verdict::WouldReject`] instead of answering them.
    pub(crate) report_only: bool,
    /// Put the start of the `error` text of valid calls into [`Intercepted::error_text`] (for
    /// auditing): this many bytes of it (`audit.max_error_length`), cut at a character boundary,
    /// plus [`REDACTION_CONTEXT`]. `None`: no text is kept.
    pub(crate) error_text_limit: Option<usize>,
    /// Longest wait for the next part of an intercepted body (`server.body_read_timeout`); then
    /// 408. `None`: no limit.
    pub(crate) body_read_timeout: Option<Duration>,
    /// Bytes of all intercepted bodies held at once (`connector_error.max_buffered_bytes`); a
    /// call that would pass it gets 429.
    pub(crate) budget: Budget,
    /// The dialects of the nodes calls may go to: learned by the upstream's version probes, or
    /// pinned. A call is answered locally only when every one of them answers it alike.
    pub(crate) knowledge: SharedKnowledge,
    /// Copies of sampled local rejections sent to a node to compare answers (off: `None`).
    pub(crate) canary: Option<Arc<Canary>>,
}

/// The defaults of esgate's own configuration (`config/esgate.toml`).
impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            // Elasticsearch's own `http.max_content_length`.
            max_body_size: 100 << 20,
            auth: None,
            report_only: false,
            error_text_limit: None,
            body_read_timeout: Some(Duration::from_secs(30)),
            budget: Budget::unshared(48 << 20),
            knowledge: SharedKnowledge::default(),
            canary: None,
        }
    }
}

/// Intercepts the Update connector error API in front of `S`. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct ConnectorErrorGuard<S> {
    inner: S,
    config: Arc<GuardConfig>,
}

impl<S> ConnectorErrorGuard<S> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: S, config: Arc<GuardConfig>) -> Self {
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

/// A body the guard takes or gives: `Bytes` frames, an error any error type can hold.
pub trait AnyBody: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static {}

impl<T> AnyBody for T where T: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static {}

/// The inner service as the guard needs it: cloned into the future of an intercepted call, so
/// `Clone`, `Send` and `'static`, with a `Send` future.
pub trait Inner<B, ResB>:
    Service<Request<GuardedBody<B>>, Response = Response<ResB>, Future: Send + 'static, Error: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S, B, ResB> Inner<B, ResB> for S where
    S: Service<Request<GuardedBody<B>>, Response = Response<ResB>, Future: Send + 'static, Error: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

pin_project! {
    /// The future of [`ConnectorErrorGuard`]: the inner service's own future for pass-through
    /// requests, a boxed one for the intercepted route.
    pub struct ResponseFuture<F, ResB, E> {
        #[pin]
        kind: FutureKind<F, ResB, E>,
    }
}

pin_project! {
    #[project = FutureKindProj]
    enum FutureKind<F, ResB, E> {
        PassThrough { #[pin] future: F },
        Guarded { future: BoxFuture<Response<ResponseBody<ResB>>, E> },
    }
}

impl<F, ResB, E> std::fmt::Debug for ResponseFuture<F, ResB, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, ResB, E> Future for ResponseFuture<F, ResB, E>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<ResponseBody<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            FutureKindProj::PassThrough { future } => future.poll(cx).map_ok(|r| r.map(ResponseBody::original)),
            FutureKindProj::Guarded { future } => future.as_mut().poll(cx),
        }
    }
}

impl<S, B, ResB> Service<Request<B>> for ConnectorErrorGuard<S>
where
    S: Service<Request<GuardedBody<B>>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: AnyBody,
    ResB: AnyBody,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if req.method() == Method::PUT {
            if let Route::UpdateError(ConnectorId::Decoded(id)) = match_path(req.uri().path()) {
                // The ready service goes into the future; a fresh clone stays for the next call.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let config = self.config.clone();
                return ResponseFuture {
                    kind: FutureKind::Guarded {
                        future: Box::pin(guard(inner, config, req, id)),
                    },
                };
            }
        }
        ResponseFuture {
            kind: FutureKind::PassThrough {
                future: self.inner.call(req.map(GuardedBody::original)),
            },
        }
    }
}

/// The intercepted route: the checks, the one call of the inner service they may lead to, then
/// the record of what was done.
///
/// The checks ([`decide`]) end in a [`Step`] instead of calling on: a call of the inner service
/// is awaited in one place, here, so that the state of this future (boxed once per call) holds
/// the request once, not once per path that might forward it.
async fn guard<S, B, ResB>(
    inner: S,
    config: Arc<GuardConfig>,
    req: Request<B>,
    connector_id: String,
) -> Result<Response<ResponseBody<ResB>>, S::Error>
where
    S: Inner<B, ResB>,
    B: AnyBody,
    ResB: AnyBody,
{
    let knowledge = config.knowledge.load();
    let mut inner = inner;
    let step = match knowledge {
        // In front of a version esgate does not model it checks nothing, not even the size.
        Knowledge::Unmodelled(version) => {
            tracing::debug!(%version, "connector error passed through: the Elasticsearch version is not modelled");
            Step::Call {
                request: req.map(GuardedBody::original),
                verdict: Verdict::Unchecked(unchecked::UNMODELLED_VERSION),
                error_text: None,
            }
        }
        Knowledge::Dialects(dialects) => decide(&mut inner, &config, dialects, req, &connector_id).await?,
    };
    let (mut response, verdict, error_text) = match step {
        Step::Call {
            request,
            verdict,
            error_text,
        } => {
            // Awaited here, not in a helper: one future less to move the request into.
            std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
            let response = inner.call(request).await?.map(ResponseBody::original);
            (response, verdict, error_text)
        }
        Step::Answered(checked) => checked,
    };
    let (error_text, error_length) = match error_text {
        Some(ErrorText { text, length }) => (Some(text), length),
        None => (None, 0),
    };
    response.extensions_mut().insert(Intercepted {
        connector_id,
        verdict,
        error_text,
        error_length,
        knowledge,
    });
    Ok(response)
}

/// The kept start of an `error` text and the length of the whole.
#[derive(Debug, PartialEq, Eq)]
struct ErrorText {
    text: String,
    length: usize,
}

/// A response, what was done, and the `error` text of a valid call.
type Checked<ResB> = (Response<ResponseBody<ResB>>, Verdict, Option<ErrorText>);

/// Where the checks of one call end.
enum Step<B, ResB> {
    /// Send `request` to the inner service; its answer is recorded with `verdict`.
    Call {
        request: Request<GuardedBody<B>>,
        verdict: Verdict,
        error_text: Option<ErrorText>,
    },
    /// Answered without the inner service (or after a credential check through it).
    Answered(Checked<ResB>),
}

/// Why a call is forwarded unchecked, beyond the model's own reasons.
pub mod unchecked {
    /// The candidate dialects of the nodes the call may go to would not all answer it alike.
    pub const VERSION_DEPENDENT: &str = "the answer depends on the Elasticsearch version";
    /// A node runs a version esgate does not model (before 8.16, or after 9.x).
    pub const UNMODELLED_VERSION: &str = "the Elasticsearch version is not modelled";
    /// The check of a large body did not complete (its task failed).
    pub const CHECK_FAILED: &str = "the check of the body did not complete";
    /// A canary found a node answering this kind of call otherwise than esgate.
    pub const CANARY_MISMATCH: &str = "a canary found the node answering this kind of call differently";
}

/// The checks in Elasticsearch's order (`docs/connector-error.md`, "Order of checks"), for a node
/// speaking any of `dialects`. `inner` is used here only for the credential check and canaries.
async fn decide<S, B, ResB>(
    inner: &mut S,
    config: &GuardConfig,
    dialects: DialectSet,
    req: Request<B>,
    id: &str,
) -> Result<Step<B, ResB>, S::Error>
where
    S: Inner<B, ResB>,
    B: AnyBody,
    ResB: AnyBody,
{
    let (parts, body) = req.into_parts();
    let limit = config.max_body_size;

    // 1. The HTTP layer: size limit, deadline, budget, then decompression. These bound memory,
    // so they hold in report-only mode too.
    let framing = Framing::of(&parts.headers);
    let Framing {
        declared,
        expects_continue,
        ..
    } = framing;
    if declared.is_some_and(|n| n > limit as u64) {
        if !expects_continue {
            linger(Box::pin(body));
        }
        return Ok(Step::Answered(local(too_large(limit))));
    }
    // Pinned once, for any body type; this route only.
    let mut body = Box::pin(body);
    let raw = match read_body(&mut body, declared, limit, &config.budget, config.body_read_timeout).await {
        Ok(raw) => raw,
        Err(e) => {
            let (response, drain) = match e {
                ReadError::TooLarge => (too_large(limit), true),
                ReadError::TimedOut => (timed_out(config.body_read_timeout.unwrap_or_default()), true),
                // With a `Content-Length`, the reservation was refused before any read.
                ReadError::Tripped(trip) => (trip.response(), !(expects_continue && declared.is_some())),
                ReadError::Broken(e) => {
                    tracing::debug!(error = %e, "could not read the request body");
                    let response = local_error(
                        StatusCode::BAD_REQUEST,
                        "esgate_body_read_exception",
                        "the request body could not be read",
                    );
                    (response, false)
                }
            };
            if drain {
                linger(body);
            }
            return Ok(Step::Answered(local(response)));
        }
    };
    drop(body);

    // 1.–11.: decoding and the pure checks, on the blocking pool for a large body.
    let encoded = framing.encoded;
    let heavy = raw.len() > INLINE_CHECK_BYTES || (encoded && raw.len() > INLINE_ENCODED_BYTES);
    let task = Assess {
        raw: raw.clone(),
        encoded,
        dialects,
        limit,
        budget: config.budget.clone(),
        text_limit: config.error_text_limit,
        check_length: config.auth.is_none(),
    };
    let (parts, assessment) = match tokio::runtime::Handle::try_current() {
        Ok(runtime) if heavy => Box::pin(assess_blocking(runtime, task, parts, id.to_owned())).await,
        _ => {
            let assessment = task.run(&parts, id);
            (parts, assessment)
        }
    };

    match assessment {
        Assessment::Local(response) => Ok(Step::Answered(local(response))),
        Assessment::Unchecked(why) => Ok(unchecked(parts, raw, why)),
        Assessment::Refuse(response) if config.report_only => {
            let rejection = rejection_of(&response);
            tracing::debug!(error_type = rejection.label(), "report-only: would reject; forwarded");
            Ok(Step::Call {
                request: Request::from_parts(parts, GuardedBody::buffered(raw)),
                verdict: Verdict::WouldReject(rejection),
                error_text: None,
            })
        }
        Assessment::Refuse(response) => {
            let kind = rejection_of(&response).label();
            if let Some(canary) = &config.canary {
                if canary.disabled(kind) {
                    return Ok(unchecked(parts, raw, unchecked::CANARY_MISMATCH));
                }
                if let Some(permit) = canary.sample() {
                    send_canary(inner.clone(), &parts, &raw, &response, kind, permit);
                }
            }
            tracing::debug!(connector_id = %id, error_type = kind, "connector error rejected locally");
            match &config.auth {
                None => Ok(Step::Answered(local(response))),
                Some(auth) => Box::pin(refuse(inner, auth, parts, raw, response)).await,
            }
        }
        Assessment::Accept { body, error_text } => {
            drop(raw);
            Ok(Step::Call {
                request: forward(parts, body, framing),
                verdict: Verdict::Forwarded,
                error_text,
            })
        }
    }
}

/// [`Assess::run`] on tokio's blocking pool, for a body too large to check on a worker thread.
async fn assess_blocking(
    runtime: tokio::runtime::Handle,
    task: Assess,
    parts: http::request::Parts,
    id: String,
) -> (http::request::Parts, Assessment) {
    let kept = parts.clone();
    match runtime
        .spawn_blocking(move || {
            let assessment = task.run(&parts, &id);
            (parts, assessment)
        })
        .await
    {
        Ok(done) => done,
        Err(e) => {
            tracing::warn!(error = %e, "the check of a connector error body failed");
            (kept, Assessment::Unchecked(unchecked::CHECK_FAILED))
        }
    }
}

/// What the pure checks make of a body that was read whole.
enum Assessment {
    /// Answer this (413, 429) as is: limits of esgate's own, applied in report-only mode too.
    Local(Response<Body>),
    /// Forward unchanged, for this reason.
    Unchecked(&'static str),
    /// Elasticsearch would answer this: answer it (after the credential check), or record it in
    /// report-only mode.
    Refuse(Response<Body>),
    /// Valid: forward `body` (canonical), recording `error_text`.
    Accept { body: Bytes, error_text: Option<ErrorText> },
}

/// The inputs of the pure checks, owned so that they can move to the blocking pool.
struct Assess {
    raw: Bytes,
    /// The request has a `Content-Encoding`.
    encoded: bool,
    dialects: DialectSet,
    limit: usize,
    budget: Budget,
    text_limit: Option<usize>,
    check_length: bool,
}

impl Assess {
    /// Decoding, then steps 2.–11. of `docs/connector-error.md`, "Order of checks".
    fn run(self, parts: &http::request::Parts, id: &str) -> Assessment {
        let Assess {
            raw,
            encoded,
            dialects,
            limit,
            budget,
            text_limit,
            check_length,
        } = self;
        let decoded = if !encoded {
            raw
        } else {
            match decode_budgeted(parts.headers.get_all(CONTENT_ENCODING), &raw, limit, &budget) {
                Err(trip) => return Assessment::Local(trip.response()),
                Ok(Decoded::Identity) => raw,
                Ok(Decoded::Plain(bytes)) => bytes,
                Ok(Decoded::TooLarge) => return Assessment::Local(too_large(limit)),
                Ok(Decoded::Unchecked(why)) => return Assessment::Unchecked(why),
            }
        };

        // 2.–6. Query string, media types, output format, content type.
        let Some(precheck) = precheck_agreed(parts, id, !decoded.is_empty(), dialects) else {
            return Assessment::Unchecked(unchecked::VERSION_DEPENDENT);
        };
        let plan = match precheck {
            Precheck::Check(plan) => plan,
            Precheck::Respond(response) => return Assessment::Refuse(response),
            Precheck::Unchecked(why) => return Assessment::Unchecked(why),
        };

        // 9.–11. The body, unknown parameters, the connector id; all after authentication.
        // `canonical`: the body is known to be canonical already (the fast path saw it whole).
        let (literal, _literal_reservation, canonical) = match accepted_literal(&decoded, dialects) {
            Some(Literal::Canonical(literal)) => (literal, None, true),
            Some(Literal::Checked(BodyVerdict::Accept { literal })) => match budget.reserve(literal.len()) {
                Ok(reservation) => (literal, Some(reservation), false),
                Err(trip) => return Assessment::Local(trip.response()),
            },
            Some(Literal::Checked(BodyVerdict::Unchecked(why))) => return Assessment::Unchecked(why),
            Some(Literal::Checked(BodyVerdict::Reject(error))) => {
                return Assessment::Refuse(plan.format.respond(&error))
            }
            None => return Assessment::Unchecked(unchecked::VERSION_DEPENDENT),
        };
        // Unknown query parameters and the connector id are checked only for a valid body. The
        // id's length is checked by Elasticsearch after authorization: with the credential
        // check on, such a request goes on, since it may well get a 403 there.
        if let Some(error) = plan.unrecognized {
            return Assessment::Refuse(plan.format.respond(&error));
        }
        if let Err(error) = check_connector_id(id, check_length) {
            return Assessment::Refuse(plan.format.respond(&error));
        }
        let error_text = text_limit.and_then(|cap| error_text(&literal, cap.saturating_add(REDACTION_CONTEXT)));
        // The bytes received (or decoded) go on when they already are canonical.
        if canonical || is_canonical(&decoded, &literal) {
            return Assessment::Accept {
                body: decoded,
                error_text,
            };
        }
        drop(decoded);
        let len = literal.len() + CANONICAL_FRAME;
        let reservation = match budget.reserve(len) {
            Ok(reservation) => reservation,
            Err(trip) => return Assessment::Local(trip.response()),
        };
        let mut canonical = Vec::with_capacity(len);
        canonical.extend_from_slice(CANONICAL_HEAD);
        canonical.extend_from_slice(&literal);
        canonical.push(b'}');
        Assessment::Accept {
            body: Held::new(canonical, reservation).into_bytes(),
            error_text,
        }
    }
}

/// `{"error":` and `}` around the literal of a canonical body.
const CANONICAL_HEAD: &[u8] = b"{\"error\":";
const CANONICAL_FRAME: usize = CANONICAL_HEAD.len() + 1;

/// Whether `body` is `{"error":<literal>}`, the canonical body of `literal`
/// ([`BodyVerdict::canonical_body`]), byte for byte.
fn is_canonical(body: &[u8], literal: &[u8]) -> bool {
    body.len() == literal.len() + CANONICAL_FRAME
        && body.starts_with(CANONICAL_HEAD)
        && body.ends_with(b"}")
        && &body[CANONICAL_HEAD.len()..body.len() - 1] == literal
}

/// The body's verdict for every dialect of `dialects`, without copying the literal of a body
/// that already is canonical.
enum Literal {
    /// The body is `{"error":"<printable ASCII>"}`: the literal is a slice of it.
    Canonical(Bytes),
    /// What [`check_body_agreed`] says.
    Checked(BodyVerdict),
}

/// [`check_body_agreed`], with its own fast path taken here so that the literal of a canonical
/// body stays a slice of the body (the model copies it): any dialect reads such a body as
/// written (`None` when they would not all agree, as from [`check_body_agreed`]).
fn accepted_literal(body: &Bytes, dialects: DialectSet) -> Option<Literal> {
    if dialects.iter().next().is_some() && canonical_literal(body).is_some() {
        return Some(Literal::Canonical(body.slice(CANONICAL_HEAD.len()..body.len() - 1)));
    }
    check_body_agreed(body, dialects).map(Literal::Checked)
}

/// Answers `response` locally once the caller's credentials pass: a secured cluster
/// authenticates every request before any of these checks (`docs/connector-error.md`, "Order of
/// checks"), so a caller it would refuse gets its 401.
async fn refuse<S, B, ResB>(
    inner: &mut S,
    auth: &AuthCheck,
    parts: http::request::Parts,
    raw: Bytes,
    response: Response<Body>,
) -> Result<Step<B, ResB>, S::Error>
where
    S: Inner<B, ResB>,
    B: AnyBody,
    ResB: AnyBody,
{
    match auth.check(inner, &parts).await? {
        Outcome::Authenticated => Ok(Step::Answered(local(response))),
        Outcome::Refused(response) => {
            let rejection = Rejection {
                status: response.status().as_u16(),
                error_type: None,
                reason: "the credentials were refused by Elasticsearch".to_owned(),
            };
            Ok(Step::Answered((
                into_local(response),
                Verdict::Rejected(rejection),
                None,
            )))
        }
        Outcome::Unchecked => Ok(unchecked(parts, raw, "credentials could not be checked")),
    }
}

/// The `error` text of an accepted body, its first `cap` bytes at most (cut at a character
/// boundary) and the length of the whole: `None` for `null`. The literal is Jackson-escaped
/// JSON; a text with a lone surrogate (which `str` cannot hold) keeps its escapes.
fn error_text(literal: &[u8], cap: usize) -> Option<ErrorText> {
    if literal == b"null" {
        return None;
    }
    let inner = literal.get(1..literal.len().saturating_sub(1))?;
    if let Some(text) = unescape_start(inner, cap) {
        return Some(text);
    }
    let whole = String::from_utf8_lossy(inner);
    Some(ErrorText {
        text: cut(&whole, cap).to_owned(),
        length: whole.len(),
    })
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The JSON string content `inner` unescaped, as `serde_json` reads it, keeping `cap` bytes at
/// most; `None` where `serde_json` would refuse it (a lone surrogate, a raw control character,
/// a bad escape, bytes that are not UTF-8).
fn unescape_start(inner: &[u8], cap: usize) -> Option<ErrorText> {
    let mut text = String::with_capacity(inner.len().min(cap));
    let mut length = 0usize;
    let mut full = false;
    let mut push = |text: &mut String, s: &str| {
        length += s.len();
        if !full {
            let room = cap - text.len();
            if s.len() <= room {
                text.push_str(s);
            } else {
                text.push_str(cut(s, room));
                full = true;
            }
        }
    };
    let mut i = 0;
    while i < inner.len() {
        let run = inner[i..]
            .iter()
            .position(|b| *b == b'\\' || *b < 0x20)
            .map_or(inner.len(), |n| i + n);
        if run > i {
            push(&mut text, std::str::from_utf8(&inner[i..run]).ok()?);
            i = run;
            continue;
        }
        if inner[i] < 0x20 {
            return None;
        }
        let escape = *inner.get(i + 1)?;
        let simple = match escape {
            b'"' => Some('"'),
            b'\\' => Some('\\'),
            b'/' => Some('/'),
            b'b' => Some('\u{8}'),
            b'f' => Some('\u{c}'),
            b'n' => Some('\n'),
            b'r' => Some('\r'),
            b't' => Some('\t'),
            b'u' => None,
            _ => return None,
        };
        let c = match simple {
            Some(c) => {
                i += 2;
                c
            }
            None => {
                let unit = hex4(inner.get(i + 2..i + 6)?)?;
                i += 6;
                match unit {
                    0xD800..=0xDBFF => {
                        if inner.get(i..i + 2)? != b"\\u" {
                            return None;
                        }
                        let low = hex4(inner.get(i + 2..i + 6)?)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return None;
                        }
                        i += 6;
                        char::from_u32(0x1_0000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00))?
                    }
                    0xDC00..=0xDFFF => return None,
                    unit => char::from_u32(u32::from(unit))?,
                }
            }
        };
        push(&mut text, c.encode_utf8(&mut [0u8; 4]));
    }
    Some(ErrorText { text, length })
}

fn hex4(digits: &[u8]) -> Option<u16> {
    let mut unit = 0u16;
    for d in digits {
        unit = unit << 4 | u16::from((*d as char).to_digit(16)? as u8);
    }
    Some(unit)
}

/// Sends a copy of a call answered locally to the node, with a connector id that does not exist,
/// on a task of its own, and compares the answers (see `canary.rs`). Nothing is awaited here.
fn send_canary<S, B, ResB>(
    inner: S,
    parts: &http::request::Parts,
    raw: &Bytes,
    local: &Response<Body>,
    kind: &'static str,
    permit: Permit,
) where
    S: Inner<B, ResB>,
    B: AnyBody,
    ResB: AnyBody,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let canary = permit.canary();
    let id = canary.random_id();
    let target = match parts.uri.query() {
        Some(q) => format!("/_connector/{id}/_error?{q}"),
        None => format!("/_connector/{id}/_error"),
    };
    let Ok(uri) = http::Uri::try_from(target) else {
        return;
    };
    let mut head = Request::new(GuardedBody::buffered(raw.clone()));
    *head.method_mut() = parts.method.clone();
    *head.uri_mut() = uri;
    *head.headers_mut() = parts.headers.clone();
    let expected = (
        local.status(),
        local.headers().get(http::header::CONTENT_TYPE).cloned(),
        match local.body() {
            Body::Full(bytes) => bytes.clone(),
            _ => Bytes::new(),
        },
    );
    runtime.spawn(async move {
        let _permit = permit;
        let counters = &canary.counters;
        let answer = match tower::ServiceExt::oneshot(inner, head).await {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, 64 * 1024)).await {
                    Ok(body) => Some((
                        parts.status,
                        parts.headers.get(http::header::CONTENT_TYPE).cloned(),
                        body.to_bytes(),
                    )),
                    Err(_) => None,
                }
            }
            Err(_) => None,
        };
        match answer {
            None => {
                counters.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Some(node) if node == expected => {
                counters.matched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Some((status, _, body)) => {
                counters.mismatched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                canary.disable(kind);
                tracing::warn!(
                    kind,
                    esgate_status = expected.0.as_u16(),
                    esgate = %String::from_utf8_lossy(&expected.2),
                    node_status = status.as_u16(),
                    node = %String::from_utf8_lossy(&body),
                    "canary: the node answers this kind of call otherwise; forwarding it from now on"
                );
            }
        }
    });
}

/// A local answer and its record.
fn local<ResB>(response: Response<Body>) -> Checked<ResB> {
    let rejection = rejection_of(&response);
    (into_local(response), Verdict::Rejected(rejection), None)
}

/// An answer esgate made (always a complete buffer) as the guard's response body.
fn into_local<ResB>(response: Response<Body>) -> Response<ResponseBody<ResB>> {
    response.map(|body| match body {
        Body::Full(bytes) => ResponseBody::buffered(bytes),
        _ => ResponseBody::buffered(Bytes::new()),
    })
}

/// The [`Rejection`] a local answer carries.
fn rejection_of(response: &Response<Body>) -> Rejection {
    response
        .extensions()
        .get::<Rejection>()
        .cloned()
        .unwrap_or_else(|| Rejection::simple(response.status().as_u16(), b""))
}

/// Forwards the call as the client sent it (the body was read, so it goes as a buffer): esgate
/// cannot tell what Elasticsearch would answer.
fn unchecked<B, ResB>(parts: http::request::Parts, raw: Bytes, why: &'static str) -> Step<B, ResB> {
    tracing::debug!(reason = why, "connector error passed through unchecked");
    Step::Call {
        request: Request::from_parts(parts, GuardedBody::buffered(raw)),
        verdict: Verdict::Unchecked(why),
        error_text: None,
    }
}

/// The request with `body` as the whole body: a fresh `Content-Length`, no encodings left over.
/// Most calls arrive as they leave (unencoded, by length) and keep their head as it came.
fn forward<B>(mut parts: http::request::Parts, body: Bytes, framing: Framing) -> Request<GuardedBody<B>> {
    let as_sent = framing.exact_length == Some(body.len() as u64) && !framing.encoded && !framing.chunked;
    if !as_sent {
        parts.headers.remove(CONTENT_ENCODING);
        parts.headers.remove(TRANSFER_ENCODING);
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    Request::from_parts(parts, GuardedBody::buffered(body))
}

/// The framing headers of an intercepted request, found in one pass over its head: a lookup by
/// name costs a hash, and the common request has only four or five headers in all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Framing {
    /// The first `Content-Length`, when it is a number (hyper refuses a request whose lengths
    /// differ).
    declared: Option<u64>,
    /// The length when there is one `Content-Length`, written the one way `HeaderValue::from`
    /// writes it: then a body of that length is forwarded under the same header.
    exact_length: Option<u64>,
    /// The first `Expect` is `100-continue`.
    expects_continue: bool,
    /// There is a `Content-Encoding`.
    encoded: bool,
    /// There is a `Transfer-Encoding`.
    chunked: bool,
}

impl Framing {
    fn of(headers: &http::HeaderMap) -> Framing {
        let mut framing = Framing::default();
        let mut lengths = 0u32;
        let mut expect_seen = false;
        for (name, value) in headers {
            if name == CONTENT_LENGTH {
                lengths += 1;
                if lengths == 1 {
                    framing.declared = value.to_str().ok().and_then(|v| v.parse::<u64>().ok());
                    framing.exact_length = framing
                        .declared
                        .filter(|n| usize::try_from(*n).is_ok_and(|n| is_decimal_of(value.as_bytes(), n)));
                } else {
                    framing.exact_length = None;
                }
            } else if name == EXPECT {
                if !std::mem::replace(&mut expect_seen, true) {
                    framing.expects_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
                }
            } else if name == CONTENT_ENCODING {
                framing.encoded = true;
            } else if name == TRANSFER_ENCODING {
                framing.chunked = true;
            }
        }
        framing
    }
}

/// Whether `text` is `n` written in decimal the one way `HeaderValue::from(n)` writes it (no sign,
/// no leading zero).
fn is_decimal_of(text: &[u8], n: usize) -> bool {
    let canonical = text.first().is_some_and(|d| *d != b'0') || text == b"0";
    let value = text.iter().try_fold(0usize, |acc, d| {
        let digit = d.is_ascii_digit().then(|| usize::from(d - b'0'))?;
        acc.checked_mul(10)?.checked_add(digit)
    });
    canonical && value == Some(n)
}

/// 413 in Elasticsearch's shape.
fn too_large(limit: usize) -> Response<Body> {
    local_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        es_error::CONTENT_TOO_LONG_TYPE,
        &format!("the request body is larger than the limit of [{limit}] bytes of the Update connector error API"),
    )
}

/// 408 in Elasticsearch's shape: the body stopped arriving.
fn timed_out(deadline: Duration) -> Response<Body> {
    local_error(
        StatusCode::REQUEST_TIMEOUT,
        REQUEST_TIMEOUT_TYPE,
        &format!(
            "the request body stopped arriving: nothing of it came for [{}] (server.body_read_timeout)",
            duration_text(deadline)
        ),
    )
}

/// `30s`, `1.5s`, `250ms`.
fn duration_text(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_length_is_kept_only_when_written_as_esgate_would_write_it() {
        for n in [0usize, 7, 63, 100, 1 << 40] {
            assert!(is_decimal_of(HeaderValue::from(n).as_bytes(), n), "{n}");
        }
        assert!(!is_decimal_of(b"063", 63));
        assert!(!is_decimal_of(b"+63", 63));
        assert!(!is_decimal_of(b"64", 63));
        assert!(!is_decimal_of(b"", 0));
        assert!(!is_decimal_of(b"00", 0));
        assert!(!is_decimal_of(b"18446744073709551679", 63), "no wrapping around to 63");
    }
    use crate::elasticsearch::Dialect;

    #[test]
    fn framing_is_read_in_one_pass_as_lookups_by_name_would_read_it() {
        let heads: [&[(&str, &str)]; 10] = [
            &[("content-length", "63"), ("content-type", "application/json")],
            &[("content-length", "063")],
            &[("content-length", "+63")],
            &[("content-length", "63"), ("content-length", "63")],
            &[("content-length", "x")],
            &[("expect", "100-Continue"), ("expect", "other")],
            &[("expect", "other"), ("expect", "100-continue")],
            &[("transfer-encoding", "chunked")],
            &[("content-encoding", "gzip"), ("content-length", "10")],
            &[],
        ];
        for head in heads {
            let mut headers = http::HeaderMap::new();
            for (name, value) in head {
                headers.append(*name, HeaderValue::from_static(value));
            }
            let framing = Framing::of(&headers);
            let declared = headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            assert_eq!(framing.declared, declared, "{head:?}");
            let exact = headers.get_all(CONTENT_LENGTH).iter().count() == 1
                && declared.is_some_and(|n| is_decimal_of(headers[CONTENT_LENGTH].as_bytes(), n as usize));
            assert_eq!(framing.exact_length, declared.filter(|_| exact), "{head:?}");
            let expects = headers
                .get(EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            assert_eq!(framing.expects_continue, expects, "{head:?}");
            assert_eq!(framing.encoded, headers.contains_key(CONTENT_ENCODING), "{head:?}");
            assert_eq!(framing.chunked, headers.contains_key(TRANSFER_ENCODING), "{head:?}");
        }
    }

    fn old_error_text(literal: &[u8]) -> Option<String> {
        if literal == b"null" {
            return None;
        }
        serde_json::from_slice::<String>(literal)
            .ok()
            .or_else(|| Some(String::from_utf8_lossy(literal.get(1..literal.len().saturating_sub(1))?).into_owned()))
    }

    #[test]
    fn error_texts_read_as_before_and_are_cut_at_a_character_boundary() {
        let literals: [&[u8]; 9] = [
            br#""plain""#,
            br#""a\"b\\c\/d\n\r\t\b\f""#,
            br#""\u00e9t\u00C9 \uD83D\uDE00 end""#,
            "\"d\u{e9}j\u{e0} vu \u{1F600}\"".as_bytes(),
            br#""lone \uD800 surrogate""#,
            br#""lone low \uDC00""#,
            br#""""#,
            br#""bad \x escape""#,
            b"\"raw \x01 control\"",
        ];
        for literal in literals {
            let old = old_error_text(literal).expect("a text");
            let whole = error_text(literal, usize::MAX).expect("a text");
            assert_eq!(whole.text, old, "{}", String::from_utf8_lossy(literal));
            assert_eq!(whole.length, old.len());
            for cap in 0..old.len() {
                let kept = error_text(literal, cap).expect("a text");
                assert!(kept.text.len() <= cap);
                assert!(old.starts_with(&kept.text));
                assert!(cap - kept.text.len() < 4, "cut at the last boundary within the cap");
                assert_eq!(kept.length, old.len());
            }
        }
        assert_eq!(error_text(b"null", 10), None);
    }

    #[test]
    fn canonical_bodies_are_recognised_without_copying() {
        let body = Bytes::from_static(br#"{"error":"Houston, we have a problem"}"#);
        let dialects = DialectSet::one(Dialect::NEWEST);
        let Some(Literal::Canonical(literal)) = accepted_literal(&body, dialects) else {
            panic!("the fast path");
        };
        assert_eq!(&literal[..], br#""Houston, we have a problem""#);
        assert_eq!(
            literal.as_ptr(),
            body[CANONICAL_HEAD.len()..].as_ptr(),
            "a slice of the body"
        );
        // The model's own answer is the same.
        match check_body_agreed(&body, dialects) {
            Some(BodyVerdict::Accept { literal: model }) => assert_eq!(model, literal),
            other => panic!("{other:?}"),
        }
        assert!(is_canonical(&body, &literal));
        assert_eq!(BodyVerdict::canonical_body(&literal), body);
        assert!(!is_canonical(br#"{"error": "x"}"#, br#""x""#));
        assert!(!is_canonical(br#"{"error":"x"} "#, br#""x""#));
        let escaped = Bytes::from_static(br#"{"error":"a\u0041"}"#);
        assert!(matches!(
            accepted_literal(&escaped, dialects),
            Some(Literal::Checked(BodyVerdict::Accept { .. }))
        ));
    }

    #[test]
    fn durations_read_as_configured() {
        assert_eq!(duration_text(Duration::from_secs(30)), "30s");
        assert_eq!(duration_text(Duration::from_millis(250)), "250ms");
        assert_eq!(duration_text(Duration::from_millis(1500)), "1.5s");
    }
}

/// The guard in process, around an inner service that records what it receives: no sockets.
#[cfg(test)]
mod guard_tests {
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http::{Method, Request, Response, StatusCode};
    use http_body_util::{BodyExt, Full};
    use tower::{Layer, ServiceExt};

    use super::super::{ConnectorErrorLayer, GuardedBody, Intercepted, ResponseBody, Verdict};
    use crate::elasticsearch::{Knowledge, SharedKnowledge, Version};

    /// What the inner service saw: method, path, `Content-Length`, and the body when it was a
    /// buffer (`None` when the caller's own body was passed on).
    type Seen = Arc<Mutex<Vec<(Method, String, Option<String>, Option<Bytes>)>>>;

    /// An inner service that records each request and answers `{"result":"updated"}`.
    fn recording() -> (Seen, GuardInner) {
        let seen: Seen = Arc::default();
        let log = seen.clone();
        let inner = tower::service_fn(move |req: Request<GuardedBody<Full<Bytes>>>| {
            let log = log.clone();
            async move {
                let (parts, body) = req.into_parts();
                let length = parts
                    .headers
                    .get(http::header::CONTENT_LENGTH)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                let buffered = body.into_original().err().map(Option::unwrap_or_default);
                log.lock()
                    .map(|mut l| l.push((parts.method, parts.uri.path().to_owned(), length, buffered)))
                    .ok();
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                    b"{\"result\":\"updated\"}",
                ))))
            }
        });
        (seen, tower::util::BoxCloneService::new(inner))
    }

    fn layer() -> ConnectorErrorLayer {
        let version = Version::parse("9.5.0").expect("a version");
        ConnectorErrorLayer::new().knowledge(SharedKnowledge::new(Knowledge::for_version(version)))
    }

    fn put(body: &'static [u8]) -> Request<Full<Bytes>> {
        Request::builder()
            .method(Method::PUT)
            .uri("/_connector/c1/_error")
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(Full::new(Bytes::from_static(body)))
            .expect("a request")
    }

    async fn call(
        layer: ConnectorErrorLayer,
        seen_inner: impl FnOnce() -> (Seen, GuardInner),
        req: Request<Full<Bytes>>,
    ) -> (Seen, Response<ResponseBody<Full<Bytes>>>) {
        let (seen, inner) = seen_inner();
        let response = layer.layer(inner).oneshot(req).await.expect("infallible");
        (seen, response)
    }

    type GuardInner =
        tower::util::BoxCloneService<Request<GuardedBody<Full<Bytes>>>, Response<Full<Bytes>>, Infallible>;

    async fn text(response: Response<ResponseBody<Full<Bytes>>>) -> (StatusCode, String, Option<Intercepted>) {
        let (mut parts, body) = response.into_parts();
        let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        let record = parts.extensions.remove::<Intercepted>();
        (parts.status, String::from_utf8_lossy(&bytes).into_owned(), record)
    }

    #[tokio::test]
    async fn other_routes_pass_with_the_callers_own_body() {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/idx/_doc")
            .body(Full::new(Bytes::from_static(b"{\"a\":1}")))
            .expect("a request");
        let (seen, response) = call(layer(), recording, req).await;
        let (status, body, record) = text(response).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "{\"result\":\"updated\"}"));
        assert!(record.is_none());
        let seen = seen.lock().expect("log").clone();
        // Not buffered: the inner service got the original body, not a copy.
        assert_eq!(seen, vec![(Method::POST, "/idx/_doc".to_owned(), None, None)]);
    }

    /// A body that never yields a frame.
    struct Endless;

    impl http_body::Body for Endless {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            std::task::Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_pass_through_body_is_not_read_before_the_inner_service_answers() {
        // Were the body read first, this would never complete.
        let inner = tower::service_fn(|req: Request<GuardedBody<Endless>>| async move {
            assert!(req.into_body().into_original().is_ok());
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        });
        let req = Request::builder()
            .method(Method::PUT)
            .uri("/idx/_doc/1")
            .body(Endless)
            .expect("a request");
        let response = layer().layer(inner).oneshot(req).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_refused_call_is_answered_here_and_never_reaches_the_inner_service() {
        let (seen, response) = call(layer(), recording, put(b"{\"error\":42}")).await;
        let (status, body, record) = text(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(json["status"], 400);
        assert_eq!(json["error"]["type"], "x_content_parse_exception", "{body}");
        assert!(matches!(record.map(|r| r.verdict), Some(Verdict::Rejected(_))));
        assert!(seen.lock().expect("log").is_empty());
    }

    #[tokio::test]
    async fn a_valid_call_goes_on_with_its_canonical_body() {
        let (seen, response) = call(layer(), recording, put(b"{ \"error\" : \"disk full\" }")).await;
        let (status, body, record) = text(response).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "{\"result\":\"updated\"}"));
        assert!(matches!(record.map(|r| r.verdict), Some(Verdict::Forwarded)));
        let seen = seen.lock().expect("log").clone();
        let canonical = Bytes::from_static(b"{\"error\":\"disk full\"}");
        assert_eq!(
            seen,
            vec![(
                Method::PUT,
                "/_connector/c1/_error".to_owned(),
                Some("21".to_owned()),
                Some(canonical)
            )]
        );
    }

    #[tokio::test]
    async fn report_only_forwards_what_it_would_refuse_as_it_came() {
        let (seen, response) = call(layer().report_only(true), recording, put(b"{\"error\":42}")).await;
        let (status, _, record) = text(response).await;
        assert_eq!(status, StatusCode::OK);
        assert!(matches!(record.map(|r| r.verdict), Some(Verdict::WouldReject(_))));
        let seen = seen.lock().expect("log").clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].3.as_deref(), Some(&b"{\"error\":42}"[..]));
    }

    #[tokio::test]
    async fn a_body_over_the_limit_gets_413_even_in_report_only_mode() {
        let (seen, response) = call(
            layer().max_body_size(8).report_only(true),
            recording,
            put(b"{\"error\":\"too long\"}"),
        )
        .await;
        let (status, body, _) = text(response).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert!(body.contains("\"status\":413"), "{body}");
        assert!(seen.lock().expect("log").is_empty());
    }

    #[tokio::test]
    async fn over_the_budget_is_the_circuit_breakers_429() {
        let budget = super::super::Budget::unshared(4);
        let (seen, response) = call(layer().budget(budget), recording, put(b"{\"error\":null}")).await;
        let (status, body, _) = text(response).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(body.contains("circuit_breaking_exception"), "{body}");
        assert!(seen.lock().expect("log").is_empty());
    }
}
