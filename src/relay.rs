//! The outbox relay (inside the `api` process): moves each category's outbox stream
//! (`P:{c:C}:outbox`) to the Kafka topic.
//!
//! # How an entry travels
//! 1. A Lua script appends the event to the category's stream in the same script as
//!    the state change, so an event exists for every change a client was told about.
//! 2. Each process runs one relay loop over the categories whose [`lease`] it holds.
//!    A round reads the oldest entries of every such stream in one pipelined round
//!    trip (`XRANGE - + COUNT RELAY_BATCH_RECORDS_MAX` each), keys each record by
//!    reservation id and produces each partition's records of all categories in one
//!    LZ4-compressed request, each stream's records in stream order. One round makes
//!    at most one produce request per partition, however many categories are on sale.
//! 3. Then each stream is trimmed (`XTRIM MINID`) up to its first entry whose produce
//!    failed, or past the last entry read when all were acknowledged; whole stream
//!    nodes are freed at once, where deleting id by id (`XDEL`) seeks each entry. A
//!    crash before the trim leaves the entries in the stream; the next lease holder
//!    publishes them again with the same event ids (duplicates are allowed; the
//!    worker drops them), as it does with acknowledged entries that sat behind a failed one.
//!
//! Each partition's records go out in requests of at most `RELAY_PRODUCE_BYTES_MAX`
//! bytes, one after the other; a request the broker refuses as too large is halved,
//! and a record too large on its own goes to the dead-letter stream (see [`publisher`]).
//!
//! Per-reservation order holds because a reservation's events are all in one stream
//! (its category's), one relay at a time reads that stream oldest first, a round is
//! finished before the next is read, and all of a reservation's records go to one
//! partition. After a partial failure the unacknowledged entries stay at the head of
//! the stream and go out before anything newer.
//!
//! # When the broker is down
//! Sales go on and the streams grow (the reserve script sheds with 503 past
//! `OUTBOX_BACKLOG_MAX`). The process's one relay loop retries failed rounds with capped
//! exponential backoff and reconnects; when the broker is back, the backlog drains oldest first.

pub mod lease;
pub mod publisher;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::infrastructure::RedisConnection;
use tokio_util::sync::CancellationToken;

use crate::ids::CategoryId;
use crate::kafka::KafkaError;
use crate::keyspace::Keyspace;
use crate::outbox::{self, ReservationEvent};
use crate::retry::{Backoff, sleep_unless_stopped};
use lease::Lease;
use publisher::{Broker, EncodedBatch, Origin, Outgoing, PublisherOptions};
use rskafka::record::Record;
use tracing::Instrument;

use crate::telemetry::trace_context::TraceParent;

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
    /// Most entries read per category per round.
    pub batch_records_max: usize,
    /// Pause after a round in which no stream was full.
    pub linger: Duration,
    /// Longest pause between reads of an empty stream.
    pub idle_interval: Duration,
    /// Lease TTL.
    pub lease_ttl: Duration,
    /// Longest backoff pause.
    pub backoff_max: Duration,
}

impl RelayOptions {
    /// The options, if the lease outlives the slowest round (a publish that times out
    /// plus a backoff pause) with room for a renewal.
    pub fn validated(self) -> Result<Self, RelayConfigError> {
        let slowest_round = self.publisher.timeout + self.backoff_max;
        if slowest_round * 3 > self.lease_ttl * 2 {
            return Err(RelayConfigError(format!(
                "RELAY_LEASE_TTL ({:?}) must be at least 1.5 × (RELAY_PUBLISH_TIMEOUT + RELAY_BACKOFF_MAX) = {:?}",
                self.lease_ttl,
                slowest_round * 3 / 2
            )));
        }
        Ok(self)
    }
}

/// Runs the relay until `stop` fires, then flushes what it can, releases its leases
/// and returns. Cancel `stop` after the HTTP server has drained, so the events of the
/// last requests go out too.
pub async fn run(redis: RedisConnection, keys: Keyspace, options: RelayOptions, stop: CancellationToken) {
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
    let mut relay = Relay { redis, keys, options, broker, token, streams: Vec::new() };
    relay.run(&stop).await;
    tracing::info!("relay stopped");
}

/// A category's outbox stream while this process holds its lease.
struct LeasedStream {
    category: CategoryId,
    key: String,
    lease: Lease,
    renewed_at: Instant,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy)]
struct Round {
    /// Entries read from all streams.
    read: usize,
    /// Whether some stream had at least a full batch, so there is more to read at once.
    full: bool,
}

/// The entries a round read from one stream, oldest first.
struct StreamEntries {
    ids: Vec<String>,
}

/// This process's relay: the streams it holds leases on and the broker connection.
struct Relay {
    redis: RedisConnection,
    keys: Keyspace,
    options: RelayOptions,
    broker: Arc<Broker>,
    token: String,
    streams: Vec<LeasedStream>,
}

