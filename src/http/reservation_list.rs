//! `GET /reservations`: the caller's reservations from Postgres, newest first. The
//! rows come from the event pipeline, so they may trail the API by its delay.

use hyper::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::{HandlerResult, RequestContext, json, page_query};
use crate::contract::Reservation;
use crate::http::state::AppState;
use crate::service::Gate;

/// The caller's reservations.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"reservations": [{"id": "019a9f7c-1d2e-8abc-9def-000000000001", "status": "confirmed",
    "event_id": 1, "category_id": 1, "user_id": "alice", "quantity": 2, "amount": 300000, "currency": "IDR",
    "created_at": "2026-11-21T10:00:00.123Z", "expires_at": "2026-11-21T10:10:00.123Z",
    "confirmed_at": "2026-11-21T10:01:30.456Z", "payment_id": "pay_5f2c9a"}]}))]
pub struct ReservationList {
    /// Newest first.
    pub reservations: Vec<Reservation>,
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
    let admitted = state.service.admit(&request.credentials(), Gate::User).await?;
    let limit = page_query(request.query.as_deref(), false)?.limit;
    let reservations = state.service.list_reservations(&admitted, limit).await?;
    Ok(json::response(StatusCode::OK, &ReservationList { reservations }))
}
