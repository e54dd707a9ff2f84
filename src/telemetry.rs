//! Logging and metrics setup shared by the binaries.
//!
//! Logs go to stderr as text or, with `LOG_FORMAT=json`, as one JSON object per line
//! ([`json_log`]).
//! Metrics go through the `metrics` facade into one Prometheus recorder per process;
//! [`install_metrics`] returns the handle that [`render`] prints for `/metrics` (with the
//! `process_*` series); [`descriptions`] holds every series' HELP text and the build info
//! gauge; the stock sampler (`stock::sampler`, run by the api) sets the gauges whose truth lives in Redis.
//! Traces go to an OTLP receiver when `OTEL_EXPORTER_OTLP_ENDPOINT` is set ([`traces`]),
//! and cross Redis and Kafka as W3C `traceparent` values ([`trace_context`]).

pub mod descriptions;
pub mod json_log;
pub mod trace_context;
pub mod traces;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogFormat, SharedConfig};
use traces::{Traces, TracesError};

/// Latency buckets in seconds, dense below 10 ms where the p99 target sits.
pub const LATENCY_BUCKETS_SECONDS: &[f64] =
    &[0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Buckets for delays measured in seconds past a deadline or end to end (reaper, pipeline lag).
pub const DELAY_BUCKETS_SECONDS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0];

/// Buckets for waits in a queue, from a second to an hour (waiting room join to admission).
pub const WAIT_BUCKETS_SECONDS: &[f64] =
    &[0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0];

/// Buckets for batch sizes in records (or requests: `reserve_batch_requests`).
pub const BATCH_BUCKETS_RECORDS: &[f64] =
    &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0];

/// The filter when `RUST_LOG` is unset: rskafka logs every connection at INFO.
const DEFAULT_LOG_FILTER: &str = "info,rskafka=warn";

/// Installs the process's `tracing` subscriber: log lines to stderr in `shared.log_format`,
/// filtered by `RUST_LOG` (default `info`, rskafka at `warn`), and, when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the span exporter of [`traces`] (service
/// `default_service_name` unless `OTEL_SERVICE_NAME` says otherwise). Call it inside the
/// tokio runtime, once; a later call installs nothing. Flush the returned [`Traces`] on exit.
pub fn init(shared: &SharedConfig, default_service_name: &str) -> Result<Traces, TracesError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match shared.log_format {
        LogFormat::Text => lines.with_filter(filter).boxed(),
        LogFormat::Json => {
            lines.fmt_fields(JsonFields::new()).event_format(json_log::JsonLines).with_filter(filter).boxed()
        }
    };
    let (spans, traces) = traces::layer(&shared.traces, default_service_name)?;
    let _ = tracing_subscriber::registry().with(lines).with(spans).try_init();
    Ok(traces)
}

/// Installs the process-wide Prometheus recorder once and returns its handle; later
/// calls (several apps in one test process) share it.
pub fn install_metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".to_owned()), LATENCY_BUCKETS_SECONDS)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(Matcher::Suffix("_delay_seconds".to_owned()), DELAY_BUCKETS_SECONDS)
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(Matcher::Suffix("_lag_seconds".to_owned()), DELAY_BUCKETS_SECONDS)
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(Matcher::Suffix("_records".to_owned()), BATCH_BUCKETS_RECORDS)
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(Matcher::Suffix("_wait_seconds".to_owned()), WAIT_BUCKETS_SECONDS)
                })
                .and_then(|builder| {
                    // gRPC's conventional name ends in `_handling_seconds`: a latency too.
                    builder.set_buckets_for_metric(
                        Matcher::Full("grpc_server_handling_seconds".to_owned()),
                        LATENCY_BUCKETS_SECONDS,
                    )
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full("reserve_batch_requests".to_owned()),
                        BATCH_BUCKETS_RECORDS,
                    )
                })
                .expect("bucket lists are non-empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            descriptions::describe_all();
            process_collector().describe();
            handle
        })
        .clone()
}

/// The `process_*` series (CPU seconds, resident memory, open file descriptors, start
/// time, threads), read from the operating system at each render.
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Renders the Prometheus text page of `handle`, with the process series read just now.
pub fn render(handle: &PrometheusHandle) -> String {
    process_collector().collect();
    handle.render()
}

/// An error and its chain of causes on one line (`outer: cause: root cause`), for the
/// one place a binary reports why it stopped.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How often [`upkeep`] drains the recorder's histogram buffers.
pub const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs the recorder's upkeep every [`UPKEEP_INTERVAL`] until `shutdown` fires, for a
/// process without a stock sampler (the worker; the api's stock sampler runs the upkeep itself): without it, histogram samples pile up in
/// memory between scrapes, without bound when nobody scrapes.
pub async fn upkeep(metrics: PrometheusHandle, shutdown: tokio_util::sync::CancellationToken) {
    let mut ticker = tokio::time::interval(UPKEEP_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => metrics.run_upkeep(),
        }
    }
}
