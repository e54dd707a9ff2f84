//! The transactional outbox: each state-changing script appends its event to the
//! category's Redis stream (`P:{c:C}:outbox`) in the same script, and the relay
//! turns stream entries into the contract's Kafka events.
//!
//! # Stream entry fields
//! Three fields, so a script's `XADD` and the relay's `XRANGE` move few values:
//! - `event`: `|`-separated, in this order: `id` (event UUID), `type`
//!   (`reserved|confirmed|cancelled|expired`), `occurred_at_ms`, and the reservation
//!   as it is after the change: `reservation_id`, `status`, `event_id`, `category_id`,
//!   `quantity`, `amount`, `currency`, `created_at_ms`, `expires_at_ms`,
//!   `confirmed_at_ms` (empty when unset). None of these can contain `|`: they are
//!   UUIDs, names, integers and an ISO 4217 code.
//! - `user_id` and `payment_id` (empty when unset): free text, so fields of their own.
//! - `seats`: the reservation's seats, comma-separated `ROW-N` names (empty or absent
//!   in a counted category).
//! - `traceparent` (optional): the W3C trace context of the request that caused the
//!   change, when it was traced ([`traceparent`]); absent otherwise, and always for the
//!   reaper's expiries. The relay puts it on the Kafka record as a header.
//!
//! [`entry_fields`] writes this entry in Rust (for tests and tools); the Lua scripts
//! write the same (`prelude.lua` `append_event`, and `reserve_prelude.lua` `append_reserved`).
//!
//! # Event ids
//! A reservation has at most one event of each type, so the event id is the
//! name-based UUID (version 5) of `"<reservation_id>:<type>"` in [`EVENT_NAMESPACE`].
//! [`event_id`] computes it in Rust and the caller passes it to the script that writes
//! the event. A copy delivered twice therefore keeps its id.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::contract::{Reservation, ReservationStatus};
use crate::milliseconds;
use crate::telemetry::trace_context::{TRACEPARENT, TraceParent};

/// Namespace of event ids (a fixed random UUID).
pub const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2b7e_5d4a_4c3b_9a8f_1e2d_3c4b_5a69);

/// What happened to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// A hold was created.
    Reserved,
    /// The hold was paid.
    Confirmed,
    /// The owner released the hold.
    Cancelled,
    /// The hold lapsed at its deadline.
    Expired,
}

impl EventType {
    /// The type name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    /// Parses a type name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "reserved" => Some(Self::Reserved),
            "confirmed" => Some(Self::Confirmed),
            "cancelled" => Some(Self::Cancelled),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }
}

/// The contract's reservation event, as published to Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReservationEvent {
    /// Unique per event; a redelivered copy keeps it.
    pub id: Uuid,
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// When it happened (Redis server time).
    pub occurred_at: DateTime<Utc>,
    /// The reservation after the change.
    pub reservation: Reservation,
}

/// The id of the event of `event_type` for `reservation_id`.
pub fn event_id(reservation_id: Uuid, event_type: EventType) -> Uuid {
    let name = format!("{reservation_id}:{}", event_type.as_str());
    Uuid::new_v5(&EVENT_NAMESPACE, name.as_bytes())
}

/// Why a stream entry is not a valid event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed outbox entry: field {field}")]
pub struct MalformedEntry {
    /// The missing or unparsable field.
    pub field: &'static str,
}

/// Fields of the packed `event` value; the discriminant is the position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PackedField {
    Id,
    Type,
    OccurredAt,
    ReservationId,
    Status,
    EventId,
    CategoryId,
    Quantity,
    Amount,
    Currency,
    CreatedAt,
    ExpiresAt,
    ConfirmedAt,
}

impl PackedField {
    /// How many fields the packed value has.
    const COUNT: usize = Self::ConfirmedAt as usize + 1;

    /// The field's name, as in the module docs and [`MalformedEntry`].
    fn name(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::Type => "type",
            Self::OccurredAt => "occurred_at_ms",
            Self::ReservationId => "reservation_id",
            Self::Status => "status",
            Self::EventId => "event_id",
            Self::CategoryId => "category_id",
            Self::Quantity => "quantity",
            Self::Amount => "amount",
            Self::Currency => "currency",
            Self::CreatedAt => "created_at_ms",
            Self::ExpiresAt => "expires_at_ms",
            Self::ConfirmedAt => "confirmed_at_ms",
        }
    }
}

