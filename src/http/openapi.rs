//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`.
//!
//! utoipa derives the paths from the handlers' `#[utoipa::path]` annotations and the
//! schemas from the request and response types. Three modifiers then finish it from the
//! code rather than from hand-written copies:
//! - the `bearer_auth` security scheme (HTTP bearer, JWT);
//! - every operation's error responses as `application/problem+json`, grouped by status,
//!   with one example per code built by [`ApiError::problem`] itself, so each example's
//!   status, type, title and code are what the server sends ([`OPERATION_ERRORS`] lists
//!   the codes);
//! - `additionalProperties: false` on request bodies, because unknown fields are rejected.

use std::collections::BTreeMap;

use serde_json::Value;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::schema::{AdditionalProperties, ArrayItems};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Components, ContentBuilder, Object, Ref, RefOr, Required, Response, Schema, Type};
use utoipa::{Modify, OpenApi};

use crate::http::error::{ApiError, Problem};
use crate::http::{
    availability_stream, catalog, documentation, metrics, operations, reservation, reservation_list, waiting_room,
    web_app,
};
use crate::reservation::Refusal;
use crate::reservation::error::{REFUSALS, RefusalAnswer};
use crate::validation::FieldError;

/// Name of the security scheme that handlers list in `security(...)`.
pub const BEARER_SCHEME: &str = "bearer_auth";

/// Media type of every error response.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// In [`OPERATION_ERRORS`]: every refusal with its own code, from the one list
/// ([`REFUSALS`]), so no operation repeats them.
pub const REFUSED: &str = "<refusals>";

/// An operation's codes from [`OPERATION_ERRORS`], with [`REFUSED`] spelled out.
pub fn operation_codes(codes: &[&'static str]) -> Vec<&'static str> {
    let mut all = Vec::with_capacity(codes.len() + REFUSALS.len());
    for &code in codes {
        match code {
            REFUSED => all.extend(conflict_refusals().map(Refusal::code)),
            code => all.push(code),
        }
    }
    all
}

/// The error codes each operation can answer with, by operation id (the handler's
/// name). Errors that any path can produce before a handler runs (404 for an unknown
/// path, 405 for a wrong method, 413 for a body over 64 KiB) are described once in the
/// document's introduction instead of on every operation.
pub const OPERATION_ERRORS: &[(&str, &[&str])] = &[
    ("health", &[]),
    ("ready", &["unavailable"]),
    (
        "create_event",
        &[
            "invalid_json",
            "unauthorized",
            "forbidden",
            "payload_too_large",
            "unsupported_media_type",
            "validation_failed",
            "unavailable",
        ],
    ),
    ("list_events", &["validation_failed", "unavailable"]),
    ("get_event", &["not_found", "unavailable"]),
    (
        "create_category",
        &[
            "invalid_json",
            "unauthorized",
            "forbidden",
            "not_found",
            "already_exists",
            "payload_too_large",
            "unsupported_media_type",
            "validation_failed",
            "unavailable",
        ],
    ),
    ("availability", &["not_found", "unavailable"]),
    ("category_seats", &["not_found", "unavailable"]),
    ("availability_stream", &["not_found", "rate_limited", "unavailable"]),
    (
        "reserve",
        &[
            "invalid_json",
            "unauthorized",
            "queue_pass_required",
            "not_found",
            REFUSED,
            "seat_taken",
            "idempotency_in_progress",
            "payload_too_large",
            "unsupported_media_type",
            "validation_failed",
            "idempotency_key_reused",
            "rate_limited",
            "unavailable",
        ],
    ),
    (
        "confirm",
        &[
            "invalid_json",
            "unauthorized",
            "payment_declined",
            "not_found",
            "reservation_not_held",
            "idempotency_in_progress",
            "reservation_expired",
            "payload_too_large",
            "unsupported_media_type",
            "validation_failed",
            "idempotency_key_reused",
            "rate_limited",
            "unavailable",
        ],
    ),
    (
        "cancel_reservation",
        &["unauthorized", "not_found", "reservation_not_held", "reservation_expired", "rate_limited", "unavailable"],
    ),
    ("get_reservation", &["unauthorized", "not_found", "rate_limited", "unavailable"]),
    ("list_reservations", &["unauthorized", "validation_failed", "unavailable"]),
    ("metrics", &[]),
    ("openapi_json", &[]),
    ("swagger_ui_redirect", &[]),
    ("swagger_ui_index", &[]),
    ("swagger_ui_file", &["not_found"]),
    (
        "configure_waiting_room",
        &[
            "invalid_json",
            "unauthorized",
            "forbidden",
            "not_found",
            "payload_too_large",
            "unsupported_media_type",
            "validation_failed",
            "unavailable",
        ],
    ),
    ("get_waiting_room", &["not_found", "unavailable"]),
    ("join_queue", &["unauthorized", "not_found", "sale_closed", "rate_limited", "unavailable"]),
    ("get_queue_status", &["unauthorized", "not_found", "unavailable"]),
    ("app_redirect", &[]),
    ("app_index", &[]),
    ("app_file", &["not_found"]),
];

/// The document's paths, schemas and tags; [`document`] is the finished document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Stampede",
        description = "Flash ticket sales: atomic holds in Redis, confirmation with payment, and every \
            change delivered to Postgres through a transactional outbox and Kafka.",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(
        operations::health,
        operations::ready,
        catalog::create_event,
        catalog::list_events,
        catalog::get_event,
        catalog::create_category,
        catalog::availability,
        catalog::category_seats,
        availability_stream::availability_stream,
        reservation::reserve,
        reservation::confirm,
        reservation::cancel_reservation,
        reservation::get_reservation,
        reservation_list::list_reservations,
        metrics::metrics,
        documentation::openapi_json,
        documentation::swagger_ui_redirect,
        documentation::swagger_ui_index,
        documentation::swagger_ui_file,
        waiting_room::configure_waiting_room,
        waiting_room::get_waiting_room,
        waiting_room::join_queue,
        waiting_room::get_queue_status,
        web_app::app_redirect,
        web_app::app_index,
        web_app::app_file,
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&BearerScheme, &ProblemResponses, &ClosedRequestBodies),
    tags(
        (name = "catalog", description = "Events, their ticket categories, and live availability."),
        (name = "reservations", description = "Holds, confirmation with payment, cancellation, and reading them back."),
        (name = "waiting room", description = "Per-event virtual waiting rooms: fair admission by queue pass."),
        (name = "operations", description = "Health, readiness and Prometheus metrics."),
        (name = "documentation", description = "This document and the Swagger UI that renders it."),
        (name = "web app", description = "The buyers' and organisers' web app, served from the binary."),
    ),
)]
pub struct ApiDoc;

