//! `--repair` of a missing stock: the stock rebuilt from Postgres in one script, and
//! the records of confirmed reservations restored first.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::PgPool;

use super::ReconcileError;
use crate::contract::{Reservation, ReservationStatus};
use crate::infrastructure::RedisConnection;
use crate::keyspace::Keyspace;
use crate::milliseconds;
use crate::persistence;
use crate::reservation::record::with_record_layout;
use crate::reservation::record_fields_of;
use crate::script::LuaScript;
use crate::seating::SeatMap;
use crate::stock::StockTerms;

// The layout's Lua definitions first: the script writes hold records.
static REPAIR_STOCK: std::sync::LazyLock<LuaScript> =
    std::sync::LazyLock::new(|| with_record_layout("repair_stock", include_str!("../repair_stock.lua")));

/// How long restored records of confirmed reservations are kept: they only serve
/// replays and reads (restored held records have no TTL, like every live one).
const RESTORED_RECORD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Confirmed records written per pipeline.
const RESTORE_CHUNK_RECORDS: usize = 500;

pub async fn repair(
    database: &PgPool,
    redis: &RedisConnection,
    keys: &Keyspace,
    terms: &StockTerms,
) -> Result<bool, ReconcileError> {
    let category = terms.category_id;
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
    terms.add_arguments(&mut invocation);
    invocation.arg(sold).arg(holders.len()).arg(terms.seat_map.as_ref().map(SeatMap::sizes_u16).unwrap_or_default());
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
    let _: i64 = redis::cmd("SADD").arg(keys.categories()).arg(terms.category_id.get()).query_async(&mut redis).await?;
    if outcome.first() == Some(&1) {
        tracing::warn!(
            category = terms.category_id.get(),
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
pub async fn restore_confirmed_records(
    redis: &mut RedisConnection,
    keys: &Keyspace,
    terms: &StockTerms,
    open: &[Reservation],
) -> Result<(), ReconcileError> {
    let category = terms.category_id;
    let confirmed: Vec<&Reservation> =
        open.iter().filter(|reservation| reservation.status == ReservationStatus::Confirmed).collect();
    for chunk in confirmed.chunks(RESTORE_CHUNK_RECORDS) {
        let mut pipe = redis::pipe();
        for reservation in chunk {
            let key = keys.hold(category, reservation.id);
            // A whole record in today's layout, also over one an earlier version wrote.
            pipe.cmd("DEL").arg(&key).ignore();
            pipe.cmd("HSET").arg(&key).arg(&record_fields_of(reservation)[..]).ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(milliseconds::of_duration(RESTORED_RECORD_TTL)).ignore();
        }
        let () = pipe.query_async(redis).await?;
    }
    Ok(())
}
