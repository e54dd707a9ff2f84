//! [`ServiceError`]: every failure an operation can answer with, in the contract's terms
//! and free of any transport, and the one mapping of each domain error to it.

use crate::auth::AuthError;
use crate::catalog::CatalogError;
use crate::rate_limit::RateLimitError;
use crate::reservation::admission;
use crate::reservation::error::RefusalAnswer;
use crate::reservation::{NotHeldReason, Refusal, ReservationError};
use crate::stock::StockError;
use crate::validation::FieldError;
use crate::waiting_room::WaitingRoomError;

/// Every way an operation of the service layer fails. Each front maps it to its own
/// status in one place; [`ServiceError::code`] is the contract's stable code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Missing, malformed, expired or badly signed token.
    #[error("authentication required")]
    Unauthorized,
    /// Valid token, wrong role.
    #[error("this endpoint needs a different role")]
    Forbidden,
    /// Reserve in an event whose waiting room is on, without a valid pass of the caller for it.
    #[error("this event's waiting room is on: reserve with a valid queue pass of yours for this event")]
    QueuePassRequired,
    /// Unknown resource.
    #[error("{0}")]
    NotFound(&'static str),
    /// Duplicate name.
    #[error("{0}")]
    AlreadyExists(&'static str),
    /// A reserve refused with its own contract code ([`RefusalAnswer::Conflict`] in
    /// [`REFUSALS`](crate::reservation::error::REFUSALS)); build it with [`ServiceError::refused`].
    #[error("{}", .0.terms().detail)]
    Refused(Refusal),
    /// Named seats are held or sold; nothing was held.
    #[error("seats taken: {}", .0.join(", "))]
    SeatTaken(Vec<String>),
    /// The reservation is not in a state that allows this.
    #[error("{0}")]
    ReservationNotHeld(&'static str),
    /// At or after the hold's deadline.
    #[error("the hold expired")]
    ReservationExpired,
    /// The simulated payment was declined.
    #[error("the payment was declined; the hold stays until it expires")]
    PaymentDeclined,
    /// Same idempotency key while the first request still runs.
    #[error("a request with this Idempotency-Key is still running")]
    IdempotencyInProgress,
    /// Same key, same user, different request.
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyKeyReused,
    /// A well-formed request that breaks a rule.
    #[error("the request breaks one or more rules")]
    Validation(Vec<FieldError>),
    /// Too many requests from this client or user.
    #[error("too many requests; retry later")]
    RateLimited {
        /// Seconds to wait.
        retry_after_seconds: u64,
    },
    /// Load is shed on purpose; counted in `requests_shed_total`, not logged per request.
    #[error("the service is overloaded; retry later")]
    Shed {
        /// Seconds to wait.
        retry_after_seconds: u64,
        /// The `reason` label of `requests_shed_total`.
        reason: &'static str,
    },
    /// A dependency is down.
    #[error("the service is unavailable; retry later")]
    Unavailable {
        /// Seconds to wait.
        retry_after_seconds: u64,
        /// Logged, never shown.
        reason: String,
    },
    /// A bug or an unexpected dependency failure; logged, never shown.
    #[error("internal error")]
    Internal(String),
}

impl ServiceError {
    /// A 503-class failure of a dependency; the reason is logged, never shown.
    pub fn unavailable(reason: impl std::fmt::Display) -> Self {
        Self::Unavailable { retry_after_seconds: 1, reason: reason.to_string() }
    }

    /// A failure whose cause is logged, never shown.
    pub fn internal(cause: impl std::fmt::Debug) -> Self {
        Self::Internal(format!("{cause:?}"))
    }

    /// The answer to a refused reserve, from [`REFUSALS`](crate::reservation::error::REFUSALS):
    /// its own code, or a broken rule naming the field.
    pub fn refused(refusal: Refusal) -> Self {
        let terms = refusal.terms();
        match terms.answer {
            RefusalAnswer::Conflict => Self::Refused(refusal),
            RefusalAnswer::Field { field } => Self::field(field, terms.detail),
        }
    }

    /// One broken rule of one field.
    pub fn field(field: &str, message: &str) -> Self {
        Self::Validation(vec![FieldError { field: field.to_owned(), message: message.to_owned() }])
    }

    /// The contract's stable code (the HTTP problem's `code`, gRPC's `ErrorInfo.reason`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::QueuePassRequired => "queue_pass_required",
            Self::NotFound(_) => "not_found",
            Self::AlreadyExists(_) => "already_exists",
            Self::Refused(refusal) => match refusal.terms().answer {
                RefusalAnswer::Conflict => refusal.code(),
                RefusalAnswer::Field { .. } => "validation_failed",
            },
            Self::SeatTaken(_) => "seat_taken",
            Self::ReservationNotHeld(_) => "reservation_not_held",
            Self::ReservationExpired => "reservation_expired",
            Self::PaymentDeclined => "payment_declined",
            Self::IdempotencyInProgress => "idempotency_in_progress",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::Validation(_) => "validation_failed",
            Self::RateLimited { .. } => "rate_limited",
            Self::Shed { .. } | Self::Unavailable { .. } => "unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    /// Seconds a client should wait before retrying, for the errors that have one.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_seconds }
            | Self::Shed { retry_after_seconds, .. }
            | Self::Unavailable { retry_after_seconds, .. } => Some(*retry_after_seconds),
            _ => None,
        }
    }

    /// The one place a failed operation is logged and counted, whatever the front: the
    /// cause of a server-side failure is logged once; shed load is counted, never logged.
    pub fn record(&self) {
        match self {
            Self::Internal(cause) => tracing::error!(cause = %cause, "request failed"),
            Self::Unavailable { reason, .. } => tracing::warn!(reason = %reason, "request shed or dependency down"),
            Self::Shed { reason, .. } => metrics::counter!("requests_shed_total", "reason" => *reason).increment(1),
            Self::RateLimited { .. } => {
                metrics::counter!("requests_shed_total", "reason" => "rate_limited").increment(1);
            }
            _ => {}
        }
    }
}