/// The finished OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Adds the `bearer_auth` scheme: `Authorization: Bearer <JWT>` signed with HS256.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "An HS256 JWT signed with the API's `JWT_SECRET`, with claims `sub`, `role` (`admin` or \
                 `user`), `exp` and `iat`. Mint one with `token --role user --sub alice`.",
            ))
            .build();
        let components = openapi.components.get_or_insert_with(Components::new);
        components.security_schemes.insert(BEARER_SCHEME.to_owned(), RefOr::T(SecurityScheme::Http(scheme)));
    }
}

/// One example of every [`ApiError`] variant, in the contract's order.
pub fn error_examples() -> Vec<ApiError> {
    let mut examples = vec![
        ApiError::InvalidJson("the body is not valid JSON: expected value at line 1 column 1".to_owned()),
        ApiError::Unauthorized,
        ApiError::PaymentDeclined,
        ApiError::Forbidden,
        ApiError::QueuePassRequired,
        ApiError::NotFound("no such resource"),
        ApiError::MethodNotAllowed("GET, POST".to_owned()),
        ApiError::SeatTaken(vec!["A-3".to_owned(), "A-4".to_owned()]),
        ApiError::AlreadyExists("the event already has a category with this name"),
        ApiError::ReservationNotHeld("the reservation is confirmed"),
        ApiError::IdempotencyInProgress,
        ApiError::ReservationExpired,
        ApiError::PayloadTooLarge,
        ApiError::RequestTimeout,
        ApiError::UnsupportedMediaType,
        ApiError::Validation(vec![FieldError {
            field: "quantity".to_owned(),
            message: "must be an integer from 1 to 10000000".to_owned(),
        }]),
        ApiError::IdempotencyKeyReused,
        ApiError::RateLimited { retry_after_seconds: 1 },
        ApiError::unavailable("example"),
        ApiError::internal("example"),
    ];
    // The refusals with their own code, from the one list, after `method_not_allowed`.
    let at = examples.iter().position(|error| matches!(error, ApiError::MethodNotAllowed(_))).map_or(0, |at| at + 1);
    examples.splice(at..at, conflict_refusals().map(ApiError::Refused));
    examples
}

