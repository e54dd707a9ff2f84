//! A reserve script's reply (`reserve.lua` per request, `reserve_seats.lua`), parsed once
//! into a [`ReserveReply`]: the group commit hands it to each request, the sold-out fast
//! path learns from it, and the engine answers from it.

use uuid::Uuid;

use super::error::Refusal;
use crate::contract::seat_list;

/// What a reserve script decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// The tickets are held.
    Held(Hold),
    /// A seated category: nothing was written; the seat script decides.
    Seated,
    /// The drawn id names another request's hold: nothing was written; draw again.
    IdTaken,
    /// The `Idempotency-Key` was used with another request body.
    KeyReused,
    /// The category's stock is missing.
    StockMissing,
    /// The category's stock exists but is not open yet.
    StockPending,
    /// The category's outbox is over its backlog bound.
    OutboxBacklog,
    /// Named seats that are held or sold.
    SeatTaken(Vec<String>),
    /// Named seats the category's map does not have.
    UnknownSeats(Vec<String>),
    /// A business refusal.
    Refused(Refusal),
    /// Anything else: the reply as text, for the error.
    Unexpected(String),
}

/// The hold a `held` reply describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The reservation id.
    pub id: Uuid,
    /// The category's event.
    pub event_id: i64,
    /// `price * quantity`, minor units.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// When the hold was made (Redis time, ms).
    pub created_at_ms: i64,
    /// The hold's deadline (ms).
    pub expires_at_ms: i64,
    /// The seats of a seated hold.
    pub seats: Option<Vec<String>>,
}

/// A reserve script's reply to one request: `{outcome, replayed, ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveReply {
    /// What the script decided.
    pub outcome: ReserveOutcome,
    /// Whether it answered from the outcome stored for the request's key.
    pub replayed: bool,
}

impl ReserveReply {
    /// Parses a reply's items; anything malformed is [`ReserveOutcome::Unexpected`].
    pub fn parse(reply: &[Option<String>]) -> Self {
        let replayed = reply.get(1).and_then(Option::as_deref) == Some("1");
        let listed = || reply.get(2).and_then(Option::as_deref).and_then(seat_list).unwrap_or_default();
        let outcome = match reply.first().and_then(Option::as_deref) {
            Some("held") => hold(reply).map(ReserveOutcome::Held),
            Some("seated") => Some(ReserveOutcome::Seated),
            Some("id_taken") => Some(ReserveOutcome::IdTaken),
            Some("key_reused") => Some(ReserveOutcome::KeyReused),
            Some("stock_missing") => Some(ReserveOutcome::StockMissing),
            Some("stock_pending") => Some(ReserveOutcome::StockPending),
            Some("outbox_backlog") => Some(ReserveOutcome::OutboxBacklog),
            Some("seat_taken") => Some(ReserveOutcome::SeatTaken(listed())),
            Some("unknown_seats") => Some(ReserveOutcome::UnknownSeats(listed())),
            Some(code) => Refusal::parse(code).map(ReserveOutcome::Refused),
            None => None,
        };
        let outcome = outcome.unwrap_or_else(|| ReserveOutcome::Unexpected(format!("{reply:?}")));
        Self { outcome, replayed }
    }
}

/// The hold of a `held` reply; a seated hold's reply ends with its seats.
fn hold(reply: &[Option<String>]) -> Option<Hold> {
    let [_, _, Some(id), Some(event_id), Some(amount), Some(currency), Some(created), Some(expires), rest @ ..] = reply
    else {
        return None;
    };
    Some(Hold {
        id: Uuid::try_parse(id).ok()?,
        event_id: event_id.parse().ok()?,
        amount: amount.parse().ok()?,
        currency: currency.clone(),
        created_at_ms: created.parse().ok()?,
        expires_at_ms: expires.parse().ok()?,
        seats: rest.first().and_then(Option::as_deref).and_then(seat_list),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(items: &[&str]) -> Vec<Option<String>> {
        items.iter().map(|item| Some(item.to_string())).collect()
    }

    #[test]
    fn replies_parse_into_outcomes() {
        // Goal: every outcome a reserve script answers parses into its variant, and anything else is unexpected.
        let id = Uuid::new_v4().to_string();
        let held = ReserveReply::parse(&reply(&["held", "1", &id, "3", "2000", "USD", "1", "2", "A-1,A-2"]));
        assert!(held.replayed);
        let ReserveOutcome::Held(hold) = held.outcome else { panic!("held") };
        assert_eq!((hold.event_id, hold.amount, hold.seats), (3, 2000, Some(vec!["A-1".into(), "A-2".into()])));
        let outcome = |items: &[&str]| ReserveReply::parse(&reply(items)).outcome;
        assert_eq!(outcome(&["sold_out", "0"]), ReserveOutcome::Refused(Refusal::SoldOut));
        assert_eq!(outcome(&["seat_taken", "0", "A-1"]), ReserveOutcome::SeatTaken(vec!["A-1".into()]));
        assert_eq!(outcome(&["seated", "0"]), ReserveOutcome::Seated);
        assert!(matches!(outcome(&["held", "0", "not-a-uuid"]), ReserveOutcome::Unexpected(_)));
        assert!(matches!(outcome(&["nonsense", "0"]), ReserveOutcome::Unexpected(_)));
        assert!(matches!(ReserveReply::parse(&[]).outcome, ReserveOutcome::Unexpected(_)));
    }
}
