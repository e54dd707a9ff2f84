//! The one place the gRPC front maps the service layer's errors to a `Status`: the
//! contract's code table, a `google.rpc.ErrorInfo` whose reason is the HTTP contract's
//! `code` (domain `stampede`), `BadRequest` for `validation_failed`, and `RetryInfo` for
//! `rate_limited` and `unavailable`. The transport's own failures that the contract names
//! (a malformed message, one over the size limit) are [`Transport`] errors, mapped here too.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::service::ServiceError;

/// The `ErrorInfo.domain` of every error.
pub const ERROR_DOMAIN: &str = "stampede";

/// Failures of the transport that the contract gives a code, outside the service layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The request message is not valid protobuf (`invalid_json` over HTTP).
    Malformed,
    /// The request message is over `GRPC_MESSAGE_SIZE_MAX` (`payload_too_large` over HTTP).
    TooLarge,
}

/// The contract's gRPC code of a service error.
pub fn code(error: &ServiceError) -> Code {
    match error {
        ServiceError::Validation(_) | ServiceError::IdempotencyKeyReused => Code::InvalidArgument,
        ServiceError::Unauthorized => Code::Unauthenticated,
        ServiceError::Forbidden | ServiceError::QueuePassRequired => Code::PermissionDenied,
        ServiceError::NotFound(_) => Code::NotFound,
        ServiceError::AlreadyExists(_) => Code::AlreadyExists,
        ServiceError::Refused(_)
        | ServiceError::SeatTaken(_)
        | ServiceError::ReservationNotHeld(_)
        | ServiceError::ReservationExpired
        | ServiceError::PaymentDeclined => Code::FailedPrecondition,
        ServiceError::IdempotencyInProgress => Code::Aborted,
        ServiceError::RateLimited { .. } => Code::ResourceExhausted,
        ServiceError::Shed { .. } | ServiceError::Unavailable { .. } => Code::Unavailable,
        ServiceError::Internal(_) => Code::Internal,
    }
}

/// The status of a failed call, logged and counted once (by [`ServiceError::record`]).
pub fn status(error: ServiceError) -> Status {
    error.record();
    let message = match &error {
        ServiceError::Internal(_) => "internal error".to_owned(),
        ServiceError::Unavailable { .. } | ServiceError::Shed { .. } => {
            "the service is unavailable; retry later".to_owned()
        }
        other => other.to_string(),
    };
    let mut metadata = HashMap::new();
    if let ServiceError::SeatTaken(seats) = &error {
        metadata.insert("seats".to_owned(), seats.join(","));
    }
    let mut details = ErrorDetails::with_error_info(error.code(), ERROR_DOMAIN, metadata);
    if let ServiceError::Validation(errors) = &error {
        let (shown, _) = crate::validation::listed(errors);
        let violations: Vec<FieldViolation> =
            shown.into_iter().map(|error| FieldViolation::new(error.field, error.message)).collect();
        details.set_bad_request(violations);
    }
    if let Some(seconds) = error.retry_after_seconds() {
        details.set_retry_info(Some(Duration::from_secs(seconds)));
    }
    Status::with_error_details(code(&error), message, details)
}

/// The status of a transport failure, with the HTTP contract's code as its reason.
pub fn transport_status(failure: Transport) -> Status {
    let (code, reason, message) = match failure {
        Transport::Malformed => (Code::InvalidArgument, "invalid_json", "the request is not a valid message"),
        Transport::TooLarge => (Code::ResourceExhausted, "payload_too_large", "the request message is too large"),
    };
    Status::with_error_details(code, message, ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()))
}

/// Which transport failure tonic's own status stands for, if any: tonic answers a message
/// it cannot decode with `INTERNAL` and one over the limit with `OUT_OF_RANGE`.
pub fn transport_failure(code: Code, message: &str) -> Option<Transport> {
    match code {
        Code::Internal if message.contains("decode") => Some(Transport::Malformed),
        Code::OutOfRange if message.contains("message length too large") => Some(Transport::TooLarge),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_their_contract_code_as_reason() {
        let status = status(ServiceError::SeatTaken(vec!["A-1".to_owned(), "A-2".to_owned()]));
        assert_eq!(status.code(), Code::FailedPrecondition);
        let info = status.get_details_error_info().unwrap();
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("seat_taken", ERROR_DOMAIN));
        assert_eq!(info.metadata["seats"], "A-1,A-2");
    }

    #[test]
    fn validation_lists_fields_and_limits_carry_a_retry_delay() {
        let status = status(ServiceError::field("quantity", "must be an integer from 1 to 10000000"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "quantity");
        let status = status_of_limit();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.get_details_retry_info().unwrap().retry_delay, Some(Duration::from_secs(2)));
    }

    fn status_of_limit() -> Status {
        status(ServiceError::RateLimited { retry_after_seconds: 2 })
    }

    #[test]
    fn server_errors_never_leak_their_cause() {
        let status = status(ServiceError::unavailable("redis at 10.0.0.1 refused"));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().contains("10.0.0.1"));
    }
}
