//! Bounds on what one HTTP connection may hold: time for a request body, progress of a
//! response, and connections per client address.
//!
//! hyper bounds the request head (`header_read_timeout`, which also closes idle keep-alive
//! connections). Everything after the head is bounded here, the way reverse proxies do:
//! - [`TimedBody`] wraps every request body: after [`HttpBounds::body_idle`] the body must
//!   have arrived at [`HttpBounds::body_min_bytes_per_second`] on average, no gap between
//!   two chunks may exceed `body_idle`, and the whole body must arrive within
//!   [`HttpBounds::body_total`]. A body that breaks a bound ends with
//!   [`BodyError::TooSlow`]; the request shell answers `408` and closes the connection.
//! - [`GuardedIo`] wraps the connection's socket: a write that makes no progress for
//!   [`HttpBounds::write_stall`] fails, which closes the connection (a client that does not
//!   read its response). Upgraded WebSockets are exempt ([`ConnectionHandle::exempt`]):
//!   they keep their own queue and ping deadlines.
//! - [`PerIpSlots`] counts open connections per client address; one address may hold at
//!   most [`HttpBounds::connections_per_ip_max`].

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The time and rate bounds of one connection. Every field is a named setting
/// (`OPENCHAT_HTTP_*`), so tests can shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpBounds {
    /// The request head must arrive within this (also the idle keep-alive bound).
    pub header_read: Duration,
    /// Grace before the minimum rate applies, and the longest gap between body chunks.
    pub body_idle: Duration,
    /// Average rate a request body must keep once `body_idle` has passed.
    pub body_min_bytes_per_second: u64,
    /// The whole body must arrive within this.
    pub body_total: Duration,
    /// A response write that makes no progress for this closes the connection.
    pub write_stall: Duration,
    /// Open connections one client address may hold.
    pub connections_per_ip_max: usize,
}

impl Default for HttpBounds {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(15),
            body_idle: Duration::from_secs(10),
            body_min_bytes_per_second: 1024,
            body_total: Duration::from_secs(600),
            write_stall: Duration::from_secs(30),
            connections_per_ip_max: 256,
        }
    }
}

/// Why a request body ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body arrived too slowly ({received} bytes in {elapsed:?})")]
    TooSlow { received: u64, elapsed: Duration },
    #[error(transparent)]
    Transport(#[from] hyper::Error),
}

impl BodyError {
    /// Whether `err` (possibly wrapped by a stream adapter) is a body that was too slow.
    pub fn is_too_slow(err: &(dyn std::error::Error + 'static)) -> bool {
        let mut current = Some(err);
        while let Some(err) = current {
            if matches!(err.downcast_ref::<BodyError>(), Some(BodyError::TooSlow { .. })) {
                return true;
            }
            if let Some(io) = err.downcast_ref::<io::Error>()
                && let Some(inner) = io.get_ref()
                && Self::is_too_slow(inner)
            {
                return true;
            }
            current = err.source();
        }
        false
    }
}

/// A request body under [`HttpBounds`]' time and rate bounds.
#[derive(Debug)]
pub struct TimedBody {
    inner: Incoming,
    started: Instant,
    last_progress: Instant,
    received: u64,
    bounds: HttpBounds,
    timer: Pin<Box<Sleep>>,
    failed: bool,
}

impl TimedBody {
    pub fn new(inner: Incoming, bounds: HttpBounds) -> Self {
        let now = Instant::now();
        Self {
            inner,
            started: now,
            last_progress: now,
            received: 0,
            bounds,
            timer: Box::pin(tokio::time::sleep_until(now + bounds.body_idle)),
            failed: false,
        }
    }

