//! The Kafka side shared by the relay (producer) and the worker (consumer): bounded
//! connections, topic creation, and the key-to-partition rule.
//!
//! rskafka has no partitioner, no consumer groups, no idempotent producer and no
//! transactions, so this module chooses partitions itself: partition =
//! `(murmur2(key) & 0x7fffffff) % partitions`, the rule of Kafka's default
//! partitioner, so a Java or librdkafka client keyed the same way lands on the same
//! partition. The key is the reservation id as text; every event of one reservation
//! therefore lands on one partition and keeps its order there.
//!
//! Never change the partition count of a topic during a sale: the rule would send a
//! reservation's later events to another partition than its earlier ones.

pub mod security;

use std::time::Duration;

use rskafka::BackoffConfig;
use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};

/// Largest frame accepted from a broker (bounds memory per connection).
const MESSAGE_SIZE_MAX: usize = 16 * 1024 * 1024;
/// How long topic creation may take on the broker.
const CREATE_TOPIC_TIMEOUT_MS: i32 = 5_000;
/// Replication factor of a topic we create. One suits a single broker (development,
/// tests); production creates the topic up front with its own replication.
const REPLICATION_FACTOR: i16 = 1;

/// Why a Kafka operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// The broker or the client reported an error.
    #[error("kafka: {0}")]
    Client(#[from] ClientError),
    /// The call did not finish within its deadline (broker unreachable or stalled).
    #[error("kafka: no answer within {0:?}")]
    Timeout(Duration),
    /// The topic has no partitions, or not the ones asked for.
    #[error("kafka topic {topic}: {detail}")]
    Topic {
        /// The topic.
        topic: String,
        /// What is wrong.
        detail: String,
    },
}

impl KafkaError {
    /// Whether the broker said the offset is outside the partition's log.
    pub fn is_offset_out_of_range(&self) -> bool {
        matches!(self, Self::Client(ClientError::ServerError { protocol_error: ProtocolError::OffsetOutOfRange, .. }))
    }
}

/// Runs `call` under `deadline`; rskafka itself has no request timeout.
pub async fn within<T>(
    deadline: Duration,
    call: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, KafkaError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(result) => result.map_err(KafkaError::Client),
        Err(_) => Err(KafkaError::Timeout(deadline)),
    }
}

/// Splits `KAFKA_BROKERS` (`host:port,host:port`) into bootstrap addresses.
pub fn bootstrap_brokers(brokers: &str) -> Vec<String> {
    brokers.split(',').map(str::trim).filter(|broker| !broker.is_empty()).map(str::to_owned).collect()
}

pub use self::security::{KafkaSecurity, KafkaSecurityError, KafkaSecuritySettings};

/// Connects to the cluster over plain TCP (a development broker). See [`connect_secured`].
pub async fn connect(brokers: &str, client_id: &str, deadline: Duration) -> Result<Client, KafkaError> {
    connect_secured(brokers, &KafkaSecurity::plain(), client_id, deadline).await
}

/// Connects to the cluster with `security` (TLS, SASL). rskafka's own retries stop after
/// `deadline`, so callers keep control of retry, backoff and shutdown.
pub async fn connect_secured(
    brokers: &str,
    security: &KafkaSecurity,
    client_id: &str,
    deadline: Duration,
) -> Result<Client, KafkaError> {
    let backoff = BackoffConfig {
        init_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(1),
        base: 2.0,
        deadline: Some(deadline),
    };
    let builder = ClientBuilder::new(bootstrap_brokers(brokers))
        .client_id(client_id)
        .max_message_size(MESSAGE_SIZE_MAX)
        .backoff_config(backoff);
    within(deadline, security.apply(builder).build()).await
}

/// Creates `topic` with `partitions` partitions if it does not exist, and returns
/// its actual partition count (the existing topic's count wins).
pub async fn ensure_topic(
    client: &Client,
    topic: &str,
    partitions: i32,
    deadline: Duration,
) -> Result<i32, KafkaError> {
    if let Some(count) = partition_count(client, topic, deadline).await? {
        return Ok(count);
    }
    let controller = client.controller_client()?;
    let created =
        within(deadline, controller.create_topic(topic, partitions, REPLICATION_FACTOR, CREATE_TOPIC_TIMEOUT_MS)).await;
    match created {
        Ok(()) => tracing::info!(topic, partitions, "created kafka topic"),
        // Another process created it first.
        Err(KafkaError::Client(ClientError::ServerError {
            protocol_error: ProtocolError::TopicAlreadyExists, ..
        })) => {}
        Err(error) => return Err(error),
    }
    partition_count(client, topic, deadline)
        .await?
        .ok_or_else(|| KafkaError::Topic { topic: topic.to_owned(), detail: "missing right after creation".to_owned() })
}

async fn partition_count(client: &Client, topic: &str, deadline: Duration) -> Result<Option<i32>, KafkaError> {
    let topics = within(deadline, client.list_topics()).await?;
    let Some(found) = topics.into_iter().find(|found| found.name == topic) else { return Ok(None) };
    let count = i32::try_from(found.partitions.len()).unwrap_or(i32::MAX);
    let contiguous = found.partitions.iter().copied().eq(0..count);
    if count == 0 || !contiguous {
        return Err(KafkaError::Topic {
            topic: topic.to_owned(),
            detail: format!("unexpected partitions {:?}", found.partitions),
        });
    }
    Ok(Some(count))
}

/// A client for one partition of `topic`.
pub async fn partition_client(
    client: &Client,
    topic: &str,
    partition: i32,
    deadline: Duration,
) -> Result<PartitionClient, KafkaError> {
    within(deadline, client.partition_client(topic, partition, UnknownTopicHandling::Retry)).await
}

/// Kafka's murmur2 (the hash of its default partitioner), as a signed 32-bit value.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Kafka hashes the length as a 32-bit int; no key comes near 4 GiB.
    let mut hash = SEED ^ u32::try_from(data.len()).expect("keys are shorter than 4 GiB");
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        hash = hash.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        hash ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        hash ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        hash ^= u32::from(tail[0]);
        hash = hash.wrapping_mul(M);
    }
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(M);
    hash ^= hash >> 15;
    hash.cast_signed()
}

/// The partition of `key` among `partitions` (Kafka's default partitioner rule).
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_default_partitioner() {
        // Reference values of the Java client's Utils.murmur2 (Kafka's UtilsTest).
        let cases: [(&str, i32); 6] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            ("abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key.as_bytes()), expected, "{key}");
        }
    }

    #[test]
    fn partitions_are_stable_and_in_range() {
        let key = b"019a9f7c-1d2e-8abc-9def-000000000001";
        let partition = partition_for_key(key, 6);
        assert!((0..6).contains(&partition));
        assert_eq!(partition_for_key(key, 6), partition);
        assert_eq!(partition_for_key(key, 1), 0);
    }

    #[test]
    fn brokers_split_on_commas() {
        assert_eq!(bootstrap_brokers(" a:1, b:2 ,,"), ["a:1", "b:2"]);
    }
}
