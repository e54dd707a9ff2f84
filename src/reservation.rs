//! Reservations: ids, statuses, the contract's Reservation view, validated requests,
//! and the engine that holds, confirms, cancels and expires them in Redis.
//!
//! # Life of a hold
//! `reserve` creates it `held` with a deadline (`expires_at`). `confirm` moves it to the
//! internal `paying` state for one payment attempt (bounded by the payment window and
//! by the hold's deadline, and skipped by the reaper until then), then to `confirmed` or
//! back to `held`. A record has no TTL until it reaches a final status. `cancel`
//! and the reaper end it `cancelled` or `expired`, returning its tickets at once. Each
//! transition is one Lua script (`src/reservation/*.lua`) that checks everything before
//! its first write and appends the transition's event to the category's outbox.
//!
//! # Layout
//! - [`engine`]: the engine (Redis, keyspace, gateway, options); cancel and read.
//! - [`reserve`]: the reserve path.
//! - [`reserve_reply`]: a reserve script's reply, parsed once into a typed outcome.
//! - [`confirm`]: confirm with a payment, in four steps.
//! - [`error`]: every way an operation fails, and the refusals of a reserve.
//! - [`record`]: the hold record's layout, its one Rust writer and reader, and the
//!   builders that give the layout to the Lua scripts.
//! - [`group_commit`]: counted reserves of one category that arrive while its script
//!   call is in flight go to Redis together in the next call.
//! - [`idempotency`]: `Idempotency-Key`s, request fingerprints and where they are kept.
//! - [`reaper`]: the background task that releases holds past their deadline.
//! - [`admission`]: backpressure: in-flight bound and per-IP rate limit.
//! - [`sold_out`]: the sold-out fast path: `sold_out` without Redis for at most 100 ms.

pub mod admission;
pub mod confirm;
pub mod engine;
pub mod error;
pub mod group_commit;
pub mod idempotency;
pub mod reaper;
pub mod record;
pub mod reserve;
pub mod reserve_reply;
pub mod sold_out;

use uuid::Uuid;

use crate::ids::{CategoryId, EventId};
use crate::payment::PaymentToken;
use crate::seating::{SEATS_PER_REQUEST_MAX, SeatName, SeatSelection};
use crate::stock::QUOTA_MAX;
use crate::validation::{FieldError, FieldErrors};

pub use confirm::{Abandon, AbandonOutcome, PaymentStart};
pub use engine::{EngineOptions, FINAL_RECORD_TTL, PAYMENT_WINDOW_MARGIN, ReservationEngine, ReservationIds};
pub use error::{NotHeldReason, Refusal, ReservationError};
pub use record::{
    LEGACY_RECORD_FIELDS, PAYMENT_FIELDS, RECORD_FIELDS, RECORD_FIELDS_OF_BOTH_LAYOUTS, either_layout, record_field,
    record_fields_of, record_layout, reservation_from_record,
};

/// Largest `quantity` of one reservation: no category has more tickets, so anything
/// above can never be held, and the bound keeps every product far from overflow.
/// Quantities above a category's `max_per_user` are refused by the reserve script
/// (`limit_exceeded`), as the contract says.
pub const QUANTITY_MAX: i64 = QUOTA_MAX;

/// A validated ticket count: `1..=QUANTITY_MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quantity(i64);

impl Quantity {
    /// Accepts `1..=QUANTITY_MAX`.
    pub fn new(quantity: i64) -> Result<Self, String> {
        if (1..=QUANTITY_MAX).contains(&quantity) {
            Ok(Self(quantity))
        } else {
            Err(format!("must be an integer from 1 to {QUANTITY_MAX}"))
        }
    }

    /// The count.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// A validated `POST /reserve` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReservation {
    /// The ticket category.
    pub category: CategoryId,
    /// How many tickets (for named seats, their number).
    pub quantity: Quantity,
    /// The event the caller expects the category to belong to, if given.
    pub event: Option<EventId>,
    /// Which seats, in a seated category.
    pub seats: SeatSelection,
}

/// The raw seat fields of a reserve request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeatFields {
    /// `seats`: seat names.
    pub seats: Option<Vec<String>>,
    /// `adjacent`.
    pub adjacent: Option<bool>,
}

impl NewReservation {
    /// Validates the raw fields of a reserve request with its seat fields: named seats
    /// (distinct, well-formed, `quantity` absent or their number), or `adjacent` with a
    /// `quantity`, never both.
    pub fn parse_with_seats(
        category_id: Option<i64>,
        quantity: Option<i64>,
        event_id: Option<i64>,
        fields: SeatFields,
    ) -> Result<Self, Vec<FieldError>> {
        let adjacent = fields.adjacent == Some(true);
        let Some(names) = fields.seats else {
            if adjacent && quantity.is_none() {
                let mut errors = Self::parse(category_id, Some(1), event_id).err().unwrap_or_default();
                errors
                    .push(FieldError { field: "quantity".to_owned(), message: "is required with adjacent".to_owned() });
                return Err(errors);
            }
            let seats = if adjacent { SeatSelection::Adjacent } else { SeatSelection::Any };
            return Self::parse(category_id, quantity, event_id).map(|request| Self { seats, ..request });
        };
        let mut errors = FieldErrors::new();
        let named = parse_seat_names(&mut errors, names);
        if adjacent {
            errors.add("adjacent", "must be left out with seats");
        }
        let count = named.as_ref().map_or(1, Vec::len);
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        if quantity.is_some_and(|quantity| quantity != count) {
            errors.add("quantity", "must equal the number of seats");
        }
        let mut all = errors.into_vec();
        match Self::parse(category_id, Some(count), event_id) {
            Ok(request) if all.is_empty() => {
                Ok(Self { seats: SeatSelection::Named(named.unwrap_or_default()), ..request })
            }
            Ok(_) => Err(all),
            Err(more) => {
                all.extend(more);
                Err(all)
            }
        }
    }

