//! W3C trace context across the process boundaries Stampede owns: a client's
//! `traceparent`/`tracestate` headers into the request's span, and a request's
//! `traceparent` into the outbox entry its script writes, from there into the Kafka
//! record's `traceparent` header, and from there into the worker's apply span.
//!
//! Only a sampled trace travels through the outbox (an unsampled or untraced request
//! writes no field at all), so tracing off or at a 1 % sample adds nothing to 99 % of the
//! entries.

use std::fmt;

use hyper::HeaderMap;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::traces;

/// The name of the header (HTTP and Kafka) and of the outbox entry's field.
pub const TRACEPARENT: &str = "traceparent";

/// A valid W3C `traceparent` of a sampled span (`00-<trace id>-<span id>-01`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent(String);

impl TraceParent {
    /// Parses a `traceparent` value (version `00`); `None` when malformed, all-zero, or
    /// not sampled.
    pub fn parse(text: &str) -> Option<Self> {
        let context = span_context(text)?;
        context.is_sampled().then(|| Self::of(&context))
    }

    /// The `traceparent` of `context`'s span when it is valid and sampled.
    pub fn of_context(context: &Context) -> Option<Self> {
        let span = context.span();
        let span_context = span.span_context();
        (span_context.is_valid() && span_context.is_sampled()).then(|| Self::of(span_context))
    }

    /// The `traceparent` of the current span when traces are exported and it is sampled;
    /// `None` at once when they are not (no work on the untraced path).
    pub fn current() -> Option<Self> {
        if !traces::enabled() {
            return None;
        }
        Self::of_context(&tracing::Span::current().context())
    }

    fn of(context: &SpanContext) -> Self {
        Self(format!("00-{}-{}-01", context.trace_id(), context.span_id()))
    }

    /// The remote span it names, as a parent or a link.
    pub fn span_context(&self) -> SpanContext {
        span_context(&self.0).expect("valid by construction")
    }

    /// The value as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// The script argument of an optional `traceparent`: the value, or `""` (no field).
pub fn script_argument(traceparent: Option<&TraceParent>) -> &str {
    traceparent.map_or("", TraceParent::as_str)
}

/// A remote span context from a `traceparent` value: `00-` + 32 hex + `-` + 16 hex + `-` + 2 hex.
fn span_context(text: &str) -> Option<SpanContext> {
    let mut parts = text.split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |part: &str, length: usize| {
        part.len() == length && part.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
    };
    if parts.next().is_some() || version != "00" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & TraceFlags::SAMPLED.to_u8());
    let context = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    context.is_valid().then_some(context)
}

/// The client's trace context (`traceparent` and `tracestate`), or an empty one.
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// Request headers as the propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// The context whose span is the remote parent `traceparent` names.
pub fn remote_parent(traceparent: &TraceParent) -> Context {
    Context::new().with_remote_span_context(traceparent.span_context())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn sampled_traceparents_round_trip() {
        let parsed = TraceParent::parse(SAMPLED).unwrap();
        assert_eq!(parsed.as_str(), SAMPLED);
        let context = parsed.span_context();
        assert!(context.is_remote() && context.is_sampled());
        assert_eq!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(TraceParent::of_context(&remote_parent(&parsed)), Some(parsed));
    }

    #[test]
    fn malformed_unsampled_or_zero_traceparents_are_refused() {
        for text in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn untraced_requests_pass_nothing_to_scripts() {
        assert_eq!(TraceParent::current(), None, "no exporter: no traceparent");
        assert_eq!(script_argument(None), "");
    }

    #[test]
    fn client_headers_become_the_remote_parent() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", SAMPLED.parse().unwrap());
        headers.insert("tracestate", "vendor=value".parse().unwrap());
        let context = extract(&headers);
        let span = context.span();
        assert_eq!(span.span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span.span_context().trace_state().get("vendor"), Some("value"));
    }
}