/// The refusals a reserve answers with their own code, in [`REFUSALS`] order.
fn conflict_refusals() -> impl Iterator<Item = Refusal> {
    REFUSALS.iter().filter(|terms| terms.answer == RefusalAnswer::Conflict).map(|terms| terms.refusal)
}

/// When a client receives `error`: the contract's wording. The match is exhaustive, so
/// a new [`ApiError`] variant does not compile until it is described here.
pub fn when(error: &ApiError) -> &'static str {
    match error {
        ApiError::InvalidJson(_) => "The body is not valid JSON or has wrong types.",
        ApiError::Unauthorized => "The token is missing, malformed, expired or badly signed.",
        ApiError::PaymentDeclined => "The (simulated) payment was declined; the hold stays until it expires.",
        ApiError::Forbidden => "The token is valid but its role may not call this endpoint.",
        ApiError::QueuePassRequired => {
            "Reserve in an event whose waiting room is on, without a valid `Queue-Pass` of the caller for that event."
        }
        ApiError::NotFound(_) => "Unknown route or resource; also a reservation owned by someone else.",
        ApiError::MethodNotAllowed(_) => "Known path, wrong method; the `Allow` header lists the right ones.",
        ApiError::Refused(refusal) => refusal.terms().when,
        ApiError::SeatTaken(_) => "A requested seat is held or sold; `seats` lists the taken ones and nothing is held.",
        ApiError::AlreadyExists(_) => "The event already has a category with this name.",
        ApiError::ReservationNotHeld(_) => {
            "The reservation is not held: confirm of a cancelled one, cancel of a confirmed one."
        }
        ApiError::IdempotencyInProgress => "The same `Idempotency-Key` is still running in another request.",
        ApiError::ReservationExpired => {
            "Confirm or cancel at or after `expires_at`, whether or not the reaper has run."
        }
        ApiError::PayloadTooLarge => "The body is over 64 KiB.",
        ApiError::RequestTimeout => {
            "The request's head and body did not arrive within `REQUEST_TIMEOUT` (10 s); the connection closes."
        }
        ApiError::UnsupportedMediaType => "A body that is not `application/json`.",
        ApiError::Validation(_) => "Well-formed JSON (or query) that breaks a rule; `errors` names each field.",
        ApiError::IdempotencyKeyReused => "The same `Idempotency-Key` from the same user with a different body.",
        ApiError::RateLimited { .. } => "Too many requests from this client; retry after `Retry-After` seconds.",
        ApiError::Shed { .. } | ApiError::Unavailable { .. } => {
            "A dependency is down or load is being shed; retry after `Retry-After` seconds."
        }
        ApiError::Internal(_) => "A bug; the cause is logged, never shown.",
    }
}

/// The example error whose code is `code`.
fn example_error(code: &str) -> ApiError {
    error_examples()
        .into_iter()
        .find(|error| error.code() == code)
        .unwrap_or_else(|| panic!("OPERATION_ERRORS names an unknown error code `{code}`"))
}

/// Fills in every operation's problem+json error responses from [`OPERATION_ERRORS`],
/// and the introduction's table of all codes.
struct ProblemResponses;

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let table: BTreeMap<&str, &[&str]> = OPERATION_ERRORS.iter().copied().collect();
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                let id = operation.operation_id.clone().unwrap_or_default();
                let codes = operation_codes(table.get(id.as_str()).copied().unwrap_or_default());
                add_problem_responses(&mut operation.responses.responses, &codes);
            }
        }
        let description = openapi.info.description.take().unwrap_or_default();
        openapi.info.description = Some(format!("{description}\n\n{}", introduction()));
        let components = openapi.components.get_or_insert_with(Components::new);
        if let Some(RefOr::T(Schema::Object(problem))) = components.schemas.get_mut("Problem") {
            describe_problem_schema(problem);
        }
    }
}

