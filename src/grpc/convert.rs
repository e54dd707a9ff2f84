//! The edge of the gRPC front: protobuf requests validated into domain values (as
//! `http::json` does for JSON bodies), and domain values written as protobuf messages.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use super::proto;
use crate::availability::Availability;
use crate::catalog::{CategoryFields, NewEvent, PAGE_LIMIT_MAX, PageRequest};
use crate::contract::{Reservation, ReservationStatus};
use crate::ids::{CategoryId, EventId, ReservationId};
use crate::reservation::idempotency::IdempotencyKey;
use crate::reservation::{NewReservation, SeatFields};
use crate::seating::LiveSeats;
use crate::service::ServiceError;
use crate::service::catalog::PAGE_LIMIT_DEFAULT;
use crate::stock::SaleWindow;
use crate::validation::{FieldError, FieldErrors};
use crate::waiting_room::{QueueState, QueueStatus, Room};

/// A time as a protobuf timestamp.
pub fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: time.timestamp(), nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0) }
}

/// A protobuf timestamp as a time; `None` when it is out of range.
fn time(timestamp: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(timestamp.seconds, u32::try_from(timestamp.nanos).ok()?)
}

/// An optional timestamp field; one that is set but out of range is a broken rule.
fn optional_time(errors: &mut FieldErrors, field: &str, value: Option<&Timestamp>) -> Option<DateTime<Utc>> {
    let value = value?;
    errors.check(field, time(value).ok_or_else(|| "must be a valid timestamp".to_owned()))
}

/// An event id of a request; anything else names no event.
pub fn event_id(id: i64) -> Result<EventId, ServiceError> {
    EventId::new(id).ok_or(ServiceError::NotFound("no such event"))
}

/// A category id of a request; anything else names no seated category.
pub fn seated_category_id(id: i64) -> Result<CategoryId, ServiceError> {
    CategoryId::new(id).ok_or(ServiceError::NotFound("no such seated category"))
}

/// A reservation id of a request; anything else names no reservation.
pub fn reservation_id(id: &str) -> Result<ReservationId, ServiceError> {
    ReservationId::parse(id).ok_or(ServiceError::NotFound("no such reservation"))
}

/// An `idempotency_key` field: empty means none.
pub fn idempotency_key(key: &str) -> Result<Option<IdempotencyKey>, ServiceError> {
    if key.is_empty() {
        return Ok(None);
    }
    IdempotencyKey::parse(key.as_bytes())
        .map(Some)
        .map_err(|message| ServiceError::Validation(vec![FieldError { field: "idempotency_key".to_owned(), message }]))
}

/// A page size: 0 means the default, else 1..=100.
pub fn page_limit(limit: u32) -> Result<i64, ServiceError> {
    match i64::from(limit) {
        0 => Ok(PAGE_LIMIT_DEFAULT),
        limit if limit <= PAGE_LIMIT_MAX => Ok(limit),
        _ => Err(ServiceError::field("limit", &format!("must be an integer from 0 to {PAGE_LIMIT_MAX}"))),
    }
}

/// A page of events.
pub fn page(request: &proto::ListEventsRequest) -> Result<PageRequest, ServiceError> {
    let limit = page_limit(request.limit)?;
    match request.after {
        Some(after) if after < 0 => Err(ServiceError::field("after", "must be a non-negative integer id")),
        after => Ok(PageRequest { limit, after: after.unwrap_or(0) }),
    }
}

/// A reserve request: quantity 0 means "the number of seats named".
pub fn new_reservation(request: proto::ReserveRequest) -> Result<NewReservation, ServiceError> {
    let quantity = (request.quantity > 0).then_some(i64::from(request.quantity));
    let seats = SeatFields {
        seats: (!request.seats.is_empty()).then_some(request.seats),
        adjacent: request.adjacent.then_some(true),
    };
    NewReservation::parse_with_seats(Some(request.category_id), quantity, request.event_id, seats)
        .map_err(ServiceError::Validation)
}

/// A create-event request.
pub fn new_event(request: proto::CreateEventRequest) -> Result<NewEvent, ServiceError> {
    let mut errors = FieldErrors::new();
    let starts_at = optional_time(&mut errors, "starts_at", request.starts_at.as_ref());
    let window = SaleWindow {
        starts_at: optional_time(&mut errors, "sale_starts_at", request.sale_starts_at.as_ref()),
        ends_at: optional_time(&mut errors, "sale_ends_at", request.sale_ends_at.as_ref()),
    };
    let mut all = errors.into_vec();
    match NewEvent::parse(Some(request.name), Some(request.venue), starts_at, window) {
        Ok(event) if all.is_empty() => Ok(event),
        Ok(_) => Err(ServiceError::Validation(all)),
        Err(more) => {
            let reported = all.iter().any(|error| error.field == "starts_at");
            all.extend(more.into_iter().filter(|error| !(reported && error.field == "starts_at")));
            Err(ServiceError::Validation(all))
        }
    }
}

/// A create-category request: an empty currency means the default, quota 0 a seated category.
pub fn category_fields(request: proto::CreateCategoryRequest) -> CategoryFields {
    CategoryFields {
        name: Some(request.name),
        price: Some(request.price),
        currency: (!request.currency.is_empty()).then_some(request.currency),
        quota: (request.quota != 0).then_some(request.quota),
        max_per_user: request.max_per_user,
        seat_map: (!request.seat_map.is_empty())
            .then(|| request.seat_map.into_iter().map(|row| (Some(row.row), Some(i64::from(row.seats)))).collect()),
    }
}

