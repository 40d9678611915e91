//! Reading along a request body that streams through, for the audit trail.
//!
//! A write of a connector's error through the index (`POST /.elastic-connectors/_update/<id>`) is
//! a plain pass-through: its bytes go to the node unchanged and unbuffered. [`ReadAlong`] wraps
//! the body, hands every frame on as it comes, and keeps a copy of at most `limit` bytes
//! (`audit.max_inspected_body`) for the audit event; past the limit it drops the copy and only
//! counts. What it saw is in the shared [`Seen`] when the body ends or is dropped, which is before
//! the node's answer for every node that reads a request before answering it.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;

/// What was read along a body.
#[derive(Debug, Default)]
pub struct Copy {
    /// The copy, when the whole body fit in the limit.
    pub bytes: Vec<u8>,
    /// The body was larger than the limit: `bytes` is empty.
    pub over_limit: bool,
    /// The body ended (all of it passed); false when it was dropped before its end.
    pub complete: bool,
}

/// The copy, shared by the body and whoever builds the audit event.
#[derive(Clone, Debug, Default)]
pub struct Seen(Arc<Mutex<Option<Copy>>>);

impl Seen {
    /// The copy, once the body has ended or was dropped.
    pub fn take(&self) -> Option<Copy> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn publish(&self, copy: Copy) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(copy);
    }
}

pin_project! {
    /// A body passed on frame by frame, with a bounded copy kept on the side.
    #[derive(Debug)]
    pub struct ReadAlong<B> {
        #[pin]
        inner: B,
        limit: usize,
        copy: Option<Copy>,
        seen: Seen,
        // The exact length the body declared, and the bytes passed so far.
        expected: Option<u64>,
        passed: u64,
    }

    impl<B> PinnedDrop for ReadAlong<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(mut copy) = this.copy.take() {
                // hyper stops polling a body once it has sent its Content-Length, without
                // asking for the end: all of it passed when the declared length did.
                copy.complete = *this.expected == Some(*this.passed);
                this.seen.publish(copy);
            }
        }
    }
}

impl<B: http_body::Body> ReadAlong<B> {
    /// Wraps `inner`, copying at most `limit` bytes into `seen`.
    pub fn new(inner: B, limit: usize, seen: Seen) -> Self {
        let expected = inner.size_hint().exact();
        ReadAlong {
            inner,
            limit,
            copy: Some(Copy::default()),
            seen,
            expected,
            passed: 0,
        }
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for ReadAlong<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    *this.passed += data.len() as u64;
                }
                if let (Some(data), Some(copy)) = (frame.data_ref(), this.copy.as_mut()) {
                    if !copy.over_limit {
                        if copy.bytes.len() + data.len() <= *this.limit {
                            copy.bytes.extend_from_slice(data);
                        } else {
                            copy.over_limit = true;
                            copy.bytes = Vec::new();
                        }
                    }
                }
            }
            None => {
                if let Some(mut copy) = this.copy.take() {
                    copy.complete = true;
                    this.seen.publish(copy);
                }
            }
            Some(Err(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn the_body_passes_whole_and_a_copy_is_kept_within_the_limit() {
        let seen = Seen::default();
        let body = ReadAlong::new(Full::new(Bytes::from_static(b"{\"doc\":{}}")), 64, seen.clone());
        let passed = body.collect().await.map(|c| c.to_bytes()).ok();
        assert_eq!(passed.as_deref(), Some(&b"{\"doc\":{}}"[..]));
        let copy = seen.take().expect("published at the end");
        assert_eq!((copy.bytes.as_slice(), copy.over_limit, copy.complete), (&b"{\"doc\":{}}"[..], false, true));
    }

    #[tokio::test]
    async fn past_the_limit_nothing_is_kept_and_everything_passes() {
        let seen = Seen::default();
        let big = Bytes::from(vec![b'x'; 1000]);
        let body = ReadAlong::new(Full::new(big.clone()), 100, seen.clone());
        assert_eq!(body.collect().await.map(|c| c.to_bytes()).ok(), Some(big));
        let copy = seen.take().expect("published");
        assert!(copy.over_limit && copy.bytes.is_empty() && copy.complete);
    }

    #[test]
    fn a_body_dropped_before_its_end_says_so() {
        let seen = Seen::default();
        drop(ReadAlong::new(Full::new(Bytes::from_static(b"{}")), 64, seen.clone()));
        assert!(seen.take().is_some_and(|c| !c.complete));
    }

    #[tokio::test]
    async fn a_body_dropped_after_its_declared_length_passed_is_whole() {
        let seen = Seen::default();
        let mut body = ReadAlong::new(Full::new(Bytes::from_static(b"{}")), 64, seen.clone());
        let frame = body.frame().await.and_then(Result::ok).and_then(|f| f.into_data().ok());
        assert_eq!(frame.as_deref(), Some(&b"{}"[..]));
        drop(body);
        assert!(seen.take().is_some_and(|c| c.complete && c.bytes == b"{}"));
    }
}
