//! Gauges whose truth lives in Redis, sampled every [`SAMPLE_INTERVAL`]:
//! `stock_tickets{category,state}`, `stock_quota_tickets{category}` and
//! `outbox_backlog_entries{category}`; plus the recorder's upkeep.
//!
//! Every API process samples the same Redis, so every replica exports the same values;
//! dashboards aggregate them with `max by (category)`, never `sum`.

use std::time::Duration;

use crate::infrastructure::RedisConnection;
use metrics_exporter_prometheus::PrometheusHandle;
use redis::AsyncCommands;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::ids::CategoryId;
use crate::keyspace::Keyspace;

/// How often the gauges are refreshed.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(2);
/// Longest one sampling round may take before it is abandoned.
pub const SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most categories sampled per round; more are skipped (lowest ids first are kept).
pub const CATEGORIES_MAX: usize = 10_000;
/// Categories per pipelined round trip.
const CATEGORIES_PER_PIPELINE: usize = 500;

/// Stock states exported as the `state` label, in the order the script reads them.
const STATES: [&str; 3] = ["available", "held", "sold"];

/// Samples every [`SAMPLE_INTERVAL`] until `shutdown` fires, and runs the recorder's
/// upkeep (draining histogram buffers) on the same beat, so memory stays bounded even
/// when nobody scrapes.
pub async fn run(mut redis: RedisConnection, keys: Keyspace, metrics: PrometheusHandle, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(SAMPLE_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        metrics.run_upkeep();
        let round = tokio::select! {
            _ = shutdown.cancelled() => return,
            round = tokio::time::timeout(SAMPLE_TIMEOUT, sample(&mut redis, &keys)) => round,
        };
        match round {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::debug!(%error, "stock sampling failed; will retry"),
            Err(_) => tracing::debug!("stock sampling timed out; will retry"),
        }
    }
}

/// One sampling round: sets the gauges of every listed category (at most
/// [`CATEGORIES_MAX`]) and returns how many were set. Categories whose stock is missing
/// are skipped, so a flushed category keeps its last values rather than reading as zero.
pub async fn sample(redis: &mut RedisConnection, keys: &Keyspace) -> Result<usize, redis::RedisError> {
    let members: Vec<String> = redis.smembers(keys.categories()).await?;
    let mut categories: Vec<CategoryId> =
        members.iter().filter_map(|member| member.parse().ok()).filter_map(CategoryId::new).collect();
    categories.sort_unstable();
    if categories.len() > CATEGORIES_MAX {
        tracing::warn!(count = categories.len(), kept = CATEGORIES_MAX, "too many categories to sample; skipping some");
        categories.truncate(CATEGORIES_MAX);
    }
    let mut sampled = 0;
    for chunk in categories.chunks(CATEGORIES_PER_PIPELINE) {
        let mut levels = redis::pipe();
        let mut backlogs = redis::pipe();
        for &category in chunk {
            levels.cmd("HMGET").arg(keys.stock(category)).arg(&["quota", STATES[0], STATES[1], STATES[2]]);
            backlogs.cmd("XLEN").arg(keys.outbox(category));
        }
        let (mut levels_connection, mut backlogs_connection) = (redis.clone(), redis.clone());
        // Both pipelines go out on the one multiplexed connection back to back.
        let (rows, lengths) = tokio::try_join!(
            levels.query_async::<Vec<[Option<i64>; 4]>>(&mut levels_connection),
            backlogs.query_async::<Vec<i64>>(&mut backlogs_connection),
        )?;
        for ((&category, row), backlog) in chunk.iter().zip(rows).zip(lengths) {
            if let [Some(quota), Some(available), Some(held), Some(sold)] = row {
                set_gauges(category, quota, [available, held, sold], backlog);
                sampled += 1;
            }
        }
    }
    Ok(sampled)
}

fn set_gauges(category: CategoryId, quota: i64, levels: [i64; 3], backlog: i64) {
    let label = category.get().to_string();
    metrics::gauge!("stock_quota_tickets", "category" => label.clone()).set(quota as f64);
    for (state, level) in STATES.into_iter().zip(levels) {
        metrics::gauge!("stock_tickets", "category" => label.clone(), "state" => state).set(level as f64);
    }
    metrics::gauge!("outbox_backlog_entries", "category" => label).set(backlog as f64);
}
