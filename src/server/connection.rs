//! Deadlines of one client connection, so slow, idle or non-reading clients cannot hold a
//! connection slot for long.
//!
//! - A request's head and body must arrive within the request timeout, counted from the
//!   accept or from the end of the previous response on the connection. A head that is
//!   late closes the connection (the wrapped stream's read fails); a body that is late gets
//!   a 408 `request_timeout` and then the connection closes (`respond` in `src/http.rs`).
//! - A response write that makes no progress for the request timeout closes the
//!   connection. Only progress counts, never the total time, so a long response (or a
//!   stream of events) that a client keeps reading is never cut.
//! - While a handler runs, nothing is read and no read deadline applies: hyper runs with
//!   half-closed connections allowed, so a client that hangs up after sending its request
//!   does not cancel the handler between an engine call and the recording of its outcome.
//!
//! - A response that outlives its request (an event stream) watches the read side itself
//!   ([`HangUp`]), since hyper reads nothing meanwhile: a client that closes or half-closes
//!   its connection ends the stream at once, not only when a later write fails.
//!
//! [`ConnectionClock`] is shared by the [`TimedStream`] around the socket and by the
//! request handler; the [`ClockedBody`] of each response restarts the budget when hyper is
//! done with it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Nothing of the next request has arrived yet.
const WAITING: u8 = 0;
/// Part of the next request's head has arrived.
const ARRIVING: u8 = 1;
/// A handler runs or its response is being produced; no read deadline.
const HANDLING: u8 = 2;

/// Counts a connection closed (or answered 408) because a deadline passed; `reason` is
/// `idle`, `head`, `body` or `write`.
pub fn count_timeout(reason: &'static str) {
    metrics::counter!("http_connections_timed_out_total", "reason" => reason).increment(1);
}

/// Where one connection stands against its deadlines.
#[derive(Debug)]
pub struct ConnectionClock {
    origin: Instant,
    request_timeout: Duration,
    /// Nanoseconds from `origin` to the start of the current request's budget.
    budget_start_nanos: AtomicU64,
    phase: AtomicU8,
}

impl ConnectionClock {
    /// A clock for a connection accepted now.
    pub fn new(request_timeout: Duration) -> Arc<Self> {
        let origin = Instant::now();
        Arc::new(Self { origin, request_timeout, budget_start_nanos: AtomicU64::new(0), phase: AtomicU8::new(WAITING) })
    }

    fn budget_start(&self) -> Instant {
        self.origin + Duration::from_nanos(self.budget_start_nanos.load(Ordering::Relaxed))
    }

    fn restart_budget(&self) {
        let nanos = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.budget_start_nanos.store(nanos, Ordering::Relaxed);
    }

    /// A request's head has arrived and its handler starts: reads stop having a deadline,
    /// and the returned instant is the one by which its body must have arrived.
    pub fn begin_request(&self) -> Instant {
        self.phase.store(HANDLING, Ordering::Relaxed);
        self.budget_start() + self.request_timeout
    }

    /// hyper is done with a response body: the next request's budget starts.
    fn response_finished(&self) {
        self.restart_budget();
        self.phase.store(WAITING, Ordering::Relaxed);
    }

