//! `worker reconcile [--repair]`: compares, per category, the live stock in Redis
//! with the reservations in Postgres, once the pipeline has drained: it waits (up to
//! `RECONCILE_DRAIN_TIMEOUT`) until every entry that was in an outbox when it started
//! has been relayed, and then until the worker has consumed every record the topic
//! held at that point (high watermarks from fetch responses). Sales may go on meanwhile;
//! changes after that point can show as transient drift.
//!
//! # What counts as drift
//! For a category with stock: Redis `sold` against the confirmed tickets in Postgres,
//! Redis `held` against the held tickets in Postgres, and `available + held + sold ==
//! quota`. Within Redis, the live holds (the held and paying records that the
//! category's deadlines list) must add up to the stock's `held`, every deadline entry
//! must have its record, and each user's count in `holders` must equal their live held
//! tickets plus their confirmed tickets (from Postgres: Redis keeps no per-user sold
//! count, and confirmed records expire after 24 h). A hold whose record was lost while
//! its deadline stayed breaks all three, which is how such a leak shows. In a seated
//! category the seat bitmap must have exactly `held + sold` seats taken, among them
//! every seat Postgres shows as sold. Entries still in the category's outbox mean Postgres trails; such a row is
//! reported as `pending`, not drift. A provisioned category without stock is `missing`.
//! Reservations that Postgres has `confirmed` and Redis has not (held, paying, released,
//! or a record missing too soon to have expired) are sales a failover took back in
//! Redis: the category reads `behind` (see `restore_sales`).
//! The command exits 0 when every category is `ok` (or `repaired`), 1 otherwise.
//!
//! # What `--repair` restores, and what it cannot
//! The sales of a `behind` category are restored from Postgres, the ledger of sales,
//! each in one script, the stock's counts following (`restore_sales`).
//! Otherwise only a *missing* stock is rebuilt (an existing one is live truth and is never
//! overwritten), and only after the drain check passed. From Postgres it recreates,
//! in one script: the stock hash (`state open`, the category's terms, `sold` =
//! confirmed tickets, `held` = tickets of reservations still held, `available = quota
//! - sold - held`), the per-user counts (held + confirmed), and each held
//! reservation's record and deadline, so the owner can still confirm or cancel it and
//! the reaper expires it at its deadline (at once if it has passed) with an `expired`
//! event. Records of confirmed reservations are restored too, so a repeated confirm
//! still answers 200. Available never exceeds `quota - sold - active holds`.
//!
//! It cannot restore what only Redis knew:
//! - events still in the flushed outbox (they share the category's hash tag): a hold,
//!   confirm or cancel in the last moments before the loss that the relay had not yet
//!   published is unknown to Postgres, so its tickets come back as it was before;
//! - idempotency records (a retried request with an old key runs again), payment
//!   attempts waiting to be voided, records of cancelled and expired reservations
//!   (reads of those fall back to Postgres), and the `paying` state (restored as held).

mod comparison;
mod drain;
mod repair;
mod report;
mod restore_sales;

use std::time::Instant;

use sqlx::PgPool;

use crate::config::{ReconcileArgs, WorkerConfig};
use crate::infrastructure::{PersistenceError, RedisConnection};
use crate::keyspace::Keyspace;
use crate::stock::StockTerms;
use crate::{infrastructure, kafka, persistence};

use comparison::compare;
use drain::{relayed_outboxes, wait_for_drain};
use repair::repair;
pub use report::{CategoryReport, Drain, Finding, LiveHolds, PostgresTotals, ReconcileReport};

/// Why reconcile could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Postgres could not be reached or migrated.
    #[error(transparent)]
    Persistence(#[from] PersistenceError),
    /// A query failed.
    #[error("postgres: {0}")]
    Database(#[from] sqlx::Error),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A Redis TLS setting cannot be honoured.
    #[error(transparent)]
    RedisTls(#[from] infrastructure::RedisTlsError),
    /// A Kafka TLS or SASL setting cannot be honoured.
    #[error(transparent)]
    KafkaSecurity(#[from] kafka::KafkaSecurityError),
}

/// Runs reconcile (and the repair, if asked) and returns the report to print.
pub async fn run(config: &WorkerConfig, args: &ReconcileArgs) -> Result<ReconcileReport, ReconcileError> {
    let redis_target = infrastructure::RedisTarget::from_config(&config.shared)?;
    let kafka_security = kafka::KafkaSecurity::from_config(&config.shared)?;
    let database = infrastructure::connect_and_migrate(&config.shared.database_url, 2).await?;
    let redis = infrastructure::connect_redis_to(&redis_target).await?;
    let keys = Keyspace::new(config.shared.redis_key_prefix.clone());
    let terms: Vec<StockTerms> =
        sqlx::query_as(include_str!("provisioned_categories.sql")).fetch_all(&database).await?;
    let started = Instant::now();
    let drain = if relayed_outboxes(&redis, &keys, &terms, args.drain_timeout).await? {
        wait_for_drain(config, &kafka_security, &database, args.drain_timeout.saturating_sub(started.elapsed())).await
    } else {
        Drain::NotRelayed
    };
    let mut categories = Vec::with_capacity(terms.len());
    for category in &terms {
        let mut report = compare(&database, &redis, &keys, category).await?;
        if args.repair && report.finding == Finding::Behind {
            if drain == Drain::Drained {
                report = restore_behind(&database, &redis, &keys, category).await?;
            } else {
                tracing::warn!(
                    category = category.category_id.get(),
                    "not restoring sales: the pipeline has not drained"
                );
            }
        }
        if args.repair && report.finding == Finding::Missing {
            if drain == Drain::Drained {
                if repair(&database, &redis, &keys, category).await? {
                    report = compare(&database, &redis, &keys, category).await?;
                    report.finding = Finding::Repaired;
                }
            } else {
                tracing::warn!(category = category.category_id.get(), "not repairing: the pipeline has not drained");
            }
        }
        categories.push(report);
    }
    database.close().await;
    Ok(ReconcileReport { drain, categories })
}

/// Restores the sales of `terms` that are behind in Redis, and compares again: `repaired`
/// when nothing is behind any more (a sale whose tickets were sold again stays behind).
async fn restore_behind(
    database: &PgPool,
    redis: &RedisConnection,
    keys: &Keyspace,
    terms: &StockTerms,
) -> Result<CategoryReport, ReconcileError> {
    let open = persistence::reservations::open_reservations(database, terms.category_id).await?;
    let behind = restore_sales::behind(redis, keys, terms.category_id, &open).await?;
    restore_sales::restore(redis, keys, terms, &behind).await?;
    let mut report = compare(database, redis, keys, terms).await?;
    if report.behind == 0 && matches!(report.finding, Finding::Ok | Finding::Pending) {
        report.finding = Finding::Repaired;
    }
    Ok(report)
}