impl Relay {
    async fn run(&mut self, stop: &CancellationToken) {
        let mut discovered_at: Option<Instant> = None;
        let mut idle_pause = self.options.linger;
        let mut backoff = Backoff::new(self.options.backoff_max);
        while !stop.is_cancelled() {
            if discovered_at.is_none_or(|at| at.elapsed() >= DISCOVERY_INTERVAL) {
                self.discover().await;
                discovered_at = Some(Instant::now());
            }
            self.renew_leases().await;
            let pause = match self.relay_round().await {
                Ok(round) if round.read == 0 => {
                    let pause = idle_pause;
                    idle_pause = (idle_pause * 2).min(self.options.idle_interval);
                    pause
                }
                Ok(round) => {
                    backoff.reset();
                    idle_pause = self.options.linger;
                    if round.full { Duration::ZERO } else { self.options.linger }
                }
                Err(error) => {
                    tracing::warn!(%error, "relay round failed; backing off");
                    backoff.next_pause()
                }
            };
            if !pause.is_zero() && !sleep_unless_stopped(pause, stop).await {
                break;
            }
        }
        self.flush_and_release().await;
    }

    /// Takes the lease of every category whose outbox nobody relays.
    async fn discover(&mut self) {
        let categories: Vec<i64> =
            match redis::cmd("SMEMBERS").arg(self.keys.categories()).query_async(&mut self.redis).await {
                Ok(categories) => categories,
                Err(error) => {
                    tracing::warn!(%error, "relay cannot list categories; retrying");
                    return;
                }
            };
        for category in categories.into_iter().filter_map(CategoryId::new) {
            if self.streams.iter().any(|stream| stream.category == category) {
                continue;
            }
            let lease = Lease::new(self.keys.relay_lease(category), self.token.clone(), self.options.lease_ttl);
            match lease.acquire(&mut self.redis).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    tracing::warn!(%error, "relay cannot take a lease; retrying");
                    return;
                }
            }
            tracing::info!(category = category.get(), "relaying outbox");
            let key = self.keys.outbox(category);
            self.streams.push(LeasedStream { category, key, lease, renewed_at: Instant::now() });
        }
    }

    /// Renews the leases that are due; drops the streams whose lease another process took.
    async fn renew_leases(&mut self) {
        let mut index = 0;
        while index < self.streams.len() {
            let stream = &mut self.streams[index];
            if stream.renewed_at.elapsed() >= stream.lease.renew_interval() {
                match stream.lease.renew(&mut self.redis).await {
                    Ok(true) => stream.renewed_at = Instant::now(),
                    Ok(false) => {
                        tracing::warn!(category = stream.category.get(), "relay lease taken over; stopping");
                        self.streams.swap_remove(index);
                        continue;
                    }
                    Err(error) => tracing::warn!(%error, "relay cannot renew its lease; retrying"),
                }
            }
            index += 1;
        }
    }

    /// On shutdown: publish what is in the streams while rounds succeed and some stream
    /// stays full, then release the leases so another process takes over at once.
    /// Whatever is left stays in the streams for the next lease holder.
    async fn flush_and_release(&mut self) {
        loop {
            match self.relay_round().await {
                Ok(round) if round.full => continue,
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, "relay flush on shutdown failed");
                    break;
                }
            }
        }
        for stream in &self.streams {
            if let Err(error) = stream.lease.release(&mut self.redis).await {
                tracing::warn!(%error, "relay cannot release its lease; it lapses by itself");
            }
        }
    }

    /// One round: read the oldest entries of every leased stream, publish them, trim
    /// what was acknowledged.
    async fn relay_round(&mut self) -> Result<Round, RelayError> {
        if self.streams.is_empty() {
            return Ok(Round::default());
        }
        let mut pipe = redis::pipe();
        for stream in &self.streams {
            pipe.cmd("XRANGE").arg(&stream.key).arg("-").arg("+").arg("COUNT").arg(self.options.batch_records_max);
        }
        let mut replies: Vec<Vec<(String, Vec<String>)>> = pipe.query_async(&mut self.redis).await?;
        self.keep_replicated(&mut replies).await;
        let read: usize = replies.iter().map(Vec::len).sum();
        let full = replies.iter().any(|entries| entries.len() >= self.options.batch_records_max);
        if read == 0 {
            return Ok(Round { read, full });
        }
        let publisher = self.broker.publisher().await?;
        let partition_count = publisher.partition_count();
        // Parsing and encoding a round is the relay's CPU work; a blocking thread keeps
        // it from delaying the requests queued on the async workers.
        let prepared = tokio::task::spawn_blocking(move || prepare(replies, partition_count))
            .await
            .expect("preparing a round does not panic");
        for malformed in &prepared.malformed {
            metrics::counter!("relay_malformed_entries_total").increment(1);
            self.dead_letter(malformed).await?;
        }
        let (batch, read_entries) = (prepared.batch, prepared.read_entries);
        metrics::histogram!("relay_batch_records").record(batch.len() as f64);
        let span = publisher::publish_span(&self.options.publisher.topic, batch.len(), &prepared.traces);
        let started = Instant::now();
        let outcomes = publisher.publish(batch).instrument(span.clone()).await;
        metrics::histogram!("relay_publish_duration_seconds").record(started.elapsed().as_secs_f64());
        let mut first_failed: Vec<Option<usize>> = vec![None; read_entries.len()];
        let mut acknowledged = 0;
        let mut failure = None;
        for outcome in outcomes {
            acknowledged += outcome.acknowledged.len();
            for (origin, record) in &outcome.oversized {
                metrics::counter!("relay_oversized_records_total").increment(1);
                self.dead_letter(&DeadEntry::oversized(*origin, record, &read_entries)).await?;
            }
            if let Some((origins, error)) = outcome.failed {
                metrics::counter!("relay_publish_errors_total").increment(1);
                tracing::debug!(partition = outcome.partition, %error, "produce failed");
                for origin in origins {
                    let first = &mut first_failed[origin.stream];
                    *first = Some(first.map_or(origin.position, |first| first.min(origin.position)));
                }
                failure = Some(error);
            }
        }
        if failure.is_some() {
            publisher::publish_failed(&span);
            self.broker.discard(&publisher).await;
        }
        self.trim(&read_entries, &first_failed).await?;
        metrics::counter!("relay_events_published_total").increment(acknowledged as u64);
        if let Some(error) = failure {
            return Err(error.into());
        }
        Ok(Round { read, full })
    }

    /// Keeps only what a replica holds: for each stream it read entries from, a marker
    /// write and a `WAIT` on the stream's master (see `infrastructure::replication`);
    /// a stream whose replicas do not acknowledge in time is left for a later round.
    /// So nothing reaches the broker that a failover can still lose, whoever wrote it.
    async fn keep_replicated(&self, replies: &mut [Vec<(String, Vec<String>)>]) {
        if self.redis.replica_ack().replicas == 0 {
            return;
        }
        let mut waits = tokio::task::JoinSet::new();
        for (index, (entries, stream)) in replies.iter().zip(&self.streams).enumerate() {
            if entries.is_empty() {
                continue;
            }
            let mut redis = self.redis.clone();
            let marker = self.keys.replica_marker(stream.category);
            let category = stream.category;
            waits.spawn(async move {
                let held = redis.wait_behind(&marker).await;
                if let Err(error) = &held {
                    tracing::warn!(category = category.get(), %error, "outbox entries wait for a replica");
                }
                (index, held.is_ok())
            });
        }
        let mut held = vec![false; replies.len()];
        while let Some(joined) = waits.join_next().await {
            // A wait that panicked proves nothing: its stream waits for a later round.
            if let Ok((index, true)) = joined {
                held[index] = true;
            }
        }
        for (entries, held) in replies.iter_mut().zip(held) {
            if !held {
                entries.clear();
            }
        }
    }

    /// Trims each stream up to its first failed entry, or past its last entry read.
    async fn trim(&mut self, read_entries: &[StreamEntries], first_failed: &[Option<usize>]) -> Result<(), RelayError> {
        let mut pipe = redis::pipe();
        let mut trims = 0;
        for (stream, entries) in read_entries.iter().enumerate() {
            let Some(threshold) = trim_threshold(&entries.ids, first_failed[stream]) else { continue };
            pipe.cmd("XTRIM").arg(&self.streams[stream].key).arg("MINID").arg(threshold).ignore();
            trims += 1;
        }
        if trims > 0 {
            let () = pipe.query_async(&mut self.redis).await?;
        }
        Ok(())
    }

    /// Moves an entry that cannot be published (not a valid event, a bug in a script;
    /// or a record the broker refuses as too large even alone) to the category's
    /// dead-letter stream `…:outbox:dead`, atomically, so it neither blocks the stream
    /// nor disappears.
    async fn dead_letter(&mut self, entry: &DeadEntry) -> Result<(), RelayError> {
        let DeadEntry { stream, entry_id, fields, reason } = entry;
        let stream = &self.streams[*stream];
        tracing::error!(category = stream.category.get(), entry_id, reason, ?fields, "outbox entry dead-lettered");
        let mut pipe = redis::pipe();
        pipe.atomic();
        let add = pipe.cmd("XADD").arg(format!("{}:dead", stream.key)).arg("*");
        add.arg("entry_id").arg(entry_id).arg("reason").arg(reason);
        for (field, value) in fields {
            add.arg(field).arg(value);
        }
        pipe.ignore().cmd("XDEL").arg(&stream.key).arg(entry_id).ignore();
        let () = pipe.query_async(&mut self.redis).await?;
        Ok(())
    }
}

