//! Handlers of events, ticket categories and availability.

use chrono::{DateTime, Utc};
use hyper::StatusCode;
use hyper::header::{HeaderValue, LOCATION};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::json::{self, RequestBody};
use super::{HandlerResult, RequestContext, page_query};
pub use crate::availability::{Availability, CategoryAvailability};
use crate::catalog::{Catalog, CatalogError, Category, CategoryFields, Event, NewCategory, NewEvent};
use crate::http::state::AppState;
use crate::ids::{CategoryId, EventId};
use crate::reservation::ReservationError;
use crate::seating::{self, LiveSeats};
use crate::stock::{SaleWindow, StockError};
use crate::validation::FieldErrors;

/// Body of `POST /events`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"name": "Stampede Live", "venue": "Main Arena", "starts_at": "2027-01-10T19:00:00Z",
    "sale_starts_at": null, "sale_ends_at": null}))]
pub struct CreateEventRequest {
    /// 1..200 characters, no control characters.
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: Option<String>,
    /// 1..200 characters, no control characters.
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub venue: Option<String>,
    /// RFC 3339 time the event starts.
    #[schema(format = DateTime, required = true, nullable = false)]
    pub starts_at: Option<String>,
    /// RFC 3339 time the sale opens; `null` means open now.
    #[schema(format = DateTime)]
    pub sale_starts_at: Option<String>,
    /// RFC 3339 time the sale closes; after `sale_starts_at`; `null` means never.
    #[schema(format = DateTime)]
    pub sale_ends_at: Option<String>,
}

impl RequestBody for CreateEventRequest {
    const FIELDS: &'static [&'static str] = &["name", "venue", "starts_at", "sale_starts_at", "sale_ends_at"];
}

/// Body of `POST /events/{id}/ticket-category`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"name": "VIP", "price": 150000, "currency": "IDR", "quota": 5000, "max_per_user": 4}))]
pub struct CreateCategoryRequest {
    /// 1..100 characters, no control characters, unique within the event.
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: Option<String>,
    /// Price per ticket in minor units, at least 0.
    #[schema(required = true, nullable = false, minimum = 0)]
    pub price: Option<i64>,
    /// Three uppercase letters; default `USD`.
    #[schema(pattern = "^[A-Z]{3}$", default = "USD")]
    pub currency: Option<String>,
    /// 1..10,000,000 tickets; required unless `seat_map` is given, and left out (or `null`) with it.
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub quota: Option<i64>,
    /// 1..quota; default min(10, quota) (also when `null`).
    #[schema(minimum = 1)]
    pub max_per_user: Option<i64>,
    /// A seated category's rows, in map order: 1..1000 rows with unique names, at most
    /// 100,000 seats in all; the quota is the number of seats. Seats are named `ROW-N`.
    /// `null` is the same as leaving it out (a counted category).
    #[schema(min_items = 1, max_items = 1000)]
    pub seat_map: Option<Vec<SeatRowRequest>>,
}

/// One row of a seat map in a request.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"row": "A", "seats": 20}))]
pub struct SeatRowRequest {
    /// 1..8 ASCII letters and digits, case-sensitive, unique in the map.
    #[schema(required = true, nullable = false, pattern = "^[A-Za-z0-9]{1,8}$")]
    pub row: Option<String>,
    /// 1..1000 seats, numbered from 1.
    #[schema(required = true, nullable = false, minimum = 1, maximum = 1000)]
    pub seats: Option<i64>,
}

impl RequestBody for CreateCategoryRequest {
    const FIELDS: &'static [&'static str] =
        &["name", "price", "currency", "quota", "max_per_user", "seat_map.row", "seat_map.seats"];
}

/// A page of events.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"events": [{"id": 1, "name": "Stampede Live", "venue": "Main Arena",
    "starts_at": "2027-01-10T19:00:00Z", "sale_starts_at": null, "sale_ends_at": null,
    "created_at": "2026-11-21T10:00:00Z", "categories": [{"id": 1, "event_id": 1, "name": "VIP", "price": 150000,
    "currency": "IDR", "quota": 5000, "max_per_user": 4}]}], "next_after": null}))]
pub struct EventPage {
    /// Events in ascending id order.
    pub events: Vec<Event>,
    /// The last id of a full page, to pass as `after`; `null` on the last page.
    pub next_after: Option<i64>,
}

fn parse_time(errors: &mut FieldErrors, field: &str, text: Option<&str>) -> Option<DateTime<Utc>> {
    let text = text?;
    let parsed = DateTime::parse_from_rfc3339(text).map(|time| time.with_timezone(&Utc));
    errors.check(field, parsed.map_err(|_| "must be an RFC 3339 time such as 2027-01-10T19:00:00Z".to_owned()))
}

