//! OpenTelemetry trace export, configured by the standard `OTEL_*` variables
//! ([`TracesConfig`]).
//!
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` unset nothing here runs: no layer is installed, no
//! span of this module's kind is created ([`enabled`] is false, and every call site asks it
//! first), no `traceparent` is read or written. With it set, spans go through a
//! `tracing-opentelemetry` layer into a batch processor that exports from a task on the
//! tokio runtime (bounded queue: 2048 spans, the rest dropped and counted by the SDK), over
//! OTLP `http/protobuf` (hyper) or `grpc` (tonic). Only spans of this crate are exported
//! (`stampede*` targets at INFO), whatever `RUST_LOG` lets through to the log lines.
//!
//! The spans: the HTTP request (`POST /reserve`, continuing a client's W3C
//! `traceparent`), each Redis script call, the relay's publish (linked to the requests whose
//! events it carries), the worker's fetch, its batch apply, and one apply span per traced
//! record, whose parent is the `traceparent` record header of the request that caused it
//! (see [`super::trace_context`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{OtlpProtocol, TracesConfig, TracesSampler};

/// The instrumentation scope of every span.
pub const TRACER_NAME: &str = "stampede";

/// Longest wait for the last spans on exit.
pub const FLUSH_TIMEOUT_MAX: Duration = Duration::from_secs(5);

/// Set once an exporter is installed; read on every hot path that could trace.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (`OTEL_EXPORTER_OTLP_ENDPOINT` is set): one relaxed load.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Why trace export cannot start.
#[derive(Debug, thiserror::Error)]
#[error("OTLP trace exporter: {0}")]
pub struct TracesError(#[from] opentelemetry_otlp::ExporterBuildError);

/// The installed exporter, flushed by [`Traces::shutdown`].
#[derive(Debug, Default)]
pub struct Traces {
    provider: Option<SdkTracerProvider>,
}

impl Traces {
    /// Exports what is still queued and stops the exporter, within `deadline` (at most
    /// [`FLUSH_TIMEOUT_MAX`]: it runs after the drain, in the grace period's last seconds).
    pub async fn shutdown(self, deadline: Duration) {
        let Some(provider) = self.provider else { return };
        let deadline = deadline.min(FLUSH_TIMEOUT_MAX);
        ENABLED.store(false, Ordering::Relaxed);
        // The SDK blocks the calling thread until its export task has finished.
        let flushed = tokio::time::timeout(deadline, tokio::task::spawn_blocking(move || provider.shutdown())).await;
        match flushed {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => eprintln!("trace export shutdown: {error}"),
            Ok(Err(error)) => eprintln!("trace export shutdown: {error}"),
            Err(_) => eprintln!("trace export did not finish within {deadline:?}; the last spans are lost"),
        }
    }
}

/// The layer that turns this crate's spans into exported OpenTelemetry spans, or none
/// when no endpoint is set. Must run inside the tokio runtime (the exporter's task).
pub fn layer<S>(
    config: &TracesConfig,
    default_service_name: &str,
) -> Result<(Option<impl Layer<S> + use<S>>, Traces), TracesError>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    let Some(endpoint) = config.endpoint.as_deref().map(str::trim).filter(|endpoint| !endpoint.is_empty()) else {
        return Ok((None, Traces::default()));
    };
    let exporter = match config.protocol {
        // The specification: the signal's path is appended to the base endpoint for HTTP.
        OtlpProtocol::HttpProtobuf => SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .build()?,
        OtlpProtocol::Grpc => SpanExporter::builder().with_tonic().with_endpoint(endpoint).build()?,
    };
    let service_name = config.service_name.clone().unwrap_or_else(|| default_service_name.to_owned());
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter, Tokio).build())
        .with_sampler(sampler(config.sampler, config.sampler_arg))
        .with_resource(Resource::builder().with_service_name(service_name).build())
        .build();
    let tracer: SdkTracer = provider.tracer(TRACER_NAME);
    opentelemetry::global::set_tracer_provider(provider.clone());
    let only_ours = Targets::new().with_target("stampede", LevelFilter::INFO).with_default(LevelFilter::OFF);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        .with_filter(only_ours);
    ENABLED.store(true, Ordering::Relaxed);
    Ok((Some(layer), Traces { provider: Some(provider) }))
}

/// The SDK sampler of `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
pub fn sampler(kind: TracesSampler, ratio: f64) -> Sampler {
    match kind {
        TracesSampler::AlwaysOn => Sampler::AlwaysOn,
        TracesSampler::AlwaysOff => Sampler::AlwaysOff,
        TracesSampler::Traceidratio => Sampler::TraceIdRatioBased(ratio),
        TracesSampler::ParentbasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        TracesSampler::ParentbasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        TracesSampler::ParentbasedTraceidratio => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))),
    }
}

/// The tracer of the spans built directly with the OpenTelemetry API (those whose start
/// time is known only afterwards, or whose parent comes from a Kafka record).
pub fn tracer() -> opentelemetry::global::BoxedTracer {
    opentelemetry::global::tracer(TRACER_NAME)
}
