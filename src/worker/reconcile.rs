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

mod restore_sales;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use crate::infrastructure::RedisConnection;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::config::{ReconcileArgs, WorkerConfig};
use crate::contract::{Reservation, ReservationStatus};
use crate::ids::CategoryId;
use crate::infrastructure::PersistenceError;
use crate::keyspace::Keyspace;
use crate::milliseconds;
use crate::reservation::engine::with_record_layout;
use crate::reservation::{LEGACY_RECORD_FIELDS, record_field};
use crate::script::LuaScript;
use crate::seating::{self, SeatMap};
use crate::stock::{Levels, Stock, StockError};
use crate::{infrastructure, kafka, persistence};

// The layout's Lua definitions first: the script writes hold records.
static REPAIR_STOCK: std::sync::LazyLock<LuaScript> =
    std::sync::LazyLock::new(|| with_record_layout("repair_stock", include_str!("repair_stock.lua")));

/// How long restored records of confirmed reservations are kept: they only serve
/// replays and reads (restored held records have no TTL, like every live one).
const RESTORED_RECORD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Confirmed records written per pipeline.
const RESTORE_CHUNK_RECORDS: usize = 500;
/// Deadline entries read per round trip when counting live holds.
const LIVE_HOLDS_CHUNK: usize = 1000;
/// Reads of the live holds whose stock levels moved meanwhile, before giving up.
const LIVE_HOLDS_ATTEMPTS: usize = 3;
/// Pause between drain checks.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Deadline of each broker call of the drain check.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Whether Postgres has caught up with the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drain {
    /// Every partition's stored offset reached the high watermark seen at the start.
    Drained,
    /// Records still unconsumed when the drain timeout passed.
    Behind {
        /// Unconsumed records, all partitions; -1 when outbox entries were not even relayed.
        records: i64,
    },
    /// The broker could not be asked.
    Unknown(String),
}

/// The Postgres side of a category.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct PostgresTotals {
    /// Reservations held.
    pub held_reservations: i64,
    /// Tickets in them.
    pub held_tickets: i64,
    /// Reservations confirmed.
    pub confirmed_reservations: i64,
    /// Tickets in them.
    pub confirmed_tickets: i64,
}

/// What the live hold records of a category say, against its stock and per-user counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveHolds {
    /// Tickets in the held and paying records listed in the category's deadlines.
    pub held_tickets: i64,
    /// Deadline entries whose record is gone (lost by Redis: live records have no TTL).
    pub orphans: i64,
    /// Users whose `holders` count differs from their live held + confirmed tickets.
    pub users_off: i64,
}

impl LiveHolds {
    /// Whether the records agree with the stock's `held` and the per-user counts.
    pub fn agrees_with(&self, levels: &Levels) -> bool {
        self.held_tickets == levels.held && self.orphans == 0 && self.users_off == 0
    }
}

/// The outcome for one category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Redis and Postgres agree.
    Ok,
    /// The outbox still holds events; Postgres trails.
    Pending,
    /// Redis and Postgres disagree, or conservation is broken.
    Drift,
    /// The stock is missing from Redis.
    Missing,
    /// The stock was missing and has been rebuilt, or sales that were behind in Redis
    /// have been restored.
    Repaired,
    /// Reservations that Postgres has confirmed are behind in Redis (see `restore_sales`).
    Behind,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Pending => "pending",
            Self::Drift => "drift",
            Self::Missing => "missing",
            Self::Repaired => "repaired",
            Self::Behind => "behind",
        }
    }
}

/// One category's comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoryReport {
    /// The category.
    pub category_id: i64,
    /// Its quota (Postgres).
    pub quota: i64,
    /// Redis levels, if the stock exists (after a repair: the rebuilt levels).
    pub redis: Option<Levels>,
    /// The live hold records, if the stock exists.
    pub live: Option<LiveHolds>,
    /// Entries waiting in the category's outbox.
    pub outbox_entries: i64,
    /// Reservations confirmed in Postgres and behind in Redis (see `restore_sales`).
    pub behind: usize,
    /// Postgres totals.
    pub postgres: PostgresTotals,
    /// The outcome.
    pub verdict: Verdict,
}

