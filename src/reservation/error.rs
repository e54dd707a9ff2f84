//! Every way a reservation operation can fail ([`ReservationError`]), and the business
//! refusals of a reserve ([`Refusal`]) with their contract codes.

use crate::ids::CategoryId;

/// Why a reserve was refused: 4xx outcomes that are stored for idempotent requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `event_id` does not match the category's event.
    EventMismatch,
    /// Before the sale window.
    SaleNotOpen,
    /// After the sale window.
    SaleClosed,
    /// Fewer tickets left than asked for.
    SoldOut,
    /// The user's held + confirmed tickets would pass `max_per_user`.
    LimitExceeded,
    /// `price * quantity` is too large to represent exactly.
    AmountTooLarge,
    /// No row has that many adjacent free seats, though that many are free in all.
    NoAdjacentSeats,
    /// Seat fields in a category without seats.
    NotSeated,
    /// More seats named than the category's `max_per_user`, or more than
    /// [`crate::seating::SEATS_PER_REQUEST_MAX`] seats asked for at once.
    TooManySeats,
}

/// How the fronts answer a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalAnswer {
    /// With the refusal's own contract code (HTTP 409).
    Conflict,
    /// As a broken rule of one request field (HTTP 422 `validation_failed`): a repeat can
    /// never succeed, since the category's event, price and seat map never change.
    Field {
        /// The request field.
        field: &'static str,
    },
}

/// One refusal's terms: everything any place lists about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalTerms {
    /// The refusal.
    pub refusal: Refusal,
    /// The code the scripts return, the `outcome` metric label, and for a
    /// [`RefusalAnswer::Conflict`] the contract's `code`.
    pub code: &'static str,
    /// How the fronts answer it.
    pub answer: RefusalAnswer,
    /// What the client is told (a problem's `detail`, or the field error's message).
    pub detail: &'static str,
    /// When a client receives it: the contract's wording (OpenAPI, the error table).
    pub when: &'static str,
}

/// Every refusal of a reserve, once: script replies are parsed with it, and the fronts'
/// errors (HTTP's `ApiError`, a gRPC status) and the OpenAPI per-operation lists are built
/// from it. The contract order: conflicts as the error table lists them.
pub const REFUSALS: [RefusalTerms; 9] = [
    RefusalTerms {
        refusal: Refusal::SoldOut,
        code: "sold_out",
        answer: RefusalAnswer::Conflict,
        detail: "not enough tickets left",
        when: "Fewer tickets are left than were asked for.",
    },
    RefusalTerms {
        refusal: Refusal::NoAdjacentSeats,
        code: "no_adjacent_seats",
        answer: RefusalAnswer::Conflict,
        detail: "no row has that many adjacent free seats",
        when: "No row has that many adjacent free seats, though at least that many are free in all.",
    },
    RefusalTerms {
        refusal: Refusal::LimitExceeded,
        code: "limit_exceeded",
        answer: RefusalAnswer::Conflict,
        detail: "this would pass the per-user limit of the category",
        when: "The user's held and confirmed tickets in the category would pass `max_per_user`.",
    },
    RefusalTerms {
        refusal: Refusal::SaleNotOpen,
        code: "sale_not_open",
        answer: RefusalAnswer::Conflict,
        detail: "the sale has not opened yet",
        when: "The event's sale has not opened yet.",
    },
    RefusalTerms {
        refusal: Refusal::SaleClosed,
        code: "sale_closed",
        answer: RefusalAnswer::Conflict,
        detail: "the sale has closed",
        when: "The event's sale has closed.",
    },
    RefusalTerms {
        refusal: Refusal::EventMismatch,
        code: "event_mismatch",
        answer: RefusalAnswer::Field { field: "event_id" },
        detail: "is not the event of this ticket category",
        when: "`event_id` is not the event of the ticket category.",
    },
    RefusalTerms {
        refusal: Refusal::AmountTooLarge,
        code: "amount_too_large",
        answer: RefusalAnswer::Field { field: "quantity" },
        detail: "price * quantity is too large",
        when: "`price * quantity` is too large to represent exactly.",
    },
    RefusalTerms {
        refusal: Refusal::NotSeated,
        code: "not_seated",
        answer: RefusalAnswer::Field { field: "seats" },
        detail: "the category has no seats: leave out seats and adjacent",
        when: "Seat fields in a category without seats.",
    },
    RefusalTerms {
        refusal: Refusal::TooManySeats,
        code: "too_many_seats",
        answer: RefusalAnswer::Field { field: "seats" },
        detail: "names more seats than the category's max_per_user, or asks for more than 1000 seats at once",
        when: "More seats named than the category's `max_per_user`, or more than 1000 asked for at once.",
    },
];

impl Refusal {
    /// Its terms in [`REFUSALS`].
    pub fn terms(self) -> &'static RefusalTerms {
        REFUSALS.iter().find(|terms| terms.refusal == self).expect("REFUSALS lists every refusal")
    }

    /// The code the script returns and the outcome metric label.
    pub fn code(self) -> &'static str {
        self.terms().code
    }

    /// The refusal a script's code names.
    pub fn parse(code: &str) -> Option<Self> {
        REFUSALS.iter().find(|terms| terms.code == code).map(|terms| terms.refusal)
    }
}