/// The stream entry of `event`, as the scripts write it.
pub fn entry_fields(event: &ReservationEvent) -> Vec<(&'static str, String)> {
    let reservation = &event.reservation;
    // In `PackedField` order.
    let packed: [String; PackedField::COUNT] = [
        event.id.to_string(),
        event.event_type.as_str().to_owned(),
        milliseconds::text(event.occurred_at),
        reservation.id.to_string(),
        reservation.status.as_str().to_owned(),
        reservation.event_id.to_string(),
        reservation.category_id.to_string(),
        reservation.quantity.to_string(),
        reservation.amount.to_string(),
        reservation.currency.clone(),
        milliseconds::text(reservation.created_at),
        milliseconds::text(reservation.expires_at),
        milliseconds::optional_text(reservation.confirmed_at),
    ];
    vec![
        ("event", packed.join("|")),
        ("user_id", reservation.user_id.clone()),
        ("payment_id", reservation.payment_id.clone().unwrap_or_default()),
        ("seats", reservation.seats.as_ref().map(|seats| seats.join(",")).unwrap_or_default()),
    ]
}

/// The packed `event` value split into its [`PackedField`]s.
struct Packed<'a> {
    parts: Vec<&'a str>,
}

impl<'a> Packed<'a> {
    fn parse(fields: &'a HashMap<String, String>) -> Result<Self, MalformedEntry> {
        let parts: Vec<&str> = text(fields, "event")?.split('|').collect();
        if parts.len() != PackedField::COUNT {
            return Err(MalformedEntry { field: "event" });
        }
        Ok(Self { parts })
    }

    fn text(&self, field: PackedField) -> &'a str {
        self.parts[field as usize]
    }

    fn number(&self, field: PackedField) -> Result<i64, MalformedEntry> {
        self.text(field).parse().map_err(|_| MalformedEntry { field: field.name() })
    }

    fn optional_number(&self, field: PackedField) -> Result<Option<i64>, MalformedEntry> {
        match self.text(field) {
            "" => Ok(None),
            _ => self.number(field).map(Some),
        }
    }

    fn uuid(&self, field: PackedField) -> Result<Uuid, MalformedEntry> {
        Uuid::try_parse(self.text(field)).map_err(|_| MalformedEntry { field: field.name() })
    }
}

/// A stream entry's flat `[field, value, …]` reply as a map (a trailing odd item is dropped).
pub fn field_map(flat: Vec<String>) -> HashMap<String, String> {
    let mut fields = HashMap::with_capacity(flat.len() / 2);
    let mut items = flat.into_iter();
    while let (Some(field), Some(value)) = (items.next(), items.next()) {
        fields.insert(field, value);
    }
    fields
}

/// The entry's `traceparent` field: the trace of the request that caused the change, when
/// it was traced. A missing or malformed one is no trace (the event goes out all the same).
pub fn traceparent(fields: &HashMap<String, String>) -> Option<TraceParent> {
    fields.get(TRACEPARENT).and_then(|value| TraceParent::parse(value))
}

fn text<'a>(fields: &'a HashMap<String, String>, field: &'static str) -> Result<&'a str, MalformedEntry> {
    fields.get(field).map(String::as_str).ok_or(MalformedEntry { field })
}

