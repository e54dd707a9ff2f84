//! The `worker` process: turns the Kafka topic of reservation events into Postgres
//! rows with exactly-once effect, and `worker reconcile` (see [`reconcile`]).
//!
//! # Exactly-once effect
//! Each owned partition has one task. It reads from the next offset stored in
//! `consumer_offsets` (never the broker's `Latest` offset, and never a broker-side
//! commit) and applies each batch in one transaction together with the new offset
//! (see [`apply`]). A crash before the commit replays the batch; a crash after it
//! never does. A batch is one whole fetch (whole record batches, bounded by
//! `WORKER_FETCH_BYTES_MAX`), so a stored offset is always a record-batch boundary:
//! tansu skips to the next record batch when asked to fetch from inside one. Copies of
//! an event (the relay publishes again after a crash) keep their id and are dropped by
//! the event log's unique key; statuses only move forward.
//!
//! A batch is also gapless: it starts exactly at the next offset and ends before the
//! first missing one. tansu counts a produce's offsets (its high watermark) before it
//! stores the records, so while two relays produce to one partition a fetch can return
//! a later batch without an earlier one; taking it would move the offset past records
//! that appear a moment later (the chaos soak lost two `reserved` events this way). The
//! partition waits for the missing offsets instead, for up to `WORKER_GAP_WAIT`; a hole
//! that lasts that long is a produce that failed and was sent again, so it is read past
//! and counted (`worker_offset_gaps_skipped_total`). Reading past never loses a batch that
//! is stored in the hole later: no relay takes an acknowledgement later than
//! `RELAY_PUBLISH_TIMEOUT` after the send, which is at most
//! [`crate::config::RELAY_PUBLISH_TIMEOUT_MAX`] and below
//! [`crate::config::WORKER_GAP_WAIT_MIN`], so such a batch was never acknowledged and its
//! entries, still in the outbox, are published again after the hole. Our topic has no transactions and
//! no compaction, so on Kafka its offsets have no holes.
//!
//! # Running N workers over P partitions
//! By default (`WORKER_PARTITIONS=shared`) the running workers split the partitions among
//! themselves through leases in Postgres, with fencing on every offset commit (see
//! [`lease`]). rskafka has no consumer groups, so otherwise partitions are assigned statically:
//! - one worker: `WORKER_PARTITIONS=all` consumes every partition;
//! - N workers: give each a disjoint list covering `0..P`, e.g. for P = 6 and N = 3:
//!   `WORKER_PARTITIONS=0,3`, `1,4` and `2,5`;
//! - each partition must be owned by exactly one running worker. Offsets live in
//!   Postgres, so moving a partition is safe: stop the worker that owns it, then start
//!   one that lists it; it resumes from the stored offset.
//!
//! If two workers are started on the same partition by mistake, the offset update
//! (first statement of each batch, `WHERE next_offset = <expected>`) lets only one
//! commit a given batch; the other rolls back, logs an error and resumes from the
//! stored offset, so rows stay correct and only work is wasted.
//!
//! # Failures
//! Broker or Postgres down: each partition task retries with capped exponential
//! backoff (`WORKER_BACKOFF_MAX`) and catches up afterwards. Shutdown (SIGTERM) is
//! checked between batches: a batch being applied is committed first.
//!
//! A replaced log (a broker with memory storage restarted, a recreated topic) is
//! detected on every fetch, not only after errors: rskafka reconnects inside one call,
//! so a short restart never surfaces as one (see [`consumer`]). The partition then
//! starts again at the new log's first record.
//!
//! A record that can never be applied (undecodable, or refused by Postgres with a data
//! error) goes to the `dead_letters` table with the offset advance, so it cannot stop
//! its partition (see [`apply`]).

pub mod apply;
pub mod consumer;
pub mod lease;
pub mod metrics_endpoint;
pub mod reconcile;
pub mod spans;

