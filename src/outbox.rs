//! The transactional outbox: each state-changing script appends its event to the
//! category's Redis stream (`P:{c:C}:outbox`) in the same script, and the relay
//! turns stream entries into the contract's Kafka events.
//!
//! # Stream entry fields
//! `id` (event UUID), `type` (`reserved|confirmed|cancelled|expired`),
//! `occurred_at_ms`, and the reservation as it is after the change:
//! `reservation_id`, `status`, `user_id`, `event_id`, `category_id`, `quantity`,
//! `amount`, `currency`, `created_at_ms`, `expires_at_ms`, `confirmed_at_ms` (empty
//! when unset), `payment_id` (empty when unset).
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

use crate::reservation::{Reservation, ReservationStatus, time_from_millis};

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

fn text<'a>(fields: &'a HashMap<String, String>, field: &'static str) -> Result<&'a str, MalformedEntry> {
    fields.get(field).map(String::as_str).ok_or(MalformedEntry { field })
}

fn number(fields: &HashMap<String, String>, field: &'static str) -> Result<i64, MalformedEntry> {
    text(fields, field)?.parse().map_err(|_| MalformedEntry { field })
}

fn optional_number(fields: &HashMap<String, String>, field: &'static str) -> Result<Option<i64>, MalformedEntry> {
    match fields.get(field).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(value) => value.parse().map(Some).map_err(|_| MalformedEntry { field }),
    }
}

impl ReservationEvent {
    /// Builds the event from a stream entry's fields.
    pub fn from_fields(fields: &HashMap<String, String>) -> Result<Self, MalformedEntry> {
        let uuid = |field| Uuid::try_parse(text(fields, field)?).map_err(|_| MalformedEntry { field });
        let status = ReservationStatus::parse(text(fields, "status")?).ok_or(MalformedEntry { field: "status" })?;
        let reservation = Reservation {
            id: uuid("reservation_id")?,
            status,
            event_id: number(fields, "event_id")?,
            category_id: number(fields, "category_id")?,
            user_id: text(fields, "user_id")?.to_owned(),
            quantity: number(fields, "quantity")?,
            amount: number(fields, "amount")?,
            currency: text(fields, "currency")?.to_owned(),
            created_at: time_from_millis(number(fields, "created_at_ms")?),
            expires_at: time_from_millis(number(fields, "expires_at_ms")?),
            confirmed_at: optional_number(fields, "confirmed_at_ms")?.map(time_from_millis),
            payment_id: fields.get("payment_id").filter(|value| !value.is_empty()).cloned(),
        };
        Ok(Self {
            id: uuid("id")?,
            event_type: EventType::parse(text(fields, "type")?).ok_or(MalformedEntry { field: "type" })?,
            occurred_at: time_from_millis(number(fields, "occurred_at_ms")?),
            reservation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> HashMap<String, String> {
        let reservation = "019a9f7c-1d2e-8abc-9def-000000000001";
        [
            ("id", event_id(Uuid::parse_str(reservation).unwrap(), EventType::Confirmed).to_string()),
            ("type", "confirmed".into()),
            ("occurred_at_ms", "1700000005000".into()),
            ("reservation_id", reservation.into()),
            ("status", "confirmed".into()),
            ("user_id", "alice".into()),
            ("event_id", "1".into()),
            ("category_id", "1".into()),
            ("quantity", "2".into()),
            ("amount", "300".into()),
            ("currency", "USD".into()),
            ("created_at_ms", "1700000000000".into()),
            ("expires_at_ms", "1700000600000".into()),
            ("confirmed_at_ms", "1700000005000".into()),
            ("payment_id", "pay_1".into()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
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
        let mut fields = entry();
        fields.insert("confirmed_at_ms".into(), String::new());
        fields.insert("payment_id".into(), String::new());
        let event = ReservationEvent::from_fields(&fields).unwrap();
        let json = serde_json::to_value(&event.reservation).unwrap();
        assert!(json.get("payment_id").is_none() && json.get("confirmed_at").is_none());
    }

    #[test]
    fn malformed_entries_name_the_field() {
        let mut fields = entry();
        fields.remove("quantity");
        assert_eq!(ReservationEvent::from_fields(&fields), Err(MalformedEntry { field: "quantity" }));
    }

    #[test]
    fn event_ids_are_stable_and_distinct_per_type() {
        let reservation = Uuid::new_v4();
        assert_eq!(event_id(reservation, EventType::Reserved), event_id(reservation, EventType::Reserved));
        assert_ne!(event_id(reservation, EventType::Reserved), event_id(reservation, EventType::Expired));
        assert_eq!(event_id(reservation, EventType::Reserved).get_version_num(), 5);
    }
}
