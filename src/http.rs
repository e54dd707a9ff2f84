//! The HTTP server: hyper 1 connections, a matchit router, bounded bodies and
//! connections, deadlines for slow clients, and graceful shutdown.

pub mod availability_stream;
pub mod catalog;
pub mod documentation;
pub mod error;
pub mod json;
pub mod metrics;
pub mod openapi;
pub mod operations;
pub mod request_id;
pub mod request_span;
pub mod reservation;
pub mod reservation_list;
pub mod router;
pub mod state;
pub mod waiting_room;
pub mod web_app;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::http::state::AppState;
use crate::server::connection::{self, ClockedBody, ConnectionClock};
use crate::server::{ConnectionSlot, ServerOptions, accept_loop};
use crate::service::Credentials;
use error::ApiError;
use request_id::{REQUEST_ID_HEADER, RequestId};
use router::{Matched, Operation, Router};

/// The target of the access log: one line per request at debug level
/// (`RUST_LOG=info,stampede::access=debug` turns it on).
pub const ACCESS_LOG_TARGET: &str = "stampede::access";

/// Largest accepted request body.
pub const BODY_SIZE_MAX: usize = 64 * 1024;

/// What a handler sees of a request.
pub struct RequestContext {
    /// Request headers.
    pub headers: HeaderMap,
    /// The raw query string.
    pub query: Option<String>,
    /// Path parameters by name.
    pub params: Vec<(String, String)>,
    /// The whole body (at most [`BODY_SIZE_MAX`]).
    pub body: Bytes,
    /// The connection's peer.
    pub peer: SocketAddr,
    /// The client's address: the peer, or behind a trusted proxy the address it forwarded
    /// for (see [`crate::client_address`]). Per-address limits count under it.
    pub client: IpAddr,
    /// The connection's place in the `connections_max` bound.
    pub connection: ConnectionSlot,
}

impl RequestContext {
    /// A path parameter by name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// What the service layer's gates check: the `Authorization` header and the client's address.
    pub fn credentials(&self) -> Credentials<'_> {
        Credentials { authorization: self.header("authorization"), client: self.client }
    }
}

/// A handler's answer.
pub type HandlerResult = Result<Response<Full<Bytes>>, ApiError>;

/// Every response body: a whole one, or a server-sent event stream.
pub type ResponseBody = Either<Full<Bytes>, availability_stream::EventStream>;

/// Serves the API until `shutdown` fires, then lets in-flight requests finish under
/// `options.shutdown_timeout`.
pub async fn serve(listener: TcpListener, state: Arc<AppState>, options: ServerOptions, shutdown: CancellationToken) {
    let router = Arc::new(Router::new());
    accept_loop(listener, options, shutdown, move |peer, clock, slot| {
        let (state, router) = (state.clone(), router.clone());
        service_fn(move |request| handle(state.clone(), router.clone(), peer, clock.clone(), slot.clone(), request))
    })
    .await;
}

async fn handle(
    state: Arc<AppState>,
    router: Arc<Router>,
    peer: SocketAddr,
    clock: Arc<ConnectionClock>,
    connection: ConnectionSlot,
    request: Request<Incoming>,
) -> Result<Response<ClockedBody<ResponseBody>>, Infallible> {
    let request_id = RequestId::from_headers(request.headers());
    let routed = router.route(request.method(), request.uri().path());
    let pattern = match &routed {
        Ok(matched) => matched.pattern,
        Err((_, pattern)) => pattern,
    };
    // Every line logged while serving the request carries its fields (`request_id`, `trace_id`).
    let span = request_span::request_span(&request_id, request.method(), pattern, request.headers());
    let mut response = serve_request(&state, routed, peer, clock.as_ref(), connection, request).instrument(span).await;
    response.headers_mut().insert(REQUEST_ID_HEADER, request_id.header_value());
    Ok(response.map(|body| ClockedBody::new(body, clock)))
}

