//! One owned partition: fetch from the stored next offset, apply each batch with its
//! offset in one transaction, retry failures with capped backoff, stop between batches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rskafka::client::partition::{OffsetAt, PartitionClient};
use rskafka::record::RecordAndOffset;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::apply::{self, Applied, Batch, ConsumedEvent, Position, fingerprint};
use crate::kafka::{self, KafkaError};
use crate::outbox::ReservationEvent;
use crate::retry::{Backoff, sleep_unless_stopped};

/// Limits of a partition consumer.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Topic.
    pub topic: String,
    /// Most bytes per fetch, so per transaction (the broker returns at least one record batch).
    pub fetch_bytes_max: i32,
    /// How long the broker may hold an empty fetch.
    pub fetch_wait: Duration,
    /// Deadline of one broker call.
    pub kafka_timeout: Duration,
    /// Longest backoff pause.
    pub backoff_max: Duration,
}

/// Consumes one partition until `shutdown` fires.
pub struct PartitionConsumer {
    /// Client of the partition.
    pub client: PartitionClient,
    /// Postgres.
    pub database: PgPool,
    /// Limits.
    pub options: Arc<ConsumerOptions>,
}

impl PartitionConsumer {
    fn partition(&self) -> i32 {
        self.client.partition()
    }

    /// Runs until `shutdown`; the batch being applied when it fires is committed first.
    pub async fn run(self, shutdown: CancellationToken) {
        let Some(mut position) = self.load_position(&shutdown).await else { return };
        tracing::info!(partition = self.partition(), next_offset = position.next_offset, "consuming partition");
        let mut backoff = Backoff::new(self.options.backoff_max);
        let fetch_wait_ms = i32::try_from(self.options.fetch_wait.as_millis()).unwrap_or(i32::MAX);
        let deadline = self.options.kafka_timeout + self.options.fetch_wait;
        // The log is checked at start and after every broker failure (it may have restarted).
        let mut verified = false;
        while !shutdown.is_cancelled() {
            if !verified {
                match self.verify(position).await {
                    Ok(checked) => (position, verified) = (checked, true),
                    Err(error) => {
                        tracing::warn!(partition = self.partition(), %error, "cannot check the log; retrying")
                    }
                }
            }
            let fetched = if verified {
                let fetch =
                    self.client.fetch_records(position.next_offset, 1..self.options.fetch_bytes_max, fetch_wait_ms);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    fetched = kafka::within(deadline, fetch) => Some(fetched),
                }
            } else {
                None
            };
            let (records, high_watermark) = match fetched {
                Some(Ok(fetched)) => fetched,
                Some(Err(error)) if error.is_offset_out_of_range() => {
                    position = self.reset(position, &error.to_string()).await.unwrap_or(position);
                    continue;
                }
                failed => {
                    if let Some(Err(error)) = failed {
                        tracing::warn!(partition = self.partition(), %error, "fetch failed; backing off");
                        verified = false;
                    }
                    if !sleep_unless_stopped(backoff.next_pause(), &shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            backoff.reset();
            let Some(batch) = self.batch(records, position.next_offset) else {
                // tansu (and Kafka after a topic was recreated) may answer a fetch past the
                // end with nothing instead of an error.
                if high_watermark < position.next_offset {
                    let reason = format!("stored offset is past the high watermark {high_watermark}");
                    position = self.reset(position, &reason).await.unwrap_or(position);
                }
                self.record_lag(high_watermark, position.next_offset);
                continue;
            };
            match self.apply(&batch, &shutdown).await {
                Some(next) => position = next,
                None => break,
            }
            self.record_lag(high_watermark, position.next_offset);
        }
        tracing::info!(partition = self.partition(), next_offset = position.next_offset, "partition consumer stopped");
    }

    async fn load_position(&self, shutdown: &CancellationToken) -> Option<Position> {
        let mut backoff = Backoff::new(self.options.backoff_max);
        loop {
            match apply::load_position(&self.database, &self.options.topic, self.partition()).await {
                Ok(position) => return Some(position),
                Err(error) => tracing::warn!(partition = self.partition(), %error, "cannot load offset; retrying"),
            }
            if !sleep_unless_stopped(backoff.next_pause(), shutdown).await {
                return None;
            }
        }
    }

    /// Checks that the first record of the last applied batch is still the one the
    /// offset was committed with. If not, the log was replaced (a broker with memory
    /// storage restarted and the topic was recreated) and the offset means nothing:
    /// consumption starts again at the earliest record instead of skipping the new
    /// log's first records.
    async fn verify(&self, position: Position) -> Result<Position, KafkaError> {
        let (Some(check_offset), Some(expected)) = (position.check_offset, position.check_fingerprint) else {
            return Ok(position);
        };
        let fetch = self.client.fetch_records(check_offset, 1..self.options.fetch_bytes_max, 0);
        let found = match kafka::within(self.options.kafka_timeout, fetch).await {
            Ok((records, _)) => records
                .into_iter()
                .find(|record| record.offset == check_offset)
                .map(|record| fingerprint(record.record.value.as_deref().unwrap_or_default())),
            Err(error) if error.is_offset_out_of_range() => None,
            Err(error) => return Err(error),
        };
        if found == Some(expected) {
            return Ok(position);
        }
        let reason = "the last applied batch is not in the log any more: the log was replaced";
        Ok(self.reset(position, reason).await.unwrap_or(position))
    }

    /// All fetched records from `next_offset` on, decoded; `None` when there is
    /// nothing new. The whole fetch is one batch so that the next offset is a record
    /// batch boundary: tansu cannot fetch from inside a record batch (it skips to the
    /// next one), so committing an offset inside one would lose its remaining records.
    fn batch(&self, records: Vec<RecordAndOffset>, next_offset: i64) -> Option<Batch> {
        let mut records: Vec<RecordAndOffset> =
            records.into_iter().filter(|record| record.offset >= next_offset).collect();
        records.sort_by_key(|record| record.offset);
        let (first, last) = (records.first()?, records.last()?);
        let next = Position {
            next_offset: last.offset + 1,
            check_offset: Some(first.offset),
            check_fingerprint: Some(fingerprint(first.record.value.as_deref().unwrap_or_default())),
        };
        let events = records.into_iter().filter_map(|record| self.decode(record)).collect();
        Some(Batch { partition: self.partition(), from_offset: next_offset, next, events })
    }

    /// A record's event; a record that is not one is logged, counted and skipped (it
    /// stays in the topic for inspection) so it cannot stall the partition.
    fn decode(&self, record: RecordAndOffset) -> Option<ConsumedEvent> {
        let payload = record.record.value.and_then(|value| String::from_utf8(value).ok());
        let event = payload.as_deref().map(serde_json::from_str::<ReservationEvent>);
        match (payload, event) {
            (Some(payload), Some(Ok(event))) => Some(ConsumedEvent { offset: record.offset, event, payload }),
            (_, event) => {
                let error = event.and_then(Result::err).map(|error| error.to_string());
                tracing::error!(
                    partition = self.partition(),
                    offset = record.offset,
                    ?error,
                    "skipping a record that is not an event"
                );
                metrics::counter!("worker_records_malformed_total").increment(1);
                None
            }
        }
    }

    /// Applies a batch, retrying while Postgres fails. Returns the new position, or
    /// `None` when shutdown came during a retry (the batch is read again on restart).
    async fn apply(&self, batch: &Batch, shutdown: &CancellationToken) -> Option<Position> {
        let mut backoff = Backoff::new(self.options.backoff_max);
        loop {
            let started = Instant::now();
            match apply::apply(&self.database, &self.options.topic, batch).await {
                Ok(Applied::Committed { applied, duplicates, occurred_at }) => {
                    let now = Utc::now();
                    metrics::histogram!("worker_apply_duration_seconds").record(started.elapsed().as_secs_f64());
                    metrics::histogram!("worker_batch_records").record(batch.events.len() as f64);
                    metrics::counter!("worker_events_applied_total").increment(applied as u64);
                    metrics::counter!("worker_events_duplicate_total").increment(duplicates as u64);
                    let lag = metrics::histogram!("pipeline_lag_seconds");
                    for time in occurred_at {
                        lag.record((now - time).as_seconds_f64().max(0.0));
                    }
                    return Some(batch.next);
                }
                Ok(Applied::Fenced { stored }) => {
                    tracing::error!(
                        partition = self.partition(),
                        expected = batch.from_offset,
                        stored = stored.next_offset,
                        "the stored offset moved: another worker consumes this partition (check WORKER_PARTITIONS), \
                         or Postgres lost its last commits in a crash; resuming from the stored offset"
                    );
                    return Some(stored);
                }
                Err(error) => tracing::warn!(partition = self.partition(), %error, "cannot apply batch; retrying"),
            }
            if !sleep_unless_stopped(backoff.next_pause(), shutdown).await {
                return None;
            }
        }
    }

    /// The stored offset does not fit the partition's log: the topic was recreated (a
    /// broker with memory storage restarted) or retention removed records. Start again
    /// from the earliest record; events are idempotent, so replaying is harmless, and
    /// anything lost from the topic is beyond recovery here (reconcile shows it).
    async fn reset(&self, position: Position, reason: &str) -> Option<Position> {
        let earliest = kafka::within(self.options.kafka_timeout, self.client.get_offset(OffsetAt::Earliest)).await;
        let earliest = match earliest {
            Ok(earliest) => earliest.max(0),
            Err(error) => {
                tracing::warn!(partition = self.partition(), %error, "cannot read the earliest offset");
                return None;
            }
        };
        let (partition, next_offset) = (self.partition(), position.next_offset);
        tracing::error!(partition, next_offset, earliest, reason, "consumer position does not fit the log; resetting");
        metrics::counter!("worker_offset_resets_total").increment(1);
        let reset = Position::unchecked(earliest);
        let topic = &self.options.topic;
        match apply::move_position(&self.database, topic, partition, next_offset, reset).await {
            Ok(true) => Some(reset),
            Ok(false) => apply::load_position(&self.database, topic, partition).await.ok(),
            Err(error) => {
                tracing::warn!(partition, %error, "cannot store the reset offset");
                None
            }
        }
    }

    fn record_lag(&self, high_watermark: i64, next_offset: i64) {
        let lag = (high_watermark - next_offset).max(0);
        metrics::gauge!("worker_partition_lag_records", "partition" => self.partition().to_string()).set(lag as f64);
    }
}
