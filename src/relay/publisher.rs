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

/// An event ready to publish, with the stream entry it came from.
#[derive(Debug)]
pub struct Outgoing {
    /// The stream entry id, deleted once the broker acknowledged the record.
    pub entry_id: String,
    /// The event.
    pub event: ReservationEvent,
}

/// What happened to the records of one partition.
#[derive(Debug)]
pub struct PartitionOutcome {
    /// The partition.
    pub partition: i32,
    /// Stream entry ids of its records, in order.
    pub entry_ids: Vec<String>,
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
        let mut partitions = Vec::with_capacity(count as usize);
        for partition in 0..count {
            let client = kafka::partition_client(&client, &options.topic, partition, options.timeout).await?;
            partitions.push(Arc::new(client));
        }
        Ok(Self { partitions, timeout: options.timeout })
    }

    /// Publishes `batch` (in stream order) and reports per partition. Records of one
    /// partition go in one produce request, so they are acknowledged together.
    pub async fn publish(&self, batch: Vec<Outgoing>) -> Vec<PartitionOutcome> {
        let count = i32::try_from(self.partitions.len()).expect("partition counts fit in i32");
        let mut by_partition: BTreeMap<i32, (Vec<String>, Vec<Record>)> = BTreeMap::new();
        for outgoing in batch {
            let key = outgoing.event.reservation.id.to_string().into_bytes();
            let partition = kafka::partition_for_key(&key, count);
            let record = Record {
                key: Some(key),
                value: Some(serde_json::to_vec(&outgoing.event).expect("events serialize")),
                headers: BTreeMap::new(),
                timestamp: outgoing.event.occurred_at,
            };
            let (ids, records) = by_partition.entry(partition).or_default();
            ids.push(outgoing.entry_id);
            records.push(record);
        }
        let mut produces = JoinSet::new();
        for (partition, (entry_ids, records)) in by_partition {
            let client = self.partitions[partition as usize].clone();
            let timeout = self.timeout;
            produces.spawn(async move {
                let result = kafka::within(timeout, client.produce(records, Compression::Lz4)).await.map(|_| ());
                PartitionOutcome { partition, entry_ids, result }
            });
        }
        let mut outcomes = Vec::new();
        while let Some(joined) = produces.join_next().await {
            outcomes.push(joined.expect("produce tasks do not panic"));
        }
        outcomes
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