async fn serve_request(
    state: &AppState,
    routed: Result<Matched, (ApiError, &'static str)>,
    peer: SocketAddr,
    clock: &ConnectionClock,
    connection: ConnectionSlot,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let body_deadline = clock.begin_request();
    let method = request.method().clone();
    let (result, pattern) = match routed {
        Ok(matched) => {
            let pattern = matched.pattern;
            (respond(state, matched, peer, body_deadline, connection, request).await, pattern)
        }
        Err((error, pattern)) => (Err(error), pattern),
    };
    let response = result.unwrap_or_else(|error| {
        record_error(&error);
        error.into_response().map(Either::Left)
    });
    let response = if method == Method::HEAD { strip_body(response) } else { response };
    let status = response.status().as_u16();
    request_span::record_status(status);
    record_request(&method, pattern, status, started);
    tracing::debug!(
        target: ACCESS_LOG_TARGET,
        status,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        peer = %peer,
        "request served"
    );
    response
}

async fn respond(
    state: &AppState,
    matched: Matched,
    peer: SocketAddr,
    body_deadline: tokio::time::Instant,
    connection: ConnectionSlot,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let (parts, body) = request.into_parts();
    let collected = tokio::time::timeout_at(body_deadline, Limited::new(body, BODY_SIZE_MAX).collect()).await;
    let body = match collected {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return Err(ApiError::PayloadTooLarge);
        }
        Ok(Err(error)) => return Err(ApiError::InvalidJson(format!("cannot read the body: {error}"))),
        Err(_) => {
            connection::count_timeout("body");
            return Err(ApiError::RequestTimeout);
        }
    };
    let client = state.trusted_proxies.client_address(peer.ip(), &parts.headers);
    let context = RequestContext {
        client,
        headers: parts.headers,
        query: parts.uri.query().map(str::to_owned),
        params: matched.params,
        body,
        peer,
        connection,
    };
    dispatch(state, matched.operation, context).await
}

async fn dispatch(
    state: &AppState,
    operation: Operation,
    request: RequestContext,
) -> Result<Response<ResponseBody>, ApiError> {
    let response = match operation {
        Operation::AvailabilityStream => return availability_stream::availability_stream(state, request).await,
        Operation::Health => operations::health(state, request).await,
        Operation::Ready => operations::ready(state, request).await,
        Operation::CreateEvent => catalog::create_event(state, request).await,
        Operation::ListEvents => catalog::list_events(state, request).await,
        Operation::GetEvent => catalog::get_event(state, request).await,
        Operation::CreateCategory => catalog::create_category(state, request).await,
        Operation::Availability => catalog::availability(state, request).await,
        Operation::CategorySeats => catalog::category_seats(state, request).await,
        Operation::Reserve => reservation::reserve(state, request).await,
        Operation::Confirm => reservation::confirm(state, request).await,
        Operation::CancelReservation => reservation::cancel_reservation(state, request).await,
        Operation::GetReservation => reservation::get_reservation(state, request).await,
        Operation::Metrics => metrics::metrics(state, request).await,
        Operation::OpenApiDocument => documentation::openapi_json(state, request).await,
        Operation::SwaggerUiRedirect => documentation::swagger_ui_redirect(state, request).await,
        Operation::SwaggerUiIndex => documentation::swagger_ui_index(state, request).await,
        Operation::SwaggerUiFile => documentation::swagger_ui_file(state, request).await,
        Operation::ListReservations => reservation_list::list_reservations(state, request).await,
        Operation::ConfigureWaitingRoom => waiting_room::configure_waiting_room(state, request).await,
        Operation::GetWaitingRoom => waiting_room::get_waiting_room(state, request).await,
        Operation::JoinQueue => waiting_room::join_queue(state, request).await,
        Operation::GetQueueStatus => waiting_room::get_queue_status(state, request).await,
        Operation::AppRedirect => web_app::app_redirect(state, request).await,
        Operation::AppIndex => web_app::app_index(state, request).await,
        Operation::AppFile => web_app::app_file(state, request).await,
    };
    response.map(|response| response.map(Either::Left))
}