    /// The moment the body becomes too slow unless more arrives.
    fn deadline(&self) -> Instant {
        let rate = self.bounds.body_min_bytes_per_second.max(1);
        let earned = Duration::from_millis(self.received.saturating_mul(1000) / rate);
        let by_rate = self.started + self.bounds.body_idle + earned;
        let by_gap = self.last_progress + self.bounds.body_idle;
        let by_total = self.started + self.bounds.body_total;
        by_rate.min(by_gap).min(by_total)
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    this.last_progress = Instant::now();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(BodyError::Transport(err)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = this.deadline();
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.failed = true;
                        Poll::Ready(Some(Err(BodyError::TooSlow {
                            received: this.received,
                            elapsed: this.started.elapsed(),
                        })))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Lets a handler exempt its connection from the write-stall bound (WebSocket upgrades).
#[derive(Debug, Clone, Default)]
pub struct ConnectionHandle {
    exempt: Arc<AtomicBool>,
}

impl ConnectionHandle {
    /// From here on the connection is a WebSocket with its own deadlines.
    pub fn exempt(&self) {
        self.exempt.store(true, Ordering::Relaxed);
    }

    pub fn is_exempt(&self) -> bool {
        self.exempt.load(Ordering::Relaxed)
    }
}

/// A connection's socket with the write-stall bound.
#[derive(Debug)]
pub struct GuardedIo<I> {
    inner: I,
    write_stall: Duration,
    handle: ConnectionHandle,
    /// Armed while a write waits for the socket; cleared by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<I> GuardedIo<I> {
    pub fn new(inner: I, write_stall: Duration) -> (Self, ConnectionHandle) {
        let handle = ConnectionHandle::default();
        let io = Self {
            inner,
            write_stall,
            handle: handle.clone(),
            stalled: None,
        };
        (io, handle)
    }

    /// Passes a write's outcome through, failing it once the socket has taken nothing for
    /// `write_stall`.
    fn check<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending if !self.handle.exempt.load(Ordering::Relaxed) => {
                let stall = self.write_stall;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client read nothing for {stall:?}"),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            Poll::Pending => Poll::Pending,
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for GuardedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for GuardedIo<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, polled)
    }
}

/// Open connections per client address.
#[derive(Debug, Clone)]
pub struct PerIpSlots {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One open connection of an address; released on drop.
#[derive(Debug)]
pub struct IpSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerIpSlots {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::default(),
        }
    }

    /// A slot for a new connection from `ip`, or `None` when it already holds the maximum.
    pub fn try_acquire(&self, ip: IpAddr) -> Option<IpSlot> {
        let ip = ip.to_canonical();
        // A poisoned map only means another connection panicked while counting; the counts
        // are still plain integers.
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            ip,
            open: self.open.clone(),
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_holds_at_most_its_slots_and_gets_them_back() {
        let slots = PerIpSlots::new(2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = slots.try_acquire(ip).unwrap();
        let _b = slots.try_acquire(ip).unwrap();
        assert!(slots.try_acquire(ip).is_none());
        // Another address is not affected, and an IPv4-mapped IPv6 address is the same client.
        assert!(slots.try_acquire("127.0.0.2".parse().unwrap()).is_some());
        assert!(slots.try_acquire("::ffff:127.0.0.1".parse().unwrap()).is_none());
        drop(a);
        assert!(slots.try_acquire(ip).is_some());
    }

    /// Writes into a pipe nobody reads until the write is refused or `patience` has passed
    /// on the (paused) clock; returns whether it was refused.
    async fn stalls_out(exempt: bool, patience: Duration) -> bool {
        use tokio::io::AsyncWriteExt;
        let (near, _far) = tokio::io::duplex(64);
        let (mut io, handle) = GuardedIo::new(near, Duration::from_secs(2));
        if exempt {
            handle.exempt();
        }
        let chunk = [0u8; 64];
        let writing = async {
            loop {
                if let Err(err) = io.write_all(&chunk).await {
                    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
                    return true;
                }
            }
        };
        tokio::time::timeout(patience, writing).await.unwrap_or(false)
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_fails_after_the_stall_bound_unless_exempt() {
        assert!(stalls_out(false, Duration::from_secs(3)).await);
        assert!(
            !stalls_out(true, Duration::from_secs(60)).await,
            "upgraded sockets keep their own bounds"
        );
    }

    #[test]
    fn a_websocket_upgrade_exempts_its_connection() {
        let handle = ConnectionHandle::default();
        let mut request = http::Request::builder()
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap();
        request.extensions_mut().insert(handle.clone());
        assert!(!handle.is_exempt());
        assert!(crate::websocket::handshake(&mut request).is_ok());
        assert!(handle.is_exempt());
    }

    #[test]
    fn too_slow_is_found_through_io_wrappers() {
        let slow = BodyError::TooSlow {
            received: 1,
            elapsed: Duration::from_secs(11),
        };
        let wrapped = io::Error::other(slow);
        assert!(BodyError::is_too_slow(&wrapped));
        assert!(!BodyError::is_too_slow(&io::Error::other("reset")));
    }
}