    /// Bytes arrived: the next request's head has begun.
    fn note_read(&self) {
        let _ = self.phase.compare_exchange(WAITING, ARRIVING, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// A write made progress. Between requests that is the previous response still going
    /// out, so the next request's budget starts after it.
    fn note_write_progress(&self) {
        if self.phase.load(Ordering::Relaxed) != HANDLING {
            self.restart_budget();
        }
    }

    /// By when the next request's head must have arrived, and the timeout reason if it does not.
    fn read_deadline(&self) -> Option<(Instant, &'static str)> {
        match self.phase.load(Ordering::Relaxed) {
            WAITING => Some((self.budget_start() + self.request_timeout, "idle")),
            ARRIVING => Some((self.budget_start() + self.request_timeout, "head")),
            _ => None,
        }
    }
}

/// A response body that restarts the connection's request budget when hyper drops it,
/// which it does once the body is fully handed to the connection (or the connection ends).
pub struct ClockedBody<B = Full<Bytes>> {
    inner: B,
    clock: Arc<ConnectionClock>,
}

impl<B> ClockedBody<B> {
    /// Wraps a response body of the connection `clock` belongs to.
    pub fn new(inner: B, clock: Arc<ConnectionClock>) -> Self {
        Self { inner, clock }
    }
}

impl<B> Drop for ClockedBody<B> {
    fn drop(&mut self) {
        self.clock.response_finished();
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for ClockedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reads of a hang-up watch in one poll that find bytes (which nobody will answer: an event
/// stream closes its connection) before it yields to other tasks.
const HANG_UP_READS_PER_POLL: usize = 16;

/// Waits for the client of a connection to hang up (close or half-close it), for a
/// response that outlives its request while hyper reads nothing (an event stream, whose
/// `Connection: close` means no later request is read on the connection). It reads the
/// connection's read side itself, so it must only be used while hyper does not read it.
#[derive(Clone)]
pub struct HangUp(Arc<PollHangUp>);

/// Polls a connection's read side for the client's hang-up.
type PollHangUp = dyn Fn(&mut Context<'_>) -> Poll<()> + Send + Sync;

impl HangUp {
    /// Completes when the client has hung up (end of file or an error on the read side).
    pub async fn wait(&self) {
        std::future::poll_fn(|cx| (self.0)(cx)).await;
    }
}

/// A socket whose reads fail once the next request's head is late and whose writes fail
/// once they made no progress for the request timeout; hyper then closes the connection.
/// The socket is shared with the connection's [`HangUp`] watch (never polled by both at once).
pub struct TimedStream<S> {
    inner: Arc<Mutex<S>>,
    clock: Arc<ConnectionClock>,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
    write_stalled: bool,
    /// A deadline passed; every later call fails at once (and is not counted again).
    timed_out: bool,
}

impl<S> TimedStream<S> {
    /// Wraps an accepted connection.
    pub fn new(inner: S, clock: Arc<ConnectionClock>) -> Self {
        let deadline = clock.budget_start() + clock.request_timeout;
        let read_timer = Box::pin(tokio::time::sleep_until(deadline));
        let write_timer = Box::pin(tokio::time::sleep_until(deadline));
        Self {
            inner: Arc::new(Mutex::new(inner)),
            clock,
            read_timer,
            write_timer,
            write_stalled: false,
            timed_out: false,
        }
    }

    /// The hang-up watch of this connection.
    pub fn hang_up(&self) -> HangUp
    where
        S: AsyncRead + Unpin + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        HangUp(Arc::new(move |cx| {
            let mut socket = inner.lock().expect("not poisoned");
            let mut scratch = [0u8; 512];
            for _ in 0..HANG_UP_READS_PER_POLL {
                let mut buffer = ReadBuf::new(&mut scratch);
                match Pin::new(&mut *socket).poll_read(cx, &mut buffer) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) if buffer.filled().is_empty() => return Poll::Ready(()),
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                }
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }))
    }

    /// Fails the call that found a deadline passed; counts it the first time only.
    fn time_out(&mut self, reason: &'static str) -> io::Error {
        if !self.timed_out {
            self.timed_out = true;
            count_timeout(reason);
        }
        io::Error::new(io::ErrorKind::TimedOut, "a connection deadline passed")
    }

    /// Called when a read is pending: fails it once the head is late.
    fn poll_read_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.timed_out {
            return Poll::Ready(Err(self.time_out("idle")));
        }
        // A stalled write has its own deadline; the read side waits for it.
        let Some((deadline, reason)) = self.clock.read_deadline().filter(|_| !self.write_stalled) else {
            return Poll::Pending;
        };
        if self.read_timer.deadline() != deadline {
            self.read_timer.as_mut().reset(deadline);
        }
        ready!(self.read_timer.as_mut().poll(cx));
        Poll::Ready(Err(self.time_out(reason)))
    }

    /// Watches a write-side poll: progress resets the stall, a stall longer than the
    /// request timeout fails it.
    fn watch_write<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>, wrote: bool) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.write_stalled = false;
            if wrote {
                self.clock.note_write_progress();
            }
            return poll;
        }
        if !self.write_stalled {
            self.write_stalled = true;
            self.write_timer.as_mut().reset(Instant::now() + self.clock.request_timeout);
        }
        if !self.timed_out {
            ready!(self.write_timer.as_mut().poll(cx));
        }
        Poll::Ready(Err(self.time_out("write")))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let filled = buf.filled().len();
        let poll = Pin::new(&mut *this.inner.lock().expect("not poisoned")).poll_read(cx, buf);
        match poll {
            Poll::Ready(result) => {
                if buf.filled().len() > filled {
                    this.clock.note_read();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_read_deadline(cx),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut *this.inner.lock().expect("not poisoned")).poll_write(cx, buf);
        this.watch_write(cx, poll, true)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut *this.inner.lock().expect("not poisoned")).poll_write_vectored(cx, buffers);
        this.watch_write(cx, poll, true)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.lock().expect("not poisoned").is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut *this.inner.lock().expect("not poisoned")).poll_flush(cx);
        this.watch_write(cx, poll, false)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut *this.inner.lock().expect("not poisoned")).poll_shutdown(cx);
        this.watch_write(cx, poll, false)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn an_idle_connection_times_out_and_a_handled_one_does_not() {
        let (_client, server) = duplex(1024);
        let clock = ConnectionClock::new(TIMEOUT);
        let mut stream = TimedStream::new(server, clock.clone());
        let error = stream.read(&mut [0u8; 16]).await.expect_err("an idle read times out");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        clock.begin_request();
        assert!(stream.read(&mut [0u8; 16]).await.is_err(), "a timed-out connection stays failed");

        let (_client, server) = duplex(1024);
        let clock = ConnectionClock::new(TIMEOUT);
        clock.begin_request();
        let mut stream = TimedStream::new(server, clock);
        let read = tokio::time::timeout(TIMEOUT * 2, stream.read(&mut [0u8; 16])).await;
        assert!(read.is_err(), "no read deadline while a handler runs");
    }

