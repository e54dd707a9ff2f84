//! The worker's spans, when traces are exported ([`traces::enabled`]; otherwise nothing
//! here runs).
//!
//! - `fetch <topic>`: one fetch that brought a batch (empty long polls make no span).
//! - `apply`: the batch's transaction (its retries included), a child of the fetch.
//! - `apply <type>` per record that carries a `traceparent` header: a child of the
//!   request that caused the event (so the reserve's or the confirm's trace shows its
//!   row landing in Postgres), linked to the batch's `apply` span. Such a span lasts as
//!   long as its batch's transaction: the records of a batch commit together.
//!
//! These spans are built with the OpenTelemetry API directly: the fetch's is known to be
//! worth a span only once it returned, and a record's parent comes from Kafka.

use std::time::SystemTime;

use opentelemetry::trace::{Link, Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};

use super::apply::Batch;
use crate::telemetry::trace_context;
use crate::telemetry::traces;

/// When a fetch began, if traces are exported.
pub fn fetch_started() -> Option<SystemTime> {
    traces::enabled().then(SystemTime::now)
}

/// The open spans of one batch, ended by [`BatchSpans::end`].
pub struct BatchSpans {
    apply: opentelemetry::global::BoxedSpan,
    records: Vec<opentelemetry::global::BoxedSpan>,
}

impl BatchSpans {
    /// Records the fetch that brought `batch` (begun at `fetch_started`) and opens the
    /// batch's `apply` span and one per traced record; `None` when traces are not exported.
    pub fn start(topic: &str, fetch_started: Option<SystemTime>, batch: &Batch) -> Option<Self> {
        let fetch_started = fetch_started.filter(|_| traces::enabled())?;
        let tracer = traces::tracer();
        let partition = KeyValue::new("messaging.destination.partition.id", batch.partition.to_string());
        let records = i64::try_from(batch.events.len() + batch.rejected.len()).unwrap_or(i64::MAX);
        let mut fetch = tracer
            .span_builder(format!("fetch {topic}"))
            .with_kind(SpanKind::Consumer)
            .with_start_time(fetch_started)
            .with_attributes([
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.operation.type", "receive"),
                KeyValue::new("messaging.destination.name", topic.to_owned()),
                partition.clone(),
                KeyValue::new("messaging.batch.message_count", records),
                KeyValue::new("messaging.kafka.offset", batch.from_offset),
            ])
            .start_with_context(&tracer, &Context::new());
        fetch.end();
        let fetch_context = Context::new().with_span(fetch);
        let apply = tracer
            .span_builder("apply")
            .with_kind(SpanKind::Internal)
            .with_attributes([partition, KeyValue::new("messaging.batch.message_count", records)])
            .start_with_context(&tracer, &fetch_context);
        let batch_link = apply.span_context().clone();
        let records = batch
            .events
            .iter()
            .filter_map(|consumed| {
                let parent = trace_context::remote_parent(consumed.traceparent.as_ref()?);
                let span = tracer
                    .span_builder(format!("apply {}", consumed.event.event_type.as_str()))
                    .with_kind(SpanKind::Consumer)
                    .with_links(vec![Link::with_context(batch_link.clone())])
                    .with_attributes([
                        KeyValue::new("messaging.kafka.offset", consumed.offset),
                        KeyValue::new("stampede.reservation_id", consumed.event.reservation.id.to_string()),
                        KeyValue::new("stampede.event_id", consumed.event.id.to_string()),
                    ])
                    .start_with_context(&tracer, &parent);
                Some(span)
            })
            .collect();
        Some(Self { apply, records })
    }

    /// Ends every span; `committed` false (shutdown came first) marks them failed.
    pub fn end(mut self, committed: bool) {
        for span in self.records.iter_mut().chain(std::iter::once(&mut self.apply)) {
            if !committed {
                span.set_status(Status::error("not committed before shutdown"));
            }
            span.end();
        }
    }
}
