//! One watcher per watched event per process.
//!
//! The first subscriber of an event starts its watcher: a task that reads the event's
//! stock hashes with one pipelined `HMGET` every `poll_interval` (and the event's
//! categories from Postgres every [`EVENT_REFRESH_INTERVAL`]) and publishes each change
//! as a [`Snapshot`] into a tokio `watch` channel. The channel keeps only the latest
//! value, so a slow subscriber skips intermediate states and never queues them. The
//! Redis and Postgres cost is per event, not per subscriber. The watcher stops when
//! its last subscriber goes away (checked at every tick) or on shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::Availability;
use crate::catalog::{Catalog, CatalogError, Event};
use crate::ids::EventId;
use crate::stock::Stock;

/// How often a watcher re-reads its event's categories, so new ones appear.
pub const EVENT_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// Watcher settings, passed explicitly by the caller.
#[derive(Debug, Clone, Copy)]
pub struct WatcherOptions {
    /// How often a watcher reads the stock of its event.
    pub poll_interval: Duration,
}

/// One published state of an event's availability, shared by every subscriber.
#[derive(Debug)]
pub struct Snapshot {
    /// The state itself, for fronts that encode it otherwise (gRPC).
    pub availability: Availability,
    /// The `GET /events/{id}/availability` JSON document.
    pub json: Bytes,
    /// When the watcher published it.
    pub published_at: Instant,
}

impl Snapshot {
    fn of(availability: &Availability) -> Arc<Self> {
        let json = serde_json::to_vec(availability).expect("availability always serializes");
        Arc::new(Self { availability: availability.clone(), json: Bytes::from(json), published_at: Instant::now() })
    }
}

/// Why a subscription could not start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WatchError {
    /// The event does not exist.
    #[error("event not found")]
    EventNotFound,
    /// Postgres or Redis failed on the first read.
    #[error("cannot read availability: {0}")]
    Unavailable(String),
    /// The process is shutting down.
    #[error("the process is shutting down")]
    ShuttingDown,
}

/// What a watcher's channel holds.
#[derive(Debug, Clone)]
enum Feed {
    /// The first read has not finished.
    Starting,
    /// The latest state.
    Live(Arc<Snapshot>),
    /// The first read failed; the watcher has stopped.
    Failed(WatchError),
}

/// A subscriber's view of one event's watcher.
pub struct Subscription {
    receiver: watch::Receiver<Feed>,
}

impl Subscription {
    /// The latest state; marks it seen.
    pub fn current(&mut self) -> Arc<Snapshot> {
        match &*self.receiver.borrow_and_update() {
            Feed::Live(snapshot) => snapshot.clone(),
            Feed::Starting | Feed::Failed(_) => unreachable!("a subscription starts only on a live feed"),
        }
    }

    /// Waits for a state not seen yet; `None` once the watcher has stopped.
    pub async fn changed(&mut self) -> Option<()> {
        self.receiver.changed().await.ok()
    }
}

/// The watchers of this process, by event.
#[derive(Clone)]
pub struct Watchers {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: Catalog,
    stock: Stock,
    options: WatcherOptions,
    shutdown: CancellationToken,
    events: Mutex<HashMap<EventId, Entry>>,
    next_generation: AtomicU64,
}

/// A running watcher; the generation tells a stopped watcher from its successor.
struct Entry {
    generation: u64,
    sender: watch::Sender<Feed>,
}

/// What a watcher keeps between ticks.
struct Watched {
    event: Event,
    refreshed_at: Instant,
    last: Availability,
    failing: bool,
}

impl Watchers {
    /// No watchers yet; each stops when `shutdown` fires.
    pub fn new(catalog: Catalog, stock: Stock, options: WatcherOptions, shutdown: CancellationToken) -> Self {
        let inner = Inner {
            catalog,
            stock,
            options,
            shutdown,
            events: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(0),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Subscribes to an event, starting its watcher if nobody watches it yet. Returns
    /// once the watcher holds a state, so [`Subscription::current`] has one at once.
    pub async fn subscribe(&self, event: EventId) -> Result<Subscription, WatchError> {
        let mut receiver = self.receiver(event)?;
        let feed = receiver
            .wait_for(|feed| !matches!(feed, Feed::Starting))
            .await
            .map_err(|_| WatchError::ShuttingDown)?
            .clone();
        match feed {
            Feed::Live(_) => Ok(Subscription { receiver }),
            Feed::Failed(error) => Err(error),
            Feed::Starting => unreachable!("waited for a state other than Starting"),
        }
    }

    /// Events being watched now.
    pub fn watched_events(&self) -> usize {
        self.inner.events.lock().expect("not poisoned").len()
    }

    fn receiver(&self, event: EventId) -> Result<watch::Receiver<Feed>, WatchError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(WatchError::ShuttingDown);
        }
        let mut events = self.inner.events.lock().expect("not poisoned");
        if let Some(entry) = events.get(&event) {
            return Ok(entry.sender.subscribe());
        }
        let (sender, receiver) = watch::channel(Feed::Starting);
        let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
        events.insert(event, Entry { generation, sender: sender.clone() });
        tokio::spawn(self.clone().watch(event, generation, sender));
        Ok(receiver)
    }

