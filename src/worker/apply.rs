//! Applying one batch of a partition to Postgres in one transaction: the partition's
//! offset, the event log and the reservation rows commit together or not at all.
//!
//! A crash before the commit leaves the offset where it was, so the batch is read and
//! applied again; a crash after it leaves the offset past the batch, so nothing is
//! applied twice. Commits do not wait for the WAL flush: a commit that a Postgres crash
//! loses takes its offset with it, and the offset guard sends the worker back to the
//! stored offset. Redelivered copies of events (same id) are skipped by the event
//! log's unique key, and the reservation upsert never moves a status backwards.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::outbox::{EventType, ReservationEvent};
use crate::reservation::ReservationStatus;

/// An event read from the topic.
#[derive(Debug, Clone)]
pub struct ConsumedEvent {
    /// Its offset in the partition.
    pub offset: i64,
    /// The event.
    pub event: ReservationEvent,
    /// The record value as published (stored as the event's payload).
    pub payload: String,
}

/// Where a partition's consumption stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Position {
    /// The next offset to read (always a record-batch boundary).
    pub next_offset: i64,
    /// Offset of the first record of the last applied batch; `None` when unknown.
    pub check_offset: Option<i64>,
    /// Its [`fingerprint`].
    pub check_fingerprint: Option<i64>,
}

impl Position {
    /// A position at `next_offset` with nothing to check (start of a log, or a reset).
    pub fn unchecked(next_offset: i64) -> Self {
        Self { next_offset, check_offset: None, check_fingerprint: None }
    }
}

/// A fingerprint of a record value (64-bit FNV-1a), to recognise the same record
/// at the same offset after a reconnect.
pub fn fingerprint(value: &[u8]) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in value {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// A contiguous run of a partition's records: whole record batches, as one fetch
/// returned them (never part of a record batch; see [`crate::worker`]).
#[derive(Debug, Clone)]
pub struct Batch {
    /// The partition.
    pub partition: i32,
    /// The offset the batch starts at (the stored next offset).
    pub from_offset: i64,
    /// Where consumption stands after the batch.
    pub next: Position,
    /// Its events in offset order (malformed records already left out).
    pub events: Vec<ConsumedEvent>,
}

/// The result of applying a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Committed.
    Committed {
        /// Events recorded for the first time.
        applied: usize,
        /// Copies of events recorded before (or twice in the batch).
        duplicates: usize,
        /// When each newly recorded event happened.
        occurred_at: Vec<DateTime<Utc>>,
    },
    /// The stored offset was not `from_offset`: another worker consumes this
    /// partition too. Nothing was written; resume from `stored`.
    Fenced {
        /// The position in Postgres.
        stored: Position,
    },
}

/// Where consumption of `partition` stands, creating its row at offset 0 the first time.
pub async fn load_position(database: &PgPool, topic: &str, partition: i32) -> Result<Position, sqlx::Error> {
    sqlx::query_as(include_str!("load_offset.sql")).bind(topic).bind(partition).fetch_one(database).await
}

/// Moves the stored position from `from_offset` to `to` without applying anything
/// (a reset after the partition's log was replaced); `false` if it was not at `from_offset`.
pub async fn move_position(
    database: &PgPool,
    topic: &str,
    partition: i32,
    from_offset: i64,
    to: Position,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query(include_str!("advance_offset.sql"))
        .bind(topic)
        .bind(partition)
        .bind(from_offset)
        .bind(to.next_offset)
        .bind(to.check_offset)
        .bind(to.check_fingerprint)
        .execute(database)
        .await?;
    Ok(moved.rows_affected() == 1)
}