    /// Validates the raw fields of a reserve request without seat fields.
    pub fn parse(
        category_id: Option<i64>,
        quantity: Option<i64>,
        event_id: Option<i64>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = FieldErrors::new();
        let category = errors.require("category_id", category_id).and_then(|id| {
            errors.check("category_id", CategoryId::new(id).ok_or_else(|| "must be a positive category id".to_owned()))
        });
        let quantity =
            errors.require("quantity", quantity).and_then(|quantity| errors.check("quantity", Quantity::new(quantity)));
        let event = match event_id {
            None => None,
            Some(id) => {
                errors.check("event_id", EventId::new(id).ok_or_else(|| "must be a positive event id".to_owned()))
            }
        };
        match (category, quantity) {
            (Some(category), Some(quantity)) if errors.is_empty() => {
                Ok(Self { category, quantity, event, seats: SeatSelection::Any })
            }
            _ => Err(errors.into_vec()),
        }
    }
}

/// Named seats: 1..=[`SEATS_PER_REQUEST_MAX`] well-formed, distinct names, in request order.
fn parse_seat_names(errors: &mut FieldErrors, names: Vec<String>) -> Option<Vec<SeatName>> {
    if names.is_empty() || names.len() > SEATS_PER_REQUEST_MAX {
        errors.add("seats", format!("must name 1 to {SEATS_PER_REQUEST_MAX} seats"));
        return None;
    }
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    let mut parsed = Vec::with_capacity(names.len());
    let before = errors.len();
    for (index, name) in names.iter().enumerate() {
        let field = format!("seats[{index}]");
        if let Some(seat) = errors.check(&field, SeatName::parse(name)) {
            if seen.insert(seat.clone()) {
                parsed.push(seat);
            } else {
                errors.add(&field, format!("`{name}` is named twice"));
            }
        }
    }
    (errors.len() == before).then_some(parsed)
}

/// A validated `POST /confirm` request. The id is only known to be a UUID: whether it
/// names one of our reservations is the handler's 404, not a validation error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    /// The reservation to confirm.
    pub reservation_id: Uuid,
    /// The payment token.
    pub token: PaymentToken,
}

impl Confirmation {
    /// Validates the raw fields of a confirm request.
    pub fn parse(reservation_id: Option<&str>, token: Option<&str>) -> Result<Self, Vec<FieldError>> {
        let mut errors = FieldErrors::new();
        let reservation_id = errors.require("reservation_id", reservation_id).and_then(|id| {
            errors.check("reservation_id", Uuid::try_parse(id).map_err(|_| "must be a UUID".to_owned()))
        });
        let token = errors
            .require("payment.token", token)
            .and_then(|token| errors.check("payment.token", PaymentToken::parse(token)));
        match (reservation_id, token) {
            (Some(reservation_id), Some(token)) if errors.is_empty() => Ok(Self { reservation_id, token }),
            _ => Err(errors.into_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::ReservationStatus;

    #[test]
    fn reserve_requests_are_validated_at_the_edge() {
        let valid = NewReservation::parse(Some(3), Some(2), None).unwrap();
        assert_eq!((valid.category.get(), valid.quantity.get(), valid.event), (3, 2, None));
        let fields = |result: Result<NewReservation, Vec<FieldError>>| -> Vec<String> {
            result.unwrap_err().into_iter().map(|error| error.field).collect()
        };
        assert_eq!(fields(NewReservation::parse(None, None, None)), ["category_id", "quantity"]);
        assert_eq!(fields(NewReservation::parse(Some(0), Some(0), Some(-1))), ["category_id", "quantity", "event_id"]);
        assert_eq!(
            fields(NewReservation::parse(Some(1 << 32), Some(QUANTITY_MAX + 1), None)),
            ["category_id", "quantity"]
        );
        assert!(NewReservation::parse(Some(1), Some(QUANTITY_MAX), Some(1)).is_ok());
    }

    #[test]
    fn confirm_requests_need_a_uuid_and_a_token() {
        let id = Uuid::new_v4().to_string();
        assert!(Confirmation::parse(Some(&id), Some("tok_ok")).is_ok());
        let fields = |result: Result<Confirmation, Vec<FieldError>>| -> Vec<String> {
            result.unwrap_err().into_iter().map(|error| error.field).collect()
        };
        assert_eq!(fields(Confirmation::parse(None, None)), ["reservation_id", "payment.token"]);
        assert_eq!(fields(Confirmation::parse(Some("123"), Some(""))), ["reservation_id", "payment.token"]);
    }

    #[test]
    fn paying_reads_as_held() {
        assert_eq!(ReservationStatus::parse("paying"), Some(ReservationStatus::Held));
        assert!(ReservationStatus::Expired.is_final());
        assert!(!ReservationStatus::Held.is_final());
    }
}
