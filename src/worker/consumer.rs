//! One owned partition: fetch from the stored next offset, apply each gapless batch with
//! its offset in one transaction, retry failures with capped backoff, stop between batches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rskafka::client::partition::{OffsetAt, PartitionClient};
use rskafka::record::RecordAndOffset;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::apply::{self, Applied, Batch, ConsumedEvent, DeadLetter, Position, record_fingerprint};
use super::lease::Fence;
use super::spans::{self, BatchSpans};
use crate::kafka::{self, KafkaError};
use crate::outbox::ReservationEvent;
use crate::retry::{Backoff, sleep_unless_stopped};
use crate::telemetry::trace_context::{TRACEPARENT, TraceParent};

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
    /// How long a hole right after the next offset is waited for before reading past it.
    pub gap_wait: Duration,
}

/// Pause between fetches while a hole right after the next offset is waited for.
const GAP_PAUSE: Duration = Duration::from_millis(20);
/// Fewest fetches that must see a hole before it is read past, so a hole seen before
/// a broker pause is not read past on the first fetch after it.
const GAP_FETCHES_MIN: u32 = 20;

/// Consumes one partition until `shutdown` fires.
pub struct PartitionConsumer {
    /// Client of the partition.
    pub client: PartitionClient,
    /// Postgres.
    pub database: PgPool,
    /// Limits.
    pub options: Arc<ConsumerOptions>,
    /// The partition's lease when workers share partitions (`WORKER_PARTITIONS=shared`).
    pub fence: Option<Fence>,
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
        let mut gap = GapWatch::default();
        while !shutdown.is_cancelled() {
            let fetch_started = spans::fetch_started();
            let batch = match self.next_batch(&mut position, &mut gap, &mut backoff, &shutdown).await {
                Step::Apply(batch) => batch,
                Step::Again => continue,
                Step::Stop => break,
            };
            backoff.reset();
            let high_watermark = batch.high_watermark;
            let spans = BatchSpans::start(&self.options.topic, fetch_started, &batch.batch);
            let applied = self.apply(&batch.batch, &shutdown).await;
            if let Some(spans) = spans {
                spans.end(applied.is_some());
            }
            match applied {
                Some(next) => position = next,
                None => break,
            }
            self.record_lag(high_watermark, position.next_offset);
        }
        tracing::info!(partition = self.partition(), next_offset = position.next_offset, "partition consumer stopped");
    }

    /// One fetch from the next offset, checked; handles everything but a batch to apply
    /// (nothing new, a replaced log, a failure, a hole to wait for).
    async fn next_batch(
        &self,
        position: &mut Position,
        gap: &mut GapWatch,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> Step {
        let fetch_wait_ms = i32::try_from(self.options.fetch_wait.as_millis()).unwrap_or(i32::MAX);
        let deadline = self.options.kafka_timeout + self.options.fetch_wait;
        // A hole is read past only if it had lasted WORKER_GAP_WAIT when this fetch began:
        // a record acknowledged to a relay by then is readable to this fetch.
        let fetch_started = Instant::now();
        let fetch = self.client.fetch_records(position.next_offset, 1..self.options.fetch_bytes_max, fetch_wait_ms);
        let fetched = tokio::select! {
            _ = shutdown.cancelled() => return Step::Stop,
            fetched = kafka::within(deadline, fetch) => fetched,
        };
        let checked = match fetched {
            Ok((records, high_watermark)) => {
                let read_past_gap = gap.lasted(position.next_offset, self.options.gap_wait, fetch_started);
                self.check(*position, records, high_watermark, read_past_gap).await
            }
            Err(error) if error.is_offset_out_of_range() => Checked::Replaced(error.to_string()),
            Err(error) => {
                tracing::warn!(partition = self.partition(), %error, "fetch failed; backing off");
                Checked::Failed
            }
        };
        let pause = match checked {
            Checked::Batch(batch) => return Step::Apply(batch),
            Checked::Nothing => return Step::Again,
            Checked::Replaced(reason) => {
                *position = self.reset(*position, &reason).await.unwrap_or(*position);
                return Step::Again;
            }
            Checked::Gap { first_offset } => {
                if gap.observe(position.next_offset, Instant::now()) {
                    metrics::counter!("worker_offset_gaps_waited_total").increment(1);
                }
                let (partition, next_offset) = (self.partition(), position.next_offset);
                tracing::debug!(partition, next_offset, first_offset, "offsets missing after the next offset; waiting");
                GAP_PAUSE
            }
            Checked::Failed => backoff.next_pause(),
        };
        if sleep_unless_stopped(pause, shutdown).await { Step::Again } else { Step::Stop }
    }

    /// Checks a fetch against the log the stored position was read from, on every fetch.
    ///
    /// The broker may restart between any two fetches without an error reaching us
    /// (rskafka reconnects inside one call for up to `KAFKA_TIMEOUT`), so a replaced
    /// log must be recognised from the fetch itself. Whenever a fetch returns records,
    /// or a high watermark below our next offset, the first record of the last applied
    /// batch must still be at its offset ([`Self::verify`]). The check runs after the
    /// fetch: if the old log is still there then, the fetch read it too.
    ///
    /// The records must follow the next offset without a hole ([`gapless`]); a hole is
    /// waited for until it has lasted, then read past (`read_past_gap`).
    async fn check(
        &self,
        position: Position,
        records: Vec<RecordAndOffset>,
        high_watermark: i64,
        read_past_gap: bool,
    ) -> Checked {
        let behind = high_watermark < position.next_offset;
        let records = match gapless(records, position.next_offset, read_past_gap) {
            Ok(records) => records,
            Err(first_offset) => return Checked::Gap { first_offset },
        };
        if let Some(first) = records.first()
            && first.offset > position.next_offset
        {
            let (partition, next_offset, first_offset) = (self.partition(), position.next_offset, first.offset);
            tracing::error!(
                partition,
                next_offset,
                first_offset,
                "offsets missing for WORKER_GAP_WAIT; reading past them"
            );
            metrics::counter!("worker_offset_gaps_skipped_total").increment(1);
        }
        let batch = self.batch(records, position.next_offset);
        if batch.is_none() && !behind {
            self.record_lag(high_watermark, position.next_offset);
            return Checked::Nothing;
        }
        let continuity = match (position.check_offset, behind) {
            // Nothing to compare with, and the log is shorter than what we read of it.
            (None, true) => Ok(Continuity::Replaced),
            _ => self.verify(position).await,
        };
        match (continuity, batch) {
            (Ok(Continuity::Same), Some(batch)) => Checked::Batch(FetchedBatch { batch, high_watermark }),
            (Ok(Continuity::Same), None) => {
                // Kafka: a new partition leader's high watermark may lag for a moment.
                tracing::warn!(partition = self.partition(), high_watermark, "high watermark behind our offset");
                Checked::Failed
            }
            (Ok(Continuity::Replaced), _) => Checked::Replaced(format!(
                "the last applied batch is not in the log any more (high watermark {high_watermark}): the log was replaced"
            )),
            (Err(error), _) => {
                tracing::warn!(partition = self.partition(), %error, "cannot check the log; backing off");
                Checked::Failed
            }
        }
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

    /// Whether the first record of the last applied batch is still the one the offset
    /// was committed with. If not, the log was replaced (a broker with memory storage
    /// restarted and the topic was recreated, or a topic was deleted and created again)
    /// and the stored offset means nothing in it. One record batch is read (`max_bytes`
    /// 1: Kafka and tansu return at least the first whole batch).
    async fn verify(&self, position: Position) -> Result<Continuity, KafkaError> {
        let (Some(check_offset), Some(expected)) = (position.check_offset, position.check_fingerprint) else {
            return Ok(Continuity::Same);
        };
        let mut found = self.fingerprint_at(check_offset, 1..2).await?;
        if let RecordAtOffset::Missing { high_watermark } = found
            && high_watermark > check_offset
        {
            // The record should be there: ask again allowing a whole fetch, in case the
            // broker returns nothing when the first record batch exceeds `max_bytes`.
            found = self.fingerprint_at(check_offset, 1..self.options.fetch_bytes_max).await?;
        }
        let found = match found {
            RecordAtOffset::Found(found) => Some(found),
            RecordAtOffset::Missing { .. } => None,
        };
        if found == Some(expected) {
            return Ok(Continuity::Same);
        }
        if found.is_none() && self.retention_removed(check_offset, position.next_offset).await? {
            // Retention deleted the checked record; the log itself is the same.
            return Ok(Continuity::Same);
        }
        Ok(Continuity::Replaced)
    }

    /// The fingerprint of the record at `offset`, reading `bytes` from there.
    async fn fingerprint_at(&self, offset: i64, bytes: std::ops::Range<i32>) -> Result<RecordAtOffset, KafkaError> {
        let fetch = self.client.fetch_records(offset, bytes, 0);
        match kafka::within(self.options.kafka_timeout, fetch).await {
            Ok((records, high_watermark)) => Ok(records
                .into_iter()
                .find(|record| record.offset == offset)
                .map(|record| {
                    RecordAtOffset::Found(record_fingerprint(record.record.value.as_deref().unwrap_or_default()))
                })
                .unwrap_or(RecordAtOffset::Missing { high_watermark })),
            Err(error) if error.is_offset_out_of_range() => Ok(RecordAtOffset::Missing { high_watermark: -1 }),
            Err(error) => Err(error),
        }
    }

    /// Whether the log starts past `check_offset` but not past `next_offset`: Kafka's
    /// retention removed old records, which leaves the offsets valid. A replaced log
    /// starts at 0 again.
    async fn retention_removed(&self, check_offset: i64, next_offset: i64) -> Result<bool, KafkaError> {
        let earliest = kafka::within(self.options.kafka_timeout, self.client.get_offset(OffsetAt::Earliest)).await?;
        Ok(earliest > check_offset && earliest <= next_offset)
    }

    /// The gapless records of a fetch, decoded; `None` when there is nothing new. The
    /// whole gapless run is one batch so that the next offset is a record batch
    /// boundary: tansu cannot fetch from inside a record batch (it skips to the next
    /// one), so committing an offset inside one would lose its remaining records.
    fn batch(&self, records: Vec<RecordAndOffset>, next_offset: i64) -> Option<Batch> {
        let (first, last) = (records.first()?, records.last()?);
        let next = Position {
            next_offset: last.offset + 1,
            check_offset: Some(first.offset),
            check_fingerprint: Some(record_fingerprint(first.record.value.as_deref().unwrap_or_default())),
        };
        let (mut events, mut rejected) = (Vec::with_capacity(records.len()), Vec::new());
        for record in records {
            match decode(record) {
                Ok(event) => events.push(event),
                Err(letter) => rejected.push(letter),
            }
        }
        let fence = self.fence.clone();
        Some(Batch { partition: self.partition(), from_offset: next_offset, next, events, rejected, fence })
    }

    /// Applies a batch, retrying while Postgres fails. Returns the new position, or
    /// `None` when shutdown came during a retry (the batch is read again on restart).
    async fn apply(&self, batch: &Batch, shutdown: &CancellationToken) -> Option<Position> {
        let mut backoff = Backoff::new(self.options.backoff_max);
        loop {
            let started = Instant::now();
            match apply::apply(&self.database, &self.options.topic, batch).await {
                Ok(Applied::Committed { applied, duplicates, occurred_at, dead_letters }) => {
                    self.report_dead_letters(&dead_letters);
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
                Ok(Applied::Fenced { .. }) if self.fence.is_some() && !self.holds_lease().await => {
                    tracing::warn!(partition = self.partition(), "lost the partition's lease; stopping its consumer");
                    metrics::counter!("worker_partition_leases_lost_total").increment(1);
                    return None;
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

    /// Whether this consumer's lease still holds (true when in doubt: the offset guard decides).
    async fn holds_lease(&self) -> bool {
        let Some(fence) = &self.fence else { return true };
        super::lease::holds(&self.database, &self.options.topic, self.partition(), fence).await.unwrap_or(true)
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
        match apply::move_position(&self.database, topic, partition, next_offset, reset, self.fence.as_ref()).await {
            Ok(true) => Some(reset),
            Ok(false) => apply::load_position(&self.database, topic, partition).await.ok(),
            Err(error) => {
                tracing::warn!(partition, %error, "cannot store the reset offset");
                None
            }
        }
    }

    fn report_dead_letters(&self, dead_letters: &[DeadLetter]) {
        for letter in dead_letters {
            let (partition, offset) = (self.partition(), letter.offset);
            tracing::error!(partition, offset, error = letter.error, "record moved to dead_letters");
        }
        metrics::counter!("worker_dead_letters_total").increment(dead_letters.len() as u64);
    }

    fn record_lag(&self, high_watermark: i64, next_offset: i64) {
        let lag = (high_watermark - next_offset).max(0);
        metrics::gauge!("worker_partition_lag_records", "partition" => self.partition().to_string()).set(lag as f64);
    }
}

/// What a fetch brought, once checked against the log.
enum Checked {
    /// New records from the same log.
    Batch(FetchedBatch),
    /// Nothing new.
    Nothing,
    /// Records, but not the one at the next offset (the first one's offset): wait for it.
    Gap { first_offset: i64 },
    /// The log was replaced or truncated (why): reset.
    Replaced(String),
    /// The broker failed: back off.
    Failed,
}

/// What the consumer loop does next.
enum Step {
    /// Apply this batch.
    Apply(FetchedBatch),
    /// Fetch again.
    Again,
    /// Shutdown came.
    Stop,
}

/// The records of a fetch that a batch may take: from `next_offset` on, in offset
/// order, one per offset, up to the first missing offset. `Err(first offset)` when the
/// first record is past `next_offset` (a hole at the head), unless `read_past_gap`,
/// which takes the run from the first record on.
fn gapless(records: Vec<RecordAndOffset>, next_offset: i64, read_past_gap: bool) -> Result<Vec<RecordAndOffset>, i64> {
    let mut records: Vec<RecordAndOffset> = records.into_iter().filter(|record| record.offset >= next_offset).collect();
    records.sort_by_key(|record| record.offset);
    records.dedup_by_key(|record| record.offset);
    let Some(first) = records.first().map(|record| record.offset) else { return Ok(records) };
    if first > next_offset && !read_past_gap {
        return Err(first);
    }
    let run = records.iter().zip(first..).take_while(|(record, expected)| record.offset == *expected).count();
    records.truncate(run);
    Ok(records)
}

/// How long the partition has seen a hole right after its next offset.
#[derive(Debug, Default)]
struct GapWatch {
    seen: Option<GapSeen>,
}

#[derive(Debug)]
struct GapSeen {
    next_offset: i64,
    since: Instant,
    fetches: u32,
}

impl GapWatch {
    /// Records a fetch that found a hole right after `next_offset`; whether the hole is new.
    fn observe(&mut self, next_offset: i64, now: Instant) -> bool {
        match &mut self.seen {
            Some(seen) if seen.next_offset == next_offset => {
                seen.fetches += 1;
                false
            }
            _ => {
                self.seen = Some(GapSeen { next_offset, since: now, fetches: 1 });
                true
            }
        }
    }

    /// Whether the hole after `next_offset` has lasted `wait` and [`GAP_FETCHES_MIN`]
    /// fetches, so the partition reads past it.
    fn lasted(&self, next_offset: i64, wait: Duration, now: Instant) -> bool {
        self.seen.as_ref().is_some_and(|seen| {
            seen.next_offset == next_offset
                && seen.fetches >= GAP_FETCHES_MIN
                && now.saturating_duration_since(seen.since) >= wait
        })
    }
}

/// A fetch that passed the log check.
struct FetchedBatch {
    batch: Batch,
    high_watermark: i64,
}

/// What the log holds at an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordAtOffset {
    /// A record with this fingerprint.
    Found(i64),
    /// No record; the partition's high watermark (-1 when the offset was out of range).
    Missing { high_watermark: i64 },
}

/// Whether the partition's log is still the one the stored position was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Continuity {
    Same,
    Replaced,
}

/// A record's event, or the dead letter of a record that is not one (it cannot stall
/// the partition, and it is kept with why).
fn decode(record: RecordAndOffset) -> Result<ConsumedEvent, DeadLetter> {
    let RecordAndOffset { record, offset } = record;
    let decoded = match record.value.as_deref().map(std::str::from_utf8) {
        None => Err("the record has no value".to_owned()),
        Some(Err(error)) => Err(format!("the value is not UTF-8: {error}")),
        Some(Ok(payload)) => serde_json::from_str::<ReservationEvent>(payload)
            .map(|event| (event, payload.to_owned()))
            .map_err(|error| format!("the value is not an event: {error}")),
    };
    match decoded {
        Ok((event, payload)) => {
            let traceparent = record
                .headers
                .get(TRACEPARENT)
                .and_then(|value| std::str::from_utf8(value).ok())
                .and_then(TraceParent::parse);
            Ok(ConsumedEvent { offset, key: record.key, event, payload, traceparent })
        }
        Err(error) => Err(DeadLetter { offset, key: record.key, value: record.value, error }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rskafka::record::Record;

    fn records(offsets: &[i64]) -> Vec<RecordAndOffset> {
        let record = |offset: i64| RecordAndOffset {
            record: Record {
                key: None,
                value: Some(offset.to_string().into_bytes()),
                headers: Default::default(),
                timestamp: Utc::now(),
            },
            offset,
        };
        offsets.iter().copied().map(record).collect()
    }

    fn offsets(taken: Result<Vec<RecordAndOffset>, i64>) -> Result<Vec<i64>, i64> {
        taken.map(|records| records.iter().map(|record| record.offset).collect())
    }

    #[test]
    fn a_batch_starts_at_the_next_offset_and_stops_at_the_first_hole() {
        // Goal: a fetch that holds a later batch but not an earlier one never moves the offset past the earlier one.
        assert_eq!(offsets(gapless(records(&[12, 10, 11, 15, 16]), 10, false)), Ok(vec![10, 11, 12]));
        assert_eq!(offsets(gapless(records(&[8, 9, 10, 11]), 10, false)), Ok(vec![10, 11]));
        assert_eq!(offsets(gapless(records(&[10, 10, 11]), 10, false)), Ok(vec![10, 11]));
        assert_eq!(offsets(gapless(records(&[15, 16]), 10, false)), Err(15));
        assert_eq!(offsets(gapless(records(&[]), 10, false)), Ok(vec![]));
    }

    #[test]
    fn a_hole_that_lasted_is_read_past_up_to_the_next_hole() {
        // Goal: once a hole is given up on, the batch is the gapless run from the first record on.
        assert_eq!(offsets(gapless(records(&[15, 16, 18]), 10, true)), Ok(vec![15, 16]));
    }

    #[test]
    fn a_hole_is_read_past_only_after_the_wait_and_enough_fetches() {
        // Goal: neither a short hole nor one seen once before a long broker pause is read past.
        let (wait, start) = (Duration::from_secs(30), Instant::now());
        let mut gap = GapWatch::default();
        assert!(gap.observe(10, start), "a new hole");
        assert!(!gap.lasted(10, wait, start + Duration::from_secs(60)), "one fetch is not enough");
        for _ in 1..GAP_FETCHES_MIN {
            assert!(!gap.observe(10, start + Duration::from_secs(1)), "the same hole");
        }
        assert!(!gap.lasted(10, wait, start + Duration::from_secs(29)), "not for long enough");
        assert!(gap.lasted(10, wait, start + Duration::from_secs(30)));
        assert!(!gap.lasted(11, wait, start + Duration::from_secs(30)), "another offset starts afresh");
        assert!(gap.observe(11, start + Duration::from_secs(30)));
        assert!(!gap.lasted(11, wait, start + Duration::from_secs(90)));
    }
}
