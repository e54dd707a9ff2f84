//! The outbox relay (inside the `api` process): moves each category's outbox stream
//! (`P:{c:C}:outbox`) to the Kafka topic.
//!
//! # How an entry travels
//! 1. A Lua script appends the event to the category's stream in the same script as
//!    the state change, so an event exists for every change a client was told about.
//! 2. The relay that holds the category's [`lease`] reads the oldest entries
//!    (`XRANGE - + COUNT RELAY_BATCH_RECORDS_MAX`), keys each record by reservation id
//!    and produces each partition's records in one LZ4-compressed request, in stream order.
//! 3. Only entries whose produce the broker acknowledged are deleted (`XDEL`). A crash
//!    before that leaves them in the stream; the next lease holder publishes them again
//!    with the same event ids (duplicates are allowed; the worker drops them).
//!
//! Per-reservation order holds because a reservation's events are all in one stream
//! (its category's), one relay at a time reads that stream oldest first, a batch is
//! finished before the next is read, and all of a reservation's records go to one
//! partition. After a partial failure the unacknowledged entries stay at the head of
//! the stream and go out before anything newer.
//!
//! # When the broker is down
//! Sales go on and the streams grow (the reserve script sheds with 503 past
//! `OUTBOX_BACKLOG_MAX`). Each category relay retries with capped exponential backoff
//! and reconnects; when the broker is back, the backlog drains oldest first.

pub mod lease;
pub mod publisher;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::CategoryId;
use crate::config::ApiConfig;
use crate::kafka::KafkaError;
use crate::keyspace::Keyspace;
use crate::outbox::ReservationEvent;
use crate::retry::{Backoff, sleep_unless_stopped};
use lease::Lease;
use publisher::{Broker, Outgoing, PublisherOptions};

/// How often the relay looks for categories whose outbox nobody relays.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// Why the relay configuration is unusable.
#[derive(Debug, thiserror::Error)]
#[error("relay configuration: {0}")]
pub struct RelayConfigError(String);

/// Why one relay round failed; the round is retried after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Redis failed (reading, deleting or the lease).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The broker failed or did not answer in time.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// The relay's options, validated.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Where to publish.
    pub publisher: PublisherOptions,
    /// Most entries per category per batch.
    pub batch_records_max: usize,
    /// Pause after a batch that was not full.
    pub linger: Duration,
    /// Longest pause between reads of an empty stream.
    pub idle_interval: Duration,
    /// Lease TTL.
    pub lease_ttl: Duration,
    /// Longest backoff pause.
    pub backoff_max: Duration,
}

impl RelayOptions {
    /// The relay options of the API configuration. The lease must outlive the slowest
    /// round (a publish that times out plus a backoff pause) with room for a renewal.
    pub fn from_config(config: &ApiConfig) -> Result<Self, RelayConfigError> {
        let slowest_round = config.relay_publish_timeout + config.relay_backoff_max;
        if slowest_round * 3 > config.relay_lease_ttl * 2 {
            return Err(RelayConfigError(format!(
                "RELAY_LEASE_TTL ({:?}) must be at least 1.5 × (RELAY_PUBLISH_TIMEOUT + RELAY_BACKOFF_MAX) = {:?}",
                config.relay_lease_ttl,
                slowest_round * 3 / 2
            )));
        }
        Ok(Self {
            publisher: PublisherOptions {
                brokers: config.kafka_brokers.clone(),
                topic: config.kafka_topic.clone(),
                partitions: config.kafka_partitions,
                timeout: config.relay_publish_timeout,
            },
            batch_records_max: config.relay_batch_records_max as usize,
            linger: config.relay_linger,
            idle_interval: config.relay_idle_interval.max(config.relay_linger),
            lease_ttl: config.relay_lease_ttl,
            backoff_max: config.relay_backoff_max,
        })
    }
}

