//! Sales that Redis lost and Postgres kept: after a Redis failover, a reservation that
//! Postgres has `confirmed` can be behind in Redis, where the promoted replica still has
//! it held or paying, or released (expired, cancelled) with its tickets back on sale, or
//! has no record at all. Postgres is the ledger of sales, so reconcile reports these
//! (`behind`) and `--repair` restores each in Redis from Postgres (`restore_sale.lua`):
//! confirmed, its tickets sold, the stock's counts, the user's count and the seats
//! following, then the whole record written by [`super::repair::restore_confirmed_records`].
//!
//! A missing record is behind only when the reservation was confirmed less than
//! [`LOST_RECORD_AGE_MAX`] ago: older confirmed records expire by their TTL
//! (`FINAL_RECORD_TTL`, 24 h) and their tickets are counted as sold all the same.

use std::time::Duration;

use chrono::Utc;

use super::ReconcileError;
use super::repair::restore_confirmed_records;
use crate::contract::{Reservation, ReservationStatus};
use crate::infrastructure::RedisConnection;
use crate::keyspace::Keyspace;
use crate::milliseconds;
use crate::reservation::FINAL_RECORD_TTL;
use crate::reservation::record::with_prelude;
use crate::reservation::{LEGACY_RECORD_FIELDS, record_field};
use crate::script::LuaScript;
use crate::stock::StockTerms;

static RESTORE_SALE: std::sync::LazyLock<LuaScript> =
    std::sync::LazyLock::new(|| with_prelude("restore_sale", include_str!("../restore_sale.lua")));

/// A confirmed reservation whose record is missing this soon after its confirmation was
/// lost (its record cannot have expired yet): the record TTL less an hour of margin.
pub const LOST_RECORD_AGE_MAX: Duration = Duration::from_secs(FINAL_RECORD_TTL.as_secs() - 3600);

/// Records read per round trip.
const READ_CHUNK: usize = 1000;

/// What `--repair` did with the reservations that were behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// Reservations restored as confirmed.
    pub restored: usize,
    /// Reservations whose tickets or seats were sold again meanwhile (nothing written),
    /// with why.
    pub conflicts: Vec<(uuid::Uuid, String)>,
}

/// Whether a missing record means a lost sale: confirmed recently enough.
fn recently_confirmed(reservation: &Reservation) -> bool {
    let age_max = chrono::Duration::from_std(LOST_RECORD_AGE_MAX).unwrap_or(chrono::Duration::MAX);
    reservation.confirmed_at.is_some_and(|at| Utc::now() - at < age_max)
}

/// The reservations of `open` (Postgres) that are confirmed there and behind in Redis.
pub async fn behind<'a>(
    redis: &RedisConnection,
    keys: &Keyspace,
    category: crate::ids::CategoryId,
    open: &'a [Reservation],
) -> Result<Vec<&'a Reservation>, ReconcileError> {
    let confirmed: Vec<&Reservation> =
        open.iter().filter(|reservation| reservation.status == ReservationStatus::Confirmed).collect();
    let mut redis = redis.clone();
    let mut behind = Vec::new();
    for chunk in confirmed.chunks(READ_CHUNK) {
        let mut pipe = redis::pipe();
        for reservation in chunk {
            pipe.cmd("HMGET")
                .arg(keys.hold(category, reservation.id))
                .arg(record_field::STATUS)
                .arg(LEGACY_RECORD_FIELDS[0]);
        }
        let statuses: Vec<(Option<String>, Option<String>)> = pipe.query_async(&mut redis).await?;
        for (reservation, (status, legacy)) in chunk.iter().zip(statuses) {
            let is_behind = match status.or(legacy).as_deref() {
                Some("confirmed") => false,
                Some(_) => true,
                None => recently_confirmed(reservation),
            };
            if is_behind {
                behind.push(*reservation);
            }
        }
    }
    Ok(behind)
}

/// Restores each reservation of `behind` in Redis as Postgres has it.
pub async fn restore(
    redis: &RedisConnection,
    keys: &Keyspace,
    terms: &StockTerms,
    behind: &[&Reservation],
) -> Result<Restored, ReconcileError> {
    let category = terms.category_id;
    let mut redis = redis.clone();
    let mut outcome = Restored::default();
    let mut written = Vec::new();
    for reservation in behind {
        let mut invocation = RESTORE_SALE.prepare();
        invocation
            .key(keys.stock(category))
            .key(keys.hold(category, reservation.id))
            .key(keys.deadlines(category))
            .key(keys.holders(category))
            .key(&keys.seat_keys(category))
            .arg(reservation.id.to_string())
            .arg(&reservation.user_id)
            .arg(reservation.quantity)
            .arg(reservation.seats.as_ref().map(|seats| seats.join(",")).unwrap_or_default())
            .arg(if recently_confirmed(reservation) { "1" } else { "0" })
            .arg(milliseconds::of_duration(FINAL_RECORD_TTL));
        let reply: Vec<String> = RESTORE_SALE.run(&invocation, &mut redis).await?;
        match reply.first().map(String::as_str) {
            Some("restored") => {
                tracing::warn!(
                    category = category.get(),
                    reservation = %reservation.id,
                    from = reply.get(1).map(String::as_str),
                    "sale restored from postgres"
                );
                outcome.restored += 1;
                written.push((*reservation).clone());
            }
            Some("conflict") => {
                let reason = reply.get(1).cloned().unwrap_or_default();
                tracing::error!(category = category.get(), reservation = %reservation.id, reason, "sale not restored");
                outcome.conflicts.push((reservation.id, reason));
            }
            _ => {}
        }
    }
    restore_confirmed_records(&mut redis, keys, terms, &written).await?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_record_is_a_lost_sale_only_while_it_cannot_have_expired() {
        let now = Utc::now();
        let reservation = |confirmed_at| Reservation {
            id: uuid::Uuid::nil(),
            status: ReservationStatus::Confirmed,
            event_id: 1,
            category_id: 1,
            user_id: "u".to_owned(),
            quantity: 1,
            amount: 1,
            currency: "USD".to_owned(),
            created_at: now,
            expires_at: now,
            confirmed_at,
            payment_id: None,
            seats: None,
        };
        assert!(recently_confirmed(&reservation(Some(now))));
        assert!(!recently_confirmed(&reservation(Some(now - chrono::Duration::hours(24)))));
        assert!(!recently_confirmed(&reservation(None)));
    }
}
