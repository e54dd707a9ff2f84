//! `Idempotency-Key`s: validation, request fingerprints, and where both are kept.
//!
//! # Two records per key
//! A key is scoped per user and operation and kept 24 h.
//! 1. The **binding** (`P:{u:HEX}:idem:OP:K`, in the user's slot) pins the key to one
//!    request fingerprint with `SET NX`, before anything runs. A body naming another
//!    category would land in another slot, so only a per-user record can notice that the
//!    same key now carries a different body (422 `idempotency_key_reused`).
//! 2. The **outcome record** (`P:{c:C}:idem:OP:HEX:K`, in the category's slot) is
//!    written by the state-changing script itself, in the same atomic step as the change:
//!    two concurrent retries cannot both create a hold, and a replay returns the stored
//!    outcome. 5xx outcomes are never stored, so a retry runs again; the binding stays,
//!    which only keeps the key tied to the body it was first sent with.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;

use crate::ids::{CategoryId, UserId};
use crate::keyspace::Keyspace;
use crate::reservation::{Confirmation, NewReservation};
use crate::seating::{SeatName, SeatSelection};

/// How long keys and their outcomes are kept.
pub const IDEMPOTENCY_TTL_SECONDS: u64 = 24 * 3600;

/// Longest key, in bytes.
pub const KEY_LENGTH_MAX: usize = 255;

/// The operations that accept an `Idempotency-Key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdempotentOperation {
    /// `POST /reserve`.
    Reserve,
    /// `POST /confirm`.
    Confirm,
}

impl IdempotentOperation {
    /// The operation name in keys and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserve => "reserve",
            Self::Confirm => "confirm",
        }
    }
}

/// A validated `Idempotency-Key`: 1..=255 printable ASCII characters (space to `~`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates a raw header value.
    pub fn parse(value: &[u8]) -> Result<Self, String> {
        let printable = value.iter().all(|byte| (0x20..=0x7e).contains(byte));
        if value.is_empty() || value.len() > KEY_LENGTH_MAX || !printable {
            return Err(format!("must be 1 to {KEY_LENGTH_MAX} printable ASCII characters"));
        }
        Ok(Self(String::from_utf8(value.to_vec()).expect("printable ASCII is UTF-8")))
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// SHA-256 (hex) of a request's canonical, validated form: the same request gives the
/// same fingerprint however its JSON was spelled (order, spaces, `"event_id": null`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFingerprint(String);

impl RequestFingerprint {
    fn of(canonical: &str) -> Self {
        let digest = Sha256::digest(canonical.as_bytes());
        let mut hex = String::with_capacity(64);
        for byte in digest {
            write!(hex, "{byte:02x}").expect("writing to a String cannot fail");
        }
        Self(hex)
    }

    /// The fingerprint of a reserve request. Seat fields are appended only when given,
    /// so a counted request keeps the fingerprint it always had.
    pub fn of_reserve(request: &NewReservation) -> Self {
        let event = request.event.map(|event| event.get().to_string()).unwrap_or_default();
        let mut canonical = format!(
            "reserve\ncategory_id={}\nquantity={}\nevent_id={event}",
            request.category.get(),
            request.quantity.get()
        );
        match &request.seats {
            SeatSelection::Any => {}
            SeatSelection::Adjacent => canonical.push_str("\nadjacent=true"),
            SeatSelection::Named(seats) => {
                canonical.push_str("\nseats=");
                let names: Vec<&str> = seats.iter().map(SeatName::as_str).collect();
                canonical.push_str(&names.join(","));
            }
        }
        Self::of(&canonical)
    }

    /// The fingerprint of a confirm request (the token is hashed, never stored).
    pub fn of_confirm(request: &Confirmation) -> Self {
        Self::of(&format!("confirm\nreservation_id={}\ntoken={}", request.reservation_id, request.token.expose()))
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An idempotent request: its key and fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The client's key.
    pub key: IdempotencyKey,
    /// The request's fingerprint.
    pub fingerprint: RequestFingerprint,
}

fn user_hex(user: &UserId) -> String {
    let mut hex = String::with_capacity(user.as_str().len() * 2);
    for byte in user.as_str().bytes() {
        write!(hex, "{byte:02x}").expect("writing to a String cannot fail");
    }
    hex
}

/// The outcome record of `user`'s `key` for `operation`, in `category`'s slot. The user
/// is hex-encoded so that no user id and key pair can collide with another.
pub fn outcome_key(
    keys: &Keyspace,
    category: CategoryId,
    operation: IdempotentOperation,
    user: &UserId,
    key: &IdempotencyKey,
) -> String {
    format!("{}{}:{}:{}", keys.idempotency_prefix(category), operation.as_str(), user_hex(user), key.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment::PaymentToken;
    use uuid::Uuid;

    #[test]
    fn keys_are_printable_ascii_up_to_255_bytes() {
        assert!(IdempotencyKey::parse(b"a").is_ok());
        assert!(IdempotencyKey::parse(b"order 42 / retry ~1").is_ok());
        assert!(IdempotencyKey::parse(&[b'k'; 255]).is_ok());
        assert!(IdempotencyKey::parse(&[b'k'; 256]).is_err());
        assert!(IdempotencyKey::parse(b"").is_err());
        assert!(IdempotencyKey::parse(b"tab\there").is_err());
        assert!(IdempotencyKey::parse("caf\u{e9}".as_bytes()).is_err());
    }

    #[test]
    fn fingerprints_follow_the_parsed_request() {
        let request = NewReservation::parse(Some(1), Some(2), None).unwrap();
        let same = NewReservation::parse(Some(1), Some(2), None).unwrap();
        let other = NewReservation::parse(Some(1), Some(3), None).unwrap();
        let with_event = NewReservation::parse(Some(1), Some(2), Some(9)).unwrap();
        assert_eq!(RequestFingerprint::of_reserve(&request), RequestFingerprint::of_reserve(&same));
        assert_ne!(RequestFingerprint::of_reserve(&request), RequestFingerprint::of_reserve(&other));
        assert_ne!(RequestFingerprint::of_reserve(&request), RequestFingerprint::of_reserve(&with_event));
        assert_eq!(RequestFingerprint::of_reserve(&request).as_str().len(), 64);

        let id = Uuid::new_v4();
        let confirm = |token: &str| Confirmation { reservation_id: id, token: PaymentToken::parse(token).unwrap() };
        assert_eq!(RequestFingerprint::of_confirm(&confirm("a")), RequestFingerprint::of_confirm(&confirm("a")));
        assert_ne!(RequestFingerprint::of_confirm(&confirm("a")), RequestFingerprint::of_confirm(&confirm("b")));
        assert!(!RequestFingerprint::of_confirm(&confirm("secret_token")).as_str().contains("secret"));
    }

    #[test]
    fn outcome_keys_live_in_the_category_slot_and_cannot_collide() {
        let keys = Keyspace::new("t");
        let category = CategoryId::new(5).unwrap();
        let key = |user: &str, key: &str| {
            let user = UserId::parse(user).unwrap();
            outcome_key(
                &keys,
                category,
                IdempotentOperation::Reserve,
                &user,
                &IdempotencyKey::parse(key.as_bytes()).unwrap(),
            )
        };
        assert!(key("alice", "k").starts_with("t:{c:5}:idem:reserve:"));
        assert_ne!(key("a:b", "c"), key("a", "b:c"));
    }
}
