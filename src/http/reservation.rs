//! Handlers of reservations: reserve, confirm, cancel and read one.
//!
//! Each handler validates at the edge (token, `Idempotency-Key`, body, path id) and then
//! makes one engine call; no Postgres on the reserve, confirm and cancel paths, except
//! on their failure paths (an unknown category, a record gone after 24 h). Reserve
//! and confirm pass admission control first (in-flight bound, optional per-IP limit),
//! and reserve, confirm and cancel the per-user limits once the caller is known.

use hyper::StatusCode;
use hyper::header::{HeaderValue, LOCATION};
use serde::Deserialize;
use tracing::Instrument;
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::json::{self, RequestBody};
use super::{HandlerResult, RequestContext};
use crate::auth::Role;
use crate::contract::{Reservation, ReservationStatus};
use crate::http::state::AppState;
use crate::ids::{ReservationId, UserId};
use crate::reservation::admission::{self, Admission};
use crate::reservation::idempotency::IdempotencyKey;
use crate::reservation::{Confirmation, NewReservation, NotHeldReason, Refusal, ReservationError, SeatFields};
use crate::validation::FieldError;

/// The request header carrying an idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Body of `POST /reserve`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"category_id": 1, "quantity": 2, "event_id": 1}))]
pub struct ReserveRequest {
    /// The ticket category.
    #[schema(required = true, nullable = false, minimum = 1)]
    pub category_id: Option<i64>,
    /// Tickets to hold, at least 1; more than the category's `max_per_user` is `limit_exceeded`.
    /// Required unless `seats` is given; with `seats` it must equal their number (`null`: left out).
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub quantity: Option<i64>,
    /// Optional; must be the category's event (422 otherwise).
    #[schema(minimum = 1)]
    pub event_id: Option<i64>,
    /// Seated categories only: these seats (`ROW-N`), all or nothing; 1 to `max_per_user`
    /// distinct seats. 409 `seat_taken` lists the taken ones. `null`: left out.
    #[schema(min_items = 1, max_items = 1000, example = json!(["A-3", "A-4"]))]
    pub seats: Option<Vec<String>>,
    /// Seated categories only: `true` holds the best `quantity` adjacent seats (the run in
    /// the first row that has one, closest to the row's middle); needs `quantity`, not
    /// with `seats`. 409 `no_adjacent_seats` when no row has such a run. `null` or `false`:
    /// left out.
    pub adjacent: Option<bool>,
}

impl RequestBody for ReserveRequest {
    const FIELDS: &'static [&'static str] = &["category_id", "quantity", "event_id", "seats", "adjacent"];
}

/// Body of `POST /confirm`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"reservation_id": "019a9f7c-1d2e-8abc-9def-000000000001", "payment": {"token": "tok_visa"}}))]
pub struct ConfirmRequest {
    /// The reservation to confirm (UUID).
    #[schema(format = Uuid, required = true, nullable = false)]
    pub reservation_id: Option<String>,
    /// How to pay.
    #[schema(required = true, nullable = false)]
    pub payment: Option<PaymentRequest>,
}

/// The payment of a confirm request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PaymentRequest {
    /// Simulated: `tok_decline` is declined (402), `tok_fail` fails (503), any other non-empty token pays.
    #[schema(required = true, nullable = false, min_length = 1, max_length = 1024)]
    pub token: Option<String>,
}

impl RequestBody for ConfirmRequest {
    const FIELDS: &'static [&'static str] = &["reservation_id", "payment.token"];
}

fn shed(refusal: admission::Shedding) -> ApiError {
    match refusal {
        admission::Shedding::Overloaded => ApiError::Shed { retry_after_seconds: 1, reason: refusal.reason() },
        admission::Shedding::RateLimited { retry_after_seconds } => ApiError::RateLimited { retry_after_seconds },
    }
}

fn check_rate(admission: &Admission, request: &RequestContext) -> Result<(), ApiError> {
    admission.check_rate(request.client).map_err(shed)
}

fn idempotency_key(request: &RequestContext) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = request.headers.get(IDEMPOTENCY_KEY_HEADER) else { return Ok(None) };
    IdempotencyKey::parse(value.as_bytes())
        .map(Some)
        .map_err(|message| ApiError::Validation(vec![FieldError { field: "Idempotency-Key".to_owned(), message }]))
}

/// A reservation id from the path; anything else names no reservation.
fn path_id(request: &RequestContext) -> Result<ReservationId, ApiError> {
    request.param("id").and_then(ReservationId::parse).ok_or(ApiError::NotFound("no such reservation"))
}