/// A stream entry that cannot be published, with its fields and why.
struct DeadEntry {
    stream: usize,
    entry_id: String,
    fields: Vec<(String, String)>,
    reason: String,
}

impl DeadEntry {
    /// The entry of a record the broker refused as too large on its own; the dead
    /// letter keeps the record value (the event as JSON).
    fn oversized(origin: Origin, record: &Record, read_entries: &[StreamEntries]) -> Self {
        let payload = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned();
        Self {
            stream: origin.stream,
            entry_id: read_entries[origin.stream].ids[origin.position].clone(),
            fields: vec![("payload".to_owned(), payload)],
            reason: "the broker refuses the record as too large (MESSAGE_TOO_LARGE)".to_owned(),
        }
    }
}

/// A round's replies turned into records, with the ids read from each stream, the
/// malformed entries and the traces of the requests whose events the records carry.
struct Prepared {
    batch: EncodedBatch,
    read_entries: Vec<StreamEntries>,
    malformed: Vec<DeadEntry>,
    traces: Vec<TraceParent>,
}

/// Turns a round's replies into records for a topic of `partition_count` partitions.
fn prepare(replies: Vec<Vec<(String, Vec<String>)>>, partition_count: i32) -> Prepared {
    let mut batch = Vec::with_capacity(replies.iter().map(Vec::len).sum());
    let mut read_entries = Vec::with_capacity(replies.len());
    let mut malformed = Vec::new();
    let mut traces = Vec::new();
    for (stream, entries) in replies.into_iter().enumerate() {
        let mut ids = Vec::with_capacity(entries.len());
        for (position, (entry_id, flat)) in entries.into_iter().enumerate() {
            let fields = outbox::field_map(flat);
            match ReservationEvent::from_fields(&fields) {
                Ok(event) => {
                    let traceparent = outbox::traceparent(&fields);
                    if let Some(traceparent) = &traceparent
                        && traces.len() < publisher::PUBLISH_LINKS_MAX
                    {
                        traces.push(traceparent.clone());
                    }
                    batch.push(Outgoing { origin: Origin { stream, position }, event, traceparent });
                }
                Err(error) => malformed.push(DeadEntry {
                    stream,
                    entry_id: entry_id.clone(),
                    fields: fields.into_iter().collect(),
                    reason: error.to_string(),
                }),
            }
            ids.push(entry_id);
        }
        read_entries.push(StreamEntries { ids });
    }
    Prepared { batch: EncodedBatch::encode(batch, partition_count), read_entries, malformed, traces }
}

