//! Applying one batch of a partition to Postgres in one transaction: the partition's
//! offset, the event log and the reservation rows commit together or not at all.
//!
//! A crash before the commit leaves the offset where it was, so the batch is read and
//! applied again; a crash after it leaves the offset past the batch, so nothing is
//! applied twice. Commits do not wait for the WAL flush: a commit that a Postgres crash
//! loses takes its offset with it, and the offset guard sends the worker back to the
//! stored offset. Redelivered copies of events (same id) are skipped by the event
//! log's unique key, and the reservation upsert never moves a status backwards.
//!
//! # Poison records
//! A record that can never be applied must not stop its partition. Undecodable records
//! arrive here already set aside ([`Batch::rejected`]). When Postgres refuses the batch
//! with a data error ([`is_deterministic`]: SQLSTATE class 22, data exception, or 23,
//! integrity constraint violation), the batch is applied again record by record, each
//! in a savepoint, and the records Postgres refuses go to `dead_letters` instead. Either
//! way the dead letters commit in the same transaction as the offset that moves past
//! them. Every other error (connection lost, pool timeout, serialization failure,
//! shutdown) is transient: nothing commits and the whole batch is retried.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgPool, PgTransaction};
use uuid::Uuid;

use super::lease::Fence;
use crate::contract::ReservationStatus;
use crate::outbox::{EventType, ReservationEvent};
use crate::telemetry::trace_context::TraceParent;

/// An event read from the topic.
#[derive(Debug, Clone)]
pub struct ConsumedEvent {
    /// Its offset in the partition.
    pub offset: i64,
    /// The record key as published (the reservation id), kept for a dead letter.
    pub key: Option<Vec<u8>>,
    /// The event.
    pub event: ReservationEvent,
    /// The record value as published (stored as the event's payload).
    pub payload: String,
    /// The record's `traceparent` header: the trace of the request that caused the event.
    pub traceparent: Option<TraceParent>,
}

/// A record the worker will never apply, parked in `dead_letters` with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its offset in the partition.
    pub offset: i64,
    /// The record key as published.
    pub key: Option<Vec<u8>>,
    /// The record value as published.
    pub value: Option<Vec<u8>>,
    /// Why it cannot be applied.
    pub error: String,
}

impl DeadLetter {
    /// The dead letter of an event that Postgres refused with `error`.
    fn refused(consumed: &ConsumedEvent, error: &sqlx::Error) -> Self {
        let error = match error {
            sqlx::Error::Database(database) => {
                format!("SQLSTATE {}: {}", database.code().unwrap_or_default(), database.message())
            }
            other => other.to_string(),
        };
        Self {
            offset: consumed.offset,
            key: consumed.key.clone(),
            value: Some(consumed.payload.clone().into_bytes()),
            error,
        }
    }
}

/// Whether `error` will recur however often the same records are retried: Postgres
/// refused the data (SQLSTATE class 22 or 23) or it could not be encoded. Connection
/// loss, timeouts, serialization failures and the like are transient.
pub fn is_deterministic(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(database) => database.code().is_some_and(|code| is_data_error(&code)),
        sqlx::Error::Encode(_) => true,
        _ => false,
    }
}

/// SQLSTATE class 22 (data exception) or 23 (integrity constraint violation).
fn is_data_error(sqlstate: &str) -> bool {
    sqlstate.starts_with("22") || sqlstate.starts_with("23")
}

/// Where a partition's consumption stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Position {
    /// The next offset to read (always a record-batch boundary).
    pub next_offset: i64,
    /// Offset of the first record of the last applied batch; `None` when unknown.
    pub check_offset: Option<i64>,
    /// Its [`record_fingerprint`].
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
pub fn record_fingerprint(value: &[u8]) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in value {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash.cast_signed()
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
    /// Its events in offset order (undecodable records left out).
    pub events: Vec<ConsumedEvent>,
    /// Its undecodable records, in offset order.
    pub rejected: Vec<DeadLetter>,
    /// The lease it is consumed under (`WORKER_PARTITIONS=shared`); the offset moves only while it holds.
    pub fence: Option<Fence>,
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
        /// Records moved to `dead_letters`, in offset order.
        dead_letters: Vec<DeadLetter>,
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
    fence: Option<&Fence>,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query(include_str!("advance_offset.sql"))
        .bind(topic)
        .bind(partition)
        .bind(from_offset)
        .bind(to.next_offset)
        .bind(to.check_offset)
        .bind(to.check_fingerprint)
        .bind(fence.map(|fence| fence.owner.as_ref()))
        .bind(fence.map(|fence| fence.epoch))
        .execute(database)
        .await?;
    Ok(moved.rows_affected() == 1)
}

