//! Replica acknowledgment: a state change is acknowledged to a client only once
//! `REDIS_REPLICAS_ACK` replicas of the master that took it hold it (contract,
//! "Durability").
//!
//! # How a write is acknowledged
//! The script and a `WAIT` go together, as one pipeline, on the connection to the master
//! of the script's first key's slot: Redis answers `WAIT` once the replicas have
//! acknowledged every write of that connection so far, so it covers the script's writes
//! (and those of the other requests pipelined before it, which is harmless). Sent as one
//! unit, both land on the same node even if the cluster's slot map changes meanwhile: a
//! `WAIT` on another node would answer for writes it never saw. One `WAIT` per script call,
//! so a group-commit batch waits once for all its requests.
//!
//! # How many replicas, per master, at run time
//! A master waits for `min(REDIS_REPLICAS_ACK, replicas it has)`, where "replicas it has"
//! is learnt at run time and refreshed every [`REPLICA_COUNT_REFRESH`]: on one Redis the
//! replicas `ROLE` lists as connected, on a cluster the replicas `CLUSTER SLOTS` lists for
//! the slot's master (Redis leaves out replicas it considers failed). So a single Redis
//! without a replica waits for nothing, and a replica promoted after a failover, which has
//! no replica of its own yet, does not wait either, while a paused replica still counts
//! (Redis marks it failed only after the cluster's node timeout) and makes the writes of
//! its master answer 503 until it is back. When the count cannot be learnt, the master is
//! assumed to have `REDIS_REPLICAS_ACK` replicas: wrongly waiting costs a 503, wrongly not
//! waiting could lose an acknowledged sale.
//!
//! # Writes the process did not make itself
//! `WAIT` covers only its own connection's writes. A reader that must know that entries
//! written by others are on a replica (the relay, before it publishes) first makes a write
//! of its own on that node, which comes after them in the replication stream, and waits
//! for that ([`crate::infrastructure::RedisConnection::wait_behind`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::{Cmd, Pipeline, Value};

/// How often the replica count of each master is learnt again.
pub const REPLICA_COUNT_REFRESH: Duration = Duration::from_secs(1);

/// What to wait for (`REDIS_REPLICAS_ACK`, `REDIS_REPLICAS_ACK_TIMEOUT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaAckOptions {
    /// Replicas that must hold a write (at most as many as the master has); 0: no wait.
    pub replicas: u32,
    /// Longest wait for them.
    pub timeout: Duration,
}

impl ReplicaAckOptions {
    /// No waiting at all.
    pub const OFF: Self = Self { replicas: 0, timeout: Duration::ZERO };
}

/// Slot ranges of a cluster with the replica count of their master: (first, last, replicas).
pub type SlotReplicas = Vec<(u16, u16, u32)>;

/// What the process knows of the masters' replicas.
#[derive(Debug, Default)]
struct Known {
    /// One Redis: its connected replicas, and when that was learnt.
    single: Option<(u32, Instant)>,
    /// A cluster: slot ranges (first, last, replicas of their master), and when learnt.
    cluster: Option<(SlotReplicas, Instant)>,
    /// A refresh is running: the others use what is known meanwhile.
    refreshing: bool,
}

/// The replica-acknowledgment policy of one Redis connection.
#[derive(Debug)]
pub struct Replication {
    options: ReplicaAckOptions,
    known: Mutex<Known>,
}

/// Why a write was not acknowledged.
pub fn not_acknowledged(replicas: i64, wanted: u32) -> redis::RedisError {
    metrics::counter!("redis_replica_ack_timeouts_total").increment(1);
    redis::RedisError::from((
        redis::ErrorKind::Io,
        "replicas did not acknowledge the write in time",
        format!("{replicas} of {wanted}"),
    ))
}

impl Replication {
    /// A policy with `options`.
    pub fn new(options: ReplicaAckOptions) -> Self {
        Self { options, known: Mutex::new(Known::default()) }
    }

