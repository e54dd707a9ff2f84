//! `LOG_FORMAT=json`: one JSON object per line, with `timestamp`, `level`, `target`,
//! `message`, the event's own fields, and the fields of every span the event was written
//! in (so a line written while serving a request carries its `request_id`, and its
//! `trace_id` when it is traced).

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats an event as one JSON line. Span fields are stored by [`JsonFields`] as JSON
/// objects, which this merges at the top level, innermost span last (it wins a clash); the
/// event's own fields come after the spans' and the four fixed keys are never overwritten.
pub struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Map::new();
        if let Some(scope) = context.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(stored) = extensions.get::<FormattedFields<JsonFields>>() else { continue };
                if let Ok(Value::Object(span_fields)) = serde_json::from_str::<Value>(stored.as_str()) {
                    // `otel.*` fields steer the exported span (its name, kind); they say nothing new here.
                    fields.extend(span_fields.into_iter().filter(|(key, _)| !key.starts_with("otel.")));
                }
            }
        }
        event.record(&mut FieldCollector(&mut fields));
        let metadata = event.metadata();
        let mut line = Map::with_capacity(fields.len() + 4);
        line.insert("timestamp".to_owned(), Value::String(timestamp()));
        line.insert("level".to_owned(), Value::String(metadata.level().as_str().to_owned()));
        line.insert("target".to_owned(), Value::String(metadata.target().to_owned()));
        let message = fields.remove("message").unwrap_or_else(|| Value::String(String::new()));
        line.insert("message".to_owned(), message);
        for (key, value) in fields {
            line.entry(key).or_insert(value);
        }
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// RFC 3339 in UTC with microseconds.
fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Records an event's fields as JSON values: numbers and booleans as such, the rest as text.
struct FieldCollector<'a>(&'a mut Map<String, Value>);

impl Visit for FieldCollector<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let value = serde_json::Number::from_f64(value).map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.0.insert(field.name().to_owned(), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::String(value.to_owned()));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().to_owned(), Value::String(super::error_chain(value)));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
}