impl CategoryReport {
    /// Redis held minus Postgres held tickets.
    pub fn held_drift(&self) -> Option<i64> {
        self.redis.map(|levels| levels.held - self.postgres.held_tickets)
    }

    /// Redis sold minus Postgres confirmed tickets.
    pub fn sold_drift(&self) -> Option<i64> {
        self.redis.map(|levels| levels.sold - self.postgres.confirmed_tickets)
    }
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Whether the pipeline had drained.
    pub drain: Drain,
    /// Per category, in id order.
    pub categories: Vec<CategoryReport>,
}

impl ReconcileReport {
    /// Whether anything is not `ok` or `repaired`, or the pipeline had not drained.
    pub fn has_drift(&self) -> bool {
        self.drain != Drain::Drained
            || self.categories.iter().any(|category| !matches!(category.verdict, Verdict::Ok | Verdict::Repaired))
    }
}

impl fmt::Display for ReconcileReport {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.drain {
            Drain::Drained => writeln!(out, "pipeline: drained")?,
            Drain::Behind { records: -1 } => {
                writeln!(out, "pipeline: outbox entries not yet relayed (drift may be transient)")?
            }
            Drain::Behind { records } => {
                writeln!(out, "pipeline: {records} records not yet consumed (drift may be transient)")?
            }
            Drain::Unknown(reason) => writeln!(out, "pipeline: drain unknown ({reason})")?,
        }
        writeln!(
            out,
            "{:>8} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9} {:>10} {:>10} {:>9} {:>10} {:>7} {:>8}",
            "category",
            "quota",
            "available",
            "held",
            "sold",
            "outbox",
            "pg_held",
            "pg_sold",
            "held_drift",
            "sold_drift",
            "live_held",
            "users_off",
            "behind",
            "status"
        )?;
        for row in &self.categories {
            let level =
                |pick: fn(&Levels) -> i64| row.redis.as_ref().map_or("-".to_owned(), |levels| pick(levels).to_string());
            let drift = |value: Option<i64>| value.map_or("-".to_owned(), |value| format!("{value:+}"));
            let live =
                |pick: fn(&LiveHolds) -> i64| row.live.as_ref().map_or("-".to_owned(), |live| pick(live).to_string());
            writeln!(
                out,
                "{:>8} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9} {:>10} {:>10} {:>9} {:>10} {:>7} {:>8}",
                row.category_id,
                row.quota,
                level(|levels| levels.available),
                level(|levels| levels.held),
                level(|levels| levels.sold),
                row.outbox_entries,
                row.postgres.held_tickets,
                row.postgres.confirmed_tickets,
                drift(row.held_drift()),
                drift(row.sold_drift()),
                live(|live| live.held_tickets),
                live(|live| live.users_off + live.orphans),
                row.behind,
                row.verdict.as_str()
            )?;
        }
        Ok(())
    }
}

/// A category's terms, as a rebuilt stock needs them.
#[derive(Debug, Clone, sqlx::FromRow)]
struct CategoryTerms {
    #[sqlx(try_from = "i64")]
    id: CategoryId,
    event_id: i64,
    price: i64,
    currency: String,
    quota: i64,
    max_per_user: i64,
    sale_starts_at: Option<DateTime<Utc>>,
    sale_ends_at: Option<DateTime<Utc>>,
    seat_map: Option<SeatMap>,
}

