//! Publishing events to the topic: one connection per process, used by its relay
//! loop for every leased category, rebuilt after failures; batches split by partition and produced
//! concurrently, each partition's records in stream order.
//!
//! # Request size
//! A broker refuses a record batch larger than its limit (Apache Kafka:
//! `message.max.bytes`, about 1 MiB by default) with `MESSAGE_TOO_LARGE`, a
//! non-retriable error: producing the same batch again fails forever. So each
//! partition's records go out in consecutive requests of at most
//! `RELAY_PRODUCE_BYTES_MAX` bytes (uncompressed estimate, [`chunks`]), one after the
//! other to keep their order. A request the broker still refuses as too large is split
//! in halves and each half produced in turn; a single record it refuses on its own is
//! returned as oversized, and the relay parks its outbox entry in the category's
//! dead-letter stream (it never blocks the stream, and it is never dropped silently).

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::client::partition::{Compression, PartitionClient};
use rskafka::record::Record;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use crate::kafka::{self, KafkaError, KafkaSecurity};
use crate::outbox::ReservationEvent;
use crate::telemetry::trace_context::{TRACEPARENT, TraceParent};
use crate::telemetry::traces;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Most requests one publish span links to (the SDK's own bound on a span's links).
pub const PUBLISH_LINKS_MAX: usize = 128;

/// The span of one round's publish when traces are exported (a disabled span otherwise):
/// `publish <topic>`, linked to the traced requests whose events it carries (the first
/// [`PUBLISH_LINKS_MAX`]). A producer span has many causes, so they are links, not parents.
pub fn publish_span(topic: &str, records: usize, requests: &[TraceParent]) -> tracing::Span {
    if !traces::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "relay publish",
        otel.name = format!("publish {topic}"),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.destination.name = topic,
        messaging.batch.message_count = u64::try_from(records).unwrap_or(u64::MAX),
    );
    for request in requests.iter().take(PUBLISH_LINKS_MAX) {
        span.add_link(request.span_context());
    }
    span
}

/// Marks a publish span failed (some partition's records were not acknowledged).
pub fn publish_failed(span: &tracing::Span) {
    if traces::enabled() {
        span.set_status(opentelemetry::trace::Status::error("a produce failed"));
    }
}

/// Where and how to publish.
#[derive(Debug, Clone)]
pub struct PublisherOptions {
    /// Bootstrap brokers (`KAFKA_BROKERS`).
    pub brokers: String,
    /// TLS and SASL (`KAFKA_TLS`, `KAFKA_CA_CERT`, `KAFKA_SASL_*`).
    pub security: KafkaSecurity,
    /// Topic (`KAFKA_TOPIC`).
    pub topic: String,
    /// Partitions of the topic if it has to be created (`KAFKA_PARTITIONS`).
    pub partitions: i32,
    /// Deadline of one broker call (`RELAY_PUBLISH_TIMEOUT`).
    pub timeout: Duration,
    /// Most bytes of records per produce request (`RELAY_PRODUCE_BYTES_MAX`).
    pub produce_bytes_max: usize,
}

/// Bytes of a record batch besides its records (the v2 batch header).
const RECORD_BATCH_OVERHEAD_BYTES: usize = 61;
/// Most bytes of a record besides its key, value and headers (length, attributes,
/// timestamp and offset deltas, key and value lengths, header count as varints).
const RECORD_OVERHEAD_BYTES_MAX: usize = 21;

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
    /// The trace of the request that caused it: the record's `traceparent` header.
    pub traceparent: Option<TraceParent>,
}

/// What happened to the records of one partition.
#[derive(Debug)]
pub struct PartitionOutcome {
    /// The partition.
    pub partition: i32,
    /// Stream entries whose records the broker acknowledged.
    pub acknowledged: Vec<Origin>,
    /// Records the broker refused as too large even alone, with their stream entries.
    pub oversized: Vec<(Origin, Record)>,
    /// The stream entries that were not acknowledged (the failed request's and every
    /// later one's) and why.
    pub failed: Option<(Vec<Origin>, KafkaError)>,
}

