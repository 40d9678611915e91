//! Reading an intercepted body into one buffer, and letting go of the rest of one after an
//! early answer.
//!
//! [`BodyRead`] copies each frame into a single `Vec` (sized from `Content-Length` up front, or
//! grown as frames come) and drops the frame at once: a frame's `Bytes` pins the connection's
//! read buffer, so keeping frames would cost a read buffer per small read, and a trickle of
//! bytes would hold far more memory than it sent. The buffer's bytes are reserved in the
//! [`Budget`] before they are allocated. A body that makes no progress for the body deadline
//! is abandoned (408).
//!
//! [`linger`] is nginx's lingering close: after an answer sent before the body was all read,
//! the rest is read and dropped for a bounded time and amount, so that a client still writing
//! its body reads the answer instead of a connection reset.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

use super::budget::{Budget, Held, Reservation, Tripped};
use crate::BoxError;

/// How long an unread body is drained after an early answer.
pub(super) const LINGER_TIME: Duration = Duration::from_secs(5);
/// How much of an unread body is drained after an early answer.
pub(super) const LINGER_BYTES: u64 = 16 * 1024 * 1024;

/// The first allocation of a body without `Content-Length`.
const FIRST_CHUNK: usize = 16 * 1024;

/// Why a body was not read whole.
#[derive(Debug)]
pub(super) enum ReadError {
    /// Over the size limit.
    TooLarge,
    /// No frame for the body deadline.
    TimedOut,
    /// The budget over all bodies would be passed.
    Tripped(Tripped),
    /// The connection failed or the framing was broken.
    Broken(BoxError),
}

/// Reads a body whole into one buffer paid for by a [`Budget`]: a future by hand, so that the
/// guard's own future can hold it by value and be named.
pub(crate) struct BodyRead<B> {
    body: B,
    buf: Vec<u8>,
    /// Pays for `buf`; `None` once the read has ended.
    reservation: Option<Reservation>,
    limit: usize,
    timer: Deadline,
}

impl<B> BodyRead<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// A read of `body`. `declared` is the request's `Content-Length` (already checked against
    /// `limit`), reserved at once; `deadline`: the longest wait for a frame. On a refused
    /// reservation the body comes back unread.
    pub(crate) fn new(
        body: B,
        declared: Option<u64>,
        limit: usize,
        budget: &Budget,
        deadline: Option<Duration>,
    ) -> Result<Self, (Tripped, B)> {
        let declared = declared.map(|n| usize::try_from(n).unwrap_or(usize::MAX).min(limit));
        let reservation = match budget.reserve(declared.unwrap_or(0)) {
            Ok(reservation) => reservation,
            Err(trip) => return Err((trip, body)),
        };
        Ok(BodyRead {
            body,
            buf: Vec::with_capacity(declared.unwrap_or(0)),
            reservation: Some(reservation),
            limit,
            timer: Deadline::new(deadline),
        })
    }

    /// The body, with whatever was not read of it.
    pub(crate) fn into_body(self) -> B {
        self.body
    }

    /// Ready with the whole body, or why it was not read whole (the buffer is freed then).
    /// Not to be polled again once ready.
    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, ReadError>> {
        let result = loop {
            let frame = match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(frame) => frame,
                Poll::Pending => match self.timer.poll_expired(cx) {
                    Poll::Ready(()) => break Err(ReadError::TimedOut),
                    Poll::Pending => return Poll::Pending,
                },
            };
            let Some(frame) = frame else {
                break Ok(());
            };
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => break Err(ReadError::Broken(e.into())),
            };
            self.timer.progressed();
            // Trailers carry nothing the checks read.
            let Ok(data) = frame.into_data() else { continue };
            if let Err(e) = self.append(&data) {
                break Err(e);
            }
            // `data` is dropped here: the connection's read buffer is free again.
        };
        let buf = std::mem::take(&mut self.buf);
        let reservation = self.reservation.take();
        Poll::Ready(match (result, reservation) {
            (Ok(()), Some(reservation)) => {
                let mut buf = buf;
                if buf.capacity() - buf.len() > 64 * 1024 {
                    buf.shrink_to_fit();
                }
                Ok(Held::new(buf, reservation).into_bytes())
            }
            (Ok(()), None) => Err(ReadError::Broken("the body was read already".into())),
            (Err(e), _) => Err(e),
        })
    }

    /// Appends a frame's data, growing the buffer (and its reservation) within the limit.
    fn append(&mut self, data: &[u8]) -> Result<(), ReadError> {
        let buf = &mut self.buf;
        let needed = buf.len().saturating_add(data.len());
        if needed > self.limit {
            return Err(ReadError::TooLarge);
        }
        if needed > buf.capacity() {
            let Some(reservation) = self.reservation.as_mut() else {
                return Err(ReadError::Broken("the body was read already".into()));
            };
            // Doubling (within the limit) when the budget allows it, else just what is needed.
            let preferred = needed.max(buf.capacity().saturating_mul(2).max(FIRST_CHUNK).min(self.limit));
            let grown = match reservation.try_grow(preferred - buf.capacity()) {
                Ok(()) => preferred,
                Err(_) => {
                    reservation.grow(needed - buf.capacity()).map_err(ReadError::Tripped)?;
                    needed
                }
            };
            buf.reserve_exact(grown - buf.len());
        }
        buf.extend_from_slice(data);
        Ok(())
    }
}