fn record_outcome(operation: &'static str, result: &Result<Reservation, ReservationError>, success: &'static str) {
    let outcome = match result {
        Ok(_) => success,
        Err(error) => error.outcome(),
    };
    metrics::counter!("reservation_outcomes_total", "operation" => operation, "outcome" => outcome).increment(1);
}

fn field_error(field: &str, message: &str) -> ApiError {
    ApiError::Validation(vec![FieldError { field: field.to_owned(), message: message.to_owned() }])
}

/// Maps an engine error to the contract's answer.
fn reservation_error(error: ReservationError) -> ApiError {
    match error {
        ReservationError::NotFound => ApiError::NotFound("no such reservation"),
        ReservationError::UnknownCategory(_) => ApiError::NotFound("no such ticket category"),
        ReservationError::NotHeld(NotHeldReason::Cancelled) => {
            ApiError::ReservationNotHeld("the reservation was cancelled")
        }
        ReservationError::NotHeld(NotHeldReason::Confirmed) => {
            ApiError::ReservationNotHeld("the reservation is confirmed")
        }
        ReservationError::NotHeld(NotHeldReason::PaymentInProgress) => {
            ApiError::ReservationNotHeld("a payment for the reservation is in progress")
        }
        ReservationError::Expired => ApiError::ReservationExpired,
        ReservationError::InProgress => ApiError::IdempotencyInProgress,
        ReservationError::KeyReused => ApiError::IdempotencyKeyReused,
        ReservationError::Refused(refusal) => refusal_error(refusal),
        ReservationError::SeatTaken(seats) => ApiError::SeatTaken(seats),
        ReservationError::UnknownSeats(seats) => {
            field_error("seats", &format!("the category has no seats named {}", seats.join(", ")))
        }
        ReservationError::PaymentDeclined => ApiError::PaymentDeclined,
        ReservationError::PaymentFailed(reason) => ApiError::unavailable(format!("payment failed: {reason}")),
        // The relay logs why the outbox is not draining; per-request logs would flood.
        ReservationError::OutboxBacklog(_) => ApiError::Shed { retry_after_seconds: 1, reason: "outbox_backlog" },
        ReservationError::StockMissing(_) | ReservationError::StockNotOpen(_) | ReservationError::Redis(_) => {
            ApiError::unavailable(&error)
        }
        ReservationError::UnexpectedReply { .. } => ApiError::internal(&error),
    }
}

fn refusal_error(refusal: Refusal) -> ApiError {
    ApiError::refused(refusal)
}

fn created(reservation: &Reservation) -> HandlerResult {
    let mut response = json::response(StatusCode::CREATED, reservation);
    let location = HeaderValue::from_str(&format!("/reservations/{}", reservation.id)).expect("uuids are ASCII");
    response.headers_mut().insert(LOCATION, location);
    Ok(response)
}

/// The optional `Idempotency-Key` header of reserve and confirm, for the OpenAPI
/// document (the handlers read it with [`idempotency_key`]).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct IdempotencyKeyHeader {
    /// 1..255 printable ASCII characters; scoped per user, kept 24 h.
    #[serde(rename = "Idempotency-Key")]
    #[param(min_length = 1, max_length = 255, pattern = "^[ -~]+$")]
    idempotency_key: Option<String>,
}

