//! `GET /reservations`: the caller's reservations from Postgres, newest first. The
//! rows come from the event pipeline, so they may trail the API by its delay.

use hyper::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::{HandlerResult, RequestContext, json, query_pairs};
use crate::api::AppState;
use crate::persistence::reservations::{self, PAGE_LIMIT_MAX};
use crate::reservation::Reservation;
use crate::validation::FieldErrors;

/// Default page size of `GET /reservations`.
const PAGE_LIMIT_DEFAULT: i64 = 20;

/// The caller's reservations.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationList {
    /// Newest first.
    pub reservations: Vec<Reservation>,
}

/// The `limit` query parameter, validated.
fn page_limit(query: Option<&str>) -> Result<i64, ApiError> {
    let mut errors = FieldErrors::new();
    let mut limit = PAGE_LIMIT_DEFAULT;
    for (key, value) in query_pairs(query) {
        match key.as_str() {
            "limit" => match value.parse::<i64>() {
                Ok(parsed) if (1..=PAGE_LIMIT_MAX).contains(&parsed) => limit = parsed,
                _ => errors.add("limit", format!("must be an integer from 1 to {PAGE_LIMIT_MAX}")),
            },
            _ => errors.add(&key, "unknown query parameter"),
        }
    }
    errors.finish(|| limit).map_err(ApiError::Validation)
}

/// `GET /reservations` (user): the caller's reservations, newest first.
#[utoipa::path(
    get,
    path = "/reservations",
    tag = "reservations",
    summary = "List my reservations",
    description = "The caller's reservations (owner = token `sub`), newest first, from Postgres. They are written \
        by the event pipeline, so a reservation appears (and changes status) shortly after the API answered.",
    security(("bearer_auth" = [])),
    params(("limit" = Option<i64>, Query, description = "Page size, 1..100 (default 20).", minimum = 1, maximum = 100)),
    responses((status = 200, description = "The caller's reservations.", body = ReservationList)),
)]
pub async fn list_reservations(state: &AppState, request: RequestContext) -> HandlerResult {
    let caller = state.jwt.authenticate(request.header("authorization"))?;
    let limit = page_limit(request.query.as_deref())?;
    let reservations = reservations::list_reservations(&state.database, &caller.user_id, limit)
        .await
        .map_err(|error| ApiError::unavailable(format!("postgres: {error}")))?;
    Ok(json::response(StatusCode::OK, &ReservationList { reservations }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_are_bounded() {
        assert_eq!(page_limit(None).unwrap(), PAGE_LIMIT_DEFAULT);
        assert_eq!(page_limit(Some("limit=100")).unwrap(), 100);
        assert!(page_limit(Some("limit=0")).is_err());
        assert!(page_limit(Some("limit=101")).is_err());
        assert!(page_limit(Some("after=3")).is_err());
    }
}
