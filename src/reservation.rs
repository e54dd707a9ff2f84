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
//! - [`engine`]: the transitions (reserve, confirm, cancel, read) and their errors.
//! - [`group_commit`]: counted reserves of one category that arrive while its script
//!   call is in flight go to Redis together in the next call.
//! - [`idempotency`]: `Idempotency-Key`s, request fingerprints and where they are kept.
//! - [`reaper`]: the background task that releases holds past their deadline.
//! - [`admission`]: backpressure: in-flight bound and per-IP rate limit.
//! - [`sold_out`]: the sold-out fast path: `sold_out` without Redis for at most 100 ms.

pub mod admission;
pub mod engine;
pub mod group_commit;
pub mod idempotency;
pub mod reaper;
pub mod sold_out;

use uuid::Uuid;

use crate::catalog::QUOTA_MAX;
use crate::contract::{Reservation, ReservationStatus, seat_list};
use crate::ids::{CategoryId, EventId, ReservationId};
use crate::milliseconds;
use crate::payment::PaymentToken;
use crate::seating::{SEATS_PER_REQUEST_MAX, SeatName, SeatSelection};
use crate::validation::{FieldError, FieldErrors};

pub use engine::{EngineOptions, NotHeldReason, Refusal, ReservationEngine, ReservationError};

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

/// The stored names of a hold record's fields: one or two letters, because a record is
/// otherwise mostly its field names (issue #15, "Memory per hold"). Each constant's
/// name is the field's meaning, which was also its stored name before (see
/// [`LEGACY_RECORD_FIELDS`]).
///
/// | stored | meaning | value |
/// | --- | --- | --- |
/// | `s` | `status` | held, paying, confirmed, cancelled or expired |
/// | `u` | `user_id` | the owner |
/// | `e` | `event_id` | the category's event |
/// | `c` | `category_id` | the category (also in the key's hash tag) |
/// | `q` | `quantity` | tickets held |
/// | `a` | `amount` | price * quantity, in minor units |
/// | `m` | `currency` | ISO 4217 code |
/// | `tc` | `created_at_ms` | when the hold was made (Redis time, ms) |
/// | `tx` | `expires_at_ms` | the hold's absolute deadline (ms) |
/// | `tf` | `confirmed_at_ms` | when it was confirmed (ms), once confirmed |
/// | `p` | `payment_id` | the gateway's payment id, once confirmed |
/// | `n` | `seats` | comma-separated seat names, in seated categories only |
/// | `pa` | `attempt` | the running payment attempt (kept after confirm) |
/// | `tp` | `paying_until_ms` | end of the payment window, while paying |
/// | `pk` | `payment_key` | key of the payment's idempotency record or '', while paying |
pub mod record_field {
    /// `status`.
    pub const STATUS: &str = "s";
    /// `user_id`.
    pub const USER_ID: &str = "u";
    /// `event_id`.
    pub const EVENT_ID: &str = "e";
    /// `category_id`.
    pub const CATEGORY_ID: &str = "c";
    /// `quantity`.
    pub const QUANTITY: &str = "q";
    /// `amount`.
    pub const AMOUNT: &str = "a";
    /// `currency`.
    pub const CURRENCY: &str = "m";
    /// `created_at_ms`.
    pub const CREATED_AT_MS: &str = "tc";
    /// `expires_at_ms`.
    pub const EXPIRES_AT_MS: &str = "tx";
    /// `confirmed_at_ms`.
    pub const CONFIRMED_AT_MS: &str = "tf";
    /// `payment_id`.
    pub const PAYMENT_ID: &str = "p";
    /// `seats`.
    pub const SEATS: &str = "n";
    /// `attempt`.
    pub const ATTEMPT: &str = "pa";
    /// `paying_until_ms`.
    pub const PAYING_UNTIL_MS: &str = "tp";
    /// `payment_key`.
    pub const PAYMENT_KEY: &str = "pk";
}

/// Fields of a hold record, in the order the scripts return them: the one definition of
/// the layout (names and meanings in [`record_field`]). The prelude scripts get it as
/// their `RECORD_FIELDS` table at load (`engine::with_prelude`); `reserve.lua` writes
/// these names itself, which an integration test checks against this list.
pub const RECORD_FIELDS: [&str; 12] = [
    record_field::STATUS,
    record_field::USER_ID,
    record_field::EVENT_ID,
    record_field::CATEGORY_ID,
    record_field::QUANTITY,
    record_field::AMOUNT,
    record_field::CURRENCY,
    record_field::CREATED_AT_MS,
    record_field::EXPIRES_AT_MS,
    record_field::CONFIRMED_AT_MS,
    record_field::PAYMENT_ID,
    record_field::SEATS,
];

/// The fields a record has while a payment runs, after [`RECORD_FIELDS`].
pub const PAYMENT_FIELDS: [&str; 3] = [record_field::ATTEMPT, record_field::PAYING_UNTIL_MS, record_field::PAYMENT_KEY];

