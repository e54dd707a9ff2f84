//! Handlers of the waiting room: its settings (admin), joining and polling the queue
//! (user), and the pass check of `POST /reserve`.

use hyper::StatusCode;
use hyper::header::{HeaderValue, RETRY_AFTER};
use serde::Deserialize;
use utoipa::ToSchema;

use super::catalog::{catalog_error, event_id};
use super::error::ApiError;
use super::json::{self, RequestBody};
use super::{HandlerResult, RequestContext};
use crate::http::state::AppState;
use crate::ids::CategoryId;
use crate::ids::EventId;
use crate::ids::UserId;
use crate::reservation::Refusal;
use crate::stock::SaleWindow;
use crate::waiting_room::{Joined, QueueStatus, Room, RoomChange, WaitingRoomError};

/// The request header carrying a queue pass.
pub const QUEUE_PASS_HEADER: &str = "queue-pass";

/// Body of `PUT /events/{id}/waiting-room`; omitted or `null` fields keep their current values.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"enabled": true, "admit_per_second": 100, "pass_ttl_seconds": 600}))]
pub struct WaitingRoomRequest {
    /// Whether reserving in the event needs a queue pass.
    pub enabled: Option<bool>,
    /// Users admitted per second at most, 1..100000 (default 100).
    #[schema(minimum = 1, maximum = 100_000)]
    pub admit_per_second: Option<i64>,
    /// How long a pass lasts from admission, 5..86400 s (default 600).
    #[schema(minimum = 5, maximum = 86_400)]
    pub pass_ttl_seconds: Option<i64>,
}

impl RequestBody for WaitingRoomRequest {
    const FIELDS: &'static [&'static str] = &["enabled", "admit_per_second", "pass_ttl_seconds"];
}

fn waiting_room_error(error: WaitingRoomError) -> ApiError {
    match error {
        WaitingRoomError::NotJoined => ApiError::NotFound("you have not joined this queue"),
        WaitingRoomError::SaleClosed => ApiError::Refused(Refusal::SaleClosed),
        WaitingRoomError::Redis(error) => ApiError::unavailable(format!("redis: {error}")),
        WaitingRoomError::Database(error) => ApiError::unavailable(format!("postgres: {error}")),
        WaitingRoomError::UnexpectedReply { .. } => ApiError::internal(&error),
    }
}

async fn sale_window(state: &AppState, event: EventId) -> Result<SaleWindow, ApiError> {
    let event = state.catalog.event(event).await.map_err(catalog_error)?;
    Ok(SaleWindow { starts_at: event.sale_starts_at, ends_at: event.sale_ends_at })
}

/// The sale window for a script that only uses it to create a room: a room that is on
/// already exists in Redis with its window, so the busy paths skip the catalog; otherwise
/// the catalog read also answers 404 for an unknown event.
async fn window_unless_on(state: &AppState, event: EventId) -> Result<SaleWindow, ApiError> {
    if state.waiting_rooms.is_on(event) { Ok(SaleWindow::default()) } else { sale_window(state, event).await }
}

fn room_response(room: &Room) -> HandlerResult {
    Ok(json::response(StatusCode::OK, room))
}

fn status_response(code: StatusCode, status: &QueueStatus) -> HandlerResult {
    let mut response = json::response(code, status);
    if let Some(seconds) = status.retry_after_seconds {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    Ok(response)
}

/// `PUT /events/{id}/waiting-room` (admin).
#[utoipa::path(
    put,
    path = "/events/{id}/waiting-room",
    tag = "waiting room",
    summary = "Configure an event's waiting room (admin)",
    description = "Turns the room on or off and sets its pace and pass lifetime; omitted fields keep their \
        current values. Takes effect at once: a new rate paces the next admission, and turning the room off \
        admits everyone waiting and lifts the pass requirement.",
    security(("bearer_auth" = [])),
    params(("id" = i64, Path, description = "Event id.", minimum = 1)),
    request_body(content = WaitingRoomRequest, description = "The settings to change."),
    responses((status = 200, description = "The room as it is now.", body = Room)),
)]
pub async fn configure_waiting_room(state: &AppState, request: RequestContext) -> HandlerResult {
    state.jwt.authenticate(request.header("authorization")).await?.require_admin()?;
    let event = event_id(&request)?;
    let body: WaitingRoomRequest = json::parse(&request.headers, &request.body)?;
    let change =
        RoomChange::parse(body.enabled, body.admit_per_second, body.pass_ttl_seconds).map_err(ApiError::Validation)?;
    let window = sale_window(state, event).await?;
    let room = state.waiting_rooms.configure(event, window, change).await.map_err(waiting_room_error)?;
    room_response(&room)
}

