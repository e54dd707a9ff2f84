//! `ApiError`: every failure a client can see, and the one place that maps each to
//! an HTTP status and an RFC 9457 problem+json body.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthError;
use crate::rate_limit::RateLimitError;
use crate::reservation::Refusal;
use crate::reservation::error::RefusalAnswer;
use crate::validation::FieldError;

/// Every error a client can receive. Statuses are chosen only in [`ApiError::status`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON or has wrong types.
    #[error("{0}")]
    InvalidJson(String),
    /// Missing, malformed, expired or badly signed token.
    #[error("authentication required")]
    Unauthorized,
    /// The simulated payment was declined.
    #[error("the payment was declined; the hold stays until it expires")]
    PaymentDeclined,
    /// Valid token, wrong role.
    #[error("this endpoint needs a different role")]
    Forbidden,
    /// Reserve in an event whose waiting room is on, without a valid pass of the caller for it.
    #[error("this event's waiting room is on: reserve with a valid queue pass of yours for this event")]
    QueuePassRequired,
    /// Unknown route or resource.
    #[error("{0}")]
    NotFound(&'static str),
    /// Known path, wrong method; carries the `Allow` value.
    #[error("method not allowed")]
    MethodNotAllowed(String),
    /// A reserve refused with its own contract code ([`RefusalAnswer::Conflict`] in
    /// [`REFUSALS`](crate::reservation::error::REFUSALS)); build it with [`ApiError::refused`].
    #[error("{}", .0.terms().detail)]
    Refused(Refusal),
    /// Named seats are held or sold; nothing was held.
    #[error("seats taken: {}", .0.join(", "))]
    SeatTaken(Vec<String>),
    /// Duplicate name.
    #[error("{0}")]
    AlreadyExists(&'static str),
    /// The reservation is not in a state that allows this.
    #[error("{0}")]
    ReservationNotHeld(&'static str),
    /// Same Idempotency-Key while the first request still runs.
    #[error("a request with this Idempotency-Key is still running")]
    IdempotencyInProgress,
    /// At or after the hold's deadline.
    #[error("the hold expired")]
    ReservationExpired,
    /// The request's head and body did not arrive within the request timeout; the
    /// connection closes after this answer.
    #[error("the request did not arrive in time")]
    RequestTimeout,
    /// Body over the limit.
    #[error("the body is larger than 64 KiB")]
    PayloadTooLarge,
    /// Body not `application/json`.
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    /// Well-formed JSON that breaks a rule.
    #[error("the request breaks one or more rules")]
    Validation(Vec<FieldError>),
    /// Same key, same user, different body.
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyKeyReused,
    /// Too many requests from this client.
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

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
// (The example is replaced in the served document by `ApiError::SoldOut`'s real problem; this one
// matches it, title included: the title is the status's reason phrase.)
#[schema(example = json!({"type": "urn:stampede:problem:sold_out", "title": "Conflict", "status": 409,
    "code": "sold_out", "detail": "not enough tickets left"}))]
pub struct Problem {
    /// A URI naming the problem type (`urn:stampede:problem:<code>`).
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the problem type.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// Stable machine-readable code that clients switch on.
    pub code: &'static str,
    /// What happened in this case.
    pub detail: String,
    /// Per-field errors of a 422 `validation_failed`: at most the first 20, field names cut to
    /// 100 characters; `detail` says how many rules were broken when more were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// The seats that are taken, with `seat_taken` (rows in map order, then by number).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seats: Option<Vec<String>>,
}

impl ApiError {
    /// A 503 for a failed dependency; the reason is logged, never shown.
    pub fn unavailable(reason: impl std::fmt::Display) -> Self {
        Self::Unavailable { retry_after_seconds: 1, reason: reason.to_string() }
    }

    /// The answer to a refused reserve, from [`REFUSALS`](crate::reservation::error::REFUSALS):
    /// its own code, or a 422 naming the field.
    pub fn refused(refusal: Refusal) -> Self {
        let terms = refusal.terms();
        match terms.answer {
            RefusalAnswer::Conflict => Self::Refused(refusal),
            RefusalAnswer::Field { field } => {
                Self::Validation(vec![FieldError { field: field.to_owned(), message: terms.detail.to_owned() }])
            }
        }
    }

    /// A 500 whose cause is logged, never shown.
    pub fn internal(cause: impl std::fmt::Debug) -> Self {
        Self::Internal(format!("{cause:?}"))
    }