/// How producing one partition's records in order went.
#[derive(Debug, Default)]
pub struct Produced {
    /// Indexes of the records the broker refused as too large on their own.
    pub oversized: Vec<usize>,
    /// The index of the first record of the first request that failed otherwise, and
    /// why; it and every later record were not acknowledged.
    pub failed: Option<(usize, KafkaError)>,
}

/// The estimated size in bytes of `record` inside a record batch (uncompressed).
pub fn record_size(record: &Record) -> usize {
    let headers: usize = record.headers.iter().map(|(key, value)| key.len() + value.len() + 10).sum();
    record.key.as_ref().map_or(0, Vec::len)
        + record.value.as_ref().map_or(0, Vec::len)
        + headers
        + RECORD_OVERHEAD_BYTES_MAX
}

/// Consecutive ranges of records, each at most `bytes_max` bytes as one record batch
/// (given each record's size); a record larger than that alone is a range of its own.
pub fn chunks(sizes: &[usize], bytes_max: usize) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut bytes) = (0, RECORD_BATCH_OVERHEAD_BYTES);
    for (index, size) in sizes.iter().enumerate() {
        if index > start && bytes + size > bytes_max {
            ranges.push(start..index);
            (start, bytes) = (index, RECORD_BATCH_OVERHEAD_BYTES);
        }
        bytes += size;
    }
    if start < sizes.len() {
        ranges.push(start..sizes.len());
    }
    ranges
}

/// Produces `records` in order, in requests of at most `bytes_max` bytes, through
/// `produce`. A request refused as too large is split in halves (first half first); a
/// single record refused as too large is reported and skipped. Stops at the first
/// other failure, so nothing after an unacknowledged record is produced.
pub async fn produce_in_order<F, Fut>(records: &[Record], bytes_max: usize, mut produce: F) -> Produced
where
    F: FnMut(Vec<Record>) -> Fut,
    Fut: Future<Output = Result<(), KafkaError>>,
{
    let sizes: Vec<usize> = records.iter().map(record_size).collect();
    let mut pending: VecDeque<Range<usize>> = chunks(&sizes, bytes_max).into();
    let mut produced = Produced::default();
    while let Some(range) = pending.pop_front() {
        let bytes = RECORD_BATCH_OVERHEAD_BYTES + sizes[range.clone()].iter().sum::<usize>();
        metrics::histogram!("relay_produce_bytes").record(bytes as f64);
        match produce(records[range.clone()].to_vec()).await {
            Ok(()) => {}
            Err(error) if is_too_large(&error) && range.len() > 1 => {
                let middle = range.start + range.len() / 2;
                pending.push_front(middle..range.end);
                pending.push_front(range.start..middle);
            }
            Err(error) if is_too_large(&error) => produced.oversized.push(range.start),
            Err(error) => {
                produced.failed = Some((range.start, error));
                break;
            }
        }
    }
    produced
}

/// One produce under `timeout`. An acknowledgement read later than `timeout` after the
/// send (the process was paused, and the answer waited in the socket) counts as none, so
/// the entries stay in the outbox and are sent again: no relay ever takes a produce as
/// published later than `RELAY_PUBLISH_TIMEOUT` after sending it, which is what lets the
/// worker read past a lasting hole in a partition's offsets
/// ([`crate::config::WORKER_GAP_WAIT_MIN`]).
pub async fn acknowledged_within<T>(
    timeout: Duration,
    produce: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, KafkaError> {
    let sent_at = Instant::now();
    let acknowledged = kafka::within(timeout, produce).await?;
    if sent_at.elapsed() > timeout {
        return Err(KafkaError::Timeout(timeout));
    }
    Ok(acknowledged)
}

/// Whether the broker refused a request for its size.
fn is_too_large(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::Client(ClientError::ServerError {
            protocol_error: ProtocolError::MessageTooLarge | ProtocolError::RecordListTooLarge,
            ..
        })
    )
}

/// A connected producer for every partition of the topic.
pub struct Publisher {
    partitions: Vec<Arc<PartitionClient>>,
    timeout: Duration,
    produce_bytes_max: usize,
}

