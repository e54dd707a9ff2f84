//! Reservations: ids, statuses and the contract's Reservation view.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::catalog::CategoryId;

/// A reservation id: a UUID (version 8) whose last four bytes carry the category id,
/// so every request can find the reservation's Redis hash tag from the id alone.
///
/// Layout: bytes 0..6 Unix milliseconds (for index locality only; never used for
/// expiry), then random bits around the version and variant, then the category id
/// as a big-endian `u32` in bytes 12..16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReservationId {
    uuid: Uuid,
    category: CategoryId,
}

impl ReservationId {
    /// A new id for a reservation in `category`.
    pub fn generate(category: CategoryId) -> Self {
        let millis = Utc::now().timestamp_millis().max(0) as u64;
        let mut bytes = *Uuid::new_v4().as_bytes();
        bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
        let category_bits = u32::try_from(category.get()).expect("category ids fit in 32 bits");
        bytes[12..].copy_from_slice(&category_bits.to_be_bytes());
        let uuid = Uuid::new_v8(bytes);
        Self { uuid, category }
    }

    /// Parses a reservation id; `None` for anything that is not one of ours.
    pub fn parse(text: &str) -> Option<Self> {
        let uuid = Uuid::try_parse(text).ok()?;
        Self::from_uuid(uuid)
    }

    /// Interprets a UUID as a reservation id.
    pub fn from_uuid(uuid: Uuid) -> Option<Self> {
        if uuid.get_version_num() != 8 {
            return None;
        }
        let bytes = uuid.as_bytes();
        let category = u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        let category = CategoryId::new(i64::from(category))?;
        Some(Self { uuid, category })
    }

    /// The UUID.
    pub fn uuid(self) -> Uuid {
        self.uuid
    }

    /// The category the reservation belongs to.
    pub fn category(self) -> CategoryId {
        self.category
    }
}

impl std::fmt::Display for ReservationId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.uuid.fmt(formatter)
    }
}

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
}

/// Milliseconds since the Unix epoch as a UTC time.
pub fn time_from_millis(millis: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(millis).single().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservation_ids_carry_their_category() {
        let category = CategoryId::new(4_000_000_000).unwrap();
        let id = ReservationId::generate(category);
        let parsed = ReservationId::parse(&id.to_string()).unwrap();
        assert_eq!(parsed, id);
        assert_eq!(parsed.category(), category);
        assert_eq!(id.uuid().get_version_num(), 8);
    }

    #[test]
    fn foreign_uuids_are_not_reservation_ids() {
        assert!(ReservationId::parse(&Uuid::new_v4().to_string()).is_none());
        assert!(ReservationId::parse("not-a-uuid").is_none());
        assert!(ReservationId::from_uuid(Uuid::new_v8([0; 16])).is_none(), "category 0 is invalid");
    }

    #[test]
    fn paying_reads_as_held() {
        assert_eq!(ReservationStatus::parse("paying"), Some(ReservationStatus::Held));
        assert!(ReservationStatus::Expired.is_final());
        assert!(!ReservationStatus::Held.is_final());
    }
}
