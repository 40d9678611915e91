//! The body types the guard hands on: [`GuardedBody`] to the inner service, [`ResponseBody`]
//! back to the caller.
//!
//! Both are the original body type with one more case, a complete buffer, as tower-http's
//! layers do it: the pass-through path keeps the caller's own body (no box, no copy), and the
//! intercepted route carries the bytes it read. Their cases are private, so that a new case
//! (a streamed canonical body, say) is not a breaking change.
//!
//! A [`ResponseBody`] on the intercepted route also carries the guard's [`Intercepted`] record.
//! The body rather than the response's extensions: an extension costs three allocations (the
//! map, its table, the boxed value) and about 900 instructions with their frees on every call of
//! the route, the record in the body one (BENCHMARKS.md, "The record in the body").

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;

use super::verdict::Intercepted;

pin_project! {
    /// The request body the inner service receives: the caller's body, untouched, for every
    /// request but a checked `PUT /_connector/<id>/_error`; the bytes esgate read (canonical, or
    /// as received when forwarded unchecked) for that one.
    #[derive(Debug)]
    pub struct GuardedBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    /// The response body of the guard: the inner service's, or an answer esgate wrote itself;
    /// on the intercepted route, with the record of what was done ([`ResponseBody::intercepted`]).
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
        // Boxed: one pointer on every response, the record only on the route.
        record: Option<Box<Intercepted>>,
    }
}

impl<B> ResponseBody<B> {
    fn from_kind(kind: Kind<B>) -> Self {
        ResponseBody { kind, record: None }
    }

    /// The record of what the guard did, on every response to `PUT /_connector/<id>/_error`
    /// (whoever wrote it, esgate or the inner service); `None` on every other route. Read it
    /// before the body is mapped into another type: the record stays with this one.
    pub fn intercepted(&self) -> Option<&Intercepted> {
        self.record.as_deref()
    }

    /// Takes the record out (see [`ResponseBody::intercepted`]).
    pub fn take_intercepted(&mut self) -> Option<Intercepted> {
        self.record.take().map(|record| *record)
    }

    pub(crate) fn set_intercepted(&mut self, record: Intercepted) {
        self.record = Some(Box::new(record));
    }
}

impl<B> GuardedBody<B> {
    fn from_kind(kind: Kind<B>) -> Self {
        GuardedBody { kind }
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Original { #[pin] body: B },
        Buffered { bytes: Option<Bytes> },
    }
}

impl<B> Kind<B> {
    fn buffered(bytes: Bytes) -> Self {
        Kind::Buffered {
            bytes: Some(bytes).filter(|b| !b.is_empty()),
        }
    }

    fn into_parts(self) -> Result<B, Option<Bytes>> {
        match self {
            Kind::Original { body } => Ok(body),
            Kind::Buffered { bytes } => Err(bytes),
        }
    }
}

impl<B: http_body::Body<Data = Bytes>> Kind<B> {
    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project() {
            KindProj::Original { body } => body.poll_frame(cx),
            KindProj::Buffered { bytes } => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Kind::Original { body } => body.is_end_stream(),
            Kind::Buffered { bytes } => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Kind::Original { body } => body.size_hint(),
            Kind::Buffered { bytes } => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

macro_rules! body_impl {
    ($name:ident) => {
        impl<B> $name<B> {
            /// The original body, passed on as it is.
            pub fn original(body: B) -> Self {
                Self::from_kind(Kind::Original { body })
            }

            /// A complete body held in memory (none when `bytes` is empty).
            pub fn buffered(bytes: impl Into<Bytes>) -> Self {
                Self::from_kind(Kind::buffered(bytes.into()))
            }

            /// The original body, or the buffer (`None`: empty) esgate put in its place.
            pub fn into_original(self) -> Result<B, Option<Bytes>> {
                self.kind.into_parts()
            }
        }

        impl<B: http_body::Body<Data = Bytes>> http_body::Body for $name<B> {
            type Data = Bytes;
            type Error = B::Error;

            fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
                self.project().kind.poll_frame(cx)
            }

            fn is_end_stream(&self) -> bool {
                self.kind.is_end_stream()
            }

            fn size_hint(&self) -> SizeHint {
                self.kind.size_hint()
            }
        }
    };
}

body_impl!(GuardedBody);
body_impl!(ResponseBody);

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn the_original_body_passes_as_it_is() {
        let body = GuardedBody::original(Full::new(Bytes::from_static(b"abc")));
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(3));
        let collected = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(collected.ok().as_deref(), Some(&b"abc"[..]));
    }

    #[tokio::test]
    async fn a_buffer_is_one_frame_then_the_end() {
        let mut body = ResponseBody::<Full<Bytes>>::buffered("{}");
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(2));
        assert!(!http_body::Body::is_end_stream(&body));
        let frame = body.frame().await.and_then(|f| f.ok()).and_then(|f| f.into_data().ok());
        assert_eq!(frame.as_deref(), Some(&b"{}"[..]));
        assert!(body.frame().await.is_none());
        assert!(http_body::Body::is_end_stream(&body));
        let empty = GuardedBody::<Full<Bytes>>::buffered(Bytes::new());
        assert!(http_body::Body::is_end_stream(&empty));
        assert_eq!(empty.into_original().err(), Some(None));
    }
}