use std::net::SocketAddr;
use std::sync::Arc;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{PartitionSelection, WorkerConfig};
use crate::retry::{Backoff, sleep_unless_stopped};
use crate::{infrastructure, kafka};
use consumer::{ConsumerOptions, PartitionConsumer};
use lease::{Fence, LeaseOptions, Leases};

/// Why the worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The metrics address could not be bound.
    #[error("cannot listen on {addr}")]
    MetricsBind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `WORKER_PARTITIONS` names partitions the topic does not have.
    #[error("WORKER_PARTITIONS lists {requested:?} but topic {topic} has partitions 0..{count}")]
    UnknownPartitions {
        /// The topic.
        topic: String,
        /// Its partition count.
        count: i32,
        /// The configured list.
        requested: Vec<i32>,
    },
    /// A Kafka TLS or SASL setting cannot be honoured.
    #[error(transparent)]
    KafkaSecurity(#[from] kafka::KafkaSecurityError),
    /// Postgres refused or failed TLS as `DATABASE_URL` asks for it (waiting would not help).
    #[error("cannot connect to postgres over TLS as DATABASE_URL asks")]
    DatabaseTls(#[source] sqlx::Error),
}

/// Runs the worker until `shutdown` fires: migrates, serves metrics, consumes the
/// owned partitions. Dependencies that are down at start are waited for.
pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> Result<(), WorkerError> {
    let handle = crate::telemetry::install_metrics();
    let listener = metrics_endpoint::bind(config.metrics_addr)
        .await
        .map_err(|source| WorkerError::MetricsBind { addr: config.metrics_addr, source })?;
    let metrics_addr =
        listener.local_addr().map_err(|source| WorkerError::MetricsBind { addr: config.metrics_addr, source })?;
    println!("metrics on http://{metrics_addr}/metrics");
    tokio::spawn(crate::telemetry::upkeep(handle.clone(), shutdown.clone()));
    tokio::spawn(metrics_endpoint::serve(listener, handle, shutdown.clone()));
    let security = kafka::KafkaSecurity::from_config(&config.shared)?;
    let Some(database) = connect_database(&config, &shutdown).await? else { return Ok(()) };
    let Some((client, count)) = connect_broker(&config, &security, &shutdown).await else { return Ok(()) };
    let options = Arc::new(ConsumerOptions {
        topic: config.shared.kafka_topic.clone(),
        fetch_bytes_max: config.worker_fetch_bytes_max,
        fetch_wait: config.worker_fetch_wait,
        kafka_timeout: config.kafka_timeout,
        backoff_max: config.worker_backoff_max,
        gap_wait: config.worker_gap_wait,
    });
    let consumers = Consumers { client: Arc::new(client), database: database.clone(), options };
    if config.worker_partitions == PartitionSelection::Shared {
        let lease_options = LeaseOptions {
            topic: config.shared.kafka_topic.clone(),
            partition_count: count,
            ttl: config.worker_lease_ttl,
            stop_timeout: config.shared.shutdown_timeout,
        };
        let start = |partition, fence, stop| tokio::spawn(consumers.clone().consume(partition, Some(fence), stop));
        Leases::new(database.clone(), lease_options).run(start, shutdown.clone()).await;
    } else {
        let owned = owned_partitions(&config, count)?;
        tracing::info!(topic = %config.shared.kafka_topic, ?owned, "worker starting");
        let tasks = TaskTracker::new();
        for partition in owned {
            tasks.spawn(consumers.clone().consume(partition, None, shutdown.clone()));
        }
        tasks.close();
        shutdown.cancelled().await;
        if tokio::time::timeout(config.shared.shutdown_timeout, tasks.wait()).await.is_err() {
            tracing::warn!("partition consumers did not stop before the shutdown deadline");
        }
    }
    database.close().await;
    tracing::info!("worker stopped");
    Ok(())
}

/// What every partition consumer of this worker shares.
#[derive(Clone)]
struct Consumers {
    client: Arc<rskafka::client::Client>,
    database: PgPool,
    options: Arc<ConsumerOptions>,
}

impl Consumers {
    /// Reaches the partition's leader (retrying) and consumes it until `stop`.
    async fn consume(self, partition: i32, fence: Option<Fence>, stop: CancellationToken) {
        let (topic, timeout) = (&self.options.topic, self.options.kafka_timeout);
        let mut backoff = Backoff::new(self.options.backoff_max);
        let client = loop {
            match kafka::partition_client(&self.client, topic, partition, timeout).await {
                Ok(client) => break client,
                Err(error) => tracing::warn!(partition, %error, "cannot reach the partition leader; retrying"),
            }
            if !sleep_unless_stopped(backoff.next_pause(), &stop).await {
                return;
            }
        };
        let consumer = PartitionConsumer { client, database: self.database, options: self.options, fence };
        consumer.run(stop).await;
    }
}

/// `worker migrate`: applies the database migrations once and returns (a deploy's
/// migration job; the api and the worker still migrate on start, then as a no-op).
pub async fn migrate(config: &WorkerConfig) -> Result<(), infrastructure::PersistenceError> {
    let database = infrastructure::connect_and_migrate(&config.shared.database_url, 1).await?;
    database.close().await;
    tracing::info!("database migrations applied");
    Ok(())
}

/// Connects to Postgres and migrates, retrying until it works or `shutdown` fires; a TLS
/// failure (a certificate that does not verify, a server without TLS) ends the wait.
async fn connect_database(config: &WorkerConfig, shutdown: &CancellationToken) -> Result<Option<PgPool>, WorkerError> {
    let mut backoff = Backoff::new(config.worker_backoff_max);
    loop {
        match infrastructure::connect_and_migrate(&config.shared.database_url, config.database_connections_max).await {
            Ok(database) => return Ok(Some(database)),
            Err(infrastructure::PersistenceError::Connect(error @ sqlx::Error::Tls(_))) => {
                return Err(WorkerError::DatabaseTls(error));
            }
            Err(error) => tracing::warn!(error = ?error, "postgres not ready; retrying"),
        }
        if !sleep_unless_stopped(backoff.next_pause(), shutdown).await {
            return Ok(None);
        }
    }
}

/// Connects to the broker and makes sure the topic exists; returns its partition count.
async fn connect_broker(
    config: &WorkerConfig,
    security: &kafka::KafkaSecurity,
    shutdown: &CancellationToken,
) -> Option<(rskafka::client::Client, i32)> {
    let mut backoff = Backoff::new(config.worker_backoff_max);
    loop {
        let connected = async {
            let brokers = &config.shared.kafka_brokers;
            let client = kafka::connect_secured(brokers, security, "stampede-worker", config.kafka_timeout).await?;
            let count = kafka::ensure_topic(
                &client,
                &config.shared.kafka_topic,
                config.shared.kafka_partitions,
                config.kafka_timeout,
            )
            .await?;
            Ok::<_, kafka::KafkaError>((client, count))
        };
        match connected.await {
            Ok(connected) => return Some(connected),
            Err(error) => tracing::warn!(%error, "broker not ready; retrying"),
        }
        if !sleep_unless_stopped(backoff.next_pause(), shutdown).await {
            return None;
        }
    }
}

fn owned_partitions(config: &WorkerConfig, count: i32) -> Result<Vec<i32>, WorkerError> {
    match &config.worker_partitions {
        PartitionSelection::All | PartitionSelection::Shared => Ok((0..count).collect()),
        PartitionSelection::Only(requested) if requested.iter().all(|partition| *partition < count) => {
            Ok(requested.clone())
        }
        PartitionSelection::Only(requested) => Err(WorkerError::UnknownPartitions {
            topic: config.shared.kafka_topic.clone(),
            count,
            requested: requested.clone(),
        }),
    }
}
