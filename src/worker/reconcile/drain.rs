//! The drain check: reconcile compares only once every outbox entry present at the start
//! has been relayed and the worker has consumed every record the topic held then.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::report::Drain;
use crate::config::WorkerConfig;
use crate::infrastructure::RedisConnection;
use crate::kafka;
use crate::keyspace::Keyspace;
use crate::stock::StockTerms;

/// Pause between drain checks.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Deadline of each broker call of the drain check.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn relayed_outboxes(
    redis: &RedisConnection,
    keys: &Keyspace,
    terms: &[StockTerms],
    timeout: Duration,
) -> Result<bool, redis::RedisError> {
    let mut redis = redis.clone();
    let mut waiting = Vec::new();
    for category in terms {
        let stream = keys.outbox(category.category_id);
        let last: Vec<(String, Vec<String>)> =
            redis::cmd("XREVRANGE").arg(&stream).arg("+").arg("-").arg("COUNT").arg(1).query_async(&mut redis).await?;
        if let Some((last_id, _)) = last.into_iter().next() {
            waiting.push((stream, last_id));
        }
    }
    let started = Instant::now();
    while !waiting.is_empty() {
        if started.elapsed() >= timeout {
            return Ok(false);
        }
        tokio::time::sleep(DRAIN_POLL_INTERVAL).await;
        let mut still = Vec::new();
        for (stream, last_id) in waiting {
            let left: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
                .arg(&stream)
                .arg("-")
                .arg(&last_id)
                .arg("COUNT")
                .arg(1)
                .query_async(&mut redis)
                .await?;
            if !left.is_empty() {
                still.push((stream, last_id));
            }
        }
        waiting = still;
    }
    Ok(true)
}

/// Snapshots each partition's high watermark, then waits until the stored offsets
/// reach it (events published later do not matter for what was there before).
pub async fn wait_for_drain(
    config: &WorkerConfig,
    security: &kafka::KafkaSecurity,
    database: &PgPool,
    timeout: Duration,
) -> Drain {
    let watermarks = match high_watermarks(config, security, database).await {
        Ok(watermarks) => watermarks,
        Err(error) => return Drain::Unknown(error.to_string()),
    };
    let started = Instant::now();
    loop {
        let stored: Vec<(i32, i64)> = match sqlx::query_as(include_str!("../topic_offsets.sql"))
            .bind(&config.shared.kafka_topic)
            .fetch_all(database)
            .await
        {
            Ok(stored) => stored,
            Err(error) => return Drain::Unknown(error.to_string()),
        };
        let stored: HashMap<i32, i64> = stored.into_iter().collect();
        let behind: i64 = watermarks
            .iter()
            .map(|(partition, watermark)| (watermark - stored.get(partition).copied().unwrap_or(0)).max(0))
            .sum();
        if behind == 0 {
            return Drain::Drained;
        }
        if started.elapsed() >= timeout {
            return Drain::Behind { records: behind };
        }
        tokio::time::sleep(DRAIN_POLL_INTERVAL).await;
    }
}

/// The high watermark of every partition, from fetch responses (tansu's `Latest`
/// offset is not reliable after batched produces).
async fn high_watermarks(
    config: &WorkerConfig,
    security: &kafka::KafkaSecurity,
    database: &PgPool,
) -> Result<BTreeMap<i32, i64>, kafka::KafkaError> {
    let client =
        kafka::connect_secured(&config.shared.kafka_brokers, security, "stampede-reconcile", BROKER_TIMEOUT).await?;
    let topics = kafka::within(BROKER_TIMEOUT, client.list_topics()).await?;
    let Some(topic) = topics.into_iter().find(|topic| topic.name == config.shared.kafka_topic) else {
        return Ok(BTreeMap::new());
    };
    let stored: Vec<(i32, i64)> = sqlx::query_as(include_str!("../topic_offsets.sql"))
        .bind(&config.shared.kafka_topic)
        .fetch_all(database)
        .await
        .unwrap_or_default();
    let stored: HashMap<i32, i64> = stored.into_iter().collect();
    let mut watermarks = BTreeMap::new();
    for partition in topic.partitions {
        let partition_client =
            kafka::partition_client(&client, &config.shared.kafka_topic, partition, BROKER_TIMEOUT).await?;
        let from = stored.get(&partition).copied().unwrap_or(0);
        let fetched = kafka::within(BROKER_TIMEOUT, partition_client.fetch_records(from, 1..2, 0)).await;
        let watermark = match fetched {
            Ok((_, watermark)) => watermark,
            // The stored offset is past the log (topic recreated): nothing to wait for.
            Err(error) if error.is_offset_out_of_range() => from,
            Err(error) => return Err(error),
        };
        watermarks.insert(partition, watermark);
    }
    Ok(watermarks)
}