fn status(status: ReservationStatus) -> proto::ReservationStatus {
    match status {
        ReservationStatus::Held => proto::ReservationStatus::Held,
        ReservationStatus::Confirmed => proto::ReservationStatus::Confirmed,
        ReservationStatus::Cancelled => proto::ReservationStatus::Cancelled,
        ReservationStatus::Expired => proto::ReservationStatus::Expired,
    }
}

/// A count that the domain keeps as `i64` but never lets go negative or past `u32`.
fn count_u32(count: i64) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}

fn count_u64(count: i64) -> u64 {
    u64::try_from(count).unwrap_or(0)
}

/// The contract's Reservation.
pub fn reservation(reservation: Reservation) -> proto::Reservation {
    proto::Reservation {
        id: reservation.id.to_string(),
        status: status(reservation.status).into(),
        event_id: reservation.event_id,
        category_id: reservation.category_id,
        user_id: reservation.user_id,
        quantity: count_u32(reservation.quantity),
        amount: reservation.amount,
        currency: reservation.currency,
        created_at: Some(timestamp(reservation.created_at)),
        expires_at: Some(timestamp(reservation.expires_at)),
        confirmed_at: reservation.confirmed_at.map(timestamp),
        payment_id: reservation.payment_id.unwrap_or_default(),
        seats: reservation.seats.unwrap_or_default(),
    }
}

/// A category.
pub fn category(category: crate::catalog::Category) -> proto::Category {
    let seat_map = category.seat_map.as_ref().map_or_else(Vec::new, |map| {
        map.rows().iter().map(|row| proto::SeatRow { row: row.row.clone(), seats: count_u32(row.seats) }).collect()
    });
    proto::Category {
        id: category.id.get(),
        event_id: category.event_id,
        name: category.name,
        price: category.price,
        currency: category.currency,
        quota: category.quota,
        max_per_user: category.max_per_user,
        seat_map,
    }
}

/// An event with its categories.
pub fn event(event: crate::catalog::Event) -> proto::Event {
    proto::Event {
        id: event.id.get(),
        name: event.name,
        venue: event.venue,
        starts_at: Some(timestamp(event.starts_at)),
        sale_starts_at: event.sale_starts_at.map(timestamp),
        sale_ends_at: event.sale_ends_at.map(timestamp),
        created_at: Some(timestamp(event.created_at)),
        categories: event.categories.into_iter().map(category).collect(),
    }
}

/// Live availability.
pub fn availability(availability: &Availability) -> proto::Availability {
    proto::Availability {
        event_id: availability.event_id,
        categories: availability
            .categories
            .iter()
            .map(|category| proto::CategoryAvailability {
                category_id: category.category_id,
                name: category.name.clone(),
                quota: category.quota,
                available: category.available,
                held: category.held,
                sold: category.sold,
            })
            .collect(),
    }
}

/// A live seat map.
pub fn seat_map(seats: LiveSeats) -> proto::SeatMap {
    proto::SeatMap {
        category_id: seats.category_id,
        rows: seats
            .rows
            .into_iter()
            .map(|row| proto::SeatRowState {
                row: row.row,
                seats: count_u32(row.seats),
                taken: row.taken.into_iter().map(count_u32).collect(),
            })
            .collect(),
    }
}

/// A waiting room.
pub fn room(room: Room) -> proto::WaitingRoom {
    proto::WaitingRoom {
        event_id: room.event_id,
        enabled: room.enabled,
        admit_per_second: count_u32(room.admit_per_second),
        pass_ttl_seconds: count_u32(room.pass_ttl_seconds),
        opens_at: Some(timestamp(room.opens_at)),
        waiting: count_u64(room.waiting),
        admitted: count_u64(room.admitted),
    }
}

/// A caller's place in a queue.
pub fn queue_status(status: QueueStatus) -> proto::QueueStatus {
    let state = match status.status {
        QueueState::Waiting => proto::QueueState::Waiting,
        QueueState::Admitted => proto::QueueState::Admitted,
        QueueState::Expired => proto::QueueState::Expired,
        QueueState::SoldOut => proto::QueueState::SoldOut,
    };
    proto::QueueStatus {
        event_id: status.event_id,
        status: state.into(),
        position: status.position.map(count_u64),
        joined_at: Some(timestamp(status.joined_at)),
        pass: status.pass.unwrap_or_default(),
        pass_expires_at: status.pass_expires_at.map(timestamp),
        retry_after_seconds: status.retry_after_seconds.map_or(0, |seconds| u32::try_from(seconds).unwrap_or(u32::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let now = DateTime::from_timestamp_millis(1_800_000_000_123).unwrap();
        assert_eq!(time(&timestamp(now)), Some(now));
        assert_eq!(time(&Timestamp { seconds: 0, nanos: -1 }), None);
    }

    #[test]
    fn page_sizes_default_and_are_bounded() {
        assert_eq!(page_limit(0).unwrap(), PAGE_LIMIT_DEFAULT);
        assert_eq!(page_limit(100).unwrap(), 100);
        assert_eq!(page_limit(101).unwrap_err().code(), "validation_failed");
    }
}
