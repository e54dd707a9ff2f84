//! The accept loop of every HTTP endpoint (the API and the worker's metrics) and its
//! limits: a leaf below the fronts, so that a process serving anything over HTTP needs
//! no front to do it.

pub mod connection;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use connection::{ClockedBody, ConnectionClock, HangUp, TimedStream};

/// Server limits, passed explicitly by the caller.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    /// Open connections at most; more wait in the listen backlog.
    pub connections_max: usize,
    /// Time a client has to send a request's head and body, from the accept or the end of
    /// the previous response; also the longest a response write may make no progress.
    pub request_timeout: Duration,
    /// Time in-flight requests get to finish on shutdown.
    pub shutdown_timeout: Duration,
}

/// A connection's permit of the `connections_max` bound. A long-lived stream gives it
/// back early (it is bounded by its own limit), so streams never take buyers' slots, and
/// watches for its client's hang-up with [`ConnectionSlot::hang_up`].
#[derive(Clone)]
pub struct ConnectionSlot {
    permit: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
    hang_up: HangUp,
}

impl ConnectionSlot {
    /// Gives the permit back; the connection no longer counts against the bound.
    pub fn release(&self) {
        self.permit.lock().expect("not poisoned").take();
    }

    /// The connection's hang-up watch, for a response that outlives its request.
    pub fn hang_up(&self) -> HangUp {
        self.hang_up.clone()
    }
}

/// The accept loop of every HTTP endpoint (the API and the worker's metrics): at most
/// `options.connections_max` connections, each under the deadlines of [`connection`];
/// `service` builds a connection's service from the peer, the connection's clock and its
/// [`ConnectionSlot`] (the permit is held until the service is dropped or releases it), and
/// must call [`ConnectionClock::begin_request`] per request and answer with
/// [`ClockedBody`]. Accepts until `shutdown` fires, then lets in-flight requests finish
/// under `options.shutdown_timeout`.
pub async fn accept_loop<S, F, B>(
    listener: TcpListener,
    options: ServerOptions,
    shutdown: CancellationToken,
    mut service: F,
) where
    F: FnMut(SocketAddr, Arc<ConnectionClock>, ConnectionSlot) -> S,
    S: HttpService<Incoming, ResBody = ClockedBody<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let slots = Arc::new(Semaphore::new(options.connections_max));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    // `connection` enforces the request timeout (head and body together, and idle
    // keep-alive connections) in place of hyper's header timeout. Half-closed connections
    // are allowed so that a client hanging up never cancels a handler halfway.
    builder.header_read_timeout(None).half_close(true).keep_alive(true);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let clock = ConnectionClock::new(options.request_timeout);
        let stream = TimedStream::new(stream, clock.clone());
        let slot = ConnectionSlot { permit: Arc::new(Mutex::new(Some(permit))), hang_up: stream.hang_up() };
        let service = service(peer, clock, slot);
        let stream = TokioIo::new(stream);
        let connection = graceful.watch(builder.serve_connection(stream, service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("stopped accepting; draining in-flight requests");
    if tokio::time::timeout(options.shutdown_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!("in-flight requests did not finish before the shutdown deadline");
    }
}