/// Runs the relay until `stop` fires, then flushes what it can, releases its leases
/// and returns. Cancel `stop` after the HTTP server has drained, so the events of the
/// last requests go out too.
pub async fn run(redis: ConnectionManager, keys: Keyspace, options: RelayOptions, stop: CancellationToken) {
    let broker = Arc::new(Broker::new(options.publisher.clone()));
    // Connect (and create the topic) before taking any lease, so a process that cannot
    // reach the broker leaves the streams to one that can.
    let mut backoff = Backoff::new(options.backoff_max);
    loop {
        match broker.publisher().await {
            Ok(_) => break,
            Err(error) => tracing::warn!(%error, "relay cannot reach the broker; retrying"),
        }
        if !sleep_unless_stopped(backoff.next_pause(), &stop).await {
            return;
        }
    }
    let token = uuid::Uuid::new_v4().to_string();
    let active: Arc<Mutex<HashSet<i64>>> = Arc::default();
    let tasks = TaskTracker::new();
    let mut ticker = tokio::time::interval(DISCOVERY_INTERVAL);
    let mut discovery_redis = redis.clone();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let categories: Vec<i64> =
            match redis::cmd("SMEMBERS").arg(keys.categories()).query_async(&mut discovery_redis).await {
                Ok(categories) => categories,
                Err(error) => {
                    tracing::warn!(%error, "relay cannot list categories; retrying");
                    continue;
                }
            };
        for category in categories.into_iter().filter_map(CategoryId::new) {
            if active.lock().expect("not poisoned").contains(&category.get()) {
                continue;
            }
            let lease = Lease::new(keys.relay_lease(category), token.clone(), options.lease_ttl);
            match lease.acquire(&mut discovery_redis).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    tracing::warn!(%error, "relay cannot take a lease; retrying");
                    break;
                }
            }
            active.lock().expect("not poisoned").insert(category.get());
            let relay = CategoryRelay {
                category,
                stream: keys.outbox(category),
                lease,
                redis: redis.clone(),
                broker: broker.clone(),
                options: options.clone(),
            };
            let (active, stop) = (active.clone(), stop.clone());
            tasks.spawn(async move {
                relay.run(&stop).await;
                active.lock().expect("not poisoned").remove(&category.get());
            });
        }
    }
    tasks.close();
    tasks.wait().await;
    tracing::info!("relay stopped");
}

/// The relay of one category's stream, while this process holds its lease.
struct CategoryRelay {
    category: CategoryId,
    stream: String,
    lease: Lease,
    redis: ConnectionManager,
    broker: Arc<Broker>,
    options: RelayOptions,
}

impl CategoryRelay {
    async fn run(mut self, stop: &CancellationToken) {
        tracing::info!(category = self.category.get(), "relaying outbox");
        let mut renewed_at = Instant::now();
        let mut idle_pause = self.options.linger;
        let mut backoff = Backoff::new(self.options.backoff_max);
        while !stop.is_cancelled() {
            if renewed_at.elapsed() >= self.lease.renew_interval() {
                match self.lease.renew(&mut self.redis).await {
                    Ok(true) => renewed_at = Instant::now(),
                    Ok(false) => {
                        tracing::warn!(category = self.category.get(), "relay lease taken over; stopping");
                        return;
                    }
                    Err(error) => tracing::warn!(%error, "relay cannot renew its lease; retrying"),
                }
            }
            let pause = match self.relay_batch().await {
                Ok(0) => {
                    let pause = idle_pause;
                    idle_pause = (idle_pause * 2).min(self.options.idle_interval);
                    pause
                }
                Ok(published) => {
                    backoff.reset();
                    idle_pause = self.options.linger;
                    if published >= self.options.batch_records_max { Duration::ZERO } else { self.options.linger }
                }
                Err(error) => {
                    tracing::warn!(category = self.category.get(), %error, "relay round failed; backing off");
                    backoff.next_pause()
                }
            };
            if !pause.is_zero() && !sleep_unless_stopped(pause, stop).await {
                break;
            }
        }
        self.flush_and_release().await;
    }

