//! Bodies streaming through the balancer, both ways, each with an inactivity timeout instead of
//! a deadline for the whole body: a slow upload that keeps moving passes, a stalled one is cut.
//!
//! A request body is kept as it streams while it is at most `limits::RETRY_BODY_BYTES_MAX`
//! long, so that an idempotent request whose replica failed before answering can be sent again
//! whole; past that nothing is kept, and memory per request stays bounded whatever the upload.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use canteen_core::limits;
use http_body_util::Either;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::Target;
use super::pick::AppProxy;
use super::pool::{Pool, Sender};

/// What the balancer's bodies fail with.
pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request body stopped before its end: the client's doing, answered 408, 413 or 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum BodyFault {
    /// Nothing came for the idle timeout.
    #[error("request body idle too long")]
    Idle,
    /// Past the app's `max_body_bytes`.
    #[error("request body larger than the app's max_body_bytes")]
    TooLarge,
    /// The client's connection failed mid-body.
    #[error("request body cut off by the client")]
    Cut,
}

/// What the balancer learns of a request body as it streams to a replica.
#[derive(Default)]
pub(super) struct Kept {
    chunks: Vec<Bytes>,
    len: usize,
    /// The whole body is in `chunks`.
    complete: bool,
    /// Too long to keep, or it had trailers: it cannot be sent again.
    spilled: bool,
    /// Why it stopped short, if it did.
    pub(super) fault: Option<BodyFault>,
}

impl Kept {
    /// The whole body, if it was kept whole.
    pub(super) fn replay(&self) -> Option<Bytes> {
        if !self.complete || self.spilled {
            return None;
        }
        let mut all = Vec::with_capacity(self.len);
        for c in &self.chunks {
            all.extend_from_slice(c);
        }
        Some(Bytes::from(all))
    }
}

/// A timer started the first time a body waits, and pushed back whenever it moves: a body that
/// arrives with its head never arms one.
struct IdleTimer {
    idle: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    fn new(idle: Duration) -> IdleTimer {
        IdleTimer { idle, sleep: None }
    }

    fn moved(&mut self) {
        if let Some(s) = self.sleep.as_mut() {
            s.as_mut().reset(Instant::now() + self.idle);
        }
    }

    /// Ready once the body has waited the whole idle time.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let idle = self.idle;
        self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle))).as_mut().poll(cx)
    }
}

/// The client's request body on its way to a replica: counted against the app's cap, timed
/// out when idle, kept while short.
pub(super) struct Upload {
    inner: Incoming,
    timer: IdleTimer,
    seen: u64,
    max: u64,
    kept: Arc<Mutex<Kept>>,
}

impl Upload {
    pub(super) fn new(inner: Incoming, idle: Duration, max: u64, kept: Arc<Mutex<Kept>>) -> Upload {
        Upload { inner, timer: IdleTimer::new(idle), seen: 0, max, kept }
    }

    fn fault(&self, fault: BodyFault) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.kept.lock().expect("kept lock").fault = Some(fault);
        Poll::Ready(Some(Err(Box::new(fault))))
    }
}

impl Body for Upload {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.timer.moved();
                let mut kept = this.kept.lock().expect("kept lock");
                match frame.data_ref() {
                    Some(data) => {
                        this.seen += data.len() as u64;
                        if this.seen > this.max {
                            drop(kept);
                            return this.fault(BodyFault::TooLarge);
                        }
                        if !kept.spilled && kept.len + data.len() <= limits::RETRY_BODY_BYTES_MAX {
                            kept.len += data.len();
                            kept.chunks.push(data.clone());
                        } else {
                            kept.spilled = true;
                            kept.chunks = Vec::new();
                        }
                    }
                    None => kept.spilled = true,
                }
                if this.inner.is_end_stream() {
                    kept.complete = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(_))) => this.fault(BodyFault::Cut),
            Poll::Ready(None) => {
                this.kept.lock().expect("kept lock").complete = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                ready!(this.timer.poll_expired(cx));
                this.fault(BodyFault::Idle)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body already in memory, sent in one frame: none, a kept request body sent again, or the
/// balancer's own short answer.
pub(super) struct Whole(pub(super) Option<Bytes>);

impl Body for Whole {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.get_mut().0.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// A request body as sent to a replica: `Left`, none at all (most `GET`s) or a kept body sent
/// again; `Right`, the client's, streaming.
pub(super) type ForwardBody = Either<Whole, Upload>;

/// A replica's response body on its way to the client. At its end the connection goes back to
/// the pool; cut short (the replica failed mid-body, or went quiet for the idle timeout), it
/// counts as the app's error and is logged, and the client's response is cut too.
pub(super) struct Relayed {
    inner: Incoming,
    timer: IdleTimer,
    back: Option<(Arc<Pool>, SocketAddr, Sender)>,
    proxy: Arc<AppProxy>,
    target: Target,
}

impl Relayed {
    pub(super) fn new(
        inner: Incoming,
        idle: Duration,
        back: (Arc<Pool>, Sender),
        proxy: Arc<AppProxy>,
        target: Target,
    ) -> Relayed {
        let (pool, sender) = back;
        let mut relayed =
            Relayed { inner, timer: IdleTimer::new(idle), back: Some((pool, target.addr, sender)), proxy, target };
        if relayed.inner.is_end_stream() {
            relayed.hand_back();
        }
        relayed
    }

    fn hand_back(&mut self) {
        if let Some((pool, addr, sender)) = self.back.take() {
            pool.put(addr, sender);
        }
    }

    fn cut(&mut self, why: &str) {
        self.back = None;
        self.proxy.errors_metric.inc();
        tracing::warn!(app = %self.proxy.app, slot = %self.target.slot, addr = %self.target.addr, "response cut mid-body: {why}");
    }
}

impl Body for Relayed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.timer.moved();
                if this.inner.is_end_stream() {
                    this.hand_back();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.cut(&e.to_string());
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                this.hand_back();
                Poll::Ready(None)
            }
            Poll::Pending => {
                ready!(this.timer.poll_expired(cx));
                this.cut(&format!("nothing for {} ms", this.timer.idle.as_millis()));
                Poll::Ready(Some(Err("response body idle too long".into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the balancer answers a client with: `Left`, its own short answer (an error, an empty
/// 101); `Right`, a replica's response, streaming.
pub(super) type ProxyBody = Either<Whole, Relayed>;