/// Where to trim a stream whose entries `ids` (oldest first) a round read: below its
/// first entry whose produce failed, or past the last one when all were acknowledged;
/// `None` when nothing may go.
fn trim_threshold(ids: &[String], first_failed: Option<usize>) -> Option<String> {
    match first_failed {
        Some(0) => None,
        Some(position) => ids.get(position).cloned(),
        None => ids.last().map(|last| next_entry_id(last)),
    }
}

/// The smallest stream id after `id` (`ms-seq`): trimming below it removes `id` and
/// everything older, and nothing appended later (stream ids only grow).
fn next_entry_id(id: &str) -> String {
    let parsed = id.split_once('-').and_then(|(ms, seq)| Some((ms.parse::<u64>().ok()?, seq.parse::<u64>().ok()?)));
    match parsed {
        Some((ms, u64::MAX)) => format!("{}-0", ms + 1),
        Some((ms, seq)) => format!("{ms}-{}", seq + 1),
        // Redis only makes `ms-seq` ids; anything else trims nothing.
        None => "0-1".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_entry_and_everything_after_it_stay() {
        let ids: Vec<String> = ["1-0", "1-1", "2-0"].map(String::from).to_vec();
        assert_eq!(trim_threshold(&ids, None), Some("2-1".to_owned()));
        assert_eq!(trim_threshold(&ids, Some(1)), Some("1-1".to_owned()));
        assert_eq!(trim_threshold(&ids, Some(0)), None);
        assert_eq!(trim_threshold(&[], None), None);
    }

    #[test]
    fn trimming_below_the_next_id_removes_exactly_what_was_read() {
        assert_eq!(next_entry_id("1700000000000-0"), "1700000000000-1");
        assert_eq!(next_entry_id("1700000000000-41"), "1700000000000-42");
        assert_eq!(next_entry_id(&format!("5-{}", u64::MAX)), "6-0");
        assert_eq!(next_entry_id("garbage"), "0-1");
    }
}
