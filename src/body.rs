//! The one body type that flows through esgate's stack.
//!
//! Pass-through traffic carries hyper's [`Incoming`] body untouched (streamed frame by frame, never
//! collected); answers that esgate writes itself carry a [`Bytes`] buffer. An enum instead of a boxed
//! trait object keeps the pass-through path free of a per-request allocation.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

use crate::connector_error::{GuardedBody, ResponseBody};
use crate::BoxError;

/// A request or response body: streamed from a peer, or a complete buffer esgate made.
#[derive(Debug, Default)]
pub enum Body {
    /// No body at all (`Content-Length: 0` when a length is written).
    #[default]
    Empty,
    /// A complete body held in memory; yielded as one frame.
    Full(Bytes),
    /// A body streamed from the client or from the upstream, passed on frame by frame.
    Incoming(Incoming),
    /// Any other body, for stacks that embed esgate's services.
    Boxed(http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>),
}

impl Body {
    /// A complete body; an empty buffer becomes [`Body::Empty`].
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Body::Empty
        } else {
            Body::Full(bytes)
        }
    }

    /// Wraps any body with `Bytes` frames.
    pub fn boxed<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        Body::Boxed(body.map_err(Into::into).boxed_unsync())
    }
}

impl From<Incoming> for Body {
    fn from(body: Incoming) -> Self {
        Body::Incoming(body)
    }
}

/// The guard's request body as the upstream sends it: the client's own stream stays unboxed.
impl<B: Into<Body>> From<GuardedBody<B>> for Body {
    fn from(body: GuardedBody<B>) -> Self {
        match body.into_original() {
            Ok(original) => original.into(),
            Err(bytes) => bytes.map_or(Body::Empty, Body::Full),
        }
    }
}

/// The guard's response body as the server writes it.
impl<B: Into<Body>> From<ResponseBody<B>> for Body {
    fn from(body: ResponseBody<B>) -> Self {
        match body.into_original() {
            Ok(original) => original.into(),
            Err(bytes) => bytes.map_or(Body::Empty, Body::Full),
        }
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Body::full(bytes)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            Body::Empty => Poll::Ready(None),
            Body::Full(_) => match std::mem::take(&mut *self) {
                Body::Full(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                _ => Poll::Ready(None),
            },
            Body::Incoming(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Body::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(_) => false,
            Body::Incoming(body) => body.is_end_stream(),
            Body::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(bytes) => SizeHint::with_exact(bytes.len() as u64),
            Body::Incoming(body) => body.size_hint(),
            Body::Boxed(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn full_yields_its_bytes_once_then_ends() {
        let mut body = Body::full("abc");
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(3));
        let frame = body.frame().await.and_then(|f| f.ok()).and_then(|f| f.into_data().ok());
        assert_eq!(frame.as_deref(), Some(&b"abc"[..]));
        assert!(body.frame().await.is_none());
        assert!(http_body::Body::is_end_stream(&body));
    }

    #[test]
    fn empty_buffer_is_empty_body() {
        assert!(matches!(Body::full(Bytes::new()), Body::Empty));
    }
}