    /// The options.
    pub fn options(&self) -> ReplicaAckOptions {
        self.options
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many replicas a write to `slot` waits for (`None` on one Redis), from what
    /// is known; `stale` when that should be learnt again (and no one is at it).
    pub fn wanted(&self, slot: Option<u16>) -> (u32, bool) {
        if self.options.replicas == 0 {
            return (0, false);
        }
        let mut known = self.lock();
        let (count, learnt) = match slot {
            None => known.single.map_or((None, None), |(count, at)| (Some(count), Some(at))),
            Some(slot) => match &known.cluster {
                Some((ranges, at)) => (replicas_of_slot(ranges, slot), Some(*at)),
                None => (None, None),
            },
        };
        let stale = learnt.is_none_or(|at| at.elapsed() >= REPLICA_COUNT_REFRESH) && !known.refreshing;
        if stale {
            known.refreshing = true;
        }
        (count.unwrap_or(self.options.replicas).min(self.options.replicas), stale)
    }

    /// Records a refresh's result (`None`: it failed; what was known stays).
    pub fn learnt(&self, single: Option<u32>, cluster: Option<SlotReplicas>) {
        let mut known = self.lock();
        let now = Instant::now();
        if let Some(count) = single {
            known.single = Some((count, now));
        }
        if let Some(ranges) = cluster {
            known.cluster = Some((ranges, now));
        }
        known.refreshing = false;
    }

    /// The pipeline of a write followed by `WAIT wanted timeout`.
    pub fn with_wait(&self, mut pipeline: Pipeline, wanted: u32) -> Pipeline {
        let timeout_ms = u64::try_from(self.options.timeout.as_millis()).unwrap_or(u64::MAX).max(1);
        pipeline.add_command(redis::cmd("WAIT").arg(wanted).arg(timeout_ms).clone());
        pipeline
    }

    /// Checks the last reply of a [`Replication::with_wait`] pipeline.
    pub fn check_wait(reply: &Value, wanted: u32) -> redis::RedisResult<()> {
        let acknowledged = match reply {
            Value::Int(count) => *count,
            Value::ServerError(error) => {
                return Err(redis::RedisError::from((redis::ErrorKind::Io, "WAIT failed", format!("{error:?}"))));
            }
            _ => 0,
        };
        if acknowledged >= i64::from(wanted) { Ok(()) } else { Err(not_acknowledged(acknowledged, wanted)) }
    }
}

/// The replicas of the master of `slot` in `ranges`.
fn replicas_of_slot(ranges: &[(u16, u16, u32)], slot: u16) -> Option<u32> {
    ranges.iter().find(|(first, last, _)| (*first..=*last).contains(&slot)).map(|(_, _, replicas)| *replicas)
}

/// The connected replicas in a `ROLE` reply: `["master", offset, [[ip, port, offset]...]]`;
/// a replica has none to wait for.
pub fn replicas_in_role(reply: &Value) -> Option<u32> {
    let Value::Array(items) = reply else { return None };
    match (items.first(), items.get(2)) {
        (Some(Value::BulkString(role)), Some(Value::Array(replicas))) if role.as_slice() == b"master" => {
            u32::try_from(replicas.len()).ok()
        }
        (Some(Value::BulkString(_)), _) => Some(0),
        _ => None,
    }
}

/// Slot ranges and their masters' replica counts in a `CLUSTER SLOTS` reply: each item is
/// `[first, last, master, replica...]`.
pub fn replicas_in_cluster_slots(reply: &Value) -> Option<SlotReplicas> {
    let Value::Array(items) = reply else { return None };
    let mut ranges = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(fields) = item else { return None };
        let (Some(Value::Int(first)), Some(Value::Int(last))) = (fields.first(), fields.get(1)) else { return None };
        let replicas = u32::try_from(fields.len().saturating_sub(3)).ok()?;
        ranges.push((u16::try_from(*first).ok()?, u16::try_from(*last).ok()?, replicas));
    }
    Some(ranges)
}

/// How long a marker write stays.
const MARKER_TTL_MS: u64 = 60_000;