impl ReservationEvent {
    /// Builds the event from a stream entry's fields.
    pub fn from_fields(fields: &HashMap<String, String>) -> Result<Self, MalformedEntry> {
        let packed = Packed::parse(fields)?;
        use PackedField as Field;
        let status = ReservationStatus::parse(packed.text(Field::Status))
            .ok_or(MalformedEntry { field: Field::Status.name() })?;
        let reservation = Reservation {
            id: packed.uuid(Field::ReservationId)?,
            status,
            event_id: packed.number(Field::EventId)?,
            category_id: packed.number(Field::CategoryId)?,
            user_id: text(fields, "user_id")?.to_owned(),
            quantity: packed.number(Field::Quantity)?,
            amount: packed.number(Field::Amount)?,
            currency: packed.text(Field::Currency).to_owned(),
            created_at: milliseconds::to_time(packed.number(Field::CreatedAt)?),
            expires_at: milliseconds::to_time(packed.number(Field::ExpiresAt)?),
            confirmed_at: packed.optional_number(Field::ConfirmedAt)?.map(milliseconds::to_time),
            payment_id: fields.get("payment_id").filter(|value| !value.is_empty()).cloned(),
            seats: fields.get("seats").and_then(|seats| crate::contract::seat_list(seats)),
        };
        Ok(Self {
            id: packed.uuid(Field::Id)?,
            event_type: EventType::parse(packed.text(Field::Type))
                .ok_or(MalformedEntry { field: Field::Type.name() })?,
            occurred_at: milliseconds::to_time(packed.number(Field::OccurredAt)?),
            reservation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> ReservationEvent {
        let reservation = Uuid::parse_str("019a9f7c-1d2e-8abc-9def-000000000001").unwrap();
        ReservationEvent {
            id: event_id(reservation, EventType::Confirmed),
            event_type: EventType::Confirmed,
            occurred_at: milliseconds::to_time(1_700_000_005_000),
            reservation: Reservation {
                id: reservation,
                status: ReservationStatus::Confirmed,
                event_id: 1,
                category_id: 1,
                user_id: "alice|with a bar".into(),
                quantity: 2,
                amount: 300,
                currency: "USD".into(),
                created_at: milliseconds::to_time(1_700_000_000_000),
                expires_at: milliseconds::to_time(1_700_000_600_000),
                confirmed_at: Some(milliseconds::to_time(1_700_000_005_000)),
                payment_id: Some("pay_1".into()),
                seats: Some(vec!["A-1".into(), "A-2".into()]),
            },
        }
    }

    fn entry() -> HashMap<String, String> {
        entry_fields(&event()).into_iter().map(|(field, value)| (field.to_owned(), value)).collect()
    }

    #[test]
    fn the_traceparent_field_is_optional_and_checked() {
        let mut fields = entry();
        assert_eq!(traceparent(&fields), None, "an untraced entry has none");
        let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        fields.insert("traceparent".into(), sampled.into());
        assert_eq!(traceparent(&fields).map(|trace| trace.to_string()), Some(sampled.to_owned()));
        assert_eq!(ReservationEvent::from_fields(&fields), Ok(event()), "the event is the same");
        fields.insert("traceparent".into(), "garbage".into());
        assert_eq!(traceparent(&fields), None, "a malformed one is no trace");
    }

    #[test]
    fn flat_fields_pair_up() {
        let fields = field_map(vec!["a".into(), "1".into(), "b".into(), "2".into()]);
        assert_eq!(fields["a"], "1");
        assert_eq!(fields["b"], "2");
    }

    /// Every event type. The match stops compiling when a variant is added, so this
    /// list (and every test that walks it) has to grow with the enum.
    fn every_event_type() -> [EventType; 4] {
        let all = [EventType::Reserved, EventType::Confirmed, EventType::Cancelled, EventType::Expired];
        for event_type in all {
            match event_type {
                EventType::Reserved | EventType::Confirmed | EventType::Cancelled | EventType::Expired => {}
            }
        }
        all
    }

    #[test]
    fn entries_round_trip() {
        assert_eq!(ReservationEvent::from_fields(&entry()), Ok(event()));
        for event_type in every_event_type() {
            assert_eq!(EventType::parse(event_type.as_str()), Some(event_type));
            let mut event = event();
            event.id = event_id(event.reservation.id, event_type);
            event.event_type = event_type;
            event.reservation.status = match event_type {
                EventType::Reserved => ReservationStatus::Held,
                EventType::Confirmed => ReservationStatus::Confirmed,
                EventType::Cancelled => ReservationStatus::Cancelled,
                EventType::Expired => ReservationStatus::Expired,
            };
            if event_type != EventType::Confirmed {
                event.reservation.confirmed_at = None;
                event.reservation.payment_id = None;
            }
            let fields = entry_fields(&event).into_iter().map(|(field, value)| (field.to_owned(), value)).collect();
            assert_eq!(ReservationEvent::from_fields(&fields), Ok(event), "{event_type:?}");
        }
        assert_eq!(EventType::parse("paying"), None);
    }

    #[test]
    fn entries_become_contract_events() {
        let event = ReservationEvent::from_fields(&entry()).unwrap();
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "confirmed");
        assert_eq!(json["occurred_at"], "2023-11-14T22:13:25Z");
        assert_eq!(json["reservation"]["status"], "confirmed");
        assert_eq!(json["reservation"]["payment_id"], "pay_1");
        assert_eq!(json["reservation"]["expires_at"], "2023-11-14T22:23:20Z");
    }

    #[test]
    fn held_entries_omit_payment_fields() {
        let mut held = event();
        held.reservation.confirmed_at = None;
        held.reservation.payment_id = None;
        let fields = entry_fields(&held).into_iter().map(|(field, value)| (field.to_owned(), value)).collect();
        let event = ReservationEvent::from_fields(&fields).unwrap();
        let json = serde_json::to_value(&event.reservation).unwrap();
        assert!(json.get("payment_id").is_none() && json.get("confirmed_at").is_none());
    }

    #[test]
    fn malformed_entries_name_the_field() {
        let mut fields = entry();
        let packed = fields["event"].replace("|2|300|", "|two|300|");
        fields.insert("event".into(), packed);
        assert_eq!(ReservationEvent::from_fields(&fields), Err(MalformedEntry { field: "quantity" }));
        fields.insert("event".into(), "a|b".into());
        assert_eq!(ReservationEvent::from_fields(&fields), Err(MalformedEntry { field: "event" }));
        fields.remove("user_id");
        assert_eq!(ReservationEvent::from_fields(&fields), Err(MalformedEntry { field: "event" }));
    }

    #[test]
    fn event_ids_are_stable_and_distinct_per_type() {
        let reservation = Uuid::new_v4();
        assert_eq!(event_id(reservation, EventType::Reserved), event_id(reservation, EventType::Reserved));
        assert_ne!(event_id(reservation, EventType::Reserved), event_id(reservation, EventType::Expired));
        assert_eq!(event_id(reservation, EventType::Reserved).get_version_num(), 5);
    }
}
