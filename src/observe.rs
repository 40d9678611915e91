//! [`ObserveLayer`]: the outermost layer. It times every request, feeds the [`Metrics`], and
//! hands audit [`Event`]s to the [`Auditor`].
//!
//! It reads what inner layers recorded: the connector-error layer's
//! [`Intercepted`](crate::connector_error::Intercepted) record in the guard's [`ResponseBody`]
//! (which also says the request was on that route) and the upstream's [`UpstreamInfo`] in the
//! response's extensions. The response itself passes through untouched, and its body is not
//! wrapped: durations run to the response head.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use http::header::{AUTHORIZATION, CONTENT_LENGTH, USER_AGENT};
use http::{HeaderName, Method, Request, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::audit::read_along::{ReadAlong, Seen};
use crate::audit::{Auditor, Event, WriteRecord};
use crate::body::Body;
use crate::elasticsearch::writes::{inspect as inspect_body, ErrorChange, Form, Subject, WritePath};
use crate::BoxError;
use crate::connector_error::{ResponseBody, Verdict};
use crate::metrics::{Metrics, Route};
use crate::redact::{caller, redact_secrets};
use crate::upstream::{ConnInfo, UpstreamInfo};

use crate::headers::{TRACEPARENT, X_OPAQUE_ID};

/// Applies [`Observe`] to the services of one client connection.
#[derive(Clone, Debug)]
pub struct ObserveLayer {
    sinks: Arc<Sinks>,
    conn: ConnInfo,
}

/// Where observations go; one `Arc` for both, so a request clones one pointer.
#[derive(Debug)]
struct Sinks {
    metrics: Arc<Metrics>,
    audit: Option<Auditor>,
}

impl ObserveLayer {
    /// A layer for the connection `conn`.
    pub fn new(metrics: Arc<Metrics>, audit: Option<Auditor>, conn: ConnInfo) -> Self {
        ObserveLayer {
            sinks: Arc::new(Sinks { metrics, audit }),
            conn,
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            layer: self.clone(),
        }
    }
}

/// Times, counts and audits the requests of one connection.
#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    layer: ObserveLayer,
}

impl<S> Observe<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B, ResB> Service<Request<B>> for Observe<S>
where
    S: Service<Request<ObservedBody<B>>, Response = Response<ResponseBody<ResB>>>,
    B: http_body::Body,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started = Instant::now();
        self.layer.sinks.metrics.request_started();
        let (pending, read_along) = match &self.layer.sinks.audit {
            Some(audit) if audit.wants(&req) => {
                let mut event = Box::new(pending(&req, self.layer.conn, audit.all_requests()));
                let mut inspect = None;
                let mut read_along = None;
                // A document write of a connector's or sync job's error: read along its body.
                // The Update connector error API itself is read by the connector-error layer.
                if let Some(write) = audit.error_write(&req) {
                    let guarded = write.subject == Subject::Connector && write.path == WritePath::ConnectorApi;
                    if !guarded {
                        let seen = Seen::default();
                        inspect = Some((write.form, seen.clone()));
                        read_along = Some((audit.max_inspected_body(), seen));
                        event.write = Some(WriteRecord {
                            subject: write.subject,
                            id: write.id,
                            path: write.path,
                            change: ErrorChange::Unread("the answer came before the body ended"),
                            status: None,
                        });
                    }
                }
                (Some((event, inspect)), read_along)
            }
            _ => (None, None),
        };
        self.forward(req, started, pending, read_along)
    }
}

impl<S> Observe<S> {
    fn forward<B, ResB>(
        &mut self,
        req: Request<B>,
        started: Instant,
        pending: Option<Pending>,
        read_along: Option<(usize, Seen)>,
    ) -> ResponseFuture<S::Future>
    where
        S: Service<Request<ObservedBody<B>>, Response = Response<ResponseBody<ResB>>>,
        B: http_body::Body,
    {
        let method = req.method().clone();
        let req = match read_along {
            None => req.map(ObservedBody::plain),
            Some((limit, seen)) => req.map(|b| ObservedBody::read_along(ReadAlong::new(b, limit, seen))),
        };
        ResponseFuture {
            inner: self.inner.call(req),
            state: Some(State {
                started,
                method,
                sinks: self.layer.sinks.clone(),
                pending,
            }),
        }
    }
}

pin_project! {
    /// The request body the inner service receives: the client's own, or (for a document write
    /// of a connector's error, with an audit sink) the same passed through [`ReadAlong`].
    #[derive(Debug)]
    pub struct ObservedBody<B> {
        #[pin]
        kind: BodyKind<B>,
    }
}

