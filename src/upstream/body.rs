//! The request body as sent upstream: the client's body, plus a signal when it has all been sent.
//!
//! The response timeout counts from the end of the request body, not from its start, so that a
//! large bulk upload that takes minutes to stream is not cut off by a timeout meant for a silent
//! node. Bodies that are already complete (no body, or a buffer) need no signal.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::oneshot;

use crate::body::Body;
use crate::BoxError;

/// A request body on its way upstream.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Body,
    sent: Option<oneshot::Sender<()>>,
}

impl UpstreamBody {
    /// Wraps `inner`; the receiver resolves once its last frame has been handed to the
    /// connection (or errors when the body is dropped). `None` when the body is complete already.
    pub(crate) fn new(inner: Body) -> (Self, Option<oneshot::Receiver<()>>) {
        if http_body::Body::is_end_stream(&inner) || matches!(inner, Body::Full(_)) {
            return (UpstreamBody { inner, sent: None }, None);
        }
        let (tx, rx) = oneshot::channel();
        (UpstreamBody { inner, sent: Some(tx) }, Some(rx))
    }

    /// A copy to send again, for a body that is complete already: none, or a buffer (the
    /// intercepted route forwards one). `None` for a streamed body, which can be sent only once.
    pub(crate) fn replayable(&self) -> Option<UpstreamBody> {
        let inner = match &self.inner {
            Body::Full(bytes) => Body::Full(bytes.clone()),
            body if http_body::Body::is_end_stream(body) => Body::Empty,
            _ => return None,
        };
        Some(UpstreamBody { inner, sent: None })
    }

    fn signal(&mut self) {
        if let Some(tx) = self.sent.take() {
            let _ = tx.send(());
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.signal(),
            Poll::Ready(Some(Ok(_))) if http_body::Body::is_end_stream(&self.inner) => self.signal(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