impl From<admission::Shedding> for ServiceError {
    fn from(refusal: admission::Shedding) -> Self {
        match refusal {
            admission::Shedding::Overloaded => Self::Shed { retry_after_seconds: 1, reason: refusal.reason() },
            admission::Shedding::RateLimited { retry_after_seconds } => Self::RateLimited { retry_after_seconds },
        }
    }
}

impl From<RateLimitError> for ServiceError {
    fn from(error: RateLimitError) -> Self {
        match error {
            RateLimitError::Limited { retry_after_seconds } => Self::RateLimited { retry_after_seconds },
            RateLimitError::Redis(_) => Self::unavailable(&error),
        }
    }
}

impl From<AuthError> for ServiceError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Missing | AuthError::Invalid(_) => Self::Unauthorized,
            AuthError::Forbidden(_) => Self::Forbidden,
        }
    }
}

impl From<CatalogError> for ServiceError {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::EventNotFound => Self::NotFound("no such event"),
            CatalogError::DuplicateCategory => Self::AlreadyExists("the event already has a category with this name"),
            CatalogError::Database(error) => Self::unavailable(format!("postgres: {error}")),
            CatalogError::Stock(error) => error.into(),
        }
    }
}

impl From<StockError> for ServiceError {
    fn from(error: StockError) -> Self {
        match error {
            StockError::Redis(error) => Self::unavailable(format!("redis: {error}")),
            StockError::Missing(category) => {
                Self::unavailable(format!("stock of category {} is missing from redis", category.get()))
            }
        }
    }
}

impl From<WaitingRoomError> for ServiceError {
    fn from(error: WaitingRoomError) -> Self {
        match error {
            WaitingRoomError::NotJoined => Self::NotFound("you have not joined this queue"),
            WaitingRoomError::SaleClosed => Self::Refused(Refusal::SaleClosed),
            WaitingRoomError::Redis(error) => Self::unavailable(format!("redis: {error}")),
            WaitingRoomError::Database(error) => Self::unavailable(format!("postgres: {error}")),
            WaitingRoomError::UnexpectedReply { .. } => Self::internal(&error),
        }
    }
}

impl From<ReservationError> for ServiceError {
    fn from(error: ReservationError) -> Self {
        match error {
            ReservationError::NotFound => Self::NotFound("no such reservation"),
            ReservationError::UnknownCategory(_) => Self::NotFound("no such ticket category"),
            ReservationError::NotHeld(reason) => Self::ReservationNotHeld(not_held_detail(reason)),
            ReservationError::Expired => Self::ReservationExpired,
            ReservationError::InProgress => Self::IdempotencyInProgress,
            ReservationError::KeyReused => Self::IdempotencyKeyReused,
            ReservationError::Refused(refusal) => Self::refused(refusal),
            ReservationError::SeatTaken(seats) => Self::SeatTaken(seats),
            ReservationError::UnknownSeats(seats) => {
                Self::field("seats", &format!("the category has no seats named {}", seats.join(", ")))
            }
            ReservationError::PaymentDeclined => Self::PaymentDeclined,
            ReservationError::PaymentFailed(reason) => Self::unavailable(format!("payment failed: {reason}")),
            // The relay logs why the outbox is not draining; per-request logs would flood.
            ReservationError::OutboxBacklog(_) => Self::Shed { retry_after_seconds: 1, reason: "outbox_backlog" },
            ReservationError::StockMissing(_) | ReservationError::StockNotOpen(_) | ReservationError::Redis(_) => {
                Self::unavailable(&error)
            }
            ReservationError::UnexpectedReply { .. } => Self::internal(&error),
        }
    }
}

fn not_held_detail(reason: NotHeldReason) -> &'static str {
    match reason {
        NotHeldReason::Cancelled => "the reservation was cancelled",
        NotHeldReason::Confirmed => "the reservation is confirmed",
        NotHeldReason::PaymentInProgress => "a payment for the reservation is in progress",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_shedding_and_limits_carry_a_retry_time() {
        assert_eq!(ServiceError::from(admission::Shedding::Overloaded).retry_after_seconds(), Some(1));
        assert_eq!(ServiceError::RateLimited { retry_after_seconds: 3 }.retry_after_seconds(), Some(3));
        assert_eq!(ServiceError::Refused(Refusal::SoldOut).retry_after_seconds(), None);
        assert_eq!(ServiceError::refused(Refusal::SoldOut).code(), "sold_out");
        assert_eq!(ServiceError::refused(Refusal::EventMismatch).code(), "validation_failed");
    }
}