/// Applies `batch` and advances the partition's offset, in one transaction. A batch
/// that Postgres refuses for its data is applied again record by record, and the
/// refused records are dead-lettered (see the module docs).
pub async fn apply(database: &PgPool, topic: &str, batch: &Batch) -> Result<Applied, sqlx::Error> {
    match apply_together(database, topic, batch).await {
        Err(error) if is_deterministic(&error) => {
            tracing::warn!(partition = batch.partition, %error, "postgres refused the batch; applying it record by record");
            apply_one_by_one(database, topic, batch).await
        }
        result => result,
    }
}

/// The whole batch in one statement per table.
async fn apply_together(database: &PgPool, topic: &str, batch: &Batch) -> Result<Applied, sqlx::Error> {
    let Some(mut transaction) = begin(database, topic, batch).await? else {
        return fenced(database, topic, batch.partition).await;
    };
    let events = distinct_events(&batch.events);
    let occurred_at = apply_events(&mut transaction, batch.partition, &events).await?;
    insert_dead_letters(&mut transaction, topic, batch.partition, &batch.rejected).await?;
    transaction.commit().await?;
    Ok(committed(batch, occurred_at, batch.rejected.clone()))
}

/// Each event in its own savepoint; those Postgres refuses for their data become dead letters.
async fn apply_one_by_one(database: &PgPool, topic: &str, batch: &Batch) -> Result<Applied, sqlx::Error> {
    let Some(mut transaction) = begin(database, topic, batch).await? else {
        return fenced(database, topic, batch.partition).await;
    };
    let mut occurred_at = Vec::new();
    let mut dead_letters = batch.rejected.clone();
    for consumed in distinct_events(&batch.events) {
        let mut savepoint = transaction.begin().await?;
        match apply_events(&mut savepoint, batch.partition, &[consumed]).await {
            Ok(times) => {
                savepoint.commit().await?;
                occurred_at.extend(times);
            }
            Err(error) if is_deterministic(&error) => {
                savepoint.rollback().await?;
                dead_letters.push(DeadLetter::refused(consumed, &error));
            }
            Err(error) => return Err(error),
        }
    }
    dead_letters.sort_by_key(|letter| letter.offset);
    insert_dead_letters(&mut transaction, topic, batch.partition, &dead_letters).await?;
    transaction.commit().await?;
    Ok(committed(batch, occurred_at, dead_letters))
}

/// Opens the batch's transaction and moves the offset first; `None` when the stored
/// offset was not the batch's start, or the batch's lease no longer holds (nothing written).
async fn begin(database: &PgPool, topic: &str, batch: &Batch) -> Result<Option<PgTransaction<'static>>, sqlx::Error> {
    let mut transaction = database.begin().await?;
    // The batch and its offset commit together, so a commit lost in a Postgres crash
    // loses both: the worker reads the batch again from the older offset. Waiting for
    // the WAL flush buys nothing here.
    sqlx::query(include_str!("relax_commit.sql")).execute(&mut *transaction).await?;
    if let Some(fence) = &batch.fence {
        let timeout = format!("{}ms", fence.idle_transaction_timeout.as_millis());
        sqlx::query(include_str!("lease/bound_idle_transaction.sql")).bind(timeout).execute(&mut *transaction).await?;
    }
    let advanced = sqlx::query(include_str!("advance_offset.sql"))
        .bind(topic)
        .bind(batch.partition)
        .bind(batch.from_offset)
        .bind(batch.next.next_offset)
        .bind(batch.next.check_offset)
        .bind(batch.next.check_fingerprint)
        .bind(batch.fence.as_ref().map(|fence| fence.owner.as_ref()))
        .bind(batch.fence.as_ref().map(|fence| fence.epoch))
        .execute(&mut *transaction)
        .await?;
    if advanced.rows_affected() != 1 {
        transaction.rollback().await?;
        return Ok(None);
    }
    Ok(Some(transaction))
}

async fn fenced(database: &PgPool, topic: &str, partition: i32) -> Result<Applied, sqlx::Error> {
    Ok(Applied::Fenced { stored: load_position(database, topic, partition).await? })
}