    /// The HTTP status of this error: the only place statuses are chosen.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::PaymentDeclined => StatusCode::PAYMENT_REQUIRED,
            Self::Forbidden | Self::QueuePassRequired => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Refused(refusal) => match refusal.terms().answer {
                RefusalAnswer::Conflict => StatusCode::CONFLICT,
                RefusalAnswer::Field { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            },
            Self::SeatTaken(_) | Self::AlreadyExists(_) | Self::ReservationNotHeld(_) | Self::IdempotencyInProgress => {
                StatusCode::CONFLICT
            }
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::ReservationExpired => StatusCode::GONE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation(_) | Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Shed { .. } | Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::Unauthorized => "unauthorized",
            Self::PaymentDeclined => "payment_declined",
            Self::Forbidden => "forbidden",
            Self::QueuePassRequired => "queue_pass_required",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Refused(refusal) => match refusal.terms().answer {
                RefusalAnswer::Conflict => refusal.code(),
                RefusalAnswer::Field { .. } => "validation_failed",
            },
            Self::SeatTaken(_) => "seat_taken",
            Self::AlreadyExists(_) => "already_exists",
            Self::ReservationNotHeld(_) => "reservation_not_held",
            Self::IdempotencyInProgress => "idempotency_in_progress",
            Self::RequestTimeout => "request_timeout",
            Self::ReservationExpired => "reservation_expired",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Validation(_) => "validation_failed",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::RateLimited { .. } => "rate_limited",
            Self::Shed { .. } | Self::Unavailable { .. } => "unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    fn title(&self) -> &'static str {
        self.status().canonical_reason().unwrap_or("Error")
    }

    /// The problem document of this error. 5xx details are generic.
    pub fn problem(&self) -> Problem {
        let listed = match self {
            Self::Validation(errors) => Some(crate::validation::listed(errors)),
            _ => None,
        };
        let detail = match (self, &listed) {
            (Self::Internal(_) | Self::Unavailable { .. } | Self::Shed { .. }, _) => self.generic_detail(),
            (_, Some((shown, omitted))) if *omitted > 0 => {
                format!("the request breaks {} rules; the first {} are listed", shown.len() + omitted, shown.len())
            }
            (other, _) => other.to_string(),
        };
        Problem {
            problem_type: format!("urn:stampede:problem:{}", self.code()),
            title: self.title(),
            status: self.status().as_u16(),
            code: self.code(),
            detail,
            errors: listed.map(|(shown, _)| shown),
            seats: match self {
                Self::SeatTaken(seats) => Some(seats.clone()),
                _ => None,
            },
        }
    }

    fn generic_detail(&self) -> String {
        match self {
            Self::Internal(_) => "internal error".to_owned(),
            _ => "the service is unavailable; retry later".to_owned(),
        }
    }

    /// The problem+json response. Pure: the request wrapper (`http::handle`) logs and
    /// counts the error once, before calling this.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let body = serde_json::to_vec(&self.problem()).expect("problems serialize");
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        match &self {
            Self::MethodNotAllowed(allow) => {
                headers.insert(ALLOW, HeaderValue::from_str(allow).expect("allow lists are ASCII"));
            }
            Self::RateLimited { retry_after_seconds }
            | Self::Shed { retry_after_seconds, .. }
            | Self::Unavailable { retry_after_seconds, .. } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after_seconds));
            }
            // The rest of a late body may still come; the connection cannot be reused.
            Self::RequestTimeout => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

impl From<RateLimitError> for ApiError {
    fn from(error: RateLimitError) -> Self {
        match error {
            RateLimitError::Limited { retry_after_seconds } => Self::RateLimited { retry_after_seconds },
            RateLimitError::Redis(_) => Self::unavailable(&error),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Missing | AuthError::Invalid(_) => Self::Unauthorized,
            AuthError::Forbidden(_) => Self::Forbidden,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_never_leak_their_cause() {
        let problem = ApiError::internal("password=hunter2").problem();
        assert_eq!(problem.status, 500);
        assert!(!problem.detail.contains("hunter2"));
        let problem = ApiError::unavailable("redis at 10.0.0.1 refused").problem();
        assert_eq!((problem.status, problem.code), (503, "unavailable"));
        assert!(!problem.detail.contains("10.0.0.1"));
    }

    #[test]
    fn retry_after_and_allow_headers_are_set() {
        let response = ApiError::RateLimited { retry_after_seconds: 3 }.into_response();
        assert_eq!(response.headers()[RETRY_AFTER], "3");
        let response = ApiError::MethodNotAllowed("GET, POST".into()).into_response();
        assert_eq!(response.headers()[ALLOW], "GET, POST");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
    }
}
