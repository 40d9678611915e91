//! Reading an intercepted body into one buffer, and letting go of the rest of one after an
//! early answer.
//!
//! [`read_body`] copies each frame into a single `Vec` (sized from `Content-Length` up front, or
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

use super::budget::{Budget, Held, Tripped};
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

/// Reads `body` whole into one buffer paid for by `budget`. `declared` is the request's
/// `Content-Length` (already checked against `limit`). `deadline`: the longest wait for a frame.
/// On error the buffer is freed before returning; `body` keeps whatever was not read.
pub(crate) async fn read_body<B>(
    body: &mut B,
    declared: Option<u64>,
    limit: usize,
    budget: &Budget,
    deadline: Option<Duration>,
) -> Result<Bytes, ReadError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let declared = declared.map(|n| usize::try_from(n).unwrap_or(usize::MAX).min(limit));
    let mut reservation = budget.reserve(declared.unwrap_or(0)).map_err(ReadError::Tripped)?;
    let mut buf = Vec::with_capacity(declared.unwrap_or(0));
    let mut timer = Deadline::new(deadline);
    loop {
        let frame = std::future::poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(Ok(frame)),
            Poll::Pending => timer.poll_expired(cx).map(|()| Err(ReadError::TimedOut)),
        })
        .await?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| ReadError::Broken(e.into()))?;
        timer.progressed();
        // Trailers carry nothing the checks read.
        let Ok(data) = frame.into_data() else { continue };
        let needed = buf.len().saturating_add(data.len());
        if needed > limit {
            return Err(ReadError::TooLarge);
        }
        if needed > buf.capacity() {
            // Doubling (within the limit) when the budget allows it, else just what is needed.
            let preferred = needed.max(buf.capacity().saturating_mul(2).max(FIRST_CHUNK).min(limit));
            let grown = match reservation.try_grow(preferred - buf.capacity()) {
                Ok(()) => preferred,
                Err(_) => {
                    reservation.grow(needed - buf.capacity()).map_err(ReadError::Tripped)?;
                    needed
                }
            };
            buf.reserve_exact(grown - buf.len());
        }
        buf.extend_from_slice(&data);
        // `data` is dropped here: the connection's read buffer is free again.
    }
    if buf.capacity() - buf.len() > 64 * 1024 {
        buf.shrink_to_fit();
    }
    Ok(Held::new(buf, reservation).into_bytes())
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
