//! Availability streams, whatever carries them (server-sent events, a gRPC stream).
//!
//! Each stream subscribes to its event's watcher ([`crate::availability::watcher`]), so an
//! open stream costs no Redis work of its own. A [`Watch`] yields the current state at
//! once, then the latest state after each change (at most one message per
//! [`MESSAGE_INTERVAL_MIN`]; whatever changed in between is coalesced), and a keep-alive
//! whenever nothing was sent for the keep-alive interval. Every front's streams count
//! against one `STREAMS_MAX` and one `STREAMS_PER_CLIENT_MAX`; shutdown ends them all.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{Service, ServiceError};
use crate::availability::watcher::{Snapshot, Subscription, WatchError};
use crate::client_address::{ClientSlot, ClientSlots};
use crate::ids::EventId;

/// Shortest time between two messages of one stream.
pub const MESSAGE_INTERVAL_MIN: Duration = Duration::from_millis(100);

/// Seconds a client refused for `STREAMS_MAX` or `STREAMS_PER_CLIENT_MAX` is asked to wait.
const STREAMS_FULL_RETRY_AFTER_SECONDS: u64 = 5;

/// Stream settings, passed explicitly by the caller.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    /// Open streams at most; more are refused as unavailable.
    pub streams_max: usize,
    /// Open streams of one client address at most; more are refused as rate limited.
    pub streams_per_client_max: usize,
    /// Longest silence before a keep-alive.
    pub keep_alive_interval: Duration,
}

/// The open streams of this process: their bound, their settings and their metrics.
pub struct Streams {
    slots: Arc<Semaphore>,
    per_client: ClientSlots,
    keep_alive_interval: Duration,
    shutdown: CancellationToken,
    metrics: StreamMetrics,
}

#[derive(Clone)]
struct StreamMetrics {
    open: Gauge,
    messages: Counter,
    keep_alives: Counter,
    delivery_delay: Histogram,
}

impl Streams {
    /// At most `options.streams_max` streams; all of them end when `shutdown` fires.
    pub fn new(options: StreamOptions, shutdown: CancellationToken) -> Self {
        let metrics = StreamMetrics {
            open: metrics::gauge!("availability_streams_open"),
            messages: metrics::counter!("availability_stream_messages_total", "kind" => "availability"),
            keep_alives: metrics::counter!("availability_stream_messages_total", "kind" => "keep_alive"),
            delivery_delay: metrics::histogram!("availability_stream_delivery_delay_seconds"),
        };
        Self {
            slots: Arc::new(Semaphore::new(options.streams_max)),
            per_client: ClientSlots::new(options.streams_per_client_max),
            keep_alive_interval: options.keep_alive_interval,
            shutdown,
            metrics,
        }
    }
}

/// What a stream sends next.
pub enum Next {
    /// The latest state.
    Snapshot(Arc<Snapshot>),
    /// Nothing changed for the keep-alive interval.
    KeepAlive,
    /// The stream ends: shutdown, the client left, or the watcher stopped.
    End,
}

/// One open stream; dropping it (client gone, shutdown) frees its slots.
pub struct Watch {
    subscription: Subscription,
    sent_at: Instant,
    first: bool,
    keep_alive_interval: Duration,
    shutdown: CancellationToken,
    metrics: StreamMetrics,
    _slots: (OwnedSemaphorePermit, ClientSlot),
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.metrics.open.decrement(1.0);
    }
}

impl Service {
    /// Opens a stream of `event`'s availability for a client at `client`: refused as
    /// unavailable past `STREAMS_MAX`, as rate limited past `STREAMS_PER_CLIENT_MAX`.
    pub async fn watch(&self, event: EventId, client: IpAddr) -> Result<Watch, ServiceError> {
        let streams = &self.streams;
        let slot = streams.slots.clone().try_acquire_owned().map_err(|_| ServiceError::Shed {
            retry_after_seconds: STREAMS_FULL_RETRY_AFTER_SECONDS,
            reason: "streams_max",
        })?;
        let client_slot = streams
            .per_client
            .try_acquire(client)
            .ok_or(ServiceError::RateLimited { retry_after_seconds: STREAMS_FULL_RETRY_AFTER_SECONDS })?;
        let subscription = self.availability.subscribe(event).await.map_err(|error| match error {
            WatchError::EventNotFound => ServiceError::NotFound("no such event"),
            error => ServiceError::unavailable(error),
        })?;
        streams.metrics.open.increment(1.0);
        Ok(Watch {
            subscription,
            sent_at: Instant::now(),
            first: true,
            keep_alive_interval: streams.keep_alive_interval,
            shutdown: streams.shutdown.clone(),
            metrics: streams.metrics.clone(),
            _slots: (slot, client_slot),
        })
    }
}

/// What woke an idle stream.
enum Wake {
    End,
    Changed,
    Silence,
}

impl Watch {
    /// What to send next: the current state at once the first time, then the latest state
    /// after a change (no sooner than [`MESSAGE_INTERVAL_MIN`] after the previous message),
    /// or a keep-alive after a silence. `hang_up` completes when the client has left.
    pub async fn next(&mut self, hang_up: impl Future<Output = ()>) -> Next {
        if self.first {
            self.first = false;
            let snapshot = self.subscription.current();
            return self.message(snapshot);
        }
        tokio::pin!(hang_up);
        let wake = tokio::select! {
            _ = self.shutdown.cancelled() => Wake::End,
            () = &mut hang_up => Wake::End,
            changed = self.subscription.changed() => if changed.is_some() { Wake::Changed } else { Wake::End },
            _ = tokio::time::sleep(self.keep_alive_interval) => Wake::Silence,
        };
        match wake {
            Wake::End => Next::End,
            Wake::Silence => {
                self.metrics.keep_alives.increment(1);
                Next::KeepAlive
            }
            Wake::Changed => {
                // Changes that arrive while this waits are coalesced: `current` is the latest.
                let earliest = self.sent_at + MESSAGE_INTERVAL_MIN;
                tokio::select! {
                    _ = self.shutdown.cancelled() => return Next::End,
                    () = &mut hang_up => return Next::End,
                    _ = tokio::time::sleep_until(earliest.into()) => {}
                }
                let snapshot = self.subscription.current();
                self.metrics.delivery_delay.record(snapshot.published_at.elapsed().as_secs_f64());
                self.message(snapshot)
            }
        }
    }

    fn message(&mut self, snapshot: Arc<Snapshot>) -> Next {
        self.sent_at = Instant::now();
        self.metrics.messages.increment(1);
        Next::Snapshot(snapshot)
    }
}