/// Lists every code in the Problem schema and gives it an example the server really sends.
fn describe_problem_schema(problem: &mut Object) {
    let codes = error_examples().iter().map(|error| Value::from(error.code())).collect();
    if let Some(RefOr::T(Schema::Object(code))) = problem.properties.get_mut("code") {
        code.enum_values = Some(codes);
    }
    problem.example =
        Some(serde_json::to_value(ApiError::Refused(Refusal::SoldOut).problem()).expect("problems serialize"));
}

/// Adds one response per status of `codes` (keeping a handler's own description).
fn add_problem_responses(responses: &mut BTreeMap<String, RefOr<Response>>, codes: &[&str]) {
    let mut by_status: BTreeMap<u16, Vec<ApiError>> = BTreeMap::new();
    for code in codes {
        let error = example_error(code);
        by_status.entry(error.status().as_u16()).or_default().push(error);
    }
    for (status, errors) in by_status {
        let generated = problem_response(&errors);
        match responses.get_mut(&status.to_string()) {
            Some(RefOr::T(existing)) => {
                existing
                    .content
                    .insert(PROBLEM_CONTENT_TYPE.to_owned(), generated.content[PROBLEM_CONTENT_TYPE].clone());
                existing.headers.extend(generated.headers);
            }
            Some(RefOr::Ref(_)) => {}
            None => {
                responses.insert(status.to_string(), RefOr::T(generated));
            }
        }
    }
}

/// One status's response: the Problem schema with an example per code.
fn problem_response(errors: &[ApiError]) -> Response {
    let description = errors.iter().map(|error| format!("`{}`: {}", error.code(), when(error))).collect::<Vec<_>>();
    let mut content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem")));
    for error in errors {
        let value = serde_json::to_value(error.problem()).expect("problems serialize");
        let summary = format!("{}: {}", error.code(), when(error));
        let example = ExampleBuilder::new().summary(summary).value(Some(value)).build();
        content = content.examples_from_iter([(error.code(), example)]);
    }
    let mut response = Response::new(description.join("\n\n"));
    response.content.insert(PROBLEM_CONTENT_TYPE.to_owned(), RefOr::T(content.build()));
    if errors.iter().any(|error| matches!(error, ApiError::RateLimited { .. } | ApiError::Unavailable { .. })) {
        let header = HeaderBuilder::new()
            .schema(Some(Object::with_type(Type::Integer)))
            .description(Some("Seconds to wait before retrying."))
            .build();
        response.headers.insert("Retry-After".to_owned(), RefOr::T(header));
    }
    response
}

/// The introduction's description of auth and of every error code.
fn introduction() -> String {
    let mut text = String::from(
        "## Authentication\n\nAdmin and user endpoints take `Authorization: Bearer <JWT>` (HS256). Use \
         **Authorize** above to paste a token; mint one with `token --role admin|user --sub ID`.\n\n\
         ## Errors\n\nEvery non-2xx response is `application/problem+json` with a stable `code` that \
         clients switch on. Any path can answer 404 `not_found` (unknown path), 405 `method_not_allowed` \
         (with `Allow`) and 413 `payload_too_large` (body over 64 KiB).\n\n\
         | status | code | when |\n|---|---|---|\n",
    );
    let mut errors = error_examples();
    errors.sort_by_key(|error| error.status());
    for error in errors {
        text.push_str(&format!("| {} | `{}` | {} |\n", error.status().as_u16(), error.code(), when(&error)));
    }
    text
}

/// Marks request bodies (and the objects nested in them) as closed: the API rejects
/// unknown fields with 422 `validation_failed`.
struct ClosedRequestBodies;

impl Modify for ClosedRequestBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut names = Vec::new();
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                if let Some(RefOr::T(body)) = &mut operation.request_body {
                    body.required = Some(Required::True);
                    names.extend(body_schema_names(body));
                }
            }
        }
        let Some(components) = openapi.components.as_mut() else { return };
        while let Some(name) = names.pop() {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(&name) {
                if object.additional_properties.is_some() {
                    continue;
                }
                object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
                names.extend(object.properties.values().filter_map(referenced_name));
            }
        }
    }
}