    /// On shutdown: publish what is in the stream while rounds succeed and stay full,
    /// then release the lease so another process takes over at once. Whatever is left
    /// stays in the stream for the next lease holder.
    async fn flush_and_release(&mut self) {
        loop {
            match self.relay_batch().await {
                Ok(published) if published >= self.options.batch_records_max => continue,
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(category = self.category.get(), %error, "relay flush on shutdown failed");
                    break;
                }
            }
        }
        if let Err(error) = self.lease.release(&mut self.redis).await {
            tracing::warn!(%error, "relay cannot release its lease; it lapses by itself");
        }
    }

    /// One round: read the oldest entries, publish, delete what was acknowledged.
    /// Returns how many entries were read and published.
    async fn relay_batch(&mut self) -> Result<usize, RelayError> {
        let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(&self.stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(self.options.batch_records_max)
            .query_async(&mut self.redis)
            .await?;
        if entries.is_empty() {
            return Ok(0);
        }
        let read = entries.len();
        let publisher = self.broker.publisher().await?;
        let mut batch = Vec::with_capacity(read);
        for (entry_id, flat) in entries {
            let fields = field_map(flat);
            match ReservationEvent::from_fields(&fields) {
                Ok(event) => batch.push(Outgoing { entry_id, event }),
                Err(error) => self.dead_letter(&entry_id, &fields, &error.to_string()).await?,
            }
        }
        metrics::histogram!("relay_batch_records").record(batch.len() as f64);
        let started = Instant::now();
        let outcomes = publisher.publish(batch).await;
        metrics::histogram!("relay_publish_duration_seconds").record(started.elapsed().as_secs_f64());
        let mut acknowledged = Vec::new();
        let mut failure = None;
        for outcome in outcomes {
            match outcome.result {
                Ok(()) => acknowledged.extend(outcome.entry_ids),
                Err(error) => {
                    metrics::counter!("relay_publish_errors_total").increment(1);
                    tracing::debug!(partition = outcome.partition, %error, "produce failed");
                    failure = Some(error);
                }
            }
        }
        self.delete_acknowledged(&acknowledged).await?;
        if let Some(error) = failure {
            self.broker.discard(&publisher).await;
            return Err(error.into());
        }
        Ok(read)
    }

    /// Deletes published entries (the telemetry sampler reports the backlog).
    async fn delete_acknowledged(&mut self, entry_ids: &[String]) -> Result<(), RelayError> {
        if entry_ids.is_empty() {
            return Ok(());
        }
        let _: i64 = redis::cmd("XDEL").arg(&self.stream).arg(entry_ids).query_async(&mut self.redis).await?;
        metrics::counter!("relay_events_published_total").increment(entry_ids.len() as u64);
        Ok(())
    }

    /// Moves an entry that is not a valid event (a bug in a script) to the category's
    /// dead-letter stream `…:outbox:dead`, atomically, so it neither blocks the stream
    /// nor disappears.
    async fn dead_letter(
        &mut self,
        entry_id: &str,
        fields: &HashMap<String, String>,
        reason: &str,
    ) -> Result<(), RelayError> {
        tracing::error!(
            category = self.category.get(),
            entry_id,
            reason,
            ?fields,
            "malformed outbox entry dead-lettered"
        );
        metrics::counter!("relay_malformed_entries_total").increment(1);
        let mut pipe = redis::pipe();
        pipe.atomic();
        let add = pipe.cmd("XADD").arg(format!("{}:dead", self.stream)).arg("*");
        add.arg("entry_id").arg(entry_id).arg("reason").arg(reason);
        for (field, value) in fields {
            add.arg(field).arg(value);
        }
        pipe.ignore().cmd("XDEL").arg(&self.stream).arg(entry_id).ignore();
        let () = pipe.query_async(&mut self.redis).await?;
        Ok(())
    }
}

fn field_map(flat: Vec<String>) -> HashMap<String, String> {
    let mut fields = HashMap::with_capacity(flat.len() / 2);
    let mut items = flat.into_iter();
    while let (Some(field), Some(value)) = (items.next(), items.next()) {
        fields.insert(field, value);
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn flat_fields_pair_up() {
        let fields = field_map(vec!["a".into(), "1".into(), "b".into(), "2".into()]);
        assert_eq!(fields["a"], "1");
        assert_eq!(fields["b"], "2");
    }

    #[test]
    fn the_lease_must_outlive_the_slowest_round() {
        let config = ApiConfig::parse_from(["api"]);
        assert!(RelayOptions::from_config(&config).is_ok());
        let config = ApiConfig::parse_from(["api", "--relay-lease-ttl", "5s", "--relay-publish-timeout", "5s"]);
        assert!(RelayOptions::from_config(&config).is_err());
    }
}