pin_project! {
    #[project = BodyKindProj]
    #[derive(Debug)]
    enum BodyKind<B> {
        Plain { #[pin] body: B },
        ReadAlong { #[pin] body: ReadAlong<B> },
    }
}

impl<B> ObservedBody<B> {
    fn plain(body: B) -> Self {
        ObservedBody {
            kind: BodyKind::Plain { body },
        }
    }

    fn read_along(body: ReadAlong<B>) -> Self {
        ObservedBody {
            kind: BodyKind::ReadAlong { body },
        }
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for ObservedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            BodyKindProj::Plain { body } => body.poll_frame(cx),
            BodyKindProj::ReadAlong { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Plain { body } => body.is_end_stream(),
            BodyKind::ReadAlong { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Plain { body } => body.size_hint(),
            BodyKind::ReadAlong { body } => body.size_hint(),
        }
    }
}

/// The body as the upstream sends it: the client's stream unboxed, a read-along one boxed (only
/// the audited document writes).
impl<B> From<ObservedBody<B>> for Body
where
    B: Into<Body> + http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn from(body: ObservedBody<B>) -> Self {
        match body.kind {
            BodyKind::Plain { body } => body.into(),
            BodyKind::ReadAlong { body } => Body::boxed(body),
        }
    }
}

/// What the audit event needs from the request, taken before the request moves on.
fn pending<B>(req: &Request<B>, conn: ConnInfo, all_requests: bool) -> Event {
    let headers = req.headers();
    let text = |name: &HeaderName| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    Event {
        timestamp: SystemTime::now(),
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        query: all_requests
            .then(|| req.uri().query().map(|q| redact_secrets(q).into_owned()))
            .flatten(),
        client: conn.peer,
        caller: headers.get(AUTHORIZATION).map(|v| caller(v.as_bytes())),
        user_agent: text(&USER_AGENT),
        opaque_id: text(&X_OPAQUE_ID),
        traceparent: text(&TRACEPARENT),
        request_bytes: headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
        status: 0,
        duration: std::time::Duration::ZERO,
        intercepted: None,
        upstream: None,
        write: None,
    }
}

/// The audit event to complete, and where its body's copy is read along, if it is.
type Pending = (Box<Event>, Option<(Form, Seen)>);

/// Per-request state, taken when the response head is there.
#[derive(Debug)]
struct State {
    started: Instant,
    method: Method,
    sinks: Arc<Sinks>,
    /// The audit event to complete, and where its body's copy is read along, if it is.
    pending: Option<Pending>,
}

impl State {
    fn finish<B>(self, response: &Response<ResponseBody<B>>) {
        let elapsed = self.started.elapsed();
        let status = response.status().as_u16();
        let record = response.body().intercepted();
        let route = if record.is_some() {
            Route::ConnectorError
        } else {
            Route::PassThrough
        };
        let metrics = &self.sinks.metrics;
        metrics.request_finished(route, &self.method, status, elapsed);
        if let Some(record) = record {
            match &record.verdict {
                Verdict::Forwarded => {}
                Verdict::Rejected(r) => metrics.local_rejection(r.label()),
                Verdict::WouldReject(r) => metrics.would_reject(r.label()),
                Verdict::Unchecked(why) => metrics.unchecked(why),
            }
        }
        if record.is_some() {
            metrics.error_write(WritePath::ConnectorApi, status < 400);
        }
        let (Some(audit), Some((mut event, inspect))) = (&self.sinks.audit, self.pending) else {
            return;
        };
        if let (Some(write), Some((form, seen))) = (event.write.as_mut(), inspect) {
            match seen.take() {
                Some(copy) if copy.over_limit => {
                    write.change = ErrorChange::Unread("the body is larger than audit.max_inspected_body")
                }
                Some(copy) if !copy.complete => write.change = ErrorChange::Unread("the body did not arrive whole"),
                Some(copy) => (write.change, write.status) = inspect_body(form, &copy.bytes),
                None => {}
            }
        }
        // A write that touches neither error nor status is a plain request.
        event.write = event.write.take().filter(|w| w.change != ErrorChange::Untouched);
        if let Some(write) = &event.write {
            metrics.error_write(write.path, status < 400);
        }
        if record.is_none() && event.write.is_none() && !audit.all_requests() {
            return;
        }
        event.status = status;
        event.duration = elapsed;
        event.intercepted = record.cloned();
        event.upstream = response
            .extensions()
            .get::<UpstreamInfo>()
            .map(|info| (info.node.clone(), info.elapsed));
        audit.record(*event);
    }
}

pin_project! {
    /// The future of [`Observe`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        state: Option<State>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // The client went away before the response head: no longer in flight.
            if let Some(state) = this.project().state.take() {
                state.sinks.metrics.request_abandoned();
            }
        }
    }
}