    async fn watch(self, event: EventId, generation: u64, sender: watch::Sender<Feed>) {
        metrics::gauge!("availability_watchers").increment(1.0);
        match self.first_read(event).await {
            Ok(mut watched) => {
                sender.send_replace(Feed::Live(Snapshot::of(&watched.last)));
                self.follow(event, generation, &sender, &mut watched).await;
            }
            Err(error) => {
                sender.send_replace(Feed::Failed(error));
            }
        }
        self.forget(event, generation);
        metrics::gauge!("availability_watchers").decrement(1.0);
    }

    async fn first_read(&self, event: EventId) -> Result<Watched, WatchError> {
        let event = self.inner.catalog.event(event).await.map_err(|error| match error {
            CatalogError::EventNotFound => WatchError::EventNotFound,
            error => WatchError::Unavailable(format!("{error:?}")),
        })?;
        let last = Availability::of(&event, &self.inner.stock)
            .await
            .map_err(|error| WatchError::Unavailable(format!("{error:?}")))?;
        Ok(Watched { event, refreshed_at: Instant::now(), last, failing: false })
    }

    /// Publishes every change until the last subscriber leaves or shutdown.
    async fn follow(&self, event: EventId, generation: u64, sender: &watch::Sender<Feed>, watched: &mut Watched) {
        let mut ticker = tokio::time::interval(self.inner.options.poll_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = sender.closed() => {}
                _ = ticker.tick() => {}
            }
            if self.forget_if_unwatched(event, generation, sender) {
                return;
            }
            if let Some(availability) = self.poll(watched).await {
                metrics::counter!("availability_changes_total").increment(1);
                sender.send_replace(Feed::Live(Snapshot::of(&availability)));
            }
        }
    }

    /// The new state if it differs from the last one published.
    async fn poll(&self, watched: &mut Watched) -> Option<Availability> {
        if watched.refreshed_at.elapsed() >= EVENT_REFRESH_INTERVAL {
            // A failed refresh keeps the known categories; the levels below still update.
            match self.inner.catalog.event(watched.event.id).await {
                Ok(event) => watched.event = event,
                Err(error) => tracing::debug!(?error, "availability watcher: event refresh failed"),
            }
            watched.refreshed_at = Instant::now();
        }
        match Availability::of(&watched.event, &self.inner.stock).await {
            Ok(availability) => {
                if watched.failing {
                    tracing::info!(event = watched.event.id.get(), "availability watcher reads stock again");
                    watched.failing = false;
                }
                (availability != watched.last).then(|| {
                    watched.last = availability.clone();
                    availability
                })
            }
            Err(error) => {
                if !watched.failing {
                    tracing::warn!(
                        event = watched.event.id.get(),
                        ?error,
                        "availability watcher cannot read stock; retrying"
                    );
                    watched.failing = true;
                }
                None
            }
        }
    }

    /// Removes the watcher if nobody subscribes, under the lock new subscribers take.
    fn forget_if_unwatched(&self, event: EventId, generation: u64, sender: &watch::Sender<Feed>) -> bool {
        let mut events = self.inner.events.lock().expect("not poisoned");
        if sender.receiver_count() > 0 {
            return false;
        }
        if events.get(&event).is_some_and(|entry| entry.generation == generation) {
            events.remove(&event);
        }
        true
    }

    fn forget(&self, event: EventId, generation: u64) {
        let mut events = self.inner.events.lock().expect("not poisoned");
        if events.get(&event).is_some_and(|entry| entry.generation == generation) {
            events.remove(&event);
        }
    }
}