/// Runs reconcile (and the repair, if asked) and returns the report to print.
pub async fn run(config: &WorkerConfig, args: &ReconcileArgs) -> Result<ReconcileReport, ReconcileError> {
    let redis_target = infrastructure::RedisTarget::from_config(&config.shared)?;
    let kafka_security = kafka::KafkaSecurity::from_config(&config.shared)?;
    let database = infrastructure::connect_and_migrate(&config.shared.database_url, 2).await?;
    let redis = infrastructure::connect_redis_to(&redis_target).await?;
    let keys = Keyspace::new(config.shared.redis_key_prefix.clone());
    let terms: Vec<CategoryTerms> =
        sqlx::query_as(include_str!("provisioned_categories.sql")).fetch_all(&database).await?;
    let started = Instant::now();
    let drain = if relayed_outboxes(&redis, &keys, &terms, args.drain_timeout).await? {
        wait_for_drain(config, &kafka_security, &database, args.drain_timeout.saturating_sub(started.elapsed())).await
    } else {
        Drain::Behind { records: -1 }
    };
    let mut categories = Vec::with_capacity(terms.len());
    for category in &terms {
        let mut report = compare(&database, &redis, &keys, category).await?;
        if args.repair && report.verdict == Verdict::Behind {
            if drain == Drain::Drained {
                report = restore_behind(&database, &redis, &keys, category).await?;
            } else {
                tracing::warn!(category = category.id.get(), "not restoring sales: the pipeline has not drained");
            }
        }
        if args.repair && report.verdict == Verdict::Missing {
            if drain == Drain::Drained {
                if repair(&database, &redis, &keys, category).await? {
                    report = compare(&database, &redis, &keys, category).await?;
                    report.verdict = Verdict::Repaired;
                }
            } else {
                tracing::warn!(category = category.id.get(), "not repairing: the pipeline has not drained");
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
    terms: &CategoryTerms,
) -> Result<CategoryReport, ReconcileError> {
    let open = persistence::reservations::open_reservations(database, terms.id).await?;
    let behind = restore_sales::behind(redis, keys, terms.id, &open).await?;
    restore_sales::restore(redis, keys, terms, &behind).await?;
    let mut report = compare(database, redis, keys, terms).await?;
    if report.behind == 0 && matches!(report.verdict, Verdict::Ok | Verdict::Pending) {
        report.verdict = Verdict::Repaired;
    }
    Ok(report)
}

async fn compare(
    database: &PgPool,
    redis: &RedisConnection,
    keys: &Keyspace,
    terms: &CategoryTerms,
) -> Result<CategoryReport, ReconcileError> {
    let category = terms.id;
    let confirmed: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(include_str!("confirmed_per_user.sql"))
        .bind(terms.id.get())
        .fetch_all(database)
        .await?
        .into_iter()
        .collect();
    let (levels, live) = levels_and_live_holds(redis, keys, category, &confirmed).await?;
    let outbox_entries: i64 = redis::cmd("XLEN").arg(keys.outbox(category)).query_async(&mut redis.clone()).await?;
    let postgres: Option<(i64, PostgresTotals)> = sqlx::query_as::<_, TotalsRow>(include_str!("category_totals.sql"))
        .bind(vec![terms.id.get()])
        .fetch_optional(database)
        .await?
        .map(TotalsRow::split);
    let postgres = postgres.map(|(_, totals)| totals).unwrap_or_default();
    let seats_agree = match levels {
        Some(levels) => seats_agree(database, redis, keys, terms, &levels).await?,
        None => true,
    };
    let behind = match levels {
        Some(_) => {
            let open = persistence::reservations::open_reservations(database, category).await?;
            restore_sales::behind(redis, keys, category, &open).await?.len()
        }
        None => 0,
    };
    let verdict = match levels {
        None => Verdict::Missing,
        Some(levels) if !levels.is_conserved() => Verdict::Drift,
        Some(_) if behind > 0 => Verdict::Behind,
        Some(_) if outbox_entries > 0 => Verdict::Pending,
        Some(levels)
            if levels.held == postgres.held_tickets
                && levels.sold == postgres.confirmed_tickets
                && live.is_some_and(|live| live.agrees_with(&levels))
                && seats_agree =>
        {
            Verdict::Ok
        }
        Some(_) => Verdict::Drift,
    };
    Ok(CategoryReport {
        category_id: terms.id.get(),
        quota: terms.quota,
        redis: levels,
        live,
        outbox_entries,
        behind,
        postgres,
        verdict,
    })
}

/// Whether a seated category's seat bitmap takes exactly `held + sold` seats, among
/// them every seat Postgres shows as sold (always true for a counted category).
async fn seats_agree(
    database: &PgPool,
    redis: &RedisConnection,
    keys: &Keyspace,
    terms: &CategoryTerms,
    levels: &Levels,
) -> Result<bool, ReconcileError> {
    let Some(map) = &terms.seat_map else { return Ok(true) };
    let Some(live) = seating::live_seats(&mut redis.clone(), keys, terms.id, map).await? else { return Ok(false) };
    let taken: HashSet<String> =
        live.rows.iter().flat_map(|row| row.taken.iter().map(move |number| format!("{}-{number}", row.row))).collect();
    let sold: Vec<String> =
        sqlx::query_scalar(include_str!("confirmed_seats.sql")).bind(terms.id.get()).fetch_all(database).await?;
    let count = i64::try_from(taken.len()).unwrap_or(i64::MAX);
    Ok(count == levels.held + levels.sold && sold.iter().all(|seat| taken.contains(seat)))
}

/// The stock levels and the live holds read between two equal reads of the levels, so
/// that a sale going on meanwhile does not show as drift (after a few tries the last
/// reading is reported). `None`s when the stock is missing.
async fn levels_and_live_holds(
    redis: &RedisConnection,
    keys: &Keyspace,
    category: CategoryId,
    confirmed: &HashMap<String, i64>,
) -> Result<(Option<Levels>, Option<LiveHolds>), ReconcileError> {
    let stock = Stock::new(redis.clone(), keys.clone());
    let mut before = read_levels(&stock, category).await?;
    for _ in 0..LIVE_HOLDS_ATTEMPTS {
        let Some(levels) = before else { return Ok((None, None)) };
        let live = live_holds(redis, keys, category, confirmed).await?;
        let after = read_levels(&stock, category).await?;
        if after == Some(levels) {
            return Ok((after, Some(live)));
        }
        before = after;
    }
    let live = match before {
        Some(_) => Some(live_holds(redis, keys, category, confirmed).await?),
        None => None,
    };
    Ok((before, live))
}

/// A category's stock levels, `None` when the stock is missing (or partial).
async fn read_levels(stock: &Stock, category: CategoryId) -> Result<Option<Levels>, ReconcileError> {
    match stock.levels(&[category]).await {
        Ok(levels) => Ok(Some(levels[0])),
        Err(StockError::Missing(_)) => Ok(None),
        Err(StockError::Redis(error)) => Err(ReconcileError::Redis(error)),
    }
}

/// What [`live_holds`] reads of a record: status, user and quantity, under today's names
/// and then the legacy ones (a record an earlier version wrote).
const LIVE_HOLD_FIELDS: [&str; 6] = [
    record_field::STATUS,
    record_field::USER_ID,
    record_field::QUANTITY,
    LEGACY_RECORD_FIELDS[0],
    LEGACY_RECORD_FIELDS[1],
    LEGACY_RECORD_FIELDS[4],
];

/// A read of [`LIVE_HOLD_FIELDS`].
type LiveHoldFields = (Option<String>, Option<String>, Option<i64>, Option<String>, Option<String>, Option<i64>);

/// Status, user and quantity of a record in either layout.
fn either_layout_of_live_hold(fields: LiveHoldFields) -> (Option<String>, Option<String>, Option<i64>) {
    match fields {
        (None, _, _, legacy_status, legacy_user, legacy_quantity) => (legacy_status, legacy_user, legacy_quantity),
        (status, user, quantity, ..) => (status, user, quantity),
    }
}

/// Counts the held and paying records that the category's deadlines list and compares
/// each user's `holders` count with their live held + `confirmed` tickets.
async fn live_holds(
    redis: &RedisConnection,
    keys: &Keyspace,
    category: CategoryId,
    confirmed: &HashMap<String, i64>,
) -> Result<LiveHolds, redis::RedisError> {
    let mut redis = redis.clone();
    let hold_prefix = keys.hold_prefix(category);
    let mut live = LiveHolds::default();
    let mut held_per_user: HashMap<String, i64> = HashMap::new();
    let mut start = 0;
    loop {
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.deadlines(category))
            .arg(start)
            .arg(start + LIVE_HOLDS_CHUNK - 1)
            .query_async(&mut redis)
            .await?;
        if ids.is_empty() {
            break;
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET").arg(format!("{hold_prefix}{id}")).arg(&LIVE_HOLD_FIELDS);
        }
        let records: Vec<LiveHoldFields> = pipe.query_async(&mut redis).await?;
        for record in records {
            match either_layout_of_live_hold(record) {
                (None, _, _) => live.orphans += 1,
                (Some(status), Some(user), Some(quantity)) if status == "held" || status == "paying" => {
                    live.held_tickets += quantity;
                    *held_per_user.entry(user).or_default() += quantity;
                }
                // A finished hold whose deadline entry the reaper drops next.
                _ => {}
            }
        }
        if ids.len() < LIVE_HOLDS_CHUNK {
            break;
        }
        start += LIVE_HOLDS_CHUNK;
    }
    let holders: HashMap<String, i64> =
        redis::cmd("HGETALL").arg(keys.holders(category)).query_async(&mut redis).await?;
    let users: std::collections::HashSet<&String> =
        holders.keys().chain(held_per_user.keys()).chain(confirmed.keys()).collect();
    live.users_off = users
        .into_iter()
        .filter(|user| {
            let expected = held_per_user.get(*user).unwrap_or(&0) + confirmed.get(*user).unwrap_or(&0);
            holders.get(*user).copied().unwrap_or(0) != expected
        })
        .count() as i64;
    Ok(live)
}

#[derive(sqlx::FromRow)]
struct TotalsRow {
    category_id: i64,
    #[sqlx(flatten)]
    totals: PostgresTotals,
}

impl TotalsRow {
    fn split(self) -> (i64, PostgresTotals) {
        (self.category_id, self.totals)
    }
}

/// Waits until every entry that is in a category's outbox now has been relayed (the
/// stream may have newer entries by then); `false` after `timeout`.
async fn relayed_outboxes(
    redis: &RedisConnection,
    keys: &Keyspace,
    terms: &[CategoryTerms],
    timeout: Duration,
) -> Result<bool, redis::RedisError> {
    let mut redis = redis.clone();
    let mut waiting = Vec::new();
    for category in terms {
        let stream = keys.outbox(category.id);
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
async fn wait_for_drain(
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
        let stored: Vec<(i32, i64)> = match sqlx::query_as(include_str!("topic_offsets.sql"))
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
    let stored: Vec<(i32, i64)> = sqlx::query_as(include_str!("topic_offsets.sql"))
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

/// Rebuilds a missing stock; `false` if a stock appeared meanwhile (nothing written).
async fn repair(
    database: &PgPool,
    redis: &RedisConnection,
    keys: &Keyspace,
    terms: &CategoryTerms,
) -> Result<bool, ReconcileError> {
    let category = terms.id;
    let open = persistence::reservations::open_reservations(database, category).await?;
    let mut redis = redis.clone();
    restore_confirmed_records(&mut redis, keys, terms, &open).await?;
    let mut holders: BTreeMap<&str, i64> = BTreeMap::new();
    for reservation in &open {
        *holders.entry(reservation.user_id.as_str()).or_default() += reservation.quantity;
    }
    let sold: i64 =
        open.iter().filter(|reservation| reservation.status == ReservationStatus::Confirmed).map(|r| r.quantity).sum();
    let held: Vec<&Reservation> =
        open.iter().filter(|reservation| reservation.status == ReservationStatus::Held).collect();
    let mut invocation = REPAIR_STOCK.prepare();
    invocation.key(keys.stock(category)).key(keys.holders(category)).key(keys.deadlines(category));
    invocation.key(&keys.seat_keys(category));
    invocation
        .arg(terms.event_id)
        .arg(terms.quota)
        .arg(terms.max_per_user)
        .arg(terms.price)
        .arg(&terms.currency)
        .arg(milliseconds::optional_text(terms.sale_starts_at))
        .arg(milliseconds::optional_text(terms.sale_ends_at))
        .arg(sold)
        .arg(holders.len())
        .arg(terms.seat_map.as_ref().map(SeatMap::sizes_u16).unwrap_or_default());
    for (user, tickets) in &holders {
        invocation.arg(*user).arg(*tickets);
    }
    for reservation in &held {
        invocation.key(keys.hold(category, reservation.id));
        invocation
            .arg(reservation.id.to_string())
            .arg(&reservation.user_id)
            .arg(reservation.quantity)
            .arg(reservation.amount)
            .arg(&reservation.currency)
            .arg(reservation.created_at.timestamp_millis())
            .arg(reservation.expires_at.timestamp_millis())
            .arg(reservation.seats.as_ref().map(|seats| seats.join(",")).unwrap_or_default());
    }
    if let Some(map) = &terms.seat_map {
        // Every seat of a held or confirmed reservation stays taken.
        invocation.arg(map.rows().iter().map(|row| row.row.as_str()).collect::<Vec<_>>());
        invocation.arg(
            open.iter()
                .flat_map(|reservation| reservation.seats.iter().flatten().map(String::as_str))
                .collect::<Vec<_>>(),
        );
    }
    let outcome: Vec<i64> = REPAIR_STOCK.run(&invocation, &mut redis).await?;
    let _: i64 = redis::cmd("SADD").arg(keys.categories()).arg(terms.id.get()).query_async(&mut redis).await?;
    if outcome.first() == Some(&1) {
        tracing::warn!(
            category = terms.id.get(),
            sold,
            held = outcome.get(2),
            available = outcome.get(1),
            "stock rebuilt from postgres"
        );
        Ok(true)
    } else {
        Ok(false)
    }
}

/// Writes the records of confirmed reservations (only read by confirm replays,
/// cancels and reads, so they may land before the stock).
async fn restore_confirmed_records(
    redis: &mut RedisConnection,
    keys: &Keyspace,
    terms: &CategoryTerms,
    open: &[Reservation],
) -> Result<(), ReconcileError> {
    let category = terms.id;
    let confirmed: Vec<&Reservation> =
        open.iter().filter(|reservation| reservation.status == ReservationStatus::Confirmed).collect();
    for chunk in confirmed.chunks(RESTORE_CHUNK_RECORDS) {
        let mut pipe = redis::pipe();
        for reservation in chunk {
            let key = keys.hold(category, reservation.id);
            // A whole record in today's layout, also over one an earlier version wrote.
            pipe.cmd("DEL").arg(&key).ignore();
            pipe.cmd("HSET")
                .arg(&key)
                .arg(&[(record_field::STATUS, "confirmed"), (record_field::USER_ID, reservation.user_id.as_str())])
                .arg(&[
                    (record_field::EVENT_ID, terms.event_id),
                    (record_field::CATEGORY_ID, terms.id.get()),
                    (record_field::QUANTITY, reservation.quantity),
                ])
                .arg(&[(record_field::AMOUNT, reservation.amount)])
                .arg(&[(record_field::CURRENCY, reservation.currency.as_str())])
                .arg(record_field::CREATED_AT_MS)
                .arg(reservation.created_at.timestamp_millis())
                .arg(record_field::EXPIRES_AT_MS)
                .arg(reservation.expires_at.timestamp_millis())
                .arg(record_field::CONFIRMED_AT_MS)
                .arg(milliseconds::optional_text(reservation.confirmed_at))
                .arg(record_field::PAYMENT_ID)
                .arg(reservation.payment_id.as_deref().unwrap_or(""))
                .arg(record_field::SEATS)
                .arg(reservation.seats.as_ref().map(|seats| seats.join(",")).unwrap_or_default())
                .ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(milliseconds::of_duration(RESTORED_RECORD_TTL)).ignore();
        }
        let () = pipe.query_async(redis).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_holds_agree_only_with_the_stock_held_and_no_stray_counts() {
        let levels = Levels { quota: 10, available: 5, held: 3, sold: 2 };
        assert!(LiveHolds { held_tickets: 3, orphans: 0, users_off: 0 }.agrees_with(&levels));
        assert!(!LiveHolds { held_tickets: 1, orphans: 0, users_off: 0 }.agrees_with(&levels));
        assert!(!LiveHolds { held_tickets: 3, orphans: 1, users_off: 0 }.agrees_with(&levels));
        assert!(!LiveHolds { held_tickets: 3, orphans: 0, users_off: 1 }.agrees_with(&levels));
    }
}