/// The stored names of [`RECORD_FIELDS`] then [`PAYMENT_FIELDS`] in the layout before
/// issue #15, which records written by earlier versions still have (a rolling deploy,
/// or live holds across an upgrade). Every reader accepts both layouts: the scripts
/// rewrite such a record in today's layout before they touch it (the prelude's
/// `upgrade_record`), and plain reads ask for both names ([`RECORD_FIELDS_OF_BOTH_LAYOUTS`]).
pub const LEGACY_RECORD_FIELDS: [&str; 15] = [
    "status",
    "user_id",
    "event_id",
    "category_id",
    "quantity",
    "amount",
    "currency",
    "created_at_ms",
    "expires_at_ms",
    "confirmed_at_ms",
    "payment_id",
    "seats",
    "attempt",
    "paying_until_ms",
    "payment_key",
];

/// What a plain read (`HMGET`) of a record asks for: [`RECORD_FIELDS`], then the same
/// fields by their legacy names; [`either_layout`] picks the half the record has.
pub const RECORD_FIELDS_OF_BOTH_LAYOUTS: [&str; 24] = {
    let mut names = [""; 24];
    let mut index = 0;
    while index < RECORD_FIELDS.len() {
        names[index] = RECORD_FIELDS[index];
        names[RECORD_FIELDS.len() + index] = LEGACY_RECORD_FIELDS[index];
        index += 1;
    }
    names
};

/// The record fields of a read of [`RECORD_FIELDS_OF_BOTH_LAYOUTS`], in [`RECORD_FIELDS`]
/// order: today's half when the record has a status under its stored name, else the
/// legacy half (a record is wholly in one layout: the upgrade rewrites it in one script).
pub fn either_layout(mut fields: Vec<Option<String>>) -> Vec<Option<String>> {
    let legacy = fields.split_off(fields.len().min(RECORD_FIELDS.len()));
    if fields.first().is_some_and(Option::is_some) { fields } else { legacy }
}

/// Builds the contract's view of a stored hold record (fields in [`RECORD_FIELDS`]
/// order); `None` when the record is absent or malformed. `paying` reads as `held`.
pub fn reservation_from_record(id: ReservationId, fields: &[Option<String>]) -> Option<Reservation> {
    let [
        status,
        user_id,
        event_id,
        category_id,
        quantity,
        amount,
        currency,
        created,
        expires,
        confirmed,
        payment,
        seats,
    ] = fields
    else {
        return None;
    };
    let number = |field: &Option<String>| field.as_deref().and_then(|text| text.parse::<i64>().ok());
    let confirmed_at = match confirmed.as_deref() {
        None | Some("") => None,
        Some(text) => Some(milliseconds::to_time(text.parse().ok()?)),
    };
    Some(Reservation {
        id: id.uuid(),
        status: ReservationStatus::parse(status.as_deref()?)?,
        event_id: number(event_id)?,
        category_id: number(category_id)?,
        user_id: user_id.clone()?,
        quantity: number(quantity)?,
        amount: number(amount)?,
        currency: currency.clone()?,
        created_at: milliseconds::to_time(number(created)?),
        expires_at: milliseconds::to_time(number(expires)?),
        confirmed_at,
        payment_id: payment.clone().filter(|payment| !payment.is_empty()),
        seats: seats.as_deref().and_then(seat_list),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: &str) -> Vec<Option<String>> {
        let values = [status, "alice", "1", "7", "2", "3000", "USD", "1700000000000", "1700000600000", "", "", ""];
        values.iter().map(|value| Some(value.to_string())).collect()
    }

    #[test]
    fn records_become_the_contract_view() {
        let id = ReservationId::generate(CategoryId::new(7).unwrap());
        let held = reservation_from_record(id, &record("paying")).unwrap();
        assert_eq!(held.status, ReservationStatus::Held);
        assert_eq!((held.quantity, held.amount, held.user_id.as_str()), (2, 3000, "alice"));
        let json = serde_json::to_value(&held).unwrap();
        assert!(json.get("confirmed_at").is_none() && json.get("payment_id").is_none());
        let mut confirmed = record("confirmed");
        confirmed[9] = Some("1700000005000".into());
        confirmed[10] = Some("pay_1".into());
        let confirmed = reservation_from_record(id, &confirmed).unwrap();
        assert_eq!(confirmed.payment_id.as_deref(), Some("pay_1"));
        assert_eq!(confirmed.confirmed_at, Some(milliseconds::to_time(1_700_000_005_000)));
        let mut missing = record("held");
        missing[0] = None;
        assert!(reservation_from_record(id, &missing).is_none());
        assert!(reservation_from_record(id, &record("held")[..5]).is_none());
    }

    #[test]
    fn reads_take_the_layout_the_record_has() {
        // Goal: a read of both layouts' names yields the record in RECORD_FIELDS order whichever layout stored it.
        let stored = record("held");
        let absent = vec![None; RECORD_FIELDS.len()];
        assert_eq!(either_layout([stored.clone(), absent.clone()].concat()), stored);
        assert_eq!(either_layout([absent.clone(), stored.clone()].concat()), stored);
        assert_eq!(either_layout([absent.clone(), absent.clone()].concat()), absent);
        assert_eq!(RECORD_FIELDS_OF_BOTH_LAYOUTS[..RECORD_FIELDS.len()], RECORD_FIELDS);
        assert_eq!(RECORD_FIELDS_OF_BOTH_LAYOUTS[RECORD_FIELDS.len()..], LEGACY_RECORD_FIELDS[..RECORD_FIELDS.len()]);
    }

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