/// The body deadline: at most this long without a frame. Its timer is started only when a frame
/// has to be waited for: a small body usually arrives with its request head, and is then read
/// without touching the runtime's timers at all.
struct Deadline {
    limit: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A frame came since the timer was last set.
    progressed: bool,
}

impl Deadline {
    fn new(limit: Option<Duration>) -> Self {
        Deadline {
            limit,
            sleep: None,
            progressed: false,
        }
    }

    /// A frame came: the wait for the next one starts now.
    fn progressed(&mut self) {
        self.progressed = true;
    }

    /// Ready once the wait that began with the last frame is over the limit; called when the
    /// body has nothing ready.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(limit) = self.limit else {
            return Poll::Pending;
        };
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if std::mem::take(&mut self.progressed) {
                    sleep.as_mut().reset(tokio::time::Instant::now() + limit);
                }
                sleep
            }
            None => {
                self.progressed = false;
                self.sleep.insert(Box::pin(tokio::time::sleep(limit)))
            }
        };
        sleep.as_mut().poll(cx)
    }
}

/// Reads and drops what is left of `body` in a task of its own, for at most [`LINGER_TIME`] and
/// [`LINGER_BYTES`], then drops it (and hyper closes the connection if the body was not all
/// read). Nothing is done for a body already read, or outside a tokio runtime.
pub(crate) fn linger<B>(body: B)
where
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
{
    if body.is_end_stream() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut body = body;
        let mut seen = 0u64;
        let drain = async {
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    seen += data.len() as u64;
                    if seen > LINGER_BYTES {
                        break;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, drain).await;
        tracing::debug!(bytes = seen, "unread request body drained after an early answer");
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Body;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::sync::mpsc;

    /// A body fed by a channel: each message a data frame; closed when the sender is dropped.
    struct Fed(mpsc::Receiver<Bytes>);

    impl http_body::Body for Fed {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
        }
    }

    /// The whole read as one future.
    async fn read_body(
        body: &mut Body,
        declared: Option<u64>,
        limit: usize,
        budget: &Budget,
        deadline: Option<Duration>,
    ) -> Result<Bytes, ReadError> {
        let mut read =
            BodyRead::new(body, declared, limit, budget, deadline).map_err(|(trip, _)| ReadError::Tripped(trip))?;
        std::future::poll_fn(|cx| read.poll_read(cx)).await
    }

    fn chunks(parts: &[&'static [u8]]) -> Body {
        let (tx, rx) = mpsc::channel(parts.len().max(1));
        for p in parts {
            tx.try_send(Bytes::from_static(p)).expect("room");
        }
        Body::boxed(Fed(rx))
    }

    #[tokio::test]
    async fn frames_are_copied_into_one_buffer_paid_for_by_the_budget() {
        let budget = Budget::unshared(1 << 20);
        let mut body = chunks(&[b"{\"error\"", b":\"x\"", b"}"]);
        let bytes = read_body(&mut body, None, 1024, &budget, None).await.expect("read");
        assert_eq!(&bytes[..], br#"{"error":"x"}"#);
        assert!(budget.held() >= bytes.len() as u64);
        drop(bytes);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn limits_and_budget() {
        let budget = Budget::unshared(1 << 20);
        let mut body = chunks(&[b"12345", b"67890"]);
        assert!(matches!(
            read_body(&mut body, None, 8, &budget, None).await,
            Err(ReadError::TooLarge)
        ));
        assert_eq!(budget.held(), 0, "freed on error");
        let small = Budget::unshared(4);
        let mut body = chunks(&[b"12345"]);
        match read_body(&mut body, None, 100, &small, None).await {
            Err(ReadError::Tripped(t)) => assert_eq!(t, Tripped { wanted: 5, limit: 4 }),
            other => panic!("expected a trip, got {other:?}"),
        }
        let mut body = chunks(&[b"12345"]);
        assert!(matches!(
            read_body(&mut body, Some(5), 100, &small, None).await,
            Err(ReadError::Tripped(_))
        ));
        assert_eq!(small.held(), 0);
    }

    #[tokio::test]
    async fn a_body_without_progress_times_out() {
        let budget = Budget::unshared(1 << 20);
        let (tx, rx) = mpsc::channel(4);
        let mut body = Body::boxed(Fed(rx));
        let sender = tokio::spawn(async move {
            for _ in 0..5 {
                let _ = tx.send(Bytes::from_static(b"x")).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Then silence, with the body still open.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        let started = tokio::time::Instant::now();
        let result = read_body(&mut body, Some(100), 100, &budget, Some(Duration::from_millis(400))).await;
        assert!(matches!(result, Err(ReadError::TimedOut)));
        // Each frame reset the deadline: 5 frames 100 ms apart, then 400 ms of silence.
        assert!(started.elapsed() >= Duration::from_millis(800));
        assert_eq!(budget.held(), 0);
        sender.abort();
    }
}