/// `GET /events/{id}/waiting-room` (public).
#[utoipa::path(
    get,
    path = "/events/{id}/waiting-room",
    tag = "waiting room",
    summary = "Read an event's waiting room",
    description = "Its settings, when the queue opens, and how many users wait and have been admitted. An \
        event never configured reads `enabled: false` with the defaults.",
    params(("id" = i64, Path, description = "Event id.", minimum = 1)),
    responses((status = 200, description = "The room.", body = Room)),
)]
pub async fn get_waiting_room(state: &AppState, request: RequestContext) -> HandlerResult {
    let event = event_id(&request)?;
    let window = window_unless_on(state, event).await?;
    let room = state.waiting_rooms.room(event, window).await.map_err(waiting_room_error)?;
    room_response(&room)
}

/// `POST /events/{id}/queue` (user).
#[utoipa::path(
    post,
    path = "/events/{id}/queue",
    tag = "waiting room",
    summary = "Join an event's queue",
    description = "Joins the caller (201). Joining again keeps the caller's place (200, the same status); \
        after an expired pass it puts the caller at the back (201). While the room is off the caller is \
        admitted at once. Users who join before the queue opens are put in a uniformly random order at \
        the opening, ahead of everyone who joins later; from then on, first come first served.",
    security(("bearer_auth" = [])),
    params(("id" = i64, Path, description = "Event id.", minimum = 1)),
    responses(
        (status = 201, description = "Joined.", body = QueueStatus,
            headers(("Retry-After" = u64, description = "While waiting: seconds until polling again is useful."))),
        (status = 200, description = "Already in the queue; the place is kept.", body = QueueStatus,
            headers(("Retry-After" = u64, description = "While waiting: seconds until polling again is useful."))),
    ),
)]
pub async fn join_queue(state: &AppState, request: RequestContext) -> HandlerResult {
    let caller = state.jwt.authenticate(request.header("authorization")).await?;
    state.user_rate_limit.check(&caller.user_id).await?;
    let event = event_id(&request)?;
    let window = window_unless_on(state, event).await?;
    match state.waiting_rooms.join(&caller.user_id, event, window).await.map_err(waiting_room_error)? {
        Joined::New(status) => status_response(StatusCode::CREATED, &status),
        Joined::Existing(status) => status_response(StatusCode::OK, &status),
    }
}

/// `GET /events/{id}/queue` (user).
#[utoipa::path(
    get,
    path = "/events/{id}/queue",
    tag = "waiting room",
    summary = "Poll the caller's place in the queue",
    description = "The caller's status: `waiting` (with `position` once the queue has opened), `admitted` \
        (with the pass for `POST /reserve`'s `Queue-Pass` header), `expired`, or `sold_out` while every \
        category of the event has nothing available. 404 when the caller has not joined.",
    security(("bearer_auth" = [])),
    params(("id" = i64, Path, description = "Event id.", minimum = 1)),
    responses((status = 200, description = "The caller's status.", body = QueueStatus,
        headers(("Retry-After" = u64, description = "While waiting: seconds until polling again is useful.")))),
)]
pub async fn get_queue_status(state: &AppState, request: RequestContext) -> HandlerResult {
    let caller = state.jwt.authenticate(request.header("authorization")).await?;
    let event = event_id(&request)?;
    let status = state.waiting_rooms.poll(&caller.user_id, event).await.map_err(waiting_room_error)?;
    status_response(StatusCode::OK, &status)
}

/// The reserve path's check: when `category`'s event has its room on (per this process's
/// directory, confirmed in Redis before a refusal), the request needs a valid `Queue-Pass`
/// of `user` for that event.
pub async fn require_pass(
    state: &AppState,
    request: &RequestContext,
    user: &UserId,
    category: CategoryId,
) -> Result<(), ApiError> {
    let Some(event) = state.waiting_rooms.guard(category).await.map_err(waiting_room_error)? else { return Ok(()) };
    match state.waiting_rooms.check_pass(request.header(QUEUE_PASS_HEADER), user, event).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(ApiError::QueuePassRequired),
        Err(error) => Err(waiting_room_error(error)),
    }
}