impl Publisher {
    async fn connect(options: &PublisherOptions) -> Result<Self, KafkaError> {
        let client =
            kafka::connect_secured(&options.brokers, &options.security, "stampede-relay", options.timeout).await?;
        let count = kafka::ensure_topic(&client, &options.topic, options.partitions, options.timeout).await?;
        let mut partitions = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for partition in 0..count {
            let client = kafka::partition_client(&client, &options.topic, partition, options.timeout).await?;
            partitions.push(Arc::new(client));
        }
        Ok(Self { partitions, timeout: options.timeout, produce_bytes_max: options.produce_bytes_max })
    }

    /// How many partitions the topic has.
    pub fn partition_count(&self) -> i32 {
        i32::try_from(self.partitions.len()).expect("partition counts fit in i32")
    }

    /// Produces each partition's records in order in requests under the byte cap, all
    /// partitions concurrently, and reports per partition.
    pub async fn publish(&self, batch: EncodedBatch) -> Vec<PartitionOutcome> {
        let mut produces = JoinSet::new();
        for (partition, (origins, records)) in batch.by_partition {
            let index = usize::try_from(partition).expect("partitions come from partition_for_key: 0..count");
            let client = self.partitions[index].clone();
            let (timeout, bytes_max) = (self.timeout, self.produce_bytes_max);
            produces.spawn(async move {
                let produce = |chunk| {
                    let client = client.clone();
                    async move { acknowledged_within(timeout, client.produce(chunk, Compression::Lz4)).await.map(|_| ()) }
                };
                let produced = produce_in_order(&records, bytes_max, produce).await;
                PartitionOutcome::of(partition, origins, records, produced)
            });
        }
        let mut outcomes = Vec::new();
        while let Some(joined) = produces.join_next().await {
            outcomes.push(joined.expect("produce tasks do not panic"));
        }
        outcomes
    }
}