fn committed(batch: &Batch, occurred_at: Vec<DateTime<Utc>>, dead_letters: Vec<DeadLetter>) -> Applied {
    let refused = dead_letters.len() - batch.rejected.len();
    Applied::Committed {
        applied: occurred_at.len(),
        duplicates: batch.events.len().saturating_sub(occurred_at.len() + refused),
        occurred_at,
        dead_letters,
    }
}

/// Records `events` and moves their reservations; returns when each newly recorded one happened.
async fn apply_events(
    transaction: &mut PgTransaction<'_>,
    partition: i32,
    events: &[&ConsumedEvent],
) -> Result<Vec<DateTime<Utc>>, sqlx::Error> {
    let occurred_at = insert_events(transaction, partition, events).await?;
    upsert_reservations(transaction, events).await?;
    upsert_reservation_seats(transaction, events).await?;
    Ok(occurred_at)
}

async fn insert_dead_letters(
    transaction: &mut PgTransaction<'_>,
    topic: &str,
    partition: i32,
    dead_letters: &[DeadLetter],
) -> Result<(), sqlx::Error> {
    if dead_letters.is_empty() {
        return Ok(());
    }
    sqlx::query(include_str!("insert_dead_letters.sql"))
        .bind(topic)
        .bind(partition)
        .bind(dead_letters.iter().map(|letter| letter.offset).collect::<Vec<_>>())
        .bind(dead_letters.iter().map(|letter| letter.key.clone()).collect::<Vec<_>>())
        .bind(dead_letters.iter().map(|letter| letter.value.clone()).collect::<Vec<_>>())
        .bind(dead_letters.iter().map(|letter| letter.error.as_str()).collect::<Vec<_>>())
        .execute(&mut **transaction)
        .await?;
    Ok(())
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

/// The seats of the batch's reservations in seated categories, confirmed with their
/// `confirmed` event. A seat sold twice is a data error (the batch goes record by record).
async fn upsert_reservation_seats(
    transaction: &mut sqlx::PgTransaction<'_>,
    events: &[&ConsumedEvent],
) -> Result<(), sqlx::Error> {
    // (event, position, seat) for every seat of the batch's reservations.
    let rows: Vec<(&ReservationEvent, i32, &str)> = most_advanced(events)
        .into_iter()
        .flat_map(|event| {
            let seats = event.reservation.seats.iter().flatten();
            seats
                .enumerate()
                .map(move |(position, seat)| (event, i32::try_from(position).unwrap_or(i32::MAX), seat.as_str()))
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(include_str!("upsert_reservation_seats.sql"))
        .bind(rows.iter().map(|(event, _, _)| event.reservation.id).collect::<Vec<_>>())
        .bind(rows.iter().map(|(event, _, _)| event.reservation.category_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, _, seat)| *seat).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, position, _)| *position).collect::<Vec<_>>())
        .bind(rows.iter().map(|(event, _, _)| event.event_type == EventType::Confirmed).collect::<Vec<_>>())
        .execute(&mut **transaction)
        .await?;
    Ok(())
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
    use crate::contract::Reservation;
    use crate::milliseconds;
    use crate::outbox::event_id;

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
                seats: None,
            },
        };
        ConsumedEvent { offset, key: None, payload: serde_json::to_string(&event).unwrap(), event, traceparent: None }
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
    fn data_errors_are_deterministic_and_the_rest_transient() {
        // invalid byte sequence, check violation, unique violation, invalid text representation
        for sqlstate in ["22021", "23514", "23505", "22P02"] {
            assert!(is_data_error(sqlstate), "{sqlstate}");
        }
        // serialization failure, deadlock, connection failure, admin shutdown, too many connections
        for sqlstate in ["40001", "40P01", "08006", "57P01", "53300"] {
            assert!(!is_data_error(sqlstate), "{sqlstate}");
        }
        assert!(!is_deterministic(&sqlx::Error::PoolTimedOut));
        assert!(!is_deterministic(&sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into())));
        assert!(is_deterministic(&sqlx::Error::Encode("no such value".into())));
    }

    #[test]
    fn fingerprints_tell_records_apart() {
        assert_eq!(record_fingerprint(b"abc"), record_fingerprint(b"abc"));
        assert_ne!(record_fingerprint(b"abc"), record_fingerprint(b"abd"));
    }

    #[test]
    fn the_first_final_event_wins() {
        let reservation = Uuid::new_v4();
        let events = [consumed(reservation, EventType::Cancelled, 0), consumed(reservation, EventType::Expired, 1)];
        let chosen = most_advanced(&distinct_events(&events));
        assert_eq!(chosen[0].event_type, EventType::Cancelled);
    }
}