fn validate_event(request: CreateEventRequest) -> Result<NewEvent, ApiError> {
    let mut errors = FieldErrors::new();
    let starts_at = parse_time(&mut errors, "starts_at", request.starts_at.as_deref());
    let sale_window = SaleWindow {
        starts_at: parse_time(&mut errors, "sale_starts_at", request.sale_starts_at.as_deref()),
        ends_at: parse_time(&mut errors, "sale_ends_at", request.sale_ends_at.as_deref()),
    };
    let starts_at_present = request.starts_at.is_some();
    let parsed = NewEvent::parse(request.name, request.venue, starts_at, sale_window);
    let mut all = errors.into_vec();
    match parsed {
        Ok(event) if all.is_empty() => Ok(event),
        Ok(_) => Err(ApiError::Validation(all)),
        Err(more) => {
            // A present but unparsable starts_at is already reported; do not also call it missing.
            let more = more.into_iter().filter(|error| !(error.field == "starts_at" && starts_at_present));
            all.extend(more);
            Err(ApiError::Validation(all))
        }
    }
}

/// The path's `{id}` as an event id; anything else names no event.
pub(crate) fn event_id(request: &RequestContext) -> Result<EventId, ApiError> {
    request
        .param("id")
        .and_then(|id| id.parse::<i64>().ok())
        .and_then(EventId::new)
        .ok_or(ApiError::NotFound("no such event"))
}

pub(crate) fn catalog_error(error: CatalogError) -> ApiError {
    match error {
        CatalogError::EventNotFound => ApiError::NotFound("no such event"),
        CatalogError::DuplicateCategory => ApiError::AlreadyExists("the event already has a category with this name"),
        CatalogError::Database(error) => ApiError::unavailable(format!("postgres: {error}")),
        CatalogError::Stock(error) => stock_error(error),
    }
}

pub(crate) fn stock_error(error: StockError) -> ApiError {
    match error {
        StockError::Redis(error) => ApiError::unavailable(format!("redis: {error}")),
        StockError::Missing(category) => {
            ApiError::unavailable(format!("stock of category {} is missing from redis", category.get()))
        }
    }
}

/// `POST /events` (admin).
#[utoipa::path(
    post,
    path = "/events",
    tag = "catalog",
    summary = "Create an event (admin)",
    description = "Creates an event with no categories yet. `sale_starts_at`/`sale_ends_at` bound when \
        tickets can be reserved; `null` means open now / never closing.",
    security(("bearer_auth" = [])),
    request_body(content = CreateEventRequest, description = "The new event."),
    responses((
        status = 201,
        description = "Created.",
        body = Event,
        headers(("Location" = String, description = "`/events/{id}` of the new event.")),
    )),
)]
pub async fn create_event(state: &AppState, request: RequestContext) -> HandlerResult {
    state.jwt.authenticate(request.header("authorization")).await?.require_admin()?;
    let body: CreateEventRequest = json::parse(&request.headers, &request.body)?;
    let event = validate_event(body)?;
    let created = state.catalog.create_event(&event).await.map_err(catalog_error)?;
    let mut response = json::response(StatusCode::CREATED, &created);
    let location = HeaderValue::from_str(&format!("/events/{}", created.id.get())).expect("ids are ASCII");
    response.headers_mut().insert(LOCATION, location);
    Ok(response)
}

/// `GET /events` (public).
#[utoipa::path(
    get,
    path = "/events",
    tag = "catalog",
    summary = "List events",
    description = "Events in ascending id order, with their categories. Pass the previous page's \
        `next_after` as `after` to get the next page; `next_after` is `null` on the last page.",
    params(
        ("limit" = Option<i64>, Query, description = "Page size, 1..100 (default 20).", minimum = 1, maximum = 100),
        ("after" = Option<i64>, Query, description = "Return events with an id above this one.", minimum = 0),
    ),
    responses((status = 200, description = "One page of events.", body = EventPage)),
)]
pub async fn list_events(state: &AppState, request: RequestContext) -> HandlerResult {
    let page = page_query(request.query.as_deref(), true)?;
    let (events, next_after) = state.catalog.list_events(page).await.map_err(catalog_error)?;
    Ok(json::response(StatusCode::OK, &EventPage { events, next_after }))
}

/// `GET /events/{id}` (public).
#[utoipa::path(
    get,
    path = "/events/{id}",
    tag = "catalog",
    summary = "Get an event",
    params(("id" = i64, Path, description = "Event id.", minimum = 1)),
    responses((status = 200, description = "The event with its categories.", body = Event)),
)]
pub async fn get_event(state: &AppState, request: RequestContext) -> HandlerResult {
    let event = state.catalog.event(event_id(&request)?).await.map_err(catalog_error)?;
    Ok(json::response(StatusCode::OK, &event))
}