impl PartitionOutcome {
    fn of(partition: i32, mut origins: Vec<Origin>, records: Vec<Record>, produced: Produced) -> Self {
        let failed = produced.failed.map(|(first, error)| (origins.split_off(first), error));
        let mut oversized = Vec::with_capacity(produced.oversized.len());
        let mut records: Vec<Option<Record>> = records.into_iter().map(Some).collect();
        for index in produced.oversized.iter().rev() {
            oversized.push((origins.remove(*index), records[*index].take().expect("each record once")));
        }
        oversized.reverse();
        Self { partition, acknowledged: origins, oversized, failed }
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
            let mut headers = BTreeMap::new();
            if let Some(traceparent) = outgoing.traceparent {
                headers.insert(TRACEPARENT.to_owned(), traceparent.as_str().as_bytes().to_vec());
            }
            let record = Record {
                key: Some(key),
                value: Some(serde_json::to_vec(&outgoing.event).expect("events serialize")),
                headers,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_acknowledgement_read_after_the_timeout_counts_as_a_failure() {
        // Goal: a produce whose answer is read only after RELAY_PUBLISH_TIMEOUT (here: the
        // thread blocked past it, as a paused process would be) is a failure, so its entries
        // are sent again; one within the timeout is acknowledged.
        let timeout = Duration::from_millis(50);
        let late = acknowledged_within(timeout, async {
            std::thread::sleep(Duration::from_millis(120));
            Ok::<_, ClientError>(())
        });
        assert!(matches!(late.await, Err(KafkaError::Timeout(_))));
        let prompt = acknowledged_within(timeout, async { Ok::<_, ClientError>(7) });
        assert!(matches!(prompt.await, Ok(7)));
    }

    fn record(value_bytes: usize) -> Record {
        Record {
            key: Some(b"key".to_vec()),
            value: Some(vec![b'x'; value_bytes]),
            headers: BTreeMap::new(),
            timestamp: chrono::Utc::now(),
        }
    }

    fn too_large() -> KafkaError {
        KafkaError::Client(ClientError::ServerError {
            protocol_error: ProtocolError::MessageTooLarge,
            error_message: None,
            request: rskafka::client::error::RequestContext::Partition("t".to_owned(), 0),
            response: None,
            is_virtual: false,
        })
    }

    #[test]
    fn chunks_stay_under_the_cap_and_keep_order() {
        let sizes = [100, 100, 100, 500, 100, 2_000, 100];
        let ranges = chunks(&sizes, 400);
        assert_eq!(ranges, [0..3, 3..4, 4..5, 5..6, 6..7]);
        for range in &ranges {
            let bytes = RECORD_BATCH_OVERHEAD_BYTES + sizes[range.clone()].iter().sum::<usize>();
            assert!(bytes <= 400 || range.len() == 1, "{range:?}: {bytes}");
        }
        assert_eq!(chunks(&[10; 5], 1_000), vec![(0..5)]);
        assert!(chunks(&[], 1_000).is_empty());
    }

    /// A broker whose size limit is `limit` bytes; records what it accepted.
    async fn produce_to_limit(records: &[Record], bytes_max: usize, limit: usize) -> (Produced, Vec<usize>) {
        let accepted = std::sync::Mutex::new(Vec::new());
        let produced = produce_in_order(records, bytes_max, |chunk: Vec<Record>| {
            let bytes = RECORD_BATCH_OVERHEAD_BYTES + chunk.iter().map(record_size).sum::<usize>();
            let verdict = if bytes > limit {
                Err(too_large())
            } else {
                accepted.lock().unwrap().extend(chunk.iter().map(|record| record.value.as_ref().unwrap().len()));
                Ok(())
            };
            std::future::ready(verdict)
        })
        .await;
        (produced, accepted.into_inner().unwrap())
    }

    #[tokio::test]
    async fn a_request_refused_as_too_large_is_halved_until_it_fits() {
        // Values 1..=40 bytes, so each record is recognisable by its size.
        let records: Vec<Record> = (1..=40).map(record).collect();
        let (produced, accepted) = produce_to_limit(&records, 1_000_000, 400).await;
        assert!(produced.failed.is_none() && produced.oversized.is_empty());
        assert_eq!(accepted, (1..=40).collect::<Vec<_>>(), "everything, once, in order");
    }

    #[tokio::test]
    async fn a_record_too_large_alone_is_set_aside_and_the_rest_goes_on() {
        let records = vec![record(10), record(20), record(5_000), record(30)];
        let (produced, accepted) = produce_to_limit(&records, 1_000_000, 1_000).await;
        assert_eq!(produced.oversized, [2]);
        assert!(produced.failed.is_none());
        assert_eq!(accepted, [10, 20, 30]);
        let origins = (0..4).map(|position| Origin { stream: 0, position }).collect();
        let outcome = PartitionOutcome::of(0, origins, records, produced);
        assert_eq!(outcome.acknowledged.iter().map(|origin| origin.position).collect::<Vec<_>>(), [0, 1, 3]);
        assert_eq!(outcome.oversized.len(), 1);
        assert_eq!((outcome.oversized[0].0.position, outcome.oversized[0].1.value.as_ref().unwrap().len()), (2, 5_000));
    }

    #[tokio::test]
    async fn another_failure_stops_the_partition_at_the_failed_request() {
        let records: Vec<Record> = (1..=6).map(|_| record(100)).collect();
        let mut calls = 0;
        let produced = produce_in_order(&records, 2 * record_size(&records[0]) + RECORD_BATCH_OVERHEAD_BYTES, |_| {
            calls += 1;
            std::future::ready(if calls == 2 { Err(KafkaError::Timeout(Duration::from_secs(1))) } else { Ok(()) })
        })
        .await;
        assert_eq!(calls, 2, "nothing after the failed request is produced");
        assert_eq!(produced.failed.map(|(first, _)| first), Some(2));
        let outcome = PartitionOutcome::of(
            0,
            (0..6).map(|position| Origin { stream: 0, position }).collect(),
            records,
            Produced { oversized: vec![], failed: Some((2, KafkaError::Timeout(Duration::ZERO))) },
        );
        assert_eq!(outcome.acknowledged.len(), 2);
        assert_eq!(outcome.failed.unwrap().0.len(), 4);
    }
}