/// Applies `batch` and advances the partition's offset, in one transaction.
pub async fn apply(database: &PgPool, topic: &str, batch: &Batch) -> Result<Applied, sqlx::Error> {
    let mut transaction = database.begin().await?;
    // The batch and its offset commit together, so a commit lost in a Postgres crash
    // loses both: the worker reads the batch again from the older offset. Waiting for
    // the WAL flush buys nothing here.
    sqlx::query(include_str!("relax_commit.sql")).execute(&mut *transaction).await?;
    let advanced = sqlx::query(include_str!("advance_offset.sql"))
        .bind(topic)
        .bind(batch.partition)
        .bind(batch.from_offset)
        .bind(batch.next.next_offset)
        .bind(batch.next.check_offset)
        .bind(batch.next.check_fingerprint)
        .execute(&mut *transaction)
        .await?;
    if advanced.rows_affected() != 1 {
        transaction.rollback().await?;
        return Ok(Applied::Fenced { stored: load_position(database, topic, batch.partition).await? });
    }
    let events = distinct_events(&batch.events);
    let occurred_at = insert_events(&mut transaction, batch.partition, &events).await?;
    upsert_reservations(&mut transaction, &events).await?;
    transaction.commit().await?;
    Ok(Applied::Committed {
        applied: occurred_at.len(),
        duplicates: batch.events.len() - occurred_at.len(),
        occurred_at,
    })
}

/// The batch without repeated event ids (first copy kept).
fn distinct_events(events: &[ConsumedEvent]) -> Vec<&ConsumedEvent> {
    let mut seen = std::collections::HashSet::with_capacity(events.len());
    events.iter().filter(|consumed| seen.insert(consumed.event.id)).collect()
}

async fn insert_events(
    transaction: &mut sqlx::PgTransaction<'_>,
    partition: i32,
    events: &[&ConsumedEvent],
) -> Result<Vec<DateTime<Utc>>, sqlx::Error> {
    let ids: Vec<Uuid> = events.iter().map(|consumed| consumed.event.id).collect();
    let reservations: Vec<Uuid> = events.iter().map(|consumed| consumed.event.reservation.id).collect();
    let types: Vec<&str> = events.iter().map(|consumed| consumed.event.event_type.as_str()).collect();
    let times: Vec<DateTime<Utc>> = events.iter().map(|consumed| consumed.event.occurred_at).collect();
    let payloads: Vec<&str> = events.iter().map(|consumed| consumed.payload.as_str()).collect();
    let offsets: Vec<i64> = events.iter().map(|consumed| consumed.offset).collect();
    sqlx::query_scalar(include_str!("insert_events.sql"))
        .bind(ids)
        .bind(reservations)
        .bind(types)
        .bind(times)
        .bind(payloads)
        .bind(partition)
        .bind(offsets)
        .fetch_all(&mut **transaction)
        .await
}

/// How far along an event puts its reservation: any final event outranks `reserved`.
fn rank(event_type: EventType) -> u8 {
    match event_type {
        EventType::Reserved => 0,
        EventType::Confirmed | EventType::Cancelled | EventType::Expired => 1,
    }
}

/// The status an event gives its reservation.
pub fn status_after(event_type: EventType) -> ReservationStatus {
    match event_type {
        EventType::Reserved => ReservationStatus::Held,
        EventType::Confirmed => ReservationStatus::Confirmed,
        EventType::Cancelled => ReservationStatus::Cancelled,
        EventType::Expired => ReservationStatus::Expired,
    }
}

/// Per reservation, the event that takes it furthest; among equals the first, since
/// a reservation has one final event and a later different one would be a bug that
/// the database guard ignores as well.
fn most_advanced<'a>(events: &[&'a ConsumedEvent]) -> Vec<&'a ReservationEvent> {
    let mut chosen: HashMap<Uuid, &ReservationEvent> = HashMap::with_capacity(events.len());
    let mut order = Vec::new();
    for consumed in events {
        let event = &consumed.event;
        match chosen.get(&event.reservation.id) {
            None => {
                order.push(event.reservation.id);
                chosen.insert(event.reservation.id, event);
            }
            Some(current) if rank(event.event_type) > rank(current.event_type) => {
                chosen.insert(event.reservation.id, event);
            }
            Some(_) => {}
        }
    }
    order.into_iter().map(|id| chosen[&id]).collect()
}