/// The marker write that a `WAIT` after it makes cover every earlier write to the node:
/// `key` with `:replica-marker` appended (the same hash tag, so the same slot), kept
/// for a minute. (Writing it always propagates, which a write that changes nothing
/// would not.)
pub fn marker_write(key: &[u8]) -> Cmd {
    let mut marker = key.to_vec();
    if !marker.ends_with(b":replica-marker") {
        marker.extend_from_slice(b":replica-marker");
    }
    redis::cmd("SET").arg(marker).arg(1).arg("PX").arg(MARKER_TTL_MS).clone()
}

/// Slots of a Redis Cluster.
const SLOTS: u16 = 16_384;

/// The cluster slot of `key`: CRC16 (XMODEM) of its hash tag, or of the whole key
/// without one, modulo 16384, as Redis computes it.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|byte| *byte == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter().position(|byte| *byte == b'}').map(|close| &rest[..close])
        })
        .filter(|tag| !tag.is_empty());
    let mut crc: u16 = 0;
    for byte in tagged.unwrap_or(key) {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 == 0 { crc << 1 } else { (crc << 1) ^ 0x1021 };
        }
    }
    crc % SLOTS
}

/// Counts the replica-acknowledgment outcomes (for the metrics).
pub fn count_wait(started: Instant) {
    metrics::histogram!("redis_replica_ack_seconds").record(started.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn key_slots_are_redis_cluster_slots() {
        assert_eq!(key_slot(b"123456789"), 12_739);
        assert_eq!(key_slot(b"p:{c:1}:stock"), key_slot(b"c:1"));
        assert_eq!(key_slot(b"a{}b"), key_slot(b"a{}b"), "an empty tag hashes the whole key");
        assert_ne!(key_slot(b"{c:1}"), key_slot(b"{c:2}"));
    }

    #[test]
    fn role_counts_connected_replicas() {
        let replica = Value::Array(vec![bulk("127.0.0.1"), bulk("7001"), bulk("10")]);
        let master = Value::Array(vec![bulk("master"), Value::Int(10), Value::Array(vec![replica])]);
        assert_eq!(replicas_in_role(&master), Some(1));
        let alone = Value::Array(vec![bulk("master"), Value::Int(0), Value::Array(vec![])]);
        assert_eq!(replicas_in_role(&alone), Some(0));
        let slave = Value::Array(vec![bulk("slave"), bulk("127.0.0.1"), Value::Int(7000)]);
        assert_eq!(replicas_in_role(&slave), Some(0));
        assert_eq!(replicas_in_role(&Value::Nil), None);
    }

    #[test]
    fn cluster_slots_give_each_range_its_replicas() {
        let node = |port: i64| Value::Array(vec![bulk("127.0.0.1"), Value::Int(port), bulk("id")]);
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Int(0), Value::Int(5460), node(7000), node(7003)]),
            Value::Array(vec![Value::Int(5461), Value::Int(10922), node(7001)]),
        ]);
        let ranges = replicas_in_cluster_slots(&reply).unwrap();
        assert_eq!(replicas_of_slot(&ranges, 0), Some(1));
        assert_eq!(replicas_of_slot(&ranges, 6000), Some(0), "a promoted replica without replicas");
        assert_eq!(replicas_of_slot(&ranges, 16000), None);
    }

    #[test]
    fn a_master_waits_for_at_most_the_replicas_it_has() {
        let policy = Replication::new(ReplicaAckOptions { replicas: 1, timeout: Duration::from_millis(500) });
        assert_eq!(policy.wanted(None), (1, true), "unknown: assume the setting, and learn");
        assert_eq!(policy.wanted(None), (1, false), "one refresh at a time");
        policy.learnt(Some(0), None);
        assert_eq!(policy.wanted(None).0, 0);
        policy.learnt(Some(2), None);
        assert_eq!(policy.wanted(None).0, 1);
        assert_eq!(Replication::new(ReplicaAckOptions::OFF).wanted(None), (0, false));
        assert!(Replication::check_wait(&Value::Int(1), 1).is_ok());
        assert!(Replication::check_wait(&Value::Int(0), 1).is_err());
    }
}