/// `POST /events/{id}/ticket-category` (admin).
#[utoipa::path(
    post,
    path = "/events/{id}/ticket-category",
    tag = "catalog",
    summary = "Create a ticket category (admin)",
    description = "Adds a category with its price, quota and per-user cap. Its tickets are reservable \
        as soon as the 201 is sent. A seated category gives a `seat_map` instead of a `quota` (both at once \
        is 422); its quota is its number of seats, named `ROW-N` (`A-1` … `A-20`), and the Category \
        carries the `seat_map` as given.",
    security(("bearer_auth" = [])),
    params(("id" = i64, Path, description = "Event id.", minimum = 1)),
    request_body(content = CreateCategoryRequest, description = "The new category."),
    responses((status = 201, description = "Created; its stock is open for reservations.", body = Category)),
)]
pub async fn create_category(state: &AppState, request: RequestContext) -> HandlerResult {
    state.jwt.authenticate(request.header("authorization")).await?.require_admin()?;
    let event = event_id(&request)?;
    let body: CreateCategoryRequest = json::parse(&request.headers, &request.body)?;
    let fields = CategoryFields {
        name: body.name,
        price: body.price,
        currency: body.currency,
        quota: body.quota,
        max_per_user: body.max_per_user,
        seat_map: body.seat_map.map(|rows| rows.into_iter().map(|row| (row.row, row.seats)).collect()),
    };
    let category = NewCategory::parse_fields(fields).map_err(ApiError::Validation)?;
    let created = state.catalog.create_category(event, &category).await.map_err(catalog_error)?;
    Ok(json::response(StatusCode::CREATED, &created))
}

/// `GET /events/{id}/availability` (public): live levels from Redis.
#[utoipa::path(
    get,
    path = "/events/{id}/availability",
    tag = "catalog",
    summary = "Live availability",
    description = "Stock levels of each category, read live from Redis. For each category, at every \
        instant, `available + held + sold == quota` and none is negative.",
    params(("id" = i64, Path, description = "Event id.", minimum = 1)),
    responses((status = 200, description = "Live levels per category.", body = Availability)),
)]
pub async fn availability(state: &AppState, request: RequestContext) -> HandlerResult {
    let availability =
        Availability::read(&state.catalog, &state.stock, event_id(&request)?).await.map_err(catalog_error)?;
    Ok(json::response(StatusCode::OK, &availability))
}

/// `GET /categories/{id}/seats` (public): a seated category's live map.
#[utoipa::path(
    get,
    path = "/categories/{id}/seats",
    tag = "catalog",
    summary = "Live seat map",
    description = "A seated category's rows in map order, each with the numbers of its seats held or sold \
        now (`taken`, ascending), read live from Redis. 404 for an unknown category or one without seats.",
    params(("id" = i64, Path, description = "Category id.", minimum = 1)),
    responses((status = 200, description = "The live map.", body = LiveSeats)),
)]
pub async fn category_seats(state: &AppState, request: RequestContext) -> HandlerResult {
    let id = request
        .param("id")
        .and_then(|id| id.parse::<i64>().ok())
        .and_then(CategoryId::new)
        .ok_or(ApiError::NotFound("no such seated category"))?;
    let category = state.catalog.category(id).await.map_err(catalog_error)?;
    let Some(map) = category.and_then(|category| category.seat_map) else {
        return Err(ApiError::NotFound("no such seated category"));
    };
    let live = seating::live_seats(&mut state.redis.clone(), &state.keys, id, &map)
        .await
        .map_err(|error| ApiError::unavailable(format!("redis: {error}")))?
        .ok_or_else(|| ApiError::unavailable(format!("seats of category {} are missing from redis", id.get())))?;
    Ok(json::response(StatusCode::OK, &live))
}

/// Tells the two causes of a reserve's missing stock apart: a category that never existed
/// becomes [`ReservationError::UnknownCategory`]; a real one stays
/// [`ReservationError::StockMissing`]. Only this failure path reads Postgres (a 503 when it
/// fails); every other error passes through unchanged.
pub async fn explain_missing_stock(error: ReservationError, catalog: &Catalog) -> Result<ReservationError, ApiError> {
    let ReservationError::StockMissing(category) = error else { return Ok(error) };
    match catalog.category_exists(category).await {
        Ok(true) => Ok(error),
        Ok(false) => Ok(ReservationError::UnknownCategory(category)),
        Err(cause) => Err(ApiError::unavailable(format!("postgres: {cause:?}"))),
    }
}
