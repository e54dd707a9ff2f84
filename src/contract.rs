//! The contract's view of a reservation: [`Reservation`] and its [`ReservationStatus`],
//! shared by the engine, the outbox events, the worker and the read side.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Where a reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReservationStatus {
    /// Tickets held until `expires_at`.
    Held,
    /// Paid; final.
    Confirmed,
    /// Released by its owner; final.
    Cancelled,
    /// Released at its deadline; final.
    Expired,
}

impl ReservationStatus {
    /// The status name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    /// Parses a stored status. The internal `paying` state reads as `held`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "held" | "paying" => Some(Self::Held),
            "confirmed" => Some(Self::Confirmed),
            "cancelled" => Some(Self::Cancelled),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }

    /// Whether no further transition is possible.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Held)
    }
}

/// The contract's Reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"id": "019a9f7c-1d2e-8abc-9def-000000000001", "status": "held", "event_id": 1,
    "category_id": 1, "user_id": "alice", "quantity": 2, "amount": 300000, "currency": "IDR",
    "created_at": "2026-11-21T10:00:00.123Z", "expires_at": "2026-11-21T10:10:00.123Z"}))]
pub struct Reservation {
    /// Reservation id (UUID).
    pub id: Uuid,
    /// Current status.
    pub status: ReservationStatus,
    /// The event.
    pub event_id: i64,
    /// The ticket category.
    pub category_id: i64,
    /// The owner (`sub` of the token that reserved).
    pub user_id: String,
    /// Tickets in the reservation.
    pub quantity: i64,
    /// `price * quantity`, minor units.
    pub amount: i64,
    /// Currency code.
    pub currency: String,
    /// When the hold was created (Redis server time).
    pub created_at: DateTime<Utc>,
    /// `created_at + HOLD_TTL`.
    pub expires_at: DateTime<Utc>,
    /// When payment confirmed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<DateTime<Utc>>,
    /// The payment gateway's id of the charge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    /// The seats of a reservation in a seated category (`ROW-N`, rows in map order, then
    /// by number); absent in a counted category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = json!(["A-3", "A-4"]))]
    pub seats: Option<Vec<String>>,
}

/// A stored seat list (`A-3,A-4`, in hold records, idempotency records and outbox
/// entries) as the contract's `seats`; `None` when empty (a counted category).
pub fn seat_list(text: &str) -> Option<Vec<String>> {
    (!text.is_empty()).then(|| text.split(',').map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        use ReservationStatus::{Cancelled, Confirmed, Expired, Held};
        for status in [Held, Confirmed, Cancelled, Expired] {
            // Stops compiling when a status is added: add it to the list above too.
            match status {
                Held | Confirmed | Cancelled | Expired => {}
            }
            assert_eq!(ReservationStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(ReservationStatus::parse("paying"), Some(Held), "paying reads as held");
        assert_eq!(ReservationStatus::parse("unknown"), None);
    }
}
