//! The comparison of one category: Redis stock levels and live hold records against
//! the reservations in Postgres, into a [`CategoryReport`].

use std::collections::{HashMap, HashSet};

use sqlx::PgPool;

use super::report::{CategoryReport, Finding, LiveHolds, PostgresTotals};
use super::{ReconcileError, restore_sales};
use crate::ids::CategoryId;
use crate::infrastructure::RedisConnection;
use crate::keyspace::Keyspace;
use crate::persistence;
use crate::reservation::{LEGACY_RECORD_FIELDS, record_field};
use crate::seating;
use crate::stock::{Levels, Stock, StockError, StockTerms};

/// Deadline entries read per round trip when counting live holds.
const LIVE_HOLDS_CHUNK: usize = 1000;
/// Reads of the live holds whose stock levels moved meanwhile, before giving up.
const LIVE_HOLDS_ATTEMPTS: usize = 3;

/// Compares one category (see the module docs of [`super`] for what counts as drift).
pub async fn compare(
    database: &PgPool,
    redis: &RedisConnection,
    keys: &Keyspace,
    terms: &StockTerms,
) -> Result<CategoryReport, ReconcileError> {
    let category = terms.category_id;
    let confirmed: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(include_str!("../confirmed_per_user.sql"))
        .bind(terms.category_id.get())
        .fetch_all(database)
        .await?
        .into_iter()
        .collect();
    let (levels, live) = levels_and_live_holds(redis, keys, category, &confirmed).await?;
    let outbox_entries: i64 = redis::cmd("XLEN").arg(keys.outbox(category)).query_async(&mut redis.clone()).await?;
    let postgres: Option<(i64, PostgresTotals)> =
        sqlx::query_as::<_, TotalsRow>(include_str!("../category_totals.sql"))
            .bind(vec![terms.category_id.get()])
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
    let finding = match levels {
        None => Finding::Missing,
        Some(levels) if !levels.is_conserved() => Finding::Drift,
        Some(_) if behind > 0 => Finding::Behind,
        Some(_) if outbox_entries > 0 => Finding::Pending,
        Some(levels)
            if levels.held == postgres.held_tickets
                && levels.sold == postgres.confirmed_tickets
                && live.is_some_and(|live| live.agrees_with(&levels))
                && seats_agree =>
        {
            Finding::Ok
        }
        Some(_) => Finding::Drift,
    };
    Ok(CategoryReport {
        category_id: terms.category_id.get(),
        quota: terms.quota,
        redis: levels,
        live,
        outbox_entries,
        behind,
        postgres,
        finding,
    })
}

/// Whether a seated category's seat bitmap takes exactly `held + sold` seats, among
/// them every seat Postgres shows as sold (always true for a counted category).
async fn seats_agree(
    database: &PgPool,
    redis: &RedisConnection,
    keys: &Keyspace,
    terms: &StockTerms,
    levels: &Levels,
) -> Result<bool, ReconcileError> {
    let Some(map) = &terms.seat_map else { return Ok(true) };
    let Some(live) = seating::live_seats(&mut redis.clone(), keys, terms.category_id, map).await? else {
        return Ok(false);
    };
    let taken: HashSet<String> =
        live.rows.iter().flat_map(|row| row.taken.iter().map(move |number| format!("{}-{number}", row.row))).collect();
    let sold: Vec<String> = sqlx::query_scalar(include_str!("../confirmed_seats.sql"))
        .bind(terms.category_id.get())
        .fetch_all(database)
        .await?;
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
