//! Publishing events to the topic: one connection per process, shared by the
//! category relays, rebuilt after failures; batches split by partition and produced
//! concurrently, each partition's records in stream order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rskafka::client::partition::{Compression, PartitionClient};
use rskafka::record::Record;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use crate::kafka::{self, KafkaError};
use crate::outbox::ReservationEvent;

/// Where and how to publish.
#[derive(Debug, Clone)]
pub struct PublisherOptions {
    /// Bootstrap brokers (`KAFKA_BROKERS`).
    pub brokers: String,
    /// Topic (`KAFKA_TOPIC`).
    pub topic: String,
    /// Partitions of the topic if it has to be created (`KAFKA_PARTITIONS`).
    pub partitions: i32,
    /// Deadline of one broker call (`RELAY_PUBLISH_TIMEOUT`).
    pub timeout: Duration,
}

/// Where an outgoing event came from: the index of its stream in the round and its
/// position among the entries read from that stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Index of the stream in the relay round.
    pub stream: usize,
    /// Position of the entry among those read from the stream (0 = oldest).
    pub position: usize,
}

/// An event ready to publish, with the stream entry it came from.
#[derive(Debug)]
pub struct Outgoing {
    /// The stream entry, trimmed once the broker acknowledged the record.
    pub origin: Origin,
    /// The event.
    pub event: ReservationEvent,
}

/// What happened to the records of one partition.
#[derive(Debug)]
pub struct PartitionOutcome {
    /// The partition.
    pub partition: i32,
    /// Stream entries of its records, in order.
    pub origins: Vec<Origin>,
    /// Acknowledged, or why not.
    pub result: Result<(), KafkaError>,
}

/// A connected producer for every partition of the topic.
pub struct Publisher {
    partitions: Vec<Arc<PartitionClient>>,
    timeout: Duration,
}

impl Publisher {
    async fn connect(options: &PublisherOptions) -> Result<Self, KafkaError> {
        let client = kafka::connect(&options.brokers, "stampede-relay", options.timeout).await?;
        let count = kafka::ensure_topic(&client, &options.topic, options.partitions, options.timeout).await?;
        let mut partitions = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for partition in 0..count {
            let client = kafka::partition_client(&client, &options.topic, partition, options.timeout).await?;
            partitions.push(Arc::new(client));
        }
        Ok(Self { partitions, timeout: options.timeout })
    }

    /// How many partitions the topic has.
    pub fn partition_count(&self) -> i32 {
        i32::try_from(self.partitions.len()).expect("partition counts fit in i32")
    }

    /// Produces each partition's records in one request, all partitions concurrently,
    /// and reports per partition.
    pub async fn publish(&self, batch: EncodedBatch) -> Vec<PartitionOutcome> {
        let mut produces = JoinSet::new();
        for (partition, (origins, records)) in batch.by_partition {
            let index = usize::try_from(partition).expect("partitions come from partition_for_key: 0..count");
            let client = self.partitions[index].clone();
            let timeout = self.timeout;
            produces.spawn(async move {
                let result = kafka::within(timeout, client.produce(records, Compression::Lz4)).await.map(|_| ());
                PartitionOutcome { partition, origins, result }
            });
        }
        let mut outcomes = Vec::new();
        while let Some(joined) = produces.join_next().await {
            outcomes.push(joined.expect("produce tasks do not panic"));
        }
        outcomes
    }
}

/// Records ready to produce, grouped by partition, each stream's records in stream order.
#[derive(Debug, Default)]
pub struct EncodedBatch {
    by_partition: BTreeMap<i32, (Vec<Origin>, Vec<Record>)>,
}

impl EncodedBatch {
    /// Encodes `batch` (each stream's entries in stream order) as records keyed by
    /// reservation id, for a topic of `partition_count` partitions. CPU-bound: run it
    /// off the async workers.
    pub fn encode(batch: Vec<Outgoing>, partition_count: i32) -> Self {
        let mut by_partition: BTreeMap<i32, (Vec<Origin>, Vec<Record>)> = BTreeMap::new();
        for outgoing in batch {
            let key = outgoing.event.reservation.id.to_string().into_bytes();
            let partition = kafka::partition_for_key(&key, partition_count);
            let record = Record {
                key: Some(key),
                value: Some(serde_json::to_vec(&outgoing.event).expect("events serialize")),
                headers: BTreeMap::new(),
                timestamp: outgoing.event.occurred_at,
            };
            let (origins, records) = by_partition.entry(partition).or_default();
            origins.push(outgoing.origin);
            records.push(record);
        }
        Self { by_partition }
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.by_partition.values().map(|(origins, _)| origins.len()).sum()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.by_partition.is_empty()
    }
}

/// The process's broker connection, made on first use and rebuilt after a failure
/// (the broker restarted, the topic was recreated, or a connection went stale).
pub struct Broker {
    options: PublisherOptions,
    current: Mutex<Option<Arc<Publisher>>>,
}

impl Broker {
    /// A broker connection that connects lazily.
    pub fn new(options: PublisherOptions) -> Self {
        Self { options, current: Mutex::new(None) }
    }

    /// The current publisher, connecting (and creating the topic) if needed.
    pub async fn publisher(&self) -> Result<Arc<Publisher>, KafkaError> {
        let mut current = self.current.lock().await;
        if let Some(publisher) = current.as_ref() {
            return Ok(publisher.clone());
        }
        let publisher = Arc::new(Publisher::connect(&self.options).await?);
        *current = Some(publisher.clone());
        Ok(publisher)
    }

    /// Drops `failed` so the next call reconnects; a newer connection is kept.
    pub async fn discard(&self, failed: &Arc<Publisher>) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|publisher| Arc::ptr_eq(publisher, failed)) {
            *current = None;
        }
    }
}