/// `POST /reserve` (user).
#[utoipa::path(
    post,
    path = "/reserve",
    tag = "reservations",
    summary = "Hold tickets",
    description = "Holds `quantity` tickets of a category until `expires_at` (`created_at + HOLD_TTL`). \
        Never more tickets held + sold than the quota, whatever the concurrency. With an `Idempotency-Key`, \
        the same key and body from the same user within 24 h returns the first response again and creates \
        nothing; the same key with another body is 422 `idempotency_key_reused`. In an event whose waiting \
        room is on, the request needs the caller's queue pass for that event in `Queue-Pass` (403 \
        `queue_pass_required` otherwise). In a seated category the request names `seats` (all or nothing, \
        409 `seat_taken` with the taken ones) or asks for `quantity` with `adjacent: true` (the best run of \
        adjacent seats: the first row in map order that has one, the run closest to the row's middle \
        `(seats + 1) / 2`, ties to lower numbers; 409 `no_adjacent_seats`, or `sold_out` when fewer seats are \
        free in all); with neither it takes the best adjacent seats, else the first free ones in map order. \
        The Reservation then carries its `seats`. Unknown or duplicate seats, more than `max_per_user` \
        seats, more than 1000 seats in one reservation, `seats` with `adjacent`, `adjacent` without `quantity`, and seat fields in a category \
        without seats are 422.",
    security(("bearer_auth" = [])),
    params(
        IdempotencyKeyHeader,
        (
            "Queue-Pass" = Option<String>,
            Header,
            description = "The caller's pass from `GET /events/{id}/queue`; needed while the event's waiting room is on.",
        ),
    ),
    request_body(content = ReserveRequest, description = "What to hold."),
    responses((
        status = 201,
        description = "Held.",
        body = Reservation,
        headers(("Location" = String, description = "`/reservations/{id}` of the hold.")),
    )),
)]
pub async fn reserve(state: &AppState, request: RequestContext) -> HandlerResult {
    check_rate(&state.admission, &request)?;
    let _permit = state.admission.enter().map_err(shed)?;
    let caller = state.jwt.authenticate(request.header("authorization")).await?;
    state.user_rate_limit.check(&caller.user_id).await?;
    let key = idempotency_key(&request)?;
    let body: ReserveRequest = json::parse(&request.headers, &request.body)?;
    let seats = SeatFields { seats: body.seats, adjacent: body.adjacent };
    let new = NewReservation::parse_with_seats(body.category_id, body.quantity, body.event_id, seats)
        .map_err(ApiError::Validation)?;
    super::waiting_room::require_pass(state, &request, &caller.user_id, new.category).await?;
    let result = state.reservations.reserve(&caller.user_id, &new, key).await;
    record_outcome("reserve", &result, "held");
    match result {
        Ok(reservation) => created(&reservation),
        Err(error) => Err(reservation_error(super::catalog::explain_missing_stock(error, &state.catalog).await?)),
    }
}

/// `POST /confirm` (user, owner).
#[utoipa::path(
    post,
    path = "/confirm",
    tag = "reservations",
    summary = "Pay for a hold",
    description = "Charges the payment and confirms the owner's hold. At or after `expires_at` it is 410, \
        whether or not the hold was released yet, and the deadline is absolute: a payment that has not \
        succeeded by `expires_at` does not confirm (410, the charge is voided). Confirming a confirmed \
        reservation returns the same body and charges nothing, also after its record left Redis (24 h). A \
        declined payment (402) or a gateway failure (503) keeps the hold until it expires. A second confirm \
        while a payment for the hold runs is 409 `reservation_not_held` (`idempotency_in_progress` with the \
        same `Idempotency-Key`). Anyone but the owner gets 404.",
    security(("bearer_auth" = [])),
    params(IdempotencyKeyHeader),
    request_body(content = ConfirmRequest, description = "The reservation and the payment."),
    responses((status = 200, description = "Confirmed.", body = Reservation)),
)]
pub async fn confirm(state: &AppState, request: RequestContext) -> HandlerResult {
    check_rate(&state.admission, &request)?;
    let permit = state.admission.enter().map_err(shed)?;
    let caller = state.jwt.authenticate(request.header("authorization")).await?;
    state.user_rate_limit.check(&caller.user_id).await?;
    let key = idempotency_key(&request)?;
    let body: ConfirmRequest = json::parse(&request.headers, &request.body)?;
    let token = body.payment.as_ref().and_then(|payment| payment.token.as_deref());
    let confirmation = Confirmation::parse(body.reservation_id.as_deref(), token).map_err(ApiError::Validation)?;
    let id = ReservationId::from_uuid(confirmation.reservation_id).ok_or(ApiError::NotFound("no such reservation"))?;
    // The payment runs in its own task: a client that hangs up must not cut it between
    // the charge and recording it. The permit stays with it until it ends. It stays in the
    // request's span: its log lines and its trace are the request's.
    let engine = state.reservations.clone();
    let owner = caller.user_id.clone();
    let user = caller.user_id;
    let payment = tokio::spawn(
        async move {
            let result = engine.confirm(&user, id, &confirmation, key).await;
            drop(permit);
            result
        }
        .in_current_span(),
    );
    let result = payment.await.map_err(ApiError::internal)?;
    let result = or_archived(state, &owner, id, ReservationStatus::Confirmed, result).await?;
    record_outcome("confirm", &result, "confirmed");
    match result {
        Ok(reservation) => Ok(json::response(StatusCode::OK, &reservation)),
        Err(error) => Err(reservation_error(error)),
    }
}