/// Why a reservation is not in a state that allows the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotHeldReason {
    /// It was cancelled.
    Cancelled,
    /// It is confirmed.
    Confirmed,
    /// A payment for it is running.
    PaymentInProgress,
}

/// Every way a reservation operation can fail; the HTTP layer maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum ReservationError {
    /// No such reservation, or someone else's.
    #[error("no such reservation")]
    NotFound,
    /// Not in a state that allows this.
    #[error("the reservation is not held: {0:?}")]
    NotHeld(NotHeldReason),
    /// At or after the hold's deadline.
    #[error("the hold expired")]
    Expired,
    /// The same request (or another payment for the reservation) is still running.
    #[error("a request with this key, or a payment for this reservation, is still running")]
    InProgress,
    /// The Idempotency-Key was used with another request body.
    #[error("the idempotency key was used with another request")]
    KeyReused,
    /// Reserve refused.
    #[error("reserve refused: {}", .0.code())]
    Refused(Refusal),
    /// Named seats are held or sold: these ones (rows in map order, then by number).
    #[error("seats taken: {}", .0.join(", "))]
    SeatTaken(Vec<String>),
    /// Named seats that the category's map does not have.
    #[error("no such seats: {}", .0.join(", "))]
    UnknownSeats(Vec<String>),
    /// The gateway declined the payment; the hold stays.
    #[error("the payment was declined")]
    PaymentDeclined,
    /// The gateway failed or did not answer in time; the hold stays.
    #[error("the payment failed: {0}")]
    PaymentFailed(String),
    /// The category's stock is not in Redis, though the category exists (a flushed
    /// Redis, until `worker reconcile --repair` rebuilds it).
    #[error("stock of category {} is missing from redis", .0.get())]
    StockMissing(CategoryId),
    /// No such ticket category: its stock is missing because it never existed.
    #[error("no such ticket category {}", .0.get())]
    UnknownCategory(CategoryId),
    /// The category's stock exists but is not open yet (provisioning in progress).
    #[error("stock of category {} is not open", .0.get())]
    StockNotOpen(CategoryId),
    /// The category's outbox is too far behind; reserve is shed.
    #[error("outbox of category {} is over its backlog bound", .0.get())]
    OutboxBacklog(CategoryId),
    /// Redis failed.
    #[error("redis error")]
    Redis(#[from] redis::RedisError),
    /// A script answered something it never should.
    #[error("unexpected reply from script {script}: {reply}")]
    UnexpectedReply {
        /// The script.
        script: &'static str,
        /// What it returned.
        reply: String,
    },
}

impl ReservationError {
    /// Whether the request named nothing that exists (a 404, or stock that is not there):
    /// its `Idempotency-Key` keeps nothing, neither binding nor outcome, and a repeat runs again.
    pub fn names_nothing(&self) -> bool {
        matches!(self, Self::NotFound | Self::UnknownCategory(_) | Self::StockMissing(_))
    }

    /// Whether the request broke a rule only a script could check (a 422): its answer is
    /// not kept (a repeat runs again and answers the same, the category's event, price and
    /// seat map never change), only the binding that ties its key to its body.
    pub fn breaks_a_fixed_rule(&self) -> bool {
        matches!(
            self,
            Self::UnknownSeats(_)
                | Self::Refused(
                    Refusal::EventMismatch | Refusal::AmountTooLarge | Refusal::NotSeated | Refusal::TooManySeats
                )
        )
    }

    /// The `outcome` label of `reservation_outcomes_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::NotFound | Self::UnknownCategory(_) => "not_found",
            Self::NotHeld(_) => "reservation_not_held",
            Self::Expired => "reservation_expired",
            Self::InProgress => "idempotency_in_progress",
            Self::KeyReused => "idempotency_key_reused",
            Self::Refused(refusal) => refusal.code(),
            Self::SeatTaken(_) => "seat_taken",
            Self::UnknownSeats(_) => "unknown_seats",
            Self::PaymentDeclined => "payment_declined",
            Self::PaymentFailed(_) => "payment_failed",
            Self::OutboxBacklog(_) => "outbox_backlog",
            Self::StockMissing(_) | Self::StockNotOpen(_) | Self::Redis(_) => "unavailable",
            Self::UnexpectedReply { .. } => "internal_error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_codes_round_trip() {
        // Goal: REFUSALS names every refusal once, and each code parses back to its refusal.
        use Refusal::{
            AmountTooLarge, EventMismatch, LimitExceeded, NoAdjacentSeats, NotSeated, SaleClosed, SaleNotOpen, SoldOut,
            TooManySeats,
        };
        for terms in &REFUSALS {
            // Stops compiling when a refusal is added: add it to REFUSALS too.
            match terms.refusal {
                EventMismatch | SaleNotOpen | SaleClosed | SoldOut | LimitExceeded | AmountTooLarge
                | NoAdjacentSeats | NotSeated | TooManySeats => {}
            }
            assert_eq!(Refusal::parse(terms.refusal.code()), Some(terms.refusal));
            assert_eq!(terms.refusal.terms(), terms);
        }
        let codes: std::collections::BTreeSet<&str> = REFUSALS.iter().map(|terms| terms.code).collect();
        assert_eq!(codes.len(), REFUSALS.len(), "each refusal once");
        assert_eq!(Refusal::parse("held"), None);
    }
}