fn body_schema_names(body: &RequestBody) -> Vec<String> {
    body.content
        .values()
        .filter_map(|content| match content {
            RefOr::T(content) => content.schema.as_ref().and_then(referenced_name),
            RefOr::Ref(_) => None,
        })
        .collect()
}

fn referenced_name(schema: &RefOr<Schema>) -> Option<String> {
    match schema {
        RefOr::Ref(reference) => reference.ref_location.rsplit('/').next().map(str::to_owned),
        // A list of objects (a seat map's rows) is closed like an object field.
        RefOr::T(Schema::Array(array)) => match &array.items {
            ArrayItems::RefOrSchema(items) => referenced_name(items),
            ArrayItems::False => None,
        },
        RefOr::T(Schema::OneOf(one_of)) => one_of.items.iter().find_map(referenced_name),
        RefOr::T(_) => None,
    }
}

/// The document as pretty JSON text.
pub fn json() -> String {
    document().to_pretty_json().expect("the document serializes")
}

/// The document as a JSON value (for tests and tools).
pub fn value() -> Value {
    serde_json::from_str(&json()).expect("the document is JSON")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn operation_ids(document: &Value) -> Vec<String> {
        let mut ids = Vec::new();
        for item in document["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                if let Some(id) = operation["operationId"].as_str() {
                    ids.push(id.to_owned());
                }
            }
        }
        ids.sort();
        ids
    }

    #[test]
    fn the_error_table_names_exactly_the_documented_operations() {
        let ids = operation_ids(&value());
        let mut listed: Vec<String> = OPERATION_ERRORS.iter().map(|(id, _)| (*id).to_owned()).collect();
        listed.sort();
        assert_eq!(ids, listed, "OPERATION_ERRORS must have one row per documented operation");
    }

    #[test]
    fn every_listed_code_is_a_real_error_code() {
        let known: Vec<&str> = error_examples().iter().map(ApiError::code).collect();
        for (operation, codes) in OPERATION_ERRORS {
            for code in operation_codes(codes) {
                assert!(known.contains(&code), "{operation} lists unknown code {code}");
            }
        }
    }

    #[test]
    fn examples_cover_every_code_once() {
        let mut codes: Vec<&str> = error_examples().iter().map(ApiError::code).collect();
        let count = codes.len();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), count, "one example per code");
    }

    #[test]
    fn names_and_idempotency_keys_document_what_the_server_accepts() {
        // Found by scripts/fuzz: the server refuses control characters in names and keys
        // outside 1..255 printable ASCII, so the document must say so.
        let document = value();
        let schemas = &document["components"]["schemas"];
        let no_control_characters = r"^[^\u0000-\u001F\u007F-\u009F]*$";
        for (schema, field) in
            [("CreateEventRequest", "name"), ("CreateEventRequest", "venue"), ("CreateCategoryRequest", "name")]
        {
            assert_eq!(schemas[schema]["properties"][field]["pattern"], no_control_characters, "{schema}.{field}");
        }
        for path in ["/reserve", "/confirm"] {
            let parameters = document["paths"][path]["post"]["parameters"].as_array().unwrap();
            let key = parameters.iter().find(|parameter| parameter["name"] == "Idempotency-Key").unwrap();
            let schema = &key["schema"];
            assert_eq!((&schema["minLength"], &schema["maxLength"]), (&json!(1), &json!(255)), "{path}");
            assert_eq!(schema["pattern"], "^[ -~]+$", "{path}");
        }
    }

    #[test]
    fn operations_that_authenticate_declare_the_bearer_scheme() {
        let document = value();
        for item in document["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                let answers_401 = operation["responses"].get("401").is_some();
                let secured = operation["security"]
                    .as_array()
                    .is_some_and(|list| list.iter().any(|requirement| requirement.get(BEARER_SCHEME).is_some()));
                assert_eq!(answers_401, secured, "{}", operation["operationId"]);
            }
        }
    }
}