fn strip_body(response: Response<ResponseBody>) -> Response<ResponseBody> {
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Either::Left(Full::new(Bytes::new())))
}

/// The one place a failed request is logged and counted: the cause of a 5xx is logged
/// once; shed load is counted, never logged per request.
fn record_error(error: &ApiError) {
    match error {
        ApiError::Internal(cause) => tracing::error!(cause = %cause, "request failed"),
        ApiError::Unavailable { reason, .. } => tracing::warn!(reason = %reason, "request shed or dependency down"),
        ApiError::Shed { reason, .. } => ::metrics::counter!("requests_shed_total", "reason" => *reason).increment(1),
        ApiError::RateLimited { .. } => {
            ::metrics::counter!("requests_shed_total", "reason" => "rate_limited").increment(1);
        }
        _ => {}
    }
}

/// The `method` label of a request: one of the standard methods, else `other`. No label
/// value comes from a client (contract: Operations), or any request could add series.
pub fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

fn record_request(method: &Method, pattern: &'static str, status: u16, started: Instant) {
    // The route is a template of the route table and the status one the server chose.
    let labels =
        [("method", method_label(method).to_owned()), ("route", pattern.to_owned()), ("status", status.to_string())];
    // `::metrics` is the crate; the child module `metrics` is the /metrics handler.
    ::metrics::counter!("http_requests_total", &labels).increment(1);
    ::metrics::histogram!("http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
}

pub use crate::service::catalog::PAGE_LIMIT_DEFAULT;
/// The page of a list endpoint: `limit` (1..=100, default 20) and, where the endpoint
/// has a cursor (`accepts_after`), `after` (an id, default 0). Anything else is a 422.
pub fn page_query(query: Option<&str>, accepts_after: bool) -> Result<crate::catalog::PageRequest, ApiError> {
    use crate::validation::PAGE_LIMIT_MAX;
    let mut errors = crate::validation::FieldErrors::new();
    let mut page = crate::catalog::PageRequest { limit: PAGE_LIMIT_DEFAULT, after: 0 };
    for (key, value) in query_pairs(query) {
        match key.as_str() {
            "limit" => match value.parse::<i64>() {
                Ok(limit) if (1..=PAGE_LIMIT_MAX).contains(&limit) => page.limit = limit,
                _ => errors.add("limit", format!("must be an integer from 1 to {PAGE_LIMIT_MAX}")),
            },
            "after" if accepts_after => match value.parse::<i64>() {
                Ok(after) if after >= 0 => page.after = after,
                _ => errors.add("after", "must be a non-negative integer id"),
            },
            _ => errors.add(&key, "unknown query parameter"),
        }
    }
    errors.finish(|| page).map_err(ApiError::Validation)
}

/// Splits a query string into raw pairs. Every query parameter of the API is an
/// integer, so no percent-decoding is needed.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(query) = query else { return Vec::new() };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_standard_methods_become_labels() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let invented = Method::from_bytes(&[b'X'; 1000]).unwrap();
        assert_eq!(method_label(&invented), "other");
        assert_eq!(method_label(&Method::from_bytes(b"get").unwrap()), "other", "methods are case-sensitive");
    }

    #[test]
    fn pages_default_and_are_bounded() {
        let page = page_query(None, true).unwrap();
        assert_eq!((page.limit, page.after), (PAGE_LIMIT_DEFAULT, 0));
        let page = page_query(Some("limit=100&after=7"), true).unwrap();
        assert_eq!((page.limit, page.after), (100, 7));
        assert!(page_query(Some("limit=0"), true).is_err());
        assert!(page_query(Some("limit=101"), false).is_err());
        assert!(page_query(Some("after=-1"), true).is_err());
        assert!(page_query(Some("after=3"), false).is_err(), "a list without a cursor refuses `after`");
    }
}