async fn upsert_reservations(
    transaction: &mut sqlx::PgTransaction<'_>,
    events: &[&ConsumedEvent],
) -> Result<(), sqlx::Error> {
    let rows = most_advanced(events);
    let at = |wanted: EventType| -> Vec<Option<DateTime<Utc>>> {
        rows.iter().map(|event| (event.event_type == wanted).then_some(event.occurred_at)).collect()
    };
    let (cancelled_at, expired_at) = (at(EventType::Cancelled), at(EventType::Expired));
    let reservations = rows.iter().map(|event| &event.reservation);
    sqlx::query(include_str!("upsert_reservations.sql"))
        .bind(reservations.clone().map(|reservation| reservation.id).collect::<Vec<_>>())
        .bind(reservations.clone().map(|reservation| reservation.user_id.as_str()).collect::<Vec<_>>())
        .bind(reservations.clone().map(|reservation| reservation.event_id).collect::<Vec<_>>())
        .bind(reservations.clone().map(|reservation| reservation.category_id).collect::<Vec<_>>())
        .bind(reservations.clone().map(|reservation| reservation.quantity).collect::<Vec<_>>())
        .bind(reservations.clone().map(|reservation| reservation.amount).collect::<Vec<_>>())
        .bind(reservations.clone().map(|reservation| reservation.currency.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|event| status_after(event.event_type).as_str()).collect::<Vec<_>>())
        .bind(reservations.clone().map(|reservation| reservation.created_at).collect::<Vec<_>>())
        .bind(reservations.clone().map(|reservation| reservation.expires_at).collect::<Vec<_>>())
        .bind(reservations.clone().map(|reservation| reservation.confirmed_at).collect::<Vec<_>>())
        .bind(reservations.clone().map(|reservation| reservation.payment_id.as_deref()).collect::<Vec<_>>())
        .bind(cancelled_at)
        .bind(expired_at)
        .bind(rows.iter().map(|event| event.id).collect::<Vec<_>>())
        .bind(rows.iter().map(|event| event.occurred_at).collect::<Vec<_>>())
        .execute(&mut **transaction)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::milliseconds;
    use crate::outbox::event_id;
    use crate::reservation::Reservation;

    fn consumed(reservation: Uuid, event_type: EventType, offset: i64) -> ConsumedEvent {
        let event = ReservationEvent {
            id: event_id(reservation, event_type),
            event_type,
            occurred_at: milliseconds::to_time(1_700_000_000_000 + offset),
            reservation: Reservation {
                id: reservation,
                status: status_after(event_type),
                event_id: 1,
                category_id: 1,
                user_id: "alice".into(),
                quantity: 1,
                amount: 100,
                currency: "USD".into(),
                created_at: milliseconds::to_time(1_700_000_000_000),
                expires_at: milliseconds::to_time(1_700_000_600_000),
                confirmed_at: None,
                payment_id: None,
            },
        };
        ConsumedEvent { offset, payload: serde_json::to_string(&event).unwrap(), event }
    }

    #[test]
    fn a_late_copy_of_reserved_does_not_win_over_a_final_event() {
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        let events = [
            consumed(first, EventType::Reserved, 0),
            consumed(second, EventType::Reserved, 1),
            consumed(first, EventType::Confirmed, 2),
            consumed(first, EventType::Reserved, 3),
        ];
        let distinct = distinct_events(&events);
        assert_eq!(distinct.len(), 3, "the repeated reserved event is dropped");
        let chosen = most_advanced(&distinct);
        assert_eq!(chosen.len(), 2);
        assert_eq!((chosen[0].reservation.id, chosen[0].event_type), (first, EventType::Confirmed));
        assert_eq!((chosen[1].reservation.id, chosen[1].event_type), (second, EventType::Reserved));
    }

    #[test]
    fn fingerprints_tell_records_apart() {
        assert_eq!(fingerprint(b"abc"), fingerprint(b"abc"));
        assert_ne!(fingerprint(b"abc"), fingerprint(b"abd"));
    }

    #[test]
    fn the_first_final_event_wins() {
        let reservation = Uuid::new_v4();
        let events = [consumed(reservation, EventType::Cancelled, 0), consumed(reservation, EventType::Expired, 1)];
        let chosen = most_advanced(&distinct_events(&events));
        assert_eq!(chosen[0].event_type, EventType::Cancelled);
    }
}
