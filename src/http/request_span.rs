//! The span of one request. Every log line written while serving it carries its fields
//! (`request_id`, `method`, `route`, and `trace_id` when the request is traced).
//!
//! When traces are exported ([`traces::enabled`]) the span is also the request's
//! OpenTelemetry server span: named by route template (`POST /reserve`), with the HTTP
//! attributes and status, continuing the client's `traceparent`/`tracestate`. Otherwise
//! it is the plain log span, and nothing else is done per request.

use hyper::{HeaderMap, Method};
use opentelemetry::trace::{Status, TraceContextExt};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::method_label;
use super::request_id::RequestId;
use crate::telemetry::{trace_context, traces};

/// The request's span, with its route template (`pattern`); traced, named after it
/// (`POST /reserve`) and a child of the client's trace context when it sent one.
pub fn request_span(request_id: &RequestId, method: &Method, pattern: &'static str, headers: &HeaderMap) -> Span {
    if !traces::enabled() {
        return tracing::info_span!("request", request_id = %request_id, method = %method, route = pattern);
    }
    let method_label = method_label(method);
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        route = pattern,
        trace_id = Empty,
        otel.name = %format_args!("{method_label} {pattern}"),
        otel.kind = "server",
        http.request.method = method_label,
        http.route = pattern,
        http.response.status_code = Empty,
    );
    // Set before the span starts: neither the parent nor the name can change afterwards.
    let _ = span.set_parent(trace_context::extract(headers));
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_sampled() {
        span.record("trace_id", tracing::field::display(span_context.trace_id()));
    }
    span
}

/// Records the response status on the current request span when traced; a 5xx marks it failed.
pub fn record_status(status: u16) {
    if !traces::enabled() {
        return;
    }
    let span = Span::current();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.set_status(Status::error(""));
    }
}
