//! `GET /metrics`: this process's metrics in the Prometheus text format.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

use super::{HandlerResult, RequestContext};
use crate::http::state::AppState;

/// Content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`: renders the process's Prometheus recorder.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    description = "Counters, gauges and histograms of this API process in the Prometheus text format: \
        `http_requests_total`, `http_request_duration_seconds`, `reservation_outcomes_total`, \
        `stock_tickets`, `outbox_backlog_entries` and more (see docs/operations.md).",
    responses((
        status = 200,
        description = "The metrics.",
        body = String,
        content_type = "text/plain; version=0.0.4",
        example = "# TYPE http_requests_total counter\nhttp_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 1\n",
    )),
)]
pub async fn metrics(state: &AppState, _request: RequestContext) -> HandlerResult {
    let mut response = Response::new(Full::new(Bytes::from(crate::telemetry::render(&state.metrics))));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