impl<F, ResB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody<ResB>>, E>>,
{
    type Output = Result<Response<ResponseBody<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Some(state) = this.state.take() {
            match &result {
                Ok(response) => state.finish(response),
                Err(_) => state.sinks.metrics.request_abandoned(),
            }
        }
        Poll::Ready(result)
    }
}

/// The layer in process, around a `service_fn`: what it counts, with no sockets.
#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::Future;
    use std::sync::Arc;

    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::Empty;
    use tower::{Layer, Service, ServiceExt};

    use super::ObserveLayer;
    use crate::connector_error::{Intercepted, ResponseBody, Rejection, Verdict};
    use crate::elasticsearch::Knowledge;
    use crate::metrics::Metrics;
    use crate::upstream::ConnInfo;

    fn layer(metrics: &Arc<Metrics>) -> ObserveLayer {
        let conn = ConnInfo {
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], 40000)),
            scheme: "http",
        };
        ObserveLayer::new(metrics.clone(), None, conn)
    }

    /// The line of `series` in the metrics page, if any.
    fn line(metrics: &Metrics, series: &str) -> Option<String> {
        let page = metrics.render(&[], true);
        page.lines().find(|l| l.starts_with(series)).map(str::to_owned)
    }

    fn rejected() -> Intercepted {
        Intercepted {
            connector_id: "c1".to_owned(),
            verdict: Verdict::Rejected(Rejection {
                status: 400,
                error_type: Some("x_content_parse_exception"),
                reason: "bad".to_owned(),
            }),
            error_text: None,
            error_length: 0,
            knowledge: Knowledge::UNKNOWN,
        }
    }

    #[tokio::test]
    async fn counts_each_request_by_route_and_each_local_rejection_by_type() {
        let metrics = Arc::new(Metrics::new());
        let inner = tower::service_fn(|req: Request<super::ObservedBody<Empty<Bytes>>>| async move {
            let mut response = Response::new(ResponseBody::original(()));
            if req.uri().path().ends_with("/_error") {
                *response.status_mut() = StatusCode::BAD_REQUEST;
                response.body_mut().set_intercepted(rejected());
            }
            Ok::<_, Infallible>(response)
        });
        let mut service = layer(&metrics).layer(inner);
        for path in ["/", "/idx/_search", "/_connector/c1/_error"] {
            let req = Request::put(path).body(Empty::new()).expect("a request");
            let response = service
                .ready()
                .await
                .expect("ready")
                .call(req)
                .await
                .expect("infallible");
            assert_eq!(
                response.body().intercepted().is_some(),
                path.ends_with("/_error")
            );
        }
        let page = metrics.render(&[], true);
        assert!(
            page.contains(r#"esgate_requests_total{route="passthrough",method="PUT",code="200"} 2"#),
            "{page}"
        );
        assert!(
            page.contains(r#"esgate_requests_total{route="connector_error",method="PUT",code="400"} 1"#),
            "{page}"
        );
        assert!(
            page.contains(r#"esgate_local_rejections_total{error_type="x_content_parse_exception"} 1"#),
            "{page}"
        );
        assert_eq!(
            line(&metrics, "esgate_requests_in_flight ").as_deref(),
            Some("esgate_requests_in_flight 0")
        );
    }

    #[tokio::test]
    async fn a_request_whose_client_went_away_is_no_longer_in_flight() {
        let metrics = Arc::new(Metrics::new());
        let inner = tower::service_fn(|_: Request<super::ObservedBody<Empty<Bytes>>>| std::future::pending::<Result<Response<ResponseBody<()>>, Infallible>>());
        let mut service = layer(&metrics).layer(inner);
        let future = service.call(Request::new(Empty::<Bytes>::new()));
        assert_eq!(
            line(&metrics, "esgate_requests_in_flight ").as_deref(),
            Some("esgate_requests_in_flight 1")
        );
        // hyper drops the future when the connection closes before the response head.
        let mut future = Box::pin(future);
        let waker = std::task::Waker::noop();
        assert!(future
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
            .is_pending());
        drop(future);
        assert_eq!(
            line(&metrics, "esgate_requests_in_flight ").as_deref(),
            Some("esgate_requests_in_flight 0")
        );
    }
}