/// `POST /reservations/{id}/cancel` (user, owner).
#[utoipa::path(
    post,
    path = "/reservations/{id}/cancel",
    tag = "reservations",
    summary = "Cancel a hold",
    description = "Releases the owner's hold at once; its tickets are available again. Repeating it returns \
        the same 200. A confirmed reservation is 409 `reservation_not_held`; at or after `expires_at` it is 410. \
        Anyone but the owner gets 404.",
    security(("bearer_auth" = [])),
    params(("id" = String, Path, description = "Reservation id (UUID).", format = Uuid)),
    responses((status = 200, description = "Cancelled.", body = Reservation)),
)]
pub async fn cancel_reservation(state: &AppState, request: RequestContext) -> HandlerResult {
    check_rate(&state.admission, &request)?;
    let caller = state.jwt.authenticate(request.header("authorization")).await?;
    state.user_rate_limit.check(&caller.user_id).await?;
    let id = path_id(&request)?;
    let result = state.reservations.cancel(&caller.user_id, id).await;
    let result = or_archived(state, &caller.user_id, id, ReservationStatus::Cancelled, result).await?;
    record_outcome("cancel", &result, "cancelled");
    match result {
        Ok(reservation) => Ok(json::response(StatusCode::OK, &reservation)),
        Err(error) => Err(reservation_error(error)),
    }
}

/// `GET /reservations/{id}` (owner or admin).
#[utoipa::path(
    get,
    path = "/reservations/{id}",
    tag = "reservations",
    summary = "Read a reservation",
    description = "One reservation with its current status (`held`, `confirmed`, `cancelled`, `expired`), \
        readable by its owner as soon as `POST /reserve` has answered. Admins read any; others get 404.",
    security(("bearer_auth" = [])),
    params(("id" = String, Path, description = "Reservation id (UUID).", format = Uuid)),
    responses((status = 200, description = "The reservation.", body = Reservation)),
)]
pub async fn get_reservation(state: &AppState, request: RequestContext) -> HandlerResult {
    check_rate(&state.admission, &request)?;
    let caller = state.jwt.authenticate(request.header("authorization")).await?;
    let id = path_id(&request)?;
    let live = state.reservations.get(id).await;
    let reservation = match live {
        Ok(Some(reservation)) => Some(reservation),
        Ok(None) => archived_reservation(state, id).await?,
        Err(error) => return Err(reservation_error(error)),
    };
    match reservation {
        Some(reservation) if caller.role == Role::Admin || reservation.user_id == caller.user_id.as_str() => {
            Ok(json::response(StatusCode::OK, &reservation))
        }
        _ => Err(ApiError::NotFound("no such reservation")),
    }
}

/// A confirm or cancel that found no Redis record: once a reservation has ended, its
/// record is kept 24 h, so a repeat after that answers from the pipeline's Postgres copy
/// what it answered then (200 with the same body when the status is the one `done`
/// leads to, else the same 409 or 410). Only this failure path reads Postgres.
async fn or_archived(
    state: &AppState,
    user: &UserId,
    id: ReservationId,
    done: ReservationStatus,
    result: Result<Reservation, ReservationError>,
) -> Result<Result<Reservation, ReservationError>, ApiError> {
    if !matches!(result, Err(ReservationError::NotFound)) {
        return Ok(result);
    }
    let Some(archived) = archived_reservation(state, id).await?.filter(|archived| archived.user_id == user.as_str())
    else {
        return Ok(result);
    };
    Ok(match archived.status {
        status if status == done => Ok(archived),
        ReservationStatus::Confirmed => Err(ReservationError::NotHeld(NotHeldReason::Confirmed)),
        ReservationStatus::Cancelled => Err(ReservationError::NotHeld(NotHeldReason::Cancelled)),
        ReservationStatus::Expired => Err(ReservationError::Expired),
        // Postgres says held but Redis has no record: Redis lost it (see `worker reconcile`).
        ReservationStatus::Held => return Err(ApiError::unavailable("the reservation's live record is missing")),
    })
}

/// Where `GET /reservations/{id}` looks once the Redis record is gone (24 h after the
/// reservation ended): the pipeline's Postgres copy.
async fn archived_reservation(state: &AppState, id: ReservationId) -> Result<Option<Reservation>, ApiError> {
    crate::persistence::reservations::find_reservation(&state.database, id.uuid())
        .await
        .map_err(|error| ApiError::unavailable(format!("postgres: {error}")))
}