    #[tokio::test]
    async fn the_hang_up_watch_sees_a_closed_or_half_closed_client() {
        let (mut client, server) = duplex(1024);
        let stream = TimedStream::new(server, ConnectionClock::new(TIMEOUT));
        let hang_up = stream.hang_up();
        client.write_all(b"ignored").await.unwrap();
        assert!(tokio::time::timeout(TIMEOUT, hang_up.wait()).await.is_err(), "bytes are not a hang-up");
        client.shutdown().await.unwrap();
        tokio::time::timeout(TIMEOUT, hang_up.wait()).await.expect("a half-close is seen at once");
        let (client, server) = duplex(1024);
        let stream = TimedStream::new(server, ConnectionClock::new(TIMEOUT));
        drop(client);
        tokio::time::timeout(TIMEOUT, stream.hang_up().wait()).await.expect("a close is seen at once");
    }

    #[tokio::test]
    async fn the_budget_restarts_after_each_response() {
        let (mut client, server) = duplex(1024);
        let clock = ConnectionClock::new(TIMEOUT);
        let mut stream = TimedStream::new(server, clock.clone());
        tokio::time::sleep(TIMEOUT / 2).await;
        clock.begin_request();
        tokio::time::sleep(TIMEOUT).await;
        drop(ClockedBody::new(Full::new(Bytes::new()), clock.clone()));
        tokio::time::sleep(TIMEOUT / 2).await;
        client.write_all(b"GET").await.unwrap();
        assert_eq!(stream.read(&mut [0u8; 16]).await.unwrap(), 3, "within the new budget");
        let error = stream.read(&mut [0u8; 16]).await.expect_err("the rest of the head is late");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_write_without_progress_times_out_but_a_slow_steady_one_does_not() {
        let (mut client, server) = duplex(64);
        let clock = ConnectionClock::new(TIMEOUT);
        clock.begin_request();
        let mut stream = TimedStream::new(server, clock);
        let reader = tokio::spawn(async move {
            // Reads 64 bytes every half timeout: slow, but never stalled for a whole timeout.
            let mut buffer = [0u8; 64];
            for _ in 0..6 {
                tokio::time::sleep(TIMEOUT / 2).await;
                client.read_exact(&mut buffer).await.unwrap();
            }
            client
        });
        stream.write_all(&[7u8; 64 * 7]).await.expect("a steadily read response is never cut");
        let _client = reader.await.unwrap();
        let error = stream.write_all(&[7u8; 64]).await.expect_err("nobody reads any more");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
